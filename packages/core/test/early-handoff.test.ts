// Early hand-off (listener `tls.earlyHandoff`, on by default; the native engine honours it for
// TLS 1.3 without client certificates): the backend may take a connection before the client's
// Finished. A client that then refuses our certificate must still show in the log as a failed
// handshake, and nothing it sent may reach the backend. With `earlyHandoff: false` such a client
// never reaches the backend at all (as with the node:tls engine, which always hands off at the
// end of the handshake).
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  askStartTls,
  cert,
  type Events,
  engineName,
  type Gate,
  imapRelayed,
  LineClient,
  sleep,
  startBackend,
  startProxy,
  tlsGate,
  until,
} from './helpers.js';

let backend: { child: ChildProcess; path: string; events: Events };
beforeAll(async () => {
  backend = await startBackend();
});
afterAll(() => {
  backend?.child.kill();
});

const connections = () => backend.events.all.filter((e) => e.event === 'connection');
const commands = () => backend.events.all.filter((e) => e.event === 'command');

/**
 * STARTTLS, then a TLS client that does not trust our certificate (it gives up after the
 * server's flight). Its answer is held until the native engine has handed the connection out
 * early (it is in the backend's hands): otherwise, on a loaded machine, the answer may come first
 * and the failure is an ordinary one (as it always is with `earlyHandoff: false` or the node:tls
 * engine).
 */
async function refusingClient(gate: Gate, early: boolean): Promise<void> {
  const before = connections().length;
  const c = new LineClient(gate.port);
  await c.until(/^\* OK/);
  c.write('a STARTTLS\r\n');
  await c.until(/^a OK/);
  await expect(c.startTls({ ca: cert('rogue.pem') })).rejects.toThrow();
  c.socket.destroy();
  await until(() => gate.answered(), 2000, 'the client’s answer');
  if (early) await until(() => connections().length > before, 2000, 'the early hand-off');
  gate.release();
}

describe(`early hand-off (${engineName} engine)`, () => {
  it('a client that refuses our certificate: a failed handshake in the log, nothing of it at the backend', async () => {
    const { proxy, port, logger } = await startProxy(
      `unix:${backend.path}`,
      {},
      {},
      {
        metrics: {},
      },
    );
    const gate = await tlsGate(port);
    // tlsproxy_tls_handshake_seconds_count by result
    const handshakes = async (result: string) =>
      Number(
        (await proxy.metrics!.text()).match(
          new RegExp(
            `^tlsproxy_tls_handshake_seconds_count\\{[^}]*result="${result}"[^}]*\\} (\\d+)`,
            'm',
          ),
        )?.[1] ?? 0,
      );
    try {
      const cmds = commands().length;
      await refusingClient(gate, engineName === 'native');
      await until(
        () => logger.lines.some((l) => /TLS handshake failed/.test(l)),
        2000,
        'the failure logged',
      );
      // Counted once, as failed, whether it failed before or after the hand-off.
      expect([await handshakes('failed'), await handshakes('ok')]).toEqual([1, 0]);
      // The native engine handed it off early: the failure came after, and says so.
      if (engineName === 'native')
        expect(
          logger.lines.some((l) => l.includes('TLS handshake failed after the hand-off')),
        ).toBe(true);
      expect(commands().length).toBe(cmds);
      // And a client that trusts us still gets through, counted as ok once its handshake ended.
      (await imapRelayed(port)).socket.destroy();
      for (let i = 0; i < 80 && (await handshakes('ok')) === 0; i++) await sleep(25);
      expect([await handshakes('failed'), await handshakes('ok')]).toEqual([1, 1]);
    } finally {
      gate.close();
      await proxy.close();
    }
  });

  it('earlyHandoff: false — such a client never reaches the backend', async () => {
    const { proxy, port, logger } = await startProxy(`unix:${backend.path}`, {
      tls: { earlyHandoff: false },
    });
    const gate = await tlsGate(port);
    try {
      const before = connections().length;
      await refusingClient(gate, false);
      await until(
        () => logger.lines.some((l) => l.includes('TLS handshake failed')),
        2000,
        'the failure logged',
      );
      await sleep(200); // the backend's events come through its stdout
      expect(connections().length).toBe(before);
      expect(logger.lines.some((l) => l.includes('TLS handshake failed'))).toBe(true);
      expect(logger.lines.some((l) => l.includes('after the hand-off'))).toBe(false);
    } finally {
      gate.close();
      await proxy.close();
    }
  });

  it('maxHandshakes counts a session handed out early until the client’s Finished', async () => {
    const { proxy, port } = await startProxy(`unix:${backend.path}`, { maxHandshakes: 1 });
    // The client's Finished is held until released.
    const gate = await tlsGate(port);
    try {
      const a = new LineClient(gate.port);
      await a.until(/^\* OK/);
      a.write('a STARTTLS\r\n');
      await a.until(/^a OK/);
      const aTls = a.startTls();
      aTls.catch(() => {});
      // With the native engine the backend has it now; either way its handshake is not over.
      await until(() => gate.answered(), 2000, 'the client’s Finished');
      await sleep(100);
      const b = new LineClient(port);
      await b.until(/^\* OK/);
      b.write('b STARTTLS\r\n');
      expect(await b.until(/^b /)).toMatch(/^b NO/);
      // The client's Finished goes through: the place is free again.
      gate.release();
      (await aTls).socket.destroy();
      // (Short of places, the engine tells JS of a completed handshake at once: promptCompletion;
      // how soon is the next test's business — this one allows a loaded machine its time.)
      let answer = '';
      for (let i = 0; i < 20; i++) {
        b.write(`c${i} STARTTLS\r\n`);
        answer = (await b.until(new RegExp(`^c${i} `))).split('\r\n').pop()!;
        if (/^c\d+ OK/.test(answer)) break;
        await sleep(100);
      }
      expect(answer).toMatch(/^c\d+ OK/);
      b.socket.destroy();
    } finally {
      gate.close();
      await proxy.close();
    }
  });

  it('maxHandshakes 1: clients one after another, never two handshakes at once, are all let in', async () => {
    // The place of a session handed out early goes back when the engine reports its handshake
    // complete; batched with other news (up to 50 ms later), that refused about a third of such
    // a sequence with nothing else running. Short of places, core asks for it at once.
    const { proxy, port } = await startProxy(`unix:${backend.path}`, { maxHandshakes: 1 });
    try {
      const answers: string[] = [];
      for (let i = 0; i < 20; i++) {
        const { answer, client } = await askStartTls(port);
        answers.push(answer);
        if (!client) continue;
        const t = await client.startTls();
        t.socket.write('b NOOP\r\n');
        await t.until(/^b OK/m);
        t.socket.destroy();
      }
      expect(answers.filter((a) => a !== 'a OK')).toEqual([]);
    } finally {
      await proxy.close();
    }
  });
});
