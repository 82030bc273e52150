// A throwaway Dovecot (Debian: dovecot-core + dovecot-imapd) on loopback for interop tests, with
// its own config directory (like fixtures/record/dovecot.sh): an IMAP listener that expects a
// PROXY header from trusted loopback addresses, plaintext authentication only on secured
// connections, and one static user in a passwd-file. start() throws a readable error when
// Dovecot is not installed; stop() always leaves nothing running.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { chmod, mkdir } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

export const DOVECOT_APT_PACKAGES = 'dovecot-core dovecot-imapd';

export interface Dovecot {
  port: number;
  dir: string;
  user: string;
  password: string;
  log(): string;
  stop(): Promise<void>;
}

/** The dovecot binary: $TLSPROXY_DOVECOT if set (only that), else Debian's path or $PATH. */
export function findDovecot(): string | undefined {
  const forced = process.env.TLSPROXY_DOVECOT;
  if (forced !== undefined) return existsSync(forced) ? forced : undefined;
  for (const p of ['/usr/sbin/dovecot', '/usr/local/sbin/dovecot']) if (existsSync(p)) return p;
  try {
    return execFileSync('which', ['dovecot'], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

export async function startDovecot(): Promise<Dovecot> {
  const bin = findDovecot();
  if (!bin) {
    throw new Error(
      `Dovecot is not installed: this interop test needs a real Dovecot (apt-get install ${DOVECOT_APT_PACKAGES})`,
    );
  }
  const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-dovecot-'));
  // Dovecot's unprivileged processes (mail as nobody) need to reach the home directories.
  await chmod(dir, 0o755);
  for (const d of ['run', 'state', 'home']) await mkdir(join(dir, d), { recursive: true });
  await chmod(join(dir, 'home'), 0o1777);
  const root = process.getuid?.() === 0;
  const me = userInfo().username;
  const user = 'alice';
  const password = 'secret';
  writeFileSync(join(dir, 'passwd'), `${user}:{PLAIN}${password}::::::\n`);
  const port = await freePort();
  const conf = `
base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${dir}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = yes
auth_mechanisms = plain login
haproxy_trusted_networks = 127.0.0.0/8
haproxy_timeout = 3s
${root ? '' : `default_internal_user = ${me}\ndefault_login_user = ${me}\n`}
passdb {
  driver = passwd-file
  args = ${dir}/passwd
}
userdb {
  driver = static
  args = uid=${root ? 'nobody' : me} gid=${root ? 'nogroup' : userInfo().gid} home=${dir}/home/%u
}
mail_location = maildir:~/Maildir
service imap-login {
  ${root ? '' : 'chroot ='}
  inet_listener imap {
    address = 127.0.0.1
    port = ${port}
    haproxy = yes
  }
  inet_listener imaps {
    port = 0
  }
}
${root ? '' : 'service anvil {\n  chroot =\n}\n'}
`;
  writeFileSync(join(dir, 'dovecot.conf'), conf);
  const child: ChildProcess = spawn(bin, ['-F', '-c', join(dir, 'dovecot.conf')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d) => {
    stderr += String(d);
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
  // Ready when the master has bound the port (a connection without a header is just dropped).
  for (let i = 0; ; i++) {
    if (child.exitCode !== null || i > 100) {
      const why = `${stderr}\n${log()}`.trim();
      await stop();
      throw new Error(`Dovecot did not start: ${why}`);
    }
    const up = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        r(true);
      });
      s.once('error', () => r(false));
    });
    if (up && /starting up/.test(log())) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return { port, dir, user, password, log, stop };
}
