// Hand-off variants with an in-process @tlsproxy/backend: crypt (the backend runs TLS itself)
// and the built-in implicit-TLS dialect.
import net from 'node:net';
import tls from 'node:tls';
import { backendProtocol, listen } from '@tlsproxy/backend';
import { type Channel, listen as fdpassListen, type Incoming } from '@tlsproxy/fdpass';
import { describe, expect, it } from 'vitest';
import { cert, LineClient, sleep, startProxy, tmpSock } from './helpers.js';

describe('hand-off variants', () => {
  it('crypt: the backend gets the raw TCP connection right after the go-ahead and runs TLS itself', async () => {
    const path = tmpSock('crypt');
    const backend = await listen({ path });
    const { proxy, port } = await startProxy(`unix:${path}`, { handoff: 'crypt' });
    try {
      const c = new LineClient(port);
      await c.until(/^\* OK/);
      c.write('a STARTTLS\r\n');
      await c.until(/^a OK Begin TLS/);
      const accepted = backend.accept();
      const clientTls = c.startTls();
      const { socket, info } = await accepted;
      expect(info.handoff).toBe('crypt');
      expect(info.tls).toBeNull();
      expect(info.controlKey).toBeNull();
      expect(socket.remotePort).toBe(c.socket.localPort); // really the client's TCP connection
      const server = new tls.TLSSocket(socket, {
        isServer: true,
        key: cert('server.key'),
        cert: cert('server.pem'),
      });
      server.on('data', (d) => server.write(`echo ${d}`));
      const t = await clientTls;
      t.socket.write('hello');
      expect(await t.until(/echo hello/)).toBe('echo hello');
      t.socket.destroy();
      server.destroy();
    } finally {
      await proxy.close();
      await backend.close();
    }
  });

  it('tls: implicit TLS with no preamble (IMAPS)', async () => {
    const path = tmpSock('implicit');
    const backend = await listen({ path });
    const { proxy, port } = await startProxy(`unix:${path}`, { dialect: 'tls' });
    try {
      const accepted = backend.accept();
      const t = tls.connect({
        port,
        host: '127.0.0.1',
        servername: 'imap.example.test',
        ca: cert('ca.pem'),
      });
      await new Promise((r) => t.once('secureConnect', r));
      const { socket, info } = await accepted;
      expect(info.dialect).toBe('tls');
      expect(info.serverName).toBe('imap.example.test');
      socket.write('* OK IMAPS backend ready\r\n');
      const greeting = await new Promise<string>((r) => t.once('data', (d) => r(String(d))));
      expect(greeting).toBe('* OK IMAPS backend ready\r\n');
      t.destroy();
      socket.destroy();
    } finally {
      await proxy.close();
      await backend.close();
    }
  });

  it('plain hand-off keeps early backend bytes and client bytes in order both ways', async () => {
    const path = tmpSock('order');
    const backend = await listen({ path });
    const { proxy, port } = await startProxy(`unix:${path}`);
    try {
      const c = new LineClient(port);
      await c.until(/^\* OK/);
      c.write('a STARTTLS\r\n');
      await c.until(/^a OK/);
      const accepted = backend.accept();
      const t = await c.startTls();
      const { socket } = await accepted;
      let got = '';
      socket.setEncoding('latin1');
      socket.on('data', (d: string) => {
        got += d;
      });
      const big = 'x'.repeat(200_000);
      t.socket.write(big);
      socket.write(big);
      expect((await t.until(/x{200000}/, 10_000)).length).toBe(200_000);
      while (got.length < 200_000) await new Promise((r) => setTimeout(r, 20));
      expect(got).toBe(big);
      // the backend closing ends the client's TLS session
      const closed = new Promise((r) => t.socket.once('close', r));
      socket.end();
      await closed;
    } finally {
      await proxy.close();
      await backend.close();
    }
  });

  it('refuses an unknown listen address and an unknown backend form with clear errors', async () => {
    await expect(startProxy('tcp:127.0.0.1:1')).rejects.toThrow(/unix:\/path/);
    await expect(startProxy('unix:/x', { listen: 'nonsense' })).rejects.toThrow(/host:port/);
  });

  it('listens on IPv6 loopback', async () => {
    const { proxy } = await startProxy('unix:/nonexistent.sock', { listen: '[::1]:0' });
    try {
      const addr = proxy.listeners[0]!.server.address() as net.AddressInfo;
      expect(addr.family).toBe('IPv6');
      const c = net.connect(addr.port, '::1');
      const greeting = await new Promise<string>((r) => c.once('data', (d) => r(String(d))));
      expect(greeting).toMatch(/^\* OK/);
      c.destroy();
    } finally {
      await proxy.close();
    }
  });
});

describe('a hand-off the backend has not taken yet', () => {
  // Regression (review): with `crypt` (and `plaintext`) hand-offs to a unix: backend, detaching
  // the client's socket closed the session's stream and released its places in the limits at
  // once — while the descriptor was still in this process, waiting for the backend's answer (up
  // to its timeout). A slow backend let a client hold descriptors here uncounted.
  it('still counts against maxConnections', async () => {
    const path = tmpSock('silent');
    const held: Array<{ close(): void }> = [];
    const server = fdpassListen({ path });
    server.on('connection', (ch: Channel) => {
      const peer = backendProtocol.attach(ch);
      peer.on('message', (m: Incoming) => {
        for (const f of m.fds) held.push(f); // never answered
      });
    });
    const { proxy, port } = await startProxy(`unix:${path}`, {
      handoff: 'crypt',
      maxConnections: 1,
    });
    try {
      const a = new LineClient(port);
      await a.until(/^\* OK/);
      a.write('a STARTTLS\r\n');
      await a.until(/^a OK/);
      for (let i = 0; i < 100 && held.length === 0; i++) await sleep(20);
      expect(held.length).toBe(1);
      const b = new LineClient(port);
      expect(await b.until(/^\* /)).toMatch(/^\* BYE/);
      a.socket.destroy();
      b.socket.destroy();
    } finally {
      for (const f of held) f.close();
      await proxy.close();
      server.close();
    }
  });
});
