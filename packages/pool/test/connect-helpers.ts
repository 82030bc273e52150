// Real TLS servers on loopback for the client role's tests (issue 18): node:tls servers with the
// fixture certificates, a silent server, and a TCP connect that hands the socket over as the
// proxy does (an OwnedFd detached from a net.Socket) or as a net.Socket.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { detachSocket, type OwnedFd } from '@tlsproxy/fdpass';

const certDir = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));

export interface TlsServer {
  port: number;
  /** Plaintext each accepted TLS connection sent, by connection, once it ended. */
  received: string[];
  /** Peer certificates (client certificates) of accepted connections, CN or null. */
  clientNames: Array<string | null>;
  /** The SNI name of each accepted connection (false: none sent). */
  sni: Array<string | false>;
  close(): Promise<void>;
}

/**
 * A node:tls server that greets with "hello\n" and echoes everything back upper-cased, so a
 * test sees bytes both ways through the engine's relay.
 */
export async function tlsServer(
  options: tls.TlsOptions = {},
  host = '127.0.0.1',
): Promise<TlsServer> {
  const received: string[] = [];
  const clientNames: Array<string | null> = [];
  const sni: Array<string | false> = [];
  const sockets = new Set<net.Socket>();
  const server = tls.createServer(options, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    const cert = s.getPeerCertificate();
    clientNames.push(cert && typeof cert.subject?.CN === 'string' ? cert.subject.CN : null);
    sni.push((s as unknown as { servername: string | false }).servername);
    let got = '';
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      got += d.toString('utf8');
      s.write(d.toString('utf8').toUpperCase());
    });
    s.on('end', () => {
      received.push(got);
      s.end();
    });
    s.write('hello\n');
  });
  server.on('tlsClientError', () => {});
  await new Promise<void>((r) => server.listen(0, host, r));
  return {
    port: (server.address() as net.AddressInfo).port,
    received,
    clientNames,
    sni,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A TCP server that accepts and never says a word (a handshake that never finishes). */
export async function silentServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    // Read and drop: silent, but it sees the client's FIN and closes its end (a paused socket
    // would hold it open and count against the test's descriptors).
    s.resume();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A connected TCP socket to 127.0.0.1:port, as a net.Socket or an OwnedFd (as core passes it). */
export async function tcp(port: number, as: 'fd'): Promise<OwnedFd>;
export async function tcp(port: number, as: 'socket'): Promise<net.Socket>;
export async function tcp(port: number, as: 'fd' | 'socket'): Promise<OwnedFd | net.Socket> {
  const s = net.connect({ port, host: '127.0.0.1' });
  await new Promise<void>((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  if (as === 'socket') return s;
  return detachSocket(s).fd;
}

/** A server certificate for `localhost` from the test CA that expired yesterday. */
export function expiredCertificate(): { cert: string; key: string } {
  const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-expired-'));
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        join(dir, 'e.key'),
        '-out',
        join(dir, 'e.csr'),
        '-subj',
        '/CN=localhost',
      ],
      { stdio: 'ignore' },
    );
    execFileSync(
      'openssl',
      [
        'x509',
        '-req',
        '-in',
        join(dir, 'e.csr'),
        '-CA',
        join(certDir, 'ca.pem'),
        '-CAkey',
        join(certDir, 'ca.key'),
        '-days',
        '-1',
        '-out',
        join(dir, 'e.pem'),
      ],
      { stdio: 'ignore' },
    );
    return {
      cert: readFileSync(join(dir, 'e.pem'), 'utf8'),
      key: readFileSync(join(dir, 'e.key'), 'utf8'),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A plain TCP server running `handler` per connection; `listening` resolves with its port. */
export function netServer(handler: (s: net.Socket) => void): {
  listening: Promise<number>;
  close(): Promise<void>;
} {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    handler(s);
  });
  const listening = new Promise<number>((r) =>
    server.listen(0, '127.0.0.1', () => r((server.address() as net.AddressInfo).port)),
  );
  return {
    listening,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
