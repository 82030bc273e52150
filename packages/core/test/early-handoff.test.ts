// Early hand-off (listener `tls.earlyHandoff`, on by default; the native engine honours it for
// TLS 1.3 without client certificates): the backend may take a connection before the client's
// Finished. A client that then refuses our certificate must still show in the log as a failed
// handshake, and nothing it sent may reach the backend. With `earlyHandoff: false` such a client
// never reaches the backend at all (as with the node:tls engine, which always hands off at the
// end of the handshake).
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cert,
  type Events,
  engineName,
  imapRelayed,
  LineClient,
  sleep,
  startBackend,
  startProxy,
} from './helpers.js';

let backend: { child: ChildProcess; path: string; events: Events };
beforeAll(async () => {
  backend = await startBackend();
});
afterAll(() => {
  backend?.child.kill();
});

/** STARTTLS, then a TLS client that does not trust our certificate (it aborts with an alert). */
async function refusingClient(port: number): Promise<void> {
  const c = new LineClient(port);
  await c.until(/^\* OK/);
  c.write('a STARTTLS\r\n');
  await c.until(/^a OK/);
  await expect(c.startTls({ ca: cert('rogue.pem') })).rejects.toThrow();
  c.socket.destroy();
}

const connections = () => backend.events.all.filter((e) => e.event === 'connection');
const commands = () => backend.events.all.filter((e) => e.event === 'command');

describe(`early hand-off (${engineName} engine)`, () => {
  it('a client that refuses our certificate: a failed handshake in the log, nothing of it at the backend', async () => {
    const { proxy, port, logger } = await startProxy(`unix:${backend.path}`);
    try {
      const cmds = commands().length;
      await refusingClient(port);
      await sleep(300);
      expect(logger.lines.some((l) => /TLS handshake failed/.test(l))).toBe(true);
      // The native engine handed it off early: the failure came after, and says so.
      if (engineName === 'native')
        expect(
          logger.lines.some((l) => l.includes('TLS handshake failed after the hand-off')),
        ).toBe(true);
      expect(commands().length).toBe(cmds);
      // And a client that trusts us still gets through.
      (await imapRelayed(port)).socket.destroy();
    } finally {
      await proxy.close();
    }
  });

  it('earlyHandoff: false — such a client never reaches the backend', async () => {
    const { proxy, port, logger } = await startProxy(`unix:${backend.path}`, {
      tls: { earlyHandoff: false },
    });
    try {
      const before = connections().length;
      await refusingClient(port);
      await sleep(300);
      expect(connections().length).toBe(before);
      expect(logger.lines.some((l) => l.includes('TLS handshake failed'))).toBe(true);
      expect(logger.lines.some((l) => l.includes('after the hand-off'))).toBe(false);
    } finally {
      await proxy.close();
    }
  });
});
