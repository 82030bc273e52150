// What every demo backend shares: listen on a UNIX socket with @tlsproxy/backend, log one line
// per connection with the hand-off info, serve it, and on close() also end the sessions still
// open (they are the backend's own after accept()).
import type net from 'node:net';
import { type BackendServer, type HandoffInfo, listen } from '@tlsproxy/backend';

/** Serve one handed-off connection (plaintext socket; the TLS engine terminates TLS). */
export type Serve = (socket: net.Socket, info: HandoffInfo, buffered: Buffer) => void;

export interface DemoBackend {
  name: string;
  path: string;
  close(): Promise<void>;
}

/** One line: dialect, SNI, TLS version and cipher, client identity, remote address. */
export function handoffSummary(info: HandoffInfo): string {
  const tls = info.tls ? `${info.tls.version} ${info.tls.cipher}` : `no TLS (${info.handoff})`;
  const alpn = info.tls?.alpn ? ` alpn=${info.tls.alpn}` : '';
  return (
    `dialect=${info.dialect} sni=${info.serverName ?? '-'} tls=${tls}${alpn} ` +
    `client=${info.clientIdentity?.subject ?? '-'} from=${hostPort(info.remoteAddress, info.remotePort)} ` +
    `conn=${info.connectionId}`
  );
}

function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Split a byte stream into lines (LF or CRLF, the CR removed); a line over `max` closes. */
export function lines(socket: net.Socket, onLine: (line: string) => void, max = 8192): void {
  let buf = '';
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0 && socket.writable; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i).replace(/\r$/, '');
      buf = buf.slice(i + 1);
      onLine(line);
    }
    if (buf.length > max) socket.destroy();
  });
}

export async function startBackend(
  name: string,
  path: string,
  serve: Serve,
  log: (line: string) => void,
): Promise<DemoBackend> {
  const server: BackendServer = await listen({
    path,
    mode: 0o600,
    log: (m) => log(`${name} backend: ${m}`),
  });
  const open = new Set<net.Socket>();
  server.on('connection', (socket, info, accepted) => {
    log(`${name} backend: handed a connection: ${handoffSummary(info)}`);
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    socket.on('error', () => {});
    try {
      serve(socket, info, accepted.buffered);
    } catch (err) {
      log(`${name} backend: session error: ${(err as Error).message}`);
      socket.destroy();
    }
  });
  return {
    name,
    path,
    async close() {
      await server.close();
      for (const s of open) s.destroy();
      open.clear();
    },
  };
}
