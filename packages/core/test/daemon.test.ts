// The TLS engine in its own process (tlspool): keys only there, the proxy hands it the TCP
// descriptor after the preamble and gets the plaintext end back; control requests from the
// backend travel proxy → daemon with the control key; a daemon restart is survived.
import { RemoteTlsEngine } from '@tlsproxy/pool';
import { describe, expect, it } from 'vitest';
import { withDaemon } from './faults-util.js';
import { askStartTls, cert, engineName, LineClient, sleep, tlsGate, until } from './helpers.js';

describe('tlspool daemon', () => {
  it(
    'runs the handshake in another process, relays control requests, and survives a restart',
    () =>
      withDaemon(async (s) => {
        const { port, proxy, backend, poolPath } = s;
        expect(proxy.pool.serverNames?.()).toContain('imap.example.test');

        const session = async () => {
          const c = new LineClient(port);
          await c.until(/^\* OK/);
          c.write('a STARTTLS\r\n');
          return c;
        };
        const c = await session();
        await c.until(/^a OK/);
        const accepted = backend.accept();
        const t = await c.startTls({ servername: 'imap.example.test' });
        const { socket, info, control } = await accepted;
        expect(info.serverName).toBe('imap.example.test');
        expect(info.tls?.version).toBe('TLSv1.3');
        // control: backend → proxy → daemon, with the key
        const exported = await control.exporter('EXPERIMENTAL-tlsproxy-test', 16);
        expect(exported).toEqual(
          t.socket.exportKeyingMaterial(
            16,
            'EXPERIMENTAL-tlsproxy-test',
            undefined as unknown as Buffer,
          ),
        );
        // …or the backend opens its own connection to the daemon and uses the key directly
        // (the seed's second option), with the proxy out of the way.
        const direct = new RemoteTlsEngine({ socket: poolPath });
        const viaDaemon = (await direct.control(info.controlKey!, 'info')) as {
          serverName: string;
        };
        expect(viaDaemon.serverName).toBe('imap.example.test');
        await expect(direct.control('00'.repeat(16), 'info')).rejects.toThrow(
          /unknown control key/,
        );
        await direct.close();
        socket.write('* hello through the daemon\r\n');
        expect(await t.until(/hello through the daemon/)).toContain('hello');
        t.socket.destroy();
        socket.destroy();

        // Daemon down: STARTTLS gets the dialect's temporary failure, not a dead TLS session.
        const dead = new Promise((r) => s.daemon.once('exit', r));
        s.daemon.kill('SIGKILL');
        await dead;
        const c2 = await session();
        expect(await c2.until(/^a /)).toMatch(/^a NO \[UNAVAILABLE\]/m);
        c2.socket.destroy();

        // Restarted: the proxy reconnects by itself.
        await s.restart();
        const c3 = await session();
        await c3.until(/^a OK/);
        const accepted3 = backend.accept();
        const t3 = await c3.startTls();
        const third = await accepted3;
        expect(third.info.tls?.version).toBe('TLSv1.3');
        t3.socket.destroy();
        third.socket.destroy();
      }),
    30_000,
  );

  it(
    'asks the backend about SNI names for a handshake running in the daemon',
    () =>
      withDaemon(
        async ({ port, backend }) => {
          for (const [name, ok] of [
            ['refused.example.test', false],
            ['localhost', true],
          ] as const) {
            const c = new LineClient(port);
            await c.until(/^\* OK/);
            c.write('a STARTTLS\r\n');
            await c.until(/^a OK/);
            if (ok) {
              const accepted = backend.accept();
              const t = await c.startTls({ servername: name });
              expect((await accepted).info.serverName).toBe(name);
              t.socket.destroy();
            } else {
              await expect(c.startTls({ servername: name })).rejects.toThrow(/unrecognized name/i);
            }
          }
        },
        {
          backend: { onServerName: (n) => n !== 'refused.example.test' },
          listener: { checkServerName: true },
        },
      ),
    30_000,
  );

  it(
    'early hand-off through the daemon: a late handshake failure reaches the proxy’s log with its reason',
    () =>
      withDaemon(async ({ port, backend, logger }) => {
        // The backend takes what comes (with the native engine the refusing client's connection
        // may come) and reads it to its end.
        const got: string[] = [];
        let accepted = 0;
        void (async () => {
          for (;;) {
            const a = await backend.accept().catch(() => undefined);
            if (!a) return;
            accepted++;
            a.socket.on('data', (d) => got.push(String(d)));
            a.socket.on('error', () => {});
          }
        })();
        // The client's answer to the server's flight is held until the backend has the
        // connection (native engine): on a loaded machine it could otherwise come first.
        const gate = await tlsGate(port);
        const c = new LineClient(gate.port);
        await c.until(/^\* OK/);
        c.write('a STARTTLS\r\n');
        await c.until(/^a OK/);
        // A client that does not trust our certificate: it gives up at its last handshake step
        // (node:tls closes without a Finished; the engine reads an EOF, the reason it reports).
        await expect(
          c.startTls({ servername: 'imap.example.test', ca: cert('rogue.pem') }),
        ).rejects.toThrow();
        c.socket.destroy();
        await until(() => gate.answered(), 2000, 'the client’s answer');
        if (engineName === 'native') await until(() => accepted > 0, 2000, 'the early hand-off');
        gate.release();
        for (let i = 0; i < 40 && !logger.lines.some((x) => /TLS handshake failed/.test(x)); i++)
          await sleep(50);
        expect(logger.lines.some((x) => /TLS handshake failed/.test(x))).toBe(true);
        if (engineName === 'native')
          expect(
            logger.lines.some(
              (x) =>
                x.includes('TLS handshake failed after the hand-off') && x.includes('SSL routines'),
            ),
          ).toBe(true);
        expect(got).toEqual([]);
        gate.close();
      }),
    30_000,
  );

  it(
    'maxHandshakes 1 through the daemon: clients one after another are all let in',
    () =>
      // A session handed out early keeps its place until the daemon says its handshake is
      // complete: short of places, the proxy asks for that at once (promptCompletion), and the
      // daemon's engine must hear it too.
      withDaemon(
        async ({ port, backend }) => {
          const answers: string[] = [];
          for (let i = 0; i < 12; i++) {
            const { answer, client } = await askStartTls(port);
            answers.push(answer);
            if (!client) continue;
            const accepted = backend.accept();
            const t = await client.startTls({ servername: 'imap.example.test' });
            const { socket } = await accepted;
            socket.write('* hello\r\n');
            await t.until(/hello/);
            t.socket.destroy();
            socket.destroy();
          }
          expect(answers.filter((a) => a !== 'a OK')).toEqual([]);
        },
        { listener: { maxHandshakes: 1 } },
      ),
    30_000,
  );
});
