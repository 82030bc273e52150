// connectStartTls against a real Dovecot on loopback (issue 18): the IMAP (and POP3) client
// dialect does the preamble, the engine (embedded, or a tlspool daemon) the verified handshake,
// and inside TLS Dovecot's CAPABILITY (CAPA) no longer lists STARTTLS (STLS) and LOGIN (USER/PASS)
// works: the session is encrypted. A wrong name or CA fails closed; a Dovecot without TLS fails
// closed. The Dovecot is fixtures/servers'. Skipped when Dovecot is missing
// (POP3: when it has no pop3-login), except under CI (CI=1).
import { mkdtempSync, rmSync } from 'node:fs';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type DaemonEngine, PoolDaemon, type PoolError, RemoteTlsEngine } from '@tlsproxy/pool';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as servers from '../../../fixtures/servers/index.mjs';
import { DOVECOT_POP3, type RealServer, SERVERS } from '../../../fixtures/servers/index.mjs';
import { type ClientError, connectStartTls } from '../src/index.js';
import { newEngine, viaEngine } from './engine.js';
import { certs } from './toy.js';

const bin = SERVERS.dovecot.bin;
if (!bin && process.env.CI) throw new Error('Dovecot is missing: apt-get install dovecot-imapd');
// dovecot-core alone has no POP3 (Debian: dovecot-pop3d brings pop3-login).
const hasPop3 = DOVECOT_POP3;
if (!hasPop3 && process.env.CI)
  throw new Error('Dovecot has no POP3: apt-get install dovecot-pop3d');

type Server = RealServer;

/** A throwaway Dovecot (fixtures/servers): TLS (ssl = required) on or off, one protocol. */
const startDovecot = (ssl: boolean, protocol: 'imap' | 'pop3' = 'imap') =>
  servers.startDovecot({ tls: ssl && 'required', protocols: [protocol] });

/** Send a tagged command and collect the lines up to its tagged reply. */
function command(s: net.Socket, tag: string, cmd: string): Promise<string> {
  return new Promise((resolve) => {
    let buf = '';
    const on = (d: Buffer) => {
      buf += d.toString('latin1');
      if (new RegExp(`(^|\\n)${tag} [A-Z]+[^\\n]*\\n`).test(buf)) {
        s.off('data', on);
        resolve(buf);
      }
    };
    s.on('data', on);
    s.write(`${tag} ${cmd}\r\n`);
  });
}

function firstLine(s: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    let buf = '';
    const on = (d: Buffer) => {
      buf += d.toString('latin1');
      const i = buf.indexOf('\r\n');
      if (i >= 0) {
        s.off('data', on);
        // Anything after the first line stays for the next reader.
        if (i + 2 < buf.length) s.unshift(Buffer.from(buf.slice(i + 2), 'latin1'));
        resolve(buf.slice(0, i + 2));
      }
    };
    s.on('data', on);
  });
}

describe.skipIf(!bin)('connectStartTls against a real Dovecot', () => {
  let withTls: Server;
  let withoutTls: Server;
  const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-client-pool-'));
  let daemon: PoolDaemon;
  let remote: RemoteTlsEngine;
  beforeAll(async () => {
    [withTls, withoutTls] = await Promise.all([startDovecot(true), startDovecot(false)]);
    daemon = new PoolDaemon(newEngine({ identities: [], connectOnly: true }) as DaemonEngine, {
      path: join(dir, 'pool.sock'),
    });
    remote = new RemoteTlsEngine({ socket: join(dir, 'pool.sock') });
  }, 30_000);
  afterAll(async () => {
    await remote?.close();
    await daemon?.close();
    await Promise.all([withTls?.stop(), withoutTls?.stop()]);
    rmSync(dir, { recursive: true, force: true });
  });

  for (const via of ['embedded', 'daemon'] as const) {
    it(`STARTTLS, verified, no STARTTLS inside, LOGIN works (${via} engine)`, async () => {
      const r = await connectStartTls({
        ...viaEngine,
        dialect: 'imap',
        host: '127.0.0.1',
        port: withTls.port,
        serverName: 'imap.example.test',
        ca: certs.ca,
        ...(via === 'daemon' ? { engine: remote } : {}),
      });
      expect(r.info.serverIdentity.san.dns).toContain('imap.example.test');
      expect(r.info.version).toMatch(/^TLSv1\.[23]$/);
      // The greeting without its pre-TLS CAPABILITY code, as the IMAP dialect documents.
      expect(await firstLine(r.socket)).toMatch(/^\* OK (?!\[CAPABILITY)[^\r\n]*ready\.\r\n$/);
      const caps = await command(r.socket, 'b1', 'CAPABILITY');
      expect(caps).toMatch(/^\* CAPABILITY IMAP4rev1 /);
      expect(caps).not.toMatch(/STARTTLS/);
      expect(await command(r.socket, 'b2', 'LOGIN alice secret')).toMatch(/^b2 OK /m);
      expect(await command(r.socket, 'b3', 'LOGOUT')).toMatch(/^\* BYE /);
      r.socket.destroy();
    }, 20_000);
  }

  it('a name the certificate does not carry, or a wrong CA: fails closed', async () => {
    const base = {
      ...viaEngine,
      dialect: 'imap',
      host: '127.0.0.1',
      port: withTls.port,
      ca: certs.ca,
    };
    const name = await connectStartTls({ ...base, serverName: 'imap.example.org' }).then(
      () => null,
      (e: PoolError) => e,
    );
    expect([name?.code, name?.reason]).toEqual(['TLSPROXY_ERR_POOL_VERIFY', 'name-mismatch']);
    const ca = await connectStartTls({
      ...viaEngine,
      ...base,
      serverName: 'imap.example.test',
      ca: certs.rogue.cert,
      engine: remote,
    }).then(
      () => null,
      (e: PoolError) => e,
    );
    expect([ca?.code, ca?.reason]).toEqual(['TLSPROXY_ERR_POOL_VERIFY', 'unknown-ca']);
  }, 20_000);

  it('a Dovecot without TLS: no STARTTLS offered, fails closed', async () => {
    const err = await connectStartTls({
      ...viaEngine,
      dialect: 'imap',
      host: '127.0.0.1',
      port: withoutTls.port,
      serverName: 'imap.example.test',
      ca: certs.ca,
    }).then(
      () => null,
      (e: ClientError) => e,
    );
    expect(err?.code).toBe('TLSPROXY_ERR_CLIENT_REFUSED');
    expect(err?.reason).toMatch(/STARTTLS/);
  }, 20_000);
});

/** Send a POP3 command and collect its answer (one line, or a multi-line one up to "."). */
function pop3Command(s: net.Socket, cmd: string, multi = false): Promise<string> {
  return new Promise((resolve) => {
    let buf = '';
    const on = (d: Buffer) => {
      buf += d.toString('latin1');
      const done = multi ? /^-ERR|\r\n\.\r\n$/.test(buf) : buf.endsWith('\r\n');
      if (done) {
        s.off('data', on);
        resolve(buf);
      }
    };
    s.on('data', on);
    s.write(`${cmd}\r\n`);
  });
}

describe.skipIf(!hasPop3)('connectStartTls against a real Dovecot POP3', () => {
  let withTls: Server;
  let withoutTls: Server;
  beforeAll(async () => {
    [withTls, withoutTls] = await Promise.all([
      startDovecot(true, 'pop3'),
      startDovecot(false, 'pop3'),
    ]);
  }, 30_000);
  afterAll(async () => {
    await Promise.all([withTls?.stop(), withoutTls?.stop()]);
  });

  it('STLS, verified, the greeting first, no STLS in CAPA inside TLS, USER/PASS works', async () => {
    const r = await connectStartTls({
      ...viaEngine,
      dialect: 'pop3',
      host: '127.0.0.1',
      port: withTls.port,
      serverName: 'localhost',
      ca: certs.ca,
    });
    expect(r.info.serverIdentity.san.dns).toContain('localhost');
    expect(await firstLine(r.socket)).toMatch(/^\+OK .*\r\n$/);
    const capa = await pop3Command(r.socket, 'CAPA', true);
    expect(capa).toMatch(/^\+OK/);
    expect(capa).not.toMatch(/\bSTLS\b/);
    expect(await pop3Command(r.socket, 'USER alice')).toMatch(/^\+OK/);
    expect(await pop3Command(r.socket, 'PASS secret')).toMatch(/^\+OK/);
    expect(await pop3Command(r.socket, 'QUIT')).toMatch(/^\+OK/);
    r.socket.destroy();
  }, 20_000);

  it('a Dovecot POP3 without TLS: fails closed', async () => {
    const err = await connectStartTls({
      ...viaEngine,
      dialect: 'pop3',
      host: '127.0.0.1',
      port: withoutTls.port,
      serverName: 'localhost',
      ca: certs.ca,
    }).then(
      () => null,
      (e: ClientError) => e,
    );
    expect(err?.code).toBe('TLSPROXY_ERR_CLIENT_REFUSED');
  }, 20_000);
});
