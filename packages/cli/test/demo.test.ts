// `tlsproxy demo` end to end: start it on a random port base, then run every command line it
// printed exactly as printed (openssl s_client for the STARTTLS dialects and IMAPS, node for HTTP
// Upgrade), under `timeout 15` with stdin from a pipe that ends, typing the lines it said to
// type; each demo backend's answer (with the hand-off info) must come back over TLS. Then stop()
// frees the ports and removes the temporary directory. Needs the dialects built (npm run build).
import { spawn, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Demo, runDemo } from '../src/demo.js';

const hasOpenssl = spawnSync('openssl', ['version']).status === 0;

interface Tried {
  dialect: string;
  address: string;
  command: string;
  input: string[];
}

/** The per-dialect blocks of the banner: "NAME: ... on ADDR, backend ...", "  $ cmd", "  > input". */
function parse(lines: string[]): Tried[] {
  const out: Tried[] = [];
  for (const l of lines) {
    const head = /^([a-z0-9-]+): .* on (\S+), backend unix:/.exec(l);
    if (head) out.push({ dialect: head[1]!, address: head[2]!, command: '', input: [] });
    else if (l.startsWith('  $ ') && out.length > 0) out.at(-1)!.command = l.slice(4);
    else if (l.startsWith('  > ') && out.length > 0) out.at(-1)!.input.push(l.slice(4));
  }
  return out;
}

function run(command: string, input: string[]): Promise<{ out: string; code: number | null }> {
  return new Promise((resolve) => {
    const p = spawn('timeout', ['15', 'bash', '-c', command], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}` },
    });
    let out = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString('latin1');
    });
    p.stderr.on('data', (d: Buffer) => {
      out += d.toString('latin1');
    });
    p.stdin.on('error', () => {});
    p.stdin.end(input.map((l) => `${l}\n`).join(''));
    p.on('close', (code) => resolve({ out, code }));
  });
}

function portFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, host, () => s.close(() => resolve(true)));
  });
}

/** What each demo backend answers after its hand-off line. */
const EXPECT: Record<string, RegExp[]> = {
  imap: [
    /\* OK \[ALERT\] tlsproxy hand-off: /,
    /b OK \[READ-WRITE\] SELECT completed/,
    /c OK LOGOUT/,
  ],
  pop3: [/\+OK Logged in as alice\. tlsproxy hand-off: /, /\+OK 1 \d+/, /\+OK Logging out/],
  smtp: [/250-X-TLSPROXY-HANDOFF /, /250 2\.0\.0 OK: \d+ bytes received/, /221 2\.0\.0 Bye/],
  ldap: [/cn=Alice Example,dc=example,dc=test/, /bound as "cn=alice,dc=example,dc=test"/],
  xmpp: [
    /<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'\/>/,
    /<jid>alice@localhost\/demo<\/jid>/,
  ],
  'http-upgrade': [
    /HTTP\/1\.1 101 Switching Protocols/,
    /HTTP\/1\.1 200 OK/,
    /OPTIONS \* HTTP\/1\.1/,
  ],
  tls: [/\* OK \[CAPABILITY [^\]]*\] tlsproxy demo IMAP server ready/, /c OK LOGOUT/],
};
const STANDARD: Record<string, number> = {
  imap: 143,
  pop3: 110,
  smtp: 25,
  ldap: 389,
  xmpp: 5222,
  'http-upgrade': 80,
  tls: 993,
};

describe.skipIf(!hasOpenssl)('tlsproxy demo', () => {
  let demo: Demo;
  let base = 0;
  let tried: Tried[] = [];
  let certPath = '';

  beforeAll(async () => {
    // a random base; on the rare port clash (ephemeral ports live up there too) try another
    for (let attempt = 0; ; attempt++) {
      base = 20000 + Math.floor(Math.random() * 20000);
      try {
        demo = await runDemo({ portBase: base, log: () => {} });
        break;
      } catch (err) {
        if (attempt >= 4 || !/already in use/.test((err as Error).message)) throw err;
      }
    }
    tried = parse(demo.lines);
    certPath = /saved as (\S+cert\.pem)/.exec(demo.lines.join('\n'))?.[1] ?? '';
  }, 30_000);
  afterAll(async () => {
    await demo?.stop();
  });

  it('runs every dialect of this monorepo on port-base + its standard port', () => {
    expect(demo.lines.join('\n')).toMatch(/every dialect is installed/);
    expect(tried.map((t) => t.dialect).sort()).toEqual(Object.keys(STANDARD).sort());
    for (const t of tried) expect(t.address).toBe(`127.0.0.1:${base + STANDARD[t.dialect]!}`);
    for (const t of tried) expect(t.command).not.toBe('');
  });

  it('prints the SHA-256 fingerprint of a certificate for localhost and 127.0.0.1', () => {
    const fp = /SHA-256 fingerprint ((?:[0-9A-F]{2}:){31}[0-9A-F]{2})/.exec(demo.lines.join('\n'));
    expect(fp).not.toBeNull();
    const x = new X509Certificate(readFileSync(certPath));
    expect(x.fingerprint256).toBe(fp![1]);
    expect(x.subjectAltName).toMatch(/DNS:localhost/);
    expect(x.subjectAltName).toMatch(/IP Address:127\.0\.0\.1/);
    expect(x.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
  });

  it.each(Object.keys(STANDARD))(
    'the printed %s line works as printed',
    async (dialect) => {
      const t = tried.find((x) => x.dialect === dialect)!;
      const before = demo.lines.length;
      const { out } = await run(t.command, t.input);
      // the backend's reply, with the hand-off info, came back over TLS
      expect(out).toMatch(new RegExp(`dialect=${dialect} sni=localhost tls=TLSv1\\.[23] `));
      for (const re of EXPECT[dialect]!) expect(out).toMatch(re);
      // and the backend logged one line for the connection
      const logged = demo.lines
        .slice(before)
        .filter((l) => l.startsWith(`${dialect} backend: handed a connection: `));
      expect(logged).toHaveLength(1);
      expect(logged[0]).toMatch(
        / sni=localhost tls=TLSv1\.[23] \S+ client=- from=127\.0\.0\.1:\d+ /,
      );
      if (dialect === 'smtp') {
        expect(demo.lines.slice(before).join('\n')).toMatch(
          /smtp backend: message \S+ from <alice@example\.test> to <bob@example\.test>: \d+ bytes/,
        );
      }
    },
    20_000,
  );

  it('the certificate verifies with -CAfile', async () => {
    const t = tried.find((x) => x.dialect === 'tls')!;
    const { out } = await run(`${t.command} -CAfile ${certPath} -verify_return_error`, [
      'z LOGOUT',
    ]);
    expect(out).toMatch(/verify return:1/);
    expect(out).not.toMatch(/verify error/);
    expect(out).toMatch(/z OK LOGOUT/);
  }, 20_000);

  it('a port in use is named, with --port-base', async () => {
    const other = base === 20000 ? 30000 : base - 1;
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(other + 110, '127.0.0.1', () => r()));
    try {
      await expect(runDemo({ portBase: other, log: () => {} })).rejects.toThrow(
        new RegExp(
          `port ${other + 110} on 127\\.0\\.0\\.1 .*--port-base ${other}.* already in use`,
        ),
      );
    } finally {
      await new Promise((r) => blocker.close(r));
    }
    // what it had started is stopped again
    expect(await portFree(other + 143)).toBe(true);
  });

  it('stop() closes every listener and removes the temporary directory', async () => {
    // a client idling in the preamble does not hold the stop up
    const idle = net.connect(base + 143, '127.0.0.1');
    idle.on('error', () => {});
    await new Promise((r) => idle.once('data', r));
    const t0 = Date.now();
    await demo.stop();
    expect(Date.now() - t0).toBeLessThan(4000);
    for (const port of Object.values(STANDARD)) expect(await portFree(base + port)).toBe(true);
    expect(existsSync(certPath)).toBe(false);
    idle.destroy();
  }, 20_000);
});
