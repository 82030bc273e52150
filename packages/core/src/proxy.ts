// The engine's front: listeners (host:port on IPv4/IPv6, or descriptors passed by systemd), one
// Session per connection, the TLS engine, and the backends.
// The listener's configuration, defaults, binding and busy reply are in listener.ts; each
// connection is a Session (session.ts).

import { readdirSync, readFileSync } from 'node:fs';
import net, { type BlockList } from 'node:net';
import { hostname as osHostname } from 'node:os';
import { type OwnedFd, wrapSocket } from '@tlsproxy/fdpass';
import { type EngineOptions, RemoteTlsEngine, TlsEngine, type TlsEngineApi } from '@tlsproxy/pool';
import { acceptDescriptors } from './accept.js';
import { type AddressMatcher, addressKey, parseAddressMatcher } from './addresses.js';
import { type HandoffTarget, UnixBackend } from './backend.js';
import {
  ClientSession,
  type ClientSessionConfig,
  DEFAULT_CONNECT_TIMEOUT_MS,
} from './client-session.js';
import { ConnectBackend, type ConnectBackendSpec } from './connect-backend.js';
import { resolveLimits, resolveOptions } from './define.js';
import type { Dialect } from './dialect.js';
import { CoreError } from './errors.js';
import { DEFAULT_PROXY_HEADER_TIMEOUT_MS, readInboundProxyFd, trustList } from './inbound-proxy.js';
import {
  bindListener,
  LISTENER_DEFAULTS,
  type ListenerConfig,
  type ProxyOptions,
  parseServerAddress,
  type RunningListener,
  refusalLog,
  refuse,
} from './listener.js';
import { loadDialect } from './load.js';
import { consoleLogger, type Logger } from './logger.js';
import { Metrics } from './metrics.js';
import { Session, type SessionAddresses, type SessionConfig } from './session.js';

/** How often idle preamble connections are looked for, to be parked (session.ts). */
const PARK_SWEEP_MS = 250;

/** What a listener holds now (its limits count these). */
interface Held {
  total: number;
  handshakes: number;
  perClient: Map<string, number>;
}

/** A place in the listener's total; the function returned gives it back, once. */
function takePlace(held: Held): () => void {
  held.total++;
  let counted = true;
  return () => {
    if (!counted) return;
    counted = false;
    held.total--;
  };
}

export type { ListenerConfig, ProxyOptions, RunningListener } from './listener.js';
export { LISTENER_DEFAULTS } from './listener.js';

/** What the proxy needs of a connection in either role. */
type AnySession = Session | ClientSession;
type AnySessionConfig = SessionConfig | ClientSessionConfig;

export class TlsProxy {
  readonly pool: TlsEngineApi;
  readonly logger: Logger;
  readonly listeners: RunningListener[] = [];
  readonly #sessions = new Set<AnySession>();
  #fdWatch: NodeJS.Timeout | undefined;
  #parkSweep: NodeJS.Timeout | undefined;
  readonly #backendUids: number[] | undefined;
  readonly #backends = new Map<string, HandoffTarget>();
  readonly #ownsPool: boolean;
  /** Prometheus metrics (a private registry), when enabled; `metrics.ready` resolves with the
   * bound address of /metrics. */
  readonly metrics: Metrics | undefined;
  readonly #ownsMetrics: boolean;

  constructor(options: ProxyOptions) {
    this.logger = options.logger ?? consoleLogger();
    this.#backendUids = options.backendUids;
    // --- metrics (begin) ---
    if (options.metrics instanceof Metrics) {
      this.metrics = options.metrics;
      this.#ownsMetrics = false;
    } else {
      this.metrics = options.metrics ? new Metrics() : undefined;
      this.#ownsMetrics = this.metrics !== undefined;
      const listen = options.metrics?.listen;
      if (this.metrics && listen !== undefined) {
        this.metrics.listen(listen).then(
          (a) =>
            this.logger.log('info', 'serving metrics', {
              address: `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`,
              path: '/metrics',
            }),
          (err: Error) =>
            this.logger.log('error', 'metrics endpoint failed', { error: err.message }),
        );
      }
    }
    // --- metrics (end) ---
    if ('handshake' in options.pool) {
      this.pool = options.pool;
      this.#ownsPool = false;
    } else if ('socket' in options.pool) {
      this.pool = new RemoteTlsEngine(options.pool);
      this.#ownsPool = true;
    } else {
      this.pool = options.createEngine
        ? options.createEngine(options.pool)
        : new TlsEngine(options.pool);
      this.#ownsPool = true;
    }
  }

  get activeSessions(): number {
    return this.#sessions.size;
  }

  #backend(
    spec: string | HandoffTarget | ConnectBackendSpec,
    dialect: Dialect<unknown>,
  ): HandoffTarget {
    if (typeof spec === 'object' && 'connect' in spec) {
      // One per dialect and target: the dialect decides which greeting to swallow.
      const key = `connect ${dialect.name} ${JSON.stringify(spec)}`;
      let c = this.#backends.get(key);
      if (!c) {
        c = new ConnectBackend(spec, { dialect, logger: this.logger });
        this.#backends.set(key, c);
      }
      return c;
    }
    if (typeof spec !== 'string') return spec;
    let b = this.#backends.get(spec);
    if (!b) {
      b = new UnixBackend(spec, {
        logger: this.logger,
        ...(this.#backendUids ? { allowUids: this.#backendUids } : {}),
        onControl: (key, op, args) => this.pool.control(key, op as never, args),
      });
      this.#backends.set(spec, b);
    }
    return b;
  }

  /** Everything a listener's sessions need, from its config; throws before anything changes. */
  async #sessionConfig(config: ListenerConfig): Promise<AnySessionConfig> {
    if (config.role === 'client') return this.#clientConfig(config);
    if (config.role !== undefined && config.role !== 'server')
      throw new CoreError(
        'TLSPROXY_ERR_CONFIG',
        `role must be 'server' or 'client', not ${JSON.stringify(config.role)}`,
      );
    if (config.backend === undefined)
      throw new CoreError('TLSPROXY_ERR_CONFIG', 'a server-role listener needs a backend');
    const dialect = await loadDialect(config.dialect);
    // A daemon's certificate names are learnt on connect: try once so dialects get them.
    await this.pool.available?.();
    const options = resolveOptions(dialect, config.options);
    const limits = resolveLimits(dialect, config.limits);
    const backend = this.#backend(config.backend, dialect);
    return {
      dialect,
      options,
      limits,
      hostname: config.hostname ?? osHostname(),
      serverNames: config.serverNames ?? this.pool.serverNames?.() ?? [],
      backend,
      pool: this.pool,
      handoff: config.handoff ?? 'plain',
      // Early hand-off (TLS 1.3 without client certificates): the backend takes the connection
      // while the client finishes its handshake — off with `tls: { earlyHandoff: false }`.
      tls: { earlyHandoff: true, ...(config.tls ?? {}) },
      checkServerName: config.checkServerName ?? false,
      ...(config.idleTimeoutMs ? { idleTimeoutMs: config.idleTimeoutMs } : {}),
      preambleTimeoutMs: config.preambleTimeoutMs ?? LISTENER_DEFAULTS.preambleTimeoutMs,
      maxPreambleBytes: config.maxPreambleBytes ?? LISTENER_DEFAULTS.maxPreambleBytes,
      logger: this.logger,
      metrics: this.metrics, // metrics
    };
  }

  /** The client role's session config: the dialect's client side, the server, the TLS request. */
  async #clientConfig(config: ListenerConfig): Promise<ClientSessionConfig> {
    if (config.connect === undefined)
      throw new CoreError('TLSPROXY_ERR_CONFIG', 'a client-role listener needs connect: HOST:PORT');
    const server = parseServerAddress(config.connect);
    const dialect = await loadDialect(config.dialect);
    const client = dialect.client;
    if (!client)
      throw new CoreError(
        'TLSPROXY_ERR_NO_CLIENT_ROLE',
        `dialect "${dialect.name}" has no client side: it cannot be used with role: client`,
      );
    if (!this.pool.connect)
      throw new CoreError(
        'TLSPROXY_ERR_NO_CLIENT_ROLE',
        'this TLS engine has no client side (connect): it cannot serve role: client',
      );
    const side = { name: dialect.name, options: client.options, limits: client.limits };
    const options = resolveOptions(side as Dialect<unknown>, config.options);
    const limits = resolveLimits(side, config.limits);
    const t = config.tls ?? {};
    const ca = t.ca === undefined ? undefined : String(t.ca);
    const serverName = t.serverName ?? server.host;
    if (typeof serverName !== 'string' || serverName === '' || /[\s\x00-\x1f]/.test(serverName))
      throw new CoreError('TLSPROXY_ERR_CONFIG', 'tls.serverName must be a host name or address');
    const connectTimeoutMs = config.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    if (!(Number.isFinite(connectTimeoutMs) && connectTimeoutMs > 0))
      throw new CoreError('TLSPROXY_ERR_CONFIG', 'connectTimeoutMs must be a number of ms > 0');
    return {
      role: 'client',
      dialect,
      client,
      options,
      limits,
      hostname: config.hostname ?? osHostname(),
      server,
      serverName,
      tls: {
        ...(ca !== undefined ? { ca } : {}),
        ...(t.clientIdentity !== undefined ? { clientIdentity: t.clientIdentity } : {}),
        ...(t.alpn !== undefined ? { alpn: t.alpn } : {}),
        ...(t.minVersion !== undefined ? { minVersion: t.minVersion } : {}),
        ...(t.handshakeTimeoutMs !== undefined ? { handshakeTimeoutMs: t.handshakeTimeoutMs } : {}),
      },
      pool: this.pool,
      connectTimeoutMs,
      preambleTimeoutMs: config.preambleTimeoutMs ?? LISTENER_DEFAULTS.preambleTimeoutMs,
      maxPreambleBytes: config.maxPreambleBytes ?? LISTENER_DEFAULTS.maxPreambleBytes,
      ...(config.idleTimeoutMs ? { idleTimeoutMs: config.idleTimeoutMs } : {}),
      logger: this.logger,
      metrics: this.metrics,
    };
  }

  /** Start one listener; resolves once it is bound. */
  async listen(config: ListenerConfig): Promise<RunningListener> {
    const state: {
      sessionConfig: AnySessionConfig;
      config: ListenerConfig;
      trust?: BlockList;
      exempt: AddressMatcher;
    } = {
      sessionConfig: await this.#sessionConfig(config),
      config,
      exempt: parseAddressMatcher(config.exempt ?? [], 'exempt'),
    };
    if (config.proxyProtocol) state.trust = trustList(config.proxyProtocol.trusted);
    const dialect = state.sessionConfig.dialect;
    const sessionConfig = state.sessionConfig;
    // What this listener holds now, counted from accept until the connection is gone from this
    // process (preamble, handshake, and the relay when the TLS engine or a connect-mode backend
    // relays here), so no phase escapes a limit.
    const held: Held = { total: 0, handshakes: 0, perClient: new Map<string, number>() };
    const handshakes = {
      acquire: () => {
        if (held.handshakes >= (state.config.maxHandshakes ?? LISTENER_DEFAULTS.maxHandshakes))
          return false;
        held.handshakes++;
        return true;
      },
      release: () => {
        held.handshakes--;
      },
      short: () =>
        held.handshakes * 2 >= (state.config.maxHandshakes ?? LISTENER_DEFAULTS.maxHandshakes),
    };
    state.sessionConfig.handshakes = handshakes;
    const refused = refusalLog(this.logger, dialect.name);
    // Accepted as descriptors (accept.ts), read by nobody until a session starts: with inbound
    // PROXY the header must be read to its exact end first.
    const onAccept = (fd: OwnedFd, own: SessionAddresses) => {
      // Read the current config at each accept: update() swaps it for new connections only.
      const cfg = state.config;
      const max = cfg.maxConnections ?? LISTENER_DEFAULTS.maxConnections;
      if (held.total >= max) {
        refused('maxConnections', 'connection limit reached, refusing', { value: max });
        refuse(fd, state.sessionConfig, 'maxConnections');
        return;
      }
      const uncount = takePlace(held);
      const sessionConfig = state.sessionConfig;
      const inbound = cfg.proxyProtocol;
      const begin = (addresses: SessionAddresses) => {
        // Counted by the client's address — behind a trusted balancer, the one its header names;
        // IPv6 by network, since one host usually owns a whole /64.
        const from = addresses.address;
        const key = state.exempt.has(from)
          ? undefined
          : addressKey(from, cfg.ipv6Prefix ?? LISTENER_DEFAULTS.ipv6Prefix);
        const perAddress =
          cfg.maxConnectionsPerAddress ?? LISTENER_DEFAULTS.maxConnectionsPerAddress;
        if (key !== undefined && (held.perClient.get(key) ?? 0) >= perAddress) {
          refused('maxConnectionsPerAddress', 'per-address connection limit reached, refusing', {
            remote: from,
            value: perAddress,
          });
          uncount();
          refuse(fd, sessionConfig, 'maxConnectionsPerAddress');
          return;
        }
        // The session starts reading itself, unless its dialect asked for TLS at once; in the
        // client role the local socket stays paused until TLS with the server is up.
        let s: AnySession;
        try {
          s =
            'role' in sessionConfig
              ? new ClientSession(
                  wrapSocket(fd, { allowHalfOpen: true, paused: true }),
                  sessionConfig,
                  addresses,
                )
              : new Session(fd, sessionConfig, addresses);
        } catch (err) {
          // wrapSocket closed the descriptor (not a stream socket: cannot be, from accept).
          uncount();
          this.logger.log('error', 'could not start a session; closing', {
            dialect: dialect.name,
            error: (err as Error).message,
          });
          return;
        }
        // From here the session's release gives the place back (uncount is for the refusals).
        this.#track(s, held, key);
      };
      if (!inbound) {
        begin(own);
        return;
      }
      // Until the header is read the connection counts towards maxConnections only.
      const trust = state.trust ?? trustList(inbound.trusted);
      readInboundProxyFd(
        fd.fd,
        own,
        trust,
        inbound.timeoutMs ?? DEFAULT_PROXY_HEADER_TIMEOUT_MS,
      ).then(
        (addresses) => begin(addresses ?? own),
        (err: Error) => {
          this.logger.log('warn', 'PROXY header refused; closing', {
            dialect: dialect.name,
            peer: own.address,
            error: err.message,
          });
          uncount();
          fd.close();
        },
      );
    };
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
    server.on('error', (err) =>
      this.logger.log('error', 'listener error', { dialect: dialect.name, error: err.message }),
    );
    await bindListener(server, config.listen);
    // At the descriptor limit every new connection fails here: one line a second, with a count.
    let failed = 0;
    let lastSaid = 0;
    acceptDescriptors(server, onAccept, (err) => {
      failed++;
      const now = Date.now();
      if (now - lastSaid < 1000) return;
      lastSaid = now;
      this.logger.log('warn', 'could not accept connections; dropped', {
        dialect: dialect.name,
        dropped: failed,
        error: err.message,
      });
      failed = 0;
    });
    const address = server.address() ?? String(config.listen);
    this.#watchDescriptors();
    this.#sweepIdle();
    const l: RunningListener = {
      dialect: dialect.name,
      address,
      server,
      config,
      update: async (next: ListenerConfig) => {
        // Connections already accepted keep the config they started with. Everything is
        // checked before anything changes: a bad address list leaves the old config serving.
        const exempt = parseAddressMatcher(next.exempt ?? [], 'exempt');
        const trust = next.proxyProtocol ? trustList(next.proxyProtocol.trusted) : undefined;
        state.sessionConfig = { ...(await this.#sessionConfig(next)), handshakes };
        state.config = next;
        state.exempt = exempt;
        if (trust) state.trust = trust;
        else delete state.trust;
        l.config = next;
        l.dialect = state.sessionConfig.dialect.name;
      },
    };
    this.listeners.push(l);
    const at = typeof address === 'string' ? address : `${address.address}:${address.port}`;
    if ('role' in sessionConfig) {
      this.logger.log('info', 'listening', {
        dialect: dialect.name,
        role: 'client',
        address: at,
        connect: config.connect,
        serverName: sessionConfig.serverName,
        ca: sessionConfig.tls.ca === undefined ? 'bundled roots' : 'configured',
        clientIdentity: sessionConfig.tls.clientIdentity,
      });
    } else {
      this.logger.log('info', 'listening', {
        dialect: dialect.name,
        address: at,
        backend: sessionConfig.backend.description,
        handoff: sessionConfig.handoff,
        // Who decides about SNI names: every name is put to the backend, or only when it asks.
        serverNameCheck: sessionConfig.checkServerName ? 'always' : 'when the backend asks',
      });
    }
    return l;
  }

  /**
   * At the descriptor limit libuv accepts and drops new connections itself (its EMFILE trick)
   * and Node never hears of it; so look at the process's descriptors now and then and say so.
   */
  #watchDescriptors(): void {
    if (this.#fdWatch) return;
    let limit = 0;
    try {
      const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
      limit = m ? Number(m[1]) : 0;
    } catch {}
    if (!(limit > 0)) return;
    let lastWarn = 0;
    this.#fdWatch = setInterval(() => {
      let open = 0;
      try {
        open = readdirSync('/proc/self/fd').length;
      } catch (err) {
        // Reading the directory takes a descriptor too: failing with EMFILE is the answer.
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'EMFILE' && code !== 'ENFILE') return;
        open = limit;
      }
      if (open >= limit * 0.9 && Date.now() - lastWarn > 30_000) {
        lastWarn = Date.now();
        this.logger.log(
          'warn',
          'open descriptors near the limit (EMFILE): new connections may be dropped',
          {
            open,
            limit,
            sessions: this.#sessions.size,
          },
        );
      }
    }, 1000);
    this.#fdWatch.unref();
  }

  /**
   * Count a session until it is released. Its own method, so the callbacks that live as long as
   * the session hold only what they use: a closure made in the accept handler would keep that
   * handler's whole scope, the accepted Socket included, after the session parked or detached it.
   */
  /**
   * The proxy's books for one session: known until done, counted in the limits until released.
   * Hooks, not promises: an idle connection then holds one small object for this, not two
   * promises with their reactions. In a scope of its own, so the hooks keep neither the accept
   * handler's scope nor its Socket.
   */
  #track(s: AnySession, held: Held, key: string | undefined): void {
    this.#sessions.add(s);
    if (key !== undefined) held.perClient.set(key, (held.perClient.get(key) ?? 0) + 1);
    const sessions = this.#sessions;
    s.track({
      done: () => sessions.delete(s),
      released: () => {
        held.total--;
        if (key === undefined) return;
        const n = (held.perClient.get(key) ?? 1) - 1;
        if (n > 0) held.perClient.set(key, n);
        else held.perClient.delete(key);
      },
    });
  }

  /**
   * Four times a second, park the preamble connections idle for PARK_AFTER_MS (session.ts): one
   * timer for the proxy, not one per connection; a pass costs well under a microsecond a session.
   */
  #sweepIdle(): void {
    if (this.#parkSweep) return;
    this.#parkSweep = setInterval(() => {
      const now = Date.now();
      for (const s of this.#sessions) if (s instanceof Session) s.sweep(now);
    }, PARK_SWEEP_MS);
    this.#parkSweep.unref();
  }

  /** Stop one listener; its connections go on. */
  async closeListener(l: RunningListener): Promise<void> {
    const i = this.listeners.indexOf(l);
    if (i >= 0) this.listeners.splice(i, 1);
    await new Promise<void>((r) => l.server.close(() => r()));
  }

  /** New certificates and TLS defaults for the embedded engine; established sessions keep theirs. */
  reloadPool(options: EngineOptions): void {
    // Any engine in this process that can reload (node:tls, native); a daemon reloads itself.
    const engine = this.pool as TlsEngineApi & { reload?: (o: EngineOptions) => void };
    if (this.pool instanceof RemoteTlsEngine || typeof engine.reload !== 'function') {
      throw new CoreError(
        'TLSPROXY_ERR_CONFIG',
        'the TLS engine runs in its own process: reload it there',
      );
    }
    engine.reload(options);
  }

  /**
   * Graceful stop: stop accepting, let sessions in preamble and (embedded engine) relayed TLS
   * sessions finish for up to `timeoutMs`, then close what is left.
   */
  async drain(timeoutMs: number): Promise<void> {
    // Stop accepting now; the connections are this proxy's (accept.ts), the wait below is for them.
    for (const l of this.listeners) l.server.close();
    const deadline = Date.now() + timeoutMs;
    // Relayed sessions of an engine in this process (node:tls or native) are waited for too.
    const live = () => (this.pool as { sessionCount?: unknown }).sessionCount;
    const busy = () => {
      const n = live();
      return this.#sessions.size > 0 || (typeof n === 'number' && n > 0);
    };
    while (busy() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    await this.close();
  }

  /** Stop listening, end sessions still in preamble (and the client role's relays), close
   * backends and the embedded engine. */
  async close(): Promise<void> {
    const closing = this.listeners.map((l) => new Promise<void>((r) => l.server.close(() => r())));
    // End the sessions still in preamble; hand-offs in flight finish (their `done`).
    for (const s of this.#sessions) s.abort();
    await Promise.all([...closing, ...[...this.#sessions].map((s) => s.done)]);
    this.listeners.length = 0;
    if (this.#fdWatch) clearInterval(this.#fdWatch);
    this.#fdWatch = undefined;
    if (this.#parkSweep) clearInterval(this.#parkSweep);
    this.#parkSweep = undefined;
    for (const b of this.#backends.values()) b.close();
    if (this.#ownsPool) await this.pool.close();
    if (this.#ownsMetrics) await this.metrics?.close(); // metrics
  }
}
