// What the client receives, segment by segment, in a TLS 1.3 handshake: the server's flight in
// one segment, then its session tickets (two records by default) in one more. Each segment on
// loopback costs the engine thread a full transmit and the client a wake-up, so the tickets are
// corked together. Counted by the kernel on the client's socket (`ss -ti`: data_segs_in).
import { execFileSync, spawnSync } from 'node:child_process';
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NativeTlsEngine } from '../src/index.js';
import { certs, client, type Served, serve, until } from './helpers.js';

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
  let served: Served;
  beforeAll(async () => {
    engine = new NativeTlsEngine({ identities: [certs.server], threads: 1 });
    // Nagle off, as on the proxy's client sockets: every write would be a segment of its own.
    served = await serve(engine, {}, 'fd', true);
  });
  afterAll(async () => {
    await served.close();
    await engine.close();
  });

  it('reach the client in one segment after the flight', async () => {
    const c = client(served.port, { minVersion: 'TLSv1.3' });
    let tickets = 0;
    c.socket.on('session', () => tickets++);
    const [r] = await Promise.all([served.next(), c.secure]);
    const local = (c.socket.address() as net.AddressInfo).port;
    await until(() => tickets === 2, 5000, 'two session tickets');
    // Counted before the plaintext end closes: that would send a close_notify, a segment too.
    const segments = dataSegmentsIn(local);
    r.plaintext.close();
    c.socket.destroy();
    // The server's flight (ServerHello … Finished, one buffered write) and the tickets.
    expect(segments).toBe(2);
  });
});
