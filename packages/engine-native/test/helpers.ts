import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { detachSocket } from '@tlsproxy/fdpass';
import type { HandshakeRequest, HandshakeResult, TlsEngineApi } from '@tlsproxy/pool';

const certDir = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
export const pem = (name: string): string => readFileSync(certDir + name, 'utf8');

export const certs = {
  ca: pem('ca.pem'),
  server: { cert: pem('server.pem'), key: pem('server.key') },
  other: { cert: pem('other.pem'), key: pem('other.key') },
  client: { cert: pem('client.pem'), key: pem('client.key') },
  rogue: { cert: pem('rogue.pem'), key: pem('rogue.key') },
};

/** Open descriptors of this process. */
export function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

/** Wait until `cond` holds (polling), or fail after `ms`. */
export async function until(cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export interface Served {
  port: number;
  /** Results of engine.handshake() for each accepted connection, in order. */
  next(): Promise<HandshakeResult>;
  close(): Promise<void>;
}

/** A loopback listener that hands every accepted socket to the engine as core does: an OwnedFd. */
export async function serve(
  engine: TlsEngineApi,
  request: HandshakeRequest | (() => HandshakeRequest) = {},
  as: 'socket' | 'fd' = 'fd',
  /** Nagle off on accepted sockets, as the proxy's client sockets have it. */
  noDelay = false,
): Promise<Served> {
  const results: Array<Promise<HandshakeResult>> = [];
  const waiters: Array<(p: Promise<HandshakeResult>) => void> = [];
  const server = net.createServer({ pauseOnConnect: true, noDelay }, (socket) => {
    const req = typeof request === 'function' ? request() : request;
    const input = as === 'fd' ? detachSocket(socket).fd : socket;
    const p = engine.handshake(input, req);
    p.catch(() => {});
    const w = waiters.shift();
    if (w) w(p);
    else results.push(p);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    next: () => {
      const p = results.shift();
      if (p) return p;
      return new Promise<Promise<HandshakeResult>>((r) => waiters.push(r)).then((x) => x);
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

export interface ClientResult {
  socket: tls.TLSSocket;
  secure: Promise<void>;
  closed: Promise<Error | undefined>;
}

export function client(
  port: number,
  options: tls.ConnectionOptions = {},
  halfOpen = false,
): ClientResult {
  const socket = tls.connect({
    host: '127.0.0.1',
    port,
    ca: certs.ca,
    checkServerIdentity: () => undefined,
    // Honoured by tls.connect (it builds the net.Socket) though missing from its types: the
    // half-close tests need a client that can still write after the server's close_notify.
    ...({ allowHalfOpen: halfOpen } as tls.ConnectionOptions),
    ...options,
  });
  let firstError: Error | undefined;
  const secure = new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => resolve());
    socket.once('error', reject);
  });
  secure.catch(() => {});
  socket.on('error', (err) => {
    firstError ??= err;
  });
  const closed = new Promise<Error | undefined>((r) => socket.once('close', () => r(firstError)));
  return { socket, secure, closed };
}

/** Collect everything a stream sends until it ends. */
export function readAll(s: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

export function nextData(s: net.Socket): Promise<string> {
  return new Promise((resolve) => s.once('data', (d: Buffer | string) => resolve(String(d))));
}

/** A raw TCP client (for peers that are not TLS clients). */
export function raw(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}
