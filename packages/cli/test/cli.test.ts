import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseCli } from '../src/index.js';

const bin = fileURLToPath(new URL('../bin/tlsproxy.js', import.meta.url));
const certs = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
const base = [
  '--dialect',
  'imap',
  '--backend',
  'unix:/tmp/x.sock',
  '--cert',
  `${certs}server.pem`,
  '--key',
  `${certs}server.key`,
];

describe('tlsproxy flags', () => {
  it('parses the single-listener flags of the contract', () => {
    const a = parseCli([
      ...base,
      '--listen',
      '127.0.0.1:1143',
      '--ca',
      'ca.pem',
      '--client-cert',
      'required',
      '--handoff',
      'crypt',
      '--option',
      'greeting="hi %h"',
      '--option',
      'maxBadCommands=3',
    ]);
    expect(a).toMatchObject({
      dialect: 'imap',
      listen: '127.0.0.1:1143',
      backend: 'unix:/tmp/x.sock',
      clientCert: 'required',
      handoff: 'crypt',
      options: { greeting: 'hi %h', maxBadCommands: 3 },
    });
  });

  it('refuses bad combinations with a message', () => {
    expect(() => parseCli(['--dialect', 'imap'])).toThrow(/missing --backend, --cert, --key/);
    expect(() => parseCli([...base, '--client-cert', 'required'])).toThrow(/needs --ca/);
    expect(() => parseCli([...base, '--handoff', 'sideways'])).toThrow(/plain or crypt/);
    expect(() => parseCli([...base, '--bogus'])).toThrow(/bogus/);
  });

  it('exits 2 with usage on bad flags, 0 on --help', () => {
    const bad = spawnSync(process.execPath, [bin, '--dialect', 'imap'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/Usage: tlsproxy/);
    const help = spawnSync(process.execPath, [bin, '--help'], { encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/--client-cert/);
  });

  it('says what it tried for a dialect that is not there, and suggests no package that does not exist', () => {
    const r = spawnSync(
      process.execPath,
      [bin, ...base.slice(2), '--dialect', 'gopher', '--listen', '127.0.0.1:0'],
      {
        encoding: 'utf8',
      },
    );
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(
      /package gopher \(not installed\); package @tlsproxy\/dialect-gopher \(not installed\)/,
    );
    expect(r.stderr).not.toMatch(/npm install/);
  });

  it('runs, greets an IMAP client, and stops cleanly on SIGINT', async () => {
    const port = await new Promise<number>((r) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => r(p));
      });
    });
    const child = spawn(
      process.execPath,
      [bin, ...base, '--listen', `127.0.0.1:${port}`, '--hostname', 'mail.example.test'],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let err = '';
    child.stderr.on('data', (d) => {
      err += d;
    });
    for (let i = 0; i < 100 && !err.includes('listening'); i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(err).toMatch(/listening dialect=imap address=127\.0\.0\.1:/);
    const c = net.connect(port, '127.0.0.1');
    const greeting = await new Promise<string>((r) => c.once('data', (d) => r(String(d))));
    expect(greeting).toMatch(/^\* OK \[CAPABILITY [^\]]*STARTTLS/);
    c.destroy();
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill('SIGINT');
    expect(await exited).toBe(0);
  });
});

describe('systemd socket activation', () => {
  it('listens on a TCP socket passed as LISTEN_FDS with --listen systemd:NAME', async () => {
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as net.AddressInfo).port;
    const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
    const child = spawn(
      'bash',
      [
        '-c',
        'LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=imap exec "$@"',
        'sh',
        process.execPath,
        bin,
        ...base,
        '--listen',
        'systemd:imap',
      ],
      { stdio: ['ignore', 'ignore', 'pipe', fd] },
    );
    server.close(); // the child holds its own copy now
    let err = '';
    child.stderr!.on('data', (d) => {
      err += d;
    });
    for (let i = 0; i < 100 && !err.includes('listening'); i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(err).toMatch(/listening dialect=imap/);
    const c = net.connect(port, '127.0.0.1');
    const greeting = await new Promise<string>((r) => c.once('data', (d) => r(String(d))));
    expect(greeting).toMatch(/^\* OK/);
    c.destroy();
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  });
});
