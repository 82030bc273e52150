// Child processes of the benchmark: started, measured from /proc and always killed (with their
// descendants) on every exit path, so an interrupted run leaves no server behind.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const benchDir = fileURLToPath(new URL('..', import.meta.url));
export const root = fileURLToPath(new URL('../..', import.meta.url));
export const workDir = mkdtempSync(join(tmpdir(), 'tlsproxy-bench-'));
export const log = (m) => process.stderr.write(`bench: ${m}\n`);

const CLK_TCK = 100;
const PAGE = 4096;
const children = new Set();

function procTable() {
  const t = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = readFileSync(`/proc/${d}/stat`, 'latin1');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' '); // f[0] = state (field 3)
      t.set(Number(d), {
        ppid: Number(f[1]),
        user: Number(f[11]) / CLK_TCK,
        sys: Number(f[12]) / CLK_TCK,
        rss: Number(f[21]) * PAGE,
      });
    } catch {}
  }
  return t;
}

function tree(pid, t = procTable()) {
  const out = [pid];
  for (let i = 0; i < out.length; i++) for (const [p, v] of t) if (v.ppid === out[i]) out.push(p);
  return out.filter((p) => t.has(p));
}

/** CPU seconds (user, kernel) and RSS bytes of the process trees rooted at `pids`. */
export function usage(pids) {
  const t = procTable();
  const u = { cpu: 0, user: 0, sys: 0, rss: 0 };
  for (const pid of pids)
    for (const p of tree(pid, t)) {
      const v = t.get(p);
      u.user += v.user;
      u.sys += v.sys;
      u.rss += v.rss;
    }
  u.cpu = u.user + u.sys;
  return u;
}

export function killAll(sig = 'SIGKILL') {
  const t = procTable();
  for (const c of children)
    for (const p of tree(c.pid, t).reverse()) {
      try {
        process.kill(p, sig);
      } catch {}
    }
}

process.on('exit', () => {
  killAll('SIGKILL');
  rmSync(workDir, { recursive: true, force: true });
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

/** Spawn `cmd`; resolve once stdout shows `ready` or `port` accepts a connection. */
export function start(cmd, argv, { ready = null, port = null, name = cmd } = {}) {
  const c = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(c);
  let err = '';
  c.stderr.on('data', (d) => {
    err = (err + d).slice(-4000);
  });
  c.on('exit', () => children.delete(c));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start: ${err}`)), 15000);
    // A peer that is not installed (spawn ENOENT) is a failed system, not a crashed bench.
    c.on('error', (e) => {
      clearTimeout(timer);
      children.delete(c);
      reject(new Error(`${name} did not start: ${e.message}`));
    });
    const ok = () => {
      clearTimeout(timer);
      resolve(c);
    };
    c.once('exit', (code) => reject(new Error(`${name} exited ${code}: ${err}`)));
    if (ready) {
      let out = '';
      c.stdout.on('data', (d) => {
        out += d;
        if (out.includes(ready)) ok();
      });
      return;
    }
    c.stdout.resume();
    let tries = 0;
    const poll = () =>
      net
        .connect(port, '127.0.0.1', function () {
          this.destroy();
          ok();
        })
        .on('error', () => {
          if (++tries < 150) setTimeout(poll, 100);
        });
    poll();
  });
}

/** SIGTERM, then SIGKILL the whole tree after 3 s. */
export async function stop(c) {
  if (!c || c.exitCode !== null || c.signalCode !== null) return;
  const gone = new Promise((r) => c.once('exit', r));
  c.kill('SIGTERM');
  const t = setTimeout(() => {
    for (const p of tree(c.pid).reverse()) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {}
    }
  }, 3000);
  await gone;
  clearTimeout(t);
}

export function freePort() {
  return new Promise((r) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => r(port));
    });
  });
}

/** [node, [bench/script, ...args]] for start(). */
export const node = (script, ...a) => [
  process.execPath,
  [join(benchDir, script), ...a.map(String)],
];

/** Run bench/loadgen.mjs; resolve with its final result line, pass progress lines to onLine. */
export function loadgen(opts, onLine) {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [join(benchDir, 'loadgen.mjs'), JSON.stringify(opts)], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    children.add(c);
    let out = '';
    c.stdout.on('data', (d) => {
      out += d;
      const lines = out.split('\n');
      out = lines.pop();
      for (const l of lines) {
        const o = JSON.parse(l);
        if ('loadgenCpuSecs' in o) resolve(o);
        else onLine?.(o, c);
      }
    });
    c.on('exit', (code) => {
      children.delete(c);
      if (code !== 0) reject(new Error(`loadgen exited ${code}`));
    });
  });
}
