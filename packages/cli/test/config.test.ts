import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { listen } from '@tlsproxy/backend';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../src/config.js';

const bin = fileURLToPath(new URL('../bin/tlsproxy.js', import.meta.url));
const certs = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));

function problems(text: string): string[] {
  try {
    parseConfig(text, 'tlsproxy.yaml');
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe('config file', () => {
  it('accepts a complete config', () => {
    expect(
      problems(`
identities:
  - { cert: server.pem, key: server.key }
tls: { clientCert: optional, ca: ca.pem }
backends:
  imapd: { handoff: unix:/run/imapd/tlsproxy.sock }
  legacy: { connect: tcp:127.0.0.1:10143, proxyProtocol: v2 }
listeners:
  - dialect: imap
    listen: 0.0.0.0:143
    backend: imapd
    options: { greeting: hello }
    limits: { maxBadCommands: 3 }
  - { dialect: tls, listen: systemd:imaps, backend: legacy }
logging: { level: info, format: json }
metrics: { listen: 127.0.0.1:9464 }
`),
    ).toEqual([]);
  });

  it('tls.earlyHandoff: a server-role listener key, passed to the engine as written', () => {
    const c = parseConfig(
      `identities:
  - { cert: ${certs}server.pem, key: ${certs}server.key }
listeners:
  - { dialect: imap, listen: 127.0.0.1:143, backend: unix:/x, tls: { earlyHandoff: false } }
`,
      'tlsproxy.yaml',
    );
    expect(c.listeners[0]?.tls).toEqual({ earlyHandoff: false });
    expect(
      problems(`listeners:
  - { dialect: imap, listen: 127.0.0.1:143, backend: unix:/x, tls: { earlyHandoff: maybe } }
`).some((l) => l.includes('tls.earlyHandoff')),
    ).toBe(true);
  });

  it('names file, line and key for every problem', () => {
    const p = problems(`listeners:
  - dialect: imap
    listen: 127.0.0.1:143
    backend: unix:/x
    handof: crypt
  - dialect: imap
    listen: nowhere
    backend: unix:/y
tls:
  clientCert: sometimes
`);
    expect(p).toContain('tlsproxy.yaml:5:5: listeners.0: unknown key "handof"');
    expect(p.some((l) => l.startsWith('tlsproxy.yaml:7:13: listeners.1.listen:'))).toBe(true);
    expect(p).toContain(
      'tlsproxy.yaml:10:15: tls.clientCert: must be one of "none", "optional", "required"',
    );
  });

  it('reports YAML syntax errors with their line', () => {
    const p = problems('listeners:\n  - dialect: imap\n   listen: [oops\n');
    expect(p[0]).toMatch(/^tlsproxy\.yaml:\d+:\d+: /);
  });
});

/** A running `tlsproxy --config` in its own process, with its log lines. */
function runProxy(file: string) {
  const child = spawn(process.execPath, [bin, '--config', file], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr!.on('data', (d) => {
    log += d;
  });
  const waitFor = async (re: RegExp, from = 0) => {
    for (let i = 0; i < 200; i++) {
      if (re.test(log.slice(from))) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`no ${re} in log:\n${log}`);
  };
  return {
    child,
    waitFor,
    get log() {
      return log;
    },
  };
}

function freePort(): Promise<number> {
  return new Promise((r) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => r(p));
    });
  });
}

class Client {
  socket: net.Socket;
  buf = '';
  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.setEncoding('latin1');
    this.socket.on('data', (d: string) => {
      this.buf += d;
    });
    this.socket.on('error', () => {});
  }
  async until(re: RegExp): Promise<string> {
    for (let i = 0; i < 200 && !re.test(this.buf); i++) await new Promise((r) => setTimeout(r, 25));
    if (!re.test(this.buf)) throw new Error(`no ${re} in ${JSON.stringify(this.buf)}`);
    const out = this.buf;
    this.buf = '';
    return out;
  }
  startTls(servername = 'localhost'): Promise<tls.TLSSocket> {
    this.socket.removeAllListeners('data');
    return new Promise((resolve, reject) => {
      const t = tls.connect({ socket: this.socket, servername, rejectUnauthorized: false }, () =>
        resolve(t),
      );
      t.once('error', reject);
    });
  }
}

describe('reload and shutdown', () => {
  it('SIGHUP reloads config and certificates without dropping connections; a broken config is refused', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-reload-'));
    const file = join(dir, 'tlsproxy.yaml');
    const sock = join(dir, 'backend.sock');
    const port = await freePort();
    const backend = await listen({ path: sock });
    const conf = (greeting: string, cert: string) => `
identities: [{ cert: ${certs}${cert}.pem, key: ${certs}${cert}.key }]
listeners:
  - { dialect: imap, listen: 127.0.0.1:${port}, backend: unix:${sock}, options: { greeting: ${greeting} } }
shutdownTimeoutMs: 3000
logging: { format: text }
`;
    writeFileSync(file, conf('first', 'server'));
    const p = runProxy(file);
    try {
      await p.waitFor(/listening dialect=imap/);
      // one connection in its preamble, one established through TLS
      const inPreamble = new Client(port);
      expect(await inPreamble.until(/\r\n/)).toMatch(/\] first\r\n$/);
      const est = new Client(port);
      await est.until(/\r\n/);
      est.socket.write('a STARTTLS\r\n');
      await est.until(/^a OK/m);
      const accepted = backend.accept();
      const estTls = await est.startTls();
      const estBackend = (await accepted).socket;

      const mark = p.log.length;
      writeFileSync(file, conf('second', 'other'));
      p.child.kill('SIGHUP');
      await p.waitFor(/config reloaded/, mark);

      // the new config applies to new connections…
      const fresh = new Client(port);
      expect(await fresh.until(/\r\n/)).toMatch(/\] second\r\n$/);
      fresh.socket.write('b STARTTLS\r\n');
      await fresh.until(/^b OK/m);
      const acceptedFresh = backend.accept();
      const freshTls = await fresh.startTls('other.example.test');
      expect(freshTls.getPeerX509Certificate()?.subject).toContain('CN=other.example.test');
      (await acceptedFresh).socket.destroy();
      freshTls.destroy();
      // …while the old ones go on
      inPreamble.socket.write('c STARTTLS\r\n');
      await inPreamble.until(/^c OK/m);
      const acceptedOld = backend.accept();
      const oldTls = await inPreamble.startTls();
      (await acceptedOld).socket.destroy();
      oldTls.destroy();
      estBackend.write('still here\r\n');
      const got = await new Promise<string>((r) => estTls.once('data', (d) => r(String(d))));
      expect(got).toBe('still here\r\n');

      // a broken config is refused, the running one stays
      const mark2 = p.log.length;
      writeFileSync(file, 'listeners: [ { dialect: imap } ]\n');
      p.child.kill('SIGHUP');
      await p.waitFor(/config refused/, mark2);
      expect(p.log.slice(mark2)).toMatch(/listen/);
      const after = new Client(port);
      expect(await after.until(/\r\n/)).toMatch(/\] second\r\n$/);
      after.socket.destroy();

      // SIGTERM drains: the established session may finish, then the process exits 0
      const exited = new Promise<number | null>((r) => p.child.once('exit', (c) => r(c)));
      p.child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 200));
      estBackend.write('draining\r\n');
      expect(await new Promise<string>((r) => estTls.once('data', (d) => r(String(d))))).toBe(
        'draining\r\n',
      );
      estBackend.destroy();
      expect(await exited).toBe(0);
    } finally {
      p.child.kill('SIGKILL');
      await backend.close();
    }
  }, 30_000);

  it('check-config says ok, or lists the problems and exits 1', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-check-'));
    const good = join(dir, 'good.yaml');
    writeFileSync(
      good,
      `identities: [{ cert: ${certs}server.pem, key: ${certs}server.key }]\nlisteners: [{ dialect: imap, listen: 143, backend: unix:/x }]\n`,
    );
    const bad = join(dir, 'bad.yaml');
    writeFileSync(
      bad,
      'listeners: [{ dialect: imap, listen: 143, backend: unix:/x, options: { nope: 1 } }]\n',
    );
    const run = (f: string, flag: string[] = []) =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        const c = spawn(process.execPath, [bin, 'check-config', ...flag, f]);
        let out = '';
        c.stdout.on('data', (d) => (out += d));
        c.stderr.on('data', (d) => (out += d));
        c.on('exit', (code) => resolve({ code, out }));
      });
    const ok = await run(good);
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/ok \(1 listener\)/);
    const no = await run(bad);
    expect(no.code).toBe(1);
    expect(no.out).toMatch(/identities: needed/);
    // as the proxy is started: --config FILE
    const flagged = await run(good, ['--config']);
    expect(flagged.code).toBe(0);
    expect(flagged.out).toMatch(/ok \(1 listener\)/);
  });
});
