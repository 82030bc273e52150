// connectStartTls (issue 18, item 3): client-side STARTTLS for a Node application without a
// listener. Theory of operation:
//
//   1. TCP connect to host:port.
//   2. The dialect's client session (sans-I/O, `Dialect.client`) speaks the preamble: the
//      server's bytes go to receive(), `send` actions are written, `timer` actions become one
//      timer, `log` actions go to options.log. Its outcome decides:
//        close      → the socket is ended (with the dialect's polite `data`), and the promise
//                     rejects with TLSPROXY_ERR_CLIENT_REFUSED carrying `reason` and `toLocal`;
//        plaintext  → only with allowPlaintext: the TCP socket itself is returned, unencrypted
//                     (encrypted: false); otherwise TLSPROXY_ERR_CLIENT_PLAINTEXT;
//        starttls   → reading stops at once; the socket's descriptor goes to the TLS engine's
//                     connect() (server verified: chain + name), embedded or a tlspool daemon.
//   3. The caller gets the plaintext end of the engine's socketpair as a net.Socket, with the
//      dialect's `toLocal` (e.g. its own greeting) delivered first, and what was
//      negotiated, including the server's verified identity.
//
// Bytes the server sent after its go-ahead in the same read are the dialect's to refuse (it
// returns close, not starttls). Bytes that arrived in a later read before our ClientHello went
// out are refused here (TLSPROXY_ERR_CLIENT_REFUSED): a real server waits for the ClientHello.
import net from 'node:net';
import { hostname as osHostname } from 'node:os';
import {
  type ClientAction,
  type ClientDialectSession,
  type Dialect,
  loadDialect,
  resolveLimits,
  resolveOptions,
} from '@tlsproxy/dialect-kit';
import { detachSocket, type OwnedFd, peekPending } from '@tlsproxy/fdpass';
import {
  type ConnectInfo,
  type ConnectRequest,
  type IdentityConfig,
  TlsEngine,
  type TlsEngineApi,
} from '@tlsproxy/pool';
import { dropAfterTls } from './after-tls.js';
import { ClientError } from './errors.js';

export interface ConnectStartTlsOptions {
  /** A dialect object, or a name/path for the kit's loadDialect ('imap', './my-dialect.js'). */
  dialect: Dialect | string;
  host: string;
  port: number;
  /** The name the server's certificate must carry, and SNI; default `host`. */
  serverName?: string;
  /** Trusted CAs (PEM); absent: Node's bundled roots (of the daemon, with a remote engine). */
  ca?: string | Buffer;
  /**
   * The client certificate: the NAME of an identity the engine holds (with a RemoteTlsEngine the
   * key stays in the tlspool daemon), or a certificate and key for an embedded engine made for
   * this call.
   */
  clientIdentity?: string | Pick<IdentityConfig, 'cert' | 'key'>;
  /**
   * The TLS engine (anything with connect(): a TlsEngine, a RemoteTlsEngine to a tlspool
   * daemon). Absent: an embedded node:tls engine shared by such calls.
   */
  engine?: TlsEngineApi;
  /** The dialect's client options (checked against its schema). */
  options?: Record<string, unknown>;
  /** The dialect's client limits (checked against its declarations). */
  limits?: Record<string, number>;
  /** Deadline for the TCP connection and the preamble up to the go-ahead; default 30 000 ms. */
  timeoutMs?: number;
  /** Deadline for the TLS handshake; default the engine's (10 s). */
  handshakeTimeoutMs?: number;
  /** Idle timeout of the TLS session once up (0/absent: none). */
  idleTimeoutMs?: number;
  alpn?: string[];
  minVersion?: 'TLSv1.2' | 'TLSv1.3';
  /** Accept the dialect's opt-in plaintext fallback (never silent: `encrypted` is false). */
  allowPlaintext?: boolean;
  /** Our own name for SMTP `EHLO` / XMPP `from`; default the machine's. */
  hostname?: string;
  /** For the dialect's context and the engine's logs. */
  connectionId?: string;
  /** The dialect's log lines. */
  log?: (level: 'debug' | 'info' | 'warn' | 'error', message: string) => void;
  /** Called once when the TLS session ends (either side, idle timeout, control 'close'). */
  onEnd?: () => void;
}

export interface StartTlsResult {
  encrypted: true;
  /** The plaintext side: write to send through TLS, read what the server sent. */
  socket: net.Socket;
  info: ConnectInfo;
  /** For engine.control() (info, exporter, close). */
  controlKey: Buffer;
  /** The engine that runs the session (the one given, or the embedded one). */
  engine: TlsEngineApi;
  /** What the dialect learnt before TLS (for logs), from its starttls action: unauthenticated
   * (anyone on the path could have written it) — never choose anything by it (e.g. a SASL
   * mechanism); ask again over TLS. */
  state: Record<string, unknown>;
}

export interface PlaintextResult {
  encrypted: false;
  /** The TCP connection itself, with the dialect's `toLocal` delivered first. */
  socket: net.Socket;
  info: null;
  /** Why the dialect went on without TLS. */
  reason: string;
}

export interface StartTlsFdResult extends Omit<StartTlsResult, 'socket'> {
  /** The plaintext end as a descriptor (e.g. for `new net.Socket({ fd })` or to pass on). */
  fd: OwnedFd;
  /** Bytes to deliver to the application before anything read from `fd`. */
  toLocal: Buffer;
}

let sharedEngine: TlsEngine | undefined;

/** The embedded engine for calls without an engine or a certificate of their own. */
function embeddedEngine(): TlsEngine {
  sharedEngine ??= new TlsEngine({ identities: [], connectOnly: true });
  return sharedEngine;
}

/**
 * Connect, speak the dialect's preamble, upgrade with a verified TLS handshake and return the
 * plaintext socket (see the theory of operation above). Rejects with a ClientError before TLS,
 * or with the engine's PoolError for the handshake (TLSPROXY_ERR_POOL_VERIFY and its `reason`).
 */
export async function connectStartTls(
  options: ConnectStartTlsOptions & { allowPlaintext: true },
): Promise<StartTlsResult | PlaintextResult>;
export async function connectStartTls(options: ConnectStartTlsOptions): Promise<StartTlsResult>;
export async function connectStartTls(
  options: ConnectStartTlsOptions,
): Promise<StartTlsResult | PlaintextResult> {
  const r = await run(options);
  if (!r.encrypted) return r;
  const { fd, toLocal, ...rest } = r;
  let socket: net.Socket;
  try {
    socket = fd.toSocket({ allowHalfOpen: true });
  } catch (err) {
    // toSocket closed the descriptor; the engine's relay sees its end go.
    throw new ClientError(
      'TLSPROXY_ERR_CLIENT_CONNECT',
      `cannot use the plaintext end: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  // Before the caller reads: what the dialect owes the application comes first.
  if (toLocal.length > 0) socket.unshift(toLocal);
  return { ...rest, socket };
}

/** connectStartTls with the plaintext end as a descriptor and `toLocal` as a separate prefix. */
export async function connectStartTlsFd(
  options: ConnectStartTlsOptions & { allowPlaintext: true },
): Promise<StartTlsFdResult | PlaintextResult>;
export async function connectStartTlsFd(options: ConnectStartTlsOptions): Promise<StartTlsFdResult>;
export async function connectStartTlsFd(
  options: ConnectStartTlsOptions,
): Promise<StartTlsFdResult | PlaintextResult> {
  return run(options);
}

async function run(options: ConnectStartTlsOptions): Promise<StartTlsFdResult | PlaintextResult> {
  const setup = await prepare(options);
  const timeoutMs = options.timeoutMs ?? 30_000;
  const socket = net.connect({ host: options.host, port: options.port });
  const outcome = await preamble(setup.session, socket, timeoutMs, options.log);
  if (outcome.type === 'plaintext') {
    if (options.allowPlaintext !== true) {
      socket.destroy();
      throw new ClientError(
        'TLSPROXY_ERR_CLIENT_PLAINTEXT',
        `the server would be used without TLS (${outcome.reason}); pass allowPlaintext: true to accept that`,
        { reason: outcome.reason },
      );
    }
    // A fresh socket on the same connection: the old one was paused to stop reading, and a
    // paused stream does not start flowing when the caller adds a 'data' listener.
    let fresh: net.Socket;
    try {
      const { fd, buffered } = detachSocket(socket);
      fresh = fd.toSocket({ allowHalfOpen: true });
      const first = Buffer.concat([outcome.toLocal, buffered]);
      if (first.length > 0) fresh.unshift(first);
    } catch (err) {
      socket.destroy();
      throw new ClientError(
        'TLSPROXY_ERR_CLIENT_CONNECT',
        `cannot take the connection: ${(err as Error).message}`,
        { cause: err },
      );
    }
    return { encrypted: false, socket: fresh, info: null, reason: outcome.reason };
  }
  // starttls: the socket is paused and no listener reads it. Whatever the dialect wrote must be
  // on the wire first (detaching destroys this socket object, and with it unsent writes).
  if (socket.writableLength > 0) {
    const flushed = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), timeoutMs);
      socket.once('drain', () => {
        clearTimeout(t);
        resolve(true);
      });
    });
    if (!flushed) {
      socket.destroy();
      throw new ClientError(
        'TLSPROXY_ERR_CLIENT_TIMEOUT',
        'the server did not take our last command',
      );
    }
  }
  // Take the descriptor; anything Node had already read past the go-ahead came in a later
  // read, before our ClientHello.
  let fd: OwnedFd;
  let buffered: Buffer;
  try {
    ({ fd, buffered } = detachSocket(socket));
  } catch (err) {
    socket.destroy();
    throw new ClientError(
      'TLSPROXY_ERR_CLIENT_CONNECT',
      `cannot take the connection: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  // Before our ClientHello a TLS server says nothing: what Node read, and what waits in the
  // kernel, was sent after the go-ahead in plaintext — by the server or someone on the path.
  let pending: Buffer | null;
  try {
    pending = peekPending(fd.fd, 64 * 1024);
  } catch (err) {
    fd.close();
    throw new ClientError(
      'TLSPROXY_ERR_CLIENT_CONNECT',
      `cannot check the connection after the go-ahead: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const injected = buffered.length + (pending?.length ?? 0);
  if (injected === 0 && pending?.length === 0) {
    fd.close();
    throw new ClientError(
      'TLSPROXY_ERR_CLIENT_REFUSED',
      'the server closed the connection after its go-ahead',
      { reason: 'server closed after the go-ahead' },
    );
  }
  if (injected > 0) {
    fd.close();
    throw new ClientError(
      'TLSPROXY_ERR_CLIENT_REFUSED',
      `the server sent ${injected} bytes after its go-ahead, before TLS started`,
      { reason: 'bytes after the go-ahead (response injection)' },
    );
  }
  const request: ConnectRequest = {
    serverName: setup.serverName,
    ...(setup.ca !== undefined ? { ca: setup.ca } : {}),
    ...(setup.identityName !== undefined ? { clientIdentity: setup.identityName } : {}),
    ...(options.alpn ? { alpn: options.alpn } : {}),
    ...(options.minVersion ? { minVersion: options.minVersion } : {}),
    ...(options.handshakeTimeoutMs !== undefined
      ? { handshakeTimeoutMs: options.handshakeTimeoutMs }
      : {}),
    ...(options.idleTimeoutMs !== undefined ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
    ...(options.connectionId !== undefined ? { connectionId: options.connectionId } : {}),
    ...(options.onEnd ? { onEnd: options.onEnd } : {}),
  };
  // The engine owns the descriptor from here: closed on every failure.
  const r = await setup.engine.connect!(fd, request);
  let plaintext = r.plaintext;
  let toLocal = Buffer.from(outcome.toLocal);
  if (setup.afterTls) {
    // The server's answer to the preamble inside TLS (CUPS re-answers OPTIONS *) is dropped;
    // whatever followed it comes right after `toLocal`.
    const dropped = await dropAfterTls(plaintext, setup.afterTls, timeoutMs);
    plaintext = dropped.fd;
    toLocal = Buffer.concat([toLocal, dropped.rest]);
  }
  return {
    encrypted: true,
    fd: plaintext,
    toLocal,
    info: r.info,
    controlKey: r.controlKey,
    engine: setup.engine,
    state: outcome.state,
  };
}

interface Setup {
  session: ClientDialectSession;
  engine: TlsEngineApi;
  serverName: string;
  ca: string | undefined;
  identityName: string | undefined;
  afterTls: ((data: Uint8Array) => number | null) | undefined;
}

/** Everything checked before a connection is made, so a bad call opens nothing. */
async function prepare(options: ConnectStartTlsOptions): Promise<Setup> {
  if (typeof options !== 'object' || options === null)
    throw new ClientError('TLSPROXY_ERR_CLIENT_CONFIG', 'options must be an object');
  const { host, port } = options;
  if (typeof host !== 'string' || host.length === 0)
    throw new ClientError('TLSPROXY_ERR_CLIENT_CONFIG', 'host must be a host name or address');
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw new ClientError('TLSPROXY_ERR_CLIENT_CONFIG', 'port must be 1..65535');
  const timeoutMs = options.timeoutMs ?? 30_000;
  if (typeof timeoutMs !== 'number' || !(timeoutMs > 0) || timeoutMs > 2 ** 31 - 1)
    throw new ClientError(
      'TLSPROXY_ERR_CLIENT_CONFIG',
      'timeoutMs must be a number of milliseconds > 0',
    );
  let dialect: Dialect;
  try {
    dialect = await loadDialect(options.dialect);
  } catch (err) {
    throw new ClientError('TLSPROXY_ERR_CLIENT_CONFIG', (err as Error).message, { cause: err });
  }
  const client = dialect.client;
  if (!client)
    throw new ClientError(
      'TLSPROXY_ERR_CLIENT_CONFIG',
      `dialect "${dialect.name}" has no client side (Dialect.client)`,
    );
  let dialectOptions: Record<string, unknown>;
  let limits: Readonly<Record<string, number>>;
  try {
    // The kit's validators, on the client side's own schema.
    const schema = { name: dialect.name, options: client.options, limits: client.limits };
    dialectOptions = resolveOptions(schema as unknown as Dialect, options.options ?? {});
    limits = resolveLimits(schema, options.limits ?? {});
  } catch (err) {
    throw new ClientError('TLSPROXY_ERR_CLIENT_CONFIG', (err as Error).message, { cause: err });
  }
  const serverName = options.serverName ?? host;
  const ca = options.ca === undefined ? undefined : options.ca.toString();
  let engine: TlsEngineApi;
  let identityName: string | undefined;
  const id = options.clientIdentity;
  if (id !== undefined && typeof id !== 'string') {
    if (options.engine)
      throw new ClientError(
        'TLSPROXY_ERR_CLIENT_CONFIG',
        'a certificate and key as clientIdentity are for the embedded engine; with an engine, name one of its identities',
      );
    try {
      engine = new TlsEngine({
        identities: [{ cert: id.cert, key: id.key, names: ['client'] }],
        connectOnly: true,
      });
    } catch (err) {
      throw new ClientError(
        'TLSPROXY_ERR_CLIENT_CONFIG',
        `clientIdentity: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    identityName = 'client';
  } else {
    engine = options.engine ?? embeddedEngine();
    identityName = id;
  }
  if (typeof engine.connect !== 'function')
    throw new ClientError(
      'TLSPROXY_ERR_CLIENT_CONFIG',
      'the TLS engine has no client side (connect)',
    );
  let session: ClientDialectSession;
  try {
    session = client.create({
      options: dialectOptions,
      limits,
      hostname: options.hostname ?? osHostname(),
      serverName,
      connectionId: options.connectionId ?? `client-${process.pid}-${++connections}`,
    });
  } catch (err) {
    throw new ClientError(
      'TLSPROXY_ERR_CLIENT_CONFIG',
      `dialect "${dialect.name}": ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  return { session, engine, serverName, ca, identityName, afterTls: client.afterTls };
}

let connections = 0;

type Outcome =
  | { type: 'starttls'; toLocal: Uint8Array; state: Record<string, unknown> }
  | { type: 'plaintext'; toLocal: Uint8Array; reason: string };

/**
 * Run the dialect's session on the socket until its outcome. Resolves with starttls/plaintext
 * (the socket paused, our listeners gone); rejects with a ClientError after ending the socket.
 */
function preamble(
  session: ClientDialectSession,
  socket: net.Socket,
  timeoutMs: number,
  log: ConnectStartTlsOptions['log'],
): Promise<Outcome> {
  return new Promise<Outcome>((resolve, reject) => {
    let done = false;
    let dialectTimer: NodeJS.Timeout | undefined;
    const deadline = setTimeout(() => {
      fail(
        new ClientError(
          'TLSPROXY_ERR_CLIENT_TIMEOUT',
          `no go-ahead for TLS within ${timeoutMs} ms`,
        ),
      );
    }, timeoutMs);
    const stop = () => {
      done = true;
      clearTimeout(deadline);
      clearTimeout(dialectTimer);
      socket.off('connect', onConnect);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', onError);
      socket.pause();
    };
    const fail = (err: ClientError, data?: Uint8Array) => {
      if (done) return;
      stop();
      // A reset after our end is no news: the outcome is decided.
      socket.on('error', () => {});
      if (data && data.length > 0 && !socket.destroyed) {
        socket.end(data);
        // end() closes once the peer answers our FIN; do not wait for a server that will not.
        setTimeout(() => socket.destroy(), 1000).unref();
      } else socket.destroy();
      reject(err);
    };
    const call = (what: string, f: () => ClientAction[]): ClientAction[] => {
      try {
        return f();
      } catch (err) {
        // The contract says a session never throws on peer input; if one does, no TLS.
        return [
          { type: 'close', reason: `the dialect's ${what}() threw: ${(err as Error).message}` },
        ];
      }
    };
    const apply = (actions: ClientAction[]) => {
      for (const a of actions) {
        if (done) return;
        switch (a.type) {
          case 'send':
            socket.write(a.data);
            break;
          case 'timer': {
            clearTimeout(dialectTimer);
            const wait = Math.min(Math.max(0, a.at - performance.now()), 2 ** 31 - 1);
            dialectTimer = setTimeout(
              () => apply(call('timer', () => session.timer(performance.now()))),
              wait,
            );
            break;
          }
          case 'log':
            log?.(a.level, a.message);
            break;
          case 'close':
            fail(
              new ClientError('TLSPROXY_ERR_CLIENT_REFUSED', `no TLS: ${a.reason}`, {
                reason: a.reason,
                ...(a.toLocal ? { toLocal: a.toLocal } : {}),
              }),
              a.data,
            );
            return;
          case 'starttls':
            stop();
            resolve({ type: 'starttls', toLocal: a.toLocal, state: a.state });
            return;
          case 'plaintext':
            stop();
            resolve({ type: 'plaintext', toLocal: a.toLocal, reason: a.reason });
            return;
        }
      }
    };
    const onConnect = () => apply(call('start', () => session.start(performance.now())));
    const onData = (chunk: Buffer) => {
      const bytes = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      apply(call('receive', () => session.receive(bytes, performance.now())));
    };
    const onEnd = () => {
      apply(call('eof', () => session.eof?.(performance.now()) ?? []));
      if (!done)
        fail(
          new ClientError(
            'TLSPROXY_ERR_CLIENT_REFUSED',
            'no TLS: the server closed the connection',
            {
              reason: 'the server closed the connection',
            },
          ),
        );
    };
    const onError = (err: Error) =>
      fail(
        new ClientError(
          'TLSPROXY_ERR_CLIENT_CONNECT',
          `${socket.connecting ? 'cannot connect' : 'connection failed'}: ${err.message}`,
          { cause: err },
        ),
      );
    socket.once('connect', onConnect);
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('error', onError);
  });
}
