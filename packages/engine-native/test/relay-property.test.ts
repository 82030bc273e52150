// The relay under arbitrary interleavings of what the two peers do: writes of any size, ends and
// resets in any order, pauses. Whatever happens, bytes arrive in order and uncorrupted, a side
// that ended cleanly delivered everything, the session ends, and no descriptor is left.
import type net from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NativeTlsEngine } from '../src/index.js';
import { certs, client, fdCount, type Served, serve, until } from './helpers.js';

type Side = 'client' | 'backend';
type Action =
  | { t: 'write'; side: Side; n: number }
  | { t: 'end'; side: Side }
  | { t: 'destroy'; side: Side }
  | { t: 'pause'; side: Side; ms: number };

const side = fc.constantFrom<Side>('client', 'backend');
const action: fc.Arbitrary<Action> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      t: fc.constant('write' as const),
      side,
      n: fc.integer({ min: 1, max: 200_000 }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('end' as const), side }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('destroy' as const), side }) },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant('pause' as const),
      side,
      ms: fc.integer({ min: 1, max: 50 }),
    }),
  },
);

/** Deterministic bytes, so any reordering or corruption shows. */
function pattern(start: number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = ((start + i) * 31) % 251;
  return b;
}

describe('NativeTlsEngine: relay property', () => {
  let engine: NativeTlsEngine;
  let served: Served;
  let ends = 0;
  beforeAll(async () => {
    engine = new NativeTlsEngine({ identities: [certs.server], threads: 2 });
    served = await serve(engine, () => ({ onEnd: () => ends++ }));
  });
  afterAll(async () => {
    await served.close();
    await engine.close();
  });

  it('any interleaving of writes, ends, resets and pauses', async () => {
    const base = fdCount();
    await fc.assert(
      fc.asyncProperty(fc.array(action, { minLength: 1, maxLength: 8 }), async (actions) => {
        const endsBefore = ends;
        const c = client(served.port, {}, true);
        const [r] = await Promise.all([served.next(), c.secure]);
        const b: net.Socket = r.plaintext.toSocket({ allowHalfOpen: true });
        const sockets: Record<Side, net.Socket> = { client: c.socket, backend: b };
        const sent: Record<Side, number> = { client: 0, backend: 0 };
        const got: Record<Side, Buffer[]> = { client: [], backend: [] };
        const gotEnd: Record<Side, boolean> = { client: false, backend: false };
        const closed: Record<Side, Promise<void>> = {
          client: Promise.resolve(),
          backend: Promise.resolve(),
        };
        for (const s of ['client', 'backend'] as const) {
          const sock = sockets[s];
          sock.on('error', () => {});
          sock.on('data', (d: Buffer) => got[s].push(d));
          sock.on('end', () => {
            gotEnd[s] = true;
          });
          closed[s] = new Promise((res) => sock.once('close', () => res()));
        }
        const ended: Record<Side, boolean> = { client: false, backend: false };
        let destroyed = false;
        for (const a of actions) {
          const sock = sockets[a.side];
          if (sock.destroyed) continue;
          if (a.t === 'write' && !ended[a.side]) {
            sock.write(pattern(sent[a.side], a.n));
            sent[a.side] += a.n;
          } else if (a.t === 'end' && !ended[a.side]) {
            ended[a.side] = true;
            sock.end();
          } else if (a.t === 'destroy') {
            destroyed = true;
            sock.destroy();
          } else if (a.t === 'pause') {
            sock.pause();
            await new Promise((res) => setTimeout(res, a.ms));
            sock.resume();
          }
        }
        // Let whatever can finish finish: both sides end unless one was reset.
        for (const s of ['client', 'backend'] as const) {
          if (!sockets[s].destroyed && !ended[s]) sockets[s].end();
        }
        await until(() => ends === endsBefore + 1, 15_000, 'session end');
        const other = (s: Side): Side => (s === 'client' ? 'backend' : 'client');
        for (const s of ['client', 'backend'] as const) {
          // What `s` received is a prefix of what the other side sent, byte for byte…
          const data = Buffer.concat(got[s]);
          expect(data.length).toBeLessThanOrEqual(sent[other(s)]);
          expect(data.equals(pattern(0, data.length))).toBe(true);
          // …and all of it when nobody reset the connection.
          if (!destroyed) {
            await until(() => gotEnd[s], 10_000, `${s} end`);
            expect(Buffer.concat(got[s]).length).toBe(sent[other(s)]);
          }
        }
        c.socket.destroy();
        b.destroy();
        await Promise.all([closed.client, closed.backend]);
      }),
      { numRuns: 40, interruptAfterTimeLimit: 60_000 },
    );
    await until(() => fdCount() <= base, 5000, 'descriptors back');
  }, 120_000);
});
