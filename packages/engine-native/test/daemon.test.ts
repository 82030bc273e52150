// The tlspool daemon on this engine (issue 15: "the tlspool daemon runs the same native
// engine"): a real `tlspool --engine native` process, driven over fdpass by RemoteTlsEngine as
// the proxy drives it — a server-side handshake relayed to the plaintext end, and a client-side
// connect() with the daemon's own client identity.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { detachSocket } from '@tlsproxy/fdpass';
import { RemoteTlsEngine } from '@tlsproxy/pool';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { certs, client, nextData, serve, until } from './helpers.js';

const bin = fileURLToPath(new URL('../../pool/bin/tlspool.js', import.meta.url));
const certDir = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));

describe('tlspool --engine native', () => {
  let dir: string;
  let child: ChildProcess;
  let log = '';
  let pool: RemoteTlsEngine;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'native-daemon-'));
    const path = join(dir, 'pool.sock');
    child = spawn(
      process.execPath,
      [
        bin,
        '--engine',
        'native',
        '--engine-threads',
        '2',
        '--socket',
        path,
        '--cert',
        join(certDir, 'server.pem'),
        '--key',
        join(certDir, 'server.key'),
        '--cert',
        join(certDir, 'client.pem'),
        '--key',
        join(certDir, 'client.key'),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (d: string) => {
      log += d;
    });
    await until(() => log.includes('tlspool listening'), 10_000, 'tlspool to listen');
    pool = new RemoteTlsEngine({ socket: path });
  });
  afterAll(async () => {
    await pool?.close();
    child?.kill('SIGTERM');
    await new Promise((r) => child?.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  });

  it('says which engine it runs', () => {
    expect(log).toMatch(/engine native/);
  });

  it('a server-side handshake in the daemon, relayed to the plaintext end', async () => {
    const served = await serve(pool);
    try {
      const c = client(served.port, { servername: 'localhost' });
      const r = await served.next();
      await c.secure;
      expect(r.info.serverName).toBe('localhost');
      const plain = r.plaintext.toSocket();
      c.socket.write('ping\n');
      expect(await nextData(plain)).toBe('ping\n');
      plain.write('pong\n');
      expect(await nextData(c.socket)).toBe('pong\n');
      plain.destroy();
      c.socket.destroy();
    } finally {
      await served.close();
    }
  });

  it('connect() with a client certificate the daemon holds, named by its CN', async () => {
    const server = tls.createServer(
      { cert: certs.server.cert, key: certs.server.key, ca: certs.ca, requestCert: true },
      (s) => {
        const cert = s.getPeerCertificate();
        s.end(`hello ${s.authorized ? cert.subject.CN : 'nobody'}\n`);
      },
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as net.AddressInfo).port;
      const socket = net.connect(port, '127.0.0.1');
      await new Promise((r) => socket.once('connect', r));
      const { fd } = detachSocket(socket);
      const r = await pool.connect(fd, {
        serverName: 'localhost',
        ca: certs.ca,
        clientIdentity: 'alice',
      });
      expect(r.info.serverIdentity.san.dns).toContain('localhost');
      const plain = r.plaintext.toSocket();
      expect(await nextData(plain)).toBe('hello alice\n');
      plain.destroy();
    } finally {
      server.close();
    }
  });
});
