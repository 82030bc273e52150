// The modest application library (seed note, "A modest Application Library"): a backend calls
// listen() instead of socket()/bind()/listen(), then accept() as it would on a TCP socket, and
// gets a plaintext net.Socket plus what was negotiated. SNI checks and control requests travel
// over the same fdpass channel the connection came through.
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import {
  type Channel,
  type FdpassError,
  type Incoming,
  listenFds,
  listen as listenSeqpacket,
  type Peer,
  SeqpacketServer,
} from '@tlsproxy/fdpass';
import { BackendError } from './errors.js';
import {
  type BackendFeatures,
  backendProtocol,
  type ClientIdentity,
  type HandoffInfo,
  parseHandoffInfo,
} from './protocol.js';

export interface ListenOptions {
  /** Filesystem path of the socket to create. */
  path?: string;
  /** Abstract-namespace name instead of a path. */
  abstract?: string;
  /** A listening SEQPACKET descriptor passed in (this object takes ownership). */
  fd?: number;
  /** Name of a socket passed by systemd (LISTEN_FDNAMES). */
  systemd?: string;
  /** Socket file mode; default 0o600. */
  mode?: number;
  /** uids allowed to connect (SO_PEERCRED); default: this process's uid and root. */
  allowUids?: number[];
  /**
   * Accept or refuse an SNI name while the handshake waits. Default: accept all. When set, the
   * backend declares `checkServerName` in its hello, so the proxy asks it for every handshake
   * (not only when the proxy runs with --check-server-name).
   */
  onServerName?: (name: string, info: Partial<HandoffInfo>) => boolean | Promise<boolean>;
  /** Connections queued while nobody calls accept(); more are refused. Default 128. */
  maxPending?: number;
  /** Called with one line per noteworthy event (refused peers, bad messages). Default: none. */
  log?: (message: string) => void;
}

export interface Accepted {
  socket: net.Socket;
  info: HandoffInfo;
  /** Bytes the client already sent that the backend must answer (plaintext hand-off only). */
  buffered: Buffer;
  control: Control;
}

/** Control requests for one connection; they travel back to the TLS engine with its key. */
export class Control {
  readonly #peer: Peer;
  readonly #key: string | null;
  constructor(peer: Peer, key: string | null) {
    this.#peer = peer;
    this.#key = key;
  }

  /** A control result of the wrong shape is the proxy's bug, reported like a failed request. */
  #malformed(op: string, what: string): BackendError {
    return new BackendError(
      'TLSPROXY_ERR_BACKEND_CONTROL',
      `control ${op}: malformed result (${what})`,
    );
  }

  async #call(op: string, args: Record<string, unknown>): Promise<unknown> {
    if (!this.#key)
      throw new BackendError(
        'TLSPROXY_ERR_BACKEND_CONTROL',
        'this connection has no TLS session to control',
      );
    if (this.#peer.closed)
      throw new BackendError('TLSPROXY_ERR_BACKEND_CLOSED', 'the proxy channel is closed');
    let r: Incoming;
    try {
      r = await this.#peer.request('control', { key: this.#key, op, args }, { timeoutMs: 10_000 });
    } catch (err) {
      throw new BackendError(
        'TLSPROXY_ERR_BACKEND_CONTROL',
        `control ${op}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    // Any message with re = our id answers the request; only control-result is an answer, and
    // descriptors never belong in one.
    for (const f of r.fds) f.close();
    if (r.type !== 'control-result') throw this.#malformed(op, `answered with ${r.type}`);
    return r.body.result;
  }

  /** Current TLS session facts as the TLS engine sees them. */
  async info(): Promise<{
    version: string;
    cipher: string;
    alpn: string | null;
    serverName: string | null;
    clientIdentity: ClientIdentity | null;
  }> {
    const r = await this.#call('info', {});
    if (typeof r !== 'object' || r === null || Array.isArray(r))
      throw this.#malformed('info', 'not an object');
    return r as never;
  }

  /** RFC 5705 keying material exporter. */
  async exporter(label: string, length: number, context?: Uint8Array): Promise<Buffer> {
    const args: Record<string, unknown> = { label, length };
    if (context) args.context = Buffer.from(context).toString('base64');
    const r = await this.#call('exporter', args);
    if (typeof r !== 'string') throw this.#malformed('exporter', 'not a base64 string');
    return Buffer.from(r, 'base64');
  }

  /** Ask for a client certificate after the fact (TLS 1.2 only). */
  async renegotiate(): Promise<ClientIdentity | null> {
    const r = await this.#call('renegotiate', {});
    if (r !== null && (typeof r !== 'object' || Array.isArray(r)))
      throw this.#malformed('renegotiate', 'not an object or null');
    return r as ClientIdentity | null;
  }

  /** Close the TLS session (close_notify) from the engine's side. */
  async close(): Promise<void> {
    await this.#call('close', {});
  }
}

export interface BackendServerEvents {
  connection: [net.Socket, HandoffInfo, Accepted];
  error: [Error];
  close: [];
}

export class BackendServer extends EventEmitter<BackendServerEvents> {
  readonly #server: SeqpacketServer;
  readonly #options: ListenOptions;
  readonly #allow: Set<number>;
  readonly #queue: Accepted[] = [];
  readonly #waiters: Array<{ resolve(a: Accepted): void; reject(e: Error): void }> = [];
  readonly #peers = new Set<Peer>();
  #closed = false;

  constructor(server: SeqpacketServer, options: ListenOptions) {
    super();
    this.#server = server;
    this.#options = options;
    this.#allow = new Set(options.allowUids ?? [process.getuid?.() ?? 0, 0]);
    server.on('connection', (ch) => this.#onChannel(ch));
    server.on('error', (err) => this.#log(`accept failed: ${err.message}`));
  }

  get path(): string | undefined {
    const a = this.#server.address;
    return a && 'path' in a ? a.path : undefined;
  }

  readonly #onQueuedError = (err: Error): void => {
    this.#log(`a queued connection failed before accept(): ${err.message}`);
  };

  /** A throwing log callback must not turn a logged peer error into a crash. */
  #log(msg: string): void {
    try {
      this.#options.log?.(msg);
    } catch {}
  }

  /** What this backend declares in its hello. */
  get features(): BackendFeatures {
    return { checkServerName: this.#options.onServerName !== undefined };
  }

  #onChannel(ch: Channel): void {
    let uid: number;
    try {
      uid = ch.peer.uid;
    } catch {
      ch.close();
      return;
    }
    if (!this.#allow.has(uid)) {
      this.#log(
        `refused a proxy connection from uid ${uid} (pid ${ch.peer.pid}): not in allowUids`,
      );
      ch.close();
      return;
    }
    const features: BackendFeatures = this.features;
    const peer = backendProtocol.attach(ch, {
      hello: { features: features as unknown as Record<string, unknown> },
    });
    this.#peers.add(peer);
    peer.on('close', () => this.#peers.delete(peer));
    peer.on('invalid', (err: FdpassError) => this.#log(`bad message from proxy: ${err.message}`));
    // Error messages that answer nothing of ours (e.g. a proxy that did not understand
    // something): nothing to do but say so, once per code and channel so a peer cannot flood
    // the log.
    const seen = new Set<string>();
    peer.on('remoteError', (err) => {
      const code = String((err as FdpassError & { remoteCode?: unknown }).remoteCode);
      if (seen.has(code) || seen.size >= 16) return;
      seen.add(code);
      this.#log(`the proxy answered with an error (further ${code} not logged): ${err.message}`);
    });
    peer.on('message', (m) => {
      this.#onMessage(peer, m).catch((err) => {
        for (const f of m.fds) f.close();
        this.#log(`${m.type} from proxy failed: ${(err as Error).message}`);
        peer.replyError(m, 'TLSPROXY_ERR_BACKEND_PEER', (err as Error).message);
      });
    });
  }

  // Message types come from the peer: compared with ===, never used to look up a handler.
  async #onMessage(peer: Peer, m: Incoming): Promise<void> {
    if (m.type === 'server-name') {
      const name = m.body.serverName as string;
      const check = this.#options.onServerName;
      const accept = check ? await check(name, m.body.info as Partial<HandoffInfo>) : true;
      peer.reply(m, 'server-name-ok', { accept: accept === true });
      return;
    }
    if (m.type === 'connection') {
      const fd = m.fds[0]!;
      const parsed = parseHandoffInfo(m.body.info);
      if ('error' in parsed) {
        fd.close();
        this.#log(`refused a connection from the proxy: malformed hand-off info (${parsed.error})`);
        peer.replyError(m, 'TLSPROXY_ERR_BACKEND_PEER', `malformed hand-off info: ${parsed.error}`);
        return;
      }
      if (
        this.#closed ||
        (this.#waiters.length === 0 &&
          this.listenerCount('connection') === 0 &&
          this.#queue.length >= (this.#options.maxPending ?? 128))
      ) {
        fd.close();
        peer.replyError(m, 'TLSPROXY_ERR_BACKEND_BUSY', 'backend is not accepting connections');
        return;
      }
      const info = parsed.info;
      let socket: net.Socket;
      try {
        socket = fd.toSocket({ allowHalfOpen: false }); // closes the descriptor when it throws
      } catch (err) {
        this.#log(`refused a connection from the proxy: ${(err as Error).message}`);
        peer.replyError(m, 'TLSPROXY_ERR_BACKEND_PEER', (err as Error).message);
        return;
      }
      const accepted: Accepted = {
        socket,
        info,
        buffered: m.attachment,
        control: new Control(peer, info.controlKey ?? null),
      };
      peer.reply(m, 'accepted', {});
      const w = this.#waiters.shift();
      if (w) w.resolve(accepted);
      else if (this.listenerCount('connection') > 0) {
        // The proxy has its answer; a listener's own exception is the listener's bug, logged
        // here rather than answered to the proxy a second time.
        try {
          this.emit('connection', socket, info, accepted);
        } catch (err) {
          this.#log(`a 'connection' listener threw: ${(err as Error).message}`);
        }
      } else {
        // Until accept() hands it out nobody listens on the socket: a client reset (crypt
        // hand-off: the raw TCP socket) would otherwise be an uncaught 'error' and end the process.
        socket.on('error', this.#onQueuedError);
        this.#queue.push(accepted);
      }
      return;
    }
    for (const f of m.fds) f.close();
    this.#log(`unexpected ${m.type} from proxy`);
    peer.replyError(m, 'TLSPROXY_ERR_BACKEND_PEER', `unexpected ${m.type}`);
  }

  /** The next connection, like accept(2). Rejects once the server is closed. */
  accept(): Promise<Accepted> {
    const q = this.#queue.shift();
    if (q) {
      q.socket.off('error', this.#onQueuedError);
      return Promise.resolve(q);
    }
    if (this.#closed)
      return Promise.reject(new BackendError('TLSPROXY_ERR_BACKEND_CLOSED', 'server is closed'));
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Accepted> {
    while (true) {
      try {
        yield await this.accept();
      } catch (err) {
        if ((err as BackendError).code === 'TLSPROXY_ERR_BACKEND_CLOSED') return;
        throw err;
      }
    }
  }

  /** Stop listening; queued connections are closed, the proxy channels too. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#server.close();
    for (const a of this.#queue.splice(0)) a.socket.destroy();
    const err = new BackendError('TLSPROXY_ERR_BACKEND_CLOSED', 'server is closed');
    for (const w of this.#waiters.splice(0)) w.reject(err);
    for (const p of this.#peers) p.close();
    this.emit('close');
  }
}

/** Listen for connections handed over by tlsproxy. */
export async function listen(options: ListenOptions | string): Promise<BackendServer> {
  const opts: ListenOptions = typeof options === 'string' ? { path: options } : options;
  let server: SeqpacketServer;
  if (opts.fd !== undefined) {
    server = new SeqpacketServer(opts.fd);
  } else if (opts.systemd !== undefined) {
    const fds = listenFds();
    const mine = fds.find((f) => f.name === opts.systemd);
    for (const f of fds) if (f !== mine) f.fd.close();
    if (!mine)
      throw new BackendError(
        'TLSPROXY_ERR_BACKEND_SYSTEMD',
        `no socket named "${opts.systemd}" was passed by systemd`,
      );
    server = new SeqpacketServer(mine.fd);
  } else if (opts.path !== undefined) {
    server = listenSeqpacket({ path: opts.path, mode: opts.mode ?? 0o600 });
  } else if (opts.abstract !== undefined) {
    server = listenSeqpacket({ abstract: opts.abstract });
  } else {
    throw new TypeError('listen() needs path, abstract, fd or systemd');
  }
  return new BackendServer(server, opts);
}
