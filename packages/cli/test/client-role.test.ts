// The client role in the CLI (issue 18): `tlsproxy --role client ...` and `role: client`
// listeners in YAML — flags, the file's checks with file:line:col, the start-up checks (a dialect
// without a client side, an unreadable CA, a bad server address), check-config's report, and the
// real command end to end against a small IMAP server on loopback that does STARTTLS and then
// real TLS (node:tls, the repo's test PKI; with a client certificate asked for and recorded).
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { parseCli } from '../src/args.js';
import { ConfigError, clientIdentityName, loadConfig, parseConfig } from '../src/config.js';
import { preflight } from '../src/preflight.js';

const bin = fileURLToPath(new URL('../bin/tlsproxy.js', import.meta.url));
const certs = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
const cert = (f: string) => readFileSync(join(certs, f));

const children: ChildProcess[] = [];
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of children.splice(0)) {
    if (c.exitCode === null && c.signalCode === null) {
      const gone = new Promise((r) => c.once('exit', r));
      c.kill('SIGINT');
      await gone;
    }
  }
  for (const c of closers.splice(0)) await c();
});

function problems(text: string): string[] {
  try {
    parseConfig(text, 'tlsproxy.yaml');
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe('--role client flags', () => {
  it('parses the contract’s command line', () => {
    const a = parseCli([
      '--role',
      'client',
      '--dialect',
      'imap',
      '--listen',
      '127.0.0.1:1143',
      '--connect',
      'imap.example.org:143',
      '--ca',
      'CA.pem',
      '--server-name',
      'mail.example.org',
      '--cert',
      'c.pem',
      '--key',
      'k.pem',
      '--min-version',
      'TLSv1.3',
    ]);
    expect(a).toMatchObject({
      role: 'client',
      dialect: 'imap',
      listen: '127.0.0.1:1143',
      connect: 'imap.example.org:143',
      ca: 'CA.pem',
      serverName: 'mail.example.org',
      cert: ['c.pem'],
      key: ['k.pem'],
      minVersion: 'TLSv1.3',
    });
  });

  it('refuses what does not fit, saying what', () => {
    const base = ['--role', 'client', '--dialect', 'imap', '--listen', '127.0.0.1:1143'];
    expect(() => parseCli(base)).toThrow(/--role client needs --connect/);
    const full = [...base, '--connect', 'h:143'];
    expect(() => parseCli([...full, '--backend', 'unix:/x'])).toThrow(
      /--backend is for the server role/,
    );
    expect(() => parseCli([...full, '--cert', 'c.pem'])).toThrow(/--cert and --key together/);
    expect(() => parseCli([...full, '--min-version', 'TLSv1.1'])).toThrow(/TLSv1.2 or TLSv1.3/);
    // Both engines have a client side (engine-native's connect()).
    expect(() => parseCli([...full, '--engine', 'native'])).not.toThrow();
    expect(() => parseCli([...full, '--client-identity', 'x'])).toThrow(/--pool-socket/);
    expect(() => parseCli(['--role', 'sideways'])).toThrow(/server or client/);
    // Client-only flags in the server role.
    expect(() =>
      parseCli([
        '--dialect',
        'imap',
        '--backend',
        'unix:/x',
        '--cert',
        'a',
        '--key',
        'b',
        '--connect',
        'h:1',
      ]),
    ).toThrow(/--connect goes with --role client/);
  });
});

describe('role: client in YAML', () => {
  it('places every problem at its file:line:col', () => {
    const p = problems(`listeners:
  - role: client
    dialect: imap
    listen: 127.0.0.1:1143
    backend: unix:/x
    tls: { ca: ca.pem, clientCert: required, cert: c.pem }
  - role: client
    dialect: imap
    listen: 127.0.0.1:1144
  - role: client
    dialect: imap
    listen: 127.0.0.1:1145
    connect: "imap.example.org:99999"
  - dialect: imap
    listen: 143
    backend: unix:/x
    connect: imap.example.org:143
    tls: { ca: ca.pem }
`);
    expect(p).toContain(
      'tlsproxy.yaml:5:14: listeners.0.backend: not used with role: client (the proxy connects to `connect` itself)',
    );
    expect(p).toContain(
      'tlsproxy.yaml:6:36: listeners.0.tls.clientCert: not used with role: client',
    );
    expect(p).toContain(
      'tlsproxy.yaml:6:52: listeners.0.tls.cert: give tls.cert and tls.key together',
    );
    expect(p).toContain('tlsproxy.yaml:7:5: listeners.1: missing key "connect"');
    expect(p.some((l) => l.startsWith('tlsproxy.yaml:13:14: listeners.2.connect:'))).toBe(true);
    expect(p).toContain('tlsproxy.yaml:17:14: listeners.3.connect: only with role: client');
    expect(p).toContain(
      'tlsproxy.yaml:18:16: listeners.3.tls.ca: only with role: client (the CAs for client certificates are the top-level tls.ca)',
    );
  });

  it('loads: the CA as PEM, tls.cert/key as an engine identity the listener names, no server certificate needed', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-client-yaml-'));
    const file = join(dir, 'tlsproxy.yaml');
    writeFileSync(
      file,
      `listeners:
  - role: client
    dialect: imap
    listen: 127.0.0.1:1143
    connect: imap.example.org:143
    tls: { ca: ${certs}ca.pem, cert: ${certs}client.pem, key: ${certs}client.key, minVersion: TLSv1.3 }
    connectTimeoutMs: 3000
`,
    );
    const c = loadConfig(file);
    expect(c.listeners[0]).toMatchObject({
      role: 'client',
      connect: 'imap.example.org:143',
      connectTimeoutMs: 3000,
      tls: {
        ca: cert('ca.pem').toString('utf8'),
        clientIdentity: clientIdentityName(0),
        minVersion: 'TLSv1.3',
      },
    });
    expect(c.pool).toMatchObject({
      connectOnly: true,
      identities: [{ names: [clientIdentityName(0)] }],
    });
  });

  it('an unreadable CA, a key that does not match, an unknown identity name: said at load', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-client-yaml-'));
    const file = join(dir, 'tlsproxy.yaml');
    writeFileSync(
      file,
      `listeners:
  - role: client
    dialect: imap
    listen: 127.0.0.1:1143
    connect: imap.example.org:143
    tls: { ca: ${dir}/nope.pem, cert: ${certs}client.pem, key: ${certs}server.key }
  - role: client
    dialect: imap
    listen: 127.0.0.1:1144
    connect: imap.example.org:143
    tls: { ca: ${certs}client.key, clientIdentity: bob }
`,
    );
    let p: string[] = [];
    try {
      loadConfig(file);
    } catch (err) {
      p = (err as ConfigError).problems;
    }
    const all = p.join('\n');
    expect(all).toMatch(/tlsproxy\.yaml:6:16: listeners\.0\.tls\.ca: cannot read .*nope\.pem/);
    expect(all).toMatch(
      /tlsproxy\.yaml:6:\d+: listeners\.0\.tls\.key: .*does not match the certificate/,
    );
    expect(all).toMatch(
      /tlsproxy\.yaml:11:16: listeners\.1\.tls\.ca: .*client\.key has no PEM certificate/,
    );
    expect(all).toMatch(
      /tlsproxy\.yaml:11:\d+: listeners\.1\.tls\.clientIdentity: no identity named "bob"/,
    );
  });
});

describe('start-up checks and check-config', () => {
  it('a dialect without a client side, a bad server address, an unreadable CA: one line each', async () => {
    const p = await preflight({
      listeners: [
        {
          name: '--dialect',
          dialect: 'tls',
          role: 'client',
          connect: { name: '--connect', value: 'no-port' },
          ca: { name: '--ca', path: '/nonexistent/ca.pem' },
        },
      ],
    });
    expect(p).toContain(
      '--dialect: dialect "tls" has no client side: it cannot be used with role: client',
    );
    expect(p.some((l) => /^--connect: connect address "no-port" is not host:port/.test(l))).toBe(
      true,
    );
    expect(p.some((l) => /^--ca: cannot read .*\/nonexistent\/ca\.pem/.test(l))).toBe(true);
  });

  it('the command refuses to start and says why', () => {
    const r = spawnSync(
      process.execPath,
      [
        bin,
        '--role',
        'client',
        '--dialect',
        'tls',
        '--listen',
        '127.0.0.1:0',
        '--connect',
        'h:1',
        '--workers',
        '1',
      ],
      { encoding: 'utf8' },
    );
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/tlsproxy: cannot start: --dialect: dialect "tls" has no client side/);
  });

  it('check-config names the dialect without a client side and prints the client limits', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-client-check-'));
    const bad = join(dir, 'bad.yaml');
    writeFileSync(
      bad,
      'listeners:\n  - { role: client, dialect: tls, listen: 127.0.0.1:1, connect: "h:1" }\n',
    );
    const r = spawnSync(process.execPath, [bin, 'check-config', bad], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(
      /bad\.yaml:2:30: listeners\.0\.dialect: dialect "tls" has no client side/,
    );
    const good = join(dir, 'good.yaml');
    writeFileSync(
      good,
      `listeners:\n  - { role: client, dialect: imap, listen: 127.0.0.1:1, connect: "h:1", tls: { ca: ${certs}ca.pem } }\n`,
    );
    const ok = spawnSync(process.execPath, [bin, 'check-config', good], { encoding: 'utf8' });
    expect(ok.stderr).toBe('');
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/listeners\.0: imap client on 127\.0\.0\.1:1 → h:1/);
    expect(ok.stdout).toMatch(/^ {2}connectTimeoutMs +10000 \(default\)$/m);
    // The IMAP client side's own limits, not the server side's.
    expect(ok.stdout).toMatch(/^ {2}limits\.greetingTimeoutMs /m);
    expect(ok.stdout).not.toMatch(/limits\.maxBadCommands/);
  });
});

/** A small IMAP server: greets with STARTTLS, answers CAPABILITY and STARTTLS, then real TLS
 * (optionally asking for a client certificate); inside TLS, CAPABILITY without STARTTLS. */
async function imapServer(requestCert = false) {
  const peers: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.write('* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] fake ready\r\n');
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString('latin1');
      for (let i = buf.indexOf('\r\n'); i >= 0; i = buf.indexOf('\r\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const [tag, cmd] = line.split(' ');
        if (cmd?.toUpperCase() !== 'STARTTLS') {
          s.write(`${tag} BAD not before TLS\r\n`);
          continue;
        }
        s.off('data', onData);
        s.write(`${tag} OK Begin TLS negotiation now\r\n`);
        const t = new tls.TLSSocket(s, {
          isServer: true,
          cert: cert('server.pem'),
          key: cert('server.key'),
          ...(requestCert
            ? { requestCert: true, rejectUnauthorized: false, ca: cert('ca.pem') }
            : {}),
        });
        t.on('error', () => {});
        t.once('secure', () => {
          const x = t.getPeerX509Certificate();
          peers.push(x ? x.subject.replace(/\n/g, ', ') : '(none)');
        });
        let inner = '';
        t.on('data', (x: Buffer) => {
          inner += x.toString('latin1');
          for (let j = inner.indexOf('\r\n'); j >= 0; j = inner.indexOf('\r\n')) {
            const [itag, icmd] = inner.slice(0, j).split(' ');
            inner = inner.slice(j + 2);
            if (icmd?.toUpperCase() === 'CAPABILITY')
              t.write(`* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n${itag} OK done\r\n`);
            else if (icmd?.toUpperCase() === 'LOGOUT') t.end(`* BYE\r\n${itag} OK bye\r\n`);
            else t.write(`${itag} BAD what\r\n`);
          }
        });
        return;
      }
    };
    s.on('data', onData);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  closers.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });
  return { port: (server.address() as net.AddressInfo).port, peers };
}

function freePort(): Promise<number> {
  return new Promise((r) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => r(p));
    });
  });
}

function run(args: string[]) {
  const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  let log = '';
  child.stderr!.on('data', (d) => {
    log += d;
  });
  return {
    waitFor: async (re: RegExp) => {
      for (let i = 0; i < 400; i++) {
        if (re.test(log)) return;
        if (child.exitCode !== null) break;
        await new Promise((r) => setTimeout(r, 25));
      }
      throw new Error(`no ${re} in log:\n${log}`);
    },
    get log() {
      return log;
    },
  };
}

async function imapSession(port: number): Promise<string> {
  const s = net.connect(port, '127.0.0.1');
  let text = '';
  s.setEncoding('latin1');
  s.on('data', (d: string) => {
    text += d;
  });
  s.on('error', () => {});
  const until = async (re: RegExp) => {
    for (let i = 0; i < 400 && !re.test(text); i++) await new Promise((r) => setTimeout(r, 25));
    if (!re.test(text)) throw new Error(`no ${re} in ${JSON.stringify(text)}`);
  };
  await until(/^\* OK .*\r\n/);
  s.write('a CAPABILITY\r\n');
  await until(/^a OK/m);
  s.write('b LOGOUT\r\n');
  await until(/^b OK/m);
  s.destroy();
  return text;
}

describe('the tlsproxy command in the client role', () => {
  it('flags: a plaintext IMAP client gets the greeting, then CAPABILITY over verified TLS', async () => {
    const server = await imapServer();
    const port = await freePort();
    const p = run([
      '--role',
      'client',
      '--dialect',
      'imap',
      '--listen',
      `127.0.0.1:${port}`,
      '--connect',
      `127.0.0.1:${server.port}`,
      '--ca',
      `${certs}ca.pem`,
      '--server-name',
      'localhost',
      '--workers',
      '1',
    ]);
    await p.waitFor(/listening/);
    const text = await imapSession(port);
    // Our own greeting (none of the server's pre-TLS text), then the answer from inside TLS.
    expect(text).toMatch(/^\* OK Server ready\.\r\n/);
    expect(text).toMatch(/^\* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n/m);
    expect(text).not.toMatch(/STARTTLS|LOGINDISABLED/);
    await p.waitFor(/TLS established with the server/);
  }, 30_000);

  it('YAML: tls.cert/key is presented as the client certificate', async () => {
    const server = await imapServer(true);
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-client-run-'));
    const file = join(dir, 'tlsproxy.yaml');
    writeFileSync(
      file,
      `workers: 1
logging: { format: text }
listeners:
  - role: client
    dialect: imap
    listen: 127.0.0.1:${port}
    connect: 127.0.0.1:${server.port}
    tls: { ca: ${certs}ca.pem, serverName: localhost, cert: ${certs}client.pem, key: ${certs}client.key }
`,
    );
    const p = run(['--config', file]);
    await p.waitFor(/listening/);
    const text = await imapSession(port);
    expect(text).toMatch(/^\* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n/m);
    expect(server.peers).toEqual([expect.stringMatching(/CN=alice/)]);
  }, 30_000);

  it('a wrong CA fails closed: the local client is closed, the log says why', async () => {
    const server = await imapServer();
    const port = await freePort();
    const p = run([
      '--role',
      'client',
      '--dialect',
      'imap',
      '--listen',
      `127.0.0.1:${port}`,
      '--connect',
      `127.0.0.1:${server.port}`,
      '--ca',
      `${certs}rogue.pem`,
      '--workers',
      '1',
    ]);
    await p.waitFor(/listening/);
    const s = net.connect(port, '127.0.0.1');
    let text = '';
    s.on('data', (d) => {
      text += d;
    });
    s.on('error', () => {});
    await new Promise((r) => s.once('close', r));
    expect(text).toBe('');
    await p.waitFor(/TLS with the server failed.*unknown-ca/);
  }, 30_000);
});
