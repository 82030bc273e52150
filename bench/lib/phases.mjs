// The measurements. Each takes the running instances ({ id: { port, proxy, backend } }) and
// alternates the systems A B C … A B C … so slow drift of the machine hits them all alike.
import { ask, countSwitches, loadgen, log, stop, treePids, usage } from './procs.mjs';

export const median = (xs) => {
  const s = xs.filter((x) => x != null).sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : null;
};
export const r1 = (x, d = 1) => (x == null || !Number.isFinite(x) ? null : Number(x.toFixed(d)));
const sum = (xs, f) => xs.reduce((a, x) => a + f(x), 0);
const pids = (cs) => cs.map((c) => c.pid);

// ---- 1. handshake rate --------------------------------------------------------------------------
/**
 * One fixed-concurrency trial split over `P.loadgens` load-generator processes. With
 * `P.ctxSwitches`, perf also counts the servers' context switches (every process and thread).
 */
export async function trial(inst, concurrency, durationMs, P) {
  const cs = P.ctxSwitches
    ? await countSwitches(treePids(pids([...inst.proxy, ...inst.backend])))
    : null;
  const p0 = usage(pids(inst.proxy));
  const b0 = usage(pids(inst.backend));
  const rs = await Promise.all(
    Array.from({ length: P.loadgens }, (_, i) =>
      loadgen({
        mode: 'handshake',
        port: inst.port,
        concurrency: Math.floor(concurrency / P.loadgens) + (i < concurrency % P.loadgens ? 1 : 0),
        durationMs,
        maxConns: 1_000_000, // the duration bounds a trial first
        implicit: inst.implicit === true,
      }),
    ),
  );
  const p1 = usage(pids(inst.proxy));
  const b1 = usage(pids(inst.backend));
  const switches = cs ? await cs.stop() : null;
  // Rates add up; latency quantiles come from the pooled samples.
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
    loadgenCpuSecs: sum(rs, (r) => r.loadgenCpuSecs),
    proxyCpu: p1.cpu - p0.cpu,
    proxySys: p1.sys - p0.sys,
    backendCpu: b1.cpu - b0.cpu,
    switches,
    lat,
  };
}

export async function handshakes(systems, insts, P) {
  const live = systems.filter((s) => insts[s.id]);
  const trials = Object.fromEntries(live.map((s) => [s.id, []]));
  for (const s of live) {
    log(`warm-up ${s.id}`);
    await trial(insts[s.id], s.concurrency ?? P.concurrency, P.warmMs, P);
  }
  // Context switches are counted in the measured rounds (perf stat, when it works here).
  const Q = { ...P, ctxSwitches: true };
  for (let round = 0; round < P.rounds; round++) {
    for (const s of live) {
      const t = await trial(insts[s.id], s.concurrency ?? P.concurrency, P.trialMs, Q);
      log(
        `round ${round + 1} ${s.id}: ${t.rate.toFixed(0)} conn/s p50 ${t.p50Ms?.toFixed(1)} ms errors ${JSON.stringify(t.errors)}`,
      );
      trials[s.id].push(t);
    }
  }
  const out = {};
  for (const [id, ts] of Object.entries(trials)) {
    const ok = sum(ts, (t) => t.ok);
    const secs = sum(ts, (t) => t.secs);
    const proxyCpu = sum(ts, (t) => t.proxyCpu);
    const backendCpu = sum(ts, (t) => t.backendCpu);
    const counted = ts.filter((t) => t.switches != null);
    out[id] = {
      connections: ok,
      errors: sum(ts, (t) => sum(Object.values(t.errors), (x) => x)),
      errorKinds: Object.assign({}, ...ts.map((t) => t.errors)),
      connPerSec: r1(ok / secs),
      perRound: ts.map((t) => r1(t.rate)),
      p50Ms: r1(median(ts.map((t) => t.p50Ms)), 2),
      p99Ms: r1(median(ts.map((t) => t.p99Ms)), 2),
      serverCpuSecPer1k: r1(((proxyCpu + backendCpu) / ok) * 1000, 3),
      proxyCpuSecPer1k: r1((proxyCpu / ok) * 1000, 3),
      backendCpuSecPer1k: r1((backendCpu / ok) * 1000, 3),
      proxyKernelShare: proxyCpu ? r1(sum(ts, (t) => t.proxySys) / proxyCpu, 2) : null,
      serverCpuCores: r1((proxyCpu + backendCpu) / secs, 2),
      loadgenCpuCores: r1(sum(ts, (t) => t.loadgenCpuSecs) / secs, 2),
      loadgenCpuSecPer1k: r1((sum(ts, (t) => t.loadgenCpuSecs) / ok) * 1000, 3),
      // Server processes' context switches (perf stat), per connection of the trials counted.
      switchesPerConn: counted.length
        ? r1(sum(counted, (t) => t.switches) / sum(counted, (t) => t.ok), 2)
        : null,
    };
  }
  return out;
}

// ---- 1b. unloaded latency ----------------------------------------------------------------------
/**
 * One client at a time (concurrency 1, one load generator): the latency of a whole connection
 * (greeting, STARTTLS, handshake, CAPABILITY, close) when nothing queues. Short alternating
 * trials; quantiles over every connection of every round.
 */
export async function unloaded(systems, insts, P) {
  const live = systems.filter((s) => insts[s.id] && !s.reuse);
  const Q = { ...P, loadgens: 1, ctxSwitches: false };
  const trials = Object.fromEntries(live.map((s) => [s.id, []]));
  for (const s of live) await trial(insts[s.id], 1, P.latWarmMs, Q);
  for (let round = 0; round < P.latRounds; round++) {
    for (const s of live) {
      const t = await trial(insts[s.id], 1, P.latMs, Q);
      log(`unloaded ${round + 1} ${s.id}: p50 ${t.p50Ms?.toFixed(2)} ms (${t.ok} conn)`);
      trials[s.id].push(t);
    }
  }
  const out = {};
  for (const [id, ts] of Object.entries(trials)) {
    const lat = ts.flatMap((t) => t.lat).sort((x, y) => x - y);
    if (!lat.length) continue;
    const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
    const ok = lat.length;
    out[id] = {
      connections: ok,
      errors: sum(ts, (t) => sum(Object.values(t.errors), (x) => x)),
      p50Ms: r1(q(0.5), 3),
      p90Ms: r1(q(0.9), 3),
      p99Ms: r1(q(0.99), 3),
      meanMs: r1(sum(lat, (x) => x) / ok, 3),
      connPerSec: r1(ok / sum(ts, (t) => t.secs)),
      // CPU per connection when nothing is batched or queued (proxy + backend).
      serverCpuMsPerConn: r1((sum(ts, (t) => t.proxyCpu + t.backendCpu) / ok) * 1000, 3),
    };
  }
  return out;
}

// ---- 2. throughput ---------------------------------------------------------------------------
/** Bulk transfer each way on one connection; a warm-up transfer first (JIT), then median of N. */
export async function throughput(systems, insts, P) {
  const live = systems.filter((s) => s.bulk && insts[s.id]);
  const res = Object.fromEntries(live.map((s) => [s.id, []]));
  const cpu = Object.fromEntries(live.map((s) => [s.id, 0]));
  for (const s of live) {
    await loadgen({ mode: 'bulk', port: insts[s.id].port, bytes: P.bulkBytes }).catch(() => {});
  }
  for (let round = 0; round < P.bulkRounds; round++) {
    for (const s of live) {
      const inst = insts[s.id];
      const all = pids([...inst.proxy, ...inst.backend]);
      const u0 = usage(pids(inst.proxy)).cpu;
      try {
        const r = await loadgen({ mode: 'bulk', port: inst.port, bytes: P.bulkBytes });
        cpu[s.id] += usage(pids(inst.proxy)).cpu - u0;
        log(`bulk ${s.id}: up ${r.upMBps.toFixed(0)} MB/s down ${r.downMBps.toFixed(0)} MB/s`);
        res[s.id].push(r);
      } catch (e) {
        log(`bulk ${s.id} failed: ${e.message} (${all.length} processes)`);
      }
    }
  }
  const out = {};
  for (const [id, rs] of Object.entries(res)) {
    if (!rs.length) continue;
    out[id] = {
      bytes: P.bulkBytes,
      rounds: rs.length,
      upMBps: r1(median(rs.map((r) => r.upMBps))),
      downMBps: r1(median(rs.map((r) => r.downMBps))),
      bestUpMBps: r1(Math.max(...rs.map((r) => r.upMBps))),
      bestDownMBps: r1(Math.max(...rs.map((r) => r.downMBps))),
      // Proxy CPU per MB relayed (both directions counted).
      proxyCpuMsPerMB: r1((cpu[id] * 1000) / ((2 * P.bulkBytes * rs.length) / 1e6), 2),
    };
  }
  return out;
}

// ---- 3. idle preamble connections ----------------------------------------------------------
export async function idleMemory(systems, insts, P) {
  const out = {};
  for (const s of systems) {
    if (!s.idle || !insts[s.id]) continue;
    const inst = insts[s.id];
    const all = pids([...inst.proxy, ...inst.backend]);
    // tlsproxy's processes collect garbage first (servers.mjs `mem`), so a collection between the
    // two readings cannot hide the connections' memory; the C servers have none to collect.
    const settle = () =>
      inst.mem
        ? settledMem([...inst.proxy, ...inst.backend], {
            minAgeMs: P.memMinAgeMs,
            streak: P.memStreak,
          })
        : null;
    let before = null;
    let during = null;
    let heldRss = null;
    let held = { holding: 0, failed: 0 };
    try {
      await settle();
      before = usage(all).rss;
      await loadgen({ mode: 'idle', port: inst.port, count: P.idle, holdMs: 60000 }, (o, c) => {
        held = o;
        // Let the servers settle (stunnel threads, Node's lazy allocations) before reading RSS.
        setTimeout(async () => {
          try {
            await settle();
            during = usage(all).rss;
            // Then what the same connections cost once held for a while: V8's memory reducer
            // hands back the heap the burst of accepts committed (young generation grown to its
            // maximum, old-space pages of what the burst allocated) some 8–10 s
            // after allocation calms down. Same wait for every system; well inside the
            // preamble timeout (60 s), so the connections are all still there.
            await new Promise((r) => setTimeout(r, P.idleHoldMs));
            await settle();
            heldRss = usage(all).rss;
          } finally {
            c.stdin.write('done\n');
          }
        }, 2000);
      });
    } catch (e) {
      log(`idle ${s.id} failed: ${e.message}`);
      continue;
    }
    out[s.id] = {
      asked: P.idle,
      connections: held.holding,
      refused: held.failed,
      rssBeforeMiB: r1(before / 2 ** 20),
      rssDuringMiB: r1(during / 2 ** 20),
      rssHeldMiB: r1(heldRss / 2 ** 20),
      // Judged: the cost of holding the connections (after the reducer); the burst's high-water
      // mark beside it.
      kibPerConnection: held.holding ? r1((heldRss - before) / 1024 / held.holding, 2) : null,
      kibPerConnectionBurst: held.holding ? r1((during - before) / 1024 / held.holding, 2) : null,
    };
    log(`idle ${s.id}: ${JSON.stringify(out[s.id])}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
  return out;
}

/**
 * Ask bench servers for `mem` (a full GC first) until each one's RSS has held still for a few
 * readings, and not before they are 12 s old: V8's memory reducer hands 3–6 MiB of a fresh
 * process's pages back to the kernel 8–10 s after it starts (measured here), and a baseline taken
 * before that would hide as much of what the connections cost. Resolves with each server's last
 * answer.
 */
export async function settledMem(servers, { streak = 3, tries = 16, minAgeMs = 12000 } = {}) {
  // (--smoke passes minAgeMs 0 and streak 1: its figures mean nothing, its time matters.)
  const age = Math.min(...servers.map((c) => Date.now() - (c.startedAt ?? 0)));
  if (age < minAgeMs) await new Promise((r) => setTimeout(r, minAgeMs - age));
  let prev = null;
  let still = 0;
  for (let i = 0; ; i++) {
    const now = [];
    for (const c of servers) now.push(await ask(c, 'mem'));
    still = prev && now.every((m, k) => Math.abs(m.rss - prev[k].rss) < 256 << 10) ? still + 1 : 0;
    if (still + 1 >= streak || i + 1 >= tries) return now;
    prev = now;
    await new Promise((r) => setTimeout(r, 500));
  }
}

// ---- 3b. idle established sessions ---------------------------------------------------------------
/**
 * Memory of idle ESTABLISHED sessions through the real proxy and backend: fresh instances started
 * by `list` ([id, start]) with --expose-gc, warmed up, then `P.established` connections through
 * STARTTLS, the handshake and one CAPABILITY exchange, held with nothing moving. Both processes
 * collect garbage before each reading (servers.mjs `mem`), so the growth is live memory: the proxy
 * process's (the TLS engine and the proxy's per-session state) and the backend's, separately.
 */
export async function idleEstablished(list, P) {
  const out = {};
  for (const [id, startFn] of list) {
    let inst;
    try {
      inst = await startFn();
      const [proxy] = inst.proxy;
      const [backend] = inst.backend;
      // Lazy allocations (JIT, OpenSSL's tables, the loop threads' malloc arenas) before the baseline.
      await trial(inst, 8, P.warmMs, { ...P, loadgens: 1, ctxSwitches: false });
      await new Promise((r) => setTimeout(r, 500));
      const [p0, b0] = await settledMem([proxy, backend], {
        minAgeMs: P.memMinAgeMs,
        streak: P.memStreak,
      });
      let p1;
      let p2;
      let b2;
      let held = { holding: 0, failed: 0 };
      await loadgen(
        { mode: 'established', port: inst.port, count: P.established, holdMs: 120000 },
        (o, c) => {
          held = o;
          // Let the last sessions settle (the engine drops its handshake buffers) before reading.
          setTimeout(async () => {
            try {
              [p1] = await settledMem([proxy, backend], {
                minAgeMs: P.memMinAgeMs,
                streak: P.memStreak,
              });
              // And once held a while, as for idle preamble connections (idleMemory): after V8's
              // memory reducer has handed back what the burst of handshakes committed.
              await new Promise((r) => setTimeout(r, P.idleHoldMs));
              [p2, b2] = await settledMem([proxy, backend], {
                minAgeMs: P.memMinAgeMs,
                streak: P.memStreak,
              });
            } finally {
              c.stdin.write('done\n');
            }
          }, 1000);
        },
      );
      const n = held.holding;
      const per = (a, b, k) =>
        n && a?.[k] != null && b?.[k] != null ? r1((b[k] - a[k]) / 1024 / n, 2) : null;
      out[id] = {
        asked: P.established,
        sessions: n,
        refused: held.failed,
        proxyRssBeforeMiB: r1(p0.rss / 2 ** 20),
        proxyRssDuringMiB: r1(p1.rss / 2 ** 20),
        proxyRssHeldMiB: r1(p2.rss / 2 ** 20),
        // Judged: held (after the reducer); right after the handshakes beside it.
        proxyKiBPerSession: per(p0, p2, 'rss'),
        proxyKiBPerSessionAfter: per(p0, p1, 'rss'),
        proxyMallocKiBPerSession: per(p0, p2, 'malloc'),
        proxyJsHeapKiBPerSession: per(p0, p2, 'heapUsed'),
        backendKiBPerSession: per(b0, b2, 'rss'),
      };
      log(`idle established ${id}: ${JSON.stringify(out[id])}`);
    } catch (e) {
      out[id] = { error: e.message.slice(0, 300) };
      log(`idle established ${id} failed: ${e.message}`);
    } finally {
      if (inst) for (const c of [...inst.proxy, ...inst.backend]) await stop(c);
    }
  }
  return out;
}

// ---- 4. dialect cost -------------------------------------------------------------------------
// What a client sends before TLS, one receive() per element, ending in the STARTTLS request.
const enc = new TextEncoder();
const LDAP_STARTTLS = Buffer.concat([
  Buffer.from([0x30, 0x1d, 0x02, 0x01, 0x01, 0x77, 0x18, 0x80, 0x16]),
  Buffer.from('1.3.6.1.4.1.1466.20037'),
]);
const PREAMBLES = {
  imap: { command: 'a NOOP\r\n', chunks: ['a CAPABILITY\r\n', 'b STARTTLS\r\n'] },
  pop3: { command: 'NOOP\r\n', chunks: ['CAPA\r\n', 'STLS\r\n'] },
  smtp: { command: 'NOOP\r\n', chunks: ['EHLO client.example\r\n', 'STARTTLS\r\n'] },
  ldap: { chunks: [LDAP_STARTTLS] },
  xmpp: {
    chunks: [
      "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
      "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    ],
  },
  'http-upgrade': {
    chunks: [
      'OPTIONS * HTTP/1.1\r\nHost: localhost\r\nUpgrade: TLS/1.0\r\nConnection: Upgrade\r\n\r\n',
    ],
  },
};

/**
 * Per dialect, sans-I/O (no sockets): whole preambles up to STARTTLS per second (a new session
 * each), and for the line dialects one pre-TLS command repeated in one session.
 */
export async function dialectCost(P) {
  const core = await import('@tlsproxy/core');
  const out = {};
  for (const [name, pre] of Object.entries(PREAMBLES)) {
    try {
      const d = await core.loadDialect(name);
      // Lift the per-session command limits so one session parses for the whole interval.
      const limits = Object.fromEntries(
        Object.entries(d.limits).map(([k, v]) => [k, k.match(/bad|command/i) ? 1e12 : v.default]),
      );
      const options = Object.fromEntries(Object.entries(d.options).map(([k, v]) => [k, v.default]));
      const mk = () => {
        const s = d.create({ options, limits, hostname: 'localhost', connectionId: 'bench' });
        s.start(0);
        return s;
      };
      const chunks = pre.chunks.map((c) => (typeof c === 'string' ? enc.encode(c) : c));
      let n = 0;
      let t0 = performance.now();
      while (performance.now() - t0 < P.dialectMs) {
        for (let i = 0; i < 100; i++) {
          const s = mk();
          let acts = [];
          for (const c of chunks) acts = s.receive(c, 0);
          if (!acts.some((a) => a.type === 'starttls'))
            throw new Error(`preamble did not reach STARTTLS: ${JSON.stringify(acts)}`);
        }
        n += 100;
      }
      out[name] = { preamblesPerSec: Math.round(n / ((performance.now() - t0) / 1000)) };
      if (!pre.command) continue;
      let s = mk();
      const bytes = enc.encode(pre.command.repeat(100));
      n = 0;
      t0 = performance.now();
      while (performance.now() - t0 < P.dialectMs) {
        const acts = s.receive(bytes, 0);
        n += 100;
        if (acts.some((a) => a.type === 'close')) s = mk();
      }
      out[name].command = pre.command.trim();
      out[name].commandsPerSec = Math.round(n / ((performance.now() - t0) / 1000));
    } catch (e) {
      out[name] = { error: e.message.slice(0, 200) };
    }
  }
  return out;
}
