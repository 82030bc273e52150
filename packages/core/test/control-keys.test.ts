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
