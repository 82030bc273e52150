// The run API behind `tlsproxy-conformance run`: load a dialect with no other code, replay each
// transcript sans-I/O and through a real engine, then run the property suite.
import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve, sep } from 'node:path';
import type { ProxyOptions } from '@tlsproxy/core';
import { type Dialect, loadDialect } from '@tlsproxy/dialect-kit';
import { engineReplay } from './engine.js';
import { ConformanceError } from './errors.js';
import { runProperties } from './properties.js';
import { replay } from './replay.js';
import { loadTranscript, type Transcript } from './transcript.js';

export interface RunOptions {
  /** Package name, short name ('imap'), module path, or a Dialect object. */
  dialect: string | Dialect<unknown>;
  options?: Record<string, unknown>;
  /** Transcript files or directories; empty means fixtures/transcripts/<dialect name>/. */
  transcripts?: string[];
  transcriptDir?: string;
  /** Time box for the property suite, in seconds (split between properties). */
  seconds?: number;
  seed?: number;
  /** Also replay through a real TlsProxy on loopback (default true). */
  engine?: boolean;
  /** How that TlsProxy builds its TLS engine (its `createEngine`; default node:tls). */
  createEngine?: ProxyOptions['createEngine'];
  cwd?: string;
  /** For the reproduce line only: the file --options was read from, and --json. */
  optionsFile?: string;
  json?: boolean;
}

export interface CheckResult {
  name: string;
  kind: 'replay' | 'engine' | 'property';
  ok: boolean;
  skipped?: string;
  /** A recorded, deliberate difference from the real server (@divergence). */
  known?: string;
  problems: string[];
  /** For properties: runs done and a counterexample in transcript notation. */
  runs?: number;
  counterexample?: string;
}

export interface Report {
  ok: boolean;
  dialect: string;
  seed: number;
  transcripts: { file: string; server: string; client: string }[];
  results: CheckResult[];
  rerun: string;
}

/**
 * A transcript headed `@divergence REASON` records where this project deliberately answers
 * differently from the recorded server: the differences are shown, but do not fail the run.
 */
function withDivergence(t: Transcript, r: CheckResult): CheckResult {
  const reason = t.headers.divergence;
  if (!reason) return r;
  return r.ok
    ? { ...r, problems: [`no longer diverges; remove @divergence (${reason})`] }
    : { ...r, ok: true, known: reason };
}

/** The .txt files of each folder (sorted), and each file as given; a missing path is an error. */
export function transcriptFiles(paths: string[]): string[] {
  const out: string[] = [];
  for (const p of paths) {
    if (!existsSync(p)) {
      throw new ConformanceError('TLSPROXY_ERR_CONFORMANCE_USAGE', `no such transcript: ${p}`);
    }
    try {
      out.push(
        ...readdirSync(p)
          .filter((f) => f.endsWith('.txt'))
          .sort()
          .map((f) => join(p, f)),
      );
    } catch {
      out.push(p);
    }
  }
  return out;
}

/** Where each side's transcripts live: the checkout's folder under fixtures/, a package's default
 * folder, and the package.json key that names another. */
const SIDES = {
  server: { fixtures: 'transcripts', folder: 'transcripts', key: 'transcripts' },
  client: {
    fixtures: 'client-transcripts',
    folder: 'client-transcripts',
    key: 'clientTranscripts',
  },
} as const;
export type TranscriptSide = keyof typeof SIDES;

/** fixtures/transcripts/<name> (fixtures/client-transcripts/<name> for the client side),
 * searched upwards so it works from any folder of a checkout. */
export function defaultTranscriptDir(
  name: string,
  cwd: string,
  side: TranscriptSide = 'server',
): string | undefined {
  for (let dir = resolve(cwd); ; dir = dirname(dir)) {
    const candidate = join(dir, 'fixtures', SIDES[side].fixtures, name);
    if (existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) return undefined;
  }
}

/** The package.json of what --dialect named: a package folder, a package name, or the
 * built-in shorthand (`imap` → `@tlsproxy/dialect-imap`), as the kit's loader tries them. */
function dialectPackageJson(spec: string, cwd: string): string | undefined {
  const asPath = resolve(cwd, spec);
  if (existsSync(join(asPath, 'package.json'))) return join(asPath, 'package.json');
  // A module file (`--dialect ./nntp.mjs`): the package it belongs to, the nearest package.json
  // above it, declares its transcripts.
  if (/\.[cm]?[jt]s$/.test(spec) && existsSync(asPath)) {
    for (let dir = dirname(asPath); ; dir = dirname(dir)) {
      if (existsSync(join(dir, 'package.json'))) return join(dir, 'package.json');
      if (dirname(dir) === dir) return undefined;
    }
  }
  const req = createRequire(join(resolve(cwd), 'noop.js'));
  const names = [spec];
  if (/^[a-z0-9][a-z0-9-]*$/.test(spec)) names.push(`@tlsproxy/dialect-${spec}`);
  for (const name of names) {
    try {
      return req.resolve(`${name}/package.json`);
    } catch {
      // not installed under this name; try the next
    }
  }
  return undefined;
}

/**
 * The transcripts a dialect package ships: the folder its package.json names in
 * `"tlsproxy": { "transcripts": "…" }`, else its `transcripts/` folder if there is one. `spec`
 * is what --dialect was given: a package name (or built-in short name) or a path to the
 * package's folder.
 *
 * A package that is not installed (its real path is outside any node_modules: a workspace
 * package of a checkout) takes `fixtures/transcripts/<name>/` from its checkout first when there
 * is one: the built-in dialects' packed `transcripts/` is a copy of it made by `npm pack`, and a
 * copy left behind by an earlier pack is stale.
 */
export function packageTranscriptDir(
  spec: string,
  cwd: string,
  name?: string,
  side: TranscriptSide = 'server',
): string | undefined {
  const pkgJson = dialectPackageJson(spec, cwd);
  if (!pkgJson) return undefined;
  let declared: unknown;
  try {
    const pkg = JSON.parse(readFileSync(pkgJson, 'utf8')) as {
      tlsproxy?: Record<string, unknown>;
    };
    declared = pkg.tlsproxy?.[SIDES[side].key];
  } catch {
    return undefined;
  }
  const root = dirname(pkgJson);
  if (name && !realpathSync(root).split(sep).includes('node_modules')) {
    const checkout = defaultTranscriptDir(name, root, side);
    if (checkout) return checkout;
  }
  const dir = join(root, typeof declared === 'string' ? declared : SIDES[side].folder);
  return existsSync(dir) ? dir : undefined;
}

/** A shell word: as is when safe, else single-quoted. */
function shellWord(s: string): string {
  return /^[A-Za-z0-9_/.:@%+=,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** --dialect as given, made absolute when it is a path, so the command works from anywhere. */
function dialectWord(spec: string, cwd: string): string {
  return spec.startsWith('.') || spec.startsWith('/') || existsSync(resolve(cwd, spec))
    ? resolve(cwd, spec)
    : spec;
}

/** The command that repeats this run exactly: every argument, paths made absolute. */
export function rerunCommand(opts: RunOptions, dialectName: string, seed: number): string {
  const cwd = opts.cwd ?? process.cwd();
  const args = [
    'tlsproxy-conformance',
    'run',
    '--dialect',
    typeof opts.dialect === 'string' ? dialectWord(opts.dialect, cwd) : dialectName,
  ];
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

/** Load the dialect and its transcripts as `run` and `mutate` find them. */
export async function loadSuite(
  opts: Pick<RunOptions, 'dialect' | 'transcripts' | 'transcriptDir' | 'cwd'>,
): Promise<{ dialect: Dialect<unknown>; transcripts: Transcript[]; found?: string }> {
  const cwd = opts.cwd ?? process.cwd();
  const dialect = (await loadDialect(opts.dialect as string, cwd)) as Dialect<unknown>;
  let paths = opts.transcripts ?? [];
  if (paths.length === 0) {
    // --transcripts, then what the dialect's package ships, then a checkout's fixtures.
    const dir =
      opts.transcriptDir ??
      (typeof opts.dialect === 'string'
        ? packageTranscriptDir(opts.dialect, cwd, dialect.name)
        : undefined) ??
      defaultTranscriptDir(dialect.name, cwd);
    if (!dir) {
      throw new ConformanceError(
        'TLSPROXY_ERR_CONFORMANCE_USAGE',
        `no transcripts given, none shipped by the dialect's package ("tlsproxy": { "transcripts": DIR } in its package.json, or a transcripts/ folder) and no fixtures/transcripts/${dialect.name}/ found from ${cwd}`,
      );
    }
    paths = [dir];
  }
  const files = transcriptFiles(paths.map((p) => resolve(cwd, p)));
  if (files.length === 0) {
    throw new ConformanceError('TLSPROXY_ERR_CONFORMANCE_USAGE', `no .txt transcripts in ${paths}`);
  }
  const transcripts = files.map(loadTranscript);
  // The folder found by looking (none was given), so a reproduce line need not look again.
  return opts.transcripts?.length || opts.transcriptDir
    ? { dialect, transcripts }
    : { dialect, transcripts, found: resolve(cwd, paths[0]!) };
}

export async function runConformance(opts: RunOptions): Promise<Report> {
  const { dialect, transcripts, found } = await loadSuite(opts);
  const seed = opts.seed ?? Math.floor(Math.random() * 0x7fffffff);
  const options = opts.options ?? {};
  const results: CheckResult[] = [];
  for (const t of transcripts) {
    const r = replay(dialect, t, options);
    results.push(
      withDivergence(t, {
        name: t.name,
        kind: 'replay',
        ok: r.problems.length === 0,
        problems: r.problems,
      }),
    );
  }
  if (opts.engine !== false) {
    const engine = await engineReplay(dialect, transcripts, options, opts.createEngine);
    engine.forEach((r, i) => results.push(withDivergence(transcripts[i]!, r)));
  }
  results.push(
    ...runProperties(dialect, transcripts, options, { seed, seconds: opts.seconds ?? 5 }),
  );
  return {
    ok: results.every((r) => r.ok),
    dialect: dialect.name,
    seed,
    transcripts: transcripts.map((t) => ({
      file: t.file,
      server: t.headers.server ?? '',
      client: t.headers.client ?? '',
    })),
    results,
    rerun: rerunCommand(found ? { ...opts, transcriptDir: found } : opts, dialect.name, seed),
  };
}
