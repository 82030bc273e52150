import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { type Channel, listen, type SeqpacketServer, socketFd } from '../src/index.js';
import { fdCount, fixture, lines, spawnNode, tmpSock } from './helpers.js';

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const f of cleanup.splice(0)) f();
});

async function receiver(mode: string, shellPrefix?: string) {
  const path = tmpSock(mode);
  const server: SeqpacketServer = listen({ path });
  const accepted = new Promise<Channel>((r) => server.once('connection', r));
  const child = spawnNode(fixture('receiver.mjs'), [path, mode], shellPrefix);
  cleanup.push(() => {
    child.kill();
    server.close();
  });
  const next = lines(child);
  const hello = await next();
  const ch = await accepted;
  return { ch, child, next, hello, server };
}

function tcpServer(): Promise<{ server: net.Server; port: number }> {
  return new Promise((resolve) => {
    // pauseOnConnect: the parent never reads, so every byte stays in the kernel for the child.
    const server = net.createServer({ pauseOnConnect: true });
    server.listen(0, '127.0.0.1', () => {
      cleanup.push(() => server.close());
      resolve({ server, port: (server.address() as net.AddressInfo).port });
    });
  });
}

describe('cross-process hand-off', () => {
  it('hands an accepted TCP connection to another process; early bytes are not lost', async () => {
    const { ch, child, hello } = await receiver('echo');
    const { server, port } = await tcpServer();
    const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
    const client = net.connect(port, '127.0.0.1');
    // The client speaks before the hand-off happens.
    client.write('early bytes ');
    await new Promise((r) => setTimeout(r, 30));
    client.write('and more\n');
    const sock = await accepted;
    await new Promise<void>((resolve, reject) =>
      ch.send(Buffer.from('tcp'), [socketFd(sock)], (err) => (err ? reject(err) : resolve())),
    );
    sock.destroy(); // our copy only; the child holds the connection now
    let answer = '';
    client.setEncoding('utf8');
    client.on('data', (d) => {
      answer += d;
    });
    await new Promise((r) => client.on('end', r));
    expect(answer).toBe(`EARLY BYTES AND MORE\nfrom pid ${child.pid}\n`);
    // SO_PEERCRED on both sides names the other process.
    expect(ch.peer.pid).toBe(child.pid);
    expect(ch.peer.uid).toBe(process.getuid!());
    expect((hello.peer as { pid: number }).pid).toBe(process.pid);
    client.destroy();
  });

  it('10,000 hand-offs leave descriptor counts unchanged in both processes', async () => {
    const { ch } = await receiver('sink');
    const { port } = await tcpServer();
    // A few real TCP connections, each sent many times (every send makes a new fd over there).
    const clients = await Promise.all(
      Array.from(
        { length: 8 },
        () =>
          new Promise<net.Socket>((r) => {
            const c = net.connect(port, '127.0.0.1', () => r(c));
          }),
      ),
    );
    cleanup.push(() => clients.forEach((c) => c.destroy()));
    const fds = clients.map((c) => socketFd(c));
    const handoffs = async (count: number) => {
      for (let i = 0; i < count; i++) {
        if (!ch.send(Buffer.from('x'), [fds[i % fds.length]!])) {
          await new Promise<void>((r) => ch.once('drain', () => r()));
        }
      }
      ch.send(Buffer.from('count'));
      return new Promise<Record<string, number>>((resolve) =>
        ch.once('message', (m) => resolve(JSON.parse(m.data.toString()))),
      );
    };
    // Warm up first: Node opens a few descriptors lazily on first use (not per connection).
    const warm = await handoffs(100);
    const before = fdCount();
    const report = await handoffs(10_000);
    expect(report.received).toBe(10_100);
    expect(report.dropped).toBe(0);
    expect(report.fds).toBe(warm.fds);
    expect(fdCount()).toBe(before);
  }, 60_000);

  it('a receiver at its descriptor limit gets MSG_CTRUNC, closes what arrived, and reports it', async () => {
    const { ch, next } = await receiver('hold', 'ulimit -n 64');
    const pairs: net.Socket[] = [];
    const { port } = await tcpServer();
    for (let i = 0; i < 4; i++) {
      pairs.push(
        await new Promise<net.Socket>((r) => {
          const c = net.connect(port, '127.0.0.1', () => r(c));
        }),
      );
    }
    cleanup.push(() => pairs.forEach((c) => c.destroy()));
    const fds = pairs.map((c) => socketFd(c));
    // 16 descriptors per message: the child (limit 64) fills up within a few messages.
    let dropped: Record<string, unknown> | undefined;
    for (let i = 0; i < 10 && !dropped; i++) {
      ch.send(
        Buffer.from('fill'),
        Array.from({ length: 16 }, (_, k) => fds[k % fds.length]!),
      );
      const m = await next();
      if (m.dropped) dropped = m;
    }
    expect(dropped?.dropped).toBe('TLSPROXY_ERR_FDPASS_CTRUNC');
    // Whatever arrived with the truncated message was closed: the child is below its limit.
    expect(dropped?.fdsNow as number).toBeLessThan(64);
  }, 30_000);
});
