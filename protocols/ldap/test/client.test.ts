// The client role (issue 18): LDAP StartTLS as a client, fed the server's octets. Unit tests for
// each path of the state table in src/client.ts, then properties: any chunking of a server
// script gives the same actions; any octet after the StartTLS response in the same read is a
// close (response injection), never starttls; garbage never throws.
import type { ClientAction, DialectSession } from '@tlsproxy/dialect-kit';
import { dialectProblems } from '@tlsproxy/dialect-kit';
import { pendingCost, splitAt } from '@tlsproxy/dialect-kit/testing';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { int, seq, str, tlv } from '../src/ber.js';
import {
  client,
  INJECTION_REASON,
  LOCAL_NOTICE,
  START_TLS_REQUEST,
  UNBIND_REQUEST,
} from '../src/client.js';
import { dialect } from '../src/index.js';
import { extendedResponse, noticeOfDisconnection, OID, result } from '../src/messages.js';
import { hex, toHex } from './helpers.js';

const TIME = { interruptAfterTimeLimit: 4000, numRuns: 300 };

/** slapd 2.5's StartTLS response (fixtures/transcripts/ldap/starttls.txt): no responseName. */
const SLAPD_OK = hex('30 0c 02 01 01 78 07 0a 01 00 04 00 04 00');
const NAMED_OK = extendedResponse(1, 0, '', OID.startTls);
const REFUSED = extendedResponse(1, 52, 'TLS already started', OID.startTls);
const NOTICE = noticeOfDisconnection(2, 'decoding error');

function session(limits: Record<string, number> = {}) {
  return client.create({
    options: {},
    limits,
    hostname: 'client.example',
    serverName: 'localhost',
    connectionId: 'c1',
  });
}

/** start(0), then every chunk at time 0: the actions after start. */
function run(chunks: readonly Uint8Array[], limits: Record<string, number> = {}) {
  const s = session(limits);
  const start = s.start(0);
  const actions: ClientAction[] = [];
  for (const c of chunks) actions.push(...s.receive(c, 0));
  return { s, start, actions };
}

const terminal = (actions: readonly ClientAction[]) =>
  actions.filter((a) => a.type === 'close' || a.type === 'starttls' || a.type === 'plaintext');

describe('LDAP client: start', () => {
  it('sends the StartTLS ExtendedRequest with message id 1 and arms the timer', () => {
    const { start } = run([]);
    expect(start).toEqual([
      { type: 'send', data: START_TLS_REQUEST },
      { type: 'timer', at: 30_000 },
    ]);
    // The bytes ldapsearch -ZZ and openssl s_client send (fixtures/transcripts/ldap).
    expect(toHex(START_TLS_REQUEST)).toBe(
      `301d02010177188016${Buffer.from(OID.startTls).toString('hex')}`,
    );
  });

  it('responseTimeoutMs 0 disables the timer', () => {
    expect(run([], { responseTimeoutMs: 0 }).start).toEqual([
      { type: 'send', data: START_TLS_REQUEST },
    ]);
  });
});

describe('LDAP client: the go-ahead', () => {
  it("slapd's success response (no responseName) is starttls, nothing for the local client", () => {
    const { actions } = run([SLAPD_OK]);
    expect(actions).toEqual([
      {
        type: 'starttls',
        toLocal: new Uint8Array(0),
        state: { messageId: 1, responseName: false },
      },
    ]);
  });

  it('a success response with the StartTLS responseName is starttls', () => {
    expect(terminal(run([NAMED_OK]).actions)[0]?.type).toBe('starttls');
  });

  it('success with controls and a responseValue is still the go-ahead', () => {
    const pdu = seq(
      int(1),
      tlv(0x78, int(0, 0x0a), str(''), str(''), str(OID.startTls, 0x8a), str('x', 0x8b)),
      tlv(0xa0, seq(str('1.2.3'))),
    );
    expect(terminal(run([pdu]).actions)[0]?.type).toBe('starttls');
  });

  it('one octet after the response in the same read is a close naming response injection', () => {
    const { actions } = run([Uint8Array.from([...SLAPD_OK, 0x30])]);
    expect(actions).toHaveLength(1);
    const close = actions[0]!;
    expect(close.type).toBe('close');
    if (close.type !== 'close') return;
    expect(close.reason).toContain(INJECTION_REASON);
    expect(close.reason).toMatch(/1 octets/);
    expect(close.toLocal).toEqual(LOCAL_NOTICE);
  });

  it('a whole second PDU after the response (a forged search result) is refused too', () => {
    const forged = result(2, 0x65, 0, '');
    const { actions } = run([Uint8Array.from([...NAMED_OK, ...forged])]);
    expect(terminal(actions).map((a) => a.type)).toEqual(['close']);
  });

  it('octets fed in a later read, after starttls, are never parsed: one warn log', () => {
    const { s, actions } = run([SLAPD_OK]);
    expect(actions[0]?.type).toBe('starttls');
    const later = s.receive(Uint8Array.of(0x16, 0x03, 0x03), 0);
    expect(later).toEqual([
      { type: 'log', level: 'warn', message: 'ignored 3 octets fed after the go-ahead' },
    ]);
  });
});

describe('LDAP client: refusals close with Unbind and a Notice for the local client', () => {
  it('another resultCode (unavailable, 52)', () => {
    const { actions } = run([REFUSED]);
    expect(actions).toEqual([
      {
        type: 'close',
        reason: 'server refused StartTLS: resultCode 52 "TLS already started"',
        data: UNBIND_REQUEST,
        toLocal: LOCAL_NOTICE,
      },
    ]);
    // RFC 4511 4.3: UnbindRequest is [APPLICATION 2] NULL, here with message id 2.
    expect(toHex(UNBIND_REQUEST)).toBe('300502010242' + '00');
    // RFC 4511 4.4.1: unsolicited, id 0, unavailable (52), the Notice OID.
    expect(toHex(LOCAL_NOTICE)).toContain(Buffer.from(OID.noticeOfDisconnection).toString('hex'));
  });

  it('protocolError (2) for a server that does not know StartTLS', () => {
    const { actions } = run([extendedResponse(1, 2, 'unsupported extended operation')]);
    expect(actions[0]).toMatchObject({
      type: 'close',
      reason: expect.stringMatching(/resultCode 2/),
    });
  });

  it('a Notice of Disconnection: close, no Unbind (the server is gone)', () => {
    const { actions } = run([NOTICE]);
    expect(actions).toEqual([
      {
        type: 'close',
        reason: 'server sent a Notice of Disconnection: resultCode 2 "decoding error"',
        toLocal: LOCAL_NOTICE,
      },
    ]);
  });

  it('another unsolicited notification (id 0) is refused', () => {
    const { actions } = run([extendedResponse(0, 0, '', '1.2.3')]);
    expect(actions[0]).toMatchObject({
      type: 'close',
      reason: expect.stringMatching(/unsolicited notification/),
    });
  });

  it('a response for another message id', () => {
    const { actions } = run([extendedResponse(2, 0, '')]);
    expect(actions[0]).toMatchObject({
      type: 'close',
      reason: 'response for message id 2, expected 1',
      data: UNBIND_REQUEST,
    });
  });

  it('another protocolOp for message id 1 (a BindResponse)', () => {
    const { actions } = run([result(1, 0x61, 0, '')]);
    expect(actions[0]).toMatchObject({
      type: 'close',
      reason: expect.stringMatching(/0x61 instead of ExtendedResponse/),
    });
  });

  it('a success response named with another OID', () => {
    const { actions } = run([extendedResponse(1, 0, '', '1.2.3')]);
    expect(actions[0]).toMatchObject({
      type: 'close',
      reason: expect.stringMatching(/named "1\.2\.3"/),
    });
  });

  it('not a SEQUENCE, an indefinite length, an oversized length: close before buffering', () => {
    for (const bytes of [hex('31 00'), hex('30 80'), hex('30 84 7f ff ff ff')]) {
      const { actions } = run([bytes]);
      expect(actions[0]).toMatchObject({
        type: 'close',
        reason: expect.stringMatching(/malformed response/),
      });
    }
    const { actions } = run([hex('30 83 01 00 01')], { maxPduSize: 65_536 });
    expect(actions[0]).toMatchObject({
      type: 'close',
      reason: expect.stringMatching(/over the 65536 limit/),
    });
  });

  it('a decoding error inside the PDU (resultCode not ENUMERATED)', () => {
    const pdu = seq(int(1), tlv(0x78, int(0), str(''), str('')));
    expect(run([pdu]).actions[0]).toMatchObject({
      type: 'close',
      reason: expect.stringMatching(/resultCode/),
    });
  });

  it('nesting deeper than maxDepth', () => {
    let deep = str('');
    for (let i = 0; i < 20; i++) deep = seq(deep);
    const pdu = seq(int(1), tlv(0x78, int(0, 0x0a), str(''), str(''), tlv(0xa3, deep)));
    expect(run([pdu]).actions[0]).toMatchObject({
      type: 'close',
      reason: expect.stringMatching(/nesting deeper/),
    });
  });
});

describe('LDAP client: time and end of stream', () => {
  it('the deadline passing closes with Unbind; an early timer call re-arms', () => {
    const s = session();
    s.start(1000);
    expect(s.timer(2000)).toEqual([{ type: 'timer', at: 31_000 }]);
    expect(s.timer(31_000)).toEqual([
      {
        type: 'close',
        reason: 'no StartTLS response from the server in time',
        data: UNBIND_REQUEST,
        toLocal: LOCAL_NOTICE,
      },
    ]);
    expect(s.timer(40_000)).toEqual([]);
  });

  it('eof before the response: close without Unbind', () => {
    const s = session();
    s.start(0);
    s.receive(SLAPD_OK.subarray(0, 5), 0);
    expect(s.eof?.(0)).toEqual([
      {
        type: 'close',
        reason: 'the server closed the connection before its StartTLS response',
        toLocal: LOCAL_NOTICE,
      },
    ]);
    expect(s.eof?.(0)).toEqual([]);
  });

  it('after starttls the timer and eof do nothing', () => {
    const { s } = run([SLAPD_OK]);
    expect(s.timer(1e9)).toEqual([]);
    expect(s.eof?.(0)).toEqual([]);
  });
});

describe('LDAP client: the dialect object', () => {
  it('dialect.client passes the kit shape check, every limit has unit, phase and source', () => {
    expect(dialectProblems(dialect)).toEqual([]);
    expect(dialect.client).toBe(client);
    for (const [name, spec] of Object.entries(client.limits)) {
      expect(['bytes', 'ms', 'count'], name).toContain(spec.unit);
      expect(spec.phase, name).toBe('preamble');
      expect(spec.source, name).toBeTruthy();
    }
  });
});

// --- properties -----------------------------------------------------------------------------

const SCRIPTS: Uint8Array[] = [
  SLAPD_OK,
  NAMED_OK,
  REFUSED,
  NOTICE,
  extendedResponse(2, 0, ''),
  result(1, 0x61, 0, ''),
];

describe('LDAP client properties', () => {
  it('(a) any chunking of a server script gives the same actions', () => {
    fc.assert(
      fc.property(fc.constantFrom(...SCRIPTS), fc.array(fc.nat()), (script, cuts) => {
        const whole = run([script]).actions;
        expect(run(splitAt(script, cuts)).actions).toEqual(whole);
        expect(run(Array.from(script, (b) => Uint8Array.of(b))).actions).toEqual(whole);
      }),
      TIME,
    );
  });

  it('(b) any octets after the go-ahead in the same read: close, never starttls', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(SLAPD_OK, NAMED_OK),
        fc.uint8Array({ minLength: 1, maxLength: 64 }),
        fc.array(fc.nat()),
        fc.nat(),
        (ok, extra, cuts, at) => {
          // Any chunking before the last read; the last read ends the response and carries more.
          const split = 1 + (at % ok.length);
          const chunks = [...splitAt(ok.subarray(0, split - 1), cuts)];
          chunks.push(Uint8Array.from([...ok.subarray(split - 1), ...extra]));
          const { actions } = run(chunks);
          expect(actions.some((a) => a.type === 'starttls')).toBe(false);
          expect(terminal(actions)).toHaveLength(1);
          expect(actions.at(-1)).toMatchObject({ type: 'close' });
          const close = actions.at(-1);
          if (close?.type === 'close') expect(close.reason).toContain('response injection');
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
            fc.constantFrom(...SCRIPTS),
            fc.constantFrom(hex('30'), hex('30 84'), hex('02 01 01')),
          ),
          { maxLength: 8 },
        ),
        fc.nat(),
        (chunks, t) => {
          const { s, actions } = run(chunks, { maxPduSize: 200 });
          actions.push(...s.timer(t), ...(s.eof?.(t) ?? []));
          expect(terminal(actions).length).toBeLessThanOrEqual(1);
          const end = actions.findIndex((a) => a.type === 'close' || a.type === 'starttls');
          if (end >= 0) expect(actions.slice(end + 1).filter((a) => a.type !== 'log')).toEqual([]);
          for (const a of actions) {
            if (a.type === 'log') expect(a.level).not.toBe('error');
            if (a.type === 'close') expect(typeof a.reason).toBe('string');
          }
        },
      ),
      TIME,
    );
  });
});

describe('LDAP client: a pending response costs O(its length)', () => {
  // Issue 14's rule for the client side: the server side's Framer keeps a pending PDU once.
  const open = (maxPduSize: number) => () => {
    const s = session({ maxPduSize });
    s.start(0);
    return s as unknown as DialectSession;
  };
  /** The header of an n-octet PDU and n - 1 of its octets: never complete. */
  const pending = (n: number) =>
    Uint8Array.from([0x30, 0x83, n >> 16, (n >> 8) & 0xff, n & 0xff, ...new Uint8Array(n - 1)]);
  for (const chunk of [1, 7, 100]) {
    it(`memory, ${chunk} octet(s) per read`, () => {
      const p = pending(60_000);
      const { perSession, closed } = pendingCost(open(65_536), p, chunk);
      expect(closed).toBe(0);
      expect(perSession).toBeLessThan(2 * p.length + 8192);
    });
  }
  it('CPU: a 120,000-octet response, one octet per read', () => {
    const { ms, closed } = pendingCost(open(200_000), pending(120_000), 1, 2);
    expect(closed).toBe(0);
    expect(ms).toBeLessThan(1000);
  });
});
