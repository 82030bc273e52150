import { type Action, optionProblem } from '@tlsproxy/dialect-kit';
import { OBJECT_PROTOTYPE_NAMES } from '@tlsproxy/dialect-kit/testing';
import { describe, expect, it } from 'vitest';
import { parse, type Tlv } from '../src/ber.js';
import dialectDefault, { dialect, isLdapProtocolError, LdapProtocolError } from '../src/index.js';
import {
  abandon,
  cat,
  critical,
  DECODING_NOTICE,
  equal,
  extended,
  feed,
  hex,
  int,
  msg,
  newSession,
  only,
  present,
  SLAPD,
  STARTTLS_OID,
  STARTTLS_OK_NAMED,
  search,
  seq,
  simpleBind,
  startTls,
  str,
  tlv,
  toHex,
  unbind,
  written,
} from './helpers.js';

const SLAPD_LIKE = { startTlsResponseName: false };
const text = (t: Tlv) => Buffer.from(t.value).toString('utf8');

/** The replies in `bytes` as [protocolOp tag, messageID, resultCode or entry attributes]. */
function replies(bytes: Uint8Array): Tlv[] {
  const out: Tlv[] = [];
  for (let at = 0; at < bytes.length; ) {
    const len = bytes[at + 1]! < 0x80 ? bytes[at + 1]! : bytes[at + 2]!;
    const hdr = bytes[at + 1]! < 0x80 ? 2 : 3;
    out.push(parse(bytes.subarray(at, at + hdr + len), 32));
    at += hdr + len;
  }
  return out;
}
function entryAttributes(entry: Tlv): Record<string, string[]> {
  const op = entry.children[1]!;
  expect(op.tag).toBe(0x64);
  expect(text(op.children[0]!)).toBe('');
  return Object.fromEntries(
    op.children[1]!.children.map((a) => [text(a.children[0]!), a.children[1]!.children.map(text)]),
  );
}

describe('dialect object', () => {
  it('has the contract shape', () => {
    expect(dialectDefault).toBe(dialect);
    expect(dialect.name).toBe('ldap');
    expect(dialect.defaultPorts).toEqual({ starttls: 389, implicit: 636 });
    for (const spec of Object.values(dialect.limits)) {
      expect(spec.default).toBeGreaterThan(0);
      expect(spec.source).toBeTruthy();
    }
    for (const [name, spec] of Object.entries(dialect.options)) {
      expect(optionProblem(spec, spec.default), name).toBeUndefined();
    }
    expect(optionProblem(dialect.options.namingContexts!, ['dc=x', 'a\nb'])).toMatch(/not a DN/);
    expect(optionProblem(dialect.options.startTlsResponseName!, 'yes')).toBeTruthy();
  });

  it('sends no greeting, only asks for the idle timer', () => {
    expect(newSession().start(1000)).toEqual([{ type: 'timer', at: 61_000 }]);
    expect(newSession({}, { idleTimeoutMs: 0 }).start(0)).toEqual([]);
  });

  it('brands its error class', () => {
    const e = new LdapProtocolError('TLSPROXY_ERR_LDAP_MALFORMED', 'x', new Uint8Array(0));
    expect(isLdapProtocolError(e)).toBe(true);
    expect(e.code).toBe('TLSPROXY_ERR_LDAP_MALFORMED');
    expect(e.fatal).toBe(true);
    expect(isLdapProtocolError(new Error('x'))).toBe(false);
  });
});

describe('StartTLS (RFC 4511 4.14)', () => {
  it('emits the starttls action with the OID as responseName and the messageID as state', () => {
    const { actions } = feed([startTls(1)]);
    const [st] = only(actions, 'starttls');
    expect(toHex(st!.goAhead)).toBe(STARTTLS_OK_NAMED);
    expect(st!.state).toEqual({ messageId: 1 });
    expect(st!.trailing).toEqual(new Uint8Array(0));
    const [un] = replies(st!.unavailable);
    expect(un!.children[1]!.tag).toBe(0x78);
    expect(un!.children[1]!.children[0]!.value).toEqual(Uint8Array.of(52));
    expect(text(un!.children[1]!.children[3]!)).toBe('1.3.6.1.4.1.1466.20037');
    expect(only(actions, 'send')).toEqual([]);
  });

  it('answers byte for byte as slapd with startTlsResponseName: false', () => {
    const [st] = only(feed([startTls(1)], SLAPD_LIKE).actions, 'starttls');
    expect(toHex(st!.goAhead)).toBe(SLAPD.startTlsOk);
  });

  it('keeps large messageIDs', () => {
    for (const id of [127, 128, 300, 70_000, 0x7fffffff]) {
      const bytes = seq(
        tlv(0x02, hex(id.toString(16).padStart(id >= 0x800000 ? 8 : 6, '0'))),
        tlv(0x77, str('1.3.6.1.4.1.1466.20037', 0x80)),
      );
      const [st] = only(feed([bytes]).actions, 'starttls');
      expect(st!.state).toEqual({ messageId: id });
      expect(replies(st!.goAhead)[0]!.children[0]!.value.reduce((n, b) => n * 256 + b, 0)).toBe(id);
    }
  });

  it('hands back everything after the StartTLS PDU as trailing, and never frames it', () => {
    const after = cat(simpleBind(3, 'cn=x', 'y'), hex('deadbeef'));
    const { session, actions } = feed([cat(search(1, '', 0), startTls(2), after)]);
    const sends = only(actions, 'send');
    expect(sends.length).toBe(2); // root DSE entry and done
    const [st] = only(actions, 'starttls');
    expect(st!.trailing).toEqual(after);
    expect(actions.at(-1)).toMatchObject({ type: 'log', level: 'warn' });
    const later = session.receive(startTls(4), 0);
    expect(later).toEqual([
      { type: 'log', level: 'warn', message: expect.stringMatching(/discarded/) },
    ]);
  });

  it('refuses a requestValue with protocolError (slapd: "no request data expected")', () => {
    const { out, actions } = feed([extended(1, '1.3.6.1.4.1.1466.20037', 'x')], SLAPD_LIKE);
    expect(out).toBe(SLAPD.startTlsValue);
    expect(only(actions, 'starttls')).toEqual([]);
  });

  it('refuses a critical control with unavailableCriticalExtension (RFC 4511 4.1.11)', () => {
    expect(feed([startTls(1, critical('1.2.3.4.5'))], SLAPD_LIKE).out).toBe(SLAPD.startTlsCritical);
    // a non-critical one is ignored
    const bytes = startTls(1, tlv(0xa0, seq(str('1.2.3.4.5'))));
    expect(only(feed([bytes]).actions, 'starttls')).toHaveLength(1);
  });

  it('goes back to the preamble after tlsUnavailable(), with the bytes in between discarded', () => {
    const s = newSession();
    s.start(0);
    s.receive(startTls(1), 0);
    expect(s.receive(search(2, '', 0), 10)).toHaveLength(1); // a log only
    expect(s.tlsUnavailable(20)).toEqual([{ type: 'timer', at: 60_020 }]);
    const again = s.receive(startTls(3), 30);
    expect(only(again, 'starttls')[0]!.state).toEqual({ messageId: 3 });
    expect(newSession().tlsUnavailable(0)[0]).toMatchObject({ type: 'log' });
  });
});

describe('root DSE (RFC 4512 5.1)', () => {
  it('returns only user attributes when none are asked for', () => {
    const [entry, done] = replies(written(feed([search(1, '', 0)]).actions));
    expect(entryAttributes(entry!)).toEqual({ objectClass: ['top'] });
    expect(toHex(cat(parseBack(done!)))).toBe(SLAPD.searchDoneOk);
  });

  it('returns supportedExtension and supportedLDAPVersion when asked, in a fixed order', () => {
    const asked = ['supportedldapversion', 'supportedExtension', 'namingContexts'];
    const [entry] = replies(
      written(feed([search(1, '', 0, asked)], { namingContexts: ['dc=example,dc=test'] }).actions),
    );
    expect(entryAttributes(entry!)).toEqual({
      namingContexts: ['dc=example,dc=test'],
      supportedExtension: ['1.3.6.1.4.1.1466.20037'],
      supportedLDAPVersion: ['3'],
    });
    expect(Object.keys(entryAttributes(entry!))).toEqual([
      'namingContexts',
      'supportedExtension',
      'supportedLDAPVersion',
    ]);
  });

  it('honours "+", "*", "1.1" and typesOnly', () => {
    const plus = entryAttributes(replies(written(feed([search(1, '', 0, ['+'])]).actions))[0]!);
    expect(Object.keys(plus)).toEqual([
      'supportedExtension',
      'supportedFeatures',
      'supportedLDAPVersion',
    ]);
    const both = entryAttributes(
      replies(written(feed([search(1, '', 0, ['*', '+'])]).actions))[0]!,
    );
    expect(Object.keys(both)).toEqual([
      'objectClass',
      'supportedExtension',
      'supportedFeatures',
      'supportedLDAPVersion',
    ]);
    expect(
      entryAttributes(replies(written(feed([search(1, '', 0, ['1.1'])]).actions))[0]!),
    ).toEqual({});
    const types = replies(
      written(
        feed([search(1, '', 0, ['supportedExtension'], present('objectClass'), true)]).actions,
      ),
    );
    expect(entryAttributes(types[0]!)).toEqual({ supportedExtension: [] });
  });

  it('evaluates the filter: no match means only SearchResultDone success (as slapd)', () => {
    const cases: Array<[Uint8Array, boolean]> = [
      [present('objectClass'), true],
      [present('OBJECTCLASS'), true],
      [present('namingContexts'), false],
      [equal('objectClass', 'TOP'), true],
      [equal('objectClass', 'foo'), false],
      [equal('supportedExtension', '1.3.6.1.4.1.1466.20037'), true],
      [tlv(0xa0), true],
      [tlv(0xa1), false],
      [tlv(0xa0, present('objectClass'), equal('supportedLDAPVersion', '3')), true],
      [tlv(0xa1, equal('objectClass', 'x'), present('supportedLDAPVersion')), true],
      [tlv(0xa2, present('objectClass')), false],
      [tlv(0xa2, equal('objectClass', 'x')), true],
      // substrings: Undefined, and NOT Undefined is Undefined
      [tlv(0xa4, str('objectClass'), seq(str('t', 0x80))), false],
      [tlv(0xa2, tlv(0xa4, str('objectClass'), seq(str('t', 0x80)))), false],
    ];
    for (const [filter, hit] of cases) {
      const out = replies(written(feed([search(1, '', 0, [], filter)]).actions));
      expect(out.length, toHex(filter)).toBe(hit ? 2 : 1);
      expect(toHex(parseBack(out.at(-1)!))).toBe(SLAPD.searchDoneOk);
    }
  });
});

describe('refusals before TLS (slapd with security tls=1, byte for byte)', () => {
  it('refuses other searches with confidentialityRequired', () => {
    expect(feed([search(1, 'dc=example,dc=test', 2)]).out).toBe(SLAPD.searchDone13);
    expect(feed([search(1, '', 1)]).out).toBe(SLAPD.searchDone13);
    expect(feed([search(1, 'cn=x', 0)]).out).toBe(SLAPD.searchDone13);
  });

  it('refuses Bind (anonymous and simple) with confidentialityRequired', () => {
    expect(feed([simpleBind(1, '', '')]).out).toBe(SLAPD.bind13);
    expect(feed([simpleBind(1, 'cn=admin,dc=example,dc=test', 'secret')]).out).toBe(SLAPD.bind13);
    const sasl = msg(1, tlv(0x60, int(3), str(''), tlv(0xa3, str('PLAIN'), str('\0a\0b'))));
    expect(feed([sasl]).out).toBe(SLAPD.bind13);
  });

  it('refuses Who am I? with 13 and an unknown extended operation with protocolError', () => {
    expect(feed([extended(1, '1.3.6.1.4.1.4203.1.11.3')]).out).toBe(SLAPD.whoami13);
    expect(feed([extended(1, '1.2.3.4')]).out).toBe(SLAPD.unknownExtended);
  });

  it('refuses update operations and Compare with 13', () => {
    expect(feed([msg(3, str('cn=x,dc=example,dc=test', 0x4a))]).out).toBe(SLAPD.del13id3);
    expect(
      feed([msg(3, tlv(0x6e, str('dc=example,dc=test'), seq(str('dc'), str('example'))))]).out,
    ).toBe(SLAPD.compare13id3);
  });

  it('answers a search with a critical control with 12', () => {
    const s = search(1, '', 0, ['supportedExtension']);
    const withControl = seq(
      ...parse(s, 32).children.map((c) =>
        cat(Uint8Array.of(c.tag), lengthOf(c.value.length), c.value),
      ),
      critical('1.2.3.4.5'),
    );
    expect(feed([withControl]).out).toBe(SLAPD.searchCritical);
  });

  it('ignores Abandon and closes on Unbind without a reply', () => {
    // (the `command` log actions report the operation names: test/commands.test.ts)
    const quiet = (actions: Action[]) => actions.filter((x) => !(x.type === 'log' && x.event));
    const a = feed([abandon(2, 1)]);
    expect(quiet(a.actions).filter((x) => x.type !== 'timer')).toEqual([]);
    const u = feed([unbind(2), startTls(3)]);
    expect(quiet(u.actions)).toEqual([{ type: 'close', reason: 'client sent UnbindRequest' }]);
    expect(u.session.receive(startTls(4), 0)).toEqual([]);
  });
});

describe('malformed BER: Notice of Disconnection (protocolError) and close', () => {
  const closesWithNotice = (chunks: Uint8Array[], limits = {}) => {
    const { actions, out } = feed(chunks, {}, limits);
    expect(actions.at(-1)).toMatchObject({ type: 'close' });
    expect(out).toBe(DECODING_NOTICE);
  };

  it('refuses a PDU that is not a SEQUENCE', () => closesWithNotice([hex('310302 0101')]));
  it('refuses the indefinite form 0x80 at once', () => closesWithNotice([hex('3080')]));
  it('refuses more than 4 length octets and the reserved 0xff', () => {
    closesWithNotice([hex('3085000000000302 0101')]);
    closesWithNotice([hex('30ff')]);
  });
  it('refuses a length over maxPduSize before the contents arrive', () => {
    closesWithNotice([hex('30847fffffff')]);
    closesWithNotice([hex('308200ff')], { maxPduSize: 200 });
    // exactly at the limit is fine
    const s = search(1, '', 0);
    expect(only(feed([s], {}, { maxPduSize: s.length - 2 }).actions, 'send')).toHaveLength(2);
  });
  it('refuses inner lengths that lie', () => {
    closesWithNotice([hex('300502010163 05')]); // search claims 5 octets, none follow
    closesWithNotice([hex('3007 020201 0163 0100')]); // integer runs past its parent
    closesWithNotice([hex('3008 020101 6303 0480 00 00')]); // indefinite inside
  });
  it('refuses nesting deeper than maxDepth', () => {
    let filter = present('objectClass');
    for (let i = 0; i < 40; i++) filter = tlv(0xa0, filter);
    closesWithNotice([search(1, '', 0, [], filter)]);
    const shallow = feed([search(1, '', 0, [], filter)], {}, { maxDepth: 50 });
    expect(only(shallow.actions, 'send')).toHaveLength(2);
  });
  it('refuses bad messageIDs and structure', () => {
    closesWithNotice([seq(int(0), tlv(0x77, str('1.3.6.1.4.1.1466.20037', 0x80)))]);
    closesWithNotice([seq(tlv(0x02, hex('ff')), tlv(0x42))]); // negative
    closesWithNotice([seq(int(1))]); // no protocolOp
    closesWithNotice([seq(str('x'), tlv(0x42))]); // messageID not an INTEGER
    closesWithNotice([seq(int(1), tlv(0x42, hex('00')))]); // Unbind with contents
    closesWithNotice([seq(int(1), tlv(0x77, str('1.3.6.1.4.1.1466.20037', 0x84)))]);
    closesWithNotice([msg(1, tlv(0x63, str('')))]); // search without its fields
    closesWithNotice([search(1, '', 0, [], str('objectClass', 0x04))]); // not a filter
    // Components whose tags are known, where they may not be: a second requestValue [1], a
    // second controls [0].
    closesWithNotice([msg(1, tlv(0x77, str(STARTTLS_OID, 0x80), str('a', 0x81), str('b', 0x81)))]);
    closesWithNotice([seq(int(1), tlv(0x77, str(STARTTLS_OID, 0x80)), tlv(0xa0), tlv(0xa0))]);
    // A SearchRequest with one more OCTET STRING (a tag it uses) after its attributes.
    const searchWith = (extra: Uint8Array) =>
      search(1, '', 0, [], present('objectClass'), false, extra);
    closesWithNotice([searchWith(str('x'))]);
    // One of a tag it does not use is ignored: the root DSE is answered.
    const ignored = feed([searchWith(str('x', 0x8b))]);
    expect(ignored.out).not.toBe(DECODING_NOTICE);
    expect(ignored.actions.at(-1)).not.toMatchObject({ type: 'close' });
  });
  it('ignores trailing components it does not recognize (RFC 4511 section 4; slapd too)', () => {
    // After protocolOp (no controls), after controls, inside the ExtendedRequest, in a Control.
    const control = seq(str('1.2.3'), tlv(0x01, hex('00')), str('v'), str('x', 0x85));
    for (const bytes of [
      seq(int(1), tlv(0x77, str(STARTTLS_OID, 0x80)), int(5)),
      seq(int(2), tlv(0x77, str(STARTTLS_OID, 0x80)), tlv(0xa0, control), str('x', 0x83)),
      msg(3, tlv(0x77, str(STARTTLS_OID, 0x80), str('x', 0x82))),
    ]) {
      const [st] = only(feed([bytes]).actions, 'starttls');
      expect(st, toHex(bytes)).toBeDefined();
    }
  });
  it('answers a request tag it does not know with "unknown LDAP request" (slapd)', () => {
    const r = feed([msg(3, tlv(0x61, int(0, 0x0a), str(''), str('')))]);
    expect(r.out).toBe(SLAPD.unknownRequestNotice);
    expect(feed([msg(3, tlv(0x7e, str('x')))]).out).toBe(SLAPD.unknownRequestNotice);
  });
  it('answers what came before the malformed PDU, then nothing more', () => {
    const { actions, session } = feed([cat(search(1, 'cn=x', 2), hex('31'), startTls(2))]);
    expect(toHex(written(actions))).toBe(SLAPD.searchDone13 + DECODING_NOTICE);
    expect(session.receive(startTls(3), 0)).toEqual([]);
    expect(session.eof!(0)).toEqual([]);
  });
});

describe('limits and time', () => {
  it('closes after maxPdus requests with adminLimitExceeded', () => {
    const { actions } = feed(
      [cat(search(1, '', 0), search(2, '', 0), search(3, '', 0))],
      {},
      { maxPdus: 2 },
    );
    const last = actions.at(-1)!;
    expect(last.type).toBe('close');
    const notice = replies((last as { data: Uint8Array }).data)[0]!;
    expect(notice.children[1]!.children[0]!.value).toEqual(Uint8Array.of(11));
    expect(only(actions, 'send')).toHaveLength(4);
  });

  it('closes after maxBadPdus refused requests, after answering the last one', () => {
    const { actions } = feed(
      [simpleBind(1, '', ''), simpleBind(2, '', ''), startTls(3)],
      {},
      { maxBadPdus: 2 },
    );
    expect(only(actions, 'send')).toHaveLength(2);
    expect(actions.at(-1)).toMatchObject({
      type: 'close',
      reason: 'TLSPROXY_ERR_LDAP_TOO_MANY_BAD',
    });
    expect(only(actions, 'starttls')).toEqual([]);
  });

  it('re-arms the idle timer on input and closes silently when it passes', () => {
    const s = newSession();
    expect(s.start(0)).toEqual([{ type: 'timer', at: 60_000 }]);
    expect(s.receive(search(1, '', 0).subarray(0, 3), 1000)).toEqual([
      { type: 'timer', at: 61_000 },
    ]);
    expect(s.timer(60_000)).toEqual([{ type: 'timer', at: 61_000 }]);
    expect(s.timer(61_000)).toEqual([{ type: 'close', reason: 'idle timeout' }]);
    expect(s.timer(70_000)).toEqual([]);
  });

  it('closes on eof, once', () => {
    const s = newSession();
    s.start(0);
    expect(s.eof!(0)).toEqual([{ type: 'close', reason: 'client closed the connection' }]);
    expect(s.eof!(0)).toEqual([]);
  });
});

function lengthOf(n: number): Uint8Array {
  return n < 0x80 ? Uint8Array.of(n) : Uint8Array.of(0x81, n);
}
/** Re-encode a parsed top-level SEQUENCE (short lengths only) to compare with recorded hex. */
function parseBack(t: Tlv): Uint8Array {
  return cat(Uint8Array.of(t.tag), lengthOf(t.value.length), t.value);
}

describe('overflow (the engine pre-TLS byte cap)', () => {
  it('answers a Notice of Disconnection, protocolError', () => {
    const { session } = feed([search(1, '', 0), hex('3083 00ea60 04')]);
    expect(toHex(session.overflow!(0))).toBe(
      toHex(
        seq(
          int(0),
          tlv(
            0x78,
            int(2, 0x0a),
            str(''),
            str('too much data before StartTLS'),
            str('1.3.6.1.4.1.1466.20036', 0x8a),
          ),
        ),
      ),
    );
  });
});

// Issue 14: peer input never selects a handler through a plain object. The LDAP names a
// client chooses are extended-operation OIDs and attribute names in a root DSE search.
describe('Object.prototype names as operation and attribute names', () => {
  const NAMES = OBJECT_PROTOTYPE_NAMES;
  it.each(NAMES)('%s', (name) => {
    // an unknown extended operation: protocolError, as slapd
    expect(feed([extended(1, name)]).out).toBe(SLAPD.unknownExtended);
    // not an attribute of the root DSE: the entry comes back without it
    const { out } = feed([search(1, '', 0, [name])]);
    expect(out).toBe(toHex(cat(seq(int(1), tlv(0x64, str(''), seq())), hex(SLAPD.searchDoneOk))));
  });
});
