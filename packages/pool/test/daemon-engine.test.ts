// Which engine `tlspool` runs (issue 15: the native engine is the default, node:tls the
// reference and fallback): native when @tlsproxy/engine-native is installed beside this package;
// where it is not, node:tls with one warning — unless --engine native was asked, which is refused.
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const pkg = fileURLToPath(new URL('../', import.meta.url));
const certDir = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tlspool-engine-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Run tlspool until it listens (then SIGTERM) or exits; its exit code and stderr. */
function run(bin: string, extra: string[]): Promise<{ code: number | null; log: string }> {
  const sock = join(dir, `p${Math.random().toString(36).slice(2)}.sock`);
  const args = [
    '--socket',
    sock,
    '--cert',
    `${certDir}server.pem`,
    '--key',
    `${certDir}server.key`,
  ];
  const p = spawn(process.execPath, [bin, ...args, ...extra], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  p.stderr.setEncoding('utf8');
  p.stderr.on('data', (d: string) => {
    log += d;
    if (log.includes('tlspool listening')) p.kill('SIGTERM');
  });
  const timer = setTimeout(() => p.kill('SIGKILL'), 10_000);
  return new Promise((resolve) =>
    p.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, log });
    }),
  );
}

const workspaceBin = join(pkg, 'bin/tlspool.js');

/** @tlsproxy/pool alone, as `npm install @tlsproxy/pool` lays it out: no engine-native beside it. */
function alone(): string {
  const nm = join(dir, 'alone/node_modules/@tlsproxy');
  mkdirSync(join(nm, 'pool'), { recursive: true });
  for (const part of ['bin', 'dist', 'package.json'])
    cpSync(join(pkg, part), join(nm, 'pool', part), { recursive: true });
  for (const dep of ['fdpass', 'dialect-kit'])
    symlinkSync(fileURLToPath(new URL(`../../${dep}`, import.meta.url)), join(nm, dep));
  return join(nm, 'pool/bin/tlspool.js');
}

describe('tlspool engine choice', () => {
  it('runs the native engine by default', async () => {
    const r = await run(workspaceBin, []);
    expect(r.log).toMatch(/engine native\)/);
    expect(r.log).not.toMatch(/warn/);
  });

  it('--engine node runs node:tls; --engine-threads does not go with it', async () => {
    expect((await run(workspaceBin, ['--engine', 'node'])).log).toMatch(/engine node\)/);
    const r = await run(workspaceBin, ['--engine', 'node', '--engine-threads', '2']);
    expect(r.code).toBe(2);
    expect(r.log).toMatch(/--engine-threads goes with the native engine/);
  });

  it('without engine-native installed: node:tls and one warning; --engine native refused', async () => {
    const bin = alone();
    const r = await run(bin, []);
    expect(r.log).toMatch(/engine node\)/);
    expect(r.log.match(/ warn /g)).toHaveLength(1);
    expect(r.log).toMatch(/@tlsproxy\/engine-native.*--engine node/);
    const refused = await run(bin, ['--engine', 'native']);
    expect(refused.code).toBe(1);
    expect(refused.log).toMatch(/--engine native needs @tlsproxy\/engine-native installed/);
    expect(refused.log).not.toMatch(/tlspool listening/);
  });
});
