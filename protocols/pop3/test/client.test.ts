// The POP3 client role (issue 18): every path of the state table in src/client.ts, then the
// properties: any chunking of a server script gives the same actions; bytes after the STLS
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

const GREETING = '+OK Dovecot (Debian) ready.\r\n';
// What Dovecot 2.3 answers to CAPA before TLS on loopback (fixtures/transcripts/pop3/capa-stls.txt).
const CAPA =
  '+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n';
const GO_AHEAD = '+OK Begin TLS negotiation now.\r\n';

function closed(actions: ClientAction[] | undefined): ClientCloseAction {
  const c = actions?.find((a) => a.type === 'close');
  if (c?.type !== 'close') throw new Error(`no close in ${JSON.stringify(actions)}`);
  return c;
}

describe('POP3 client: the dialect object', () => {
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

describe('POP3 client: STLS', () => {
  it('greeting, CAPA listing STLS, STLS, +OK: starttls with the greeting for the local client', () => {
    const s = open();
    expect(s.start(0)).toEqual([{ type: 'timer', at: 30_000 }]);
    const a1 = s.receive(enc(GREETING), 5);
    expect(dec(toServer(a1))).toBe('CAPA\r\n');
    expect(a1).toContainEqual({ type: 'timer', at: 30_005 });
    expect(a1).toContainEqual(expect.objectContaining({ event: 'command', command: 'CAPA' }));
    const a2 = s.receive(enc(CAPA), 6);
    expect(dec(toServer(a2))).toBe('STLS\r\n');
    expect(a2).toContainEqual({ type: 'timer', at: 30_006 });
    const a3 = s.receive(enc(GO_AHEAD), 7);
    expect(a3).toHaveLength(1);
    const st = a3[0]!;
    if (st.type !== 'starttls') throw new Error(st.type);
    // Ours, not the server's pre-TLS words (unauthenticated).
    expect(dec(st.toLocal)).toBe('+OK Server ready.\r\n');
    expect(st.state.capabilities).toContain('STLS');
    expect(st.state.capabilities).toContain('SASL PLAIN LOGIN');
    expect(s.receive(enc('x'), 8)).toEqual([]);
    expect(s.timer(100_000)).toEqual([]);
    expect(s.eof!(9)).toEqual([]);
  });

  it('keywords in any case, bare LF, byte-stuffed lines, an APOP timestamp kept', () => {
    const r = run(['+ok <1.2@host> hi\n', '+Ok\n..STLS\nstls x\n.\n', '+oK\n']);
    expect(r.sent).toBe('CAPA\r\nSTLS\r\n');
    if (r.outcome?.type !== 'starttls') throw new Error(String(r.outcome?.type));
    // Only the APOP timestamp is carried over (APOP digests it), nothing else of the greeting.
    expect(dec(r.outcome.toLocal)).toBe('+OK Server ready. <1.2@host>\r\n');
    expect(r.outcome.state.capabilities).toEqual(['.STLS', 'stls x']);
  });
});

describe('POP3 client: no TLS, close', () => {
  it('STLS not listed: close with QUIT and an -ERR for the local client', () => {
    const r = run([GREETING, '+OK\r\nCAPA\r\nUSER\r\n.\r\n']);
    const c = closed(r.actions);
    expect(c.reason).toBe('server does not offer STLS');
    expect(text(c.data)).toBe('QUIT\r\n');
    expect(text(c.toLocal)).toBe('-ERR [SYS/PERM] TLS unavailable.\r\n');
    expect(r.sent).toBe('CAPA\r\nQUIT\r\n');
  });

  it('a byte-stuffed ".STLS" or "STLSX" is not STLS', () => {
    for (const line of ['..STLS', 'STLSX', 'X-STLS']) {
      const r = run([GREETING, `+OK\r\n${line}\r\n.\r\n`]);
      expect(closed(r.actions).reason, line).toBe('server does not offer STLS');
    }
  });

  it('no CAPA (-ERR): STLS is not known to be offered, close', () => {
    const r = run([GREETING, '-ERR Unknown command.\r\n']);
    const c = closed(r.actions);
    expect(c.reason).toMatch(/does not support CAPA/);
    expect(text(c.data)).toBe('QUIT\r\n');
  });

  it('STLS refused: close, QUIT, the local client is told', () => {
    const r = run([GREETING, CAPA, '-ERR [SYS/TEMP] not now\r\n']);
    const c = closed(r.actions);
    expect(c.reason).toBe('server answered STLS with -ERR');
    expect(text(c.data)).toBe('QUIT\r\n');
    expect(text(c.toLocal)).toBe('-ERR [SYS/TEMP] TLS refused by the server.\r\n');
  });

  it('-ERR greeting: our -ERR to the local client (the server’s line to the log), nothing to the server', () => {
    const r = run(['-ERR [SYS/TEMP] Too many connections\r\n']);
    const c = closed(r.actions);
    expect(c.reason).toBe('server greeted -ERR: "-ERR [SYS/TEMP] Too many connections"');
    expect(c.data).toBeUndefined();
    expect(text(c.toLocal)).toBe('-ERR [SYS/TEMP] Server unavailable.\r\n');
  });

  it('no word of the server’s greeting reaches the local client but a well-formed APOP timestamp (property)', () => {
    const word = fc.stringMatching(/^[\x21-\x7e\r]{1,12}$/);
    fc.assert(
      fc.property(fc.array(word, { maxLength: 8 }), (words) => {
        const r = run([`+OK ${words.join(' ')}\r\n`, CAPA, GO_AHEAD]);
        if (r.outcome?.type !== 'starttls') return true;
        expect(dec(r.outcome.toLocal)).toMatch(
          /^\+OK Server ready\.( <[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>)?\r\n$/,
        );
        return true;
      }),
    );
  });

  it('a greeting that is not POP3 (an IMAP server, "+OKAY"): close without a word to it', () => {
    for (const g of ['* OK IMAP ready\r\n', '+OKAY\r\n', '\r\n']) {
      const c = closed(run([g]).actions);
      expect(c.reason).toBe('server greeting is not "+OK"');
      expect(c.data).toBeUndefined();
      expect(text(c.toLocal)).toBe('-ERR [SYS/TEMP] Bad greeting.\r\n');
    }
  });

  it('out of protocol replies to CAPA and STLS: close with QUIT', () => {
    const a = run([GREETING, 'CAPA\r\n']);
    expect(closed(a.actions).reason).toBe('unexpected reply to CAPA');
    const b = run([GREETING, CAPA, 'hello\r\n']);
    expect(closed(b.actions).reason).toBe('unexpected reply to STLS');
    expect(b.sent).toBe('CAPA\r\nSTLS\r\nQUIT\r\n');
  });

  it('a line over maxLineLength closes at once; so does a CAPA list over maxCapabilityLines', () => {
    const a = run([GREETING, `+OK ${'x'.repeat(200)}`], { maxLineLength: 100 });
    expect(closed(a.actions).reason).toBe('server response line too long');
    const b = run([GREETING, '+OK\r\nA\r\nB\r\nC\r\n'], { maxCapabilityLines: 2 });
    expect(closed(b.actions).reason).toBe('too many CAPA lines');
  });

  it('timeouts: greeting (no QUIT), reply (QUIT); a partial line does not re-arm; 0 disables', () => {
    const s = open();
    s.start(1000);
    expect(s.timer(30_999)).toEqual([{ type: 'timer', at: 31_000 }]);
    const c = closed(s.timer(31_000));
    expect(c.reason).toBe('timeout waiting for the greeting');
    expect(c.data).toBeUndefined();
    expect(text(c.toLocal)).toBe('-ERR [SYS/TEMP] Server timeout.\r\n');

    const t = open({ replyTimeoutMs: 500 });
    t.start(0);
    t.receive(enc(GREETING), 10);
    expect(t.receive(enc('+OK\r\nTO'), 400)).toEqual([]);
    const d = closed(t.timer(510));
    expect(d.reason).toBe('timeout waiting for the reply to CAPA');
    expect(text(d.data)).toBe('QUIT\r\n');

    const u = open({ greetingTimeoutMs: 0, replyTimeoutMs: 0 });
    expect(u.start(0)).toEqual([]);
    expect(u.receive(enc(GREETING), 0).some((a) => a.type === 'timer')).toBe(false);
    expect(u.timer(1e12)).toEqual([]);
  });

  it('the server closes first: close, no QUIT', () => {
    for (const script of [[], [GREETING], [GREETING, CAPA]]) {
      const s = open();
      feedClient(s, script);
      const c = closed(s.eof!(0));
      expect(c.reason).toMatch(/^server closed the connection before the (greeting|reply)/);
      expect(c.data).toBeUndefined();
      expect(text(c.toLocal)).toBe('-ERR [SYS/TEMP] Closed.\r\n');
    }
  });
});

describe('POP3 client: response injection (bytes after the go-ahead, same read)', () => {
  it('closes, never starttls; the injected bytes never reach the local client', () => {
    const r = run([GREETING, CAPA, `${GO_AHEAD}+OK 2 messages\r\n`]);
    expect(r.outcome?.type).toBe('close');
    const c = closed(r.actions);
    expect(c.reason).toMatch(/^response injection: 16 bytes after the STLS go-ahead/);
    expect(c.data).toBeUndefined();
    expect(text(c.toLocal)).toBe(
      '-ERR [SYS/PERM] TLS refused: the server sent data before TLS.\r\n',
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Properties

const TIME = { interruptAfterTimeLimit: 4000, numRuns: 300 };

/** Server scripts, each complete (its outcome comes with its last octet). */
const SCRIPTS = [
  GREETING + CAPA + GO_AHEAD,
  '+OK hi\n+OK\nSTLS\n.\n+OK go\n',
  '+OK <a@b>\r\n+OK Capability list follows\r\n..x\r\nSTLS\r\n.\r\n+OK\r\n',
  `${GREETING}+OK\r\nUSER\r\n.\r\n`,
  `${GREETING}${CAPA}-ERR no\r\n`,
  `${GREETING}-ERR no CAPA\r\n`,
  '-ERR busy\r\n',
  `+OK ${'y'.repeat(150)}\r\n`,
];

const SMALL = { maxLineLength: 120, maxCapabilityLines: 6 };
const observe = (chunks: Uint8Array[]) => JSON.stringify(feedClient(open(SMALL), chunks));

describe('POP3 client: properties', () => {
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
    const expected = '-ERR [SYS/PERM] TLS refused: the server sent data before TLS.\r\n';
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
          expect(text(c.toLocal)).toBe(expected);
          expect(c.data).toBeUndefined();
        },
      ),
      TIME,
    );
  });

  it('(c) garbage never throws, and every action keeps the contract', () => {
    const line = fc.oneof(
      fc.constantFrom(...SCRIPTS, '+OK\r\n', 'STLS\r\n', '.\r\n', GO_AHEAD, '\r\n'),
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
  s.receive(enc(GREETING), 0);
  return s as unknown as DialectSession;
}

describePendingCost(
  { describe, it },
  {
    what: 'server reply line',
    open: () => waiting({ maxLineLength: 200_000 }),
    pending: enc(`${'+OK '}${'x'.repeat(4096 - 10)}`),
    long: enc(`${'+OK '}${'x'.repeat(100_500)}`),
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

describe('POP3 client over a loopback socket', () => {
  it('go-ahead and a forged reply in one write: close', async () => {
    const port = await scripted(
      new Map([
        ['CAPA\r\n', CAPA],
        ['STLS\r\n', `${GO_AHEAD}+OK forged\r\n`],
      ]),
    );
    const sock = await connect(port);
    const r = await runClientSession(open(), sock);
    expect(r.outcome.type === 'close' && r.outcome.reason).toMatch(/^response injection/);
    expect(dec(r.sent)).toBe('CAPA\r\nSTLS\r\n');
    sock.destroy();
  });

  it('an honest server: starttls, the socket handed back', async () => {
    const port = await scripted(
      new Map([
        ['CAPA\r\n', CAPA],
        ['STLS\r\n', GO_AHEAD],
      ]),
    );
    const sock = await connect(port);
    const r = await runClientSession(open(), sock);
    expect(r.outcome.type).toBe('starttls');
    expect(sock.listenerCount('data')).toBe(0);
    sock.destroy();
  });
});
