#!/usr/bin/env node
// Memory of idle established sessions in the engine's process: a child runs the engine (and
// keeps each session's plaintext end, as a backend would), the parent runs N node:tls clients
// that complete the handshake, exchange one line and go quiet. The child reports its RSS growth
// per session. Usage: node bench/idle-memory.mjs [N=1000] [engine=native|node]
// With KEEP_FD=1 the child keeps each plaintext end as a bare descriptor (no net.Socket, no
// exchange): the growth is then the engine's own per-session cost plus its JS bookkeeping.
import { fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';

const certDir = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
const N = Number(process.argv[2] ?? 1000);
const which = process.argv[3] ?? 'native';

if (process.argv[4] === 'child') {
  const net = await import('node:net');
  const { detachSocket } = await import('@tlsproxy/fdpass');
  const identities = [
    { cert: readFileSync(`${certDir}server.pem`), key: readFileSync(`${certDir}server.key`) },
  ];
  const engine =
    which === 'node'
      ? new (await import('@tlsproxy/pool')).TlsEngine({ identities })
      : new (await import('../dist/index.js')).NativeTlsEngine({ identities, threads: 1 });
  const keep = [];
  const server = net.createServer({ pauseOnConnect: true }, (s) => {
    engine.handshake(detachSocket(s).fd).then((r) => {
      if (process.env.KEEP_FD) {
        keep.push(r.plaintext, r.controlKey);
        return;
      }
      // Answer one line, then hold the plaintext end without reading, as an idle backend.
      const b = r.plaintext.toSocket();
      b.once('data', () => {
        b.write('ok\n');
        b.pause();
      });
      keep.push(b, r.controlKey);
    });
  });
  const { mallocBytes } = await import('../dist/index.js');
  server.listen(0, '127.0.0.1', () => {
    globalThis.gc?.();
    process.send({
      port: server.address().port,
      rss: process.memoryUsage().rss,
      malloc: mallocBytes(),
    });
  });
  process.on('message', (m) => {
    if (m === 'measure') {
      globalThis.gc?.();
      setTimeout(() => {
        globalThis.gc?.();
        process.send({
          rss: process.memoryUsage().rss,
          malloc: mallocBytes(),
          sessions: keep.length / 2,
        });
      }, 500);
    }
    if (m === 'exit') process.exit(0);
  });
} else {
  const child = fork(fileURLToPath(import.meta.url), [String(N), which, 'child'], {
    execArgv: ['--expose-gc'],
  });
  const next = () => new Promise((r) => child.once('message', r));
  const { port, rss: rss0, malloc: malloc0 } = await next();
  const clients = [];
  for (let i = 0; i < N; i++) {
    const c = tls.connect({
      host: '127.0.0.1',
      port,
      ca: readFileSync(`${certDir}ca.pem`),
      checkServerIdentity: () => undefined,
    });
    await new Promise((r, j) => {
      c.once('secureConnect', () => {
        if (process.env.KEEP_FD) return setTimeout(r, 2);
        c.write('hi\n');
        c.once('data', r);
      });
      c.once('error', j);
    });
    clients.push(c);
  }
  child.send('measure');
  const { rss, malloc, sessions } = await next();
  console.log(
    JSON.stringify({
      engine: which,
      sessions,
      rssGrowthKiB: Math.round((rss - rss0) / 1024),
      perSessionKiB: Number(((rss - rss0) / 1024 / sessions).toFixed(1)),
      // malloc'd memory (C: OpenSSL, this addon, node's own C++ allocations) per session
      mallocPerSessionKiB: Number(((malloc - malloc0) / 1024 / sessions).toFixed(1)),
    }),
  );
  child.send('exit');
  for (const c of clients) c.destroy();
}
