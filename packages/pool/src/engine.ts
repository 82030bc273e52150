// The TLS engine (the "TLS Pool" role of the seed note) on node:tls. It takes a stream socket,
// runs the server side of the handshake, and returns the plaintext end of a socketpair plus a
// 128-bit control key. After that it alone relays bytes between TLS and the plaintext end.
// Embedded in the proxy by default; the same interface is served over fdpass by the daemon.
import { constants, createHash, timingSafeEqual, X509Certificate } from 'node:crypto';
import { writeSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { type OwnedFd, peekPending, socketFd, socketpair } from '@tlsproxy/fdpass';
import { type ClientIdentity, clientIdentity, identityFromCertificate } from './client-identity.js';
import { isResourceError, PoolError, type VerifyReason } from './errors.js';
import {
  type ContextOptions,
  type IdentityConfig,
  IdentityStore,
  TLS12_CIPHERS,
} from './identities.js';
import { randomKey } from './random.js';

export type ClientCertPolicy = 'none' | 'optional' | 'required';

export interface EngineOptions extends ContextOptions {
  /**
   * Certificates and keys: served by SNI on the server side, presented by name as client
   * certificates by connect(). At least one, unless `connectOnly`.
   */
  identities: IdentityConfig[];
  /**
   * An engine for the client role only (issue 18): identities may be empty (then connect()
   * presents no client certificate) and handshake() refuses with TLSPROXY_ERR_POOL_CONFIG.
   * Without it an empty identity list is a configuration error, as a server needs a certificate.
   */
  connectOnly?: boolean;
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
   * Resolve as soon as the server's side of a TLS 1.3 handshake is done (its Finished sent) when
   * no client certificate is asked for, instead of after the client's Finished: what was
   * negotiated can no longer change by then, and the backend takes the connection while the
   * client finishes. Nothing is relayed before the handshake completes; if it then fails (a bad
   * or missing client Finished, the deadline), the plaintext end is closed with nothing on it
   * and `onEnd` is called. A hint: an engine may resolve at the end of the handshake anyway
   * (the node:tls engine does; so does every TLS 1.2 handshake). A tlspool daemon passes it on to
   * its engine.
   */
  earlyHandoff?: boolean;
  /**
   * With `earlyHandoff`: settle `completed` as soon as the handshake has ended. Without it an
   * engine may hold that news back until it has something else to say (the native engine: up to
   * 50 ms), which saves a wake-up per connection but keeps the session's place under a cap of
   * handshakes at once (`maxHandshakes`) that much longer. Core asks for it while its listener
   * uses half its handshake places or more. A tlspool daemon passes it on to its engine.
   */
  promptCompletion?: boolean;
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
   * With `failure`: the session was handed out early (`earlyHandoff`) and its handshake then
   * failed — a client that refused our certificate, a bad Finished, the deadline. With `reason`
   * 'idle': the engine closed it for the idle timeout (the caller says so in its log; nothing
   * else sees that the session was quiet). Other ends have no reason.
   */
  onEnd?: (failure?: Error, reason?: SessionEndReason) => void;
}

/** Why the engine ended a session itself, where the caller would not know: its idle timeout. */
export type SessionEndReason = 'idle';

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
  /**
   * Present when the session was handed out early (`earlyHandoff`): resolves when the client's
   * Finished has come and the handshake is complete, rejects when it fails instead. Callers that
   * count handshakes in progress (the listener's `maxHandshakes`) count this one until then.
   */
  completed?: Promise<void>;
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

/** What connect() reports: the server's verified identity instead of a client's. */
export type ConnectInfo = ConnectResult['info'];

type Session = (
  | { role: 'server'; key: Buffer; tls: tls.TLSSocket; info: NegotiatedInfo }
  | { role: 'client'; key: Buffer; tls: tls.TLSSocket; info: ConnectInfo }
) & {
  /** Set by the 'close' control: the key is dead from then on, though the relay still drains. */
  closing?: true;
};

/** Protocol versions a connect request may ask for as its minimum. */
const MIN_VERSIONS: ReadonlySet<string> = new Set(['TLSv1.2', 'TLSv1.3']);
/** Client contexts kept (by CA, identity and minimum version): most clients use one or two. */
const CLIENT_CONTEXTS = 32;
/** Largest CA text a connect request may carry (a few hundred roots). */
export const MAX_CA_BYTES = 1024 * 1024;

// TLS alert record: content type 21, legacy version 3.3, length 2, fatal (2), unrecognized_name (112).
const ALERT_UNRECOGNIZED_NAME = Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70]);

const lookupId = (key: Buffer) => createHash('sha256').update(key).digest('hex');

export class TlsEngine implements TlsEngineApi {
  #identities: IdentityStore | undefined;
  #options: EngineOptions;
  /** Secure contexts for connect(), by request settings; emptied on reload. */
  readonly #clientContexts = new Map<string, tls.SecureContext>();
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
    this.#identities = storeFor(options);
  }

  /** The certificates served by SNI (throws TLSPROXY_ERR_POOL_CONFIG for a connect-only engine). */
  get identities(): IdentityStore {
    if (!this.#identities)
      throw new PoolError(
        'TLSPROXY_ERR_POOL_CONFIG',
        'this TLS engine has no identities (certificate and key): it can only connect',
      );
    return this.#identities;
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
    this.#identities = storeFor(options);
    this.#options = options;
    this.#clientContexts.clear();
  }

  serverNames(): string[] {
    return this.#identities?.names() ?? [];
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
    if (!this.#identities || this.#options.connectOnly === true) {
      socket.destroy();
      throw new PoolError(
        'TLSPROXY_ERR_POOL_CONFIG',
        'this TLS engine only connects (connectOnly): it serves no handshakes',
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

    let info: NegotiatedInfo;
    try {
      info = negotiated(t);
    } catch (err) {
      t.destroy();
      socket.destroy();
      throw resourceOr(err, 'TLSPROXY_ERR_POOL_HANDSHAKE', 'cannot relay the TLS session');
    }
    const { plaintext, key } = this.#establish(
      t,
      socket,
      { role: 'server', info },
      {
        onEnd: request.onEnd,
        onBytes: request.onBytes,
        idleTimeoutMs,
      },
    );
    return { plaintext, controlKey: key, info };
  }

  /**
   * A session whose handshake is done (either role): the socketpair, the control key, and the
   * relay between TLS and the plaintext end, which the caller gets back. Both sockets are
   * destroyed (and the error thrown) when a step fails.
   */
  #establish(
    t: tls.TLSSocket,
    socket: net.Socket,
    session: { role: 'server'; info: NegotiatedInfo } | { role: 'client'; info: ConnectInfo },
    options: {
      onEnd: ((failure?: undefined, reason?: SessionEndReason) => void) | undefined;
      onBytes: ((direction: 'in' | 'out', bytes: number) => void) | undefined;
      idleTimeoutMs: number;
    },
  ): { plaintext: OwnedFd; key: Buffer } {
    // Every step can still fail for want of descriptors or memory (socketpair is two
    // descriptors; wrapping one end registers it with the event loop). Then this connection
    // alone ends: both sockets destroyed, both socketpair ends closed, the caller told why.
    let pair: [OwnedFd, OwnedFd] | undefined;
    let plain: net.Socket | undefined;
    try {
      pair = socketpair();
      plain = pair[0].toSocket({ allowHalfOpen: true });
    } catch (err) {
      t.destroy();
      socket.destroy();
      plain?.destroy();
      if (pair) for (const end of pair) end.close();
      throw resourceOr(err, 'TLSPROXY_ERR_POOL_HANDSHAKE', 'cannot relay the TLS session');
    }
    const key = randomKey(16);
    const id = lookupId(key);
    this.#sessions.set(id, { ...session, key, tls: t } as Session);
    const { onEnd, onBytes } = options;
    relay(t, socket, plain, {
      onEnd: (reason) => {
        this.#sessions.delete(id);
        try {
          onEnd?.(undefined, reason);
        } catch {}
      },
      ...(onBytes ? { onBytes } : {}),
      idleTimeoutMs: options.idleTimeoutMs,
    });
    return { plaintext: pair[1], key };
  }

  /**
   * The client side (issue 18): a TLS client handshake on a connected socket whose plaintext
   * preamble is done. The server's certificate is always verified: chain against `ca` (or
   * Node's roots), name against `serverName` with tls.checkServerIdentity (DNS names and IP
   * addresses). The socket is owned from the call on: closed on every failure.
   */
  async connect(input: net.Socket | OwnedFd, request: ConnectRequest): Promise<ConnectResult> {
    let socket: net.Socket;
    try {
      socket = 'toSocket' in input ? input.toSocket({ allowHalfOpen: true }) : input;
    } catch (err) {
      throw resourceOr(err, 'TLSPROXY_ERR_POOL_HANDSHAKE', 'cannot take the connection');
    }
    socket.allowHalfOpen = true;
    const fail = (err: PoolError): never => {
      socket.destroy();
      throw err;
    };
    if (this.#closed || this.#sessions.size >= (this.#options.maxSessions ?? 100_000))
      fail(
        new PoolError(
          'TLSPROXY_ERR_POOL_HANDSHAKE',
          'TLS engine is closed or at its session limit',
        ),
      );
    const problem = connectRequestProblem(request);
    if (problem) fail(new PoolError('TLSPROXY_ERR_POOL_CONFIG', problem));
    // Bytes the caller's socket read and nobody consumed came from the server after its
    // go-ahead, before our ClientHello: a real server waits for the ClientHello, so this is
    // the response-injection class; refuse it by name rather than as a garbled handshake.
    if (socket.readableLength > 0)
      fail(
        new PoolError(
          'TLSPROXY_ERR_POOL_HANDSHAKE',
          `the server sent ${socket.readableLength} bytes before the TLS handshake (after its go-ahead)`,
        ),
      );
    const { serverName, alpn } = request;
    const idleTimeoutMs = request.idleTimeoutMs ?? this.#options.idleTimeoutMs ?? 0;
    let context: tls.SecureContext;
    try {
      context = this.#clientContext(request);
    } catch (err) {
      return fail(resourceOr(err, 'TLSPROXY_ERR_POOL_CONFIG', 'cannot set up the TLS client'));
    }
    // Set when the name check failed, so that failure is told apart from the chain's.
    let nameError: Error | undefined;
    let t: tls.TLSSocket;
    try {
      t = tls.connect({
        socket,
        secureContext: context,
        // No SNI for an IP address (RFC 6066 §3: "Literal IPv4 and IPv6 addresses are not
        // permitted"); the certificate is still checked against the address.
        // A trailing dot is not sent in SNI (RFC 6066 §3: "without a trailing dot").
        ...(net.isIP(serverName) ? {} : { servername: serverName.replace(/\.$/, '') }),
        ...(alpn && alpn.length > 0 ? { ALPNProtocols: alpn } : {}),
        // Verification is not optional: an unverified server is a failed handshake.
        rejectUnauthorized: true,
        checkServerIdentity: (_host, cert) => {
          const err = tls.checkServerIdentity(serverName, cert);
          if (err) nameError = err;
          return err;
        },
      });
    } catch (err) {
      return fail(resourceOr(err, 'TLSPROXY_ERR_POOL_HANDSHAKE', 'cannot start the TLS handshake'));
    }
    // A server that closes mid-handshake is reported as 'end' and then, on the next tick, as an
    // 'error' (tls.connect's own 'end' handler): by then connectDone has decided and let go.
    // An error with no listener would throw out of the event loop; the relay adds its own.
    t.on('error', () => {});
    const timeoutMs = Math.min(
      request.handshakeTimeoutMs ?? this.#options.handshakeTimeoutMs ?? 10_000,
      MAX_TIMER_MS,
    );
    let info: ConnectInfo;
    try {
      await connectDone(t, timeoutMs, () => nameError);
      if (this.#closed)
        throw new PoolError(
          'TLSPROXY_ERR_POOL_HANDSHAKE',
          'TLS engine closed during the handshake',
        );
      const x = t.getPeerX509Certificate();
      if (!x || !t.authorized)
        throw verifyError('other', 'the server presented no verified certificate');
      const { clientIdentity: _none, ...rest } = negotiated(t);
      info = { ...rest, serverName, serverIdentity: identityFromCertificate(x) };
    } catch (err) {
      t.destroy();
      socket.destroy();
      throw resourceOr(err, 'TLSPROXY_ERR_POOL_HANDSHAKE', 'TLS handshake failed');
    }
    const { plaintext, key } = this.#establish(
      t,
      socket,
      { role: 'client', info },
      {
        onEnd: request.onEnd,
        onBytes: undefined,
        idleTimeoutMs,
      },
    );
    return { plaintext, controlKey: key, info };
  }

  /** The client context for a request's trust settings and identity (cached). */
  #clientContext(request: ConnectRequest): tls.SecureContext {
    const creds =
      request.clientIdentity === undefined
        ? undefined
        : this.#identities?.named(request.clientIdentity);
    if (request.clientIdentity !== undefined && !creds)
      throw new PoolError(
        'TLSPROXY_ERR_POOL_CONFIG',
        `no identity named "${request.clientIdentity}" to present as the client certificate`,
      );
    const minVersion = request.minVersion ?? 'TLSv1.2';
    const ca = request.ca;
    const cacheKey = [
      ca === undefined ? 'roots' : createHash('sha256').update(ca).digest('hex'),
      creds?.identity.fingerprint256 ?? '-',
      minVersion,
    ].join(' ');
    const cached = this.#clientContexts.get(cacheKey);
    if (cached) return cached;
    if (ca !== undefined) checkCa(ca);
    const context = tls.createSecureContext({
      // Absent: Node's bundled roots (and NODE_EXTRA_CA_CERTS), as tls.connect uses.
      ...(ca !== undefined ? { ca } : {}),
      ...(creds ? { cert: creds.cert, key: creds.key } : {}),
      minVersion,
      // The same suite policy as the server side.
      ciphers: this.#options.ciphers ?? TLS12_CIPHERS,
      // A TLS 1.2 server's renegotiation is refused: node:tls checks the server's certificate
      // (chain and name) after the first handshake only, and a renegotiation could bring another.
      secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
    });
    if (this.#clientContexts.size >= CLIENT_CONTEXTS)
      this.#clientContexts.delete(this.#clientContexts.keys().next().value as string);
    this.#clientContexts.set(cacheKey, context);
    return context;
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
        const refuse = () => {
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
            new PoolError('TLSPROXY_ERR_POOL_SERVER_NAME_REFUSED', `server name "${name}" refused`),
          );
        };
        // RFC 6066 section 3: an address is no HostName; some clients send one anyway — as if
        // they had sent none (the default identity, no question, no name handed on).
        if (net.isIP(name)) return cb(null, this.identities.default.context);
        // Not a host name (RFC 6066 §3: a DNS name; spaces, CR/LF, UTF-8…): refused before it
        // reaches the backend's check, its hand-off info or a legacy server's PROXY header.
        if (!DNS_NAME.test(name)) return refuse();
        if (!request.checkServerName) return pick();
        Promise.resolve()
          .then(() => request.checkServerName!(hostName(name)))
          .then(
            (ok) => (ok === true ? pick() : refuse()),
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
    if (!s || !timingSafeEqual(s.key, k) || s.closing)
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
        if (s.role === 'client') return { ...s.info };
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
        if (s.role === 'client')
          throw new PoolError(
            'TLSPROXY_ERR_POOL_CONTROL',
            'renegotiate asks a client for its certificate: not for a session this engine connected',
          );
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
        s.closing = true;
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
    serverName:
      typeof servername === 'string' && !net.isIP(servername) ? hostName(servername) : null,
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

function storeFor(options: EngineOptions): IdentityStore | undefined {
  // IdentityStore refuses an empty list, which is what a server-side engine wants.
  return options.connectOnly === true && options.identities.length === 0
    ? undefined
    : new IdentityStore(options.identities, options);
}

function verifyError(reason: VerifyReason, detail: string, cause?: unknown): PoolError {
  return new PoolError(
    'TLSPROXY_ERR_POOL_VERIFY',
    `server certificate rejected (${reason}): ${detail}`,
    { cause, reason },
  );
}

// OpenSSL's X509_V_ERR_* names as Node reports them (err.code), by what they mean for the user.
const UNKNOWN_CA = [
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_UNTRUSTED',
];
const BAD_CERTIFICATE = [
  'UNABLE_TO_GET_CRL',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CRL_SIGNATURE_FAILURE',
  'CRL_NOT_YET_VALID',
  'CRL_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'ERROR_IN_CRL_LAST_UPDATE_FIELD',
  'ERROR_IN_CRL_NEXT_UPDATE_FIELD',
  'OUT_OF_MEM',
  'CERT_CHAIN_TOO_LONG',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_REJECTED',
];
const X509_REASONS: ReadonlyMap<string, VerifyReason> = new Map<string, VerifyReason>([
  ...UNKNOWN_CA.map((c) => [c, 'unknown-ca'] as const),
  ...BAD_CERTIFICATE.map((c) => [c, 'bad-certificate'] as const),
  ['CERT_HAS_EXPIRED', 'expired'],
  ['CERT_NOT_YET_VALID', 'not-yet-valid'],
  ['CERT_REVOKED', 'revoked'],
  ['HOSTNAME_MISMATCH', 'name-mismatch'],
  ['IP_ADDRESS_MISMATCH', 'name-mismatch'],
  ['ERR_TLS_CERT_ALTNAME_INVALID', 'name-mismatch'],
]);

/** Resolves once a client handshake is done and the server verified (tls.connect did both). */
function connectDone(
  t: tls.TLSSocket,
  timeoutMs: number,
  nameError: () => Error | undefined,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      done(
        new PoolError('TLSPROXY_ERR_POOL_TIMEOUT', `TLS handshake not done within ${timeoutMs} ms`),
      );
    }, timeoutMs);
    const done = (err?: Error) => {
      clearTimeout(timer);
      t.off('secureConnect', onSecure);
      t.off('error', onError);
      t.off('close', onClose);
      t.off('end', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onSecure = () => done();
    const onError = (err: Error) => {
      const code = (err as { code?: unknown }).code;
      const reason =
        err === nameError()
          ? 'name-mismatch'
          : typeof code === 'string'
            ? X509_REASONS.get(code)
            : undefined;
      if (reason) done(verifyError(reason, err.message, err));
      else
        done(
          new PoolError('TLSPROXY_ERR_POOL_HANDSHAKE', `TLS handshake failed: ${err.message}`, {
            cause: err,
          }),
        );
    };
    const onClose = () =>
      done(new PoolError('TLSPROXY_ERR_POOL_HANDSHAKE', 'server closed during the TLS handshake'));
    t.on('secureConnect', onSecure);
    t.on('error', onError);
    t.on('close', onClose);
    t.on('end', onClose);
  });
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

/**
 * Trusted CAs must be PEM certificates, at least one: Node would skip text it cannot read, and a
 * typo would then trust nothing (closed, but with a misleading "unknown CA" on every connect).
 */
export function checkCa(ca: string): void {
  const blocks = ca.match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0)
    throw new PoolError('TLSPROXY_ERR_POOL_CONFIG', 'ca holds no PEM certificate');
  blocks.forEach((b, i) => {
    try {
      new X509Certificate(b);
    } catch (err) {
      throw new PoolError(
        'TLSPROXY_ERR_POOL_CONFIG',
        `ca: certificate ${i + 1} does not parse (${(err as Error).message})`,
        { cause: err },
      );
    }
  });
}

/** An SNI name as handed on: without its trailing dot (RFC 6066 section 3). */
const hostName = (name: string): string => (name.endsWith('.') ? name.slice(0, -1) : name);

/** A DNS name as a certificate names it: labels of letters, digits, '-' and '_', one trailing dot at most. */
const DNS_NAME =
  /^(?=.{1,253}\.?$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/i;

/** What is wrong with a connect request (its types come from callers and the daemon's peers). */
export function connectRequestProblem(request: ConnectRequest): string | undefined {
  if (typeof request !== 'object' || request === null) return 'request must be an object';
  const { serverName, ca, clientIdentity, alpn, minVersion, handshakeTimeoutMs, idleTimeoutMs } =
    request;
  if (typeof serverName !== 'string' || !(net.isIP(serverName) || DNS_NAME.test(serverName)))
    return 'serverName must be a DNS name or an IP address';
  if (ca !== undefined && (typeof ca !== 'string' || ca.length > MAX_CA_BYTES))
    return `ca must be PEM text of at most ${MAX_CA_BYTES} bytes`;
  if (clientIdentity !== undefined && (typeof clientIdentity !== 'string' || clientIdentity === ''))
    return "clientIdentity must be the name of one of the engine's identities";
  if (
    alpn !== undefined &&
    !(isStringList(alpn) && alpn.every((p) => p.length > 0 && p.length < 256))
  )
    return 'alpn must be a list of protocol names';
  if (minVersion !== undefined && !(typeof minVersion === 'string' && MIN_VERSIONS.has(minVersion)))
    return 'minVersion must be TLSv1.2 or TLSv1.3';
  if (
    handshakeTimeoutMs !== undefined &&
    !(isTimeout(handshakeTimeoutMs) && handshakeTimeoutMs > 0)
  )
    return 'handshakeTimeoutMs must be a number of milliseconds > 0';
  if (idleTimeoutMs !== undefined && !isTimeout(idleTimeoutMs))
    return 'idleTimeoutMs must be a number of milliseconds ≥ 0';
  return undefined;
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
  onEnd: (reason?: SessionEndReason) => void;
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
  const end = (reason?: SessionEndReason) => {
    if (closed) return;
    closed = true;
    clearTimeout(idleTimer);
    clearInterval(probeTimer);
    t.destroy();
    raw.destroy();
    plain.destroy();
    onEnd(reason);
  };
  // For the sockets' events, which pass their own arguments.
  const finish = () => end();
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
      if (quiet >= ms) return end('idle');
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
