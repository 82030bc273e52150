// What one connection holds in this process, shared by the units that drive it (session.ts, the
// driver; transition.ts, the switch-over; handoff.ts, the hand-off): its socket and descriptor,
// its places in the listener's limits, and the promises that say when it is done and released.
import { type OwnedFd, RawStream } from '@tlsproxy/fdpass';
import type { HandoffInfo } from '@tlsproxy/handoff';
import { randomKey } from '@tlsproxy/pool';
import { ConnectionLog } from './connection-log.js';
import type { SessionAddresses, SessionConfig } from './session.js';
import { SwitchOver } from './switchover.js';

/** What the proxy is told of a connection's end (its books: the sessions it knows, the limits). */
export interface SessionHooks {
  /** The session is over here (a relay may go on). */
  done(): void;
  /** Nothing of the connection is held here any more; called once, after done(). */
  released(): void;
}

interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** A client that does not read its last reply is cut off after this long. */
export const CLOSE_LINGER_MS = 2000;
/**
 * Refused connections (past a limit) that may linger in a process: their reply going out and the
 * client's FIN awaited, up to CLOSE_LINGER_MS each. Past it a refused connection is closed as
 * soon as its reply is with the kernel: refusals come at the attacker's rate, and each lingering
 * one is a descriptor no limit counts.
 */
export const REFUSED_MAX_LINGERING = 256;
/**
 * After our goodbye (the last reply and FIN), what the peer still sends is read and dropped — its
 * FIN ends the connection at once — up to this much; past it the connection is cut instead of
 * being read until CLOSE_LINGER_MS: a peer ignoring our FIN could make us read at line rate.
 */
export const CLOSE_DRAIN_BYTES = 64 * 1024;
/** Earlier replies not on the wire after this long: the hand-off goes on anyway. */
export const FLUSH_TIMEOUT_MS = 5000;

/**
 * Stands in for a client stream that has closed after the switch-over, so a connection whose TLS
 * session is still relayed does not keep the closed stream (and its handler) alive: writes to it
 * fail quietly, `destroyed` is true.
 */
const GONE = RawStream.closed();

export class ConnectionState {
  readonly id = randomKey(6).toString('hex');
  /** The client's connection, read and written straight from its descriptor. */
  socket: RawStream;
  /** An idle preamble connection without its Timeouts (session.ts): the sweep keeps its deadlines. */
  parked = false;
  /** Past MAX_PREAMBLE_OUTPUT of replies unread by the client: not reading it until they are out. */
  outputStuck = false;
  /** When the client last sent something (ms, Date.now()): idle connections get parked. */
  lastActive = Date.now();
  readonly config: SessionConfig;
  readonly remote: SessionAddresses;
  readonly log: ConnectionLog;
  /** Which bytes reach the dialect, and which are dropped at the switch-over. */
  readonly gate = new SwitchOver();
  /** The client's descriptor once detached from the socket, until it is handed on or closed. */
  fd: OwnedFd | undefined;
  goAheadSent = false;
  /** The last STARTTLS (or plaintext hand-off) found no backend, and none succeeded since. */
  unavailable = false;
  dialectFailed = false;
  socketError: string | undefined;
  timer: NodeJS.Timeout | undefined;
  deadline: NodeJS.Timeout | undefined;
  /** The TLS engine (or a connect-mode backend) still relays this connection here. */
  relaying = false;
  /** When the preamble must be over (ms, Date.now()): its timer, or the sweep while parked. */
  deadlineAt = 0;
  /** When the dialect asked for its timer() (ms), if it did: its timer, or the sweep while parked. */
  timerAt: number | undefined;
  #handshakeSlot = false;
  /** endSocket() ran and the client's stream has not closed yet: its descriptor still counts. */
  #closing = false;
  /** Bytes read (and dropped) since endSocket(): CLOSE_DRAIN_BYTES at most. */
  #drained = 0;
  #finished = false;
  #released = false;
  /** Told first when the connection is done, then when it is released (the proxy's books). */
  #hooks: SessionHooks | undefined;
  // The promises are made only when asked for (tests, shutdown): thousands of idle connections
  // would otherwise hold two promises, their resolvers and their reactions each.
  #doneWaiter: Deferred | undefined;
  #releasedWaiter: Deferred | undefined;

  constructor(socket: RawStream, config: SessionConfig, addresses: SessionAddresses) {
    this.socket = socket;
    this.config = config;
    this.log = new ConnectionLog(config.logger, this.id, config.dialect.name, config.metrics);
    this.remote = addresses;
  }

  /** Resolves when the session is over in this process (its relay, if any, may go on). */
  get done(): Promise<void> {
    if (this.#finished) return Promise.resolve();
    this.#doneWaiter ??= deferred();
    return this.#doneWaiter.promise;
  }

  /**
   * Resolves when this process holds nothing of the connection any more: after the preamble,
   * the handshake and — with the TLS engine or a connect-mode backend relaying here — the relay.
   * Connection limits count a connection until then, in every phase.
   */
  get released(): Promise<void> {
    if (this.#released) return Promise.resolve();
    this.#releasedWaiter ??= deferred();
    return this.#releasedWaiter.promise;
  }

  /** Tell `hooks` when the connection is done and released (at once for what already happened). */
  track(hooks: SessionHooks): void {
    if (this.#finished) hooks.done();
    if (this.#released) hooks.released();
    else this.#hooks = hooks;
  }

  /** What the client sent after endSocket(), dropped; past CLOSE_DRAIN_BYTES the stream goes.
   * True when the bytes were the closing connection's (the caller does nothing more). */
  drainClosing(bytes: number): boolean {
    if (!this.#closing) return false;
    this.#drained += bytes;
    if (this.#drained > CLOSE_DRAIN_BYTES) this.socket.destroy();
    return true;
  }

  /** The client's stream has closed: let it go (the connection may live on, relayed). */
  socketGone(): void {
    this.socket = GONE;
    if (this.#closing) {
      this.#closing = false;
      this.maybeRelease();
    }
  }

  /** No more timers: the preamble is over (or going). */
  clearTimers(): void {
    this.stopTimeouts();
    this.timerAt = undefined;
  }

  /** Give up the Timeouts but keep their deadlines (parked: the proxy's sweep checks them). */
  stopTimeouts(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.deadline) clearTimeout(this.deadline);
    this.timer = undefined;
    this.deadline = undefined;
  }

  /** A place among the listener's handshakes at once (true when there is no cap). */
  acquireHandshake(): boolean {
    const h = this.config.handshakes;
    if (!h || this.#handshakeSlot) return true;
    if (!h.acquire()) return false;
    this.#handshakeSlot = true;
    return true;
  }

  releaseHandshake(): void {
    if (!this.#handshakeSlot) return;
    this.#handshakeSlot = false;
    this.config.handshakes?.release();
  }

  /** The relay here is over: the connection's places in the limits are free. */
  relayEnded(): void {
    this.relaying = false;
    this.maybeRelease();
  }

  finish(): void {
    this.gate.close();
    this.clearTimers();
    if (!this.#finished) {
      this.#finished = true;
      this.#hooks?.done();
      this.#doneWaiter?.resolve();
    }
    this.maybeRelease();
  }

  /** Everything the connection held in this process is gone: free its places in the limits. */
  maybeRelease(): void {
    if (!this.#finished || this.relaying || this.#closing || this.#released) return;
    this.#released = true;
    this.releaseHandshake();
    const hooks = this.#hooks;
    this.#hooks = undefined;
    hooks?.released();
    this.#releasedWaiter?.resolve();
  }

  /**
   * Write a last reply (if any) and close; a client that never reads is cut off after 2 s. Until
   * the stream is gone the connection keeps its places in the limits: a client that leaves its
   * end open would otherwise hold a descriptor no limit counts, as often as it can reconnect.
   * What the client still sends is read and dropped (nothing reaches the dialect any more), so
   * its FIN is seen and the stream goes at once.
   */
  endSocket(data: Uint8Array | undefined): void {
    const socket = this.socket;
    this.gate.close();
    socket.end(data);
    if (socket.destroyed) return;
    this.#closing = true;
    socket.startReading();
    setTimeout(() => socket.destroy(), CLOSE_LINGER_MS).unref();
  }

  /** Earlier replies on the wire (or 5 s passed) before the descriptor changes hands. */
  flushed(): Promise<void> {
    if (this.socket.writableLength === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, FLUSH_TIMEOUT_MS);
      void this.socket.flushed().then(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  info(extra: Partial<HandoffInfo> = {}): HandoffInfo {
    return {
      dialect: this.config.dialect.name,
      handoff: this.config.handoff,
      serverName: null,
      tls: null,
      clientIdentity: null,
      remoteAddress: this.remote.address,
      remotePort: this.remote.port,
      localAddress: this.remote.localAddress,
      localPort: this.remote.localPort,
      controlKey: null,
      connectionId: this.id,
      dialectState: {},
      dialectStateOrigin: 'pre-tls',
      ...extra,
    };
  }
}
