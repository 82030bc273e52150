// The engine's fuzzer (issue 15): everything the C code parses or receives, from the socket side
// and from JS, for a fixed time, under the ASan + UBSan build when run by `npm run test:fuzz`
// (scripts/fuzz.mjs sets TLSPROXY_FUZZ_SEED, TLSPROXY_FUZZ_SECONDS and the sanitizer addon).
//
// A sanitizer report or a crash kills the process, which fails the run. Beyond that it checks
// what a crash-free engine can still get wrong: every handshake and control promise settles,
// every refused client sees its connection closed, every established session ends, no
// descriptor is left open, and malloc'd memory is back near its baseline at the end.
import { generateKeyPairSync } from 'node:crypto';
import {
  closeSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import { detachSocket, listenSocket, OwnedFd, socketpair, writeSync } from '@tlsproxy/fdpass';
import { type HandshakeRequest, type HandshakeResult, PoolError } from '@tlsproxy/pool';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type NativeEngineOptions, NativeTlsEngine } from '../src/index.js';
import { binding } from '../src/loader.js';
import type { EngineHandle, NativeEvent, StoreHandle } from '../src/native.js';
import { certs, fdCount, until } from '../test/helpers.js';

const SEED = Number(process.env.TLSPROXY_FUZZ_SEED ?? 1);
const SECONDS = Number(process.env.TLSPROXY_FUZZ_SECONDS ?? 20);
const budget = (share: number) => Math.max(1000, Math.round(SECONDS * 1000 * share));

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
async function collect(): Promise<void> {
  for (let i = 0; i < 4; i++) {
    gc();
    // Finalizers of N-API externals and thread-safe functions run from the event loop.
    await new Promise((r) => setTimeout(r, 20));
  }
}

const b = binding();
const stats = new Map<string, number>();
const count = (what: string, n = 1) => stats.set(what, (stats.get(what) ?? 0) + n);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Rejects if `p` has not settled after `ms`: a promise the engine never settles is a bug. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timer = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([p, timer]).finally(() => clearTimeout(t));
}

/** ClientHellos for the API cases (filled in beforeAll). */
const hellosForApi: Buffer[] = [];

const REFUSALS = new Set([
  'TLSPROXY_ERR_POOL_HANDSHAKE',
  'TLSPROXY_ERR_POOL_TIMEOUT',
  'TLSPROXY_ERR_POOL_SERVER_NAME_REFUSED',
  'TLSPROXY_ERR_POOL_CLIENT_CERT',
  'TLSPROXY_ERR_POOL_RESOURCES',
]);

/** A failure the engine may report for hostile input: a PoolError with one of its codes. */
function expectRefusal(err: unknown, what: string): string {
  if (!(err instanceof PoolError) || !REFUSALS.has(err.code))
    throw new Error(`${what}: unexpected failure ${String((err as Error)?.stack ?? err)}`);
  return err.code;
}

// ---- peers ----

/** Loopback listener: accepted sockets (paused, unread) by the client's port. */
class Acceptor {
  readonly server = net.createServer({ pauseOnConnect: true }, (s) => this.#add(s));
  readonly #ready = new Map<number, net.Socket>();
  readonly #waiting = new Map<number, (s: net.Socket) => void>();
  port = 0;

  async listen(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', 1024, r));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  #add(s: net.Socket): void {
    s.on('error', () => {});
    const port = s.remotePort ?? -1;
    const w = this.#waiting.get(port);
    if (w) {
      this.#waiting.delete(port);
      w(s);
    } else this.#ready.set(port, s);
  }

  /** A connected raw client and the server's end of it (not yet read from). */
  async pair(): Promise<{ client: net.Socket; server: net.Socket }> {
    const client = net.connect(this.port, '127.0.0.1');
    client.on('error', () => {});
    client.setNoDelay(true);
    await within(
      new Promise<void>((resolve, reject) => {
        client.once('connect', resolve);
        client.once('error', reject);
      }),
      10_000,
      'connect',
    );
    const port = client.localPort!;
    const ready = this.#ready.get(port);
    if (ready) {
      this.#ready.delete(port);
      return { client, server: ready };
    }
    const server = await within(
      new Promise<net.Socket>((r) => this.#waiting.set(port, r)),
      10_000,
      'accept',
    );
    return { client, server };
  }

  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

/**
 * An RST where Node can send one. `resetAndDestroy()` on a socket that is shutting down — after
 * its own end() or that of the TLS socket over it — fails with `reset EINVAL` and leaks the
 * descriptor (libuv's uv_tcp_close_reset refuses a handle after uv_shutdown, and Node 20 then
 * drops the handle unclosed: 20 of 20 leaked in a script). There a destroy() closes it; the
 * fuzzer's 15-minute runs had leaked such client sockets and failed their descriptor check.
 */
function reset(raw: net.Socket, over?: net.Socket | null): void {
  if (raw.writableEnded || over?.writableEnded) (over ?? raw).destroy();
  else raw.resetAndDestroy();
}

/** Resolves when the socket is closed (by us or by the peer). */
function closed(s: net.Socket): Promise<void> {
  if (s.destroyed && s.closed) return Promise.resolve();
  return new Promise((r) => s.once('close', () => r()));
}

/** The ClientHello bytes node:tls sends (first flight), captured from a plain TCP server. */
async function captureClientHello(options: tls.ConnectionOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((s) => {
      s.once('data', (d: Buffer) => {
        resolve(d);
        s.destroy();
        server.close();
      });
    });
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      const c = tls.connect({ host: '127.0.0.1', port, ...options });
      c.on('error', () => {});
    });
    server.on('error', reject);
  });
}

// ---- what a client can send instead of (or around) a ClientHello ----

const u8 = (a: Uint8Array) => Buffer.from(a);
const record = (type: number, body: Buffer, version = 0x0301) =>
  Buffer.concat([
    Buffer.from([type, version >> 8, version & 0xff, body.length >> 8, body.length & 0xff]),
    body,
  ]);

/**
 * The ClientHello (one record, as captured) with extension `type`'s body replaced by `body` (or
 * the extension added), every enclosing length fixed up: what reaches the engine's own SNI
 * parser and OpenSSL's extension parsers is then exactly the fuzzed part.
 */
function withExtension(hello: Buffer, type: number, body: Buffer, twice = false): Buffer {
  const hs = hello.subarray(9, 5 + hello.readUInt16BE(3)); // after record and handshake headers
  let at = 2 + 32;
  at += 1 + hs[at]!; // session id
  at += 2 + hs.readUInt16BE(at); // cipher suites
  at += 1 + hs[at]!; // compression methods
  const fixed = hs.subarray(0, at);
  const extEnd = at + 2 + hs.readUInt16BE(at);
  const exts: Buffer[] = [];
  let replaced = false;
  for (let i = at + 2; i + 4 <= extEnd; ) {
    const t = hs.readUInt16BE(i);
    const n = hs.readUInt16BE(i + 2);
    const ext = hs.subarray(i, i + 4 + n);
    i += 4 + n;
    if (t === type) {
      if (replaced) continue;
      replaced = true;
      const head = Buffer.alloc(4);
      head.writeUInt16BE(type, 0);
      head.writeUInt16BE(Math.min(body.length, 0xffff), 2);
      exts.push(head, body);
      if (twice) exts.push(head, body);
    } else exts.push(ext);
  }
  if (!replaced) {
    const head = Buffer.alloc(4);
    head.writeUInt16BE(type, 0);
    head.writeUInt16BE(Math.min(body.length, 0xffff), 2);
    exts.unshift(head, body);
  }
  const extBlock = Buffer.concat(exts);
  const extLen = Buffer.alloc(2);
  extLen.writeUInt16BE(extBlock.length & 0xffff);
  const msg = Buffer.concat([fixed, extLen, extBlock]);
  const hsHead = Buffer.from([
    1,
    (msg.length >> 16) & 0xff,
    (msg.length >> 8) & 0xff,
    msg.length & 0xff,
  ]);
  return record(0x16, Buffer.concat([hsHead, msg]));
}

/** server_name extension bodies (RFC 6066 §3): well-formed, subtly wrong, and anything. */
const sniBody: fc.Arbitrary<Buffer> = fc.oneof(
  fc.uint8Array({ maxLength: 300 }).map(u8),
  fc
    .tuple(
      fc.array(
        fc.tuple(
          fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 255 })),
          fc.oneof(
            fc.constantFrom(
              'localhost',
              'LOCALHOST.',
              'a.wild.example.test',
              '.',
              '',
              'x..y',
              '*.wild.example.test',
            ),
            fc.string({ maxLength: 40 }),
            fc.constant('a'.repeat(255)),
            fc.constant('b'.repeat(256)),
            fc.constant('nul\u0000in.name'),
            fc.uint8Array({ maxLength: 60 }).map((a) => Buffer.from(a).toString('latin1')),
          ),
          fc.integer({ min: -2, max: 2 }),
        ),
        { maxLength: 3 },
      ),
      fc.integer({ min: -2, max: 2 }),
    )
    .map(([entries, listSkew]) => {
      const parts = entries.map(([t, name, skew]) => {
        const n = Buffer.from(name, 'latin1');
        const head = Buffer.from([t, 0, 0]);
        head.writeUInt16BE(Math.max(0, n.length + skew) & 0xffff, 1);
        return Buffer.concat([head, n]);
      });
      const list = Buffer.concat(parts);
      const head = Buffer.alloc(2);
      head.writeUInt16BE(Math.max(0, list.length + listSkew) & 0xffff);
      return Buffer.concat([head, list]);
    }),
);

function helloArb(hellos: Buffer[]): fc.Arbitrary<Buffer> {
  const hello = fc.constantFrom(...hellos);
  return fc.oneof(
    // the engine's own parser: server_name bodies of every shape (twice: a duplicate extension)
    fc
      .tuple(hello, sniBody, fc.boolean())
      .map(([h, body, twice]) => withExtension(h, 0, body, twice)),
    fc.tuple(hello, sniBody).map(([h, body]) => withExtension(h, 0, body)),
    // and OpenSSL's: ALPN, supported versions, key shares, signature algorithms, anything
    fc
      .tuple(
        hello,
        fc.constantFrom(16, 43, 51, 13, 10, 41, 45, 0xff01, 0x1234),
        fc.uint8Array({ maxLength: 200 }),
      )
      .map(([h, type, body]) => withExtension(h, type, u8(body))),
    // garbage instead of a ClientHello
    fc.uint8Array({ maxLength: 3000 }).map(u8),
    // a handshake record header with anything after it
    fc
      .tuple(fc.integer({ min: 0, max: 0xffff }), fc.uint8Array({ maxLength: 600 }))
      .map(([len, body]) => Buffer.concat([Buffer.from([0x16, 3, 1, len >> 8, len & 0xff]), body])),
    // a valid ClientHello cut anywhere
    fc.tuple(hello, fc.nat()).map(([h, n]) => h.subarray(0, n % (h.length + 1))),
    // a valid ClientHello with bytes changed (lengths included: they are near the start)
    fc
      .tuple(
        hello,
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 8,
        }),
      )
      .map(([h, edits]) => {
        const out = Buffer.from(h);
        for (const [i, v] of edits)
          out[i % 64 === 0 ? i % out.length : i % Math.min(out.length, 90)] = v;
        return out;
      }),
    // a ClientHello's record / handshake / extensions lengths set to anything
    fc
      .tuple(hello, fc.constantFrom(3, 6, 7, 8), fc.integer({ min: 0, max: 0xffff }))
      .map(([h, at, v]) => {
        const out = Buffer.from(h);
        if (at === 3) out.writeUInt16BE(v, 3);
        else out[at] = v & 0xff;
        return out;
      }),
    // oversized records: longer than 2^14 + 2048 (RFC 8446 §5.2), of any content type
    fc
      .tuple(
        fc.constantFrom(0x14, 0x15, 0x16, 0x17, 0x18, 0x00, 0xff),
        fc.constantFrom(16385, 16640, 18433, 18432, 0xffff),
        fc.nat({ max: 20_000 }),
      )
      .map(([type, len, have]) =>
        Buffer.concat([
          Buffer.from([type, 3, 3, len >> 8, len & 0xff]),
          Buffer.alloc(Math.min(len, have), 0x41),
        ]),
      ),
    // the ClientHello fragmented over many records (legal TLS), maybe with other records between
    fc.tuple(hello, fc.integer({ min: 1, max: 64 }), fc.boolean()).map(([h, size, noise]) => {
      const body = h.subarray(5, 5 + h.readUInt16BE(3));
      const parts: Buffer[] = [];
      for (let i = 0; i < body.length; i += size) {
        parts.push(record(0x16, body.subarray(i, i + size)));
        if (noise && i === 0)
          parts.push(record(0x14, Buffer.from([1])), record(0x15, Buffer.from([1, 0])));
      }
      return Buffer.concat(parts);
    }),
    // zero-length records, alerts, heartbeats, application data before any handshake
    fc
      .array(
        fc.tuple(fc.constantFrom(0x14, 0x15, 0x16, 0x17, 0x18), fc.uint8Array({ maxLength: 40 })),
        { maxLength: 40 },
      )
      .map((rs) => Buffer.concat(rs.map(([t, body]) => record(t, u8(body))))),
    // an SSLv2-style ClientHello
    fc
      .uint8Array({ minLength: 3, maxLength: 120 })
      .map((body) =>
        Buffer.concat([
          Buffer.from([0x80 | (body.length >> 8), body.length & 0xff, 1, 3, 1]),
          u8(body),
        ]),
      ),
    // the hello twice, or hello then junk
    fc
      .tuple(hello, fc.uint8Array({ maxLength: 400 }))
      .map(([h, j]) => Buffer.concat([h, h, u8(j)])),
  );
}

type Ending = 'fin' | 'rst' | 'stall' | 'destroy' | 'junk';
type SniMode = 'absent' | 'accept' | 'refuse' | 'throw' | 'late' | 'never';

function sniCheck(mode: SniMode, lateMs: number): HandshakeRequest['checkServerName'] {
  if (mode === 'absent') return undefined;
  const check = sniAnswer(mode, lateMs);
  return (name: string) => {
    count(`SNI question → ${mode}`);
    return check(name);
  };
}

function sniAnswer(
  mode: Exclude<SniMode, 'absent'>,
  lateMs: number,
): (name: string) => Promise<boolean> {
  switch (mode) {
    case 'accept':
      return async () => true;
    case 'refuse':
      return async () => false;
    case 'throw':
      return async () => {
        throw new Error('fuzz: backend check failed');
      };
    case 'late':
      return () => sleep(lateMs).then(() => true);
    case 'never':
      return () => new Promise<boolean>(() => {});
  }
}

interface BytesCase {
  kind: 'bytes';
  payload: Buffer;
  chunks: number;
  gapMs: number;
  ending: Ending;
  viaSocket: boolean;
  sni: SniMode;
}

interface ClientOp {
  op: 'write' | 'pause' | 'resume' | 'end' | 'rst' | 'renegotiate' | 'wait' | 'junk' | 'record';
  n: number;
}

interface ControlCall {
  op: string;
  args: Record<string, unknown>;
  delayMs: number;
  badKey: Uint8Array | null;
}

interface TlsCase {
  kind: 'tls';
  version: 'TLSv1.2' | 'TLSv1.3';
  servername: string | null;
  alpn: string[] | null;
  clientCert: 'none' | 'client' | 'rogue';
  policy: 'none' | 'optional' | 'required';
  sni: SniMode;
  vanish: null | { afterMs: number; how: 'rst' | 'fin' | 'destroy' };
  clientOps: ClientOp[];
  backend: 'echo' | 'never-read' | 'close-now' | 'half-close' | 'flood' | 'reset' | 'fd-only';
  controls: ControlCall[];
  viaSocket: boolean;
  onBytes: boolean;
  /** earlyHandoff: resolved before the client's Finished (TLS 1.3, no client certificate) */
  early: boolean;
  /** promptCompletion: with early, `completed` at once rather than with a later batch */
  prompt: boolean;
  /** how long the session lives after the client's operations, before the teardown */
  holdMs: number;
}

interface ApiCase {
  kind: 'api';
  what:
    | 'closed-fd'
    | 'dev-null'
    | 'seqpacket'
    | 'listening'
    | 'bad-request'
    | 'read-socket'
    | 'bad-control'
    | 'reload'
    | 'engine-close';
  n: number;
  junk: Uint8Array;
  value: unknown;
}

/** The client role (connect(), issue 18): the engine sends the ClientHello to a hostile server. */
interface ConnectCase {
  kind: 'connect';
  /** garbage: junk instead of a ServerHello; hello-junk: a ServerHello header and junk; tls: a real server */
  server: 'garbage' | 'hello-junk' | 'tls';
  junk: Uint8Array;
  ending: 'fin' | 'rst' | 'stall';
  cert: 'good' | 'rogue' | 'other';
  version: 'TLSv1.2' | 'TLSv1.3';
  serverName: string;
  ca: 'test' | 'rogue' | 'roots' | 'junk';
  clientIdentity: 'localhost' | 'nobody' | null;
  requestCert: boolean;
  alpn: string[] | null;
  vanish: null | { afterMs: number; how: 'rst' | 'fin' | 'destroy' };
  /** a TLS 1.2 server asks to renegotiate once established (refused by the engine) */
  reneg: boolean;
  controls: ControlCall[];
  writes: number[];
  viaSocket: boolean;
  holdMs: number;
}

type Case = BytesCase | TlsCase | ApiCase | ConnectCase;

const SERVERNAMES = [
  'localhost',
  'other.example.test',
  'x.wild.example.test',
  'UNKNOWN.test',
  'a.b',
  'localhost.',
];

function caseArb(hellos: Buffer[]): fc.Arbitrary<Case> {
  const sni = fc.constantFrom<SniMode>('absent', 'accept', 'refuse', 'throw', 'late', 'never');
  const bytes: fc.Arbitrary<BytesCase> = fc.record({
    kind: fc.constant('bytes' as const),
    payload: helloArb(hellos),
    chunks: fc.integer({ min: 1, max: 6 }),
    gapMs: fc.constantFrom(0, 0, 1, 20),
    ending: fc.constantFrom<Ending>('fin', 'rst', 'stall', 'destroy', 'junk'),
    viaSocket: fc.boolean(),
    sni,
  });
  const exporterArgs = fc.record({
    label: fc.oneof(
      fc.constant('EXPORTER-fuzz'),
      fc.string({ maxLength: 300 }),
      fc.constant(1),
      fc.constant(''),
    ),
    length: fc.oneof(
      fc.integer({ min: -3, max: 1100 }),
      fc.constant(Number.NaN),
      fc.double(),
      fc.constant(32),
    ),
    context: fc.oneof(
      fc.constant(undefined),
      fc.base64String({ maxLength: 200 }),
      fc.string({ maxLength: 40 }),
      fc.constant(7),
    ),
  });
  const control: fc.Arbitrary<ControlCall> = fc.record({
    op: fc.constantFrom(
      'info',
      'exporter',
      'exporter',
      'renegotiate',
      'renegotiate',
      'close',
      'bogus',
      '__proto__',
      'constructor',
    ),
    args: exporterArgs,
    delayMs: fc.constantFrom(0, 0, 5, 50, 400),
    badKey: fc.oneof(
      { weight: 6, arbitrary: fc.constant(null) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 20 }) },
    ),
  });
  const tlsCase: fc.Arbitrary<TlsCase> = fc.record({
    kind: fc.constant('tls' as const),
    version: fc.constantFrom<'TLSv1.2' | 'TLSv1.3'>('TLSv1.2', 'TLSv1.3'),
    servername: fc.option(fc.constantFrom(...SERVERNAMES), { freq: 4 }),
    alpn: fc.option(
      fc.array(fc.constantFrom('imap', 'smtp', 'h2', 'x'.repeat(200)), {
        minLength: 1,
        maxLength: 3,
      }),
      { freq: 2 },
    ),
    clientCert: fc.constantFrom<'none' | 'client' | 'rogue'>('none', 'client', 'client', 'rogue'),
    early: fc.boolean(),
    prompt: fc.boolean(),
    policy: fc.constantFrom<'none' | 'optional' | 'required'>(
      'none',
      'none',
      'optional',
      'required',
    ),
    sni: fc.constantFrom<SniMode>(
      'absent',
      'absent',
      'accept',
      'accept',
      'refuse',
      'throw',
      'late',
      'never',
    ),
    vanish: fc.option(
      fc.record({
        afterMs: fc.constantFrom(0, 1, 2, 5, 10, 30),
        how: fc.constantFrom<'rst' | 'fin' | 'destroy'>('rst', 'fin', 'destroy'),
      }),
      { freq: 3 },
    ),
    clientOps: fc.array(
      fc.record({
        op: fc.constantFrom<ClientOp['op']>(
          'write',
          'write',
          'pause',
          'resume',
          'end',
          'rst',
          'renegotiate',
          'wait',
          'junk',
          'record',
        ),
        n: fc.oneof(fc.integer({ min: 0, max: 100 }), fc.integer({ min: 1, max: 400_000 })),
      }),
      { maxLength: 6 },
    ),
    backend: fc.constantFrom<TlsCase['backend']>(
      'echo',
      'never-read',
      'close-now',
      'half-close',
      'flood',
      'reset',
      'fd-only',
    ),
    controls: fc.array(control, { maxLength: 4 }),
    viaSocket: fc.boolean(),
    onBytes: fc.boolean(),
    holdMs: fc.constantFrom(20, 100, 600),
  });
  const api: fc.Arbitrary<ApiCase> = fc.record({
    kind: fc.constant('api' as const),
    what: fc.constantFrom<ApiCase['what']>(
      'closed-fd',
      'dev-null',
      'seqpacket',
      'listening',
      'bad-request',
      'read-socket',
      'bad-control',
      'reload',
      'engine-close',
    ),
    n: fc.nat({ max: 1000 }),
    junk: fc.uint8Array({ maxLength: 300 }),
    value: fc.oneof(
      fc.anything(),
      fc.constantFrom(-1, Number.NaN, Number.POSITIVE_INFINITY, 1e300, -0, 2 ** 53, 0.5),
    ),
  });
  const connectCase: fc.Arbitrary<ConnectCase> = fc.record({
    kind: fc.constant('connect' as const),
    server: fc.constantFrom<ConnectCase['server']>('garbage', 'hello-junk', 'tls', 'tls', 'tls'),
    junk: fc.uint8Array({ maxLength: 300 }),
    ending: fc.constantFrom<ConnectCase['ending']>('fin', 'rst', 'stall'),
    cert: fc.oneof(
      { weight: 5, arbitrary: fc.constant<ConnectCase['cert']>('good') },
      { weight: 1, arbitrary: fc.constantFrom<ConnectCase['cert']>('rogue', 'other') },
    ),
    version: fc.constantFrom<'TLSv1.2' | 'TLSv1.3'>('TLSv1.2', 'TLSv1.3'),
    // Mostly a request that can succeed, so the sessions after the handshake are fuzzed too.
    serverName: fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom('localhost', 'Localhost.', '127.0.0.1') },
      {
        weight: 2,
        arbitrary: fc.constantFrom(
          '127.0.0.2',
          'other.example.test',
          'x.wild.example.test',
          'a.b.wild.example.test',
          '',
          'bad name',
        ),
      },
    ),
    ca: fc.oneof(
      { weight: 6, arbitrary: fc.constant<ConnectCase['ca']>('test') },
      { weight: 1, arbitrary: fc.constantFrom<ConnectCase['ca']>('rogue', 'roots', 'junk') },
    ),
    clientIdentity: fc.oneof(
      { weight: 5, arbitrary: fc.constant<ConnectCase['clientIdentity']>(null) },
      { weight: 2, arbitrary: fc.constant<ConnectCase['clientIdentity']>('localhost') },
      { weight: 1, arbitrary: fc.constant<ConnectCase['clientIdentity']>('nobody') },
    ),
    requestCert: fc.boolean(),
    alpn: fc.option(
      fc.array(fc.constantFrom('imap', 'smtp', 'h2'), { minLength: 1, maxLength: 3 }),
      {
        freq: 2,
      },
    ),
    vanish: fc.option(
      fc.record({
        afterMs: fc.constantFrom(0, 1, 2, 5, 10, 30),
        how: fc.constantFrom<'rst' | 'fin' | 'destroy'>('rst', 'fin', 'destroy'),
      }),
      { freq: 3 },
    ),
    reneg: fc.boolean(),
    controls: fc.array(control, { maxLength: 3 }),
    writes: fc.array(fc.integer({ min: 1, max: 200_000 }), { maxLength: 3 }),
    viaSocket: fc.boolean(),
    holdMs: fc.constantFrom(20, 100, 400),
  });
  return fc.oneof(
    { weight: 4, arbitrary: bytes },
    { weight: 5, arbitrary: tlsCase },
    { weight: 1, arbitrary: api },
    { weight: 3, arbitrary: connectCase },
  );
}

// ---- running the cases ----

const HS_SHORT = 300;
const HS_LONG = 5000;
const IDLE_MS = 1500;

interface World {
  engine: NativeTlsEngine;
  acceptor: Acceptor;
  dir: string;
  options: NativeEngineOptions;
}

/** Hand the server's end to the engine, as core does (an OwnedFd) or as a paused net.Socket. */
function handshake(w: World, server: net.Socket, viaSocket: boolean, req: HandshakeRequest) {
  const p = w.engine.handshake(viaSocket ? server : detachSocket(server).fd, req);
  p.catch(() => {});
  return p;
}

async function runBytes(w: World, c: BytesCase): Promise<void> {
  const { client, server } = await w.acceptor.pair();
  const clientGone = closed(client);
  client.resume();
  const p = handshake(w, server, c.viaSocket, {
    handshakeTimeoutMs: HS_SHORT,
    checkServerName: sniCheck(c.sni, HS_SHORT * 2),
    idleTimeoutMs: IDLE_MS,
    earlyHandoff: true, // garbage never gets that far
  });
  const step = Math.ceil(c.payload.length / c.chunks) || 1;
  for (let i = 0; i < c.payload.length && !client.destroyed; i += step) {
    client.write(c.payload.subarray(i, i + step));
    if (c.gapMs) await sleep(c.gapMs);
  }
  switch (c.ending) {
    case 'fin':
      client.end();
      break;
    case 'rst':
      reset(client);
      break;
    case 'destroy':
      client.destroy();
      break;
    case 'junk':
      // Keep sending until the engine gives up on us.
      for (let i = 0; i < 64 && !client.destroyed && client.writable; i++) {
        client.write(Buffer.alloc(4096, i));
        await sleep(5);
      }
      break;
    case 'stall':
      break;
  }
  const outcome = await within(
    p.then(
      (r) => {
        // Not a ClientHello, so never expected; still, give the descriptor back.
        r.plaintext.close();
        return 'established';
      },
      (err) => expectRefusal(err, 'garbage handshake'),
    ),
    HS_LONG + 10_000,
    'handshake on garbage',
  );
  count(`bytes → ${outcome}`);
  // A refused client is closed by the engine (alert or not): never left hanging.
  await within(
    clientGone.then(() => undefined).catch(() => undefined),
    10_000,
    'client close after refusal',
  ).catch((err) => {
    client.destroy();
    throw err;
  });
}

async function runTls(w: World, c: TlsCase): Promise<void> {
  const { client: rawClient, server } = await w.acceptor.pair();
  let ended = 0;
  let bytes = 0;
  const hsMs = c.sni === 'late' || c.sni === 'never' ? HS_SHORT : HS_LONG;
  const p = handshake(w, server, c.viaSocket, {
    handshakeTimeoutMs: hsMs,
    idleTimeoutMs: IDLE_MS,
    clientCert: c.policy,
    earlyHandoff: c.early,
    promptCompletion: c.prompt,
    checkServerName: sniCheck(c.sni, hsMs * 2),
    onEnd: () => {
      ended++;
    },
    ...(c.onBytes
      ? {
          onBytes: (_: 'in' | 'out', n: number) => {
            // Only positive counts (an error thrown here would only be a warning).
            bytes += n > 0 ? n : Number.NaN;
          },
        }
      : {}),
  });
  const cert =
    c.clientCert === 'client' ? certs.client : c.clientCert === 'rogue' ? certs.rogue : undefined;
  const tc = tls.connect({
    socket: rawClient,
    ca: certs.ca,
    checkServerIdentity: () => undefined,
    rejectUnauthorized: false,
    minVersion: c.version,
    maxVersion: c.version,
    ...(c.servername ? { servername: c.servername } : {}),
    ...(c.alpn ? { ALPNProtocols: c.alpn } : {}),
    ...(cert ? { cert: cert.cert, key: cert.key } : {}),
  });
  tc.on('error', () => {});
  const tcGone = closed(tc);
  if (c.vanish) {
    const { afterMs, how } = c.vanish;
    setTimeout(() => {
      if (how === 'rst') reset(rawClient, tc);
      else if (how === 'fin') rawClient.end();
      else tc.destroy();
    }, afterMs);
  }
  let r: HandshakeResult;
  try {
    r = await within(p, hsMs + 10_000, 'handshake');
  } catch (err) {
    count(`tls → ${expectRefusal(err, 'handshake')}`);
    await within(tcGone, 10_000, 'client close after a refused handshake').catch((e) => {
      tc.destroy();
      throw e;
    });
    return;
  }
  count(`tls → established ${r.info.version}`);
  const key = r.controlKey;

  // The backend end.
  let backend: net.Socket | null = null;
  let fdOnly: OwnedFd | null = null;
  if (c.backend === 'fd-only') fdOnly = r.plaintext;
  else {
    backend = r.plaintext.toSocket({ allowHalfOpen: true });
    backend.on('error', () => {});
    switch (c.backend) {
      case 'echo':
        backend.on('data', (d) => backend?.write(d));
        backend.on('end', () => backend?.end());
        break;
      case 'never-read':
        backend.pause();
        break;
      case 'close-now':
        backend.destroy();
        break;
      case 'half-close':
        backend.resume();
        backend.end('bye\r\n');
        break;
      case 'flood':
        backend.resume();
        backend.write(Buffer.alloc(1 << 20, 0x62));
        break;
      case 'reset':
        // Closed with unread input: the engine's side sees ECONNRESET.
        setTimeout(() => backend?.destroy(), 20);
        break;
    }
  }

  // Control operations at random times, during and after the session.
  const controls = c.controls.map(async (k) => {
    await sleep(k.delayMs);
    const useKey = k.badKey ? Buffer.from(k.badKey) : key;
    try {
      await within(
        w.engine.control(useKey, k.op as never, k.args),
        HS_LONG + IDLE_MS + 10_000,
        `control ${k.op}`,
      );
      count(`control ${k.op} → ok`);
    } catch (err) {
      if (err instanceof PoolError)
        count(`control ${k.op} → ${err.code}${k.op === 'renegotiate' ? `: ${err.message}` : ''}`);
      else throw err;
    }
  });

  // The client's behaviour.
  tc.resume();
  for (const op of c.clientOps) {
    if (tc.destroyed) break;
    switch (op.op) {
      case 'write':
        tc.write(Buffer.alloc(op.n, 0x63));
        break;
      case 'pause':
        tc.pause();
        break;
      case 'resume':
        tc.resume();
        break;
      case 'end':
        tc.end();
        break;
      case 'rst':
        reset(rawClient, tc);
        break;
      case 'renegotiate':
        // Client-initiated renegotiation is refused by the engine (TLS 1.2; an error on 1.3).
        try {
          tc.renegotiate({}, () => {});
        } catch {}
        break;
      case 'wait':
        await sleep(op.n % 200);
        break;
      case 'junk':
        // Bytes that are not TLS, in the middle of the record stream.
        rawClient.write(Buffer.alloc(1 + (op.n % 300), op.n & 0xff));
        break;
      case 'record':
        // An application-data record header announcing more than a record may hold, or a
        // plausible one cut short (the rest never comes).
        rawClient.write(
          Buffer.from([0x17, 3, 3, (op.n >> 8) & 0xff, op.n & 0xff, 1, 2, 3, 4, 5, 6, 7]),
        );
        break;
    }
  }
  await sleep(c.holdMs);
  // Tear down: the client goes (both ways), then the backend.
  if (Math.random() < 0.5) reset(rawClient, tc);
  else tc.destroy();
  backend?.destroy();
  fdOnly?.close();
  await within(
    until(() => ended > 0, IDLE_MS + 8000, 'onEnd'),
    IDLE_MS + 10_000,
    'session end',
  );
  await Promise.all(controls);
  // The session is forgotten: its key is unknown from now on.
  await expect(w.engine.control(key, 'info')).rejects.toMatchObject({
    code: 'TLSPROXY_ERR_POOL_UNKNOWN_KEY',
  });
  if (ended !== 1) throw new Error(`onEnd called ${ended} times`);
  if (Number.isNaN(bytes)) throw new Error('onBytes got a count that is not positive');
  count('bytes reported through onBytes', bytes);
}

const BAD_PEMS: Array<() => NativeEngineOptions> = [
  () => ({ identities: [{ cert: 'not a pem', key: certs.server.key }] }),
  () => ({ identities: [{ cert: certs.server.cert, key: certs.other.key }] }),
  () => ({ identities: [{ cert: certs.server.key, key: certs.server.cert }] }),
  () => ({ identities: [{ cert: certs.server.cert.slice(0, 200), key: certs.server.key }] }),
  () => ({ identities: [{ cert: certs.server.cert, key: certs.server.key.slice(0, 100) }] }),
  () => ({ identities: [] }),
  () => ({ identities: [certs.server], ca: 'garbage' }),
  () => ({ identities: [certs.server], clientCert: 'required' }),
  () => ({ identities: [certs.server], ciphers: 'NOT-A-CIPHER' }),
  () => ({ identities: [{ ...certs.server, names: ['\u0000bad'] }] }),
];

async function runApi(w: World, c: ApiCase): Promise<void> {
  const settle = async (p: Promise<unknown>, what: string) => {
    p.catch(() => {});
    try {
      await within(p, HS_LONG + 10_000, what);
      count(`api ${what} → ok`);
    } catch (err) {
      if (!(err instanceof Error) || /did not settle/.test(err.message)) throw err;
      count(`api ${what} → ${(err as { code?: string }).code ?? err.name}`);
    }
  };
  const req = { handshakeTimeoutMs: HS_SHORT };
  switch (c.what) {
    case 'closed-fd': {
      const [x, y] = socketpair();
      x.close();
      y.close();
      await settle(w.engine.handshake(x, req), 'closed fd');
      break;
    }
    case 'dev-null':
      await settle(w.engine.handshake(new OwnedFd(openSync('/dev/null', 'r+')), req), '/dev/null');
      break;
    case 'seqpacket': {
      const [x, y] = socketpair('seqpacket');
      const p = w.engine.handshake(x, req);
      try {
        if (c.junk.length) writeSync(y.fd, c.junk);
      } catch {}
      await settle(p, 'seqpacket');
      y.close();
      break;
    }
    case 'listening':
      await settle(
        w.engine.handshake(listenSocket(join(w.dir, `l${c.n}-${Date.now()}`)), req),
        'listening socket',
      );
      break;
    case 'bad-request': {
      const { client, server } = await w.acceptor.pair();
      const field = (['handshakeTimeoutMs', 'idleTimeoutMs', 'clientCert', 'alpn'] as const)[
        c.n % 4
      ]!;
      const p = w.engine.handshake(detachSocket(server).fd, {
        [field]: c.value,
      } as HandshakeRequest);
      // A valid value starts a handshake with a client that sends nothing and leaves.
      setTimeout(() => client.destroy(), 20);
      await settle(p, `request.${field}`);
      break;
    }
    case 'read-socket': {
      // A net.Socket that already read bytes is refused (its bytes would be lost).
      const { client, server } = await w.acceptor.pair();
      client.write(Buffer.from(c.junk.length ? c.junk : [1]));
      server.resume();
      await new Promise((r) => server.once('data', r));
      const p = w.engine.handshake(server, req);
      setTimeout(() => client.destroy(), 20);
      await settle(p, 'socket that read');
      break;
    }
    case 'bad-control': {
      const keys: Array<Buffer | string> = [
        Buffer.from(c.junk),
        Buffer.from(c.junk).toString('hex'),
        'zz',
        '',
      ];
      for (const k of keys) await settle(w.engine.control(k, 'info'), 'control with a bad key');
      break;
    }
    case 'engine-close': {
      // An engine closed (twice) with a relayed session moving bytes, a handshake in progress,
      // one waiting for its SNI answer, and control calls in flight: everything settles, every
      // client is closed, every descriptor is released (checked at the end of the run).
      const engine = new NativeTlsEngine({ ...w.options, threads: 1 + (c.n % 3) });
      const ends: Array<Promise<unknown>> = [];
      const clients: net.Socket[] = [];
      try {
        const one = await w.acceptor.pair();
        // Sometimes the engine is closed from inside its own event callback (onEnd runs
        // synchronously in the batch of events the engine's thread-safe function delivers).
        const p1 = engine.handshake(detachSocket(one.server).fd, {
          onEnd: () => {
            if (c.n % 2) {
              count('api engine closed from onEnd');
              void engine.close();
            }
          },
        });
        p1.catch(() => {});
        const tc = tls.connect({ socket: one.client, ca: certs.ca, servername: 'localhost' });
        tc.on('error', () => {});
        // The client reads (and drops) what comes: a stream nobody reads never sees the engine's
        // FIN, and would never close when the echo had all fitted in the buffers on the way.
        tc.resume();
        const r = await within(p1, HS_LONG + 5000, 'handshake before close');
        const back = r.plaintext.toSocket({ allowHalfOpen: true });
        back.on('error', () => {});
        back.on('data', (d) => back.write(d));
        // Half-open: the engine's close ends only what the backend reads; the backend then ends
        // its side, as a server does at EOF (else the socket waits for a write that never comes).
        back.on('end', () => back.end());
        tc.write(Buffer.alloc(200_000, 1));
        ends.push(closed(tc), closed(back));
        for (const op of ['exporter', 'renegotiate', 'info', 'close'] as const) {
          const k = engine.control(r.controlKey, op, { label: 'EXPORTER-x', length: 8 });
          k.catch(() => {});
          ends.push(k.catch(() => undefined));
        }
        const two = await w.acceptor.pair();
        clients.push(two.client);
        two.client.write(c.junk.subarray(0, 3));
        ends.push(engine.handshake(detachSocket(two.server).fd, {}).catch(() => undefined));
        const three = await w.acceptor.pair();
        clients.push(three.client);
        ends.push(
          engine
            .handshake(detachSocket(three.server).fd, {
              checkServerName: () => new Promise(() => {}),
            })
            .catch(() => undefined),
        );
        three.client.write(hellosForApi[c.n % hellosForApi.length]!);
        await sleep(c.n % 50);
      } finally {
        await engine.close();
        await engine.close();
      }
      await within(Promise.all(ends), 10_000, 'everything after engine.close()');
      for (const s of clients) s.resume(); // a paused socket never sees the FIN
      await within(
        Promise.all(clients.map((s) => closed(s))),
        10_000,
        'clients closed by engine.close()',
      );
      count('api engine closed with live sessions');
      break;
    }
    case 'reload': {
      const bad = BAD_PEMS[c.n % BAD_PEMS.length]!;
      try {
        w.engine.reload(bad());
        count('reload bad → accepted');
      } catch (err) {
        if (!(err instanceof PoolError) || err.code !== 'TLSPROXY_ERR_POOL_CONFIG') throw err;
        count('reload bad → CONFIG');
      }
      // And a good one, so the engine keeps serving.
      w.engine.reload(w.options);
      break;
    }
  }
}

/** What connect() may reject with for a hostile server or request. */
const CONNECT_REFUSALS = new Set([
  'TLSPROXY_ERR_POOL_HANDSHAKE',
  'TLSPROXY_ERR_POOL_TIMEOUT',
  'TLSPROXY_ERR_POOL_VERIFY',
  'TLSPROXY_ERR_POOL_CONFIG',
  'TLSPROXY_ERR_POOL_RESOURCES',
]);

const CONNECT_CERTS = {
  good: certs.server,
  rogue: certs.rogue,
  other: certs.other,
};

async function runConnect(w: World, c: ConnectCase): Promise<void> {
  const { client, server } = await w.acceptor.pair();
  let ended = 0;
  const hsMs = c.server !== 'tls' && c.ending === 'stall' ? HS_SHORT : HS_LONG;
  const p = w.engine.connect(c.viaSocket ? client : detachSocket(client).fd, {
    serverName: c.serverName,
    ...(c.ca === 'test'
      ? { ca: certs.ca }
      : c.ca === 'rogue'
        ? { ca: certs.rogue.cert }
        : c.ca === 'junk'
          ? { ca: Buffer.from(c.junk).toString('latin1') }
          : {}),
    ...(c.clientIdentity ? { clientIdentity: c.clientIdentity } : {}),
    ...(c.alpn ? { alpn: c.alpn } : {}),
    handshakeTimeoutMs: hsMs,
    idleTimeoutMs: IDLE_MS,
    onEnd: () => {
      ended++;
    },
  });
  p.catch(() => {});
  // The hostile server, on the accepted end.
  let t: tls.TLSSocket | null = null;
  if (c.server === 'tls') {
    const cert = CONNECT_CERTS[c.cert];
    t = new tls.TLSSocket(server, {
      isServer: true,
      ...cert,
      minVersion: c.version,
      maxVersion: c.version,
      requestCert: c.requestCert,
      rejectUnauthorized: false,
      ca: certs.ca,
      ALPNProtocols: ['imap'],
    });
    t.on('error', () => {});
    const tt = t;
    tt.on('data', (d: Buffer) => tt.write(d.subarray(0, 64)));
    tt.on('end', () => tt.end());
    if (c.reneg && c.version === 'TLSv1.2')
      tt.once('secure', () => {
        try {
          tt.renegotiate({ requestCert: true, rejectUnauthorized: false }, () => {});
        } catch {}
      });
    server.resume();
  } else {
    server.once('data', () => {
      const junk = Buffer.from(c.junk);
      const reply =
        c.server === 'hello-junk'
          ? record(
              0x16,
              Buffer.concat([Buffer.from([2, 0, junk.length >> 8, junk.length & 255]), junk]),
              0x0303,
            )
          : junk;
      server.write(reply, () => {
        if (c.ending === 'rst') reset(server);
        else if (c.ending === 'fin') server.end();
      });
    });
    server.resume();
  }
  // Once a TLSSocket wraps the accepted socket, it owns the descriptor: its close is the one to
  // wait for, and its end() is the FIN (the wrapped socket's own end() is not: the fuzzer once
  // waited forever on that socket's 'close' after a server half-closed through it).
  const serverGone = closed(t ?? server);
  if (c.vanish) {
    const { afterMs, how } = c.vanish;
    setTimeout(() => {
      if (how === 'rst') reset(server, t);
      else if (how === 'fin') (t ?? server).end();
      else (t ?? server).destroy();
    }, afterMs);
  }
  let r: Awaited<typeof p>;
  try {
    r = await within(p, hsMs + 10_000, 'connect');
  } catch (err) {
    if (!(err instanceof PoolError) || !CONNECT_REFUSALS.has(err.code))
      throw new Error(`connect: unexpected failure ${String((err as Error)?.stack ?? err)}`);
    count(`connect → ${err.code}${err.reason ? ` (${err.reason})` : ''}`);
    // The engine closed the socket: the server sees its end.
    await within(serverGone, 10_000, 'server side closed after a failed connect').catch((e) => {
      (t ?? server).destroy();
      throw e;
    });
    return;
  }
  count(`connect → established ${r.info.version}`);
  if (!r.info.serverIdentity?.fingerprint256) throw new Error('connect: no server identity');
  const key = r.controlKey;
  const app = r.plaintext.toSocket({ allowHalfOpen: true });
  app.on('error', () => {});
  app.resume();
  for (const n of c.writes) app.write(Buffer.alloc(n, 0x61));
  const controls = c.controls.map(async (k) => {
    await sleep(k.delayMs);
    const useKey = k.badKey ? Buffer.from(k.badKey) : key;
    try {
      await within(
        w.engine.control(useKey, k.op as never, k.args),
        HS_LONG + IDLE_MS + 10_000,
        `control ${k.op} (client session)`,
      );
      count(`control ${k.op} (client session) → ok`);
    } catch (err) {
      if (err instanceof PoolError) count(`control ${k.op} (client session) → ${err.code}`);
      else throw err;
    }
  });
  await sleep(c.holdMs);
  if (Math.random() < 0.5) reset(server, t);
  else (t ?? server).destroy();
  app.destroy();
  await within(
    until(() => ended > 0, IDLE_MS + 8000, 'onEnd'),
    IDLE_MS + 10_000,
    'client session end',
  );
  await Promise.all(controls);
  await expect(w.engine.control(key, 'info')).rejects.toMatchObject({
    code: 'TLSPROXY_ERR_POOL_UNKNOWN_KEY',
  });
  if (ended !== 1) throw new Error(`connect: onEnd called ${ended} times`);
}

function runCase(w: World, c: Case): Promise<void> {
  if (c.kind === 'connect') return runConnect(w, c);
  if (c.kind === 'bytes') return runBytes(w, c);
  if (c.kind === 'tls') return runTls(w, c);
  return runApi(w, c);
}

// ---- the run ----

/** This process's descriptors and what each is (`socket:[inode]`, a path, `pipe:[…]`). */
function openFds(): Map<number, string> {
  const out = new Map<number, string>();
  for (const f of readdirSync('/proc/self/fd')) {
    try {
      out.set(Number(f), readlinkSync(`/proc/self/fd/${f}`));
    } catch {} // the directory's own descriptor, closed by now
  }
  return out;
}

/** The descriptors open now that were not (or were something else) at the baseline, with the
 * socket kind and state the kernel lists for each socket — what a leak report needs. */
function describeFds(base: Map<number, string>): string {
  const kinds = new Map<string, string>();
  for (const [file, kind] of [
    ['/proc/net/tcp', 'tcp'],
    ['/proc/net/tcp6', 'tcp6'],
    ['/proc/net/unix', 'unix'],
  ] as const) {
    try {
      for (const line of readFileSync(file, 'utf8').split('\n').slice(1)) {
        const f = line.trim().split(/\s+/);
        // tcp: local, remote, state (hex) …, inode at 9; unix: … type at 4, state at 5, inode at 6
        if (kind === 'unix' && f[6]) kinds.set(f[6], `unix type ${f[4]} state ${f[5]}`);
        else if (f[9]) kinds.set(f[9], `${kind} ${f[1]} → ${f[2]} state ${f[3]}`);
      }
    } catch {}
  }
  const out: string[] = [];
  for (const [fd, link] of openFds()) {
    if (base.get(fd) === link) continue;
    const inode = /^socket:\[(\d+)\]$/.exec(link)?.[1];
    out.push(`${fd} ${link}${inode ? ` (${kinds.get(inode) ?? 'not listed'})` : ''}`);
  }
  return out.join('; ') || 'none';
}

describe(`native engine fuzz (seed ${SEED}, ${SECONDS} s)`, () => {
  let fdBase = 0;
  let fdsAtBase = new Map<number, string>();
  let memBase = 0;
  let hellos: Buffer[] = [];
  const world = {} as World;

  beforeAll(async () => {
    console.log(`engine-native fuzz: seed ${SEED}, ${SECONDS} s`);
    hellos = [
      await captureClientHello({ servername: 'localhost', ALPNProtocols: ['imap'] }),
      await captureClientHello({ servername: 'x.wild.example.test', maxVersion: 'TLSv1.2' }),
      await captureClientHello({ minVersion: 'TLSv1.3' }),
    ];
    hellosForApi.push(...hellos);
    world.dir = mkdtempSync(join(tmpdir(), 'engine-fuzz-'));
    writeFileSync(join(world.dir, 'empty'), '');
    world.options = {
      identities: [
        certs.server,
        { ...certs.other, names: ['other.example.test', '*.wild.example.test'] },
      ],
      ca: certs.ca,
      threads: 2,
      alpn: ['imap', 'smtp'],
      handshakeTimeoutMs: HS_LONG,
      idleTimeoutMs: IDLE_MS,
    };
    world.acceptor = new Acceptor();
    await world.acceptor.listen();
    // Baselines after OpenSSL's and node's one-time setup (a first engine and handshake).
    world.engine = new NativeTlsEngine(world.options);
    await runTls(world, {
      kind: 'tls',
      version: 'TLSv1.3',
      servername: 'localhost',
      alpn: null,
      clientCert: 'none',
      policy: 'none',
      sni: 'absent',
      vanish: null,
      clientOps: [{ op: 'write', n: 10 }],
      backend: 'echo',
      controls: [],
      viaSocket: false,
      onBytes: false,
      early: false,
      prompt: false,
      holdMs: 20,
    });
    // The generator's own check: a ClientHello rebuilt around a well-formed server_name reaches
    // the engine's SNI question with that name (so the fuzzed bodies land where intended).
    {
      const name = Buffer.from('Rebuilt.Example');
      const sni = Buffer.concat([Buffer.from([0, name.length + 3, 0, 0, name.length]), name]);
      const asked: string[] = [];
      const { client, server } = await world.acceptor.pair();
      client.resume();
      const p = handshake(world, server, false, {
        handshakeTimeoutMs: HS_SHORT,
        checkServerName: async (n) => {
          asked.push(n);
          return false;
        },
      });
      client.write(withExtension(hellos[0]!, 0, sni));
      await expect(p).rejects.toMatchObject({ code: 'TLSPROXY_ERR_POOL_SERVER_NAME_REFUSED' });
      expect(asked).toEqual(['Rebuilt.Example']);
      client.destroy();
    }
    await collect();
    fdBase = fdCount();
    fdsAtBase = openFds();
    memBase = b.mallocBytes();
  }, 60_000);

  afterAll(async () => {
    await world.engine?.close();
    await world.acceptor?.close();
    if (world.dir) rmSync(world.dir, { recursive: true, force: true });
    console.log(
      `engine-native fuzz: seed ${SEED}; outcomes:\n${[...stats]
        .sort()
        .map(([k, v]) => `  ${String(v).padStart(6)}  ${k}`)
        .join('\n')}`,
    );
  });

  it('raw binding: hostile arguments and handles beyond their engine', async () => {
    await runBindingPhase(budget(0.12));
  });

  it('every ClientHello prefix, then FIN or RST', async () => {
    const deadline = Date.now() + budget(0.12);
    const jobs: Array<() => Promise<void>> = [];
    for (const h of hellos)
      for (let cut = 0; cut <= h.length; cut++)
        jobs.push(() =>
          runBytes(world, {
            kind: 'bytes',
            payload: h.subarray(0, cut),
            chunks: 1,
            gapMs: 0,
            ending: cut % 2 ? 'rst' : 'fin',
            viaSocket: false,
            sni: 'accept',
          }),
        );
    let done = 0;
    const workers = Array.from({ length: 8 }, async () => {
      while (jobs.length && Date.now() < deadline) {
        await jobs.shift()!();
        done++;
      }
    });
    await Promise.all(workers);
    count('hello prefixes tried', done);
  });

  it('peers and callers, concurrently: garbage, cut and oversized records, vanishing and stalled peers, backends that never read, control calls, reloads, hostile servers for connect()', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(caseArb(hellos), { minLength: 1, maxLength: 6 }), async (cases) => {
        count('batches');
        count('cases', cases.length);
        await Promise.all(cases.map((c) => runCase(world, c)));
      }),
      {
        seed: SEED,
        numRuns: 1_000_000,
        interruptAfterTimeLimit: budget(0.6),
        markInterruptAsFailure: false,
        endOnFailure: true,
      },
    );
  });

  it('bounded memory: backends that never read and clients that never read', async () => {
    await runStallPhase(world, budget(0.1));
  });

  it('after all sessions end: no descriptor left, malloc back near its baseline', async () => {
    expect(world.engine.sessionCount).toBe(0);
    await world.engine.close();
    await world.engine.close(); // twice is fine
    const [x, y] = socketpair();
    await expect(world.engine.handshake(x, {})).rejects.toBeInstanceOf(PoolError);
    expect(x.closed).toBe(true);
    y.close();
    world.engine = new NativeTlsEngine(world.options);
    await world.engine.close();
    await collect();
    await until(() => fdCount() <= fdBase, 10_000, `descriptors back to ${fdBase}`).catch(() => {
      throw new Error(
        `descriptor leak: ${fdCount()} open, ${fdBase} at the start; new since then: ${describeFds(fdsAtBase)}`,
      );
    });
    await collect();
    const grown = b.mallocBytes() - memBase;
    count('malloc growth KiB', Math.round(grown / 1024));
    expect(grown, `malloc'd memory grew by ${grown} bytes`).toBeLessThan(MEM_SLACK);
  }, 60_000);
});

// Node's own C++ side (sockets, TLS client contexts, V8 external memory) moves by a few MiB
// between two measurements; a per-session leak over thousands of sessions is far above this.
const MEM_SLACK = 16 * 1024 * 1024;

// ---- the raw binding ----

function sizedStore(): StoreHandle {
  return b.storeCreate([{ ...certs.server, names: ['localhost'] }], {
    defaultIndex: 0,
    minVersion: 0x0303,
    ca: null,
    ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256',
    ciphersuites: null,
  });
}

/** A raw engine whose events are consumed (descriptors closed). */
function rawEngine(threads = 1): { engine: EngineHandle; events: NativeEvent[] } {
  const events: NativeEvent[] = [];
  const engine = b.engineCreate(threads, (evs) => {
    for (const e of evs) {
      if (e.type === 'established') new OwnedFd(e.fd).close();
      events.push(e);
    }
  });
  b.engineRef(engine, false);
  return { engine, events };
}

const call = (f: unknown, ...a: unknown[]) => (f as (...x: unknown[]) => unknown)(...a);

async function runBindingPhase(ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  const acceptor = new Acceptor();
  await acceptor.listen();
  const store = sizedStore();
  // A store with valid identities and hostile options: each option is read from an object
  // that may not be one, may lack it, or may throw.
  const optionValues = fc.oneof(
    fc.anything(),
    fc.constant(null),
    fc.constant(undefined),
    fc.constant(
      new Proxy(
        {},
        {
          get: () => {
            throw new Error('getter throws');
          },
        },
      ),
    ),
    fc.record(
      {
        defaultIndex: fc.oneof(fc.integer(), fc.anything()),
        minVersion: fc.oneof(fc.constantFrom(0x0303, 0x0304), fc.anything()),
        ca: fc.oneof(fc.constant(null), fc.constant(certs.ca), fc.anything()),
        ciphers: fc.oneof(fc.constant('DEFAULT'), fc.string(), fc.anything()),
        ciphersuites: fc.oneof(fc.constant(null), fc.string(), fc.anything()),
      },
      { requiredKeys: [] },
    ),
  );
  fc.assert(
    fc.property(optionValues, (opts) => {
      try {
        b.storeCreate([{ ...certs.server, names: ['localhost'] }], opts as never);
        count('storeCreate hostile options → ok');
      } catch (err) {
        expect(err).toBeInstanceOf(Error);
        count('storeCreate hostile options → thrown');
      }
    }),
    {
      seed: SEED,
      numRuns: 300,
      interruptAfterTimeLimit: Math.max(500, (deadline - Date.now()) / 4),
    },
  );

  // PEM the C side parses itself (ctx.c: leaf, chain, key, CA bundle) — mutated, truncated,
  // mismatched, encrypted, concatenated — with every error path's memory checked: malloc'd
  // bytes after many refusals must not grow with their number.
  const enc = generateKeyPairSync('ec', {
    namedCurve: 'P-256',
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'x' },
  }).privateKey;
  const pems = [
    certs.server.cert,
    certs.server.key,
    certs.other.cert,
    certs.other.key,
    certs.ca,
    enc,
  ];
  const mutatedPem = fc.oneof(
    fc.constantFrom(...pems),
    fc
      .tuple(
        fc.constantFrom(...pems),
        fc.array(fc.tuple(fc.nat(), fc.constantFrom('A', '/', '-', '\n', '=', '\u0000', 'é')), {
          minLength: 1,
          maxLength: 6,
        }),
      )
      .map(([pem, edits]) => {
        const a = [...pem];
        for (const [i, ch] of edits) a[i % a.length] = ch;
        return a.join('');
      }),
    fc.tuple(fc.constantFrom(...pems), fc.nat()).map(([pem, n]) => pem.slice(0, n % pem.length)),
    fc.array(fc.constantFrom(...pems), { minLength: 1, maxLength: 4 }).map((l) => l.join('\n')),
    fc.string({ maxLength: 200 }),
  );
  const pemCase = fc.record({
    cert: mutatedPem,
    key: mutatedPem,
    ca: fc.option(mutatedPem),
    names: fc.array(
      fc.oneof(fc.string({ maxLength: 20 }), fc.constantFrom('*.', '*', '.', '*.a.b')),
      { maxLength: 3 },
    ),
  });
  const tryStore = (k: { cert: string; key: string; ca: string | null; names: string[] }) => {
    try {
      b.storeCreate([{ cert: k.cert, key: k.key, names: k.names }], {
        defaultIndex: 0,
        minVersion: 0x0303,
        ca: k.ca,
        ciphers: 'DEFAULT',
        ciphersuites: null,
      });
      count('storeCreate mutated PEM → ok');
    } catch (err) {
      expect(err).toBeInstanceOf(Error);
      count('storeCreate mutated PEM → refused');
    }
  };
  const pemSamples = fc.sample(pemCase, { seed: SEED, numRuns: 400 });
  // Once for OpenSSL's lazy setup, then measured.
  for (const k of pemSamples.slice(0, 50)) tryStore(k);
  await collect();
  const pemBefore = b.mallocBytes();
  let tried = 0;
  const pemDeadline = Date.now() + (deadline - Date.now()) * 0.4;
  for (const k of pemSamples) {
    if (Date.now() > pemDeadline) break;
    tryStore(k);
    tried++;
  }
  await collect();
  const pemGrowth = b.mallocBytes() - pemBefore;
  count('storeCreate mutated PEM tried', tried);
  count('storeCreate mutated PEM malloc growth KiB', Math.round(pemGrowth / 1024));
  expect(pemGrowth, `malloc grew by ${pemGrowth} bytes over ${tried} store builds`).toBeLessThan(
    2 * 1024 * 1024,
  );

  // Session handles outliving their engine, used with another engine; control calls with
  // hostile arguments on live, ended and foreign handles; descriptors of every kind submitted.
  const live = rawEngine(2);
  const handleArb = fc.record({
    threads: fc.integer({ min: 1, max: 3 }),
    // Mostly well-formed wire lists (what the wrapper sends), sometimes anything.
    alpn: fc.option(
      fc.oneof(
        {
          weight: 4,
          arbitrary: fc
            .array(fc.uint8Array({ minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 3 })
            .map((l) => Buffer.concat(l.flatMap((p) => [Buffer.from([p.length]), u8(p)]))),
        },
        { weight: 1, arbitrary: fc.uint8Array({ maxLength: 40 }).map(u8) },
      ),
    ),
    policy: fc.constantFrom(0, 1, 2),
    calls: fc.array(
      fc.tuple(
        fc.constantFrom('sniAnswer', 'exporter', 'closeSession', 'renegotiate'),
        fc.array(
          fc.oneof(
            fc.anything(),
            fc.integer({ min: -5, max: 2000 }),
            fc.uint8Array({ maxLength: 80 }).map(u8),
          ),
          { maxLength: 4 },
        ),
      ),
      { maxLength: 6 },
    ),
    gcOld: fc.boolean(),
    fdKind: fc.constantFrom('tcp', 'tcp', 'dev-null', 'file', 'seqpacket', 'huge'),
  });
  await fc.assert(
    fc.asyncProperty(handleArb, async (k) => {
      count('binding cases');
      const old = rawEngine(k.threads);
      let fd: number;
      let peer: net.Socket | OwnedFd | null = null;
      switch (k.fdKind) {
        case 'tcp': {
          const pr = await acceptor.pair();
          pr.client.write(Buffer.from([0x16, 3, 1, 0, 5, 1, 0, 0, 1, 0]));
          peer = pr.client;
          fd = detachSocket(pr.server).fd.take();
          break;
        }
        case 'dev-null':
          fd = openSync('/dev/null', 'r+');
          break;
        case 'file':
          fd = openSync(fileURLToPath(import.meta.url), 'r');
          break;
        case 'seqpacket': {
          const [x, y] = socketpair('seqpacket');
          fd = x.take();
          peer = y;
          break;
        }
        default:
          fd = 1_000_000; // beyond any open descriptor
      }
      let h: ReturnType<typeof b.submit>;
      try {
        h = b.submit(old.engine, store, fd, 1, k.policy as 0 | 1 | 2, k.alpn, 200, 0, true, true);
      } catch (err) {
        // Refused (a malformed ALPN list): the descriptor is still ours.
        expect(err).toBeInstanceOf(TypeError);
        count('binding submit refused');
        if (fd !== 1_000_000) closeSync(fd);
        b.engineClose(old.engine);
        if (peer instanceof OwnedFd) peer.close();
        else peer?.destroy();
        return;
      }
      if (!h) throw new Error('submit refused on an idle engine');
      // Calls on a live handle, with its own engine and with another one.
      for (const [name, args] of k.calls) {
        for (const eng of [old.engine, live.engine]) {
          try {
            call((b as unknown as Record<string, unknown>)[name], eng, h, ...args);
          } catch (err) {
            expect(err).toBeInstanceOf(Error);
          }
        }
      }
      await sleep(5);
      b.engineClose(old.engine);
      b.engineClose(old.engine); // twice
      if (k.gcOld) {
        // Drop the old engine: its loops are freed, the session handle lives on.
        (old as { engine: unknown }).engine = null;
        await collect();
      }
      for (const [name, args] of k.calls) {
        for (const eng of [old.engine, live.engine]) {
          try {
            call((b as unknown as Record<string, unknown>)[name], eng, h, ...args);
          } catch (err) {
            expect(err).toBeInstanceOf(Error);
          }
        }
      }
      for (const eng of [old.engine, live.engine]) {
        for (const f of [b.sniAnswer, b.closeSession, b.renegotiate]) {
          try {
            call(f, eng, h, 1);
          } catch (err) {
            expect(err).toBeInstanceOf(Error);
          }
        }
        try {
          b.exporter(eng, h, 1, 'EXPORTER-x', null, 16);
        } catch (err) {
          expect(err).toBeInstanceOf(Error);
        }
      }
      if (peer instanceof OwnedFd) peer.close();
      else peer?.destroy();
    }),
    {
      seed: SEED,
      numRuns: 100_000,
      interruptAfterTimeLimit: Math.max(500, deadline - Date.now()),
      endOnFailure: true,
    },
  );
  b.engineClose(live.engine);
  await acceptor.close();
  await collect();
}

// ---- bounded buffers ----

/** Write 64 KiB whenever the socket takes more (up to 16 MiB); resolves with the bytes written. */
async function pump(s: net.Socket, stop: { now: boolean }): Promise<number> {
  const chunk = Buffer.alloc(64 * 1024, 0x70);
  let n = 0;
  while (!stop.now && !s.destroyed && n < 16 << 20) {
    if (s.writableNeedDrain) {
      // Nothing more while the socket is full: what is written waits in the kernel, not here.
      await new Promise<void>((r) => {
        const done = () => {
          clearTimeout(t);
          s.off('drain', done);
          r();
        };
        const t = setTimeout(done, 100);
        s.on('drain', done);
      });
      continue;
    }
    s.write(chunk);
    n += chunk.length;
  }
  return n;
}

async function runStallPhase(w: World, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  const N = 12;
  await collect();
  const before = b.mallocBytes();
  const sessions: Array<{ tc: tls.TLSSocket; backend: net.Socket; ended: Promise<void> }> = [];
  const pumps: Array<Promise<number>> = [];
  const stop = { now: false };
  for (let i = 0; i < N; i++) {
    const { client, server } = await w.acceptor.pair();
    let onEnd!: () => void;
    const ended = new Promise<void>((r) => {
      onEnd = r;
    });
    const p = handshake(w, server, false, { idleTimeoutMs: 0, onEnd });
    const tc = tls.connect({
      socket: client,
      ca: certs.ca,
      servername: 'localhost',
      rejectUnauthorized: false,
    });
    tc.on('error', () => {});
    const r = await within(p, HS_LONG + 5000, 'stall handshake');
    const backend = r.plaintext.toSocket({ allowHalfOpen: true });
    backend.on('error', () => {});
    if (i % 2 === 0) {
      // The backend never reads; the client writes whenever its socket takes more.
      backend.pause();
      tc.resume();
      pumps.push(pump(tc, stop));
    } else {
      // The client never reads; the backend writes whenever its socket takes more.
      tc.pause();
      pumps.push(pump(backend, stop));
    }
    sessions.push({ tc, backend, ended });
  }
  // Let every buffer on the way fill up.
  await sleep(Math.max(300, Math.min(2000, deadline - Date.now() - 1000)));
  stop.now = true;
  await collect();
  const held = b.mallocBytes() - before;
  const written = (await Promise.all(pumps)).reduce((x, y) => x + y, 0);
  count('stalled sessions', N);
  count('KiB written into stalled sessions', Math.round(written / 1024));
  count('malloc KiB per stalled session', Math.round(held / N / 1024));
  for (const s of sessions) {
    s.tc.destroy();
    s.backend.destroy();
  }
  await within(Promise.all(sessions.map((s) => s.ended)), 15_000, 'stalled sessions end');
  // One TLS record per direction in the engine, OpenSSL's own buffers, and node's for the
  // client and backend sockets of this process: far below what was written (4 MiB each).
  expect(held / N, `malloc'd ${held} bytes for ${N} stalled sessions`).toBeLessThan(1024 * 1024);
}
