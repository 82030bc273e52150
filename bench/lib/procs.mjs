// Child processes of the benchmark: started, measured from /proc and always killed (with their
// descendants) on every exit path, so an interrupted run leaves no server behind.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
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

export function tree(pid, t = procTable()) {
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

/** Every live process of the trees rooted at `pids` (a cluster primary's workers, nginx's). */
export function treePids(pids) {
  const t = procTable();
  return pids.flatMap((p) => tree(p, t));
}

/** CPU seconds per thread of process `pid`, by thread: `{ tid, name, cpu }` (Linux /proc). */
export function threadCpu(pid) {
  const out = [];
  let tids = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const s = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      out.push({
        tid: Number(tid),
        name: s.slice(s.indexOf('(') + 1, s.lastIndexOf(')')),
        cpu: (Number(f[11]) + Number(f[12])) / CLK_TCK,
      });
    } catch {}
  }
  return out;
}

/**
 * Send `cmd` on a bench server's stdin and resolve with the JSON that follows `<cmd> ` on its
 * stdout (servers.mjs answers `mem` this way).
 */
export function ask(c, cmd, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    let out = '';
    const onData = (d) => {
      out += d;
      const m = out.match(new RegExp(`(?:^|\\n)${cmd} (.*)\\n`));
      if (!m) return;
      clearTimeout(timer);
      c.stdout.removeListener('data', onData);
      resolve(JSON.parse(m[1]));
    };
    const timer = setTimeout(() => {
      c.stdout.removeListener('data', onData);
      reject(new Error(`no answer to ${cmd}`));
    }, timeoutMs);
    c.stdout.on('data', onData);
    c.stdin.write(`${cmd}\n`);
  });
}

/** Spawn `cmd`; resolve once stdout shows `ready` or `port` accepts a connection. */
export function start(cmd, argv, { ready = null, port = null, name = cmd, env = {} } = {}) {
  const c = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  children.add(c);
  c.startedAt = Date.now(); // the memory phases wait for a server's start-up to settle
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
/** A bench script as a command; TLSPROXY_BENCH_CHECKOUT runs another checkout's copy (ab.mjs). */
export const node = (script, ...a) => [
  process.execPath,
  [
    join(
      process.env.TLSPROXY_BENCH_CHECKOUT
        ? join(process.env.TLSPROXY_BENCH_CHECKOUT, 'bench')
        : benchDir,
      script,
    ),
    ...a.map(String),
  ],
];

let perfStatWorks = null;
/** Whether `perf stat` can count context switches of another process here. */
export function perfStatAvailable() {
  if (perfStatWorks === null) {
    const r = spawnSync('perf', ['stat', '-x', ',', '-e', 'context-switches', 'true'], {
      encoding: 'utf8',
      timeout: 10000,
    });
    perfStatWorks = r.status === 0 && /context-switches/.test(r.stderr ?? '');
  }
  return perfStatWorks;
}

/**
 * Count the context switches of `pids` (every thread, and threads they start later: perf's
 * counters are inherited) from now until the returned stop() — null without a working perf.
 */
export async function countSwitches(pids) {
  if (!pids.length || !perfStatAvailable()) return null;
  const c = spawn('perf', ['stat', '-x', ',', '-e', 'context-switches', '-p', pids.join(',')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.add(c);
  let err = '';
  c.stderr.on('data', (d) => {
    err += d;
  });
  // 'close', not 'exit': perf prints its count as it ends, and 'exit' may come before stderr's end.
  const exited = new Promise((r) => c.once('close', r));
  c.on('exit', () => children.delete(c));
  // perf prints nothing once attached: wait until it holds its counters (perf_event
  // descriptors), or a SIGINT before that would end it with no count.
  const attached = () => {
    try {
      return readdirSync(`/proc/${c.pid}/fd`).some((fd) => {
        try {
          return readlinkSync(`/proc/${c.pid}/fd/${fd}`).includes('perf_event');
        } catch {
          return false;
        }
      });
    } catch {
      return false;
    }
  };
  for (let i = 0; i < 100 && !attached() && c.exitCode === null; i++)
    await new Promise((r) => setTimeout(r, 20));
  return {
    async stop() {
      c.kill('SIGINT');
      await exited;
      const n = err.match(/^(\d+),[^,]*,context-switches/m);
      return n ? Number(n[1]) : null;
    },
  };
}

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
