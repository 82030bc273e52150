// A connected stream socket driven straight from its descriptor: recv() and send(), nothing
// else. What a proxy needs for a short plaintext preamble — read, answer, close, or hand the
// descriptor on — without a net.Socket's stream states, TCP wrap and event emitter, which cost
// more than the preamble itself (docs/benchmarks.md). Writes that do not fit the kernel's send
// buffer wait here, in order. Every stream waits in one epoll set (streams.c): two system calls
// per stream to watch it, and the ready ones come as one batch per loop turn with their bytes
// already read. Events come through one handler object, never re-entrantly: data and end from
// the batch, close on the next tick (as a net.Socket's would).
import { getSystemErrorName } from 'node:util';
import { FdpassError } from './errors.js';
import type { OwnedFd } from './fd.js';
import { binding } from './loader.js';
import type { StreamSetHandle } from './native.js';

const READABLE = 1;
const WRITABLE = 2;
const HANGUP = 4;

/**
 * The streams that have waited in the set, by token (the set reports tokens), until they are
 * destroyed or detached — not only while they wait: a batch may carry bytes for a stream that an
 * earlier handler in it stopped. How many wait now (the set holds the process while any does);
 * the set itself, made on first use.
 */
const known = new Map<number, RawStream>();
let waiting = 0;
let set: StreamSetHandle | undefined;
let nextToken = 1;

function streamSet(): StreamSetHandle {
  set ??= binding().streamsCreate(dispatch);
  return set;
}

/** Set by RawStream's static block: hands one ready stream its event (private access). */
let deliver: (s: RawStream, events: number, data: Buffer | number | null) => void;

function dispatch(batch: Array<number | Buffer | null>): void {
  for (let i = 0; i + 2 < batch.length; i += 3) {
    const s = known.get(batch[i] as number);
    // Gone since the batch was taken (destroyed by an earlier stream's handler): its bytes too.
    if (s) deliver(s, batch[i + 1] as number, batch[i + 2] as Buffer | number | null);
  }
}

/** A failed recv() in the set, as the binding's own errors read. */
function errnoError(errno: number): FdpassError {
  let code = `errno ${-errno}`;
  try {
    code = getSystemErrorName(errno);
  } catch {}
  return FdpassError.fromSystem({ message: `recv failed: ${code}`, errno, code, syscall: 'recv' });
}

export interface RawStreamEvents {
  /** Bytes from the peer (only while reading). */
  data(chunk: Buffer): void;
  /** The peer will send no more (its FIN). Our side may still write. */
  end(): void;
  /** The stream is gone (destroyed, or its descriptor detached); once, on the next tick. */
  close(error?: FdpassError): void;
}

export class RawStream {
  static {
    deliver = (s, events, data) => s.#ready(events, data);
  }

  #fd: OwnedFd | undefined;
  readonly #events: RawStreamEvents;
  /** Its key in the set (0: never waited). */
  #token = 0;
  /** What it waits for in the set now (READABLE | WRITABLE; 0: not in it). */
  #mask = 0;
  #reading = false;
  #eof = false;
  /** end() was called: FIN once the queue is empty. */
  #ending = false;
  #shut = false;
  #destroyed = false;
  #queue: Buffer[] = [];
  #queued = 0;
  /** Bytes the set read in the same batch as a stopReading(): kept for startReading() or detach(). */
  #held: Buffer | undefined;
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
    const held = this.#held;
    if (held) {
      this.#held = undefined;
      queueMicrotask(() => this.#ready(READABLE, held));
    }
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

  /** Read and drop up to `max` bytes pending (in the kernel, or read but not yet given out); how many. */
  discardPending(max: number): number {
    if (this.#destroyed) return 0;
    const held = this.#held?.length ?? 0;
    this.#held = undefined;
    return held + binding().discard(this.fd, Math.max(0, max - held));
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
   * the caller owns it, and `buffered` — bytes read but never given out (read in the batch that
   * stopped the reading; usually none). The stream is over; `close` follows on the next tick.
   */
  detach(): { fd: OwnedFd; buffered: Buffer } {
    const fd = this.#fd;
    if (this.#destroyed || !fd)
      throw new FdpassError('TLSPROXY_ERR_FDPASS_CLOSED', 'stream already closed');
    const buffered = this.#held ?? Buffer.alloc(0);
    this.#held = undefined;
    this.#stop();
    this.#fd = undefined;
    this.#gone();
    return { fd, buffered };
  }

  #stop(): void {
    this.#destroyed = true;
    this.#queue = [];
    this.#queued = 0;
    this.#watch(0);
    if (this.#token !== 0) known.delete(this.#token);
  }

  #gone(error?: FdpassError): void {
    this.#releaseFlushWaiters();
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

  /** Wait in the set for what is wanted now: reading (until EOF), writing (while bytes wait). */
  #update(): void {
    if (this.#destroyed) return;
    const mask = (this.#reading && !this.#eof ? READABLE : 0) | (this.#queued > 0 ? WRITABLE : 0);
    try {
      this.#watch(mask);
    } catch (err) {
      this.destroy(FdpassError.fromSystem(err, 'epoll_ctl'));
    }
  }

  /** Into, out of, or changed in the set; the set holds the process while any stream waits. */
  #watch(mask: number): void {
    const was = this.#mask;
    if (mask === was) return;
    const b = binding();
    const s = streamSet();
    if (was === 0) {
      if (this.#token === 0) {
        // Tokens wrap after 2^31 streams; one still in use is skipped.
        while (known.has(nextToken)) nextToken = nextToken >= 0x7fffffff ? 1 : nextToken + 1;
        this.#token = nextToken;
        nextToken = nextToken >= 0x7fffffff ? 1 : nextToken + 1;
        known.set(this.#token, this);
      }
      b.streamsCtl(s, this.fd, this.#token, mask, true);
      if (++waiting === 1) b.streamsRef(s, true);
    } else if (mask === 0) {
      // Before the descriptor is closed or passed on (the set must not report it again).
      this.#mask = 0;
      if (--waiting === 0) b.streamsRef(s, false);
      try {
        b.streamsCtl(s, this.fd, this.#token, 0, false);
      } catch {}
      return;
    } else {
      b.streamsCtl(s, this.fd, this.#token, mask, false);
    }
    this.#mask = mask;
  }

  #ready(events: number, data: Buffer | number | null): void {
    if (this.#destroyed) return;
    if (events & WRITABLE || (events & HANGUP && this.#queued > 0)) this.#flush();
    if (this.#destroyed || data === null) return;
    if (typeof data === 'number') {
      this.destroy(errnoError(data));
      return;
    }
    if (!this.reading) {
      // Read in the same batch as a stopReading() (another stream's handler made it): keep it.
      if (data.length > 0) this.#held = this.#held ? Buffer.concat([this.#held, data]) : data;
      return;
    }
    if (data.length > 0) {
      this.#events.data(data);
      return;
    }
    this.#eof = true;
    this.#update();
    this.#events.end();
    if (this.#shut) this.destroy();
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
    this.#releaseFlushWaiters();
    if (this.#ending) this.#shutdown();
  }

  /** Whoever waits in flushed(): the queue is out, or the stream is gone. */
  #releaseFlushWaiters(): void {
    const waiters = this.#flushWaiters;
    this.#flushWaiters = undefined;
    if (waiters) for (const w of waiters) w();
  }
}
