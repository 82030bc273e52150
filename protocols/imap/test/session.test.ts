import { type Action, optionProblem } from '@tlsproxy/dialect-kit';
import { OBJECT_PROTOTYPE_NAMES } from '@tlsproxy/dialect-kit/testing';
import { describe, expect, it } from 'vitest';
import dialectDefault, {
  capabilityString,
  dialect,
  ImapProtocolError,
  isImapProtocolError,
} from '../src/index.js';
import { dec, enc, feed, newSession, only, written } from './helpers.js';

const CAPS = 'IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS LOGINDISABLED';

describe('dialect object', () => {
  it('has the contract shape', () => {
    expect(dialectDefault).toBe(dialect);
    expect(dialect.name).toBe('imap');
    expect(dialect.defaultPorts).toEqual({ starttls: 143, implicit: 993 });
    for (const spec of Object.values(dialect.limits)) {
      expect(spec.default).toBeGreaterThan(0);
      expect(spec.source).toBeTruthy();
    }
    for (const [name, spec] of Object.entries(dialect.options)) {
      expect(optionProblem(spec, spec.default), name).toBeUndefined();
    }
  });

  it('rejects AUTH= and missing IMAP4rev1 in capabilities', () => {
    const v = (value: unknown) => optionProblem(dialect.options.capabilities!, value);
    expect(v(['IMAP4rev1', 'AUTH=PLAIN'])).toMatch(/AUTH=/);
    expect(v(['IDLE'])).toMatch(/IMAP4rev1/);
    expect(v(['IMAP4rev1', 'bad cap'])).toMatch(/atom/);
  });
});

describe('greeting and any-state commands', () => {
  it('greets like Dovecot with a timer', () => {
    const acts = newSession().start(1000);
    expect(written(acts)).toBe(`* OK [CAPABILITY ${CAPS}] IMAP server ready.\r\n`);
    expect(only(acts, 'timer')).toEqual([{ type: 'timer', at: 61_000 }]);
  });

  it('uses the greeting and capability options, forcing STARTTLS and LOGINDISABLED', () => {
    const acts = newSession({
      greeting: '%h says hi',
      capabilities: ['IMAP4rev2', 'starttls'],
    }).start(0);
    expect(written(acts)).toBe(
      '* OK [CAPABILITY IMAP4rev2 starttls LOGINDISABLED] mail.example says hi\r\n',
    );
    // an invalid list (the engine should have refused it) falls back to the defaults
    expect(written(newSession({ capabilities: ['IMAP4rev1', 'AUTH=PLAIN'] }).start(0))).toContain(
      CAPS,
    );
    expect(capabilityString(['IMAP4rev1', 'AUTH=PLAIN', 'x y'])).toBe(
      'IMAP4rev1 STARTTLS LOGINDISABLED',
    );
  });

  it('answers CAPABILITY', () => {
    expect(feed(['a1 CAPABILITY\r\n']).text).toBe(
      `* CAPABILITY ${CAPS}\r\na1 OK CAPABILITY completed\r\n`,
    );
  });

  it('answers NOOP, and lower case commands', () => {
    expect(feed(['a NOOP\r\n', 'b noop\r\n', 'c NoOp\n']).text).toBe(
      'a OK NOOP completed\r\nb OK NOOP completed\r\nc OK NOOP completed\r\n',
    );
  });

  it('answers LOGOUT with BYE, OK, then closes', () => {
    const { actions, text } = feed(['z LOGOUT\r\n', 'y NOOP\r\n']);
    expect(text).toBe('* BYE IMAP server logging out\r\nz OK LOGOUT completed\r\n');
    expect(actions.at(-1)?.type).toBe('close');
  });

  it('answers ID (RFC 2971)', () => {
    expect(feed(['i ID NIL\r\n']).text).toBe('* ID NIL\r\ni OK ID completed\r\n');
    expect(feed(['i ID ("name" "x" "version" NIL)\r\n']).text).toBe(
      '* ID NIL\r\ni OK ID completed\r\n',
    );
    expect(feed(['i ID ("name")\r\n']).text).toBe('i BAD Invalid ID parameters.\r\n');
  });

  it('takes arguments on CAPABILITY as BAD', () => {
    expect(feed(['a CAPABILITY x\r\n']).text).toBe('a BAD CAPABILITY takes no arguments.\r\n');
  });
});

describe('STARTTLS', () => {
  it('emits the starttls action with goAhead, unavailable and state', () => {
    const { actions, text } = feed(['t1 STARTTLS\r\n']);
    expect(text).toBe('');
    const [st] = only(actions, 'starttls');
    expect(dec(st!.goAhead)).toBe('t1 OK Begin TLS negotiation now\r\n');
    expect(dec(st!.unavailable)).toBe('t1 NO [UNAVAILABLE] TLS not available right now\r\n');
    expect(st!.state).toEqual({ tag: 't1' });
    expect(st!.trailing.length).toBe(0);
    expect(actions.at(-1)?.type).toBe('starttls');
  });

  it('accepts lower case', () => {
    expect(only(feed(['a starttls\r\n']).actions, 'starttls')).toHaveLength(1);
  });

  it('answers STARTTLS with arguments with BAD', () => {
    const { actions, text } = feed(['a STARTTLS now\r\n']);
    expect(text).toBe('a BAD STARTTLS takes no arguments.\r\n');
    expect(only(actions, 'starttls')).toHaveLength(0);
  });

  it('puts pipelined commands in trailing and never answers them', () => {
    const { session, actions, text } = feed(['a STARTTLS\r\nb NOOP\r\n']);
    expect(text).toBe('');
    const [st] = only(actions, 'starttls');
    expect(dec(st!.trailing)).toBe('b NOOP\r\n');
    const later = session.receive(enc('c CAPABILITY\r\nd LOGOUT\r\n'), 1);
    expect(later.every((a) => a.type === 'log')).toBe(true);
    expect(later).toHaveLength(1);
    expect(session.timer(1e9)).toEqual([]);
  });

  it('lets the preamble continue after tlsUnavailable()', () => {
    const { session } = feed(['a STARTTLS\r\nb NOOP\r\n']);
    session.receive(enc('c NOOP\r\n'), 5);
    const acts = session.tlsUnavailable(10);
    expect(acts).toEqual([{ type: 'timer', at: 60_010 }]);
    expect(written(session.receive(enc('d NOOP\r\n'), 11))).toBe('d OK NOOP completed\r\n');
    // and STARTTLS may be tried again
    expect(only(session.receive(enc('e STARTTLS\r\n'), 12), 'starttls')).toHaveLength(1);
  });
});

describe('authentication before TLS', () => {
  const NO = 'NO [PRIVACYREQUIRED] Plaintext authentication is not allowed before STARTTLS.\r\n';

  it('refuses LOGIN', () => {
    expect(feed(['a LOGIN alice secret\r\n']).text).toBe(`a ${NO}`);
    expect(feed(['a login "alice" "se cret"\r\n']).text).toBe(`a ${NO}`);
  });

  it('refuses AUTHENTICATE with and without a SASL-IR initial response', () => {
    expect(feed(['a AUTHENTICATE PLAIN\r\n']).text).toBe(`a ${NO}`);
    expect(feed(['b AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n']).text).toBe(`b ${NO}`);
    expect(feed(['c AUTHENTICATE\r\n']).text).toMatch(/^c BAD /);
  });

  // Issue 14: `+ OK` to `LOGIN {5}` (Dovecot does send it) made the client send its password
  // in the clear, only to be refused. No continuation: the client never sends it.
  it('refuses LOGIN with a synchronizing literal before any continuation', () => {
    const { text } = feed(['a LOGIN {5}\r\n', 'b NOOP\r\n']);
    expect(text).toBe(`a ${NO}b OK NOOP completed\r\n`);
    expect(feed(['a LOGIN alice {6}\r\n']).text).toBe(`a ${NO}`);
    expect(feed(['a AUTHENTICATE PLAIN {6}\r\n']).text).toBe(`a ${NO}`);
  });

  it('discards a refused literal the client sends anyway: never a command, never echoed', () => {
    const { text, actions } = feed([
      'a LOGIN {5}\r\n',
      'alice {6}\r\n',
      'secret\r\n',
      'b NOOP\r\n',
    ]);
    expect(text).toBe(`a ${NO}b OK NOOP completed\r\n`);
    expect(only(actions, 'log').filter((l) => /discarded/.test(l.message))).toHaveLength(2);
    // in one read, and when the "password" looks like a tagged line but is no valid command
    expect(feed(['a LOGIN {5}\r\nalice {12}\r\nx LOGOUT now\r\nb NOOP\r\n']).text).toBe(
      `a ${NO}b OK NOOP completed\r\n`,
    );
    // a compliant client's next command goes through
    const next = feed(['a LOGIN {5}\r\n', 'b STARTTLS\r\n']);
    expect(only(next.actions, 'starttls')).toHaveLength(1);
  });

  it('still sends + OK for a literal of a command that may carry one (ID)', () => {
    const { text } = feed(['a ID ({4}\r\n', 'name "x")\r\n']);
    expect(text).toMatch(/^\+ OK\r\n\* ID NIL\r\na OK ID completed\r\n$/);
  });

  it('never interprets a non-synchronizing literal, even one that spells a command', () => {
    const { actions, text } = feed(['a LOGIN {12+}\r\nx STARTTLS\r\n secret\r\nb NOOP\r\n']);
    expect(only(actions, 'starttls')).toHaveLength(0);
    expect(text).toBe(`a ${NO}b OK NOOP completed\r\n`);
  });

  it('treats a {5} in the middle of a line as text, not a literal', () => {
    expect(feed(['a LOGIN {5} x\r\n']).text).toMatch(/^a BAD /);
  });
});

describe('bad input', () => {
  it('answers unknown commands and auth-state commands with BAD', () => {
    expect(feed(['a FROB\r\n']).text).toBe('a BAD Unknown command.\r\n');
    expect(feed(['a SELECT INBOX\r\n']).text).toBe(
      'a BAD SELECT is not allowed before authentication.\r\n',
    );
  });

  it('answers a bad or missing tag with untagged BAD', () => {
    expect(feed(['* NOOP\r\n']).text).toBe('* BAD Invalid tag.\r\n');
    expect(feed(['a+b NOOP\r\n']).text).toBe('* BAD Invalid tag.\r\n');
    expect(feed(['\r\n']).text).toBe('* BAD Empty command line.\r\n');
    expect(feed(['a\r\n']).text).toBe('a BAD Missing command.\r\n');
  });

  it('does not end a line at a bare CR', () => {
    expect(feed(['a NOOP\rb NOOP\r\n']).text).toMatch(/^a BAD /);
  });

  it('refuses a synchronizing literal for a command that takes none, without swallowing', () => {
    expect(feed(['a SELECT {5}\r\n', 'b NOOP\r\n']).text).toBe(
      'a BAD SELECT is not allowed before authentication.\r\nb OK NOOP completed\r\n',
    );
    expect(feed(['a LOGIN {99999}\r\n', 'b NOOP\r\n'], {}, {}).text).toBe(
      'a BAD [TOOBIG] Literal too big.\r\nb OK NOOP completed\r\n',
    );
  });

  it('closes on a non-synchronizing literal over the limit', () => {
    const { actions, text } = feed(['a LOGIN {99999+}\r\n']);
    expect(text).toBe('a BAD [TOOBIG] Literal too big.\r\n* BYE Literal too big.\r\n');
    expect(actions.at(-1)?.type).toBe('close');
  });

  it('says BYE after too many bad commands', () => {
    const { actions, text } = feed(['x FOO\r\n'.repeat(12)], {}, { maxBadCommands: 3 });
    expect(text).toBe(
      'x BAD Unknown command.\r\nx BAD Unknown command.\r\n* BYE Too many invalid IMAP commands.\r\n',
    );
    expect(actions.at(-1)?.type).toBe('close');
  });

  it('says BYE after too many commands', () => {
    const { text } = feed(['a NOOP\r\n'.repeat(4)], {}, { maxCommands: 3 });
    expect(text).toBe(
      `${'a OK NOOP completed\r\n'.repeat(3)}* BYE Too many commands before STARTTLS.\r\n`,
    );
  });

  it('answers a too long line with BYE and closes (as Dovecot; more in real-servers.test.ts)', () => {
    const long = `a NOOP ${'x'.repeat(100)}`;
    const limits = { maxLineLength: 50 };
    expect(feed([`${long}\r\nb NOOP\r\n`], {}, limits).text).toBe(
      '* BYE Command line too long.\r\n',
    );
    // the same when it arrives a byte at a time
    expect(feed([...`${long}\r\nb NOOP\r\n`], {}, limits).text).toBe(
      '* BYE Command line too long.\r\n',
    );
    // nothing after it, not even a {n+} literal's content, is ever read as a command
    expect(feed([`${long} {12+}\r\nx STARTTLS\r\n\r\nb NOOP\r\n`], {}, limits).text).toBe(
      '* BYE Command line too long.\r\n',
    );
  });
});

describe('command size', () => {
  it('refuses a literal that would make the command too big, and a too big command', () => {
    const limits = { maxCommandSize: 30 };
    expect(feed(['a LOGIN {10}\r\n', 'b NOOP\r\n'], {}, { maxCommandSize: 15 }).text).toBe(
      'a BAD [TOOBIG] Literal too big.\r\nb OK NOOP completed\r\n',
    );
    expect(feed(['a LOGIN {10+}\r\n0123456789 x\r\nb NOOP\r\n'], {}, limits).text).toMatch(
      /^a NO \[PRIVACYREQUIRED\].*\r\nb OK NOOP completed\r\n$/,
    );
    expect(
      feed(['a LOGIN {10+}\r\n0123456789 {10+}\r\n0123456789 x\r\nb NOOP\r\n'], {}, limits).text,
    ).toBe('a BAD [TOOBIG] Literal too big.\r\n* BYE Literal too big.\r\n');
  });

  it('closes when a skipped line announces a literal whose size it cannot know', () => {
    const limits = { maxLineLength: 20 };
    const { actions, text } = feed(
      [`a NOOP ${'x'.repeat(30)}{${'0'.repeat(40)}5+}\r\n`],
      {},
      limits,
    );
    expect(text).toBe('* BYE Command line too long.\r\n');
    expect(actions.at(-1)?.type).toBe('close');
  });
});

describe('time and end of input', () => {
  it('says BYE on the idle timer, re-armed by input', () => {
    const s = newSession();
    s.start(0);
    expect(only(s.receive(enc('a NOOP\r\n'), 30_000), 'timer')).toEqual([
      { type: 'timer', at: 90_000 },
    ]);
    expect(s.timer(60_000)).toEqual([{ type: 'timer', at: 90_000 }]);
    const acts = s.timer(90_000);
    expect(written(acts)).toBe('* BYE Disconnected for inactivity.\r\n');
    expect(acts.at(-1)?.type).toBe('close');
    expect(s.receive(enc('b NOOP\r\n'), 90_001)).toEqual([]);
  });

  it('closes on eof', () => {
    const s = newSession();
    s.start(0);
    expect(s.eof?.(1)).toEqual([{ type: 'close', reason: 'client closed the connection' }]);
  });
});

describe('ImapProtocolError', () => {
  it('is branded and carries the reply', () => {
    const e = new ImapProtocolError('TLSPROXY_ERR_IMAP_SYNTAX', 'a BAD x\r\n');
    expect(isImapProtocolError(e)).toBe(true);
    expect((e as unknown as Record<symbol, unknown>)[Symbol.for('tlsproxy.error')]).toBe(true);
    expect(e.replyText).toBe('a BAD x\r\n');
    expect(isImapProtocolError(new Error('x'))).toBe(false);
  });
});

describe('command reports (logs and tlsproxy_bad_commands_total)', () => {
  const reports = (actions: Action[]) =>
    only(actions, 'log')
      .filter((a) => a.event)
      .map((a) => `${a.event} ${a.command}`);

  it('names known commands, counts refusals as bad, and never reports a client word', () => {
    const { actions } = feed([
      'a CAPABILITY\r\n',
      'b LOGIN alice s3cret\r\n',
      'c s3cret\r\n',
      'd NOOP extra\r\n',
      'e STARTTLS\r\n',
    ]);
    expect(reports(actions)).toEqual([
      'command CAPABILITY',
      'command LOGIN',
      'bad-command unknown',
      'bad-command NOOP',
      'command STARTTLS',
    ]);
    expect(JSON.stringify(only(actions, 'log'))).not.toContain('s3cret');
  });
});

describe('overflow (the engine pre-TLS byte cap)', () => {
  it('answers * BYE, whatever state the session is in', () => {
    const { session } = feed(['a NOOP\r\n', 'b LOGIN {5+}\r\nab']);
    expect(dec(session.overflow!(0))).toBe('* BYE Too much data before STARTTLS.\r\n');
    expect(dec(newSession().overflow!(0))).toMatch(/^\* BYE [^\r\n]+\r\n$/);
  });
});

// Issue 14: the client's command name must never select a handler through a plain object.
describe('Object.prototype names as commands', () => {
  const NAMES = OBJECT_PROTOTYPE_NAMES;
  it.each(NAMES)('%s is an unknown command', (name) => {
    expect(feed([`a ${name}\r\n`]).text).toBe('a BAD Unknown command.\r\n');
    expect(feed([`a ${name} x\r\n`]).text).toBe('a BAD Unknown command.\r\n');
    expect(feed([`a ${name} {3}\r\n`]).text).toBe('a BAD Unknown command.\r\n');
  });
});
