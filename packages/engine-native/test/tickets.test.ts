// What the client receives, segment by segment, in a TLS 1.3 handshake: the server's flight in
// one segment, then its session tickets (two records by default) in one more. Each segment on
// loopback costs the engine thread a full transmit and the client a wake-up, so the tickets are
// corked together. Counted by the kernel on the client's socket (`ss -ti`: data_segs_in).
import { execFileSync, spawnSync } from 'node:child_process';
import net from 'node:net';
import { detachSocket, type OwnedFd } from '@tlsproxy/fdpass';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NativeTlsEngine } from '../src/index.js';
import { certs, client, until } from './helpers.js';

const hasSs = spawnSync('ss', ['-V'], { stdio: 'ignore' }).status === 0;

/** Data segments the kernel counted into the TCP socket bound to 127.0.0.1:`port`. */
function dataSegmentsIn(port: number): number {
  const out = execFileSync('ss', ['-tinH', 'src', `127.0.0.1:${port}`], { encoding: 'utf8' });
  const m = /\bdata_segs_in:(\d+)/.exec(out);
  // No data_segs_in field: nothing came in yet.
  return m ? Number(m[1]) : 0;
}

describe.skipIf(!hasSs)('TLS 1.3 session tickets', () => {
  let engine: NativeTlsEngine;
  let server: net.Server;
  let port: number;
  const open: OwnedFd[] = [];
  beforeAll(async () => {
    engine = new NativeTlsEngine({ identities: [certs.server], threads: 1 });
    // Nagle off, as the proxy's client sockets have it: every write would be a segment.
    server = net.createServer({ pauseOnConnect: true, noDelay: true }, (socket) => {
      // The plaintext ends stay open until the test has counted: closing one would send the
      // client a close_notify, a segment of its own.
      engine.handshake(detachSocket(socket).fd, {}).then(
        (r) => open.push(r.plaintext),
        () => {},
      );
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as net.AddressInfo).port;
  });
  afterAll(async () => {
    for (const fd of open) fd.close();
    await new Promise<void>((r) => server.close(() => r()));
    await engine.close();
  });

  it('reach the client in one segment after the flight', async () => {
    const c = client(port, { minVersion: 'TLSv1.3' });
    let tickets = 0;
    c.socket.on('session', () => tickets++);
    await c.secure;
    const local = (c.socket.address() as net.AddressInfo).port;
    await until(() => tickets === 2, 5000, 'two session tickets');
    const segments = dataSegmentsIn(local);
    c.socket.destroy();
    // The server's flight (ServerHello … Finished, one buffered write) and the tickets.
    expect(segments).toBe(2);
  });
});
