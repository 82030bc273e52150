// Early hand-off (HandshakeRequest.earlyHandoff): with TLS 1.3 and no client certificate asked
// for, handshake() resolves once the server's flight with its Finished is out, while the client
// finishes; nothing is relayed before the handshake completes, and a handshake that fails after
// the hand-off ends the session (the backend's end closes empty, onEnd gets the failure).
//
// A gate between the client and the engine holds the client's second flight (its Finished and
// whatever follows) until the test releases it — or corrupts it — so "before the client's
// Finished" is a state the test can stand in.
import net from 'node:net';
import type { HandshakeResult } from '@tlsproxy/pool';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NativeTlsEngine } from '../src/index.js';
import { certs, client, fdCount, nextData, type Served, serve, until } from './helpers.js';

interface Gate {
  port: number;
  /** Let the held bytes (and everything after them) through. */
  release(corrupt?: boolean): void;
  /** Bytes held back so far. */
  held(): number;
  close(): Promise<void>;
}

/** A TCP gate to `target`: forwards the client's first TLS record (its ClientHello), then holds
 * what the client sends until released; the server's bytes always pass. One connection. */
async function gate(target: number): Promise<Gate> {
  let hold: Buffer[] = [];
  let open = false;
  let up: net.Socket | undefined;
  let corruptNext = false;
  const server = net.createServer((down) => {
    up = net.connect(target, '127.0.0.1');
    up.on('error', () => down.destroy());
    down.on('error', () => up?.destroy());
    up.pipe(down);
    let first = Buffer.alloc(0);
    let forwarded = false;
    down.on('data', (d: Buffer) => {
      if (!forwarded) {
        first = Buffer.concat([first, d]);
        if (first.length < 5) return;
        const end = 5 + first.readUInt16BE(3);
        if (first.length < end) return;
        up?.write(first.subarray(0, end));
        forwarded = true;
        d = first.subarray(end);
        if (d.length === 0) return;
      }
      if (open) up?.write(d);
      else hold.push(d);
    });
    down.on('end', () => {
      if (open) up?.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    release(corrupt = false) {
      corruptNext = corrupt;
      open = true;
      let data = Buffer.concat(hold);
      hold = [];
      if (corruptNext && data.length > 0) {
        // The last byte of the first record after the ChangeCipherSpec: the client's Finished
        // (its AEAD tag), so the engine cannot decrypt it.
        data = Buffer.from(data);
        let at = 0;
        if (data[0] === 20) at = 5 + data.readUInt16BE(3);
        const end = at + 5 + data.readUInt16BE(at + 3);
        data[end - 1] = (data[end - 1] as number) ^ 0xff;
      }
      up?.write(data);
    },
    held: () => hold.reduce((n, b) => n + b.length, 0),
    close: () =>
      new Promise<void>((r) => {
        up?.destroy();
        server.close(() => r());
      }),
  };
}

/** Resolves with the result, or with 'pending' if it has not come within `ms`. */
function within(p: Promise<HandshakeResult>, ms: number): Promise<HandshakeResult | 'pending'> {
  return Promise.race([p, new Promise<'pending'>((r) => setTimeout(() => r('pending'), ms))]);
}

/** Whatever the stream gets within `ms` ('' if nothing), and whether it ended. */
function quiet(s: net.Socket, ms: number): Promise<{ data: string; ended: boolean }> {
  return new Promise((resolve) => {
    let data = '';
    let ended = false;
    s.on('data', (d: Buffer) => {
      data += d.toString('latin1');
    });
    s.once('end', () => {
      ended = true;
    });
    setTimeout(() => resolve({ data, ended }), ms);
  });
}

describe('early hand-off (native engine)', () => {
  let engine: NativeTlsEngine;
  let served: Served;
  let request: Record<string, unknown> = {};
  const ends: Array<Error | undefined> = [];
  beforeAll(async () => {
    engine = new NativeTlsEngine({ identities: [certs.server], ca: certs.ca, threads: 1 });
    served = await serve(engine, () => ({
      ...request,
      onEnd: (failure?: Error) => ends.push(failure),
    }));
  });
  afterAll(async () => {
    await served.close();
    await engine.close();
  });

  it('TLS 1.3: resolves before the client’s Finished; relays only after it', async () => {
    request = { earlyHandoff: true };
    const g = await gate(served.port);
    const c = client(g.port, { servername: 'localhost' });
    await c.secure; // the client is done: its Finished waits in the gate
    await until(() => g.held() > 0, 2000, 'the client’s Finished held');
    c.socket.write('after finished');
    const r = await within(served.next(), 2000);
    expect(r).not.toBe('pending');
    const result = r as HandshakeResult;
    expect(result.info).toMatchObject({ version: 'TLSv1.3', serverName: 'localhost' });
    const b = result.plaintext.toSocket({ allowHalfOpen: true });
    // Nothing reaches the backend while the handshake is not complete.
    expect((await quiet(b, 200)).data).toBe('');
    // The exporter is already the client's (RFC 8446 §7.5: up to the server's Finished).
    const mine = await engine.control(result.controlKey, 'exporter', {
      label: 'EXPERIMENTAL-early',
      length: 32,
    });
    expect(mine).toBe(
      c.socket.exportKeyingMaterial(32, 'EXPERIMENTAL-early', Buffer.alloc(0)).toString('base64'),
    );
    // The handshake is not complete yet: `completed` waits for the client's Finished.
    expect(result.completed).toBeInstanceOf(Promise);
    let done = false;
    void result.completed?.then(() => {
      done = true;
    });
    await new Promise((r) => setTimeout(r, 100));
    expect(done).toBe(false);
    const got = nextData(b);
    g.release();
    expect(await got).toBe('after finished');
    await result.completed;
    b.write('to the client');
    expect(await nextData(c.socket)).toBe('to the client');
    c.socket.destroy();
    b.destroy();
    await g.close();
  });

  it('without earlyHandoff it resolves only after the client’s Finished', async () => {
    request = {};
    const g = await gate(served.port);
    const c = client(g.port, { servername: 'localhost' });
    await c.secure;
    await until(() => g.held() > 0, 2000, 'the client’s Finished held');
    const p = served.next();
    expect(await within(p, 400)).toBe('pending');
    g.release();
    const r = await p;
    expect(r.info.version).toBe('TLSv1.3');
    expect(r.completed).toBeUndefined(); // handed out at the end: nothing to wait for
    r.plaintext.close();
    c.socket.destroy();
    await g.close();
  });

  it('not early when a client certificate is asked for, nor with TLS 1.2', async () => {
    for (const [req, opts] of [
      [{ earlyHandoff: true, clientCert: 'optional' }, {}],
      [{ earlyHandoff: true }, { maxVersion: 'TLSv1.2' as const }],
    ] as const) {
      request = req;
      const g = await gate(served.port);
      const c = client(g.port, { servername: 'localhost', ...opts });
      // (A TLS 1.2 client is secure only after our Finished, which follows its own: wait for
      // its flight in the gate instead.)
      await until(() => g.held() > 0, 2000, 'the client’s flight held');
      const p = served.next();
      expect(await within(p, 400)).toBe('pending');
      g.release();
      (await p).plaintext.close();
      c.socket.destroy();
      await g.close();
    }
  });

  it('a handshake that fails after the hand-off ends the session: backend end closed empty, onEnd with the failure, nothing leaks', async () => {
    request = { earlyHandoff: true };
    const before = fdCount();
    const g = await gate(served.port);
    const c = client(g.port, { servername: 'localhost' });
    await c.secure;
    await until(() => g.held() > 0, 2000, 'the client’s Finished held');
    c.socket.write('never relayed');
    const r = (await within(served.next(), 2000)) as HandshakeResult;
    expect(r).not.toBe('pending');
    const b = r.plaintext.toSocket({ allowHalfOpen: true });
    const seen = quiet(b, 1000);
    const completion = r.completed?.then(
      () => 'completed',
      (err: { code?: string }) => err.code,
    );
    g.release(true);
    expect(await completion).toBe('TLSPROXY_ERR_POOL_HANDSHAKE');
    const { data, ended } = await seen;
    expect(data).toBe('');
    expect(ended).toBe(true);
    // (Earlier tests' sessions may report their ends late: only the failure is this one's.)
    await until(() => ends.some((f) => f !== undefined), 3000, 'onEnd with the failure');
    expect(ends.find((f) => f !== undefined)).toMatchObject({
      code: 'TLSPROXY_ERR_POOL_HANDSHAKE',
    });
    await until(() => engine.sessionCount === 0, 3000, 'no session left');
    // The control key is forgotten with the session.
    await expect(engine.control(r.controlKey, 'info')).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_POOL_UNKNOWN_KEY',
    });
    b.destroy();
    c.socket.destroy();
    await g.close();
    await until(() => fdCount() <= before, 3000, 'descriptors back');
  });
});
