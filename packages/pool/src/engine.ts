// The TLS engine (the "TLS Pool" role of the seed note) on node:tls. It takes a stream socket,
// runs the server side of the handshake, and returns the plaintext end of a socketpair plus a
// 128-bit control key. After that it alone relays bytes between TLS and the plaintext end.
// Embedded in the proxy by default; the same interface is served over fdpass by the daemon.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { writeSync } from 'node:fs';
import type net from 'node:net';
import tls from 'node:tls';
import { type OwnedFd, socketFd, socketpair } from '@tlsproxy/fdpass';
import { type ClientIdentity, clientIdentity } from './client-identity.js';
import { PoolError } from './errors.js';
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
}

export interface HandshakeRequest {
  clientCert?: ClientCertPolicy;
  alpn?: string[];
  handshakeTimeoutMs?: number;
  /** Accept or refuse the SNI name before the handshake goes on (refused → unrecognized_name). */
  checkServerName?: (name: string) => boolean | Promise<boolean>;
  /** For log lines. */
  connectionId?: string;
  /**
   * Called with the size of each chunk of application data relayed after the handshake: 'in' is
   * client to backend (decrypted), 'out' backend to client (before encryption). Embedded engine
   * only: a function does not cross the tlspool daemon's socket, so a daemon never calls it.
   */
  onBytes?: (direction: 'in' | 'out', bytes: number) => void;
  /**
   * Called once when a session that completed its handshake ends (either side closed), so the
   * caller can forget its control key. Embedded engine only, like onBytes.
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

/** What the proxy needs from a TLS engine, in-process or in the tlspool daemon. */
export interface TlsEngineApi {
  handshake(socket: net.Socket | OwnedFd, request?: HandshakeRequest): Promise<HandshakeResult>;
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
    const socket = 'toSocket' in input ? input.toSocket({ allowHalfOpen: true }) : input;
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
    const t = new tls.TLSSocket(socket, {
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
              refusedName = name;
              // No server bytes have been written yet, so a bare alert record is valid TLS and
              // tells the client why (node:tls would only reset the connection).
              // Only while the connection is still ours: after a timeout or a client close the
              // number may already belong to another descriptor.
              if (rawFd >= 0 && !t.destroyed && !socket.destroyed) {
                try {
                  writeSync(rawFd, ALERT_UNRECOGNIZED_NAME);
                } catch {}
              }
              cb(
                new PoolError(
                  'TLSPROXY_ERR_POOL_SERVER_NAME_REFUSED',
                  `server name "${name}" refused`,
                ),
              );
            },
            (err) => cb(err as Error),
          );
      },
    });
    // node:tls counts client-initiated renegotiations (tls.CLIENT_RENEG_LIMIT per
    // CLIENT_RENEG_WINDOW) but only tls.Server acts on the count; a bare TLSSocket must do it.
    t.on('_tlsError', (err: Error) => t.destroy(err));
    const timeoutMs = request.handshakeTimeoutMs ?? this.#options.handshakeTimeoutMs ?? 10_000;
    try {
      await new Promise<void>((resolve, reject) => {
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
          if (refusedName)
            done(
              new PoolError(
                'TLSPROXY_ERR_POOL_SERVER_NAME_REFUSED',
                `server name "${refusedName}" refused`,
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
    } catch (err) {
      t.destroy();
      socket.destroy();
      throw err;
    }

    const cipher = t.getCipher();
    const info: NegotiatedInfo = {
      version: t.getProtocol() ?? 'unknown',
      cipher: cipher.standardName ?? cipher.name,
      alpn: typeof t.alpnProtocol === 'string' ? t.alpnProtocol : null,
      serverName:
        typeof (t as unknown as { servername?: unknown }).servername === 'string'
          ? (t as unknown as { servername: string }).servername
          : null,
      clientIdentity: clientIdentity(t),
    };
    const [mine, theirs] = socketpair();
    const plain = mine.toSocket({ allowHalfOpen: true });
    const key = randomBytes(16);
    const id = lookupId(key);
    this.#sessions.set(id, { key, tls: t, info });
    relay(
      t,
      plain,
      () => {
        this.#sessions.delete(id);
        request.onEnd?.();
      },
      request.onBytes,
    );
    return { plaintext: theirs, controlKey: key, info };
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

/** Move bytes both ways until either side is done; each side's end becomes the other's end. */
function relay(
  t: tls.TLSSocket,
  plain: net.Socket,
  onClose: () => void,
  onBytes?: (direction: 'in' | 'out', bytes: number) => void,
): void {
  let closed = false;
  const finish = () => {
    if (closed) return;
    closed = true;
    t.destroy();
    plain.destroy();
    onClose();
  };
  t.pipe(plain);
  plain.pipe(t);
  if (onBytes) {
    // Extra 'data' listeners only observe: pipe() keeps flow control.
    t.on('data', (d: Buffer) => onBytes('in', d.length));
    plain.on('data', (d: Buffer) => onBytes('out', d.length));
  }
  t.on('error', finish);
  plain.on('error', finish);
  t.on('close', finish);
  plain.on('close', finish);
}
