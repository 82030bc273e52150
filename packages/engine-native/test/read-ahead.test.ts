// The engine reads ahead (SSL_CTX_set_read_ahead): one read() takes every record the socket
// holds, and OpenSSL keeps them where epoll cannot see them. These tests send many records in
// one write and then wait without sending more: if the relay waited for epoll after each
// record instead of reading until OpenSSL blocks, the rest would sit there until the next packet.
import type net from 'node:net';
import { describe, expect, it } from 'vitest';
import { certs, client } from './helpers.js';
import { servedEngine } from './served-engine.js';

describe('NativeTlsEngine: records read ahead are all relayed', () => {
  const se = servedEngine({ identities: [certs.server], threads: 1 });

  for (const records of [2, 20, 120]) {
    it(`${records} records in one write reach the backend, and its answer the client`, async () => {
      const c = client(se.served.port);
      const result = await se.served.next();
      await c.secure;
      const backend: net.Socket = result.plaintext.toSocket({ allowHalfOpen: true });
      const want = records * 512;
      let got = 0;
      backend.on('data', (d: Buffer) => {
        got += d.length;
        // Answer once everything arrived.
        if (got === want) backend.write(Buffer.alloc(records, 0x6b));
      });
      // One write cut into 512-byte records (the smallest fragment node allows), all in one TCP
      // send. (cork() would not do: node joins corked writes into one SSL_write, one record.)
      expect(c.socket.setMaxSendFragment(512)).toBe(true);
      c.socket.write(Buffer.alloc(want, 0x61));
      let back = 0;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`stalled: backend got ${got}/${want}, client got ${back}`)),
          3000,
        );
        c.socket.on('data', (d: Buffer) => {
          back += d.length;
          if (back === records) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      expect(got).toBe(want);
      c.socket.destroy();
      backend.destroy();
    });
  }

  it('records then close_notify behind a full backend: every byte, then the end, reach it', async () => {
    const c = client(se.served.port);
    const result = await se.served.next();
    await c.secure;
    const backend: net.Socket = result.plaintext.toSocket({ allowHalfOpen: true });
    backend.pause(); // not reading: the socketpair fills, the engine stops reading TLS
    const pattern = (n: number, k: number) => {
      const b = Buffer.alloc(n);
      for (let i = 0; i < n; i++) b[i] = ((i + k) * 31) % 251;
      return b;
    };
    const first = pattern(1 << 20, 0);
    const last = pattern(40_000, 7);
    c.socket.write(first);
    await new Promise((r) => setTimeout(r, 200));
    // Small records, then the close_notify, in one TCP send, queued behind the first megabyte:
    // when the backend reads again the engine finds them all read ahead in one buffer, and
    // gathers records up to the close_notify.
    c.socket.setMaxSendFragment(512);
    c.socket.end(last);
    await new Promise((r) => setTimeout(r, 100));
    const chunks: Buffer[] = [];
    const ended = new Promise<void>((resolve) => backend.once('end', () => resolve()));
    backend.on('data', (d: Buffer) => chunks.push(d));
    backend.resume();
    await ended;
    const got = Buffer.concat(chunks);
    expect(got.length).toBe(first.length + last.length);
    expect(got.equals(Buffer.concat([first, last]))).toBe(true);
    backend.destroy();
  });
});
