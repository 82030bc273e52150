// The octet helpers every text dialect frames and replies with (bytes.ts): their short-input
// fast paths must give exactly what the general encoder and decoder give, on any input.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ascii, fromLatin1, latin1 } from '../src/bytes.js';

const encoder = new TextEncoder();
const TIME = { interruptAfterTimeLimit: 4000, numRuns: 2000 };

describe('ascii (UTF-8 encoding)', () => {
  it('equals TextEncoder on any string, around the short-string bound too', () => {
    const text = fc.oneof(
      fc.string({ maxLength: 80 }),
      fc.string({ unit: 'grapheme', maxLength: 80 }),
      fc.string({ unit: 'binary', maxLength: 80 }), // lone surrogates included
      fc.string({ minLength: 60, maxLength: 70 }),
      fc.string({ maxLength: 300 }),
    );
    fc.assert(
      fc.property(text, (s) => {
        const got = ascii(s);
        expect(got).toStrictEqual(encoder.encode(s));
        expect(got.byteOffset).toBe(0);
        expect(got.buffer.byteLength).toBe(got.length);
      }),
      TIME,
    );
  });

  it('gives a new array each call (a caller may write to it)', () => {
    const a = ascii('a OK\r\n');
    a[0] = 0x62;
    expect(ascii('a OK\r\n')[0]).toBe(0x61);
  });
});

describe('latin1 (one char per octet)', () => {
  const reference = (bytes: Uint8Array): string =>
    Array.from(bytes, (b) => String.fromCharCode(b)).join('');
  it('equals a char-by-char decoding, across the 4096-octet chunks too', () => {
    const octets = fc.oneof(
      fc.uint8Array({ maxLength: 100 }),
      fc.uint8Array({ minLength: 4090, maxLength: 8200 }),
    );
    fc.assert(
      fc.property(octets, fc.nat(16), (bytes, from) => {
        const view = bytes.subarray(Math.min(from, bytes.length));
        expect(latin1(view)).toBe(reference(view));
        expect(fromLatin1(latin1(view))).toStrictEqual(view.slice());
      }),
      { ...TIME, numRuns: 300 },
    );
  });
});
