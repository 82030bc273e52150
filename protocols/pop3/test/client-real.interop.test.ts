// The POP3 client role against a real Dovecot on loopback (issue 18): the state machine runs
// over a TCP socket (the kit's runClientSession), node:tls then does the client handshake on the
// same socket, verifying Dovecot's certificate against the repo's test CA, and inside TLS the
// CAPA answer no longer lists STLS (and USER/PASS work): the session is encrypted. A Dovecot
// without TLS fails closed. Needs dovecot-core + dovecot-pop3d; skipped when Dovecot is missing,
// except under CI (CI=1), where a missing server is a failure. (The Dovecot setup is the IMAP
// client test's, for POP3: fixtures/record/dovecot.sh is the shared recipe.)
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { clientContext, dec, runClientSession } from '@tlsproxy/dialect-kit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dialect } from '../src/index.js';

const certs = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
const ca = readFileSync(join(certs, 'ca.pem'));

function findDovecot(): string | undefined {
  const forced = process.env.TLSPROXY_DOVECOT;
  if (forced !== undefined) return existsSync(forced) ? forced : undefined;
  for (const p of ['/usr/sbin/dovecot', '/usr/local/sbin/dovecot']) if (existsSync(p)) return p;
  try {
    return execFileSync('which', ['dovecot'], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}
const bin = findDovecot();
// dovecot-core alone has no POP3 (Debian: dovecot-pop3d brings pop3-login).
const pop3 = ['/usr/lib/dovecot/pop3-login', '/usr/libexec/dovecot/pop3-login'].some(existsSync);
const usable = bin !== undefined && (pop3 || process.env.TLSPROXY_DOVECOT !== undefined);
if (!usable && process.env.CI) {
  throw new Error('Dovecot is missing: apt-get install dovecot-core dovecot-pop3d');
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

interface Server {
  port: number;
  stop(): Promise<void>;
}

/** A throwaway Dovecot (like fixtures/record/dovecot.sh) with TLS on or off, POP3 only. */
async function startDovecot(ssl: boolean): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-pop3-client-'));
  for (const d of ['run', 'state', 'home']) mkdirSync(join(dir, d));
  // PASS opens the mailbox as nobody (as root) or as us: it must reach the home directories.
  chmodSync(dir, 0o755);
  chmodSync(join(dir, 'home'), 0o1777);
  const root = process.getuid?.() === 0;
  const me = userInfo().username;
  const port = await freePort();
  const dh = '/usr/share/dovecot/dh.pem';
  writeFileSync(
    join(dir, 'dovecot.conf'),
    `base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${dir}/dovecot.log
protocols = pop3
listen = 127.0.0.1
${ssl ? `ssl = required\nssl_cert = <${certs}server.pem\nssl_key = <${certs}server.key\n${existsSync(dh) ? `ssl_dh = <${dh}\n` : ''}` : 'ssl = no\n'}
disable_plaintext_auth = yes
auth_mechanisms = plain login
${root ? '' : `default_internal_user = ${me}\ndefault_login_user = ${me}\n`}
passdb {
  driver = static
  args = password=secret
}
userdb {
  driver = static
  args = uid=${root ? 'nobody' : me} gid=${root ? 'nogroup' : userInfo().gid} home=${dir}/home/%u
}
mail_location = maildir:~/Maildir
service pop3-login {
  ${root ? '' : 'chroot ='}
  inet_listener pop3 {
    address = 127.0.0.1
    port = ${port}
  }
  inet_listener pop3s {
    port = 0
  }
}
${root ? '' : 'service anvil {\n  chroot =\n}\n'}
`,
  );
  const child: ChildProcess = spawn(bin!, ['-F', '-c', join(dir, 'dovecot.conf')], {
    stdio: 'ignore',
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const log = () => {
    try {
      return readFileSync(join(dir, 'dovecot.log'), 'utf8');
    } catch {
      return '';
    }
  };
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  for (let i = 0; ; i++) {
    if (child.exitCode !== null || i > 100) {
      const why = log();
      await stop();
      throw new Error(`Dovecot did not start: ${why}`);
    }
    if (/starting up/.test(log())) {
      const up = await new Promise<boolean>((r) => {
        const s = net.connect(port, '127.0.0.1');
        s.once('connect', () => {
          s.destroy();
          r(true);
        });
        s.once('error', () => r(false));
      });
      if (up) return { port, stop };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Send `line` over `sock` and collect the reply: one line, or up to "." when `multi`. */
function command(sock: tls.TLSSocket, line: string, multi = false): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString('latin1');
      const done = multi ? /(^-ERR[^\n]*\n|\r\n\.\r\n$)/.test(buf) : buf.endsWith('\n');
      if (done) {
        sock.off('data', onData);
        resolve(buf);
      }
    };
    sock.on('data', onData);
    sock.once('error', reject);
    sock.write(`${line}\r\n`);
  });
}

async function connect(port: number): Promise<net.Socket> {
  const sock = net.connect(port, '127.0.0.1');
  await new Promise((r, j) => sock.once('connect', r).once('error', j));
  return sock;
}

function startTls(socket: net.Socket, servername: string): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ socket, ca, servername }, () => resolve(t));
    t.once('error', reject);
  });
}

const open = () => dialect.client!.create(clientContext({}, {}, { serverName: 'localhost' }));

describe.skipIf(!usable)('POP3 client role against a real Dovecot', () => {
  let withTls: Server;
  let withoutTls: Server;
  beforeAll(async () => {
    [withTls, withoutTls] = await Promise.all([startDovecot(true), startDovecot(false)]);
  }, 30_000);
  afterAll(async () => {
    await Promise.all([withTls?.stop(), withoutTls?.stop()]);
  });

  it('CAPA, STLS, a verified handshake, and inside TLS no STLS; USER/PASS work', async () => {
    const sock = await connect(withTls.port);
    const r = await runClientSession(open(), sock);
    expect(r.outcome.type).toBe('starttls');
    if (r.outcome.type !== 'starttls') return;
    expect(dec(r.received)).toMatch(
      /^\+OK .*\r\n\+OK\r\n(?:.*\r\n)*STLS\r\n(?:.*\r\n)*\.\r\n\+OK /,
    );
    expect(dec(r.sent)).toBe('CAPA\r\nSTLS\r\n');
    expect(dec(r.outcome.toLocal)).toBe('+OK Dovecot (Debian) ready.\r\n');
    expect(r.outcome.state.capabilities).toContain('STLS');

    const t = await startTls(sock, 'localhost');
    expect(t.authorized).toBe(true);
    expect(t.getProtocol()).toMatch(/^TLSv1\.[23]$/);
    const capa = await command(t, 'CAPA', true);
    expect(capa).toMatch(/^\+OK\r\n/);
    expect(capa).toMatch(/\r\nUSER\r\n/);
    expect(capa).not.toMatch(/STLS/);
    expect(await command(t, 'USER alice')).toMatch(/^\+OK/);
    expect(await command(t, 'PASS secret')).toMatch(/^\+OK/);
    expect(await command(t, 'QUIT')).toMatch(/^\+OK/);
    t.destroy();
  }, 20_000);

  it('the same server under a name its certificate does not carry: the handshake fails', async () => {
    const sock = await connect(withTls.port);
    const r = await runClientSession(open(), sock);
    expect(r.outcome.type).toBe('starttls');
    await expect(startTls(sock, 'wrong.example.test')).rejects.toThrow(/altnames|Hostname/);
    sock.destroy();
  }, 20_000);

  it('a Dovecot without TLS does not list STLS: close, QUIT, -ERR for the local client', async () => {
    const sock = await connect(withoutTls.port);
    const r = await runClientSession(open(), sock);
    expect(r.outcome.type).toBe('close');
    if (r.outcome.type !== 'close') return;
    expect(r.outcome.reason).toBe('server does not offer STLS');
    expect(dec(r.received)).not.toMatch(/STLS/);
    expect(dec(r.sent)).toBe('CAPA\r\nQUIT\r\n');
    expect(dec(r.outcome.toLocal!)).toBe('-ERR [SYS/PERM] TLS unavailable.\r\n');
    sock.destroy();
  }, 20_000);
});
