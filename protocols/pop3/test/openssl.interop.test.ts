// Interop with a real client: openssl s_client -starttls pop3 through tlsproxy to the POP3
// backend, verifying the server against the test CA, with SNI; once with a pipelined command
// after STLS. s_client always runs under `timeout` with stdin from a pipe that ends.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import type { HandoffInfo } from '@tlsproxy/backend';
import type { TlsProxy } from '@tlsproxy/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Backend, certsDir, startBackend, startProxy } from './e2e-helpers.js';

let backend: Backend;
let proxy: TlsProxy;
let port: number;

beforeAll(async () => {
  backend = await startBackend();
  ({ proxy, port } = await startProxy(`unix:${backend.path}`));
});
afterAll(async () => {
  await proxy?.close();
  backend?.child.kill();
});

/** Run s_client with a script on stdin, fed slowly (it reads stdin only after the handshake). */
function sClient(args: string[], input: string): Promise<{ out: string; code: number | null }> {
  return new Promise((resolve) => {
    const p = spawn(
      'timeout',
      [
        '15',
        'openssl',
        's_client',
        '-starttls',
        'pop3',
        '-connect',
        `127.0.0.1:${port}`,
        '-crlf',
        // Lines starting with R or Q are s_client commands (renegotiate, quit) unless this is
        // given: "RETR 1" would renegotiate and "QUIT" would never reach the server.
        '-nocommands',
        // Wait for the server to close (it does on QUIT), not for stdin to end.
        '-ign_eof',
        ...args,
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
        setTimeout(() => p.stdin.end(), 300);
      }
    }, 150);
    p.on('close', (code) => {
      clearInterval(feed);
      resolve({ out, code });
    });
  });
}

const connections = () => backend.events.filter((e) => e.event === 'connection');

describe('openssl s_client -starttls pop3', () => {
  it('verifies the certificate, logs in, retrieves the message; the backend sees SNI', async () => {
    const before = connections().length;
    const { out } = await sClient(
      [
        '-servername',
        'pop3.example.test',
        '-verify_return_error',
        '-CAfile',
        join(certsDir, 'ca.pem'),
      ],
      'CAPA\nUSER alice\nPASS secret\nSTAT\nRETR 1\nQUIT\n',
    );
    expect(out).toMatch(/Verify return code: 0 \(ok\)/);
    // s_client prints what it receives, CRs included
    expect(out).toMatch(/\+OK Capability list follows\r\n(.*\r\n)*USER\r$/m);
    expect(out).toMatch(/^\+OK Logged in/m);
    expect(out).toMatch(/^\+OK 1 \d+\r$/m);
    expect(out).toMatch(/^Hello over POP3 through tlsproxy\.\r$/m);
    expect(out).toMatch(/^\.\.a line that starts with a dot\r$/m); // dot-stuffed on the wire
    expect(out).toMatch(/\+OK Logging out\.\r$/m);
    await backend.waitFor(() => connections().length > before);
    const info = connections()[before]!.info as unknown as HandoffInfo;
    expect(info.dialect).toBe('pop3');
    expect(info.serverName).toBe('pop3.example.test');
    expect(info.tls!.version).toBe('TLSv1.3');
  }, 30_000);

  it('works with TLS 1.2 too', async () => {
    const before = connections().length;
    const { out } = await sClient(
      ['-tls1_2', '-servername', 'localhost', '-CAfile', join(certsDir, 'ca.pem')],
      'QUIT\n',
    );
    expect(out).toMatch(/\+OK Logging out\.\r$/m);
    await backend.waitFor(() => connections().length > before);
    const info = connections()[before]!.info as unknown as HandoffInfo;
    expect(info.tls!.version).toBe('TLSv1.2');
  }, 30_000);
});
