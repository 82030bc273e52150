// A message channel over a connected AF_UNIX SOCK_SEQPACKET socket, driven by uv_poll.
//
// SEQPACKET keeps message boundaries and delivers descriptors with the message they were sent
// with (unix(7)); SOCK_STREAM would let ancillary data slide between reads. Each message on the
// wire is one byte of frame type (0x01) followed by the payload, so an empty payload is never
// confused with end of stream (both read as 0 bytes otherwise).
import { EventEmitter } from 'node:events';
import { FdpassError } from './errors.js';
import { OwnedFd } from './fd.js';
import { binding } from './loader.js';
import type { PeerCred, PollHandle } from './native.js';

const FRAME_DATA = 0x01;
const READABLE = 1;
const WRITABLE = 2;

/** Default limits; both ends should agree. 64 KiB fits the default AF_UNIX send buffer. */
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024;
export const DEFAULT_MAX_FDS = 16;
/** Reads per readable event, so one busy peer cannot starve the event loop. */
export const READS_PER_TICK = 64;
/** Messages queued for sending before send() returns false. */
export const DEFAULT_HIGH_WATER_MARK = 1024;

export interface ChannelOptions {
  /** Largest payload accepted or sent (bytes). */
  maxMessageBytes?: number;
  /** Most descriptors accepted or sent with one message (kernel limit 253). */
  maxFds?: number;
  /** send() returns false once this many messages wait in the queue. */
  highWaterMark?: number;
}

export interface ReceivedMessage {
  data: Buffer;
  /** Owned by the receiver from here on: adopt or close each one. */
  fds: OwnedFd[];
}

/** Called once a message is in the kernel (or could not be sent). */
export type SendCallback = (err?: Error) => void;

interface Pending {
  frame: Buffer;
  raw: number[];
  owned: OwnedFd[];
  cb: SendCallback | undefined;
}

export interface ChannelEvents {
  message: [ReceivedMessage];
  /** A message was dropped (descriptors cut off by the kernel, or too big); its fds are closed. */
  dropped: [FdpassError];
  drain: [];
  end: [];
  error: [Error];
  close: [];
}

export class Channel extends EventEmitter<ChannelEvents> {
  readonly maxMessageBytes: number;
  readonly maxFds: number;
  readonly highWaterMark: number;
  #fd: number;
  #poll: PollHandle | undefined;
  #events = 0;
  #queue: Pending[] = [];
  #peer: PeerCred | undefined;
  #paused = false;

  /** Takes ownership of a connected SEQPACKET descriptor. */
  constructor(fd: number | OwnedFd, options: ChannelOptions = {}) {
    super();
    this.#fd = typeof fd === 'number' ? fd : fd.take();
    this.maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.maxFds = Math.min(options.maxFds ?? DEFAULT_MAX_FDS, binding().MAX_FDS);
    this.highWaterMark = options.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
    this.#poll = binding().pollCreate(this.#fd, (status, events) => this.#onPoll(status, events));
    this.#setEvents(READABLE);
  }

  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Messages waiting for the socket to become writable. */
  get pending(): number {
    return this.#queue.length;
  }

  /** SO_PEERCRED of the other end, as of connect()/socketpair(). */
  get peer(): PeerCred {
    if (!this.#peer) {
      if (this.#fd < 0) throw new FdpassError('TLSPROXY_ERR_FDPASS_CLOSED', 'channel is closed');
      try {
        this.#peer = binding().peerCred(this.#fd);
      } catch (err) {
        throw FdpassError.fromSystem(err, 'peer credentials');
      }
    }
    return this.#peer;
  }

  /**
   * Send one message with descriptors. Numbers are borrowed: the caller keeps ownership and may
   * close its copy once `cb` runs. OwnedFds are handed over: the channel closes its copy once
   * the message is in the kernel (or the send failed). Returns false when the queue is at the
   * high-water mark: wait for 'drain'.
   */
  send(data: Uint8Array, fds: ReadonlyArray<number | OwnedFd> = [], cb?: SendCallback): boolean {
    const owned = fds.filter((f): f is OwnedFd => f instanceof OwnedFd);
    const fail = (err: Error): boolean => {
      for (const o of owned) o.close();
      if (cb) queueMicrotask(() => cb(err));
      else throw err;
      return false;
    };
    if (this.#fd < 0)
      return fail(new FdpassError('TLSPROXY_ERR_FDPASS_CLOSED', 'channel is closed'));
    if (data.byteLength > this.maxMessageBytes) {
      return fail(
        new FdpassError(
          'TLSPROXY_ERR_FDPASS_TOO_BIG',
          `message of ${data.byteLength} bytes > ${this.maxMessageBytes}`,
        ),
      );
    }
    if (fds.length > this.maxFds) {
      return fail(
        new FdpassError(
          'TLSPROXY_ERR_FDPASS_TOO_MANY_FDS',
          `${fds.length} descriptors > ${this.maxFds}`,
        ),
      );
    }
    const raw = fds.map((f) => (typeof f === 'number' ? f : f.fd));
    if (raw.some((f) => !(Number.isInteger(f) && f >= 0))) {
      return fail(
        new FdpassError('TLSPROXY_ERR_FDPASS_CLOSED', 'a descriptor to send is closed or invalid'),
      );
    }
    const frame = Buffer.allocUnsafe(data.byteLength + 1);
    frame[0] = FRAME_DATA;
    frame.set(data, 1);
    this.#queue.push({ frame, raw, owned, cb });
    if (this.#queue.length === 1) this.#flush();
    return this.#queue.length < this.highWaterMark;
  }

  /** Stop reading (backpressure towards the peer); messages stay in the kernel. */
  pause(): void {
    this.#paused = true;
    this.#updatePoll();
  }

  resume(): void {
    this.#paused = false;
    this.#updatePoll();
  }

  /** Let the process exit while this channel is open (like socket.unref()). */
  unref(): this {
    if (this.#poll) binding().pollRef(this.#poll, false);
    return this;
  }

  ref(): this {
    if (this.#poll) binding().pollRef(this.#poll, true);
    return this;
  }

  /** Close now. Queued messages fail with TLSPROXY_ERR_FDPASS_CLOSED and their owned fds close. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    if (this.#poll) binding().pollClose(this.#poll);
    this.#poll = undefined;
    try {
      binding().close(fd);
    } catch {}
    const queue = this.#queue.splice(0);
    const err = new FdpassError(
      'TLSPROXY_ERR_FDPASS_CLOSED',
      'channel closed before the message was sent',
    );
    for (const p of queue) {
      for (const o of p.owned) o.close();
      p.cb?.(err);
    }
    queueMicrotask(() => this.emit('close'));
  }

  #setEvents(ev: number): void {
    if (!this.#poll || ev === this.#events) return;
    this.#events = ev;
    binding().pollStart(this.#poll, ev);
  }

  #updatePoll(): void {
    this.#setEvents((this.#paused ? 0 : READABLE) | (this.#queue.length > 0 ? WRITABLE : 0));
  }

  #onPoll(status: number, events: number): void {
    if (this.#fd < 0) return;
    if (status < 0) {
      this.#fail(
        new FdpassError('TLSPROXY_ERR_FDPASS_SYSCALL', `poll failed (libuv status ${status})`),
      );
      return;
    }
    if (events & WRITABLE) this.#flush();
    if (events & READABLE && !this.#paused) this.#read();
  }

  #flush(): void {
    const b = binding();
    while (this.#queue.length > 0 && this.#fd >= 0) {
      const p = this.#queue[0]!;
      let n: number | null;
      try {
        n = b.send(this.#fd, p.frame, p.raw);
      } catch (err) {
        this.#fail(FdpassError.fromSystem(err, 'send'));
        return;
      }
      if (n === null) break;
      this.#queue.shift();
      // Only now is the descriptor in the kernel's hands: closing our copy earlier would send
      // a closed (or, worse, reused) number.
      for (const o of p.owned) o.close();
      p.cb?.();
    }
    if (this.#fd < 0) return;
    const wasFull = this.#events & WRITABLE;
    this.#updatePoll();
    if (wasFull && this.#queue.length === 0) this.emit('drain');
  }

  #read(): void {
    const b = binding();
    for (let i = 0; i < READS_PER_TICK && this.#fd >= 0 && !this.#paused; i++) {
      let r: ReturnType<typeof b.recv>;
      try {
        r = b.recv(this.#fd, this.maxMessageBytes + 1, this.maxFds);
      } catch (err) {
        this.#fail(FdpassError.fromSystem(err, 'recv'));
        return;
      }
      if (r === null) return;
      const fds = r.fds.map((fd) => new OwnedFd(fd));
      if (r.data === null) {
        for (const f of fds) f.close();
        this.emit('end');
        this.close();
        return;
      }
      if (r.ctrunc || r.truncated || r.data.length === 0 || r.data[0] !== FRAME_DATA) {
        for (const f of fds) f.close();
        const why = r.ctrunc
          ? new FdpassError(
              'TLSPROXY_ERR_FDPASS_CTRUNC',
              `descriptors dropped by the kernel (MSG_CTRUNC: out of descriptors or more than ${this.maxFds}); ${fds.length} that arrived were closed`,
            )
          : r.truncated
            ? new FdpassError(
                'TLSPROXY_ERR_FDPASS_TOO_BIG',
                `message over ${this.maxMessageBytes} bytes dropped`,
              )
            : new FdpassError(
                'TLSPROXY_ERR_FDPASS_PROTOCOL',
                'message without a valid frame byte dropped',
              );
        this.emit('dropped', why);
        continue;
      }
      const msg: ReceivedMessage = { data: r.data.subarray(1), fds };
      if (this.listenerCount('message') === 0) {
        for (const f of fds) f.close();
        continue;
      }
      this.emit('message', msg);
    }
  }

  #fail(err: Error): void {
    const code = (err as FdpassError).sysCode;
    // A peer that went away is an end of stream, not a failure of ours.
    if (code === 'EPIPE' || code === 'ECONNRESET') {
      this.emit('end');
    } else if (this.listenerCount('error') > 0) {
      this.emit('error', err);
    }
    this.close();
  }
}

/** A connected pair of channels in this process (socketpair AF_UNIX SOCK_SEQPACKET). */
export function channelPair(options?: ChannelOptions): [Channel, Channel] {
  let fds: [number, number];
  try {
    fds = binding().socketpair(true);
  } catch (err) {
    throw FdpassError.fromSystem(err, 'socketpair');
  }
  return [new Channel(fds[0], options), new Channel(fds[1], options)];
}
