import { type Action, optionProblem } from '@tlsproxy/dialect-kit';
import { OBJECT_PROTOTYPE_NAMES } from '@tlsproxy/dialect-kit/testing';
import { describe, expect, it } from 'vitest';
import dialectDefault, {
  DEFAULT_EXTENSIONS,
  dialect,
  ehloReply,
  isSmtpProtocolError,
  SmtpProtocolError,
} from '../src/index.js';
import { dec, enc, feed, newSession, one, only, written } from './helpers.js';

const EHLO =
  '250-mail.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n' +
  '250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n';
const TLS_FIRST = '530 5.7.0 Must issue a STARTTLS command first\r\n';

describe('dialect object', () => {
  it('has the contract shape', () => {
    expect(dialectDefault).toBe(dialect);
    expect(dialect.name).toBe('smtp');
    expect(dialect.defaultPorts).toEqual({ starttls: 25, implicit: 465 });
    for (const spec of Object.values(dialect.limits)) {
      expect(spec.default).toBeGreaterThan(0);
      expect(spec.source).toBeTruthy();
    }
    expect(dialect.limits.maxLineLength?.default).toBe(512);
    expect(dialect.limits.idleTimeoutMs?.default).toBeGreaterThanOrEqual(300_000);
    for (const [name, spec] of Object.entries(dialect.options)) {
      expect(optionProblem(spec, spec.default), name).toBeUndefined();
    }
  });

  it('refuses AUTH and malformed extensions', () => {
    const v = (value: unknown) => optionProblem(dialect.options.extensions!, value);
    expect(v(['AUTH PLAIN LOGIN'])).toMatch(/AUTH/);
    expect(v(['AUTH=PLAIN'])).toMatch(/AUTH/);
    expect(v(['SIZE\r\n250 X'])).toBeTruthy();
    expect(v(['-X'])).toBeTruthy();
    expect(v([...DEFAULT_EXTENSIONS, 'DSN', 'SMTPUTF8', 'CHUNKING'])).toBeUndefined();
    expect(optionProblem(dialect.options.plaintext!, 'maybe')).toBeTruthy();
    expect(optionProblem(dialect.options.greetDelayMs!, -1)).toBeTruthy();
  });

  it('builds the EHLO reply with STARTTLS and never AUTH', () => {
    expect(ehloReply('h', [])).toBe('250-h\r\n250 STARTTLS\r\n');
    expect(ehloReply('h', ['STARTTLS', 'auth plain', 'PIPELINING', 'pipelining'])).toBe(
      '250-h\r\n250-STARTTLS\r\n250 PIPELINING\r\n',
    );
  });
});

describe('greeting', () => {
  it('sends 220 <host> ESMTP and arms the idle timer', () => {
    const s = newSession();
    const acts = s.start(1000);
    expect(written(acts)).toBe('220 mail.example ESMTP Service ready\r\n');
    expect(only(acts, 'timer')).toEqual([{ type: 'timer', at: 301_000 }]);
  });

  it('takes its text from the greeting option', () => {
    const s = newSession({ greeting: 'Postfix on %h' });
    expect(written(s.start(0))).toBe('220 mail.example ESMTP Postfix on mail.example\r\n');
    expect(written(newSession({ greeting: '' }).start(0))).toBe('220 mail.example ESMTP\r\n');
  });

  it('sanitises the host name', () => {
    const s = dialect.create({
      options: {},
      limits: {},
      hostname: 'a b\r\n250 x',
      connectionId: 'c',
    });
    expect(written(s.start(0))).toBe('220 ab250x ESMTP Service ready\r\n');
  });
});

describe('commands before TLS', () => {
  it('answers EHLO with the multi-line 250 and HELO with one line', () => {
    expect(feed(['EHLO client.example\r\n']).text).toBe(EHLO);
    expect(feed(['HELO client.example\r\n']).text).toBe('250 mail.example\r\n');
    expect(feed(['EHLO [192.0.2.1]\r\n']).text).toBe(EHLO);
  });

  it('advertises the configured extensions', () => {
    expect(feed(['EHLO c\r\n'], { extensions: ['SIZE 1000', 'DSN'] }).text).toBe(
      '250-mail.example\r\n250-SIZE 1000\r\n250-DSN\r\n250 STARTTLS\r\n',
    );
  });

  it('answers NOOP, RSET, HELP and QUIT', () => {
    expect(feed(['NOOP\r\n', 'NOOP hello there\r\n']).text).toBe('250 2.0.0 Ok\r\n'.repeat(2));
    expect(feed(['RSET\r\n']).text).toBe('250 2.0.0 Ok\r\n');
    expect(feed(['HELP\r\n']).text).toMatch(/^214 2\.0\.0 .*STARTTLS.*\r\n$/);
    const { actions, text } = feed(['QUIT\r\n', 'NOOP\r\n']);
    expect(text).toBe('221 2.0.0 Bye\r\n');
    expect(actions.at(-1)).toMatchObject({ type: 'close', reason: 'client quit' });
  });

  it.each([
    'MAIL FROM:<a@b>',
    'RCPT TO:<a@b>',
    'DATA',
    'AUTH PLAIN AGEAYg==',
    'AUTH LOGIN',
    'VRFY root',
    'EXPN list',
    'ETRN example.org',
    'MAIL',
    'mail from:<>',
  ])('%s before TLS gets 530', (line) => {
    expect(feed(['EHLO c\r\n', `${line}\r\n`]).text).toBe(EHLO + TLS_FIRST);
  });

  it('answers 530 to BDAT and skips its chunk data', () => {
    expect(feed(['BDAT 12 LAST\r\nQUIT\r\nQUIT\r\nNOOP\r\n']).text).toBe(
      `${TLS_FIRST}250 2.0.0 Ok\r\n`,
    );
    // byte at a time, the same
    expect(feed([...'BDAT 12 LAST\r\nQUIT\r\nQUIT\r\nNOOP\r\n']).text).toBe(
      `${TLS_FIRST}250 2.0.0 Ok\r\n`,
    );
    expect(feed(['BDAT x\r\nNOOP\r\n']).text).toBe(
      '501 5.5.4 Syntax: BDAT count [LAST]\r\n250 2.0.0 Ok\r\n',
    );
  });

  it('answers unknown commands with 500 and bad syntax with 501', () => {
    expect(feed(['FROB\r\n']).text).toBe('500 5.5.2 Error: command not recognized\r\n');
    expect(feed(['\r\n']).text).toBe('500 5.5.2 Error: bad syntax\r\n');
    expect(feed(['EHLO\r\n']).text).toBe('501 Syntax: EHLO hostname\r\n');
    expect(feed(['HELO\r\n']).text).toBe('501 Syntax: HELO hostname\r\n');
    expect(feed(['EHLO a b\r\n']).text).toBe('501 Syntax: EHLO hostname\r\n');
    expect(feed(['RSET now\r\n']).text).toBe('501 5.5.4 Syntax: RSET\r\n');
    expect(feed(['QUIT now\r\n']).text).toBe('501 5.5.4 Syntax: QUIT\r\n');
    expect(feed(['NOOP \x01\r\n']).text).toBe('501 5.5.4 Syntax: NOOP [text]\r\n');
  });

  it('ignores trailing spaces and the case of command words', () => {
    expect(feed(['ehlo c \r\n', 'NoOp\r\n', 'quit \r\n']).text).toBe(
      `${EHLO}250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n`,
    );
  });

  it('answers pipelined commands in order (RFC 2920)', () => {
    expect(feed(['EHLO c\r\nNOOP\r\nRSET\r\n']).text).toBe(
      `${EHLO}250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n`,
    );
  });
});

describe('STARTTLS', () => {
  it('emits the starttls action with the go-ahead, the 454 and the EHLO name', () => {
    const { actions, text } = feed(['EHLO client.example\r\n', 'STARTTLS\r\n']);
    expect(text).toBe(EHLO);
    const st = one(actions, 'starttls');
    expect(dec(st.goAhead)).toBe('220 2.0.0 Ready to start TLS\r\n');
    expect(dec(st.unavailable)).toBe('454 4.7.0 TLS not available due to temporary reason\r\n');
    expect(st.state).toEqual({ ehlo: 'client.example', esmtp: true });
    expect(st.trailing).toEqual(new Uint8Array(0));
  });

  it('is allowed before EHLO', () => {
    const st = one(feed(['starttls\r\n']).actions, 'starttls');
    expect(st.state).toEqual({ ehlo: null, esmtp: false });
  });

  it('with a parameter gets 501', () => {
    expect(feed(['STARTTLS now\r\n']).text).toBe('501 5.5.4 Syntax: STARTTLS\r\n');
  });

  it('never interprets bytes pipelined after it (CVE-2011-0411)', () => {
    const { actions, text } = feed(['STARTTLS\r\nMAIL FROM:<a@b>\r\n']);
    expect(text).toBe('');
    const st = one(actions, 'starttls');
    expect(dec(st.trailing)).toBe('MAIL FROM:<a@b>\r\n');
    expect(actions.filter((a) => a.type !== 'log' && a.type !== 'starttls')).toEqual([]);
  });

  it('answers nothing received later, and resumes after tlsUnavailable()', () => {
    const { session } = feed(['EHLO c\r\nSTARTTLS\r\n']);
    expect(only(session.receive(enc('NOOP\r\n'), 1), 'send')).toEqual([]);
    const resumed = session.tlsUnavailable(2);
    expect(resumed).toEqual([{ type: 'timer', at: 300_002 }]);
    expect(written(session.receive(enc('NOOP\r\n'), 3))).toBe('250 2.0.0 Ok\r\n');
    // the old EHLO stands: STARTTLS again carries it
    expect(one(session.receive(enc('STARTTLS\r\n'), 4), 'starttls').state).toEqual({
      ehlo: 'c',
      esmtp: true,
    });
  });
});

describe('abuse', () => {
  it('answers a too long line with 500 and skips to its end', () => {
    const long = `NOOP ${'x'.repeat(600)}`;
    expect(feed([`${long}\r\nNOOP\r\n`]).text).toBe('500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n');
    expect(feed([...`${long}\r\nNOOP\r\n`]).text).toBe(
      '500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n',
    );
  });

  it('takes exactly 512 octets with CRLF and refuses 513', () => {
    const ok = `NOOP ${'y'.repeat(505)}`; // 510 + CRLF
    expect(feed([`${ok}\r\n`]).text).toBe('250 2.0.0 Ok\r\n');
    expect(feed([`${ok}y\r\n`]).text).toBe('500 5.5.2 Line too long\r\n');
  });

  it.each([
    'GET / HTTP/1.1',
    'POST /x HTTP/1.0',
    'CONNECT mail.example:25 HTTP/1.1',
    'Host: mail.example',
  ])('closes on HTTP: %s', (line) => {
    const { actions, text } = feed(['EHLO c\r\n', `${line}\r\nNOOP\r\n`]);
    expect(text).toBe(`${EHLO}554 5.7.0 Error: this is an SMTP port, not HTTP\r\n`);
    expect(actions.at(-1)?.type).toBe('close');
  });

  it('closes with 421 after too many errors', () => {
    const { actions, text } = feed(['FOO\r\n'.repeat(5)], {}, { maxBadCommands: 3 });
    expect(text).toBe(
      `${'500 5.5.2 Error: command not recognized\r\n'.repeat(3)}421 4.7.0 mail.example Error: too many errors\r\n`,
    );
    expect(actions.at(-1)?.type).toBe('close');
  });

  it('closes with 421 after too many commands', () => {
    expect(feed(['NOOP\r\n'.repeat(4)], {}, { maxCommands: 3 }).text).toBe(
      `${'250 2.0.0 Ok\r\n'.repeat(3)}421 4.7.0 mail.example Error: too many commands\r\n`,
    );
  });

  it('closes an early talker when the greeting is delayed', () => {
    const s = newSession({ greetDelayMs: 3000 });
    expect(s.start(0)).toEqual([{ type: 'timer', at: 3000 }]);
    const acts = s.receive(enc('EHLO spam\r\n'), 100);
    expect(written(acts)).toBe(
      '554 5.5.0 mail.example Error: client spoke before the greeting\r\n',
    );
    expect(acts.at(-1)).toMatchObject({ type: 'close', reason: 'early talker' });
  });

  it('greets after the delay and then answers normally', () => {
    const s = newSession({ greetDelayMs: 3000 });
    s.start(0);
    expect(s.timer(2000)).toEqual([{ type: 'timer', at: 3000 }]);
    expect(written(s.timer(3000))).toBe('220 mail.example ESMTP Service ready\r\n');
    expect(written(s.receive(enc('NOOP\r\n'), 3001))).toBe('250 2.0.0 Ok\r\n');
  });

  it('says 421 on the idle timer, re-armed by input', () => {
    const s = newSession();
    s.start(0);
    expect(only(s.receive(enc('NOOP\r\n'), 30_000), 'timer')).toEqual([
      { type: 'timer', at: 330_000 },
    ]);
    expect(s.timer(300_000)).toEqual([{ type: 'timer', at: 330_000 }]);
    const acts = s.timer(330_000);
    expect(written(acts)).toBe('421 4.4.2 mail.example Error: timeout exceeded\r\n');
    expect(acts.at(-1)?.type).toBe('close');
    expect(s.receive(enc('NOOP\r\n'), 330_001)).toEqual([]);
  });

  it('closes on eof', () => {
    const s = newSession();
    s.start(0);
    expect(s.eof?.(1)).toEqual([{ type: 'close', reason: 'client closed the connection' }]);
    expect(s.eof?.(2)).toEqual([]);
  });
});

describe('line endings', () => {
  it('accepts a bare LF by default, never a bare CR', () => {
    expect(feed(['NOOP\nRSET\n']).text).toBe('250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n');
    expect(feed(['NOOP\rRSET\r\n']).text).toBe('500 5.5.2 Error: command not recognized\r\n');
    expect(feed(['NOOP x\rRSET\r\n']).text).toBe('501 5.5.4 Syntax: NOOP [text]\r\n');
  });

  it('rejects a bare LF with 521 and closes when bareLf is "reject"', () => {
    const { actions, text } = feed(['NOOP\r\n', 'NOOP\n'], { bareLf: 'reject' });
    expect(text).toBe('250 2.0.0 Ok\r\n521 5.5.2 mail.example Error: bare <LF> received\r\n');
    expect(actions.at(-1)?.type).toBe('close');
  });
});

describe('MX mode (plaintext: handoff)', () => {
  const mx = { plaintext: 'handoff' as const };

  it('hands MAIL and everything after it to the backend, unanswered', () => {
    const rest = 'RCPT TO:<b@c>\r\nDATA\r\n';
    const { actions, text } = feed(
      ['EHLO sender.example\r\nMAIL FROM:<a@b> SIZE=10\r\n', rest],
      mx,
    );
    expect(text).toBe(EHLO);
    const p = one(actions, 'plaintext');
    expect(dec(p.buffered)).toBe('MAIL FROM:<a@b> SIZE=10\r\n');
    expect(p.state).toEqual({ ehlo: 'sender.example', esmtp: true });
    expect(dec(p.unavailable)).toMatch(/^421 4\.3\.0 .*\r\n$/);
    expect(actions.filter((a) => a.type !== 'log').at(-1)).toBe(p);
  });

  it('includes pipelined bytes in buffered, byte for byte', () => {
    const tail = 'MAIL FROM:<a@b>\r\nRCPT TO:<b@c>\r\nDATA\r\n\xff\x00 junk';
    const p = one(feed([`HELO s\r\n${tail}`], mx).actions, 'plaintext');
    expect(dec(p.buffered)).toBe(tail);
    expect(p.state).toEqual({ ehlo: 's', esmtp: false });
  });

  it('wants HELO/EHLO first, and MAIL before RCPT and DATA', () => {
    expect(feed(['MAIL FROM:<a@b>\r\n'], mx).text).toBe(
      '503 5.5.1 Error: send HELO/EHLO first\r\n',
    );
    expect(feed(['EHLO s\r\nRCPT TO:<a@b>\r\nDATA\r\n'], mx).text).toBe(
      `${EHLO}503 5.5.1 Error: need MAIL command\r\n503 5.5.1 Error: need RCPT command\r\n`,
    );
    expect(feed(['EHLO s\r\nMAIL\r\n'], mx).text).toBe(
      `${EHLO}501 5.5.4 Syntax: MAIL FROM:<address>\r\n`,
    );
  });

  it('still refuses AUTH and still offers STARTTLS', () => {
    expect(feed(['EHLO s\r\nAUTH PLAIN\r\n'], mx).text).toBe(EHLO + TLS_FIRST);
    expect(
      one(feed(['EHLO s\r\nSTARTTLS\r\nMAIL FROM:<a@b>\r\n'], mx).actions, 'starttls'),
    ).toBeTruthy();
  });

  it('ignores input after the hand-off', () => {
    const { session } = feed(['EHLO s\r\nMAIL FROM:<a@b>\r\n'], mx);
    expect(only(session.receive(enc('RCPT TO:<x@y>\r\n'), 1), 'send')).toEqual([]);
    expect(session.timer(1e9)).toEqual([]);
  });
});

describe('SmtpProtocolError', () => {
  it('is branded and carries the reply', () => {
    const e = new SmtpProtocolError('TLSPROXY_ERR_SMTP_SYNTAX', '501 x\r\n');
    expect(isSmtpProtocolError(e)).toBe(true);
    expect((e as unknown as Record<symbol, unknown>)[Symbol.for('tlsproxy.error')]).toBe(true);
    expect(e.replyText).toBe('501 x\r\n');
    expect(e.code).toBe('TLSPROXY_ERR_SMTP_SYNTAX');
    expect(isSmtpProtocolError(new Error('x'))).toBe(false);
  });
});

describe('command reports (logs and tlsproxy_bad_commands_total)', () => {
  const reports = (actions: Action[]) =>
    only(actions, 'log')
      .filter((a) => a.event)
      .map((a) => `${a.event} ${a.command}`);

  it('names known commands, counts refusals as bad, and never reports a client word', () => {
    const { actions } = feed([
      'EHLO client.example\r\n',
      'MAIL FROM:<a@b.example>\r\n',
      's3cret\r\n',
      'NOOP\r\n',
      'STARTTLS\r\n',
    ]);
    expect(reports(actions)).toEqual([
      'command EHLO',
      'bad-command MAIL',
      'bad-command unknown',
      'command NOOP',
      'command STARTTLS',
    ]);
    expect(JSON.stringify(only(actions, 'log'))).not.toContain('s3cret');
  });
});

describe('overflow (the engine pre-TLS byte cap)', () => {
  it('answers 421 4.7.0', () => {
    const { session } = feed(['EHLO a\r\n', 'MAIL FR']);
    expect(dec(session.overflow!(0))).toBe(
      '421 4.7.0 mail.example Error: too much data before STARTTLS\r\n',
    );
  });
});

// Issue 14: the client's command word must never select a handler through a plain object.
describe('Object.prototype names as commands', () => {
  const NAMES = OBJECT_PROTOTYPE_NAMES;
  it.each(NAMES)('%s is an unknown command', (name) => {
    const unknown = '500 5.5.2 Error: command not recognized\r\n';
    expect(feed([`${name}\r\n`]).text).toBe(unknown);
    expect(feed([`EHLO a\r\n${name} x\r\n`]).text).toMatch(new RegExp(`\\r\\n${unknown}$`));
  });
});
