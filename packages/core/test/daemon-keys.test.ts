// Issue 14: with a tlspool daemon, control keys of ended sessions must not add up to "16
// unknown keys" on the proxy's one channel to the daemon (which then closed it and failed every
// handshake for every user). The daemon now reports session ends, so the proxy forgets those
// keys and answers "ended" itself; the daemon counts unknown keys per requester (the backend).
import type { ChildProcess } from 'node:child_process';
import { listen } from '@tlsproxy/backend';
import { describe, expect, it } from 'vitest';
import { TlsProxy } from '../src/index.js';
import { startDaemon } from './faults-util.js';
import { LineClient, quietLogger, sleep, tmpSock } from './helpers.js';

describe('control keys with a tlspool daemon', () => {
  it('keys of ended sessions never cut the proxy off the daemon', async () => {
    const poolPath = tmpSock('pool');
    const backendPath = tmpSock('backend');
    const daemon: ChildProcess = await startDaemon(poolPath);
    const backend = await listen({ path: backendPath });
    const logger = quietLogger();
    const proxy = new TlsProxy({ pool: { socket: poolPath }, logger });
    try {
      const l = await proxy.listen({
        dialect: 'imap',
        listen: '127.0.0.1:0',
        backend: `unix:${backendPath}`,
      });
      const port = (l.server.address() as { port: number }).port;
      const connect = async () => {
        const c = new LineClient(port);
        await c.until(/^\* OK/);
        c.write('a STARTTLS\r\n');
        await c.until(/^a OK/);
        const accepted = backend.accept();
        const t = await c.startTls({ servername: 'imap.example.test' });
        return { t, ...(await accepted) };
      };
      const ended: Array<Awaited<ReturnType<typeof connect>>['control']> = [];
      for (let i = 0; i < 20; i++) {
        const { t, socket, control } = await connect();
        t.socket.destroy();
        socket.destroy();
        ended.push(control);
      }
      await sleep(500);
      const answers = await Promise.all(
        ended.map((control) =>
          control.info().then(
            () => 'answered',
            (e: Error) => e.message,
          ),
        ),
      );
      // The proxy's channel to the daemon is intact: a new client gets TLS and a live key.
      const { t, socket, control } = await connect();
      expect(((await control.info()) as { version: string }).version).toMatch(/^TLSv1\.[23]$/);
      t.socket.destroy();
      socket.destroy();
      for (const a of answers) expect(a).toMatch(/ended/);
    } finally {
      await proxy.close();
      await backend.close();
      daemon.kill('SIGKILL');
    }
  }, 30_000);
});
