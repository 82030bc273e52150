// Listening and connecting AF_UNIX SOCK_SEQPACKET sockets on a path or in the abstract namespace.
import { EventEmitter } from 'node:events';
import { unlinkSync } from 'node:fs';
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

/** Most accepts handled per readable event, so a flood cannot starve other work. */
const ACCEPTS_PER_TICK = 64;

export interface SeqpacketServerEvents {
  connection: [Channel];
  error: [Error];
  close: [];
}

export class SeqpacketServer extends EventEmitter<SeqpacketServerEvents> {
  readonly address: Address | undefined;
  #fd: number;
  #poll: PollHandle | undefined;
  #options: ChannelOptions;
  #unlinkOnClose: string | undefined;

  /** Takes ownership of a listening SEQPACKET descriptor (e.g. from systemd). */
  constructor(
    fd: number | OwnedFd,
    options: ChannelOptions & { address?: Address; unlinkOnClose?: string } = {},
  ) {
    super();
    this.#fd = typeof fd === 'number' ? fd : fd.take();
    this.#options = options;
    this.address = options.address;
    this.#unlinkOnClose = options.unlinkOnClose;
    this.#poll = binding().pollCreate(this.#fd, (status) => this.#onReadable(status));
    binding().pollStart(this.#poll, 1);
  }

  get fd(): number {
    return this.#fd;
  }

  #onReadable(status: number): void {
    if (this.#fd < 0) return;
    if (status < 0) {
      this.emit(
        'error',
        new FdpassError('TLSPROXY_ERR_FDPASS_SYSCALL', `poll failed (libuv status ${status})`),
      );
      return;
    }
    for (let i = 0; i < ACCEPTS_PER_TICK && this.#fd >= 0; i++) {
      let c: number | null;
      try {
        c = binding().accept(this.#fd);
      } catch (err) {
        // EMFILE and friends: report, keep listening (the pending connection stays queued).
        this.emit('error', FdpassError.fromSystem(err, 'accept'));
        return;
      }
      if (c === null) return;
      const ch = new Channel(c, this.#options);
      if (this.listenerCount('connection') === 0) ch.close();
      else this.emit('connection', ch);
    }
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
    try {
      binding().close(fd);
    } catch {}
    if (this.#unlinkOnClose) {
      try {
        unlinkSync(this.#unlinkOnClose);
      } catch {}
    }
    queueMicrotask(() => this.emit('close'));
  }
}

function split(addr: Address): [string, boolean] {
  return 'path' in addr ? [addr.path, false] : [addr.abstract, true];
}

/** Listen on a path (stale socket files are replaced, live ones are EADDRINUSE) or abstract name. */
export function listen(
  address: Address & ListenOptions,
  extra: ListenOptions = {},
): SeqpacketServer {
  const options = { ...address, ...extra };
  const [name, abstract] = split(address);
  let fd: number;
  try {
    fd = binding().listen(name, abstract, options.mode ?? 0o600, options.backlog ?? 511);
  } catch (err) {
    throw FdpassError.fromSystem(err, `listen on ${abstract ? '@' : ''}${name}`);
  }
  return new SeqpacketServer(fd, {
    ...options,
    address,
    ...(abstract ? {} : { unlinkOnClose: name }),
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
  const deadline = Date.now() + (options.timeoutMs ?? 5000);
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
