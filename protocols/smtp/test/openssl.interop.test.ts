// Interop with a real client: openssl s_client -starttls smtp (it reads the 220, sends EHLO,
// looks for STARTTLS in the reply, sends STARTTLS), verifying the server against the test CA,
// then speaking SMTP to the smtp-server backend inside TLS. Always under `timeout`, stdin from a
// pipe that ends.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TlsProxy } from '@tlsproxy/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../../fixtures/engine.mjs';
import { type SmtpBackend, startSmtpBackend } from './smtp-backend.js';

const certs = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
const cert = (f: string) => readFileSync(join(certs, f));
let backend: SmtpBackend;
let proxy: TlsProxy;
let port: number;

beforeAll(async () => {
  backend = await startSmtpBackend(join(tmpdir(), `smtp-interop-${process.pid}.sock`));
  proxy = new TlsProxy({
    logger: { log: () => {} },
    createEngine,
    pool: { identities: [{ cert: cert('server.pem'), key: cert('server.key') }] },
  });
  const l = await proxy.listen({
    dialect: 'smtp', // loaded by name, as the CLI does: needs `npm run build` first
    listen: '127.0.0.1:0',
    backend: `unix:${backend.path}`,
    hostname: 'mx.example.test',
  });
  port = (l.server.address() as net.AddressInfo).port;
});
afterAll(async () => {
  await proxy?.close();
  await backend?.close();
});

/** Run s_client with a script on stdin, fed slowly after the handshake, then closed. */
function sClient(input: string): Promise<{ out: string; code: number | null }> {
  return new Promise((resolve) => {
    const p = spawn(
      'timeout',
      [
        '15',
        'openssl',
        's_client',
        '-starttls',
        'smtp',
        '-name',
        'openssl.client.test',
        '-connect',
        `127.0.0.1:${port}`,
        '-servername',
        'localhost',
        '-verify_return_error',
        '-CAfile',
        join(certs, 'ca.pem'),
        '-crlf',
        '-ign_eof',
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.stderr.on('data', (d) => {
      out += d;
    });
    const lines = input.split('\n').filter(Boolean);
    let i = 0;
    const feed = setInterval(() => {
      if (i < lines.length) p.stdin.write(`${lines[i++]}\n`);
      else {
        clearInterval(feed);
        p.stdin.end();
      }
    }, 200);
    p.on('close', (code) => {
      clearInterval(feed);
      resolve({ out, code });
    });
  });
}

describe('openssl s_client -starttls smtp', () => {
  it('verifies the certificate and sends a message to the backend inside TLS', async () => {
    const { out, code } = await sClient(
      [
        'EHLO openssl.client.test',
        'MAIL FROM:<ossl@example.test>',
        'RCPT TO:<rcpt@example.test>',
        'DATA',
        'Subject: via s_client',
        '',
        'hello',
        '.',
        'QUIT',
      ].join('\n'),
    );
    expect(code).toBe(0);
    expect(out).toMatch(/Verify return code: 0 \(ok\)/);
    expect(out).toMatch(/250-backend\.example/);
    expect(out).toMatch(/221 /);
    const got = await backend.next();
    expect(got.from).toBe('ossl@example.test');
    expect(got.message.toString()).toBe('Subject: via s_client\r\nhello\r\n');
    expect(got.info.dialectState).toEqual({ ehlo: 'openssl.client.test', esmtp: true });
    expect(got.info.tls?.version).toMatch(/^TLSv1\.[23]$/);
  }, 20_000);
});
