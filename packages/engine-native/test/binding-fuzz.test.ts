// Everything the C glue receives from JS: wrong types, wrong kinds of handle, out-of-range
// numbers. Each call either returns or throws a JS error; none may crash the process.
import v8 from 'node:v8';
import vm from 'node:vm';
import { socketpair } from '@tlsproxy/fdpass';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { binding } from '../src/loader.js';
import type { EngineHandle, NativeBinding } from '../src/native.js';
import { certs } from './helpers.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

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
  const cctx = b.clientContextCreate({
    ca: certs.ca,
    cert: null,
    key: null,
    ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256',
    ciphersuites: null,
    minVersion: 0x0303,
  });

  const value = fc.oneof(
    fc.anything(),
    fc.constant(engine),
    fc.constant(store),
    fc.constant(cctx),
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
    ['clientContextCreate', (a) => (b.clientContextCreate as (...x: unknown[]) => unknown)(...a)],
    [
      'connect',
      (a) => {
        // As for submit: a real descriptor number would be taken over.
        if (a[0] === engine && a[1] === cctx && Number.isInteger(a[2])) return null;
        return (b.connect as (...x: unknown[]) => unknown)(...a);
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

  // Found by the fuzzer (fuzz/engine.fuzz.ts): options that are not an object left the C side
  // reading a napi_value that was never set (a segfault under the ASan build).
  it('storeCreate: options that are not an object, or throw, are a JS error', () => {
    const ids = [{ ...certs.server, names: ['localhost'] }];
    const throwing = new Proxy(
      {},
      {
        get() {
          throw new Error('getter throws');
        },
      },
    );
    for (const options of [null, undefined, 7, 'x', throwing, { ciphers: 7 }, null])
      expect(() => b.storeCreate(ids, options as never)).toThrow(Error);
    // Every option but the cipher list has a default.
    expect(b.storeCreate(ids, { ciphers: 'DEFAULT' } as never)).toBeTruthy();
  });

  // Found by the fuzzer: a session handle outlived its engine (closed and garbage-collected)
  // and was passed with another engine; the command went to the freed engine's loop
  // (heap-use-after-free in engine_push under the ASan build).
  it('a session handle is refused by any engine but its own, even after that one is gone', async () => {
    const [mine, peer] = socketpair();
    let other: EngineHandle | null = b.engineCreate(1, () => {});
    b.engineRef(other, false);
    const handle = b.submit(other, store, mine.take(), 1, 0, null, 1000, 0, false, false);
    expect(handle).toBeTruthy();
    expect(() => b.closeSession(engine, handle!)).toThrow(TypeError);
    b.engineClose(other);
    other = null;
    for (let i = 0; i < 4; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(() => b.closeSession(engine, handle!)).toThrow(TypeError);
    expect(() => b.sniAnswer(engine, handle!, true)).toThrow(TypeError);
    expect(() => b.renegotiate(engine, handle!, 1)).toThrow(TypeError);
    expect(() => b.exporter(engine, handle!, 1, 'EXPORTER-x', null, 16)).toThrow(TypeError);
    peer.close();
  });

  it('submit: an ALPN list that is not in wire format is refused, the descriptor stays ours', () => {
    const [mine, peer] = socketpair();
    for (const alpn of [[0], [5, 0x61], [1, 0x61, 3, 0x62], [4, 0x69, 0x6d, 0x61]]) {
      expect(() =>
        b.submit(engine, store, mine.fd, 1, 0, Buffer.from(alpn), 1000, 0, false, false),
      ).toThrow(TypeError);
    }
    mine.close();
    peer.close();
  });

  // Found by the fuzzer: an empty context Buffer has no data pointer, and copying zero bytes
  // from NULL is undefined behaviour (UBSan: "null pointer passed as argument 2").
  it('exporter: an empty context is copied without touching its (null) data', () => {
    const [mine, peer] = socketpair();
    const handle = b.submit(engine, store, mine.take(), 2, 0, null, 1000, 0, false, false);
    expect(handle).toBeTruthy();
    expect(b.exporter(engine, handle!, 1, 'EXPORTER-x', Buffer.alloc(0), 16)).toBe(true);
    expect(b.exporter(engine, handle!, 2, 'EXPORTER-x', new Uint8Array(0) as Buffer, 16)).toBe(
      true,
    );
    peer.close();
  });

  it('clientContextCreate: options that are not an object, throw, or hold bad PEM are a JS error', () => {
    const throwing = new Proxy(
      {},
      {
        get() {
          throw new Error('getter throws');
        },
      },
    );
    const ok = {
      ca: certs.ca,
      cert: null,
      key: null,
      ciphers: 'DEFAULT',
      ciphersuites: null,
      minVersion: 0x0303,
    };
    for (const options of [
      null,
      undefined,
      7,
      throwing,
      { ...ok, ca: null },
      { ...ok, ca: 'not pem' },
      { ...ok, ca: certs.ca.slice(0, 200) },
      { ...ok, cert: certs.client.cert, key: null },
      { ...ok, cert: certs.client.cert, key: certs.server.key }, // not its key
      { ...ok, cert: 'junk', key: certs.client.key },
      { ...ok, minVersion: 0x0301 },
      { ...ok, ciphers: 'NOTHING-REAL' },
      { ...ok, ca: 'a\0b' },
    ])
      expect(() => b.clientContextCreate(options as never)).toThrow(Error);
    expect(b.clientContextCreate({ ...ok, ...certs.client })).toBeTruthy();
  });

  it('connect: bad names and ALPN lists are refused, the descriptor stays ours', () => {
    const [mine, peer] = socketpair();
    for (const [alpn, name] of [
      [Buffer.from([0]), 'localhost'],
      [Buffer.from([5, 0x61]), 'localhost'],
      [null, ''],
      [null, 'a'.repeat(300)],
      [null, 'a\0b'],
      [null, 7],
    ] as const) {
      expect(() =>
        b.connect(engine, cctx, mine.fd, 1, alpn, name as string, false, 1000, 0),
      ).toThrow(TypeError);
    }
    // An address that is not one: SSL set-up refuses it, still before the descriptor is taken.
    expect(() => b.connect(engine, cctx, mine.fd, 1, null, 'not-an-ip', true, 1000, 0)).toThrow(
      Error,
    );
    expect(() => b.connect(engine, store as never, mine.fd, 1, null, 'x', false, 1000, 0)).toThrow(
      TypeError,
    );
    expect(() =>
      b.submit(engine, cctx as never, mine.fd, 1, 0, null, 1000, 0, false, false),
    ).toThrow(TypeError);
    mine.close();
    peer.close();
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
