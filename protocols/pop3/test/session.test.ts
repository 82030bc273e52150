import { type Action, optionProblem } from '@tlsproxy/dialect-kit';
import { OBJECT_PROTOTYPE_NAMES } from '@tlsproxy/dialect-kit/testing';
import { describe, expect, it } from 'vitest';
import dialectDefault, {
  AUTH_REFUSED,
  capaReply,
  dialect,
  isPop3ProtocolError,
  Pop3ProtocolError,
} from '../src/index.js';
import { dec, enc, feed, newSession, only, written } from './helpers.js';

// Byte for byte what Dovecot 2.3.19.1 pop3-login sends before TLS (disable_plaintext_auth=yes).
const CAPA =
  '+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\nSASL\r\n.\r\n';

describe('dialect object', () => {
  it('has the contract shape', () => {
    expect(dialectDefault).toBe(dialect);
    expect(dialect.name).toBe('pop3');
    expect(dialect.defaultPorts).toEqual({ starttls: 110, implicit: 995 });
    for (const spec of Object.values(dialect.limits)) {
      expect(spec.default).toBeGreaterThan(0);
      expect(spec.source).toBeTruthy();
    }
    for (const [name, spec] of Object.entries(dialect.options)) {
      expect(optionProblem(spec, spec.default), name).toBeUndefined();
    }
  });

  it('refuses USER, SASL and malformed capabilities', () => {
    const v = (value: unknown) => optionProblem(dialect.options.capabilities!, value);
    expect(v(['TOP', 'user'])).toMatch(/USER/);
    expect(v(['SASL PLAIN LOGIN'])).toMatch(/SASL/);
    expect(v(['SASL'])).toBeUndefined(); // no mechanism: what Dovecot sends
    expect(v(['bad  cap'])).toMatch(/capability/);
    expect(v(['.'])).toMatch(/"\."/);
    expect(v(['TOP', 'IMPLEMENTATION tlsproxy', 'EXPIRE NEVER'])).toBeUndefined();
  });
});

describe('greeting and CAPA', () => {
  it('greets with +OK and a 10-minute idle timer', () => {
    const acts = newSession().start(1000);
    expect(written(acts)).toBe('+OK POP3 server ready.\r\n');
    expect(only(acts, 'timer')).toEqual([{ type: 'timer', at: 601_000 }]);
  });

  it('uses the greeting option, with %h', () => {
    expect(written(newSession({ greeting: 'Dovecot ready.' }).start(0))).toBe(
      '+OK Dovecot ready.\r\n',
    );
    expect(written(newSession({ greeting: '%h POP3' }).start(0))).toBe('+OK mail.example POP3\r\n');
    // an invalid value (the engine should have refused it) falls back to the default
    expect(written(newSession({ greeting: 'x\r\n-ERR' }).start(0))).toBe(
      '+OK POP3 server ready.\r\n',
    );
  });

  it('answers CAPA with the pre-TLS list ending in STLS and "."', () => {
    expect(feed(['CAPA\r\n']).text).toBe(CAPA);
    expect(feed(['capa\r\n']).text).toBe(CAPA);
  });

  it('uses the capabilities option, adding STLS if missing, never USER or SASL mechanisms', () => {
    expect(feed(['CAPA\r\n'], { capabilities: ['stls', 'TOP'] }).text).toBe(
      '+OK\r\nstls\r\nTOP\r\n.\r\n',
    );
    expect(feed(['CAPA\r\n'], { capabilities: ['TOP'] }).text).toBe('+OK\r\nTOP\r\nSTLS\r\n.\r\n');
    expect(capaReply(['USER', 'SASL PLAIN', 'x  y', '.', 'TOP', 'top'])).toBe(
      '+OK\r\nTOP\r\nSTLS\r\n.\r\n',
    );
  });

  it('answers CAPA with arguments with -ERR', () => {
    expect(feed(['CAPA x\r\n']).text).toBe('-ERR CAPA takes no arguments.\r\n');
  });

  it('accepts a bare LF as line end, not a bare CR', () => {
    expect(feed(['CAPA\n']).text).toBe(CAPA);
    expect(feed(['CAPA\rCAPA\r\n']).text).toBe('-ERR Syntax error in CAPA arguments.\r\n');
  });
});

describe('STLS', () => {
  it('emits the starttls action with goAhead, unavailable and an empty state', () => {
    const { actions, text } = feed(['STLS\r\n']);
    expect(text).toBe('');
    const [st] = only(actions, 'starttls');
    expect(dec(st!.goAhead)).toBe('+OK Begin TLS negotiation\r\n');
    expect(dec(st!.unavailable)).toBe('-ERR [SYS/TEMP] TLS not available right now\r\n');
    expect(st!.state).toEqual({});
    expect(st!.trailing.length).toBe(0);
    expect(actions.at(-1)?.type).toBe('starttls');
  });

  it('accepts any case and a bare LF', () => {
    expect(only(feed(['stls\n']).actions, 'starttls')).toHaveLength(1);
    expect(only(feed(['StLs\r\n']).actions, 'starttls')).toHaveLength(1);
  });

  it('answers STLS with arguments with -ERR', () => {
    const { actions, text } = feed(['STLS now\r\n']);
    expect(text).toBe('-ERR STLS takes no arguments.\r\n');
    expect(only(actions, 'starttls')).toHaveLength(0);
    expect(feed(['STLS \r\n']).text).toBe('-ERR Syntax error in STLS arguments.\r\n');
  });

  it('puts USER pipelined in the same chunk in trailing and never answers it', () => {
    const { actions, text } = feed(['STLS\r\nUSER x\r\n']);
    expect(text).toBe('');
    const [st] = only(actions, 'starttls');
    expect(dec(st!.trailing)).toBe('USER x\r\n');
    expect(only(actions, 'send')).toHaveLength(0);
    expect(actions.filter((a) => a.type !== 'starttls').every((a) => a.type === 'log')).toBe(true);
  });

  it('never answers anything after STLS, not even a second STLS', () => {
    const { session, actions } = feed(['STLS\r\nSTLS\r\n']);
    expect(only(actions, 'starttls')).toHaveLength(1);
    const later = session.receive(enc('STLS\r\nCAPA\r\nQUIT\r\n'), 1);
    expect(later).toHaveLength(1);
    expect(later[0]!.type).toBe('log');
    expect(session.timer(1e9)).toEqual([]);
  });

  it('lets the preamble continue after tlsUnavailable(), and STLS may be tried again', () => {
    const { session } = feed(['STLS\r\nCAPA\r\n']);
    session.receive(enc('CAPA\r\n'), 5);
    expect(session.tlsUnavailable(10)).toEqual([{ type: 'timer', at: 600_010 }]);
    expect(written(session.receive(enc('CAPA\r\n'), 11))).toBe(CAPA);
    expect(only(session.receive(enc('STLS\r\n'), 12), 'starttls')).toHaveLength(1);
  });

  it('ignores tlsUnavailable() outside STLS', () => {
    const s = newSession();
    s.start(0);
    expect(s.tlsUnavailable(1).map((a) => a.type)).toEqual(['log']);
  });
});

describe('authentication before TLS', () => {
  it('refuses USER, PASS, APOP and AUTH with [AUTH]', () => {
    for (const line of [
      'USER alice',
      'PASS secret',
      'PASS with spaces in it',
      'pass  double',
      'APOP mrose c4c9334bac560ecc979e58001b3e22fb',
      'AUTH PLAIN',
      'AUTH PLAIN AGFsaWNlAHNlY3JldA==',
      'AUTH',
      'user',
    ]) {
      expect(feed([`${line}\r\n`]).text, line).toBe(AUTH_REFUSED);
    }
    expect(AUTH_REFUSED).toBe(
      '-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n',
    );
  });

  it('does not count refused authentication as a bad command', () => {
    const { actions } = feed(['USER a\r\n'.repeat(5)], {}, { maxBadCommands: 2 });
    expect(only(actions, 'close')).toHaveLength(0);
  });
});

describe('other commands', () => {
  it('answers QUIT with +OK and closes', () => {
    const { actions, text } = feed(['QUIT\r\n', 'CAPA\r\n']);
    expect(text).toBe('+OK Logging out.\r\n');
    expect(actions.at(-1)?.type).toBe('close');
    expect(feed(['quit\r\nCAPA\r\n']).text).toBe('+OK Logging out.\r\n');
  });

  it('answers NOOP and other TRANSACTION-state commands with -ERR (RFC 1939)', () => {
    expect(feed(['NOOP\r\n']).text).toBe('-ERR NOOP is not allowed before authentication.\r\n');
    expect(feed(['RETR 1\r\n']).text).toBe('-ERR RETR is not allowed before authentication.\r\n');
    expect(feed(['stat\r\n']).text).toBe('-ERR STAT is not allowed before authentication.\r\n');
  });

  it('answers unknown commands and bad lines with -ERR', () => {
    expect(feed(['FROB\r\n']).text).toBe('-ERR Unknown command.\r\n');
    expect(feed(['GET / HTTP/1.1\r\n']).text).toBe('-ERR Unknown command.\r\n');
    expect(feed(['\r\n']).text).toBe('-ERR Invalid command line.\r\n');
    expect(feed([' CAPA\r\n']).text).toBe('-ERR Invalid command line.\r\n');
  });
});

describe('limits', () => {
  it('accepts a 255-octet line and refuses a 256-octet one with -ERR and a close', () => {
    const ok = `FROB ${'x'.repeat(248)}\r\n`; // 255 octets with CRLF
    const long = `FROB ${'x'.repeat(249)}\r\n`;
    expect(ok.length).toBe(255);
    expect(feed([ok]).text).toBe('-ERR Unknown command.\r\n');
    expect(feed([`${long}CAPA\r\n`]).text).toBe('-ERR Command line too long.\r\n');
    // the rest of a long line is never a command, whatever the chunking
    const evil = `FROB ${'x'.repeat(300)} STLS\r\nCAPA\r\n`;
    expect(feed([evil]).text).toBe('-ERR Command line too long.\r\n');
    expect(feed([...evil]).text).toBe('-ERR Command line too long.\r\n');
  });

  it('closes after too many bad commands', () => {
    const { actions, text } = feed(['FROB\r\n'.repeat(12)], {}, { maxBadCommands: 3 });
    expect(text).toBe(
      '-ERR Unknown command.\r\n-ERR Unknown command.\r\n-ERR Unknown command.\r\n-ERR Too many bad commands.\r\n',
    );
    expect(actions.at(-1)?.type).toBe('close');
  });

  it('closes after too many commands', () => {
    const { actions, text } = feed(['CAPA\r\n'.repeat(4)], {}, { maxCommands: 3 });
    expect(text).toBe(`${CAPA.repeat(3)}-ERR Too many commands before STLS.\r\n`);
    expect(actions.at(-1)?.type).toBe('close');
  });
});

describe('time and end of input', () => {
  it('closes without a reply on the idle timer, re-armed by input (RFC 1939 section 3)', () => {
    const s = newSession();
    s.start(0);
    expect(only(s.receive(enc('CAPA\r\n'), 300_000), 'timer')).toEqual([
      { type: 'timer', at: 900_000 },
    ]);
    expect(s.timer(600_000)).toEqual([{ type: 'timer', at: 900_000 }]);
    expect(s.timer(900_000)).toEqual([{ type: 'close', reason: 'idle timeout' }]);
    expect(s.receive(enc('CAPA\r\n'), 900_001)).toEqual([]);
  });

  it('has no timer when idleTimeoutMs is 0', () => {
    expect(only(newSession({}, { idleTimeoutMs: 0 }).start(0), 'timer')).toEqual([]);
  });

  it('closes on eof, once', () => {
    const s = newSession();
    s.start(0);
    expect(s.eof?.(1)).toEqual([{ type: 'close', reason: 'client closed the connection' }]);
    expect(s.eof?.(2)).toEqual([]);
  });
});

describe('Pop3ProtocolError', () => {
  it('is branded and carries the reply', () => {
    const e = new Pop3ProtocolError('TLSPROXY_ERR_POP3_SYNTAX', '-ERR x\r\n');
    expect(isPop3ProtocolError(e)).toBe(true);
    expect((e as unknown as Record<symbol, unknown>)[Symbol.for('tlsproxy.error')]).toBe(true);
    expect(e.replyText).toBe('-ERR x\r\n');
    expect(e.code).toBe('TLSPROXY_ERR_POP3_SYNTAX');
    expect(isPop3ProtocolError(new Error('x'))).toBe(false);
  });
});

describe('command reports (logs and tlsproxy_bad_commands_total)', () => {
  const reports = (actions: Action[]) =>
    only(actions, 'log')
      .filter((a) => a.event)
      .map((a) => `${a.event} ${a.command}`);

  it('names known commands, counts refusals as bad, and never reports a client word', () => {
    const { actions } = feed([
      'CAPA\r\n',
      'USER alice\r\n',
      's3cret\r\n',
      'NOOP x\r\n',
      'STLS\r\n',
    ]);
    expect(reports(actions)).toEqual([
      'command CAPA',
      'command USER',
      'bad-command unknown',
      'bad-command NOOP',
      'command STLS',
    ]);
    expect(JSON.stringify(only(actions, 'log'))).not.toContain('s3cret');
  });
});

describe('overflow (the engine pre-TLS byte cap)', () => {
  it('answers -ERR', () => {
    const { session } = feed(['CAPA\r\n', 'USER ali']);
    expect(dec(session.overflow!(0))).toBe(
      '-ERR Too much data before STLS, closing connection.\r\n',
    );
  });
});

// Issue 14: the client's command name must never select a handler through a plain object.
describe('Object.prototype names as commands', () => {
  const NAMES = OBJECT_PROTOTYPE_NAMES;
  it.each(NAMES)('%s is an unknown command', (name) => {
    expect(feed([`${name}\r\n`]).text).toBe('-ERR Unknown command.\r\n');
    expect(feed([`${name} x\r\n`]).text).toBe('-ERR Unknown command.\r\n');
  });
});
