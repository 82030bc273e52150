// Faults under load (issue 8): the backend, then the TLS-engine daemon, killed with SIGKILL while
// 16 clients loop greeting → STARTTLS → TLS → LOGIN. Every attempt ends with a protocol reply or a
// close within its own deadline (none hangs); the dead process is restarted on the same path and
// service resumes without restarting the proxy; the proxy's descriptors return to their count
// after a warm-up.
import type { ChildProcess } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { TlsProxy } from '../src/index.js';
import {
  exited,
  imapAttempt,
  loadLoop,
  settle,
  startDaemon,
  type Tally,
  watchProcess,
} from './faults-util.js';
import { fdCount, quietLogger, sleep, startBackend, startProxy, tmpSock } from './helpers.js';

const CONCURRENCY = 16;
/** Per attempt: above the engine's 5 s backend-answer bound, so a slow-but-bounded path is no hang. */
const ATTEMPT_DEADLINE_MS = 7000;

/** The example backend on a fixed path (a later --path wins over startBackend's own). */
const backendOn = (path: string) => startBackend(['--quiet', '--path', path]);

function summary(t: Tally): string {
  const odd = t.attempts.filter((a) => a.outcome === 'hang' || a.outcome === 'unexpected');
  return `${JSON.stringify(t.counts)} ${JSON.stringify(odd.slice(0, 5))}`;
}

/** Load for warm + down + up ms, calling kill() after `warm` and restart() after `down` more. */
async function loadAcross(
  port: number,
  phases: { warm: number; down: number; up: number },
  kill: () => Promise<void>,
  restart: () => Promise<void>,
  servername?: string,
): Promise<{ tally: Tally; killedAt: number; restartedAt: number }> {
  let stop = false;
  const running = loadLoop(
    CONCURRENCY,
    () => stop,
    () => imapAttempt(port, ATTEMPT_DEADLINE_MS, servername),
  );
  await sleep(phases.warm);
  const killedAt = Date.now();
  await kill();
  await sleep(phases.down);
  const restartedAt = Date.now();
  await restart();
  await sleep(phases.up);
  stop = true;
  const tally = await running;
  return { tally, killedAt, restartedAt };
}

describe('faults under load', () => {
  it('backend SIGKILLed under load: no client hangs, a restart on the same path resumes service', async () => {
    const watch = watchProcess();
    let backend = await startBackend(['--quiet']);
    const path = backend.path;
    const { proxy, port, logger } = await startProxy(`unix:${path}`);
    const children: ChildProcess[] = [backend.child];
    try {
      // warm-up: lazily opened descriptors (backend channel, crypto, epoll, …)
      for (let i = 0; i < 4; i++)
        expect((await imapAttempt(port, ATTEMPT_DEADLINE_MS)).outcome).toBe('ok');
      await settle(() => proxy.activeSessions === 0);
      await sleep(300);
      const before = fdCount();

      const { tally, killedAt, restartedAt } = await loadAcross(
        port,
        { warm: 1500, down: 1500, up: 1500 },
        async () => {
          backend.child.kill('SIGKILL');
          await exited(backend.child);
        },
        async () => {
          backend = await backendOn(path);
          children.push(backend.child);
        },
      );
      expect(tally.counts.hang, summary(tally)).toBe(0);
      expect(tally.counts.unexpected, summary(tally)).toBe(0);
      expect(tally.counts.ok, summary(tally)).toBeGreaterThan(0);
      // While it was down, clients were told so (or their session closed), and none logged in.
      const whileDown = tally.attempts.filter(
        (a) => a.start > killedAt + 200 && a.end < restartedAt,
      );
      expect(whileDown.length, summary(tally)).toBeGreaterThan(0);
      expect(whileDown.filter((a) => a.outcome === 'ok')).toEqual([]);
      expect(
        whileDown.some((a) => a.outcome === 'unavailable'),
        summary(tally),
      ).toBe(true);
      // Service resumed after the restart, without restarting the proxy.
      const afterRestart = tally.attempts.filter((a) => a.start > restartedAt + 200);
      expect(
        afterRestart.some((a) => a.outcome === 'ok'),
        summary(tally),
      ).toBe(true);
      expect((await imapAttempt(port, ATTEMPT_DEADLINE_MS)).outcome).toBe('ok');
      expect(logger.lines.some((l) => l.includes('backend channel closed'))).toBe(true);

      expect(await settle(() => proxy.activeSessions === 0)).toBe(true);
      const same = await settle(() => fdCount() === before, 5000);
      expect(same, `fds before ${before}, after ${fdCount()}`).toBe(true);
      expect(watch.rejections).toEqual([]);
    } finally {
      watch.stop();
      await proxy.close();
      for (const c of children) c.kill('SIGKILL');
    }
  }, 30_000);

  it('TLS-engine daemon SIGKILLed under load: no client hangs, a restart resumes service', async () => {
    const watch = watchProcess();
    const poolPath = tmpSock('pool');
    let daemon = await startDaemon(poolPath);
    const backend = await startBackend(['--quiet']);
    const proxy = new TlsProxy({ pool: { socket: poolPath }, logger: quietLogger() });
    const children: ChildProcess[] = [daemon, backend.child];
    try {
      const l = await proxy.listen({
        dialect: 'imap',
        listen: '127.0.0.1:0',
        backend: `unix:${backend.path}`,
      });
      const port = (l.server.address() as { port: number }).port;
      const attempt = () => imapAttempt(port, ATTEMPT_DEADLINE_MS, 'imap.example.test');
      for (let i = 0; i < 4; i++) expect((await attempt()).outcome).toBe('ok');
      await settle(() => proxy.activeSessions === 0);
      await sleep(300);
      const before = fdCount();

      const { tally, killedAt, restartedAt } = await loadAcross(
        port,
        { warm: 1500, down: 1500, up: 1500 },
        async () => {
          daemon.kill('SIGKILL');
          await exited(daemon);
        },
        async () => {
          daemon = await startDaemon(poolPath);
          children.push(daemon);
        },
        'imap.example.test',
      );
      expect(tally.counts.hang, summary(tally)).toBe(0);
      expect(tally.counts.unexpected, summary(tally)).toBe(0);
      expect(tally.counts.ok, summary(tally)).toBeGreaterThan(0);
      const whileDown = tally.attempts.filter(
        (a) => a.start > killedAt + 200 && a.end < restartedAt,
      );
      expect(whileDown.length, summary(tally)).toBeGreaterThan(0);
      expect(whileDown.filter((a) => a.outcome === 'ok')).toEqual([]);
      expect(
        whileDown.some((a) => a.outcome === 'unavailable'),
        summary(tally),
      ).toBe(true);
      const afterRestart = tally.attempts.filter((a) => a.start > restartedAt + 200);
      expect(
        afterRestart.some((a) => a.outcome === 'ok'),
        summary(tally),
      ).toBe(true);
      expect((await attempt()).outcome).toBe('ok');

      expect(await settle(() => proxy.activeSessions === 0)).toBe(true);
      const same = await settle(() => fdCount() === before, 5000);
      expect(same, `fds before ${before}, after ${fdCount()}`).toBe(true);
      expect(watch.rejections).toEqual([]);
    } finally {
      watch.stop();
      await proxy.close();
      for (const c of children) c.kill('SIGKILL');
    }
  }, 30_000);
});
