// What a connection keeps alive while it waits: a relayed TLS session (the engine relays for
// minutes or hours) and a parked preamble connection must not keep the client's first Socket —
// a few KiB each, thousands of them — through a callback's scope or a stale reference.

import type net from 'node:net';
import { collectGarbage } from '@tlsproxy/dialect-kit/testing';
import { describe, expect, it } from 'vitest';
import {
  type Events,
  LineClient,
  parkedClient,
  sharedBackend,
  sleep,
  startProxy,
} from './helpers.js';

const backend = sharedBackend();

/** Collected? (WeakRefs hold their target until the job ends: collect in later turns.) */
async function collected(ref: WeakRef<object>): Promise<boolean> {
  for (let i = 0; i < 10; i++) {
    await sleep(20);
    collectGarbage();
    if (ref.deref() === undefined) return true;
  }
  return false;
}

/** A weak reference to the next Socket the proxy's first listener accepts. */
async function watchedProxy(): Promise<{
  proxy: Awaited<ReturnType<typeof startProxy>>['proxy'];
  port: number;
  logger: { lines: string[] };
  accepted: () => WeakRef<net.Socket>;
}> {
  const { proxy, port, logger } = await startProxy(`unix:${backend.path}`);
  let ref: WeakRef<net.Socket> | undefined;
  proxy.listeners[0]!.server.prependListener('connection', (s: net.Socket) => {
    ref = new WeakRef(s);
  });
  return { proxy, port, logger, accepted: () => ref! };
}

describe('what a waiting connection keeps alive', () => {
  it('a relayed TLS session does not keep the accepted Socket', async () => {
    const { proxy, port, accepted } = await watchedProxy();
    try {
      const c = new LineClient(port);
      await c.until(/^\* OK/);
      c.write('a STARTTLS\r\n');
      await c.until(/^a OK/);
      const t = await c.startTls();
      t.socket.write('b CAPABILITY\r\n');
      await t.until(/b OK/);
      await (backend.events as Events).next((e) => e.event === 'connection');
      // The session is relayed (open, idle); the Socket the proxy accepted it on is long closed.
      expect(await collected(accepted())).toBe(true);
      t.socket.destroy();
    } finally {
      await proxy.close();
    }
  }, 20_000);

  it('a parked preamble connection does not keep the accepted Socket', async () => {
    const { proxy, port, logger, accepted } = await watchedProxy();
    try {
      const c = await parkedClient(port, logger);
      expect(await collected(accepted())).toBe(true);
      // And it still works.
      c.write('a NOOP\r\n');
      await c.until(/^a OK/);
      c.socket.destroy();
    } finally {
      await proxy.close();
    }
  }, 20_000);
});
