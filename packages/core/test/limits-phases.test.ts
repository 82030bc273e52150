// Issue 14, finding 2: every connection limit holds in every phase of a connection — preamble,
// TLS handshake, and the relay until close — not only in the preamble. Implicit-TLS listeners
// count connections waiting in the handshake; a separate cap bounds handshakes at once; IPv6
// clients are counted per /64; an exemption list lifts the per-address limit.

import type { ChildProcess } from 'node:child_process';
import net from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeProxyV1 } from '../src/proxy-protocol.js';
import {
  cert,
  type Events,
  imapRelayed,
  LineClient,
  sleep,
  startBackend,
  startProxy,
  until,
} from './helpers.js';

let backend: { child: ChildProcess; path: string; events: Events };
beforeAll(async () => {
  backend = await startBackend(['--quiet']);
});
afterAll(() => {
  backend?.child.kill();
});

/** Resolves with what the server sent before it closed (or after `ms` with what came so far). */
function closedWithin(socket: net.Socket, ms: number): Promise<{ closed: boolean; data: string }> {
  let data = '';
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => {
    data += d;
  });
  socket.on('error', () => {});
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve({ closed: false, data }), ms);
    socket.once('close', () => {
      clearTimeout(t);
      resolve({ closed: true, data });
    });
  });
}

describe('limits in every phase', () => {
  it('per-address: relayed connections still count after the hand-off', async () => {
    const { proxy, port } = await startProxy(`unix:${backend.path}`, {
      maxConnectionsPerAddress: 2,
    });
    try {
      const a = await imapRelayed(port);
      const b = await imapRelayed(port);
      const c = new LineClient(port);
      expect(await c.until(/^\* /)).toMatch(/^\* BYE/);
      // When a relayed connection ends, its place is free again.
      a.socket.destroy();
      await sleep(300);
      const d = new LineClient(port);
      expect(await d.until(/^\* /)).toMatch(/^\* OK/);
      b.socket.destroy();
      d.socket.destroy();
      c.socket.destroy();
    } finally {
      await proxy.close();
    }
  });

  it('overall: maxConnections counts relayed connections too', async () => {
    const { proxy, port } = await startProxy(`unix:${backend.path}`, { maxConnections: 1 });
    try {
      const a = await imapRelayed(port);
      const c = new LineClient(port);
      expect(await c.until(/^\* /)).toMatch(/^\* BYE/);
      a.socket.destroy();
      c.socket.destroy();
    } finally {
      await proxy.close();
    }
  });

  it('implicit TLS: silent sockets waiting in the handshake count per address', async () => {
    const { proxy, port } = await startProxy(`unix:${backend.path}`, {
      dialect: 'tls',
      maxConnectionsPerAddress: 3,
    });
    try {
      const socks = Array.from({ length: 5 }, () => net.connect(port, '127.0.0.1'));
      const results = await Promise.all(socks.map((s) => closedWithin(s, 1500)));
      expect(results.filter((r) => r.closed)).toHaveLength(2);
      for (const s of socks) s.destroy();
    } finally {
      await proxy.close();
    }
  });

  it('maxHandshakes: implicit TLS past the cap is closed, the others go on', async () => {
    const { proxy, port, logger } = await startProxy(`unix:${backend.path}`, {
      dialect: 'tls',
      maxHandshakes: 2,
    });
    try {
      const socks = Array.from({ length: 3 }, () => net.connect(port, '127.0.0.1'));
      const results = await Promise.all(socks.map((s) => closedWithin(s, 1500)));
      expect(results.filter((r) => r.closed)).toHaveLength(1);
      expect(logger.lines.some((l) => l.includes('TLS handshake limit reached'))).toBe(true);
      for (const s of socks) s.destroy();
      await sleep(200);
      // Places come back when handshakes end: a real client gets through.
      const ok = await new Promise<boolean>((resolve) => {
        const t = tls.connect(
          { port, host: '127.0.0.1', servername: 'localhost', ca: cert('ca.pem') },
          () => {
            t.destroy();
            resolve(true);
          },
        );
        t.on('error', () => resolve(false));
      });
      expect(ok).toBe(true);
    } finally {
      await proxy.close();
    }
  });

  it('maxHandshakes: STARTTLS past the cap gets the temporary failure and may go on', async () => {
    const { proxy, port } = await startProxy(`unix:${backend.path}`, { maxHandshakes: 1 });
    try {
      const a = new LineClient(port);
      await a.until(/^\* OK/);
      a.write('a STARTTLS\r\n');
      await a.until(/^a OK/); // and then never sends a ClientHello
      const b = new LineClient(port);
      await b.until(/^\* OK/);
      b.write('b STARTTLS\r\n');
      expect(await b.until(/^b /)).toMatch(/^b NO/);
      b.write('c NOOP\r\n');
      expect(await b.until(/^c /)).toMatch(/^c OK/);
      a.socket.destroy();
      b.socket.destroy();
    } finally {
      await proxy.close();
    }
  });

  it('IPv6 clients are counted per /64 (behind a trusted balancer)', async () => {
    const { proxy, port } = await startProxy('unix:/nonexistent.sock', {
      maxConnectionsPerAddress: 1,
      proxyProtocol: { trusted: ['127.0.0.1'] },
    });
    const from = (address: string) => {
      const c = new LineClient(port);
      c.socket.write(
        encodeProxyV1({
          sourceAddress: address,
          sourcePort: 40000,
          destinationAddress: '2001:db8::ffff',
          destinationPort: 143,
        }),
      );
      return c;
    };
    try {
      const a = from('2001:db8::1');
      expect(await a.until(/^\* /)).toMatch(/^\* OK/);
      const b = from('2001:db8::2:3'); // same /64
      expect(await b.until(/^\* /)).toMatch(/^\* BYE/);
      const c = from('2001:db8:0:1::1'); // another /64
      expect(await c.until(/^\* /)).toMatch(/^\* OK/);
      for (const x of [a, b, c]) x.socket.destroy();
    } finally {
      await proxy.close();
    }
  });

  it('exempt addresses are not limited per address', async () => {
    const { proxy, port } = await startProxy('unix:/nonexistent.sock', {
      maxConnectionsPerAddress: 1,
      exempt: ['127.0.0.0/8'],
    });
    try {
      const cs = [new LineClient(port), new LineClient(port), new LineClient(port)];
      for (const c of cs) expect(await c.until(/^\* /)).toMatch(/^\* OK/);
      for (const c of cs) c.socket.destroy();
    } finally {
      await proxy.close();
    }
  });

  it('a bad exempt entry is refused when the listener starts', async () => {
    await expect(startProxy('unix:/nonexistent.sock', { exempt: ['10.0.0.0/33'] })).rejects.toThrow(
      /exempt/,
    );
  });

  it('idleTimeoutMs: an idle relayed connection is closed, said in the log, its place freed', async () => {
    const { proxy, port, logger } = await startProxy(`unix:${backend.path}`, {
      maxConnectionsPerAddress: 1,
      idleTimeoutMs: 400,
    });
    try {
      const a = await imapRelayed(port);
      const closed = new Promise<void>((r) => a.socket.once('close', () => r()));
      await closed;
      // Only the engine saw the quiet: its session end says why (docs/limits.md promises it).
      await until(
        () => logger.lines.some((l) => l.includes('relay idle too long')),
        5000,
        'the line',
      );
      expect(logger.lines.find((l) => l.includes('relay idle too long'))).toMatch(
        /"idleTimeoutMs":400/,
      );
      await sleep(100);
      const d = new LineClient(port);
      expect(await d.until(/^\* /)).toMatch(/^\* OK/);
      d.socket.destroy();
    } finally {
      await proxy.close();
    }
  });
});
