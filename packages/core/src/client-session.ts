// The client role (issue 18, `role: client`): one local connection, the driver. A local client
// (an application, an old MTA) speaks plaintext to us; we connect to the real server, run the
// dialect's client side (`Dialect.client`) on the SERVER's bytes up to its STARTTLS go-ahead, let
// the TLS engine run the client handshake (the server's certificate verified: chain and name),
// and relay the local client through TLS. stunnel's `client = yes` with `protocol = imap`.
//
// Theory of operation, in the order things happen:
// 1. accept (proxy.ts): counted against the listener's limits like the server role; the local
//    socket stays paused — nothing the local client says is read before TLS is up, so none of it
//    can reach the server in plaintext or steer the dialect.
// 2. connect: TCP to the server within `connectTimeoutMs`; failure closes the local client.
// 3. preamble: server bytes → the dialect's receive() → actions (send to the server, timer, log,
//    close, starttls, plaintext), bounded by `preambleTimeoutMs` and `maxPreambleBytes`.
// 4. starttls: the server socket is taken out of Node (detachSocket). Any byte the server sent
//    after its go-ahead — in Node's buffer or still in the kernel — arrived before our ClientHello,
//    so it is not TLS: the connection is closed and nothing of it reaches the local client (the
//    response-injection class; the dialect already refuses bytes in the go-ahead's own read).
//    Then `TlsEngineApi.connect()`: on failure the local client is closed with a log line saying
//    why; there is no plaintext fallback.
// 5. after TLS, for a dialect with `afterTls` (HTTP Upgrade): the server's own answer to the
//    upgrading request (RFC 2817 §3.3) is read and dropped, bounded in time and size.
// 6. relay: `toLocal` (the server's greeting, per dialect) to the local client, then local socket
//    ↔ the engine's plaintext end, both ways, with half-close, backpressure (pipe) and an idle
//    timeout; the control key is forgotten when the session ends.
//
// Why one file of ~700 lines: the phases above share the same three sockets, timers and one
// closing line; split up they would pass all of it around. The relay is the last third.
import net from 'node:net';
import { detachSocket, type OwnedFd, peekPending, socketFd } from '@tlsproxy/fdpass';
import {
  type ConnectRequest,
  type ConnectResult,
  randomKey,
  type TlsEngineApi,
} from '@tlsproxy/pool';
import { CLOSE_DRAIN_BYTES, CLOSE_LINGER_MS, type SessionHooks } from './connection.js';
import { ConnectionLog } from './connection-log.js';
import type {
  ClientAction,
  ClientCloseAction,
  ClientDialect,
  ClientDialectSession,
  ClientPlaintextAction,
  ClientStartTlsAction,
  Dialect,
} from './dialect.js';
import type { Logger } from './logger.js';
import type { Metrics, Outcome } from './metrics.js';
import type { SessionAddresses } from './session.js';

/** TCP connect to the server, default: stunnel's TIMEOUTconnect (10 s). */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/**
 * The server's first answer over TLS that a dialect's `afterTls` judges (HTTP Upgrade: the answer
 * to the upgrading request, RFC 2817 §3.3) is waited for at most this long and this large; past
 * either the connection is closed (the local client must not take it for its own answer).
 */
export const AFTER_TLS_TIMEOUT_MS = 10_000;
export const MAX_AFTER_TLS_BYTES = 64 * 1024;

/** A dialect's judge of the server's first bytes over TLS (`ClientDialect.afterTls`):
 * backendGreeting's contract. */
type AfterTls = NonNullable<ClientDialect['afterTls']>;

/**
 * How often the unread local socket is looked at (MSG_PEEK) before TLS is up: a local client that
 * went away (a health check's connect-and-close) then ends the session, instead of holding a
 * server connection and a TLS handshake until `preambleTimeoutMs`.
 */
export const LOCAL_PROBE_MS = 1000;

/** Server text (a close reason) is logged escaped by the logger and cut to this length. */
const MAX_REASON_CHARS = 300;

export interface ClientSessionConfig {
  role: 'client';
  dialect: Dialect<unknown>;
  client: ClientDialect<unknown>;
  options: unknown;
  limits: Readonly<Record<string, number>>;
  hostname: string;
  /** The server to connect to. */
  server: { host: string; port: number };
  /** The name its certificate must match (and SNI). */
  serverName: string;
  /** The engine request's fixed part: trust, identity, ALPN, version, handshake timeout. */
  tls: Pick<ConnectRequest, 'ca' | 'clientIdentity' | 'alpn' | 'minVersion' | 'handshakeTimeoutMs'>;
  pool: TlsEngineApi;
  connectTimeoutMs: number;
  preambleTimeoutMs: number;
  /** Bytes the SERVER may send before its go-ahead. */
  maxPreambleBytes: number;
  /** No bytes either way in the relay for this long closes it; 0 or absent: never. */
  idleTimeoutMs?: number;
  handshakes?: { acquire(): boolean; release(): void };
  logger: Logger;
  metrics?: Metrics;
}

type Phase = 'connecting' | 'preamble' | 'handshake' | 'relay' | 'closing';

const short = (s: string) => (s.length > MAX_REASON_CHARS ? `${s.slice(0, MAX_REASON_CHARS)}…` : s);

export class ClientSession {
  readonly id = randomKey(6).toString('hex');
  /** Resolves when every socket of the connection is closed (relay included). */
  readonly done: Promise<void>;
  /** Everything lives in this process, so the limits' places are free when it is done. */
  readonly released: Promise<void>;
  readonly #config: ClientSessionConfig;
  readonly #local: net.Socket;
  readonly #log: ConnectionLog;
  readonly #remote: SessionAddresses;
  readonly #live = new Set<net.Socket>();
  #resolveDone!: () => void;
  #phase: Phase = 'connecting';
  #server: net.Socket | undefined;
  #dialect: ClientDialectSession | undefined;
  #timer: NodeJS.Timeout | undefined;
  #deadline: NodeJS.Timeout | undefined;
  #connectTimer: NodeJS.Timeout | undefined;
  #handshakeSlot = false;
  #dialectFailed = false;
  /** The engine session's key while it lives (for control requests); forgotten at its end. */
  #controlKey: Buffer | undefined;
  #finished = false;
  #probe: NodeJS.Timeout | undefined;

  /** Tell `hooks` when the session is done and released (one moment here: all is in-process). */
  track(hooks: SessionHooks): void {
    void this.done.then(() => {
      hooks.done();
      hooks.released();
    });
  }

  constructor(local: net.Socket, config: ClientSessionConfig, addresses?: SessionAddresses) {
    this.#config = config;
    this.#local = local;
    this.#log = new ConnectionLog(
      config.logger,
      this.id,
      config.dialect.name,
      config.metrics,
      'client',
    );
    this.done = new Promise((r) => {
      this.#resolveDone = r;
    });
    this.released = this.done;
    this.#remote = addresses ?? {
      address: local.remoteAddress ?? '',
      port: local.remotePort ?? 0,
      localAddress: local.localAddress ?? '',
      localPort: local.localPort ?? 0,
    };
    // The local socket arrives paused (pauseOnConnect) and stays so until the relay: nothing the
    // local client sends before TLS is read.
    this.#own(local);
    local.on('error', (err) =>
      this.#log.log('debug', 'local socket error', { error: err.message }),
    );
    this.#log.log('info', 'accepted', {
      remote: `${this.#remote.address}:${this.#remote.port}`,
      localPort: this.#remote.localPort,
    });
    this.#deadline = setTimeout(() => {
      this.#log.log('info', 'preamble with the server took too long, closing', {
        limitMs: config.preambleTimeoutMs,
      });
      this.#end('preamble_timeout', 'preamble with the server took too long');
      this.#destroyAll();
    }, config.preambleTimeoutMs);
    this.#probe = setInterval(() => this.#probeLocal(), LOCAL_PROBE_MS);
    this.#probe.unref();
    this.#connect();
  }

  /** Before TLS the local socket is not read; peek at it: EOF with nothing queued, or an error
   * (reset), means the local client is gone. Bytes it sent and then a FIN are not "gone". */
  #probeLocal(): void {
    const before =
      this.#phase === 'connecting' || this.#phase === 'preamble' || this.#phase === 'handshake';
    if (!before) {
      clearInterval(this.#probe);
      return;
    }
    let gone = this.#local.destroyed;
    if (!gone) {
      try {
        gone = peekPending(socketFd(this.#local), 1)?.length === 0;
      } catch {
        gone = true;
      }
    }
    if (!gone) return;
    this.#log.log('info', 'local client went away before TLS, closing');
    this.#end('closed_in_preamble', 'local client went away before TLS');
    this.#destroyAll();
  }

  /** Track a socket until it closes; the session is done when none is left after the end. */
  #own(s: net.Socket): void {
    this.#live.add(s);
    s.once('close', () => {
      this.#live.delete(s);
      this.#maybeDone();
    });
  }

  #maybeDone(): void {
    if (this.#phase !== 'closing' || this.#live.size > 0 || this.#finished) return;
    this.#finished = true;
    this.#releaseHandshake();
    this.#resolveDone();
  }

  #end(outcome: Outcome, reason: string): void {
    this.#phase = 'closing';
    this.#clearTimers();
    this.#log.end(outcome, short(reason));
    this.#maybeDone();
  }

  #clearTimers(): void {
    clearInterval(this.#probe);
    clearTimeout(this.#timer);
    clearTimeout(this.#deadline);
    clearTimeout(this.#connectTimer);
    this.#timer = undefined;
    this.#deadline = undefined;
    this.#connectTimer = undefined;
  }

  #destroyAll(): void {
    for (const s of [...this.#live]) s.destroy();
    this.#maybeDone();
  }

  #releaseHandshake(): void {
    if (!this.#handshakeSlot) return;
    this.#handshakeSlot = false;
    this.#config.handshakes?.release();
  }

  // --- connect ------------------------------------------------------------------------------

  #connect(): void {
    const { server, connectTimeoutMs } = this.#config;
    const where = `${server.host.includes(':') ? `[${server.host}]` : server.host}:${server.port}`;
    let s: net.Socket;
    try {
      s = net.connect({ host: server.host, port: server.port, allowHalfOpen: true });
    } catch (err) {
      this.#connectFailed(where, (err as Error).message);
      return;
    }
    this.#server = s;
    this.#own(s);
    s.on('error', (err) => {
      if (this.#phase === 'connecting') this.#connectFailed(where, err.message);
      else if (this.#phase === 'preamble') {
        this.#log.log('info', 'server connection failed, closing', { error: err.message });
        this.#end('closed_in_preamble', `server connection error: ${err.message}`);
        this.#destroyAll();
      } else this.#log.log('debug', 'server socket error', { error: err.message });
    });
    this.#connectTimer = setTimeout(
      () => this.#connectFailed(where, `timed out after ${connectTimeoutMs} ms`),
      connectTimeoutMs,
    );
    s.once('connect', () => {
      clearTimeout(this.#connectTimer);
      this.#connectTimer = undefined;
      if (this.#phase !== 'connecting') return;
      this.#phase = 'preamble';
      s.setNoDelay(true);
      this.#log.log('info', 'connected to the server', {
        server: where,
        afterMs: this.#log.elapsed(),
      });
      this.#startDialect(s);
    });
  }

  #connectFailed(where: string, why: string): void {
    if (this.#phase !== 'connecting') return;
    this.#log.log('warn', 'cannot connect to the server, closing the local connection', {
      server: where,
      error: why,
    });
    this.#end('connect_failed', `cannot connect to ${where}: ${why}`);
    this.#destroyAll();
  }

  // --- preamble -----------------------------------------------------------------------------

  #startDialect(s: net.Socket): void {
    const c = this.#config;
    try {
      this.#dialect = c.client.create({
        options: c.options,
        limits: c.limits,
        hostname: c.hostname,
        serverName: c.serverName,
        connectionId: this.id,
      });
    } catch (err) {
      this.#dialectThrew(err);
      return;
    }
    s.on('data', (d: Buffer) => this.#onData(d));
    s.on('end', () => {
      if (this.#phase !== 'preamble') return;
      this.#run(
        this.#guard(
          () =>
            this.#dialect!.eof?.(Date.now()) ?? [
              { type: 'close', reason: 'server closed the connection before STARTTLS' },
            ],
        ),
      );
    });
    s.on('close', () => {
      if (this.#phase !== 'preamble') return;
      this.#end('closed_in_preamble', 'server closed the connection before STARTTLS');
      this.#destroyAll();
    });
    this.#run(this.#guard(() => this.#dialect!.start(Date.now())));
  }

  #dialectThrew(err: unknown): void {
    this.#dialectFailed = true;
    this.#log.log('error', 'dialect threw; closing the connection', {
      error: (err as Error)?.stack ?? String(err),
    });
    this.#end('dialect_error', 'dialect error');
    this.#destroyAll();
  }

  /** A dialect that throws is a bug in the dialect: log it and close, never crash the process. */
  #guard(fn: () => ClientAction[]): ClientAction[] {
    try {
      return fn();
    } catch (err) {
      this.#dialectFailed = true;
      this.#log.log('error', 'dialect threw; closing the connection', {
        error: (err as Error)?.stack ?? String(err),
      });
      return [{ type: 'close', reason: 'dialect error' }];
    }
  }

  #onData(d: Buffer): void {
    if (this.#phase !== 'preamble') return;
    const log = this.#log;
    log.received += d.length;
    if (log.received > this.#config.maxPreambleBytes) {
      log.log('warn', 'server sent too many bytes before TLS, closing', {
        limit: this.#config.maxPreambleBytes,
      });
      this.#end('preamble_too_large', 'server sent too many bytes before TLS');
      this.#destroyAll();
      return;
    }
    const actions = this.#guard(() => this.#dialect!.receive(new Uint8Array(d), Date.now()));
    log.log('debug', 'server preamble input', {
      bytes: d.length,
      sent: actions.filter((a) => a.type === 'send').length,
    });
    this.#run(actions);
  }

  #run(actions: ClientAction[]): void {
    for (const a of actions) {
      if (this.#phase !== 'preamble') return;
      switch (a.type) {
        case 'send':
          this.#log.replies++;
          this.#server!.write(a.data);
          break;
        case 'log':
          if (a.event) this.#log.command(a);
          else this.#log.log(a.level, short(a.message));
          break;
        case 'timer':
          this.#setTimer(a.at);
          break;
        case 'close':
          this.#close(a);
          return;
        case 'starttls':
          void this.#startTls(a);
          return;
        case 'plaintext':
          this.#plaintext(a);
          return;
      }
    }
  }

  #setTimer(at: number): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        if (this.#phase === 'preamble')
          this.#run(this.#guard(() => this.#dialect!.timer(Date.now())));
      },
      Math.max(0, at - Date.now()),
    );
  }

  /** The dialect gave up (STARTTLS not offered or refused, a timeout, bytes after the go-ahead,
   * a reply out of protocol): its last words to each side, then both closed. */
  #close(a: ClientCloseAction): void {
    const outcome: Outcome = this.#dialectFailed ? 'dialect_error' : 'closed_in_preamble';
    this.#log.log('warn', 'no TLS with the server, closing (no plaintext fallback)', {
      reason: short(a.reason),
    });
    this.#end(outcome, a.reason);
    const server = this.#server!;
    if (a.data && a.data.length > 0) server.end(a.data);
    else server.end();
    // Its goodbye (a `221`, a tagged OK to LOGOUT) and its FIN are read; a server that goes on
    // writing instead is cut off after CLOSE_DRAIN_BYTES, not read for the whole linger.
    let drained = 0;
    server.on('data', (d: Buffer) => {
      drained += d.length;
      if (drained > CLOSE_DRAIN_BYTES) server.destroy();
    });
    setTimeout(() => server.destroy(), CLOSE_LINGER_MS).unref();
    this.#endLocal(a.toLocal);
  }

  /** Write the local client its last words (if any) and close it; what it sent is dropped unread. */
  #endLocal(data: Uint8Array | undefined): void {
    const local = this.#local;
    if (local.destroyed) return;
    if (data && data.length > 0) local.end(data);
    else local.end();
    // Read (and drop) so its FIN is seen and the socket goes; never relayed anywhere.
    local.on('data', () => {});
    local.resume();
    setTimeout(() => local.destroy(), CLOSE_LINGER_MS).unref();
  }

  // --- STARTTLS -----------------------------------------------------------------------------

  async #startTls(a: ClientStartTlsAction): Promise<void> {
    const c = this.#config;
    const log = this.#log;
    this.#phase = 'handshake';
    this.#clearTimers();
    log.m.starttls(log.seconds());
    log.log('info', 'STARTTLS go-ahead from the server', {
      afterMs: log.elapsed(),
      serverBytes: log.received,
      sent: log.replies,
    });
    const server = this.#server!;
    // The server socket leaves Node's hands now: no further read can happen.
    server.removeAllListeners('data');
    server.removeAllListeners('end');
    server.removeAllListeners('close');
    this.#live.delete(server);
    let fd: OwnedFd;
    let buffered: Buffer;
    try {
      ({ fd, buffered } = detachSocket(server));
    } catch (err) {
      return this.#failBeforeTls(`cannot take the server connection: ${(err as Error).message}`);
    }
    // Before our ClientHello a TLS server says nothing: whatever is here was sent after the
    // go-ahead in plaintext, by the server or someone on the path. It is never relayed.
    let pending: Buffer | null = null;
    try {
      pending = peekPending(fd.fd, 64 * 1024);
    } catch (err) {
      // Unknown is not "nothing": fail closed.
      fd.close();
      return this.#failBeforeTls(`cannot check the server connection: ${(err as Error).message}`);
    }
    const injected = buffered.length + (pending?.length ?? 0);
    if (injected > 0 || pending?.length === 0) {
      fd.close();
      if (injected > 0) {
        log.m.injection(injected);
        log.log('warn', 'server sent bytes after its STARTTLS go-ahead (never relayed); closing', {
          bytes: injected,
        });
        return this.#failBeforeTls(`server sent ${injected} bytes after its STARTTLS go-ahead`);
      }
      return this.#failBeforeTls('server closed the connection after its STARTTLS go-ahead');
    }
    if (!this.#acquireHandshake()) {
      fd.close();
      log.log('warn', 'TLS handshake limit reached, closing');
      // The local client has heard nothing yet: the dialect's "busy, try later", as at accept.
      let busy: Uint8Array | undefined;
      try {
        busy = c.dialect.busy?.({ hostname: c.hostname, now: Date.now() });
      } catch {}
      this.#end('closed_in_preamble', 'TLS handshake limit reached');
      this.#endLocal(busy);
      return;
    }
    if (!c.pool.connect) {
      fd.close();
      return this.#failBeforeTls('the TLS engine has no client side (connect)');
    }
    const request: ConnectRequest = {
      ...c.tls,
      serverName: c.serverName,
      connectionId: this.id,
      onEnd: () => {
        // The session is over: its key is of no use to anyone any more.
        this.#controlKey = undefined;
      },
    };
    // The relay below sees every byte the engine relays and times the session out itself, with
    // the line that says why. The engine's own timer would start first (before its result
    // crosses to this thread) and win the race, ending the session as 'server closed'.
    if (c.idleTimeoutMs) request.idleTimeoutMs = 0;
    log.m.stage('handshake');
    const t0 = performance.now();
    let result: ConnectResult;
    try {
      result = await c.pool.connect(fd, request);
    } catch (err) {
      if (!fd.closed) fd.close();
      this.#releaseHandshake();
      const ms = performance.now() - t0;
      log.m.handshake('failed', ms / 1000);
      const e = err as Error & { code?: string; reason?: string };
      log.log('warn', 'TLS with the server failed, closing the local connection', {
        error: short(e?.message ?? String(err)),
        code: e?.code,
        reason: e?.reason,
        serverName: c.serverName,
        durationMs: Math.round(ms * 10) / 10,
      });
      this.#end('tls_failed', e?.message ?? String(err));
      this.#endLocal(undefined);
      return;
    }
    this.#releaseHandshake();
    const ms = performance.now() - t0;
    log.m.handshake('ok', ms / 1000);
    this.#controlKey = result.controlKey;
    const { version, cipher, alpn, serverIdentity } = result.info;
    log.log('info', 'TLS established with the server', {
      version,
      cipher,
      alpn,
      serverName: c.serverName,
      server: serverIdentity?.subject,
      durationMs: Math.round(ms * 10) / 10,
    });
    if (this.#phase !== 'handshake') {
      // Aborted (proxy shutdown) while the handshake ran.
      result.plaintext.close();
      void c.pool.control(result.controlKey, 'close').catch(() => {});
      return;
    }
    let plain: net.Socket;
    try {
      plain = result.plaintext.toSocket({ allowHalfOpen: true });
    } catch (err) {
      void c.pool.control(result.controlKey, 'close').catch(() => {});
      log.log('error', 'cannot relay the TLS session', { error: (err as Error).message });
      this.#end('tls_failed', `cannot relay the TLS session: ${(err as Error).message}`);
      this.#endLocal(undefined);
      return;
    }
    this.#own(plain);
    const afterTls = c.client.afterTls;
    if (typeof afterTls !== 'function') {
      this.#relay(plain, 'relayed', a.toLocal);
      return;
    }
    let rest: Buffer;
    try {
      rest = await this.#afterTls(plain, afterTls.bind(c.client));
    } catch (err) {
      log.log('warn', 'server’s first answer over TLS not as expected, closing', {
        error: short((err as Error).message),
      });
      this.#end('closed_in_preamble', (err as Error).message);
      plain.destroy();
      this.#endLocal(undefined);
      return;
    }
    this.#relay(plain, 'relayed', a.toLocal, rest);
  }

  /**
   * Read the server's first bytes over TLS until the dialect's `afterTls` says how many of them
   * to drop (the answer to the upgrading request); resolve with the bytes after them, which are
   * relayed. Bounded in time and size; the server closing first is an error.
   */
  #afterTls(plain: net.Socket, judge: AfterTls): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      let acc: Buffer = Buffer.alloc(0);
      const done = (err: Error | undefined, rest?: Buffer) => {
        clearTimeout(t);
        plain.off('data', onData);
        plain.off('end', onEnd);
        plain.off('close', onEnd);
        plain.off('error', onError);
        plain.pause();
        if (err) reject(err);
        else resolve(rest!);
      };
      const onData = (d: Buffer) => {
        acc = acc.length === 0 ? d : Buffer.concat([acc, d]);
        let n: number | null;
        try {
          n = judge(new Uint8Array(acc));
        } catch (err) {
          return done(new Error(`dialect's afterTls threw: ${(err as Error).message}`));
        }
        if (n === null) {
          if (acc.length >= MAX_AFTER_TLS_BYTES)
            done(new Error(`server's first answer over TLS over ${MAX_AFTER_TLS_BYTES} octets`));
          return;
        }
        if (!Number.isInteger(n) || n < 0 || n > acc.length)
          return done(new Error(`dialect's afterTls returned ${n} for ${acc.length} octets`));
        if (n > 0)
          this.#log.log('debug', 'dropped the server’s answer to the upgrade', { bytes: n });
        done(undefined, acc.subarray(n));
      };
      const onEnd = () => done(new Error('server closed before its first answer over TLS'));
      const onError = (err: Error) => done(err);
      const t = setTimeout(
        () => done(new Error(`no first answer over TLS within ${AFTER_TLS_TIMEOUT_MS} ms`)),
        AFTER_TLS_TIMEOUT_MS,
      );
      plain.on('data', onData);
      plain.once('end', onEnd);
      plain.once('close', onEnd);
      plain.once('error', onError);
    });
  }

  #acquireHandshake(): boolean {
    const h = this.#config.handshakes;
    if (!h || this.#handshakeSlot) return true;
    if (!h.acquire()) return false;
    this.#handshakeSlot = true;
    return true;
  }

  /** Between the go-ahead and TLS: the server connection is already gone; close the local one. */
  #failBeforeTls(reason: string): void {
    this.#end('closed_in_preamble', reason);
    this.#endLocal(undefined);
  }

  /** The dialect's opt-in plaintext policy (SMTP `tls: may`): relay without TLS, loudly. */
  #plaintext(a: ClientPlaintextAction): void {
    this.#phase = 'relay';
    this.#clearTimers();
    this.#log.log(
      'warn',
      'relaying WITHOUT TLS: the server does not offer STARTTLS and the dialect options allow plaintext',
      {
        reason: short(a.reason),
      },
    );
    // The preamble's listeners stay (they do nothing outside the preamble); its 'close' listener
    // from #own() must stay, or the session would never be done.
    const server = this.#server!;
    server.pause();
    this.#relay(server, 'relayed_plaintext', a.toLocal);
  }

  // --- relay --------------------------------------------------------------------------------

  /**
   * Local socket ↔ `far` (the engine's plaintext end, or the server itself without TLS) until
   * both are closed. pipe() carries backpressure and turns one side's FIN into the other's
   * (half-close); a side that is gone for good takes the other with it after a short linger.
   */
  #relay(
    far: net.Socket,
    outcome: 'relayed' | 'relayed_plaintext',
    toLocal: Uint8Array,
    rest: Uint8Array = new Uint8Array(0),
  ): void {
    const local = this.#local;
    const log = this.#log;
    this.#phase = 'relay';
    this.#clearTimers();
    log.m.stage('relay');
    let bytesIn = 0;
    let bytesOut = 0;
    let why: string | undefined;
    const because = (r: string) => {
      why ??= r;
    };
    let idle: NodeJS.Timeout | undefined;
    const idleMs = this.#config.idleTimeoutMs ?? 0;
    const touch =
      idleMs > 0
        ? () => {
            if (idle) idle.refresh();
            else
              idle = setTimeout(() => {
                log.log('info', 'relay idle too long, closing', { idleTimeoutMs: idleMs });
                because('idle timeout');
                local.destroy();
                far.destroy();
              }, idleMs);
          }
        : () => {};
    touch();
    local.on('error', (err) => {
      because(`local connection error: ${err.message}`);
      far.destroy();
    });
    far.on('error', (err) => {
      because(`server side error: ${err.message}`);
      local.destroy();
    });
    const onBytes = log.m.onBytes;
    // 'in': from the server to the local client; 'out': from the local client to the server.
    local.on('data', (d: Buffer) => {
      bytesOut += d.length;
      onBytes?.('out', d.length);
      touch();
    });
    far.on('data', (d: Buffer) => {
      bytesIn += d.length;
      onBytes?.('in', d.length);
      touch();
    });
    local.once('end', () => because('local client closed'));
    far.once('end', () => because('server closed'));
    const linger = (other: net.Socket) => () => {
      if (other.destroyed) return;
      if (!other.writableEnded) other.end();
      setTimeout(() => other.destroy(), CLOSE_LINGER_MS).unref();
    };
    local.once('close', linger(far));
    far.once('close', linger(local));
    let closed = 0;
    const onClose = () => {
      if (++closed < 2) return;
      clearTimeout(idle);
      log.log('debug', 'relay closed', { bytesIn, bytesOut });
      this.#end(outcome, why ?? 'closed');
    };
    local.once('close', onClose);
    far.once('close', onClose);
    if (toLocal.length > 0) local.write(toLocal);
    if (rest.length > 0) {
      bytesIn += rest.length;
      onBytes?.('in', rest.length);
      local.write(rest);
    }
    local.pipe(far);
    far.pipe(local);
  }

  /** The engine session's control key while it lives (for `TlsEngineApi.control`). */
  get controlKey(): Buffer | undefined {
    return this.#controlKey;
  }

  /** End the connection now, whatever its phase (proxy shutdown). */
  abort(): void {
    if (this.#phase !== 'closing') this.#end('shutdown', 'proxy shutting down');
    this.#destroyAll();
  }
}
