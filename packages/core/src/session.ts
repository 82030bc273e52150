// One client connection: drives its dialect over the socket, enforces the limits the engine
// owns (preamble deadline, bytes before TLS), and performs the STARTTLS transition.
//
// STARTTLS transition, and why bytes are discarded rather than the connection closed: the
// dialect hands back `trailing` (bytes after the STARTTLS command in the same read). At the
// go-ahead the engine also drops whatever is still pending in Node's buffer and the kernel's —
// all of it was sent before the client could have seen the go-ahead, so it is pipelined plaintext
// (CVE-2011-0411). It is never interpreted and never reaches TLS or the backend; a log line says
// how much was dropped. Closing instead would punish clients that merely pipeline harmlessly,
// and an attacker gains nothing from discarded bytes. Bytes that arrive *after* the go-ahead are
// the client's TLS handshake and belong to the TLS engine.
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import type { HandoffInfo } from '@tlsproxy/backend';
import { binding, detachSocket, OwnedFd, socketFd } from '@tlsproxy/fdpass';
import type { HandshakeRequest, TlsEngineApi } from '@tlsproxy/pool';
import type { HandoffTarget } from './backend.js';
import type {
  Action,
  Dialect,
  DialectSession,
  LogAction,
  PlaintextAction,
  StartTlsAction,
} from './dialect.js';
import type { Logger } from './logger.js';
import {
  type ConnectionMetrics,
  type Metrics,
  noConnectionMetrics,
  type Outcome,
} from './metrics.js';

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
  handshakes?: { acquire(): boolean; release(): void };
  /** Whole preamble, connect to hand-off; the dialect's own idle timers are shorter. */
  preambleTimeoutMs: number;
  /** Bytes a client may send before TLS, in all. */
  maxPreambleBytes: number;
  logger: Logger;
  /** Prometheus metrics, when the proxy has them. */
  metrics?: Metrics;
}

/** Dialect state handed to the backend, as JSON; leaves room in fdpass's 32 KiB header for the
 * rest of the info (client certificate PEM, addresses). */
export const MAX_DIALECT_STATE = 16 * 1024;

/** Cap on bytes thrown away at the go-ahead (more than this is an attack; the rest goes to TLS and fails). */
const MAX_DISCARD = 1 << 20;

/** A command name a dialect reports is logged only if it looks like one (never arguments). */
const COMMAND_NAME = /^[A-Za-z0-9_-]{1,32}$/;

export class Session {
  readonly id = randomBytes(6).toString('hex');
  readonly #socket: net.Socket;
  readonly #config: SessionConfig;
  readonly #dialect: DialectSession;
  readonly #remote: { address: string; port: number; localAddress: string; localPort: number };
  #timer: NodeJS.Timeout | undefined;
  #deadline: NodeJS.Timeout | undefined;
  #received = 0;
  #state: 'preamble' | 'transition' | 'done' = 'preamble';
  readonly done: Promise<void>;
  #resolveDone!: () => void;
  // Logs and metrics only: none of this changes what the session does.
  readonly #m: ConnectionMetrics;
  readonly #t0 = performance.now();
  #ended = false;
  #replies = 0;
  #commands = 0;
  /** The last STARTTLS (or plaintext hand-off) found no backend, and none succeeded since. */
  #unavailable = false;
  #dialectFailed = false;
  #socketError: string | undefined;
  /** The client's descriptor once detached from the socket, until it is handed on or closed. */
  #fd: OwnedFd | undefined;
  #handshakeSlot = false;
  #goAheadSent = false;
  /** The TLS engine (or a connect-mode backend) still relays this connection here. */
  #relaying = false;
  #finished = false;
  /**
   * Resolves when this process holds nothing of the connection any more: after the preamble,
   * the handshake and — with the TLS engine or a connect-mode backend relaying here — the relay.
   * Connection limits count a connection until then, in every phase.
   */
  readonly released: Promise<void>;
  #release!: () => void;

  /** `addresses`: the client's real addresses when a trusted load balancer sent a PROXY header. */
  constructor(socket: net.Socket, config: SessionConfig, addresses?: SessionAddresses) {
    this.#socket = socket;
    this.#config = config;
    this.#m = config.metrics?.connection(config.dialect.name) ?? noConnectionMetrics;
    this.#m.stage('preamble');
    this.done = new Promise((r) => {
      this.#resolveDone = r;
    });
    this.released = new Promise((r) => {
      this.#release = r;
    });
    this.#remote = addresses ?? {
      address: socket.remoteAddress ?? '',
      port: socket.remotePort ?? 0,
      localAddress: socket.localAddress ?? '',
      localPort: socket.localPort ?? 0,
    };
    this.#dialect = config.dialect.create({
      options: config.options,
      limits: config.limits,
      hostname: config.hostname,
      connectionId: this.id,
      serverNames: config.serverNames,
    });
    socket.on('error', (err) => {
      this.#socketError = err.message;
      this.#log('debug', 'client socket error', { error: err.message });
    });
    socket.on('close', () => {
      // In preamble the client went away; during the transition the STARTTLS path records
      // the end itself (detaching the descriptor closes this socket object too).
      if (this.#state === 'preamble')
        this.#end(this.#preambleOutcome(), this.#socketError ?? 'client connection closed');
      this.#finish();
    });
    socket.on('data', (d: Buffer) => this.#onData(d));
    socket.on('end', () =>
      this.#run(this.#dialect.eof?.(Date.now()) ?? [{ type: 'close', reason: 'client closed' }]),
    );
    this.#deadline = setTimeout(() => {
      this.#log('info', 'preamble took too long, closing', { limitMs: config.preambleTimeoutMs });
      this.#end('preamble_timeout', 'preamble took too long');
      this.#destroy();
    }, config.preambleTimeoutMs);
    this.#log('info', 'accepted', {
      remote: `${this.#remote.address}:${this.#remote.port}`,
      localPort: this.#remote.localPort,
    });
    this.#run(this.#guard(() => this.#dialect.start(Date.now())));
    // Sockets arrive paused (accepted with pauseOnConnect). Start reading only if the dialect
    // still wants plaintext: resuming schedules a read even after a pause, which for implicit
    // TLS would pull the ClientHello into Node's buffer instead of leaving it for the engine.
    if (this.#state === 'preamble') socket.resume();
  }

  #log(
    level: 'debug' | 'info' | 'warn' | 'error',
    msg: string,
    fields: Record<string, unknown> = {},
  ): void {
    this.#config.logger.log(level, msg, {
      conn: this.id,
      dialect: this.#config.dialect.name,
      ...fields,
    });
  }

  /** Milliseconds since the connection was accepted. */
  #elapsed(): number {
    return Math.round((performance.now() - this.#t0) * 10) / 10;
  }

  /** How a connection that ends in its preamble is counted. */
  #preambleOutcome(): Outcome {
    if (this.#dialectFailed) return 'dialect_error';
    return this.#unavailable ? 'backend_unavailable' : 'closed_in_preamble';
  }

  /** The one closing line and metric per connection (later calls are ignored). */
  #end(outcome: Outcome, reason: string): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#m.stage(null);
    this.#m.ended(outcome);
    this.#log('info', 'connection ended', {
      outcome,
      reason,
      durationMs: this.#elapsed(),
      preambleBytes: this.#received,
      replies: this.#replies,
      commands: this.#commands || undefined,
    });
  }

  /** A dialect's report of a pre-TLS command: its name only, never `message` or arguments. */
  #command(a: LogAction): void {
    const name =
      typeof a.command === 'string' && COMMAND_NAME.test(a.command) ? a.command.toUpperCase() : '?';
    this.#commands++;
    if (a.event === 'bad-command') {
      this.#m.badCommand();
      this.#log(a.level, 'bad command', { command: name });
    } else {
      this.#log(a.level, 'command', { command: name });
    }
  }

  /** A dialect that throws is a bug in the dialect: log it and close, never crash the process. */
  #guard(fn: () => Action[]): Action[] {
    try {
      return fn();
    } catch (err) {
      this.#dialectFailed = true;
      this.#log('error', 'dialect threw; closing the connection', {
        error: (err as Error).stack ?? String(err),
      });
      return [{ type: 'close', reason: 'dialect error' }];
    }
  }

  #onData(d: Buffer): void {
    if (this.#state !== 'preamble') return;
    this.#received += d.length;
    if (this.#received > this.#config.maxPreambleBytes) {
      this.#log('warn', 'too many bytes before TLS, closing', {
        limit: this.#config.maxPreambleBytes,
      });
      this.#end('preamble_too_large', 'too many bytes before TLS');
      // The protocol's own error first, where the dialect has one; the read that crossed the
      // limit is never given to the dialect.
      let reply: Uint8Array | undefined;
      if (this.#dialect.overflow) {
        try {
          reply = this.#dialect.overflow(Date.now());
        } catch (err) {
          this.#log('error', 'dialect threw in overflow()', { error: (err as Error).message });
        }
      }
      this.#closeWith(reply);
      return;
    }
    const actions = this.#guard(() => this.#dialect.receive(d, Date.now()));
    // Sizes only: client bytes are never logged.
    this.#log('debug', 'preamble input', {
      bytes: d.length,
      replies: actions.filter((a) => a.type === 'send').length,
    });
    this.#run(actions);
  }

  #run(actions: Action[]): void {
    for (const a of actions) {
      if (this.#state !== 'preamble') return;
      switch (a.type) {
        case 'send':
          this.#replies++;
          this.#socket.write(a.data);
          break;
        case 'log':
          if (a.event) this.#command(a);
          else this.#log(a.level, a.message);
          break;
        case 'timer':
          this.#setTimer(a.at);
          break;
        case 'close':
          this.#end(this.#preambleOutcome(), a.reason);
          this.#closeWith(a.data);
          return;
        case 'starttls':
          void this.#startTls(a);
          return;
        case 'plaintext':
          void this.#plaintext(a);
          return;
      }
    }
  }

  /** Write a last reply (if any), stop reading, close; a client that never reads is cut off after 2 s. */
  #closeWith(data: Uint8Array | undefined): void {
    this.#state = 'done';
    this.#clearTimers();
    // Reading goes on (and drops everything) so the client's FIN is seen and the socket goes.
    if (data && data.length > 0) this.#socket.end(data);
    else this.#socket.end();
    // A client that never reads must not hold the socket open forever.
    setTimeout(() => this.#socket.destroy(), 2000).unref();
  }

  #setTimer(at: number): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        if (this.#state === 'preamble')
          this.#run(this.#guard(() => this.#dialect.timer(Date.now())));
      },
      Math.max(0, at - Date.now()),
    );
  }

  #clearTimers(): void {
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#deadline) clearTimeout(this.#deadline);
    this.#timer = undefined;
    this.#deadline = undefined;
  }

  #pauseReading(): void {
    this.#socket.pause();
    // pause() alone lets Node keep reading into its buffer; stop the handle, and tell Node so
    // (`reading`), or a later resume() would never restart it.
    const handle = (
      this.#socket as unknown as { _handle?: { readStop?(): void; reading?: boolean } }
    )._handle;
    if (handle?.readStop) {
      handle.readStop();
      handle.reading = false;
    }
  }

  /** End a session still in its preamble (proxy shutdown); hand-offs in flight finish. */
  abort(): void {
    if (this.#state === 'preamble') {
      this.#end('shutdown', 'proxy shutting down');
      this.#destroy();
    }
  }

  /** Drop what the client sent while we were deciding (Node's buffer and the kernel's). */
  #drainPending(): number {
    let n = 0;
    for (let c = this.#socket.read(); c !== null; c = this.#socket.read())
      n += (c as Buffer).length;
    try {
      n += binding().discard(socketFd(this.#socket), MAX_DISCARD);
    } catch {}
    return n;
  }

  #info(extra: Partial<HandoffInfo> = {}): HandoffInfo {
    return {
      dialect: this.#config.dialect.name,
      handoff: this.#config.handoff,
      serverName: null,
      tls: null,
      clientIdentity: null,
      remoteAddress: this.#remote.address,
      remotePort: this.#remote.port,
      localAddress: this.#remote.localAddress,
      localPort: this.#remote.localPort,
      controlKey: null,
      connectionId: this.id,
      dialectState: {},
      dialectStateOrigin: 'pre-tls',
      ...extra,
    };
  }

  /**
   * Any failure on the way to the hand-off (EMFILE from dup or socketpair, ENOMEM, a bug) ends
   * this one connection: the temporary-failure reply while the client still speaks plaintext,
   * everything it holds released, the process serving on.
   */
  async #startTls(a: StartTlsAction): Promise<void> {
    try {
      await this.#startTlsSteps(a);
    } catch (err) {
      this.#fail(err, a.unavailable);
    }
  }

  #fail(err: unknown, unavailable: Uint8Array): void {
    const code = (err as { code?: string }).code;
    this.#log('error', 'connection failed on its way to the hand-off; closing it', {
      error: (err as Error)?.message ?? String(err),
      code,
    });
    this.#end(
      this.#ended ? 'handoff_failed' : 'closed_in_preamble',
      `internal failure: ${code ?? (err as Error)?.message ?? String(err)}`,
    );
    this.#releaseHandshake();
    const fd = this.#fd;
    this.#fd = undefined;
    if (fd && !fd.closed) {
      // Detached, go-ahead not yet sent: the client still speaks plaintext.
      if (!this.#goAheadSent && unavailable.length > 0) {
        try {
          binding().write(fd.fd, Buffer.from(unavailable));
        } catch {}
      }
      fd.close();
    } else if (!this.#socket.destroyed && !this.#goAheadSent) {
      if (unavailable.length > 0) this.#socket.end(unavailable);
      else this.#socket.end();
      setTimeout(() => this.#socket.destroy(), 2000).unref();
    } else {
      this.#socket.destroy();
    }
    this.#relaying = false;
    this.#finish();
  }

  #releaseHandshake(): void {
    if (!this.#handshakeSlot) return;
    this.#handshakeSlot = false;
    this.#config.handshakes?.release();
  }

  /** Temporary failure before the go-ahead: the client hears so and the preamble goes on. */
  #unavailableNow(a: StartTlsAction, discardedBefore: number): void {
    const dropped = this.#drainPending();
    if (dropped > 0)
      this.#log('warn', 'discarded bytes sent after STARTTLS (never interpreted)', {
        bytes: dropped,
      });
    const discarded = discardedBefore + dropped;
    if (discarded > 0) this.#m.injection(discarded);
    if (a.unavailable.length > 0) this.#socket.write(a.unavailable);
    this.#state = 'preamble';
    this.#run(this.#guard(() => this.#dialect.tlsUnavailable(Date.now())));
    if (this.#state === 'preamble') this.#socket.resume();
  }

  async #startTlsSteps(a: StartTlsAction): Promise<void> {
    this.#state = 'transition';
    this.#pauseReading();
    // Time to the STARTTLS command; implicit TLS has none.
    if (a.goAhead.length > 0) this.#m.starttls((performance.now() - this.#t0) / 1000);
    this.#log('info', a.goAhead.length > 0 ? 'STARTTLS' : 'starting TLS (implicit)', {
      afterMs: this.#elapsed(),
      preambleBytes: this.#received,
      replies: this.#replies,
      commands: this.#commands || undefined,
    });
    // Bytes thrown away for this STARTTLS, in all: more than 0 is an injection attempt.
    let discarded = a.trailing.length;
    const countInjection = () => {
      if (discarded > 0) this.#m.injection(discarded);
      discarded = 0;
    };
    // The hand-off info travels as one fdpass message header: refuse a dialect state that could
    // not be delivered *before* the go-ahead, not as a dead connection after the handshake.
    if (Buffer.byteLength(JSON.stringify(a.state)) > MAX_DIALECT_STATE) {
      this.#log('error', 'dialect state too large to hand off; temporary failure', {
        limit: MAX_DIALECT_STATE,
      });
      // What the client pipelined after STARTTLS is dropped here too, never interpreted.
      this.#unavailableNow(a, discarded);
      return;
    }
    // The listener's cap on handshakes at once: past it, a temporary failure like a busy backend.
    if (this.#config.handshakes && !this.#handshakeSlot) {
      if (!this.#config.handshakes.acquire()) {
        this.#log('warn', 'TLS handshake limit reached: temporary failure');
        this.#m.backendUnavailable('starttls');
        this.#unavailable = true;
        this.#unavailableNow(a, discarded);
        return;
      }
      this.#handshakeSlot = true;
    }
    if (a.trailing.length > 0) {
      this.#log('warn', 'discarded bytes sent after STARTTLS (never interpreted)', {
        bytes: a.trailing.length,
      });
    }
    let ok = false;
    try {
      // Both must be there before the go-ahead: the backend, and (when it runs in its own
      // process) the TLS engine — otherwise the client would get a dead TLS session.
      const [backendOk, poolOk] = await Promise.all([
        this.#config.backend.available(),
        this.#config.handoff === 'crypt' || !this.#config.pool.available
          ? true
          : this.#config.pool.available(),
      ]);
      ok = backendOk && poolOk;
    } catch {}
    if (this.#socket.destroyed) {
      countInjection();
      this.#end('closed_in_preamble', 'client closed during STARTTLS');
      return this.#finish();
    }
    if (!ok) {
      this.#log('warn', 'no backend or TLS engine can take the connection: temporary failure', {
        backend: this.#config.backend.description,
      });
      this.#m.backendUnavailable('starttls');
      this.#unavailable = true;
      this.#releaseHandshake();
      this.#unavailableNow(a, discarded);
      return;
    }
    this.#unavailable = false;
    this.#clearTimers();
    // Earlier replies must be on the wire before the descriptor changes hands.
    await this.#flushed();
    if (this.#socket.destroyed) {
      countInjection();
      this.#end('closed_in_preamble', 'client closed during STARTTLS');
      return this.#finish();
    }
    const { fd, buffered } = detachSocket(this.#socket);
    this.#fd = fd;
    // With a go-ahead to send, everything pending predates it: pipelined plaintext. With none
    // (implicit TLS) the client never waits, and what is pending is its ClientHello — but then
    // reading stopped before the first read, so nothing sits in Node's buffer.
    let dropped = buffered.length;
    if (a.goAhead.length > 0) {
      try {
        dropped += binding().discard(fd.fd, MAX_DISCARD);
      } catch {}
    }
    if (dropped > 0)
      this.#log('warn', 'discarded bytes sent after STARTTLS (never interpreted)', {
        bytes: dropped,
      });
    discarded += dropped;
    countInjection();
    if (a.goAhead.length > 0) {
      let n = 0;
      try {
        n = binding().write(fd.fd, Buffer.from(a.goAhead));
      } catch {}
      if (n !== a.goAhead.length) {
        this.#log('info', 'client not reading; could not send the STARTTLS go-ahead');
        this.#fd = undefined;
        fd.close();
        this.#end('closed_in_preamble', 'could not send the STARTTLS go-ahead');
        return this.#finish();
      }
      this.#goAheadSent = true;
    }
    const info = this.#info({ dialectState: a.state });
    this.#fd = undefined;
    if (this.#config.handoff === 'crypt') {
      this.#releaseHandshake();
      await this.#deliver(fd, info);
      return;
    }
    await this.#handshake(fd, info);
  }

  async #handshake(fd: OwnedFd, info: HandoffInfo): Promise<void> {
    const backend = this.#config.backend;
    const request: HandshakeRequest = { ...this.#config.tls, connectionId: this.id };
    if (this.#m.onBytes) request.onBytes = this.#m.onBytes;
    // The backend may use the control key while the session lives; after that it is forgotten
    // (a session can end before the hand-off is confirmed: then right after it).
    let controlKey: string | undefined;
    let sessionEnded = false;
    request.onEnd = () => {
      sessionEnded = true;
      if (controlKey !== undefined) backend.forget?.(controlKey);
      // The relay is over: the connection's places in the limits are free.
      this.#relaying = false;
      this.#maybeRelease();
    };
    if (this.#config.idleTimeoutMs) request.idleTimeoutMs = this.#config.idleTimeoutMs;
    this.#relaying = true;
    this.#m.stage('handshake');
    const t0 = performance.now();
    // Asked when the listener says so, and whenever the backend declared that it checks names
    // (a backend that registered onServerName expects to be able to refuse them).
    if (this.#config.checkServerName || backend.wantsServerNameCheck?.() === true) {
      request.checkServerName = (name) =>
        backend.checkServerName(name, { ...info, serverName: name }).catch(() => false);
    }
    let result: Awaited<ReturnType<TlsEngineApi['handshake']>>;
    try {
      result = await this.#config.pool.handshake(fd, request);
    } catch (err) {
      this.#relaying = false;
      this.#releaseHandshake();
      const ms = performance.now() - t0;
      this.#m.handshake('failed', ms / 1000);
      this.#log('info', 'TLS handshake failed', {
        error: (err as Error).message,
        code: (err as { code?: string }).code,
        durationMs: Math.round(ms * 10) / 10,
      });
      this.#end('tls_failed', (err as Error).message);
      return this.#finish();
    }
    this.#releaseHandshake();
    const ms = performance.now() - t0;
    this.#m.handshake('ok', ms / 1000);
    const { version, cipher, alpn, serverName, clientIdentity } = result.info;
    this.#log('info', 'TLS established', {
      version,
      cipher,
      alpn,
      sni: serverName ?? undefined,
      client: clientIdentity?.subject,
      durationMs: Math.round(ms * 10) / 10,
    });
    controlKey = result.controlKey.toString('hex');
    await this.#deliver(
      result.plaintext,
      {
        ...info,
        serverName,
        tls: { version, cipher, alpn },
        clientIdentity,
        controlKey,
      },
      undefined,
      () => void this.#config.pool.control(result.controlKey, 'close').catch(() => {}),
    );
    if (sessionEnded) backend.forget?.(controlKey);
  }

  async #plaintext(a: PlaintextAction): Promise<void> {
    try {
      await this.#plaintextSteps(a);
    } catch (err) {
      this.#fail(err, a.unavailable);
    }
  }

  async #plaintextSteps(a: PlaintextAction): Promise<void> {
    this.#state = 'transition';
    this.#pauseReading();
    this.#clearTimers();
    let ok = false;
    try {
      ok = await this.#config.backend.available();
    } catch {}
    if (!ok) {
      this.#log('warn', 'no backend for a plaintext hand-off: temporary failure');
      this.#m.backendUnavailable('plaintext');
      this.#end('backend_unavailable', 'no backend for a plaintext hand-off');
      this.#socket.end(a.unavailable);
      // Reading is paused, so a client that never closes would hold the socket: bound it.
      setTimeout(() => this.#socket.destroy(), 2000).unref();
      return this.#finish();
    }
    await this.#flushed();
    if (this.#socket.destroyed) {
      this.#end('closed_in_preamble', 'client closed before the plaintext hand-off');
      return this.#finish();
    }
    const { fd, buffered } = detachSocket(this.#socket);
    // Here the pending bytes are the client's next commands: they belong to the backend.
    const all = Buffer.concat([Buffer.from(a.buffered), buffered]);
    this.#fd = undefined;
    await this.#deliver(
      fd,
      this.#info({ handoff: 'plaintext', dialectState: a.state }),
      all,
      (owned) => {
        // The client is waiting for an answer to what it sent: give it the temporary failure.
        try {
          binding().write(owned.fd, Buffer.from(a.unavailable));
        } catch {}
      },
    );
  }

  async #deliver(
    fd: OwnedFd,
    info: HandoffInfo,
    buffered?: Uint8Array,
    onFail?: (fd: OwnedFd) => void,
  ): Promise<void> {
    // Keep a copy until the backend confirms: on failure we may still owe the client a reply
    // on it (deliver() takes ownership of what it is given and closes it once sent).
    this.#m.stage('handoff');
    let spare: OwnedFd | undefined;
    if (onFail) {
      try {
        spare = new OwnedFd(binding().dup(fd.fd));
      } catch {}
    }
    const backend = this.#config.backend;
    // A connect-mode backend relays a raw (crypt) or plaintext connection in this process: the
    // connection counts against the limits until that relay ends. (With TLS the engine's session
    // end says so.)
    const relayHere = backend.relays === true && info.handoff !== 'plain';
    if (relayHere) this.#relaying = true;
    try {
      await backend.deliver(fd, info, buffered, {
        ...(relayHere
          ? {
              onRelayEnd: () => {
                this.#relaying = false;
                this.#maybeRelease();
              },
            }
          : {}),
        ...(this.#config.idleTimeoutMs ? { idleTimeoutMs: this.#config.idleTimeoutMs } : {}),
      });
      this.#log('info', 'handed off', {
        backend: this.#config.backend.description,
        handoff: info.handoff,
      });
      this.#end('handed_off', `handed off (${info.handoff})`);
    } catch (err) {
      this.#log('warn', 'backend did not take the connection', { error: (err as Error).message });
      this.#m.backendUnavailable('handoff');
      this.#end('handoff_failed', (err as Error).message);
      if (relayHere) this.#relaying = false;
      if (!fd.closed) fd.close();
      if (spare) onFail?.(spare);
    }
    spare?.close();
    this.#finish();
  }

  #flushed(): Promise<void> {
    if (this.#socket.writableLength === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, 5000);
      this.#socket.write(Buffer.alloc(0), () => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  #destroy(): void {
    this.#state = 'done';
    this.#socket.destroy();
    this.#finish();
  }

  #finish(): void {
    this.#state = 'done';
    this.#clearTimers();
    this.#resolveDone();
    this.#finished = true;
    this.#maybeRelease();
  }

  /** Everything the connection held in this process is gone: free its places in the limits. */
  #maybeRelease(): void {
    if (!this.#finished || this.#relaying) return;
    this.#releaseHandshake();
    this.#release();
  }
}
