// Issue 18, "Done when": a server that sends bytes after its STARTTLS go-ahead in the same packet
// gets the connection closed, per dialect, through the whole proxy (role: client). Each fake
// server speaks its protocol's preamble up to the go-ahead and writes the go-ahead and an
// injected reply in ONE write (the response-injection attack class: a man in the middle, or a
// broken server, answering in plaintext as if over TLS). What must hold: no TLS session is
// started, the connection is closed, and nothing of the injected bytes reaches the local client
// (it may get the dialect's own error, never the server's bytes).
import net from 'node:net';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { loadDialect, TlsProxy } from '../src/index.js';
import { LocalClient } from './client-helpers.js';
import { cert, createEngine, quietLogger, sleep } from './helpers.js';

const INJECTED = 'INJECTED-by-the-server';

/** A step: when what the fake server has read so far matches, it writes the reply. */
type Step = [RegExp, (m: RegExpMatchArray, read: Buffer) => string | Buffer];

/** LDAP: the StartTLS ExtendedResponse (success) for the request's message id, then injection. */
function ldapGoAhead(read: Buffer): Buffer {
  // LDAPMessage ::= SEQUENCE { messageID INTEGER, ... }: 30 LEN 02 LEN ID...
  const idLen = read[3]!;
  const id = read.subarray(4, 4 + idLen);
  const oid = Buffer.from('1.3.6.1.4.1.1466.20037');
  const op = Buffer.concat([
    Buffer.from([0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00, 0x8a, oid.length]),
    oid,
  ]);
  const ext = Buffer.concat([Buffer.from([0x78, op.length]), op]);
  const body = Buffer.concat([Buffer.from([0x02, idLen]), id, ext]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body, Buffer.from(INJECTED)]);
}

const XMPP_STREAM =
  "<?xml version='1.0'?><stream:stream from='localhost' id='s1' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

const CASES: Array<{ dialect: string; greeting: string; steps: Step[] }> = [
  {
    dialect: 'imap',
    greeting: '* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] fake ready\r\n',
    steps: [[/^(\S+) STARTTLS\r\n/im, (m) => `${m[1]} OK go\r\n* OK ${INJECTED}\r\n`]],
  },
  {
    dialect: 'pop3',
    greeting: '+OK fake ready\r\n',
    steps: [
      [/^CAPA\r\n/im, () => '+OK\r\nSTLS\r\nUSER\r\n.\r\n'],
      [/^STLS\r\n/im, () => `+OK go\r\n+OK ${INJECTED}\r\n`],
    ],
  },
  {
    dialect: 'smtp',
    greeting: '220 mx.example.test ESMTP fake\r\n',
    steps: [
      [/^EHLO [^\r]*\r\n/im, () => '250-mx.example.test\r\n250 STARTTLS\r\n'],
      [/^STARTTLS\r\n/im, () => `220 2.0.0 go\r\n250 ${INJECTED}\r\n`],
    ],
  },
  {
    dialect: 'ldap',
    greeting: '',
    steps: [[/1\.3\.6\.1\.4\.1\.1466\.20037/, (_m, read) => ldapGoAhead(read)]],
  },
  {
    dialect: 'xmpp',
    greeting: '',
    steps: [
      [
        /<stream:stream[^>]*>/,
        () =>
          `${XMPP_STREAM}<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>`,
      ],
      [
        /<starttls[^>]*\/>/,
        () => `<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><message>${INJECTED}</message>`,
      ],
    ],
  },
  {
    dialect: 'http-upgrade',
    greeting: '',
    steps: [
      [
        /\r\n\r\n/,
        () =>
          `HTTP/1.1 101 Switching Protocols\r\nUpgrade: TLS/1.2, HTTP/1.1\r\nConnection: Upgrade\r\n\r\nHTTP/1.1 200 OK\r\nX: ${INJECTED}\r\n\r\n`,
      ],
    ],
  },
];

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/**
 * A fake server. `split`: cut every write at these fractions of its length, and `gapMs` between
 * the pieces (the proxy then reads the greeting, the answers and the go-ahead + injection in
 * other chunks); without it each reply leaves in one write.
 */
/** Go-aheads the fake servers have written (the last step of their script). */
let goAheads = 0;

async function fakeServer(
  greeting: string,
  steps: Step[],
  split: number[] = [],
  gapMs = 0,
): Promise<number> {
  const write = async (s: net.Socket, data: string | Buffer) => {
    const b = Buffer.isBuffer(data) ? data : Buffer.from(data, 'latin1');
    const cuts = [...new Set(split.map((f) => Math.floor(f * b.length)))]
      .filter((n) => n > 0 && n < b.length)
      .sort((x, y) => x - y);
    let at = 0;
    for (const cut of [...cuts, b.length]) {
      if (s.destroyed) return;
      s.write(b.subarray(at, cut));
      at = cut;
      if (gapMs > 0 && cut < b.length) await new Promise((r) => setTimeout(r, gapMs));
    }
  };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.setNoDelay(true);
    let chain: Promise<void> = greeting ? write(s, greeting) : Promise.resolve();
    let read = Buffer.alloc(0);
    let step = 0;
    s.on('data', (d: Buffer) => {
      read = Buffer.concat([read, d]);
      const next = steps[step];
      if (!next) return;
      const m = read.toString('latin1').match(next[0]);
      if (!m) return;
      step++;
      if (step === steps.length) goAheads++;
      const reply = next[1](m, read);
      read = Buffer.alloc(0);
      // Without `split`, one write: the go-ahead and the injected bytes leave together.
      chain = chain.then(() => write(s, reply));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });
  return (server.address() as net.AddressInfo).port;
}

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

describe.skipIf(!embeddedConnects)(
  'bytes after the server’s go-ahead, in the same packet, through the proxy',
  () => {
    for (const { dialect, greeting, steps } of CASES) {
      it(`${dialect}: closed, no TLS, nothing of it reaches the local client`, async (ctx) => {
        const d = await loadDialect(dialect).catch(() => undefined);
        if (!d?.client) {
          console.warn(
            `client-role injection (${dialect}): skipped: the dialect has no client side`,
          );
          ctx.skip();
          return;
        }
        const port = await fakeServer(greeting, steps);
        const logger = quietLogger();
        const proxy = new TlsProxy({
          logger,
          createEngine,
          pool: { identities: [], connectOnly: true },
        });
        cleanups.push(() => proxy.close());
        const l = await proxy.listen({
          role: 'client',
          dialect,
          listen: '127.0.0.1:0',
          connect: `127.0.0.1:${port}`,
          tls: { ca: cert('ca.pem'), serverName: 'localhost' },
        });
        const c = new LocalClient((l.server.address() as net.AddressInfo).port);
        // XMPP's local client opens its own stream once TLS is up; say something either way.
        c.socket.write('hello\r\n');
        await c.closed;
        expect(c.text).not.toContain(INJECTED);
        for (let i = 0; i < 100 && !logger.lines.some((x) => x.includes('connection ended')); i++)
          await sleep(20);
        const all = logger.lines.join('\n');
        expect(all).not.toMatch(/TLS established|relaying WITHOUT TLS/);
        expect(logger.lines.find((x) => x.includes('connection ended'))).toMatch(
          /"outcome":"closed_in_preamble"/,
        );
      });
    }
  },
);

describe.skipIf(!embeddedConnects)(
  'however the server’s bytes are cut and spaced, the injection is never relayed (property)',
  () => {
    for (const { dialect, greeting, steps } of CASES) {
      it(`${dialect}`, async (ctx) => {
        const d = await loadDialect(dialect).catch(() => undefined);
        if (!d?.client) {
          ctx.skip();
          return;
        }
        await fc.assert(
          fc.asyncProperty(
            fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 4 }),
            fc.integer({ min: 0, max: 15 }),
            async (split, gapMs) => {
              const before = goAheads;
              const port = await fakeServer(greeting, steps, split, gapMs);
              const logger = quietLogger();
              const proxy = new TlsProxy({
                logger,
                createEngine,
                pool: { identities: [], connectOnly: true },
              });
              try {
                const l = await proxy.listen({
                  role: 'client',
                  dialect,
                  listen: '127.0.0.1:0',
                  connect: `127.0.0.1:${port}`,
                  tls: { ca: cert('ca.pem'), serverName: 'localhost', handshakeTimeoutMs: 2000 },
                });
                const c = new LocalClient((l.server.address() as net.AddressInfo).port);
                c.socket.write('hello\r\n');
                await c.closed;
                // Cut apart, the injection may arrive after our ClientHello: then the handshake
                // fails on it instead. Either way it is never relayed and TLS never comes up.
                return (
                  goAheads === before + 1 &&
                  !c.text.includes(INJECTED) &&
                  !logger.lines.some((x) => /TLS established|relaying WITHOUT TLS/.test(x))
                );
              } finally {
                await proxy.close();
              }
            },
          ),
          { numRuns: 8, interruptAfterTimeLimit: 20_000 },
        );
      }, 40_000);
    }
  },
);
