// The TLS engine (the "TLS Pool" role of the seed note) on node:tls. It takes a stream socket,
// runs the server side of the handshake, and returns the plaintext end of a socketpair plus a
// 128-bit control key. After that it alone relays bytes between TLS and the plaintext end.
// Embedded in the proxy by default; the same interface is served over fdpass by the daemon.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { writeSync } from 'node:fs';
import type net from 'node:net';
import tls from 'node:tls';
import { type OwnedFd, peekPending, socketFd, socketpair } from '@tlsproxy/fdpass';
import { type ClientIdentity, clientIdentity } from './client-identity.js';
import { isResourceError, PoolError } from './errors.js';
import { type ContextOptions, type IdentityConfig, IdentityStore } from './identities.js';

export type ClientCertPolicy = 'none' | 'optional' | 'required';

export interface EngineOptions extends ContextOptions {
  identities: IdentityConfig[];
  /** Default client-certificate policy; 'optional' and 'required' need `ca`. */
  clientCert?: ClientCertPolicy;
  /** Default ALPN protocols offered (server preference order). */
  alpn?: string[];
  /** Default handshake deadline; 10 s like nginx's ssl_handshake_timeout is 60 s, stunnel's 60 s — a proxy in front of many idle clients wants it shorter. */
  handshakeTimeoutMs?: number;
  /** Most live TLS sessions; beyond, handshakes are refused. */
  maxSessions?: number;
  /**
   * Default idle timeout of a relayed session: no application data either way for this long
   * closes both sides (and reports the end). 0 or absent: off, like nginx's proxy_timeout is
   * opt-in and stunnel's TIMEOUTidle is 12 h — many protocols (IMAP IDLE) sit quiet for long.
   */
  idleTimeoutMs?: number;
}

export interface HandshakeRequest {
  clientCert?: ClientCertPolicy;
  alpn?: string[];
  handshakeTimeoutMs?: number;
  /** Accept or refuse the SNI name before the handshake goes on (refused → unrecognized_name). */
  checkServerName?: (name: string) => boolean | Promise<boolean>;
  /** Idle timeout of this session once relayed (overrides EngineOptions.idleTimeoutMs; 0: off). */
  idleTimeoutMs?: number;
  /** For log lines. */
  connectionId?: string;
  /**
   * Called with the size of each chunk of application data relayed after the handshake: 'in' is
   * client to backend (decrypted), 'out' backend to client (before encryption). Embedded engine
   * only: a function does not cross the tlspool daemon's socket, so a daemon never calls it.
   */
  onBytes?: (direction: 'in' | 'out', bytes: number) => void;
  /**
   * Called once when a session that completed its handshake ends (either side closed, a reset,
   * the idle timeout, control 'close'), so the caller can forget its control key. Both engines:
   * the tlspool daemon sends 'session-end' to the channel the handshake came on, and
   * RemoteTlsEngine calls this for it — and for every session of a channel to the daemon that
   * is lost (their end can no longer be reported). It may come before handshake() resolves.
   */
  onEnd?: () => void;
}

export interface NegotiatedInfo {
  version: string;
  cipher: string;
  alpn: string | null;
  serverName: string | null;
  clientIdentity: ClientIdentity | null;
}

export interface HandshakeResult {
  /** The plaintext end for the backend (the engine keeps the other end). */
  plaintext: OwnedFd;
  /** 16 random bytes; present it to control() to act on this session. */
  controlKey: Buffer;
  info: NegotiatedInfo;
}

export type ControlOp = 'info' | 'exporter' | 'renegotiate' | 'close';

/**
 * The client role (issue 18): a TLS client handshake on a connected socket whose plaintext
 * preamble (up to the server's STARTTLS go-ahead) is done. The server's certificate is verified
 * (chain against `ca`, name against `serverName`), always: a failed verification rejects the promise with TLSPROXY_ERR_POOL_VERIFY and a reason.
 */
export interface ConnectRequest {
  /** SNI and the name the server's certificate must match (DNS name or IP address). */
  serverName: string;
  /** Trusted CAs as PEM text; absent: Node's bundled roots (tls.rootCertificates). */
  ca?: string;
  /**
   * Name of an identity the engine was configured with, presented as the client certificate.
   * Only a name crosses to the engine, so with the tlspool daemon the key never enters the
   * requesting process.
   */
  clientIdentity?: string;
  alpn?: string[];
  /** Lowest protocol version accepted; default TLSv1.2. */
  minVersion?: 'TLSv1.2' | 'TLSv1.3';
  handshakeTimeoutMs?: number;
  idleTimeoutMs?: number;
  connectionId?: string;
  onEnd?: () => void;
}

/** The server's verified identity (same shape as a client identity). */
export type ServerIdentity = ClientIdentity;

export interface ConnectResult {
  /** The plaintext end for the application (the engine keeps the other end and relays). */
  plaintext: OwnedFd;
  /** 16 random bytes; present it to control() to act on this session. */
  controlKey: Buffer;
  info: Omit<NegotiatedInfo, 'clientIdentity'> & { serverIdentity: ServerIdentity };
}

/** What the proxy needs from a TLS engine, in-process or in the tlspool daemon. */
export interface TlsEngineApi {
  handshake(socket: net.Socket | OwnedFd, request?: HandshakeRequest): Promise<HandshakeResult>;
  /** The client side (issue 18); engines without it refuse `role: client`. */
  connect?(socket: net.Socket | OwnedFd, request: ConnectRequest): Promise<ConnectResult>;
  control(key: Buffer | string, op: ControlOp, args?: Record<string, unknown>): Promise<unknown>;
  close(): Promise<void>;
  /** DNS names the engine has certificates for, when it knows them. */
  serverNames?(): string[];
  /** For an engine in another process: can it take a handshake now? Absent means always. */
  available?(): Promise<boolean>;
}

interface Session {
  key: Buffer;
  tls: tls.TLSSocket;
  info: NegotiatedInfo;
}

// TLS alert record: content type 21, legacy version 3.3, length 2, fatal (2), unrecognized_name (112).
const ALERT_UNRECOGNIZED_NAME = Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70]);

const lookupId = (key: Buffer) => createHash('sha256').update(key).digest('hex');

export class TlsEngine implements TlsEngineApi {
  identities: IdentityStore;
  #options: EngineOptions;
  // Sessions are found by a hash of the key, then the key itself is compared in constant time:
  // the map lookup leaks nothing useful about the key's bytes.
  readonly #sessions = new Map<string, Session>();
  #closed = false;

  constructor(options: EngineOptions) {
    this.#options = options;
    if ((options.clientCert ?? 'none') !== 'none' && !options.ca) {
      throw new PoolError(
        'TLSPROXY_ERR_POOL_CONFIG',
        `clientCert "${options.clientCert}" needs trusted CAs (ca)`,
      );
    }
    this.identities = new IdentityStore(options.identities, options);
  }

  /**
   * New certificates and defaults for handshakes from now on (certificate renewal without a
   * restart); sessions already established keep theirs. Throws, changing nothing, if the new
   * options are unusable.
   */
  reload(options: EngineOptions): void {
    if ((options.clientCert ?? 'none') !== 'none' && !options.ca) {
      throw new PoolError(
        'TLSPROXY_ERR_POOL_CONFIG',
        `clientCert "${options.clientCert}" needs trusted CAs (ca)`,
      );
    }
    const identities = new IdentityStore(options.identities, options);
    this.identities = identities;
    this.#options = options;
  }

  serverNames(): string[] {
    return this.identities.names();
  }

  get sessionCount(): number {
    return this.#sessions.size;
  }

  async handshake(
    input: net.Socket | OwnedFd,
    request: HandshakeRequest = {},
  ): Promise<HandshakeResult> {
    // A TLSSocket takes allowHalfOpen from the socket it wraps: keep it, so a client's
    // close_notify ends only the backend's read side and the backend can still answer.
    let socket: net.Socket;
    try {
      socket = 'toSocket' in input ? input.toSocket({ allowHalfOpen: true }) : input;
    } catch (err) {
      // wrapSocket closed the descriptor on its way out.
      throw resourceOr(err, 'TLSPROXY_ERR_POOL_HANDSHAKE', 'cannot take the connection');
    }
    socket.allowHalfOpen = true;
    if (this.#closed || this.#sessions.size >= (this.#options.maxSessions ?? 100_000)) {
      socket.destroy();
      throw new PoolError(
        'TLSPROXY_ERR_POOL_HANDSHAKE',
        'TLS engine is closed or at its session limit',
      );
    }
    const policy = request.clientCert ?? this.#options.clientCert ?? 'none';
    if (policy !== 'none' && !this.#options.ca) {
      socket.destroy();
      throw new PoolError(
        'TLSPROXY_ERR_POOL_CONFIG',
        `clientCert "${policy}" needs trusted CAs (ca)`,
      );
    }
    let rawFd = -1;
    try {
      rawFd = socketFd(socket);
    } catch {}
    let refusedName: string | undefined;
    const alpn = request.alpn ?? this.#options.alpn;
    const idleTimeoutMs = request.idleTimeoutMs ?? this.#options.idleTimeoutMs ?? 0;
    if (!isTimeout(idleTimeoutMs) || (alpn !== undefined && !isStringList(alpn))) {
      socket.destroy();
      throw new PoolError(
        'TLSPROXY_ERR_POOL_CONFIG',
        'idleTimeoutMs must be a number of milliseconds ≥ 0, alpn a list of strings',
      );
    }
    let t: tls.TLSSocket;
    try {
      t = this.#tlsSocket(
        socket,
        policy,
        alpn,
        request,
        () => rawFd,
        (name) => {
          refusedName = name;
        },
      );
    } catch (err) {
      socket.destroy();
      throw resourceOr(err, 'TLSPROXY_ERR_POOL_HANDSHAKE', 'cannot start the TLS handshake');
    }
    // node:tls counts client-initiated renegotiations (tls.CLIENT_RENEG_LIMIT per
    // CLIENT_RENEG_WINDOW) but only tls.Server acts on the count; a bare TLSSocket must do it.
    t.on('_tlsError', (err: Error) => t.destroy(err));
    const timeoutMs = Math.min(
      request.handshakeTimeoutMs ?? this.#options.handshakeTimeoutMs ?? 10_000,
      MAX_TIMER_MS,
    );
    try {
      await this.#handshakeDone(t, policy, timeoutMs, () => refusedName);
      // close() while this handshake ran: it must not leave a session behind it.
      if (this.#closed)
        throw new PoolError(
          'TLSPROXY_ERR_POOL_HANDSHAKE',
          'TLS engine closed during the handshake',
        );
    } catch (err) {
      t.destroy();
      socket.destroy();
      throw err;
    }

    // From here every step can still fail for want of descriptors or memory (socketpair is two
    // descriptors; wrapping one end registers it with the event loop). Then this connection
    // alone ends: both sockets destroyed, both socketpair ends closed, the caller told why.
    let pair: [OwnedFd, OwnedFd] | undefined;
    let plain: net.Socket | undefined;
    let info: NegotiatedInfo;
    try {
      info = negotiated(t);
      pair = socketpair();
      plain = pair[0].toSocket({ allowHalfOpen: true });
    } catch (err) {
      t.destroy();
      socket.destroy();
      plain?.destroy();
      if (pair) for (const end of pair) end.close();
      throw resourceOr(err, 'TLSPROXY_ERR_POOL_HANDSHAKE', 'cannot relay the TLS session');
    }
    const key = randomBytes(16);
    const id = lookupId(key);
    this.#sessions.set(id, { key, tls: t, info });
    relay(t, socket, plain, {
      onEnd: () => {
        this.#sessions.delete(id);
        try {
          request.onEnd?.();
        } catch {}
      },
      ...(request.onBytes ? { onBytes: request.onBytes } : {}),
      idleTimeoutMs,
    });
    return { plaintext: pair[1], controlKey: key, info };
  }

  #tlsSocket(
    socket: net.Socket,
    policy: ClientCertPolicy,
    alpn: string[] | undefined,
    request: HandshakeRequest,
    rawFd: () => number,
    refused: (name: string) => void,
  ): tls.TLSSocket {
    const t: tls.TLSSocket = new tls.TLSSocket(socket, {
      isServer: true,
      secureContext: this.identities.default.context,
      requestCert: policy !== 'none',
      rejectUnauthorized: policy === 'required',
      ...(alpn && alpn.length > 0 ? { ALPNProtocols: alpn } : {}),
      SNICallback: (name, cb) => {
        const pick = () => cb(null, this.identities.select(name).context);
        if (!request.checkServerName) return pick();
        Promise.resolve()
          .then(() => request.checkServerName!(name))
          .then(
            (ok) => {
              if (ok === true) return pick();
              refused(name);
              // No server bytes have been written yet, so a bare alert record is valid TLS and
              // tells the client why (node:tls would only reset the connection).
              // Only while the connection is still ours: after a timeout or a client close the
              // number may already belong to another descriptor.
              const fd = rawFd();
              if (fd >= 0 && !t.destroyed && !socket.destroyed) {
                try {
                  writeSync(fd, ALERT_UNRECOGNIZED_NAME);
                } catch {}
              }
              cb(
                new PoolError(
                  'TLSPROXY_ERR_POOL_SERVER_NAME_REFUSED',
                  `server name "${name}" refused`,
                ),
              );
            },
            (err) => cb(err instanceof Error ? err : new Error(String(err))),
          );
      },
    });
    return t;
  }

  /** Resolves once the handshake is done and the client certificate is acceptable. */
  #handshakeDone(
    t: tls.TLSSocket,
    policy: ClientCertPolicy,
    timeoutMs: number,
    refusedName: () => string | undefined,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new PoolError(
            'TLSPROXY_ERR_POOL_TIMEOUT',
            `TLS handshake not done within ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      const done = (err?: Error) => {
        clearTimeout(timer);
        t.off('secure', onSecure);
        t.off('error', onError);
        t.off('close', onClose);
        t.off('end', onClose);
        if (err) reject(err);
        else resolve();
      };
      const onSecure = () => {
        // A bare TLSSocket does not check the chain itself (tls.Server does): do it here.
        const verifyError = (
          t as unknown as { _handle?: { verifyError(): Error | null } }
        )._handle?.verifyError();
        const presented = t.getPeerX509Certificate() !== undefined;
        if (policy === 'required' && (!presented || verifyError)) {
          done(
            new PoolError(
              'TLSPROXY_ERR_POOL_CLIENT_CERT',
              `client certificate required: ${verifyError?.message ?? 'none sent'}`,
            ),
          );
        } else if (policy === 'optional' && presented && verifyError) {
          done(
            new PoolError(
              'TLSPROXY_ERR_POOL_CLIENT_CERT',
              `client certificate not trusted: ${verifyError.message}`,
            ),
          );
        } else done();
      };
      const onError = (err: Error) => {
        const refused = refusedName();
        if (refused)
          done(
            new PoolError(
              'TLSPROXY_ERR_POOL_SERVER_NAME_REFUSED',
              `server name "${refused}" refused`,
            ),
          );
        else
          done(
            new PoolError('TLSPROXY_ERR_POOL_HANDSHAKE', `TLS handshake failed: ${err.message}`, {
              cause: err,
            }),
          );
      };
      const onClose = () =>
        done(
          new PoolError('TLSPROXY_ERR_POOL_HANDSHAKE', 'client closed during the TLS handshake'),
        );
      t.on('secure', onSecure);
      t.on('error', onError);
      t.on('close', onClose);
      // The socket is half-open capable, so a client's FIN alone does not close it.
      t.on('end', onClose);
    });
  }

  #find(key: Buffer | string): Session {
    const k = typeof key === 'string' ? Buffer.from(key, 'hex') : key;
    const s = k.length === 16 ? this.#sessions.get(lookupId(k)) : undefined;
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
        return { ...s.info, clientIdentity: clientIdentity(s.tls) ?? s.info.clientIdentity };
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
        const ctx =
          typeof args.context === 'string' ? Buffer.from(args.context, 'base64') : undefined;
        return s.tls
          .exportKeyingMaterial(length as number, label, ctx as Buffer)
          .toString('base64');
      }
      case 'renegotiate': {
        if (s.info.version === 'TLSv1.3') {
          throw new PoolError(
            'TLSPROXY_ERR_POOL_TLS13_RENEGOTIATE',
            'TLS 1.3 has no renegotiation and node:tls has no post-handshake authentication: ask for client certificates at handshake time',
          );
        }
        if (!this.#options.ca)
          throw new PoolError('TLSPROXY_ERR_POOL_CONTROL', 'renegotiate needs trusted CAs (ca)');
        await new Promise<void>((resolve, reject) => {
          const ok = s.tls.renegotiate({ requestCert: true, rejectUnauthorized: false }, (err) =>
            err ? reject(err) : resolve(),
          );
          if (!ok)
            reject(new PoolError('TLSPROXY_ERR_POOL_CONTROL', 'renegotiation could not start'));
        });
        s.info.clientIdentity = clientIdentity(s.tls);
        return s.info.clientIdentity;
      }
      case 'close':
        s.tls.end();
        return null;
      default:
        throw new PoolError(
          'TLSPROXY_ERR_POOL_CONTROL',
          `unknown control operation "${String(op)}"`,
        );
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const s of this.#sessions.values()) s.tls.destroy();
    this.#sessions.clear();
  }
}

/** What was negotiated, read off a TLS socket that finished its handshake. */
function negotiated(t: tls.TLSSocket): NegotiatedInfo {
  const cipher = t.getCipher();
  const servername = (t as unknown as { servername?: unknown }).servername;
  return {
    version: t.getProtocol() ?? 'unknown',
    cipher: cipher.standardName ?? cipher.name,
    alpn: typeof t.alpnProtocol === 'string' ? t.alpnProtocol : null,
    serverName: typeof servername === 'string' ? servername : null,
    clientIdentity: clientIdentity(t),
  };
}

/** A PoolError for a failed step: TLSPROXY_ERR_POOL_RESOURCES when the system ran out of something. */
function resourceOr(err: unknown, code: PoolError['code'], what: string): PoolError {
  if (err instanceof PoolError) return err;
  const message = (err as Error)?.message ?? String(err);
  return isResourceError(err)
    ? new PoolError('TLSPROXY_ERR_POOL_RESOURCES', `${what}: out of resources (${message})`, {
        cause: err,
      })
    : new PoolError(code, `${what}: ${message}`, { cause: err });
}

// setTimeout's largest delay (2^31 - 1 ms, about 24.8 days); longer ones would fire at once.
const MAX_TIMER_MS = 2 ** 31 - 1;

/** A timeout in ms: a finite number ≥ 0 (0 is off). */
export function isTimeout(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0;
}

function isStringList(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}

/**
 * How often a relay that is paused by backpressure checks the paused side for a reset. A
 * paused socket is not read, so nothing else would notice a peer that went away: a client that
 * vanished while its backend was not reading would hold its descriptors until the backend
 * closed. Once a second is cheap (one getpeername or peek per paused side) and bounds the delay.
 */
const PROBE_MS = 1000;

interface RelayOptions {
  onEnd: () => void;
  onBytes?: (direction: 'in' | 'out', bytes: number) => void;
  /** 0: no idle timeout. */
  idleTimeoutMs: number;
}

/**
 * Whether a paused side's connection is gone (reset, or closed both ways), found out without
 * reading from it. TCP: getpeername fails with ENOTCONN once a reset moved the socket to CLOSE
 * (a FIN alone leaves CLOSE_WAIT: a half-close is not an end of the session). Other stream
 * sockets (the AF_UNIX plaintext end): a peek reports a pending error (ECONNRESET) when no
 * data is queued before it.
 */
function gone(s: net.Socket): boolean {
  if (s.destroyed) return true;
  const handle = (s as unknown as { _handle?: { getpeername?: (out: object) => number } })._handle;
  if (!handle) return true;
  if (typeof handle.getpeername === 'function') return handle.getpeername({}) < 0;
  try {
    peekPending(socketFd(s), 1);
    return false;
  } catch (err) {
    // Out of memory for the peek buffer is not the peer's doing.
    return !isResourceError(err);
  }
}

/**
 * Move bytes both ways until either side is done; each side's end becomes the other's end.
 * `raw` is the socket under the TLS one (destroyed with it, so its descriptor is closed too).
 */
function relay(t: tls.TLSSocket, raw: net.Socket, plain: net.Socket, options: RelayOptions): void {
  const { onEnd, onBytes, idleTimeoutMs } = options;
  let closed = false;
  let idleTimer: NodeJS.Timeout | undefined;
  let probeTimer: NodeJS.Timeout | undefined;
  let last = performance.now();
  const finish = () => {
    if (closed) return;
    closed = true;
    clearTimeout(idleTimer);
    clearInterval(probeTimer);
    t.destroy();
    raw.destroy();
    plain.destroy();
    onEnd();
  };
  t.pipe(plain);
  plain.pipe(t);
  // Extra 'data' listeners only observe: pipe() keeps flow control. A 'drain' is traffic too
  // (a slow reader taking what was queued for it).
  const touch = () => {
    last = performance.now();
  };
  t.on('data', (d: Buffer) => {
    touch();
    onBytes?.('in', d.length);
  });
  plain.on('data', (d: Buffer) => {
    touch();
    onBytes?.('out', d.length);
  });
  t.on('drain', touch);
  plain.on('drain', touch);
  t.on('error', finish);
  plain.on('error', finish);
  t.on('close', finish);
  plain.on('close', finish);
  raw.on('close', finish);
  raw.on('error', finish);

  if (idleTimeoutMs > 0) {
    const ms = Math.min(idleTimeoutMs, MAX_TIMER_MS);
    // One timer per session, re-armed for the rest of the period when traffic came meanwhile
    // (cheaper than resetting it at every chunk).
    const check = () => {
      const quiet = performance.now() - last;
      if (quiet >= ms) return finish();
      idleTimer = setTimeout(check, Math.max(1, ms - quiet));
      idleTimer.unref();
    };
    idleTimer = setTimeout(check, ms);
    idleTimer.unref();
  }

  // While pipe() holds a side paused (the other side cannot take more), that side is not read,
  // so a reset on it is not seen: look at it from time to time until both flow again.
  const paused = () => t.readableFlowing === false || plain.readableFlowing === false;
  const probe = () => {
    if (closed) return;
    if (!paused()) {
      clearInterval(probeTimer);
      probeTimer = undefined;
      return;
    }
    if (
      (t.readableFlowing === false && gone(raw)) ||
      (plain.readableFlowing === false && gone(plain))
    )
      finish();
  };
  const onPause = () => {
    if (closed || probeTimer) return;
    probeTimer = setInterval(probe, PROBE_MS);
    probeTimer.unref();
  };
  t.on('pause', onPause);
  plain.on('pause', onPause);
}
