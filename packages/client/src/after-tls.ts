// The server's answer to the preamble that arrives first inside TLS (ClientDialect.afterTls):
// CUPS answers the RFC 2817 `OPTIONS *` again once the handshake is done, and that answer must
// not reach the application as if it answered the application's own first request. Read the
// plaintext end until the dialect's judge decides, drop what it names, keep the rest in order.
import { detachSocket, type OwnedFd } from '@tlsproxy/fdpass';
import { ClientError } from './errors.js';

/** As the engine's `maxGreetingBytes`: an answer to drop is a few header lines. */
export const MAX_AFTER_TLS_BYTES = 16 * 1024;

/**
 * Returns the plaintext end again and the octets read past the dropped answer (to be delivered
 * before anything else). A judge that never decides within `maxBytes` is a protocol error (the
 * descriptor is closed); a server silent for `timeoutMs` has nothing to drop.
 */
export function dropAfterTls(
  fd: OwnedFd,
  judge: (data: Uint8Array) => number | null,
  timeoutMs: number,
  maxBytes = MAX_AFTER_TLS_BYTES,
): Promise<{ fd: OwnedFd; rest: Buffer }> {
  const socket = fd.toSocket({ allowHalfOpen: true });
  return new Promise((resolve, reject) => {
    let seen = Buffer.alloc(0);
    const finish = (drop: number) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', onError);
      try {
        const { fd: again, buffered } = detachSocket(socket);
        resolve({ fd: again, rest: Buffer.concat([seen.subarray(drop), buffered]) });
      } catch (err) {
        socket.destroy();
        reject(
          new ClientError('TLSPROXY_ERR_CLIENT_CONNECT', 'cannot take the plaintext end back', {
            cause: err,
          }),
        );
      }
    };
    const fail = (message: string, cause?: unknown) => {
      clearTimeout(timer);
      socket.destroy();
      reject(
        new ClientError('TLSPROXY_ERR_CLIENT_REFUSED', message, {
          reason: message,
          ...(cause !== undefined ? { cause } : {}),
        }),
      );
    };
    const onData = (chunk: Buffer) => {
      socket.pause();
      seen = Buffer.concat([seen, chunk]);
      let verdict: number | null;
      try {
        verdict = judge(seen);
      } catch (err) {
        fail('the dialect could not read the server’s first answer over TLS', err);
        return;
      }
      if (verdict === null) {
        if (seen.length > maxBytes) {
          fail(`the server's first answer over TLS is over ${maxBytes} octets`);
          return;
        }
        socket.resume();
        return;
      }
      finish(Math.max(0, Math.min(verdict, seen.length)));
    };
    const onEnd = () => fail('the server closed before its first answer over TLS was complete');
    const onError = (err: Error) => fail(`reading over TLS: ${err.message}`, err);
    // A server that answers nothing has nothing to drop.
    const timer = setTimeout(() => {
      socket.pause();
      finish(0);
    }, timeoutMs);
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('error', onError);
  });
}
