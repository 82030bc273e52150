// The test kit every dialect's tests share (xmpp.js's @xmpp/test): drive a session, cut its
// input anywhere, read back what it wrote, and the names a peer may send to reach a plain
// object's prototype. No fast-check here: properties pass their own arbitraries, so this
// subpath needs nothing beyond the kit.
import assert from 'node:assert/strict';
import type { Duplex } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { concat, latin1 } from './bytes.js';
import type {
  Action,
  ClientAction,
  ClientCloseAction,
  ClientContext,
  ClientDialectSession,
  ClientPlaintextAction,
  ClientStartTlsAction,
  CloseAction,
  Dialect,
  DialectSession,
  PlaintextAction,
  SendAction,
  SessionContext,
  StartTlsAction,
} from './contract.js';

/** A string of chars 0-255 to its octets, one per char (for text protocols' test input). */
export const enc = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff);
/** Octets to a string of chars 0-255. */
export const dec = (b: Uint8Array): string => latin1(b);
const utf8Decoder = new TextDecoder();
const utf8Encoder = new TextEncoder();
/** UTF-8 input and output, for XMPP-style protocols. */
export const encUtf8 = (s: string): Uint8Array => utf8Encoder.encode(s);
export const decUtf8 = (b: Uint8Array): string => utf8Decoder.decode(b);

/**
 * `bytes` cut at `cuts` (any naturals, taken modulo length + 1, duplicates ignored): the chunks
 * TCP could have delivered. Feed it `fc.array(fc.nat())` for split-anywhere properties.
 */
export function splitAt(bytes: Uint8Array, cuts: readonly number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of [...points, bytes.length]) {
    out.push(bytes.subarray(prev, p));
    prev = p;
  }
  return out;
}

/** One chunk per octet: the worst chunking a client can choose. */
export function bytewise(bytes: Uint8Array): Uint8Array[] {
  return Array.from(bytes, (b) => Uint8Array.of(b));
}

/** The chunkings every split-anywhere test tries: whole, cut at `cuts`, and one octet per read. */
export function chunkings(
  bytes: Uint8Array,
  cuts: readonly number[],
): { whole: Uint8Array[]; split: Uint8Array[]; bytewise: Uint8Array[] } {
  return { whole: [bytes], split: splitAt(bytes, cuts), bytewise: bytewise(bytes) };
}

export interface WrittenOptions {
  /** Count a starttls action's go-ahead as written (HTTP Upgrade's 101 is the reply). */
  goAhead?: boolean;
}

/** Everything written to the client, as octets: send data and close data, in order. */
export function writtenBytes(actions: readonly Action[], opts: WrittenOptions = {}): Uint8Array {
  const parts: number[] = [];
  for (const a of actions) {
    if (a.type === 'send') parts.push(...a.data);
    if (a.type === 'close' && a.data) parts.push(...a.data);
    if (opts.goAhead && a.type === 'starttls') parts.push(...a.goAhead);
  }
  return Uint8Array.from(parts);
}

/** Everything written to the client, decoded with `decode` (latin1 by default). */
export function written(
  actions: readonly Action[],
  opts: WrittenOptions & { decode?: (b: Uint8Array) => string } = {},
): string {
  return (opts.decode ?? dec)(writtenBytes(actions, opts));
}

/** The actions of one type, typed. */
export function only<T extends Action['type']>(actions: readonly Action[], type: T) {
  return actions.filter((a): a is Extract<Action, { type: T }> => a.type === type);
}

/** A session context for tests: given options and limits, fixed host name and connection id. */
export function testContext<O>(
  options: O,
  limits: Record<string, number> = {},
  extra: Partial<SessionContext<O>> = {},
): SessionContext<O> {
  return { options, limits, hostname: 'test.example', connectionId: 't1', ...extra };
}

/** Create and start a session, feed `chunks` at time 0, and return every action after start. */
export function feedSession(
  session: DialectSession,
  chunks: readonly (string | Uint8Array)[],
  encode: (s: string) => Uint8Array = enc,
): Action[] {
  session.start(0);
  const actions: Action[] = [];
  for (const c of chunks)
    actions.push(...session.receive(typeof c === 'string' ? encode(c) : c, 0));
  return actions;
}

/**
 * A small test driver bound to one dialect: `newSession(options, limits)` and
 * `feed(chunks, options, limits)` → `{ session, actions, text }`.
 */
export function driver<O>(
  dialect: Pick<Dialect<O>, 'create'>,
  defaults: Partial<SessionContext<O>> & {
    encode?: (s: string) => Uint8Array;
    decode?: (b: Uint8Array) => string;
    goAhead?: boolean;
  } = {},
) {
  const { encode = enc, decode = dec, goAhead = false, ...context } = defaults;
  const newSession = (
    options = {} as O,
    limits: Record<string, number> = {},
    extra: Partial<SessionContext<O>> = {},
  ): DialectSession => dialect.create(testContext(options, limits, { ...context, ...extra }));
  const feed = (
    chunks: readonly (string | Uint8Array)[],
    options = {} as O,
    limits: Record<string, number> = {},
    extra: Partial<SessionContext<O>> = {},
  ): { session: DialectSession; actions: Action[]; text: string } => {
    const session = newSession(options, limits, extra);
    const actions = feedSession(session, chunks, encode);
    return { session, actions, text: written(actions, { decode, goAhead }) };
  };
  const text = (actions: readonly Action[]): string => written(actions, { decode, goAhead });
  return { newSession, feed, written: text };
}

/**
 * Every name on Object.prototype (`constructor`, `__proto__`, `hasOwnProperty`, ...): a peer that
 * sends one of these as a command, attribute or option name must not reach a prototype member
 * (input never selects a handler through a plain object).
 */
export const OBJECT_PROTOTYPE_NAMES: readonly string[] = Object.freeze(
  Object.getOwnPropertyNames(Object.prototype),
);

/**
 * Memory measurement for the O(pending) tests (issue 14): the V8 heap plus ArrayBuffer backing
 * stores. Call `collectGarbage()` first; it exposes `gc` on first use.
 */
export function memoryUsed(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

let gcFn: (() => void) | undefined;
/**
 * Run a full garbage collection (enables --expose-gc at run time on first call). Twice: V8 frees
 * the backing stores of dead ArrayBuffers on a background thread after a collection, so
 * `arrayBuffers` read right after one can still count them on a busy machine (an LDAP memory
 * test read 30 KiB per session too much that way); the next collection waits for that sweep.
 */
export function collectGarbage(): void {
  if (gcFn === undefined) {
    setFlagsFromString('--expose-gc');
    gcFn = runInNewContext('gc') as () => void;
  }
  gcFn();
  gcFn();
}

/**
 * What `sessions` sessions cost while each holds `bytes` unframed (fed `chunk` octets per read):
 * memory per session after a full GC, and CPU ms per session. `closed` counts sessions that
 * closed instead of waiting for the rest (a memory test expects 0). Issue 14: a pending line or
 * PDU must cost O(its length) with a small constant, and framing work per octet must be O(1).
 */
export function pendingCost(
  open: () => DialectSession,
  bytes: Uint8Array,
  chunk: number,
  sessions = 200,
): { perSession: number; ms: number; closed: number } {
  collectGarbage();
  const before = memoryUsed();
  const kept: DialectSession[] = [];
  let closed = 0;
  const t0 = performance.now();
  for (let i = 0; i < sessions; i++) {
    const s = open();
    let wasClosed = false;
    for (let at = 0; at < bytes.length; at += chunk) {
      for (const a of s.receive(bytes.subarray(at, at + chunk), 0)) {
        wasClosed ||= a.type === 'close';
      }
    }
    if (wasClosed) closed++;
    kept.push(s);
  }
  const ms = performance.now() - t0;
  collectGarbage();
  const perSession = (memoryUsed() - before) / sessions;
  // Keep the sessions alive through the measurement.
  if (kept.length !== sessions) throw new Error('unreachable');
  return { perSession, ms: ms / sessions, closed };
}

/** What `feedPastStartTls` saw. */
export interface PastStartTls {
  /** The starttls action, or undefined when none came. */
  starttls: StartTlsAction | undefined;
  /** A plaintext hand-off came before any starttls (SMTP MX mode): the rest was not fed. */
  plaintext: boolean;
  /** The starttls action's `trailing` followed by every chunk received after it. */
  trailing: Uint8Array;
  /** Every action before the starttls action. */
  before: Action[];
  /** Rule breaks: an action other than a log after the starttls action, or more than one per
   * later receive. Empty when nothing pipelined after STARTTLS was answered or framed. */
  problems: string[];
}

/**
 * Feed `chunks` to a started session and check the STARTTLS rule (CVE-2011-0411): after the
 * starttls action, nothing but a log comes out, at most one per receive, and every octet after
 * the STARTTLS command is either in `trailing` or in a later chunk — never interpreted. The
 * caller compares `trailing` with what it pipelined and checks `starttls.state`.
 */
export function feedPastStartTls(
  session: DialectSession,
  chunks: readonly Uint8Array[],
): PastStartTls {
  const problems: string[] = [];
  const before: Action[] = [];
  const trailing: number[] = [];
  let starttls: StartTlsAction | undefined;
  for (const chunk of chunks) {
    const acts = session.receive(chunk, 0);
    if (starttls !== undefined) {
      if (acts.length > 1) problems.push(`${acts.length} actions for one chunk after STARTTLS`);
      for (const a of acts) if (a.type !== 'log') problems.push(`${a.type} after STARTTLS`);
      trailing.push(...chunk);
      continue;
    }
    const i = acts.findIndex((a) => a.type === 'starttls' || a.type === 'plaintext');
    if (i < 0) {
      before.push(...acts);
      continue;
    }
    before.push(...acts.slice(0, i));
    const found = acts[i]!;
    if (found.type === 'plaintext')
      return { starttls, plaintext: true, trailing: Uint8Array.from(trailing), before, problems };
    starttls = found as StartTlsAction;
    for (const a of acts.slice(i + 1)) {
      if (a.type !== 'log') problems.push(`${a.type} after STARTTLS in the same receive`);
    }
    trailing.push(...starttls.trailing);
  }
  return { starttls, plaintext: false, trailing: Uint8Array.from(trailing), before, problems };
}

/** The part of a test runner's API the shared suites need (vitest, node:test, jest). */
export interface TestApi {
  describe(name: string, fn: () => void): unknown;
  it(name: string, fn: () => void): unknown;
}

/**
 * Issue 14's cost tests for one dialect: `pending` (octets of one unfinished line, PDU or tag,
 * just under the limit) held by 200 sessions fed 1, 7 and 100 octets per read costs at most
 * twice its length plus 8 KiB per session; `long` (over 100,000 octets, the limit raised by
 * `open`) fed one octet per read takes under a second per session (quadratic framing takes
 * seconds). `open` returns a started session (with any stream header already sent).
 */
export function describePendingCost(
  t: TestApi,
  c: { what: string; open: () => DialectSession; pending: Uint8Array; long: Uint8Array },
): void {
  t.describe(`a pending ${c.what} costs O(its length)`, () => {
    for (const chunk of [1, 7, 100]) {
      t.it(`memory, ${chunk} octet(s) per read`, () => {
        const { perSession, closed } = pendingCost(c.open, c.pending, chunk);
        assert.equal(closed, 0, 'a session closed instead of waiting for the rest');
        // The pending octets once (a doubling buffer: at most twice) plus a small constant.
        const bound = 2 * c.pending.length + 8192;
        assert.ok(perSession < bound, `${Math.round(perSession)} octets per session >= ${bound}`);
      });
    }
    t.it(`CPU: a ${c.long.length}-octet ${c.what}, one octet per read`, () => {
      const { ms, closed } = pendingCost(c.open, c.long, 1, 2);
      assert.equal(closed, 0, 'a session closed instead of waiting for the rest');
      // Linear: a few ms. Quadratic framing (a copy or re-scan of the pending octets per read)
      // takes seconds here.
      assert.ok(ms < 1000, `${Math.round(ms)} ms per session`);
    });
  });
}

/** A dialect's own checks of each kind of action (use its test runner's `expect` inside). */
export interface ActionChecks {
  send?(action: SendAction): void;
  close?(action: CloseAction): void;
  starttls?(action: StartTlsAction): void;
  /** Absent: a plaintext hand-off is itself a failure (only SMTP's MX mode makes one). */
  plaintext?(action: PlaintextAction): void;
}

/**
 * The contract's rules for every action (a known type, octets where octets are due, a string
 * reason, a finite timer, no `error` log — an internal error or an ambiguous parse), then the
 * dialect's own `checks`. Throws (node:assert) on the first action that breaks a rule.
 */
export function checkActions(actions: readonly Action[], checks: ActionChecks = {}): void {
  for (const a of actions) {
    switch (a.type) {
      case 'send':
        assert.ok(a.data instanceof Uint8Array, 'send data must be octets');
        checks.send?.(a);
        break;
      case 'close':
        assert.equal(typeof a.reason, 'string', 'close needs a reason');
        assert.ok(a.data === undefined || a.data instanceof Uint8Array, 'close data: octets');
        checks.close?.(a);
        break;
      case 'timer':
        assert.ok(Number.isFinite(a.at), `timer at ${a.at}`);
        break;
      case 'log':
        assert.notEqual(a.level, 'error', `error log: ${a.message}`);
        break;
      case 'starttls':
        assert.ok(a.trailing instanceof Uint8Array, 'starttls trailing must be octets');
        checks.starttls?.(a);
        break;
      case 'plaintext':
        assert.ok(checks.plaintext, 'unexpected plaintext hand-off');
        checks.plaintext(a);
        break;
      default:
        assert.fail(`unexpected action ${(a as Action).type}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The client role (issue 18): the same kit for client-side sessions, whose input is the
// SERVER's bytes and whose `send` actions write to the server.

/** A client context for tests: our name `client.example`, the server `server.example`. */
export function clientContext<O>(
  options: O,
  limits: Record<string, number> = {},
  extra: Partial<ClientContext<O>> = {},
): ClientContext<O> {
  return {
    options,
    limits,
    hostname: 'client.example',
    serverName: 'server.example',
    connectionId: 'c1',
    ...extra,
  };
}

/** The action that ends a client preamble: starttls, close or plaintext. */
export type ClientOutcome = ClientStartTlsAction | ClientCloseAction | ClientPlaintextAction;

const isOutcome = (a: ClientAction): a is ClientOutcome =>
  a.type === 'starttls' || a.type === 'close' || a.type === 'plaintext';

/** The first starttls, close or plaintext action, or undefined while the preamble goes on. */
export function clientOutcome(actions: readonly ClientAction[]): ClientOutcome | undefined {
  return actions.find(isOutcome);
}

/** Everything written to the SERVER: send data and a close's `data`, in order. */
export function toServer(actions: readonly ClientAction[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const a of actions) {
    if (a.type === 'send') parts.push(a.data);
    if (a.type === 'close' && a.data) parts.push(a.data);
  }
  return concat(parts);
}

/** What a client session did with a server script. */
export interface ClientFeed {
  /** The actions start() returned. */
  started: ClientAction[];
  /** Every action after start(), in order. */
  actions: ClientAction[];
  /** The first starttls, close or plaintext action (after start, or from it). */
  outcome: ClientOutcome | undefined;
  /** Everything written to the server, start() included, decoded with `decode` (latin1). */
  sent: string;
  /** Actions returned by receive() calls after the outcome (a session should return none). */
  after: ClientAction[];
}

/**
 * Start a client session at time 0 and feed it the server's `chunks`. Chunks after the outcome
 * are still fed (their actions go to `after`), so a test sees a session that keeps talking.
 */
export function feedClient(
  session: ClientDialectSession,
  chunks: readonly (string | Uint8Array)[],
  codec: { encode?: (s: string) => Uint8Array; decode?: (b: Uint8Array) => string } = {},
): ClientFeed {
  const encode = codec.encode ?? enc;
  const started = session.start(0);
  const actions: ClientAction[] = [];
  const after: ClientAction[] = [];
  let outcome = clientOutcome(started);
  for (const c of chunks) {
    const acts = session.receive(typeof c === 'string' ? encode(c) : c, 0);
    if (outcome !== undefined) after.push(...acts);
    else {
      actions.push(...acts);
      outcome = clientOutcome(acts);
    }
  }
  const sent = (codec.decode ?? dec)(toServer([...started, ...actions]));
  return { started, actions, outcome, sent, after };
}

/** What `runClientSession` saw. */
export interface ClientRun {
  /** How the preamble ended. A socket error or an end the session did not answer is a close
   * whose reason starts with "driver:". */
  outcome: ClientOutcome;
  /** Every action the session returned, start() included, in order. */
  actions: ClientAction[];
  /** Every octet written to the server (a close's `data` included). */
  sent: Uint8Array;
  /** Every octet received from the server. */
  received: Uint8Array;
}

/**
 * Run a client session over a connected (or connecting) stream to a real server, the way the
 * engine does: start(), then each read goes to receive(), timers are real timers on `now`'s
 * clock (Date.now), the server's end goes to eof(). On starttls or plaintext the driver lets go
 * of the socket (its listeners removed, paused) so the caller can run `tls.connect({ socket })`
 * on it; on close it writes `data` and ends the socket. Never rejects.
 */
export function runClientSession(
  session: ClientDialectSession,
  socket: Duplex,
  opts: { now?: () => number } = {},
): Promise<ClientRun> {
  const now = opts.now ?? Date.now;
  const actions: ClientAction[] = [];
  const sent: Uint8Array[] = [];
  const received: Uint8Array[] = [];
  return new Promise<ClientRun>((resolve) => {
    let done = false;
    let timeout: ReturnType<typeof setTimeout> | undefined;
    const finish = (outcome: ClientOutcome) => {
      done = true;
      clearTimeout(timeout);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', onError);
      socket.pause();
      if (outcome.type === 'close') {
        if (outcome.data) sent.push(outcome.data);
        // A reset after our end is no news: the outcome is decided.
        socket.on('error', () => {});
        if (!socket.destroyed) socket.end(outcome.data);
      }
      resolve({ outcome, actions, sent: concat(sent), received: concat(received) });
    };
    const apply = (acts: ClientAction[]) => {
      if (done) return;
      actions.push(...acts);
      for (const a of acts) {
        if (a.type === 'send') {
          sent.push(a.data);
          socket.write(a.data);
        } else if (a.type === 'timer') {
          clearTimeout(timeout);
          timeout = setTimeout(() => apply(session.timer(now())), Math.max(0, a.at - now()));
        } else if (isOutcome(a)) {
          finish(a);
          return;
        }
      }
    };
    const onData = (chunk: Buffer) => {
      const bytes = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength).slice();
      received.push(bytes);
      apply(session.receive(bytes, now()));
    };
    const onEnd = () => {
      apply(session.eof?.(now()) ?? []);
      if (!done) finish({ type: 'close', reason: 'driver: the server closed the connection' });
    };
    const onError = (err: Error) => {
      if (!done) finish({ type: 'close', reason: `driver: socket error: ${err.message}` });
    };
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('error', onError);
    apply(session.start(now()));
  });
}

/**
 * The chunks of a server script whose last octet ends the go-ahead, cut at `cuts` anywhere before
 * that octet, with `extra` in the same chunk as the last octet: a server (or a man in the middle)
 * that sends `extra` in the same read as its go-ahead. The client must close, never starttls.
 */
export function withTrailing(
  script: Uint8Array,
  extra: Uint8Array,
  cuts: readonly number[],
): Uint8Array[] {
  if (script.length === 0) return [extra];
  const last = script.length - 1;
  const chunks = splitAt(script.subarray(0, last), cuts).filter((c) => c.length > 0);
  chunks.push(concat([script.subarray(last), extra]));
  return chunks;
}

/**
 * The client contract's rules for every action: a known type, octets where octets are due
 * (`send` data, `toLocal` on every outcome, a close's `data`), a string reason, a finite timer,
 * no `error` log (an internal error), and at most one outcome (starttls, close or plaintext).
 * `plaintext` only when `allowPlaintext` (SMTP's `tls: may`). Throws (node:assert).
 */
export function checkClientActions(
  actions: readonly ClientAction[],
  opts: { allowPlaintext?: boolean } = {},
): void {
  let outcomes = 0;
  for (const a of actions) {
    switch (a.type) {
      case 'send':
        assert.ok(a.data instanceof Uint8Array, 'send data must be octets');
        break;
      case 'timer':
        assert.ok(Number.isFinite(a.at), `timer at ${a.at}`);
        break;
      case 'log':
        assert.notEqual(a.level, 'error', `error log: ${a.message}`);
        break;
      case 'close':
        assert.equal(typeof a.reason, 'string', 'close needs a reason');
        assert.ok(a.data === undefined || a.data instanceof Uint8Array, 'close data: octets');
        assert.ok(a.toLocal === undefined || a.toLocal instanceof Uint8Array, 'toLocal: octets');
        outcomes++;
        break;
      case 'starttls':
        assert.ok(a.toLocal instanceof Uint8Array, 'starttls toLocal must be octets');
        outcomes++;
        break;
      case 'plaintext':
        assert.ok(opts.allowPlaintext, 'unexpected plaintext fallback');
        assert.ok(a.toLocal instanceof Uint8Array, 'plaintext toLocal must be octets');
        assert.equal(typeof a.reason, 'string', 'plaintext needs a reason');
        outcomes++;
        break;
      default:
        assert.fail(`unexpected action ${(a as ClientAction).type}`);
    }
  }
  assert.ok(outcomes <= 1, `${outcomes} outcomes (starttls/close/plaintext) in one session`);
}
