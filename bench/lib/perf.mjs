// The native side of the same question, when Linux perf is installed: V8's profiler cannot see
// OpenSSL, malloc or the kernel, perf can. Samples of the tlsproxy process under the handshake
// load, grouped by what the code is. Skipped (with the reason in the report) without perf.
import { spawn, spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { r1 } from './phases.mjs';
import { log, stop, usage, workDir } from './procs.mjs';

const GROUPS = [
  ['kernel (syscalls, wake-ups, TCP/UNIX sockets)', (dso) => dso.includes('[kernel')],
  ['JavaScript (JIT-compiled code)', (dso, sym) => dso.includes('[JIT]') || sym.startsWith('JS:')],
  ['fdpass addon', (dso) => dso.includes('fdpass')],
  [
    'libc (malloc/free, memcpy, locks)',
    (dso) => dso.startsWith('libc') || dso.startsWith('libstdc'),
  ],
  [
    'V8 (builtins, inline caches, GC, compiler)',
    (_, sym) =>
      /^(Builtins_|v8::|\(anonymous namespace\)::|Turbo)/.test(sym) || sym.includes('v8::internal'),
  ],
  ['Node C++ (stream and TLS wraps, bindings)', (_, sym) => /node::|napi_/.test(sym)],
  ['libuv', (_, sym) => sym.startsWith('uv_') || sym.startsWith('uv__')],
];
const OPENSSL = 'OpenSSL (handshake crypto, TLS state machine, X.509)';

function group(dso, sym) {
  for (const [name, test] of GROUPS) if (test(dso, sym)) return name;
  // What is left in the node binary is the OpenSSL it links statically.
  return dso === 'node' ? OPENSSL : `other (${dso})`;
}

export function perfAvailable() {
  return spawnSync('perf', ['--version'], { stdio: 'ignore' }).status === 0;
}

/**
 * perf samples of the server process `start()` launches (with --perf-basic-prof) during one
 * handshake trial, grouped, and converted to CPU milliseconds per connection with /proc's count.
 */
export async function perfProfile(name, start, trial, P) {
  if (!perfAvailable()) return { error: 'perf not installed (Debian: linux-perf)' };
  const data = join(workDir, `perf-${name}.data`);
  const inst = await start(['--perf-basic-prof']);
  const pid = inst.proxy[0].pid;
  let t;
  let cpu;
  try {
    await trial(inst, P.concurrency, P.warmMs, P);
    const rec = spawn('perf', ['record', '-F', '999', '-p', String(pid), '-o', data], {
      stdio: 'ignore',
    });
    await new Promise((r) => setTimeout(r, 300));
    const u0 = usage([pid]).cpu;
    t = await trial(inst, P.concurrency, P.profileMs, P);
    cpu = usage([pid]).cpu - u0;
    rec.kill('SIGINT');
    await new Promise((r) => rec.once('exit', r));
  } finally {
    for (const c of [...inst.proxy, ...inst.backend]) await stop(c);
  }
  const rep = spawnSync(
    'perf',
    ['report', '-i', data, '--no-children', '--sort', 'dso,sym', '--stdio', '-g', 'none'],
    { encoding: 'utf8', maxBuffer: 64 << 20 },
  );
  rmSync(`/tmp/perf-${pid}.map`, { force: true }); // written by --perf-basic-prof
  const groups = new Map();
  const syms = [];
  for (const line of rep.stdout.split('\n')) {
    const m = line.match(/^\s+([\d.]+)%\s+(\S+(?: \S+ \d+)?)\s+\[[.k]\]\s+(.*)$/);
    if (!m) continue;
    const share = Number(m[1]) / 100;
    const g = group(m[2], m[3]);
    groups.set(g, (groups.get(g) ?? 0) + share);
    syms.push({ name: m[3].trim(), group: g, share: r1(share, 4) });
  }
  if (groups.size === 0) return { error: `perf report gave nothing: ${rep.stderr.slice(0, 200)}` };
  log(`perf profile of ${name} taken`);
  const msPerConn = (cpu * 1000) / t.ok;
  return {
    connections: t.ok,
    connPerSec: r1(t.rate),
    cpuMsPerConnection: r1(msPerConn, 3),
    groups: [...groups]
      .sort((a, b) => b[1] - a[1])
      .map(([g, s]) => ({ name: g, share: r1(s, 3), msPerConnection: r1(s * msPerConn, 3) })),
    top: syms.slice(0, 12),
  };
}
