// The SMTP client role (issue 18): every path of the state table in src/client.ts, then the
// properties: any chunking of a server script gives the same actions; bytes after the STARTTLS
// go-ahead in the same read always close (never starttls) and never reach the local client;
// garbage never throws. Last, the response-injection case over a real loopback socket.
import net from 'node:net';
import type { DialectSession } from '@tlsproxy/dialect-kit';
import {
  type ClientAction,
  type ClientCloseAction,
  dialectProblems,
  resolveOptions,
} from '@tlsproxy/dialect-kit';
import {
  checkClientActions,
  clientContext,
  dec,
  describePendingCost,
  enc,
  feedClient,
  runClientSession,
  splitAt,
  toServer,
  withTrailing,
} from '@tlsproxy/dialect-kit/testing';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { ehloName } from '../src/client.js';
import { dialect } from '../src/index.js';

const client = dialect.client!;
const open = (
  options: { tls?: 'encrypt' | 'may' } = {},
  limits: Record<string, number> = {},
  hostname = 'client.example',
) => client.create(clientContext(options, limits, { hostname }));
const run = (
  chunks: (string | Uint8Array)[],
  options: { tls?: 'encrypt' | 'may' } = {},
  limits: Record<string, number> = {},
) => feedClient(open(options, limits), chunks);
const text = (b: Uint8Array | undefined) => (b === undefined ? undefined : dec(b));

const GREETING = '220 mx.example.test ESMTP Postfix (Debian/GNU)\r\n';
const EHLO_REPLY =
  '250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n';
const NO_TLS_EHLO = '250-mx.example.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n';
const GO_AHEAD = '220 2.0.0 Ready to start TLS\r\n';

function closed(actions: ClientAction[] | undefined): ClientCloseAction {
  const c = actions?.find((a) => a.type === 'close');
  if (c?.type !== 'close') throw new Error(`no close in ${JSON.stringify(actions)}`);
  return c;
}

describe('SMTP client: the dialect object', () => {
  it('has a client side that passes the kit shape check; tls is encrypt or may', () => {
    expect(dialectProblems(dialect)).toEqual([]);
    for (const [name, spec] of Object.entries(client.limits)) {
      expect(spec.unit, name).toBeDefined();
      expect(spec.phase, name).toBe('preamble');
      expect(spec.source, name).toBeTruthy();
    }
    const shape = { ...dialect, options: client.options };
    expect(resolveOptions(shape, {})).toEqual({ tls: 'encrypt' });
    expect(resolveOptions(shape, { tls: 'may' })).toEqual({ tls: 'may' });
    expect(() => resolveOptions(shape, { tls: 'none' })).toThrow(/"encrypt" or "may"/);
  });

  it('EHLO names: a domain as is (unsafe octets dropped), addresses as address literals', () => {
    expect(ehloName('client.example')).toBe('client.example');
    expect(ehloName('a b\r\nMAIL FROM:<x>')).toBe('abMAILFROMx');
    expect(ehloName('')).toBe('localhost');
    expect(ehloName('192.0.2.1')).toBe('[192.0.2.1]');
    expect(ehloName('2001:db8::1')).toBe('[IPv6:2001:db8::1]');
  });
});

describe('SMTP client: STARTTLS', () => {
  it('220, EHLO, 250 with STARTTLS, STARTTLS, 220: starttls with the greeting for the local client', () => {
    const s = open();
    expect(s.start(0)).toEqual([{ type: 'timer', at: 300_000 }]);
    const a1 = s.receive(enc(GREETING), 5);
    expect(dec(toServer(a1))).toBe('EHLO client.example\r\n');
    expect(a1).toContainEqual({ type: 'timer', at: 300_005 });
    expect(a1).toContainEqual(expect.objectContaining({ event: 'command', command: 'EHLO' }));
    const a2 = s.receive(enc(EHLO_REPLY), 6);
    expect(dec(toServer(a2))).toBe('STARTTLS\r\n');
    const a3 = s.receive(enc(GO_AHEAD), 7);
    expect(a3).toHaveLength(1);
    const st = a3[0]!;
    if (st.type !== 'starttls') throw new Error(st.type);
    // Ours, not the server's pre-TLS greeting (unauthenticated).
    expect(dec(st.toLocal)).toBe('220 client.example ESMTP Service ready\r\n');
    expect(st.state.extensions).toContain('STARTTLS');
    expect(st.state.extensions).toContain('SIZE 10240000');
    expect(s.receive(enc('x'), 8)).toEqual([]);
    expect(s.timer(1e9)).toEqual([]);
    expect(s.eof!(9)).toEqual([]);
  });

  it('a multi-line greeting is read whole, none of it to the local client (bare LF); keyword in any case', () => {
    const r = run([
      '220-mx.example.test ESMTP\n220-second line\r\n220 ready\r\n',
      '250-x\r\n250 starttls\r\n',
      '220\r\n',
    ]);
    expect(r.sent).toBe('EHLO client.example\r\nSTARTTLS\r\n');
    if (r.outcome?.type !== 'starttls') throw new Error(String(r.outcome?.type));
    expect(dec(r.outcome.toLocal)).toBe('220 client.example ESMTP Service ready\r\n');
  });

  it('only the keyword STARTTLS counts, not a word that contains it or a parameter', () => {
    for (const ext of ['XSTARTTLS', 'STARTTLSX', 'X-STARTTLS', 'SIZE STARTTLS', 'starttls-ish']) {
      const r = run([GREETING, `250-mx.example.test\r\n250 ${ext}\r\n`]);
      expect(closed(r.actions).reason, ext).toBe('server does not offer STARTTLS');
    }
  });

  it('the first EHLO line is the server’s name, never a keyword', () => {
    const r = run([GREETING, '250-STARTTLS\r\n250 PIPELINING\r\n']);
    expect(closed(r.actions).reason).toBe('server does not offer STARTTLS');
  });
});

describe('SMTP client: no TLS', () => {
  it('STARTTLS not offered (encrypt): close with QUIT and a 421 for the local client', () => {
    const r = run([GREETING, NO_TLS_EHLO]);
    const c = closed(r.actions);
    expect(c.reason).toBe('server does not offer STARTTLS');
    expect(text(c.data)).toBe('QUIT\r\n');
    expect(text(c.toLocal)).toBe(
      '421 4.7.0 client.example Error: TLS unavailable, the server does not offer STARTTLS\r\n',
    );
    expect(r.sent).toBe('EHLO client.example\r\nQUIT\r\n');
  });

  it('STARTTLS not offered (may): plaintext, the greeting for the local client, a warning', () => {
    const r = run([GREETING, NO_TLS_EHLO], { tls: 'may' });
    expect(r.outcome?.type).toBe('plaintext');
    if (r.outcome?.type !== 'plaintext') return;
    expect(dec(r.outcome.toLocal)).toBe(GREETING);
    expect(r.outcome.reason).toBe('server does not offer STARTTLS (tls: may)');
    expect(r.actions).toContainEqual(
      expect.objectContaining({
        type: 'log',
        level: 'warn',
        message: expect.stringMatching(/WITHOUT TLS/),
      }),
    );
    expect(r.sent).toBe('EHLO client.example\r\n');
  });

  it('EHLO refused (no ESMTP, 502): not offered; may goes on in plaintext', () => {
    const a = run([GREETING, '502 5.5.2 Error: command not recognized\r\n']);
    expect(closed(a.actions).reason).toBe(
      'server refused EHLO (502), so it does not offer STARTTLS',
    );
    expect(run([GREETING, '500 no\r\n'], { tls: 'may' }).outcome?.type).toBe('plaintext');
  });

  it('EHLO answered 4yz (not 421): close, also with may', () => {
    for (const tls of ['encrypt', 'may'] as const) {
      const r = run([GREETING, '450 4.7.1 later\r\n'], { tls });
      expect(closed(r.actions).reason).toBe('server answered EHLO with 450');
    }
  });

  it('STARTTLS refused (454, 501, 502): close with QUIT, no plaintext fallback even with may', () => {
    for (const code of [
      '454 4.7.0 TLS not available due to local problem',
      '501 5.5.4 Syntax',
      '502 no',
    ]) {
      for (const tls of ['encrypt', 'may'] as const) {
        const r = run([GREETING, EHLO_REPLY, `${code}\r\n`], { tls });
        const c = closed(r.actions);
        expect(c.reason).toBe(`server answered STARTTLS with ${code.slice(0, 3)}`);
        expect(text(c.data)).toBe('QUIT\r\n');
        expect(text(c.toLocal)).toBe(
          '421 4.7.0 client.example Error: TLS refused by the server\r\n',
        );
      }
    }
  });

  it('554 greeting: QUIT (RFC 5321 3.1), a 421 for the local client', () => {
    const r = run(['554 5.3.2 mx.example.test no SMTP service here\r\n']);
    const c = closed(r.actions);
    expect(c.reason).toBe('server refused the connection (554 greeting)');
    expect(text(c.data)).toBe('QUIT\r\n');
    expect(text(c.toLocal)).toBe(
      '421 4.3.2 client.example Error: the server refused the connection\r\n',
    );
  });

  it('421 at any point: close without QUIT', () => {
    for (const script of [
      ['421 4.7.0 busy\r\n'],
      [GREETING, '421 bye\r\n'],
      [GREETING, EHLO_REPLY, '421-a\r\n421 b\r\n'],
    ]) {
      const c = closed(run(script).actions);
      expect(c.reason).toMatch(/^server said 421 while waiting for /);
      expect(c.data).toBeUndefined();
    }
  });

  it('out of protocol: not a reply, mixed codes, another code, a 2xx/3xx to STARTTLS', () => {
    const cases: [string[], RegExp][] = [
      [['* OK IMAP\r\n'], /^not an SMTP reply while waiting for the greeting/],
      [['220-a\r\n250 b\r\n'], /^not an SMTP reply/],
      [['2200 x\r\n'], /^not an SMTP reply/],
      [['250 hello\r\n'], /^server greeting is 250, not 220/],
      [[GREETING, '220 again\r\n'], /^server answered EHLO with 220/],
      [[GREETING, EHLO_REPLY, '250 ok\r\n'], /^unexpected reply 250 to STARTTLS/],
      [[GREETING, EHLO_REPLY, '354 go\r\n'], /^unexpected reply 354 to STARTTLS/],
    ];
    for (const [script, reason] of cases) {
      const c = closed(run(script).actions);
      expect(c.reason, script.join('')).toMatch(reason);
    }
    // Before the greeting nothing is sent to a server that is not SMTP.
    expect(closed(run(['* OK IMAP\r\n']).actions).data).toBeUndefined();
  });

  it('a line over maxLineLength closes at once; so does a reply over maxReplyLines', () => {
    const a = run([GREETING, `250-${'x'.repeat(200)}`], {}, { maxLineLength: 100 });
    expect(closed(a.actions).reason).toBe('server response line too long');
    const b = run([GREETING, '250-a\r\n250-b\r\n250-c\r\n'], {}, { maxReplyLines: 2 });
    expect(closed(b.actions).reason).toBe('too many reply lines');
  });

  it('timeouts: greeting (no QUIT), reply (QUIT); a partial reply does not re-arm; 0 disables', () => {
    const s = open();
    s.start(1000);
    expect(s.timer(300_999)).toEqual([{ type: 'timer', at: 301_000 }]);
    const c = closed(s.timer(301_000));
    expect(c.reason).toBe('timeout waiting for the greeting');
    expect(c.data).toBeUndefined();
    expect(text(c.toLocal)).toBe('421 4.4.2 client.example Error: timeout exceeded\r\n');

    const t = open({}, { replyTimeoutMs: 500 });
    t.start(0);
    t.receive(enc(GREETING), 10);
    expect(t.receive(enc('250-mx\r\n250-PIPE'), 400)).toEqual([]);
    const d = closed(t.timer(510));
    expect(d.reason).toBe('timeout waiting for the reply to EHLO');
    expect(text(d.data)).toBe('QUIT\r\n');

    const u = open({}, { greetingTimeoutMs: 0, replyTimeoutMs: 0 });
    expect(u.start(0)).toEqual([]);
    expect(u.receive(enc(GREETING), 0).some((a) => a.type === 'timer')).toBe(false);
    expect(u.timer(1e12)).toEqual([]);
  });

  it('the server closes first: close, no QUIT', () => {
    for (const script of [[], [GREETING], [GREETING, EHLO_REPLY]]) {
      const s = open();
      feedClient(s, script);
      const c = closed(s.eof!(0));
      expect(c.reason).toMatch(/^server closed the connection before the (greeting|reply)/);
      expect(c.data).toBeUndefined();
      expect(text(c.toLocal)).toBe(
        '421 4.4.2 client.example Error: lost connection with the server\r\n',
      );
    }
  });
});

describe('SMTP client: response injection (bytes after the go-ahead, same read)', () => {
  it('closes, never starttls; the injected reply never reaches the local client', () => {
    const r = run([GREETING, EHLO_REPLY, `${GO_AHEAD}250-mx\r\n250 AUTH PLAIN\r\n`]);
    expect(r.outcome?.type).toBe('close');
    const c = closed(r.actions);
    expect(c.reason).toMatch(/^response injection: 24 bytes after the STARTTLS go-ahead/);
    expect(c.data).toBeUndefined();
    expect(text(c.toLocal)).toBe(
      '421 4.7.0 client.example Error: TLS refused, the server sent data before TLS\r\n',
    );
  });

  it('also with tls: may (never a plaintext fallback after a go-ahead)', () => {
    const r = run([GREETING, EHLO_REPLY, `${GO_AHEAD}x`], { tls: 'may' });
    expect(r.outcome?.type).toBe('close');
  });
});

// ---------------------------------------------------------------------------------------------
// Properties

const TIME = { interruptAfterTimeLimit: 4000, numRuns: 300 };

/** Server scripts, each complete (its outcome comes with its last octet). */
const SCRIPTS = [
  GREETING + EHLO_REPLY + GO_AHEAD,
  '220-a\n220 b\n250-x\n250-SIZE 1\n250 STARTTLS\n220 go\n',
  '220 a\r\n250-x\r\n250 starttls\r\n220\r\n',
  GREETING + NO_TLS_EHLO,
  `${GREETING}${EHLO_REPLY}454 4.7.0 no\r\n`,
  `${GREETING}502 no\r\n`,
  '554 go away\r\n',
  '421-a\r\n421 b\r\n',
  `220 ${'y'.repeat(150)}\r\n`,
  '220-a\r\n230 b\r\n',
];

const SMALL = { maxLineLength: 120, maxReplyLines: 6 };
const observe = (chunks: Uint8Array[], tls: 'encrypt' | 'may') =>
  JSON.stringify(feedClient(open({ tls }, SMALL), chunks));

describe('SMTP client: properties', () => {
  it('(a) any chunking of a server script gives the same actions', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...SCRIPTS),
        fc.array(fc.nat(), { maxLength: 12 }),
        fc.constantFrom('encrypt' as const, 'may' as const),
        (script, cuts, tls) => {
          const bytes = enc(script);
          const whole = observe([bytes], tls);
          expect(observe(splitAt(bytes, cuts), tls)).toBe(whole);
          expect(
            observe(
              Array.from(bytes, (b) => Uint8Array.of(b)),
              tls,
            ),
          ).toBe(whole);
        },
      ),
      TIME,
    );
  });

  it('(b) any bytes after the go-ahead in the same read: close, never starttls, never to local', () => {
    const expected =
      '421 4.7.0 client.example Error: TLS refused, the server sent data before TLS\r\n';
    fc.assert(
      fc.property(
        fc.constantFrom(...SCRIPTS.slice(0, 3)),
        fc.uint8Array({ minLength: 1, maxLength: 200 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        fc.constantFrom('encrypt' as const, 'may' as const),
        (script, injected, cuts, tls) => {
          // Cut anywhere before the go-ahead's LF: the last chunk holds it and the injection.
          const r = feedClient(open({ tls }), withTrailing(enc(script), injected, cuts));
          expect(r.outcome?.type).toBe('close');
          expect(r.actions.some((a) => a.type === 'starttls' || a.type === 'plaintext')).toBe(
            false,
          );
          const c = closed(r.actions);
          expect(c.reason).toMatch(/^response injection/);
          expect(text(c.toLocal)).toBe(expected);
          expect(c.data).toBeUndefined();
        },
      ),
      TIME,
    );
  });

  it('(c) garbage never throws, and every action keeps the contract', () => {
    const line = fc.oneof(
      fc.constantFrom(...SCRIPTS, '250 STARTTLS\r\n', '220 x\r\n', '250-a\r\n', GO_AHEAD, '\r\n'),
      fc.string({ maxLength: 40 }).map((s) => `${s}\r\n`),
    );
    fc.assert(
      fc.property(
        fc.array(fc.oneof(line.map(enc), fc.uint8Array({ maxLength: 60 })), { maxLength: 10 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        fc.boolean(),
        fc.constantFrom('encrypt' as const, 'may' as const),
        (parts, cuts, end, tls) => {
          const bytes = enc(parts.map(dec).join(''));
          const s = open({ tls }, SMALL);
          const acts: ClientAction[] = [...s.start(0)];
          for (const c of splitAt(bytes, cuts)) acts.push(...s.receive(c, 1));
          acts.push(...s.timer(end ? 1e9 : 2));
          if (end) acts.push(...(s.eof?.(3) ?? []));
          checkClientActions(acts, { allowPlaintext: tls === 'may' });
        },
      ),
      TIME,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Memory and CPU (issue 14's bounds, from the kit): a pending reply line costs O(its length),
// and a long one sent an octet at a time costs O(octets). The kit's helper drives any session
// with receive(); a client session is one for that purpose.

/** A session past the greeting, waiting for a reply line. */
function waiting(limits: Record<string, number> = {}): DialectSession {
  const s = open({}, limits);
  s.start(0);
  s.receive(enc(GREETING), 0);
  return s as unknown as DialectSession;
}

describePendingCost(
  { describe, it },
  {
    what: 'server reply line',
    open: () => waiting({ maxLineLength: 200_000 }),
    pending: enc(`${'250-'}${'x'.repeat(2048 - 10)}`),
    long: enc(`${'250-'}${'x'.repeat(100_500)}`),
  },
);

// ---------------------------------------------------------------------------------------------
// Over a real loopback socket: a server that writes its go-ahead and a forged reply in ONE
// write (what a man in the middle does) gets the connection closed.

const servers: net.Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
});

async function scripted(answers: Map<string, string>): Promise<number> {
  const server = net.createServer((sock) => {
    sock.on('error', () => {});
    sock.write(GREETING);
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const reply = answers.get(buf.slice(0, i + 1));
        buf = buf.slice(i + 1);
        if (reply) sock.write(reply);
      }
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as net.AddressInfo).port;
}

async function connect(port: number): Promise<net.Socket> {
  const sock = net.connect(port, '127.0.0.1');
  await new Promise((r, j) => sock.once('connect', r).once('error', j));
  return sock;
}

describe('SMTP client over a loopback socket', () => {
  it('go-ahead and a forged reply in one write: close', async () => {
    const port = await scripted(
      new Map([
        ['EHLO client.example\r\n', EHLO_REPLY],
        ['STARTTLS\r\n', `${GO_AHEAD}250 forged\r\n`],
      ]),
    );
    const sock = await connect(port);
    const r = await runClientSession(open(), sock);
    expect(r.outcome.type === 'close' && r.outcome.reason).toMatch(/^response injection/);
    expect(dec(r.sent)).toBe('EHLO client.example\r\nSTARTTLS\r\n');
    sock.destroy();
  });

  it('an honest server: starttls, the socket handed back', async () => {
    const port = await scripted(
      new Map([
        ['EHLO client.example\r\n', EHLO_REPLY],
        ['STARTTLS\r\n', GO_AHEAD],
      ]),
    );
    const sock = await connect(port);
    const r = await runClientSession(open(), sock);
    expect(r.outcome.type).toBe('starttls');
    expect(sock.listenerCount('data')).toBe(0);
    sock.destroy();
  });
});
