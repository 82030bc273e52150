// The client role (issue 18) of the native engine, beyond pool's own connect suite (which runs
// against this engine in `npm run test:pool-suite`): the same verdicts as pool's node:tls engine
// for every kind of bad certificate (both engines side by side), hostile servers (garbage, a real
// server's flight cut at any offset, a server that vanishes), control on client sessions, limits
// and descriptors. Real node:tls servers and raw TCP peers on loopback.
import { execFileSync, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { detachSocket, type OwnedFd } from '@tlsproxy/fdpass';
import { type ConnectRequest, PoolError, TlsEngine } from '@tlsproxy/pool';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NativeTlsEngine } from '../src/index.js';
import { certs, fdCount, nextData, readAll, until } from './helpers.js';

const certDir = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
const SERVER_FP = new X509Certificate(certs.server.cert).fingerprint256;

interface Server {
  port: number;
  sockets: tls.TLSSocket[];
  close(): Promise<void>;
}

/** A node:tls server that greets with "hello\n" and echoes upper-cased. */
async function tlsServer(options: tls.TlsOptions, host = '127.0.0.1'): Promise<Server> {
  const sockets: tls.TLSSocket[] = [];
  const server = tls.createServer(options, (s) => {
    sockets.push(s);
    s.on('error', () => {});
    s.on('data', (d: Buffer) => s.write(d.toString('latin1').toUpperCase(), 'latin1'));
    s.on('end', () => s.end());
    s.write('hello\n');
  });
  server.on('tlsClientError', () => {});
  await new Promise<void>((r) => server.listen(0, host, r));
  return {
    port: (server.address() as net.AddressInfo).port,
    sockets,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A raw TCP server running `handler` for each connection. */
async function rawServer(handler: (s: net.Socket) => void): Promise<Server & { raw: net.Server }> {
  const open = new Set<net.Socket>();
  const server = net.createServer((s) => {
    open.add(s);
    s.on('close', () => open.delete(s));
    s.on('error', () => {});
    handler(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    sockets: [],
    raw: server,
    close: () =>
      new Promise<void>((r) => {
        for (const s of open) s.destroy();
        server.close(() => r());
      }),
  };
}

async function tcp(port: number, host = '127.0.0.1'): Promise<OwnedFd> {
  const s = net.connect({ port, host });
  await new Promise<void>((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  return detachSocket(s).fd;
}

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

/** Certificates from the test CA with the given validity, made with `openssl ca`. */
function issued(name: string, start: string, end: string): { cert: string; key: string } {
  const dir = mkdtempSync(join(tmpdir(), 'native-connect-'));
  try {
    const run = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
    run([
      'req',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      'k.pem',
      '-out',
      'r.csr',
      '-subj',
      `/CN=${name}`,
    ]);
    writeFileSync(join(dir, 'index.txt'), '');
    writeFileSync(join(dir, 'serial'), '01\n');
    writeFileSync(
      join(dir, 'ca.cnf'),
      '[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\nnew_certs_dir=.\nserial=serial\n' +
        'default_md=sha256\npolicy=p\nx509_extensions=ext\n[p]\ncommonName=supplied\n' +
        `[ext]\nsubjectAltName=DNS:${name}\n`,
    );
    run([
      'ca',
      '-batch',
      '-config',
      'ca.cnf',
      '-cert',
      join(certDir, 'ca.pem'),
      '-keyfile',
      join(certDir, 'ca.key'),
      '-in',
      'r.csr',
      '-out',
      'c.pem',
      '-startdate',
      start,
      '-enddate',
      end,
      '-notext',
    ]);
    return {
      cert: readFileSync(join(dir, 'c.pem'), 'utf8'),
      key: readFileSync(join(dir, 'k.pem'), 'utf8'),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('NativeTlsEngine.connect: the same verdicts as the node:tls engine', () => {
  const native = new NativeTlsEngine({ identities: [], connectOnly: true, threads: 1 });
  const node = new TlsEngine({ identities: [], connectOnly: true });
  const servers: Record<string, Server> = {};
  beforeAll(async () => {
    servers.good = await tlsServer({ ...certs.server });
    servers.selfSigned = await tlsServer({ ...certs.rogue });
    servers.expired = await tlsServer(issued('localhost', '20200101000000Z', '20210101000000Z'));
    servers.future = await tlsServer(issued('localhost', '20990101000000Z', '21000101000000Z'));
  });
  afterAll(async () => {
    for (const s of Object.values(servers)) await s.close();
    await native.close();
    await node.close();
  });

  const cases: Array<[string, string, Partial<ConnectRequest>]> = [
    ['a CA that did not issue it', 'good', { serverName: 'localhost', ca: certs.rogue.cert }],
    ["Node's roots", 'good', { serverName: 'localhost' }],
    ['another name', 'good', { serverName: 'nobody.example.test', ca: certs.ca }],
    ['another IP address', 'good', { serverName: '127.0.0.2', ca: certs.ca }],
    ['two labels under a wildcard', 'good', { serverName: 'a.b.wild.example.test', ca: certs.ca }],
    ['a self-signed certificate', 'selfSigned', { serverName: 'localhost', ca: certs.ca }],
    ['an expired certificate', 'expired', { serverName: 'localhost', ca: certs.ca }],
    ['a certificate not valid yet', 'future', { serverName: 'localhost', ca: certs.ca }],
    // Two faults at once: which one is named must not depend on the engine.
    ['expired, and another name', 'expired', { serverName: 'other.example.test', ca: certs.ca }],
    ['not yet valid, another name', 'future', { serverName: 'other.example.test', ca: certs.ca }],
    ['unknown CA, another name', 'good', { serverName: 'x.example.test', ca: certs.rogue.cert }],
  ];
  for (const [what, server, request] of cases) {
    it(`${what}: TLSPROXY_ERR_POOL_VERIFY with pool's reason`, async () => {
      const port = servers[server]!.port;
      const want = await failure(node.connect(await tcp(port), request as ConnectRequest));
      const got = await failure(native.connect(await tcp(port), request as ConnectRequest));
      expect([got.code, got.reason]).toEqual([want.code, want.reason]);
      expect(got.code).toBe('TLSPROXY_ERR_POOL_VERIFY');
      expect(got.message).toMatch(/^server certificate rejected \(/);
    });
  }

  it('IPv6 and IPv4 addresses are checked against the iPAddress SANs, without SNI', async () => {
    const v6 = await tlsServer({ ...certs.server }, '::1');
    const names: Array<string | false> = [];
    const raw = tls.createServer({ ...certs.server }, (s) => {
      names.push((s as unknown as { servername: string | false }).servername);
      s.end();
    });
    await new Promise<void>((r) => raw.listen(0, '127.0.0.1', r));
    try {
      const r = await native.connect(await tcp(v6.port, '::1'), {
        serverName: '::1',
        ca: certs.ca,
      });
      expect(r.info.serverIdentity.fingerprint256).toBe(SERVER_FP);
      r.plaintext.close();
      const port = (raw.address() as net.AddressInfo).port;
      (
        await native.connect(await tcp(port), { serverName: '127.0.0.1', ca: certs.ca })
      ).plaintext.close();
      (
        await native.connect(await tcp(port), { serverName: 'localhost', ca: certs.ca })
      ).plaintext.close();
      await until(() => names.length === 2, 3000, 'both handshakes on the server');
      expect(names).toEqual([false, 'localhost']);
    } finally {
      await v6.close();
      raw.close();
    }
  });
});

describe('NativeTlsEngine.connect: hostile servers', () => {
  let engine: NativeTlsEngine;
  let good: Server;
  beforeAll(async () => {
    engine = new NativeTlsEngine({ identities: [], connectOnly: true, threads: 2 });
    good = await tlsServer({ ...certs.server });
  });
  afterAll(async () => {
    await good.close();
    await engine.close();
  });

  it('property: garbage instead of a ServerHello (then FIN, reset or silence) fails with a PoolError', async () => {
    let reply = Buffer.alloc(0);
    let how: 'end' | 'reset' | 'stay' = 'end';
    const bogus = await rawServer((s) => {
      s.once('data', () => {
        if (how === 'reset') s.write(reply, () => s.resetAndDestroy());
        else if (how === 'end') s.end(reply);
        else s.write(reply);
      });
    });
    const before = fdCount();
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(
            fc.uint8Array({ maxLength: 200 }),
            // A handshake record of any length with junk in it.
            fc
              .tuple(fc.integer({ min: 0, max: 0xffff }), fc.uint8Array({ maxLength: 64 }))
              .map(([n, b]) => Uint8Array.from([0x16, 0x03, 0x03, n >> 8, n & 255, ...b])),
            // A ServerHello header promising a body that is junk.
            fc
              .uint8Array({ minLength: 1, maxLength: 80 })
              .map((b) =>
                Uint8Array.from([0x16, 0x03, 0x03, 0, b.length + 4, 0x02, 0, 0, b.length, ...b]),
              ),
            fc.constant(Uint8Array.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])),
          ),
          fc.constantFrom('end', 'reset', 'stay'),
          async (bytes, h) => {
            reply = Buffer.from(bytes);
            how = h as typeof how;
            const err = await failure(
              engine.connect(await tcp(bogus.port), {
                serverName: 'localhost',
                ca: certs.ca,
                handshakeTimeoutMs: 300,
              }),
            );
            expect(['TLSPROXY_ERR_POOL_HANDSHAKE', 'TLSPROXY_ERR_POOL_TIMEOUT']).toContain(
              err.code,
            );
          },
        ),
        { numRuns: 60 },
      );
      expect(engine.sessionCount).toBe(0);
      await until(() => fdCount() <= before, 3000, `fd count back to ${before}`);
    } finally {
      await bogus.close();
    }
  });

  it('property: a real server flight cut at any offset (FIN or reset) fails cleanly', async () => {
    // The server and the man in the middle run in a child process: this process's descriptor
    // count is then the engine's and the test's own.
    const child = spawn(
      process.execPath,
      [fileURLToPath(new URL('./fixtures/cut-server.mjs', import.meta.url))],
      {
        stdio: ['pipe', 'pipe', 'inherit'],
      },
    );
    const [port, controlPort] = (
      await new Promise<string>((r) => child.stdout!.once('data', (d: Buffer) => r(String(d))))
    )
      .trim()
      .split(' ')
      .map(Number) as [number, number];
    const control = net.connect(controlPort!, '127.0.0.1');
    control.setEncoding('utf8');
    await new Promise<void>((r) => control.once('connect', () => r()));
    const setCut = (n: number, reset: boolean) =>
      new Promise<void>((r) => {
        control.once('data', () => r());
        control.write(`${n} ${reset}\n`);
      });
    const before = fdCount();
    try {
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 0, max: 3000 }), fc.boolean(), async (n, reset) => {
          await setCut(n, reset);
          const p = engine.connect(await tcp(port), {
            serverName: 'localhost',
            ca: certs.ca,
            handshakeTimeoutMs: 2000,
          });
          // Past the whole flight the handshake may succeed; then the session just ends.
          const result = await p.then(
            (ok) => ok,
            (e: unknown) => e,
          );
          if (result instanceof PoolError)
            expect(['TLSPROXY_ERR_POOL_HANDSHAKE', 'TLSPROXY_ERR_POOL_TIMEOUT']).toContain(
              result.code,
            );
          else (result as { plaintext: OwnedFd }).plaintext.close();
        }),
        { numRuns: 50 },
      );
      await until(() => engine.sessionCount === 0, 5000, 'sessions to end');
      await until(() => fdCount() <= before, 3000, `fd count back to ${before}`);
    } finally {
      control.destroy();
      child.stdin!.end();
    }
  });

  it('a server that accepts and closes at once, or resets: TLSPROXY_ERR_POOL_HANDSHAKE', async () => {
    for (const reset of [false, true]) {
      // (A reset on accept could beat our own connect: reset on the ClientHello instead.)
      const rude = await rawServer((s) =>
        reset ? s.once('data', () => s.resetAndDestroy()) : s.end(),
      );
      try {
        const err = await failure(
          engine.connect(await tcp(rude.port), { serverName: 'localhost', ca: certs.ca }),
        );
        expect(err.code).toBe('TLSPROXY_ERR_POOL_HANDSHAKE');
      } finally {
        await rude.close();
      }
    }
  });
});

describe('NativeTlsEngine.connect: sessions', () => {
  let engine: NativeTlsEngine;
  let server: Server;
  beforeAll(async () => {
    engine = new NativeTlsEngine({
      identities: [certs.server, { ...certs.client, names: ['alice'] }],
      threads: 2,
    });
    server = await tlsServer({ ...certs.server });
  });
  afterAll(async () => {
    await server.close();
    await engine.close();
  });

  it("exporter equals the server's own export; info; renegotiate refused; close ends it once", async () => {
    let ended = 0;
    const r = await engine.connect(await tcp(server.port), {
      serverName: 'localhost',
      ca: certs.ca,
      onEnd: () => {
        ended++;
      },
    });
    const plain = r.plaintext.toSocket({ allowHalfOpen: true });
    expect(await nextData(plain)).toBe('hello\n');
    const theirs = server.sockets.at(-1)!;
    for (const context of [undefined, Buffer.from('ctx')]) {
      const ours = await engine.control(r.controlKey, 'exporter', {
        label: 'EXPORTER-test',
        length: 48,
        ...(context ? { context: context.toString('base64') } : {}),
      });
      expect(ours).toBe(
        theirs.exportKeyingMaterial(48, 'EXPORTER-test', context as Buffer).toString('base64'),
      );
    }
    expect(await engine.control(r.controlKey, 'info')).toEqual(r.info);
    await expect(engine.control(r.controlKey, 'renegotiate')).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_POOL_CONTROL',
    });
    const rest = readAll(plain);
    await engine.control(r.controlKey, 'close');
    await rest;
    await until(() => ended === 1, 5000, 'onEnd');
    plain.destroy();
    await new Promise((res) => setTimeout(res, 100));
    expect(ended).toBe(1);
  });

  it('1 MiB each way through a client session, byte for byte', async () => {
    const r = await engine.connect(await tcp(server.port), {
      serverName: 'localhost',
      ca: certs.ca,
    });
    const plain = r.plaintext.toSocket({ allowHalfOpen: true });
    const data = Buffer.alloc(1 << 20, 'abcdefghij');
    const all = readAll(plain);
    plain.end(data);
    const got = await all;
    expect(got.subarray(0, 6).toString()).toBe('hello\n');
    expect(
      got.subarray(6).equals(Buffer.from(data.toString('latin1').toUpperCase(), 'latin1')),
    ).toBe(true);
    plain.destroy();
  });

  it('a TLS 1.3 server that requires a certificate gets the named identity', async () => {
    const strict = await tlsServer({
      ...certs.server,
      ca: certs.ca,
      requestCert: true,
      rejectUnauthorized: true,
    });
    try {
      const r = await engine.connect(await tcp(strict.port), {
        serverName: 'localhost',
        ca: certs.ca,
        clientIdentity: 'Alice',
        alpn: ['x'],
      });
      expect(r.info.version).toBe('TLSv1.3');
      expect(r.info.alpn).toBeNull();
      const plain = r.plaintext.toSocket();
      expect(await nextData(plain)).toBe('hello\n');
      const peer = strict.sockets.at(-1)!.getPeerX509Certificate();
      expect(peer?.subject).toMatch(/CN=alice/);
      plain.destroy();
    } finally {
      await strict.close();
    }
  });

  it('maxSessions counts connects in progress; close() rejects them and closes the socket', async () => {
    const silent = await rawServer((s) => s.resume());
    const limited = new NativeTlsEngine({
      identities: [],
      connectOnly: true,
      maxSessions: 1,
      threads: 1,
    });
    const before = fdCount();
    try {
      const pending = limited.connect(await tcp(silent.port), {
        serverName: 'localhost',
        ca: certs.ca,
      });
      pending.catch(() => {});
      const err = await failure(
        limited.connect(await tcp(silent.port), { serverName: 'localhost', ca: certs.ca }),
      );
      expect(err.message).toMatch(/session limit/);
      await limited.close();
      const closed = await failure(pending);
      expect(closed.code).toBe('TLSPROXY_ERR_POOL_HANDSHAKE');
      await until(() => fdCount() <= before, 3000, `fd count back to ${before}`);
    } finally {
      await limited.close();
      await silent.close();
    }
  });

  it('reload: live client sessions keep going; identities named afresh', async () => {
    const r = await engine.connect(await tcp(server.port), {
      serverName: 'localhost',
      ca: certs.ca,
      clientIdentity: 'alice',
    });
    engine.reload({ identities: [certs.server, { ...certs.client, names: ['bob'] }] });
    const plain = r.plaintext.toSocket();
    expect(await nextData(plain)).toBe('hello\n');
    plain.write('after reload');
    expect(await nextData(plain)).toBe('AFTER RELOAD');
    const err = await failure(
      engine.connect(await tcp(server.port), {
        serverName: 'localhost',
        ca: certs.ca,
        clientIdentity: 'alice',
      }),
    );
    expect(err.message).toMatch(/no identity named "alice"/);
    (
      await engine.connect(await tcp(server.port), {
        serverName: 'localhost',
        ca: certs.ca,
        clientIdentity: 'bob',
      })
    ).plaintext.close();
    plain.destroy();
    engine.reload({ identities: [certs.server, { ...certs.client, names: ['alice'] }] });
  });

  it('a connect-only engine refuses handshake() and has no identities', async () => {
    const only = new NativeTlsEngine({ identities: [], connectOnly: true, threads: 1 });
    try {
      expect(only.serverNames()).toEqual([]);
      expect(() => only.identities).toThrow(/only connect/);
      const err = await failure(only.handshake(await tcp(server.port)));
      expect(err.code).toBe('TLSPROXY_ERR_POOL_CONFIG');
      expect(() => new NativeTlsEngine({ identities: [] })).toThrow(/at least one identity/);
    } finally {
      await only.close();
    }
  });
});
