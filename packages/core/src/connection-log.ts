// The connection log: every line a connection writes carries its id and dialect; at the end, one
// closing line ("connection ended") and one outcome metric, whatever way the connection went.
// Client bytes are never logged, only sizes; a dialect's command report only by a name-shaped name.
import type { LogAction } from './dialect.js';
import type { Logger } from './logger.js';
import {
  type ConnectionMetrics,
  type Metrics,
  noConnectionMetrics,
  type Outcome,
  type Role,
} from './metrics.js';

/** A command name a dialect reports is logged only if it looks like one (never arguments). */
const COMMAND_NAME = /^[A-Za-z0-9_-]{1,32}$/;

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export class ConnectionLog {
  /** Prometheus metrics for this connection (a no-op when the proxy has none). */
  readonly m: ConnectionMetrics;
  readonly #logger: Logger;
  readonly #conn: string;
  readonly #dialect: string;
  readonly #role: Role;
  readonly #t0 = performance.now();
  #ended = false;
  /** Bytes the client sent before TLS. */
  received = 0;
  /** Replies written in the preamble. */
  replies = 0;
  /** Commands the dialect reported. */
  commands = 0;

  constructor(
    logger: Logger,
    conn: string,
    dialect: string,
    metrics: Metrics | undefined,
    role: Role = 'server',
  ) {
    this.#logger = logger;
    this.#conn = conn;
    this.#dialect = dialect;
    this.#role = role;
    this.m = metrics?.connection(dialect, role) ?? noConnectionMetrics;
    this.m.stage('preamble');
  }

  /** Whether the logger writes `level` at all (so a caller can skip building a line). */
  enabled(level: LogLevel): boolean {
    return this.#logger.enabled?.(level) !== false;
  }

  log(level: LogLevel, msg: string, fields: Record<string, unknown> = {}): void {
    if (this.#logger.enabled?.(level) === false) return;
    // The client role says so on every line; the server role's lines stay as they were.
    const role = this.#role === 'client' ? { role: 'client' } : {};
    this.#logger.log(level, msg, { conn: this.#conn, dialect: this.#dialect, ...role, ...fields });
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** Seconds since the connection was accepted (for histograms). */
  seconds(): number {
    return (performance.now() - this.#t0) / 1000;
  }

  /** Milliseconds since the connection was accepted. */
  elapsed(): number {
    return Math.round((performance.now() - this.#t0) * 10) / 10;
  }

  /** The one closing line and metric per connection (later calls are ignored). */
  end(outcome: Outcome, reason: string): void {
    if (this.#ended) return;
    this.#ended = true;
    this.m.stage(null);
    this.m.ended(outcome);
    this.log('info', 'connection ended', {
      outcome,
      reason,
      durationMs: this.elapsed(),
      preambleBytes: this.received,
      replies: this.replies,
      commands: this.commands || undefined,
    });
  }

  /** A dialect's report of a pre-TLS command: its name only, never `message` or arguments. */
  command(a: LogAction): void {
    const name =
      typeof a.command === 'string' && COMMAND_NAME.test(a.command) ? a.command.toUpperCase() : '?';
    this.commands++;
    if (a.event === 'bad-command') {
      this.m.badCommand();
      this.log(a.level, 'bad command', { command: name });
    } else {
      this.log(a.level, 'command', { command: name });
    }
  }

  /** Bytes dropped at the switch-over: a warning line (sizes only) when there were any. */
  discarded(bytes: number): void {
    if (bytes > 0)
      this.log('warn', 'discarded bytes sent after STARTTLS (never interpreted)', { bytes });
  }
}
