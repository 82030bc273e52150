// Start-up checks, run once in the process the user started, before anything binds and before
// workers are forked (issue 14). Without them the proxy said "listening" with a native addon it
// could not load and then failed every connection, and a missing dialect or a key that does not
// match its certificate was reported by every worker, with a stack trace from some of them.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import {
  type Dialect,
  loadDialect,
  parseServerAddress,
  resolveLimits,
  resolveOptions,
} from '@tlsproxy/core';
import { checkAddon, socketpair } from '@tlsproxy/fdpass';
import { caProblem, identityProblem } from './config.js';
import { type NativeLoader, nativeProblem } from './engine.js';

export interface PreflightInput {
  /** Each listener's dialect spec with its options and limits, named for the messages. */
  listeners: Array<{
    name: string;
    dialect: string | Dialect<unknown>;
    options?: Record<string, unknown>;
    limits?: Record<string, unknown>;
    /** role client: the dialect must have a client side, and its options and limits are the
     * client side's; the server address, the CA file and the server name are checked. */
    role?: 'server' | 'client';
    connect?: { name: string; value: string };
    ca?: { name: string; path: string };
    serverName?: string;
  }>;
  /** Certificate and key files (flags; a config file's are checked when it is loaded). */
  identities?: Array<{ name: string; cert: string; key: string }>;
  /** Addresses to be bound ('host:port', '[v6]:port', a port; systemd: ones are skipped). */
  listen?: Array<{ name: string; listen: string | number }>;
  /** The embedded engine asked for explicitly: 'native' must load (its addon, the OpenSSL symbols
   * in node). Not given (the default) is no problem: main falls back to node:tls with a warning. */
  engine?: 'node' | 'native';
  /** How the native engine is loaded; tests give one that fails (default: engine-native's check). */
  loadNative?: NativeLoader;
}

/** Host and port of a listen spec as core's parseListen reads it; undefined for systemd: or port 0. */
function hostPort(spec: string | number): { host?: string; port: number } | undefined {
  if (typeof spec === 'number') return spec > 0 ? { port: spec } : undefined;
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(spec) ?? /^()()(\d+)$/.exec(spec);
  if (!m || spec.startsWith('systemd:')) return undefined;
  const port = Number(m[3]);
  if (!(port > 0 && port < 65536)) return undefined;
  const host = m[1] || m[2] || undefined;
  return host ? { host, port } : { port };
}

/** Bind and close at once: a port in use or not allowed is said once, here, not by each worker. */
function canBind(where: { host?: string; port: number }): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    s.listen({ ...where, exclusive: true }, () => s.close(() => resolve(undefined)));
  });
}

const firstLine = (err: unknown) => String((err as Error)?.message ?? err);

/** Every problem that would stop the proxy, each a one-line (or, for the addon, a few-line)
 * message; empty when it can start. Never throws. */
export async function preflight(input: PreflightInput): Promise<string[]> {
  const problems: string[] = [];
  // The addon moves every connection to its backend: load it and make one socketpair (which
  // exercises a syscall through it), closing both ends.
  try {
    checkAddon();
    const [a, b] = socketpair();
    a.close();
    b.close();
  } catch (err) {
    problems.push(`the native addon @tlsproxy/fdpass cannot load: ${firstLine(err)}`);
  }
  if (input.engine === 'native') {
    const why = await nativeProblem(input.loadNative);
    if (why !== undefined)
      problems.push(
        `engine: native cannot load (${why}); use engine: node (--engine node, node:tls) instead`,
      );
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
    if (l.role === 'client') {
      problems.push(...clientProblems(l, d));
      continue;
    }
    if (!d) continue;
    try {
      resolveOptions(d, l.options);
      resolveLimits(d, l.limits);
    } catch (err) {
      problems.push(`${l.name}: ${firstLine(err)}`);
    }
  }
  for (const l of input.listen ?? []) {
    const where = hostPort(l.listen);
    if (!where) continue;
    const code = await canBind(where);
    if (code === 'EADDRINUSE')
      problems.push(`${l.name}: cannot listen on ${l.listen}: address in use`);
    else if (code === 'EACCES')
      problems.push(
        `${l.name}: cannot listen on ${l.listen}: permission denied (a port below 1024 needs CAP_NET_BIND_SERVICE)`,
      );
    else if (code !== undefined) problems.push(`${l.name}: cannot listen on ${l.listen}: ${code}`);
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

/**
 * The side of a dialect a listener runs: the dialect itself (server role), or its `client` side
 * (name, options, limits) for role: client — throwing, naming the dialect, when it has none.
 */
export function sideOf(
  d: Dialect<unknown>,
  role: 'server' | 'client' | undefined,
): Dialect<unknown> {
  if (role !== 'client') return d;
  if (!d.client)
    throw new Error(`dialect "${d.name}" has no client side: it cannot be used with role: client`);
  return { ...d, options: d.client.options, limits: d.client.limits };
}

/** A client-role listener: what would stop it (dialect without a client side, a bad server
 * address, an unreadable or empty CA file, a bad server name). Both engines have a client side. */
export function clientProblems(
  l: PreflightInput['listeners'][number],
  d: Dialect<unknown> | undefined,
): string[] {
  const problems: string[] = [];
  if (l.connect) {
    try {
      parseServerAddress(l.connect.value);
    } catch (err) {
      problems.push(`${l.connect.name}: ${firstLine(err)}`);
    }
  }
  if (l.serverName !== undefined && !/^[^\s\x00-\x1f/]+$/.test(l.serverName))
    problems.push(
      `${l.name}: the server name ${JSON.stringify(l.serverName)} is not a host name or address`,
    );
  if (l.ca) {
    let pem: Buffer | undefined;
    try {
      pem = readFileSync(l.ca.path);
    } catch (err) {
      problems.push(`${l.ca.name}: cannot read ${firstLine(err)}`);
    }
    const p = pem && caProblem(pem, l.ca.path);
    if (p) problems.push(`${l.ca.name}: ${p}`);
  }
  if (!d) return problems;
  if (!d.client) {
    problems.push(
      `${l.name}: dialect "${d.name}" has no client side: it cannot be used with role: client`,
    );
    return problems;
  }
  try {
    const side = sideOf(d, 'client');
    resolveOptions(side, l.options);
    resolveLimits(side, l.limits);
  } catch (err) {
    problems.push(`${l.name}: ${firstLine(err)}`);
  }
  return problems;
}

/** The report: one block on stderr, no stack trace. */
export function reportPreflight(problems: string[]): void {
  process.stderr.write(problems.map((p) => `tlsproxy: cannot start: ${p}\n`).join(''));
}
