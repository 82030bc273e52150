// The reply rules read what a dialect wrote — any bytes a third-party or broken dialect may
// produce: they never throw, and cut the output into ordered, non-overlapping replies.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { latin1 } from '../src/bytes.js';
import { REPLY_RULES } from '../src/replies.js';

const pieces = [
  '* OK ',
  'a NO ',
  '+OK',
  '-ERR',
  '\r\n',
  '.\r\n',
  '250-',
  '250 ',
  '<stream:stream>',
  '<failure>',
  '</failure>',
  '<x/>',
  'HTTP/1.1 101 x\r\n\r\n',
  'Content-Length: 9\r\n',
  '\x30\x84\xff\xff\xff\xff',
  '\x30\x03\x02\x01',
  '\x61\x07\x0a\x01\x00',
];
const output = fc.oneof(
  fc.uint8Array({ maxLength: 200 }).map(latin1),
  fc.array(fc.constantFrom(...pieces), { maxLength: 30 }).map((a) => a.join('')),
);

describe('reply rules', () => {
  it.each([...REPLY_RULES.keys()])(
    '%s: never throws, replies are ordered and inside the output',
    (name) => {
      const rules = REPLY_RULES.get(name)!;
      fc.assert(
        fc.property(output, output, (text, client) => {
          const replies = rules.replies(text);
          let at = 0;
          for (const r of replies) {
            expect(r.start).toBeGreaterThanOrEqual(at);
            expect(r.end).toBeGreaterThan(r.start);
            expect(r.end).toBeLessThanOrEqual(text.length);
            expect(typeof r.cls).toBe('string');
            at = r.end;
          }
          rules.authBeforeTls(text, replies, client);
          for (const r of replies) rules.refusal(r.cls);
        }),
        { numRuns: 500 },
      );
    },
  );

  it('are keyed by dialect name in a Map (a name never reaches an object prototype)', () => {
    expect(REPLY_RULES).toBeInstanceOf(Map);
    expect(REPLY_RULES.get('constructor')).toBeUndefined();
    expect(REPLY_RULES.get('__proto__')).toBeUndefined();
  });
});
