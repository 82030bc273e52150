// A one-shot readability watch on a descriptor, for connections parked outside a net.Socket:
// an idle client connection costs a uv_poll (~200 bytes) here instead of a Socket with its
// stream states and Node's TCP wrap (a few KiB). The descriptor stays its owner's.
import { FdpassError } from './errors.js';
import { binding } from './loader.js';
import type { PollHandle } from './native.js';

const READABLE = 1;

export interface ReadableWatch {
  /** Stop watching (idempotent); the callback will not run after this. */
  close(): void;
}

/**
 * Call `onReady` once, when `fd` has something to read — bytes, the peer's FIN, or an error
 * (a failed poll passes an FdpassError). The watch is closed before `onReady` runs, so the
 * descriptor can go straight to a new owner (e.g. a net.Socket). `fd` is borrowed.
 */
export function watchReadable(fd: number, onReady: (err?: FdpassError) => void): ReadableWatch {
  const b = binding();
  let handle: PollHandle | undefined;
  const close = (): void => {
    if (!handle) return;
    const h = handle;
    handle = undefined;
    b.pollClose(h);
  };
  try {
    handle = b.pollCreate(fd, (status) => {
      if (!handle) return;
      close();
      onReady(
        status < 0
          ? new FdpassError('TLSPROXY_ERR_FDPASS_SYSCALL', `poll failed (libuv status ${status})`)
          : undefined,
      );
    });
    b.pollStart(handle, READABLE);
  } catch (err) {
    close();
    throw FdpassError.fromSystem(err, 'watch');
  }
  return { close };
}
