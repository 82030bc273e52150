// Client transcripts through the real engine: a `role: client` listener of a TlsProxy on
// loopback between a local client and a scripted server that plays the transcript, with a real
// TLS handshake at !tls (src/client-engine.ts).
import { fileURLToPath } from 'node:url';
import type { Dialect } from '@tlsproxy/dialect-kit';
import { describe, expect, it } from 'vitest';
import { createEngine } from '../../../fixtures/engine.mjs';
import { clientEngineReplay } from '../src/client-engine.js';
import { loadClientSuite } from '../src/client-runner.js';

const repo = fileURLToPath(new URL('../../../', import.meta.url));

describe('client engine replay', () => {
  for (const name of ['imap', 'pop3', 'smtp', 'ldap', 'xmpp', 'http-upgrade']) {
    it(`${name}: every client transcript through a role: client listener`, async () => {
      const { dialect, transcripts } = await loadClientSuite({ dialect: name, cwd: repo });
      const results = await clientEngineReplay(
        dialect as Dialect<unknown>,
        transcripts,
        {},
        createEngine,
      );
      expect(
        results.filter((r) => !r.ok).map((r) => `${r.name}: ${r.problems.join('\n')}`),
      ).toEqual([]);
      expect(results.length).toBe(transcripts.length);
    }, 120_000);
  }
});

describe('client engine replay fails a broken client', () => {
  it('an IMAP client that starts TLS with forged bytes after the go-ahead, passing them on', async () => {
    const { dialect, transcripts } = await loadClientSuite({ dialect: 'imap', cwd: repo });
    const inner = dialect.client!;
    const broken: Dialect<unknown> = {
      ...dialect,
      client: {
        ...inner,
        create(context) {
          const s = inner.create(context);
          let seen = Buffer.alloc(0);
          const change = (acts: ReturnType<typeof s.receive>) =>
            acts.map((a) =>
              a.type === 'close' && /injection/.test(a.reason)
                ? {
                    type: 'starttls' as const,
                    // The bug: what followed the go-ahead goes to the local client.
                    toLocal: new Uint8Array(seen.subarray(seen.indexOf('a2 OK'))),
                    state: {},
                  }
                : a,
            );
          return {
            start: (now) => s.start(now),
            timer: (now) => s.timer(now),
            eof: (now) => s.eof?.(now) ?? [],
            receive: (data, now) => {
              seen = Buffer.concat([seen, data]);
              return change(s.receive(data, now));
            },
          };
        },
      },
    };
    const results = await clientEngineReplay(broken, transcripts, {}, createEngine);
    const injection = results.find((r) => r.name === 'injection')!;
    expect(injection.ok).toBe(false);
    expect(injection.problems.join('\n')).toMatch(/local connection was not closed|differs/);
    expect(results.find((r) => r.name === 'starttls')!.ok).toBe(true);
  }, 120_000);
});
