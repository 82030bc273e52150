// The TlsEngineApi on the native engine: JS keeps the bookkeeping (control keys, promises,
// the SNI question to the backend), C does the handshake and every byte after it on its own
// threads (src/native/loop.c). Errors are PoolErrors with the node:tls engine's codes.
import { createHash, timingSafeEqual, X509Certificate } from 'node:crypto';
import net from 'node:net';
import { availableParallelism } from 'node:os';
import tls from 'node:tls';
import { detachSocket, OwnedFd } from '@tlsproxy/fdpass';
import {
  type ClientCertPolicy,
  type ClientIdentity,
  type ConnectInfo,
  type ConnectRequest,
  type ConnectResult,
  type ControlOp,
  certificateNames,
  checkCa,
  connectRequestProblem,
  type EngineOptions,
  type HandshakeRequest,
  type HandshakeResult,
  isResourceError,
  type NegotiatedInfo,
  PoolError,
  identityFromCertificate as poolIdentity,
  randomKey,
  TLS12_CIPHERS,
  type TlsEngineApi,
  VERIFY_REASONS,
  type VerifyReason,
} from '@tlsproxy/pool';
import { NativeEngineError } from './errors.js';
import { binding } from './loader.js';
import type {
  ClientContextHandle,
  EngineHandle,
  NativeBinding,
  NativeEvent,
  SessionHandle,
  StoreHandle,
} from './native.js';

/** The same suites as the node:tls engine (@tlsproxy/pool's TLS12_CIPHERS: Mozilla "intermediate" + TLS 1.3). */
export const DEFAULT_CIPHERS = TLS12_CIPHERS;

/**
 * The default number of event-loop threads: cores − 1, at least 1. The JS thread is busy too (it
 * runs every preamble and hand-off), and a loop thread that has to share its core with it pays in
 * context switches: measured with `npm run bench` on 2 cores, 2 loop threads cost more CPU per
 * connection than 1 (docs/benchmarks.md).
 */
export function defaultThreads(cores = availableParallelism()): number {
  return Math.max(1, cores - 1);
}

export interface NativeEngineOptions extends EngineOptions {
  /**
   * Event-loop threads; default {@link defaultThreads}: one per core but the one the JS thread
   * needs (preamble, dialects, hand-offs), at least one.
   */
  threads?: number;
}

type Pending = {
  id: number;
  handle: SessionHandle;
  reject: (err: Error) => void;
  /** Set when checkServerName threw: the handshake's failure reports this instead. */
  sniError?: Error;
} & (
  | { role: 'server'; request: HandshakeRequest; resolve: (r: HandshakeResult) => void }
  | { role: 'client'; request: ConnectRequest; resolve: (r: ConnectResult) => void }
);

type Session = {
  id: number;
  key: Buffer;
  lookup: string;
  handle: SessionHandle;
  onEnd: HandshakeRequest['onEnd'];
  onBytes: HandshakeRequest['onBytes'];
  /** Handed out early: settles `HandshakeResult.completed` when the handshake ends one way or
   * the other. */
  completing?: { resolve(): void; reject(err: Error): void };
} & ({ role: 'server'; info: NegotiatedInfo } | { role: 'client'; info: ConnectInfo });

/** A configured identity with what the client role needs to present it. */
interface Credentials {
  names: string[];
  cert: string;
  key: string;
  fingerprint256: string;
}

const POLICY: ReadonlyMap<ClientCertPolicy, 0 | 1 | 2> = new Map([
  ['none', 0],
  ['optional', 1],
  ['required', 2],
]);

// setTimeout's ceiling, as pool caps its deadlines: longer means "practically never" anyway.
const MAX_TIMER_MS = 2 ** 31 - 1;

function timeoutOf(v: unknown, what: string, min: number): number {
  if (typeof v !== 'number' || Number.isNaN(v) || v < 0)
    throw new PoolError('TLSPROXY_ERR_POOL_CONFIG', `${what} must be a number of milliseconds ≥ 0`);
  return Math.min(Math.max(v, min), MAX_TIMER_MS);
}

const lookupId = (key: Buffer) => createHash('sha256').update(key).digest('hex');

/** ALPN protocol list in wire format (RFC 7301 §3.1). */
function alpnWire(list: string[] | undefined): Buffer | null {
  if (!list || list.length === 0) return null;
  const parts: Buffer[] = [];
  for (const p of list) {
    const b = Buffer.from(p, 'latin1');
    if (b.length < 1 || b.length > 255)
      throw new PoolError('TLSPROXY_ERR_POOL_CONFIG', `bad ALPN protocol name "${p}"`);
    parts.push(Buffer.from([b.length]), b);
  }
  return Buffer.concat(parts);
}

/** The verified client certificate as @tlsproxy/pool's clientIdentity() describes it. */
export function identityFromCertificate(der: Buffer): ClientIdentity {
  return poolIdentity(new X509Certificate(der));
}

function pemText(v: string | Buffer | Array<string | Buffer>): string {
  return Array.isArray(v) ? v.map((x) => x.toString()).join('\n') : v.toString();
}

/** One configured certificate, as the engine selects it (no node:tls SecureContext here). */
export interface NativeIdentity {
  names: string[];
  fingerprint256: string;
}

/**
 * The selection rules of pool's IdentityStore, for callers that ask which identity serves a name
 * (the C side applies the same rules in the ClientHello callback, src/native/ctx.c).
 */
export class NativeIdentities {
  readonly #exact = new Map<string, NativeIdentity>();
  readonly #wild = new Map<string, NativeIdentity>();
  readonly all: NativeIdentity[];
  readonly default: NativeIdentity;

  constructor(all: NativeIdentity[], defaultIndex: number) {
    this.all = all;
    this.default = all[defaultIndex] ?? all[0]!;
    for (const id of all) {
      for (const n of id.names) {
        if (n.startsWith('*.')) {
          if (!this.#wild.has(n.slice(2))) this.#wild.set(n.slice(2), id);
        } else if (!this.#exact.has(n)) this.#exact.set(n, id);
      }
    }
  }

  /** The identity serving `name`, or undefined when only the default would. */
  match(name: string): NativeIdentity | undefined {
    const n = name.toLowerCase().replace(/\.$/, '');
    const exact = this.#exact.get(n);
    if (exact) return exact;
    const dot = n.indexOf('.');
    return dot > 0 ? this.#wild.get(n.slice(dot + 1)) : undefined;
  }

  select(name: string | null | undefined): NativeIdentity {
    return (name ? this.match(name) : undefined) ?? this.default;
  }

  names(): string[] {
    return this.all.flatMap((i) => i.names);
  }
}

/** Client contexts kept (by CA, identity and minimum version), as pool keeps: most use one or two. */
const CLIENT_CONTEXTS = 32;
// What a connect request may hold and which CA texts are usable: pool's own checks
// (connectRequestProblem, checkCa), so both engines refuse the same requests in the same words.

/** Node's bundled roots as one PEM text, for a request without `ca` (built once). */
let rootsPem: string | undefined;
const roots = (): string => {
  rootsPem ??= tls.rootCertificates.join('\n');
  return rootsPem;
};

export class NativeTlsEngine implements TlsEngineApi {
  readonly #b: NativeBinding;
  readonly #engine: EngineHandle;
  /** null for a connect-only engine (no identities). */
  #store: StoreHandle | null = null;
  #identities: NativeIdentities | null = null;
  #creds: Credentials[] = [];
  /** Client contexts for connect(), by request settings; emptied on reload. */
  readonly #clientContexts = new Map<string, ClientContextHandle>();
  #options!: NativeEngineOptions;
  #nextId = 1;
  #nextReq = 1;
  #closed = false;
  #refd = false;
  readonly #pending = new Map<number, Pending>();
  readonly #sessions = new Map<number, Session>();
  // Sessions are found by a hash of the key, then the key itself is compared in constant time.
  readonly #byKey = new Map<string, Session>();
  readonly #controls = new Map<
    number,
    { resolve: (v: unknown) => void; reject: (e: Error) => void }
  >();

  constructor(options: NativeEngineOptions) {
    this.#b = binding();
    this.#load(options);
    const threads = options.threads ?? defaultThreads();
    this.#engine = this.#b.engineCreate(threads, (events) => this.#onEvents(events));
    this.#b.engineRef(this.#engine, false);
  }

  /** Certificates and defaults for handshakes from now on; live sessions keep theirs. */
  reload(options: NativeEngineOptions): void {
    this.#load(options);
  }

  #load(options: NativeEngineOptions): void {
    if ((options.clientCert ?? 'none') !== 'none' && !options.ca) {
      throw new PoolError(
        'TLSPROXY_ERR_POOL_CONFIG',
        `clientCert "${options.clientCert}" needs trusted CAs (ca)`,
      );
    }
    const connectOnly = options.connectOnly === true;
    if (options.identities.length === 0 && !connectOnly)
      throw new PoolError(
        'TLSPROXY_ERR_POOL_CONFIG',
        'at least one identity (certificate and key) is needed',
      );
    const ids = options.identities.map((c, i) => {
      let names: string[];
      try {
        names = (c.names ?? certificateNames(c.cert)).map((n) => n.toLowerCase());
      } catch (err) {
        throw new PoolError(
          'TLSPROXY_ERR_POOL_CONFIG',
          `identity ${i + 1}: ${(err as Error).message}`,
          { cause: err },
        );
      }
      let fingerprint256: string;
      try {
        fingerprint256 = new X509Certificate(c.cert).fingerprint256;
      } catch (err) {
        throw new PoolError(
          'TLSPROXY_ERR_POOL_CONFIG',
          `identity ${i + 1}: ${(err as Error).message}`,
          { cause: err },
        );
      }
      return { cert: pemText(c.cert), key: pemText(c.key), names, fingerprint256 };
    });
    const defaultIndex = Math.max(
      options.identities.findIndex((c) => c.default),
      0,
    );
    const all = (options.ciphers ?? DEFAULT_CIPHERS).split(':').filter(Boolean);
    const tls13 = all.filter((c) => c.startsWith('TLS_'));
    let store: StoreHandle | null = null;
    try {
      if (ids.length > 0)
        store = this.#b.storeCreate(ids, {
          defaultIndex,
          minVersion: options.minVersion === 'TLSv1.3' ? 0x0304 : 0x0303,
          ca: options.ca ? pemText(options.ca) : null,
          ciphers: all.filter((c) => !c.startsWith('TLS_')).join(':') || 'DEFAULT',
          ciphersuites: tls13.length > 0 ? tls13.join(':') : null,
        });
    } catch (err) {
      throw new PoolError('TLSPROXY_ERR_POOL_CONFIG', (err as Error).message, { cause: err });
    }
    this.#store = store;
    this.#identities =
      ids.length > 0
        ? new NativeIdentities(
            ids.map((i) => ({ names: i.names, fingerprint256: i.fingerprint256 })),
            defaultIndex,
          )
        : null;
    this.#creds = ids;
    this.#options = options;
    this.#clientContexts.clear();
  }

  /**
   * Which certificate serves which name (read-only view; reload() replaces it). Throws
   * TLSPROXY_ERR_POOL_CONFIG for a connect-only engine, as pool's does.
   */
  get identities(): NativeIdentities {
    if (!this.#identities)
      throw new PoolError(
        'TLSPROXY_ERR_POOL_CONFIG',
        'this TLS engine has no identities (certificate and key): it can only connect',
      );
    return this.#identities;
  }

  serverNames(): string[] {
    return this.#identities?.names() ?? [];
  }

  /** Established sessions. */
  get sessionCount(): number {
    return this.#sessions.size;
  }

  get maxSessions(): number {
    return this.#options.maxSessions ?? 100_000;
  }

  async handshake(
    input: net.Socket | OwnedFd,
    request: HandshakeRequest = {},
  ): Promise<HandshakeResult> {
    let owned: OwnedFd;
    if (input instanceof OwnedFd) owned = input;
    else {
      let d: ReturnType<typeof detachSocket>;
      try {
        d = detachSocket(input);
      } catch (err) {
        input.destroy();
        // Running out of descriptors or memory ends this one connection, as in the node engine.
        throw new PoolError(
          isResourceError(err) ? 'TLSPROXY_ERR_POOL_RESOURCES' : 'TLSPROXY_ERR_POOL_HANDSHAKE',
          `cannot take the connection: ${(err as Error).message}`,
          { cause: err },
        );
      }
      owned = d.fd;
      if (d.buffered.length > 0) {
        // Bytes Node already read are not TLS this engine has seen; refusing beats guessing.
        owned.close();
        throw new PoolError(
          'TLSPROXY_ERR_POOL_HANDSHAKE',
          'the socket had already read bytes; hand it over paused (pauseOnConnect) or as an fd',
        );
      }
    }
    if (this.#closed || this.#pending.size + this.#sessions.size >= this.maxSessions) {
      owned.close();
      throw new PoolError(
        'TLSPROXY_ERR_POOL_HANDSHAKE',
        'TLS engine is closed or at its session limit',
      );
    }
    if (!this.#store || this.#options.connectOnly === true) {
      owned.close();
      throw new PoolError(
        'TLSPROXY_ERR_POOL_CONFIG',
        'this TLS engine only connects (connectOnly): it serves no handshakes',
      );
    }
    const policy = request.clientCert ?? this.#options.clientCert ?? 'none';
    const code = POLICY.get(policy);
    if (code === undefined || (policy !== 'none' && !this.#options.ca)) {
      owned.close();
      throw new PoolError(
        'TLSPROXY_ERR_POOL_CONFIG',
        `clientCert "${policy}" needs trusted CAs (ca)`,
      );
    }
    let handle: SessionHandle | null;
    const id = this.#nextId++;
    try {
      const alpn = request.alpn ?? this.#options.alpn;
      if (alpn !== undefined && !(Array.isArray(alpn) && alpn.every((a) => typeof a === 'string')))
        throw new PoolError('TLSPROXY_ERR_POOL_CONFIG', 'alpn must be a list of strings');
      handle = this.#b.submit(
        this.#engine,
        this.#store,
        owned.fd,
        id,
        code,
        alpnWire(alpn),
        timeoutOf(
          request.handshakeTimeoutMs ?? this.#options.handshakeTimeoutMs ?? 10_000,
          'handshakeTimeoutMs',
          1,
        ),
        timeoutOf(request.idleTimeoutMs ?? this.#options.idleTimeoutMs ?? 0, 'idleTimeoutMs', 0),
        typeof request.checkServerName === 'function',
        typeof request.onBytes === 'function',
        request.earlyHandoff === true,
        request.promptCompletion === true,
      );
    } catch (err) {
      owned.close();
      throw err;
    }
    if (handle === null) {
      owned.close();
      throw new NativeEngineError('TLSPROXY_ERR_NATIVE_BUSY', 'native TLS engine queue is full');
    }
    // The descriptor is C's from here on.
    owned.take();
    return new Promise<HandshakeResult>((resolve, reject) => {
      this.#pending.set(id, { id, handle, role: 'server', request, resolve, reject });
      this.#updateRef();
    });
  }

  /**
   * The client side (issue 18): a TLS client handshake on a connected socket whose plaintext
   * preamble is done, run on the engine's threads like handshake(). The server's certificate is
   * always verified — chain against `ca` (or Node's bundled roots), name against `serverName`
   * (SSL_set1_host for DNS names, the iPAddress SANs for an address) — and failures reject
   * with pool's codes and VerifyReason. The socket is owned from the call on: closed on every
   * failure. After the handshake the relay is the server side's (it does not care which side
   * the SSL is).
   */
  async connect(input: net.Socket | OwnedFd, request: ConnectRequest): Promise<ConnectResult> {
    let owned: OwnedFd;
    let early = 0;
    if (input instanceof OwnedFd) owned = input;
    else {
      let d: ReturnType<typeof detachSocket>;
      try {
        d = detachSocket(input);
      } catch (err) {
        input.destroy();
        throw new PoolError(
          isResourceError(err) ? 'TLSPROXY_ERR_POOL_RESOURCES' : 'TLSPROXY_ERR_POOL_HANDSHAKE',
          `cannot take the connection: ${(err as Error).message}`,
          { cause: err },
        );
      }
      owned = d.fd;
      early = d.buffered.length;
    }
    const fail = (err: PoolError): never => {
      owned.close();
      throw err;
    };
    if (this.#closed || this.#pending.size + this.#sessions.size >= this.maxSessions)
      fail(
        new PoolError(
          'TLSPROXY_ERR_POOL_HANDSHAKE',
          'TLS engine is closed or at its session limit',
        ),
      );
    const problem = connectRequestProblem(request);
    if (problem) fail(new PoolError('TLSPROXY_ERR_POOL_CONFIG', problem));
    // Bytes the caller's socket read before our ClientHello came from the server after its
    // go-ahead: a real server waits for the ClientHello, so this is the response-injection
    // class; refused by name rather than as a garbled handshake (as pool does).
    if (early > 0)
      fail(
        new PoolError(
          'TLSPROXY_ERR_POOL_HANDSHAKE',
          `the server sent ${early} bytes before the TLS handshake (after its go-ahead)`,
        ),
      );
    let context: ClientContextHandle;
    try {
      context = this.#clientContext(request);
    } catch (err) {
      return fail(
        err instanceof PoolError
          ? err
          : new PoolError(
              'TLSPROXY_ERR_POOL_CONFIG',
              `cannot set up the TLS client: ${String(err)}`,
              {
                cause: err,
              },
            ),
      );
    }
    const { serverName } = request;
    const isIp = net.isIP(serverName) !== 0;
    let handle: SessionHandle | null;
    const id = this.#nextId++;
    try {
      handle = this.#b.connect(
        this.#engine,
        context,
        owned.fd,
        id,
        alpnWire(request.alpn),
        // A trailing dot is neither sent in SNI (RFC 6066 §3) nor part of the name checked.
        isIp ? serverName : serverName.replace(/\.$/, ''),
        isIp,
        timeoutOf(
          request.handshakeTimeoutMs ?? this.#options.handshakeTimeoutMs ?? 10_000,
          'handshakeTimeoutMs',
          1,
        ),
        timeoutOf(request.idleTimeoutMs ?? this.#options.idleTimeoutMs ?? 0, 'idleTimeoutMs', 0),
      );
    } catch (err) {
      return fail(
        err instanceof PoolError
          ? err
          : new PoolError(
              'TLSPROXY_ERR_POOL_HANDSHAKE',
              `cannot start the TLS handshake: ${(err as Error).message}`,
              {
                cause: err,
              },
            ),
      );
    }
    if (handle === null) {
      owned.close();
      throw new NativeEngineError('TLSPROXY_ERR_NATIVE_BUSY', 'native TLS engine queue is full');
    }
    owned.take();
    return new Promise<ConnectResult>((resolve, reject) => {
      this.#pending.set(id, { id, handle, role: 'client', request, resolve, reject });
      this.#updateRef();
    });
  }

  /** The client context for a request's trust settings and identity (cached, as pool's). */
  #clientContext(request: ConnectRequest): ClientContextHandle {
    let creds: Credentials | undefined;
    if (request.clientIdentity !== undefined) {
      // Exactly a configured name, any case (a wildcard name only as written): pool's named().
      const n = request.clientIdentity.toLowerCase();
      creds = this.#creds.find((c) => c.names.includes(n));
      if (!creds)
        throw new PoolError(
          'TLSPROXY_ERR_POOL_CONFIG',
          `no identity named "${request.clientIdentity}" to present as the client certificate`,
        );
    }
    const minVersion = request.minVersion ?? 'TLSv1.2';
    const ca = request.ca;
    const cacheKey = [
      ca === undefined ? 'roots' : createHash('sha256').update(ca).digest('hex'),
      creds?.fingerprint256 ?? '-',
      minVersion,
    ].join(' ');
    const cached = this.#clientContexts.get(cacheKey);
    if (cached) return cached;
    if (ca !== undefined) checkCa(ca);
    const all = (this.#options.ciphers ?? DEFAULT_CIPHERS).split(':').filter(Boolean);
    const tls13 = all.filter((c) => c.startsWith('TLS_'));
    let context: ClientContextHandle;
    try {
      context = this.#b.clientContextCreate({
        // Absent: Node's bundled roots, as tls.connect uses (NODE_EXTRA_CA_CERTS is not added).
        ca: ca ?? roots(),
        cert: creds?.cert ?? null,
        key: creds?.key ?? null,
        // The same suite policy as the server side.
        ciphers: all.filter((c) => !c.startsWith('TLS_')).join(':') || 'DEFAULT',
        ciphersuites: tls13.length > 0 ? tls13.join(':') : null,
        minVersion: minVersion === 'TLSv1.3' ? 0x0304 : 0x0303,
      });
    } catch (err) {
      throw new PoolError('TLSPROXY_ERR_POOL_CONFIG', (err as Error).message, { cause: err });
    }
    if (this.#clientContexts.size >= CLIENT_CONTEXTS)
      this.#clientContexts.delete(this.#clientContexts.keys().next().value as string);
    this.#clientContexts.set(cacheKey, context);
    return context;
  }

  #updateRef(): void {
    const want = !this.#closed && this.#pending.size + this.#sessions.size > 0;
    if (want !== this.#refd) {
      this.#refd = want;
      this.#b.engineRef(this.#engine, want);
    }
  }

  #onEvents(events: NativeEvent[]): void {
    for (const e of events) {
      try {
        this.#onEvent(e);
      } catch (err) {
        // A throwing onEnd/onBytes must not stop the rest of the batch (fds in it).
        process.emitWarning(`@tlsproxy/engine-native: event handler threw: ${String(err)}`);
      }
    }
    this.#updateRef();
  }

  #onEvent(e: NativeEvent): void {
    switch (e.type) {
      case 'established': {
        const plaintext = new OwnedFd(e.fd);
        const p = this.#pending.get(e.id);
        if (!p) {
          plaintext.close();
          return;
        }
        this.#pending.delete(e.id);
        const key = randomKey(16);
        const base = {
          id: e.id,
          key,
          lookup: lookupId(key),
          handle: p.handle,
          onEnd: p.request.onEnd,
        };
        if (p.role === 'client') {
          // The server's identity, from the certificate OpenSSL verified (chain and name). If
          // node's parser ever refused what OpenSSL accepted, the session is not handed out.
          let serverIdentity: ClientIdentity;
          try {
            if (!e.verified || !e.peerCertificate) throw new Error('no verified certificate');
            serverIdentity = identityFromCertificate(e.peerCertificate);
          } catch (err) {
            plaintext.close();
            this.#b.closeSession(this.#engine, p.handle);
            p.reject(
              new PoolError(
                'TLSPROXY_ERR_POOL_VERIFY',
                `server certificate rejected (other): ${(err as Error).message}`,
                { cause: err, reason: 'other' },
              ),
            );
            return;
          }
          const info: ConnectInfo = {
            version: e.version,
            cipher: e.cipher,
            alpn: e.alpn,
            serverName: p.request.serverName,
            serverIdentity,
          };
          const s: Session = { ...base, role: 'client', info, onBytes: undefined };
          this.#sessions.set(e.id, s);
          this.#byKey.set(s.lookup, s);
          p.resolve({ plaintext, controlKey: key, info });
          return;
        }
        const info: NegotiatedInfo = {
          version: e.version,
          cipher: e.cipher,
          alpn: e.alpn,
          serverName: e.serverName,
          clientIdentity: null,
        };
        if (e.verified && e.peerCertificate) {
          // OpenSSL verified it, so node's X509Certificate parses it; if it ever did not, the
          // session goes on without an identity rather than with a lost descriptor.
          try {
            info.clientIdentity = identityFromCertificate(e.peerCertificate);
          } catch {}
        }
        const s: Session = { ...base, role: 'server', info, onBytes: p.request.onBytes };
        this.#sessions.set(e.id, s);
        this.#byKey.set(s.lookup, s);
        if (e.early) {
          // The client's Finished is still to come: `completed` says when it did (or did not).
          const completed = new Promise<void>((resolve, reject) => {
            s.completing = { resolve, reject };
          });
          completed.catch(() => {});
          p.resolve({ plaintext, controlKey: key, info, completed });
        } else p.resolve({ plaintext, controlKey: key, info });
        return;
      }
      case 'failed': {
        const p = this.#pending.get(e.id);
        if (!p) return;
        this.#pending.delete(e.id);
        const reason =
          e.reason !== null && VERIFY_REASONS.has(e.reason as VerifyReason)
            ? (e.reason as VerifyReason)
            : undefined;
        p.reject(
          p.sniError ??
            new PoolError(
              e.code as ConstructorParameters<typeof PoolError>[0],
              e.message ?? 'TLS handshake failed',
              reason ? { reason } : undefined,
            ),
        );
        return;
      }
      case 'sni': {
        const p = this.#pending.get(e.id);
        if (!p) return;
        if (p.role !== 'server') return;
        const check = p.request.checkServerName;
        const answer = (ok: boolean) => {
          if (!this.#closed && this.#pending.has(e.id))
            this.#b.sniAnswer(this.#engine, p.handle, ok);
        };
        Promise.resolve()
          .then(() => check!(e.name))
          .then(
            (ok) => answer(ok === true),
            (err: unknown) => {
              p.sniError = new PoolError(
                'TLSPROXY_ERR_POOL_HANDSHAKE',
                `server name check failed: ${(err as Error)?.message ?? String(err)}`,
                { cause: err },
              );
              answer(false);
            },
          );
        return;
      }
      case 'completed': {
        const s = this.#sessions.get(e.id);
        s?.completing?.resolve();
        if (s) s.completing = undefined;
        return;
      }
      case 'bytes':
      case 'ended': {
        const s = this.#sessions.get(e.id);
        if (!s) return;
        if (e.type === 'ended') {
          this.#forget(s);
          // Handed out early and ended before its handshake was complete.
          s.completing?.reject(
            new PoolError(
              'TLSPROXY_ERR_POOL_HANDSHAKE',
              e.failure ?? 'session ended before its TLS handshake completed',
            ),
          );
          s.completing = undefined;
        }
        // Counters arrive in batches (at once after a quiet time, then at most every 500 ms, and
        // at the end), not per record: a JS call per record is what this engine exists to avoid.
        if (e.bytesIn > 0) s.onBytes?.('in', e.bytesIn);
        if (e.bytesOut > 0) s.onBytes?.('out', e.bytesOut);
        if (e.type !== 'ended') return;
        // Handed off early (earlyHandoff), the handshake failed at the client's Finished.
        if (e.failure) s.onEnd?.(new PoolError('TLSPROXY_ERR_POOL_HANDSHAKE', e.failure));
        // The loop's word for its idle timeout (loop.c's conn_end "idle"); its other words
        // (closed, client reset, …) are no news to the caller.
        else s.onEnd?.(undefined, e.reason === 'idle' ? 'idle' : undefined);
        return;
      }
      case 'renegotiated': {
        const c = this.#controls.get(e.req);
        if (!c) return;
        this.#controls.delete(e.req);
        if (e.code) {
          c.reject(
            new PoolError(
              e.code as ConstructorParameters<typeof PoolError>[0],
              e.message ?? 'renegotiation failed',
            ),
          );
          return;
        }
        let id: ClientIdentity | null = null;
        if (e.verified && e.peerCertificate) {
          try {
            id = identityFromCertificate(e.peerCertificate);
          } catch {}
        }
        c.resolve(id);
        return;
      }
      case 'exported': {
        const c = this.#controls.get(e.req);
        if (!c) return;
        this.#controls.delete(e.req);
        if (e.data) c.resolve(e.data.toString('base64'));
        else
          c.reject(
            new PoolError(
              (e.code ?? 'TLSPROXY_ERR_POOL_CONTROL') as ConstructorParameters<typeof PoolError>[0],
              e.message ?? 'exporter failed',
            ),
          );
        return;
      }
    }
  }

  #forget(s: Session): void {
    this.#sessions.delete(s.id);
    if (this.#byKey.get(s.lookup) === s) this.#byKey.delete(s.lookup);
  }

  #find(key: Buffer | string): Session {
    const k = typeof key === 'string' ? Buffer.from(key, 'hex') : key;
    const s = k.length === 16 ? this.#byKey.get(lookupId(k)) : undefined;
    if (!s || !timingSafeEqual(s.key, k))
      throw new PoolError('TLSPROXY_ERR_POOL_UNKNOWN_KEY', 'unknown control key');
    return s;
  }

  async control(
    key: Buffer | string,
    op: ControlOp,
    args: Record<string, unknown> = {},
  ): Promise<unknown> {
    const s = this.#find(key);
    switch (op) {
      case 'info':
        return { ...s.info };
      case 'exporter': {
        const label = args.label;
        const length = args.length;
        if (
          typeof label !== 'string' ||
          !Number.isInteger(length) ||
          (length as number) < 1 ||
          (length as number) > 1024
        ) {
          throw new PoolError(
            'TLSPROXY_ERR_POOL_CONTROL',
            'exporter needs a label and a length of 1..1024',
          );
        }
        const ctx = typeof args.context === 'string' ? Buffer.from(args.context, 'base64') : null;
        const req = this.#nextReq++;
        return new Promise((resolve, reject) => {
          if (!this.#b.exporter(this.#engine, s.handle, req, label, ctx, length as number)) {
            reject(new PoolError('TLSPROXY_ERR_POOL_CONTROL', 'native TLS engine is busy'));
            return;
          }
          this.#controls.set(req, { resolve, reject });
        });
      }
      case 'renegotiate': {
        if (s.role === 'client')
          throw new PoolError(
            'TLSPROXY_ERR_POOL_CONTROL',
            'renegotiate asks a client for its certificate: not for a session this engine connected',
          );
        if (s.info.version === 'TLSv1.3') {
          throw new PoolError(
            'TLSPROXY_ERR_POOL_TLS13_RENEGOTIATE',
            'TLS 1.3 has no renegotiation: ask for client certificates at handshake time',
          );
        }
        if (!this.#options.ca)
          throw new PoolError('TLSPROXY_ERR_POOL_CONTROL', 'renegotiate needs trusted CAs (ca)');
        const req = this.#nextReq++;
        const id = await new Promise<ClientIdentity | null>((resolve, reject) => {
          if (!this.#b.renegotiate(this.#engine, s.handle, req)) {
            reject(new PoolError('TLSPROXY_ERR_POOL_CONTROL', 'native TLS engine is busy'));
            return;
          }
          this.#controls.set(req, {
            resolve: (v) => resolve(v as ClientIdentity | null),
            reject,
          });
        });
        s.info.clientIdentity = id;
        return id;
      }
      case 'close':
        if (!this.#b.closeSession(this.#engine, s.handle))
          throw new PoolError('TLSPROXY_ERR_POOL_CONTROL', 'native TLS engine is busy');
        // The key dies now, not when the loop thread reports the end (the client can see the
        // close first); the session stays counted until then.
        this.#byKey.delete(s.lookup);
        return null;
      default:
        throw new PoolError(
          'TLSPROXY_ERR_POOL_CONTROL',
          `unknown control operation "${String(op)}"`,
        );
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Joins the loop threads, which close every connection; events already on their way are
    // still delivered (and their descriptors closed, as nobody waits for them now).
    this.#b.engineClose(this.#engine);
    const err = new PoolError('TLSPROXY_ERR_POOL_HANDSHAKE', 'TLS engine closed');
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
    for (const c of this.#controls.values()) c.reject(err);
    this.#controls.clear();
    const sessions = [...this.#sessions.values()];
    this.#sessions.clear();
    this.#byKey.clear();
    for (const s of sessions) {
      s.completing?.reject(err);
      s.onEnd?.();
    }
  }
}
