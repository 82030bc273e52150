// A TlsEngineApi that talks to a tlspool daemon: the proxy hands it the TCP descriptor after the
// preamble and gets the plaintext end back. Reconnects by itself after the daemon restarts.
import type net from 'node:net';
import { connect, detachSocket, type OwnedFd, type Peer } from '@tlsproxy/fdpass';
import type {
  ConnectInfo,
  ConnectRequest,
  ConnectResult,
  ControlOp,
  HandshakeRequest,
  HandshakeResult,
  NegotiatedInfo,
  SessionEndReason,
  TlsEngineApi,
} from './engine.js';
import { isResourceError, PoolError, VERIFY_REASONS, type VerifyReason } from './errors.js';
import { MAX_FAILURE, poolProtocol } from './protocol.js';

export interface RemoteOptions {
  /** Path of the daemon's socket. */
  socket: string;
  /** Connect + hello deadline; default 2000 ms. */
  connectTimeoutMs?: number;
  /** uids the daemon may run as (SO_PEERCRED of the connected socket); default: any. */
  allowUids?: number[];
}

/**
 * Largest CA text sent with a connect request: the channel's 64 KiB message cap less room for
 * the header. A bigger bundle belongs in the daemon's own trust store (request without ca).
 */
const MAX_CA_ATTACHMENT = 60 * 1024;

function closeInput(input: net.Socket | OwnedFd): void {
  if ('toSocket' in input) input.close();
  else input.destroy();
}

/**
 * The daemon's answer to a failed connect as the embedded engine would have thrown it: its
 * code, its message without the "CODE: " prefix the channel adds, and for
 * TLSPROXY_ERR_POOL_VERIFY the reason read back from the message (the wire carries code and
 * message only).
 */
function remoteConnectError(err: unknown): PoolError {
  const e = err as { remoteCode?: unknown; message: string };
  const code = typeof e.remoteCode === 'string' ? e.remoteCode : undefined;
  const message =
    code && e.message.startsWith(`${code}: `) ? e.message.slice(code.length + 2) : e.message;
  if (code === 'TLSPROXY_ERR_FDPASS_PROTOCOL' && /unknown message type "connect"/.test(message))
    return new PoolError(
      'TLSPROXY_ERR_POOL_UNSUPPORTED',
      'the tlspool daemon does not know connect (it is older than the client role): upgrade it',
      { cause: err },
    );
  if (code === 'TLSPROXY_ERR_POOL_VERIFY') {
    const said = /^server certificate rejected \(([a-z-]+)\)/.exec(message)?.[1];
    const reason = VERIFY_REASONS.has(said as VerifyReason) ? (said as VerifyReason) : 'other';
    return new PoolError('TLSPROXY_ERR_POOL_VERIFY', message, { cause: err, reason });
  }
  return new PoolError((code as never) ?? 'TLSPROXY_ERR_POOL_HANDSHAKE', message, { cause: err });
}

/** `HandshakeResult.completed` of a session handed out early, and how it settles. */
interface Completion {
  promise: Promise<void>;
  resolve(): void;
  reject(err: Error): void;
}

function completion(): Completion {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}

type OnEnd = NonNullable<HandshakeRequest['onEnd']>;

/** A caller's onEnd must not break the channel's message handling. */
function callEnd(
  onEnd: HandshakeRequest['onEnd'],
  failure?: Error,
  reason?: SessionEndReason,
): void {
  try {
    onEnd?.(failure, reason);
  } catch {}
}

export class RemoteTlsEngine implements TlsEngineApi {
  readonly #options: RemoteOptions;
  #peer: Peer | undefined;
  #connecting: Promise<Peer> | undefined;
  #names: string[] = [];
  #serverNameChecks = new Map<number, (name: string) => boolean | Promise<boolean>>();
  /** onEnd of each session, by the id of its handshake request, per channel to the daemon. */
  readonly #ends = new Map<Peer, Map<number, OnEnd>>();
  /**
   * Sessions handed out early (earlyHandoff): their `completed`, by handshake request id, per
   * channel — made before the request is sent, since 'handshake-complete' may arrive right
   * behind 'established'.
   */
  readonly #completes = new Map<Peer, Map<number, Completion>>();
  #closed = false;

  constructor(options: RemoteOptions) {
    this.#options = options;
  }

  async #get(): Promise<Peer> {
    if (this.#peer && !this.#peer.closed) return this.#peer;
    if (this.#closed)
      throw new PoolError('TLSPROXY_ERR_POOL_HANDSHAKE', 'TLS engine client is closed');
    this.#connecting ??= this.#connect().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  async #connect(): Promise<Peer> {
    const timeoutMs = this.#options.connectTimeoutMs ?? 2000;
    let peer: Peer;
    try {
      const ch = await connect({ path: this.#options.socket }, { timeoutMs });
      const allow = this.#options.allowUids;
      if (allow && !allow.includes(ch.peer.uid)) {
        ch.close();
        throw new Error(`the socket belongs to uid ${ch.peer.uid}, not in allowUids`);
      }
      peer = poolProtocol.attach(ch);
    } catch (err) {
      throw new PoolError(
        'TLSPROXY_ERR_POOL_HANDSHAKE',
        `TLS engine at ${this.#options.socket} unreachable: ${(err as Error).message}`,
        { cause: err },
      );
    }
    const timer = setTimeout(() => peer.close(), timeoutMs);
    try {
      await peer.ready;
    } catch (err) {
      // Closed (or refused) before its hello: as unreachable as a refused connect, and the
      // caller's descriptor is closed by the caller on this error like on that one.
      peer.close();
      throw new PoolError(
        'TLSPROXY_ERR_POOL_HANDSHAKE',
        `TLS engine at ${this.#options.socket} unreachable: ${(err as Error).message}`,
        { cause: err },
      );
    } finally {
      clearTimeout(timer);
    }
    const ends = new Map<number, OnEnd>();
    this.#ends.set(peer, ends);
    const completes = new Map<number, Completion>();
    this.#completes.set(peer, completes);
    peer.on('message', (m) => {
      for (const f of m.fds) f.close();
      if (m.type === 'handshake-complete') {
        // A session handed out early finished its handshake (a notification: no answer).
        const id = m.body.handshake as number;
        completes.get(id)?.resolve();
        completes.delete(id);
        return;
      }
      if (m.type === 'session-end') {
        // A notification: no answer. An id we do not know (already reported) is ignored.
        const id = m.body.handshake as number;
        const onEnd = ends.get(id);
        ends.delete(id);
        // Handed out early, the handshake failed after (the daemon's engine says why; text).
        const why = m.body.failure;
        const failure =
          typeof why === 'string'
            ? new PoolError('TLSPROXY_ERR_POOL_HANDSHAKE', why.slice(0, MAX_FAILURE))
            : undefined;
        completes
          .get(id)
          ?.reject(
            failure ??
              new PoolError('TLSPROXY_ERR_POOL_HANDSHAKE', 'session ended before its handshake'),
          );
        completes.delete(id);
        // Only the reason this version knows; anything else a newer daemon sends is left out.
        callEnd(onEnd, failure, m.body.reason === 'idle' ? 'idle' : undefined);
        return;
      }
      if (m.type !== 'check-server-name') {
        peer.replyError(m, 'TLSPROXY_ERR_POOL_CONTROL', `unexpected ${m.type}`);
        return;
      }
      const check = this.#serverNameChecks.get(m.body.handshake as number);
      Promise.resolve(check ? check(m.body.serverName as string) : true).then(
        (accept) => peer.reply(m, 'server-name-ok', { accept: accept === true }),
        () => peer.reply(m, 'server-name-ok', { accept: false }),
      );
    });
    peer.on('close', () => {
      if (this.#peer === peer) this.#peer = undefined;
      // The daemon can no longer tell us when these sessions end (if it died, they are gone):
      // report them ended now rather than never, so callers do not keep their keys for good.
      this.#ends.delete(peer);
      const pending = [...ends.values()];
      ends.clear();
      this.#completes.delete(peer);
      const lost = new PoolError('TLSPROXY_ERR_POOL_HANDSHAKE', 'channel to the TLS engine lost');
      for (const c of completes.values()) c.reject(lost);
      completes.clear();
      for (const onEnd of pending) callEnd(onEnd);
    });
    this.#peer = peer;
    try {
      const r = await peer.request('server-names', {}, { timeoutMs });
      this.#names = (r.body.names as unknown[]).filter((n): n is string => typeof n === 'string');
    } catch {}
    return peer;
  }

  /** Whether the daemon is reachable now (connects if needed). */
  async available(): Promise<boolean> {
    try {
      await this.#get();
      return true;
    } catch {
      return false;
    }
  }

  serverNames(): string[] {
    return this.#names;
  }

  async handshake(
    input: net.Socket | OwnedFd,
    request: HandshakeRequest = {},
  ): Promise<HandshakeResult> {
    // Functions do not cross the socket: they become flags the daemon answers with messages.
    const { checkServerName, onEnd, onBytes: _bytes, ...rest } = request;
    const body = {
      ...rest,
      checkServerName: checkServerName !== undefined,
      sessionEnd: onEnd !== undefined,
    };
    const r = await this.#call('handshake', input, body, {
      timeoutMs: (request.handshakeTimeoutMs ?? 10_000) + 5000,
      ...(checkServerName ? { checkServerName } : {}),
      ...(onEnd ? { onEnd } : {}),
      ...(request.earlyHandoff === true ? { early: true } : {}),
    });
    return { ...r, info: r.info as unknown as NegotiatedInfo };
  }

  /**
   * The client side through the daemon (issue 18): the descriptor and the request's data go to
   * the daemon, the CAs as PEM text in the attachment; only the client identity's NAME crosses,
   * so its key stays in the daemon. Errors are the embedded engine's (with `reason` for
   * TLSPROXY_ERR_POOL_VERIFY); a daemon that predates 'connect' gives
   * TLSPROXY_ERR_POOL_UNSUPPORTED.
   */
  async connect(input: net.Socket | OwnedFd, request: ConnectRequest): Promise<ConnectResult> {
    const { onEnd, ca, ...rest } = request;
    let attachment: Buffer | undefined;
    if (ca !== undefined) {
      attachment = typeof ca === 'string' ? Buffer.from(ca, 'utf8') : undefined;
      if (!attachment || attachment.length > MAX_CA_ATTACHMENT) {
        closeInput(input);
        throw new PoolError(
          'TLSPROXY_ERR_POOL_CONFIG',
          `ca must be PEM text of at most ${MAX_CA_ATTACHMENT} bytes to cross to the tlspool daemon (its channel carries 64 KiB messages)`,
        );
      }
    }
    const r = await this.#call(
      'connect',
      input,
      { ...rest, sessionEnd: onEnd !== undefined },
      {
        timeoutMs: (request.handshakeTimeoutMs ?? 10_000) + 5000,
        ...(attachment && attachment.length > 0 ? { attachment } : {}),
        ...(onEnd ? { onEnd } : {}),
      },
    );
    return { ...r, info: r.info as unknown as ConnectInfo };
  }

  /** One request that sends a connection to the daemon and gets its plaintext end back. */
  async #call(
    type: 'handshake' | 'connect',
    input: net.Socket | OwnedFd,
    body: Record<string, unknown>,
    options: {
      timeoutMs: number;
      attachment?: Buffer;
      checkServerName?: (name: string) => boolean | Promise<boolean>;
      onEnd?: (failure?: Error) => void;
      /** A handshake asked to be handed out early: keep a `completed` for it. */
      early?: boolean;
    },
  ): Promise<{
    plaintext: OwnedFd;
    controlKey: Buffer;
    info: Record<string, unknown>;
    completed?: Promise<void>;
  }> {
    let fd: OwnedFd;
    try {
      fd = 'toSocket' in input ? input : detachSocket(input).fd;
    } catch (err) {
      // dup() failed (EMFILE…): the connection is still the socket's; close it, say why.
      if (!('toSocket' in input)) input.destroy();
      throw isResourceError(err)
        ? new PoolError(
            'TLSPROXY_ERR_POOL_RESOURCES',
            `cannot take the connection: out of resources (${(err as Error).message})`,
            { cause: err },
          )
        : new PoolError(
            'TLSPROXY_ERR_POOL_HANDSHAKE',
            `cannot take the connection: ${(err as Error).message}`,
            { cause: err },
          );
    }
    let peer: Peer;
    try {
      peer = await this.#get();
    } catch (err) {
      fd.close();
      throw err;
    }
    const { checkServerName, onEnd } = options;
    const ends = this.#ends.get(peer);
    const completes = this.#completes.get(peer);
    const completed = options.early ? completion() : undefined;
    let rid = -1;
    // The daemon names the handshake's request id when it asks us about the SNI name.
    const pending = peer.request(
      type,
      { request: body },
      {
        fds: [fd],
        ...(options.attachment ? { attachment: options.attachment } : {}),
        timeoutMs: options.timeoutMs,
        onId: (id) => {
          rid = id;
          if (checkServerName) this.#serverNameChecks.set(id, checkServerName);
          // Before the request is sent: 'session-end' may come right behind 'established'.
          if (onEnd) ends?.set(id, onEnd);
          if (completed) completes?.set(id, completed);
        },
      },
    );
    try {
      const r = await pending;
      const plaintext = r.fds[0];
      if (!plaintext)
        throw new PoolError('TLSPROXY_ERR_POOL_HANDSHAKE', 'daemon sent no descriptor');
      if (r.type !== 'established' || !/^[0-9a-f]{32}$/.test(String(r.body.key))) {
        for (const f of r.fds) f.close();
        throw new PoolError('TLSPROXY_ERR_POOL_HANDSHAKE', `daemon answered ${r.type}`);
      }
      // A daemon that will not report the end (one older than 'session-end'): do not keep the
      // callback for a message that never comes.
      if (r.body.sessionEnd !== true) ends?.delete(rid);
      // Handed out before the handshake's end only when the daemon says so.
      const early = completed !== undefined && r.body.early === true;
      if (!early) completes?.delete(rid);
      return {
        plaintext,
        controlKey: Buffer.from(r.body.key as string, 'hex'),
        info: r.body.info as Record<string, unknown>,
        ...(early ? { completed: completed.promise } : {}),
      };
    } catch (err) {
      // No session: nothing will end.
      ends?.delete(rid);
      completes?.delete(rid);
      if (err instanceof PoolError) throw err;
      throw type === 'connect'
        ? remoteConnectError(err)
        : new PoolError(
            ((err as { remoteCode?: string }).remoteCode as never) ?? 'TLSPROXY_ERR_POOL_HANDSHAKE',
            (err as Error).message,
            { cause: err },
          );
    } finally {
      this.#serverNameChecks.delete(rid);
    }
  }

  async control(
    key: Buffer | string,
    op: ControlOp,
    args: Record<string, unknown> = {},
  ): Promise<unknown> {
    const peer = await this.#get();
    try {
      const r = await peer.request(
        'control',
        { key: typeof key === 'string' ? key : key.toString('hex'), op, args },
        { timeoutMs: 10_000 },
      );
      return r.body.result;
    } catch (err) {
      const e = err as { remoteCode?: string; message: string };
      throw new PoolError((e.remoteCode as never) ?? 'TLSPROXY_ERR_POOL_CONTROL', e.message, {
        cause: err,
      });
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#peer?.close();
  }
}
