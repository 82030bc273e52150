import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { connect, detachSocket, FdpassError, listenSocket, socketpair } from '@tlsproxy/fdpass';
import { TlsEngine } from '@tlsproxy/pool';
import { afterEach, describe, expect, it } from 'vitest';
import { type Accepted, BackendError, type BackendServer, listen } from '../src/index.js';
import { closed, FakeProxy, fdCount, handoffInfo, nextData, tmpSock, until } from './helpers.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function setup(
  opts: Parameters<typeof listen>[0] extends infer T ? Exclude<T, string> : never = {},
): Promise<{ server: BackendServer; proxy: FakeProxy; path: string; logs: string[] }> {
  const path = tmpSock('t');
  const logs: string[] = [];
  const server = await listen({ path, log: (l) => logs.push(l), ...opts });
  cleanup.push(() => server.close());
  const proxy = await FakeProxy.connect({ path });
  cleanup.push(() => proxy.close());
  return { server, proxy, path, logs };
}

describe('listen()', () => {
  it('creates the socket file with mode 0600 by default, removes it on close', async () => {
    const path = tmpSock('mode');
    const server = await listen(path);
    expect(server.path).toBe(path);
    expect(statSync(path).isSocket()).toBe(true);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    await server.close();
    expect(existsSync(path)).toBe(false);
  });

  it('honours mode', async () => {
    const path = tmpSock('mode');
    const server = await listen({ path, mode: 0o660 });
    expect(statSync(path).mode & 0o777).toBe(0o660);
    await server.close();
  });

  it('listens in the abstract namespace', async () => {
    const name = `tlsproxy-backend-test-${process.pid}`;
    const server = await listen({ abstract: name });
    cleanup.push(() => server.close());
    const proxy = await FakeProxy.connect({ abstract: name });
    cleanup.push(() => proxy.close());
    const got = server.accept();
    const { client } = await proxy.handoff();
    const a = await got;
    expect(a.info.dialect).toBe('imap');
    a.socket.destroy();
    client.destroy();
  });

  it('takes a listening descriptor passed in', async () => {
    const path = tmpSock('fd');
    const fd = listenSocket(path, { backlog: 16 }).take();
    cleanup.push(() => rmSync(path, { force: true })); // a passed-in fd leaves its file alone
    const server = await listen({ fd });
    cleanup.push(() => server.close());
    const proxy = await FakeProxy.connect({ path });
    cleanup.push(() => proxy.close());
    const got = server.accept();
    const { client } = await proxy.handoff();
    (await got).socket.destroy();
    client.destroy();
  });

  it('systemd: a name that was not passed is TLSPROXY_ERR_BACKEND_SYSTEMD', async () => {
    await expect(listen({ systemd: 'imapd' })).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_BACKEND_SYSTEMD',
    });
  });

  it('needs an address', async () => {
    await expect(listen({})).rejects.toBeInstanceOf(TypeError);
  });
});

describe('accepting connections', () => {
  it('accept() returns the connection, its info and a socket that works both ways', async () => {
    const { server, proxy } = await setup();
    const info = handoffInfo({
      clientIdentity: {
        subject: 'CN=alice',
        issuer: 'CN=Test CA',
        san: { dns: [], email: ['alice@example.test'], uri: [] },
        fingerprint256: 'AA:BB',
      },
    });
    const got = server.accept();
    const { client, reply } = await proxy.handoff(info);
    expect(reply.type).toBe('accepted');
    const a = await got;
    expect(a.info).toEqual(info);
    expect(a.buffered.length).toBe(0);
    const toBackend = nextData(a.socket);
    client.write('a1 CAPABILITY\r\n');
    expect(await toBackend).toBe('a1 CAPABILITY\r\n');
    const toClient = nextData(client);
    a.socket.write('* CAPABILITY IMAP4rev1\r\n');
    expect(await toClient).toBe('* CAPABILITY IMAP4rev1\r\n');
    const clientClosed = closed(client);
    a.socket.end();
    await clientClosed;
  });

  it('connections that arrive before accept() are queued in order', async () => {
    const { server, proxy } = await setup();
    const clients = [];
    for (let i = 0; i < 3; i++) {
      clients.push((await proxy.handoff(handoffInfo({ connectionId: `q${i}` }))).client);
    }
    for (let i = 0; i < 3; i++) {
      const a = await server.accept();
      expect(a.info.connectionId).toBe(`q${i}`);
      a.socket.destroy();
    }
    for (const c of clients) c.destroy();
  });

  it('passes the buffered attachment', async () => {
    const { server, proxy } = await setup();
    const got = server.accept();
    const { client } = await proxy.handoff(
      handoffInfo({ handoff: 'plaintext', tls: null, controlKey: null }),
      Buffer.from('EHLO mx.example.test\r\n'),
    );
    const a = await got;
    expect(a.buffered.toString()).toBe('EHLO mx.example.test\r\n');
    expect(a.info.handoff).toBe('plaintext');
    await expect(a.control.info()).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_BACKEND_CONTROL',
    });
    a.socket.destroy();
    client.destroy();
  });

  it('async iterator yields connections and ends when the server closes', async () => {
    const { server, proxy } = await setup();
    const seen: string[] = [];
    const loop = (async () => {
      for await (const { socket, info } of server) {
        seen.push(info.connectionId);
        socket.destroy();
      }
      return 'ended';
    })();
    const c1 = (await proxy.handoff(handoffInfo({ connectionId: 'i1' }))).client;
    const c2 = (await proxy.handoff(handoffInfo({ connectionId: 'i2' }))).client;
    await until(() => seen.length === 2, 3000, 'two connections');
    await server.close();
    expect(await loop).toBe('ended');
    expect(seen).toEqual(['i1', 'i2']);
    c1.destroy();
    c2.destroy();
  });

  it("'connection' event gets (socket, info, accepted)", async () => {
    const { server, proxy } = await setup();
    const got = new Promise<[net.Socket, unknown, Accepted]>((resolve) =>
      server.once('connection', (socket, info, accepted) => resolve([socket, info, accepted])),
    );
    const { client } = await proxy.handoff(handoffInfo({ connectionId: 'ev' }));
    const [socket, info, accepted] = await got;
    expect(info).toMatchObject({ connectionId: 'ev' });
    expect(accepted.socket).toBe(socket);
    const echoed = nextData(client);
    socket.write('hi');
    expect(await echoed).toBe('hi');
    socket.destroy();
    client.destroy();
  });

  it('refuses a connection message with a descriptor that is not a stream socket', async () => {
    const { server, proxy } = await setup();
    const [a, b] = socketpair('seqpacket'); // SEQPACKET: not a stream
    await expect(proxy.send(handoffInfo(), a)).rejects.toBeInstanceOf(FdpassError);
    b.close();
    // The server keeps working.
    const got = server.accept();
    const { client } = await proxy.handoff();
    (await got).socket.destroy();
    client.destroy();
  });
});

describe('queued connections', () => {
  it('a queued connection reset by the client does not crash the backend', async () => {
    const { server, proxy, logs } = await setup();
    const tcp = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    cleanup.push(() => new Promise((r) => tcp.close(r)));
    const accepted = new Promise<net.Socket>((r) => tcp.once('connection', r));
    const c = net.connect((tcp.address() as net.AddressInfo).port, '127.0.0.1');
    c.on('error', () => {});
    await new Promise<void>((r) => c.once('connect', () => r()));
    const { fd } = detachSocket(await accepted);
    await proxy.send(
      handoffInfo({ handoff: 'crypt', tls: null, controlKey: null, serverName: null }),
      fd,
    );
    c.resetAndDestroy();
    await until(() => logs.some((l) => /queued connection failed.*ECONNRESET/.test(l)));
    const a = await server.accept();
    // The application sees the reset when it looks, not as an uncaught exception.
    const err = await new Promise<Error | undefined>((resolve) => {
      if (a.socket.destroyed) resolve(a.socket.errored ?? undefined);
      a.socket.once('error', resolve);
      a.socket.once('close', () => resolve(undefined));
      a.socket.resume();
    });
    expect(err === undefined || /ECONNRESET/.test(String(err))).toBe(true);
    a.socket.destroy();
  });
});

describe('onServerName', () => {
  it('accepts everything by default', async () => {
    const { proxy } = await setup();
    const r = await proxy.serverName('anything.example.test');
    expect(r.type).toBe('server-name-ok');
    expect(r.body.accept).toBe(true);
  });

  it('answers true / false from a sync callback, with the info passed', async () => {
    const seen: Array<[string, unknown]> = [];
    const { proxy } = await setup({
      onServerName: (name, info) => {
        seen.push([name, info]);
        return name === 'imap.example.test';
      },
    });
    expect((await proxy.serverName('imap.example.test')).body.accept).toBe(true);
    expect((await proxy.serverName('evil.example.test')).body.accept).toBe(false);
    expect(seen).toEqual([
      ['imap.example.test', { dialect: 'imap' }],
      ['evil.example.test', { dialect: 'imap' }],
    ]);
  });

  it('waits for an async callback; anything but true is a refusal', async () => {
    const { proxy } = await setup({
      onServerName: async (name) => {
        await new Promise((r) => setTimeout(r, 30));
        return (name === 'a' ? true : name === 'b' ? false : 'yes') as boolean;
      },
    });
    expect((await proxy.serverName('a')).body.accept).toBe(true);
    expect((await proxy.serverName('b')).body.accept).toBe(false);
    expect((await proxy.serverName('c')).body.accept).toBe(false);
  });

  it('a throwing callback answers with an error', async () => {
    const { proxy } = await setup({
      onServerName: () => {
        throw new Error('db down');
      },
    });
    await expect(proxy.serverName('x')).rejects.toThrow(/db down/);
  });
});

describe('peer checks and limits', () => {
  it('allowUids refusal closes the proxy channel and logs it', async () => {
    const path = tmpSock('uid');
    const logs: string[] = [];
    const server = await listen({ path, allowUids: [12345], log: (l) => logs.push(l) });
    cleanup.push(() => server.close());
    const ch = await connect({ path });
    const ended = new Promise<void>((r) => ch.once('close', () => r()));
    const { backendProtocol } = await import('../src/index.js');
    const peer = backendProtocol.attach(ch);
    await expect(peer.ready).rejects.toMatchObject({ code: 'TLSPROXY_ERR_FDPASS_CLOSED' });
    await ended;
    expect(logs.some((l) => /uid 0/.test(l) && /allowUids/.test(l))).toBe(true);
  });

  it('maxPending overflow → error reply and the descriptor is closed', async () => {
    const { server, proxy } = await setup({ maxPending: 2 });
    const c1 = (await proxy.handoff()).client;
    const c2 = (await proxy.handoff()).client;
    let refused: unknown;
    try {
      await proxy.handoff();
    } catch (err) {
      refused = err;
    }
    expect(refused).toBeInstanceOf(FdpassError);
    expect((refused as { remoteCode?: string }).remoteCode).toBe('TLSPROXY_ERR_BACKEND_BUSY');
    const c3 = (refused as { client: net.Socket }).client;
    c3.resume();
    await closed(c3); // the backend closed its end of the pair
    // accept() makes room again.
    (await server.accept()).socket.destroy();
    const c4 = (await proxy.handoff()).client;
    for (const c of [c1, c2, c4]) c.destroy();
  });

  it('close() rejects a pending accept(), closes queued sockets and the proxy channels', async () => {
    const { server, proxy } = await setup();
    const queuedClient = (await proxy.handoff()).client;
    (await server.accept()).socket.destroy();
    const pending = server.accept();
    queuedClient.destroy();
    const c2 = (await proxy.handoff()).client; // resolves the pending accept
    const a = await pending;
    const c3 = (await proxy.handoff()).client; // stays queued
    c3.resume();
    const waiting = server.accept().then(() => server.accept());
    const peerClosed = new Promise<void>((r) => proxy.peer.once('close', () => r()));
    const closeEvent = new Promise<void>((r) => server.once('close', () => r()));
    await server.close();
    await closeEvent;
    await expect(waiting).rejects.toMatchObject({ code: 'TLSPROXY_ERR_BACKEND_CLOSED' });
    await expect(server.accept()).rejects.toBeInstanceOf(BackendError);
    await peerClosed;
    // The already accepted connection is the application's: it still works.
    const got = nextData(c2);
    a.socket.write('still');
    expect(await got).toBe('still');
    a.socket.destroy();
    c2.destroy();
    await server.close(); // idempotent
  });

  it('close() rejects a pending accept() with TLSPROXY_ERR_BACKEND_CLOSED', async () => {
    const { server } = await setup();
    const p = server.accept();
    await server.close();
    await expect(p).rejects.toMatchObject({ code: 'TLSPROXY_ERR_BACKEND_CLOSED' });
  });
});

describe('control', () => {
  it('info(), exporter(), renegotiate(), close() travel to the proxy with the key', async () => {
    const { server, proxy } = await setup();
    proxy.onControl = (m) => {
      const { op, args } = m.body as { op: string; args: Record<string, unknown> };
      if (op === 'info') return { version: 'TLSv1.3', cipher: 'X', alpn: null, serverName: null };
      if (op === 'exporter') return Buffer.alloc(args.length as number, 7).toString('base64');
      if (op === 'renegotiate') return null;
      return null;
    };
    const got = server.accept();
    const { client } = await proxy.handoff();
    const a = await got;
    expect(await a.control.info()).toMatchObject({ version: 'TLSv1.3' });
    const ekm = await a.control.exporter('EXPERIMENTAL-x', 12, Buffer.from('ctx'));
    expect(ekm).toEqual(Buffer.alloc(12, 7));
    expect(await a.control.renegotiate()).toBeNull();
    await a.control.close();
    expect(proxy.controls.map((m) => m.body)).toEqual([
      { key: handoffInfo().controlKey, op: 'info', args: {} },
      {
        key: handoffInfo().controlKey,
        op: 'exporter',
        args: {
          label: 'EXPERIMENTAL-x',
          length: 12,
          context: Buffer.from('ctx').toString('base64'),
        },
      },
      { key: handoffInfo().controlKey, op: 'renegotiate', args: {} },
      { key: handoffInfo().controlKey, op: 'close', args: {} },
    ]);
    a.socket.destroy();
    client.destroy();
  });

  it('an error answer becomes TLSPROXY_ERR_BACKEND_CONTROL; a closed channel too', async () => {
    const { server, proxy } = await setup();
    proxy.onControl = () => {
      throw Object.assign(new Error('unknown control key'), {
        code: 'TLSPROXY_ERR_POOL_UNKNOWN_KEY',
      });
    };
    const got = server.accept();
    const { client } = await proxy.handoff();
    const a = await got;
    await expect(a.control.info()).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_BACKEND_CONTROL',
      message: expect.stringMatching(/TLSPROXY_ERR_POOL_UNKNOWN_KEY/),
    });
    proxy.close();
    await until(() => proxy.peer.closed);
    await expect(a.control.exporter('x', 8)).rejects.toBeInstanceOf(BackendError);
    a.socket.destroy();
    client.destroy();
  });

  it('round trip to a real TLS engine: info and exporter match the TLS client', async () => {
    const certs = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
    const read = (f: string) => readFileSync(certs + f, 'utf8');
    const engine = new TlsEngine({
      identities: [{ cert: read('server.pem'), key: read('server.key') }],
      ca: read('ca.pem'),
    });
    cleanup.push(() => engine.close());
    const { server, proxy } = await setup();
    proxy.onControl = (m) => {
      const { key, op, args } = m.body as { key: string; op: never; args: Record<string, unknown> };
      return engine.control(key, op, args);
    };
    const tcp = net.createServer({ pauseOnConnect: true }, async (s) => {
      const r = await engine.handshake(detachSocket(s).fd, { clientCert: 'required' });
      await proxy.send(
        handoffInfo({
          serverName: r.info.serverName,
          tls: { version: r.info.version, cipher: r.info.cipher, alpn: r.info.alpn },
          clientIdentity: r.info.clientIdentity,
          controlKey: r.controlKey.toString('hex'),
        }),
        r.plaintext,
      );
    });
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    cleanup.push(() => new Promise((r) => tcp.close(r)));
    const c = tls.connect({
      host: '127.0.0.1',
      port: (tcp.address() as net.AddressInfo).port,
      servername: 'imap.example.test',
      ca: read('ca.pem'),
      cert: read('client.pem'),
      key: read('client.key'),
    });
    c.on('error', () => {});
    const a = await server.accept();
    expect(a.info.serverName).toBe('imap.example.test');
    expect(a.info.clientIdentity?.san.email).toEqual(['alice@example.test']);
    const live = await a.control.info();
    expect(live).toMatchObject({ serverName: 'imap.example.test', version: a.info.tls!.version });
    const ctx = Buffer.from([1, 2, 3]);
    const mine = await a.control.exporter('EXPERIMENTAL-tlsproxy', 32, ctx);
    expect(mine.equals(c.exportKeyingMaterial(32, 'EXPERIMENTAL-tlsproxy', ctx))).toBe(true);
    const got = nextData(a.socket);
    c.write('a1 NOOP\r\n');
    expect(await got).toBe('a1 NOOP\r\n');
    const back = nextData(c);
    a.socket.write('a1 OK\r\n');
    expect(await back).toBe('a1 OK\r\n');
    const cClosed = new Promise<void>((r) => c.once('close', () => r()));
    await a.control.close();
    await cClosed;
    a.socket.destroy();
  });
});

describe('descriptors', () => {
  it('leaks none over many connections, refusals and channels', { timeout: 30_000 }, async () => {
    const path = tmpSock('leak');
    const server = await listen({ path, maxPending: 1 });
    cleanup.push(() => server.close());
    const round = async () => {
      const proxy = await FakeProxy.connect({ path });
      const { client } = await proxy.handoff();
      // Second one overflows maxPending (nobody is accepting yet).
      const refused = await proxy.handoff().then(
        () => {
          throw new Error('expected a maxPending refusal');
        },
        (e: { client: net.Socket }) => e.client,
      );
      const a = await server.accept();
      const echoed = nextData(client);
      a.socket.write('x');
      await echoed;
      a.socket.destroy();
      client.destroy();
      refused.destroy();
      await proxy.serverName('n');
      const peerClosed = new Promise<void>((r) => proxy.peer.once('close', () => r()));
      proxy.close();
      await peerClosed;
    };
    for (let i = 0; i < 10; i++) await round();
    await new Promise((r) => setTimeout(r, 50));
    const before = fdCount();
    for (let i = 0; i < 150; i++) await round();
    await until(() => fdCount() <= before, 5000, `fd count back to ${before} (${fdCount()})`);
    expect(fdCount()).toBeLessThanOrEqual(before);
  });
});
