// PROXY protocol inbound: behind a trusted load balancer the backend sees the client's address.
import net from 'node:net';
import tls from 'node:tls';
import { listen } from '@tlsproxy/backend';
import { describe, expect, it } from 'vitest';
import { parseAddressMatcher } from '../src/addresses.js';
import { isTlsProxyError } from '../src/errors.js';
import { readInboundProxy, trustList } from '../src/inbound-proxy.js';
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

// Issue 14: a malformed entry in proxyProtocol.trusted crashed the process on the first connection
// (node's BlockList threw inside the accept callback), and '1.2.3.4/' silently trusted everyone.
describe('issue 14: trusted lists are checked when they are parsed', () => {
  const refusal = (list: string[]) => {
    try {
      trustList(list);
    } catch (err) {
      return err;
    }
    return undefined;
  };

  it.each([
    [['10.0.0.0/33']],
    [['not-an-address']],
    [['127.0.0.1', '1.2.3.4/']],
    [['/8']],
    [['10.0.0.0/08']],
  ])('trustList(%j) throws a config error naming the entry', (list) => {
    const err = refusal(list);
    expect(err).toBeDefined();
    expect(isTlsProxyError(err)).toBe(true);
    expect((err as { code: string }).code).toBe('TLSPROXY_ERR_CONFIG');
    expect((err as Error).message).toContain(
      `proxyProtocol.trusted[${list.length - 1}]: ${JSON.stringify(list.at(-1))}`,
    );
  });

  it('a trusted list never throws on a peer, and takes IPv4-mapped peers as IPv4 (real sockets)', async () => {
    const accepted: net.Socket[] = [];
    const server = net.createServer({ pauseOnConnect: true }, (s) => accepted.push(s));
    await new Promise<void>((r) => server.listen(0, '::', r));
    const port = (server.address() as net.AddressInfo).port;
    const client = net.connect(port, '127.0.0.1');
    try {
      await new Promise((r) => client.once('connect', r));
      while (accepted.length === 0) await sleep(5);
      const socket = accepted[0]!;
      expect(socket.remoteAddress).toBe('::ffff:127.0.0.1');
      // not trusted: its own addresses, at once
      for (const list of [trustList(['10.0.0.0/8']), parseAddressMatcher([], 'x')]) {
        const own = await readInboundProxy(socket, list, 1000);
        expect(own?.address).toBe('::ffff:127.0.0.1');
      }
      // trusted through the IPv4 entry: its header names the client
      client.write(encodeProxyV1(header));
      const got = await readInboundProxy(socket, trustList(['127.0.0.0/8']), 1000);
      expect(got?.address).toBe('203.0.113.7');
    } finally {
      client.destroy();
      for (const s of accepted) s.destroy();
      server.close();
    }
  });
});
