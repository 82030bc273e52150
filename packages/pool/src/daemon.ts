// The TLS engine as its own process (seed note: keys live only in the TLS Pool). It listens on a
// SEQPACKET socket, checks SO_PEERCRED against allowUids, and serves handshakes and control
// requests from proxies and backends.
//
// Control keys. A key is 16 random bytes, so guessing one is hopeless; what the daemon guards
// against is a peer that probes anyway, without punishing honest ones:
// - keys of sessions that ended lately (the last ENDED_KEYS of them, by hash) are answered
//   "the connection has ended" and not counted: a backend racing a close is not guessing;
// - other unknown keys draw on an allowance that refills with time (unknownKeyBurst at once,
//   one more every unknownKeyRefillMs), so a long-lived channel is never closed for a few
//   races spread over days;
// - a control request may name its `requester` in its args (the proxy puts the id of the
//   backend that asked there, since it multiplexes every backend on one channel): then the
//   allowance is that requester's, and one that overdraws it is refused for a while
//   (TLSPROXY_ERR_POOL_REQUESTER_REFUSED) while the channel and every other requester go on;
// - without a requester, a channel that overdraws its allowance is closed.
import { createHash } from 'node:crypto';
import {
  type Channel,
  type Incoming,
  listen,
  type OwnedFd,
  type Peer,
  type SeqpacketServer,
} from '@tlsproxy/fdpass';
import {
  type ClientCertPolicy,
  type ConnectRequest,
  type ControlOp,
  type HandshakeRequest,
  isTimeout,
  type SessionEndReason,
  type TlsEngineApi,
} from './engine.js';
import { MAX_FAILURE, poolProtocol } from './protocol.js';

export interface DaemonOptions {
  path: string;
  /** Socket file mode; default 0o600. */
  mode?: number;
  /** uids allowed to connect; default this process's uid and root. */
  allowUids?: number[];
  log?: (level: 'info' | 'warn', message: string) => void;
  /** Unknown control keys a channel (or requester) may present at once; default 16. */
  unknownKeyBurst?: number;
  /** One more unknown key is allowed every this many ms; default 10 000 (8 640 a day). */
  unknownKeyRefillMs?: number;
}

/** Hashes of ended sessions' keys remembered, so late use of them is not taken for guessing. */
const ENDED_KEYS = 4096;
/** Requesters tracked per channel; beyond it, unknown keys count against the channel itself. */
const MAX_REQUESTERS = 1024;
/** accept() failures are reported at most this often. */
const ACCEPT_LOG_INTERVAL_MS = 1000;
/** Longest requester id accepted. */
const MAX_REQUESTER_LENGTH = 256;
/** Handshake request fields from the peer, bounded like everything else it sends. */
const MAX_ALPN = 32;
const MAX_CONNECTION_ID = 256;
const MAX_HANDSHAKE_TIMEOUT_MS = 10 * 60_000;
const CLIENT_CERT_POLICIES: ReadonlySet<string> = new Set(['none', 'optional', 'required']);

const keyHash = (key: Buffer) => createHash('sha256').update(key).digest('hex');

/** An allowance that refills with time: `burst` at once, one more every `refillMs`. */
class Allowance {
  #used = 0;
  #at = performance.now();
  readonly #burst: number;
  readonly #refillMs: number;
  constructor(burst: number, refillMs: number) {
    this.#burst = burst;
    this.#refillMs = refillMs;
  }
  #decay(): void {
    const now = performance.now();
    this.#used = Math.max(0, this.#used - (now - this.#at) / this.#refillMs);
    this.#at = now;
  }
  /**
   * Spend one: false when none was left (then it is owed: a peer that keeps going stays refused;
   * the debt is capped, so it recovers in bounded time once it stops).
   */
  spend(): boolean {
    this.#decay();
    const ok = this.#used + 1 <= this.#burst;
    this.#used = Math.min(this.#used + 1, 2 * this.#burst);
    return ok;
  }
  /** Nothing left to spend. */
  get overdrawn(): boolean {
    this.#decay();
    return this.#used + 1 > this.#burst;
  }
  get idle(): boolean {
    this.#decay();
    return this.#used === 0;
  }
}

/** The handshake request a peer sent, checked field by field (its types are the peer's word). */
function handshakeRequest(raw: unknown): HandshakeRequest | string {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    return 'request is not an object';
  const req = raw as Record<string, unknown>;
  const out: HandshakeRequest = {};
  const {
    clientCert,
    alpn,
    handshakeTimeoutMs,
    idleTimeoutMs,
    connectionId,
    earlyHandoff,
    promptCompletion,
  } = req;
  if (clientCert !== undefined) {
    if (typeof clientCert !== 'string' || !CLIENT_CERT_POLICIES.has(clientCert))
      return 'clientCert must be none, optional or required';
    out.clientCert = clientCert as ClientCertPolicy;
  }
  if (alpn !== undefined) {
    if (
      !Array.isArray(alpn) ||
      alpn.length > MAX_ALPN ||
      !alpn.every((p) => typeof p === 'string' && p.length > 0 && p.length < 256)
    )
      return `alpn must be a list of at most ${MAX_ALPN} protocol names`;
    out.alpn = alpn as string[];
  }
  if (handshakeTimeoutMs !== undefined) {
    if (
      !isTimeout(handshakeTimeoutMs) ||
      handshakeTimeoutMs === 0 ||
      handshakeTimeoutMs > MAX_HANDSHAKE_TIMEOUT_MS
    )
      return `handshakeTimeoutMs must be 1..${MAX_HANDSHAKE_TIMEOUT_MS}`;
    out.handshakeTimeoutMs = handshakeTimeoutMs;
  }
  if (idleTimeoutMs !== undefined) {
    if (!isTimeout(idleTimeoutMs)) return 'idleTimeoutMs must be a number ≥ 0';
    out.idleTimeoutMs = idleTimeoutMs;
  }
  if (connectionId !== undefined) {
    if (typeof connectionId !== 'string' || connectionId.length > MAX_CONNECTION_ID)
      return `connectionId must be a string of at most ${MAX_CONNECTION_ID} characters`;
    out.connectionId = connectionId;
  }
  if (earlyHandoff !== undefined) {
    if (typeof earlyHandoff !== 'boolean') return 'earlyHandoff must be true or false';
    out.earlyHandoff = earlyHandoff;
  }
  if (promptCompletion !== undefined) {
    if (typeof promptCompletion !== 'boolean') return 'promptCompletion must be true or false';
    out.promptCompletion = promptCompletion;
  }
  return out;
}

/** Longest server name and identity name accepted from a peer (a DNS name is ≤ 253). */
const MAX_NAME = 256;
const MIN_VERSIONS: ReadonlySet<string> = new Set(['TLSv1.2', 'TLSv1.3']);
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The connect request a peer sent, field by field, own properties only (a field named like an
 * Object.prototype member must read as absent). `ca` is the message's attachment: PEM text, or
 * nothing for the daemon's Node roots. Unknown fields are ignored, as in a handshake request.
 */
function connectRequest(raw: unknown, ca: Buffer): ConnectRequest | string {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    return 'request is not an object';
  const own = (k: string): unknown =>
    Object.hasOwn(raw, k) ? (raw as Record<string, unknown>)[k] : undefined;
  const serverName = own('serverName');
  if (typeof serverName !== 'string' || serverName.length === 0 || serverName.length > MAX_NAME)
    return 'serverName must be a DNS name or an IP address';
  const out: ConnectRequest = { serverName };
  const clientIdentity = own('clientIdentity');
  if (clientIdentity !== undefined) {
    if (
      typeof clientIdentity !== 'string' ||
      clientIdentity.length === 0 ||
      clientIdentity.length > MAX_NAME
    )
      return "clientIdentity must be the name of one of the daemon's identities";
    out.clientIdentity = clientIdentity;
  }
  const alpn = own('alpn');
  if (alpn !== undefined) {
    if (
      !Array.isArray(alpn) ||
      alpn.length > MAX_ALPN ||
      !alpn.every((p) => typeof p === 'string' && p.length > 0 && p.length < 256)
    )
      return `alpn must be a list of at most ${MAX_ALPN} protocol names`;
    out.alpn = alpn as string[];
  }
  const minVersion = own('minVersion');
  if (minVersion !== undefined) {
    if (typeof minVersion !== 'string' || !MIN_VERSIONS.has(minVersion))
      return 'minVersion must be TLSv1.2 or TLSv1.3';
    out.minVersion = minVersion as ConnectRequest['minVersion'] & string;
  }
  const handshakeTimeoutMs = own('handshakeTimeoutMs');
  if (handshakeTimeoutMs !== undefined) {
    if (
      !isTimeout(handshakeTimeoutMs) ||
      handshakeTimeoutMs === 0 ||
      handshakeTimeoutMs > MAX_HANDSHAKE_TIMEOUT_MS
    )
      return `handshakeTimeoutMs must be 1..${MAX_HANDSHAKE_TIMEOUT_MS}`;
    out.handshakeTimeoutMs = handshakeTimeoutMs;
  }
  const idleTimeoutMs = own('idleTimeoutMs');
  if (idleTimeoutMs !== undefined) {
    if (!isTimeout(idleTimeoutMs)) return 'idleTimeoutMs must be a number ≥ 0';
    out.idleTimeoutMs = idleTimeoutMs;
  }
  const connectionId = own('connectionId');
  if (connectionId !== undefined) {
    if (typeof connectionId !== 'string' || connectionId.length > MAX_CONNECTION_ID)
      return `connectionId must be a string of at most ${MAX_CONNECTION_ID} characters`;
    out.connectionId = connectionId;
  }
  if (ca.length > 0) {
    try {
      out.ca = utf8.decode(ca);
    } catch {
      return 'ca (the attachment) must be PEM text';
    }
  }
  return out;
}

/** What the daemon serves: any engine with the whole API (node:tls's TlsEngine, or
 * @tlsproxy/engine-native's NativeTlsEngine with `tlspool --engine native`). */
export type DaemonEngine = TlsEngineApi & Required<Pick<TlsEngineApi, 'connect' | 'serverNames'>>;

export class PoolDaemon {
  readonly #server: SeqpacketServer;
  readonly #engine: DaemonEngine;
  readonly #allow: Set<number>;
  readonly #peers = new Set<Peer>();
  readonly #log: NonNullable<DaemonOptions['log']>;
  readonly #burst: number;
  readonly #refillMs: number;
  /** Key hashes of sessions that ended lately, oldest first. */
  readonly #ended = new Set<string>();

  constructor(engine: DaemonEngine, options: DaemonOptions) {
    this.#engine = engine;
    this.#allow = new Set(options.allowUids ?? [process.getuid?.() ?? 0, 0]);
    this.#log = options.log ?? (() => {});
    this.#burst = options.unknownKeyBurst ?? 16;
    this.#refillMs = options.unknownKeyRefillMs ?? 10_000;
    this.#server = listen({ path: options.path, mode: options.mode ?? 0o600 });
    this.#server.on('connection', (ch) => this.#onChannel(ch));
    // accept() failing (EMFILE, ENFILE, ENOMEM) is logged; the listener goes on. It fails again
    // at every poll while the connection waits in the backlog, so say it once a second at most.
    let lastAcceptLog = Number.NEGATIVE_INFINITY;
    let unlogged = 0;
    this.#server.on('error', (err) => {
      const now = performance.now();
      if (now - lastAcceptLog < ACCEPT_LOG_INTERVAL_MS) {
        unlogged++;
        return;
      }
      const more = unlogged > 0 ? ` (and ${unlogged} more since the last report)` : '';
      lastAcceptLog = now;
      unlogged = 0;
      this.#log('warn', `accept failed: ${err.message}${more}`);
    });
  }

  #rememberEnded(hash: string): void {
    this.#ended.add(hash);
    if (this.#ended.size > ENDED_KEYS)
      this.#ended.delete(this.#ended.values().next().value as string);
  }

  #onChannel(ch: Channel): void {
    const { uid, pid } = ch.peer;
    if (!this.#allow.has(uid)) {
      this.#log('warn', `refused a connection from uid ${uid} (pid ${pid}): not in allowUids`);
      ch.close();
      return;
    }
    const peer = poolProtocol.attach(ch);
    this.#peers.add(peer);
    peer.on('close', () => this.#peers.delete(peer));
    // Includes messages whose descriptors the kernel dropped (MSG_CTRUNC: this process is out of
    // descriptors): the channel and the process go on.
    peer.on('invalid', (err) => this.#log('warn', `bad message from pid ${pid}: ${err.message}`));
    const channelAllowance = new Allowance(this.#burst, this.#refillMs);
    const requesters = new Map<string, Allowance>();
    const requesterAllowance = (name: string): Allowance | undefined => {
      let a = requesters.get(name);
      if (a) return a;
      if (requesters.size >= MAX_REQUESTERS) {
        // Forget one that owes nothing; if none, this requester counts against the channel.
        for (const [k, v] of requesters) {
          if (v.idle) {
            requesters.delete(k);
            break;
          }
        }
        if (requesters.size >= MAX_REQUESTERS) return undefined;
      }
      a = new Allowance(this.#burst, this.#refillMs);
      requesters.set(name, a);
      return a;
    };

    peer.on('message', (m) => {
      try {
        if (m.type === 'handshake') this.#handshake(peer, m);
        else if (m.type === 'connect') this.#connect(peer, m);
        else {
          for (const f of m.fds) f.close();
          if (m.type === 'control')
            this.#control(peer, m, pid, channelAllowance, requesterAllowance);
          else if (m.type === 'server-names')
            peer.reply(m, 'names', { names: this.#engine.serverNames() });
          else peer.replyError(m, 'TLSPROXY_ERR_POOL_CONTROL', `unexpected ${m.type}`);
        }
      } catch (err) {
        // Nothing a peer sends may take the daemon down.
        for (const f of m.fds) f.close();
        this.#log('warn', `message from pid ${pid} failed: ${(err as Error).message}`);
        peer.replyError(m, 'TLSPROXY_ERR_POOL_CONTROL', (err as Error).message);
      }
    });
  }

  #handshake(peer: Peer, m: Incoming): void {
    const fd = m.fds[0]!;
    const raw = m.body.request as Record<string, unknown>;
    const request = handshakeRequest(raw);
    if (typeof request === 'string') {
      fd.close();
      peer.replyError(m, 'TLSPROXY_ERR_POOL_CONFIG', request);
      return;
    }
    const rid = m.id ?? 0;
    if (raw.checkServerName === true) {
      request.checkServerName = async (serverName) => {
        const r = await peer.request(
          'check-server-name',
          { handshake: rid, serverName },
          { timeoutMs: 5000 },
        );
        return r.body.accept === true;
      };
    }
    this.#serve(peer, m, raw.sessionEnd === true, (onEnd) =>
      this.#engine.handshake(fd, { ...request, onEnd }),
    );
  }

  #connect(peer: Peer, m: Incoming): void {
    const fd = m.fds[0]!;
    const raw = m.body.request;
    const request = connectRequest(raw, m.attachment);
    if (typeof request === 'string') {
      fd.close();
      peer.replyError(m, 'TLSPROXY_ERR_POOL_CONFIG', request);
      return;
    }
    const wantsEnd = Object.hasOwn(raw as object, 'sessionEnd')
      ? (raw as Record<string, unknown>).sessionEnd === true
      : false;
    this.#serve(peer, m, wantsEnd, (onEnd) => this.#engine.connect(fd, { ...request, onEnd }));
  }

  /**
   * Run a handshake or connect for a peer and answer 'established' with the plaintext end, or
   * the error. The end of every session is remembered (so late control requests with its key
   * are not counted as guesses); the channel that asked is told when it asked to be.
   */
  #serve(
    peer: Peer,
    m: Incoming,
    sessionEnd: boolean,
    run: (onEnd: NonNullable<HandshakeRequest['onEnd']>) => Promise<{
      plaintext: OwnedFd;
      controlKey: Buffer;
      info: object;
      completed?: Promise<void>;
    }>,
  ): void {
    const rid = m.id ?? 0;
    const wantsEnd = sessionEnd && m.id !== undefined;
    let hash: string | undefined;
    let ended = false;
    // A session handed out early (earlyHandoff) whose handshake then failed: why, for the proxy's
    // log line (its onEnd failure).
    let failure: string | undefined;
    let endReason: SessionEndReason | undefined;
    const reportEnd = () => {
      if (hash) this.#rememberEnded(hash);
      if (wantsEnd && !peer.closed)
        peer.send('session-end', {
          handshake: rid,
          ...(failure !== undefined ? { failure: failure.slice(0, MAX_FAILURE) } : {}),
          ...(endReason !== undefined ? { reason: endReason } : {}),
        });
    };
    const onEnd = (err?: Error, reason?: SessionEndReason) => {
      ended = true;
      if (err) failure = err.message;
      endReason = reason;
      if (hash) reportEnd();
    };
    run(onEnd).then(
      (res) => {
        hash = keyHash(res.controlKey);
        const completed = m.id !== undefined ? res.completed : undefined;
        peer.reply(
          m,
          'established',
          {
            info: res.info as unknown as Record<string, unknown>,
            key: res.controlKey.toString('hex'),
            // Says this daemon will send 'session-end' for it (an older one would not).
            ...(wantsEnd ? { sessionEnd: true } : {}),
            // Handed out early: 'handshake-complete' follows when the client's Finished came
            // (a failure instead ends the session: 'session-end' with its reason).
            ...(completed ? { early: true } : {}),
          },
          { fds: [res.plaintext] },
        );
        completed?.then(
          () => {
            if (!peer.closed) peer.send('handshake-complete', { handshake: rid });
          },
          () => {},
        );
        if (ended) reportEnd();
      },
      (err) =>
        peer.replyError(
          m,
          (err as { code?: string }).code ?? 'TLSPROXY_ERR_POOL_HANDSHAKE',
          (err as Error).message,
        ),
    );
  }

  #control(
    peer: Peer,
    m: Incoming,
    pid: number,
    channelAllowance: Allowance,
    requesterAllowance: (name: string) => Allowance | undefined,
  ): void {
    const { requester, ...args } = (m.body.args as Record<string, unknown> | undefined) ?? {};
    if (
      requester !== undefined &&
      (typeof requester !== 'string' ||
        requester.length === 0 ||
        requester.length > MAX_REQUESTER_LENGTH)
    ) {
      peer.replyError(
        m,
        'TLSPROXY_ERR_POOL_CONTROL',
        `requester must be a string of 1..${MAX_REQUESTER_LENGTH} characters`,
      );
      return;
    }
    const mine = typeof requester === 'string' ? requesterAllowance(requester) : undefined;
    if (mine?.overdrawn) {
      mine.spend();
      peer.replyError(
        m,
        'TLSPROXY_ERR_POOL_REQUESTER_REFUSED',
        'too many unknown control keys from this requester; refused for now',
      );
      return;
    }
    const key = m.body.key as string;
    this.#engine.control(key, m.body.op as ControlOp, args).then(
      (result) => peer.reply(m, 'control-result', { result: result ?? null }),
      (err) => {
        const code = (err as { code?: string }).code;
        if (code !== 'TLSPROXY_ERR_POOL_UNKNOWN_KEY') {
          peer.replyError(m, code ?? 'TLSPROXY_ERR_POOL_CONTROL', (err as Error).message);
          return;
        }
        const bytes = /^[0-9a-f]{32}$/i.test(key) ? Buffer.from(key, 'hex') : undefined;
        if (bytes && this.#ended.has(keyHash(bytes))) {
          peer.replyError(m, 'TLSPROXY_ERR_POOL_UNKNOWN_KEY', 'the connection has ended');
          return;
        }
        peer.replyError(m, 'TLSPROXY_ERR_POOL_UNKNOWN_KEY', (err as Error).message);
        if (mine) {
          mine.spend();
          if (mine.overdrawn)
            this.#log(
              'warn',
              `pid ${pid}: requester ${JSON.stringify(requester)} presented too many unknown control keys; refusing it for now`,
            );
          return;
        }
        if (!channelAllowance.spend()) {
          this.#log(
            'warn',
            `pid ${pid} presented too many unknown control keys; closing its channel`,
          );
          peer.close();
        }
      },
    );
  }

  async close(): Promise<void> {
    this.#server.close();
    for (const p of this.#peers) p.close();
    await this.#engine.close();
  }
}
