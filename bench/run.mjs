#!/usr/bin/env node
// tlsproxy against its peers on loopback, in one run, as ratios (issue 9):
//   1. STARTTLS handshake rate (IMAP): tlsproxy (embedded TlsProxy, 1 process; and the CLI with
//      --workers 2), node:tls doing the preamble + STARTTLS in-process, stunnel4 (protocol = imap),
//      nginx mail (starttls only). Systems alternate A B C D A B C D … so drift cancels.
//   2. Throughput after hand-off (MB/s each way): tlsproxy vs node:tls vs stunnel.
//   3. RSS per idle preamble connection: tlsproxy vs stunnel vs nginx.
//   4. Dialect cost: preamble commands parsed per second (sans-I/O, loadDialect).
// Writes bench/report.json, bench/report.md, bench/report.svg and prints the tables.
// Usage: node bench/run.mjs [--quick] [--only a,b]   (BENCH_QUICK=1 is the same as --quick)
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const root = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const quick = args.includes('--quick') || process.env.BENCH_QUICK === '1';
const only = args.includes('--only') ? args[args.indexOf('--only') + 1].split(',') : null;
const P = quick
  ? { rounds: 2, trialMs: 4000, warmMs: 1000, bulkBytes: 16 << 20, idle: 2000, dialectMs: 500 }
  : { rounds: 3, trialMs: 15000, warmMs: 3000, bulkBytes: 64 << 20, idle: 5000, dialectMs: 2000 };
const CONCURRENCY = 32;
// Load generator processes sharing CONCURRENCY (the client side of a handshake costs about as
// much as the server side: one process saturates a core).
const LOADGENS = Number(process.env.BENCH_LOADGENS ?? 2);
const MAX_CONNS = 1_000_000; // per trial; the duration bounds it first
const CLK_TCK = 100;
const PAGE = 4096;
const cert = `${root}fixtures/certs/server.pem`;
const key = `${root}fixtures/certs/server.key`;
const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-bench-'));
const log = (m) => process.stderr.write(`bench: ${m}\n`);

// ---- processes: every child is tracked and killed (with its descendants) on every exit path ---
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
        cpu: (Number(f[11]) + Number(f[12])) / CLK_TCK, // utime + stime
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
/** CPU seconds and RSS bytes of the process trees rooted at `pids`. */
function usage(pids) {
  const t = procTable();
  let cpu = 0;
  let rss = 0;
  for (const pid of pids)
    for (const p of tree(pid, t)) {
      cpu += t.get(p).cpu;
      rss += t.get(p).rss;
    }
  return { cpu, rss };
}
function killAll(sig = 'SIGKILL') {
  const t = procTable();
  for (const c of children) {
    for (const p of tree(c.pid, t).reverse()) {
      try {
        process.kill(p, sig);
      } catch {}
    }
  }
}
process.on('exit', () => {
  killAll('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

function start(cmd, argv, { ready = null, port = null, name = cmd } = {}) {
  const c = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(c);
  let err = '';
  c.stderr.on('data', (d) => {
    err = (err + d).slice(-4000);
  });
  c.on('exit', () => children.delete(c));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start: ${err}`)), 15000);
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
    } else {
      c.stdout.resume();
      const poll = () =>
        net
          .connect(port, '127.0.0.1', function () {
            this.destroy();
            ok();
          })
          .on('error', () => setTimeout(poll, 100));
      poll();
    }
  });
}
async function stop(c) {
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
function freePort() {
  return new Promise((r) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => r(port));
    });
  });
}
const node = (script, ...a) => [process.execPath, [join(here, script), ...a.map(String)]];
function loadgen(opts, onLine) {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [join(here, 'loadgen.mjs'), JSON.stringify(opts)], {
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

// ---- systems under test --------------------------------------------------------------------------
const cores = cpus().length;
const SYSTEMS = [
  {
    id: 'tlsproxy',
    label: 'tlsproxy (TlsProxy, 1 process)',
    cores: '1 proxy process (+ backend process)',
    bulk: true,
    idle: true,
    async start() {
      const sock = join(dir, 'a1.sock');
      const port = await freePort();
      const backend = await start(...node('servers.mjs', 'backend', sock), { ready: 'ready' });
      const proxy = await start(...node('servers.mjs', 'tlsproxy', port, sock), { ready: 'ready' });
      return { port, proxy: [proxy], backend: [backend] };
    },
  },
  {
    id: 'tlsproxy-w2',
    label: `tlsproxy CLI --workers 2`,
    cores: '2 worker processes (+ primary, + backend process)',
    bulk: true,
    async start() {
      const sock = join(dir, 'a2.sock');
      const port = await freePort();
      const backend = await start(...node('servers.mjs', 'backend', sock), { ready: 'ready' });
      const bin = join(root, 'packages/cli/bin/tlsproxy.js');
      const proxy = await start(
        process.execPath,
        [
          bin,
          '--dialect',
          'imap',
          '--listen',
          `127.0.0.1:${port}`,
          '--backend',
          `unix:${sock}`,
          '--cert',
          cert,
          '--key',
          key,
          '--workers',
          '2',
          '--log-level',
          'error',
        ],
        { port, name: 'tlsproxy CLI' },
      );
      await new Promise((r) => setTimeout(r, 1000)); // let both workers listen
      return { port, proxy: [proxy], backend: [backend] };
    },
  },
  {
    id: 'node-tls',
    label: 'node:tls in-process (1 process)',
    cores: '1 process (preamble, TLS and backend logic)',
    bulk: true,
    async start() {
      const port = await freePort();
      const proxy = await start(...node('servers.mjs', 'nodetls', port), { ready: 'ready' });
      return { port, proxy: [proxy], backend: [] };
    },
  },
  {
    id: 'stunnel',
    label: 'stunnel4 protocol=imap',
    cores: 'stunnel threads (any core) (+ plaintext backend process)',
    bulk: true,
    idle: true,
    async start() {
      const port = await freePort();
      const bport = await freePort();
      const backend = await start(...node('servers.mjs', 'plain', bport), { ready: 'ready' });
      const conf = join(dir, 'stunnel.conf');
      writeFileSync(
        conf,
        [
          'foreground = yes',
          'pid =',
          'syslog = no',
          'debug = 3',
          `output = ${join(dir, 'stunnel.log')}`,
          '[imap]',
          `accept = 127.0.0.1:${port}`,
          `connect = 127.0.0.1:${bport}`,
          'protocol = imap',
          `cert = ${cert}`,
          `key = ${key}`,
          'sslVersionMin = TLSv1.3',
          '',
        ].join('\n'),
      );
      const proxy = await start('stunnel4', [conf], { port, name: 'stunnel4' });
      return { port, proxy: [proxy], backend: [backend] };
    },
  },
  {
    id: 'stunnel-c256',
    label: 'stunnel4 protocol=imap, concurrency 256',
    cores: 'same stunnel instance, 8× the clients (its 200 ms RFC 2595 wait caps it at c/0.2 s)',
    reuse: 'stunnel',
    concurrency: 256,
  },
  {
    id: 'nginx',
    label: 'nginx mail, starttls only',
    cores: '2 worker processes (+ master)',
    idle: true,
    async start() {
      const port = await freePort();
      const d = join(dir, 'nginx');
      rmSync(d, { recursive: true, force: true });
      await import('node:fs').then((fs) => fs.mkdirSync(d, { recursive: true }));
      const conf = join(d, 'nginx.conf');
      writeFileSync(
        conf,
        `load_module /usr/lib/nginx/modules/ngx_mail_module.so;
daemon off;
master_process on;
worker_processes 2;
${process.getuid() === 0 ? 'user root;' : ''}
pid ${d}/nginx.pid;
error_log ${d}/error.log error;
worker_rlimit_nofile 20000;
events { worker_connections 16384; }
mail {
  # Only consulted at LOGIN/AUTHENTICATE, which the benchmark never sends.
  auth_http 127.0.0.1:9/auth;
  server {
    listen 127.0.0.1:${port};
    protocol imap;
    starttls only;
    ssl_certificate ${cert};
    ssl_certificate_key ${key};
    ssl_protocols TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
  }
}
`,
      );
      const proxy = await start('nginx', ['-p', d, '-e', `${d}/error.log`, '-c', conf], {
        port,
        name: 'nginx',
      });
      return { port, proxy: [proxy], backend: [] };
    },
  },
].filter((s) => !only || only.includes(s.id));

// ---- 1. handshake rate --------------------------------------------------------------------------
async function trial(sys, inst, durationMs) {
  const p0 = usage(inst.proxy.map((c) => c.pid));
  const b0 = usage(inst.backend.map((c) => c.pid));
  const concurrency = sys.concurrency ?? CONCURRENCY;
  const rs = await Promise.all(
    Array.from({ length: LOADGENS }, (_, i) =>
      loadgen({
        mode: 'handshake',
        port: inst.port,
        concurrency: Math.floor(concurrency / LOADGENS) + (i < concurrency % LOADGENS ? 1 : 0),
        durationMs,
        maxConns: MAX_CONNS,
      }),
    ),
  );
  const p1 = usage(inst.proxy.map((c) => c.pid));
  const b1 = usage(inst.backend.map((c) => c.pid));
  // Merge: rates add up; latency quantiles are taken from the pooled samples.
  const lat = rs.flatMap((r) => r.latMs).sort((x, y) => x - y);
  const q = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] : null);
  const secs = Math.max(...rs.map((r) => r.secs));
  const errors = {};
  for (const r of rs)
    for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
  return {
    ok: lat.length,
    errors,
    secs,
    rate: lat.length / secs,
    p50Ms: q(0.5),
    p99Ms: q(0.99),
    loadgenCpuSecs: rs.reduce((a, r) => a + r.loadgenCpuSecs, 0),
    proxyCpu: p1.cpu - p0.cpu,
    backendCpu: b1.cpu - b0.cpu,
  };
}

const median = (xs) => {
  const s = xs.filter((x) => x != null).sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : null;
};
const r1 = (x, d = 1) => (x == null || !Number.isFinite(x) ? null : Number(x.toFixed(d)));

async function handshakes(insts) {
  const trials = Object.fromEntries(SYSTEMS.map((s) => [s.id, []]));
  for (const s of SYSTEMS) {
    if (!insts[s.id]) continue;
    log(`warm-up ${s.id}`);
    await trial(s, insts[s.id], P.warmMs);
  }
  for (let round = 0; round < P.rounds; round++) {
    for (const s of SYSTEMS) {
      if (!insts[s.id]) continue;
      const t = await trial(s, insts[s.id], P.trialMs);
      log(
        `round ${round + 1} ${s.id}: ${t.rate.toFixed(0)} conn/s p50 ${t.p50Ms?.toFixed(1)} ms errors ${JSON.stringify(t.errors)}`,
      );
      trials[s.id].push(t);
    }
  }
  const out = {};
  for (const [id, ts] of Object.entries(trials)) {
    if (!ts.length) continue;
    const ok = ts.reduce((a, t) => a + t.ok, 0);
    const secs = ts.reduce((a, t) => a + t.secs, 0);
    const errors = ts.reduce((a, t) => a + Object.values(t.errors).reduce((x, y) => x + y, 0), 0);
    const proxyCpu = ts.reduce((a, t) => a + t.proxyCpu, 0);
    const backendCpu = ts.reduce((a, t) => a + t.backendCpu, 0);
    const lgCpu = ts.reduce((a, t) => a + t.loadgenCpuSecs, 0);
    out[id] = {
      connections: ok,
      errors,
      errorKinds: Object.assign({}, ...ts.map((t) => t.errors)),
      connPerSec: r1(ok / secs),
      perRound: ts.map((t) => r1(t.rate)),
      p50Ms: r1(median(ts.map((t) => t.p50Ms)), 2),
      p99Ms: r1(median(ts.map((t) => t.p99Ms)), 2),
      serverCpuSecPer1k: r1(((proxyCpu + backendCpu) / ok) * 1000, 3),
      proxyCpuSecPer1k: r1((proxyCpu / ok) * 1000, 3),
      backendCpuSecPer1k: r1((backendCpu / ok) * 1000, 3),
      serverCpuCores: r1((proxyCpu + backendCpu) / secs, 2),
      loadgenCpuCores: r1(lgCpu / secs, 2),
    };
  }
  return out;
}

// ---- 2. throughput ---------------------------------------------------------------------------
async function throughput(insts) {
  const res = {};
  for (let round = 0; round < 2; round++) {
    for (const s of SYSTEMS) {
      if (!s.bulk || !insts[s.id]) continue;
      try {
        const r = await loadgen({ mode: 'bulk', port: insts[s.id].port, bytes: P.bulkBytes });
        log(`bulk ${s.id}: up ${r.upMBps.toFixed(0)} MB/s down ${r.downMBps.toFixed(0)} MB/s`);
        if (!res[s.id]) res[s.id] = [];
        res[s.id].push(r);
      } catch (e) {
        log(`bulk ${s.id} failed: ${e.message}`);
      }
    }
  }
  const out = {};
  for (const [id, rs] of Object.entries(res)) {
    out[id] = {
      bytes: P.bulkBytes,
      upMBps: r1(Math.max(...rs.map((r) => r.upMBps))),
      downMBps: r1(Math.max(...rs.map((r) => r.downMBps))),
    };
  }
  return out;
}

// ---- 3. idle preamble connections ----------------------------------------------------------
async function idleMemory(insts) {
  const out = {};
  for (const s of SYSTEMS) {
    if (!s.idle || !insts[s.id]) continue;
    const inst = insts[s.id];
    const pids = [...inst.proxy, ...inst.backend].map((c) => c.pid);
    const before = usage(pids).rss;
    let during = null;
    let holding = 0;
    try {
      await loadgen({ mode: 'idle', port: inst.port, count: P.idle, holdMs: 30000 }, (o, c) => {
        holding = o.holding;
        setTimeout(() => {
          during = usage(pids).rss;
          c.stdin.write('done\n');
        }, 1000);
      });
    } catch (e) {
      log(`idle ${s.id} failed: ${e.message}`);
      continue;
    }
    out[s.id] = {
      connections: holding,
      rssBeforeMiB: r1(before / 2 ** 20),
      rssDuringMiB: r1(during / 2 ** 20),
      kibPerConnection: holding ? r1((during - before) / 1024 / holding, 2) : null,
    };
    log(`idle ${s.id}: ${JSON.stringify(out[s.id])}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  return out;
}

// ---- 4. dialect cost -------------------------------------------------------------------------
async function dialectCost() {
  const core = await import('@tlsproxy/core');
  const out = {};
  const cmds = { imap: 'a NOOP\r\n', pop3: 'NOOP\r\n', smtp: 'NOOP\r\n' };
  for (const [name, line] of Object.entries(cmds)) {
    try {
      const d = await core.loadDialect(name);
      const limits = Object.fromEntries(
        Object.entries(d.limits).map(([k, v]) => [k, k.match(/bad|command/i) ? 1e12 : v.default]),
      );
      const options = Object.fromEntries(Object.entries(d.options).map(([k, v]) => [k, v.default]));
      const mk = () => {
        const s = d.create({ options, limits, hostname: 'localhost', connectionId: 'bench' });
        s.start(0);
        return s;
      };
      let s = mk();
      const bytes = new TextEncoder().encode(line.repeat(100));
      let n = 0;
      const t0 = performance.now();
      while (performance.now() - t0 < P.dialectMs) {
        const acts = s.receive(bytes, 0);
        n += 100;
        if (acts.some((a) => a.type === 'close')) s = mk();
      }
      out[name] = {
        command: line.trim(),
        commandsPerSec: Math.round(n / ((performance.now() - t0) / 1000)),
      };
    } catch (e) {
      out[name] = { error: e.message };
    }
  }
  return out;
}

// ---- report --------------------------------------------------------------------------------
function ratio(a, b) {
  return a != null && b ? r1(a / b, 2) : null;
}
function svgChart(hs) {
  const rows = Object.entries(hs);
  const max = Math.max(...rows.map(([, v]) => v.connPerSec), 1);
  const h = 30 * rows.length + 40;
  const bars = rows
    .map(([id, v], i) => {
      const w = Math.round((v.connPerSec / max) * 400);
      const y = 30 + i * 30;
      return `<text x="5" y="${y + 15}" font-size="12">${id}</text><rect x="110" y="${y}" width="${w}" height="20" fill="${id.startsWith('tlsproxy') ? '#2a7' : '#888'}"/><text x="${115 + w}" y="${y + 15}" font-size="12">${v.connPerSec}/s</text>`;
    })
    .join('\n');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="600" height="${h}" font-family="sans-serif">
<title>IMAP STARTTLS handshakes per second</title>
<text x="5" y="18" font-size="14">IMAP STARTTLS handshakes per second (concurrency ${CONCURRENCY}, higher is better)</text>
${bars}
</svg>
`;
}
function table(head, rows) {
  return [
    `| ${head.join(' | ')} |`,
    `| ${head.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.map((x) => (x == null ? '—' : String(x))).join(' | ')} |`),
  ].join('\n');
}

async function main() {
  const startedAt = new Date().toISOString();
  const insts = {};
  const meta = {};
  let hs = {};
  let tp = {};
  let idle = {};
  let dc = {};
  const failures = {};
  try {
    for (const s of SYSTEMS) {
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
    idle = await idleMemory(insts);
    hs = await handshakes(insts);
    tp = await throughput(insts);
    dc = await dialectCost();
  } finally {
    for (const inst of Object.values(insts).filter((i) => !i.shared))
      for (const c of [...inst.proxy, ...inst.backend]) await stop(c);
    killAll('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
  const base = (k, field) => (k in hs ? hs[k][field] : null);
  const ratios = {};
  for (const id of Object.keys(hs)) {
    if (!id.startsWith('tlsproxy')) continue;
    ratios[id] = {
      rateVsNodeTls: ratio(hs[id].connPerSec, base('node-tls', 'connPerSec')),
      rateVsStunnel: ratio(hs[id].connPerSec, base('stunnel', 'connPerSec')),
      rateVsStunnelC256: ratio(hs[id].connPerSec, base('stunnel-c256', 'connPerSec')),
      rateVsNginx: ratio(hs[id].connPerSec, base('nginx', 'connPerSec')),
      cpuPer1kVsNodeTls: ratio(hs[id].serverCpuSecPer1k, base('node-tls', 'serverCpuSecPer1k')),
      cpuPer1kVsStunnel: ratio(hs[id].serverCpuSecPer1k, base('stunnel', 'serverCpuSecPer1k')),
      upVsStunnel: ratio(tp[id]?.upMBps, tp.stunnel?.upMBps),
      downVsStunnel: ratio(tp[id]?.downMBps, tp.stunnel?.downMBps),
      upVsNodeTls: ratio(tp[id]?.upMBps, tp['node-tls']?.upMBps),
      downVsNodeTls: ratio(tp[id]?.downMBps, tp['node-tls']?.downMBps),
    };
  }
  const report = {
    startedAt,
    quick,
    machine: {
      cpus: cores,
      model: cpus()[0]?.model,
      node: process.version,
      kernel: readFileSync('/proc/version', 'utf8').split(' ')[2],
    },
    params: { ...P, concurrency: CONCURRENCY, loadgens: LOADGENS },
    systems: meta,
    failures,
    handshake: hs,
    throughput: tp,
    idleMemory: idle,
    dialectCost: dc,
    ratios,
  };
  writeFileSync(join(here, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(join(here, 'report.svg'), svgChart(hs));
  const md = [
    `# tlsproxy benchmark${quick ? ' (quick)' : ''}`,
    '',
    `${startedAt}; ${cores} × ${report.machine.model}; Node ${process.version}; Linux ${report.machine.kernel}. Loopback; the load generators share the same cores as the servers, so connections/s is bounded by the machine, not by one server — compare servers by CPU seconds per 1,000 connections.`,
    '',
    `## 1. IMAP STARTTLS handshakes (TLS 1.3, ECDSA P-256, no resumption, concurrency ${CONCURRENCY} over ${LOADGENS} load-generator processes, ${P.rounds} alternating rounds × ${P.trialMs / 1000} s)`,
    '',
    table(
      [
        'system',
        'conn/s',
        'p50 ms',
        'p99 ms',
        'server CPU s/1k conn (proxy + backend)',
        'server cores busy',
        'loadgen cores busy',
        'errors',
        'cores',
      ],
      Object.entries(hs).map(([id, v]) => [
        id,
        v.connPerSec,
        v.p50Ms,
        v.p99Ms,
        `${v.serverCpuSecPer1k} (${v.proxyCpuSecPer1k} + ${v.backendCpuSecPer1k})`,
        v.serverCpuCores,
        v.loadgenCpuCores,
        v.errors,
        meta[id]?.cores,
      ]),
    ),
    '',
    '![handshake rates](report.svg)',
    '',
    '## Ratios (same run)',
    '',
    table(
      [
        'tlsproxy',
        'rate ÷ node:tls',
        'rate ÷ stunnel (c32)',
        'rate ÷ stunnel-c256',
        'rate ÷ nginx',
        'CPU/conn ÷ node:tls',
        'CPU/conn ÷ stunnel',
        'up ÷ stunnel',
        'down ÷ stunnel',
      ],
      Object.entries(ratios).map(([id, r]) => [
        id,
        r.rateVsNodeTls,
        r.rateVsStunnel,
        r.rateVsStunnelC256,
        r.rateVsNginx,
        r.cpuPer1kVsNodeTls,
        r.cpuPer1kVsStunnel,
        r.upVsStunnel,
        r.downVsStunnel,
      ]),
    ),
    '',
    `## 2. Throughput after hand-off (${P.bulkBytes / 2 ** 20} MiB each way, one connection, best of 2)`,
    '',
    table(
      ['system', 'client → server MB/s', 'server → client MB/s'],
      Object.entries(tp).map(([id, v]) => [id, v.upMBps, v.downMBps]),
    ),
    '',
    `## 3. Idle connections in the preamble (${P.idle} connections after the greeting, RSS of proxy + backend process trees, measured first on fresh servers; Node RSS includes GC noise)`,
    '',
    table(
      ['system', 'held', 'RSS before MiB', 'RSS during MiB', 'KiB per connection'],
      Object.entries(idle).map(([id, v]) => [
        id,
        v.connections,
        v.rssBeforeMiB,
        v.rssDuringMiB,
        v.kibPerConnection,
      ]),
    ),
    '',
    '## Notes',
    '',
    '- stunnel `protocol = imap` (server mode) waits 200 ms for the client to speak first (RFC 2595 detection, `s_poll_wait(…, 200)` in its imap_server) before it sends the greeting, so at a fixed concurrency its rate is capped near concurrency ÷ 0.2 s; `stunnel-c256` is the same instance with 256 clients, the fair rate comparison. It also connects to its backend before TLS, so the backend holds a socket per preamble connection.',
    '- nginx mail answers STARTTLS and the post-TLS CAPABILITY itself; with no LOGIN it never asks auth_http nor opens a backend connection, so its figures exclude any backend and any hand-off.',
    '- node-tls does the preamble, TLS and the IMAP commands in one process: no hand-off, no backend process.',
    '- tlsproxy figures include the backend process (written with @tlsproxy/backend); the load generator opens every connection from 127.0.0.1, so the bench lifts `maxConnectionsPerAddress` (default 64).',
    '',
    '## 4. Dialect cost (sans-I/O, one session, commands per second)',
    '',
    table(
      ['dialect', 'command', 'commands/s'],
      Object.entries(dc).map(([id, v]) => [id, v.command ?? v.error, v.commandsPerSec]),
    ),
    '',
    Object.keys(failures).length
      ? `## Systems that did not start\n\n${Object.entries(failures)
          .map(([k, v]) => `- ${k}: ${v}`)
          .join('\n')}\n`
      : '',
  ].join('\n');
  writeFileSync(join(here, 'report.md'), md);
  console.log(md);
}

try {
  await main();
  process.exit(0);
} catch (e) {
  log(e.stack);
  process.exit(1);
}
