import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import net from 'node:net';
import { socketpair } from '@tlsproxy/fdpass';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type HandshakeResult, PoolError, TlsEngine } from '../src/index.js';
import { certs, client, fdCount, nextData, readAll, type Served, serve, until } from './helpers.js';

const fp = (pem: string) => new X509Certificate(pem).fingerprint256;
const SERVER_FP = fp(certs.server.cert);
const OTHER_FP = fp(certs.other.cert);
const CLIENT_FP = fp(certs.client.cert);

function code(err: unknown): string | undefined {
  return (err as PoolError).code;
}

/** Handshake over loopback; returns both ends once both sides are done. */
async function connectPair(
  served: Served,
  options: Parameters<typeof client>[1] = {},
): Promise<{ c: ReturnType<typeof client>; r: HandshakeResult }> {
  const c = client(served.port, options);
  const [r] = await Promise.all([served.next(), c.secure]);
  return { c, r };
}

function sClient(args: string[]): Promise<{ out: string; code: number | null }> {
  return new Promise((resolve) => {
    const child = execFile(
      'timeout',
      ['10', 'openssl', 's_client', ...args],
      { timeout: 15_000 },
      (err, stdout, stderr) => {
        resolve({
          out: stdout + stderr,
          code: err ? ((err as { code?: number }).code ?? 1) : 0,
        });
      },
    );
    child.stdin!.end('');
  });
}

describe('TlsEngine: certificate selection by SNI', () => {
  let engine: TlsEngine;
  let served: Served;
  beforeAll(async () => {
    // `other` is the default identity, so "fell back to the default" is visible.
    engine = new TlsEngine({
      identities: [certs.server, { ...certs.other, default: true }],
    });
    served = await serve(engine);
  });
  afterAll(async () => {
    await served.close();
    await engine.close();
  });

  const cases: Array<[string, string | undefined, string, string | null]> = [
    ['exact name', 'imap.example.test', SERVER_FP, 'imap.example.test'],
    ['exact name, other identity', 'other.example.test', OTHER_FP, 'other.example.test'],
    ['exact name, any case', 'IMAP.Example.TEST', SERVER_FP, 'IMAP.Example.TEST'],
    ['one-label wildcard', 'mail.wild.example.test', SERVER_FP, 'mail.wild.example.test'],
    ['wildcard does not cover two labels', 'a.b.wild.example.test', OTHER_FP, null],
    ['wildcard does not cover the bare domain', 'wild.example.test', OTHER_FP, null],
    ['unknown name → default', 'nobody.example.test', OTHER_FP, null],
    ['no SNI → default', undefined, OTHER_FP, null],
  ];
  for (const [title, sni, expectFp, reportedName] of cases) {
    it(title, async () => {
      const { c, r } = await connectPair(served, sni ? { servername: sni } : {});
      expect(c.socket.getPeerX509Certificate()!.fingerprint256).toBe(expectFp);
      if (sni) expect(r.info.serverName?.toLowerCase()).toBe(sni.toLowerCase());
      else expect(r.info.serverName).toBeNull();
      if (reportedName) expect(engine.identities.match(sni!)).toBeDefined();
      expect(r.controlKey).toHaveLength(16);
      r.plaintext.close();
      c.socket.destroy();
    });
  }

  it('takes a net.Socket as well as an OwnedFd', async () => {
    const s2 = await serve(engine, {}, 'socket');
    try {
      const { c, r } = await connectPair(s2, { servername: 'localhost' });
      expect(c.socket.getPeerX509Certificate()!.fingerprint256).toBe(SERVER_FP);
      expect(r.info.serverName).toBe('localhost');
      r.plaintext.close();
      c.socket.destroy();
    } finally {
      await s2.close();
    }
  });

  it('refuses an empty identity list and a client-cert policy without CAs', () => {
    expect(() => new TlsEngine({ identities: [] })).toThrow(PoolError);
    try {
      new TlsEngine({ identities: [certs.server], clientCert: 'required' });
      expect.unreachable();
    } catch (err) {
      expect(code(err)).toBe('TLSPROXY_ERR_POOL_CONFIG');
    }
    try {
      new TlsEngine({ identities: [{ cert: certs.server.cert, key: certs.other.key }] });
      expect.unreachable();
    } catch (err) {
      expect(code(err)).toBe('TLSPROXY_ERR_POOL_CONFIG');
    }
  });
});

describe('TlsEngine: negotiation', () => {
  let engine: TlsEngine;
  beforeAll(() => {
    engine = new TlsEngine({ identities: [certs.server], ca: certs.ca, alpn: ['imap', 'h2'] });
  });
  afterAll(() => engine.close());

  it('negotiates ALPN (engine default list, server preference)', async () => {
    const served = await serve(engine);
    try {
      const { c, r } = await connectPair(served, { ALPNProtocols: ['h2', 'imap'] });
      expect(c.socket.alpnProtocol).toBe('imap');
      expect(r.info.alpn).toBe('imap');
      expect(r.info.version).toBe('TLSv1.3');
      expect(r.info.cipher).toMatch(/^TLS_/);
      r.plaintext.close();
      c.socket.destroy();
    } finally {
      await served.close();
    }
  });

  it('negotiates ALPN from the per-handshake list, none when the client offers none', async () => {
    const served = await serve(engine, { alpn: ['xmpp-client'] });
    try {
      const a = await connectPair(served, { ALPNProtocols: ['xmpp-client'] });
      expect(a.r.info.alpn).toBe('xmpp-client');
      expect(a.c.socket.alpnProtocol).toBe('xmpp-client');
      const b = await connectPair(served, {});
      expect(b.r.info.alpn).toBeNull();
      for (const x of [a, b]) {
        x.r.plaintext.close();
        x.c.socket.destroy();
      }
    } finally {
      await served.close();
    }
  });

  it('fails the handshake when client and server share no ALPN protocol', async () => {
    const served = await serve(engine, { alpn: ['imap'] });
    try {
      const c = client(served.port, { ALPNProtocols: ['smtp'] });
      await expect(served.next()).rejects.toMatchObject({ code: 'TLSPROXY_ERR_POOL_HANDSHAKE' });
      await expect(c.secure).rejects.toThrow(/no application protocol|alert/i);
    } finally {
      await served.close();
    }
  });
});

/** Served with a checkServerName that accepts every name and records what it was asked. */
async function serveAsking(engine: TlsEngine) {
  const asked: string[] = [];
  const served = await serve(engine, {
    checkServerName: (n) => {
      asked.push(n);
      return true;
    },
  });
  return { served, asked };
}

describe('TlsEngine: SNI check', () => {
  let engine: TlsEngine;
  beforeAll(() => {
    engine = new TlsEngine({ identities: [certs.server, certs.other] });
  });
  afterAll(() => engine.close());

  it('goes on when checkServerName accepts (sync and async)', async () => {
    const seen: string[] = [];
    for (const check of [
      (n: string) => {
        seen.push(n);
        return true;
      },
      async (n: string) => {
        seen.push(n);
        await new Promise((r) => setTimeout(r, 20));
        return true;
      },
    ]) {
      const served = await serve(engine, { checkServerName: check });
      const { c, r } = await connectPair(served, { servername: 'other.example.test' });
      expect(c.socket.getPeerX509Certificate()!.fingerprint256).toBe(OTHER_FP);
      r.plaintext.close();
      c.socket.destroy();
      await served.close();
    }
    expect(seen).toEqual(['other.example.test', 'other.example.test']);
  });

  it('refused name: node client sees unrecognized_name, handshake() rejects', async () => {
    const served = await serve(engine, { checkServerName: async (n) => n !== 'bad.example.test' });
    try {
      const c = client(served.port, { servername: 'bad.example.test' });
      await expect(served.next()).rejects.toMatchObject({
        code: 'TLSPROXY_ERR_POOL_SERVER_NAME_REFUSED',
      });
      const err = await c.secure.then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err).toBeDefined();
      expect(`${(err as NodeJS.ErrnoException).code} ${err!.message}`).toMatch(
        /UNRECOGNIZED_NAME|unrecognized name/i,
      );
    } finally {
      await served.close();
    }
  });

  // Regression (review): any bytes but NUL passed as the server name — CR/LF and spaces reached
  // the backend's check, its hand-off info and legacy servers' PROXY headers.
  it('a server name that is not a host name is refused (unrecognized_name), never asked about', async () => {
    const { served, asked } = await serveAsking(engine);
    try {
      for (const bad of [
        'bad name',
        'a.example\r\nX: y',
        'ünï.example',
        '-a.example',
        'a..b',
        'a..',
        'a-.b',
      ]) {
        const c = client(served.port, { servername: bad });
        await expect(served.next()).rejects.toMatchObject({
          code: 'TLSPROXY_ERR_POOL_SERVER_NAME_REFUSED',
        });
        const err = await c.secure.then(
          () => undefined,
          (e: Error) => e,
        );
        expect(`${(err as NodeJS.ErrnoException)?.code} ${err?.message}`).toMatch(
          /UNRECOGNIZED_NAME|unrecognized name/i,
        );
      }
      expect(asked).toEqual([]);
      // Names that are host names still pass, underscores and a trailing dot included.
      for (const good of ['imap.example.test', '_srv.example.test', 'imap.example.test.']) {
        const { c, r } = await connectPair(served, { servername: good });
        // Handed on without the trailing dot (RFC 6066 section 3).
        expect(r.info.serverName).toBe(good.replace(/\.$/, ''));
        r.plaintext.close();
        c.socket.destroy();
      }
      expect(asked).toEqual(['imap.example.test', '_srv.example.test', 'imap.example.test']);
    } finally {
      await served.close();
    }
  });

  it('an address sent as the server name is taken as no name: default identity, never asked', async () => {
    const { served, asked } = await serveAsking(engine);
    try {
      for (const address of ['127.0.0.1', '::1']) {
        const res = sClient(['-connect', `127.0.0.1:${served.port}`, '-servername', address]);
        const r = await served.next();
        expect(r.info.serverName).toBeNull();
        r.plaintext.close();
        await res;
      }
      expect(asked).toEqual([]);
    } finally {
      await served.close();
    }
  });

  it('refused name: openssl s_client sees alert 112', async () => {
    const served = await serve(engine, { checkServerName: () => false });
    try {
      const res = sClient([
        '-connect',
        `127.0.0.1:${served.port}`,
        '-servername',
        'imap.example.test',
      ]);
      await expect(served.next()).rejects.toMatchObject({
        code: 'TLSPROXY_ERR_POOL_SERVER_NAME_REFUSED',
      });
      const { out } = await res;
      expect(out).toMatch(/alert number 112|unrecognized name/i);
    } finally {
      await served.close();
    }
  });

  it('a throwing checkServerName fails the handshake', async () => {
    const served = await serve(engine, {
      checkServerName: () => {
        throw new Error('backend down');
      },
    });
    try {
      const c = client(served.port, { servername: 'imap.example.test' });
      await expect(served.next()).rejects.toBeInstanceOf(PoolError);
      await expect(c.secure).rejects.toBeDefined();
    } finally {
      await served.close();
    }
  });

  it('a refusal that comes after the handshake timed out writes nothing anywhere', async () => {
    let answer!: (ok: boolean) => void;
    let wasAsked!: () => void;
    const asked = new Promise<void>((r) => {
      wasAsked = r;
    });
    const served = await serve(engine, {
      handshakeTimeoutMs: 100,
      checkServerName: () =>
        new Promise<boolean>((res) => {
          answer = res;
          wasAsked();
        }),
    });
    try {
      const c = client(served.port, { servername: 'slow.example.test' });
      await asked;
      await expect(served.next()).rejects.toMatchObject({ code: 'TLSPROXY_ERR_POOL_TIMEOUT' });
      await c.closed;
      // The engine's descriptor for that connection is closed now; the next ones reuse its number.
      const pairs = Array.from({ length: 8 }, () => socketpair());
      const readers = pairs.map(([, b]) => b.toSocket());
      const got: string[] = [];
      for (const r of readers) r.on('data', (d) => got.push(d.toString('hex')));
      answer(false);
      await new Promise((r) => setTimeout(r, 100));
      expect(got).toEqual([]);
      for (const [a] of pairs) a.close();
      for (const r of readers) r.destroy();
    } finally {
      await served.close();
    }
  });

  it('checkServerName is not called without SNI', async () => {
    let called = false;
    const served = await serve(engine, {
      checkServerName: () => {
        called = true;
        return false;
      },
    });
    try {
      const { c, r } = await connectPair(served, {});
      expect(called).toBe(false);
      expect(r.info.serverName).toBeNull();
      r.plaintext.close();
      c.socket.destroy();
    } finally {
      await served.close();
    }
  });
});

describe('TlsEngine: client certificates', () => {
  let engine: TlsEngine;
  beforeAll(() => {
    engine = new TlsEngine({ identities: [certs.server], ca: certs.ca });
  });
  afterAll(() => engine.close());

  it('required, no certificate → handshake fails', async () => {
    const served = await serve(engine, { clientCert: 'required' });
    try {
      const c = client(served.port, {});
      await expect(served.next()).rejects.toSatisfy(
        (e: PoolError) =>
          e.code === 'TLSPROXY_ERR_POOL_CLIENT_CERT' || e.code === 'TLSPROXY_ERR_POOL_HANDSHAKE',
      );
      expect(await c.closed).toBeDefined();
    } finally {
      await served.close();
    }
  });

  it('required, trusted certificate → verified identity', async () => {
    const served = await serve(engine, { clientCert: 'required' });
    try {
      const { c, r } = await connectPair(served, certs.client);
      const id = r.info.clientIdentity!;
      expect(id).not.toBeNull();
      expect(id.subject).toMatch(/CN=alice/);
      expect(id.san.email).toEqual(['alice@example.test']);
      expect(id.fingerprint256).toBe(CLIENT_FP);
      expect(id.issuer).toMatch(/CN=/);
      r.plaintext.close();
      c.socket.destroy();
    } finally {
      await served.close();
    }
  });

  it('required, untrusted certificate → handshake fails', async () => {
    const served = await serve(engine, { clientCert: 'required' });
    try {
      const c = client(served.port, certs.rogue);
      await expect(served.next()).rejects.toMatchObject({
        code: 'TLSPROXY_ERR_POOL_CLIENT_CERT',
      });
      await c.closed;
    } finally {
      await served.close();
    }
  });

  it('optional, no certificate → ok, clientIdentity null', async () => {
    const served = await serve(engine, { clientCert: 'optional' });
    try {
      const { c, r } = await connectPair(served, {});
      expect(r.info.clientIdentity).toBeNull();
      r.plaintext.close();
      c.socket.destroy();
    } finally {
      await served.close();
    }
  });

  it('optional, trusted certificate → identity; untrusted → fails', async () => {
    const served = await serve(engine, { clientCert: 'optional' });
    try {
      const { c, r } = await connectPair(served, certs.client);
      expect(r.info.clientIdentity?.fingerprint256).toBe(CLIENT_FP);
      r.plaintext.close();
      c.socket.destroy();
      const c2 = client(served.port, certs.rogue);
      await expect(served.next()).rejects.toMatchObject({
        code: 'TLSPROXY_ERR_POOL_CLIENT_CERT',
      });
      await c2.closed;
    } finally {
      await served.close();
    }
  });

  it('TLS 1.2 session resumption works while client certificates are requested', async () => {
    const served = await serve(engine, { clientCert: 'optional' });
    try {
      const first = await connectPair(served, { ...certs.client, maxVersion: 'TLSv1.2' });
      const session = await new Promise<Buffer>((res) => {
        const s = first.c.socket.getSession();
        if (s) res(s);
        else first.c.socket.once('session', res);
      });
      first.r.plaintext.close();
      first.c.socket.destroy();
      const again = await connectPair(served, {
        ...certs.client,
        maxVersion: 'TLSv1.2',
        session,
      });
      expect(again.c.socket.isSessionReused()).toBe(true);
      expect(again.r.info.clientIdentity?.fingerprint256).toBe(CLIENT_FP);
      again.r.plaintext.close();
      again.c.socket.destroy();
    } finally {
      await served.close();
    }
  });

  // Regression (review of the native engine): sessions were cached per identity only, and a
  // resumed handshake has no CertificateRequest — a session from a 'none' handshake resumed on a
  // 'required' one went through with clientIdentity null.
  for (const maxVersion of ['TLSv1.2', 'TLSv1.3'] as const) {
    it(`a session from a 'none' handshake does not get past 'required' (${maxVersion})`, async () => {
      let n = 0;
      const served = await serve(engine, () => ({ clientCert: n++ === 0 ? 'none' : 'required' }));
      try {
        const first = client(served.port, { maxVersion });
        const sessionP = new Promise<Buffer>((res) => first.socket.once('session', res));
        const r1 = await served.next();
        await first.secure;
        first.socket.resume();
        const session = await sessionP;
        r1.plaintext.close();
        first.socket.destroy();
        const again = client(served.port, { maxVersion, session });
        again.socket.on('error', () => {});
        const r2 = await served.next().then(
          (r) => r,
          (err: PoolError) => err,
        );
        if (!(r2 instanceof Error)) {
          r2.plaintext.close();
          again.socket.destroy();
        }
        expect(r2).toBeInstanceOf(Error);
        expect((r2 as PoolError).code).toMatch(/CLIENT_CERT|HANDSHAKE/);
        await again.closed;
      } finally {
        await served.close();
      }
    });
  }

  it('none: a certificate is not asked for, identity null', async () => {
    const served = await serve(engine, { clientCert: 'none' });
    try {
      const { c, r } = await connectPair(served, certs.client);
      expect(r.info.clientIdentity).toBeNull();
      r.plaintext.close();
      c.socket.destroy();
    } finally {
      await served.close();
    }
  });

  it('a per-handshake policy without CAs is a config error and closes the socket', async () => {
    const noCa = new TlsEngine({ identities: [certs.server] });
    const served = await serve(noCa, { clientCert: 'optional' });
    try {
      const c = client(served.port, {});
      await expect(served.next()).rejects.toMatchObject({ code: 'TLSPROXY_ERR_POOL_CONFIG' });
      await c.closed;
    } finally {
      await served.close();
      await noCa.close();
    }
  });
});

describe('TlsEngine: handshake timeout', () => {
  it('rejects with TLSPROXY_ERR_POOL_TIMEOUT and closes the connection', async () => {
    const engine = new TlsEngine({ identities: [certs.server], handshakeTimeoutMs: 5000 });
    const served = await serve(engine, { handshakeTimeoutMs: 150 });
    try {
      const raw = net.connect(served.port, '127.0.0.1');
      const closed = new Promise<void>((r) => raw.once('close', () => r()));
      raw.on('error', () => {});
      const t0 = Date.now();
      await expect(served.next()).rejects.toMatchObject({ code: 'TLSPROXY_ERR_POOL_TIMEOUT' });
      expect(Date.now() - t0).toBeGreaterThanOrEqual(100);
      await closed;
    } finally {
      await served.close();
      await engine.close();
    }
  });

  it('a client that closes mid-handshake makes handshake() reject', async () => {
    const engine = new TlsEngine({ identities: [certs.server] });
    const served = await serve(engine);
    try {
      const raw = net.connect(served.port, '127.0.0.1', () => raw.end('\x16\x03\x01'));
      raw.on('error', () => {});
      await expect(served.next()).rejects.toMatchObject({ code: 'TLSPROXY_ERR_POOL_HANDSHAKE' });
    } finally {
      await served.close();
      await engine.close();
    }
  });
});

describe('TlsEngine: plaintext relay', () => {
  let engine: TlsEngine;
  let served: Served;
  beforeAll(async () => {
    engine = new TlsEngine({ identities: [certs.server] });
    served = await serve(engine);
  });
  afterAll(async () => {
    await served.close();
    await engine.close();
  });

  it('moves bytes both ways', async () => {
    const { c, r } = await connectPair(served);
    const plain = r.plaintext.toSocket();
    const got = nextData(plain);
    c.socket.write('a1 NOOP\r\n');
    expect(await got).toBe('a1 NOOP\r\n');
    const back = nextData(c.socket);
    plain.write('a1 OK\r\n');
    expect(await back).toBe('a1 OK\r\n');
    // A bigger transfer, both ways at once.
    const big = Buffer.alloc(1 << 20, 'x').toString();
    const toBackend = new Promise<number>((resolve) => {
      let n = 0;
      const on = (d: Buffer) => {
        n += d.length;
        if (n >= big.length) {
          plain.off('data', on);
          resolve(n);
        }
      };
      plain.on('data', on);
    });
    const toClient = new Promise<number>((resolve) => {
      let n = 0;
      const on = (d: Buffer) => {
        n += d.length;
        if (n >= big.length) {
          c.socket.off('data', on);
          resolve(n);
        }
      };
      c.socket.on('data', on);
    });
    c.socket.write(big);
    plain.write(big);
    expect(await toBackend).toBe(big.length);
    expect(await toClient).toBe(big.length);
    plain.destroy();
    await c.closed;
    await until(() => engine.sessionCount === 0, 3000, 'session cleanup');
  });

  it('backend end() → client gets the data then end (close_notify)', async () => {
    const { c, r } = await connectPair(served);
    const plain = r.plaintext.toSocket();
    const all = readAll(c.socket);
    plain.end('* BYE\r\n');
    expect(await all).toBe('* BYE\r\n');
    await c.closed;
    await until(() => engine.sessionCount === 0, 3000, 'session cleanup');
  });

  it('client end() → backend gets the data then end', async () => {
    const { c, r } = await connectPair(served);
    const plain = r.plaintext.toSocket({ allowHalfOpen: true });
    const all = readAll(plain);
    c.socket.end('a LOGOUT\r\n');
    expect(await all).toBe('a LOGOUT\r\n');
    plain.destroy();
    await c.closed;
    await until(() => engine.sessionCount === 0, 3000, 'session cleanup');
  });

  it('half-close: after the client ends, the backend can still answer', async () => {
    const { c, r } = await connectPair(served);
    const plain = r.plaintext.toSocket({ allowHalfOpen: true });
    const reply = readAll(c.socket);
    const request = readAll(plain);
    c.socket.end('QUERY\r\n');
    expect(await request).toBe('QUERY\r\n');
    plain.end('ANSWER\r\n');
    expect(await reply).toBe('ANSWER\r\n');
    await c.closed;
    await until(() => engine.sessionCount === 0, 3000, 'session cleanup');
  });

  // Regression (review of the native engine): a client that ends TCP without close_notify ends
  // its direction like close_notify does — but OpenSSL 3 reports that EOF as a fatal error, after
  // which the native engine's SSL_write failed and the backend's answer was lost.
  it('half-close without close_notify (a bare FIN): the backend can still answer', async () => {
    const raw = net.connect({ port: served.port, host: '127.0.0.1', allowHalfOpen: true });
    const c = client(served.port, { socket: raw });
    const [r] = await Promise.all([served.next(), c.secure]);
    const plain = r.plaintext.toSocket({ allowHalfOpen: true });
    const reply = new Promise<string>((res) => {
      let got = '';
      c.socket.on('data', (d: Buffer) => {
        got += d;
        if (got.includes('\n')) res(got);
      });
      c.socket.on('close', () => res(got));
    });
    const request = readAll(plain);
    c.socket.write('QUERY\r\n');
    await until(() => plain.bytesRead >= 7, 3000, 'the request at the backend');
    raw.end(); // TCP FIN under the TLS layer: no close_notify
    expect(await request).toBe('QUERY\r\n');
    plain.end('ANSWER\r\n');
    expect(await reply).toBe('ANSWER\r\n');
    c.socket.destroy();
    await c.closed;
    await until(() => engine.sessionCount === 0, 3000, 'session cleanup');
  });

  it('client reset → backend socket closes', async () => {
    const { c, r } = await connectPair(served);
    const plain = r.plaintext.toSocket();
    plain.on('error', () => {});
    const closed = new Promise<void>((res) => plain.once('close', () => res()));
    plain.resume();
    c.socket.destroy();
    await closed;
    await until(() => engine.sessionCount === 0, 3000, 'session cleanup');
  });

  it('backend closes its end → client connection closes', async () => {
    const { c, r } = await connectPair(served);
    c.socket.resume();
    r.plaintext.close();
    await c.closed;
    await until(() => engine.sessionCount === 0, 3000, 'session cleanup');
  });
});

describe('TlsEngine: control', () => {
  let engine: TlsEngine;
  let served: Served;
  beforeAll(async () => {
    engine = new TlsEngine({ identities: [certs.server], ca: certs.ca, alpn: ['imap'] });
    served = await serve(engine);
  });
  afterAll(async () => {
    await served.close();
    await engine.close();
  });

  it('info returns what was negotiated (Buffer or hex key)', async () => {
    const { c, r } = await connectPair(served, {
      servername: 'localhost',
      ALPNProtocols: ['imap'],
    });
    const byBuf = await engine.control(r.controlKey, 'info');
    const byHex = await engine.control(r.controlKey.toString('hex'), 'info');
    expect(byBuf).toEqual(r.info);
    expect(byHex).toEqual(r.info);
    expect(byBuf).toMatchObject({
      version: 'TLSv1.3',
      alpn: 'imap',
      serverName: 'localhost',
      clientIdentity: null,
    });
    r.plaintext.close();
    c.socket.destroy();
  });

  it('exporter equals the client side exportKeyingMaterial', async () => {
    const { c, r } = await connectPair(served);
    const ctx = Buffer.from('some context');
    const mine = await engine.control(r.controlKey, 'exporter', {
      label: 'EXPERIMENTAL-tlsproxy-test',
      length: 32,
      context: ctx.toString('base64'),
    });
    const theirs = c.socket.exportKeyingMaterial(32, 'EXPERIMENTAL-tlsproxy-test', ctx);
    expect(Buffer.from(mine as string, 'base64').equals(theirs)).toBe(true);
    const noCtx = await engine.control(r.controlKey, 'exporter', {
      label: 'EXPERIMENTAL-x',
      length: 16,
    });
    expect(Buffer.from(noCtx as string, 'base64')).toEqual(
      // No context at all (RFC 5705 tells "no context" and "empty context" apart).
      c.socket.exportKeyingMaterial(16, 'EXPERIMENTAL-x', undefined as unknown as Buffer),
    );
    await expect(
      engine.control(r.controlKey, 'exporter', { label: 'x', length: 0 }),
    ).rejects.toMatchObject({ code: 'TLSPROXY_ERR_POOL_CONTROL' });
    await expect(engine.control(r.controlKey, 'exporter', { length: 16 })).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_POOL_CONTROL',
    });
    await expect(
      engine.control(r.controlKey, 'exporter', { label: 'x', length: 1025 }),
    ).rejects.toMatchObject({ code: 'TLSPROXY_ERR_POOL_CONTROL' });
    r.plaintext.close();
    c.socket.destroy();
  });

  it('unknown, wrong-length and malformed keys → TLSPROXY_ERR_POOL_UNKNOWN_KEY', async () => {
    const { c, r } = await connectPair(served);
    const wrong = Buffer.from(r.controlKey);
    wrong[15]! ^= 1;
    for (const key of [
      wrong,
      Buffer.alloc(16),
      r.controlKey.subarray(0, 15),
      Buffer.concat([r.controlKey, Buffer.alloc(1)]),
      Buffer.alloc(0),
      'zz',
      'not hex at all',
      `${r.controlKey.toString('hex')}00`,
    ]) {
      await expect(engine.control(key, 'info')).rejects.toMatchObject({
        code: 'TLSPROXY_ERR_POOL_UNKNOWN_KEY',
      });
    }
    await expect(engine.control(r.controlKey, 'bogus' as never)).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_POOL_CONTROL',
    });
    r.plaintext.close();
    c.socket.destroy();
  });

  it('a key stops working once its session is gone', async () => {
    const { c, r } = await connectPair(served);
    c.socket.destroy();
    r.plaintext.close();
    await until(() => engine.sessionCount === 0, 3000, 'session cleanup');
    await expect(engine.control(r.controlKey, 'info')).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_POOL_UNKNOWN_KEY',
    });
  });

  it('renegotiate on TLS 1.3 → TLSPROXY_ERR_POOL_TLS13_RENEGOTIATE', async () => {
    const { c, r } = await connectPair(served, certs.client);
    expect(r.info.version).toBe('TLSv1.3');
    await expect(engine.control(r.controlKey, 'renegotiate')).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_POOL_TLS13_RENEGOTIATE',
    });
    r.plaintext.close();
    c.socket.destroy();
  });

  it('renegotiate on TLS 1.2 asks for a client certificate after the fact', async () => {
    const { c, r } = await connectPair(served, { ...certs.client, maxVersion: 'TLSv1.2' });
    expect(r.info.version).toBe('TLSv1.2');
    expect(r.info.clientIdentity).toBeNull();
    c.socket.resume(); // the client must read to see the HelloRequest
    const plain = r.plaintext.toSocket();
    const id = (await engine.control(r.controlKey, 'renegotiate')) as { fingerprint256: string };
    expect(id?.fingerprint256).toBe(CLIENT_FP);
    const info = (await engine.control(r.controlKey, 'info')) as {
      clientIdentity: { fingerprint256: string };
    };
    expect(info.clientIdentity.fingerprint256).toBe(CLIENT_FP);
    // The session still carries data after the renegotiation.
    c.socket.pause();
    const got = nextData(plain);
    c.socket.write('after\r\n');
    expect(await got).toBe('after\r\n');
    plain.destroy();
    c.socket.destroy();
  });

  // Regression (review of the native engine): with a record half-written to a client that does
  // not read, OpenSSL refuses to write the HelloRequest (another record type: bad write retry)
  // and the session ended. The renegotiation waits for what was already sent instead.
  it('renegotiate while the client has not read what was sent: the data, then the question', {
    timeout: 20_000, // 8 MiB through TLS under ASan
  }, async () => {
    const { c, r } = await connectPair(served, { ...certs.client, maxVersion: 'TLSv1.2' });
    c.socket.pause();
    const plain = r.plaintext.toSocket();
    plain.on('error', () => {});
    const big = Buffer.alloc(8 * 1024 * 1024, 'x');
    plain.write(big);
    // Everything between the backend and the client fills up (socket buffers, the engine's).
    await new Promise((res) => setTimeout(res, 300));
    const reneg = engine.control(r.controlKey, 'renegotiate') as Promise<{
      fingerprint256: string;
    } | null>;
    reneg.catch(() => {});
    let got = 0;
    const all = new Promise<number>((res) => {
      c.socket.on('data', (d: Buffer) => {
        got += d.length;
        if (got >= big.length) res(got);
      });
      c.socket.on('close', () => res(got));
    });
    c.socket.resume();
    expect(await all).toBe(big.length);
    expect((await reneg)?.fingerprint256).toBe(CLIENT_FP);
    c.socket.pause();
    const back = nextData(plain);
    c.socket.write('after\r\n');
    expect(await back).toBe('after\r\n');
    plain.destroy();
    c.socket.destroy();
  });

  // Regression (found while testing the one above, which it made flaky): the backend's bytes met
  // the renegotiation's handshake in SSL_write (WANT_READ), the handshake then finished inside
  // SSL_read, and the native engine waited for the client to send again before retrying the
  // write — a client that only reads never did. A relay between client and engine holds the
  // client's second flight back, so the backend writes exactly while the engine is mid-handshake.
  it('renegotiate while the backend is sending: its data keeps flowing after the handshake', async () => {
    let held: Buffer[] | null = null;
    let flights = 0;
    let toEngine: net.Socket | undefined;
    const relay = net.createServer((fromClient) => {
      toEngine = net.connect(served.port, '127.0.0.1');
      toEngine.pipe(fromClient);
      fromClient.on('data', (d: Buffer) => {
        if (held && flights++ > 0)
          held.push(d); // the ClientHello passes, the next flight waits
        else toEngine?.write(d);
      });
      fromClient.on('error', () => {});
      toEngine.on('error', () => {});
    });
    await new Promise<void>((res) => relay.listen(0, '127.0.0.1', () => res()));
    try {
      const port = (relay.address() as net.AddressInfo).port;
      const c = client(port, { ...certs.client, maxVersion: 'TLSv1.2' });
      const [r] = await Promise.all([served.next(), c.secure]);
      const plain = r.plaintext.toSocket();
      plain.on('error', () => {});
      let got = 0;
      const big = Buffer.alloc(1024 * 1024, 'y');
      const all = new Promise<number>((res) => {
        c.socket.on('data', (d: Buffer) => {
          got += d.length;
          if (got >= big.length) res(got);
        });
        c.socket.on('close', () => res(got));
      });
      held = [];
      const reneg = engine.control(r.controlKey, 'renegotiate') as Promise<{
        fingerprint256: string;
      } | null>;
      await until(() => (held?.length ?? 0) > 0, 3000, "the client's second flight");
      plain.write(big); // the engine is waiting for that flight now
      await new Promise((res) => setTimeout(res, 100));
      const release = held;
      held = null;
      for (const d of release) toEngine?.write(d);
      expect((await reneg)?.fingerprint256).toBe(CLIENT_FP);
      expect(await all).toBe(big.length);
      plain.destroy();
      c.socket.destroy();
    } finally {
      toEngine?.destroy();
      await new Promise<void>((res) => relay.close(() => res()));
    }
  });

  it('renegotiate on TLS 1.2 without a client certificate → null, session goes on', async () => {
    const { c, r } = await connectPair(served, { maxVersion: 'TLSv1.2' });
    c.socket.resume();
    const plain = r.plaintext.toSocket();
    expect(await engine.control(r.controlKey, 'renegotiate')).toBeNull();
    c.socket.pause();
    const got = nextData(plain);
    c.socket.write('still here');
    expect(await got).toBe('still here');
    plain.destroy();
    c.socket.destroy();
  });

  it('renegotiate on TLS 1.2 with an untrusted certificate → null (not verified)', async () => {
    const { c, r } = await connectPair(served, { ...certs.rogue, maxVersion: 'TLSv1.2' });
    c.socket.resume();
    expect(await engine.control(r.controlKey, 'renegotiate')).toBeNull();
    expect(await engine.control(r.controlKey, 'info')).toMatchObject({ clientIdentity: null });
    r.plaintext.close();
    c.socket.destroy();
  });

  it('renegotiate without trusted CAs → TLSPROXY_ERR_POOL_CONTROL', async () => {
    const noCa = new TlsEngine({ identities: [certs.server] });
    const s2 = await serve(noCa);
    try {
      const { c, r } = await connectPair(s2, { maxVersion: 'TLSv1.2' });
      await expect(noCa.control(r.controlKey, 'renegotiate')).rejects.toMatchObject({
        code: 'TLSPROXY_ERR_POOL_CONTROL',
      });
      r.plaintext.close();
      c.socket.destroy();
    } finally {
      await s2.close();
      await noCa.close();
    }
  });

  it('close sends close_notify to the client and ends the session', async () => {
    const { c, r } = await connectPair(served);
    const plain = r.plaintext.toSocket();
    plain.resume();
    const all = readAll(c.socket);
    const plainClosed = new Promise<void>((res) => plain.once('close', () => res()));
    expect(await engine.control(r.controlKey, 'close')).toBeNull();
    expect(await all).toBe('');
    await c.closed;
    await plainClosed;
    await expect(engine.control(r.controlKey, 'info')).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_POOL_UNKNOWN_KEY',
    });
  });

  // Regression (CI under ASan): the native engine forgot the key only when its loop thread reported
  // the session ended, so a control right after 'close' (or after the client saw the close) could
  // still reach the closing session.
  it('the control key is dead as soon as close resolves', async () => {
    const { c, r } = await connectPair(served);
    r.plaintext.toSocket().resume();
    c.socket.resume();
    expect(await engine.control(r.controlKey, 'close')).toBeNull();
    await expect(engine.control(r.controlKey, 'info')).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_POOL_UNKNOWN_KEY',
    });
    await expect(engine.control(r.controlKey, 'close')).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_POOL_UNKNOWN_KEY',
    });
    await c.closed;
    await until(() => engine.sessionCount === 0);
  });

  it('engine.close() ends every session and refuses new handshakes', async () => {
    const e2 = new TlsEngine({ identities: [certs.server] });
    const s2 = await serve(e2);
    try {
      const { c, r } = await connectPair(s2);
      c.socket.resume();
      expect(e2.sessionCount).toBe(1);
      await e2.close();
      expect(e2.sessionCount).toBe(0);
      await c.closed;
      await expect(e2.control(r.controlKey, 'info')).rejects.toMatchObject({
        code: 'TLSPROXY_ERR_POOL_UNKNOWN_KEY',
      });
      r.plaintext.close();
      const c2 = client(s2.port, {});
      await expect(s2.next()).rejects.toMatchObject({ code: 'TLSPROXY_ERR_POOL_HANDSHAKE' });
      await c2.closed;
    } finally {
      await s2.close();
    }
  });
});

describe('TlsEngine: limits', () => {
  it('maxSessions refuses handshakes beyond the limit, and frees the slot on close', async () => {
    const engine = new TlsEngine({ identities: [certs.server], maxSessions: 1 });
    const served = await serve(engine);
    try {
      const first = await connectPair(served);
      const c2 = client(served.port, {});
      await expect(served.next()).rejects.toMatchObject({ code: 'TLSPROXY_ERR_POOL_HANDSHAKE' });
      await c2.closed;
      first.c.socket.destroy();
      first.r.plaintext.close();
      await until(() => engine.sessionCount === 0, 3000, 'session cleanup');
      const third = await connectPair(served);
      third.c.socket.destroy();
      third.r.plaintext.close();
    } finally {
      await served.close();
      await engine.close();
    }
  });
});

describe('TlsEngine: descriptors', () => {
  it('leaks none over 200 handshakes, successful and failing', { timeout: 60_000 }, async () => {
    const engine = new TlsEngine({ identities: [certs.server, certs.other], ca: certs.ca });
    let i = 0;
    const served = await serve(engine, () => {
      const k = i++ % 5;
      if (k === 1) return { checkServerName: () => false };
      if (k === 2) return { clientCert: 'required' };
      if (k === 3) return { handshakeTimeoutMs: 50 };
      return { clientCert: 'optional' };
    });
    const round = async (n: number) => {
      const k = n % 5;
      if (k === 3) {
        const raw = net.connect(served.port, '127.0.0.1');
        raw.on('error', () => {});
        await served.next().catch(() => {});
        raw.destroy();
        return;
      }
      const c = client(served.port, {
        servername: 'imap.example.test',
        ...(k === 4 ? certs.rogue : k === 0 ? certs.client : {}),
      });
      c.socket.on('error', () => {});
      const r = await served.next().catch(() => undefined);
      if (r) {
        const plain = r.plaintext.toSocket();
        await c.secure;
        const got = nextData(plain);
        c.socket.write('ping');
        await got;
        plain.destroy();
      }
      c.socket.resume();
      await c.closed;
    };
    try {
      for (let n = 0; n < 20; n++) await round(n);
      await until(() => engine.sessionCount === 0, 3000, 'warm-up cleanup');
      const before = fdCount();
      for (let n = 0; n < 200; n++) await round(n);
      await until(() => engine.sessionCount === 0, 5000, 'session cleanup');
      await until(() => fdCount() <= before, 5000, `fd count back to ${before} (${fdCount()})`);
      expect(fdCount()).toBeLessThanOrEqual(before);
    } finally {
      await served.close();
      await engine.close();
    }
  });
});
