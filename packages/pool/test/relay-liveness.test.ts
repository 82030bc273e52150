// Issue 14, after the hand-off: a side paused by backpressure is still watched for a reset, and
// an optional idle timeout (idleTimeoutMs) ends relayed sessions nobody uses.
import net from 'node:net';
import tls from 'node:tls';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TlsEngine } from '../src/index.js';
import { certs, fdCount, nextData, type Served, serve, until } from './helpers.js';

/** A TLS client over a raw TCP socket we keep, so the test can reset it (RST, not FIN). */
async function rawClient(port: number): Promise<{ raw: net.Socket; t: tls.TLSSocket }> {
  const raw = net.connect(port, '127.0.0.1');
  await new Promise<void>((r) => raw.once('connect', () => r()));
  const t = tls.connect({ socket: raw, ca: certs.ca, checkServerIdentity: () => undefined });
  t.on('error', () => {});
  raw.on('error', () => {});
  await new Promise<void>((r) => t.once('secureConnect', () => r()));
  return { raw, t };
}

/** Write until the relay's buffers are full: the write stalls for `quietMs`. */
async function fill(
  s: { write(b: Buffer): boolean; once(e: 'drain', f: () => void): unknown },
  quietMs = 300,
) {
  const chunk = Buffer.alloc(64 * 1024, 'z');
  for (;;) {
    if (s.write(chunk)) continue;
    const drained = await Promise.race([
      new Promise<boolean>((r) => s.once('drain', () => r(true))),
      new Promise<boolean>((r) => setTimeout(() => r(false), quietMs)),
    ]);
    if (!drained) return;
  }
}

describe('relay: a reset is noticed while the other side is full', () => {
  let engine: TlsEngine;
  let served: Served;
  let ended = 0;
  beforeEach(async () => {
    ended = 0;
    // The idle timeout is the backstop for a reset the kernel only reports behind queued data.
    engine = new TlsEngine({ identities: [certs.server] });
    served = await serve(engine, () => ({
      idleTimeoutMs: 3000,
      onEnd: () => {
        ended++;
      },
    }));
  });
  afterEach(async () => {
    await served.close();
    await engine.close();
  });

  it('client resets while the backend never reads → session ends, descriptors released', {
    timeout: 20_000,
  }, async () => {
    const before = fdCount();
    const endedBefore = ended;
    const [r, c] = await Promise.all([served.next(), rawClient(served.port)]);
    // The backend holds its end and never reads it: the plaintext side fills up and the relay
    // stops reading the TLS side.
    const backendEnd = r.plaintext;
    await fill(c.t);
    expect(engine.sessionCount).toBe(1);
    const t0 = Date.now();
    c.raw.resetAndDestroy();
    await until(() => engine.sessionCount === 0, 8000, 'the session to end after the reset');
    // Seen by the probe of the paused side, well before the 3 s idle timeout.
    expect(Date.now() - t0).toBeLessThan(2500);
    expect(ended).toBe(endedBefore + 1);
    backendEnd.close();
    await until(() => fdCount() <= before, 3000, `fd count back to ${before} (${fdCount()})`);
  });

  it('backend resets while the client never reads → session ends', {
    timeout: 20_000,
  }, async () => {
    const before = fdCount();
    const endedBefore = ended;
    const [r, c] = await Promise.all([served.next(), rawClient(served.port)]);
    c.t.pause();
    const plain = r.plaintext.toSocket();
    plain.on('error', () => {});
    // The client sends something the backend never reads (so closing is a reset: ECONNRESET on
    // the engine's end) and never reads what the backend sends, which fills the TLS side; the
    // backend then goes away. What it wrote is still queued at the engine's end, so the kernel
    // reports the reset only behind it: without an idle timeout the session would wait for the
    // client to read. With one, it ends.
    c.t.write(Buffer.alloc(4096, 'q'));
    plain.pause();
    await fill(plain);
    expect(engine.sessionCount).toBe(1);
    plain.destroy();
    await until(() => engine.sessionCount === 0, 8000, 'the session to end after the reset');
    expect(ended).toBe(endedBefore + 1);
    c.raw.destroy();
    await until(() => fdCount() <= before, 3000, `fd count back to ${before} (${fdCount()})`);
  });

  it('backend resets with nothing queued while the client never reads → session ends', {
    timeout: 20_000,
  }, async () => {
    const endedBefore = ended;
    const [r, c] = await Promise.all([served.next(), rawClient(served.port)]);
    // The client fills the plaintext side (the backend does not read) and stops reading; the
    // backend then goes away with that input unread: a reset with nothing of its own queued.
    const backendEnd = r.plaintext;
    c.t.pause();
    await fill(c.t);
    backendEnd.close();
    await until(() => engine.sessionCount === 0, 8000, 'the session to end after the reset');
    expect(ended).toBe(endedBefore + 1);
    c.raw.destroy();
  });
});

describe('relay: idle timeout (idleTimeoutMs)', () => {
  it('closes an idle relayed session, both sides, and reports its end', {
    timeout: 20_000,
  }, async () => {
    const engine = new TlsEngine({ identities: [certs.server], idleTimeoutMs: 400 });
    let ended = 0;
    const reasons: unknown[] = [];
    const served = await serve(engine, () => ({
      onEnd: (_failure, reason) => {
        ended++;
        reasons.push(reason);
      },
    }));
    try {
      const before = fdCount();
      const [r, c] = await Promise.all([served.next(), rawClient(served.port)]);
      const plain = r.plaintext.toSocket();
      plain.on('error', () => {});
      const clientClosed = new Promise<void>((res) => c.t.once('close', () => res()));
      const plainClosed = new Promise<void>((res) => plain.once('close', () => res()));
      c.t.resume();
      plain.resume();
      const t0 = Date.now();
      await Promise.all([clientClosed, plainClosed]);
      const took = Date.now() - t0;
      expect(took).toBeGreaterThanOrEqual(300);
      expect(took).toBeLessThan(5000);
      await until(() => ended === 1, 2000, 'onEnd');
      // The caller's only way to know (and log) that the quiet ended it.
      expect(reasons).toEqual(['idle']);
      expect(engine.sessionCount).toBe(0);
      c.raw.destroy();
      await until(() => fdCount() <= before, 3000, `fd count back to ${before} (${fdCount()})`);
    } finally {
      await served.close();
      await engine.close();
    }
  });

  it('traffic either way resets the idle timer; the per-handshake value overrides', {
    timeout: 20_000,
  }, async () => {
    const engine = new TlsEngine({ identities: [certs.server], idleTimeoutMs: 60_000 });
    let ended = 0;
    const served = await serve(engine, () => ({ idleTimeoutMs: 600, onEnd: () => ended++ }));
    try {
      const [r, c] = await Promise.all([served.next(), rawClient(served.port)]);
      const plain = r.plaintext.toSocket();
      plain.on('error', () => {});
      // 2.4 s of traffic every 200 ms, alternating directions: four idle periods' worth.
      for (let i = 0; i < 12; i++) {
        await new Promise((res) => setTimeout(res, 200));
        if (i % 2 === 0) {
          const got = nextData(plain);
          c.t.write(`in ${i}`);
          expect(await got).toBe(`in ${i}`);
        } else {
          const got = nextData(c.t);
          plain.write(`out ${i}`);
          expect(await got).toBe(`out ${i}`);
        }
        expect(engine.sessionCount).toBe(1);
      }
      expect(ended).toBe(0);
      // Then silence: it ends.
      await until(() => engine.sessionCount === 0, 5000, 'the idle session to end');
      expect(ended).toBe(1);
      plain.destroy();
      c.raw.destroy();
    } finally {
      await served.close();
      await engine.close();
    }
  });

  it('is off by default: an idle session stays', async () => {
    const engine = new TlsEngine({ identities: [certs.server] });
    const served = await serve(engine);
    try {
      const [r, c] = await Promise.all([served.next(), rawClient(served.port)]);
      await new Promise((res) => setTimeout(res, 1000));
      expect(engine.sessionCount).toBe(1);
      r.plaintext.close();
      c.raw.destroy();
      await until(() => engine.sessionCount === 0, 3000, 'cleanup');
    } finally {
      await served.close();
      await engine.close();
    }
  });
});
