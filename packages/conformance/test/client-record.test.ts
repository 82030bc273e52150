// `record --role client` (src/client-record.ts): the dialect's own client through the recorder
// to a server on loopback — here a small IMAP server with real TLS from the package's test PKI,
// so the test needs no root-only real server (fixtures/record/client-record.mjs records from
// Dovecot and the others) — and the transcript it writes replays clean.
import { mkdtempSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import type { Dialect } from '@tlsproxy/dialect-kit';
import { afterEach, describe, expect, it } from 'vitest';
import { recordClient } from '../src/client-record.js';
import { replayClient } from '../src/client-replay.js';
import { parseClientTranscript } from '../src/client-transcript.js';

const cert = (name: string) => readFileSync(new URL(`../certs/${name}`, import.meta.url));
const servers: net.Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** A toy IMAP server: greets (with or without STARTTLS), answers STARTTLS with a real TLS
 * handshake, LOGOUT with BYE and a close. */
async function toyImap(starttls: boolean): Promise<number> {
  const server = net.createServer((s) => {
    s.write(
      `* OK [CAPABILITY IMAP4rev1 ${starttls ? 'STARTTLS ' : ''}LOGINDISABLED] toy ready.\r\n`,
    );
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString('latin1');
      if (buf.endsWith('a2 STARTTLS\r\n')) {
        s.off('data', onData);
        s.write('a2 OK Begin TLS negotiation now.\r\n');
        const t = new tls.TLSSocket(s, {
          isServer: true,
          cert: cert('server.pem'),
          key: cert('server.key'),
        });
        t.on('error', () => {});
        t.on('end', () => t.end());
      } else if (buf.endsWith('a3 LOGOUT\r\n')) {
        s.end('* BYE Logging out\r\na3 OK Logout completed.\r\n');
      }
    };
    s.on('data', onData);
    s.on('error', () => {});
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as net.AddressInfo).port;
}

async function imap(): Promise<Dialect<unknown>> {
  return ((await import('@tlsproxy/dialect-imap')) as { dialect: Dialect<unknown> }).dialect;
}

describe('record --role client', () => {
  it('records STARTTLS (the handshake verified) as a client transcript that replays clean', async () => {
    const dialect = await imap();
    const out = join(mkdtempSync(join(tmpdir(), 'conf-client-rec-')), 'starttls.txt');
    const text = await recordClient({
      dialect,
      upstream: { host: '127.0.0.1', port: await toyImap(true) },
      out,
      headers: { server: 'toy', client: 'test', dialect: 'imap' },
      ca: cert('ca.pem'),
    });
    expect(readFileSync(out, 'utf8')).toBe(text);
    const t = parseClientTranscript(text, out);
    expect(t.steps.map((s) => s.type)).toEqual(['server', 'client', 'server', 'tls']);
    expect(text).toContain('L: * OK Server ready.\\r\\n');
    expect(replayClient(dialect as never, t).problems).toEqual([]);
  }, 20_000);

  it('records a server without STARTTLS: LOGOUT, the client closes first', async () => {
    const dialect = await imap();
    const out = join(mkdtempSync(join(tmpdir(), 'conf-client-rec-')), 'no-starttls.txt');
    const text = await recordClient({
      dialect,
      upstream: { host: '127.0.0.1', port: await toyImap(false) },
      out,
      headers: { server: 'toy', client: 'test', dialect: 'imap' },
      ca: cert('ca.pem'),
    });
    const t = parseClientTranscript(text, out);
    expect(t.steps.map((s) => s.type)).toEqual(['server', 'client', 'eof', 'server', 'close']);
    expect(text).toContain('C: a3 LOGOUT\\r\\n');
    expect(replayClient(dialect as never, t).problems).toEqual([]);
  }, 20_000);

  it('a wrong CA fails the recording (the handshake is verified)', async () => {
    const dialect = await imap();
    const out = join(mkdtempSync(join(tmpdir(), 'conf-client-rec-')), 'x.txt');
    await expect(
      recordClient({
        dialect,
        upstream: { host: '127.0.0.1', port: await toyImap(true) },
        out,
        headers: { server: 'toy', client: 'test', dialect: 'imap' },
        ca: cert('server.pem'),
      }),
    ).rejects.toMatchObject({ code: 'TLSPROXY_ERR_CONFORMANCE_RECORD' });
  }, 20_000);
});
