// Interop, client role (issue 18): the HTTP Upgrade client state machine drives a real CUPS
// cupsd on loopback (configured as fixtures/record/cupsd.sh does: DefaultEncryption
// IfRequested, the test PKI's server.pem, /admin with `Encryption Required`) over a real TCP
// socket; on `starttls` node:tls runs the client handshake on the same socket, verified against
// fixtures/certs/ca.pem for `localhost`. Over TLS cupsd first answers the upgrading OPTIONS *
// (RFC 2817 section 3.3), which the client's afterTls drops; then an OPTIONS and an IPP
// CUPS-Get-Printers request get their HTTP answers. A man in the middle appending bytes to the
// real 101 gets the connection closed; Python's http.server (no RFC 2817) gets a close and a 502. (No plaintext contrast: cupsd does not
// enforce `Encryption Required` on loopback connections, httpAddrLocalhost.) Skipped when cupsd is not installed (apt-get install cups-daemon); cupsd needs root.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
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
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import type { ClientDialectSession } from '@tlsproxy/dialect-kit';
import { runClientSession } from '@tlsproxy/dialect-kit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, upgradeAnswerLength } from '../src/client.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const certs = join(root, 'fixtures/certs');
const CA = readFileSync(join(certs, 'ca.pem'));

function findCupsd(): string | undefined {
  for (const p of ['/usr/sbin/cupsd', '/usr/local/sbin/cupsd']) if (existsSync(p)) return p;
  try {
    return execFileSync('which', ['cupsd'], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}
const CUPSD = process.getuid?.() === 0 ? findCupsd() : undefined;
if (!CUPSD)
  console.warn(
    'cupsd not installed (or not root): the HTTP Upgrade client interop test is skipped',
  );

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

interface Cupsd {
  port: number;
  stop(): Promise<void>;
}

async function startCupsd(): Promise<Cupsd> {
  const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-cups-client-'));
  for (const d of ['spool/tmp', 'cache', 'state/certs', 'ssl', 'log', 'ppd']) {
    mkdirSync(join(dir, d), { recursive: true });
  }
  copyFileSync(join(certs, 'server.pem'), join(dir, 'ssl/localhost.crt'));
  copyFileSync(join(certs, 'server.key'), join(dir, 'ssl/localhost.key'));
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
  const child: ChildProcess = spawn(
    CUPSD!,
    ['-f', '-c', join(dir, 'cupsd.conf'), '-s', join(dir, 'cups-files.conf')],
    { stdio: 'ignore' },
  );
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  for (let i = 0; ; i++) {
    const up = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
    if (up) break;
    if (i > 100 || child.exitCode !== null) {
      child.kill();
      const log = existsSync(join(dir, 'log/error_log'))
        ? readFileSync(join(dir, 'log/error_log'), 'utf8')
        : '';
      await exited;
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`cupsd did not start: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The engine's part, over a real socket: the kit's driver (lets go of the socket on starttls). */
async function drive(port: number, session: ClientDialectSession) {
  const socket = net.connect(port, '127.0.0.1');
  const run = await runClientSession(session, socket);
  return { ...run, socket };
}

/**
 * A man in the middle on loopback: relays between us and the real server, and appends `inject`
 * to the first chunk from the server that `match` picks, in the same write (so in the same read
 * on our side): the response-injection attack of the NO STARTTLS study, with the real server's
 * real go-ahead.
 */
async function mitm(
  serverPort: number,
  match: (chunk: Buffer) => boolean,
  inject: Uint8Array,
): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((ours) => {
    const theirs = net.connect(serverPort, '127.0.0.1');
    let injected = false;
    for (const s of [ours, theirs]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        ours.destroy();
        theirs.destroy();
      });
    }
    ours.on('data', (d) => theirs.write(d));
    theirs.on('data', (d) => {
      if (!injected && match(d)) {
        injected = true;
        ours.write(Buffer.concat([d, inject]));
      } else ours.write(d);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

const newSession = () =>
  client.create({
    options: {},
    limits: {},
    hostname: 'client.example.test',
    serverName: 'localhost',
    connectionId: 'interop',
  });

/** RFC 8011 CUPS-Get-Printers (0x4002), the least IPP request: charset and language only. */
function ippGetPrinters(): Buffer {
  const attr = (tag: number, name: string, value: string) => {
    const n = Buffer.from(name);
    const v = Buffer.from(value);
    return Buffer.concat([
      Buffer.from([tag, n.length >> 8, n.length & 0xff]),
      n,
      Buffer.from([v.length >> 8, v.length & 0xff]),
      v,
    ]);
  };
  const body = Buffer.concat([
    Buffer.from([0x02, 0x00, 0x40, 0x02, 0x00, 0x00, 0x00, 0x01, 0x01]),
    attr(0x47, 'attributes-charset', 'utf-8'),
    attr(0x48, 'attributes-natural-language', 'en'),
    Buffer.from([0x03]),
  ]);
  return Buffer.concat([
    Buffer.from(
      `POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/ipp\r\nContent-Length: ${body.length}\r\n\r\n`,
    ),
    body,
  ]);
}

/** Everything `socket` sends until `done` says so or `ms` pass. */
function collect(socket: net.Socket, done: (text: string) => boolean, ms = 5000): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const t = setTimeout(() => resolve(got), ms);
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (done(got)) {
        clearTimeout(t);
        resolve(got);
      }
    });
    socket.on('close', () => {
      clearTimeout(t);
      resolve(got);
    });
  });
}

/** Complete HTTP responses in `text` (head + Content-Length body), as status codes. */
function statuses(text: string): number[] {
  const out: number[] = [];
  let rest = text;
  for (;;) {
    const m = /^HTTP\/1\.[01] (\d{3})[^\r\n]*\r\n([\s\S]*?)\r\n\r\n/.exec(rest);
    if (!m) return out;
    const len = Number(/\r\ncontent-length: *(\d+)/i.exec(`\r\n${m[2]}`)?.[1] ?? 0);
    const end = m[0].length + len;
    if (rest.length < end) return out;
    out.push(Number(m[1]));
    rest = rest.slice(end);
  }
}

describe.skipIf(!CUPSD)('HTTP Upgrade client role against a real cupsd', () => {
  let cupsd: Cupsd;
  beforeAll(async () => {
    cupsd = await startCupsd();
  }, 30_000);
  afterAll(async () => {
    await cupsd?.stop();
  }, 30_000);

  it('101, a verified TLS handshake, the OPTIONS answer over TLS dropped, then requests get HTTP answers', async () => {
    const out = await drive(cupsd.port, newSession());
    expect(out.outcome.type).toBe('starttls');
    const go = out.outcome;
    expect(go).toMatchObject({ state: { status: 101 } });
    expect(go.type === 'starttls' && go.toLocal.length).toBe(0);
    const secure = tls.connect({ socket: out.socket, ca: CA, servername: 'localhost' });
    await new Promise<void>((r, j) => {
      secure.once('secureConnect', () => r());
      secure.once('error', j);
    });
    expect(secure.authorized).toBe(true);
    expect(secure.getProtocol()).toMatch(/^TLSv1\.[23]$/);
    // RFC 2817 section 3.3: cupsd answers the upgrading OPTIONS * over TLS before anything is
    // asked; the client dialect's afterTls says how much of that to drop.
    let first = Buffer.alloc(0);
    let drop: number | null = null;
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no OPTIONS answer: ${first.toString()}`)), 5000);
      const onData = (d: Buffer) => {
        first = Buffer.concat([first, d]);
        drop = upgradeAnswerLength(new Uint8Array(first));
        if (drop === null) return;
        clearTimeout(t);
        secure.off('data', onData);
        resolve();
      };
      secure.on('data', onData);
    });
    console.log(`cupsd over TLS before any request: ${JSON.stringify(first.toString('latin1'))}`);
    expect(first.toString('latin1')).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(drop).toBe(first.length);
    // Now as a local client would: two requests, two answers, in order.
    const replies = collect(secure, (text) => statuses(text).length >= 2);
    secure.write('OPTIONS / HTTP/1.1\r\nHost: localhost\r\n\r\n');
    secure.write(ippGetPrinters());
    const text = await replies;
    const codes = statuses(text);
    console.log(`cupsd over TLS: statuses ${codes.join(', ')}`);
    expect(codes).toEqual([200, 200]);
    // The second is the IPP answer: application/ipp, version 2.0, status successful-ok.
    expect(text).toMatch(/Content-Type: application\/ipp/i);
    secure.destroy();
  });

  it('a man in the middle appends a forged answer to the real 101: close, never starttls', async () => {
    const forged = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
    const relay = await mitm(cupsd.port, (d) => d.includes(' 101 '), forged);
    try {
      const out = await drive(relay.port, newSession());
      expect(out.actions.some((a) => a.type === 'starttls')).toBe(false);
      expect(out.outcome).toMatchObject({
        type: 'close',
        reason: expect.stringMatching(
          new RegExp(`^response injection: .*: ${forged.length} octets$`),
        ),
      });
      out.socket.destroy();
    } finally {
      await relay.close();
    }
  });

  it('verified against the wrong CA the handshake fails (fail closed)', async () => {
    const out = await drive(cupsd.port, newSession());
    expect(out.outcome.type).toBe('starttls');
    const other = readFileSync(join(certs, 'rogue.pem'));
    const secure = tls.connect({ socket: out.socket, ca: other, servername: 'localhost' });
    const err = await new Promise<Error>((r) => {
      secure.once('error', r);
      secure.once('secureConnect', () => r(new Error('connected')));
    });
    expect(err.message).toMatch(/certificate/i);
    secure.destroy();
  });
});

// A real HTTP server that knows nothing of RFC 2817 (cupsd upgrades whatever its DefaultEncryption
// says, so it cannot play this part): Python's http.server answers OPTIONS with 501.
function findPython(): string | undefined {
  try {
    return execFileSync('which', ['python3'], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}
const PYTHON = findPython();

describe.skipIf(!PYTHON)('HTTP Upgrade client role against a server without RFC 2817', () => {
  it("Python's http.server answers 501: the client closes, 502 for the local client, never starttls", async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-http-plain-'));
    const child = spawn(PYTHON!, ['-m', 'http.server', '--bind', '127.0.0.1', String(port)], {
      cwd: dir,
      stdio: 'ignore',
    });
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    try {
      for (let i = 0; ; i++) {
        const up = await new Promise<boolean>((r) => {
          const s = net.connect(port, '127.0.0.1', () => {
            s.destroy();
            r(true);
          });
          s.on('error', () => r(false));
        });
        if (up) break;
        if (i > 100 || child.exitCode !== null) throw new Error('http.server did not start');
        await new Promise((r) => setTimeout(r, 100));
      }
      const out = await drive(port, newSession());
      console.log(
        `http.server: ${out.outcome.type === 'close' ? out.outcome.reason : out.outcome.type}`,
      );
      expect(out.outcome).toMatchObject({
        type: 'close',
        reason: expect.stringMatching(/^server answered 501 .*instead of 101$/),
      });
      const local = out.outcome.type === 'close' ? out.outcome.toLocal : undefined;
      expect(Buffer.from(local ?? []).toString('latin1')).toMatch(/^HTTP\/1\.1 502 /);
      out.socket.destroy();
    } finally {
      child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
