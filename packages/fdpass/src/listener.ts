// Listening and connecting AF_UNIX SOCK_SEQPACKET sockets on a path or in the abstract namespace.
import { EventEmitter } from 'node:events';
import { lstatSync, unlinkSync } from 'node:fs';
import { Channel, type ChannelOptions } from './channel.js';
import { FdpassError } from './errors.js';
import type { OwnedFd } from './fd.js';
import { binding } from './loader.js';
import type { PollHandle } from './native.js';

export type Address = { path: string } | { abstract: string };

export interface ListenOptions extends ChannelOptions {
  /** File mode of the socket file; default 0o600 (owner only). Ignored for abstract names. */
  mode?: number;
  backlog?: number;
}

/** After a failed accept (EMFILE): how long to wait before trying again (libuv's own listeners
 * keep a spare descriptor instead; a SEQPACKET listener has no such trick). */
const ACCEPT_BACKOFF_MS = 100;
/** Most accepts handled per readable event, so a flood cannot starve other work. */
export const ACCEPTS_PER_TICK = 64;
/** listen()'s backlog when the caller gives none. */
export const DEFAULT_BACKLOG = 511;
/** How long connect() retries a full backlog (EAGAIN) when the caller gives no timeout. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5000;

export interface SeqpacketServerEvents {
  connection: [Channel];
  error: [Error];
  close: [];
}

/** Which file a socket path named when we bound it: device and inode (lstat). */
export interface SocketFileId {
  dev: bigint;
  ino: bigint;
}

/** The identity of the socket file at `path`, or undefined when it is gone or not a socket. */
function socketFileId(path: string): SocketFileId | undefined {
  try {
    const st = lstatSync(path, { bigint: true });
    return st.isSocket() ? { dev: st.dev, ino: st.ino } : undefined;
  } catch {
    return undefined;
  }
}

export class SeqpacketServer extends EventEmitter<SeqpacketServerEvents> {
  readonly address: Address | undefined;
  #fd: number;
  #poll: PollHandle | undefined;
  #options: ChannelOptions;
  #unlinkOnClose: { path: string; id: SocketFileId } | undefined;

  /**
   * Takes ownership of a listening SEQPACKET descriptor (e.g. from systemd). With
   * `unlinkOnClose`, close() removes that path, but only while it is still the socket file that
   * was there at construction (or `unlinkOnCloseId`): a successor may have taken the path over.
   */
  constructor(
    fd: number | OwnedFd,
    options: ChannelOptions & {
      address?: Address;
      unlinkOnClose?: string;
      unlinkOnCloseId?: SocketFileId;
    } = {},
  ) {
    super();
    this.#fd = typeof fd === 'number' ? fd : fd.take();
    this.#options = options;
    this.address = options.address;
    if (options.unlinkOnClose !== undefined) {
      const id = options.unlinkOnCloseId ?? socketFileId(options.unlinkOnClose);
      if (id) this.#unlinkOnClose = { path: options.unlinkOnClose, id };
    }
    this.#poll = binding().pollCreate(this.#fd, (status) => this.#onReadable(status));
    binding().pollStart(this.#poll, 1);
  }

  get fd(): number {
    return this.#fd;
  }

  #onReadable(status: number): void {
    if (this.#fd < 0) return;
    if (status < 0) {
      this.#error(
        new FdpassError('TLSPROXY_ERR_FDPASS_SYSCALL', `poll failed (libuv status ${status})`),
      );
      return;
    }
    for (let i = 0; i < ACCEPTS_PER_TICK && this.#fd >= 0; i++) {
      let c: number | null;
      try {
        c = binding().accept(this.#fd);
      } catch (err) {
        // EMFILE and friends: report, keep listening (the pending connection stays queued) —
        // but not at once: the socket stays readable, and polling again right away would spin
        // (hundreds of thousands of failed accepts a second) until a descriptor frees up.
        this.#error(FdpassError.fromSystem(err, 'accept'));
        this.#backOff();
        return;
      }
      if (c === null) return;
      const ch = new Channel(c, this.#options);
      if (this.listenerCount('connection') === 0) ch.close();
      else this.emit('connection', ch);
    }
  }

  #backOffTimer: NodeJS.Timeout | undefined;

  /** Stop polling for ACCEPT_BACKOFF_MS, then try again. */
  #backOff(): void {
    if (!this.#poll || this.#backOffTimer) return;
    binding().pollStart(this.#poll, 0);
    this.#backOffTimer = setTimeout(() => {
      this.#backOffTimer = undefined;
      if (this.#poll && this.#fd >= 0) binding().pollStart(this.#poll, 1);
    }, ACCEPT_BACKOFF_MS);
  }

  /**
   * Peers can provoke these (a connection flood runs us out of descriptors), so without an
   * 'error' listener they are dropped rather than thrown as an uncaught exception.
   */
  #error(err: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  unref(): this {
    if (this.#poll) binding().pollRef(this.#poll, false);
    return this;
  }

  ref(): this {
    if (this.#poll) binding().pollRef(this.#poll, true);
    return this;
  }

  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    if (this.#poll) binding().pollClose(this.#poll);
    this.#poll = undefined;
    if (this.#backOffTimer) clearTimeout(this.#backOffTimer);
    this.#backOffTimer = undefined;
    try {
      binding().close(fd);
    } catch {}
    const own = this.#unlinkOnClose;
    this.#unlinkOnClose = undefined;
    // Remove the file only if it is still the one we bound: in a rolling restart the successor
    // has bound the path by now and must stay reachable. (The check and the unlink are two
    // syscalls; no call unlinks "only if still this inode", so a takeover in between is lost.)
    const now = own && socketFileId(own.path);
    if (own && now && now.dev === own.id.dev && now.ino === own.id.ino) {
      try {
        unlinkSync(own.path);
      } catch {}
    }
    queueMicrotask(() => this.emit('close'));
  }
}

function split(addr: Address): [string, boolean] {
  return 'path' in addr ? [addr.path, false] : [addr.abstract, true];
}

/**
 * Listen on a path or abstract name. A stale socket file (its owner is gone: connect() says
 * ECONNREFUSED) is replaced; a live socket of any type there, or one we cannot probe, fails
 * with TLSPROXY_ERR_FDPASS_ADDRESS_IN_USE.
 */
export function listen(
  address: Address & ListenOptions,
  extra: ListenOptions = {},
): SeqpacketServer {
  const options = { ...address, ...extra };
  const [name, abstract] = split(address);
  const where = `${abstract ? '@' : ''}${name}`;
  let fd: number;
  try {
    fd = binding().listen(
      name,
      abstract,
      options.mode ?? 0o600,
      options.backlog ?? DEFAULT_BACKLOG,
    );
  } catch (err) {
    const e = FdpassError.fromSystem(err, `listen on ${where}`);
    if (e.sysCode !== 'EADDRINUSE') throw e;
    const inUse = new FdpassError(
      'TLSPROXY_ERR_FDPASS_ADDRESS_IN_USE',
      `listen on ${where}: address in use by a live socket; stop its owner or choose another path (${(err as Error).message})`,
      { cause: err },
    );
    if (e.errno !== undefined) inUse.errno = e.errno;
    if (e.syscall !== undefined) inUse.syscall = e.syscall;
    inUse.sysCode = 'EADDRINUSE';
    throw inUse;
  }
  // Right after bind: which file is ours, so close() never removes a successor's.
  const id = abstract ? undefined : socketFileId(name);
  return new SeqpacketServer(fd, {
    ...options,
    address,
    ...(abstract ? {} : { unlinkOnClose: name }),
    ...(id ? { unlinkOnCloseId: id } : {}),
  });
}

export interface ConnectOptions extends ChannelOptions {
  /** How long to retry while the listener's backlog is full (EAGAIN); default 5000 ms. */
  timeoutMs?: number;
}

/** Connect to a SEQPACKET listener. */
export async function connect(
  address: Address & ConnectOptions,
  extra: ConnectOptions = {},
): Promise<Channel> {
  const options = { ...address, ...extra };
  const [name, abstract] = split(address);
  const deadline = Date.now() + (options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS);
  for (let delay = 1; ; delay = Math.min(delay * 2, 100)) {
    try {
      return new Channel(binding().connect(name, abstract), options);
    } catch (err) {
      const e = FdpassError.fromSystem(err, `connect to ${abstract ? '@' : ''}${name}`);
      if (e.sysCode !== 'EAGAIN' || Date.now() + delay > deadline) throw e;
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
