// Interop with a real client: openssl s_client -starttls imap, verifying the server against the
// test CA, with SNI, and once with a client certificate.

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { HandoffInfo } from '@tlsproxy/backend';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TlsProxy } from '../src/index.js';
import { type Events, startBackend, startProxy } from './helpers.js';

const certs = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
let backend: Awaited<ReturnType<typeof startBackend>>;
let proxy: TlsProxy;
let port: number;

beforeAll(async () => {
  backend = await startBackend();
  ({ proxy, port } = await startProxy(`unix:${backend.path}`, {}, { clientCert: 'optional' }));
});
afterAll(async () => {
  await proxy?.close();
  backend?.child.kill();
});

/** Run s_client with a script on stdin; it always ends (timeout, and stdin closes). */
function sClient(args: string[], input: string): Promise<{ out: string; code: number | null }> {
  return new Promise((resolve) => {
    const p = spawn(
      'timeout',
      [
        '20',
        'openssl',
        's_client',
        '-starttls',
        'imap',
        '-connect',
        `127.0.0.1:${port}`,
        '-crlf',
        ...args,
      ],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.stderr.on('data', (d) => {
      out += d;
    });
    // s_client needs the handshake done before it reads stdin lines; feed slowly, then close.
    const lines = input.split('\n').filter(Boolean);
    let i = 0;
    const feed = setInterval(() => {
      if (i < lines.length) p.stdin.write(`${lines[i++]}\n`);
      else {
        clearInterval(feed);
        setTimeout(() => p.stdin.end(), 300);
      }
    }, 150);
    p.on('close', (code) => {
      clearInterval(feed);
      resolve({ out, code });
    });
  });
}

const nextConnection = (events: Events) => events.next((e) => e.event === 'connection');

describe('openssl s_client -starttls imap', () => {
  it('verifies the certificate, logs in, and the backend sees SNI and TLS version', async () => {
    const { out } = await sClient(
      [
        '-servername',
        'imap.example.test',
        '-verify_return_error',
        '-CAfile',
        join(certs, 'ca.pem'),
      ],
      'a LOGIN alice secret\nb SELECT INBOX\nc LOGOUT\n',
    );
    expect(out).toMatch(/Verify return code: 0 \(ok\)/);
    expect(out).toMatch(/a OK .*Logged in/);
    expect(out).toMatch(/b OK \[READ-WRITE\]/);
    expect(out).toMatch(/c OK LOGOUT/);
    const info = (await nextConnection(backend.events)).info as unknown as HandoffInfo;
    expect(info.serverName).toBe('imap.example.test');
    expect(info.tls!.version).toBe('TLSv1.3');
    expect(info.clientIdentity).toBeNull();
  }, 30_000);

  it('passes the verified client certificate identity to the backend', async () => {
    const { out } = await sClient(
      [
        '-servername',
        'localhost',
        '-CAfile',
        join(certs, 'ca.pem'),
        '-cert',
        join(certs, 'client.pem'),
        '-key',
        join(certs, 'client.key'),
      ],
      'a LOGIN alice secret\nb LOGOUT\n',
    );
    expect(out).toMatch(/client=O=tlsproxy test, CN=alice/);
    expect(out).toMatch(/a OK .*Logged in/);
    const info = (await nextConnection(backend.events)).info as unknown as HandoffInfo;
    expect(info.clientIdentity!.subject).toBe('O=tlsproxy test, CN=alice');
    expect(info.clientIdentity!.san.email).toEqual(['alice@example.test']);
  }, 30_000);

  it('works with TLS 1.2 too', async () => {
    const { out } = await sClient(
      ['-tls1_2', '-servername', 'localhost', '-CAfile', join(certs, 'ca.pem')],
      'a LOGOUT\n',
    );
    expect(out).toMatch(/a OK LOGOUT/);
    const info = (await nextConnection(backend.events)).info as unknown as HandoffInfo;
    expect(info.tls!.version).toBe('TLSv1.2');
  }, 30_000);
});
