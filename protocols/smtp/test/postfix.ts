// A throwaway Postfix (Debian: postfix) on loopback for interop tests, configured like
// fixtures/record/postfix.sh but on a free port: it accepts mail for mx.example.test and
// discards it (no delivery, no relaying), and its log is kept for assertions. HELO/EHLO is
// required (smtpd_helo_required), so a MAIL without one gets "503 5.5.1 send HELO/EHLO first". Needs root (the
// master drops to the postfix user). start() throws a readable error when Postfix is missing.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const POSTFIX_APT_PACKAGES = 'postfix';
const MASTER = '/usr/lib/postfix/sbin/master';

export interface Postfix {
  port: number;
  /** The same smtpd behind a PROXY protocol header (smtpd_upstream_proxy_protocol = haproxy). */
  proxyPort: number;
  log(): string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

export async function startPostfix(): Promise<Postfix> {
  if (!existsSync(MASTER)) {
    throw new Error(
      `Postfix is not installed: this interop test needs a real Postfix (apt-get install ${POSTFIX_APT_PACKAGES})`,
    );
  }
  if (process.getuid?.() !== 0) throw new Error('the Postfix interop test needs root');
  const port = await freePort();
  const proxyPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-postfix-'));
  chmodSync(dir, 0o755);
  for (const d of ['etc', 'queue', 'data']) mkdirSync(join(dir, d));
  const uid = Number(execFileSync('id', ['-u', 'postfix'], { encoding: 'utf8' }).trim());
  chownSync(join(dir, 'data'), uid, -1);
  writeFileSync(
    join(dir, 'etc/main.cf'),
    `compatibility_level = 3.6
queue_directory = ${dir}/queue
data_directory = ${dir}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = ${dir}/postfix.log
maillog_file_prefixes = ${dir}
myhostname = mx.example.test
mydomain = example.test
mydestination = mx.example.test
local_recipient_maps =
mynetworks =
relay_domains =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
default_transport = error:no delivery from the test instance
local_transport = discard:test instance
smtpd_relay_restrictions = permit_auth_destination, reject
smtpd_tls_security_level = none
smtpd_sasl_auth_enable = no
smtpd_error_sleep_time = 0s
smtpd_helo_required = yes
biff = no
`,
  );
  writeFileSync(
    join(dir, 'etc/master.cf'),
    `127.0.0.1:${port} inet n - n - - smtpd
127.0.0.1:${proxyPort} inet n - n - - smtpd -o smtpd_upstream_proxy_protocol=haproxy
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
proxymap  unix - - n - - proxymap
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
postlog   unix-dgram n - n - 1 postlogd
`,
  );
  execFileSync('postfix', ['-c', join(dir, 'etc'), 'check'], { stdio: 'pipe' });
  const master: ChildProcess = spawn(MASTER, ['-d', '-c', join(dir, 'etc')], { stdio: 'ignore' });
  const log = () => {
    try {
      return readFileSync(join(dir, 'postfix.log'), 'utf8');
    } catch {
      return '';
    }
  };
  const stop = async () => {
    if (master.exitCode === null && master.signalCode === null) {
      const gone = new Promise((r) => master.once('exit', r));
      master.kill('SIGTERM');
      await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))]);
      if (master.exitCode === null) master.kill('SIGKILL');
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const listening = (p: number) =>
    new Promise<boolean>((r) => {
      const s = net.connect(p, '127.0.0.1', () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
  for (let i = 0; i < 100; i++) {
    if ((await listening(port)) && (await listening(proxyPort))) {
      return { port, proxyPort, log, stop };
    }
    if (master.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const why = log();
  await stop();
  throw new Error(`Postfix did not start: ${why.slice(-2000)}`);
}
