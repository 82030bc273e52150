// A V8 CPU profile of the tlsproxy process under the handshake load, boiled down to where its
// time goes: by part of the code (our packages, node:tls, node:net, GC, native code) and the
// functions with the most self time. The full .cpuprofile is kept next to the report for
// Chrome DevTools or speedscope.
import { copyFileSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { r1 } from './phases.mjs';
import { benchDir, log, stop, usage, workDir } from './procs.mjs';
import { startTlsproxy } from './systems.mjs';

const PARTS = [
  [/packages\/fdpass\//, 'fdpass (preamble streams, descriptor hand-off to the backend)'],
  [/packages\/pool\//, 'TLS engine (@tlsproxy/pool: handshake set-up, relay)'],
  [/packages\/engine-native\//, 'native engine, JS side (submit, events, OwnedFd)'],
  [/packages\/backend\//, '@tlsproxy/backend'],
  [/packages\/core\//, 'core (sessions, STARTTLS transition, backend channel)'],
  [/protocols\/|nearley/, 'IMAP dialect (incl. nearley grammar)'],
  [/node:_tls|node:tls|internal\/tls/, 'node:tls (JS side)'],
  [
    /node:net|internal\/streams|stream_base|node:events|task_queues|timers/,
    'node:net, streams, events, timers',
  ],
];

function partOf(frame) {
  if (frame.functionName === '(garbage collector)') return 'garbage collection';
  if (frame.functionName === '(program)')
    return 'native code outside JS (OpenSSL handshake, libuv)';
  if (frame.url === '' && frame.functionName && !frame.functionName.startsWith('('))
    return 'native bindings called from JS (write, close, shutdown syscalls)';
  for (const [re, name] of PARTS) if (re.test(frame.url)) return name;
  return 'other';
}

/** Summarize a .cpuprofile: busy share, self time by part and the top functions. */
export function summarize(file, top = 15) {
  const p = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map();
  for (let i = 0; i < p.samples.length; i++)
    self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));
  let total = 0;
  let idle = 0;
  const parts = new Map();
  const fns = new Map();
  for (const [id, us] of self) {
    const f = byId.get(id).callFrame;
    total += us;
    if (f.functionName === '(idle)') {
      idle += us;
      continue;
    }
    const part = partOf(f);
    parts.set(part, (parts.get(part) ?? 0) + us);
    const where = f.url
      ? `${f.url.replace(/^.*\/(packages|protocols|node_modules)\//, '$1/')}:${f.lineNumber + 1}`
      : '';
    const k = `${f.functionName || '(anonymous)'}${where ? ` ${where}` : ''}`;
    fns.set(k, (fns.get(k) ?? 0) + us);
  }
  const busy = total - idle;
  const rank = (m) =>
    [...m].sort((a, b) => b[1] - a[1]).map(([name, us]) => ({ name, share: r1(us / busy, 3) }));
  return {
    seconds: r1(total / 1e6, 2),
    busyShare: r1(busy / total, 3),
    parts: rank(parts),
    functions: rank(fns).slice(0, top),
  };
}

/**
 * Run one handshake trial against a profiled tlsproxy (`engine`: 'native', the default engine, or
 * 'node') and summarize its profile. With the native engine V8 sees only the JS thread's part:
 * the dialect, the hand-off and the proxy's bookkeeping; the TLS work is on the engine's threads.
 */
export async function profileTlsproxy(trial, P, outDir = benchDir, engine = 'native') {
  const dir = join(workDir, 'cpuprof');
  const inst = await startTlsproxy('prof', ['--cpu-prof', `--cpu-prof-dir=${dir}`], engine);
  let t;
  let cpu;
  try {
    const u0 = usage([inst.proxy[0].pid]);
    const t0 = performance.now();
    await trial(inst, P.concurrency, P.warmMs, P);
    t = await trial(inst, P.concurrency, P.profileMs, P);
    const u1 = usage([inst.proxy[0].pid]);
    const wall = (performance.now() - t0) / 1000;
    cpu = { user: u1.user - u0.user, sys: u1.sys - u0.sys, share: (u1.cpu - u0.cpu) / wall };
  } finally {
    await stop(inst.proxy[0]); // SIGTERM → process.exit → V8 writes the profile
    await stop(inst.backend[0]);
  }
  const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) throw new Error('no .cpuprofile written');
  const kept = join(outDir, 'report.cpuprofile');
  copyFileSync(join(dir, file), kept);
  log(`profile of tlsproxy under load: ${kept}`);
  return {
    engine,
    connections: t.ok,
    connPerSec: r1(t.rate),
    // /proc's split: the kernel share is syscalls and wake-ups (accept, sendmsg, socketpair…).
    proxyUserSecs: r1(cpu.user, 2),
    proxyKernelSecs: r1(cpu.sys, 2),
    procBusyShare: r1(cpu.share, 3),
    ...summarize(join(dir, file)),
  };
}
