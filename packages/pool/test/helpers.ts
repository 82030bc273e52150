import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { detachSocket } from '@tlsproxy/fdpass';
import type { HandshakeRequest, HandshakeResult, TlsEngine } from '../src/index.js';

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

/**
 * The descriptor count once closes still in flight have landed (the native engine closes on its
 * own thread, a moment after a failure is reported): the same count over 200 ms, or after `ms`
 * whatever it is. A baseline taken before that can read one high and make a later exact
 * comparison fail the wrong way (fewer descriptors than "before").
 */
export async function settledFdCount(ms = 3000): Promise<number> {
  const end = Date.now() + ms;
  let last = fdCount();
  let same = 0;
  while (same < 4 && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 50));
    const now = fdCount();
    same = now === last ? same + 1 : 0;
    last = now;
  }
  return last;
}

/** Wait until `cond` holds (polling), or fail after `ms`. */
export async function until(cond: () => boolean, ms = 3000, what = 'condition'): Promise<void> {
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

/**
 * A loopback TCP listener that hands every accepted socket to the engine, either as the
 * net.Socket itself or (as @tlsproxy/core does) as an OwnedFd detached from it.
 */
export async function serve(
  engine: TlsEngine,
  request: HandshakeRequest | (() => HandshakeRequest) = {},
  as: 'socket' | 'fd' = 'fd',
): Promise<Served> {
  const results: Array<Promise<HandshakeResult>> = [];
  const waiters: Array<(p: Promise<HandshakeResult>) => void> = [];
  const server = net.createServer({ pauseOnConnect: as === 'fd' }, (socket) => {
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
  /** Resolves at secureConnect; rejects on an error before it. */
  secure: Promise<void>;
  /** The first error the client saw (if any), once it closed. */
  closed: Promise<Error | undefined>;
}

export function client(port: number, options: tls.ConnectionOptions = {}): ClientResult {
  const socket = tls.connect({
    host: '127.0.0.1',
    port,
    ca: certs.ca,
    // The server certificate names localhost etc.; the tests check selection by fingerprint.
    checkServerIdentity: () => undefined,
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
export function readAll(s: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
    });
    s.once('end', () => resolve(buf));
    s.once('error', reject);
  });
}

/** The next chunk of data on a stream. */
export function nextData(s: net.Socket): Promise<string> {
  return new Promise((resolve) => s.once('data', (d: Buffer | string) => resolve(String(d))));
}
