// Connections come off a listener as descriptors, not net.Sockets. The preamble is a few short
// reads and writes; a Socket for it (stream states, event emitter, read machinery, then its
// teardown at the switch-over) cost more of the proxy's thread than the preamble itself. So the
// listener's TCP handle hands its accepted connections here: their addresses are read, the
// descriptor is duplicated out of libuv's handle (which is closed at once, never having read)
// and the session drives it as a RawStream (@tlsproxy/fdpass).
//
// That uses one thing Node does not document: the listening handle's `onconnection` property
// (net.Server sets it on its handle, so libuv's accepts go to JavaScript through it; it has been
// so since Node 0.x). Where it is missing, accepted Sockets are detached instead: slower, same
// result.
import type net from 'node:net';
import { getSystemErrorName } from 'node:util';
import { detachSocket, dup, type OwnedFd, setNoDelay } from '@tlsproxy/fdpass';
import type { SessionAddresses } from './session.js';

export type OnAccept = (fd: OwnedFd, addresses: SessionAddresses) => void;

/** Node's TCP handle of an accepted connection (what net.Socket would wrap). */
interface TcpHandle {
  readonly fd: number;
  getpeername(out: { address?: string; port?: number }): number;
  getsockname(out: { address?: string; port?: number }): number;
  close(): void;
}

interface ListenHandle {
  onconnection?: (status: number, client?: TcpHandle) => void;
}

/**
 * Route `server`'s accepted connections to `onAccept` as owned, non-blocking descriptors with
 * TCP_NODELAY set. Call once the server is listening. `onError`: an accept that failed (the
 * listener goes on). Returns whether the fast path (no Socket at all) is in use.
 */
export function acceptDescriptors(
  server: net.Server,
  onAccept: OnAccept,
  onError: (err: Error) => void,
): boolean {
  const handle = (server as unknown as { _handle?: ListenHandle })._handle;
  if (handle && typeof handle.onconnection === 'function') {
    handle.onconnection = (status, client) => {
      if (status !== 0 || !client) {
        onError(new Error(`accept failed: ${status < 0 ? getSystemErrorName(status) : status}`));
        return;
      }
      const peer: { address?: string; port?: number } = {};
      const local: { address?: string; port?: number } = {};
      client.getpeername(peer);
      client.getsockname(local);
      let fd: OwnedFd;
      try {
        fd = dup(client.fd);
      } catch (err) {
        // No descriptor to spare (EMFILE): this connection is dropped, as libuv would.
        client.close();
        onError(err as Error);
        return;
      }
      client.close();
      accepted(fd, addressesOf(peer, local), onAccept);
    };
    return true;
  }
  server.on('connection', (socket: net.Socket) => {
    const addresses = addressesOf(
      { address: socket.remoteAddress, port: socket.remotePort },
      { address: socket.localAddress, port: socket.localPort },
    );
    let fd: OwnedFd;
    try {
      // Accepted paused (pauseOnConnect): nothing was read into Node's buffer.
      ({ fd } = detachSocket(socket));
    } catch (err) {
      socket.destroy();
      onError(err as Error);
      return;
    }
    accepted(fd, addresses, onAccept);
  });
  return false;
}

function addressesOf(
  peer: { address?: string | undefined; port?: number | undefined },
  local: { address?: string | undefined; port?: number | undefined },
): SessionAddresses {
  return {
    address: peer.address ?? '',
    port: peer.port ?? 0,
    localAddress: local.address ?? '',
    localPort: local.port ?? 0,
  };
}

function accepted(fd: OwnedFd, addresses: SessionAddresses, onAccept: OnAccept): void {
  try {
    setNoDelay(fd.fd);
  } catch {}
  onAccept(fd, addresses);
}
