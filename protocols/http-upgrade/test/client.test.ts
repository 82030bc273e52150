// The client role (issue 18): an RFC 2817 upgrade as a client, fed the server's octets. Unit
// tests for each path of the state table in src/client.ts, then properties: any chunking of a
// server script gives the same actions; any octet after the 101 head in the same read is a close
// (response injection), never starttls; garbage never throws.
import type { ClientAction, DialectSession } from '@tlsproxy/dialect-kit';
import { dialectProblems } from '@tlsproxy/dialect-kit';
import { dec, enc, pendingCost, splitAt } from '@tlsproxy/dialect-kit/testing';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { client, INJECTION_REASON, upgradeAnswerLength } from '../src/client.js';
import { dialect } from '../src/index.js';

const TIME = { interruptAfterTimeLimit: 4000, numRuns: 300 };

/** cupsd 2.4's answer (fixtures/transcripts/http-upgrade/options-upgrade.txt). */
const CUPS_101 =
  'HTTP/1.1 101 Switching Protocols\r\nConnection: Keep-Alive\r\nContent-Language: en\r\n' +
  'Content-Length: 0\r\nDate: Fri, 27 Nov 2026 07:17:15 GMT\r\nKeep-Alive: timeout=10\r\n' +
  'Upgrade: TLS/1.2,TLS/1.1,TLS/1.0\r\nAccept-Encoding: gzip, deflate, identity\r\n' +
  "Server: CUPS/2.4 IPP/2.1\r\nX-Frame-Options: DENY\r\nContent-Security-Policy: frame-ancestors 'none'\r\n\r\n";
/** RFC 2817 section 3.3's example. */
const RFC_101 =
  'HTTP/1.1 101 Switching Protocols\r\nUpgrade: TLS/1.0, HTTP/1.1\r\nConnection: Upgrade\r\n\r\n';
const OK_200 = 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nAllow: GET, OPTIONS\r\n\r\n';

function session(
  options: Record<string, unknown> = {},
  limits: Record<string, number> = {},
  serverName = 'localhost',
) {
  return client.create({
    options,
    limits,
    hostname: 'client.example',
    serverName,
    connectionId: 'c1',
  });
}

function run(
  chunks: readonly (string | Uint8Array)[],
  limits: Record<string, number> = {},
  options: Record<string, unknown> = {},
) {
  const s = session(options, limits);
  const start = s.start(0);
  const actions: ClientAction[] = [];
  for (const c of chunks) actions.push(...s.receive(typeof c === 'string' ? enc(c) : c, 0));
  return { s, start, actions };
}

const terminal = (actions: readonly ClientAction[]) =>
  actions.filter((a) => a.type === 'close' || a.type === 'starttls' || a.type === 'plaintext');

function closeOf(actions: readonly ClientAction[]) {
  const a = actions.at(-1);
  if (a?.type !== 'close') throw new Error(`expected a close, got ${JSON.stringify(actions)}`);
  return a;
}

describe('HTTP Upgrade client: start', () => {
  it('sends OPTIONS * with Host, Upgrade: TLS/1.0, Connection: Upgrade and arms the timer', () => {
    const { start } = run([]);
    expect(start).toHaveLength(2);
    expect(start[0]!.type).toBe('send');
    if (start[0]!.type !== 'send') return;
    expect(dec(start[0]!.data)).toBe(
      'OPTIONS * HTTP/1.1\r\nHost: localhost\r\nUpgrade: TLS/1.0\r\nConnection: Upgrade\r\n\r\n',
    );
    expect(start[1]).toEqual({ type: 'timer', at: 30_000 });
  });

  it('the host option overrides Host; an IPv6 server name is bracketed', () => {
    const a = session({ host: 'printer.example.test:631' }).start(0)[0]!;
    expect(a.type === 'send' && dec(a.data)).toContain('\r\nHost: printer.example.test:631\r\n');
    const b = session({}, {}, '::1').start(0)[0]!;
    expect(b.type === 'send' && dec(b.data)).toContain('\r\nHost: [::1]\r\n');
  });

  it('a server name that cannot be a Host closes at once (no header injection)', () => {
    const s = session({}, {}, 'evil\r\nX-Injected: 1');
    const [a] = s.start(0);
    expect(a).toMatchObject({ type: 'close', reason: expect.stringMatching(/cannot send Host/) });
    expect(s.receive(enc(RFC_101), 0)).toEqual([]);
  });
});

describe('HTTP Upgrade client: the go-ahead', () => {
  it("cupsd's 101 (Connection: Keep-Alive, Content-Length: 0, TLS/1.2 first) is starttls", () => {
    const { actions } = run([CUPS_101]);
    expect(actions).toEqual([
      {
        type: 'starttls',
        toLocal: new Uint8Array(0),
        state: { status: 101, upgrade: ['TLS/1.2', 'TLS/1.1', 'TLS/1.0'] },
      },
    ]);
  });

  it("RFC 2817's 101 is starttls; bare LF line ends are taken (RFC 9112 section 2.2)", () => {
    expect(terminal(run([RFC_101]).actions)[0]?.type).toBe('starttls');
    expect(terminal(run([RFC_101.replaceAll('\r\n', '\n')]).actions)[0]?.type).toBe('starttls');
  });

  it('interim 1xx responses before the 101 are read and skipped (RFC 9110 section 15.2)', () => {
    const { actions } = run([
      `HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n${RFC_101}`,
    ]);
    expect(terminal(actions)[0]?.type).toBe('starttls');
  });

  it('one octet after the 101 head in the same read: close naming response injection, 502 locally', () => {
    const { actions } = run([`${RFC_101}H`]);
    expect(terminal(actions)).toHaveLength(1);
    const close = closeOf(actions);
    expect(close.reason).toBe(`${INJECTION_REASON}: 1 octets`);
    expect(dec(close.toLocal!)).toMatch(/^HTTP\/1\.1 502 .*\r\nConnection: close\r\n/s);
  });

  it('a whole forged response after the 101 (the OPTIONS answer in plaintext) is refused', () => {
    const { actions } = run([RFC_101 + OK_200]);
    expect(actions.some((a) => a.type === 'starttls')).toBe(false);
    expect(closeOf(actions).reason).toContain('response injection');
  });

  it('octets fed after starttls are never parsed: one warn log', () => {
    const { s } = run([RFC_101]);
    expect(s.receive(enc('HTTP/1.1 200 OK\r\n\r\n'), 0)).toEqual([
      { type: 'log', level: 'warn', message: 'ignored 19 octets fed after the go-ahead' },
    ]);
  });
});

describe('HTTP Upgrade client: refusals close with 502 for the local client', () => {
  const cases: [string, string | RegExp][] = [
    [OK_200, 'server answered 200 OK instead of 101'],
    [
      'HTTP/1.1 426 Upgrade Required\r\nUpgrade: TLS/1.0\r\n\r\n',
      'server answered 426 Upgrade Required instead of 101',
    ],
    [
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
      '101 without a TLS upgrade (Upgrade: websocket)',
    ],
    ['HTTP/1.1 101 Switching Protocols\r\n\r\n', '101 without a TLS upgrade (Upgrade: none)'],
    ['HTTP/1.1 101 Switching Protocols\r\nUpgrade: TLSX/1.0\r\n\r\n', /without a TLS upgrade/],
    ['HTTP/2.0 101 Switching Protocols\r\n\r\n', 'server answered HTTP/2.0'],
    ['SSH-2.0-OpenSSH_9.2\r\n', 'malformed status line'],
    [
      'HTTP/1.1 101 Switching Protocols\r\n Upgrade: TLS/1.0\r\n\r\n',
      'malformed field line in the response',
    ],
    [
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade : TLS/1.0\r\n\r\n',
      'malformed field line in the response',
    ],
    ['HTTP/1.1 101\r\nUpgrade: TLS/1.0\r\n\r\nx', /response injection/],
  ];
  for (const [reply, reason] of cases) {
    it(JSON.stringify(reply.slice(0, 60)), () => {
      const { actions } = run([reply]);
      expect(terminal(actions)).toHaveLength(1);
      const close = closeOf(actions);
      if (typeof reason === 'string') expect(close.reason).toBe(reason);
      else expect(close.reason).toMatch(reason);
      expect(close.data).toBeUndefined();
      expect(dec(close.toLocal!)).toMatch(/^HTTP\/1\.1 502 /);
    });
  }

  it('a line over maxLineLength, a head over maxHeaderSize, too many fields', () => {
    expect(
      closeOf(run([`HTTP/1.1 200 ${'x'.repeat(100)}`], { maxLineLength: 64 }).actions).reason,
    ).toMatch(/over 64 octets/);
    const fields = 'X-A: 1\r\n'.repeat(10);
    expect(
      closeOf(run([`HTTP/1.1 101 S\r\n${fields}`], { maxHeaderSize: 50 }).actions).reason,
    ).toMatch(/head over 50/);
    expect(
      closeOf(run([`HTTP/1.1 101 S\r\n${fields}`], { maxHeaderFields: 3 }).actions).reason,
    ).toMatch(/more than 3 response fields/);
  });

  it('endless interim responses end at maxHeaderSize', () => {
    const { actions } = run(['HTTP/1.1 100 Continue\r\n\r\n'.repeat(2000)]);
    expect(closeOf(actions).reason).toMatch(/head over 16384/);
  });
});

describe('HTTP Upgrade client: time and end of stream', () => {
  it('the deadline closes; an early call re-arms; eof closes', () => {
    const s = session();
    s.start(500);
    expect(s.timer(600)).toEqual([{ type: 'timer', at: 30_500 }]);
    expect(closeOf(s.timer(30_500)).reason).toBe(
      'no 101 Switching Protocols from the server in time',
    );
    expect(s.timer(40_000)).toEqual([]);
    const t = session();
    t.start(0);
    t.receive(enc('HTTP/1.1 101 Sw'), 0);
    expect(closeOf(t.eof?.(0) ?? []).reason).toBe(
      'the server closed the connection before 101 Switching Protocols',
    );
  });
});

describe('HTTP Upgrade client: the dialect object', () => {
  it('dialect.client passes the kit shape check; limits with unit, phase and source', () => {
    expect(dialectProblems(dialect)).toEqual([]);
    expect(dialect.client).toBe(client);
    for (const [name, spec] of Object.entries(client.limits)) {
      expect(['bytes', 'ms', 'count'], name).toContain(spec.unit);
      expect(spec.phase, name).toBe('preamble');
      expect(spec.source, name).toBeTruthy();
    }
    expect(client.options.host!.validate!('a\r\nb')).toBeTruthy();
    expect(client.options.host!.validate!('cups.example:631')).toBeUndefined();
  });
});

describe('HTTP Upgrade client: the answer to OPTIONS * over TLS (RFC 2817 section 3.3)', () => {
  /** What cupsd 2.4 sends over TLS right after the handshake, before any request. */
  const CUPS_ANSWER =
    'HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nContent-Language: en\r\nContent-Length: 0\r\n' +
    'Date: Fri, 04 Dec 2026 14:05:35 GMT\r\nKeep-Alive: timeout=10\r\nServer: CUPS/2.4 IPP/2.1\r\n\r\n';
  const NEXT = 'HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n';

  it("cupsd's answer is dropped exactly; what follows is relayed", () => {
    expect(upgradeAnswerLength(enc(CUPS_ANSWER))).toBe(CUPS_ANSWER.length);
    expect(upgradeAnswerLength(enc(CUPS_ANSWER + NEXT))).toBe(CUPS_ANSWER.length);
  });

  it('content by Content-Length and interim heads are part of it; incomplete is null', () => {
    const withBody =
      'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello';
    expect(upgradeAnswerLength(enc(withBody + NEXT))).toBe(withBody.length);
    for (let cut = 0; cut < withBody.length; cut++) {
      expect(upgradeAnswerLength(enc(withBody.slice(0, cut))), `cut ${cut}`).toBeNull();
    }
    expect(upgradeAnswerLength(enc('HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n'))).toBe(
      46,
    );
  });

  it('what is not such an answer is relayed untouched (0)', () => {
    for (const bad of [
      'SSH-2.0-x\r\n\r\n',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n',
      'HTTP/1.1 101 Switching Protocols\r\n\r\n',
      'HTTP/1.1 200 OK\r\nbroken\r\n\r\n',
      `HTTP/1.1 200 OK\r\nX: ${'y'.repeat(20_000)}`,
    ]) {
      expect(upgradeAnswerLength(enc(bad)), bad.slice(0, 40)).toBe(0);
    }
  });

  it('never throws, and never drops more than it was given', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 200 }),
        fc.constantFrom('', CUPS_ANSWER),
        (bytes, prefix) => {
          const data = Uint8Array.from([...enc(prefix), ...bytes]);
          const n = upgradeAnswerLength(data);
          if (n !== null) expect(n).toBeLessThanOrEqual(data.length);
        },
      ),
      TIME,
    );
  });

  it("is the client object's afterTls", () => {
    expect(client.afterTls).toBe(upgradeAnswerLength);
  });
});

// --- properties -----------------------------------------------------------------------------

const SCRIPTS = [
  CUPS_101,
  RFC_101,
  OK_200,
  `HTTP/1.1 100 Continue\r\n\r\n${RFC_101}`,
  'HTTP/1.1 101 S\r\nUpgrade: h2c\r\n\r\n',
];

describe('HTTP Upgrade client properties', () => {
  it('(a) any chunking of a server script gives the same actions', () => {
    fc.assert(
      fc.property(fc.constantFrom(...SCRIPTS), fc.array(fc.nat()), (script, cuts) => {
        const bytes = enc(script);
        const whole = run([bytes]).actions;
        expect(run(splitAt(bytes, cuts)).actions).toEqual(whole);
        expect(run(Array.from(bytes, (b) => Uint8Array.of(b))).actions).toEqual(whole);
      }),
      TIME,
    );
  });

  it('(a) the same under small limits, where a line or the head runs over', () => {
    const limits = { maxHeaderSize: 120, maxLineLength: 48, maxHeaderFields: 4 };
    fc.assert(
      fc.property(
        // One script, nothing after its end: interim heads, then a 101 with fields of any size.
        fc.array(
          fc.constantFrom('HTTP/1.1 100 Continue\r\n\r\n', 'HTTP/1.1 102 P\r\nA: b\r\n\r\n'),
          {
            maxLength: 3,
          },
        ),
        fc.array(
          fc.constantFrom(`X-Long: ${'y'.repeat(60)}\r\n`, 'A: b\r\n', 'Upgrade: TLS/1.0\r\n'),
          {
            maxLength: 6,
          },
        ),
        fc.array(fc.nat()),
        (interim, fields, cuts) => {
          const bytes = enc(`${interim.join('')}HTTP/1.1 101 S\r\n${fields.join('')}\r\n`);
          const whole = run([bytes], limits).actions;
          expect(run(splitAt(bytes, cuts), limits).actions).toEqual(whole);
          expect(
            run(
              Array.from(bytes, (b) => Uint8Array.of(b)),
              limits,
            ).actions,
          ).toEqual(whole);
        },
      ),
      TIME,
    );
  });

  it('(b) any octets after the 101 head in the same read: close, never starttls', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(CUPS_101, RFC_101),
        fc.uint8Array({ minLength: 1, maxLength: 64 }),
        fc.array(fc.nat()),
        fc.nat(),
        (ok, extra, cuts, at) => {
          const bytes = enc(ok);
          const split = at % bytes.length; // the last read holds bytes[split..] and more
          const chunks = [...splitAt(bytes.subarray(0, split), cuts)];
          chunks.push(Uint8Array.from([...bytes.subarray(split), ...extra]));
          const { actions } = run(chunks);
          expect(actions.some((a) => a.type === 'starttls')).toBe(false);
          expect(terminal(actions)).toHaveLength(1);
          expect(closeOf(actions).reason).toContain('response injection');
        },
      ),
      TIME,
    );
  });

  it('(c) garbage never throws; at most one close or starttls, nothing after it', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.uint8Array({ maxLength: 40 }),
            fc.constantFrom(...SCRIPTS).map(enc),
            fc.constantFrom('\r\n', '\n', 'HTTP/1.1 101 ', 'Upgrade: TLS/1.0\r\n', '\r').map(enc),
          ),
          { maxLength: 10 },
        ),
        fc.nat(),
        (chunks, t) => {
          const { s, actions } = run(chunks, { maxHeaderSize: 300, maxLineLength: 80 });
          actions.push(...s.timer(t), ...(s.eof?.(t) ?? []));
          expect(terminal(actions).length).toBeLessThanOrEqual(1);
          const end = actions.findIndex((a) => a.type === 'close' || a.type === 'starttls');
          if (end >= 0) expect(actions.slice(end + 1).filter((a) => a.type !== 'log')).toEqual([]);
          for (const a of actions) if (a.type === 'log') expect(a.level).not.toBe('error');
        },
      ),
      TIME,
    );
  });
});

describe('HTTP Upgrade client: a pending line costs O(its length)', () => {
  // Issue 14's rule for the client side: the kit's LineFramer keeps a pending line once and
  // scans it once; completed lines are not kept.
  const open = (maxLineLength: number) => () => {
    const s = session({}, { maxLineLength, maxHeaderSize: 1 << 20 });
    s.start(0);
    return s as unknown as DialectSession;
  };
  const pending = (n: number) => enc(`HTTP/1.1 101 S\r\nX-Long: ${'y'.repeat(n)}`);
  for (const chunk of [1, 7, 100]) {
    it(`memory, ${chunk} octet(s) per read`, () => {
      const p = pending(8000);
      const { perSession, closed } = pendingCost(open(8192), p, chunk);
      expect(closed).toBe(0);
      expect(perSession).toBeLessThan(2 * p.length + 8192);
    });
  }
  it('CPU: a 120,000-octet field line, one octet per read', () => {
    const { ms, closed } = pendingCost(open(200_000), pending(120_000), 1, 2);
    expect(closed).toBe(0);
    expect(ms).toBeLessThan(1000);
  });
});
