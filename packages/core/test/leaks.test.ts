// 1,000 connections, some failing at each stage of the preamble, TLS and hand-off: afterwards the
// proxy (this process) and the backend (a child process) hold as many descriptors as before.
import net from 'node:net';
import type tls from 'node:tls';
import { describe, expect, it } from 'vitest';
import { cert, fdCount, LineClient, sleep, startBackend, startProxy } from './helpers.js';

type Stage = (port: number) => Promise<void>;

const closeWhen = (s: net.Socket) =>
  new Promise<void>((r) => {
    s.once('close', () => r());
    s.on('error', () => {});
  });

const stages: Record<string, Stage> = {
  async connectAndClose(port) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    await new Promise((r) => s.once('connect', r));
    s.destroy();
  },
  async afterGreeting(port) {
    const c = new LineClient(port);
    await c.until(/^\* OK/);
    c.socket.destroy();
  },
  async garbage(port) {
    const c = new LineClient(port);
    await c.until(/^\* OK/);
    c.write('\x00\xff\r\n'.repeat(20));
    await sleep(5);
    c.socket.destroy();
  },
  async starttlsThenClose(port) {
    const c = new LineClient(port);
    await c.until(/^\* OK/);
    c.write('a STARTTLS\r\n');
    await c.until(/^a OK/);
    c.socket.destroy();
  },
  async starttlsThenJunk(port) {
    const c = new LineClient(port);
    await c.until(/^\* OK/);
    c.write('a STARTTLS\r\n');
    await c.until(/^a OK/);
    const closed = closeWhen(c.socket);
    c.write('this is not a TLS ClientHello\r\n');
    await closed;
  },
  async untrustedClientCert(port) {
    const c = new LineClient(port);
    await c.until(/^\* OK/);
    c.write('a STARTTLS\r\n');
    await c.until(/^a OK/);
    await c.startTls({ cert: cert('rogue.pem'), key: cert('rogue.key') }).then(
      async (t) => {
        // TLS 1.3: the server rejects the certificate after the client thinks it is done
        await Promise.race([closeWhen(t.socket), sleep(1000)]);
        t.socket.destroy();
      },
      () => {},
    );
    c.socket.destroy();
  },
  async fullSession(port) {
    const c = new LineClient(port);
    await c.until(/^\* OK/);
    c.write('a STARTTLS\r\n');
    await c.until(/^a OK/);
    const t = await c.startTls();
    t.socket.write('b LOGIN u p\r\nc LOGOUT\r\n');
    await t.until(/c OK/);
    t.socket.destroy();
  },
  async tlsThenAbort(port) {
    const c = new LineClient(port);
    await c.until(/^\* OK/);
    c.write('a STARTTLS\r\n');
    await c.until(/^a OK/);
    const t = await c.startTls();
    (t.socket as tls.TLSSocket).destroy();
  },
};

describe('descriptor leaks', () => {
  it('1,000 connections failing at every stage leak nothing in proxy or backend', async () => {
    const backend = await startBackend(['--quiet']);
    const { proxy, port } = await startProxy(
      `unix:${backend.path}`,
      {},
      { clientCert: 'optional' },
    );
    const names = Object.keys(stages);
    const runBatch = async (count: number) => {
      const concurrency = 16;
      let next = 0;
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (next < count) {
            const i = next++;
            await stages[names[i % names.length]!]!(port).catch(() => {});
          }
        }),
      );
      // let the last closes travel through proxy, TLS engine and backend
      for (let i = 0; i < 50 && proxy.activeSessions > 0; i++) await sleep(50);
      await sleep(300);
    };
    try {
      await runBatch(64); // warm-up: lazily opened descriptors (epoll, crypto, …)
      const proxyBefore = fdCount();
      const backendBefore = fdCount(backend.child.pid!);
      await runBatch(1000);
      expect(proxy.activeSessions).toBe(0);
      expect(fdCount()).toBe(proxyBefore);
      expect(fdCount(backend.child.pid!)).toBe(backendBefore);
    } finally {
      await proxy.close();
      backend.child.kill();
    }
  }, 120_000);
});
