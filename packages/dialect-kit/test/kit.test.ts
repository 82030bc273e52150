// The kit's own parts: line framing under any chunking, the option schema, the error base and
// its brand, and the test kit's STARTTLS check.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ByteQueue,
  DialectError,
  defineDialect,
  isErrorWithPrefix,
  isTlsProxyError,
  type LineEvent,
  LineFramer,
  type OptionSpec,
  optionProblem,
  readLimits,
  readOptions,
  resolveLimits,
  resolveOptions,
  TlsproxyError,
} from '../src/index.js';
import { dec, enc, feedPastStartTls, OBJECT_PROTOTYPE_NAMES, splitAt } from '../src/testing.js';

const TIME = { interruptAfterTimeLimit: 3000, numRuns: 300 };

function frame(chunks: Uint8Array[], max: number): string[] {
  const f = new LineFramer(max);
  const out: string[] = [];
  const show = (e: LineEvent) =>
    e.type === 'line' ? `${e.bareLf ? 'LF' : 'CRLF'}:${e.text}` : 'tooLong';
  for (const c of chunks) {
    f.push(c);
    for (let e = f.next(); e; e = f.next()) out.push(show(e));
  }
  return out;
}

describe('LineFramer', () => {
  it('ends lines at LF, CR only as part of CRLF, bare CR is data', () => {
    expect(frame([enc('a\r\nb\nc\rd\r\n')], 100)).toEqual(['CRLF:a', 'LF:b', 'CRLF:c\rd']);
  });

  it('reports a long line once and skips it to its LF; the limit excludes CRLF', () => {
    expect(frame([enc(`${'x'.repeat(5)}\r\n${'y'.repeat(6)}\r\nz\r\n`)], 5)).toEqual([
      'CRLF:xxxxx',
      'tooLong',
      'CRLF:z',
    ]);
  });

  it('any chunking gives the same events', () => {
    const piece = fc.constantFrom('a\r\n', 'bb\n', '\r', '\n', 'xxxxxxxx', 'c d\r\n', '\r\r\n');
    fc.assert(
      fc.property(
        fc.array(piece, { maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        fc.integer({ min: 0, max: 10 }),
        (pieces, cuts, max) => {
          const bytes = enc(pieces.join(''));
          const whole = frame([bytes], max);
          expect(frame(splitAt(bytes, cuts), max)).toEqual(whole);
          expect(
            frame(
              Array.from(bytes, (b) => Uint8Array.of(b)),
              max,
            ),
          ).toEqual(whole);
        },
      ),
      TIME,
    );
  });

  it('countsTerminator: the limit is the line as received, CRLF or LF included', () => {
    const f = (chunks: Uint8Array[]) => {
      const framer = new LineFramer(6, { countsTerminator: true });
      const out: string[] = [];
      for (const c of chunks) {
        framer.push(c);
        for (let e = framer.next(); e; e = framer.next())
          out.push(e.type === 'line' ? e.text : 'tooLong');
      }
      return out;
    };
    expect(f([enc('abcd\r\nabcde\nabcde\r\nz\n')])).toEqual(['abcd', 'abcde', 'tooLong', 'z']);
    // six octets and no LF yet: nothing that ends the line can fit any more
    expect(f([enc('abcdef')])).toEqual(['tooLong']);
    expect(f([enc('abcde')])).toEqual([]);
  });

  it('takeRest returns exactly the octets not framed yet', () => {
    const f = new LineFramer(100);
    f.push(enc('a STARTTLS\r\nb LOGIN x y\r\nc'));
    expect(f.next()).toMatchObject({ type: 'line', text: 'a STARTTLS' });
    expect(dec(f.takeRest())).toBe('b LOGIN x y\r\nc');
    expect(f.next()).toBeNull();
  });
});

describe('ByteQueue', () => {
  it('keeps the pending octets in order whatever is appended and consumed', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.uint8Array({ maxLength: 300 }), fc.nat({ max: 400 }))),
        (ops) => {
          const q = new ByteQueue();
          let model: number[] = [];
          for (const [data, n] of ops) {
            q.append(data);
            model.push(...data);
            q.consume(n);
            model = model.slice(n);
            expect([...q.view()]).toEqual(model);
          }
        },
      ),
      TIME,
    );
  });
});

describe('options and limits as data', () => {
  const options: Record<string, OptionSpec> = {
    mode: { type: 'string', default: 'a', description: '', oneOf: ['a', 'b'] },
    delay: { type: 'number', default: 0, description: '', min: 0, max: 10 },
    words: { type: 'string[]', default: ['x'], description: '', pattern: /^[a-z]+$/ },
  };
  const dialect = defineDialect({
    name: 'toy',
    defaultPorts: {},
    options,
    limits: {
      maxLine: { default: 5, description: '', unit: 'bytes', phase: 'preamble' },
    },
    create: () => ({
      start: () => [],
      receive: () => [],
      timer: () => [],
      tlsUnavailable: () => [],
    }),
  });

  it('one validator: type, oneOf, bounds, pattern', () => {
    expect(optionProblem(options.mode!, 'c')).toMatch(/one of/);
    expect(optionProblem(options.delay!, 11)).toMatch(/at most 10/);
    expect(optionProblem(options.words!, ['ok', 'NO'])).toMatch(/"NO"/);
    expect(optionProblem(options.words!, ['ok'])).toBeUndefined();
    expect(() => resolveOptions(dialect, { mode: 'c' })).toThrow(/option "mode"/);
    expect(() => resolveOptions(dialect, { nope: 1 })).toThrow(/unknown option "nope"/);
    expect(() => resolveLimits(dialect, { maxLine: -1 })).toThrow(/must be >= 0/);
  });

  it('readOptions/readLimits never throw: a bad or missing value gets its default', () => {
    expect(readOptions(options, { mode: 'c', delay: 3 })).toEqual({
      mode: 'a',
      delay: 3,
      words: ['x'],
    });
    expect(readLimits(dialect.limits, { maxLine: -3 })).toEqual({ maxLine: 5 });
    expect(readLimits(dialect.limits, undefined)).toEqual({ maxLine: 5 });
  });

  it('a name from Object.prototype is never an option or a limit', () => {
    for (const name of OBJECT_PROTOTYPE_NAMES) {
      expect(() => resolveOptions(dialect, { [name]: 1 }), name).toThrow(/unknown option/);
      expect(Object.hasOwn(readOptions(options, { [name]: 1 }), name), name).toBe(false);
    }
  });

  it('a limit with an unknown unit or phase is a shape error', () => {
    expect(() =>
      defineDialect({
        ...dialect,
        limits: { x: { default: 1, description: '', unit: 'kg' as never } },
      }),
    ).toThrow(/limits.x.unit/);
  });
});

describe('errors', () => {
  it('DialectError carries its reply as octets and text, with the shared brand', () => {
    const e = new DialectError('TLSPROXY_ERR_TOY_SYNTAX', 'bad', {
      reply: 'a BAD x\r\n',
      fatal: true,
    });
    expect(e).toBeInstanceOf(TlsproxyError);
    expect(dec(e.reply)).toBe('a BAD x\r\n');
    expect(e.replyText).toBe('a BAD x\r\n');
    expect(e.fatal).toBe(true);
    expect(isTlsProxyError(e)).toBe(true);
    expect(isErrorWithPrefix(e, 'TLSPROXY_ERR_TOY_')).toBe(true);
    expect(isErrorWithPrefix(e, 'TLSPROXY_ERR_IMAP_')).toBe(false);
    expect(isTlsProxyError(new Error('x'))).toBe(false);
  });
});

describe('feedPastStartTls', () => {
  const session = (echo: boolean) => ({
    start: () => [],
    timer: () => [],
    tlsUnavailable: () => [],
    seen: false,
    receive(data: Uint8Array) {
      if (this.seen)
        return [
          echo
            ? { type: 'send' as const, data }
            : { type: 'log' as const, level: 'warn' as const, message: 'x' },
        ];
      this.seen = true;
      return [
        {
          type: 'starttls' as const,
          goAhead: enc('ok'),
          unavailable: enc('no'),
          state: {},
          trailing: data.subarray(1),
        },
      ];
    },
  });

  it('passes a session that only logs after STARTTLS, and collects every later octet', () => {
    const r = feedPastStartTls(session(false), [enc('Sab'), enc('cd')]);
    expect(r.problems).toEqual([]);
    expect(dec(r.trailing)).toBe('abcd');
  });

  it('flags a session that answers after STARTTLS', () => {
    expect(feedPastStartTls(session(true), [enc('S'), enc('x')]).problems).toEqual([
      'send after STARTTLS',
    ]);
  });
});
