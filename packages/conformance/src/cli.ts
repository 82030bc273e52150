// The tlsproxy-conformance command: `record` (loopback relay → transcript) and `run` (replay,
// engine replay, property suite → report, exit code).
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import {
  CLIENT_RECORD_USAGE,
  CLIENT_USAGE,
  recordClientCommand,
  runClientCommand,
  splitRole,
} from './client-runner.js';
import { ConformanceError } from './errors.js';
import { formatMutationReport, type MutationReport, mutationCheck } from './mutate.js';
import { parseHostPort, record } from './record.js';
import { formatReport } from './report.js';
import { loadSuite, runConformance } from './runner.js';

/** The built-in dialects `mutate` checks when no --dialect is given. */
const BUILT_IN = ['imap', 'pop3', 'smtp', 'ldap', 'xmpp', 'http-upgrade'];

const USAGE = `usage:
  tlsproxy-conformance run --dialect <package-or-path> [--options FILE] [--json]
                           [--seconds N] [--seed N] [--no-engine] [TRANSCRIPT...]
      With no TRANSCRIPT: --transcripts DIR, else the transcripts the dialect's package
      ships ("tlsproxy": { "transcripts": DIR } in its package.json, or its transcripts/),
      else fixtures/transcripts/<dialect name>/ searched upwards from the current directory.
      --options takes a JSON file or inline JSON ('{"key": 1}').
${CLIENT_USAGE}  tlsproxy-conformance mutate [--dialect <package-or-path>]... [--options FILE|JSON]
                           [--transcripts DIR] [--min PERCENT] [--max-points N] [--json]
                           [TRANSCRIPT...]
      The mutation self-check: each dialect (default: the built-in ones) with its sessions
      changed the way buggy dialects go wrong, replayed against its transcripts; exits 1 when
      fewer than --min (default 95) percent of the mutants fail.
  tlsproxy-conformance record --listen 127.0.0.1:PORT --upstream HOST:PORT --out FILE
                           [--server TEXT] [--client TEXT] [--dialect NAME]
                           [--annotate imap|pop3|smtp] [--bind LOCAL-ADDR]
                           [--header KEY=VALUE...]
${CLIENT_RECORD_USAGE}`;

async function runCommand(args: string[], print: (s: string) => void): Promise<number> {
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
  const options = readOptions(values.options);
  const report = await runConformance({
    dialect: values.dialect,
    options,
    transcripts: positionals,
    ...(values.transcripts ? { transcriptDir: values.transcripts } : {}),
    seconds,
    ...(seed !== undefined ? { seed } : {}),
    engine: !values['no-engine'],
    ...(values.options && !isInlineJson(values.options) ? { optionsFile: values.options } : {}),
    json: values.json,
  });
  print(values.json ? JSON.stringify(report, null, 2) : formatReport(report));
  return report.ok ? 0 : 1;
}

const isInlineJson = (v: string): boolean => v.trimStart().startsWith('{');

/** --options: a JSON file, or the JSON itself (so a reproduce line can carry it). */
function readOptions(value: string | undefined): Record<string, unknown> {
  if (!value) return {};
  try {
    return JSON.parse(isInlineJson(value) ? value : readFileSync(value, 'utf8'));
  } catch (err) {
    throw usage(`--options ${value}: ${(err as Error).message}`);
  }
}

async function mutateCommand(args: string[], print: (s: string) => void): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      dialect: { type: 'string', multiple: true },
      options: { type: 'string' },
      transcripts: { type: 'string' },
      min: { type: 'string' },
      'max-points': { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  const min = values.min === undefined ? 95 : Number(values.min);
  if (!(min >= 0 && min <= 100)) throw usage('--min must be a percentage (0-100)');
  const maxPoints = values['max-points'] === undefined ? 16 : Number(values['max-points']);
  if (!(Number.isInteger(maxPoints) && maxPoints > 0))
    throw usage('--max-points must be a positive integer');
  const dialects = values.dialect ?? BUILT_IN;
  if (dialects.length > 1 && (positionals.length > 0 || values.transcripts))
    throw usage('transcripts can be given for one --dialect only');
  const options = readOptions(values.options);
  const reports: MutationReport[] = [];
  const skipped: string[] = [];
  for (const spec of dialects) {
    let suite: Awaited<ReturnType<typeof loadSuite>>;
    try {
      suite = await loadSuite({
        dialect: spec,
        transcripts: positionals,
        ...(values.transcripts ? { transcriptDir: values.transcripts } : {}),
      });
    } catch (err) {
      // With no --dialect, the built-in dialects that are installed are checked.
      if (values.dialect || (err as { code?: string }).code !== 'TLSPROXY_ERR_DIALECT_NOT_FOUND')
        throw err;
      skipped.push(spec);
      continue;
    }
    reports.push(mutationCheck(suite.dialect, suite.transcripts, options, { maxPoints }));
  }
  if (reports.length === 0)
    throw usage(`none of the built-in dialects is installed (${BUILT_IN.join(', ')})`);
  if (skipped.length > 0 && !values.json)
    print(`not installed, not checked: ${skipped.join(', ')}\n`);
  const ok = reports.every((r) => r.rate * 100 >= min);
  if (values.json) print(JSON.stringify({ ok, min, skipped, reports }, null, 2));
  else {
    print(reports.map(formatMutationReport).join('\n\n'));
    print(
      ok
        ? `\nevery dialect: at least ${min} % of the mutants killed`
        : `\nFAILED: ${reports
            .filter((r) => r.rate * 100 < min)
            .map((r) => `${r.dialect} ${(r.rate * 100).toFixed(1)} %`)
            .join(', ')} below ${min} %`,
    );
  }
  return ok ? 0 : 1;
}

async function recordCommand(args: string[], print: (s: string) => void): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      listen: { type: 'string' },
      upstream: { type: 'string' },
      out: { type: 'string' },
      server: { type: 'string' },
      client: { type: 'string' },
      dialect: { type: 'string' },
      annotate: { type: 'string' },
      bind: { type: 'string' },
      header: { type: 'string', multiple: true },
    },
  });
  if (!values.listen || !values.upstream || !values.out) {
    throw usage('record needs --listen, --upstream and --out');
  }
  const headers: Record<string, string> = {
    server: values.server ?? `unknown server at ${values.upstream}`,
    client: values.client ?? 'unknown client',
    dialect: values.dialect ?? values.annotate ?? 'unknown',
    recorded: new Date().toISOString().slice(0, 10),
  };
  for (const h of values.header ?? []) {
    const m = /^([a-z][a-z-]*)=(.*)$/.exec(h);
    if (!m) throw usage(`--header ${h}: expected key=value`);
    headers[m[1]!] = m[2]!;
  }
  await record({
    listen: parseHostPort(values.listen, '--listen'),
    upstream: parseHostPort(values.upstream, '--upstream'),
    out: values.out,
    headers,
    ...(values.annotate ? { annotate: values.annotate } : {}),
    ...(values.bind ? { bind: values.bind } : {}),
    onListening: (port) => print(`recording: listening on port ${port}`),
  });
  print(`recording: wrote ${values.out}`);
  return 0;
}

function usage(message: string): ConformanceError {
  return new ConformanceError('TLSPROXY_ERR_CONFORMANCE_USAGE', `${message}\n\n${USAGE}`);
}

export async function main(
  argv: string[],
  print: (s: string) => void = (s) => console.log(s),
): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === 'run') {
      // --role client: the dialect's client side against client transcripts (client-runner.ts).
      const { role, rest: args } = splitRole(rest);
      return role === 'client'
        ? await runClientCommand(args, print)
        : await runCommand(args, print);
    }
    if (command === 'record') {
      const { role, rest: args } = splitRole(rest);
      return role === 'client'
        ? await recordClientCommand(args, print)
        : await recordCommand(args, print);
    }
    if (command === 'mutate') return await mutateCommand(rest, print);
    if (command === '--help' || command === 'help') {
      print(USAGE);
      return 0;
    }
    throw usage(command ? `unknown command "${command}"` : 'no command given');
  } catch (err) {
    const e = err as Error & { code?: string };
    console.error(`tlsproxy-conformance: ${e.code ? `${e.code}: ` : ''}${e.message}`);
    return 2;
  }
}
