// The client role (issue 18, role: client) on loopback: a local plaintext client → tlsproxy →
// a toy server that does STARTTLS and then real TLS (node:tls, the repo's test PKI), through the
// embedded engine's connect(). What must hold: the server's certificate is verified (a wrong CA
// or name fails closed, never plaintext), the local client sees the greeting and then only what
// came over TLS, nothing the server sent after its go-ahead ever reaches the local client, and
// the limits, logs and metrics work as for the server role.
import { spawn } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { consoleLogger, type ListenerConfig, Metrics, TlsProxy } from '../src/index.js';
import {
  LocalClient,
  startToyServer,
  type ToyServer,
  toyAfterTlsDialect,
  toyDialect,
} from './client-helpers.js';
import {
  cert,
  createEngine,
  engineName,
  fdCount,
  newEngine,
  quietLogger,
  sleep,
  tmpSock,
} from './helpers.js';

const tlspool = fileURLToPath(new URL('../../pool/bin/tlspool.js', import.meta.url));
const certs = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function proxyTo(
  serverPort: number,
  extra: Partial<ListenerConfig> = {},
  options: {
    metrics?: Metrics;
    identities?: Array<{ cert: Buffer; key: Buffer; names?: string[] }>;
    /** Hold each connect() result back this long (the engine's relay runs meanwhile). */
    connectLagMs?: number;
  } = {},
) {
  const logger = quietLogger();
  const lag = options.connectLagMs;
  const proxy = new TlsProxy({
    logger,
    createEngine: lag
      ? (o) => {
          const engine = newEngine(o);
          const connect = engine.connect?.bind(engine);
          if (connect)
            engine.connect = async (fd, request) => {
              const result = await connect(fd, request);
              await sleep(lag);
              return result;
            };
          return engine;
        }
      : createEngine,
    pool: {
      identities: options.identities ?? [{ cert: cert('server.pem'), key: cert('server.key') }],
    },
    ...(options.metrics ? { metrics: options.metrics } : {}),
  });
  cleanups.push(() => proxy.close());
  const l = await proxy.listen({
    role: 'client',
    dialect: toyDialect,
    listen: '127.0.0.1:0',
    connect: `127.0.0.1:${serverPort}`,
    tls: { ca: cert('ca.pem'), serverName: 'localhost' },
    ...extra,
  });
  return { proxy, logger, port: (l.server.address() as net.AddressInfo).port };
}

async function toy(options: Parameters<typeof startToyServer>[0] = {}): Promise<ToyServer> {
  const s = await startToyServer(options);
  cleanups.push(() => s.close());
  return s;
}

const waitFor = async (pred: () => boolean, what: string, timeoutMs = 10_000) => {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
};

const ended = (lines: string[]) => lines.filter((l) => l.includes('connection ended'));

// The embedded engine must have a client side (connect()): node:tls's and the native one
// (TLSPROXY_TEST_ENGINE=native) have; with an engine that has none yet this suite is skipped.
const embeddedConnects = await (async () => {
  const probe = new TlsProxy({
    logger: quietLogger(),
    createEngine,
    pool: { identities: [{ cert: cert('server.pem'), key: cert('server.key') }] },
  });
  const has = typeof probe.pool.connect === 'function';
  await probe.close();
  if (!has) console.warn('client role: the embedded TLS engine has no connect(): skipped');
  return has;
})();

describe.skipIf(!embeddedConnects)('client role: through TLS', () => {
  it('greeting first, then the local client talks to the server over verified TLS', async () => {
    const server = await toy();
    const { port, logger } = await proxyTo(server.port);
    const c = new LocalClient(port);
    await c.until(/^\* OK \[STARTTLS\] toy server ready\r\n/);
    c.socket.write('PING 1\r\n');
    await c.until(/PONG 1\r\n/);
    // The server saw it inside TLS (its only session is the TLS one).
    expect(server.sessions).toEqual([['PING 1']]);
    // Half-close: our FIN reaches the server through TLS, its answer still comes back.
    c.socket.end();
    await c.until(/BYE\r\n/);
    await c.closed;
    await waitFor(() => ended(logger.lines).length === 1, 'the closing line');
    expect(logger.lines.join('\n')).toMatch(
      /TLS established with the server .*"serverName":"localhost"/,
    );
    expect(ended(logger.lines)[0]).toMatch(/"outcome":"relayed"/);
    expect(ended(logger.lines)[0]).toMatch(/"role":"client"/);
  });

  it('presents the client certificate the engine holds under the name asked for', async () => {
    const server = await toy({ requestCert: true });
    const { port } = await proxyTo(
      server.port,
      { tls: { ca: cert('ca.pem'), serverName: 'localhost', clientIdentity: 'client:alice' } },
      {
        identities: [
          { cert: cert('server.pem'), key: cert('server.key') },
          { cert: cert('client.pem'), key: cert('client.key'), names: ['client:alice'] },
        ],
      },
    );
    const c = new LocalClient(port);
    c.socket.write('PING id\r\n');
    await c.until(/PONG id/);
    expect(server.peers).toEqual([expect.stringMatching(/CN=alice/)]);
  });

  it('a dialect’s afterTls drops the server’s own first answer over TLS (RFC 2817 §3.3)', async () => {
    const server = await toy({ prelude: 'PRELUDE answer to the upgrade\r\n* 1 EXISTS\r\n' });
    const { port } = await proxyTo(server.port, { dialect: toyAfterTlsDialect });
    const c = new LocalClient(port);
    c.socket.write('PING a\r\n');
    await c.until(/PONG a\r\n/);
    // What followed the dropped answer in the same read is relayed, in order.
    expect(c.text).toBe('* OK [STARTTLS] toy server ready\r\n* 1 EXISTS\r\nPONG a\r\n');
  });

  it('with a tlspool daemon: the handshake and the client key stay in the daemon', async () => {
    const server = await toy({ requestCert: true });
    const path = tmpSock('pool');
    const daemon = spawn(
      process.execPath,
      [
        tlspool,
        ...['--engine', engineName], // TLSPROXY_TEST_ENGINE
        '--socket',
        path,
        '--connect-only',
        '--cert',
        `${certs}client.pem`,
        '--key',
        `${certs}client.key`,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    cleanups.push(async () => {
      const gone = new Promise((r) => daemon.once('exit', r));
      daemon.kill();
      await gone;
    });
    let err = '';
    daemon.stderr!.on('data', (d) => {
      err += d;
    });
    await waitFor(() => err.includes('listening'), 'the daemon');
    const logger = quietLogger();
    const proxy = new TlsProxy({ logger, pool: { socket: path } });
    cleanups.push(() => proxy.close());
    const l = await proxy.listen({
      role: 'client',
      dialect: toyDialect,
      listen: '127.0.0.1:0',
      connect: `127.0.0.1:${server.port}`,
      // The daemon names a --cert identity by its DNS names, else its CN.
      tls: { ca: cert('ca.pem'), serverName: 'localhost', clientIdentity: 'alice' },
    });
    const c = new LocalClient((l.server.address() as net.AddressInfo).port);
    c.socket.write('PING d\r\n');
    await c.until(/PONG d/);
    expect(server.peers).toEqual([expect.stringMatching(/CN=alice/)]);
    c.socket.end();
    await c.closed;
    await waitFor(() => ended(logger.lines).length === 1, 'the closing line');
    expect(ended(logger.lines)[0]).toMatch(/"outcome":"relayed"/);
  }, 20_000);

  it('the server name defaults to the connect host (an IP address, in the certificate)', async () => {
    const server = await toy();
    const { port } = await proxyTo(server.port, { tls: { ca: cert('ca.pem') } });
    const c = new LocalClient(port);
    c.socket.write('PING ip\r\n');
    await c.until(/PONG ip/);
  });

  it('carries a megabyte each way with backpressure, byte for byte', async () => {
    // 2000 lines of 505 bytes up, as many PONGs back.
    const server = await toy();
    const { port } = await proxyTo(server.port);
    const c = new LocalClient(port);
    await c.until(/ready\r\n/);
    const lines = 2000;
    const line = `PING ${'x'.repeat(500)}\r\n`;
    c.socket.write(line.repeat(lines));
    const pongs = () => c.text.split(`PONG ${'x'.repeat(500)}\r\n`).length - 1;
    await waitFor(() => pongs() === lines, 'every answer', 30_000);
    expect(server.sessions[0]!.length).toBe(lines);
    expect(server.sessions[0]!.every((l) => l === line.slice(0, -2))).toBe(true);
  });
});

describe.skipIf(!embeddedConnects)('client role: fails closed', () => {
  it('a server certificate from a CA we do not trust: closed, a log line says why', async () => {
    const server = await toy({ cert: cert('rogue.pem'), key: cert('rogue.key') });
    const { port, logger } = await proxyTo(server.port);
    const c = new LocalClient(port);
    await c.closed;
    expect(c.text).toBe('');
    await waitFor(() => ended(logger.lines).length === 1, 'the closing line');
    const why = logger.lines.find((l) => l.includes('TLS with the server failed'));
    expect(why).toMatch(/TLSPROXY_ERR_POOL_VERIFY/);
    expect(why).toMatch(/"reason":"unknown-ca"/);
    expect(ended(logger.lines)[0]).toMatch(/"outcome":"tls_failed"/);
    // Nothing reached the server in plaintext after the go-ahead.
    expect(server.sessions.flat()).toEqual([]);
  });

  it('a certificate for another name: closed, reason name-mismatch', async () => {
    const server = await toy();
    const { port, logger } = await proxyTo(server.port, {
      tls: { ca: cert('ca.pem'), serverName: 'other.example.test' },
    });
    const c = new LocalClient(port);
    await c.closed;
    expect(c.text).toBe('');
    await waitFor(() => ended(logger.lines).length === 1, 'the closing line');
    expect(logger.lines.find((l) => l.includes('TLS with the server failed'))).toMatch(
      /"reason":"name-mismatch"/,
    );
  });

  it('a server without STARTTLS: the dialect’s own error to the local client, no plaintext', async () => {
    const server = await toy({ starttls: false });
    const { port, logger } = await proxyTo(server.port);
    const c = new LocalClient(port);
    c.socket.write('PING secret\r\n');
    await c.closed;
    expect(c.text).toBe('* BYE STARTTLS not offered by the server\r\n');
    // The local client's bytes were never read, so never sent: the server got only our LOGOUT.
    await waitFor(() => server.sessions[0]?.length === 1, 'the LOGOUT');
    expect(server.sessions[0]).toEqual(['z LOGOUT']);
    await waitFor(() => ended(logger.lines).length === 1, 'the closing line');
    expect(ended(logger.lines)[0]).toMatch(/STARTTLS not offered/);
    expect(ended(logger.lines)[0]).toMatch(/"outcome":"closed_in_preamble"/);
  });

  it('a server that floods after our goodbye is cut off, not read for the whole linger', async () => {
    // No STARTTLS offered: our IMAP client says LOGOUT and closes. The server then writes as
    // fast as it can; before, the proxy read and dropped it all for 2 s (hundreds of MB).
    let written = 0;
    let gone: () => void;
    const cutOff = new Promise<void>((r) => {
      gone = r;
    });
    // Half-open: it ignores our FIN and goes on writing.
    const evil = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => gone());
      s.on('close', () => gone());
      s.write('* OK [CAPABILITY IMAP4rev1] hi\r\n');
      s.once('data', () => {
        const chunk = Buffer.alloc(64 * 1024, 'x');
        const pump = () => {
          while (!s.destroyed && written < 1 << 30) {
            written += chunk.length;
            if (!s.write(chunk)) return;
          }
        };
        s.on('drain', pump);
        pump();
      });
    });
    await new Promise<void>((r) => evil.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise<void>((r) => evil.close(() => r())));
    const { port } = await proxyTo((evil.address() as net.AddressInfo).port, { dialect: 'imap' });
    const c = new LocalClient(port);
    await c.closed;
    await cutOff;
    // The kernel's buffers hold some megabytes; the proxy reads at most 64 KiB more.
    expect(written).toBeLessThan(32 << 20);
  });

  it('server text in log lines is escaped and bounded (text format)', async () => {
    const evil = net.createServer((s) => {
      s.on('error', () => {});
      s.resume();
      s.write(Buffer.from(`* OK \x1b[31mred\x9bforged line ${'y'.repeat(1000)}\r\n`, 'latin1'));
    });
    await new Promise<void>((r) => evil.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise<void>((r) => evil.close(() => r())));
    const out: string[] = [];
    const proxy = new TlsProxy({
      logger: consoleLogger('debug', (l) => out.push(l)),
      createEngine,
      pool: { identities: [], connectOnly: true },
    });
    cleanups.push(() => proxy.close());
    const l = await proxy.listen({
      role: 'client',
      dialect: toyDialect,
      listen: '127.0.0.1:0',
      connect: `127.0.0.1:${(evil.address() as net.AddressInfo).port}`,
      tls: { ca: cert('ca.pem'), serverName: 'localhost' },
    });
    const c = new LocalClient((l.server.address() as net.AddressInfo).port);
    await c.closed;
    await waitFor(() => out.some((x) => x.includes('connection ended')), 'the closing line');
    const line = out.find((x) => x.includes('connection ended'))!;
    expect(line).toContain('\\u001b[31mred\\x9bforged');
    expect(out.join('\n')).not.toMatch(/[\x1b\x9b]/);
    expect(line.length).toBeLessThan(700);
  });

  it('a server that refuses STARTTLS: closed', async () => {
    const server = await toy({ refuse: 'a NO not now' });
    const { port, logger } = await proxyTo(server.port);
    const c = new LocalClient(port);
    await c.closed;
    expect(c.text).toBe('');
    await waitFor(() => ended(logger.lines).length === 1, 'the closing line');
    expect(ended(logger.lines)[0]).toMatch(/STARTTLS refused: a NO not now/);
  });

  it('an unreachable server: connect_failed, the local client closed', async () => {
    const dead = net.createServer();
    await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
    const deadPort = (dead.address() as net.AddressInfo).port;
    await new Promise((r) => dead.close(r));
    const { port, logger } = await proxyTo(deadPort);
    const c = new LocalClient(port);
    await c.closed;
    await waitFor(() => ended(logger.lines).length === 1, 'the closing line');
    expect(ended(logger.lines)[0]).toMatch(/"outcome":"connect_failed"/);
    expect(logger.lines.join('\n')).toMatch(/cannot connect to the server.*ECONNREFUSED/);
  });
});

describe.skipIf(!embeddedConnects)(
  'client role: bytes the server sends after its go-ahead never reach the local client',
  () => {
    it('in the same packet as the go-ahead: closed, the local client gets nothing of it', async () => {
      const server = await toy({ inject: '* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] injected\r\n' });
      const { port, logger } = await proxyTo(server.port);
      const c = new LocalClient(port);
      c.socket.write('PING 1\r\n');
      await c.closed;
      // Not the injection, and not even the greeting: TLS never came up.
      expect(c.text).toBe('');
      await waitFor(() => ended(logger.lines).length === 1, 'the closing line');
      expect(ended(logger.lines)[0]).toMatch(/bytes after the go-ahead/);
      expect(server.sessions.flat()).toEqual([]);
    });

    it('any injected bytes, any chunking of the server’s writes: never relayed (property)', async () => {
      await fc.assert(
        fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 64 }), async (inject) => {
          const server = await toy({ inject: Buffer.from(inject).toString('latin1') });
          const { port, proxy } = await proxyTo(server.port);
          const c = new LocalClient(port);
          await c.closed;
          await proxy.close();
          await server.close();
          return c.text === '';
        }),
        { numRuns: 15, interruptAfterTimeLimit: 30_000 },
      );
    }, 60_000);

    it('in a later packet, before our ClientHello: seen in the kernel queue, closed, never relayed', async () => {
      // The server runs in its own process so its second write lands while the proxy's event loop
      // is held at the go-ahead (the dialect stalls 600 ms): the bytes wait in the kernel.
      const script = `
      const net = require('node:net');
      const s = net.createServer((c) => {
        c.setNoDelay(true);
        c.write('* OK [STARTTLS] toy\\r\\n');
        c.once('data', () => {
          c.write('a OK go\\r\\n');
          setTimeout(() => c.write('* 1 EXISTS injected later\\r\\n'), 100);
        });
        c.on('error', () => {});
      });
      s.listen(0, '127.0.0.1', () => console.log(s.address().port));
    `;
      const child = spawn(process.execPath, ['-e', script], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      cleanups.push(() => {
        child.kill();
      });
      const serverPort = await new Promise<number>((resolve) =>
        child.stdout!.once('data', (d: Buffer) => resolve(Number(String(d).trim()))),
      );
      const metrics = new Metrics({ defaultMetrics: false });
      const { port, logger } = await proxyTo(
        serverPort,
        { options: { stallMs: 600 } },
        { metrics },
      );
      const c = new LocalClient(port);
      await c.closed;
      expect(c.text).toBe('');
      await waitFor(() => ended(logger.lines).length === 1, 'the closing line');
      expect(logger.lines.join('\n')).toMatch(
        /server sent bytes after its STARTTLS go-ahead \(never relayed\); closing .*"bytes":27/,
      );
      expect(await metrics.text()).toMatch(/tlsproxy_injection_attempts_total\{dialect="toy"\} 1/);
    });
  },
);

describe.skipIf(!embeddedConnects)('client role: limits, plaintext policy, shutdown', () => {
  it('maxConnections: past it the dialect’s busy reply, nothing connects to the server', async () => {
    const server = await toy();
    const { port, logger } = await proxyTo(server.port, { maxConnections: 1 });
    const a = new LocalClient(port);
    await a.until(/ready/);
    const b = new LocalClient(port);
    await b.closed;
    expect(b.text).toBe('* BYE busy\r\n');
    expect(server.accepted).toBe(1);
    expect(logger.lines.join('\n')).toMatch(/connection limit reached/);
  });

  it('maxConnectionsPerAddress: a second local connection from the same address gets the busy reply', async () => {
    const server = await toy();
    const { port, logger } = await proxyTo(server.port, { maxConnectionsPerAddress: 1 });
    const a = new LocalClient(port);
    await a.until(/ready/);
    const b = new LocalClient(port);
    await b.closed;
    expect(b.text).toBe('* BYE busy\r\n');
    expect(logger.lines.join('\n')).toMatch(/per-address connection limit reached/);
  });

  it('maxHandshakes: past it the local client gets the busy reply, the handshake in flight goes on', async () => {
    const server = await toy({ tlsDelayMs: 800 });
    const { port, logger } = await proxyTo(server.port, { maxHandshakes: 1 });
    const a = new LocalClient(port);
    await waitFor(
      () => logger.lines.some((l) => l.includes('STARTTLS go-ahead')),
      'the first go-ahead',
    );
    const b = new LocalClient(port);
    await b.closed;
    expect(b.text).toBe('* BYE busy\r\n');
    expect(logger.lines.join('\n')).toMatch(/TLS handshake limit reached/);
    a.socket.write('PING first\r\n');
    await a.until(/PONG first/);
  });

  it('preambleTimeoutMs: a server that never greets is given up on', async () => {
    const silent = net.createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          silent.close(() => r());
        }),
    );
    const { port, logger } = await proxyTo((silent.address() as net.AddressInfo).port, {
      preambleTimeoutMs: 300,
    });
    const c = new LocalClient(port);
    await c.closed;
    await waitFor(() => ended(logger.lines).length === 1, 'the closing line');
    expect(ended(logger.lines)[0]).toMatch(/"outcome":"preamble_timeout"/);
  });

  it('a local client that goes away before TLS is noticed: the server connection is closed', async () => {
    // A server that never greets: without a look at the (unread) local socket, the session
    // would hold its server connection until preambleTimeoutMs.
    const serverSides: net.Socket[] = [];
    const silent = net.createServer((s) => {
      s.on('error', () => {});
      s.resume();
      serverSides.push(s);
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          for (const s of serverSides) s.destroy();
          silent.close(() => r());
        }),
    );
    const { port, logger } = await proxyTo((silent.address() as net.AddressInfo).port);
    const c = new LocalClient(port);
    await waitFor(() => serverSides.length === 1, 'the server connection');
    const serverClosed = new Promise((r) => serverSides[0]!.once('close', r));
    c.socket.destroy();
    await serverClosed;
    await waitFor(() => ended(logger.lines).length === 1, 'the closing line');
    expect(ended(logger.lines)[0]).toMatch(/local client went away before TLS/);
  });

  it('maxPreambleBytes: a server that talks too much before TLS is cut off', async () => {
    const chatty = net.createServer((s) => {
      s.on('error', () => {});
      s.write(`* OK ${'x'.repeat(5000)}`);
    });
    await new Promise<void>((r) => chatty.listen(0, '127.0.0.1', r));
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          chatty.close(() => r());
        }),
    );
    const { port, logger } = await proxyTo((chatty.address() as net.AddressInfo).port, {
      maxPreambleBytes: 1000,
    });
    const c = new LocalClient(port);
    await c.closed;
    await waitFor(() => ended(logger.lines).length === 1, 'the closing line');
    expect(ended(logger.lines)[0]).toMatch(/"outcome":"preamble_too_large"/);
  });

  it('idleTimeoutMs: a quiet relay is closed, by the relay that says why', async () => {
    const server = await toy();
    // The engine's relay starts before ours (its handshake result crosses to JS afterwards):
    // when it also had the timeout, it closed first and this session ended as 'server closed'
    // with no idle line (CI, 2026-12-06). 150 ms makes that head start certain.
    const { port, logger } = await proxyTo(
      server.port,
      { idleTimeoutMs: 300 },
      { connectLagMs: 150 },
    );
    const c = new LocalClient(port);
    await c.until(/ready/);
    await c.closed;
    await waitFor(() => ended(logger.lines).length === 1, 'the closing line');
    expect(logger.lines.join('\n')).toMatch(/relay idle too long/);
    expect(ended(logger.lines)[0]).toMatch(/"reason":"idle timeout"/);
  });

  it('the dialect’s opt-in plaintext policy relays without TLS, with a warning', async () => {
    const server = await toy({ starttls: false });
    const { port, logger } = await proxyTo(server.port, { options: { plaintext: true } });
    const c = new LocalClient(port);
    await c.until(/^\* OK toy server ready\r\n/);
    c.socket.write('PING p\r\n');
    await c.until(/PONG p/);
    expect(logger.lines.join('\n')).toMatch(/^warn relaying WITHOUT TLS/m);
    c.socket.end();
    await c.closed;
    await waitFor(() => ended(logger.lines).length === 1, 'the closing line');
    expect(ended(logger.lines)[0]).toMatch(/"outcome":"relayed_plaintext"/);
  });

  it('a dialect without a client side is refused at listen(), naming the dialect', async () => {
    const proxy = new TlsProxy({
      logger: quietLogger(),
      createEngine,
      pool: { identities: [{ cert: cert('server.pem'), key: cert('server.key') }] },
    });
    cleanups.push(() => proxy.close());
    const { client: _none, ...serverOnly } = toyDialect;
    await expect(
      proxy.listen({
        role: 'client',
        dialect: { ...serverOnly, name: 'serveronly' },
        listen: '127.0.0.1:0',
        connect: '127.0.0.1:1',
      }),
    ).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_NO_CLIENT_ROLE',
      message: expect.stringMatching(/dialect "serveronly" has no client side/),
    });
    await expect(
      proxy.listen({ role: 'client', dialect: toyDialect, listen: '127.0.0.1:0', connect: 'nope' }),
    ).rejects.toMatchObject({ code: 'TLSPROXY_ERR_CONFIG' });
  });

  it('metrics count client-role connections by role; close() ends relays; no descriptor leaks', async () => {
    const server = await toy();
    const metrics = new Metrics({ defaultMetrics: false });
    const { port, proxy } = await proxyTo(server.port, {}, { metrics });
    const before = fdCount();
    const clients = [new LocalClient(port), new LocalClient(port), new LocalClient(port)];
    for (const c of clients) {
      c.socket.write('PING m\r\n');
      await c.until(/PONG m/);
    }
    expect(await metrics.text()).toMatch(
      /tlsproxy_active_connections\{dialect="toy",stage="relay",role="client"\} 3/,
    );
    await proxy.close();
    for (const c of clients) await c.closed;
    await waitFor(() => fdCount() <= before, 'descriptors back');
    expect(await metrics.text()).toMatch(
      /tlsproxy_connections_total\{dialect="toy",outcome="shutdown",role="client"\} 3/,
    );
  });
});
