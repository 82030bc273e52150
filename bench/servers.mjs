#!/usr/bin/env node
// Servers under test, one per child process so their CPU can be read from /proc/PID/stat:
//   node bench/servers.mjs backend PATH        @tlsproxy/backend on a UNIX socket (post-TLS IMAP)
//   node bench/servers.mjs tlsproxy PORT PATH [node|native]
//                                              TlsProxy (IMAP dialect) handing off to PATH, with
//                                              the node:tls engine or the native one (C threads)
//   node bench/servers.mjs nodetls PORT        IMAP preamble + STARTTLS + TLS in-process (node:tls)
//   node bench/servers.mjs implicit PORT       implicit TLS (port-993 style) + IMAP in-process (node:tls)
//   node bench/servers.mjs plain PORT          plaintext IMAP server (behind stunnel)
// Each prints "ready" on stdout once it accepts connections and exits on SIGTERM/SIGINT.
// backend and tlsproxy also answer `mem` on stdin with `mem {rss, heapUsed, external, malloc}` on
// stdout, after a full GC when started with --expose-gc (the idle established-session phase).
// The post-TLS commands are the same everywhere: CAPABILITY, UPLOAD n (n raw bytes follow),
// DOWNLOAD n (n raw bytes then the tagged OK), LOGOUT.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
export const certs = {
  cert: readFileSync(`${root}fixtures/certs/server.pem`),
  key: readFileSync(`${root}fixtures/certs/server.key`),
  ca: readFileSync(`${root}fixtures/certs/ca.pem`),
};
const GREETING = '* OK [CAPABILITY IMAP4rev1 STARTTLS] bench ready\r\n';
const CAPS = '* CAPABILITY IMAP4rev1 LITERAL+ ID UNSELECT\r\n';
const FILL = Buffer.alloc(1 << 16, 0x41);
const MAX_BULK = 1 << 30;

/** Answer the post-TLS commands on `socket` (plaintext or TLS). */
export function serveImap(socket, greeting) {
  let buf = Buffer.alloc(0);
  let need = 0; // raw UPLOAD bytes still to swallow
  let upTag = '';
  socket.on('error', () => socket.destroy());
  if (greeting) socket.write(greeting);
  const download = (tag, left) => {
    while (left > 0) {
      const k = Math.min(left, FILL.length);
      left -= k;
      if (!socket.write(FILL.subarray(0, k))) {
        socket.once('drain', () => download(tag, left));
        return;
      }
    }
    socket.write(`${tag} OK DOWNLOAD done\r\n`);
  };
  socket.on('data', (d) => {
    if (need > 0) {
      const k = Math.min(need, d.length);
      need -= k;
      d = d.subarray(k);
      if (need === 0) socket.write(`${upTag} OK UPLOAD done\r\n`);
      if (d.length === 0) return;
    }
    buf = buf.length ? Buffer.concat([buf, d]) : d;
    for (;;) {
      const lf = buf.indexOf(10);
      if (lf < 0) {
        if (buf.length > 8192) socket.destroy();
        return;
      }
      const line = buf.subarray(0, lf).toString('latin1').replace(/\r$/, '');
      buf = buf.subarray(lf + 1);
      const [tag, cmd = '', arg] = line.split(' ');
      const c = cmd.toUpperCase();
      if (c === 'CAPABILITY') socket.write(`${CAPS}${tag} OK CAPABILITY completed\r\n`);
      else if (c === 'LOGOUT') {
        socket.end(`* BYE bye\r\n${tag} OK LOGOUT completed\r\n`);
        return;
      } else if (c === 'UPLOAD') {
        const n = Math.min(Number(arg) || 0, MAX_BULK);
        upTag = tag;
        const k = Math.min(n, buf.length);
        need = n - k;
        buf = buf.subarray(k);
        if (need === 0) socket.write(`${tag} OK UPLOAD done\r\n`);
        else {
          if (buf.length) throw new Error('unreachable');
          return;
        }
      } else if (c === 'DOWNLOAD') download(tag, Math.min(Number(arg) || 0, MAX_BULK));
      else socket.write(`${tag} BAD unknown command\r\n`);
    }
  });
}

const ready = () => process.stdout.write('ready\n');

/**
 * Answer `mem` lines on stdin: collect garbage (with --expose-gc) so the figures are live memory,
 * not what the handshakes left behind, then report RSS, the JS heap and the C heap (malloc: OpenSSL,
 * the engine addon, Node's C++ objects; read through the native engine's probe when it loads).
 */
function answerMem() {
  let mallocBytes = null;
  let buf = '';
  process.stdin.on('data', async (d) => {
    buf += d;
    for (let lf = buf.indexOf('\n'); lf >= 0; lf = buf.indexOf('\n')) {
      const cmd = buf.slice(0, lf).trim();
      buf = buf.slice(lf + 1);
      if (cmd !== 'mem') continue;
      if (mallocBytes === null) {
        try {
          mallocBytes = (await import('@tlsproxy/engine-native')).mallocBytes;
          mallocBytes();
        } catch {
          mallocBytes = () => null;
        }
      }
      for (let i = 0; i < 2; i++) {
        globalThis.gc?.();
        await new Promise((r) => setTimeout(r, 200));
      }
      const m = process.memoryUsage();
      const mem = {
        rss: m.rss,
        heapUsed: m.heapUsed,
        heapTotal: m.heapTotal,
        external: m.external,
        malloc: mallocBytes(),
      };
      process.stdout.write(`mem ${JSON.stringify(mem)}\n`);
    }
  });
}
const onStop = (fn) => {
  for (const sig of ['SIGTERM', 'SIGINT']) {
    process.once(sig, () => {
      Promise.resolve(fn()).finally(() => process.exit(0));
      setTimeout(() => process.exit(0), 2000).unref();
    });
  }
};

async function main(mode, a, b, engine = 'node') {
  if (mode === 'backend') {
    const { listen } = await import('@tlsproxy/backend');
    const server = await listen({ path: a, maxPending: 4096 });
    server.on('connection', (socket) => serveImap(socket, null));
    onStop(() => server.close());
    answerMem();
    ready();
  } else if (mode === 'tlsproxy') {
    const { TlsProxy, silentLogger } = await import('@tlsproxy/core');
    const identities = [{ cert: certs.cert, key: certs.key }];
    let pool = { identities };
    if (engine === 'native') {
      const { NativeTlsEngine } = await import('@tlsproxy/engine-native');
      const threads = process.env.BENCH_ENGINE_THREADS;
      pool = new NativeTlsEngine({ identities, ...(threads ? { threads: Number(threads) } : {}) });
    }
    const proxy = new TlsProxy({ pool, logger: silentLogger });
    // One client address (the load generator) opens every connection: lift the per-address
    // preamble limit (default 64) so the idle-connection test can hold thousands.
    await proxy.listen({
      dialect: 'imap',
      listen: `127.0.0.1:${a}`,
      backend: `unix:${b}`,
      maxConnections: 50_000,
      maxConnectionsPerAddress: 50_000,
    });
    onStop(() => proxy.close());
    answerMem();
    ready();
  } else if (mode === 'implicit') {
    // The floor cost of TLS in Node: no preamble at all, TLS from the first byte.
    const server = tls.createServer({ cert: certs.cert, key: certs.key }, (t) =>
      serveImap(t, '* OK [CAPABILITY IMAP4rev1] bench ready\r\n'),
    );
    server.on('tlsClientError', () => {});
    await new Promise((r) => server.listen(Number(a), '127.0.0.1', 1024, r));
    onStop(() => server.close());
    ready();
  } else if (mode === 'plain') {
    const server = net.createServer((s) => serveImap(s, GREETING));
    await new Promise((r) => server.listen(Number(a), '127.0.0.1', 1024, r));
    onStop(() => server.close());
    ready();
  } else if (mode === 'nodetls') {
    const secureContext = tls.createSecureContext({ cert: certs.cert, key: certs.key });
    const server = net.createServer((socket) => {
      socket.on('error', () => socket.destroy());
      socket.write(GREETING);
      let buf = '';
      const onData = (d) => {
        buf += d.toString('latin1');
        for (;;) {
          const lf = buf.indexOf('\n');
          if (lf < 0) {
            if (buf.length > 8192) socket.destroy();
            return;
          }
          const line = buf.slice(0, lf).replace(/\r$/, '');
          buf = buf.slice(lf + 1);
          const [tag, cmd = ''] = line.split(' ');
          const c = cmd.toUpperCase();
          if (c === 'STARTTLS') {
            socket.removeListener('data', onData); // pipelined bytes in `buf` are dropped
            socket.write(`${tag} OK Begin TLS negotiation now\r\n`);
            const t = new tls.TLSSocket(socket, { isServer: true, secureContext });
            t.on('secure', () => serveImap(t, null));
            t.on('error', () => t.destroy());
            return;
          }
          if (c === 'CAPABILITY')
            socket.write(`* CAPABILITY IMAP4rev1 STARTTLS\r\n${tag} OK done\r\n`);
          else if (c === 'LOGOUT') return void socket.end(`* BYE\r\n${tag} OK\r\n`);
          else socket.write(`${tag} BAD\r\n`);
        }
      };
      socket.on('data', onData);
    });
    await new Promise((r) => server.listen(Number(a), '127.0.0.1', 1024, r));
    onStop(() => server.close());
    ready();
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await main(...process.argv.slice(2));
}
