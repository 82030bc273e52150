// A connected stream socket driven straight from its descriptor: a uv_poll, recv() and send(),
// nothing else. What a proxy needs for a short plaintext preamble — read, answer, close, or hand
// the descriptor on — without a net.Socket's stream states, TCP wrap and event emitter, which
// cost more than the preamble itself (docs/benchmarks.md). Writes that do not fit the kernel's
// send buffer wait here, in order. Events come through one handler object, never re-entrantly:
// data and end from the poll callback, close on the next tick (as a net.Socket's would).
import { FdpassError } from './errors.js';
import type { OwnedFd } from './fd.js';
import { binding } from './loader.js';
import type { PollHandle } from './native.js';

const READABLE = 1;
const WRITABLE = 2;
/** Bytes taken per readable event: a net.Socket's read size. */
const READ_MAX = 65536;

export interface RawStreamEvents {
  /** Bytes from the peer (only while reading). */
  data(chunk: Buffer): void;
  /** The peer will send no more (its FIN). Our side may still write. */
  end(): void;
  /** The stream is gone (destroyed, or its descriptor detached); once, on the next tick. */
  close(error?: FdpassError): void;
}

export class RawStream {
  #fd: OwnedFd | undefined;
  readonly #events: RawStreamEvents;
  #poll: PollHandle | undefined;
  /** The mask the poll runs with now (READABLE | WRITABLE). */
  #mask = 0;
  #reading = false;
  #eof = false;
  /** end() was called: FIN once the queue is empty. */
  #ending = false;
  #shut = false;
  #destroyed = false;
  #queue: Buffer[] = [];
  #queued = 0;
  #flushWaiters: Array<() => void> | undefined;

  /** Takes ownership of `fd` (a connected, non-blocking stream socket). Not reading yet. */
  constructor(fd: OwnedFd, events: RawStreamEvents) {
    this.#fd = fd;
    this.#events = events;
  }

  /** A stream that is already over (a stand-in where a stream is required). */
  static closed(): RawStream {
    const s = new RawStream(undefined as unknown as OwnedFd, {
      data() {},
      end() {},
      close() {},
    });
    s.#destroyed = true;
    return s;
  }

  /** The descriptor, still this stream's; -1 once destroyed or detached. */
  get fd(): number {
    return this.#fd?.fd ?? -1;
  }

  get destroyed(): boolean {
    return this.#destroyed;
  }

  /** Bytes written but not yet taken by the kernel. */
  get writableLength(): number {
    return this.#queued;
  }

  /** The peer's FIN has been read. */
  get readableEnded(): boolean {
    return this.#eof;
  }

  /** end() was called. */
  get writableEnded(): boolean {
    return this.#ending;
  }

  get reading(): boolean {
    return this.#reading && !this.#eof && !this.#destroyed;
  }

  startReading(): void {
    this.#reading = true;
    this.#update();
  }

  /** Nothing more is read until startReading(): the bytes stay in the kernel. */
  stopReading(): void {
    this.#reading = false;
    this.#update();
  }

  /** Queue `data` after what is queued; false when the stream can no longer write. */
  write(data: Uint8Array): boolean {
    if (this.#destroyed || this.#ending) return false;
    if (data.length === 0) return true;
    let buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.length);
    if (this.#queued === 0) {
      let n: number;
      try {
        n = binding().write(this.fd, buf);
      } catch (err) {
        this.destroy(FdpassError.fromSystem(err, 'send'));
        return false;
      }
      if (n === buf.length) return true;
      buf = buf.subarray(n);
    }
    this.#queue.push(buf);
    this.#queued += buf.length;
    this.#update();
    return true;
  }

  /** Write `data` (if any), then send our FIN once everything queued is out. Reading goes on. */
  end(data?: Uint8Array): void {
    if (this.#destroyed || this.#ending) return;
    if (data) this.write(data);
    this.#ending = true;
    if (this.#queued === 0) this.#shutdown();
  }

  /** Resolves when nothing is queued (at once if nothing is), or when the stream is gone. */
  flushed(): Promise<void> {
    if (this.#queued === 0 || this.#destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      this.#flushWaiters ??= [];
      this.#flushWaiters.push(resolve);
    });
  }

  /** Read and drop up to `max` bytes pending in the kernel, without blocking; how many. */
  discardPending(max: number): number {
    if (this.#destroyed) return 0;
    return binding().discard(this.fd, max);
  }

  /** Close the descriptor; `close` follows on the next tick. Idempotent. */
  destroy(error?: FdpassError): void {
    if (this.#destroyed) return;
    this.#stop();
    try {
      this.#fd?.close();
    } catch {}
    this.#fd = undefined;
    this.#gone(error);
  }

  /**
   * The descriptor leaves the stream (reading stops, queued bytes are dropped — flush first):
   * the caller owns it. The stream is over; `close` follows on the next tick.
   */
  detach(): OwnedFd {
    const fd = this.#fd;
    if (this.#destroyed || !fd)
      throw new FdpassError('TLSPROXY_ERR_FDPASS_CLOSED', 'stream already closed');
    this.#stop();
    this.#fd = undefined;
    this.#gone();
    return fd;
  }

  #stop(): void {
    this.#destroyed = true;
    this.#queue = [];
    this.#queued = 0;
    const p = this.#poll;
    this.#poll = undefined;
    this.#mask = 0;
    if (p) binding().pollClose(p);
  }

  #gone(error?: FdpassError): void {
    const waiters = this.#flushWaiters;
    this.#flushWaiters = undefined;
    if (waiters) for (const w of waiters) w();
    process.nextTick(() => this.#events.close(error));
  }

  #shutdown(): void {
    if (this.#shut || this.#destroyed) return;
    this.#shut = true;
    try {
      binding().shutdownWrite(this.fd);
    } catch (err) {
      this.destroy(FdpassError.fromSystem(err, 'shutdown'));
      return;
    }
    // Both ways over: nothing is left to do with the descriptor.
    if (this.#eof) this.destroy();
  }

  /** Poll for what is wanted now: reading (until EOF), writing (while bytes wait). */
  #update(): void {
    if (this.#destroyed) return;
    const mask = (this.#reading && !this.#eof ? READABLE : 0) | (this.#queued > 0 ? WRITABLE : 0);
    if (mask === this.#mask) return;
    const b = binding();
    try {
      if (!this.#poll) {
        if (mask === 0) return;
        this.#poll = b.pollCreate(this.fd, (status, events) => this.#ready(status, events));
      }
      b.pollStart(this.#poll, mask);
      this.#mask = mask;
    } catch (err) {
      this.destroy(FdpassError.fromSystem(err, 'poll'));
    }
  }

  #ready(status: number, events: number): void {
    if (this.#destroyed) return;
    if (status < 0) {
      // libuv reports a socket error (POLLERR: a reset, say) as EBADF; recv() names it.
      let error = new FdpassError(
        'TLSPROXY_ERR_FDPASS_SYSCALL',
        `poll failed (libuv status ${status})`,
      );
      try {
        binding().read(this.fd, 1);
      } catch (err) {
        error = FdpassError.fromSystem(err, 'recv');
      }
      this.destroy(error);
      return;
    }
    if (events & WRITABLE) this.#flush();
    if (events & READABLE && this.reading) this.#read();
  }

  #flush(): void {
    const b = binding();
    while (this.#queue.length > 0) {
      const head = this.#queue[0] as Buffer;
      let n: number;
      try {
        n = b.write(this.fd, head);
      } catch (err) {
        this.destroy(FdpassError.fromSystem(err, 'send'));
        return;
      }
      this.#queued -= n;
      if (n < head.length) {
        this.#queue[0] = head.subarray(n);
        return;
      }
      this.#queue.shift();
    }
    this.#update();
    const waiters = this.#flushWaiters;
    this.#flushWaiters = undefined;
    if (waiters) for (const w of waiters) w();
    if (this.#ending) this.#shutdown();
  }

  #read(): void {
    let chunk: Buffer | null;
    try {
      chunk = binding().read(this.fd, READ_MAX);
    } catch (err) {
      this.destroy(FdpassError.fromSystem(err, 'recv'));
      return;
    }
    if (chunk === null) return;
    if (chunk.length > 0) {
      this.#events.data(chunk);
      return;
    }
    this.#eof = true;
    this.#update();
    this.#events.end();
    if (this.#shut) this.destroy();
  }
}
