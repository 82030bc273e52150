// Prometheus metrics (prom-client). Each TlsProxy gets its own Registry — never prom-client's
// global one — so several proxies in one process (tests, reloads) do not clash. `listen()`
// serves `GET /metrics` in the text exposition format on a small node:http server.
//
// Sessions do not touch prom-client directly: they get a ConnectionMetrics from
// `metrics.connection(dialect)` (or the no-op one when metrics are off) and report what
// happened; the metric names and labels live here and in README "Logs and metrics".
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { CoreError } from './errors.js';

/** How a connection ended, as far as tlsproxy is concerned (label `outcome`). */
export type Outcome =
  /** The backend accepted the connection (after TLS, crypt, or a plaintext hand-off). */
  | 'handed_off'
  /** The TLS handshake failed (bad ClientHello, injected plaintext, refused SNI, timeout). */
  | 'tls_failed'
  /** The preamble ended without a hand-off: QUIT/LOGOUT, EOF, idle timer, abuse limits. */
  | 'closed_in_preamble'
  /** As closed_in_preamble, after the client was told no backend could take it. */
  | 'backend_unavailable'
  /** TLS was up but the backend did not take the connection. */
  | 'handoff_failed'
  /** The whole-preamble deadline (preambleTimeoutMs) passed. */
  | 'preamble_timeout'
  /** More than maxPreambleBytes before TLS. */
  | 'preamble_too_large'
  /** The dialect threw (a bug in the dialect). */
  | 'dialect_error'
  /** The proxy shut down while the connection was in its preamble. */
  | 'shutdown'
  /** Client role: TLS with the server was up and the local client was relayed until the end. */
  | 'relayed'
  /** Client role: relayed without TLS because the dialect's opt-in policy allowed it (SMTP `may`). */
  | 'relayed_plaintext'
  /** Client role: the server could not be reached (refused, unreachable, connect timeout). */
  | 'connect_failed';

/** Which side of STARTTLS the proxy plays for a connection (label `role`). */
export type Role = 'server' | 'client';

/** Connection stages with a gauge of their own (label `stage`); `relay` is the client role's
 * relay in this process (the server role's relay is the TLS engine's, after the hand-off). */
export type Stage = 'preamble' | 'handshake' | 'handoff' | 'relay';

/** Direction of relayed application bytes (label `direction`). */
export type Direction = 'in' | 'out';

export interface ConnectionMetrics {
  /** Move this connection to another stage (null: no longer active). */
  stage(stage: Stage | null): void;
  /** The client asked for TLS this many seconds after connecting. */
  starttls(seconds: number): void;
  handshake(result: 'ok' | 'failed', seconds: number): void;
  /** Bytes thrown away after a STARTTLS command (pipelined plaintext). */
  injection(bytes: number): void;
  badCommand(): void;
  /** No backend (or TLS engine) could take the connection at this point. */
  backendUnavailable(at: 'starttls' | 'plaintext' | 'handoff'): void;
  ended(outcome: Outcome): void;
  /** Relayed application bytes; undefined when metrics are off. */
  onBytes: ((direction: Direction, bytes: number) => void) | undefined;
}

export const noConnectionMetrics: ConnectionMetrics = {
  stage() {},
  starttls() {},
  handshake() {},
  injection() {},
  badCommand() {},
  backendUnavailable() {},
  ended() {},
  onBytes: undefined,
};

export interface MetricsOptions {
  /** Also collect prom-client's process metrics (CPU, memory, event loop, …); default true. */
  defaultMetrics?: boolean;
}

export function parseAddress(spec: string | number): { host: string; port: number } {
  if (typeof spec === 'number') return { host: '127.0.0.1', port: spec };
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(spec) ?? /^()()(\d+)$/.exec(spec);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || !(port >= 0 && port < 65536))
    throw new CoreError(
      'TLSPROXY_ERR_LISTEN',
      `metrics listen address "${spec}" is not host:port, [v6]:port or a port`,
    );
  return { host: m[1] || m[2] || '127.0.0.1', port };
}

export class Metrics {
  readonly registry = new Registry();
  readonly connections: Counter<'dialect' | 'outcome' | 'role'>;
  readonly active: Gauge<'dialect' | 'stage' | 'role'>;
  readonly starttlsSeconds: Histogram<'dialect'>;
  readonly handshakeSeconds: Histogram<'dialect' | 'result'>;
  readonly relayedBytes: Counter<'dialect' | 'direction'>;
  readonly injectionAttempts: Counter<'dialect'>;
  readonly discardedBytes: Counter<'dialect'>;
  readonly badCommands: Counter<'dialect'>;
  readonly backendUnavailable: Counter<'dialect' | 'at'>;
  #server: http.Server | undefined;
  #address: AddressInfo | undefined;
  #ready: Promise<AddressInfo> | undefined;

  constructor(options: MetricsOptions = {}) {
    const registers = [this.registry];
    this.connections = new Counter({
      name: 'tlsproxy_connections_total',
      help: 'Client connections that ended, by dialect, outcome and role (server: STARTTLS served; client: STARTTLS done with a server for a local client).',
      labelNames: ['dialect', 'outcome', 'role'],
      registers,
    });
    this.active = new Gauge({
      name: 'tlsproxy_active_connections',
      help: 'Connections in progress, by stage (preamble, handshake, handoff, relay) and role.',
      labelNames: ['dialect', 'stage', 'role'],
      registers,
    });
    this.starttlsSeconds = new Histogram({
      name: 'tlsproxy_starttls_seconds',
      help: 'Time from accepting a connection to its STARTTLS command.',
      labelNames: ['dialect'],
      buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.handshakeSeconds = new Histogram({
      name: 'tlsproxy_tls_handshake_seconds',
      help: 'TLS handshake duration in the TLS engine (including an SNI check), by result.',
      labelNames: ['dialect', 'result'],
      buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.relayedBytes = new Counter({
      name: 'tlsproxy_relayed_bytes_total',
      help: 'Application bytes relayed by the embedded TLS engine after hand-off (in: client to backend, out: backend to client).',
      labelNames: ['dialect', 'direction'],
      registers,
    });
    this.injectionAttempts = new Counter({
      name: 'tlsproxy_injection_attempts_total',
      help: 'STARTTLS commands followed by plaintext the client sent before the go-ahead (discarded, never interpreted).',
      labelNames: ['dialect'],
      registers,
    });
    this.discardedBytes = new Counter({
      name: 'tlsproxy_discarded_bytes_total',
      help: 'Bytes discarded after STARTTLS commands.',
      labelNames: ['dialect'],
      registers,
    });
    this.badCommands = new Counter({
      name: 'tlsproxy_bad_commands_total',
      help: 'Pre-TLS commands the dialect refused as malformed or unknown (dialects that report them).',
      labelNames: ['dialect'],
      registers,
    });
    this.backendUnavailable = new Counter({
      name: 'tlsproxy_backend_unavailable_total',
      help: 'Times no backend (or TLS engine) could take a connection: at STARTTLS, at a plaintext hand-off, or at the hand-off after TLS.',
      labelNames: ['dialect', 'at'],
      registers,
    });
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /** The text exposition format, as served on /metrics. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** Per-connection reporting for a session of `dialect` in `role` (default server). */
  connection(dialect: string, role: Role = 'server'): ConnectionMetrics {
    let current: Stage | null = null;
    const inBytes = this.relayedBytes.labels(dialect, 'in');
    const outBytes = this.relayedBytes.labels(dialect, 'out');
    return {
      stage: (s) => {
        if (s === current) return;
        if (current) this.active.dec({ dialect, stage: current, role });
        if (s) this.active.inc({ dialect, stage: s, role });
        current = s;
      },
      starttls: (sec) => this.starttlsSeconds.observe({ dialect }, sec),
      handshake: (result, sec) => this.handshakeSeconds.observe({ dialect, result }, sec),
      injection: (bytes) => {
        this.injectionAttempts.inc({ dialect });
        this.discardedBytes.inc({ dialect }, bytes);
      },
      badCommand: () => this.badCommands.inc({ dialect }),
      backendUnavailable: (at) => this.backendUnavailable.inc({ dialect, at }),
      ended: (outcome) => this.connections.inc({ dialect, outcome, role }),
      onBytes: (direction, n) => (direction === 'in' ? inBytes : outBytes).inc(n),
    };
  }

  /** Where /metrics is served, once bound. */
  get address(): AddressInfo | undefined {
    return this.#address;
  }

  /** Resolves with the bound address once listen() has bound (rejects if it could not). */
  get ready(): Promise<AddressInfo> | undefined {
    return this.#ready;
  }

  /** Serve GET /metrics on 'host:port' ('[v6]:port', or a port on 127.0.0.1). Once per object. */
  listen(spec: string | number): Promise<AddressInfo> {
    if (this.#ready) return this.#ready;
    const { server, ready } = serveMetrics(
      spec,
      () => this.registry.metrics(),
      () => this.registry.contentType,
    );
    this.#server = server;
    this.#ready = ready.then((address) => {
      this.#address = address;
      return address;
    });
    return this.#ready;
  }

  /** Stop serving /metrics (the registry stays readable). */
  async close(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (!server?.listening) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }
}

/**
 * An HTTP server answering GET/HEAD /metrics with `text()` (404 elsewhere, 405 for other
 * methods, 500 with the message if `text()` fails). `ready` rejects if `spec` cannot be bound.
 */
export function serveMetrics(
  spec: string | number,
  text: () => Promise<string>,
  contentType: () => string,
): { server: http.Server; ready: Promise<AddressInfo> } {
  const { host, port } = parseAddress(spec);
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found; try /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    text().then(
      (body) => {
        res.writeHead(200, { 'content-type': contentType() });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (err: Error) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`);
      },
    );
  });
  const ready = new Promise<AddressInfo>((resolve, reject) => {
    server.once('error', (err) =>
      reject(
        new CoreError('TLSPROXY_ERR_LISTEN', `cannot serve metrics on ${spec}: ${err.message}`, {
          cause: err,
        }),
      ),
    );
    server.listen({ host, port }, () => resolve(server.address() as AddressInfo));
  });
  return { server, ready };
}
