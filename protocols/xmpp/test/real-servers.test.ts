// Issue 17 item 4: what the XMPP preamble answers to each element a client can send before
// <starttls/>, against what Prosody 0.12 sends for the same input (recorded in
// fixtures/transcripts/xmpp/real-*.txt by fixtures/record/record-real.sh). RFC 6120 first.
import { describe, expect, it } from 'vitest';
import { dialect } from '../src/index.js';
import {
  FEATURES,
  feed,
  HEADER_C2S,
  HEADER_S2S,
  OUR_HEADER_C2S,
  only,
  STARTTLS,
  streamError,
} from './helpers.js';

const SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';
const ENCRYPTION_REQUIRED = `<failure xmlns='${SASL}'><encryption-required/></failure>`;
const AUTHS = [
  `<auth xmlns='${SASL}' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>`,
  `<auth xmlns='${SASL}' mechanism='PLAIN'/>`,
  `<auth xmlns='${SASL}' mechanism='SCRAM-SHA-1'>biwsbj1hbGljZSxyPWZ5a28rZDJsYmJGZ09OUnY5cWt4ZGF3TA==</auth>`,
  `<auth xmlns='${SASL}' mechanism='EXTERNAL'>=</auth>`,
];

describe('SASL <auth/> before STARTTLS (RFC 6120 section 6.4.5, as Prosody)', () => {
  it('gets <failure><encryption-required/></failure> and the stream stays open for <starttls/>', () => {
    for (const auth of AUTHS) {
      const { actions, text } = feed([HEADER_C2S, auth, STARTTLS]);
      expect(text, auth).toBe(OUR_HEADER_C2S + FEATURES + ENCRYPTION_REQUIRED);
      expect(only(actions, 'starttls'), auth).toHaveLength(1);
      expect(only(actions, 'close')).toHaveLength(0);
    }
  });

  it('answers only once the element has ended, whatever the chunking', () => {
    const auth = AUTHS[0]!;
    const { actions, text } = feed([HEADER_C2S, ...auth, ...STARTTLS]);
    expect(text).toBe(OUR_HEADER_C2S + FEATURES + ENCRYPTION_REQUIRED);
    expect(only(actions, 'starttls')).toHaveLength(1);
    const half = feed([HEADER_C2S, auth.slice(0, 40)]);
    expect(half.text).toBe(OUR_HEADER_C2S + FEATURES);
  });

  it('on an s2s stream too', () => {
    const { actions, text } = feed([HEADER_S2S, AUTHS[3]!, STARTTLS]);
    expect(text).toContain(ENCRYPTION_REQUIRED);
    expect(only(actions, 'starttls')).toHaveLength(1);
  });

  it('closes after maxBadCommands refused <auth/>s: the failure, then <policy-violation/>', () => {
    const { actions, text } = feed([HEADER_C2S, AUTHS[1]!.repeat(3)], {}, { maxBadCommands: 3 });
    expect(text).toBe(
      OUR_HEADER_C2S +
        FEATURES +
        ENCRYPTION_REQUIRED.repeat(3) +
        streamError('policy-violation', 'Too many failed requests before STARTTLS'),
    );
    expect(actions.at(-1)?.type).toBe('close');
    expect(dialect.limits.maxBadCommands?.default).toBe(10);
  });
});

describe('stanzas before STARTTLS (RFC 6120 section 4.9.3.12)', () => {
  it('iq, message and presence end the stream with <not-authorized/>', () => {
    for (const stanza of [
      "<iq type='get' id='1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
      "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
      "<message to='bob@localhost' id='m1'><body>hi</body></message>",
      '<presence/>',
    ]) {
      const { actions, text } = feed([HEADER_C2S, stanza, STARTTLS]);
      expect(text, stanza).toBe(
        OUR_HEADER_C2S + FEATURES + streamError('not-authorized', 'Use of STARTTLS required'),
      );
      expect(actions.at(-1)?.type).toBe('close');
      expect(only(actions, 'starttls')).toHaveLength(0);
    }
  });

  it('never echoes the stanza id or addresses back', () => {
    const { text } = feed([HEADER_C2S, "<iq type='get' id='SECRET-ID' to='x@localhost'/>"]);
    expect(text).not.toContain('SECRET-ID');
    expect(text).not.toContain('x@localhost');
  });
});

describe('other first-level elements (RFC 6120 section 4.9.3.24, as Prosody)', () => {
  it('end the stream with <unsupported-stanza-type/>', () => {
    for (const element of [
      "<foo xmlns='urn:example'/>",
      "<starttls xmlns='urn:wrong'/>",
      "<starttls xmlns='jabber:client'/>",
      '<starttls/>',
      "<auth xmlns='jabber:client' mechanism='PLAIN'/>",
      '<stream:features/>',
      "<db:result xmlns:db='jabber:server:dialback' to='x' from='y'>key</db:result>",
      "<iq xmlns='urn:example' type='get' id='1'/>",
    ]) {
      const { actions, text } = feed([HEADER_C2S, element]);
      expect(text, element).toBe(
        OUR_HEADER_C2S + FEATURES + streamError('unsupported-stanza-type'),
      );
      expect(actions.at(-1)?.type).toBe('close');
    }
  });
});

describe('element names are reported as commands (tlsproxy_bad_commands_total, logs)', () => {
  const events = (chunks: string[]) =>
    feed(chunks, {}, { maxBadCommands: 100 }).actions.flatMap((a) =>
      a.type === 'log' && a.event ? [`${a.event} ${a.command}`] : [],
    );

  it('STREAM and STARTTLS as commands, refused elements as bad commands, by name', () => {
    expect(events([HEADER_C2S, STARTTLS])).toEqual(['command STREAM', 'command STARTTLS']);
    expect(events([HEADER_C2S, AUTHS[0]!, AUTHS[1]!])).toEqual([
      'command STREAM',
      'bad-command AUTH',
      'bad-command AUTH',
    ]);
    expect(events([HEADER_C2S, '<presence/>'])).toEqual(['command STREAM', 'bad-command PRESENCE']);
    expect(events([HEADER_C2S, "<iq type='get' id='1'/>"])).toEqual([
      'command STREAM',
      'bad-command IQ',
    ]);
    expect(events([HEADER_C2S, "<message to='a@localhost'/>"])).toEqual([
      'command STREAM',
      'bad-command MESSAGE',
    ]);
  });

  it('an element name the dialect does not know is reported as "unknown", never as sent', () => {
    expect(events([HEADER_C2S, "<hunter2 xmlns='urn:x'/>"])).toEqual([
      'command STREAM',
      'bad-command unknown',
    ]);
  });

  it('a refused stream header is a bad STREAM command', () => {
    expect(events([HEADER_C2S.replace("to='localhost'", "to='nope.example'")])).toEqual([
      'bad-command STREAM',
    ]);
  });
});

describe('XML the reader refuses is reported as a bad command too', () => {
  const events = (chunks: string[]) =>
    feed(chunks).actions.flatMap((a) =>
      a.type === 'log' && a.event ? [`${a.event} ${a.command}`] : [],
    );

  it('not-well-formed, restricted XML and a limit: one bad "unknown" command', () => {
    expect(events([HEADER_C2S, '<a b=c>'])).toEqual(['command STREAM', 'bad-command unknown']);
    expect(events([HEADER_C2S, '<!-- c -->'])).toEqual(['command STREAM', 'bad-command unknown']);
    expect(events(['<!DOCTYPE x>'])).toEqual(['bad-command unknown']);
    expect(events([HEADER_C2S, 'x'.repeat(20_000)])).toEqual([
      'command STREAM',
      'bad-command unknown',
    ]);
  });
});
