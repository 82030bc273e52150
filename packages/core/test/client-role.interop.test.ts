// Interop, the client role (issue 18, "Done when"): a local test client speaks PLAINTEXT to
// tlsproxy (role: client), which connects to a REAL server on loopback, does that protocol's
// STARTTLS as a client, verifies the server's certificate (the repo's test CA, name localhost)
// and relays. Inside TLS the local client sees the server's post-TLS answer: no STARTTLS in
// CAPABILITY / CAPA / EHLO / stream features, LDAP WhoAmI, an HTTP answer. A wrong CA, a wrong
// name, and a server that does not offer STARTTLS fail closed (never plaintext).
//
// Servers: Dovecot (IMAP, POP3), Postfix (SMTP), slapd (LDAP), Prosody (XMPP), cupsd (HTTP
// Upgrade), from fixtures/servers. A server that is not installed (or a dialect without its client
// side yet) skips its block with a message saying why; under CI (CI=1) a missing server fails.
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  missing,
  type RealServer,
  type ServerName,
  startCupsd,
  startDovecot,
  startPostfix,
  startProsody,
  startSlapd,
} from '../../../fixtures/servers/index.mjs';
import { type ListenerConfig, type Logger, loadDialect, TlsProxy } from '../src/index.js';
import { LocalClient } from './client-helpers.js';
import { cert, createEngine, sleep } from './helpers.js';

const CA = cert('ca.pem').toString('utf8');
const WRONG_CA = cert('rogue.pem').toString('utf8');

// The embedded engine must have a client side (connect()): node:tls's and the native one
// (TLSPROXY_TEST_ENGINE=native) have; with an engine that has none yet this file is skipped.
const embeddedConnects = await (async () => {
  const probe = new TlsProxy({
    logger: { log() {} },
    createEngine,
    pool: { identities: [{ cert: cert('server.pem'), key: cert('server.key') }] },
  });
  const has = typeof probe.pool.connect === 'function';
  await probe.close();
  return has;
})();

/** Why a block cannot run: its server is missing, or its dialect has no client side yet. */
async function skipWhy(server: ServerName, dialect: string): Promise<string | undefined> {
  if (!embeddedConnects) return 'the embedded TLS engine has no connect()';
  const why = missing(server);
  if (why) {
    if (process.env.CI) throw new Error(`client-role interop: ${why}`);
    return why;
  }
  const d = await loadDialect(dialect).catch(() => undefined);
  if (!d?.client) return `dialect ${dialect} has no client side (yet)`;
  return undefined;
}

/**
 * One dialect's block against its real server: skipped (saying why) when the server or the
 * dialect's client side is missing; `start` runs once before the block's tests, and the server
 * `body` gets stands for the running one (its ports and log, read when a test runs).
 */
async function describeReal(
  label: string,
  server: ServerName,
  dialect: string,
  title: string,
  start: () => Promise<RealServer>,
  body: (server: RealServer) => void,
): Promise<void> {
  const skip = await skipWhy(server, dialect);
  if (skip) console.warn(`client-role interop (${label}): skipped: ${skip}`);
  describe.skipIf(skip !== undefined)(title, () => {
    let running: RealServer | undefined;
    beforeAll(async () => {
      running = await start();
    }, 30_000);
    afterAll(async () => {
      await running?.stop();
    });
    const up = () => running!;
    body({
      get port() {
        return up().port;
      },
      get port2() {
        return up().port2;
      },
      log: () => up().log(),
      stop: () => up().stop(),
    });
  });
}

const lines: string[] = [];
const logger: Logger = {
  log(level, message, fields = {}) {
    lines.push(`${level} ${message} ${JSON.stringify(fields)}`);
  },
};
const proxies: TlsProxy[] = [];
afterAll(async () => {
  for (const p of proxies) await p.close();
});

/** A client-role listener in front of `port`; resolves to the port local clients connect to. */
async function through(
  dialect: string,
  port: number,
  tls: ListenerConfig['tls'] = {},
  extra: Partial<ListenerConfig> = {},
): Promise<number> {
  const proxy = new TlsProxy({ logger, createEngine, pool: { identities: [], connectOnly: true } });
  proxies.push(proxy);
  const l = await proxy.listen({
    role: 'client',
    dialect,
    listen: '127.0.0.1:0',
    connect: `127.0.0.1:${port}`,
    tls: { ca: CA, serverName: 'localhost', ...tls },
    hostname: 'client.example.test',
    ...extra,
  });
  return (l.server.address() as net.AddressInfo).port;
}

/** The closing log line of the newest connection through `port`'s listener that ended. */
async function closingLine(match: RegExp): Promise<string> {
  for (let i = 0; i < 200; i++) {
    const l = lines.filter((x) => x.includes('connection ended')).find((x) => match.test(x));
    if (l) return l;
    await sleep(25);
  }
  throw new Error(`no closing line matching ${match}:\n${lines.slice(-20).join('\n')}`);
}

/** What a wrong CA, a wrong name and a server without STARTTLS must give: closed, nothing relayed. */
function failsClosed(
  dialect: string,
  port: () => number,
  noStartTls: () => Promise<{ port: number; stop(): Promise<void> }>,
  opener?: (c: LocalClient) => void,
  refusesName = false,
) {
  it('a certificate from a CA we do not trust: the local client is closed, the log says why', async () => {
    const before = lines.length;
    const c = new LocalClient(await through(dialect, port(), { ca: WRONG_CA }));
    opener?.(c);
    await c.closed;
    expect(c.text).toBe('');
    const why = lines.slice(before).find((l) => l.includes('TLS with the server failed'));
    expect(why).toMatch(/"reason":"unknown-ca"/);
  }, 20_000);

  it('a certificate for another name: closed (name-mismatch)', async () => {
    const before = lines.length;
    const c = new LocalClient(await through(dialect, port(), { serverName: 'other.example.test' }));
    opener?.(c);
    await c.closed;
    const mine = lines.slice(before);
    expect(mine.join('\n')).not.toMatch(/TLS established/);
    if (refusesName) {
      // The server itself refuses the name before TLS (cupsd: 400 for the Host): closed too.
      expect(mine.find((l) => l.includes('connection ended'))).toMatch(
        /"outcome":"closed_in_preamble"/,
      );
      return;
    }
    expect(c.text).toBe('');
    const why = mine.find((l) => l.includes('TLS with the server failed'));
    expect(why).toMatch(/"reason":"name-mismatch"/);
  }, 20_000);

  it('a server that does not offer STARTTLS: closed, no plaintext session', async () => {
    const plain = await noStartTls();
    try {
      const before = lines.length;
      const c = new LocalClient(await through(dialect, plain.port));
      opener?.(c);
      await c.closed;
      const mine = lines.slice(before);
      expect(mine.join('\n')).not.toMatch(/TLS established|relaying WITHOUT TLS/);
      expect(mine.find((l) => l.includes('connection ended'))).toMatch(
        /"outcome":"closed_in_preamble"/,
      );
    } finally {
      await plain.stop();
    }
  }, 40_000);
}

/** A fake server that greets (or answers what it has read so far) without offering STARTTLS. */
async function fakeNoStartTls(
  greeting: string,
  answer: (line: string) => string | undefined,
): Promise<{ port: number; stop(): Promise<void> }> {
  const { createServer } = await import('node:net');
  const sockets = new Set<net.Socket>();
  const s = createServer((c) => {
    sockets.add(c);
    c.on('error', () => {});
    c.on('close', () => sockets.delete(c));
    if (greeting) c.write(greeting);
    let buf = '';
    c.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      const reply = answer(buf);
      if (reply === undefined) return;
      buf = '';
      c.write(reply);
    });
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return {
    port: (s.address() as net.AddressInfo).port,
    stop: async () => {
      for (const c of sockets) c.destroy();
      await new Promise((r) => s.close(r));
    },
  };
}

// --- IMAP and POP3: Dovecot -----------------------------------------------------------------

await describeReal(
  'IMAP',
  'dovecot',
  'imap',
  'IMAP through the client role to Dovecot',
  () => startDovecot(),
  (dovecot) => {
    it('greeting in plaintext; inside TLS CAPABILITY has no STARTTLS and LOGIN works', async () => {
      const c = new LocalClient(await through('imap', dovecot.port));
      const greeting = await c.until(/^\* OK .*\r\n/);
      // Ours: nothing of the server's pre-TLS greeting (its CAPABILITY code included) is passed on.
      expect(greeting).toBe('* OK Server ready.\r\n');
      c.socket.write('a CAPABILITY\r\n');
      const caps = await c.until(/^a OK/m);
      expect(caps).toMatch(/^\* CAPABILITY .*IMAP4rev1/m);
      expect(caps).not.toMatch(/STARTTLS|LOGINDISABLED/);
      expect(caps).toMatch(/AUTH=PLAIN/);
      c.socket.write('b LOGIN alice secret\r\n');
      expect(await c.until(/^b (OK|NO|BAD)/m)).toMatch(/^b OK /m);
      c.socket.write('c LOGOUT\r\n');
      await c.until(/^c OK/m);
      await c.closed;
      expect(await closingLine(/"dialect":"imap"/)).toMatch(/"outcome":"relayed"/);
      // Dovecot saw a TLS session.
      expect(dovecot.log()).toMatch(/imap-login: Info: Login: user=<alice>.*TLS/);
    }, 20_000);

    failsClosed(
      'imap',
      () => dovecot.port,
      () => startDovecot({ tls: false }),
    );
  },
);

await describeReal(
  'POP3',
  'dovecot',
  'pop3',
  'POP3 through the client role to Dovecot',
  () => startDovecot(),
  (dovecot) => {
    it('greeting in plaintext; inside TLS CAPA has no STLS and USER/PASS work', async () => {
      const c = new LocalClient(await through('pop3', dovecot.port2!));
      expect(await c.until(/^\+OK .*\r\n/)).toBe('+OK Server ready.\r\n');
      c.socket.write('CAPA\r\n');
      const capa = await c.until(/\r\n\.\r\n/);
      expect(capa).toMatch(/^USER\r$/m);
      expect(capa).not.toMatch(/^STLS/m);
      c.socket.write('USER alice\r\n');
      await c.until(/\+OK[^\r]*\r\n\+OK/);
      c.socket.write('PASS secret\r\n');
      await c.until(/Logged in/);
      c.socket.write('QUIT\r\n');
      await c.closed;
      expect(dovecot.log()).toMatch(/pop3-login: Info: Login: user=<alice>.*TLS/);
    }, 20_000);

    failsClosed(
      'pop3',
      () => dovecot.port2!,
      async () => {
        const d = await startDovecot({ tls: false });
        return { port: d.port2!, stop: d.stop };
      },
    );
  },
);

// --- SMTP: Postfix --------------------------------------------------------------------------

await describeReal(
  'SMTP',
  'postfix',
  'smtp',
  'SMTP through the client role to Postfix',
  () => startPostfix(),
  (postfix) => {
    it('greeting in plaintext; inside TLS EHLO has no STARTTLS', async () => {
      const c = new LocalClient(await through('smtp', postfix.port));
      // Ours (the server's pre-TLS greeting is not passed on); its EHLO answer comes through TLS.
      expect(await c.until(/^220 .*\r\n/)).toMatch(/^220 \S+ ESMTP Service ready\r\n$/);
      c.socket.write('EHLO local.example.test\r\n');
      const ehlo = await c.until(/^250 .*\r\n/m);
      expect(ehlo).toMatch(/^250-mx\.example\.test/m);
      expect(ehlo).not.toMatch(/STARTTLS/);
      c.socket.write('QUIT\r\n');
      await c.until(/^221 /m);
      await c.closed;
      expect(postfix.log()).toMatch(
        /Trusted TLS connection established|TLS connection established/,
      );
    }, 20_000);

    failsClosed(
      'smtp',
      () => postfix.port,
      () => startPostfix({ tls: false }),
    );
  },
);

// --- LDAP: slapd ----------------------------------------------------------------------------

/** LDAP Who am I? (RFC 4532): an ExtendedRequest with the OID 1.3.6.1.4.1.4203.1.11.3. */
function whoAmI(id: number): Buffer {
  const oid = Buffer.from('1.3.6.1.4.1.4203.1.11.3');
  const req = Buffer.concat([Buffer.from([0x77, oid.length + 2, 0x80, oid.length]), oid]);
  const msgId = Buffer.from([0x02, 0x01, id]);
  return Buffer.concat([Buffer.from([0x30, msgId.length + req.length]), msgId, req]);
}

await describeReal(
  'LDAP',
  'slapd',
  'ldap',
  'LDAP through the client role to slapd',
  () => startSlapd(),
  (slapd) => {
    it('nothing before TLS; inside TLS Who am I? succeeds (slapd refuses it before TLS)', async () => {
      const port = await through('ldap', slapd.port);
      const c = new LocalClient(port);
      await sleep(300);
      // Our messages are sent once TLS is up; slapd (security tls=1) answers only over TLS.
      c.socket.write(whoAmI(7));
      // ExtendedResponse (0x78), resultCode success (0x0a 0x01 0x00), message id 7.
      await c.until(/\x02\x01\x07\x78/);
      expect(Buffer.from(c.text, 'latin1').includes(Buffer.from([0x0a, 0x01, 0x00]))).toBe(true);
      c.socket.end();
      await c.closed;
    }, 20_000);

    failsClosed(
      'ldap',
      () => slapd.port,
      () => startSlapd({ tls: false }),
    );
  },
);

// --- XMPP: Prosody --------------------------------------------------------------------------

const streamHeader =
  "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

await describeReal(
  'XMPP',
  'prosody',
  'xmpp',
  'XMPP through the client role to Prosody',
  () => startProsody({ hosts: ['localhost', 'other.example.test'] }),
  (prosody) => {
    it('the local client opens its stream inside TLS: features without <starttls/>, SASL offered', async () => {
      const c = new LocalClient(await through('xmpp', prosody.port));
      c.socket.write(streamHeader);
      const features = await c.until(/<\/stream:features>/);
      expect(features).not.toMatch(/urn:ietf:params:xml:ns:xmpp-tls/);
      expect(features).toMatch(/urn:ietf:params:xml:ns:xmpp-sasl/);
      c.socket.write('</stream:stream>');
      await c.closed;
    }, 20_000);

    failsClosed(
      'xmpp',
      () => prosody.port,
      () =>
        fakeNoStartTls(
          '',
          () =>
            // Any stream header gets a stream whose features offer no STARTTLS.
            "<?xml version='1.0'?><stream:stream from='localhost' id='x' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'><stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>",
        ),
      (c) => c.socket.write(streamHeader),
    );
  },
);

// --- HTTP Upgrade: cupsd --------------------------------------------------------------------

await describeReal(
  'HTTP Upgrade',
  'cupsd',
  'http-upgrade',
  'HTTP Upgrade through the client role to cupsd',
  () => startCupsd(),
  (cupsd) => {
    it('inside TLS an HTTP request gets cupsd’s answer to it (its answer to the upgrade is dropped)', async () => {
      const c = new LocalClient(await through('http-upgrade', cupsd.port));
      // RFC 2817 §3.3: cupsd answers the upgrading OPTIONS * over TLS first (200, no body); the
      // local client must see only the answer to its own request: 404 for a path that is not there.
      c.socket.write('GET /no-such-page HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
      await c.closed;
      expect(c.text).toMatch(/^HTTP\/1\.1 404 Not Found\r\n/);
      expect(c.text.match(/^HTTP\/1\.1 /gm)).toHaveLength(1);
      expect(c.text).toMatch(/^Server: CUPS/m);
    }, 20_000);

    failsClosed(
      'http-upgrade',
      () => cupsd.port,
      () =>
        fakeNoStartTls('', (read) =>
          read.endsWith('\r\n\r\n')
            ? 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nServer: no-tls\r\n\r\n'
            : undefined,
        ),
      undefined,
      true,
    );
  },
);
