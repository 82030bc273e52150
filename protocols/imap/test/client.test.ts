// The IMAP client role (issue 18): every path of the state table in src/client.ts, then the
// properties: any chunking of a server script gives the same actions; bytes after the STARTTLS
// go-ahead in the same read always close (never starttls) and never reach the local client;
// garbage never throws. Last, the response-injection case over a real loopback socket.
import net from 'node:net';
import type { DialectSession } from '@tlsproxy/dialect-kit';
import { type ClientAction, type ClientCloseAction, dialectProblems } from '@tlsproxy/dialect-kit';
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
import { dialect } from '../src/index.js';

const client = dialect.client!;
const open = (limits: Record<string, number> = {}) => client.create(clientContext({}, limits));
const run = (chunks: (string | Uint8Array)[], limits: Record<string, number> = {}) =>
  feedClient(open(limits), chunks);
const text = (b: Uint8Array | undefined) => (b === undefined ? undefined : dec(b));

const DOVECOT_GREETING =
  '* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS LOGINDISABLED] Dovecot (Debian) ready.\r\n';
const GO_AHEAD = 'a2 OK Begin TLS negotiation now.\r\n';

function closed(actions: ClientAction[] | undefined): ClientCloseAction {
  const c = actions?.find((a) => a.type === 'close');
  if (c?.type !== 'close') throw new Error(`no close in ${JSON.stringify(actions)}`);
  return c;
}

describe('IMAP client: the dialect object', () => {
  it('has a client side that passes the kit shape check, limits with unit and phase', () => {
    expect(dialectProblems(dialect)).toEqual([]);
    expect(client.options).toEqual({});
    for (const [name, spec] of Object.entries(client.limits)) {
      expect(spec.unit, name).toBeDefined();
      expect(spec.phase, name).toBe('preamble');
      expect(spec.source, name).toBeTruthy();
    }
  });
});

describe('IMAP client: STARTTLS', () => {
  it('greeting with CAPABILITY STARTTLS: STARTTLS at once, the go-ahead gives starttls', () => {
    const s = open();
    expect(s.start(0)).toEqual([{ type: 'timer', at: 30_000 }]);
    const a1 = s.receive(enc(DOVECOT_GREETING), 5);
    expect(dec(toServer(a1))).toBe('a2 STARTTLS\r\n');
    expect(a1).toContainEqual({ type: 'timer', at: 30_005 });
    expect(a1).toContainEqual(expect.objectContaining({ event: 'command', command: 'STARTTLS' }));
    const a2 = s.receive(enc(GO_AHEAD), 6);
    expect(a2).toHaveLength(1);
    const st = a2[0]!;
    if (st.type !== 'starttls') throw new Error(st.type);
    // The local client's greeting is ours: nothing of the server's pre-TLS text.
    expect(dec(st.toLocal)).toBe('* OK Server ready.\r\n');
    expect(st.state.capabilities).toContain('STARTTLS');
    // Nothing more once the preamble is over.
    expect(s.receive(enc('x'), 7)).toEqual([]);
    expect(s.timer(100_000)).toEqual([]);
    expect(s.eof!(8)).toEqual([]);
  });

  it('greeting without capabilities: CAPABILITY first, then STARTTLS', () => {
    const r = run([
      '* OK [ALERT] Hello there\r\n',
      '* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n',
      '* OK Still here\r\n',
      'a1 OK Capability completed.\r\n',
      GO_AHEAD,
    ]);
    expect(r.sent).toBe('a1 CAPABILITY\r\na2 STARTTLS\r\n');
    expect(r.outcome?.type).toBe('starttls');
    if (r.outcome?.type !== 'starttls') return;
    // An [ALERT] before TLS is unauthenticated: the local client must not show it.
    expect(dec(r.outcome.toLocal)).toBe('* OK Server ready.\r\n');
    expect(r.outcome.state).toEqual({ capabilities: ['IMAP4rev1', 'STARTTLS', 'LOGINDISABLED'] });
  });

  it('takes the list from the tagged OK code too, keywords in any case, bare LF', () => {
    const r = run(['* ok hi\n', 'a1 ok [capability imap4rev1 starttls] done\n', 'a2 ok go\n']);
    expect(r.outcome?.type).toBe('starttls');
    expect(r.sent).toBe('a1 CAPABILITY\r\na2 STARTTLS\r\n');
  });

  it('no word of the server’s pre-TLS greeting reaches the local client (property)', () => {
    // Response codes, bare CRs, extra spaces: whatever the greeting says, the local client's is ours.
    const word = fc.stringMatching(/^[\x21-\x7e\r]{1,12}$/);
    fc.assert(
      fc.property(fc.array(word, { maxLength: 8 }), fc.constantFrom(' ', '  '), (words, sp) => {
        const greeting = `* OK${sp}[CAPABILITY IMAP4rev1 STARTTLS]${sp}${words.join(sp)}\r\n`;
        const r = run([greeting, GO_AHEAD]);
        if (r.outcome?.type !== 'starttls') return true; // refused (e.g. a bad line): fine
        expect(dec(r.outcome.toLocal)).toBe('* OK Server ready.\r\n');
        return true;
      }),
    );
  });

  it('a greeting that is only a CAPABILITY code becomes "* OK Server ready."', () => {
    const r = run(['* OK [CAPABILITY IMAP4rev1 STARTTLS]\r\n', GO_AHEAD]);
    if (r.outcome?.type !== 'starttls') throw new Error(String(r.outcome?.type));
    expect(dec(r.outcome.toLocal)).toBe('* OK Server ready.\r\n');
  });
});

describe('IMAP client: no TLS, close', () => {
  it('STARTTLS not in the greeting code: close with LOGOUT and a BYE for the local client', () => {
    const r = run(['* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] ready\r\n']);
    const c = closed(r.actions);
    expect(c.reason).toMatch(/does not offer STARTTLS/);
    expect(text(c.data)).toBe('a3 LOGOUT\r\n');
    expect(text(c.toLocal)).toBe('* BYE [PRIVACYREQUIRED] TLS unavailable.\r\n');
    expect(r.sent).toBe('a3 LOGOUT\r\n');
  });

  it('only the atom STARTTLS counts, not one that contains it', () => {
    for (const caps of ['XSTARTTLS', 'STARTTLSX', 'X-STARTTLS', 'STARTTLS=1']) {
      const r = run([`* OK [CAPABILITY IMAP4rev1 ${caps}] hi\r\n`]);
      expect(closed(r.actions).reason, caps).toBe('server does not offer STARTTLS');
    }
  });

  it('STARTTLS not in the CAPABILITY reply: close', () => {
    const r = run(['* OK hi\r\n', '* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na1 OK done\r\n']);
    expect(closed(r.actions).reason).toMatch(/does not offer STARTTLS/);
    expect(r.sent).toBe('a1 CAPABILITY\r\na3 LOGOUT\r\n');
  });

  it('CAPABILITY answered NO or BAD: close', () => {
    for (const status of ['NO', 'BAD']) {
      const r = run(['* OK hi\r\n', `a1 ${status} no\r\n`]);
      expect(closed(r.actions).reason).toBe(`server answered CAPABILITY with ${status}`);
    }
  });

  it('STARTTLS refused (NO, BAD): close, LOGOUT, the local client is told', () => {
    for (const status of ['NO', 'bad']) {
      const r = run([DOVECOT_GREETING, `a2 ${status} [UNAVAILABLE] not now\r\n`]);
      const c = closed(r.actions);
      expect(c.reason).toBe(`server answered STARTTLS with ${status.toUpperCase()}`);
      expect(text(c.data)).toBe('a3 LOGOUT\r\n');
      expect(text(c.toLocal)).toBe('* BYE [PRIVACYREQUIRED] TLS refused by the server.\r\n');
    }
  });

  it('PREAUTH greeting: STARTTLS is not allowed once authenticated; close with LOGOUT', () => {
    const r = run(['* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] logged in\r\n']);
    const c = closed(r.actions);
    expect(c.reason).toMatch(/PREAUTH/);
    expect(text(c.data)).toBe('a3 LOGOUT\r\n');
    expect(r.sent).toBe('a3 LOGOUT\r\n');
  });

  it('BYE greeting: our BYE to the local client (the server’s words to the log), nothing to the server', () => {
    // A forged referral would send a client that follows it to the attacker, without TLS.
    const r = run(['* BYE [REFERRAL imap://alice@evil.example/] Too many connections\r\n']);
    const c = closed(r.actions);
    expect(c.reason).toMatch(/BYE as its greeting: ".*Too many connections"/);
    expect(c.data).toBeUndefined();
    expect(text(c.toLocal)).toBe('* BYE [UNAVAILABLE] Server closing.\r\n');
  });

  it('BYE while waiting for the STARTTLS reply: close, no LOGOUT', () => {
    const r = run([DOVECOT_GREETING, '* BYE\r\n']);
    const c = closed(r.actions);
    expect(c.data).toBeUndefined();
    expect(text(c.toLocal)).toBe('* BYE [UNAVAILABLE] Server closing.\r\n');
  });

  it('a greeting that is not IMAP (an SMTP server): close without a word to it', () => {
    const r = run(['220 mx.example ESMTP\r\n']);
    const c = closed(r.actions);
    expect(c.reason).toBe('server greeting is not "* OK"');
    expect(c.data).toBeUndefined();
    expect(text(c.toLocal)).toBe('* BYE [UNAVAILABLE] Bad greeting.\r\n');
  });

  it('out of protocol replies: a continuation, another tag, an unknown status, an empty line', () => {
    for (const bad of ['+ go on\r\n', 'a1 OK wrong tag\r\n', 'a2 MAYBE\r\n', '\r\n', 'a2\r\n']) {
      const r = run([DOVECOT_GREETING, bad]);
      expect(closed(r.actions).reason, bad).toBe('unexpected reply to STARTTLS');
      expect(r.sent).toBe('a2 STARTTLS\r\na3 LOGOUT\r\n');
    }
  });

  it('a line over maxLineLength closes at once (not when it ends)', () => {
    const r = run([DOVECOT_GREETING, `* OK ${'x'.repeat(200)}`], { maxLineLength: 100 });
    expect(closed(r.actions).reason).toBe('server response line too long');
  });

  it('more than maxResponseLines lines: close', () => {
    const r = run([DOVECOT_GREETING, '* OK a\r\n* OK b\r\n'], { maxResponseLines: 2 });
    expect(closed(r.actions).reason).toBe('too many server response lines');
  });

  it('greeting timeout: the timer re-arms early, then closes (no LOGOUT: no greeting)', () => {
    const s = open();
    s.start(1000);
    expect(s.timer(30_999)).toEqual([{ type: 'timer', at: 31_000 }]);
    const c = closed(s.timer(31_000));
    expect(c.reason).toBe('timeout waiting for the greeting');
    expect(c.data).toBeUndefined();
    expect(text(c.toLocal)).toBe('* BYE [UNAVAILABLE] Server timeout.\r\n');
  });

  it('reply timeout: a partial line does not re-arm it; close with LOGOUT', () => {
    const s = open({ replyTimeoutMs: 500 });
    s.start(0);
    s.receive(enc('* OK hi\r\n'), 10);
    expect(s.receive(enc('* CAPA'), 400)).toEqual([]);
    const c = closed(s.timer(510));
    expect(c.reason).toBe('timeout waiting for the reply to CAPABILITY');
    expect(text(c.data)).toBe('a3 LOGOUT\r\n');
  });

  it('timeouts of 0 disable the timer', () => {
    const s = open({ greetingTimeoutMs: 0, replyTimeoutMs: 0 });
    expect(s.start(0)).toEqual([]);
    expect(s.receive(enc(DOVECOT_GREETING), 0).some((a) => a.type === 'timer')).toBe(false);
    expect(s.timer(1e12)).toEqual([]);
  });

  it('the server closes first: close, no LOGOUT', () => {
    for (const script of [[], [DOVECOT_GREETING]]) {
      const s = open();
      feedClient(s, script);
      const c = closed(s.eof!(0));
      expect(c.reason).toMatch(/^server closed the connection before the (greeting|reply)/);
      expect(c.data).toBeUndefined();
      expect(text(c.toLocal)).toBe('* BYE [UNAVAILABLE] Closed.\r\n');
    }
  });
});

describe('IMAP client: response injection (bytes after the go-ahead, same read)', () => {
  it('closes, never starttls; the injected response never reaches the local client', () => {
    const injected = '* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n';
    const r = run([DOVECOT_GREETING, `${GO_AHEAD}${injected}`]);
    expect(r.outcome?.type).toBe('close');
    const c = closed(r.actions);
    expect(c.reason).toMatch(/^response injection: 35 bytes after the STARTTLS go-ahead/);
    expect(c.data).toBeUndefined();
    expect(text(c.toLocal)).toBe(
      '* BYE [PRIVACYREQUIRED] TLS refused: the server sent data before TLS.\r\n',
    );
  });

  it('even a partial line or one CRLF counts', () => {
    for (const extra of ['\r\n', '*', 'a']) {
      expect(run([DOVECOT_GREETING, GO_AHEAD + extra]).outcome?.type).toBe('close');
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Properties

const TIME = { interruptAfterTimeLimit: 4000, numRuns: 300 };

/** Server scripts, each complete (its outcome comes with its last octet). */
const SCRIPTS = [
  DOVECOT_GREETING + GO_AHEAD,
  `* OK hi\r\n* CAPABILITY IMAP4rev1 STARTTLS\r\na1 OK done\r\n${GO_AHEAD}`,
  '* ok [alert] x\n* OK [CAPABILITY IMAP4rev1 STARTTLS] y\r\na1 OK z\r\n* NO w\r\na2 OK\r\n',
  '* OK [CAPABILITY IMAP4rev1] no tls\r\n',
  `${DOVECOT_GREETING}a2 NO later\r\n`,
  '* PREAUTH hi\r\n',
  '* BYE go away\r\n',
  `${DOVECOT_GREETING}+ what\r\n`,
  `* OK ${'y'.repeat(150)}\r\n`,
];

/** What an engine would observe: every action but timers' values kept, logs included. */
const observe = (chunks: Uint8Array[]) => JSON.stringify(feedClient(open(SMALL), chunks));
const SMALL = { maxLineLength: 120, maxResponseLines: 6 };

describe('IMAP client: properties', () => {
  it('(a) any chunking of a server script gives the same actions', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...SCRIPTS),
        fc.array(fc.nat(), { maxLength: 12 }),
        (script, cuts) => {
          const bytes = enc(script);
          const whole = observe([bytes]);
          expect(observe(splitAt(bytes, cuts))).toBe(whole);
          expect(observe(Array.from(bytes, (b) => Uint8Array.of(b)))).toBe(whole);
        },
      ),
      TIME,
    );
  });

  it('(b) any bytes after the go-ahead in the same read: close, never starttls, never to local', () => {
    const expected = '* BYE [PRIVACYREQUIRED] TLS refused: the server sent data before TLS.\r\n';
    fc.assert(
      fc.property(
        fc.constantFrom(...SCRIPTS.slice(0, 3)),
        fc.uint8Array({ minLength: 1, maxLength: 200 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        (script, injected, cuts) => {
          // Cut anywhere before the go-ahead's LF: the last chunk holds it and the injection.
          const r = feedClient(open(), withTrailing(enc(script), injected, cuts));
          expect(r.outcome?.type).toBe('close');
          expect(r.actions.some((a) => a.type === 'starttls')).toBe(false);
          const c = closed(r.actions);
          expect(c.reason).toMatch(/^response injection/);
          // The local client gets the same words whatever was injected.
          expect(text(c.toLocal)).toBe(expected);
          expect(c.data).toBeUndefined();
        },
      ),
      TIME,
    );
  });

  it('(c) garbage never throws, and every action keeps the contract', () => {
    const line = fc.oneof(
      fc.constantFrom(...SCRIPTS, '* CAPABILITY STARTTLS\r\n', 'a1 OK\r\n', GO_AHEAD, '\r\n'),
      fc.string({ maxLength: 40 }).map((s) => `${s}\r\n`),
    );
    fc.assert(
      fc.property(
        fc.array(fc.oneof(line.map(enc), fc.uint8Array({ maxLength: 60 })), { maxLength: 10 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        fc.boolean(),
        (parts, cuts, end) => {
          const bytes = enc(parts.map(dec).join(''));
          const s = open(SMALL);
          const acts: ClientAction[] = [...s.start(0)];
          for (const c of splitAt(bytes, cuts)) acts.push(...s.receive(c, 1));
          acts.push(...s.timer(end ? 1e9 : 2));
          if (end) acts.push(...(s.eof?.(3) ?? []));
          checkClientActions(acts);
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
  const s = open(limits);
  s.start(0);
  s.receive(enc(DOVECOT_GREETING), 0);
  return s as unknown as DialectSession;
}

describePendingCost(
  { describe, it },
  {
    what: 'server reply line',
    open: () => waiting({ maxLineLength: 200_000 }),
    pending: enc(`${'* OK [ALERT] '}${'x'.repeat(8192 - 10)}`),
    long: enc(`${'* OK [ALERT] '}${'x'.repeat(100_500)}`),
  },
);

// ---------------------------------------------------------------------------------------------
// Over a real loopback socket: a server that writes its go-ahead and a forged response in ONE
// write (what a man in the middle does) gets the connection closed; an honest one gets starttls
// with the socket handed back untouched.

const servers: net.Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
});

/** A scripted IMAP server: the greeting, then one answer per line it reads. */
async function scripted(greeting: string, answer: (line: string) => string): Promise<number> {
  const server = net.createServer((sock) => {
    sock.on('error', () => {});
    sock.write(greeting);
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const reply = answer(buf.slice(0, i + 1));
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

describe('IMAP client over a loopback socket', () => {
  it('go-ahead and a forged CAPABILITY in one write: close, the forgery goes nowhere', async () => {
    const port = await scripted(DOVECOT_GREETING, (l) =>
      l.startsWith('a2 STARTTLS') ? `${GO_AHEAD}* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n` : '',
    );
    const sock = await connect(port);
    const r = await runClientSession(open(), sock);
    expect(r.outcome.type).toBe('close');
    expect(r.outcome.type === 'close' && r.outcome.reason).toMatch(/^response injection/);
    expect(dec(r.sent)).toBe('a2 STARTTLS\r\n');
    sock.destroy();
  });

  it('an honest server: starttls, and the socket is handed back with nothing read past it', async () => {
    const port = await scripted('* OK hi\r\n', (l) =>
      l.startsWith('a1 ')
        ? '* CAPABILITY IMAP4rev1 STARTTLS\r\na1 OK done\r\n'
        : l.startsWith('a2 ')
          ? GO_AHEAD
          : '',
    );
    const sock = await connect(port);
    const r = await runClientSession(open(), sock);
    expect(r.outcome.type).toBe('starttls');
    expect(dec(r.sent)).toBe('a1 CAPABILITY\r\na2 STARTTLS\r\n');
    expect(sock.listenerCount('data')).toBe(0);
    sock.destroy();
  });
});
