// The client role through the tlspool daemon (issue 18): RemoteTlsEngine.connect sends the
// descriptor and the request's data ('connect', the CAs as the attachment, only the client
// identity's NAME) and gets the plaintext end, the control key and the server's identity back.
// Real node:tls servers on loopback; the daemon runs in this process on a real socket.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, defineProtocol, listen, type Peer } from '@tlsproxy/fdpass';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ConnectRequest,
  PoolDaemon,
  PoolError,
  poolProtocol,
  RemoteTlsEngine,
  TlsEngine,
} from '../src/index.js';
import { netServer, silentServer, type TlsServer, tcp, tlsServer } from './connect-helpers.js';
import { certs, fdCount, nextData, readAll, until } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'tlspool-connect-'));
const sock = join(dir, 'pool.sock');
let engine: TlsEngine;
let daemon: PoolDaemon;
let remote: RemoteTlsEngine;
let server: TlsServer;
let strict: TlsServer;
const warnings: string[] = [];

beforeAll(async () => {
  // The daemon holds the client key; the requesting side only ever names it.
  engine = new TlsEngine({ identities: [certs.server, { ...certs.client, names: ['alice'] }] });
  daemon = new PoolDaemon(engine, { path: sock, log: (_l, m) => warnings.push(m) });
  remote = new RemoteTlsEngine({ socket: sock });
  server = await tlsServer({ ...certs.server });
  strict = await tlsServer({
    ...certs.server,
    ca: certs.ca,
    requestCert: true,
    rejectUnauthorized: true,
  });
});
afterAll(async () => {
  await server.close();
  await strict.close();
  await remote.close();
  await daemon.close();
  rmSync(dir, { recursive: true, force: true });
});

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

/** A channel of our own to the daemon, speaking the protocol by hand. */
async function channel(): Promise<Peer> {
  const ch = await connect({ path: sock }, { timeoutMs: 2000 });
  const peer = poolProtocol.attach(ch);
  await peer.ready;
  return peer;
}

describe('RemoteTlsEngine.connect', () => {
  for (const as of ['fd', 'socket'] as const) {
    it(`connects through the daemon (${as}): server identity, bytes both ways, onEnd`, async () => {
      let ended = false;
      const r = await remote.connect(await tcp(server.port, as as 'fd'), {
        serverName: 'localhost',
        ca: certs.ca,
        onEnd: () => {
          ended = true;
        },
      });
      expect(r.controlKey).toHaveLength(16);
      expect(r.info.serverName).toBe('localhost');
      expect(r.info.serverIdentity.san.dns).toContain('localhost');
      const plain = r.plaintext.toSocket({ allowHalfOpen: true });
      expect(await nextData(plain)).toBe('hello\n');
      plain.write('abc');
      expect(await nextData(plain)).toBe('ABC');
      const info = (await remote.control(r.controlKey, 'info')) as typeof r.info;
      expect(info.serverIdentity.fingerprint256).toBe(r.info.serverIdentity.fingerprint256);
      const rest = readAll(plain);
      plain.end();
      await rest;
      await until(() => ended, 5000, 'session-end from the daemon');
      plain.destroy();
    });
  }

  it('presents the client certificate the daemon holds, by name', async () => {
    const r = await remote.connect(await tcp(strict.port, 'fd'), {
      serverName: 'localhost',
      ca: certs.ca,
      clientIdentity: 'alice',
    });
    const plain = r.plaintext.toSocket();
    expect(await nextData(plain)).toBe('hello\n');
    expect(strict.clientNames.at(-1)).toBe('alice');
    plain.destroy();
  });

  it('wrong CA, wrong name, IP address: the reason survives the trip', async () => {
    const rogue = await failure(
      remote.connect(await tcp(server.port, 'fd'), {
        serverName: 'localhost',
        ca: certs.rogue.cert,
      }),
    );
    expect([rogue.code, rogue.reason]).toEqual(['TLSPROXY_ERR_POOL_VERIFY', 'unknown-ca']);
    expect(rogue.message).toMatch(/^server certificate rejected \(unknown-ca\)/);
    const name = await failure(
      remote.connect(await tcp(server.port, 'fd'), {
        serverName: 'other.example.test',
        ca: certs.ca,
      }),
    );
    expect([name.code, name.reason]).toEqual(['TLSPROXY_ERR_POOL_VERIFY', 'name-mismatch']);
    const roots = await failure(
      remote.connect(await tcp(server.port, 'fd'), { serverName: 'localhost' }),
    );
    expect(roots.reason).toBe('unknown-ca');
    const ip = await remote.connect(await tcp(server.port, 'fd'), {
      serverName: '::1',
      ca: certs.ca,
    });
    expect(ip.info.serverName).toBe('::1');
    ip.plaintext.close();
  });

  it('an unknown identity name and bad fields are the daemon’s TLSPROXY_ERR_POOL_CONFIG', async () => {
    const bob = await failure(
      remote.connect(await tcp(server.port, 'fd'), {
        serverName: 'localhost',
        ca: certs.ca,
        clientIdentity: 'bob',
      }),
    );
    expect(bob.code).toBe('TLSPROXY_ERR_POOL_CONFIG');
    expect(bob.message).toMatch(/no identity named "bob"/);
    const v = await failure(
      remote.connect(await tcp(server.port, 'fd'), {
        serverName: 'localhost',
        minVersion: 'SSLv3' as never,
      }),
    );
    expect(v.code).toBe('TLSPROXY_ERR_POOL_CONFIG');
  });

  it('a CA too big for the channel is refused here, and the socket closed', async () => {
    const before = fdCount();
    const err = await failure(
      remote.connect(await tcp(server.port, 'fd'), {
        serverName: 'localhost',
        ca: certs.ca.repeat(200),
      }),
    );
    expect(err.code).toBe('TLSPROXY_ERR_POOL_CONFIG');
    await until(() => fdCount() <= before, 3000, 'descriptors back');
  });

  it('a silent server: TLSPROXY_ERR_POOL_TIMEOUT from the daemon', async () => {
    const silent = await silentServer();
    try {
      const err = await failure(
        remote.connect(await tcp(silent.port, 'fd'), {
          serverName: 'localhost',
          ca: certs.ca,
          handshakeTimeoutMs: 200,
        }),
      );
      expect(err.code).toBe('TLSPROXY_ERR_POOL_TIMEOUT');
    } finally {
      await silent.close();
    }
  });

  it('no descriptor stays open after failures (daemon and requester in this process)', async () => {
    const silent = await silentServer();
    const tries: Array<[number, ConnectRequest]> = [
      [server.port, { serverName: 'localhost', ca: certs.rogue.cert }],
      [server.port, { serverName: 'nobody.example.test', ca: certs.ca }],
      [server.port, { serverName: 'localhost', ca: 'junk' }],
      [server.port, { serverName: 'localhost', clientIdentity: 'bob' }],
      [silent.port, { serverName: 'localhost', ca: certs.ca, handshakeTimeoutMs: 100 }],
    ];
    const round = async () => {
      for (const [port, request] of tries)
        for (const as of ['fd', 'socket'] as const)
          await failure(remote.connect(await tcp(port, as as 'fd'), request));
    };
    try {
      await round();
      const before = fdCount();
      for (let i = 0; i < 3; i++) await round();
      await until(() => fdCount() <= before, 3000, `fd count back to ${before}`);
      expect(fdCount()).toBe(before);
    } finally {
      await silent.close();
    }
  });
});

describe('the daemon and hostile connect requests', () => {
  it('property: any request body is answered (established or an error), the descriptor is never leaked, the daemon lives on', async () => {
    const peer = await channel();
    const protoNames = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf'];
    const value = fc.oneof(
      fc.string({ maxLength: 12 }),
      fc.constantFrom('localhost', '127.0.0.1', 'alice', 'TLSv1.3', 'TLSv1.2', ...protoNames),
      fc.integer(),
      fc.double(),
      fc.boolean(),
      fc.constant(null),
      fc.array(fc.string({ maxLength: 4 }), { maxLength: 3 }),
      fc.dictionary(fc.constantFrom(...protoNames), fc.string(), { maxKeys: 2 }),
    );
    const keys = fc.constantFrom(
      'serverName',
      'clientIdentity',
      'alpn',
      'minVersion',
      'handshakeTimeoutMs',
      'idleTimeoutMs',
      'connectionId',
      'sessionEnd',
      'ca',
      ...protoNames,
    );
    const body = fc.dictionary(keys, value, { maxKeys: 6 });
    const attachment = fc.oneof(
      fc.constant(Buffer.alloc(0)),
      fc.constant(Buffer.from(certs.ca)),
      fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
    );
    const before = fdCount();
    await fc.assert(
      fc.asyncProperty(body, attachment, async (b, att) => {
        const fd = await tcp(server.port, 'fd');
        // JSON keeps "__proto__" as a plain key on the wire, as a hostile peer would send it.
        const request = JSON.parse(JSON.stringify(b)) as Record<string, unknown>;
        try {
          const r = await peer.request(
            'connect',
            { request },
            {
              fds: [fd],
              ...(att.length > 0 ? { attachment: att } : {}),
              timeoutMs: 10_000,
            },
          );
          expect(r.type).toBe('established');
          for (const f of r.fds) f.close();
        } catch (err) {
          expect(typeof (err as { remoteCode?: unknown }).remoteCode).toBe('string');
        }
      }),
      { numRuns: 60 },
    );
    expect(peer.closed).toBe(false);
    peer.close();
    await until(() => fdCount() <= before, 5000, `fd count back to ${before}`);
    // The daemon still serves.
    const r = await remote.connect(await tcp(server.port, 'fd'), {
      serverName: 'localhost',
      ca: certs.ca,
    });
    r.plaintext.close();
  });

  it('a daemon that hangs up before its hello: a PoolError, and the socket closed', async () => {
    const path = join(dir, 'rude.sock');
    const srv = listen({ path });
    srv.on('connection', (ch) => ch.close());
    const rude = new RemoteTlsEngine({ socket: path });
    try {
      const before = fdCount();
      for (const call of [
        async () => rude.connect(await tcp(server.port, 'fd'), { serverName: 'localhost' }),
        async () => rude.handshake(await tcp(server.port, 'fd')),
      ]) {
        const err = await call().then(
          () => null,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(PoolError);
        expect((err as PoolError).code).toBe('TLSPROXY_ERR_POOL_HANDSHAKE');
      }
      await until(() => fdCount() <= before, 3000, 'descriptors back');
    } finally {
      await rude.close();
      srv.close();
    }
  });

  it('a daemon older than connect: TLSPROXY_ERR_POOL_UNSUPPORTED, socket closed', async () => {
    // The same protocol name and version without the 'connect' message, as before issue 18.
    const messages = Object.fromEntries(
      [...poolProtocol.messages].filter(([k]) => k !== 'connect' && k !== 'hello' && k !== 'error'),
    );
    const old = defineProtocol({
      name: poolProtocol.name,
      version: poolProtocol.version,
      messages,
    });
    const oldSock = join(dir, 'old.sock');
    const srv = listen({ path: oldSock });
    srv.on('connection', (ch) => {
      const p = old.attach(ch);
      p.on('message', (m) => {
        for (const f of m.fds) f.close();
        if (m.type === 'server-names') p.reply(m, 'names', { names: [] });
      });
    });
    const oldRemote = new RemoteTlsEngine({ socket: oldSock });
    try {
      const err = await failure(
        oldRemote.connect(await tcp(server.port, 'fd'), { serverName: 'localhost' }),
      );
      expect(err.code).toBe('TLSPROXY_ERR_POOL_UNSUPPORTED');
    } finally {
      await oldRemote.close();
      srv.close();
    }
  });
});

describe('tlspool --connect-only, a separate process holding the client key', () => {
  it('connects with the identity it names, and refuses server-side handshakes', async () => {
    const bin = fileURLToPath(new URL('../bin/tlspool.js', import.meta.url));
    const certDir = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
    const path = join(dir, 'client-pool.sock');
    const child = spawn(
      process.execPath,
      [
        bin,
        '--socket',
        path,
        '--connect-only',
        '--cert',
        join(certDir, 'client.pem'),
        '--key',
        join(certDir, 'client.key'),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let log = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      log += d;
    });
    const pool = new RemoteTlsEngine({ socket: path });
    try {
      await until(() => log.includes('tlspool listening'), 5000, 'tlspool to listen');
      // The client certificate's CN is its name (it has no DNS subjectAltName).
      const r = await pool.connect(await tcp(strict.port, 'fd'), {
        serverName: 'localhost',
        ca: certs.ca,
        clientIdentity: 'alice',
      });
      const plain = r.plaintext.toSocket();
      expect(await nextData(plain)).toBe('hello\n');
      expect(strict.clientNames.at(-1)).toBe('alice');
      plain.destroy();
      const refused = await failure(pool.handshake(await tcp(server.port, 'fd')));
      expect(refused.code).toBe('TLSPROXY_ERR_POOL_CONFIG');
      expect(refused.message).toMatch(/only connects/);
      // A server that hangs up on the ClientHello (FIN, then a reset): the daemon must survive
      // it (it once threw out of its event loop here) and go on serving.
      for (const reset of [false, true]) {
        const rude = netServer((s) => {
          s.on('error', () => {});
          s.once('data', () => (reset ? s.resetAndDestroy() : s.end()));
        });
        const port = await rude.listening;
        try {
          const err = await failure(
            pool.connect(await tcp(port, 'fd'), { serverName: 'localhost', ca: certs.ca }),
          );
          expect(err.code).toBe('TLSPROXY_ERR_POOL_HANDSHAKE');
        } finally {
          await rude.close();
        }
      }
      const again = await pool.connect(await tcp(strict.port, 'fd'), {
        serverName: 'localhost',
        ca: certs.ca,
        clientIdentity: 'alice',
      });
      again.plaintext.close();
      expect(child.exitCode).toBeNull();
    } finally {
      await pool.close();
      child.kill('SIGTERM');
    }
  }, 20_000);
});
