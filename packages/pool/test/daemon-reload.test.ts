// tlspool re-reads its certificate files on SIGHUP: new handshakes get the new certificate,
// sessions already relayed go on, and a broken file leaves the running certificate in place.
import { type ChildProcess, spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteTlsEngine, type TlsEngine } from '../src/index.js';
import { client, nextData, serve, until } from './helpers.js';

const bin = fileURLToPath(new URL('../bin/tlspool.js', import.meta.url));
const certDir = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tlspool-reload-'));
const sock = join(dir, 'pool.sock');
const use = (name: string) => {
  copyFileSync(join(certDir, `${name}.pem`), join(dir, 'cert.pem'));
  copyFileSync(join(certDir, `${name}.key`), join(dir, 'key.pem'));
};

let daemon: ChildProcess;
let log = '';
let engine: RemoteTlsEngine;

beforeAll(async () => {
  use('server');
  daemon = spawn(
    process.execPath,
    [bin, '--socket', sock, '--cert', join(dir, 'cert.pem'), '--key', join(dir, 'key.pem')],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  daemon.stderr!.setEncoding('utf8');
  daemon.stderr!.on('data', (d: string) => {
    log += d;
  });
  await until(() => log.includes('tlspool listening'), 5000, 'tlspool to listen');
  engine = new RemoteTlsEngine({ socket: sock });
});
afterAll(async () => {
  await engine?.close();
  daemon?.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
});

const subject = (c: ReturnType<typeof client>) => c.socket.getPeerX509Certificate()?.subject ?? '';

describe('tlspool SIGHUP', () => {
  it('serves the renewed certificate to new handshakes; established sessions go on', async () => {
    const served = await serve(engine as unknown as TlsEngine);
    try {
      const before = client(served.port, { servername: 'localhost' });
      await before.secure;
      const first = await served.next();
      const backendSide = first.plaintext.toSocket();
      expect(subject(before)).not.toContain('other.example.test');

      use('other');
      const mark = log.length;
      daemon.kill('SIGHUP');
      await until(() => log.slice(mark).includes('certificates reloaded'), 5000, 'the reload');

      const after = client(served.port, { servername: 'other.example.test' });
      await after.secure;
      expect(subject(after)).toContain('CN=other.example.test');
      (await served.next()).plaintext.close();
      after.socket.destroy();

      // The session from before the reload still relays both ways.
      before.socket.write('ping\r\n');
      expect(await nextData(backendSide)).toBe('ping\r\n');
      backendSide.write('pong\r\n');
      expect(await nextData(before.socket)).toBe('pong\r\n');
      before.socket.destroy();
      backendSide.destroy();
    } finally {
      await served.close();
    }
  });

  it('keeps the running certificate when the new files are broken', async () => {
    writeFileSync(join(dir, 'key.pem'), 'not a key\n');
    const mark = log.length;
    daemon.kill('SIGHUP');
    await until(() => log.slice(mark).includes('reload refused'), 5000, 'the refusal');
    expect(daemon.exitCode).toBeNull();
    const served = await serve(engine as unknown as TlsEngine);
    try {
      const c = client(served.port, { servername: 'other.example.test' });
      await c.secure;
      expect(subject(c)).toContain('CN=other.example.test');
      (await served.next()).plaintext.close();
      c.socket.destroy();
    } finally {
      await served.close();
    }
  });
});
