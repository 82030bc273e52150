// The native side of the same question, when Linux perf is installed: V8's profiler cannot see
// OpenSSL, malloc, the kernel or the native engine's own threads; perf can. Samples of every
// server process of one system (proxy and backend) under the handshake load, split by part — the
// proxy's JS thread, the native engine's loop threads (`tls-engine-N`), the proxy's other threads,
// the backend process — and within each part by kind of code. Each part's CPU per connection comes
// from /proc (per-thread counters, exact); perf's sample shares split it by kind of code.
// Skipped (with the reason in the report) without perf.
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { r1 } from './phases.mjs';
import { log, stop, threadCpu, workDir } from './procs.mjs';

export const OPENSSL = 'OpenSSL (handshake crypto, TLS state machine, X.509, AES-GCM)';
const GROUPS = [
  ['kernel (syscalls, wake-ups, TCP/UNIX sockets)', (dso) => dso.includes('[kernel')],
  [
    'JavaScript (JIT-compiled code)',
    (dso, sym) => dso.includes('[JIT]') || /perf-\d+\.map/.test(dso) || sym.startsWith('JS:'),
  ],
  ['native engine addon (epoll loop, relay, state machine)', (dso) => /engine[-_]native/.test(dso)],
  ['fdpass addon (socketpair, SCM_RIGHTS)', (dso) => dso.includes('fdpass')],
  ['libc (malloc/free, memcpy, locks)', (dso) => /(^|\/)lib(c|pthread|m|stdc\+\+)[.-]/.test(dso)],
  [
    'V8 (builtins, inline caches, GC, compiler)',
    (_, sym) =>
      /^(Builtins_|v8::|\(anonymous namespace\)::|Turbo)/.test(sym) || sym.includes('v8::internal'),
  ],
  ['Node C++ (stream and TLS wraps, bindings)', (_, sym) => /node::|napi_/.test(sym)],
  ['libuv', (_, sym) => sym.startsWith('uv_') || sym.startsWith('uv__')],
];

function group(dso, sym) {
  for (const [name, test] of GROUPS) if (test(dso, sym)) return name;
  // What is left in the node binary is the OpenSSL it links statically.
  const base = dso.split('/').pop();
  return base === 'node' ? OPENSSL : `other (${base})`;
}

export const PARTS = {
  js: "proxy's JS thread (dialect, hand-off, node:tls engine when in use)",
  engine: 'native engine loop threads (tls-engine-N: handshake, relay)',
  other: "proxy's other threads (V8 GC and compiler helpers, libuv pool)",
  backend: 'backend process (all threads)',
};

/** The order parts are listed in (PARTS'). */
const partRank = (part) => Object.keys(PARTS).indexOf(part);

export function perfAvailable() {
  return spawnSync('perf', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Which part of the system a thread is. */
function partOf(pid, tid, name, backendPids) {
  if (backendPids.has(pid)) return 'backend';
  if (name.startsWith('tls-engine')) return 'engine';
  return tid === pid ? 'js' : 'other';
}

/** CPU seconds per part, from /proc's per-thread counters of `procs` ({ pid, backend }). */
function partCpu(procs) {
  const backend = new Set(procs.filter((p) => p.backend).map((p) => p.pid));
  const out = new Map();
  for (const { pid } of procs)
    for (const t of threadCpu(pid)) {
      const part = partOf(pid, t.tid, t.name, backend);
      out.set(`${part} ${t.tid}`, t.cpu);
    }
  return out;
}

/**
 * perf samples of the server processes `start()` launches (with --perf-basic-prof) during one
 * handshake trial, split by part and kind of code, in CPU milliseconds per connection.
 */
export async function perfProfile(name, start, trial, P) {
  if (!perfAvailable()) return { error: 'perf not installed (Debian: linux-perf)' };
  const data = join(workDir, `perf-${name}.data`);
  const inst = await start(['--perf-basic-prof']);
  const procs = [
    ...inst.proxy.map((c) => ({ pid: c.pid, backend: false })),
    ...inst.backend.map((c) => ({ pid: c.pid, backend: true })),
  ];
  const backendPids = new Set(procs.filter((p) => p.backend).map((p) => p.pid));
  let t;
  let c0;
  let c1;
  let statOut = '';
  // Thread names by tid, read while the processes live (perf stat names threads `comm-tid`).
  const threads = new Map();
  try {
    await trial(inst, P.concurrency, P.warmMs, P);
    for (const { pid } of procs)
      for (const th of threadCpu(pid)) threads.set(th.tid, { pid, name: th.name });
    const pids = procs.map((p) => p.pid).join(',');
    const rec = spawn('perf', ['record', '-F', '999', '-p', pids, '-o', data], {
      stdio: 'ignore',
    });
    // Beside the samples, the kernel's exact counts per thread: system calls and context
    // switches, the currency of a path that crosses threads and processes.
    const st = spawn(
      'perf',
      [
        'stat',
        '--per-thread',
        '-x',
        ',',
        '-e',
        'raw_syscalls:sys_enter,context-switches',
        '-p',
        pids,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    st.stderr.setEncoding('utf8');
    st.stderr.on('data', (d) => {
      statOut += d;
    });
    await new Promise((r) => setTimeout(r, 300));
    c0 = partCpu(procs);
    t = await trial(inst, P.concurrency, P.profileMs, P);
    c1 = partCpu(procs);
    for (const p of [rec, st]) p.kill('SIGINT');
    await Promise.all([rec, st].map((p) => new Promise((r) => p.once('exit', r))));
  } finally {
    for (const c of [...inst.proxy, ...inst.backend]) await stop(c);
  }
  const script = spawnSync('perf', ['script', '-i', data, '-F', 'comm,pid,tid,ip,sym,dso'], {
    encoding: 'utf8',
    maxBuffer: 256 << 20,
  });
  // --perf-basic-prof: V8 writes /tmp/perf-PID.map and, in Node 20, an isolate-*-PID-v8.log in
  // the servers' working directory (this one); neither is wanted after the phase.
  const pids = new Set(procs.map(({ pid }) => String(pid)));
  for (const pid of pids) rmSync(`/tmp/perf-${pid}.map`, { force: true });
  for (const f of readdirSync('.')) {
    const m = /^isolate-0x[0-9a-f]+-(\d+)-v8\.log$/.exec(f);
    if (m && pids.has(m[1])) rmSync(f, { force: true });
  }
  rmSync(data, { force: true });
  // "  comm  pid/tid  ip  symbol (dso)"; the thread name may hold spaces, the symbol too.
  const samples = new Map(); // part → Map(kind → count)
  const syms = new Map(); // `part\0kind\0sym` → count
  let total = 0;
  for (const line of script.stdout.split('\n')) {
    const m = line.match(/^\s*(.*?)\s+(\d+)\/(\d+)\s+[0-9a-f]+\s+(.*?)\s+\(([^()]*)\)\s*$/);
    if (!m) continue;
    const [, comm, pid, tid, sym, dso] = m;
    const part = partOf(Number(pid), Number(tid), comm, backendPids);
    const kind = group(dso, sym);
    const g = samples.get(part) ?? new Map();
    samples.set(part, g.set(kind, (g.get(kind) ?? 0) + 1));
    const k = `${part}\0${kind}\0${sym}`;
    syms.set(k, (syms.get(k) ?? 0) + 1);
    total++;
  }
  if (total === 0) return { error: `perf script gave nothing: ${script.stderr.slice(0, 200)}` };
  log(`perf profile of ${name} taken (${total} samples)`);
  // /proc CPU per part over the trial (threads present at both readings).
  const cpu = new Map();
  for (const [k, v] of c1) {
    const part = k.split(' ')[0];
    cpu.set(part, (cpu.get(part) ?? 0) + v - (c0.get(k) ?? 0));
  }
  const msPer = (secs) => (secs * 1000) / t.ok;
  const parts = [...new Set([...cpu.keys(), ...samples.keys()])]
    .filter((p) => (cpu.get(p) ?? 0) > 0 || samples.has(p))
    .map((p) => {
      const g = samples.get(p) ?? new Map();
      const n = [...g.values()].reduce((a, x) => a + x, 0);
      const ms = msPer(cpu.get(p) ?? 0);
      return {
        part: p,
        name: PARTS[p],
        msPerConnection: r1(ms, 3),
        samples: n,
        kinds: [...g]
          .sort((a, b) => b[1] - a[1])
          .map(([kind, c]) => ({
            name: kind,
            share: r1(c / n, 3),
            msPerConnection: r1((c / n) * ms, 3),
          })),
      };
    })
    .sort((a, b) => partRank(a.part) - partRank(b.part));
  const totalMs = parts.reduce((a, p) => a + (p.msPerConnection ?? 0), 0);
  // perf stat: "comm-tid,count,unit,event,…" per thread and event.
  const calls = new Map(); // part → { syscalls, switches }
  for (const line of statOut.split('\n')) {
    const f = line.split(',');
    const tid = Number(f[0]?.split('-').pop());
    const n = Number(f[1]);
    if (!tid || !Number.isFinite(n) || !f[3]) continue;
    const th = threads.get(tid);
    const part = th ? partOf(th.pid, tid, th.name, backendPids) : 'other';
    const c = calls.get(part) ?? { syscalls: 0, switches: 0 };
    if (f[3].startsWith('raw_syscalls')) c.syscalls += n;
    else if (f[3].startsWith('context-switches')) c.switches += n;
    calls.set(part, c);
  }
  // The same kinds summed over the parts (ms per connection), for the whole system.
  const kinds = new Map();
  for (const p of parts)
    for (const k of p.kinds) kinds.set(k.name, (kinds.get(k.name) ?? 0) + k.msPerConnection);
  return {
    connections: t.ok,
    connPerSec: r1(t.rate),
    samples: total,
    cpuMsPerConnection: r1(totalMs, 3),
    parts,
    // Per connection; empty when perf stat could not count (tracepoints not readable).
    calls: [...calls]
      .filter(([, c]) => c.syscalls + c.switches > 0)
      .sort(([a], [b]) => partRank(a) - partRank(b))
      .map(([part, c]) => ({
        part,
        syscalls: r1(c.syscalls / t.ok, 1),
        switches: r1(c.switches / t.ok, 2),
      })),
    groups: [...kinds]
      .sort((a, b) => b[1] - a[1])
      .map(([g, ms]) => ({ name: g, share: r1(ms / totalMs, 3), msPerConnection: r1(ms, 3) })),
    top: [...syms]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 15)
      .map(([k, c]) => {
        const [part, kind, sym] = k.split('\0');
        return { part, kind, name: sym, share: r1(c / total, 4) };
      }),
  };
}
