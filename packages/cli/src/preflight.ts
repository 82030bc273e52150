// Start-up checks, run once in the process the user started, before anything binds and before
// workers are forked (issue 14). Without them the proxy said "listening" with a native addon it
// could not load and then failed every connection, and a missing dialect or a key that does not
// match its certificate was reported by every worker, with a stack trace from some of them.
import { readFileSync } from 'node:fs';
import { type Dialect, loadDialect, resolveLimits, resolveOptions } from '@tlsproxy/core';
import { binding, socketpair } from '@tlsproxy/fdpass';
import { identityProblem } from './config.js';

export interface PreflightInput {
  /** Each listener's dialect spec with its options and limits, named for the messages. */
  listeners: Array<{
    name: string;
    dialect: string | Dialect<unknown>;
    options?: Record<string, unknown>;
    limits?: Record<string, unknown>;
  }>;
  /** Certificate and key files (flags; a config file's are checked when it is loaded). */
  identities?: Array<{ name: string; cert: string; key: string }>;
}

const firstLine = (err: unknown) => String((err as Error)?.message ?? err);

/** Every problem that would stop the proxy, each a one-line (or, for the addon, a few-line)
 * message; empty when it can start. Never throws. */
export async function preflight(input: PreflightInput): Promise<string[]> {
  const problems: string[] = [];
  // The addon moves every connection to its backend: load it and make one socketpair (which
  // exercises a syscall through it), closing both ends.
  try {
    binding();
    const [a, b] = socketpair();
    a.close();
    b.close();
  } catch (err) {
    problems.push(`the native addon @tlsproxy/fdpass cannot load: ${firstLine(err)}`);
  }
  const loaded = new Map<string, Dialect<unknown> | undefined>();
  for (const l of input.listeners) {
    const key = typeof l.dialect === 'string' ? l.dialect : l.dialect.name;
    let d = loaded.get(key);
    if (!loaded.has(key)) {
      try {
        d = await loadDialect(l.dialect);
      } catch (err) {
        problems.push(`${l.name}: ${firstLine(err)}`);
      }
      loaded.set(key, d);
    }
    if (!d) continue;
    try {
      resolveOptions(d, l.options);
      resolveLimits(d, l.limits);
    } catch (err) {
      problems.push(`${l.name}: ${firstLine(err)}`);
    }
  }
  for (const id of input.identities ?? []) {
    let cert: Buffer;
    let key: Buffer;
    try {
      cert = readFileSync(id.cert);
      key = readFileSync(id.key);
    } catch (err) {
      problems.push(`${id.name}: cannot read ${firstLine(err)}`);
      continue;
    }
    const p = identityProblem(cert, key, id.cert, id.key);
    if (p) problems.push(`${id.name}: ${p}`);
  }
  return problems;
}

/** The report: one block on stderr, no stack trace. */
export function reportPreflight(problems: string[]): void {
  process.stderr.write(problems.map((p) => `tlsproxy: cannot start: ${p}\n`).join(''));
}
