// Issue 14: with a tlspool daemon, control keys of ended sessions must not add up to "16
// unknown keys" on the proxy's one channel to the daemon (which then closed it and failed every
// handshake for every user). The daemon now reports session ends, so the proxy forgets those
// keys and answers "ended" itself; the daemon counts unknown keys per requester (the backend).
import { describe, expect, it } from 'vitest';
import { withDaemon } from './faults-util.js';
import { LineClient, sleep } from './helpers.js';

describe('control keys with a tlspool daemon', () => {
  it(
    'keys of ended sessions never cut the proxy off the daemon',
    () =>
      withDaemon(async ({ port, backend }) => {
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
      }),
    30_000,
  );
});
