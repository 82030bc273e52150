import { spawnSync } from 'node:child_process';
import { closeSync, openSync, statSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  Channel,
  channelPair,
  connect,
  defineProtocol,
  FdpassError,
  listen,
  OwnedFd,
  type ReceivedMessage,
  socketpair,
} from '../src/index.js';
import { binding } from '../src/loader.js';
import { fdCount, tmpSock } from './helpers.js';

function collect(ch: Channel, n: number): Promise<ReceivedMessage[]> {
  const got: ReceivedMessage[] = [];
  return new Promise((resolve) => {
    const on = (m: ReceivedMessage) => {
      got.push(m);
      if (got.length === n) {
        ch.off('message', on);
        resolve(got);
      }
    };
    ch.on('message', on);
  });
}

describe('Channel', () => {
  it('carries payload and descriptors that work on the other side', async () => {
    const [a, b] = channelPair();
    const [x, y] = socketpair();
    const got = collect(b, 1);
    a.send(Buffer.from('take this'), [x]); // OwnedFd: the channel closes our copy once sent
    const [m] = await got;
    expect(m!.data.toString()).toBe('take this');
    expect(m!.fds).toHaveLength(1);
    expect(x.closed).toBe(true);
    const s1 = m!.fds[0]!.toSocket();
    const s2 = y.toSocket();
    const echoed = new Promise((r) => s2.once('data', r));
    s1.write('ping');
    expect(String(await echoed)).toBe('ping');
    s1.destroy();
    s2.destroy();
    a.close();
    b.close();
  });

  it('keeps an empty payload apart from end of stream', async () => {
    const [a, b] = channelPair();
    const got = collect(b, 2);
    a.send(Buffer.alloc(0));
    a.send(Buffer.from('after'));
    const [m1, m2] = await got;
    expect(m1!.data.length).toBe(0);
    expect(m2!.data.toString()).toBe('after');
    const ended = new Promise<void>((r) => b.once('end', () => r()));
    a.close();
    await ended;
    expect(b.closed).toBe(true);
  });

  it('refuses oversized messages and too many descriptors with typed errors', async () => {
    const [a, b] = channelPair({ maxMessageBytes: 100, maxFds: 2 });
    const err1 = await new Promise<Error | undefined>((r) => a.send(Buffer.alloc(101), [], r));
    expect((err1 as FdpassError).code).toBe('TLSPROXY_ERR_FDPASS_TOO_BIG');
    const owned = [
      new OwnedFd(openSync('/dev/null', 'r')),
      new OwnedFd(openSync('/dev/null', 'r')),
      new OwnedFd(openSync('/dev/null', 'r')),
    ];
    const err2 = await new Promise<Error | undefined>((r) => a.send(Buffer.alloc(1), owned, r));
    expect((err2 as FdpassError).code).toBe('TLSPROXY_ERR_FDPASS_TOO_MANY_FDS');
    expect(owned.every((o) => o.closed)).toBe(true); // handed-over fds are closed on failure too
    expect(() => a.send(Buffer.alloc(101))).toThrow(FdpassError);
    a.close();
    b.close();
  });

  it('drops a message from a peer with a larger limit and says why', async () => {
    const [a, b] = channelPair();
    const small = new (b.constructor as typeof Channel)(binding().dup(b.fd), {
      maxMessageBytes: 10,
    });
    b.pause();
    const dropped = new Promise<FdpassError>((r) => small.once('dropped', r));
    const fd = openSync('/dev/null', 'r');
    const before = fdCount();
    a.send(Buffer.alloc(50), [fd]);
    expect((await dropped).code).toBe('TLSPROXY_ERR_FDPASS_TOO_BIG');
    expect(fdCount()).toBe(before); // the descriptor that came with it was closed
    closeSync(fd);
    a.close();
    b.close();
    small.close();
  });

  it('queues on EAGAIN, returns false at the high-water mark, drains without loss or reordering', async () => {
    const [a, b] = channelPair({ highWaterMark: 64 });
    b.pause(); // the kernel buffer fills, then sendmsg says EAGAIN
    const total = 5000;
    let sawFalse = false;
    for (let i = 0; i < total; i++) {
      if (!a.send(Buffer.from(String(i).padStart(1000, '.')))) sawFalse = true;
    }
    expect(a.pending).toBeGreaterThan(0);
    expect(sawFalse).toBe(true);
    const drained = new Promise<void>((r) => a.once('drain', () => r()));
    const got = collect(b, total);
    b.resume();
    await drained;
    const msgs = await got;
    expect(msgs.map((m) => Number(m.data.toString().replace(/^\.+/, '')))).toEqual(
      Array.from({ length: total }, (_, i) => i),
    );
    a.close();
    b.close();
  });

  it('fails queued sends when closed, closing handed-over descriptors', async () => {
    const [a, b] = channelPair();
    b.pause();
    while (a.send(Buffer.alloc(60_000))) {
      /* fill */
    }
    const owned = new OwnedFd(openSync('/dev/null', 'r'));
    const err = new Promise<Error | undefined>((r) => a.send(Buffer.alloc(1), [owned], r));
    a.close();
    expect(((await err) as FdpassError).code).toBe('TLSPROXY_ERR_FDPASS_CLOSED');
    expect(owned.closed).toBe(true);
    b.close();
  });

  it('reports SO_PEERCRED of a path-bound connection and replaces stale socket files', async () => {
    const path = tmpSock('cred');
    // A crashed owner leaves its socket file behind: a child listens and exits without cleanup.
    const dist = new URL('../dist/index.js', import.meta.url).href;
    const r = spawnSync(process.execPath, [
      '--input-type=module',
      '-e',
      `import { listen } from '${dist}'; listen({ path: ${JSON.stringify(path)} }); process.exit(0);`,
    ]);
    expect(r.status).toBe(0);
    expect(statSync(path).isSocket()).toBe(true);
    const s2 = listen({ path, mode: 0o640 });
    expect(statSync(path).mode & 0o777).toBe(0o640);
    expect(() => listen({ path })).toThrow(/EADDRINUSE|in use/);
    const accepted = new Promise<Channel>((r) => s2.once('connection', r));
    const c = await connect({ path });
    const srv = await accepted;
    expect(srv.peer).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    expect(c.peer.pid).toBe(process.pid);
    c.close();
    srv.close();
    s2.close();
  });

  it('never removes a path that is not a socket', () => {
    const path = tmpSock('file');
    closeSync(openSync(path, 'w'));
    expect(() => listen({ path })).toThrow(/EEXIST|not a socket/);
  });

  it('listens in the abstract namespace', async () => {
    const name = `tlsproxy-test-${process.pid}`;
    const s = listen({ abstract: name });
    const accepted = new Promise<Channel>((r) => s.once('connection', r));
    const c = await connect({ abstract: name });
    const srv = await accepted;
    const got = collect(srv, 1);
    c.send(Buffer.from('abstract'));
    expect((await got)[0]!.data.toString()).toBe('abstract');
    c.close();
    srv.close();
    s.close();
  });

  it('errors from the binding are JS errors with errno, code and syscall', () => {
    try {
      binding().connect('/nonexistent/dir/x.sock', false);
      expect.unreachable();
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      expect(e.code).toBe('ENOENT');
      expect(e.syscall).toBe('connect');
      expect(e.errno).toBeLessThan(0);
    }
    expect(() => binding().send(-1 as number, Buffer.alloc(1), [])).toThrow(TypeError);
    expect(() => binding().recv(0, 0, 0)).toThrow(RangeError);
  });
});

describe('Channel properties', () => {
  it('random payloads with random descriptors round-trip in order', async () => {
    const [a, b] = channelPair({ maxFds: 8 });
    const before = fdCount();
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            data: fc.uint8Array({ maxLength: 65536 }),
            nfds: fc.integer({ min: 0, max: 8 }),
          }),
          {
            minLength: 1,
            maxLength: 20,
          },
        ),
        async (msgs) => {
          const got = collect(b, msgs.length);
          for (const m of msgs) {
            const fds = Array.from(
              { length: m.nfds },
              () => new OwnedFd(openSync('/dev/null', 'r')),
            );
            a.send(m.data, fds);
          }
          const recv = await got;
          for (let i = 0; i < msgs.length; i++) {
            expect(Buffer.compare(recv[i]!.data, Buffer.from(msgs[i]!.data))).toBe(0);
            expect(recv[i]!.fds).toHaveLength(msgs[i]!.nfds);
            for (const f of recv[i]!.fds) f.close();
          }
        },
      ),
      { numRuns: 60, interruptAfterTimeLimit: 20_000 },
    );
    expect(fdCount()).toBe(before);
    a.close();
    b.close();
  }, 60_000);

  it('random garbage and stray descriptors from a raw peer never crash or leak', async () => {
    const proto = defineProtocol({
      name: 'test',
      version: 1,
      messages: { ping: { fields: { n: 'integer' } } },
    });
    const before = fdCount();
    let invalid = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.uint8Array({ maxLength: 2000 }), fc.integer({ min: 0, max: 4 })), {
          maxLength: 20,
        }),
        async (sends) => {
          const [rawA, rawB] = binding().socketpair(true);
          const peer = proto.attach(new Channel(rawB));
          peer.on('invalid', () => invalid++);
          peer.on('message', (m) => m.fds.forEach((f) => f.close()));
          for (const [bytes, nfds] of sends) {
            const fds = Array.from({ length: nfds }, () => openSync('/dev/null', 'r'));
            try {
              binding().send(rawA, Buffer.from(bytes), fds);
            } catch {
              // the peer cut us off after too many invalid messages: that is the point
            }
            for (const f of fds) closeSync(f);
            await new Promise((r) => setImmediate(r));
          }
          peer.close();
          binding().close(rawA);
          await new Promise((r) => setImmediate(r));
        },
      ),
      { numRuns: 200, interruptAfterTimeLimit: 15_000 },
    );
    expect(invalid).toBeGreaterThan(0);
    expect(fdCount()).toBe(before);
  }, 30_000);
});
