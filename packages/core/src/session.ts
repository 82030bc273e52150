// One client connection, the driver: socket events in, the dialect's actions out, and the limits
// the engine owns in the preamble (its deadline, the bytes before TLS). The rest lives in units
// of its own: switchover.ts decides what happens to bytes at and after STARTTLS (pure),
// transition.ts performs the way to the hand-off, handoff.ts the handshake and the delivery to
// the backend, connection-log.ts the log lines and the one closing line, and connection.ts what
// the connection holds (descriptor, places in the limits) until it is released.
import { type OwnedFd, RawStream } from '@tlsproxy/fdpass';
import type { HandshakeRequest, TlsEngineApi } from '@tlsproxy/pool';
import type { HandoffTarget } from './backend.js';
import { ConnectionState, type SessionHooks } from './connection.js';
import type { Action, Dialect, DialectSession } from './dialect.js';
import type { Logger } from './logger.js';
import type { Metrics, Outcome } from './metrics.js';
import { plaintext, startTls } from './transition.js';

export { MAX_DIALECT_STATE } from './transition.js';

/**
 * A preamble connection whose client has been silent this long, with nothing of ours left to
 * write, is parked: it gives up its Timeouts (the proxy's sweep keeps their deadlines) until the
 * client speaks or a deadline passes. Real clients answer the greeting in milliseconds; what
 * waits this long is a slow or idle client — the case where memory per held connection is what
 * counts.
 */
export const PARK_AFTER_MS = 500;

/**
 * Replies queued for a client that does not read them: past this many bytes the session stops
 * reading the client until they are out (the kernel's buffers are full by then). A dialect's
 * replies are bounded by its own command limits, but a client that pipelines commands and never
 * reads would otherwise make memory grow with what it sends; this bounds it for every dialect,
 * third-party ones included, as Dovecot and Postfix stop reading a client whose output is stuck.
 */
export const MAX_PREAMBLE_OUTPUT = 64 * 1024;

export interface SessionAddresses {
  address: string;
  port: number;
  localAddress: string;
  localPort: number;
}

export interface SessionConfig {
  dialect: Dialect<unknown>;
  options: unknown;
  limits: Readonly<Record<string, number>>;
  hostname: string;
  serverNames: readonly string[];
  backend: HandoffTarget;
  pool: TlsEngineApi;
  handoff: 'plain' | 'crypt';
  tls: Omit<HandshakeRequest, 'checkServerName' | 'connectionId'>;
  /** Ask the backend about every SNI name, even if it did not ask to be asked (`--check-server-name`).
   * Without it the backend is asked whenever it declared that it checks names. */
  checkServerName: boolean;
  /** Relayed connection with no traffic either way for this long is closed; 0 or absent: never. */
  idleTimeoutMs?: number;
  /** The listener's cap on connections in the TLS handshake at once: take a place before the
   * handshake (false: none free, the client gets the temporary failure), give it back after. */
  handshakes?: {
    acquire(): boolean;
    release(): void;
    /** Half the places or more are taken: a place held longer than needed may refuse a client. */
    short?(): boolean;
  };
  /** Whole preamble, connect to hand-off; the dialect's own idle timers are shorter. */
  preambleTimeoutMs: number;
  /** Bytes a client may send before TLS, in all. */
  maxPreambleBytes: number;
  logger: Logger;
  /** Prometheus metrics, when the proxy has them. */
  metrics?: Metrics;
}

export class Session {
  readonly #c: ConnectionState;
  readonly #dialect: DialectSession;
  readonly id: string;

  /**
   * `fd`: the accepted connection, now the session's; `addresses`: its own, or the client's real
   * ones when a trusted load balancer sent a PROXY header.
   */
  constructor(fd: OwnedFd, config: SessionConfig, addresses: SessionAddresses) {
    const socket = new RawStream(fd, {
      data: (d) => this.#onData(d),
      end: () => this.#onEnd(),
      close: (err) => this.#onClose(err?.message),
    });
    const c = new ConnectionState(socket, config, addresses);
    this.#c = c;
    this.id = c.id;
    this.#dialect = config.dialect.create({
      options: config.options,
      limits: config.limits,
      hostname: config.hostname,
      connectionId: this.id,
      serverNames: config.serverNames,
    });
    c.deadlineAt = Date.now() + config.preambleTimeoutMs;
    this.#armDeadline();
    if (c.log.enabled('info'))
      c.log.log('info', 'accepted', {
        remote: `${c.remote.address}:${c.remote.port}`,
        localPort: c.remote.localPort,
      });
    this.#run(this.#guard(() => this.#dialect.start(Date.now())));
    // Start reading only if the dialect still wants plaintext: for implicit TLS the ClientHello
    // stays in the kernel for the engine.
    this.#read();
  }

  /** Read the client while the preamble goes on and its replies are not stuck. */
  #read(): void {
    const c = this.#c;
    if (c.gate.phase === 'preamble' && !c.outputStuck) c.socket.startReading();
  }

  /**
   * After the dialect's replies: past MAX_PREAMBLE_OUTPUT queued, stop reading the client until
   * they are out (see there). The preamble's deadline and the dialect's timers still run.
   */
  #checkOutput(): void {
    const c = this.#c;
    const queued = c.socket.writableLength;
    if (c.outputStuck || c.gate.phase !== 'preamble' || queued <= MAX_PREAMBLE_OUTPUT) return;
    c.outputStuck = true;
    c.socket.stopReading();
    c.log.log('info', 'client not reading its replies: reading paused', {
      queued,
      limit: MAX_PREAMBLE_OUTPUT,
    });
    void c.socket.flushed().then(() => {
      c.outputStuck = false;
      if (!c.socket.destroyed) this.#read();
    });
  }

  /** Resolves when the session is over in this process (its relay, if any, may go on). */
  get done(): Promise<void> {
    return this.#c.done;
  }

  /**
   * Resolves when this process holds nothing of the connection any more: after the preamble,
   * the handshake and — with the TLS engine or a connect-mode backend relaying here — the relay.
   * Connection limits count a connection until then, in every phase.
   */
  get released(): Promise<void> {
    return this.#c.released;
  }

  /** Tell `hooks` when the session is done and released (the proxy's books, without promises). */
  track(hooks: SessionHooks): void {
    this.#c.track(hooks);
  }

  /**
   * The proxy's sweep (four times a second): park an idle connection; for a parked one, the
   * deadlines its timers would keep — it has none while parked, so an idle connection holds no
   * Timeout, closure or context for them.
   */
  sweep(now: number): void {
    const c = this.#c;
    if (!c.parked) {
      this.park(now);
      return;
    }
    if (now >= c.deadlineAt) this.#deadlinePassed();
    else if (c.timerAt !== undefined && now >= c.timerAt) this.#timerDue();
  }

  #armDeadline(): void {
    const c = this.#c;
    c.deadline = setTimeout(() => this.#deadlinePassed(), Math.max(0, c.deadlineAt - Date.now()));
  }

  #deadlinePassed(): void {
    const c = this.#c;
    c.log.log('info', 'preamble took too long, closing', { limitMs: c.config.preambleTimeoutMs });
    c.log.end('preamble_timeout', 'preamble took too long');
    // The protocol's own timeout reply where the dialect has one (as for overflow()).
    let reply: Uint8Array | undefined;
    if (this.#dialect.expired && c.gate.phase === 'preamble' && !c.socket.destroyed) {
      try {
        reply = this.#dialect.expired(Date.now());
      } catch (err) {
        c.log.log('error', 'dialect threw in expired()', { error: (err as Error).message });
      }
    }
    if (reply === undefined || reply.length === 0) {
      this.#destroy();
      return;
    }
    c.parked = false;
    this.#closeWith(reply);
  }

  #onClose(error: string | undefined): void {
    const c = this.#c;
    if (error !== undefined) {
      c.socketError = error;
      c.log.log('debug', 'client socket error', { error });
    }
    // In preamble the client went away; during the transition the STARTTLS path records the
    // end itself (detaching the descriptor closes the stream too).
    if (c.gate.phase === 'preamble')
      c.log.end(this.#preambleOutcome(), c.socketError ?? 'client connection closed');
    c.parked = false;
    c.finish();
    c.socketGone();
  }

  #onEnd(): void {
    // Past the preamble (closing, handing off) the dialect has said its last: the stream ends
    // by itself once our FIN is out too.
    if (this.#c.gate.phase !== 'preamble') return;
    this.#wake();
    this.#run(
      this.#guard(
        () => this.#dialect.eof?.(Date.now()) ?? [{ type: 'close', reason: 'client closed' }],
      ),
    );
  }

  /**
   * Park the connection if it is idle in its preamble (PARK_AFTER_MS): nothing buffered either
   * way, the client silent. Returns whether it did. The proxy calls this from a sweep.
   */
  park(now: number): boolean {
    const c = this.#c;
    if (c.parked || c.gate.phase !== 'preamble' || now - c.lastActive < PARK_AFTER_MS) return false;
    const socket = c.socket;
    if (
      socket.destroyed ||
      socket.writableLength > 0 ||
      socket.readableEnded ||
      socket.writableEnded ||
      !socket.reading
    )
      return false;
    c.parked = true;
    // The sweep keeps the deadlines now (deadlineAt, timerAt); #wake arms timers again.
    c.stopTimeouts();
    c.log.log('debug', 'idle: parked');
    return true;
  }

  /** A parked connection gets its timers again. */
  #wake(): void {
    const c = this.#c;
    if (!c.parked) return;
    c.parked = false;
    if (c.gate.phase !== 'preamble') return;
    this.#armDeadline();
    if (c.timerAt !== undefined) this.#armTimer();
    c.log.log('debug', 'resumed');
  }

  /** How a connection that ends in its preamble is counted. */
  #preambleOutcome(): Outcome {
    if (this.#c.dialectFailed) return 'dialect_error';
    return this.#c.unavailable ? 'backend_unavailable' : 'closed_in_preamble';
  }

  /** A dialect that throws is a bug in the dialect: log it and close, never crash the process. */
  #guard(fn: () => Action[]): Action[] {
    try {
      return fn();
    } catch (err) {
      this.#c.dialectFailed = true;
      this.#c.log.log('error', 'dialect threw; closing the connection', {
        error: (err as Error).stack ?? String(err),
      });
      return [{ type: 'close', reason: 'dialect error' }];
    }
  }

  #onData(chunk: Buffer): void {
    const c = this.#c;
    if (c.drainClosing(chunk.length)) return;
    // After the STARTTLS command nothing reaches the dialect (switchover.ts).
    const d = c.gate.read(chunk);
    if (d === undefined) return;
    this.#wake();
    c.lastActive = Date.now();
    c.log.received += d.length;
    if (c.log.received > c.config.maxPreambleBytes) {
      c.log.log('warn', 'too many bytes before TLS, closing', { limit: c.config.maxPreambleBytes });
      c.log.end('preamble_too_large', 'too many bytes before TLS');
      // The protocol's own error first, where the dialect has one; the read that crossed the
      // limit is never given to the dialect.
      let reply: Uint8Array | undefined;
      if (this.#dialect.overflow) {
        try {
          reply = this.#dialect.overflow(Date.now());
        } catch (err) {
          c.log.log('error', 'dialect threw in overflow()', { error: (err as Error).message });
        }
      }
      this.#closeWith(reply);
      return;
    }
    const actions = this.#guard(() => this.#dialect.receive(d, Date.now()));
    // Sizes only: client bytes are never logged.
    if (c.log.enabled('debug'))
      c.log.log('debug', 'preamble input', {
        bytes: d.length,
        replies: actions.filter((a) => a.type === 'send').length,
      });
    this.#run(actions);
  }

  #run(actions: Action[]): void {
    const c = this.#c;
    // The switch-over unit cuts the list after the action that ends the preamble.
    for (const a of c.gate.cut(actions)) {
      switch (a.type) {
        case 'send':
          c.log.replies++;
          c.socket.write(a.data);
          break;
        case 'log':
          if (a.event) c.log.command(a);
          else c.log.log(a.level, a.message);
          break;
        case 'timer':
          this.#setTimer(a.at);
          break;
        case 'close':
          c.log.end(this.#preambleOutcome(), a.reason);
          this.#closeWith(a.data);
          return;
        case 'starttls':
          void startTls(c, a, () => this.#resume());
          return;
        case 'plaintext':
          void plaintext(c, a);
          return;
      }
    }
    this.#checkOutput();
  }

  /** Back in the preamble after a temporary failure at STARTTLS. */
  #resume(): void {
    this.#run(this.#guard(() => this.#dialect.tlsUnavailable(Date.now())));
    this.#read();
  }

  /** Write a last reply (if any), stop the timers, close; reading goes on (and drops everything)
   * so the client's FIN is seen and the socket goes. */
  #closeWith(data: Uint8Array | undefined): void {
    this.#c.gate.close();
    this.#c.clearTimers();
    this.#c.endSocket(data);
  }

  /** The dialect's timer (one at a time: a new one replaces the last). */
  #setTimer(at: number): void {
    const c = this.#c;
    c.timerAt = at;
    // While parked the sweep watches timerAt; a parked connection holds no Timeout.
    if (!c.parked) this.#armTimer();
  }

  #armTimer(): void {
    const c = this.#c;
    if (c.timer) clearTimeout(c.timer);
    c.timer = setTimeout(() => this.#timerDue(), Math.max(0, (c.timerAt ?? 0) - Date.now()));
  }

  #timerDue(): void {
    const c = this.#c;
    if (c.timer) clearTimeout(c.timer);
    c.timer = undefined;
    c.timerAt = undefined;
    if (c.gate.phase !== 'preamble') return;
    this.#wake();
    if (c.gate.phase === 'preamble') this.#run(this.#guard(() => this.#dialect.timer(Date.now())));
  }

  /** End a session still in its preamble (proxy shutdown); hand-offs in flight finish. */
  abort(): void {
    if (this.#c.gate.phase === 'preamble') {
      this.#c.log.end('shutdown', 'proxy shutting down');
      this.#destroy();
    }
  }

  #destroy(): void {
    const c = this.#c;
    c.gate.close();
    c.parked = false;
    c.socket.destroy();
    c.finish();
  }
}
