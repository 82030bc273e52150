// Issue 14, out of descriptors: when a syscall on the connection path fails with EMFILE (here
// socketpair() right after a completed handshake), that one connection ends cleanly — TLS socket
// and raw socket destroyed, handshake() rejected with TLSPROXY_ERR_POOL_RESOURCES, every
// descriptor released — and the engine goes on serving. The same for the tlspool daemon, which
// also receives descriptors (recvmsg) and must not die when it has none left.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Channel, checkAddon, connect } from '@tlsproxy/fdpass';
import { describe, expect, it } from 'vitest';
import { type HandshakeResult, RemoteTlsEngine, TlsEngine } from '../src/index.js';
import { certs, client, fdCount, nextData, serve, until } from './helpers.js';

/** RLIMIT_NOFILE of a process, [soft, hard]. */
function nofile(pid: number | 'self' = 'self'): [number, number] {
  const line = readFileSync(`/proc/${pid}/limits`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'))!;
  const [soft, hard] = line.replace('Max open files', '').trim().split(/\s+/);
  return [Number(soft), Number(hard)];
}

/** Set this process's soft RLIMIT_NOFILE (prlimit(1) on our own pid; vitest runs files in forks). */
function setSoftNofile(soft: number): void {
  const [, hard] = nofile();
  execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${soft}:${hard}`]);
}

/** Open /dev/null until the descriptor table is full; returns what was opened. */
function fillTable(): number[] {
  const held: number[] = [];
  for (;;) {
    try {
      held.push(openSync('/dev/null', 'r'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EMFILE') return held;
      throw err;
    }
  }
}

describe('TlsEngine out of descriptors', () => {
  it('socketpair() failing with EMFILE ends that connection cleanly; the engine goes on', async () => {
    const engine = new TlsEngine({ identities: [certs.server] });
    let held: number[] = [];
    let fill = false;
    const served = await serve(engine, () => ({
      // Called mid-handshake, after every descriptor of this connection exists: fill the table
      // now, so the next one the engine asks for (socketpair, after the handshake) fails.
      checkServerName: () => {
        if (fill) held = fillTable();
        return true;
      },
    }));
    const [soft] = nofile();
    try {
      // Warm up (lazy loads, the first handshake's allocations) and take the baseline.
      {
        const c = client(served.port, { servername: 'imap.example.test' });
        const r = await served.next();
        await c.secure;
        r.plaintext.close();
        c.socket.resume();
        await c.closed;
        await until(() => engine.sessionCount === 0, 3000, 'warm-up cleanup');
      }
      const baseline = fdCount();
      setSoftNofile(fdCount() + 64);
      fill = true;
      const c = client(served.port, { servername: 'imap.example.test' });
      c.socket.on('error', () => {});
      c.socket.resume();
      let err: unknown;
      try {
        await served.next();
      } catch (e) {
        err = e;
      } finally {
        fill = false;
        for (const fd of held) closeSync(fd);
        held = [];
        setSoftNofile(soft);
      }
      expect(held).toEqual([]);
      expect(err).toMatchObject({ code: 'TLSPROXY_ERR_POOL_RESOURCES' });
      expect((err as Error).name).toBe('PoolError');
      // The client is not left hanging on a half-finished session.
      await Promise.race([
        c.closed,
        new Promise((_, rej) => setTimeout(() => rej(new Error('client never closed')), 3000)),
      ]);
      expect(engine.sessionCount).toBe(0);
      await until(() => fdCount() <= baseline, 3000, `fd count back to ${baseline} (${fdCount()})`);

      // …and the engine still serves.
      const c2 = client(served.port, { servername: 'imap.example.test' });
      const r2 = await served.next();
      await c2.secure;
      const plain = r2.plaintext.toSocket();
      const got = nextData(plain);
      c2.socket.write('ping');
      expect(await got).toBe('ping');
      plain.destroy();
      c2.socket.resume();
      await c2.closed;
      await until(() => engine.sessionCount === 0, 3000, 'cleanup');
    } finally {
      for (const fd of held) closeSync(fd);
      setSoftNofile(soft);
      await served.close();
      await engine.close();
    }
  });
});

describe('RemoteTlsEngine out of descriptors', () => {
  it('a net.Socket it cannot take (dup() fails with EMFILE) is closed; TLSPROXY_ERR_POOL_RESOURCES', async () => {
    // No daemon needed: the descriptor is taken before the daemon is asked. The addon is loaded
    // first (loading it needs a descriptor too).
    checkAddon();
    const remote = new RemoteTlsEngine({ socket: '/nonexistent/tlspool.sock' });
    const server = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as net.AddressInfo).port;
    const [soft] = nofile();
    let held: number[] = [];
    try {
      const baseline = fdCount();
      const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
      const c = net.connect(port, '127.0.0.1');
      c.on('error', () => {});
      const closed = new Promise<void>((r) => c.once('close', () => r()));
      const socket = await accepted;
      setSoftNofile(fdCount() + 64);
      held = fillTable();
      let err: unknown;
      try {
        await remote.handshake(socket);
      } catch (e) {
        err = e;
      } finally {
        for (const fd of held) closeSync(fd);
        held = [];
        setSoftNofile(soft);
      }
      expect(err).toMatchObject({ name: 'PoolError', code: 'TLSPROXY_ERR_POOL_RESOURCES' });
      expect(socket.destroyed).toBe(true);
      c.resume();
      await Promise.race([
        closed,
        new Promise((_, rej) => setTimeout(() => rej(new Error('client never closed')), 3000)),
      ]);
      await until(() => fdCount() <= baseline, 3000, `fd count back to ${baseline} (${fdCount()})`);
    } finally {
      for (const fd of held) closeSync(fd);
      setSoftNofile(soft);
      server.close();
      await remote.close();
    }
  });
});

const bin = fileURLToPath(new URL('../bin/tlspool.js', import.meta.url));
const certDir = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));

describe('tlspool daemon out of descriptors', () => {
  // Each session holds two descriptors in the daemon, so the parity of the limit decides where
  // it runs out: at socketpair() (one left: TLSPROXY_ERR_POOL_RESOURCES) or at recvmsg (none
  // left: the kernel drops the descriptor, MSG_CTRUNC; the request gets no answer and times out).
  it.each([48, 49])(
    'under RLIMIT_NOFILE %i: refuses handshakes it has no descriptors for, stays up, and serves again once they are free',
    { timeout: 60_000 },
    async (LIMIT) => {
      const dir = mkdtempSync(join(tmpdir(), 'tlspool-emfile-'));
      const sock = join(dir, 'pool.sock');
      const daemon: ChildProcess = spawn(
        'prlimit',
        [
          `--nofile=${LIMIT}:${LIMIT}`,
          process.execPath,
          bin,
          '--socket',
          sock,
          '--cert',
          `${certDir}server.pem`,
          '--key',
          `${certDir}server.key`,
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let log = '';
      daemon.stderr!.setEncoding('utf8');
      daemon.stderr!.on('data', (d: string) => {
        log += d;
      });
      const engine = new RemoteTlsEngine({ socket: sock });
      const served = await serve(engine as unknown as TlsEngine, { handshakeTimeoutMs: 1000 });
      const open: Array<{ c: ReturnType<typeof client>; r: HandshakeResult }> = [];
      const extra: Channel[] = [];
      const daemonFds = () => readdirSync(`/proc/${daemon.pid}/fd`).length;
      try {
        await until(() => log.includes('tlspool listening'), 10_000, 'tlspool to listen');
        expect(nofile(daemon.pid!)[0]).toBe(LIMIT);
        // One session to open the channel and warm up, then the daemon's baseline.
        {
          const c = client(served.port);
          const r = await served.next();
          await c.secure;
          r.plaintext.close();
          c.socket.resume();
          await c.closed;
        }
        await new Promise((r) => setTimeout(r, 300));
        const baseline = daemonFds();

        // Sessions until the daemon runs out of descriptors (each holds two there).
        const failures: Array<{ code: unknown; closed: Promise<unknown> }> = [];
        for (let i = 0; i < LIMIT && failures.length === 0; i++) {
          const c = client(served.port);
          c.socket.on('error', () => {});
          c.socket.resume();
          try {
            const r = await served.next();
            await c.secure;
            open.push({ c, r });
          } catch (err) {
            failures.push({ code: (err as { code?: unknown }).code, closed: c.closed });
          }
        }
        expect(failures.length, log).toBeGreaterThan(0);
        for (const f of failures) {
          expect(['TLSPROXY_ERR_POOL_RESOURCES', 'TLSPROXY_ERR_POOL_HANDSHAKE']).toContain(f.code);
          // The refused client is closed, not left waiting.
          await Promise.race([
            f.closed,
            new Promise((_, rej) =>
              setTimeout(() => rej(new Error('client never closed')), 10_000),
            ),
          ]);
        }
        expect(daemon.exitCode, log).toBeNull();

        // Now take its last descriptors with channels of our own (each one it accepts holds one;
        // the accepts beyond fail with EMFILE), so the next handshake's descriptor cannot even
        // be received: the kernel drops it (MSG_CTRUNC). The daemon logs it and goes on; the
        // client's connection is closed with the dropped descriptor.
        for (let i = 0; i < 3; i++) extra.push(await connect({ path: sock }, { timeoutMs: 2000 }));
        await new Promise((r) => setTimeout(r, 200));
        {
          const c = client(served.port);
          c.socket.on('error', () => {});
          c.socket.resume();
          await expect(served.next()).rejects.toMatchObject({ name: 'PoolError' });
          await Promise.race([
            c.closed,
            new Promise((_, rej) =>
              setTimeout(() => rej(new Error('client never closed')), 10_000),
            ),
          ]);
        }
        expect(log).toMatch(/accept failed|MSG_CTRUNC|out of resources/);
        expect(daemon.exitCode, log).toBeNull();
        for (const ch of extra) ch.close();
        extra.length = 0;

        // Everyone leaves: the daemon's descriptors come back and it serves again.
        for (const { c, r } of open) {
          r.plaintext.close();
          c.socket.destroy();
        }
        open.length = 0;
        await until(() => daemonFds() <= baseline, 10_000, `daemon fds back to ${baseline}`);
        let ok = false;
        for (let i = 0; i < 10 && !ok; i++) {
          const c = client(served.port);
          c.socket.on('error', () => {});
          try {
            const r = await served.next();
            await c.secure;
            const plain = r.plaintext.toSocket();
            const got = nextData(plain);
            c.socket.write('ping');
            expect(await got).toBe('ping');
            plain.destroy();
            ok = true;
          } catch {
            await new Promise((r) => setTimeout(r, 300));
          }
          c.socket.destroy();
        }
        expect(ok, log).toBe(true);
        expect(daemon.exitCode, log).toBeNull();
      } finally {
        for (const { c, r } of open) {
          r.plaintext.close();
          c.socket.destroy();
        }
        for (const ch of extra) ch.close();
        await served.close();
        await engine.close();
        daemon.kill('SIGKILL');
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
