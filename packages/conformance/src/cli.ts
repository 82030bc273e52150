// The tlsproxy-conformance command: `record` (loopback relay → transcript) and `run` (replay,
// engine replay, property suite → report, exit code).
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConformanceError } from './errors.js';
import { parseHostPort, record } from './record.js';
import { formatReport } from './report.js';
import { runConformance } from './runner.js';

const USAGE = `usage:
  tlsproxy-conformance run --dialect <package-or-path> [--options FILE] [--json]
                           [--seconds N] [--seed N] [--no-engine] [TRANSCRIPT...]
      With no TRANSCRIPT: --transcripts DIR, else the transcripts the dialect's package
      ships ("tlsproxy": { "transcripts": DIR } in its package.json, or its transcripts/),
      else fixtures/transcripts/<dialect name>/ searched upwards from the current directory.
  tlsproxy-conformance record --listen 127.0.0.1:PORT --upstream HOST:PORT --out FILE
                           [--server TEXT] [--client TEXT] [--dialect NAME]
                           [--annotate imap|pop3|smtp] [--bind LOCAL-ADDR]
                           [--header KEY=VALUE...]
`;

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
  let options: Record<string, unknown> = {};
  if (values.options) {
    try {
      options = JSON.parse(readFileSync(values.options, 'utf8'));
    } catch (err) {
      throw usage(`--options ${values.options}: ${(err as Error).message}`);
    }
  }
  const report = await runConformance({
    dialect: values.dialect,
    options,
    transcripts: positionals,
    ...(values.transcripts ? { transcriptDir: values.transcripts } : {}),
    seconds,
    ...(seed !== undefined ? { seed } : {}),
    engine: !values['no-engine'],
  });
  print(values.json ? JSON.stringify(report, null, 2) : formatReport(report));
  return report.ok ? 0 : 1;
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
    if (command === 'run') return await runCommand(rest, print);
    if (command === 'record') return await recordCommand(rest, print);
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
