// What a connection keeps alive while it waits: a relayed TLS session (the engine relays for
// minutes or hours) must not keep the client's preamble stream — its handler, the session's
// closures, thousands of them — through a callback's scope or a stale reference. (A parked
// preamble connection keeps its stream by design: it is the connection, a poll handle and a few
// fields; park.test.ts and park-memory.test.ts hold it to its timers and its bytes.)

import { collectGarbage } from '@tlsproxy/dialect-kit/testing';
import { RawStream } from '@tlsproxy/fdpass';
import { describe, expect, it } from 'vitest';
import { type Events, LineClient, sharedBackend, sleep, startProxy } from './helpers.js';

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

/** A weak reference to the first client stream the proxy starts reading (its accepted connection). */
async function watchedProxy(): Promise<{
  proxy: Awaited<ReturnType<typeof startProxy>>['proxy'];
  port: number;
  accepted: () => WeakRef<RawStream>;
  restore: () => void;
}> {
  const { proxy, port } = await startProxy(`unix:${backend.path}`);
  let ref: WeakRef<RawStream> | undefined;
  const start = RawStream.prototype.startReading;
  RawStream.prototype.startReading = function (this: RawStream) {
    ref ??= new WeakRef(this);
    start.call(this);
  };
  const restore = () => {
    RawStream.prototype.startReading = start;
  };
  return { proxy, port, accepted: () => ref!, restore };
}

describe('what a waiting connection keeps alive', () => {
  it('a relayed TLS session does not keep its preamble stream', async () => {
    const { proxy, port, accepted, restore } = await watchedProxy();
    try {
      const c = new LineClient(port);
      await c.until(/^\* OK/);
      c.write('a STARTTLS\r\n');
      await c.until(/^a OK/);
      const t = await c.startTls();
      t.socket.write('b CAPABILITY\r\n');
      await t.until(/b OK/);
      await (backend.events as Events).next((e) => e.event === 'connection');
      // The session is relayed (open, idle); its preamble stream is long detached.
      expect(await collected(accepted())).toBe(true);
      t.socket.destroy();
    } finally {
      restore();
      await proxy.close();
    }
  }, 20_000);
});
