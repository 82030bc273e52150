// Everything the C glue receives from JS: wrong types, wrong kinds of handle, out-of-range
// numbers. Each call either returns or throws a JS error; none may crash the process.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { binding } from '../src/loader.js';
import type { NativeBinding } from '../src/native.js';
import { certs } from './helpers.js';

describe('native binding: hostile arguments from JS', () => {
  const b: NativeBinding = binding();
  const store = b.storeCreate([{ ...certs.server, names: ['localhost'] }], {
    defaultIndex: 0,
    minVersion: 0x0303,
    ca: null,
    ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256',
    ciphersuites: null,
  });
  const engine = b.engineCreate(1, () => {});
  b.engineRef(engine, false);

  const value = fc.oneof(
    fc.anything(),
    fc.constant(engine),
    fc.constant(store),
    fc.integer({ min: -2, max: 1 << 20 }),
    fc.double(),
    fc.constant(null),
    fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
    fc.string(),
  );

  const calls: Array<[string, (args: unknown[]) => unknown]> = [
    ['openssl', () => b.openssl()],
    ['engineRef', (a) => (b.engineRef as (...x: unknown[]) => unknown)(...a)],
    [
      'engineClose',
      // Never the live engine: closing it is allowed, but the other calls want it open.
      (a) => (a[0] === engine ? null : (b.engineClose as (...x: unknown[]) => unknown)(...a)),
    ],
    ['storeCreate', (a) => (b.storeCreate as (...x: unknown[]) => unknown)(...a)],
    [
      'submit',
      (a) => {
        // A real engine and store with a real descriptor number would take over that
        // descriptor (maybe stdout): that is the API's contract, not a bug to fuzz.
        if (a[0] === engine && a[1] === store && Number.isInteger(a[2])) return null;
        return (b.submit as (...x: unknown[]) => unknown)(...a);
      },
    ],
    ['sniAnswer', (a) => (b.sniAnswer as (...x: unknown[]) => unknown)(...a)],
    ['exporter', (a) => (b.exporter as (...x: unknown[]) => unknown)(...a)],
    ['closeSession', (a) => (b.closeSession as (...x: unknown[]) => unknown)(...a)],
    ['renegotiate', (a) => (b.renegotiate as (...x: unknown[]) => unknown)(...a)],
    [
      'engineCreate',
      (a) => {
        // Only refusals: a valid call starts threads.
        const t = a[0];
        if (Number.isInteger(t) && (t as number) >= 1 && (t as number) <= 256) return null;
        return (b.engineCreate as (...x: unknown[]) => unknown)(...a);
      },
    ],
  ];

  it('throws or returns, never crashes', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...calls),
        fc.array(value, { maxLength: 11 }),
        ([, call], args) => {
          try {
            call(args);
          } catch (err) {
            expect(err).toBeInstanceOf(Error);
          }
        },
      ),
      { numRuns: 3000, interruptAfterTimeLimit: 20_000 },
    );
  });

  it('a handle of the wrong kind is a TypeError', () => {
    expect(() => b.engineRef(store as never, true)).toThrow(TypeError);
    expect(() => b.closeSession(engine, store as never)).toThrow(TypeError);
    expect(() => b.closeSession(engine, engine as never)).toThrow(TypeError);
    expect(() =>
      b.submit(store as never, engine as never, 0, 1, 0, null, 1000, 0, false, false),
    ).toThrow(TypeError);
    b.engineClose(engine);
  });
});
