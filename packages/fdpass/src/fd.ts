import net from 'node:net';
import { FdpassError } from './errors.js';
import { binding } from './loader.js';

// A descriptor that nobody adopted or closed is a leak; if its owner is collected, close it and
// say so, so the bug shows up in logs instead of as EMFILE weeks later.
const leaks = new FinalizationRegistry<number>((fd) => {
  try {
    binding().close(fd);
  } catch {}
  process.emitWarning(`@tlsproxy/fdpass: descriptor ${fd} was never adopted or closed`, {
    code: 'TLSPROXY_FDPASS_LEAK',
  });
});

/**
 * Exactly one owner for a received (or dup'ed) descriptor. The owner must adopt it — take() the
 * number, wrap it with toSocket(), or pass it on in a send — or close() it.
 */
export class OwnedFd {
  #fd: number;

  constructor(fd: number) {
    if (!Number.isInteger(fd) || fd < 0) throw new TypeError(`not a file descriptor: ${fd}`);
    this.#fd = fd;
    leaks.register(this, fd, this);
  }

  /** The descriptor number, still owned by this object; -1 once taken or closed. */
  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Give up ownership: the caller now must close the returned number. */
  take(): number {
    const fd = this.#fd;
    if (fd < 0)
      throw new FdpassError('TLSPROXY_ERR_FDPASS_CLOSED', 'descriptor already taken or closed');
    this.#fd = -1;
    leaks.unregister(this);
    return fd;
  }

  close(): void {
    if (this.#fd < 0) return;
    const fd = this.take();
    try {
      binding().close(fd);
    } catch (err) {
      throw FdpassError.fromSystem(err, `close(${fd})`);
    }
  }

  /** Wrap as a net.Socket, which then owns (and eventually closes) the descriptor. */
  toSocket(options: { allowHalfOpen?: boolean } = {}): net.Socket {
    return wrapSocket(this, options);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Wrap a received stream socket (TCP or AF_UNIX) as a net.Socket. The socket takes ownership;
 * bytes the peer sent before the hand-off are still in the kernel buffer and are read normally.
 * On error the descriptor is closed, so nothing leaks either way.
 */
export function wrapSocket(
  owned: OwnedFd,
  options: { allowHalfOpen?: boolean; paused?: boolean } = {},
): net.Socket {
  const b = binding();
  const fd = owned.fd;
  if (fd < 0)
    throw new FdpassError('TLSPROXY_ERR_FDPASS_CLOSED', 'descriptor already taken or closed');
  let info: ReturnType<typeof b.sockInfo>;
  try {
    info = b.sockInfo(fd);
  } catch (err) {
    owned.close();
    throw FdpassError.fromSystem(err, 'sockInfo');
  }
  if (info?.type !== 'stream' || info.domain === 'other') {
    owned.close();
    throw new FdpassError(
      'TLSPROXY_ERR_FDPASS_NOT_STREAM',
      `descriptor is not a TCP or AF_UNIX stream socket (${info ? `${info.domain}/${info.type}` : 'not a socket'})`,
    );
  }
  const raw = owned.take();
  try {
    return new net.Socket({
      fd: raw,
      readable: true,
      writable: true,
      allowHalfOpen: options.allowHalfOpen ?? false,
      // Not reading until resume(), as net.Server's pauseOnConnect makes it (Node's own option).
      ...(options.paused ? { pauseOnCreate: true } : {}),
    } as net.SocketConstructorOpts);
  } catch (err) {
    b.close(raw);
    throw err;
  }
}

/** The descriptor under a net.Socket (borrowed: the socket still owns it). */
export function socketFd(socket: net.Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new FdpassError(
      'TLSPROXY_ERR_FDPASS_CLOSED',
      'socket has no descriptor (closed or not a stream)',
    );
  }
  return fd;
}

/**
 * Take a connected net.Socket out of Node's hands: stop reading, collect bytes Node already read
 * but nobody consumed, and return an owned duplicate of its descriptor; the net.Socket itself is
 * destroyed (closing only Node's copy, the connection stays up through the duplicate). When the
 * duplicate cannot be made (EMFILE) it throws and the socket is untouched.
 */
export function detachSocket(socket: net.Socket): { fd: OwnedFd; buffered: Buffer } {
  // The duplicate first: when it fails (EMFILE) the socket is left exactly as it was, reading.
  const fd = new OwnedFd(binding().dup(socketFd(socket)));
  const handle = (socket as unknown as { _handle?: { readStop?: () => number } })._handle;
  handle?.readStop?.();
  const chunks: Buffer[] = [];
  for (let c = socket.read(); c !== null; c = socket.read()) {
    chunks.push(typeof c === 'string' ? Buffer.from(c) : c);
  }
  socket.removeAllListeners('data');
  socket.destroy();
  return { fd, buffered: Buffer.concat(chunks) };
}

/** socketpair(AF_UNIX, SOCK_STREAM, or SOCK_SEQPACKET), both ends non-blocking and close-on-exec. */
export function socketpair(kind: 'stream' | 'seqpacket' = 'stream'): [OwnedFd, OwnedFd] {
  try {
    const [a, b] = binding().socketpair(kind === 'seqpacket');
    return [new OwnedFd(a), new OwnedFd(b)];
  } catch (err) {
    throw FdpassError.fromSystem(err, 'socketpair');
  }
}
