// Interop with two more real clients than openssl s_client (issue 15: both engines meet the same
// clients): curl's IMAP with --ssl-reqd (libcurl on OpenSSL) and gnutls-cli --starttls-proto=imap
// (GnuTLS, another TLS stack entirely), each verifying the server against the test CA by name.
// The engine is the one TLSPROXY_TEST_ENGINE names (helpers.ts).
import { execFileSync, spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { HandoffInfo } from '@tlsproxy/backend';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TlsProxy } from '../src/index.js';
import { type Events, engineName, sleep, startBackend, startProxy } from './helpers.js';

const certs = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
const has = (bin: string) => {
  try {
    execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};
const CURL = has('curl');
const GNUTLS = has('gnutls-cli');
// Skipped (reported as such) where they are missing: apt-get install curl gnutls-bin.

let backend: Awaited<ReturnType<typeof startBackend>>;
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

const nextConnection = (events: Events) => events.next((e) => e.event === 'connection');

/** Run a command to its end (it is wrapped in timeout(1)); stdout and stderr together. */
function run(cmd: string[], input?: string): Promise<{ out: string; code: number | null }> {
  return new Promise((resolve) => {
    const p = spawn('timeout', ['20', ...cmd], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.stderr.on('data', (d) => {
      out += d;
    });
    if (input === undefined) p.stdin.end();
    else {
      // gnutls-cli reads stdin only once its handshake is done: feed lines slowly, then close.
      const lines = input.split('\n').filter(Boolean);
      let i = 0;
      const feed = setInterval(() => {
        if (i < lines.length) p.stdin.write(`${lines[i++]}\r\n`);
        else {
          clearInterval(feed);
          setTimeout(() => p.stdin.end(), 300);
        }
      }, 200);
      p.on('close', () => clearInterval(feed));
    }
    p.on('close', (code) => resolve({ out, code }));
  });
}

describe.skipIf(!CURL)(`curl imap:// --ssl-reqd (${engineName} engine)`, () => {
  // No login: curl 7.88 keeps the pre-TLS LOGINDISABLED and refuses LOGIN after STARTTLS (and the
  // demo backend has no AUTHENTICATE). The backend's own CAPABILITY, without STARTTLS, shows the
  // command went through TLS to it.
  it('STARTTLS, verifies the name, a command reaches the backend; it sees SNI', async () => {
    const { out, code } = await run([
      'curl',
      ...['--silent', '--show-error', '--ssl-reqd', '--cacert', join(certs, 'ca.pem')],
      ...['--resolve', `imap.example.test:${port}:127.0.0.1`, '-X', 'CAPABILITY'],
      `imap://imap.example.test:${port}/`,
    ]);
    expect(out).toMatch(/^\* CAPABILITY IMAP4rev1 LITERAL\+ ID UNSELECT\r?$/m);
    expect(code).toBe(0);
    const info = (await nextConnection(backend.events)).info as unknown as HandoffInfo;
    expect(info.serverName).toBe('imap.example.test');
    expect(info.tls!.version).toMatch(/^TLSv1\.[23]$/);
  }, 30_000);

  it('a CA that did not sign the certificate: curl refuses, nothing it sends reaches the backend', async () => {
    const refuse = (p: number) =>
      run([
        'curl',
        ...['--silent', '--ssl-reqd', '--cacert', join(certs, 'rogue.pem')],
        ...['--resolve', `imap.example.test:${p}:127.0.0.1`, '-X', 'CAPABILITY'],
        `imap://imap.example.test:${p}/`,
      ]);
    const count = (what: string) => backend.events.all.filter((e) => e.event === what).length;
    // The default (early hand-off, native engine): the backend may have taken the connection
    // before curl refused our certificate; it ends with nothing on it.
    let before = count('connection');
    const commands = count('command');
    expect((await refuse(port)).code).not.toBe(0);
    await sleep(300);
    expect(count('command')).toBe(commands);
    // (Each connection event is handed out once, in order: take this one's, if any.)
    for (let n = count('connection') - before; n > 0; n--) await nextConnection(backend.events);
    // earlyHandoff: false — hand-off at the end of the handshake only: nothing at all.
    const strict = await startProxy(`unix:${backend.path}`, { tls: { earlyHandoff: false } });
    try {
      before = count('connection');
      expect((await refuse(strict.port)).code).not.toBe(0);
      await sleep(300);
      expect(count('connection')).toBe(before);
    } finally {
      await strict.proxy.close();
    }
  }, 30_000);
});

describe.skipIf(!GNUTLS)(`gnutls-cli --starttls-proto=imap (${engineName} engine)`, () => {
  for (const [what, priority, version] of [
    ['TLS 1.3', 'NORMAL', 'TLSv1.3'],
    ['TLS 1.2', 'NORMAL:-VERS-ALL:+VERS-TLS1.2', 'TLSv1.2'],
  ] as const) {
    it(`${what}: verifies the name, logs in; the backend sees SNI and the version`, async () => {
      const { out } = await run(
        [
          'gnutls-cli',
          ...['--starttls-proto=imap', '--x509cafile', join(certs, 'ca.pem')],
          ...[`--priority=${priority}`, '-p', String(port), '127.0.0.1'],
          // The address to connect to, the name to send and verify (no /etc/hosts entry needed).
          ...['--sni-hostname', 'imap.example.test', '--verify-hostname', 'imap.example.test'],
        ],
        'a LOGIN alice secret\nb LOGOUT\n',
      );
      expect(out).toMatch(/a OK .*Logged in/);
      expect(out).toMatch(/b OK LOGOUT/);
      const info = (await nextConnection(backend.events)).info as unknown as HandoffInfo;
      expect(info.serverName).toBe('imap.example.test');
      expect(info.tls!.version).toBe(version);
    }, 30_000);
  }
});
