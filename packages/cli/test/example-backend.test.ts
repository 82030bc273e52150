// Issue 14: the example IMAP backend (examples/imap-backend/server.mjs, which the container and
// Kubernetes examples in contrib/ run) printed each connection's hand-off info whole, control key
// included — a secret that lets its holder send control requests for the connection. It says
// that a key is there, never the key.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { silentLogger, TlsProxy } from '@tlsproxy/core';
import { afterAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../../fixtures/engine.mjs';

const server = fileURLToPath(new URL('../../../examples/imap-backend/server.mjs', import.meta.url));
const certs = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-example-backend-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Connect, STARTTLS, handshake, send `command` over TLS, and read up to its tagged reply. */
async function session(port: number, command: string): Promise<string> {
  const raw = net.connect(port, '127.0.0.1');
  raw.setEncoding('latin1');
  let buf = '';
  const until = async (re: RegExp) => {
    for (let i = 0; i < 400 && !re.test(buf); i++) await new Promise((r) => setTimeout(r, 25));
    if (!re.test(buf)) throw new Error(`no ${re} in ${JSON.stringify(buf)}`);
  };
  raw.on('data', (d: string) => (buf += d));
  await until(/^\* OK.*\r\n/);
  raw.write('a STARTTLS\r\n');
  await until(/^a OK.*\r\n/m);
  raw.removeAllListeners('data');
  const t = tls.connect({
    socket: raw,
    servername: 'localhost',
    ca: readFileSync(`${certs}ca.pem`),
  });
  await new Promise((r, j) => t.once('secureConnect', r).once('error', j));
  let got = '';
  t.setEncoding('latin1');
  t.on('data', (d: string) => (got += d));
  t.write(`b ${command}\r\n`);
  for (let i = 0; i < 400 && !/^b (OK|NO|BAD)/m.test(got); i++)
    await new Promise((r) => setTimeout(r, 25));
  t.destroy();
  return got;
}

function startBackend(path: string, extra: string[]) {
  const child: ChildProcess = spawn(process.execPath, [server, '--path', path, ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  return {
    child,
    get out() {
      return out;
    },
    async waitFor(re: RegExp) {
      for (let i = 0; i < 400 && !re.test(out); i++) await new Promise((r) => setTimeout(r, 25));
      if (!re.test(out)) throw new Error(`no ${re} in:\n${out}`);
    },
  };
}

describe('examples/imap-backend never prints a control key', () => {
  it.each([[[]], [['--json']]])(
    'with flags %j: says a key is present, never its value',
    async (extra) => {
      const path = join(dir, `imapd-${extra.length}.sock`);
      const backend = startBackend(path, extra);
      const proxy = new TlsProxy({
        logger: silentLogger,
        createEngine, // TLSPROXY_TEST_ENGINE (fixtures/engine.mjs)
        pool: {
          identities: [
            { cert: readFileSync(`${certs}server.pem`), key: readFileSync(`${certs}server.key`) },
          ],
        },
      });
      try {
        await backend.waitFor(/listening/);
        const l = await proxy.listen({
          dialect: 'imap',
          listen: '127.0.0.1:0',
          backend: `unix:${path}`,
        });
        const port = (l.server.address() as net.AddressInfo).port;
        // XTLSINFO makes the backend use its key (a control request): the key is real and works.
        const reply = await session(port, 'XTLSINFO');
        expect(reply).toMatch(/^b OK XTLSINFO/m);
        await backend.waitFor(/connection/);
        // 16 random bytes in hex: nowhere in what the backend printed
        expect(backend.out).not.toMatch(/[0-9a-f]{32}/i);
        expect(backend.out).toMatch(/"controlKey": ?"\(present, not shown\)"/);
      } finally {
        await proxy.close();
        backend.child.kill('SIGTERM');
      }
    },
    30_000,
  );
});
