// Descriptor exhaustion (issue 8, faults): the `tlsproxy` command under `ulimit -n 64`, 100
// clients idling in the preamble. The process survives, the accept errors (EMFILE) are logged,
// and once the clients are gone a new one gets the greeting, STARTTLS, TLS and a login.
import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import {
  certDir,
  cliBin,
  connectTcp,
  exited,
  imapAttempt,
  Reader,
  settle,
  watchProcess,
} from './faults-util.js';
import { engineName, sleep, startBackend } from './helpers.js';

const LIMIT = 64;
const CLIENTS = 100;

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

describe('descriptor exhaustion', () => {
  it(`survives ${CLIENTS} idle clients under ulimit -n ${LIMIT}, logs EMFILE, and recovers`, async () => {
    const watch = watchProcess();
    const backend = await startBackend(['--quiet']);
    const port = await freePort();
    const args = [
      cliBin,
      '--dialect',
      'imap',
      '--listen',
      `127.0.0.1:${port}`,
      '--backend',
      `unix:${backend.path}`,
      '--cert',
      `${certDir}server.pem`,
      '--key',
      `${certDir}server.key`,
      '--hostname',
      'test.example',
      '--workers',
      '1',
      ...['--engine', engineName],
    ];
    const proxy: ChildProcess = spawn(
      'bash',
      ['-c', `ulimit -n ${LIMIT} && exec "$0" "$@"`, process.execPath, ...args],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    proxy.stderr!.setEncoding('utf8');
    proxy.stderr!.on('data', (d: string) => {
      stderr += d;
    });
    const clients: Reader[] = [];
    try {
      expect(await settle(() => /listening/.test(stderr), 10_000), stderr).toBe(true);
      const limits = (await import('node:fs')).readFileSync(`/proc/${proxy.pid}/limits`, 'utf8');
      expect(limits).toMatch(new RegExp(`Max open files\\s+${LIMIT}\\s`));

      // The backend channel opens at the first STARTTLS: open it while descriptors are free.
      expect((await imapAttempt(port, 5000)).outcome).toBe('ok');

      const outcomes = { greeted: 0, closed: 0, silent: 0, refused: 0 };
      for (let i = 0; i < CLIENTS; i++) {
        try {
          clients.push(new Reader(await connectTcp(port)));
        } catch {
          outcomes.refused++;
        }
      }
      await Promise.all(
        clients.map(async (c) => {
          const g = await c.wait(/^\* OK[^\r\n]*\r\n/m, 3000);
          if (g) outcomes.greeted++;
          else if (c.closed) outcomes.closed++;
          else outcomes.silent++;
        }),
      );
      const detail = `${JSON.stringify(outcomes)}\n${stderr.slice(-2000)}`;
      // The process is alive and is at its limit: some clients were served, some were not.
      expect(proxy.exitCode, detail).toBeNull();
      expect(proxy.signalCode, detail).toBeNull();
      expect(outcomes.greeted, detail).toBeGreaterThan(10);
      expect(outcomes.greeted, detail).toBeLessThan(CLIENTS);
      // …and it said why. Soft: the recovery below is checked (and reported) either way.
      // libuv drops connections at EMFILE without telling Node; the proxy's descriptor watch
      // (once a second) is what reports it.
      await settle(() => /EMFILE|too many open files|descriptor/i.test(stderr), 3000);
      expect.soft(stderr, detail).toMatch(/EMFILE|too many open files|descriptor/i);

      // Everyone leaves; then a new client is served from greeting to login.
      for (const c of clients) c.socket.destroy();
      await sleep(500);
      let last = { outcome: 'none', detail: '' } as { outcome: string; detail: string };
      for (let i = 0; i < 10 && last.outcome !== 'ok'; i++) {
        last = await imapAttempt(port, 5000);
        if (last.outcome !== 'ok') await sleep(300);
      }
      expect(last.outcome, `${JSON.stringify(last)}\n${stderr.slice(-2000)}`).toBe('ok');
      expect(proxy.exitCode).toBeNull();
      expect(watch.rejections).toEqual([]);
    } finally {
      watch.stop();
      for (const c of clients) c.socket.destroy();
      proxy.kill('SIGKILL');
      await exited(proxy);
      backend.child.kill('SIGKILL');
    }
  }, 30_000);

  // Issue 14, finding 7: with the table full, a client's STARTTLS made detachSocket()'s
  // F_DUPFD_CLOEXEC fail with EMFILE as an unhandled rejection, and the process exited. Since
  // connections are accepted as descriptors (accept.ts) the switch-over takes none (the
  // duplicate is made at accept, where EMFILE drops only the new connection): each STARTTLS now
  // gets its go-ahead or a temporary failure, and the process serves on either way.
  it('STARTTLS with no descriptor left: that client gets a temporary failure, the process serves on', async () => {
    const watch = watchProcess();
    const backend = await startBackend(['--quiet']);
    const port = await freePort();
    const args = [
      cliBin,
      ...['--dialect', 'imap', '--listen', `127.0.0.1:${port}`],
      ...['--backend', `unix:${backend.path}`, '--hostname', 'test.example', '--workers', '1'],
      ...['--cert', `${certDir}server.pem`, '--key', `${certDir}server.key`],
      ...['--engine', engineName],
    ];
    const proxy: ChildProcess = spawn(
      'bash',
      ['-c', `ulimit -n ${LIMIT} && exec "$0" "$@"`, process.execPath, ...args],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    proxy.stderr!.setEncoding('utf8');
    proxy.stderr!.on('data', (d: string) => {
      stderr += d;
    });
    const clients: Reader[] = [];
    try {
      expect(await settle(() => /listening/.test(stderr), 10_000), stderr).toBe(true);
      expect((await imapAttempt(port, 5000)).outcome).toBe('ok');
      for (let i = 0; i < CLIENTS; i++) {
        try {
          clients.push(new Reader(await connectTcp(port)));
        } catch {}
      }
      const greeted: Reader[] = [];
      await Promise.all(
        clients.map(async (c) => {
          if (await c.wait(/^\* OK[^\r\n]*\r\n/m, 3000)) greeted.push(c);
        }),
      );
      expect(greeted.length, stderr.slice(-2000)).toBeGreaterThan(5);
      // The table is full: each STARTTLS now needs a descriptor the process cannot have.
      const answers = await Promise.all(
        greeted.slice(0, 5).map(async (c) => {
          c.socket.write('s STARTTLS\r\n');
          const m = await c.wait(/^s (OK|NO|BAD)[^\r\n]*\r\n/m, 3000);
          return m ? m[1] : c.closed ? 'closed' : 'hang';
        }),
      );
      await sleep(500);
      const detail = `${JSON.stringify(answers)}\n${stderr.slice(-3000)}`;
      expect(proxy.exitCode, detail).toBeNull();
      expect(proxy.signalCode, detail).toBeNull();
      expect(
        answers.filter((a) => a !== 'OK' && a !== 'NO'),
        detail,
      ).toEqual([]);
      expect(
        answers.filter((a) => a === 'hang'),
        detail,
      ).toEqual([]);
      for (const c of clients) c.socket.destroy();
      await sleep(500);
      let last = { outcome: 'none', detail: '' } as { outcome: string; detail: string };
      for (let i = 0; i < 10 && last.outcome !== 'ok'; i++) {
        last = await imapAttempt(port, 5000);
        if (last.outcome !== 'ok') await sleep(300);
      }
      expect(last.outcome, `${JSON.stringify(last)}\n${stderr.slice(-2000)}`).toBe('ok');
      expect(watch.rejections).toEqual([]);
    } finally {
      watch.stop();
      for (const c of clients) c.socket.destroy();
      proxy.kill('SIGKILL');
      await exited(proxy);
      backend.child.kill('SIGKILL');
    }
  }, 40_000);
});
