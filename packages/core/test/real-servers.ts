// Throwaway real servers on loopback for the client role's interop tests (issue 18): Dovecot
// (IMAP, POP3), Postfix (SMTP), slapd (LDAP), Prosody (XMPP), cupsd (HTTP Upgrade), each from a
// temporary config on free ports, with STARTTLS from the repo's test PKI (fixtures/certs:
// server.pem for localhost / 127.0.0.1, signed by ca.pem) — the recipes of fixtures/record/*.sh.
// Each start function needs its binary (find* returns undefined when it is missing: the tests
// then skip, saying which package to install) and root (the servers drop privileges).
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  copyFileSync,
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
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));
export const CERTS = join(root, 'fixtures/certs');

export interface RealServer {
  /** The STARTTLS port (Dovecot: IMAP). */
  port: number;
  /** A second port: Dovecot's POP3. */
  port2?: number;
  log(): string;
  stop(): Promise<void>;
}

function which(name: string, paths: string[]): string | undefined {
  for (const p of paths) if (existsSync(p)) return p;
  try {
    return execFileSync('which', [name], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Where each server is, or undefined; with the Debian packages that provide it. */
export const SERVERS = {
  dovecot: {
    bin: which('dovecot', ['/usr/sbin/dovecot', '/usr/local/sbin/dovecot']),
    apt: 'dovecot-core dovecot-imapd dovecot-pop3d',
  },
  postfix: {
    bin: existsSync('/usr/lib/postfix/sbin/master') ? '/usr/lib/postfix/sbin/master' : undefined,
    apt: 'postfix',
  },
  slapd: { bin: which('slapd', ['/usr/sbin/slapd', '/usr/local/libexec/slapd']), apt: 'slapd' },
  prosody: {
    bin: which('prosody', ['/usr/bin/prosody', '/usr/local/bin/prosody']),
    apt: 'prosody',
  },
  cupsd: { bin: which('cupsd', ['/usr/sbin/cupsd', '/usr/local/sbin/cupsd']), apt: 'cups-daemon' },
} as const;

export type ServerName = keyof typeof SERVERS;

/** Why a server's tests cannot run here (missing binary, not root), or undefined. */
export function missing(name: ServerName): string | undefined {
  if (!SERVERS[name].bin) return `${name} is not installed (apt-get install ${SERVERS[name].apt})`;
  if (process.getuid?.() !== 0) return `${name} needs root here (it drops privileges itself)`;
  return undefined;
}

export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

const accepts = (port: number) =>
  new Promise<boolean>((r) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.destroy();
      r(true);
    });
    s.on('error', () => r(false));
  });

/** Run `bin args` until `ports` accept connections; stop() ends it and removes `dir`. */
async function run(
  what: string,
  dir: string,
  bin: string,
  args: string[],
  ports: number[],
  logFile?: string,
  ready: () => boolean = () => true,
): Promise<{ log(): string; stop(): Promise<void> }> {
  const child: ChildProcess = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const log = () => {
    let text = stderr;
    if (logFile && existsSync(logFile)) text += readFileSync(logFile, 'utf8');
    return text;
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
    let up = ready();
    for (const p of ports) up = up && (await accepts(p));
    if (up) return { log, stop };
    if (i > 150 || child.exitCode !== null) {
      const why = log();
      await stop();
      throw new Error(`${what} did not start: ${why.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Dovecot with IMAP and POP3; `ssl: false` offers no STARTTLS at all. */
export async function startDovecot(ssl = true): Promise<RealServer> {
  const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-client-dovecot-'));
  for (const d of ['run', 'state', 'home']) mkdirSync(join(dir, d));
  chmodSync(dir, 0o755);
  chmodSync(join(dir, 'home'), 0o1777);
  const [imap, pop3] = [await freePort(), await freePort()];
  const dh = '/usr/share/dovecot/dh.pem';
  const me = userInfo();
  const asRoot = process.getuid?.() === 0;
  writeFileSync(
    join(dir, 'dovecot.conf'),
    `base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${dir}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
${ssl ? `ssl = yes\nssl_cert = <${CERTS}/server.pem\nssl_key = <${CERTS}/server.key\n${existsSync(dh) ? `ssl_dh = <${dh}\n` : ''}` : 'ssl = no\n'}
disable_plaintext_auth = yes
auth_mechanisms = plain login
${asRoot ? '' : `default_internal_user = ${me.username}\ndefault_login_user = ${me.username}\n`}
passdb {
  driver = static
  args = password=secret
}
userdb {
  driver = static
  args = uid=${asRoot ? 'nobody' : me.username} gid=${asRoot ? 'nogroup' : me.gid} home=${dir}/home/%u
}
mail_location = maildir:~/Maildir
service imap-login {
  ${asRoot ? '' : 'chroot ='}
  inet_listener imap {
    address = 127.0.0.1
    port = ${imap}
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  ${asRoot ? '' : 'chroot ='}
  inet_listener pop3 {
    address = 127.0.0.1
    port = ${pop3}
  }
  inet_listener pop3s {
    port = 0
  }
}
${asRoot ? '' : 'service anvil {\n  chroot =\n}\n'}
`,
  );
  const logFile = join(dir, 'dovecot.log');
  const r = await run(
    'Dovecot',
    dir,
    SERVERS.dovecot.bin!,
    ['-F', '-c', join(dir, 'dovecot.conf')],
    [imap, pop3],
    logFile,
    () => existsSync(logFile) && /starting up/.test(readFileSync(logFile, 'utf8')),
  );
  return { port: imap, port2: pop3, ...r };
}

/** Postfix smtpd; `starttls: false` offers no STARTTLS (smtpd_tls_security_level = none). */
export async function startPostfix(starttls = true): Promise<RealServer> {
  const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-client-postfix-'));
  chmodSync(dir, 0o755);
  for (const d of ['etc', 'queue', 'data']) mkdirSync(join(dir, d));
  const uid = Number(execFileSync('id', ['-u', 'postfix'], { encoding: 'utf8' }).trim());
  chownSync(join(dir, 'data'), uid, -1);
  copyFileSync(join(CERTS, 'server.pem'), join(dir, 'etc/server.pem'));
  copyFileSync(join(CERTS, 'server.key'), join(dir, 'etc/server.key'));
  chmodSync(join(dir, 'etc/server.key'), 0o600);
  const port = await freePort();
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
mydestination =
mynetworks =
relay_domains =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
default_transport = error:no delivery from the test instance
relay_transport = $default_transport
local_transport = $default_transport
smtpd_relay_restrictions = reject
smtpd_recipient_restrictions = reject
smtpd_tls_cert_file = ${dir}/etc/server.pem
smtpd_tls_key_file = ${dir}/etc/server.key
smtpd_tls_security_level = ${starttls ? 'may' : 'none'}
smtpd_tls_session_cache_database =
smtpd_tls_loglevel = 1
smtpd_sasl_auth_enable = no
smtpd_error_sleep_time = 0s
biff = no
`,
  );
  writeFileSync(
    join(dir, 'etc/master.cf'),
    `127.0.0.1:${port} inet n - n - - smtpd
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
tlsmgr    unix - - n 1000? 1 tlsmgr
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
  const r = await run(
    'Postfix',
    dir,
    SERVERS.postfix.bin!,
    ['-d', '-c', join(dir, 'etc')],
    [port],
    join(dir, 'postfix.log'),
  );
  return { port, ...r };
}

/** slapd with `security tls=1` (everything but StartTLS and the root DSE refused before TLS). */
export async function startSlapd(withTls = true): Promise<RealServer> {
  const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-client-slapd-'));
  const port = await freePort();
  const tlsConf = withTls
    ? `TLSCertificateFile ${CERTS}/server.pem\nTLSCertificateKeyFile ${CERTS}/server.key\nTLSCACertificateFile ${CERTS}/ca.pem\nsecurity tls=1\n`
    : '';
  writeFileSync(
    join(dir, 'slapd.conf'),
    `include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile ${dir}/slapd.pid
${tlsConf}database mdb
suffix "dc=example,dc=test"
rootdn "cn=admin,dc=example,dc=test"
rootpw secret
directory ${dir}
`,
  );
  const r = await run(
    'slapd',
    dir,
    SERVERS.slapd.bin!,
    ['-f', join(dir, 'slapd.conf'), '-h', `ldap://127.0.0.1:${port}/`, '-d', '0'],
    [port],
  );
  return { port, ...r };
}

/** Prosody, c2s with encryption required, VirtualHost "localhost". */
export async function startProsody(): Promise<RealServer> {
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
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = false
authentication = "internal_plain"
modules_enabled = { "tls", "saslauth", "dialback", "disco", "ping" }
modules_disabled = { "posix" }
log = { info = "${dir}/prosody.log" }
ssl = { certificate = "${CERTS}/server.pem", key = "${CERTS}/server.key" }
VirtualHost "localhost"
VirtualHost "other.example.test"
`,
  );
  const r = await run(
    'Prosody',
    dir,
    SERVERS.prosody.bin!,
    ['--config', join(dir, 'prosody.cfg.lua')],
    [c2s, s2s],
    join(dir, 'prosody.log'),
  );
  return { port: c2s, port2: s2s, ...r };
}

/** cupsd with DefaultEncryption IfRequested (HTTP `Upgrade: TLS/1.2` honoured). */
export async function startCupsd(): Promise<RealServer> {
  const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-client-cupsd-'));
  for (const d of ['spool/tmp', 'cache', 'state/certs', 'ssl', 'log', 'ppd'])
    mkdirSync(join(dir, d), { recursive: true });
  copyFileSync(join(CERTS, 'server.pem'), join(dir, 'ssl/localhost.crt'));
  copyFileSync(join(CERTS, 'server.key'), join(dir, 'ssl/localhost.key'));
  chmodSync(join(dir, 'ssl/localhost.key'), 0o600);
  const port = await freePort();
  writeFileSync(
    join(dir, 'cupsd.conf'),
    `Listen 127.0.0.1:${port}
ServerName localhost
ServerAlias *
DefaultEncryption IfRequested
LogLevel warn
Browsing No
WebInterface No
<Location />
  Order allow,deny
  Allow all
</Location>
`,
  );
  writeFileSync(
    join(dir, 'cups-files.conf'),
    `ServerRoot ${dir}
RequestRoot ${dir}/spool
TempDir ${dir}/spool/tmp
CacheDir ${dir}/cache
StateDir ${dir}/state
ServerKeychain ${dir}/ssl
CreateSelfSignedCerts no
ErrorLog ${dir}/log/error_log
AccessLog ${dir}/log/access_log
PageLog ${dir}/log/page_log
FileDevice No
Printcap ${dir}/printcap
`,
  );
  // cupsd checks that its files are not writable by group or others.
  execFileSync('chmod', ['-R', 'go-w', dir]);
  const r = await run(
    'cupsd',
    dir,
    SERVERS.cupsd.bin!,
    ['-f', '-c', join(dir, 'cupsd.conf'), '-s', join(dir, 'cups-files.conf')],
    [port],
    join(dir, 'log/error_log'),
  );
  return { port, ...r };
}
