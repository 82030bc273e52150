// Issue 14, the tlspool daemon on a real socket: it tells the proxy when a session ends (so the
// proxy's control-key map does not grow), answers keys of ended sessions without holding them
// against the channel, counts genuinely unknown keys with a decaying allowance — per requester
// when the proxy names one — and a message type or control op named like an Object.prototype
// property selects nothing.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, detachSocket, encode, listen, type Peer, socketpair } from '@tlsproxy/fdpass';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type HandshakeRequest,
  type HandshakeResult,
  PoolDaemon,
  poolProtocol,
  RemoteTlsEngine,
  TlsEngine,
} from '../src/index.js';
import { certs, client, nextData, type Served, serve, until } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'tlspool-sessions-'));
const sock = join(dir, 'pool.sock');
let engine: TlsEngine;
let daemon: PoolDaemon;
let remote: RemoteTlsEngine;
let served: Served;
let request: HandshakeRequest = {};
const warnings: string[] = [];

beforeAll(async () => {
  engine = new TlsEngine({ identities: [certs.server] });
  daemon = new PoolDaemon(engine, {
    path: sock,
    log: (_level, message) => warnings.push(message),
    // Small numbers so the decay can be seen within a test.
    unknownKeyBurst: 8,
    unknownKeyRefillMs: 200,
  });
  remote = new RemoteTlsEngine({ socket: sock });
  served = await serve(remote as unknown as TlsEngine, () => request);
});
afterAll(async () => {
  await served.close();
  await remote.close();
  await daemon.close();
  rmSync(dir, { recursive: true, force: true });
});

async function session(
  req: HandshakeRequest = {},
): Promise<{ c: ReturnType<typeof client>; r: HandshakeResult }> {
  request = req;
  const c = client(served.port);
  c.socket.on('error', () => {});
  const [r] = await Promise.all([served.next(), c.secure]);
  return { c, r };
}

/** A channel of our own to the daemon, as a backend or a second proxy would open. */
async function channel(): Promise<Peer> {
  const ch = await connect({ path: sock }, { timeoutMs: 2000 });
  const peer = poolProtocol.attach(ch);
  await peer.ready;
  return peer;
}

async function control(
  peer: Peer,
  key: string,
  op: string,
  args: Record<string, unknown> = {},
): Promise<{ ok: unknown } | { code: unknown; message: string }> {
  try {
    const r = await peer.request('control', { key, op, args }, { timeoutMs: 3000 });
    return { ok: r.body.result };
  } catch (err) {
    return {
      code: (err as { remoteCode?: unknown }).remoteCode,
      message: (err as Error).message,
    };
  }
}

const randomKey = () => Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString('hex');

describe('tlspool: session ends reach the proxy', () => {
  it('RemoteTlsEngine calls onEnd when the daemon says the session ended', async () => {
    let ended = 0;
    const reasons: unknown[] = [];
    const { c, r } = await session({
      onEnd: (_failure, reason) => {
        ended++;
        reasons.push(reason);
      },
    });
    const plain = r.plaintext.toSocket();
    const got = nextData(plain);
    c.socket.write('ping');
    expect(await got).toBe('ping');
    expect(ended).toBe(0);
    plain.destroy();
    await c.closed;
    await until(() => ended === 1, 3000, 'onEnd over the daemon');
    await new Promise((res) => setTimeout(res, 100));
    expect(ended).toBe(1);
    expect(reasons).toEqual([undefined]); // closed by a side: no news
  });

  it("the daemon's idle timeout reaches the proxy as the session end's reason", async () => {
    const reasons: unknown[] = [];
    const { c, r } = await session({
      idleTimeoutMs: 300,
      onEnd: (_failure, reason) => reasons.push(reason),
    });
    c.socket.resume();
    const plain = r.plaintext.toSocket();
    plain.on('error', () => {});
    plain.resume();
    await c.closed;
    await until(() => reasons.length === 1, 3000, 'onEnd over the daemon');
    expect(reasons).toEqual(['idle']);
    plain.destroy();
  });

  it('a session ended by control close is reported too', async () => {
    let ended = 0;
    const { c, r } = await session({ onEnd: () => ended++ });
    c.socket.resume();
    await remote.control(r.controlKey, 'close');
    await until(() => ended === 1, 3000, 'onEnd after control close');
    r.plaintext.close();
    await c.closed;
  });
});

describe('tlspool: unknown control keys', () => {
  it('keys of ended sessions are answered "the connection has ended" and never close the channel', async () => {
    const peer = await channel();
    try {
      const { c, r } = await session();
      const key = r.controlKey.toString('hex');
      expect(await control(peer, key, 'info')).toHaveProperty('ok');
      r.plaintext.close();
      c.socket.resume();
      await c.closed;
      await until(() => engine.sessionCount === 0, 3000, 'the session to end');
      // A backend racing the close, many times over: far more than any allowance.
      for (let i = 0; i < 40; i++) {
        const a = await control(peer, key, 'info');
        expect(a).toMatchObject({ code: 'TLSPROXY_ERR_POOL_UNKNOWN_KEY' });
        expect((a as { message: string }).message).toContain('the connection has ended');
      }
      expect(peer.closed).toBe(false);
    } finally {
      peer.close();
    }
  });

  it('genuinely unknown keys: a burst closes a channel without a requester; the allowance decays back', {
    timeout: 20_000,
  }, async () => {
    const peer = await channel();
    try {
      // Within the burst: answered, channel open. After a pause the allowance is back.
      for (let round = 0; round < 3; round++) {
        for (let i = 0; i < 6; i++) {
          expect(await control(peer, randomKey(), 'info')).toMatchObject({
            code: 'TLSPROXY_ERR_POOL_UNKNOWN_KEY',
          });
        }
        expect(peer.closed).toBe(false);
        await new Promise((res) => setTimeout(res, 6 * 200 + 200));
      }
      // Beyond the burst at once: the channel is closed.
      for (let i = 0; i < 12 && !peer.closed; i++) await control(peer, randomKey(), 'info');
      await until(() => peer.closed, 2000, 'the channel to close');
    } finally {
      peer.close();
    }
  });

  it('with a requester: only the guessing requester is refused, the channel and others go on', {
    timeout: 20_000,
  }, async () => {
    const peer = await channel();
    try {
      const { c, r } = await session();
      const key = r.controlKey.toString('hex');
      for (let i = 0; i < 30; i++) {
        const a = await control(peer, randomKey(), 'info', { requester: 'backend-a' });
        expect(a).toHaveProperty('code');
      }
      expect(peer.closed).toBe(false);
      // backend-a is refused now, even with a good key…
      expect(await control(peer, key, 'info', { requester: 'backend-a' })).toMatchObject({
        code: 'TLSPROXY_ERR_POOL_REQUESTER_REFUSED',
      });
      // …while backend-b and the proxy itself are served on the same channel.
      expect(await control(peer, key, 'info', { requester: 'backend-b' })).toMatchObject({
        ok: { version: 'TLSv1.3' },
      });
      expect(await control(peer, key, 'info')).toMatchObject({ ok: { version: 'TLSv1.3' } });
      // The requester field is the daemon's, not an argument of the operation.
      expect(
        await control(peer, key, 'exporter', { label: 'x', length: 8, requester: 'backend-b' }),
      ).toHaveProperty('ok');
      r.plaintext.close();
      c.socket.resume();
      await c.closed;
    } finally {
      peer.close();
    }
  });
});

describe('tlspool: names from Object.prototype select nothing', () => {
  const names = Object.getOwnPropertyNames(Object.prototype);

  it('message types: an error answer, the daemon and the channel live on', async () => {
    const peer = await channel();
    try {
      for (const t of names.slice(0, 12)) {
        const answer = new Promise<unknown>((res) => {
          const on = (m: { re?: number; body: Record<string, unknown> }) => res(m);
          peer.once('remoteError', on as never);
          setTimeout(() => res('none'), 1000);
        });
        // Raw: Peer.send would refuse a type outside the protocol.
        peer.channel.send(encode(t, {}, { id: 1 }), [], () => {});
        await answer;
      }
      expect(peer.closed).toBe(false);
      const r = await peer.request('server-names', {}, { timeoutMs: 2000 });
      expect(r.type).toBe('names');
    } finally {
      peer.close();
    }
  });

  it('control ops: TLSPROXY_ERR_POOL_CONTROL for a live key', async () => {
    const peer = await channel();
    try {
      const { c, r } = await session();
      const key = r.controlKey.toString('hex');
      for (const op of names) {
        expect(await control(peer, key, op)).toMatchObject({ code: 'TLSPROXY_ERR_POOL_CONTROL' });
      }
      expect(peer.closed).toBe(false);
      r.plaintext.close();
      c.socket.resume();
      await c.closed;
    } finally {
      peer.close();
    }
  });
});

describe('tlspool: handshake request fields are checked', () => {
  it('a malformed request is refused with a clean error; its descriptor is closed', {
    timeout: 20_000,
  }, async () => {
    const peer = await channel();
    const server = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
    const port = (server.address() as { port: number }).port;
    try {
      for (const bad of [
        { alpn: 'imap' },
        { alpn: [1, 2] },
        { alpn: { length: 3 } },
        { clientCert: 'constructor' },
        { handshakeTimeoutMs: -1 },
        { handshakeTimeoutMs: 1e12 },
        { idleTimeoutMs: 'never' },
        { connectionId: { toString: 1 } },
        { earlyHandoff: 'yes' },
        { promptCompletion: 1 },
      ]) {
        const accepted = new Promise<net.Socket>((res) => server.once('connection', res));
        const c = net.connect(port, '127.0.0.1');
        c.on('error', () => {});
        const closed = new Promise<void>((res) => c.once('close', () => res()));
        const { fd } = detachSocket(await accepted);
        const answer = await peer
          .request('handshake', { request: bad }, { fds: [fd], timeoutMs: 3000 })
          .then(
            () => 'established',
            (err: { remoteCode?: string }) => err.remoteCode,
          );
        expect(answer, JSON.stringify(bad)).toBe('TLSPROXY_ERR_POOL_CONFIG');
        c.write('x');
        await Promise.race([
          closed,
          new Promise((_, rej) =>
            setTimeout(() => rej(new Error(`${JSON.stringify(bad)}: never closed`)), 3000),
          ),
        ]);
      }
      expect(peer.closed).toBe(false);
      expect(engine.sessionCount).toBe(0);
    } finally {
      peer.close();
      server.close();
    }
  });
});

describe('RemoteTlsEngine: onEnd when the daemon cannot report it', () => {
  /** A stand-in daemon that establishes every handshake at once, with or without sessionEnd. */
  async function fakeDaemon(sessionEnd: boolean) {
    const path = join(dir, `fake-${sessionEnd}.sock`);
    const server = listen({ path, mode: 0o600 });
    const peers: Peer[] = [];
    server.on('connection', (ch) => {
      const p = poolProtocol.attach(ch);
      peers.push(p);
      p.on('message', (m) => {
        for (const f of m.fds) f.close();
        if (m.type !== 'handshake') return;
        const [a, b] = socketpair();
        a.close();
        p.reply(
          m,
          'established',
          {
            info: { version: 'TLSv1.3', cipher: 'x', alpn: null, serverName: null },
            key: '00'.repeat(16),
            ...(sessionEnd ? { sessionEnd: true } : {}),
          },
          { fds: [b] },
        );
      });
    });
    return {
      path,
      dropChannels: () => {
        for (const p of peers) p.close();
      },
      close: () => server.close(),
    };
  }

  for (const sessionEnd of [true, false]) {
    it(`a lost channel ${sessionEnd ? 'reports its sessions ended' : 'reports nothing for a daemon that never sends session-end'}`, async () => {
      const fake = await fakeDaemon(sessionEnd);
      const engine = new RemoteTlsEngine({ socket: fake.path });
      try {
        const [x] = socketpair();
        let ended = 0;
        const r = await engine.handshake(x, { onEnd: () => ended++ });
        r.plaintext.close();
        fake.dropChannels();
        await new Promise((res) => setTimeout(res, 300));
        expect(ended).toBe(sessionEnd ? 1 : 0);
      } finally {
        await engine.close();
        fake.close();
      }
    });
  }
});

describe('tlspool: sessions handed out early (earlyHandoff)', () => {
  /** An engine that hands out at once with a `completed` that settles 50 ms later — resolved,
   * or rejected with onEnd(failure) as the native engine does for a client that refuses our
   * certificate after the early hand-off. */
  function fakeEngine(fail: boolean, seen: HandshakeRequest[]) {
    return {
      async handshake(fd: { close(): void }, req: HandshakeRequest = {}) {
        seen.push(req);
        fd.close();
        const [a, b] = socketpair();
        a.close();
        const completed = new Promise<void>((resolve, reject) =>
          setTimeout(() => {
            if (!fail) return resolve();
            reject(new Error('tlsv1 alert unknown ca'));
            req.onEnd?.(new Error('tlsv1 alert unknown ca'));
          }, 50),
        );
        completed.catch(() => {});
        return {
          plaintext: b,
          controlKey: Buffer.alloc(16, 7),
          info: {
            version: 'TLSv1.3',
            cipher: 'x',
            alpn: null,
            serverName: null,
            clientIdentity: null,
          },
          completed,
        };
      },
      async control() {
        return null;
      },
      async close() {},
    };
  }

  for (const fail of [false, true]) {
    it(
      fail
        ? 'a failure after the hand-off comes back with session-end: completed rejects, onEnd gets why'
        : 'the daemon passes earlyHandoff and promptCompletion on; handshake-complete resolves completed',
      async () => {
        const path = join(dir, `early-${fail}.sock`);
        const seen: HandshakeRequest[] = [];
        const d = new PoolDaemon(fakeEngine(fail, seen) as unknown as TlsEngine, {
          path,
          log: () => {},
        });
        const remote = new RemoteTlsEngine({ socket: path });
        try {
          const [x] = socketpair();
          const failures: Array<Error | undefined> = [];
          const r = await remote.handshake(x, {
            earlyHandoff: true,
            promptCompletion: true,
            onEnd: (failure) => failures.push(failure),
          });
          r.plaintext.close();
          expect(seen[0]?.earlyHandoff).toBe(true);
          expect(seen[0]?.promptCompletion).toBe(true);
          const outcome = await r.completed?.then(
            () => 'completed',
            (err: Error) => err.message,
          );
          if (!fail) {
            expect(outcome).toBe('completed');
            expect(failures).toEqual([]);
            return;
          }
          expect(outcome).toBe('tlsv1 alert unknown ca');
          await until(() => failures.length === 1, 3000, 'onEnd');
          expect(failures[0]).toMatchObject({
            code: 'TLSPROXY_ERR_POOL_HANDSHAKE',
            message: 'tlsv1 alert unknown ca',
          });
        } finally {
          await remote.close();
          await d.close();
        }
      },
    );
  }
});
