// Where connections go after the preamble: a backend that takes descriptors over fdpass
// (`unix:/path`, running @tlsproxy/backend). One persistent channel per backend, opened lazily
// and reopened after a failure, so "can a backend take this connection?" is answered before the
// STARTTLS go-ahead without a round trip per connection.

import { defineProtocol, connect as fdConnect, type OwnedFd, type Peer } from '@tlsproxy/fdpass';
import { BACKEND_PROTOCOL, type HandoffInfo, readBackendFeatures } from '@tlsproxy/handoff';
import { CoreError } from './errors.js';
import type { Logger } from './logger.js';

/** The hand-off protocol (its schema is shared with @tlsproxy/backend through @tlsproxy/handoff). */
const backendProtocol = defineProtocol(BACKEND_PROTOCOL);

export interface DeliverOptions {
  /** For targets that relay in this process (`relays`): called once when that relay has ended. */
  onRelayEnd?: () => void;
  /** For targets that relay in this process: close a relay idle this long (ms); absent: never. */
  idleTimeoutMs?: number;
}

export interface HandoffTarget {
  readonly description: string;
  /** True when the target relays connections in this process after deliver() (connect-mode
   * backends): the connection is then still held here until `onRelayEnd`. */
  readonly relays?: boolean;
  available(): Promise<boolean>;
  checkServerName(name: string, info: Partial<HandoffInfo>): Promise<boolean>;
  /** Whether the backend asked to be asked about every SNI name (it checks names itself). */
  wantsServerNameCheck?(): boolean;
  deliver(
    fd: OwnedFd,
    info: HandoffInfo,
    buffered?: Uint8Array,
    options?: DeliverOptions,
  ): Promise<void>;
  /** The connection with this control key has ended: its key is no longer valid here. */
  forget?(controlKey: string): void;
  close(): void;
}

export type ControlHandler = (
  key: string,
  op: string,
  args: Record<string, unknown>,
) => Promise<unknown>;

export interface UnixBackendOptions {
  onControl?: ControlHandler;
  logger: Logger;
  /** How long to wait for the backend to connect and say hello; default 2000 ms. */
  connectTimeoutMs?: number;
  /** How long the backend may take to answer an SNI check or take a connection; default 5000 ms. */
  requestTimeoutMs?: number;
  /** uids the backend process may run as (SO_PEERCRED of the connected socket); default: any. */
  allowUids?: number[];
}

/** Keys of ended connections remembered so late use of them is not taken for guessing. */
const MAX_ENDED_KEYS = 4096;
/** Unknown control keys a backend may present before its channel is closed. */
const MAX_UNKNOWN_KEYS = 16;
/**
 * Control keys remembered per backend: those of live connections. Each is forgotten when its
 * session ends (both engines report it, the tlspool daemon too); the bound only matters for an
 * engine that does not, where the oldest keys are forgotten first.
 */
const MAX_KEYS = 100_000;

export function parseBackend(spec: string): { kind: 'unix'; path?: string; abstract?: string } {
  const m = /^unix:(.+)$/.exec(spec);
  if (!m) {
    throw new CoreError(
      'TLSPROXY_ERR_BACKEND',
      `backend "${spec}" is not understood: use unix:/path/to/socket (or unix:@abstract-name)`,
    );
  }
  const rest = m[1]!;
  return rest.startsWith('@')
    ? { kind: 'unix', abstract: rest.slice(1) }
    : { kind: 'unix', path: rest };
}

export class UnixBackend implements HandoffTarget {
  readonly description: string;
  readonly #address: { path: string } | { abstract: string };
  readonly #options: UnixBackendOptions;
  #peer: Peer | undefined;
  #connecting: Promise<Peer | undefined> | undefined;
  #closed = false;
  /** Control keys of connections handed to this backend. */
  readonly #keys = new Set<string>();
  /** Keys of connections that ended lately: a backend racing a close is not guessing. */
  readonly #ended = new Set<string>();
  #badKeys = 0;
  #wantsServerNameCheck = false;

  constructor(spec: string, options: UnixBackendOptions) {
    const b = parseBackend(spec);
    this.#address = b.path !== undefined ? { path: b.path } : { abstract: b.abstract! };
    this.description = spec;
    this.#options = options;
  }

  async #get(): Promise<Peer | undefined> {
    if (this.#peer && !this.#peer.closed) return this.#peer;
    if (this.#closed) return undefined;
    this.#connecting ??= this.#connect().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  async #connect(): Promise<Peer | undefined> {
    const log = this.#options.logger;
    const timeoutMs = this.#options.connectTimeoutMs ?? 2000;
    let peer: Peer;
    try {
      const ch = await fdConnect(this.#address, { timeoutMs });
      // Whoever bound the path first would receive decrypted connections: check who it is.
      const allow = this.#options.allowUids;
      if (allow && !allow.includes(ch.peer.uid)) {
        log.log('error', 'backend socket belongs to a uid not in allowUids; not using it', {
          backend: this.description,
          uid: ch.peer.uid,
          pid: ch.peer.pid,
        });
        ch.close();
        return undefined;
      }
      peer = backendProtocol.attach(ch);
    } catch (err) {
      log.log('warn', 'backend unreachable', {
        backend: this.description,
        error: (err as Error).message,
      });
      return undefined;
    }
    const timer = setTimeout(() => peer.close(), timeoutMs);
    try {
      const hello = await peer.ready;
      // A backend that checks SNI names says so in its hello: from then on every name is put
      // to it. Kept after its channel closes, so a backend that asked is never bypassed (with no
      // channel the question is answered "no").
      const wants = readBackendFeatures(hello.hello).checkServerName;
      if (wants !== this.#wantsServerNameCheck)
        log.log(
          'info',
          wants ? 'backend checks server names' : 'backend does not check server names',
          {
            backend: this.description,
          },
        );
      this.#wantsServerNameCheck = wants;
    } catch (err) {
      log.log('warn', 'backend refused the hand-off protocol', {
        backend: this.description,
        error: (err as Error).message,
      });
      return undefined;
    } finally {
      clearTimeout(timer);
    }
    log.log('info', 'backend connected', {
      backend: this.description,
      pid: peer.channel.peer.pid,
      uid: peer.channel.peer.uid,
    });
    peer.on('close', () => {
      if (this.#peer === peer) this.#peer = undefined;
      log.log('warn', 'backend channel closed', { backend: this.description });
    });
    peer.on('invalid', (err) =>
      log.log('warn', 'bad message from backend', {
        backend: this.description,
        error: err.message,
      }),
    );
    const requester = `${this.description} pid ${peer.channel.peer.pid}`.slice(0, 256);
    peer.on('message', (m) => {
      for (const f of m.fds) f.close();
      if (m.type !== 'control' || !this.#options.onControl) {
        peer.replyError(m, 'TLSPROXY_ERR_BACKEND', `unexpected ${m.type}`);
        return;
      }
      const key = String(m.body.key);
      // A backend may act only on connections handed to it, and one that keeps guessing keys
      // is cut off.
      if (!this.#keys.has(key)) {
        if (this.#ended.has(key)) {
          peer.replyError(m, 'TLSPROXY_ERR_POOL_UNKNOWN_KEY', 'the connection has ended');
          return;
        }
        peer.replyError(m, 'TLSPROXY_ERR_POOL_UNKNOWN_KEY', 'unknown control key');
        if (++this.#badKeys >= MAX_UNKNOWN_KEYS) {
          log.log('warn', 'backend presented too many unknown control keys; closing its channel', {
            backend: this.description,
          });
          peer.close();
        }
        return;
      }
      // `requester` names this backend to a tlspool daemon, which counts unknown keys per
      // requester (our one channel to it carries every backend's requests): whatever the
      // backend put there is overwritten.
      const args = { ...((m.body.args as Record<string, unknown>) ?? {}), requester };
      this.#options.onControl(key, m.body.op as string, args).then(
        (result) => peer.reply(m, 'control-result', { result: result ?? null }),
        (err) =>
          peer.replyError(
            m,
            (err as { code?: string }).code ?? 'TLSPROXY_ERR_CONTROL',
            (err as Error).message,
          ),
      );
    });
    this.#peer = peer;
    this.#badKeys = 0;
    return peer;
  }

  async available(): Promise<boolean> {
    return (await this.#get()) !== undefined;
  }

  wantsServerNameCheck(): boolean {
    return this.#wantsServerNameCheck;
  }

  async checkServerName(name: string, info: Partial<HandoffInfo>): Promise<boolean> {
    const peer = await this.#get();
    if (!peer) return false;
    const r = await peer.request(
      'server-name',
      { serverName: name, info: info as Record<string, unknown> },
      {
        timeoutMs: this.#options.requestTimeoutMs ?? 5000,
      },
    );
    for (const f of r.fds) f.close();
    return r.type === 'server-name-ok' && r.body.accept === true;
  }

  /** Remember a control key handed to this backend (bounded: the oldest are forgotten first). */
  #remember(key: string | null): void {
    if (!key) return;
    this.#keys.add(key);
    if (this.#keys.size > MAX_KEYS) this.#keys.delete(this.#keys.values().next().value as string);
  }

  forget(controlKey: string): void {
    if (!this.#keys.delete(controlKey)) return;
    this.#ended.add(controlKey);
    if (this.#ended.size > MAX_ENDED_KEYS)
      this.#ended.delete(this.#ended.values().next().value as string);
  }

  async deliver(fd: OwnedFd, info: HandoffInfo, buffered?: Uint8Array): Promise<void> {
    this.#remember(info.controlKey);
    const peer = await this.#get();
    if (!peer) {
      fd.close();
      throw new CoreError('TLSPROXY_ERR_BACKEND', `backend ${this.description} is unavailable`);
    }
    // The descriptor is handed over: fdpass closes our copy once it is in the kernel.
    const r = await peer.request(
      'connection',
      { info: info as unknown as Record<string, unknown> },
      {
        fds: [fd],
        ...(buffered && buffered.length > 0 ? { attachment: buffered } : {}),
        timeoutMs: this.#options.requestTimeoutMs ?? 5000,
      },
    );
    // Whatever a reply carries is ours to close; only 'accepted' means the backend took it.
    for (const f of r.fds) f.close();
    if (r.type !== 'accepted') {
      throw new CoreError(
        'TLSPROXY_ERR_BACKEND',
        `backend answered the hand-off with ${r.type}, not accepted`,
      );
    }
  }

  close(): void {
    this.#closed = true;
    this.#peer?.close();
  }
}
