#!/usr/bin/env node
// Load generator, run as its own process by bench/run.mjs: node bench/loadgen.mjs '<json>'
//   { mode: 'handshake', port, concurrency, durationMs, maxConns, implicit? }
//     clients connect, read the IMAP greeting, `a STARTTLS`, TLS 1.3 handshake (verified against
//     fixtures/certs/ca.pem, no resumption), `b CAPABILITY`, read `b OK`, close; fixed concurrency.
//     implicit: TLS from the first byte instead (port 993 style), then the greeting.
//   { mode: 'bulk', port, bytes }  one connection: STARTTLS, then UPLOAD and DOWNLOAD of `bytes`.
//   { mode: 'idle', port, count, holdMs } open `count` connections, read the greeting, hold them.
//   { mode: 'established', port, count, holdMs, concurrency? }  open `count` connections through
//     STARTTLS, the handshake and one CAPABILITY exchange (so the backend has its end), then hold
//     them with nothing moving.
// Prints one JSON line with the results and its own CPU seconds.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const ca = readFileSync(`${root}fixtures/certs/ca.pem`);
const opts = JSON.parse(process.argv[2]);
const HOST = '127.0.0.1';
const STEP_TIMEOUT_MS = 10000;
// One context for every connection: building it (parsing the CA into an X509_STORE) per
// connection would cost the client more than the handshake and starve the servers of CPU.
// No `session` is passed, so no handshake resumes.
// One suite offered, so every server negotiates the same cipher: servers differ in whose order
// wins (the native engine prefers its own list, AES-128-GCM first; node:tls and stunnel follow
// the client's, which puts AES-256-GCM first), and bulk throughput would compare ciphers.
const secureContext = tls.createSecureContext({
  ca,
  minVersion: 'TLSv1.3',
  maxVersion: 'TLSv1.3',
  ciphers: 'TLS_AES_128_GCM_SHA256',
});

/** Resolve with the first line matching `re` (bytes after it are returned as `rest`). */
function readLine(sock, re, initial = '') {
  return new Promise((resolve, reject) => {
    let buf = initial;
    const timer = setTimeout(() => done(new Error(`timeout waiting for ${re}`)), STEP_TIMEOUT_MS);
    const onData = (d) => {
      buf += d.toString('latin1');
      for (;;) {
        const lf = buf.indexOf('\n');
        if (lf < 0) return;
        const line = buf.slice(0, lf);
        buf = buf.slice(lf + 1);
        if (re.test(line)) return done(null, { line, rest: buf });
      }
    };
    const onErr = (e) => done(e ?? new Error('closed'));
    const onClose = () => done(new Error(`closed waiting for ${re}`));
    function done(err, v) {
      clearTimeout(timer);
      sock.removeListener('data', onData);
      sock.removeListener('error', onErr);
      sock.removeListener('close', onClose);
      if (err) reject(err);
      else resolve(v);
    }
    sock.on('data', onData);
    sock.on('error', onErr);
    sock.on('close', onClose);
  });
}

/** Resolve at secureConnect; reject on an error first or after STEP_TIMEOUT_MS. */
function secured(t) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('handshake timeout')), STEP_TIMEOUT_MS);
    t.once('secureConnect', () => {
      clearTimeout(timer);
      resolve();
    });
    t.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

async function starttls(port) {
  const raw = net.connect(port, HOST);
  raw.setNoDelay(true);
  try {
    await readLine(raw, /^\* OK/);
    raw.write('a STARTTLS\r\n');
    const { line } = await readLine(raw, /^a /);
    if (!/^a OK/i.test(line)) throw new Error(`STARTTLS refused: ${line.trim()}`);
    const t = tls.connect({
      socket: raw,
      servername: 'localhost',
      secureContext,
    });
    await secured(t);
    return t;
  } catch (e) {
    raw.destroy();
    throw e;
  }
}

async function implicitTls(port) {
  const t = tls.connect({ host: HOST, port, servername: 'localhost', secureContext });
  try {
    await secured(t);
    await readLine(t, /^\* OK/);
    return t;
  } catch (e) {
    t.destroy();
    throw e;
  }
}

async function oneHandshake(port, implicit) {
  const t = implicit ? await implicitTls(port) : await starttls(port);
  try {
    t.write('b CAPABILITY\r\n');
    const { line } = await readLine(t, /^b /);
    if (!/^b OK/i.test(line)) throw new Error(`CAPABILITY: ${line.trim()}`);
  } finally {
    t.destroy();
  }
}

async function handshake({ port, concurrency, durationMs, maxConns, implicit = false }) {
  const lat = [];
  const errors = {};
  let started = 0;
  const t0 = performance.now();
  const deadline = t0 + durationMs;
  const worker = async () => {
    while (performance.now() < deadline && started < maxConns) {
      started++;
      const s = performance.now();
      try {
        await oneHandshake(port, implicit);
        lat.push(performance.now() - s);
      } catch (e) {
        const k = e.code ?? e.message.slice(0, 60);
        errors[k] = (errors[k] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const secs = (performance.now() - t0) / 1000;
  return { ok: lat.length, errors, secs, latMs: lat.map((x) => Number(x.toFixed(2))) };
}

async function bulk({ port, bytes }) {
  const t = await starttls(port);
  const chunk = Buffer.alloc(1 << 16, 0x42);
  // upload
  let s = performance.now();
  t.write(`u UPLOAD ${bytes}\r\n`);
  const okUp = readLine(t, /^u /);
  let left = bytes;
  while (left > 0) {
    const k = Math.min(left, chunk.length);
    left -= k;
    if (!t.write(chunk.subarray(0, k))) await new Promise((r) => t.once('drain', r));
  }
  await okUp;
  const upSecs = (performance.now() - s) / 1000;
  // download: `bytes` raw bytes, then the tagged OK
  s = performance.now();
  await new Promise((resolve, reject) => {
    let got = 0;
    let tail = '';
    const timer = setTimeout(() => reject(new Error('download timeout')), 120000);
    t.on('data', (d) => {
      const k = Math.min(d.length, bytes - got);
      got += k;
      if (k < d.length) tail += d.subarray(k).toString('latin1');
      if (got >= bytes && tail.includes('\n')) {
        clearTimeout(timer);
        t.removeAllListeners('data');
        resolve();
      }
    });
    t.on('error', reject);
    t.write(`d DOWNLOAD ${bytes}\r\n`);
  });
  const downSecs = (performance.now() - s) / 1000;
  t.destroy();
  const mb = bytes / 1e6;
  return { bytes, upMBps: mb / upSecs, downMBps: mb / downSecs };
}

async function idle({ port, count, holdMs }) {
  const socks = [];
  let ok = 0;
  let failed = 0;
  const batch = 200;
  for (let i = 0; i < count; i += batch) {
    await Promise.all(
      Array.from({ length: Math.min(batch, count - i) }, async () => {
        const s = net.connect(port, HOST);
        socks.push(s);
        try {
          await readLine(s, /^\* OK/);
          ok++;
        } catch {
          failed++;
        }
      }),
    );
  }
  return hold(socks, ok, failed, holdMs);
}

/** Say how many are held, hold them until told (a line on stdin) or holdMs, then close them. */
async function hold(socks, ok, failed, holdMs) {
  process.stdout.write(`${JSON.stringify({ holding: ok, failed })}\n`);
  await new Promise((r) => {
    const timer = setTimeout(r, holdMs);
    process.stdin.once('data', () => {
      clearTimeout(timer);
      r();
    });
  });
  for (const s of socks) s.destroy();
  return { ok, failed };
}

async function established({ port, count, holdMs, concurrency = 16 }) {
  const socks = [];
  let ok = 0;
  let failed = 0;
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      try {
        const t = await starttls(port);
        socks.push(t);
        t.on('error', () => {});
        t.write('b CAPABILITY\r\n');
        const { line } = await readLine(t, /^b /);
        if (!/^b OK/i.test(line)) throw new Error(`CAPABILITY: ${line.trim()}`);
        ok++;
      } catch {
        failed++;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return hold(socks, ok, failed, holdMs);
}

const modes = new Map([
  ['handshake', handshake],
  ['bulk', bulk],
  ['idle', idle],
  ['established', established],
]);
const run = modes.get(opts.mode);
if (!run) throw new Error(`unknown mode ${opts.mode}`);
const result = await run(opts);
const cpu = process.cpuUsage();
result.loadgenCpuSecs = (cpu.user + cpu.system) / 1e6;
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);
