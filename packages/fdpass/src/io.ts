// The typed, descriptor-level operations other packages need. The addon's raw binding stays
// inside this package: callers get numbers checked, errors as FdpassError, and ownership
// (OwnedFd) where a new descriptor is made.
import { FdpassError } from './errors.js';
import { OwnedFd } from './fd.js';
import { binding } from './loader.js';

/** Read and drop up to `max` bytes pending on a stream socket, without blocking; returns how many. */
export function discardPending(fd: number, max: number): number {
  return binding().discard(fd, max);
}

/** The bytes pending on a stream socket, left in place (MSG_PEEK): empty at EOF, null if none yet. */
export function peekPending(fd: number, max: number): Buffer | null {
  return binding().peek(fd, max);
}

/** Write without blocking; returns how many bytes went out (short when the send buffer is full). */
export function writeSync(fd: number, bytes: Uint8Array): number {
  return binding().write(fd, Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes));
}

/** TCP_NODELAY on a TCP socket (as Node sets it on accepted ones); other sockets are left alone. */
export function setNoDelay(fd: number): void {
  binding().setNoDelay(fd);
}

/** A duplicate of `fd` (close-on-exec), owned by the caller. */
export function dup(fd: number): OwnedFd {
  try {
    return new OwnedFd(binding().dup(fd));
  } catch (err) {
    throw FdpassError.fromSystem(err, `dup(${fd})`);
  }
}

/**
 * A bound, listening AF_UNIX SOCK_SEQPACKET socket, as a descriptor to pass on (as systemd
 * would) to whoever accepts on it; `listen()` is the server that accepts itself.
 */
export function listenSocket(
  path: string,
  options: { abstract?: boolean; mode?: number; backlog?: number } = {},
): OwnedFd {
  try {
    return new OwnedFd(
      binding().listen(
        path,
        options.abstract ?? false,
        options.mode ?? 0o600,
        options.backlog ?? 511,
      ),
    );
  } catch (err) {
    throw FdpassError.fromSystem(err, `listen(${path})`);
  }
}

/** Load the native addon now; throws the FdpassError that lists every path tried when it cannot. */
export function checkAddon(): void {
  binding();
}

/** Whether the native addon loads on this machine (the error itself: checkAddon()). */
export function addonLoads(): boolean {
  try {
    binding();
    return true;
  } catch {
    return false;
  }
}
