// connectStartTls against real servers on loopback: the toy STARTTLS protocol of ./toy.ts (a
// client dialect written for the tests and a node:tls server behind a plaintext preamble), with
// the embedded engine and through a tlspool daemon (RemoteTlsEngine).
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { defineDialect } from '@tlsproxy/dialect-kit';
import {
  type DaemonEngine,
  PoolDaemon,
  PoolError,
  RemoteTlsEngine,
  TlsEngine,
} from '@tlsproxy/pool';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ClientError,
  type ConnectStartTlsOptions,
  connectStartTls,
  connectStartTlsFd,
} from '../src/index.js';
import { newEngine, viaEngine } from './engine.js';
import { certs, type ToyServer, toy, toyServer } from './toy.js';

const fdCount = () => readdirSync('/proc/self/fd').length;

async function until(cond: () => boolean, ms = 3000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The next chunk of data on a stream. */
const nextData = (s: net.Socket) =>
  new Promise<string>((resolve) => s.once('data', (d: Buffer) => resolve(d.toString('utf8'))));

/** Read until `text` has been seen (data may come in any chunking). */
function readUntil(s: net.Socket, text: string): Promise<string> {
  return new Promise((resolve) => {
    let buf = '';
    const on = (d: Buffer) => {
      buf += d.toString('utf8');
      if (buf.includes(text)) {
        s.off('data', on);
        resolve(buf);
      }
    };
    s.on('data', on);
  });
}

async function rejection<E extends Error>(p: Promise<unknown>): Promise<E> {
  return p.then(
    () => {
      throw new Error('connectStartTls succeeded but should have failed');
    },
    (e: E) => e,
  );
}

const base = (port: number): ConnectStartTlsOptions => ({
  ...viaEngine,
  dialect: toy,
  host: '127.0.0.1',
  port,
  serverName: 'localhost',
  ca: certs.ca,
});

describe('connectStartTls with the embedded engine', () => {
  let server: ToyServer;
  beforeAll(async () => {
    server = await toyServer();
  });
  afterAll(() => server.close());

  it('preamble, verified TLS, the greeting first, then the server inside TLS', async () => {
    const r = await connectStartTls(base(server.port));
    expect(r.encrypted).toBe(true);
    expect(r.info.serverName).toBe('localhost');
    expect(r.info.serverIdentity.san.dns).toContain('localhost');
    expect(r.info.version).toMatch(/^TLSv1\.[23]$/);
    expect(r.state).toEqual({ greeting: '+GO' });
    expect(await readUntil(r.socket, 'welcome\n')).toBe('+READY toy STARTTLS\r\nwelcome\n');
    r.socket.write('hi there\n');
    expect(await nextData(r.socket)).toBe('HI THERE\n');
    expect(server.log.at(-1)!.pre).toBe('STARTTLS\r\n');
    expect(server.log.at(-1)!.inside).toBe('hi there\n');
    const info = (await r.engine.control(r.controlKey, 'info')) as typeof r.info;
    expect(info.serverIdentity.fingerprint256).toBe(r.info.serverIdentity.fingerprint256);
    r.socket.destroy();
  });

  it('serverName defaults to the host: an IP address is checked against the IP SANs', async () => {
    const { serverName: _none, ...rest } = base(server.port);
    const r = await connectStartTls(rest);
    expect(r.info.serverName).toBe('127.0.0.1');
    r.socket.destroy();
  });

  it('the fd form: the plaintext end and the dialect’s prefix apart', async () => {
    const r = await connectStartTlsFd(base(server.port));
    expect(r.toLocal.toString()).toBe('+READY toy STARTTLS\r\n');
    const s = new net.Socket({ fd: r.fd.take(), readable: true, writable: true });
    expect(await nextData(s)).toBe('welcome\n');
    s.destroy();
  });

  it('a wrong CA fails closed with the engine’s TLSPROXY_ERR_POOL_VERIFY (unknown-ca)', async () => {
    const err = await rejection<PoolError>(
      connectStartTls({ ...base(server.port), ca: certs.rogue.cert }),
    );
    expect(err).toBeInstanceOf(PoolError);
    expect([err.code, err.reason]).toEqual(['TLSPROXY_ERR_POOL_VERIFY', 'unknown-ca']);
  });

  it('a wrong name fails closed (name-mismatch)', async () => {
    const err = await rejection<PoolError>(
      connectStartTls({ ...base(server.port), serverName: 'mail.example.org' }),
    );
    expect([err.code, err.reason]).toEqual(['TLSPROXY_ERR_POOL_VERIFY', 'name-mismatch']);
  });

  it("without ca, Node's roots: the test CA is not among them", async () => {
    const { ca: _none, ...rest } = base(server.port);
    const err = await rejection<PoolError>(connectStartTls(rest));
    expect(err.reason).toBe('unknown-ca');
  });
});

describe('connectStartTls: no TLS, no connection', () => {
  it('STARTTLS not offered: TLSPROXY_ERR_CLIENT_REFUSED with the reason; QUIT was sent', async () => {
    const server = await toyServer({ offer: false });
    try {
      const err = await rejection<ClientError>(connectStartTls(base(server.port)));
      expect(err).toBeInstanceOf(ClientError);
      expect(err.code).toBe('TLSPROXY_ERR_CLIENT_REFUSED');
      expect(err.reason).toBe('STARTTLS not offered');
      expect(Buffer.from(err.toLocal!).toString()).toBe('-ERR no TLS\r\n');
      await until(() => server.log.at(-1)!.pre === 'QUIT\r\n', 3000, 'QUIT');
    } finally {
      await server.close();
    }
  });

  it('refused, and bytes after the go-ahead (response injection): no TLS', async () => {
    const refused = await toyServer({ answer: '-NO' });
    const injected = await toyServer({
      inject: '* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] forged\r\n',
    });
    try {
      const a = await rejection<ClientError>(connectStartTls(base(refused.port)));
      expect([a.code, a.reason]).toEqual(['TLSPROXY_ERR_CLIENT_REFUSED', 'refused: -NO not now']);
      const b = await rejection<ClientError>(connectStartTls(base(injected.port)));
      expect([b.code, b.reason]).toEqual([
        'TLSPROXY_ERR_CLIENT_REFUSED',
        'bytes after the go-ahead',
      ]);
      // No ClientHello went out: the server saw only STARTTLS and QUIT.
      expect(injected.log.at(-1)!.inside).toBe('');
    } finally {
      await refused.close();
      await injected.close();
    }
  });

  it('the plaintext fallback only when asked for, and then said so', async () => {
    const server = await toyServer({ offer: false });
    try {
      const options = { ...base(server.port), options: { plaintextOk: true } };
      const err = await rejection<ClientError>(connectStartTls(options));
      expect(err.code).toBe('TLSPROXY_ERR_CLIENT_PLAINTEXT');
      const r = await connectStartTls({ ...options, allowPlaintext: true });
      expect(r.encrypted).toBe(false);
      expect(r.info).toBeNull();
      expect(await nextData(r.socket)).toBe('+READY toy\r\n');
      r.socket.destroy();
    } finally {
      await server.close();
    }
  });

  it('a mute server: TLSPROXY_ERR_CLIENT_TIMEOUT; a server silent after +GO: the handshake timeout', async () => {
    const mute = await toyServer({ mute: true });
    const silent = await toyServer({ answer: 'silent' });
    const stuck = await toyServer();
    try {
      const a = await rejection<ClientError>(
        connectStartTls({ ...base(mute.port), timeoutMs: 300 }),
      );
      expect(a.code).toBe('TLSPROXY_ERR_CLIENT_TIMEOUT');
      // The dialect's own timer (its replyTimeoutMs limit) closes first when it is shorter.
      const b = await rejection<ClientError>(
        connectStartTls({ ...base(silent.port), limits: { replyTimeoutMs: 200 } }),
      );
      expect([b.code, b.reason]).toEqual(['TLSPROXY_ERR_CLIENT_REFUSED', 'timeout']);
      // A server that gives the go-ahead and then never answers the ClientHello.
      const hang = net.createServer((s) => {
        s.on('error', () => {});
        s.write('+READY STARTTLS\r\n');
        s.on('data', (d) => {
          if (d.toString().includes('STARTTLS')) s.write('+GO\r\n');
        });
      });
      await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
      try {
        const c = await rejection<PoolError>(
          connectStartTls({
            ...base((hang.address() as net.AddressInfo).port),
            handshakeTimeoutMs: 300,
          }),
        );
        expect(c.code).toBe('TLSPROXY_ERR_POOL_TIMEOUT');
      } finally {
        hang.close();
      }
    } finally {
      await mute.close();
      await silent.close();
      await stuck.close();
    }
  });

  it('a server that hangs up on the ClientHello: the engine’s TLSPROXY_ERR_POOL_HANDSHAKE', async () => {
    const rude = net.createServer((s) => {
      s.on('error', () => {});
      s.write('+READY STARTTLS\r\n');
      s.on('data', (d) => {
        if (d.toString() === 'STARTTLS\r\n') s.write('+GO\r\n');
        else s.end();
      });
    });
    await new Promise<void>((r) => rude.listen(0, '127.0.0.1', r));
    try {
      const err = await rejection<PoolError>(
        connectStartTls(base((rude.address() as net.AddressInfo).port)),
      );
      expect(err.code).toBe('TLSPROXY_ERR_POOL_HANDSHAKE');
    } finally {
      rude.close();
    }
  });

  it('what the dialect wrote reaches the server before TLS, however much it was', async () => {
    // A dialect that sends 4 MiB and asks for TLS at once (more than the socket takes at
    // once): the writes must be flushed before the descriptor goes to the engine.
    const size = 4 * 1024 * 1024;
    const bulky = defineDialect({
      ...toy,
      client: {
        options: {},
        limits: {},
        create: () => ({
          start: () => [
            { type: 'send', data: new Uint8Array(size).fill(0x61) },
            { type: 'starttls', toLocal: new Uint8Array(0), state: {} },
          ],
          receive: () => [],
          timer: () => [],
        }),
      },
    });
    let got = 0;
    const sink = net.createServer((s) => {
      s.on('error', () => {});
      const onData = (d: Buffer) => {
        got += d.length;
        if (got < size) return;
        s.off('data', onData);
        s.pause();
        // The ClientHello may follow in the same read: it belongs to TLS.
        if (got > size) s.unshift(d.subarray(d.length - (got - size)));
        got = Math.min(got, size);
        const t = new tls.TLSSocket(s, { isServer: true, ...certs.server });
        t.on('error', () => {});
        t.on('secure', () => t.write('welcome\n'));
      };
      s.on('data', onData);
    });
    await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
    try {
      const r = await connectStartTls({
        ...base((sink.address() as net.AddressInfo).port),
        dialect: bulky,
        handshakeTimeoutMs: 3000,
      });
      expect(got).toBe(size);
      expect(await nextData(r.socket)).toBe('welcome\n');
      r.socket.destroy();
    } finally {
      sink.close();
    }
  });

  it('nothing listening: TLSPROXY_ERR_CLIENT_CONNECT', async () => {
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as net.AddressInfo).port;
    await new Promise((r) => s.close(r));
    const err = await rejection<ClientError>(connectStartTls(base(port)));
    expect(err.code).toBe('TLSPROXY_ERR_CLIENT_CONNECT');
    expect(err.message).toMatch(/ECONNREFUSED/);
  });

  it('bad calls are refused before any connection is made', async () => {
    const before = fdCount();
    const cases: Array<[Partial<ConnectStartTlsOptions>, RegExp]> = [
      [{ port: 0 }, /port/],
      [{ host: '' }, /host/],
      [{ timeoutMs: -1 }, /timeoutMs/],
      [{ dialect: { ...toy, client: undefined } }, /no client side/],
      [{ dialect: 'no-such-dialect-xyz' }, /no-such-dialect-xyz/],
      [{ options: { nope: 1 } }, /unknown option "nope"/],
      [{ limits: { replyTimeoutMs: -5 } }, /replyTimeoutMs/],
      [{ engine: { handshake: async () => ({}) } as never }, /no client side \(connect\)/],
      [
        {
          engine: new TlsEngine({ identities: [], connectOnly: true }),
          clientIdentity: certs.client,
        },
        /for the embedded engine/,
      ],
    ];
    for (const [patch, message] of cases) {
      const err = await rejection<ClientError>(connectStartTls({ ...base(1), ...patch }));
      expect(err.code).toBe('TLSPROXY_ERR_CLIENT_CONFIG');
      expect(err.message).toMatch(message);
    }
    // (Descriptors of earlier tests may still be closing: none may be added.)
    expect(fdCount()).toBeLessThanOrEqual(before);
  });
});

describe('connectStartTls: client certificates', () => {
  let strict: ToyServer;
  const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-client-'));
  let daemon: PoolDaemon;
  let remote: RemoteTlsEngine;
  beforeAll(async () => {
    strict = await toyServer({
      tls: { ca: certs.ca, requestCert: true, rejectUnauthorized: true },
    });
    // The daemon serves the engine under test (TLSPROXY_TEST_ENGINE).
    daemon = new PoolDaemon(
      newEngine({ identities: [{ ...certs.client, names: ['alice'] }] }) as DaemonEngine,
      { path: join(dir, 'pool.sock') },
    );
    remote = new RemoteTlsEngine({ socket: join(dir, 'pool.sock') });
  });
  afterAll(async () => {
    await strict.close();
    await remote.close();
    await daemon.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a certificate and key for the embedded engine', async () => {
    // connectStartTls builds this engine itself (node:tls), whichever engine the others use.
    const { engine: _theirs, ...own } = base(strict.port);
    const r = await connectStartTls({ ...own, clientIdentity: certs.client });
    expect(await readUntil(r.socket, 'welcome\n')).toMatch(/welcome\n$/);
    expect(strict.log.at(-1)!.peerCN).toBe('alice');
    r.socket.destroy();
  });

  it('an identity NAME through the tlspool daemon, which holds the key', async () => {
    const r = await connectStartTls({
      ...base(strict.port),
      engine: remote,
      clientIdentity: 'alice',
    });
    expect(r.engine).toBe(remote);
    expect(await readUntil(r.socket, 'welcome\n')).toMatch(/welcome\n$/);
    expect(strict.log.at(-1)!.peerCN).toBe('alice');
    r.socket.write('through the daemon\n');
    expect(await nextData(r.socket)).toBe('THROUGH THE DAEMON\n');
    r.socket.destroy();
  });

  it('through the daemon a wrong CA still fails closed, with the reason', async () => {
    const err = await rejection<PoolError>(
      connectStartTls({ ...base(strict.port), engine: remote, ca: certs.rogue.cert }),
    );
    expect([err.code, err.reason]).toEqual(['TLSPROXY_ERR_POOL_VERIFY', 'unknown-ca']);
  });
});

describe('connectStartTls: descriptors and properties', () => {
  it('no descriptor stays open after failures', async () => {
    const ok = await toyServer();
    const offerless = await toyServer({ offer: false });
    const injected = await toyServer({ inject: 'x' });
    const round = async () => {
      await rejection(connectStartTls({ ...base(ok.port), ca: certs.rogue.cert }));
      await rejection(connectStartTls({ ...base(ok.port), serverName: 'nope.example' }));
      await rejection(connectStartTls(base(offerless.port)));
      await rejection(connectStartTls(base(injected.port)));
    };
    try {
      await round();
      const before = fdCount();
      for (let i = 0; i < 3; i++) await round();
      await until(() => fdCount() <= before, 3000, `fd count back to ${before}`);
      expect(fdCount()).toBe(before);
    } finally {
      await ok.close();
      await offerless.close();
      await injected.close();
    }
  });

  it('property: any server behaviour and chunking — TLS only after a clean +GO, never plaintext unasked', async () => {
    const behaviours = fc.record({
      offer: fc.boolean(),
      answer: fc.constantFrom('+GO' as const, '-NO' as const),
      inject: fc.option(fc.string({ minLength: 1, maxLength: 8 }), { nil: undefined }),
      chunk: fc.integer({ min: 1, max: 32 }),
      plaintextOk: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(behaviours, async (b) => {
        const server = await toyServer({
          offer: b.offer,
          answer: b.answer,
          chunk: b.chunk,
          ...(b.inject !== undefined ? { inject: b.inject } : {}),
        });
        try {
          const outcome = await connectStartTls({
            ...base(server.port),
            options: { plaintextOk: b.plaintextOk },
          }).then(
            (r) => {
              r.socket.destroy();
              return 'tls';
            },
            (e: ClientError | PoolError) => e.code,
          );
          if (!b.offer)
            expect(outcome).toBe(
              b.plaintextOk ? 'TLSPROXY_ERR_CLIENT_PLAINTEXT' : 'TLSPROXY_ERR_CLIENT_REFUSED',
            );
          else if (b.answer === '-NO' || b.inject !== undefined)
            expect(outcome).toBe('TLSPROXY_ERR_CLIENT_REFUSED');
          else expect(outcome).toBe('tls');
        } finally {
          await server.close();
        }
      }),
      { numRuns: 30 },
    );
  });
});
