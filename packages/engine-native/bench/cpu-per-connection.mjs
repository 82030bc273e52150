#!/usr/bin/env node
// CPU of the engine's process per connection (handshake, one line each way, close), both
// engines in the same run. A child runs the engine and an echo backend on the plaintext end; the
// parent runs node:tls clients (TLS 1.3, P-256 ECDHE, RSA certificate from fixtures/certs) with
// a few in flight. process.cpuUsage() counts every thread of the child, the engine's loops too.
// Small on purpose (not the project's bench): usage: node bench/cpu-per-connection.mjs [N=500]
import { fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';

const certDir = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
const N = Number(process.argv[2] ?? 500);

if (process.argv[3] === 'child') {
  const which = process.argv[4];
  const net = await import('node:net');
  const { detachSocket } = await import('@tlsproxy/fdpass');
  const identities = [
    { cert: readFileSync(`${certDir}server.pem`), key: readFileSync(`${certDir}server.key`) },
  ];
  const engine =
    which === 'node'
      ? new (await import('@tlsproxy/pool')).TlsEngine({ identities })
      : new (await import('../dist/index.js')).NativeTlsEngine({ identities, threads: 1 });
  const server = net.createServer({ pauseOnConnect: true }, (s) => {
    engine.handshake(detachSocket(s).fd).then(
      (r) => {
        const b = r.plaintext.toSocket({ allowHalfOpen: true });
        b.on('data', (d) => b.write(d));
        b.on('end', () => b.end());
        b.on('error', () => {});
      },
      () => {},
    );
  });
  server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
  let t0;
  // CPU ticks per thread name since start (Linux /proc), to split the engine's loops from JS.
  const { readdirSync, readFileSync: rf } = await import('node:fs');
  const ticks = () => {
    const out = {};
    for (const tid of readdirSync('/proc/self/task')) {
      const stat = rf(`/proc/self/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out[name] = (out[name] ?? 0) + Number(f[11]) + Number(f[12]);
    }
    return out;
  };
  let ticks0 = {};
  const threadTicks = () => {
    const now = ticks();
    const d = {};
    for (const [k, v] of Object.entries(now))
      if (v - (ticks0[k] ?? 0) > 0) d[k] = (v - (ticks0[k] ?? 0)) * 10;
    return d;
  };
  process.on('message', (m) => {
    if (m === 'start') {
      t0 = process.cpuUsage();
      ticks0 = ticks();
      process.send('started');
    }
    if (m === 'stop') {
      const d = process.cpuUsage(t0);
      process.send({ cpuMs: (d.user + d.system) / 1000, threads: threadTicks() });
    }
    if (m === 'exit') process.exit(0);
  });
} else {
  const ca = readFileSync(`${certDir}ca.pem`);
  for (const which of (process.env.ENGINES ?? 'node,native').split(',')) {
    const child = fork(fileURLToPath(import.meta.url), [String(N), 'child', which]);
    const next = () => new Promise((r) => child.once('message', r));
    const { port } = await next();
    const one = () =>
      new Promise((resolve, reject) => {
        const c = tls.connect({
          host: '127.0.0.1',
          port,
          ca,
          checkServerIdentity: () => undefined,
          ecdhCurve: 'P-256',
        });
        c.once('secureConnect', () => c.end('a001 NOOP\r\n'));
        c.on('data', () => {});
        c.once('close', resolve);
        c.once('error', reject);
      });
    for (let i = 0; i < 20; i++) await one(); // warm-up
    child.send('start');
    await next();
    const t = Date.now();
    let done = 0;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (done < N) {
          done++;
          await one();
        }
      }),
    );
    const wall = Date.now() - t;
    child.send('stop');
    const { cpuMs, threads } = await next();
    console.log(
      JSON.stringify({
        engine: which,
        connections: N,
        cpuMsPerConnection: Number((cpuMs / N).toFixed(3)),
        wallMs: wall,
        threadCpuMs: threads,
      }),
    );
    child.send('exit');
  }
}
