// A listener's configuration, its defaults (from the limit declarations in limits.ts), where it
// listens (host:port, [v6]:port, or a descriptor passed by systemd), and the busy reply when a
// connection is refused at accept. The accept path itself is TlsProxy.listen() in proxy.ts.
import type net from 'node:net';
import { listenFds, type OwnedFd, RawStream } from '@tlsproxy/fdpass';
import type { ConnectRequest, EngineOptions, HandshakeRequest, TlsEngineApi } from '@tlsproxy/pool';
import type { HandoffTarget } from './backend.js';
import type { ConnectBackendSpec } from './connect-backend.js';
import { CLOSE_LINGER_MS, REFUSED_MAX_LINGERING } from './connection.js';
import type { BusyLimit, Dialect } from './dialect.js';
import { CoreError } from './errors.js';
import type { InboundProxyConfig } from './inbound-proxy.js';
import { LISTENER_LIMITS, type ListenerLimitName } from './limits.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import type { SessionConfig } from './session.js';

/**
 * The client role's TLS settings (`role: client`): how the server's certificate is checked and
 * what we present. The chain is verified against `ca` and the name against `serverName`, always.
 */
export interface ClientTlsConfig {
  /** Trusted CAs (PEM); absent: Node's bundled root certificates. */
  ca?: string | Buffer;
  /** The name the server's certificate must match, also sent as SNI; default: the `connect` host. */
  serverName?: string;
  /** Name of an identity the TLS engine holds, presented as our client certificate. */
  clientIdentity?: string;
  alpn?: string[];
  /** Lowest TLS version accepted from the server; default TLSv1.2. */
  minVersion?: ConnectRequest['minVersion'];
  handshakeTimeoutMs?: number;
}

/** A listener's `tls`: the server role's handshake settings, or the client role's. */
export type ListenerTlsConfig = Omit<HandshakeRequest, 'checkServerName' | 'connectionId'> &
  ClientTlsConfig;

export interface ListenerConfig {
  /**
   * 'server' (default): clients do STARTTLS with us and are handed to `backend`. 'client': a
   * local client speaks plaintext to us; we connect to `connect`, do the protocol's STARTTLS
   * there as a client (the dialect's `client` side), verify the server's certificate and relay
   * the local client through TLS (stunnel's `client = yes`).
   */
  role?: 'server' | 'client';
  /** Role client: the server, 'host:port' or '[v6]:port'. */
  connect?: string;
  /** Role client: TCP connect to the server within this long; default 10 s (stunnel's TIMEOUTconnect). */
  connectTimeoutMs?: number;
  /** Dialect: a built-in name ('tls'), a short name ('imap' → @tlsproxy/dialect-imap), a package name, a module path, or a Dialect object. */
  dialect: string | Dialect<unknown>;
  /** 'host:port', '[::1]:port', a port number, or 'systemd:NAME' */
  listen: string | number;
  /** 'unix:/path' (a backend running @tlsproxy/backend), a HandoffTarget, or a legacy server to
   * connect to after TLS: `{ connect: 'tcp:HOST:PORT' | 'unix:/path', proxyProtocol?: 'v1' | 'v2' | false }`.
   * Required in the server role; not used in the client role. */
  backend?: string | HandoffTarget | ConnectBackendSpec;
  /** 'plain' (default): the TLS engine terminates TLS; 'crypt': pass the raw TCP descriptor after the go-ahead. */
  handoff?: 'plain' | 'crypt';
  options?: Record<string, unknown>;
  limits?: Record<string, unknown>;
  /** Per-listener TLS settings. Server role: client certificates, ALPN, handshake timeout. Client
   * role: trusted CAs, the server's name, our client identity, ALPN, lowest version, timeout. */
  tls?: ListenerTlsConfig;
  /** Ask the backend about every SNI name (its onServerName) before the handshake goes on, even
   * if it did not ask for it. Without it the backend is asked whenever it declared on its channel
   * that it checks names (a `@tlsproxy/backend` listen() with `onServerName` does). */
  checkServerName?: boolean;
  /** Host name used in greetings; default the machine's. */
  hostname?: string;
  /** Names served (e.g. XMPP domains); default: the DNS names of the TLS engine's certificates. */
  serverNames?: string[];
  /** Connections this listener holds at once, in every phase (PROXY header, preamble, handshake,
   * relay until close); beyond, new ones get the dialect's busy reply. Default 10,000. */
  maxConnections?: number;
  /** Connections from one client (an IPv4 address, an IPv6 /`ipv6Prefix`) held at once by this
   * listener, in every phase; beyond, the busy reply. Default 64. */
  maxConnectionsPerAddress?: number;
  /** IPv6 clients are counted per network of this prefix length (one host usually has a /64). Default 64. */
  ipv6Prefix?: number;
  /** Addresses or CIDRs not subject to `maxConnectionsPerAddress` (e.g. a webmail or a monitoring
   * host, as Postfix exempts `mynetworks`). Default: none. They still count towards `maxConnections`. */
  exempt?: string[];
  /** Connections in the TLS handshake at once on this listener; beyond, the client gets the
   * temporary-failure reply (implicit TLS: closed). Default 1,000. */
  maxHandshakes?: number;
  /** A relayed connection with no traffic either way for this long is closed; 0: never (default). */
  idleTimeoutMs?: number;
  /** Whole-preamble deadline, a backstop above every dialect idle timer; default 15 minutes. */
  preambleTimeoutMs?: number;
  /** Bytes accepted before TLS; default 64 KiB. */
  maxPreambleBytes?: number;
  /** Accept PROXY protocol v1/v2 headers from these load balancers (others connect directly). */
  proxyProtocol?: InboundProxyConfig;
}

/** What a listener gets for each limit it leaves out, from the declarations in limits.ts
 * (docs/limits.md; `tlsproxy check-config`). */
export const LISTENER_DEFAULTS: Readonly<Record<ListenerLimitName, number>> = Object.freeze(
  Object.fromEntries(
    [...LISTENER_LIMITS].map(([name, d]) => [name, d.default as number]),
  ) as Record<ListenerLimitName, number>,
);

export interface ProxyOptions {
  /** The TLS engine: options for an embedded one, `{ socket }` for a tlspool daemon, or an engine object. */
  pool: EngineOptions | { socket: string; allowUids?: number[] } | TlsEngineApi;
  /**
   * How to build the embedded engine when `pool` is engine options: e.g.
   * `(o) => new NativeTlsEngine(o)` from @tlsproxy/engine-native (TLS on C threads). Default:
   * `new TlsEngine(o)` (node:tls). The proxy owns what this returns, as it would its own
   * TlsEngine: `reloadPool()` reloads it and `close()` closes it. Not used when `pool` is a
   * tlspool daemon's `{ socket }` or an engine object (which the caller owns).
   */
  createEngine?: (options: EngineOptions) => TlsEngineApi;
  logger?: Logger;
  /** uids that `unix:` backends may run as (checked with SO_PEERCRED on connect); default: any. */
  backendUids?: number[];
  /** Prometheus metrics: `{}` to collect (read `proxy.metrics`), `{ listen: '127.0.0.1:9464' }` to
   * also serve GET /metrics, or a Metrics object of your own (you close it). */
  metrics?: { listen?: string } | Metrics;
}

export interface RunningListener {
  dialect: string;
  address: net.AddressInfo | string;
  server: net.Server;
  config: ListenerConfig;
  /** New dialect options, limits, backend… for connections accepted from now on. */
  update(config: ListenerConfig): Promise<void>;
}

/**
 * A client-role `connect` address: 'host:port' or '[v6]:port' (a `tcp:` prefix is accepted too);
 * errors as CoreError TLSPROXY_ERR_CONFIG saying what is expected.
 */
export function parseServerAddress(spec: string): { host: string; port: number } {
  const s = typeof spec === 'string' && spec.startsWith('tcp:') ? spec.slice(4) : spec;
  const m =
    typeof s === 'string' ? /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]\s/]+)):(\d{1,5})$/.exec(s) : null;
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || !(port > 0 && port < 65536))
    throw new CoreError(
      'TLSPROXY_ERR_CONFIG',
      `connect address ${JSON.stringify(spec)} is not host:port or [v6]:port (port 1-65535)`,
    );
  return { host: (m[1] ?? m[2])!, port };
}

function parseListen(spec: string | number): { host?: string; port?: number; systemd?: string } {
  if (typeof spec === 'number') return { port: spec };
  if (spec.startsWith('systemd:')) return { systemd: spec.slice(8) };
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(spec) ?? /^()()(\d+)$/.exec(spec);
  if (!m)
    throw new CoreError(
      'TLSPROXY_ERR_LISTEN',
      `listen address "${spec}" is not host:port, [v6]:port or systemd:NAME`,
    );
  const port = Number(m[3]);
  if (!(port >= 0 && port < 65536))
    throw new CoreError('TLSPROXY_ERR_LISTEN', `port out of range in "${spec}"`);
  const host = m[1] || m[2] || undefined;
  return host ? { host, port } : { port };
}

// systemd's descriptors are taken once per process (each is owned by exactly one object) and
// handed out by name, so several listeners can each claim theirs.
let systemdFds: Map<string, OwnedFd[]> | undefined;
function systemdSocket(name: string): OwnedFd | undefined {
  if (!systemdFds) {
    systemdFds = new Map();
    for (const f of listenFds(process.env)) {
      const list = systemdFds.get(f.name) ?? [];
      list.push(f.fd);
      systemdFds.set(f.name, list);
    }
  }
  return systemdFds.get(name)?.shift();
}

/** Listen on `listen` (host:port, [v6]:port, a port, or systemd:NAME); errors as CoreError. */
export async function bindListener(server: net.Server, listen: string | number): Promise<void> {
  const where = parseListen(listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (where.systemd !== undefined) {
      const mine = systemdSocket(where.systemd);
      if (!mine) {
        reject(
          new CoreError(
            'TLSPROXY_ERR_LISTEN',
            `no socket named "${where.systemd}" was passed by systemd (LISTEN_FDNAMES)`,
          ),
        );
        return;
      }
      server.listen({ fd: mine.take() }, () => resolve());
    } else {
      server.listen({ host: where.host, port: where.port ?? 0 }, () => resolve());
    }
  }).catch((err: Error) => {
    throw err instanceof CoreError
      ? err
      : new CoreError('TLSPROXY_ERR_LISTEN', `cannot listen on ${listen}: ${err.message}`, {
          cause: err,
        });
  });
}

/**
 * The warning for connections refused past a limit, one line a second at most per limit (with
 * `refused`: how many since the last line, this one included): refusals come at the client's
 * rate, and a line each would let a flood fill the log.
 */
export function refusalLog(
  logger: Logger,
  dialect: string,
): (limit: BusyLimit, message: string, fields: Record<string, unknown>) => void {
  interface Said {
    at: number;
    unsaid: number;
    /** The last refusal held back, said with the count when the interval ends. */
    latest?: { message: string; fields: Record<string, unknown> };
    timer?: NodeJS.Timeout;
  }
  const last = new Map<BusyLimit, Said>();
  const say = (limit: BusyLimit, message: string, fields: Record<string, unknown>, n: number) => {
    logger.log('warn', message, { dialect, limit, ...fields, refused: n });
    last.set(limit, { at: performance.now(), unsaid: 0 });
  };
  return (limit, message, fields) => {
    const said = last.get(limit);
    if (said && performance.now() - said.at < REFUSAL_LOG_INTERVAL_MS) {
      said.unsaid++;
      said.latest = { message, fields };
      // The end of a burst is said when its interval ends, not at the next refusal (hours later).
      said.timer ??= setTimeout(
        () => {
          const s = last.get(limit);
          if (s === said && said.latest)
            say(limit, said.latest.message, said.latest.fields, said.unsaid);
        },
        REFUSAL_LOG_INTERVAL_MS - (performance.now() - said.at),
      ).unref();
      return;
    }
    if (said?.timer) clearTimeout(said.timer);
    say(limit, message, fields, 1 + (said?.unsaid ?? 0));
  };
}
const REFUSAL_LOG_INTERVAL_MS = 1000;

/** Refused connections in this process still open (REFUSED_MAX_LINGERING). */
let lingering = 0;

/** Past a limit: the dialect's "busy" reply (if it has one), then close; existing sessions are unaffected. */
export function refuse(
  fd: OwnedFd,
  config: Pick<SessionConfig, 'dialect' | 'hostname'>,
  limit: BusyLimit,
): void {
  let reply: Uint8Array | undefined;
  try {
    reply = config.dialect.busy?.({ hostname: config.hostname, now: Date.now(), limit });
  } catch {}
  if (lingering >= REFUSED_MAX_LINGERING) {
    const stream = new RawStream(fd, { data() {}, end() {}, close() {} });
    // What fits in the socket's buffer goes (a fresh connection's takes a busy line whole); the
    // little the client sent is read first so the close is a FIN after the reply, not a reset.
    stream.end(reply);
    try {
      stream.discardPending(64 * 1024);
    } catch {}
    stream.destroy();
    return;
  }
  lingering++;
  // Read (and drop) so the client's FIN is seen and the socket goes at once; a client that
  // never closes must not keep it either.
  const linger = setTimeout(() => stream.destroy(), CLOSE_LINGER_MS);
  linger.unref();
  const stream = new RawStream(fd, {
    data() {},
    end() {
      stream.destroy();
    },
    close() {
      lingering--;
      clearTimeout(linger);
    },
  });
  stream.end(reply);
  stream.startReading();
}
