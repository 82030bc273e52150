#!/usr/bin/env node
// tlsproxy against its peers on loopback, in one run, as ratios (issue 9):
//   1. STARTTLS handshake rate (IMAP): tlsproxy (embedded TlsProxy, 1 process; and the CLI with
//      --workers 2), node:tls doing the preamble + STARTTLS in-process, stunnel4 (protocol = imap),
//      nginx mail (starttls only). Systems alternate A B C D A B C D … so drift cancels.
//   2. Throughput after hand-off (MB/s each way): tlsproxy vs node:tls vs stunnel.
//   3. RSS per idle preamble connection: tlsproxy vs stunnel vs nginx.
//   4. Dialect cost: preambles and commands parsed per second (sans-I/O, loadDialect).
//   5. A CPU profile of tlsproxy under the handshake load (V8's, and Linux perf's if installed,
//      next to node:tls's).
// Installs stunnel4 and nginx's mail module with apt-get when missing (root or sudo -n).
// Writes bench/report.{json,md,svg} and bench/report.cpuprofile and prints the Markdown.
// Usage: node bench/run.mjs [--quick | --smoke] [--only id,id] [--skip phase,phase] [--no-install]
//                           [--out DIR]
//   phases: idle, handshake, bulk, dialect, profile, perf   (BENCH_QUICK=1 is the same as --quick)
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { install, missingPackages } from './lib/install.mjs';
import { perfProfile } from './lib/perf.mjs';
import { dialectCost, handshakes, idleMemory, throughput, trial } from './lib/phases.mjs';
import { benchDir, killAll, log, stop } from './lib/procs.mjs';
import { profileTlsproxy } from './lib/profile.mjs';
import { markdown, ratios, svgChart } from './lib/report.mjs';
import { SYSTEMS, startNodeTls, startTlsproxy } from './lib/systems.mjs';

const args = process.argv.slice(2);
const opt = (name) => (args.includes(name) ? args[args.indexOf(name) + 1].split(',') : null);
const quick = args.includes('--quick') || process.env.BENCH_QUICK === '1';
// --smoke: seconds, not minutes; for the test that keeps this script working, not for figures.
const smoke = args.includes('--smoke');
const outDir = opt('--out')?.[0] ?? benchDir;
const only = opt('--only');
const skip = new Set(opt('--skip') ?? []);
const P = {
  concurrency: 32,
  // Load-generator processes sharing the concurrency: the client side of a handshake costs about
  // as much as the server side, so one process would saturate a core.
  loadgens: Number(process.env.BENCH_LOADGENS ?? 2),
  ...(smoke
    ? {
        rounds: 1,
        trialMs: 1500,
        warmMs: 500,
        profileMs: 1500,
        bulkBytes: 4 << 20,
        bulkRounds: 1,
        idle: 200,
        dialectMs: 50,
      }
    : quick
      ? {
          rounds: 2,
          trialMs: 4000,
          warmMs: 1000,
          profileMs: 4000,
          bulkBytes: 32 << 20,
          bulkRounds: 3,
          idle: 2000,
          dialectMs: 300,
        }
      : {
          rounds: 3,
          trialMs: 15000,
          warmMs: 3000,
          profileMs: 10000,
          bulkBytes: 128 << 20,
          bulkRounds: 5,
          idle: 10000,
          dialectMs: 2000,
        }),
};

const NOTES = [
  'stunnel `protocol = imap` (server mode) waits 200 ms for the client to speak first (RFC 2595 detection, `s_poll_wait(…, 200)` in its imap_server) before it sends the greeting, so at a fixed concurrency its rate is capped near concurrency ÷ 0.2 s; `stunnel-c256` is the same instance with 256 clients, the fair rate comparison. It also connects to its backend before TLS, so it holds two descriptors per preamble connection and, with this machine’s 20,000-descriptor hard limit, cannot hold 10,000 idle connections.',
  'nginx mail answers STARTTLS and the post-TLS CAPABILITY itself; with no LOGIN it never asks auth_http nor opens a backend connection, so its figures exclude any backend, any hand-off and any relay — and it has no throughput row for the same reason.',
  'node-tls-implicit is the floor cost of TLS in Node and the baseline the targets name: TLS from the first byte (port-993 style), then the greeting and CAPABILITY in the same process; its clients skip the plaintext preamble. node-tls does the same IMAP preamble and STARTTLS as tlsproxy, in one process with no hand-off and no backend: the cost of the hand-off alone is tlsproxy against it.',
  'tlsproxy figures include the backend process (written with @tlsproxy/backend); the load generator opens every connection from 127.0.0.1, so the bench lifts `maxConnectionsPerAddress` (default 64).',
  'Connections/s is bounded by the whole machine (load generators + servers share 2 cores). A server that costs less CPU per connection leaves more to the load generator, so the rate ratio understates CPU differences; compare CPU seconds per 1,000 connections for capacity.',
];

function peers() {
  // Both print their version on stderr, stunnel with a non-zero exit.
  const v = (cmd, argv, re) => {
    const r = spawnSync(cmd, argv, { encoding: 'utf8', timeout: 5000 });
    return `${r.stdout ?? ''}${r.stderr ?? ''}`.match(re)?.[1];
  };
  return [
    `stunnel ${v('stunnel4', ['-version'], /stunnel (\S+)/) ?? 'absent'}`,
    `nginx ${v('nginx', ['-v'], /nginx\/(\S+)/) ?? 'absent'}`,
    `${v('openssl', ['version'], /(OpenSSL \S+)/) ?? 'OpenSSL ?'} (system), Node's ${process.versions.openssl}`,
  ].join(', ');
}

async function main() {
  mkdirSync(outDir, { recursive: true });
  const systems = SYSTEMS.filter((s) => !only || only.includes(s.id) || only.includes(s.reuse));
  const failures = {};
  if (!args.includes('--no-install')) {
    const why = install(missingPackages(systems));
    if (why) log(why);
  }
  const startedAt = new Date().toISOString();
  const insts = {};
  const meta = {};
  const report = {
    startedAt,
    quick,
    mode: smoke ? 'smoke' : quick ? 'quick' : 'full',
    machine: {
      cpus: cpus().length,
      model: cpus()[0]?.model,
      node: process.version,
      kernel: readFileSync('/proc/version', 'utf8').split(' ')[2],
      peers: peers(),
    },
    params: P,
    systems: meta,
    failures,
    handshake: {},
    throughput: {},
    idleMemory: {},
    dialectCost: {},
    profile: null,
    perf: null,
  };
  try {
    for (const s of systems) {
      try {
        if (s.reuse) {
          if (!insts[s.reuse]) throw new Error(`${s.reuse} did not start`);
          insts[s.id] = { ...insts[s.reuse], shared: true };
        } else insts[s.id] = await s.start();
        meta[s.id] = { label: s.label, cores: s.cores };
        log(`started ${s.id} on port ${insts[s.id].port}`);
      } catch (e) {
        failures[s.id] = e.message.slice(0, 500);
        log(`cannot start ${s.id}: ${failures[s.id]}`);
      }
    }
    // Idle memory first, on freshly started servers (before load inflates the Node heaps).
    if (!skip.has('idle')) report.idleMemory = await idleMemory(systems, insts, P);
    if (!skip.has('handshake')) report.handshake = await handshakes(systems, insts, P);
    if (!skip.has('bulk')) report.throughput = await throughput(systems, insts, P);
  } finally {
    for (const inst of Object.values(insts).filter((i) => !i.shared))
      for (const c of [...inst.proxy, ...inst.backend]) await stop(c);
  }
  // Alone on the machine now: the profile, then the sans-I/O dialect loop.
  if (!skip.has('profile') && (!only || only.includes('tlsproxy'))) {
    try {
      report.profile = await profileTlsproxy(trial, P, outDir);
    } catch (e) {
      report.profile = { error: e.message.slice(0, 300) };
    }
  }
  if (!skip.has('perf') && (!only || only.includes('tlsproxy'))) {
    report.perf = {};
    for (const [id, startFn] of [
      ['tlsproxy', (flags) => startTlsproxy('perf', flags)],
      ['node-tls', (flags) => startNodeTls(flags)],
    ]) {
      try {
        report.perf[id] = await perfProfile(id, startFn, trial, P);
      } catch (e) {
        report.perf[id] = { error: e.message.slice(0, 300) };
      }
    }
  }
  if (!skip.has('dialect')) report.dialectCost = await dialectCost(P);
  killAll('SIGKILL');
  report.ratios = ratios(report.handshake, report.throughput);
  writeFileSync(join(outDir, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(join(outDir, 'report.svg'), svgChart(report.handshake, P.concurrency));
  const md = markdown(report, NOTES);
  writeFileSync(join(outDir, 'report.md'), md);
  console.log(md);
}

try {
  await main();
  process.exit(0);
} catch (e) {
  log(e.stack);
  process.exit(1);
}
