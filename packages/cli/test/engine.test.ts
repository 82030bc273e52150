// `tlsproxy --engine native` (and `engine: native` in a config): the native TLS engine serves a
// real STARTTLS session end to end — openssl s_client → the proxy → the example backend.
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseCli } from '../src/index.js';

const bin = fileURLToPath(new URL('../bin/tlsproxy.js', import.meta.url));
const certs = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
const backendJs = fileURLToPath(
  new URL('../../../examples/imap-backend/server.mjs', import.meta.url),
);

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

const until = async (pred: () => boolean, ms: number) => {
  for (const end = Date.now() + ms; Date.now() < end && !pred(); )
    await new Promise((r) => setTimeout(r, 50));
  return pred();
};

describe('--engine', () => {
  it('parses node|native and refuses anything else', () => {
    const base = ['--dialect', 'imap', '--backend', 'unix:/x', '--cert', 'c', '--key', 'k'];
    // Not given: the default (native; issue 15, native-default.test.ts).
    expect((parseCli(base) as { engine?: string }).engine).toBeUndefined();
    expect((parseCli([...base, '--engine', 'node']) as { engine: string }).engine).toBe('node');
    expect((parseCli([...base, '--engine', 'native']) as { engine: string }).engine).toBe('native');
    expect(() => parseCli([...base, '--engine', 'rust'])).toThrow(/node or native/);
    expect(() => parseCli([...base, '--engine', 'node', '--engine-threads', '2'])).toThrow(
      /--engine node/,
    );
  });

  it('native: a real STARTTLS session through the native engine', async () => {
    const sock = join(tmpdir(), `cli-engine-${process.pid}.sock`);
    const backend = spawn(process.execPath, [backendJs, '--path', sock, '--quiet'], {
      stdio: 'ignore',
    });
    const port = await freePort();
    const proxy = spawn(process.execPath, [
      bin,
      ...['--dialect', 'imap', '--listen', `127.0.0.1:${port}`, '--backend', `unix:${sock}`],
      ...['--cert', `${certs}server.pem`, '--key', `${certs}server.key`, '--workers', '1'],
      ...['--engine', 'native', '--engine-threads', '1', '--hostname', 'test.example'],
    ]);
    let err = '';
    proxy.stderr.on('data', (d) => {
      err += d;
    });
    try {
      expect(await until(() => /listening/.test(err), 10_000), err).toBe(true);
      const r = spawnSync(
        'bash',
        [
          '-c',
          `(sleep 1.5; printf 'a LOGIN alice secret\\r\\nb LOGOUT\\r\\n'; sleep 1) | openssl s_client -starttls imap -connect 127.0.0.1:${port} -servername localhost -CAfile ${certs}ca.pem -verify_return_error -crlf -quiet`,
        ],
        { encoding: 'utf8', timeout: 20_000 },
      );
      expect(r.stdout + r.stderr, err).toMatch(/^a OK/m);
      expect(r.stdout, err).toMatch(/TLSv1\.3/);
    } finally {
      proxy.kill();
      backend.kill();
    }
  }, 40_000);
});
