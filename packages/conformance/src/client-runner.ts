// `tlsproxy-conformance run --role client`: a dialect's client side (issue 18) against its
// client transcripts — the sans-I/O replay (client-replay.ts) and the property suite
// (client-properties.ts) — with the same report, exit codes and reproduce line as the server
// side's run.
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { ProxyOptions } from '@tlsproxy/core';
import { type Dialect, loadDialect } from '@tlsproxy/dialect-kit';
import { runClientProperties } from './client-properties.js';
import { readCa, recordClient } from './client-record.js';
import { type ClientSide, replayClient } from './client-replay.js';
import { type ClientTranscript, loadClientTranscript } from './client-transcript.js';
import { ConformanceError } from './errors.js';
import { parseHostPort } from './record.js';
import { formatReport } from './report.js';
import {
  type CheckResult,
  defaultTranscriptDir,
  packageTranscriptDir,
  type Report,
  transcriptFiles,
} from './runner.js';

export interface ClientRunOptions {
  /** Package name, short name ('imap'), module path, or a Dialect object with a `client`. */
  dialect: string | Dialect<unknown>;
  options?: Record<string, unknown>;
  /** Client transcript files or directories; empty: found as the README says. */
  transcripts?: string[];
  transcriptDir?: string;
  seconds?: number;
  seed?: number;
  /** Also replay through a real TlsProxy `role: client` listener on loopback (default true). */
  engine?: boolean;
  /** How that TlsProxy builds its TLS engine (its `createEngine`; default node:tls). */
  createEngine?: ProxyOptions['createEngine'];
  cwd?: string;
  /** For the reproduce line only. */
  optionsFile?: string;
  json?: boolean;
}

/** fixtures/client-transcripts/<name>, searched upwards from `cwd` (runner.ts, client side). */
export function defaultClientTranscriptDir(name: string, cwd: string): string | undefined {
  return defaultTranscriptDir(name, cwd, 'client');
}

/**
 * The client transcripts a dialect package ships: the folder its package.json names in
 * `"tlsproxy": { "clientTranscripts": "…" }`, else its `client-transcripts/` folder; a workspace
 * package takes its checkout's `fixtures/client-transcripts/<name>/` first, as the server side.
 */
export function packageClientTranscriptDir(
  spec: string,
  cwd: string,
  name?: string,
): string | undefined {
  return packageTranscriptDir(spec, cwd, name, 'client');
}

/** Load the dialect (it must have a client side) and its client transcripts. */
export async function loadClientSuite(
  opts: Pick<ClientRunOptions, 'dialect' | 'transcripts' | 'transcriptDir' | 'cwd'>,
): Promise<{
  dialect: Dialect<unknown> & ClientSide;
  transcripts: ClientTranscript[];
  found?: string;
}> {
  const cwd = opts.cwd ?? process.cwd();
  const dialect = (await loadDialect(opts.dialect as string, cwd)) as Dialect<unknown>;
  if (!dialect.client) {
    throw new ConformanceError(
      'TLSPROXY_ERR_CONFORMANCE_USAGE',
      `dialect "${dialect.name}" has no client side (dialect.client): nothing to run with --role client`,
    );
  }
  let paths = opts.transcripts ?? [];
  if (paths.length === 0) {
    const dir =
      opts.transcriptDir ??
      (typeof opts.dialect === 'string'
        ? packageClientTranscriptDir(opts.dialect, cwd, dialect.name)
        : undefined) ??
      defaultClientTranscriptDir(dialect.name, cwd);
    if (!dir) {
      throw new ConformanceError(
        'TLSPROXY_ERR_CONFORMANCE_USAGE',
        `no client transcripts given, none shipped by the dialect's package ("tlsproxy": { "clientTranscripts": DIR } in its package.json, or a client-transcripts/ folder) and no fixtures/client-transcripts/${dialect.name}/ found from ${cwd}`,
      );
    }
    paths = [dir];
  }
  const files = transcriptFiles(paths.map((p) => resolve(cwd, p)));
  if (files.length === 0) {
    throw new ConformanceError('TLSPROXY_ERR_CONFORMANCE_USAGE', `no .txt transcripts in ${paths}`);
  }
  const transcripts = files.map(loadClientTranscript);
  // The folder found by looking (none was given), so a reproduce line need not look again.
  return opts.transcripts?.length || opts.transcriptDir
    ? { dialect: dialect as Dialect<unknown> & ClientSide, transcripts }
    : {
        dialect: dialect as Dialect<unknown> & ClientSide,
        transcripts,
        found: resolve(cwd, paths[0]!),
      };
}

function shellWord(s: string): string {
  return /^[A-Za-z0-9_/.:@%+=,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The command that repeats this run exactly: every argument, paths made absolute. */
export function clientRerunCommand(opts: ClientRunOptions, name: string, seed: number): string {
  const cwd = opts.cwd ?? process.cwd();
  const spec =
    typeof opts.dialect !== 'string'
      ? name
      : opts.dialect.startsWith('.') ||
          opts.dialect.startsWith('/') ||
          existsSync(resolve(cwd, opts.dialect))
        ? resolve(cwd, opts.dialect)
        : opts.dialect;
  const args = ['tlsproxy-conformance', 'run', '--role', 'client', '--dialect', spec];
  if (opts.optionsFile) args.push('--options', resolve(cwd, opts.optionsFile));
  else if (opts.options && Object.keys(opts.options).length > 0)
    args.push('--options', JSON.stringify(opts.options));
  if (opts.transcriptDir) args.push('--transcripts', resolve(cwd, opts.transcriptDir));
  args.push('--seed', String(seed), '--seconds', String(opts.seconds ?? 5));
  if (opts.engine === false) args.push('--no-engine');
  if (opts.json) args.push('--json');
  for (const t of opts.transcripts ?? []) args.push(resolve(cwd, t));
  return args.map(shellWord).join(' ');
}

export async function runClientConformance(opts: ClientRunOptions): Promise<Report> {
  const { dialect, transcripts, found } = await loadClientSuite(opts);
  const seed = opts.seed ?? Math.floor(Math.random() * 0x7fffffff);
  const options = opts.options ?? {};
  const results: CheckResult[] = [];
  for (const t of transcripts) {
    const r = replayClient(dialect, t, options);
    results.push({
      name: t.name,
      kind: 'replay',
      ok: r.problems.length === 0,
      problems: r.problems,
    });
  }
  if (opts.engine !== false) {
    // Loaded only here: @tlsproxy/core is an optional peer dependency (--no-engine).
    const { clientEngineReplay } = await import('./client-engine.js');
    results.push(...(await clientEngineReplay(dialect, transcripts, options, opts.createEngine)));
  }
  results.push(
    ...runClientProperties(dialect, transcripts, options, { seed, seconds: opts.seconds ?? 5 }),
  );
  return {
    ok: results.every((r) => r.ok),
    dialect: `${dialect.name} (client side)`,
    seed,
    transcripts: transcripts.map((t) => ({
      file: t.file,
      server: t.headers.server ?? '',
      client: t.headers.client ?? '',
    })),
    results,
    rerun: clientRerunCommand(found ? { ...opts, transcriptDir: found } : opts, dialect.name, seed),
  };
}

export const CLIENT_RECORD_USAGE = `  tlsproxy-conformance record --role client --dialect <package-or-path> --upstream HOST:PORT
                           --out FILE [--ca PEM] [--server-name NAME] [--hostname NAME]
                           [--options JSON] [--server TEXT] [--bind LOCAL-ADDR]
      A client transcript: the dialect's client side talks to the real server through the
      recorder; at STARTTLS the TLS handshake is verified against --ca and --server-name.
`;

export const CLIENT_USAGE = `  tlsproxy-conformance run --role client --dialect <package-or-path> [--options FILE|JSON]
                           [--json] [--seconds N] [--seed N] [--no-engine] [--transcripts DIR]
                           [TRANSCRIPT...]
      The dialect's client side (dialect.client) against client transcripts: with no
      TRANSCRIPT, --transcripts DIR, else the package's ("tlsproxy": { "clientTranscripts":
      DIR }, or its client-transcripts/), else fixtures/client-transcripts/<dialect name>/.
`;

const usage = (message: string): ConformanceError =>
  new ConformanceError(
    'TLSPROXY_ERR_CONFORMANCE_USAGE',
    `${message}\n\n${CLIENT_USAGE}${CLIENT_RECORD_USAGE}`,
  );

/** `record --role client` (the role flag already taken out by splitRole). */
export async function recordClientCommand(
  args: string[],
  print: (s: string) => void,
): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      dialect: { type: 'string' },
      upstream: { type: 'string' },
      out: { type: 'string' },
      ca: { type: 'string' },
      'server-name': { type: 'string' },
      hostname: { type: 'string' },
      options: { type: 'string' },
      server: { type: 'string' },
      bind: { type: 'string' },
    },
  });
  if (!values.dialect || !values.upstream || !values.out) {
    throw usage('record --role client needs --dialect, --upstream and --out');
  }
  let options: Record<string, unknown> = {};
  if (values.options) {
    try {
      options = JSON.parse(values.options);
    } catch (err) {
      throw usage(`--options: ${(err as Error).message}`);
    }
  }
  const dialect = (await loadDialect(values.dialect, process.cwd())) as Dialect<unknown>;
  const upstream = parseHostPort(values.upstream, '--upstream');
  await recordClient({
    dialect,
    upstream,
    out: values.out,
    headers: {
      server: values.server ?? `unknown server at ${values.upstream}`,
      client: `${dialect.name} client (dialect.client) via tlsproxy-conformance record --role client`,
      dialect: dialect.name,
      recorded: new Date().toISOString().slice(0, 10),
    },
    options,
    ...(values.hostname ? { hostname: values.hostname } : {}),
    ...(values['server-name'] ? { serverName: values['server-name'] } : {}),
    ...(values.ca ? { ca: readCa(values.ca)! } : {}),
    ...(values.bind ? { bind: values.bind } : {}),
  });
  print(`recording: wrote ${values.out}`);
  return 0;
}

/**
 * The role `run` was given: `--role client` or `--role=client` (anywhere in its arguments), and
 * the arguments without it, so the server side's run never sees the flag.
 */
export function splitRole(args: readonly string[]): { role: string; rest: string[] } {
  const rest: string[] = [];
  let role = 'server';
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') {
      rest.push(...args.slice(i));
      break;
    }
    if (a === '--role') {
      if (i + 1 >= args.length) throw usage('--role needs a value: client or server');
      role = args[++i]!;
    } else if (a.startsWith('--role=')) role = a.slice('--role='.length);
    else rest.push(a);
  }
  if (role !== 'client' && role !== 'server') throw usage(`--role ${role}: client or server`);
  return { role, rest };
}

/** `run --role client` (the role flag already taken out by splitRole). */
export async function runClientCommand(
  args: string[],
  print: (s: string) => void,
): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      dialect: { type: 'string' },
      options: { type: 'string' },
      json: { type: 'boolean', default: false },
      seconds: { type: 'string' },
      seed: { type: 'string' },
      transcripts: { type: 'string' },
      'no-engine': { type: 'boolean', default: false },
    },
  });
  if (!values.dialect) throw usage('--dialect is required');
  const seconds = values.seconds === undefined ? 5 : Number(values.seconds);
  if (!(seconds > 0)) throw usage('--seconds must be a positive number');
  const seed = values.seed === undefined ? undefined : Number(values.seed);
  if (seed !== undefined && !Number.isInteger(seed)) throw usage('--seed must be an integer');
  const inline = values.options?.trimStart().startsWith('{') ?? false;
  let options: Record<string, unknown> = {};
  if (values.options) {
    try {
      options = JSON.parse(inline ? values.options : readFileSync(values.options, 'utf8'));
    } catch (err) {
      throw usage(`--options ${values.options}: ${(err as Error).message}`);
    }
  }
  const report = await runClientConformance({
    dialect: values.dialect,
    options,
    transcripts: positionals,
    ...(values.transcripts ? { transcriptDir: values.transcripts } : {}),
    seconds,
    ...(seed !== undefined ? { seed } : {}),
    ...(values.options && !inline ? { optionsFile: values.options } : {}),
    engine: !values['no-engine'],
    json: values.json,
  });
  print(values.json ? JSON.stringify(report, null, 2) : formatReport(report));
  return report.ok ? 0 : 1;
}
