#!/usr/bin/env node
// `npm run soak [-- --idle N --minutes M --rate R]` (after `npm run build`): a bounded soak of the
// engine on loopback, not run in CI. This process runs a TlsProxy (embedded TLS engine, IMAP
// dialect, the test certificates in fixtures/certs) and an in-process @tlsproxy/backend server
// on a temporary UNIX socket; the clients run in a forked child, so the descriptor and RSS
// figures below are the proxy's own (the backend's included, it shares the process).
//   1. idle: N connections (default 10,000) read the greeting and idle; reports RSS per
//      connection and descriptors per connection, then closes them and checks the count returns.
//   2. load: M minutes (default 30) at R handshakes/s (default 50): connect, STARTTLS, TLS 1.3,
//      `a LOGOUT`, close; the backend restarts every 5 minutes (every 10 s when M < 10); RSS and
//      descriptors are sampled (every 10 s, or M×60/10 s when shorter) and their least-squares
//      slope per minute reported, with errors by kind. NO [UNAVAILABLE] while the backend is down
//      is expected and counted apart.
// Stops by itself; exits 0 with the report (1 only if the setup itself fails).
import { fork } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import vm from 'node:vm';

const root = fileURLToPath(new URL('..', import.meta.url));
const cert = (f) => readFileSync(join(root, 'fixtures/certs', f));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fdCount = () => readdirSync('/proc/self/fd').length;
const MiB = 1024 * 1024;

if (process.argv[2] === '--clients') clientMain();
else await proxyMain();

// ---- the proxy side (this process) ------------------------------------------------------------

async function proxyMain() {
  const usage = `usage: npm run soak -- [--idle N] [--minutes M] [--rate R]
  --idle N      idle preamble connections held at once (default 10000; lowered to fit ulimit -n)
  --minutes M   duration of the handshake load (default 30; fractions allowed, 0 skips it)
  --rate R      handshakes started per second (default 50)`;
  let args;
  try {
    args = parseArgs({
      options: {
        idle: { type: 'string', default: '10000' },
        minutes: { type: 'string', default: '30' },
        rate: { type: 'string', default: '50' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (err) {
    console.error(`${err.message}\n${usage}`);
    process.exit(2);
  }
  if (args.help) {
    console.log(usage);
    return;
  }
  let idle = Number(args.idle);
  const minutes = Number(args.minutes);
  const rate = Number(args.rate);
  if (!(Number.isInteger(idle) && idle >= 0 && minutes >= 0 && rate > 0 && rate <= 1000)) {
    console.error(`bad arguments\n${usage}`);
    process.exit(2);
  }

  // GC on demand, so RSS and heap figures are measured after collection.
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc');
  const settle = async () => {
    for (let i = 0; i < 3; i++) {
      gc();
      await sleep(200);
    }
  };

  // Descriptors: both processes inherit this limit; Node cannot raise it (no setrlimit).
  const limits = readFileSync('/proc/self/limits', 'utf8');
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(limits);
  const soft = m && m[1] !== 'unlimited' ? Number(m[1]) : Number.POSITIVE_INFINITY;
  const hard = m && m[2] !== 'unlimited' ? Number(m[2]) : Number.POSITIVE_INFINITY;
  const headroom = 256 + rate * 20; // the load phase, the backend, node itself
  if (idle > 0 && idle + headroom > soft) {
    const fit = Math.max(0, soft - headroom);
    console.log(
      `soak: ulimit -n is ${soft} (hard ${hard}): lowering --idle from ${idle} to ${fit}` +
        (hard > soft
          ? ` (run \`ulimit -n ${Math.min(hard, idle + headroom)}\` first for the full count)`
          : ''),
    );
    idle = fit;
  } else {
    console.log(`soak: ulimit -n is ${soft} (hard ${hard}): room for ${idle} idle connections`);
  }

  const { TlsProxy } = await import('@tlsproxy/core');
  const { listen } = await import('@tlsproxy/backend');

  // Counting logger: warnings and errors by message, nothing printed while running.
  const logCounts = new Map();
  const logger = {
    log(level, message) {
      if (level === 'warn' || level === 'error') {
        const k = `${level} ${message}`;
        logCounts.set(k, (logCounts.get(k) ?? 0) + 1);
      }
    },
  };

  // The backend: answers `a LOGOUT` after TLS, then closes. Restarted during the load phase.
  const path = join(tmpdir(), `tlsproxy-soak-${process.pid}.sock`);
  let backend;
  let handedOff = 0;
  let backendErrors = 0;
  const serve = async (server) => {
    for await (const acc of server) {
      handedOff++;
      const s = acc.socket;
      let buf = acc.buffered.toString('latin1');
      s.setTimeout(15_000, () => s.destroy());
      s.on('error', () => backendErrors++);
      const answer = () => {
        if (/^a LOGOUT\r?\n/im.test(buf)) {
          buf = '';
          s.end('* BYE soak backend logging out\r\na OK LOGOUT completed\r\n');
        }
      };
      s.setEncoding('latin1');
      s.on('data', (d) => {
        buf += d;
        answer();
      });
      answer();
    }
  };
  const startBackend = async () => {
    backend = await listen({ path });
    serve(backend).catch(() => backendErrors++);
  };
  await startBackend();

  const proxy = new TlsProxy({
    logger,
    pool: { identities: [{ cert: cert('server.pem'), key: cert('server.key') }] },
  });
  const l = await proxy.listen({
    dialect: 'imap',
    listen: '127.0.0.1:0',
    backend: `unix:${path}`,
    hostname: 'soak.example',
    maxConnections: idle + rate * 20 + 100,
    // every client comes from 127.0.0.1: lift the per-address limit (default 64) above the test
    maxConnectionsPerAddress: idle + rate * 20 + 100,
    limits: { idleTimeoutMs: 3_600_000 }, // the idle phase must not be cut by IMAP's 60 s
  });
  const port = l.server.address().port;
  console.log(`soak: proxy on 127.0.0.1:${port} (pid ${process.pid}), backend unix:${path}`);

  const child = fork(fileURLToPath(import.meta.url), ['--clients'], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  let childReply;
  child.on('message', (msg) => {
    if (msg.type === 'progress') console.log(`  clients: ${msg.text}`);
    else childReply?.(msg);
  });
  const ask = (msg, timeoutMs) =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`clients did not answer ${msg.cmd}`)), timeoutMs);
      childReply = (reply) => {
        clearTimeout(t);
        childReply = undefined;
        resolve(reply);
      };
      child.send(msg);
    });
  console.log(
    `soak: clients in a forked child (pid ${child.pid}); the figures are this process's own`,
  );

  const report = [];
  let exitCode = 0;
  try {
    // ---- 1. idle preamble connections --------------------------------------------------------
    if (idle > 0) {
      await settle();
      const before = {
        rss: process.memoryUsage().rss,
        heap: process.memoryUsage().heapUsed,
        fds: fdCount(),
      };
      const t0 = Date.now();
      const r = await ask({ cmd: 'idle', n: idle, port }, 10 * 60_000);
      await settle();
      const held = {
        rss: process.memoryUsage().rss,
        heap: process.memoryUsage().heapUsed,
        fds: fdCount(),
      };
      const sessions = proxy.activeSessions;
      const n = Math.max(1, r.opened);
      console.log(
        `soak: ${r.opened} idle connections open in ${((Date.now() - t0) / 1000).toFixed(1)} s (${r.failed} failed${
          r.failed ? `: ${JSON.stringify(r.kinds)}` : ''
        }); proxy sessions ${sessions}; client process holds ${r.fds} descriptors`,
      );
      await ask({ cmd: 'closeIdle' }, 60_000);
      const drainT = Date.now();
      while (proxy.activeSessions > 0 && Date.now() - drainT < 30_000) await sleep(100);
      await settle();
      const after = { rss: process.memoryUsage().rss, fds: fdCount() };
      report.push(
        ['idle connections held', `${r.opened} (of ${idle}; ${r.failed} failed)`],
        [
          'RSS before / held / after close',
          `${mib(before.rss)} / ${mib(held.rss)} / ${mib(after.rss)} MiB`,
        ],
        ['RSS per idle connection', `${((held.rss - before.rss) / n / 1024).toFixed(2)} KiB`],
        ['JS heap per idle connection', `${((held.heap - before.heap) / n / 1024).toFixed(2)} KiB`],
        [
          'proxy descriptors before / held / after close',
          `${before.fds} / ${held.fds} / ${after.fds}`,
        ],
        ['proxy descriptors per idle connection', ((held.fds - before.fds) / n).toFixed(3)],
        ['proxy sessions left after close', String(proxy.activeSessions)],
      );
      if (r.failed > 0)
        report.push([
          'note',
          `${r.failed} connections failed: the per-connection figures above also count them`,
        ]);
    }

    // ---- 2. steady handshakes with backend restarts ------------------------------------------
    if (minutes > 0) {
      const ms = Math.round(minutes * 60_000);
      const restartEvery = minutes >= 10 ? 5 * 60_000 : 10_000;
      const sampleEvery = Math.min(10_000, Math.max(1000, Math.floor(ms / 10)));
      const downMs = 1000;
      console.log(
        `soak: ${minutes} min at ${rate} handshakes/s; backend restarts every ${restartEvery / 1000} s (down ${downMs} ms); samples every ${sampleEvery / 1000} s`,
      );
      const windows = []; // [from, to] wall-clock ms when the backend was down (plus slack)
      let restarts = 0;
      let restarting = false;
      const restartTimer = setInterval(async () => {
        if (restarting) return;
        restarting = true;
        const from = Date.now();
        try {
          await backend.close();
          await sleep(downMs);
          await startBackend();
          restarts++;
        } catch (err) {
          console.log(`soak: backend restart failed: ${err.message}`);
        } finally {
          windows.push([from - 500, Date.now() + 2500]);
          restarting = false;
        }
      }, restartEvery);
      const samples = [];
      const t0 = Date.now();
      const sample = () => {
        const s = { t: (Date.now() - t0) / 60_000, rss: process.memoryUsage().rss, fds: fdCount() };
        samples.push(s);
      };
      sample();
      const sampler = setInterval(sample, sampleEvery);
      const progress = setInterval(
        () =>
          console.log(
            `  ${((Date.now() - t0) / 60_000).toFixed(1)} min: RSS ${mib(process.memoryUsage().rss)} MiB, fds ${fdCount()}, sessions ${proxy.activeSessions}, handed off ${handedOff}, restarts ${restarts}`,
          ),
        Math.max(sampleEvery, 60_000),
      );
      let r;
      try {
        r = await ask({ cmd: 'load', port, rate, ms }, ms + 120_000);
      } finally {
        clearInterval(restartTimer);
        clearInterval(sampler);
        clearInterval(progress);
      }
      sample();
      while (restarting) await sleep(50);
      const during = (at) => windows.some(([a, b]) => at >= a && at <= b);
      const kinds = new Map();
      for (const e of r.errors) {
        const k =
          e.kind === 'unavailable'
            ? 'NO [UNAVAILABLE] (expected: backend down)'
            : during(e.at)
              ? `${e.kind} (during a backend restart)`
              : e.kind;
        kinds.set(k, (kinds.get(k) ?? 0) + 1);
      }
      const unexpected = [...kinds]
        .filter(([k]) => !k.includes('expected') && !k.includes('during'))
        .reduce((s, [, n]) => s + n, 0);
      const rssSlope = slope(samples.map((s) => [s.t, s.rss / MiB]));
      const fdSlope = slope(samples.map((s) => [s.t, s.fds]));
      const tail = samples.slice(Math.floor(samples.length / 2));
      report.push(
        [
          'handshakes started / completed',
          `${r.started} / ${r.ok} in ${(r.elapsed / 1000).toFixed(1)} s (${(r.ok / (r.elapsed / 1000)).toFixed(1)}/s)`,
        ],
        ['connect→LOGOUT latency p50 / p99 / max', `${r.p50} / ${r.p99} / ${r.max} ms`],
        ['backend restarts', String(restarts)],
        ['hand-offs received by the backend', String(handedOff)],
        ['samples', `${samples.length} (every ${sampleEvery / 1000} s)`],
        [
          'RSS first / last / max',
          `${mib(samples[0].rss)} / ${mib(samples.at(-1).rss)} / ${mib(Math.max(...samples.map((s) => s.rss)))} MiB`,
        ],
        [
          'RSS slope (all / second half)',
          `${fmt(rssSlope)} / ${fmt(slope(tail.map((s) => [s.t, s.rss / MiB])))} MiB/min`,
        ],
        [
          'descriptors first / last / max',
          `${samples[0].fds} / ${samples.at(-1).fds} / ${Math.max(...samples.map((s) => s.fds))}`,
        ],
        [
          'descriptor slope (all / second half)',
          `${fmt(fdSlope)} / ${fmt(slope(tail.map((s) => [s.t, s.fds])))} per min`,
        ],
        ['errors, unexpected', String(unexpected)],
        ...[...kinds].sort((a, b) => b[1] - a[1]).map(([k, n]) => [`  error: ${k}`, String(n)]),
        ['skipped (too many in flight) / unfinished at the end', `${r.skipped} / ${r.unfinished}`],
      );
      if (samples.length < 5) report.push(['note', 'fewer than 5 samples: the slopes mean little']);
    }
    for (const [k, n] of [...logCounts].sort((a, b) => b[1] - a[1]))
      report.push([`proxy log ×${n}`, k]);
  } catch (err) {
    console.error(`soak: ${err.stack ?? err.message}`);
    exitCode = 1;
  } finally {
    child.kill();
    await Promise.race([proxy.close(), sleep(10_000)]);
    await backend?.close().catch(() => {});
    rmSync(path, { force: true });
  }

  console.log('\nsoak report');
  const w = Math.max(...report.map(([k]) => k.length));
  for (const [k, v] of report) console.log(`  ${k.padEnd(w)}  ${v}`);
  process.exit(exitCode);
}

function mib(bytes) {
  return (bytes / MiB).toFixed(1);
}

function fmt(x) {
  return Number.isFinite(x) ? (x >= 0 ? `+${x.toFixed(3)}` : x.toFixed(3)) : 'n/a';
}

/** Least-squares slope of y over x. */
function slope(points) {
  const n = points.length;
  if (n < 2) return Number.NaN;
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? Number.NaN : num / den;
}

// ---- the client side (forked child) ----------------------------------------------------------

function clientMain() {
  const ca = cert('ca.pem');
  const idleSockets = [];
  const progress = (text) => process.send({ type: 'progress', text });

  /** Read from a plain socket until `re` matches the buffer; rejects on close or timeout. */
  const reader = (socket) => {
    let buf = '';
    let wake = () => {};
    let ended = false;
    const onData = (d) => {
      buf += d;
      wake();
    };
    socket.setEncoding('latin1');
    socket.on('data', onData);
    socket.on('close', () => {
      ended = true;
      wake();
    });
    return {
      async until(re, deadline) {
        for (;;) {
          const m = re.exec(buf);
          if (m) {
            buf = buf.slice(m.index + m[0].length);
            return m;
          }
          if (ended) throw Object.assign(new Error('closed'), { kind: 'closed' });
          const left = deadline - Date.now();
          if (left <= 0) throw Object.assign(new Error('timeout'), { kind: 'timeout' });
          await new Promise((r) => {
            const t = setTimeout(r, left);
            wake = () => {
              clearTimeout(t);
              r();
            };
          });
        }
      },
      detach() {
        socket.removeListener('data', onData);
      },
    };
  };

  const connect = (port, deadline) =>
    new Promise((resolve, reject) => {
      const s = net.connect({ port, host: '127.0.0.1' });
      const t = setTimeout(() => {
        s.destroy();
        reject(Object.assign(new Error('connect timeout'), { kind: 'connect timeout' }));
      }, deadline - Date.now());
      s.once('connect', () => {
        clearTimeout(t);
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(t);
        reject(Object.assign(err, { kind: `connect ${err.code ?? 'error'}` }));
      });
    });

  async function openIdle(n, port) {
    let opened = 0;
    let failed = 0;
    const kinds = {};
    let next = 0;
    let lastReport = Date.now();
    const one = async () => {
      const deadline = Date.now() + 10_000;
      let s;
      try {
        s = await connect(port, deadline);
        s.on('error', () => {});
        const r = reader(s);
        await r.until(/^\* OK[^\n]*\n/m, deadline);
        idleSockets.push(s);
        opened++;
      } catch (err) {
        s?.destroy();
        failed++;
        const k = `greeting ${err.kind ?? err.code ?? err.message}`;
        kinds[k] = (kinds[k] ?? 0) + 1;
      }
    };
    const worker = async () => {
      while (next < n) {
        next++;
        await one();
        if (Date.now() - lastReport > 5000) {
          lastReport = Date.now();
          progress(`${opened} idle connections open`);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(200, n) }, worker));
    return { opened, failed, kinds, fds: fdCount() };
  }

  async function handshake(port) {
    const deadline = Date.now() + 10_000;
    let stage = 'connect';
    let s;
    let t;
    try {
      s = await connect(port, deadline);
      s.on('error', () => {});
      const r = reader(s);
      stage = 'greeting';
      await r.until(/^\* OK[^\n]*\n/m, deadline);
      s.write('a STARTTLS\r\n');
      stage = 'STARTTLS reply';
      const m = await r.until(/^a (OK|NO|BAD)([^\n]*)\n/m, deadline);
      if (m[1] !== 'OK') {
        const kind = /UNAVAILABLE/.test(m[2]) ? 'unavailable' : `STARTTLS refused: a ${m[1]}`;
        throw Object.assign(new Error(kind), { kind });
      }
      r.detach();
      stage = 'TLS handshake';
      t = await new Promise((resolve, reject) => {
        const c = tls.connect(
          { socket: s, servername: 'localhost', ca, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' },
          () => resolve(c),
        );
        const timer = setTimeout(
          () => reject(Object.assign(new Error('timeout'), { kind: 'timeout' })),
          deadline - Date.now(),
        );
        c.once('secureConnect', () => clearTimeout(timer));
        c.once('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
      });
      t.on('error', () => {});
      if (t.getProtocol() !== 'TLSv1.3')
        throw Object.assign(new Error('not TLS 1.3'), { kind: 'not TLS 1.3' });
      const tr = reader(t);
      t.write('a LOGOUT\r\n');
      stage = 'LOGOUT reply';
      await tr.until(/^a OK[^\n]*\n/m, deadline);
      t.end();
      return undefined;
    } catch (err) {
      return err.kind === 'unavailable' ||
        err.kind?.startsWith('STARTTLS refused') ||
        err.kind?.startsWith('connect')
        ? err.kind
        : `${stage}: ${err.kind ?? err.code ?? err.message}`;
    } finally {
      setTimeout(() => {
        t?.destroy();
        s?.destroy();
      }, 100).unref();
    }
  }

  async function load(port, rate, ms) {
    const t0 = Date.now();
    const maxInFlight = Math.max(100, rate * 10);
    let started = 0;
    let ok = 0;
    let skipped = 0;
    let inFlight = 0;
    const errors = [];
    const lat = [];
    let lastReport = t0;
    await new Promise((resolve) => {
      const tick = setInterval(
        () => {
          const now = Date.now();
          if (now - t0 >= ms) {
            clearInterval(tick);
            resolve();
            return;
          }
          const due = Math.floor(((now - t0) * rate) / 1000) + 1;
          while (started + skipped < due) {
            if (inFlight >= maxInFlight) {
              skipped++;
              continue;
            }
            started++;
            inFlight++;
            const s0 = Date.now();
            handshake(port).then((kind) => {
              inFlight--;
              if (kind === undefined) {
                ok++;
                if (lat.length < 200_000) lat.push(Date.now() - s0);
              } else if (errors.length < 100_000) errors.push({ kind, at: Date.now() });
            });
          }
          if (now - lastReport >= 60_000) {
            lastReport = now;
            progress(
              `${started} started, ${ok} ok, ${errors.length} errors, ${inFlight} in flight`,
            );
          }
        },
        Math.max(5, Math.floor(1000 / rate)),
      );
    });
    const stop = Date.now() + 15_000;
    while (inFlight > 0 && Date.now() < stop) await sleep(50);
    lat.sort((a, b) => a - b);
    const q = (p) =>
      lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] : 'n/a';
    return {
      started,
      ok,
      skipped,
      errors,
      unfinished: inFlight,
      elapsed: Date.now() - t0,
      p50: q(0.5),
      p99: q(0.99),
      max: lat.length ? lat.at(-1) : 'n/a',
    };
  }

  process.on('message', async (msg) => {
    if (msg.cmd === 'idle') process.send(await openIdle(msg.n, msg.port));
    else if (msg.cmd === 'closeIdle') {
      for (const s of idleSockets.splice(0)) s.destroy();
      await sleep(200);
      process.send({ closed: true, fds: fdCount() });
    } else if (msg.cmd === 'load') process.send(await load(msg.port, msg.rate, msg.ms));
  });
  process.on('disconnect', () => process.exit(0));
}
