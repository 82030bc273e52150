// The TlsEngineApi on the native engine: JS keeps the bookkeeping (control keys, promises,
// the SNI question to the backend), C does the handshake and every byte after it on its own
// threads (src/native/loop.c). Errors are PoolErrors with the node:tls engine's codes.
import { createHash, randomBytes, timingSafeEqual, X509Certificate } from 'node:crypto';
import type net from 'node:net';
import { availableParallelism } from 'node:os';
import { detachSocket, OwnedFd } from '@tlsproxy/fdpass';
import {
  type ClientCertPolicy,
  type ClientIdentity,
  type ControlOp,
  certificateNames,
  type EngineOptions,
  type HandshakeRequest,
  type HandshakeResult,
  isResourceError,
  type NegotiatedInfo,
  PoolError,
  identityFromCertificate as poolIdentity,
  TLS12_CIPHERS,
  type TlsEngineApi,
} from '@tlsproxy/pool';
import { NativeEngineError } from './errors.js';
import { binding } from './loader.js';
import type {
  EngineHandle,
  NativeBinding,
  NativeEvent,
  SessionHandle,
  StoreHandle,
} from './native.js';

/** The same suites as the node:tls engine (@tlsproxy/pool's TLS12_CIPHERS: Mozilla "intermediate" + TLS 1.3). */
export const DEFAULT_CIPHERS = TLS12_CIPHERS;

export interface NativeEngineOptions extends EngineOptions {
  /** Event-loop threads; default one per core. */
  threads?: number;
}

interface Pending {
  id: number;
  handle: SessionHandle;
  request: HandshakeRequest;
  resolve: (r: HandshakeResult) => void;
  reject: (err: Error) => void;
  /** Set when checkServerName threw: the handshake's failure reports this instead. */
  sniError?: Error;
}

interface Session {
  id: number;
  key: Buffer;
  lookup: string;
  handle: SessionHandle;
  request: HandshakeRequest;
  info: NegotiatedInfo;
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

export class NativeTlsEngine implements TlsEngineApi {
  readonly #b: NativeBinding;
  readonly #engine: EngineHandle;
  #store!: StoreHandle;
  /** Which certificate serves which name (read-only view; reload() replaces it). */
  identities!: NativeIdentities;
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
    const threads = options.threads ?? availableParallelism();
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
    if (options.identities.length === 0)
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
      return { cert: c.cert.toString(), key: c.key.toString(), names, fingerprint256 };
    });
    const defaultIndex = Math.max(
      options.identities.findIndex((c) => c.default),
      0,
    );
    const all = (options.ciphers ?? DEFAULT_CIPHERS).split(':').filter(Boolean);
    const tls13 = all.filter((c) => c.startsWith('TLS_'));
    let store: StoreHandle;
    try {
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
    this.identities = new NativeIdentities(
      ids.map((i) => ({ names: i.names, fingerprint256: i.fingerprint256 })),
      defaultIndex,
    );
    this.#options = options;
  }

  serverNames(): string[] {
    return this.identities.names();
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
      this.#pending.set(id, { id, handle, request, resolve, reject });
      this.#updateRef();
    });
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
        const key = randomBytes(16);
        const s: Session = {
          id: e.id,
          key,
          lookup: lookupId(key),
          handle: p.handle,
          request: p.request,
          info,
        };
        this.#sessions.set(e.id, s);
        this.#byKey.set(s.lookup, s);
        p.resolve({ plaintext, controlKey: key, info });
        return;
      }
      case 'failed': {
        const p = this.#pending.get(e.id);
        if (!p) return;
        this.#pending.delete(e.id);
        p.reject(
          p.sniError ??
            new PoolError(
              e.code as ConstructorParameters<typeof PoolError>[0],
              e.message ?? 'TLS handshake failed',
            ),
        );
        return;
      }
      case 'sni': {
        const p = this.#pending.get(e.id);
        if (!p) return;
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
      case 'bytes':
      case 'ended': {
        const s = this.#sessions.get(e.id);
        if (!s) return;
        if (e.type === 'ended') this.#forget(s);
        // Counters arrive in batches (at once after a quiet time, then at most every 500 ms, and
        // at the end), not per record: a JS call per record is what this engine exists to avoid.
        if (e.bytesIn > 0) s.request.onBytes?.('in', e.bytesIn);
        if (e.bytesOut > 0) s.request.onBytes?.('out', e.bytesOut);
        if (e.type === 'ended') s.request.onEnd?.();
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
    this.#byKey.delete(s.lookup);
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
    for (const s of sessions) s.request.onEnd?.();
  }
}
