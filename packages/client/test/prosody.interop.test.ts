// connectStartTls against a real Prosody on loopback (issue 18): the XMPP client dialect (c2s)
// opens the stream, sees <starttls/> offered, gets <proceed/>; the engine runs the verified
// handshake; the application then opens its own stream inside TLS (the XMPP dialect gives it
// nothing first) and Prosody's features no longer list <starttls/> but now offer SASL, which it
// withholds before TLS: the session is encrypted. A Prosody without mod_tls fails closed. The
// Prosody setup is fixtures/record/prosody-xmpp.sh's, on free ports of its own. Skipped when
// prosody is not installed (apt-get install prosody), except under CI (CI=1).
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PoolError } from '@tlsproxy/pool';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ClientError, connectStartTls } from '../src/index.js';
import { certs } from './toy.js';

const certDir = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));

function findProsody(): string | undefined {
  for (const p of ['/usr/bin/prosody', '/usr/local/bin/prosody']) if (existsSync(p)) return p;
  try {
    return execFileSync('which', ['prosody'], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}
const PROSODY = findProsody();
if (!PROSODY && process.env.CI) throw new Error('prosody is missing: apt-get install prosody');

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

async function waitForPort(port: number, child: ChildProcess, what: () => string): Promise<void> {
  for (let i = 0; ; i++) {
    const up = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
    if (up) return;
    if (i > 150 || child.exitCode !== null) throw new Error(`prosody did not start: ${what()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface Prosody {
  c2s: number;
  stop(): Promise<void>;
}

/** `withTls` false: mod_tls disabled and encryption not required, so no STARTTLS is offered. */
async function startProsody(withTls = true): Promise<Prosody> {
  const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-client-prosody-'));
  mkdirSync(join(dir, 'data'));
  const [c2s, s2s] = [await freePort(), await freePort()];
  writeFileSync(
    join(dir, 'prosody.cfg.lua'),
    `run_as_root = true
pidfile = "${dir}/prosody.pid"
data_path = "${dir}/data"
daemonize = false
interfaces = { "127.0.0.1" }
c2s_ports = { ${c2s} }
s2s_ports = { ${s2s} }
c2s_direct_tls_ports = {}
http_ports = {}
https_ports = {}
component_ports = {}
c2s_require_encryption = ${withTls}
s2s_require_encryption = ${withTls}
s2s_secure_auth = false
authentication = "internal_plain"
modules_enabled = { ${withTls ? '"tls", ' : ''}"saslauth", "dialback", "disco", "ping" }
modules_disabled = { "posix"${withTls ? '' : ', "tls"'} }
allow_unencrypted_plain_auth = ${!withTls}
log = { info = "${dir}/prosody.log" }
ssl = { certificate = "${certDir}server.pem", key = "${certDir}server.key" }
VirtualHost "localhost"
`,
  );
  const child = spawn(PROSODY!, ['--config', join(dir, 'prosody.cfg.lua')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async () => {
    if (child.exitCode === null) child.kill('SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  const log = () => {
    const f = join(dir, 'prosody.log');
    return `${err}${existsSync(f) ? readFileSync(f, 'utf8') : ''}`;
  };
  try {
    await waitForPort(c2s, child, log);
  } catch (e) {
    await stop();
    throw e;
  }
  return { c2s, stop };
}

/** Open a stream (as the application does inside TLS) and return the server's features. */
function features(s: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const t = setTimeout(() => reject(new Error(`no features: ${got}`)), 10_000);
    s.on('data', (d: Buffer) => {
      got += d.toString('utf8');
      const m = /<stream:features(?:\/>|[\s\S]*?<\/stream:features>)/.exec(got);
      if (m) {
        clearTimeout(t);
        resolve(m[0]);
      }
    });
    s.write(
      "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
    );
  });
}

describe.skipIf(!PROSODY)('connectStartTls against a real Prosody (XMPP c2s)', () => {
  let prosody: Prosody;
  let plain: Prosody;
  beforeAll(async () => {
    [prosody, plain] = await Promise.all([startProsody(), startProsody(false)]);
  }, 30_000);
  afterAll(async () => {
    await prosody?.stop();
    await plain?.stop();
  }, 30_000);

  it('<starttls/>, <proceed/>, verified; inside TLS no <starttls/> and SASL offered', async () => {
    const r = await connectStartTls({
      dialect: 'xmpp',
      host: '127.0.0.1',
      port: prosody.c2s,
      serverName: 'localhost',
      ca: certs.ca,
      options: { mode: 'c2s' },
    });
    expect(r.info.serverIdentity.san.dns).toContain('localhost');
    const f = await features(r.socket);
    expect(f).not.toMatch(/xmpp-tls/);
    expect(f).toMatch(/urn:ietf:params:xml:ns:xmpp-sasl/);
    r.socket.destroy();
  }, 20_000);

  it('a wrong CA fails closed', async () => {
    const err = await connectStartTls({
      dialect: 'xmpp',
      host: '127.0.0.1',
      port: prosody.c2s,
      serverName: 'localhost',
      ca: certs.rogue.cert,
    }).then(
      () => null,
      (e: PoolError) => e,
    );
    expect([err?.code, err?.reason]).toEqual(['TLSPROXY_ERR_POOL_VERIFY', 'unknown-ca']);
  }, 20_000);

  it('a Prosody without mod_tls: no STARTTLS offered, fails closed', async () => {
    const err = await connectStartTls({
      dialect: 'xmpp',
      host: '127.0.0.1',
      port: plain.c2s,
      serverName: 'localhost',
      ca: certs.ca,
    }).then(
      () => null,
      (e: ClientError) => e,
    );
    expect(err?.code).toBe('TLSPROXY_ERR_CLIENT_REFUSED');
    expect(err?.reason).toMatch(/STARTTLS/);
  }, 20_000);
});
