// A backend may use control keys only of connections handed to it; guessing gets it cut off.
import { backendProtocol } from '@tlsproxy/backend';
import { listen, type Peer } from '@tlsproxy/fdpass';
import { describe, expect, it } from 'vitest';
import { LineClient, startProxy, tmpSock } from './helpers.js';

/** A proxy whose backend is a raw protocol peer here, and a client whose STARTTLS opened it. */
async function backendChannel(name: string) {
  const path = tmpSock(name);
  const server = listen({ path });
  const peerReady = new Promise<Peer>((r) =>
    server.once('connection', (ch) => r(backendProtocol.attach(ch))),
  );
  const { proxy, port } = await startProxy(`unix:${path}`);
  // a STARTTLS makes the proxy open its channel to us
  const c = new LineClient(port);
  await c.until(/^\* OK/);
  c.write('a STARTTLS\r\n');
  const peer = await peerReady;
  await peer.ready;
  return { proxy, server, c, peer };
}

describe('control keys from a backend', () => {
  it('refuses keys it was not handed and closes the channel after 16 unknown ones', async () => {
    const { proxy, server, c, peer } = await backendChannel('keys');
    try {
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

describe('control keys of ended connections', () => {
  it('work while the connection lives; afterwards are refused without counting as guesses', async () => {
    const { proxy, server, c, peer } = await backendChannel('ended');
    try {
      const handed = new Promise<{ key: string; socket: import('node:net').Socket }>((r) =>
        peer.on('message', (m) => {
          if (m.type !== 'connection') return;
          const info = m.body.info as { controlKey: string };
          const socket = m.fds[0]!.toSocket();
          peer.reply(m, 'accepted', {});
          r({ key: info.controlKey, socket });
        }),
      );
      await c.until(/^a OK/);
      const t = await c.startTls();
      const { key, socket } = await handed;
      const control = () =>
        peer.request('control', { key, op: 'info', args: {} }, { timeoutMs: 2000 }).then(
          (r) => r.body as { result: { version: string } },
          (e: { remoteCode?: string; message: string }) => e,
        );
      const live = await control();
      expect((live as { result: { version: string } }).result.version).toMatch(/^TLSv1\.[23]$/);

      // The client goes away: the session ends and its key is forgotten.
      t.socket.destroy();
      socket.destroy();
      let after: unknown;
      for (let i = 0; i < 100; i++) {
        after = await control();
        if ((after as { remoteCode?: string }).remoteCode) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(after).toMatchObject({ remoteCode: 'TLSPROXY_ERR_POOL_UNKNOWN_KEY' });
      expect((after as Error).message).toMatch(/ended/);
      // A backend racing closes is not guessing: 20 late uses leave its channel open.
      let closed = false;
      peer.once('close', () => {
        closed = true;
      });
      for (let i = 0; i < 20; i++) await control();
      await new Promise((r) => setTimeout(r, 100));
      expect(closed).toBe(false);
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
    const { cert, createEngine, quietLogger } = await import('./helpers.js');
    const path = tmpSock('uid');
    const backend = await listenBackend({ path });
    const logger = quietLogger();
    const proxy = new TlsProxy({
      logger,
      backendUids: [12345],
      createEngine,
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
