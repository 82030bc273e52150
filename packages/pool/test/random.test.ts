import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { randomKey } from '../src/random.js';

describe('randomKey (pooled CSPRNG bytes for ids and control keys)', () => {
  it('hands out every pooled byte once: keys across several refills are all different', () => {
    const seen = new Set<string>();
    // 16-byte keys: 256 per 4 KiB pool, so this crosses the refill ten times.
    for (let i = 0; i < 2600; i++) seen.add(randomKey(16).toString('hex'));
    expect(seen.size).toBe(2600);
  });

  it('returns buffers of the asked length that share no memory with the pool or each other', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 64 }), { maxLength: 50 }), (sizes) => {
        const keys = sizes.map((n) => randomKey(n));
        keys.forEach((k, i) => {
          expect(k.length).toBe(sizes[i]);
        });
        const copies = keys.map((k) => Buffer.from(k));
        for (const k of keys) k.fill(0xaa);
        // Writing into one key changes no other key handed out before or after it.
        const next = randomKey(32);
        expect(next.equals(Buffer.alloc(32, 0xaa))).toBe(false);
        keys.forEach((k, i) => {
          k.set(copies[i]!);
        });
      }),
    );
  });

  it('refuses sizes it cannot serve from one pool', () => {
    expect(() => randomKey(-1)).toThrow(RangeError);
    expect(() => randomKey(1.5)).toThrow(RangeError);
    expect(() => randomKey(4097)).toThrow(RangeError);
  });

  it('looks uniform: each bit is set in about half of 4,000 keys', () => {
    const ones = new Array(128).fill(0);
    for (let i = 0; i < 4000; i++) {
      const k = randomKey(16);
      for (let b = 0; b < 128; b++) if (k[b >> 3]! & (1 << (b & 7))) ones[b]++;
    }
    // 4,000 fair coin flips: mean 2,000, sd ≈ 32; 8 sd either side.
    for (const n of ones) expect(Math.abs(n - 2000)).toBeLessThan(256);
  });
});
