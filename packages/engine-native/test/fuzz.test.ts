// Peer-controlled bytes before and during the handshake: whatever arrives, the handshake ends
// (refused or timed out), nothing crashes, and no descriptor is left behind. Time-boxed.
import net from 'node:net';
import tls from 'node:tls';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NativeTlsEngine } from '../src/index.js';
import { certs, fdCount, raw, type Served, serve, until } from './helpers.js';

/** The ClientHello node:tls sends, captured from a plain TCP server. */
async function captureClientHello(servername: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((s) => {
      s.once('data', (d: Buffer) => {
        resolve(d);
        s.destroy();
        server.close();
      });
    });
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      const c = tls.connect({ host: '127.0.0.1', port, servername, ALPNProtocols: ['imap'] });
      c.on('error', () => {});
    });
    server.on('error', reject);
  });
}

describe('NativeTlsEngine: hostile handshake bytes', () => {
  let engine: NativeTlsEngine;
  let served: Served;
  let hello: Buffer;
  beforeAll(async () => {
    engine = new NativeTlsEngine({
      identities: [certs.server, certs.other],
      threads: 2,
      handshakeTimeoutMs: 300,
      alpn: ['imap'],
    });
    served = await serve(engine, { checkServerName: async (n) => n.length % 2 === 0 });
    hello = await captureClientHello('imap.example.test');
  });
  afterAll(async () => {
    await served.close();
    await engine.close();
  });

  it('mutated, truncated and random ClientHellos end the handshake cleanly', async () => {
    const base = fdCount();
    const mutation = fc.oneof(
      fc.uint8Array({ minLength: 0, maxLength: 600 }).map((b) => Buffer.from(b)),
      fc.nat({ max: 1000 }).map((n) => hello.subarray(0, n % (hello.length + 1))),
      fc
        .array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 8,
        })
        .map((edits) => {
          const b = Buffer.from(hello);
          for (const [i, v] of edits) b[i % b.length] = v;
          return b;
        }),
    );
    await fc.assert(
      fc.asyncProperty(mutation, fc.boolean(), async (bytes, hangUp) => {
        const s = await raw(served.port);
        s.on('error', () => {});
        s.resume();
        const closed = new Promise<void>((r) => s.once('close', () => r()));
        // Split anywhere: the engine must not care how TCP cut the bytes.
        const cut = bytes.length > 1 ? bytes.length >> 1 : 0;
        s.write(bytes.subarray(0, cut));
        s.write(bytes.subarray(cut));
        if (hangUp) s.end();
        const outcome = await served.next().then(
          (r) => {
            r.plaintext.close();
            return 'ok';
          },
          (err: { code?: string }) => err.code,
        );
        expect([
          'TLSPROXY_ERR_POOL_HANDSHAKE',
          'TLSPROXY_ERR_POOL_TIMEOUT',
          'TLSPROXY_ERR_POOL_SERVER_NAME_REFUSED',
        ]).toContain(outcome);
        s.destroy();
        await closed;
      }),
      { numRuns: 60, interruptAfterTimeLimit: 40_000 },
    );
    await until(() => fdCount() <= base, 5000, 'descriptors back');
  }, 60_000);
});
