import { spawn } from 'node:child_process';
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import type net from 'node:net';
import tls from 'node:tls';
import { writeSync } from '@tlsproxy/fdpass';
import type { HandshakeResult } from '@tlsproxy/pool';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NativeTlsEngine } from '../src/index.js';
import { binding } from '../src/loader.js';
import {
  certs,
  client,
  fdCount,
  nextData,
  raw,
  readAll,
  type Served,
  serve,
  until,
} from './helpers.js';
import { servedEngine } from './served-engine.js';

const fp = (pem: string) => new X509Certificate(pem).fingerprint256;
const SERVER_FP = fp(certs.server.cert);
const OTHER_FP = fp(certs.other.cert);

async function connectPair(
  served: Served,
  options: Parameters<typeof client>[1] = {},
  halfOpen = false,
) {
  const c = client(served.port, options, halfOpen);
  const [r] = await Promise.all([served.next(), c.secure]);
  return { c, r };
}

function backend(r: HandshakeResult): net.Socket {
  return r.plaintext.toSocket({ allowHalfOpen: true });
}

describe('loading', () => {
  it('links the OpenSSL inside node, version 3 or later', () => {
    const v = binding().openssl();
    expect(v.version).toBeGreaterThanOrEqual(0x30000000);
    expect(v.text).toContain(process.versions.openssl.replace(/\+.*/, ''));
  });
});

describe('NativeTlsEngine: handshake and relay', () => {
  let engine: NativeTlsEngine;
  let served: Served;
  const ended: number[] = [];
  beforeAll(async () => {
    engine = new NativeTlsEngine({ identities: [certs.server], threads: 2, alpn: ['imap'] });
    served = await serve(engine, () => ({ onEnd: () => ended.push(Date.now()) }));
  });
  afterAll(async () => {
    await served.close();
    await engine.close();
  });

  it('negotiates TLS 1.3 and relays both ways', async () => {
    const { c, r } = await connectPair(served, {
      servername: 'localhost',
      ALPNProtocols: ['imap'],
    });
    expect(r.info).toMatchObject({
      version: 'TLSv1.3',
      alpn: 'imap',
      serverName: 'localhost',
      clientIdentity: null,
    });
    expect(r.info.cipher).toMatch(/^TLS_AES_|^TLS_CHACHA20/);
    expect(r.controlKey).toHaveLength(16);
    expect(engine.sessionCount).toBe(1);
    const b = backend(r);
    c.socket.write('hello backend');
    expect(await nextData(b)).toBe('hello backend');
    b.write('hello client');
    expect(await nextData(c.socket)).toBe('hello client');
    c.socket.destroy();
    b.destroy();
    await until(() => engine.sessionCount === 0, 5000, 'session end');
  });

  it('TLS 1.2 with an ECDHE AEAD suite (IANA name)', async () => {
    const { c, r } = await connectPair(served, { maxVersion: 'TLSv1.2' });
    expect(r.info.version).toBe('TLSv1.2');
    expect(r.info.cipher).toMatch(/^TLS_ECDHE_(RSA|ECDSA)_WITH_(AES_\d+_GCM|CHACHA20_POLY1305)/);
    c.socket.destroy();
    r.plaintext.close();
  });

  it('refuses client-initiated renegotiation (TLS 1.2): the session ends', async () => {
    const { c, r } = await connectPair(served, { maxVersion: 'TLSv1.2' });
    const b = backend(r);
    b.resume();
    c.socket.renegotiate({}, () => {});
    // OpenSSL 3 servers refuse it unless SSL_OP_ALLOW_CLIENT_RENEGOTIATION; ctx.c also sets
    // SSL_OP_NO_RENEGOTIATION so a future default cannot turn it on.
    expect(String(await c.closed)).toMatch(/no renegotiation/);
    await until(() => engine.sessionCount === 0, 5000, 'session end');
    b.destroy();
  });

  it('refuses TLS 1.1 and a CBC-only TLS 1.2 client', async () => {
    const a = client(served.port, { maxVersion: 'TLSv1.1', minVersion: 'TLSv1' });
    await expect(served.next()).rejects.toMatchObject({ code: 'TLSPROXY_ERR_POOL_HANDSHAKE' });
    await expect(a.secure).rejects.toBeDefined();
    const b = client(served.port, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-AES128-SHA' });
    await expect(served.next()).rejects.toMatchObject({ code: 'TLSPROXY_ERR_POOL_HANDSHAKE' });
    await expect(b.secure).rejects.toBeDefined();
  });

  it("client's close_notify ends only the backend's read side; the backend still answers", async () => {
    const before = ended.length;
    const { c, r } = await connectPair(served, {}, true);
    const b = backend(r);
    const got = readAll(b);
    c.socket.end('last words');
    expect((await got).toString()).toBe('last words');
    const answer = readAll(c.socket);
    b.end('reply after your close');
    expect((await answer).toString()).toBe('reply after your close');
    await until(() => ended.length === before + 1, 5000, 'onEnd');
    expect(engine.sessionCount).toBe(0);
    b.destroy();
    c.socket.destroy();
  });

  it("backend's end becomes close_notify; the client can still send", async () => {
    const before = ended.length;
    const { c, r } = await connectPair(served, {}, true);
    const b = backend(r);
    const toClient = readAll(c.socket);
    b.end('bye from backend');
    expect((await toClient).toString()).toBe('bye from backend');
    const toBackend = readAll(b);
    c.socket.end('client still talking');
    expect((await toBackend).toString()).toBe('client still talking');
    await until(() => ended.length === before + 1, 5000, 'onEnd');
    b.destroy();
    c.socket.destroy();
  });

  it('onBytes: counts arrive while the session lives and add up exactly at its end', async () => {
    const counts = { in: 0, out: 0 };
    let ended = false;
    const s2 = await serve(engine, {
      onBytes: (d, n) => {
        counts[d] += n;
      },
      onEnd: () => {
        ended = true;
      },
    });
    try {
      const { c, r } = await connectPair(s2);
      const b = backend(r);
      b.resume();
      c.socket.resume();
      c.socket.write(Buffer.alloc(1000));
      b.write(Buffer.alloc(3000));
      await until(() => counts.in === 1000 && counts.out === 3000, 5000, 'live counts');
      expect(ended).toBe(false);
      c.socket.write(Buffer.alloc(5));
      c.socket.end();
      b.end();
      await until(() => ended, 5000, 'onEnd');
      expect(counts).toEqual({ in: 1005, out: 3000 });
      b.destroy();
      c.socket.destroy();
    } finally {
      await s2.close();
    }
  });

  it('takes a paused net.Socket as well as an OwnedFd', async () => {
    const s2 = await serve(engine, {}, 'socket');
    try {
      const { c, r } = await connectPair(s2);
      const b = backend(r);
      c.socket.write('x');
      expect(await nextData(b)).toBe('x');
      b.destroy();
      c.socket.destroy();
    } finally {
      await s2.close();
    }
  });
});

describe('NativeTlsEngine: certificate selection by SNI', () => {
  let engine: NativeTlsEngine;
  let served: Served;
  beforeAll(async () => {
    engine = new NativeTlsEngine({
      identities: [certs.server, { ...certs.other, default: true }],
      threads: 1,
    });
    served = await serve(engine);
  });
  afterAll(async () => {
    await served.close();
    await engine.close();
  });

  const cases: Array<[string, string | undefined, string]> = [
    ['exact name', 'imap.example.test', SERVER_FP],
    ['exact name, other identity', 'other.example.test', OTHER_FP],
    ['exact name, any case', 'IMAP.Example.TEST', SERVER_FP],
    ['one-label wildcard', 'mail.wild.example.test', SERVER_FP],
    ['wildcard does not cover two labels', 'a.b.wild.example.test', OTHER_FP],
    ['wildcard does not cover the bare domain', 'wild.example.test', OTHER_FP],
    ['unknown name → default', 'nobody.example.test', OTHER_FP],
    ['no SNI → default', undefined, OTHER_FP],
  ];
  for (const [title, sni, expectFp] of cases) {
    it(title, async () => {
      const { c, r } = await connectPair(served, sni ? { servername: sni } : {});
      expect(c.socket.getPeerX509Certificate()!.fingerprint256).toBe(expectFp);
      expect(r.info.serverName).toBe(sni ?? null);
      r.plaintext.close();
      c.socket.destroy();
    });
  }

  it('serverNames() lists every name', () => {
    expect(engine.serverNames()).toEqual(
      expect.arrayContaining(['imap.example.test', 'other.example.test']),
    );
  });
});

describe('NativeTlsEngine: bad peers end cleanly', () => {
  let engine: NativeTlsEngine;
  let served: Served;
  beforeAll(async () => {
    engine = new NativeTlsEngine({
      identities: [certs.server],
      threads: 2,
      handshakeTimeoutMs: 300,
    });
    served = await serve(engine);
  });
  afterAll(async () => {
    await served.close();
    await engine.close();
  });

  it('garbage instead of a ClientHello', async () => {
    const s = await raw(served.port);
    const closed = new Promise<void>((r) => s.on('close', () => r()));
    s.on('error', () => {});
    s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await expect(served.next()).rejects.toMatchObject({ code: 'TLSPROXY_ERR_POOL_HANDSHAKE' });
    await closed;
  });

  it('a client that vanishes mid-handshake', async () => {
    const s = await raw(served.port);
    // The first bytes of a TLS record carrying a ClientHello, then nothing more.
    s.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]));
    await new Promise((r) => setTimeout(r, 50));
    s.destroy();
    await expect(served.next()).rejects.toMatchObject({ code: 'TLSPROXY_ERR_POOL_HANDSHAKE' });
  });

  it('a client that says nothing hits the handshake timeout', async () => {
    const s = await raw(served.port);
    const closed = new Promise<void>((r) => s.on('close', () => r()));
    s.on('error', () => {});
    s.resume();
    const t0 = Date.now();
    await expect(served.next()).rejects.toMatchObject({ code: 'TLSPROXY_ERR_POOL_TIMEOUT' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    await closed;
  });

  it('no descriptor leaks after many connections, good and bad', async () => {
    // Warm up (lazy descriptors of the test runner and of libuv).
    for (let i = 0; i < 3; i++) {
      const { c, r } = await connectPair(served);
      r.plaintext.close();
      c.socket.destroy();
    }
    await until(() => engine.sessionCount === 0, 5000, 'sessions gone');
    await new Promise((r) => setTimeout(r, 100));
    const base = fdCount();
    for (let round = 0; round < 10; round++) {
      const work: Array<Promise<unknown>> = [];
      for (let i = 0; i < 10; i++) {
        work.push(
          (async () => {
            const { c, r } = await connectPair(served);
            const b = backend(r);
            c.socket.write('ping');
            await nextData(b);
            b.end();
            c.socket.end();
            await new Promise<void>((res) => c.socket.once('close', () => res()));
            b.destroy();
          })(),
        );
      }
      for (let i = 0; i < 3; i++) {
        work.push(
          (async () => {
            const s = await raw(served.port);
            s.on('error', () => {});
            s.write('\x16\x03\x01\x00\x05junk');
            await served.next().catch(() => {});
            s.destroy();
          })(),
        );
      }
      await Promise.all(work);
    }
    await until(() => engine.sessionCount === 0, 5000, 'sessions gone');
    await until(() => fdCount() <= base, 5000, `descriptors back to ${base}`);
    expect(fdCount()).toBe(base);
  }, 60_000);
});

describe('NativeTlsEngine: bulk data and backpressure', () => {
  const se = servedEngine({ identities: [certs.server], threads: 2 });

  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

  it('several records at once reach the client without waiting for the kernel (corked writes are uncorked)', async () => {
    const { c, r } = await connectPair(se.served);
    const b = backend(r);
    // 40 KiB: three records, written corked; a cork left on would hold the tail for the
    // kernel's 200 ms timer. The median of five round trips shrugs off a loaded machine.
    const size = 40 * 1024;
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      let got = 0;
      const t0 = performance.now();
      const all = new Promise<void>((resolve) => {
        const onData = (d: Buffer) => {
          got += d.length;
          if (got >= size) {
            c.socket.off('data', onData);
            resolve();
          }
        };
        c.socket.on('data', onData);
      });
      b.write(Buffer.alloc(size, 0x61));
      await all;
      delays.push(performance.now() - t0);
    }
    delays.sort((x, y) => x - y);
    expect(delays[2]).toBeLessThan(100);
    c.socket.destroy();
    b.destroy();
  });

  it('16 MiB each way intact, with a slow reader on each side', async () => {
    const { c, r } = await connectPair(se.served, {}, true);
    const b = backend(r);
    const up = randomBytes(16 << 20);
    const down = randomBytes(16 << 20);
    // Slow readers: pause often, so the engine has to stop reading the other side.
    const slow = (s: net.Socket) =>
      new Promise<Buffer>((resolve, reject) => {
        const chunks: Buffer[] = [];
        let n = 0;
        s.on('data', (d: Buffer) => {
          chunks.push(d);
          if (++n % 8 === 0) {
            s.pause();
            setTimeout(() => s.resume(), 5);
          }
        });
        s.once('end', () => resolve(Buffer.concat(chunks)));
        s.once('error', reject);
      });
    const gotUp = slow(b);
    const gotDown = slow(c.socket);
    c.socket.end(up);
    b.end(down);
    const [u, d] = await Promise.all([gotUp, gotDown]);
    expect(u.length).toBe(up.length);
    expect(sha(u)).toBe(sha(up));
    expect(d.length).toBe(down.length);
    expect(sha(d)).toBe(sha(down));
    b.destroy();
    c.socket.destroy();
  }, 60_000);

  it('a backend that never reads: the client is stopped, memory stays bounded', async () => {
    const { c, r } = await connectPair(se.served);
    const b = backend(r);
    b.pause();
    const rss0 = process.memoryUsage().rss;
    const chunk = Buffer.alloc(64 << 10, 1);
    let written = 0;
    // Write until the client's own socket reports it cannot take more for a while.
    while (written < 64 << 20) {
      if (!c.socket.write(chunk)) {
        const drained = await Promise.race([
          new Promise<boolean>((res) => c.socket.once('drain', () => res(true))),
          new Promise<boolean>((res) => setTimeout(() => res(false), 500)),
        ]);
        if (!drained) break;
      }
      written += chunk.length;
    }
    expect(written).toBeLessThan(64 << 20);
    // What did not move sits in kernel buffers, not in the engine.
    expect(process.memoryUsage().rss - rss0).toBeLessThan(32 << 20);
    b.destroy();
    c.socket.destroy();
  }, 30_000);

  it('a client that never reads: the backend is stopped, memory stays bounded', async () => {
    const { c, r } = await connectPair(se.served);
    const b = backend(r);
    c.socket.pause();
    const rss0 = process.memoryUsage().rss;
    const chunk = Buffer.alloc(64 << 10, 2);
    let written = 0;
    while (written < 64 << 20) {
      if (!b.write(chunk)) {
        const drained = await Promise.race([
          new Promise<boolean>((res) => b.once('drain', () => res(true))),
          new Promise<boolean>((res) => setTimeout(() => res(false), 500)),
        ]);
        if (!drained) break;
      }
      written += chunk.length;
    }
    expect(written).toBeLessThan(64 << 20);
    expect(process.memoryUsage().rss - rss0).toBeLessThan(32 << 20);
    // Once the client reads again, everything arrives.
    let got = 0;
    c.socket.on('data', (d: Buffer) => {
      got += d.length;
    });
    c.socket.resume();
    await until(() => got >= written, 20_000, 'client caught up');
    b.destroy();
    c.socket.destroy();
  }, 40_000);

  it('a client reset behind a backend that never reads ends the session at once (no idle timeout)', async () => {
    const rawSock = await raw(se.served.port);
    rawSock.on('error', () => {});
    const t = tls.connect({ socket: rawSock, ca: certs.ca, checkServerIdentity: () => undefined });
    t.on('error', () => {});
    const [r] = await Promise.all([
      se.served.next(),
      new Promise<void>((res) => t.once('secureConnect', () => res())),
    ]);
    // The backend holds its end and never reads: the relay stops reading the client.
    const chunk = Buffer.alloc(64 << 10, 'z');
    for (;;) {
      if (t.write(chunk)) continue;
      const drained = await Promise.race([
        new Promise<boolean>((res) => t.once('drain', () => res(true))),
        new Promise<boolean>((res) => setTimeout(() => res(false), 300)),
      ]);
      if (!drained) break;
    }
    expect(se.engine.sessionCount).toBe(1);
    const t0 = Date.now();
    rawSock.resetAndDestroy();
    await until(() => se.engine.sessionCount === 0, 5000, 'session end after the reset');
    expect(Date.now() - t0).toBeLessThan(2000);
    r.plaintext.close();
  });

  for (const [what, unread] of [
    ['delivered to it', 4096],
    ['still waiting at the engine', 8 << 20],
  ] as const) {
    it(`a backend that answers and closes with client input unread (${what}): the client gets all of the answer`, async () => {
      const { c, r } = await connectPair(se.served);
      const fd = r.plaintext;
      // The client is not reading, so the backend's answer waits at the engine and in the
      // kernel buffer of the engine's end…
      c.socket.pause();
      // …and the client sent input the backend never reads, so closing the backend's end resets
      // the engine's (ECONNRESET) while that answer is still queued there.
      c.socket.write(Buffer.alloc(unread, 'q'));
      await new Promise((res) => setTimeout(res, 100));
      // Counter bytes, so a lost or reordered piece shows; written until the engine's end is full.
      const pattern = (from: number, n: number) => {
        const b = Buffer.allocUnsafe(n);
        for (let i = 0; i < n; i++) b[i] = ((from + i) * 7) % 251;
        return b;
      };
      let sent = 0;
      for (let quiet = 0; quiet < 3; ) {
        const n = writeSync(fd.fd, pattern(sent, 64 << 10));
        sent += n;
        if (n < 64 << 10) {
          quiet++;
          await new Promise((res) => setTimeout(res, 100));
        } else quiet = 0;
      }
      fd.close();
      await new Promise((res) => setTimeout(res, 100));
      const got = readAll(c.socket);
      c.socket.resume();
      const all = await got;
      expect(all.length).toBe(sent);
      expect(all.equals(pattern(0, sent))).toBe(true);
      c.socket.destroy();
    }, 30_000);
  }
});

describe('NativeTlsEngine: control', () => {
  let engine: NativeTlsEngine;
  let served: Served;
  beforeAll(async () => {
    engine = new NativeTlsEngine({ identities: [certs.server], threads: 1 });
    served = await serve(engine);
  });
  afterAll(async () => {
    await served.close();
    await engine.close();
  });

  it('info, exporter (same bytes as the client derives), close, unknown key', async () => {
    const { c, r } = await connectPair(served, { servername: 'imap.example.test' });
    const info = (await engine.control(r.controlKey, 'info')) as { serverName: string };
    expect(info.serverName).toBe('imap.example.test');
    expect(await engine.control(r.controlKey.toString('hex'), 'info')).toEqual(info);

    const ctx = Buffer.from('ctx');
    const mine = await engine.control(r.controlKey, 'exporter', {
      label: 'EXPORTER-test',
      length: 32,
      context: ctx.toString('base64'),
    });
    expect(mine).toBe(c.socket.exportKeyingMaterial(32, 'EXPORTER-test', ctx).toString('base64'));
    await expect(engine.control(r.controlKey, 'exporter', { label: 'x' })).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_POOL_CONTROL',
    });

    const other = Buffer.from(r.controlKey);
    other[0]! ^= 1;
    await expect(engine.control(other, 'info')).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_POOL_UNKNOWN_KEY',
    });
    await expect(engine.control(Buffer.alloc(3), 'info')).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_POOL_UNKNOWN_KEY',
    });
    await expect(engine.control(r.controlKey, 'bogus' as unknown as 'info')).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_POOL_CONTROL',
    });

    // close: the client gets close_notify and EOF.
    const b = backend(r);
    const toClient = readAll(c.socket);
    expect(await engine.control(r.controlKey, 'close')).toBeNull();
    expect((await toClient).length).toBe(0);
    c.socket.end();
    await until(() => engine.sessionCount === 0, 5000, 'session end');
    await expect(engine.control(r.controlKey, 'info')).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_POOL_UNKNOWN_KEY',
    });
    b.destroy();
    c.socket.destroy();
  });
});

describe('NativeTlsEngine: a renegotiation cut short', () => {
  // Found while writing the fuzzer's check that every control call settles: a session that
  // ended while a renegotiation the backend asked for was pending never answered it (the
  // control call waited forever; 'still pending' here before the fix).
  it('the client resets while the renegotiation waits: control rejects at once', async () => {
    const engine = new NativeTlsEngine({
      identities: [certs.server],
      ca: certs.ca,
      threads: 1,
      handshakeTimeoutMs: 60_000,
    });
    const served = await serve(engine);
    try {
      // openssl s_client, then stopped (SIGSTOP): the HelloRequest is never answered; then
      // killed, so the kernel resets the connection (the HelloRequest is unread).
      const sc = spawn(
        'openssl',
        ['s_client', '-connect', `127.0.0.1:${served.port}`, '-tls1_2', '-quiet'],
        {
          stdio: ['pipe', 'ignore', 'ignore'],
        },
      );
      const r = await served.next();
      sc.kill('SIGSTOP');
      const reneg = engine.control(r.controlKey, 'renegotiate');
      reneg.catch(() => {});
      await new Promise((res) => setTimeout(res, 200));
      sc.kill('SIGKILL');
      await until(() => engine.sessionCount === 0, 5000, 'session end');
      const settled = await Promise.race([
        reneg.then(
          () => 'resolved',
          (err: { code?: string }) => err.code,
        ),
        new Promise((res) => setTimeout(() => res('still pending'), 3000)),
      ]);
      expect(settled).toBe('TLSPROXY_ERR_POOL_UNKNOWN_KEY');
      r.plaintext.close();
    } finally {
      await served.close();
      await engine.close();
    }
  });
});
