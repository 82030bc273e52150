// A backend may use control keys only of connections handed to it; guessing gets it cut off.
import { backendProtocol } from '@tlsproxy/backend';
import { listen, type Peer } from '@tlsproxy/fdpass';
import { describe, expect, it } from 'vitest';
import { LineClient, startProxy, tmpSock } from './helpers.js';

describe('control keys from a backend', () => {
  it('refuses keys it was not handed and closes the channel after 16 unknown ones', async () => {
    const path = tmpSock('keys');
    const server = listen({ path });
    const peerReady = new Promise<Peer>((r) =>
      server.once('connection', (ch) => r(backendProtocol.attach(ch))),
    );
    const { proxy, port } = await startProxy(`unix:${path}`);
    try {
      // a STARTTLS makes the proxy open its channel to us
      const c = new LineClient(port);
      await c.until(/^\* OK/);
      c.write('a STARTTLS\r\n');
      const peer = await peerReady;
      await peer.ready;
      const closed = new Promise<void>((r) => peer.once('close', () => r()));
      const errors: string[] = [];
      for (let i = 0; i < 16; i++) {
        await peer
          .request(
            'control',
            { key: i.toString(16).padStart(32, '0'), op: 'info', args: {} },
            { timeoutMs: 2000 },
          )
          .then(
            () => errors.push('answered'),
            (e: { remoteCode?: string; code?: string }) =>
              errors.push(e.remoteCode ?? e.code ?? '?'),
          );
      }
      expect(errors.slice(0, 15)).toEqual(Array(15).fill('TLSPROXY_ERR_POOL_UNKNOWN_KEY'));
      await closed;
      c.socket.destroy();
    } finally {
      await proxy.close();
      server.close();
    }
  });
});

describe('who the proxy talks to', () => {
  it('does not use a backend socket owned by a uid outside backendUids', async () => {
    const { listen: listenBackend } = await import('@tlsproxy/backend');
    const { TlsProxy } = await import('../src/index.js');
    const { cert, quietLogger } = await import('./helpers.js');
    const path = tmpSock('uid');
    const backend = await listenBackend({ path });
    const logger = quietLogger();
    const proxy = new TlsProxy({
      logger,
      backendUids: [12345],
      pool: { identities: [{ cert: cert('server.pem'), key: cert('server.key') }] },
    });
    try {
      const l = await proxy.listen({
        dialect: 'imap',
        listen: '127.0.0.1:0',
        backend: `unix:${path}`,
      });
      const c = new LineClient((l.server.address() as { port: number }).port);
      await c.until(/^\* OK/);
      c.write('a STARTTLS\r\n');
      expect(await c.until(/^a /)).toMatch(/^a NO \[UNAVAILABLE\]/m);
      expect(logger.lines.some((x) => x.includes('not in allowUids'))).toBe(true);
      c.socket.destroy();
    } finally {
      await proxy.close();
      await backend.close();
    }
  });
});
