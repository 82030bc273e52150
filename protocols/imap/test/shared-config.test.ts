// What a session derives from its listener's options, limits and host name is built once and
// shared by the listener's sessions (the engine passes the same two objects to each): the same
// frozen object for the same inputs, a new one for new objects (a configuration update), and
// the defence-in-depth defaults for bad options given by hand, exactly as before sharing.
import { resolveLimits, resolveOptions, type SessionContext } from '@tlsproxy/dialect-kit';
import { describe, expect, it } from 'vitest';
import { dialect, type ImapOptions, sessionConfig } from '../src/index.js';
import { dec, enc, written } from './helpers.js';

function context(
  options: unknown,
  limits: unknown,
  hostname = 'mail.example',
): SessionContext<Partial<ImapOptions>> {
  return { options, limits, hostname, connectionId: 'c1' } as SessionContext<Partial<ImapOptions>>;
}

const DEFAULT_GREETING =
  '* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS LOGINDISABLED] IMAP server ready.\r\n';
const DEFAULTS = {
  greeting: DEFAULT_GREETING,
  capabilities: 'IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS LOGINDISABLED',
  idResponse: 'NIL',
  maxLineLength: 8192,
  maxLiteralSize: 4096,
  maxCommandSize: 65536,
  maxCommands: 50,
  maxBadCommands: 10,
  idleTimeoutMs: 60_000,
};

describe('session config shared per listener', () => {
  it('is built once for the same options, limits and host name, and frozen', () => {
    const options = resolveOptions(dialect, { greeting: '%h ready' });
    const limits = resolveLimits(dialect, { maxCommands: 5 });
    const a = sessionConfig(context(options, limits));
    const b = sessionConfig(context(options, limits));
    expect(b).toBe(a);
    expect(Object.isFrozen(a)).toBe(true);
    expect(a.greeting).toMatch(/\] mail\.example ready\r\n$/);
    expect(a.maxCommands).toBe(5);
    // ESM is strict: writing to the shared object throws rather than altering other sessions.
    expect(() => {
      (a as { greeting: string }).greeting = 'x';
    }).toThrow(TypeError);
    expect(sessionConfig(context(options, limits)).greeting).toMatch(/mail\.example ready/);
  });

  it('a configuration update (new objects) gets its own; a new host name too', () => {
    const options = resolveOptions(dialect, {});
    const limits = resolveLimits(dialect, {});
    const first = sessionConfig(context(options, limits));
    const updated = sessionConfig(
      context(resolveOptions(dialect, { idResponse: '("name" "x")' }), limits),
    );
    expect(updated).not.toBe(first);
    expect(updated.idResponse).toBe('("name" "x")');
    const relimited = sessionConfig(context(options, resolveLimits(dialect, { maxCommands: 7 })));
    expect(relimited.maxCommands).toBe(7);
    expect(sessionConfig(context(options, limits)).maxCommands).toBe(50);
    const other = sessionConfig(
      context(resolveOptions(dialect, { greeting: 'at %h' }), limits, 'b.example'),
    );
    expect(other.greeting).toMatch(/\] at b\.example\r\n$/);
    expect(sessionConfig(context(options, limits, 'c.example'))).toEqual(first);
  });

  it('bad options or limits given by hand get the defaults, as without sharing', () => {
    const bad = {
      greeting: '[x',
      capabilities: ['IMAP4rev1', 'AUTH=PLAIN'],
      idResponse: 'oops',
    };
    const badLimits = { maxCommands: -1, maxLineLength: 'x' };
    for (const [options, limits] of [
      [bad, badLimits],
      [undefined, undefined],
      [null, null],
      [{}, {}],
      ['not an object', 42],
    ] as const) {
      for (let i = 0; i < 2; i++) {
        const config = sessionConfig(context(options, limits));
        expect(config).toEqual(DEFAULTS);
        expect(Object.isFrozen(config)).toBe(true);
      }
    }
  });

  it('sessions sharing a config keep their own state', () => {
    const ctx = context(resolveOptions(dialect, {}), resolveLimits(dialect, { maxCommands: 1 }));
    const one = dialect.create(ctx);
    const two = dialect.create(ctx);
    one.start(0);
    two.start(0);
    expect(written(one.receive(enc('a NOOP\r\n'), 0))).toBe('a OK NOOP completed\r\n');
    const over = one.receive(enc('b NOOP\r\n'), 0);
    expect(over.at(-1)?.type).toBe('close');
    // The second session has its own count.
    expect(written(two.receive(enc('a NOOP\r\n'), 0))).toBe('a OK NOOP completed\r\n');
    const tls = two.receive(enc('c STARTTLS\r\n'), 0);
    expect(tls.find((a) => a.type === 'close')).toBeDefined();
    const fresh = dialect.create(ctx);
    const greeting = fresh.start(0).find((a) => a.type === 'send');
    expect(greeting?.type === 'send' && dec(greeting.data)).toBe(DEFAULT_GREETING);
  });
});
