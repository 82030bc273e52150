// PROXY protocol inbound: behind a trusted load balancer the backend sees the client's address.
import net from 'node:net';
import tls from 'node:tls';
import { listen } from '@tlsproxy/backend';
import { describe, expect, it } from 'vitest';
import { encodeProxyV1, encodeProxyV2 } from '../src/index.js';
import { cert, LineClient, sleep, startProxy, tmpSock } from './helpers.js';

const header = {
  sourceAddress: '203.0.113.7',
  sourcePort: 5555,
  destinationAddress: '198.51.100.1',
  destinationPort: 143,
};

describe('inbound PROXY protocol', () => {
  it("takes the client address from a trusted balancer's v2 header", async () => {
    const path = tmpSock('inbound');
    const backend = await listen({ path });
    const { proxy, port } = await startProxy(`unix:${path}`, {
      proxyProtocol: { trusted: ['127.0.0.0/8'] },
    });
    try {
      const c = new LineClient(port);
      c.socket.write(encodeProxyV2(header));
      await c.until(/^\* OK/);
      c.write('a STARTTLS\r\n');
      await c.until(/^a OK/);
      const accepted = backend.accept();
      const t = await c.startTls();
      const { info, socket } = await accepted;
      expect(info.remoteAddress).toBe('203.0.113.7');
      expect(info.remotePort).toBe(5555);
      expect(info.localAddress).toBe('198.51.100.1');
      t.socket.destroy();
      socket.destroy();
    } finally {
      await proxy.close();
      await backend.close();
    }
  });

  it('leaves bytes right after the header alone (v1 header + ClientHello in one go, implicit TLS)', async () => {
    const path = tmpSock('inbound-tls');
    const backend = await listen({ path });
    const { proxy, port } = await startProxy(`unix:${path}`, {
      dialect: 'tls',
      proxyProtocol: { trusted: ['127.0.0.1'] },
    });
    try {
      const raw = net.connect(port, '127.0.0.1');
      await new Promise((r) => raw.once('connect', r));
      raw.write(encodeProxyV1(header));
      const accepted = backend.accept();
      const t = tls.connect({ socket: raw, servername: 'localhost', ca: cert('ca.pem') });
      await new Promise((r) => t.once('secureConnect', r));
      const { info, socket } = await accepted;
      expect(info.remoteAddress).toBe('203.0.113.7');
      t.destroy();
      socket.destroy();
    } finally {
      await proxy.close();
      await backend.close();
    }
  });

  it('treats untrusted peers as direct clients, and closes a trusted peer that sends no header', async () => {
    const path = tmpSock('inbound-untrusted');
    const backend = await listen({ path });
    const untrusted = await startProxy(`unix:${path}`, {
      proxyProtocol: { trusted: ['10.0.0.0/8'] },
    });
    const strict = await startProxy(`unix:${path}`, {
      proxyProtocol: { trusted: ['127.0.0.1'], timeoutMs: 300 },
    });
    try {
      const c = new LineClient(untrusted.port);
      expect(await c.until(/^\* OK/)).toMatch(/STARTTLS/);
      c.socket.destroy();
      const d = new LineClient(strict.port);
      d.write('a CAPABILITY\r\n');
      const closed = new Promise((r) => d.socket.once('close', r));
      await closed;
      await sleep(10);
      expect(strict.logger.lines.some((l) => l.includes('PROXY header refused'))).toBe(true);
    } finally {
      await untrusted.proxy.close();
      await strict.proxy.close();
      await backend.close();
    }
  });
});
