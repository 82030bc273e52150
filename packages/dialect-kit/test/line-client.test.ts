// The shared skeleton of line-based client sides: a toy protocol ("+HI" greeting, "GO" → "+OK")
// exercises what every subclass inherits.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type ClientAction,
  fromLatin1,
  type LineClientReplies,
  LineClientSession,
} from '../src/index.js';

const REPLIES: LineClientReplies = {
  badResponse: '-bad\r\n',
  timeout: '-timeout\r\n',
  closed: '-closed\r\n',
  internal: '-internal\r\n',
  injection: '-injection\r\n',
};

class Toy extends LineClientSession<'go'> {
  constructor(limits = { maxLineLength: 16, greetingTimeoutMs: 1000, replyTimeoutMs: 500 }) {
    super('toy', 'BYE\r\n', limits);
  }
  protected replies() {
    return REPLIES;
  }
  protected waitingFor() {
    return this.phase === 'greeting' ? 'the greeting' : 'the reply to GO';
  }
  protected line(text: string, now: number, out: ClientAction[]): void {
    if (text === 'THROW') throw new Error('boom');
    if (this.phase === 'greeting' && text === '+HI') {
      this.polite = true;
      this.send(out, now, 'go', 'GO', 'GO', new Set(['GO']));
    } else if (this.phase === 'go' && text === '+OK') {
      this.goAhead(out, 'GO', 'hello\r\n', {});
    } else this.close(out, 'unexpected', REPLIES.badResponse);
  }
}

const text = (b: Uint8Array | undefined) => (b ? Buffer.from(b).toString('latin1') : undefined);
const last = (a: ClientAction[]) => a.at(-1)!;

describe('LineClientSession', () => {
  it('greeting, command, go-ahead: starttls with toLocal', () => {
    const s = new Toy();
    expect(s.start(0)).toEqual([{ type: 'timer', at: 1000 }]);
    const a = s.receive(fromLatin1('+HI\r\n'), 1);
    expect(a.some((x) => x.type === 'send' && text(x.data) === 'GO\r\n')).toBe(true);
    const b = s.receive(fromLatin1('+OK\r\n'), 2);
    expect(last(b)).toMatchObject({ type: 'starttls' });
    expect(text((last(b) as { toLocal: Uint8Array }).toLocal)).toBe('hello\r\n');
    expect(s.receive(fromLatin1('x'), 3)).toEqual([]);
  });

  it('property: any bytes after the go-ahead in the same read close, never starttls', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), (extra) => {
        const s = new Toy();
        s.start(0);
        s.receive(fromLatin1('+HI\r\n'), 1);
        const data = new Uint8Array([...fromLatin1('+OK\r\n'), ...extra]);
        const a = s.receive(data, 2);
        expect(a.some((x) => x.type === 'starttls')).toBe(false);
        const c = last(a) as { type: string; toLocal?: Uint8Array; data?: Uint8Array };
        expect(c.type).toBe('close');
        expect(text(c.toLocal)).toBe('-injection\r\n');
        expect(c.data).toBeUndefined(); // no goodbye to a server that injected
      }),
    );
  });

  it('timeout, eof, too long, internal error: the subclass replies; goodbye only while polite', () => {
    const t = new Toy();
    t.start(0);
    expect(t.timer(10)).toEqual([{ type: 'timer', at: 1000 }]);
    expect(last(t.timer(1000))).toMatchObject({ reason: 'timeout waiting for the greeting' });
    const e = new Toy();
    e.start(0);
    e.receive(fromLatin1('+HI\r\n'), 1);
    const closed = last(e.eof(2)) as { reason: string; data?: Uint8Array };
    expect(closed.reason).toBe('server closed the connection before the reply to GO');
    expect(closed.data).toBeUndefined();
    const l = new Toy();
    l.start(0);
    l.receive(fromLatin1('+HI\r\n'), 1);
    const long = last(l.receive(fromLatin1(`${'x'.repeat(40)}\r\n`), 2)) as {
      toLocal: Uint8Array;
      data?: Uint8Array;
    };
    expect(text(long.toLocal)).toBe('-bad\r\n');
    expect(text(long.data)).toBe('BYE\r\n');
    const i = new Toy();
    i.start(0);
    const boom = i.receive(fromLatin1('THROW\r\n'), 1);
    expect(boom[0]).toMatchObject({ type: 'log', level: 'error' });
    expect(text((last(boom) as { toLocal: Uint8Array }).toLocal)).toBe('-internal\r\n');
    const z = new Toy({ maxLineLength: 16, greetingTimeoutMs: 0, replyTimeoutMs: 0 });
    expect(z.start(0)).toEqual([]);
    expect(z.timer(1e12)).toEqual([]);
  });
});
