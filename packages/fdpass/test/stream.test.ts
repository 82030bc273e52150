// RawStream against a real TCP peer on loopback: reads, writes past the kernel's send buffer
// (queued, in order, flushed), half-close both ways, detach, destroy — and every descriptor
// closed exactly once (counted in /proc/self/fd).
import net from 'node:net';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { dup, OwnedFd, RawStream, type RawStreamEvents, socketFd } from '../src/index.js';
import { fdCount } from './helpers.js';

interface Pair {
  /** The peer: an ordinary net.Socket. */
  peer: net.Socket;
  stream: RawStream;
  got: Buffer[];
  ended: { value: boolean };
  closed: Promise<Error | undefined>;
}

const servers: net.Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** A connected TCP pair: the accepted end as a RawStream (its own duplicate), the other a Socket. */
async function pair(handlers: Partial<RawStreamEvents> = {}): Promise<Pair> {
  const server = net.createServer({ pauseOnConnect: true });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const peer = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const s = await accepted;
  const fd = dup(socketFd(s));
  s.destroy();
  const got: Buffer[] = [];
  const ended = { value: false };
  let closed!: (e: Error | undefined) => void;
  const closedP = new Promise<Error | undefined>((r) => {
    closed = r;
  });
  const stream = new RawStream(fd, {
    data: (d) => {
      got.push(d);
      handlers.data?.(d);
    },
    end: () => {
      ended.value = true;
      handlers.end?.();
    },
    close: (e) => {
      closed(e);
      handlers.close?.(e);
    },
  });
  await new Promise<void>((r) => (peer.connecting ? peer.once('connect', r) : r()));
  return { peer, stream, got, ended, closed: closedP };
}

const until = async (cond: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('RawStream', () => {
  it('reads only while reading; the bytes wait in the kernel meanwhile', async () => {
    const p = await pair();
    p.peer.write('a1 CAPABILITY\r\n');
    await new Promise((r) => setTimeout(r, 50));
    expect(p.got).toEqual([]);
    p.stream.startReading();
    await until(() => p.got.length > 0);
    expect(Buffer.concat(p.got).toString()).toBe('a1 CAPABILITY\r\n');
    p.stream.stopReading();
    p.peer.write('more');
    await new Promise((r) => setTimeout(r, 50));
    expect(p.got.length).toBe(1);
    // What was not read is still there for whoever takes the descriptor.
    expect(p.stream.discardPending(100)).toBe(4);
    p.stream.destroy();
    p.peer.destroy();
  });

  it('queues what the kernel does not take, in order, and says when it is out', async () => {
    const p = await pair();
    p.peer.pause();
    const chunk = Buffer.alloc(256 * 1024);
    const total = 32;
    for (let i = 0; i < total; i++) {
      chunk.fill(i);
      expect(p.stream.write(Buffer.from(chunk))).toBe(true);
    }
    expect(p.stream.writableLength).toBeGreaterThan(0);
    let flushed = false;
    const done = p.stream.flushed().then(() => {
      flushed = true;
    });
    const received: Buffer[] = [];
    p.peer.on('data', (d: Buffer) => received.push(d));
    p.peer.resume();
    await done;
    expect(flushed).toBe(true);
    expect(p.stream.writableLength).toBe(0);
    await until(() => received.reduce((n, b) => n + b.length, 0) === total * chunk.length);
    const all = Buffer.concat(received);
    for (let i = 0; i < total; i++) expect(all[i * chunk.length + 1000]).toBe(i);
    p.stream.destroy();
    p.peer.destroy();
  });

  it("end(): the last bytes, then our FIN; the peer's FIN then closes the stream", async () => {
    const p = await pair();
    // The accepted Socket's own descriptor closes as it is destroyed (pair()): let it.
    await new Promise((r) => setTimeout(r, 20));
    const before = fdCount();
    p.stream.startReading();
    p.stream.end(Buffer.from('* BYE\r\n'));
    expect(p.stream.write(Buffer.from('late'))).toBe(false);
    const text: Buffer[] = [];
    p.peer.on('data', (d: Buffer) => text.push(d));
    await new Promise((r) => p.peer.once('end', r));
    expect(Buffer.concat(text).toString()).toBe('* BYE\r\n');
    expect(p.stream.destroyed).toBe(false);
    p.peer.end();
    expect(await p.closed).toBeUndefined();
    expect(p.ended.value).toBe(true);
    expect(p.stream.destroyed).toBe(true);
    // Both ways ended: the peer's Socket closes too.
    await new Promise((r) => (p.peer.destroyed ? r(null) : p.peer.once('close', r)));
    expect(fdCount()).toBe(before - 2);
  });

  it("the peer's FIN first: end event, our side can still write", async () => {
    const p = await pair();
    p.stream.startReading();
    p.peer.end('last words');
    await until(() => p.ended.value);
    expect(Buffer.concat(p.got).toString()).toBe('last words');
    const text: Buffer[] = [];
    p.peer.on('data', (d: Buffer) => text.push(d));
    p.stream.end(Buffer.from('answer'));
    await p.closed;
    await until(() => Buffer.concat(text).toString() === 'answer');
    p.peer.destroy();
  });

  it('detach(): the descriptor goes on, unread bytes still in it, the stream closes', async () => {
    const p = await pair();
    p.stream.startReading();
    p.peer.write('hello');
    await until(() => p.got.length > 0);
    p.stream.stopReading();
    p.peer.write('ClientHello');
    await new Promise((r) => setTimeout(r, 30));
    const { fd, buffered } = p.stream.detach();
    expect(fd).toBeInstanceOf(OwnedFd);
    expect(buffered.length).toBe(0);
    expect(p.stream.fd).toBe(-1);
    expect(await p.closed).toBeUndefined();
    expect(() => p.stream.detach()).toThrow(/closed/);
    const s = fd.toSocket();
    const data = await new Promise<Buffer>((r) => s.once('data', r));
    expect(data.toString()).toBe('ClientHello');
    s.destroy();
    p.peer.destroy();
  });

  it('a reset by the peer closes the stream with the error, once', async () => {
    let closes = 0;
    const p = await pair({ close: () => closes++ });
    p.stream.startReading();
    p.peer.resetAndDestroy();
    const err = await p.closed;
    expect(err?.message).toMatch(/ECONNRESET|reset/i);
    p.stream.destroy();
    await new Promise((r) => setTimeout(r, 20));
    expect(closes).toBe(1);
  });

  it('property: any writes, any end, a peer reading at any pace — every byte arrives, in order, then the FIN', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 1_500_000 }), { minLength: 1, maxLength: 8 }),
        fc.boolean(),
        fc.integer({ min: 0, max: 30 }),
        async (sizes, withEnd, stallMs) => {
          const p = await pair();
          p.peer.pause();
          const sent: Buffer[] = [];
          let k = 0;
          for (const n of sizes) {
            const b = Buffer.alloc(n);
            for (let i = 0; i < n; i += 997) b[i] = k++ & 0xff;
            sent.push(b);
            p.stream.write(b);
          }
          if (withEnd) p.stream.end(Buffer.from('!'));
          const got: Buffer[] = [];
          p.peer.on('data', (d: Buffer) => got.push(d));
          await new Promise((r) => setTimeout(r, stallMs));
          p.peer.resume();
          const want = Buffer.concat([...sent, withEnd ? Buffer.from('!') : Buffer.alloc(0)]);
          if (withEnd) await new Promise((r) => p.peer.once('end', r));
          else {
            await p.stream.flushed();
            await until(() => got.reduce((n, b) => n + b.length, 0) >= want.length);
          }
          expect(Buffer.concat(got).equals(want)).toBe(true);
          expect(p.stream.writableLength).toBe(0);
          p.stream.destroy();
          p.peer.destroy();
        },
      ),
      { numRuns: 25 },
    );
  }, 60_000);

  it('bytes read in the batch that stopped a stream reading are kept, for startReading() or detach()', async () => {
    for (const how of ['resume', 'detach'] as const) {
      const pairs: Record<'a' | 'b', Pair | undefined> = { a: undefined, b: undefined };
      let stopped: Pair | undefined;
      // The first stream to get its bytes stops the other — whose bytes the set may have read
      // in the same batch already.
      const stopOther = (me: 'a' | 'b') => {
        if (stopped) return;
        stopped = pairs[me === 'a' ? 'b' : 'a'];
        stopped?.stream.stopReading();
      };
      pairs.a = await pair({ data: () => stopOther('a') });
      pairs.b = await pair({ data: () => stopOther('b') });
      const { a, b } = pairs as Record<'a' | 'b', Pair>;
      a.stream.startReading();
      b.stream.startReading();
      await new Promise((r) => setTimeout(r, 20));
      a.peer.write('to a');
      b.peer.write('to b');
      // Both readable before the loop looks again: one batch.
      const until = Date.now() + 30;
      while (Date.now() < until) {}
      await new Promise((r) => setTimeout(r, 30));
      const late = stopped as Pair | undefined;
      expect(late).toBeDefined();
      if (!late) return;
      expect(late.got).toEqual([]);
      const text = late === a ? 'to a' : 'to b';
      if (how === 'resume') {
        late.stream.startReading();
        await new Promise((r) => setTimeout(r, 20));
        expect(Buffer.concat(late.got).toString()).toBe(text);
      } else {
        const { fd, buffered } = late.stream.detach();
        // In the batch (held here) or still in the kernel: either way, not lost.
        const rest = buffered.length > 0 ? '' : text;
        expect(buffered.toString() + rest).toBe(text);
        fd.close();
      }
      for (const p of [a, b]) {
        p.stream.destroy();
        p.peer.destroy();
      }
    }
  });

  it('closes each descriptor exactly once over many streams', async () => {
    const before = fdCount();
    for (let i = 0; i < 20; i++) {
      const p = await pair();
      p.stream.startReading();
      if (i % 3 === 0) p.stream.destroy();
      else if (i % 3 === 1) p.stream.detach().fd.close();
      else {
        p.stream.end();
        p.peer.end();
      }
      await p.closed;
      p.peer.destroy();
      await new Promise((r) => p.peer.once('close', r));
    }
    for (const s of servers.splice(0)) s.close();
    await new Promise((r) => setTimeout(r, 50));
    expect(fdCount()).toBe(before);
  });
});
