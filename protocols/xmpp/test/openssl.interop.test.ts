// Interop with a real client: openssl s_client -starttls xmpp / xmpp-server (it sends a stream
// header with to=-xmpphost, waits for <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls', sends
// <starttls/>, waits for <proceed), verifying the server against the test CA, then opening the
// new stream inside TLS with the backend. The dialect is loaded by name, as the CLI does: needs
// `npm run build` first. Always under `timeout`, stdin from a pipe that ends.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TlsProxy } from '@tlsproxy/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../../fixtures/engine.mjs';
import { startXmppBackend, type XmppBackend } from './xmpp-backend.js';

const certs = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
const cert = (f: string) => readFileSync(join(certs, f));
let backend: XmppBackend;
let proxy: TlsProxy;
let port: number;

beforeAll(async () => {
  backend = await startXmppBackend(join(tmpdir(), `xmpp-interop-${process.pid}.sock`));
  proxy = new TlsProxy({
    logger: { log: () => {} },
    createEngine,
    pool: { identities: [{ cert: cert('server.pem'), key: cert('server.key') }] },
  });
  const l = await proxy.listen({
    dialect: 'xmpp',
    listen: '127.0.0.1:0',
    backend: `unix:${backend.path}`,
  });
  port = (l.server.address() as net.AddressInfo).port;
});
afterAll(async () => {
  await proxy?.close();
  await backend?.close();
});

function sClient(
  mode: 'xmpp' | 'xmpp-server',
  host: string,
  input: string[],
): Promise<{ out: string; code: number | null }> {
  return new Promise((resolve) => {
    const p = spawn(
      'timeout',
      [
        '15',
        'openssl',
        's_client',
        '-starttls',
        mode,
        '-xmpphost',
        host,
        '-connect',
        `127.0.0.1:${port}`,
        '-servername',
        host,
        '-verify_return_error',
        '-CAfile',
        join(certs, 'ca.pem'),
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
    let i = 0;
    const feed = setInterval(() => {
      if (i < input.length) p.stdin.write(`${input[i++]}\n`);
      else {
        clearInterval(feed);
        p.stdin.end();
      }
    }, 300);
    p.on('close', (code) => {
      clearInterval(feed);
      resolve({ out, code });
    });
  });
}

const OPEN =
  "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

describe('openssl s_client through tlsproxy', () => {
  it('-starttls xmpp: verified TLS, then the backend answers the new stream', async () => {
    const before = backend.sessions.length;
    const { out, code } = await sClient('xmpp', 'localhost', [OPEN, '</stream:stream>']);
    expect(out).toMatch(/Verify return code: 0 \(ok\)/);
    expect(out).toContain('<mechanism>PLAIN</mechanism>');
    expect(code).toBe(0);
    const s = backend.sessions[before]!;
    expect(s.info.dialectState).toEqual({
      streamType: 'c2s',
      to: 'localhost',
      from: null,
      lang: null,
    });
    expect(s.info.serverName).toBe('localhost');
  }, 20_000);

  it('-starttls xmpp-server: an s2s stream', async () => {
    const before = backend.sessions.length;
    const { out, code } = await sClient('xmpp-server', 'imap.example.test', [
      OPEN,
      '</stream:stream>',
    ]);
    expect(out).toMatch(/Verify return code: 0 \(ok\)/);
    expect(code).toBe(0);
    const s = backend.sessions[before]!;
    expect(s.info.dialectState).toEqual({
      streamType: 's2s',
      to: 'imap.example.test',
      from: null,
      lang: null,
    });
  }, 20_000);

  it('-starttls xmpp to a domain we do not serve gets no TLS', async () => {
    const { out } = await sClient('xmpp', 'unknown.example', []);
    expect(out).toMatch(/no peer certificate available/);
    expect(out).toMatch(/Cipher is \(NONE\)/);
  }, 20_000);
});
