// Issue 14 (config/CLI side): every address list is checked when the config is loaded (and on
// reload), the proxy checks what it needs before it says "listening", check-config prints the
// effective limits, and `workers: N` splits the connection limits instead of multiplying them.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { trustList } from '@tlsproxy/core';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../src/config.js';

const bin = fileURLToPath(new URL('../bin/tlsproxy.js', import.meta.url));
const certs = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
const noAddon = fileURLToPath(new URL('./fixtures/no-addon.cjs', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-issue14-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function problems(text: string): string[] {
  try {
    parseConfig(text, 'tlsproxy.yaml');
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

let n = 0;
function configFile(text: string): string {
  const f = join(dir, `c${n++}.yaml`);
  writeFileSync(f, text);
  return f;
}

function freePort(): Promise<number> {
  return new Promise((r) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => r(p));
    });
  });
}

/** Run the real CLI to its exit; stdout and stderr. */
function run(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  timeoutMs = 20_000,
): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [bin, ...args], { env: { ...process.env, ...env } });
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

/** A running `tlsproxy --config`, with its log. */
function start(file: string, env: NodeJS.ProcessEnv = {}) {
  const child: ChildProcess = spawn(process.execPath, [bin, '--config', file], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...env },
  });
  let log = '';
  child.stderr!.on('data', (d) => (log += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  const waitFor = async (re: RegExp, from = 0) => {
    for (let i = 0; i < 400; i++) {
      if (re.test(log.slice(from))) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`no ${re} in log:\n${log}`);
  };
  return {
    child,
    exited,
    waitFor,
    get log() {
      return log;
    },
  };
}

/** The first line the server sends (the greeting), or '' when it closes first. */
function greeting(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      buf += d;
      if (buf.includes('\r\n')) {
        s.destroy();
        resolve(buf.split('\r\n')[0]!);
      }
    });
    s.on('error', () => resolve(buf));
    s.on('close', () => resolve(buf));
  });
}

const identity = `identities: [{ cert: ${certs}server.pem, key: ${certs}server.key }]`;

describe('address lists are checked when the config is loaded', () => {
  it('names file:line:col, the key and the entry for a bad trusted or exempt entry', () => {
    const p = problems(`listeners:
  - dialect: imap
    listen: 127.0.0.1:143
    backend: unix:/x
    proxyProtocol: { trusted: [10.0.0.0/8, 10.0.0.0/33] }
  - dialect: imap
    listen: 127.0.0.1:144
    backend: unix:/y
    exempt:
      - ::1
      - not-an-address
      - "1.2.3.4/"
`);
    expect(p).toContain(
      'tlsproxy.yaml:5:44: listeners.0.proxyProtocol.trusted.1: "10.0.0.0/33": prefix length /33 is more than 32 for IPv4',
    );
    expect(p).toContain(
      'tlsproxy.yaml:11:9: listeners.1.exempt.1: "not-an-address": is not an IPv4 or IPv6 address (or address/prefix)',
    );
    expect(
      p.some((l) => l.startsWith('tlsproxy.yaml:12:9: listeners.1.exempt.2: "1.2.3.4/"')),
    ).toBe(true);
    expect(p).toHaveLength(3);
  });

  it('takes an entry exactly when core does, and fails only with ConfigError (property)', () => {
    const entry = fc.oneof(
      fc.string(),
      fc.ipV4(),
      fc.ipV6(),
      fc.tuple(fc.ipV4(), fc.integer({ min: -1, max: 40 })).map(([a, p]) => `${a}/${p}`),
      fc.tuple(fc.ipV6(), fc.integer({ min: -1, max: 140 })).map(([a, p]) => `${a}/${p}`),
    );
    fc.assert(
      fc.property(entry, fc.boolean(), (e, trusted) => {
        const list = JSON.stringify([e]);
        const key = trusted ? `proxyProtocol: { trusted: ${list} }` : `exempt: ${list}`;
        const p = problems(
          `listeners:\n  - { dialect: imap, listen: 143, backend: unix:/x, ${key} }\n`,
        );
        let coreTakes = true;
        try {
          trustList([e]);
        } catch {
          coreTakes = false;
        }
        expect(p.length === 0, p.join('\n')).toBe(coreTakes);
        if (!coreTakes)
          expect(p[0]).toMatch(
            /^tlsproxy\.yaml:2:\d+: listeners\.0\.(exempt|proxyProtocol\.trusted)\.0: /,
          );
      }),
      { numRuns: 500 },
    );
  });

  it('accepts the new listener keys, and checks their ranges', () => {
    expect(
      problems(`listeners:
  - dialect: imap
    listen: 143
    backend: unix:/x
    exempt: [127.0.0.1, "10.0.0.0/8", "2001:db8::/32", "::ffff:192.0.2.0/120"]
    ipv6Prefix: 56
    maxHandshakes: 100
    idleTimeoutMs: 0
`),
    ).toEqual([]);
    const p = problems(`listeners:
  - { dialect: imap, listen: 143, backend: unix:/x, ipv6Prefix: 129, maxHandshakes: 0, idleTimeoutMs: -1, exempt: 10.0.0.0/8 }
`);
    expect(p.some((l) => l.includes('listeners.0.ipv6Prefix: must be <= 128'))).toBe(true);
    expect(p.some((l) => l.includes('listeners.0.maxHandshakes: must be >= 1'))).toBe(true);
    expect(p.some((l) => l.includes('listeners.0.idleTimeoutMs: must be >= 0'))).toBe(true);
    expect(p.some((l) => l.includes('listeners.0.exempt: must be array'))).toBe(true);
  });

  it('check-config exits 1 on a malformed trusted CIDR, with file:line:col', async () => {
    const f = configFile(`${identity}
listeners:
  - { dialect: imap, listen: 143, backend: unix:/x, proxyProtocol: { trusted: ["10.0.0.0/33"] } }
`);
    const r = await run(['check-config', f]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(
      `${f}:3:80: listeners.0.proxyProtocol.trusted.0: "10.0.0.0/33": prefix length /33 is more than 32 for IPv4`,
    );
  });

  it('a SIGHUP with a bad list is refused and logged; the old config keeps serving', async () => {
    const port = await freePort();
    const conf = (trusted: string, greeting: string) => `${identity}
listeners:
  - dialect: imap
    listen: 127.0.0.1:${port}
    backend: unix:/nonexistent.sock
    options: { greeting: ${greeting} }
    proxyProtocol: { trusted: [${trusted}] }
workers: 1
logging: { format: text }
`;
    const f = configFile(conf('"10.0.0.0/8"', 'first'));
    const p = start(f);
    try {
      await p.waitFor(/listening dialect=imap/);
      expect(await greeting(port)).toMatch(/\] first$/);
      for (const bad of ['"not-an-address"', '"10.0.0.0/33"']) {
        const mark = p.log.length;
        writeFileSync(f, conf(bad, 'second'));
        p.child.kill('SIGHUP');
        await p.waitFor(/config refused/, mark);
        // the log line names the file, line, key and entry
        const refusal = p.log
          .slice(mark)
          .split('\n')
          .find((l) => l.includes('config refused'));
        expect(refusal).toContain(`${f}:7:32: listeners.0.proxyProtocol.trusted.0:`);
        expect(refusal).toContain(bad.slice(1, -1));
        // still the first config, still serving, still alive
        expect(await greeting(port)).toMatch(/\] first$/);
        expect(await greeting(port)).toMatch(/\] first$/);
        expect(p.child.exitCode).toBe(null);
      }
      const mark = p.log.length;
      writeFileSync(f, conf('"10.0.0.0/8", "::1"', 'third'));
      p.child.kill('SIGHUP');
      await p.waitFor(/config reloaded/, mark);
      expect(await greeting(port)).toMatch(/\] third$/);
    } finally {
      p.child.kill('SIGKILL');
      await p.exited;
    }
  }, 30_000);
});

describe('the new listener keys reach the running listener', () => {
  it('exempt lifts maxConnectionsPerAddress for its addresses (real `tlsproxy --config`)', async () => {
    const port = await freePort();
    const conf = (exempt: string) => `${identity}
listeners:
  - { dialect: imap, listen: 127.0.0.1:${port}, backend: unix:/x, maxConnectionsPerAddress: 1, exempt: [${exempt}], idleTimeoutMs: 60000, maxHandshakes: 5, ipv6Prefix: 48 }
workers: 1
logging: { format: text }
`;
    const f = configFile(conf(''));
    const p = start(f);
    const held: net.Socket[] = [];
    const hold = () =>
      new Promise<string>((resolve) => {
        const s = net.connect(port, '127.0.0.1');
        held.push(s);
        s.setEncoding('latin1');
        s.once('data', (d: string) => resolve(d.split('\r\n')[0]!));
        s.on('error', () => resolve(''));
      });
    try {
      await p.waitFor(/listening dialect=imap/);
      expect(await hold()).toMatch(/^\* OK/);
      expect(await hold()).toMatch(/^\* BYE/);
      for (const s of held.splice(0)) s.destroy();
      const mark = p.log.length;
      writeFileSync(f, conf('"127.0.0.0/8"'));
      p.child.kill('SIGHUP');
      await p.waitFor(/config reloaded/, mark);
      expect(await hold()).toMatch(/^\* OK/);
      expect(await hold()).toMatch(/^\* OK/);
      expect(await hold()).toMatch(/^\* OK/);
    } finally {
      for (const s of held) s.destroy();
      p.child.kill('SIGKILL');
      await p.exited;
    }
  }, 30_000);
});

describe('start-up checks: one clear message, before anything listens', () => {
  const once = (text: string, needle: string | RegExp) => {
    const hits = text
      .split('\n')
      .filter((l) => (typeof needle === 'string' ? l.includes(needle) : needle.test(l)));
    expect(hits, text).toHaveLength(1);
  };
  const noStack = (text: string) => expect(text).not.toMatch(/^\s+at /m);

  it('a dialect that does not load (workers: 2): exit 1, said once, nothing listening', async () => {
    const port = await freePort();
    const f = configFile(`${identity}
listeners: [{ dialect: nosuchdialect, listen: 127.0.0.1:${port}, backend: unix:/x }]
workers: 2
`);
    const r = await run(['--config', f]);
    expect(r.code).toBe(1);
    once(r.err, 'dialect "nosuchdialect" could not be loaded');
    noStack(r.err);
    expect(r.err).not.toMatch(/listening/);
  }, 30_000);

  it('a dialect that is there but whose own import is missing: says which, not "not found"', async () => {
    const mod = join(dir, 'broken-dialect.mjs');
    writeFileSync(mod, "import 'tlsproxy-no-such-package-xyz';\nexport default {};\n");
    const f = configFile(`${identity}
listeners: [{ dialect: ./broken-dialect.mjs, listen: 127.0.0.1:${await freePort()}, backend: unix:/x }]
workers: 2
`);
    const r = await run(['--config', f]);
    expect(r.code).toBe(1);
    once(r.err, /broken-dialect\.mjs.*threw on import: .*tlsproxy-no-such-package-xyz/);
    expect(r.err).not.toMatch(/dialect module not found/);
    noStack(r.err);
  }, 30_000);

  it('a port in use (workers: 2): exit 1, said once, no worker started', async () => {
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const f = configFile(`${identity}
listeners: [{ dialect: imap, listen: 127.0.0.1:${port}, backend: unix:/x }]
workers: 2
`);
      const r = await run(['--config', f]);
      expect(r.code).toBe(1);
      once(r.err, `listeners.0: cannot listen on 127.0.0.1:${port}: address in use`);
      expect(r.err).not.toMatch(/started 2 workers|listening/);
      noStack(r.err);
    } finally {
      taken.close();
    }
  }, 30_000);

  it('a certificate file that is not a certificate (workers: 2): exit non-zero, said once', async () => {
    const junk = join(dir, 'junk.pem');
    writeFileSync(
      junk,
      '-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n',
    );
    const f = configFile(`identities: [{ cert: ${junk}, key: ${certs}server.key }]
listeners: [{ dialect: imap, listen: 127.0.0.1:${await freePort()}, backend: unix:/x }]
workers: 2
`);
    const r = await run(['--config', f]);
    expect(r.code).not.toBe(0);
    once(r.err, `identities.0.cert: ${junk}`);
    noStack(r.err);
    expect(r.err).not.toMatch(/listening/);
  }, 30_000);

  it('a key that does not match its certificate: exit non-zero, said once; check-config says so too', async () => {
    const f = configFile(`identities: [{ cert: ${certs}server.pem, key: ${certs}other.key }]
listeners: [{ dialect: imap, listen: 127.0.0.1:${await freePort()}, backend: unix:/x }]
workers: 2
`);
    const r = await run(['--config', f]);
    expect(r.code).not.toBe(0);
    once(r.err, 'does not match');
    noStack(r.err);
    expect(r.err).not.toMatch(/listening/);
    const c = await run(['check-config', f]);
    expect(c.code).toBe(1);
    expect(c.err).toMatch(/identities\.0\.key: .*other\.key does not match the certificate/);
  }, 30_000);

  it('a missing certificate file: exit non-zero, said once', async () => {
    const f = configFile(`identities: [{ cert: ${dir}/missing.pem, key: ${certs}server.key }]
listeners: [{ dialect: imap, listen: 127.0.0.1:${await freePort()}, backend: unix:/x }]
workers: 2
`);
    const r = await run(['--config', f]);
    expect(r.code).not.toBe(0);
    once(r.err, 'missing.pem');
    noStack(r.err);
  }, 30_000);

  it('the native addon cannot load: exit 1 naming @tlsproxy/fdpass, once, nothing listening (config and flags)', async () => {
    const port = await freePort();
    const f = configFile(`${identity}
listeners: [{ dialect: imap, listen: 127.0.0.1:${port}, backend: unix:/x }]
workers: 2
`);
    const env = { NODE_OPTIONS: `--require ${noAddon}` };
    const r = await run(['--config', f], env);
    expect(r.code).toBe(1);
    once(r.err, /@tlsproxy\/fdpass.*cannot load|cannot load.*@tlsproxy\/fdpass/);
    noStack(r.err);
    expect(r.err).not.toMatch(/listening/);
    const flags = await run(
      [
        '--dialect',
        'imap',
        '--listen',
        `127.0.0.1:${port}`,
        '--backend',
        'unix:/x',
        '--cert',
        `${certs}server.pem`,
        '--key',
        `${certs}server.key`,
        '--workers',
        '2',
      ],
      env,
    );
    expect(flags.code).toBe(1);
    once(flags.err, /@tlsproxy\/fdpass.*cannot load|cannot load.*@tlsproxy\/fdpass/);
    expect(flags.err).not.toMatch(/listening/);
  }, 30_000);

  it('flags: a dialect that does not load and a key that does not match: exit non-zero, once', async () => {
    const common = [
      '--listen',
      `127.0.0.1:${await freePort()}`,
      '--backend',
      'unix:/x',
      '--workers',
      '2',
    ];
    const d = await run([
      ...common,
      '--dialect',
      'nosuchdialect',
      '--cert',
      `${certs}server.pem`,
      '--key',
      `${certs}server.key`,
    ]);
    expect(d.code).toBe(1);
    once(d.err, 'dialect "nosuchdialect" could not be loaded');
    const k = await run([
      ...common,
      '--dialect',
      'imap',
      '--cert',
      `${certs}server.pem`,
      '--key',
      `${certs}other.key`,
    ]);
    expect(k.code).not.toBe(0);
    once(k.err, 'does not match');
    noStack(k.err);
  }, 30_000);
});

describe('check-config prints the effective limits', () => {
  it('every listener limit with its value, the dialect limits, and the per-worker split', async () => {
    const f = configFile(`${identity}
listeners:
  - dialect: imap
    listen: 127.0.0.1:143
    backend: unix:/x
    maxConnections: 1000
    maxConnectionsPerAddress: 9
    exempt: [127.0.0.1, "10.0.0.0/8"]
    limits: { maxBadCommands: 3 }
  - { dialect: tls, listen: 993, backend: unix:/x, ipv6Prefix: 56, idleTimeoutMs: 600000, maxHandshakes: 10 }
tls: { handshakeTimeoutMs: 5000 }
workers: 4
`);
    const r = await run(['check-config', f]);
    expect(r.code, r.err).toBe(0);
    const out = r.out;
    expect(out).toMatch(/ok \(2 listeners\)/);
    expect(out).toMatch(/^workers: 4\b.*separate process/m);
    expect(out).toMatch(/^listeners\.0: imap on 127\.0\.0\.1:143$/m);
    expect(out).toMatch(/^ {2}maxConnections +1000 total, 250 per worker$/m);
    expect(out).toMatch(/^ {2}maxConnectionsPerAddress +9 total, 3 per worker$/m);
    expect(out).toMatch(/^ {2}ipv6Prefix +64 \(default\)$/m);
    expect(out).toMatch(/^ {2}exempt +127\.0\.0\.1, 10\.0\.0\.0\/8$/m);
    expect(out).toMatch(/^ {2}maxHandshakes +1000 total, 250 per worker \(default\)$/m);
    expect(out).toMatch(/^ {2}preambleTimeoutMs +900000 \(default\)$/m);
    expect(out).toMatch(/^ {2}maxPreambleBytes +65536 \(default\)$/m);
    expect(out).toMatch(/^ {2}idleTimeoutMs +0 = off \(default\)$/m);
    expect(out).toMatch(/^ {2}handshakeTimeoutMs +5000$/m);
    expect(out).toMatch(/^ {2}limits\.maxBadCommands +3$/m);
    // the imap dialect's other limits, with their defaults
    expect(out).toMatch(/^ {2}limits\.maxLineLength +\d+ \(default\)$/m);
    expect(out).toMatch(/^listeners\.1: tls on 993$/m);
    expect(out).toMatch(/^ {2}exempt +none$/m);
    expect(out).toMatch(/^ {2}ipv6Prefix +56$/m);
    expect(out).toMatch(/^ {2}maxHandshakes +10 total, 3 per worker$/m);
    expect(out).toMatch(/^ {2}idleTimeoutMs +600000$/m);
    expect(out).toMatch(/^ {2}maxConnections +10000 total, 2500 per worker \(default\)$/m);
  });
});

describe('workers: the connection limits are totals, split over the workers', () => {
  it('perWorker: ceil(total / workers) for maxConnections, maxConnectionsPerAddress, maxHandshakes', async () => {
    const { perWorker } = (await import('../src/limits.js')) as unknown as {
      perWorker: <T>(l: T, n: number) => T & Record<string, number>;
    };
    const l = {
      dialect: 'imap',
      listen: 143,
      backend: 'unix:/x',
      maxConnections: 1000,
      maxConnectionsPerAddress: 5,
      preambleTimeoutMs: 1000,
    };
    expect(perWorker(l, 1)).toEqual(l);
    expect(perWorker(l, 4)).toEqual({
      ...l,
      maxConnections: 250,
      maxConnectionsPerAddress: 2,
      maxHandshakes: 250,
    });
    // never 0, even with more workers than the total
    expect(perWorker({ ...l, maxConnectionsPerAddress: 1 }, 8).maxConnectionsPerAddress).toBe(1);
    // unset: the core default is the total
    expect(perWorker({ dialect: 'imap', listen: 143, backend: 'unix:/x' }, 3)).toMatchObject({
      maxConnections: 3334,
      maxConnectionsPerAddress: 22,
      maxHandshakes: 334,
    });
  });

  it('each worker of a real `workers: 2` proxy runs with the per-worker share', async () => {
    const port = await freePort();
    const f = configFile(`${identity}
listeners:
  - { dialect: imap, listen: 127.0.0.1:${port}, backend: unix:/x, maxConnections: 7, maxConnectionsPerAddress: 3 }
workers: 2
logging: { format: text }
`);
    const p = start(f);
    try {
      await p.waitFor(/listening dialect=imap[\s\S]*listening dialect=imap/);
      const lines = p.log.split('\n').filter((l) => l.includes('per-worker limits'));
      expect(lines).toHaveLength(2);
      for (const l of lines) {
        expect(l).toMatch(/maxConnections=4\b/);
        expect(l).toMatch(/maxConnectionsPerAddress=2\b/);
        expect(l).toMatch(/maxHandshakes=500\b/);
        expect(l).toMatch(/workers=2\b/);
      }
      expect(await greeting(port)).toMatch(/^\* OK/);
    } finally {
      p.child.kill('SIGTERM');
      await p.exited;
    }
  }, 30_000);
});
