// The client role of the node:tls engine (issue 18): connect() runs a TLS client handshake on a
// connected socket, always verifies the server (chain + name), and relays between TLS and the
// plaintext end it returns, with the server side's relay. Real node:tls servers on loopback.
import { X509Certificate } from 'node:crypto';
import type net from 'node:net';
import tls from 'node:tls';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ConnectRequest, PoolError, TlsEngine } from '../src/index.js';
import {
  expiredCertificate,
  netServer,
  silentServer,
  type TlsServer,
  tcp,
  tlsServer,
} from './connect-helpers.js';
import { certs, fdCount, nextData, readAll, settledFdCount, until } from './helpers.js';

const SERVER_FP = new X509Certificate(certs.server.cert).fingerprint256;

/** The engine's error for a connect that must fail (and the error is a PoolError). */
async function failure(p: Promise<unknown>): Promise<PoolError> {
  const err = await p.then(
    () => {
      throw new Error('connect() succeeded but should have failed');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(PoolError);
  return err as PoolError;
}

describe('TlsEngine.connect: verification', () => {
  let engine: TlsEngine;
  let server: TlsServer;
  beforeAll(async () => {
    // The client identity is named explicitly; the server identity is not needed to connect.
    engine = new TlsEngine({ identities: [{ ...certs.client, names: ['alice'] }] });
    server = await tlsServer({ ...certs.server });
  });
  afterAll(async () => {
    await server.close();
    await engine.close();
  });

  for (const as of ['fd', 'socket'] as const) {
    it(`verified server (${as}): info, server identity, bytes both ways, half-close`, async () => {
      let ended = 0;
      const r = await engine.connect(await tcp(server.port, as as 'fd'), {
        serverName: 'localhost',
        ca: certs.ca,
        onEnd: () => {
          ended++;
        },
      });
      expect(r.controlKey).toHaveLength(16);
      expect(r.info.serverName).toBe('localhost');
      expect(r.info.version).toBe('TLSv1.3');
      expect(r.info.alpn).toBeNull();
      expect(r.info.serverIdentity.fingerprint256).toBe(SERVER_FP);
      expect(r.info.serverIdentity.san.dns).toContain('localhost');
      expect('clientIdentity' in r.info).toBe(false);
      const plain = r.plaintext.toSocket({ allowHalfOpen: true });
      expect(await nextData(plain)).toBe('hello\n');
      plain.write('ping\n');
      expect(await nextData(plain)).toBe('PING\n');
      // Our FIN becomes close_notify; the server answers its own end, and we read it all.
      const rest = readAll(plain);
      plain.end();
      expect(await rest).toBe('');
      await until(() => ended === 1, 5000, 'onEnd');
      expect(server.received.at(-1)).toBe('ping\n');
      plain.destroy();
    });
  }

  it('an IP address as the server name: no SNI, checked against the IP SANs', async () => {
    const r = await engine.connect(await tcp(server.port, 'fd'), {
      serverName: '127.0.0.1',
      ca: certs.ca,
    });
    expect(r.info.serverName).toBe('127.0.0.1');
    expect(r.info.serverIdentity.fingerprint256).toBe(SERVER_FP);
    r.plaintext.close();
    const err = await failure(
      engine.connect(await tcp(server.port, 'fd'), { serverName: '127.0.0.2', ca: certs.ca }),
    );
    expect(err.code).toBe('TLSPROXY_ERR_POOL_VERIFY');
    expect(err.reason).toBe('name-mismatch');
  });

  it('SNI: the name without a trailing dot; none for an IP address', async () => {
    // The server's side of a TLS 1.3 handshake may finish after ours: wait for its record.
    const n = server.sni.length;
    const a = await engine.connect(await tcp(server.port, 'fd'), {
      serverName: 'Localhost.',
      ca: certs.ca,
    });
    await until(() => server.sni.length > n, 3000, 'the server side');
    expect(server.sni[n]).toBe('Localhost');
    a.plaintext.close();
    const b = await engine.connect(await tcp(server.port, 'fd'), {
      serverName: '127.0.0.1',
      ca: certs.ca,
    });
    await until(() => server.sni.length > n + 1, 3000, 'the server side');
    expect(server.sni[n + 1]).toBe(false);
    b.plaintext.close();
  });

  it('a CA that did not issue the certificate fails closed (unknown-ca)', async () => {
    const err = await failure(
      engine.connect(await tcp(server.port, 'fd'), {
        serverName: 'localhost',
        ca: certs.rogue.cert,
      }),
    );
    expect(err.code).toBe('TLSPROXY_ERR_POOL_VERIFY');
    expect(err.reason).toBe('unknown-ca');
    expect(err.message).toMatch(/server certificate rejected \(unknown-ca\)/);
  });

  it("without ca, Node's roots: the test CA is unknown", async () => {
    const err = await failure(
      engine.connect(await tcp(server.port, 'fd'), { serverName: 'localhost' }),
    );
    expect([err.code, err.reason]).toEqual(['TLSPROXY_ERR_POOL_VERIFY', 'unknown-ca']);
  });

  it('a name the certificate does not carry fails closed (name-mismatch)', async () => {
    const err = await failure(
      engine.connect(await tcp(server.port, 'fd'), {
        serverName: 'other.example.test',
        ca: certs.ca,
      }),
    );
    expect([err.code, err.reason]).toEqual(['TLSPROXY_ERR_POOL_VERIFY', 'name-mismatch']);
  });

  it('wildcards cover one label only', async () => {
    const ok = await engine.connect(await tcp(server.port, 'fd'), {
      serverName: 'mail.wild.example.test',
      ca: certs.ca,
    });
    ok.plaintext.close();
    const err = await failure(
      engine.connect(await tcp(server.port, 'fd'), {
        serverName: 'a.b.wild.example.test',
        ca: certs.ca,
      }),
    );
    expect(err.reason).toBe('name-mismatch');
  });

  it('an expired certificate fails closed (expired)', async () => {
    const expired = await tlsServer(expiredCertificate());
    try {
      const err = await failure(
        engine.connect(await tcp(expired.port, 'fd'), { serverName: 'localhost', ca: certs.ca }),
      );
      expect([err.code, err.reason]).toEqual(['TLSPROXY_ERR_POOL_VERIFY', 'expired']);
    } finally {
      await expired.close();
    }
  });

  it('a net.Socket holding unread bytes from the server (sent after its go-ahead) is refused', async () => {
    // The server says something before TLS, then would run TLS: a client must not start TLS
    // over bytes it has not accounted for (the response-injection class).
    const early = netServer((s) => {
      s.on('error', () => {});
      s.write('* OK injected\r\n', () => {
        const t = new tls.TLSSocket(s, { isServer: true, ...certs.server });
        t.on('error', () => {});
      });
    });
    const port = await early.listening;
    try {
      const socket = await tcp(port, 'socket');
      socket.pause();
      await until(() => socket.readableLength > 0, 3000, 'the early bytes');
      const err = await failure(engine.connect(socket, { serverName: 'localhost', ca: certs.ca }));
      expect(err.code).toBe('TLSPROXY_ERR_POOL_HANDSHAKE');
      expect(err.message).toMatch(/before the TLS handshake/);
      expect(socket.destroyed).toBe(true);
    } finally {
      await early.close();
    }
  });

  it('bad requests are refused before any byte is sent, and the socket is closed', async () => {
    const cases: Array<[Partial<ConnectRequest>, RegExp]> = [
      [{ serverName: '' }, /serverName/],
      [{ serverName: 'a..b' }, /serverName/],
      [{ serverName: 'localhost', ca: 'not a certificate' }, /no PEM certificate/],
      [{ serverName: 'localhost', clientIdentity: 'bob' }, /no identity named "bob"/],
      [{ serverName: 'localhost', minVersion: 'TLSv1.1' as never }, /minVersion/],
      [{ serverName: 'localhost', alpn: [''] }, /alpn/],
      [{ serverName: 'localhost', handshakeTimeoutMs: 0 }, /handshakeTimeoutMs/],
    ];
    for (const [request, message] of cases) {
      const err = await failure(
        engine.connect(await tcp(server.port, 'fd'), request as ConnectRequest),
      );
      expect(err.code).toBe('TLSPROXY_ERR_POOL_CONFIG');
      expect(err.message).toMatch(message);
    }
  });

  it('property: a name the certificate does not carry never connects', async () => {
    const served = new Set(['localhost', 'imap.example.test', '127.0.0.1', '::1']);
    const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?$/);
    const names = fc.oneof(
      fc.array(label, { minLength: 1, maxLength: 4 }).map((l) => l.join('.')),
      fc
        .array(label, { minLength: 1, maxLength: 2 })
        .map((l) => `${l.join('.')}.wild.example.test`),
      fc.ipV4(),
      fc.constantFrom(...served),
      fc.string({ maxLength: 20 }),
    );
    await fc.assert(
      fc.asyncProperty(names, async (serverName) => {
        const p = engine.connect(await tcp(server.port, 'fd'), { serverName, ca: certs.ca });
        const wild = /^[a-z0-9-]+\.wild\.example\.test$/.test(serverName);
        if (served.has(serverName) || wild) {
          (await p).plaintext.close();
          return;
        }
        const err = await failure(p);
        expect(['TLSPROXY_ERR_POOL_VERIFY', 'TLSPROXY_ERR_POOL_CONFIG']).toContain(err.code);
        if (err.code === 'TLSPROXY_ERR_POOL_VERIFY') expect(err.reason).toBe('name-mismatch');
      }),
      { numRuns: 40 },
    );
  });
});

describe('TlsEngine.connect: client certificates, ALPN, versions', () => {
  let engine: TlsEngine;
  beforeAll(() => {
    engine = new TlsEngine({
      identities: [certs.server, { ...certs.client, names: ['alice'] }],
    });
  });
  afterAll(() => engine.close());

  it('presents the named identity to a server that requires a client certificate', async () => {
    const server = await tlsServer({
      ...certs.server,
      ca: certs.ca,
      requestCert: true,
      rejectUnauthorized: true,
    });
    try {
      const r = await engine.connect(await tcp(server.port, 'fd'), {
        serverName: 'localhost',
        ca: certs.ca,
        clientIdentity: 'ALICE',
      });
      const plain = r.plaintext.toSocket();
      expect(await nextData(plain)).toBe('hello\n');
      expect(server.clientNames.at(-1)).toBe('alice');
      plain.destroy();
    } finally {
      await server.close();
    }
  });

  it('without a client certificate a TLS 1.2 server that requires one fails the handshake', async () => {
    const server = await tlsServer({
      ...certs.server,
      ca: certs.ca,
      requestCert: true,
      rejectUnauthorized: true,
      maxVersion: 'TLSv1.2',
    });
    try {
      const err = await failure(
        engine.connect(await tcp(server.port, 'fd'), { serverName: 'localhost', ca: certs.ca }),
      );
      expect(err.code).toBe('TLSPROXY_ERR_POOL_HANDSHAKE');
    } finally {
      await server.close();
    }
  });

  it('ALPN is offered and reported', async () => {
    const server = await tlsServer({ ...certs.server, ALPNProtocols: ['imap'] });
    try {
      const r = await engine.connect(await tcp(server.port, 'fd'), {
        serverName: 'localhost',
        ca: certs.ca,
        alpn: ['imap', 'x-other'],
      });
      expect(r.info.alpn).toBe('imap');
      r.plaintext.close();
    } finally {
      await server.close();
    }
  });

  it('minVersion TLSv1.3 refuses a TLS 1.2 server; the default accepts it with a strong suite', async () => {
    const server = await tlsServer({ ...certs.server, maxVersion: 'TLSv1.2' });
    try {
      const err = await failure(
        engine.connect(await tcp(server.port, 'fd'), {
          serverName: 'localhost',
          ca: certs.ca,
          minVersion: 'TLSv1.3',
        }),
      );
      expect(err.code).toBe('TLSPROXY_ERR_POOL_HANDSHAKE');
      const r = await engine.connect(await tcp(server.port, 'fd'), {
        serverName: 'localhost',
        ca: certs.ca,
      });
      expect(r.info.version).toBe('TLSv1.2');
      expect(r.info.cipher).toMatch(/^TLS_ECDHE_ECDSA_WITH_(AES_\d+_GCM|CHACHA20_POLY1305)/);
      r.plaintext.close();
    } finally {
      await server.close();
    }
  });

  it('a TLS 1.2 server that asks to renegotiate is refused (its certificate was checked once)', async () => {
    let renegotiated: string | undefined;
    const raw = tls.createServer({ ...certs.server, maxVersion: 'TLSv1.2' }, (s) => {
      // Refused, node:tls reports it as an error on the socket, not to the callback.
      s.on('error', (err) => {
        renegotiated ??= `refused: ${err.message}`;
      });
      s.renegotiate({ requestCert: true, rejectUnauthorized: false }, (err) => {
        renegotiated = err ? `refused: ${err.message}` : 'done';
      });
    });
    await new Promise<void>((r) => raw.listen(0, '127.0.0.1', r));
    try {
      let ended = false;
      const r = await engine.connect(await tcp((raw.address() as net.AddressInfo).port, 'fd'), {
        serverName: 'localhost',
        ca: certs.ca,
        onEnd: () => {
          ended = true;
        },
      });
      const plain = r.plaintext.toSocket();
      plain.resume();
      await until(() => ended || renegotiated === 'done', 5000, 'the session to end');
      expect(renegotiated).not.toBe('done');
      expect(ended).toBe(true);
      plain.destroy();
    } finally {
      raw.close();
    }
  });

  it('a TLS 1.2 server with only CBC suites is refused (the server-side suite policy)', async () => {
    const server = await tlsServer({
      ...certs.server,
      maxVersion: 'TLSv1.2',
      ciphers: 'ECDHE-ECDSA-AES128-SHA256',
    });
    try {
      const err = await failure(
        engine.connect(await tcp(server.port, 'fd'), { serverName: 'localhost', ca: certs.ca }),
      );
      expect(err.code).toBe('TLSPROXY_ERR_POOL_HANDSHAKE');
    } finally {
      await server.close();
    }
  });
});

describe('TlsEngine.connect: sessions and control', () => {
  let server: TlsServer;
  beforeAll(async () => {
    server = await tlsServer({ ...certs.server });
  });
  afterAll(() => server.close());

  it('control info/exporter work, renegotiate is refused, close ends the session', async () => {
    const engine = new TlsEngine({ identities: [], connectOnly: true });
    let ended = false;
    const r = await engine.connect(await tcp(server.port, 'fd'), {
      serverName: 'localhost',
      ca: certs.ca,
      onEnd: () => {
        ended = true;
      },
    });
    const info = (await engine.control(r.controlKey, 'info')) as typeof r.info;
    expect(info.serverIdentity.fingerprint256).toBe(SERVER_FP);
    const ekm = await engine.control(r.controlKey, 'exporter', {
      label: 'EXPERIMENTAL-x',
      length: 32,
    });
    expect(Buffer.from(ekm as string, 'base64')).toHaveLength(32);
    await expect(engine.control(r.controlKey, 'renegotiate')).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_POOL_CONTROL',
    });
    const plain = r.plaintext.toSocket();
    const all = readAll(plain);
    await engine.control(r.controlKey, 'close');
    await all;
    await until(() => ended, 5000, 'onEnd');
    await expect(engine.control(r.controlKey, 'info')).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_POOL_UNKNOWN_KEY',
    });
    plain.destroy();
    await engine.close();
  });

  it('a connectOnly engine connects but does not serve; without it no identities is an error', async () => {
    expect(() => new TlsEngine({ identities: [] })).toThrow(/at least one identity/);
    const engine = new TlsEngine({ identities: [], connectOnly: true });
    expect(engine.serverNames()).toEqual([]);
    const err = await failure(engine.handshake(await tcp(server.port, 'fd')));
    expect(err.code).toBe('TLSPROXY_ERR_POOL_CONFIG');
    await engine.close();
  });

  it('maxSessions counts client sessions', async () => {
    const engine = new TlsEngine({ identities: [], connectOnly: true, maxSessions: 1 });
    const a = await engine.connect(await tcp(server.port, 'fd'), {
      serverName: 'localhost',
      ca: certs.ca,
    });
    expect(engine.sessionCount).toBe(1);
    const err = await failure(
      engine.connect(await tcp(server.port, 'fd'), { serverName: 'localhost', ca: certs.ca }),
    );
    expect(err.message).toMatch(/session limit/);
    a.plaintext.close();
    await until(() => engine.sessionCount === 0, 5000, 'session end');
    await engine.close();
  });

  it('the idle timeout ends a quiet client session', async () => {
    const engine = new TlsEngine({ identities: [], connectOnly: true });
    let ended = false;
    const r = await engine.connect(await tcp(server.port, 'fd'), {
      serverName: 'localhost',
      ca: certs.ca,
      idleTimeoutMs: 300,
      onEnd: () => {
        ended = true;
      },
    });
    const plain: net.Socket = r.plaintext.toSocket();
    const all = readAll(plain);
    expect(await all).toBe('hello\n');
    await until(() => ended, 5000, 'idle end');
    plain.destroy();
    await engine.close();
  });
});

describe('TlsEngine.connect: timeouts and descriptors', () => {
  it('a silent server fails with TLSPROXY_ERR_POOL_TIMEOUT', async () => {
    const engine = new TlsEngine({ identities: [], connectOnly: true });
    const silent = await silentServer();
    try {
      const started = performance.now();
      const err = await failure(
        engine.connect(await tcp(silent.port, 'fd'), {
          serverName: 'localhost',
          ca: certs.ca,
          handshakeTimeoutMs: 300,
        }),
      );
      expect(err.code).toBe('TLSPROXY_ERR_POOL_TIMEOUT');
      expect(performance.now() - started).toBeGreaterThanOrEqual(250);
    } finally {
      await silent.close();
      await engine.close();
    }
  });

  it('property: whatever a server that is not a TLS server sends, connect() fails with a PoolError', async () => {
    const engine = new TlsEngine({ identities: [], connectOnly: true });
    let reply = Buffer.alloc(0);
    let reset = false;
    const bogus = netServer((s) => {
      s.on('error', () => {});
      s.once('data', () => {
        if (reset) s.resetAndDestroy();
        else s.end(reply);
      });
    });
    const port = await bogus.listening;
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(
            fc.uint8Array({ maxLength: 64 }),
            // A TLS record header that promises more than comes (handshake type, TLS 1.2).
            fc
              .uint8Array({ maxLength: 32 })
              .map((b) => Uint8Array.from([0x16, 0x03, 0x03, 0x40, 0x00, ...b])),
            // An alert record.
            fc.constant(Uint8Array.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])),
          ),
          fc.boolean(),
          async (bytes, doReset) => {
            reply = Buffer.from(bytes);
            reset = doReset;
            const err = await failure(
              engine.connect(await tcp(port, 'fd'), {
                serverName: 'localhost',
                ca: certs.ca,
                handshakeTimeoutMs: 2000,
              }),
            );
            expect(['TLSPROXY_ERR_POOL_HANDSHAKE', 'TLSPROXY_ERR_POOL_TIMEOUT']).toContain(
              err.code,
            );
          },
        ),
        { numRuns: 40 },
      );
      expect(engine.sessionCount).toBe(0);
    } finally {
      await bogus.close();
      await engine.close();
    }
  });

  it('no descriptor stays open after any failure (fd count unchanged)', async () => {
    const engine = new TlsEngine({ identities: [{ ...certs.client, names: ['alice'] }] });
    const server = await tlsServer({ ...certs.server });
    const silent = await silentServer();
    const attempts = async () => {
      const tries: Array<[number, ConnectRequest]> = [
        [server.port, { serverName: 'localhost', ca: certs.rogue.cert }],
        [server.port, { serverName: 'nobody.example.test', ca: certs.ca }],
        [server.port, { serverName: 'localhost', ca: 'junk' }],
        [server.port, { serverName: 'localhost', ca: certs.ca, clientIdentity: 'bob' }],
        [silent.port, { serverName: 'localhost', ca: certs.ca, handshakeTimeoutMs: 100 }],
      ];
      for (const [port, request] of tries) {
        for (const as of ['fd', 'socket'] as const) {
          await failure(engine.connect(await tcp(port, as as 'fd'), request));
        }
      }
    };
    try {
      await attempts();
      const before = await settledFdCount();
      for (let i = 0; i < 3; i++) await attempts();
      // Closing happens on the next turns of the event loop (or of the engine's thread).
      await until(() => fdCount() <= before, 3000, `fd count back to ${before}`);
      // Exactly: fewer would mean a descriptor closed twice (someone else's).
      expect(await settledFdCount()).toBe(before);
    } finally {
      await server.close();
      await silent.close();
      await engine.close();
    }
  });
});
