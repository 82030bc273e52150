// Connect-mode backends: after STARTTLS and the handshake, tlsproxy connects to a legacy server
// (here a fake one on net.Server), sends a PROXY v2 header with the TLS TLVs, swallows the
// server's greeting (the client already got the dialect's) and relays both ways.
import { execFile } from 'node:child_process';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConnectBackend, type TlsProxy } from '../src/index.js';
import {
  decodeProxyHeader,
  PP2_CLIENT_CERT_CONN,
  PP2_CLIENT_CERT_SESS,
  PP2_CLIENT_SSL,
  type ProxyHeader,
} from '../src/proxy-protocol.js';
import { cert, fdCount, LineClient, quietLogger, sleep, startProxy } from './helpers.js';

interface Legacy {
  server: net.Server;
  port: number;
  /** One entry per connection: the decoded header (undefined: none was expected). */
  headers: Array<ProxyHeader | undefined>;
  open: Set<net.Socket>;
  greeting: string;
  /** Every line the server received, in order. */
  lines: string[];
}

/**
 * A legacy line server: optional PROXY header first, then a greeting, then "echo <line>" — except
 * EHLO/HELO, answered with a multi-line 250 as an SMTP server would.
 */
async function startLegacy(opts: { proxy?: boolean; greeting?: string } = {}): Promise<Legacy> {
  const legacy: Legacy = {
    server: net.createServer(),
    port: 0,
    headers: [],
    open: new Set(),
    lines: [],
    greeting: opts.greeting ?? '* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] legacy server ready\r\n',
  };
  legacy.server.on('connection', (s) => {
    legacy.open.add(s);
    s.on('close', () => legacy.open.delete(s));
    s.on('error', () => {});
    let buf = Buffer.alloc(0);
    let state: 'header' | 'lines' = opts.proxy === false ? 'lines' : 'header';
    if (state === 'lines') {
      legacy.headers.push(undefined);
      s.write(legacy.greeting);
    }
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (state === 'header') {
        const r = decodeProxyHeader(buf);
        if (r.kind === 'incomplete') return;
        if (r.kind !== 'header') {
          s.destroy();
          return;
        }
        legacy.headers.push(r.header);
        buf = buf.subarray(r.length);
        state = 'lines';
        s.write(legacy.greeting);
      }
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf
          .subarray(0, i + 1)
          .toString('latin1')
          .trimEnd();
        buf = buf.subarray(i + 1);
        legacy.lines.push(line);
        if (line.endsWith('QUIT')) s.end('* BYE bye\r\n');
        else if (/^(EHLO|HELO) /.test(line)) s.write('250-legacy.example\r\n250 PIPELINING\r\n');
        else s.write(`echo ${line}\r\n`);
      }
    });
  });
  await new Promise<void>((r) => legacy.server.listen(0, '127.0.0.1', r));
  legacy.port = (legacy.server.address() as net.AddressInfo).port;
  return legacy;
}

async function stopLegacy(l: Legacy | undefined) {
  if (!l) return;
  for (const s of l.open) s.destroy();
  await new Promise((r) => l.server.close(r));
}

/** STARTTLS through the proxy, then the TLS client. */
async function starttls(port: number, tlsOptions: Parameters<LineClient['startTls']>[0] = {}) {
  const c = new LineClient(port);
  await c.until(/^\* OK/);
  c.write('a STARTTLS\r\n');
  await c.until(/^a OK/);
  return { c, t: await c.startTls(tlsOptions) };
}

let legacy: Legacy;
let proxy: TlsProxy;
let port: number;

beforeAll(async () => {
  legacy = await startLegacy();
  const p = await startProxy(
    'unused',
    { backend: { connect: `tcp:127.0.0.1:${legacy.port}`, proxyProtocol: 'v2' } },
    { clientCert: 'optional' },
  );
  proxy = p.proxy;
  port = p.port;
});
afterAll(async () => {
  await proxy?.close();
  await stopLegacy(legacy);
});

describe('connect backend with PROXY v2', () => {
  it('sends addresses, SNI and the SSL TLV with the client CN; the client never sees the server greeting', async () => {
    const before = legacy.headers.length;
    const { c, t } = await starttls(port, { cert: cert('client.pem'), key: cert('client.key') });
    t.socket.write('b NOOP\r\n');
    const out = await t.until(/echo b NOOP\r\n/);
    expect(out).toBe('echo b NOOP\r\n'); // nothing before it: the greeting was swallowed
    expect(legacy.headers.length).toBe(before + 1);
    const h = legacy.headers.at(-1)!;
    expect(h).toMatchObject({
      version: 2,
      command: 'proxy',
      family: 'tcp4',
      sourceAddress: '127.0.0.1',
      sourcePort: c.socket.localPort,
      destinationAddress: '127.0.0.1',
      destinationPort: port,
      authority: 'localhost',
    });
    expect(h.ssl!.client).toBe(PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS);
    expect(h.ssl!.verify).toBe(0);
    expect(h.ssl!.cn).toBe('alice');
    expect(h.ssl!.version).toBe(t.socket.getProtocol());
    expect(h.ssl!.cipher).toBe(t.socket.getCipher().name);
    t.socket.write('c QUIT\r\n');
    expect(await t.until(/BYE/)).toMatch(/^\* BYE bye/);
    // The server's close travels back: relay → TLS engine → close_notify → the client's socket.
    for (let i = 0; i < 100 && !c.socket.destroyed; i++) await sleep(20);
    expect(c.socket.destroyed).toBe(true);
  });

  it('without a client certificate: PP2_CLIENT_SSL only, verify non-zero, no CN', async () => {
    const { t } = await starttls(port);
    t.socket.write('b NOOP\r\n');
    await t.until(/echo b NOOP/);
    const h = legacy.headers.at(-1)!;
    expect(h.ssl).toMatchObject({ client: PP2_CLIENT_SSL });
    expect(h.ssl!.verify).not.toBe(0);
    expect(h.ssl!.cn).toBeUndefined();
    t.socket.destroy();
  });

  it('a client closing ends the backend connection too, and nothing leaks', async () => {
    const backend = new ConnectBackend(
      { connect: `tcp:127.0.0.1:${legacy.port}`, proxyProtocol: 'v2' },
      {
        dialect: {
          name: 'imap',
          backendGreeting: (d) => (d.includes(10) ? d.indexOf(10) + 1 : null),
        },
        logger: quietLogger(),
      },
    );
    const p = await startProxy('unused', { backend });
    try {
      // Warm up once so lazily created things do not count as leaks.
      const w = await starttls(p.port);
      w.t.socket.write('x NOOP\r\n');
      await w.t.until(/echo x/);
      w.t.socket.destroy();
      await sleep(200);
      const fds = fdCount();
      const open = legacy.open.size;
      for (let i = 0; i < 5; i++) {
        const { t } = await starttls(p.port);
        t.socket.write(`n${i} NOOP\r\n`);
        await t.until(new RegExp(`echo n${i}`));
        expect(backend.activeRelays).toBe(1);
        t.socket.destroy();
        for (let k = 0; k < 50 && backend.activeRelays > 0; k++) await sleep(20);
        expect(backend.activeRelays).toBe(0);
      }
      await sleep(200);
      expect(legacy.open.size).toBeLessThanOrEqual(open);
      expect(fdCount()).toBeLessThanOrEqual(fds);
    } finally {
      await p.proxy.close();
      backend.destroy();
    }
  });

  it('idleTimeoutMs: a quiet session is closed both ways, said once in the log', async () => {
    const p = await startProxy('unused', {
      backend: { connect: `tcp:127.0.0.1:${legacy.port}`, proxyProtocol: 'v2' },
      idleTimeoutMs: 300,
    });
    try {
      const open = legacy.open.size;
      const { c, t } = await starttls(p.port);
      t.socket.write('b NOOP\r\n');
      await t.until(/echo b NOOP/);
      expect(legacy.open.size).toBe(open + 1);
      for (let i = 0; i < 150 && !c.socket.destroyed; i++) await sleep(20);
      expect(c.socket.destroyed).toBe(true);
      for (let i = 0; i < 100 && legacy.open.size > open; i++) await sleep(20);
      expect(legacy.open.size).toBe(open);
      await sleep(400); // a second timer over the same bytes would have fired by now
      const idle = p.logger.lines.filter((l) => l.includes('relay idle too long'));
      expect(idle).toHaveLength(1);
    } finally {
      await p.proxy.close();
    }
  });

  it('relays a backend that refuses (* BYE) instead of swallowing it', async () => {
    const busy = await startLegacy({ greeting: '* BYE Too many connections\r\n' });
    const p = await startProxy('unused', {
      backend: { connect: `tcp:127.0.0.1:${busy.port}`, proxyProtocol: 'v2' },
    });
    try {
      const { t } = await starttls(p.port);
      expect(await t.until(/BYE/)).toMatch(/^\* BYE Too many connections/);
      t.socket.destroy();
    } finally {
      await p.proxy.close();
      await stopLegacy(busy);
    }
  });

  it('proxyProtocolTlvs: false sends addresses only; v1 sends a text line', async () => {
    for (const backend of [
      {
        connect: `tcp:127.0.0.1:${legacy.port}`,
        proxyProtocol: 'v2' as const,
        proxyProtocolTlvs: false,
      },
      { connect: `tcp:127.0.0.1:${legacy.port}`, proxyProtocol: 'v1' as const },
    ]) {
      const p = await startProxy('unused', { backend });
      try {
        const { c, t } = await starttls(p.port);
        t.socket.write('b NOOP\r\n');
        expect(await t.until(/echo b NOOP/)).toBe('echo b NOOP\r\n');
        const h = legacy.headers.at(-1)!;
        expect(h.version).toBe(backend.proxyProtocol === 'v1' ? 1 : 2);
        expect(h.sourcePort).toBe(c.socket.localPort);
        expect(h.tlvs).toEqual([]);
        expect(h.ssl).toBeUndefined();
        t.socket.destroy();
      } finally {
        await p.proxy.close();
      }
    }
  });

  it('without a PROXY header, the greeting sent at connect is still swallowed', async () => {
    const plain = await startLegacy({ proxy: false });
    const p = await startProxy('unused', { backend: { connect: `tcp:127.0.0.1:${plain.port}` } });
    try {
      const { t } = await starttls(p.port);
      await sleep(100);
      t.socket.write('b NOOP\r\n');
      expect(await t.until(/echo b NOOP/)).toBe('echo b NOOP\r\n');
      t.socket.destroy();
    } finally {
      await p.proxy.close();
      await stopLegacy(plain);
    }
  });
});

describe('connect backend, plaintext hand-off (SMTP MX mode)', () => {
  it('swallows the multi-line 220, replays EHLO and swallows its 250, then gives the server what the client sent', async () => {
    const mx = await startLegacy({ greeting: '220-legacy.example ESMTP\r\n220 ready\r\n' });
    const p = await startProxy('unused', {
      dialect: 'smtp',
      options: { plaintext: 'handoff' },
      backend: { connect: `tcp:127.0.0.1:${mx.port}`, proxyProtocol: 'v2' },
    });
    try {
      const c = new LineClient(p.port);
      await c.until(/^220 /);
      c.write('EHLO client.example\r\n');
      await c.until(/^250 /);
      c.write('MAIL FROM:<a@example.org>\r\n');
      const out = await c.until(/^echo /);
      // The server's own greeting and EHLO reply never reach the client, which got tlsproxy's.
      expect(out).toBe('echo MAIL FROM:<a@example.org>');
      expect(mx.lines).toEqual(['EHLO client.example', 'MAIL FROM:<a@example.org>']);
      const h = mx.headers.at(-1)!;
      expect(h.sourcePort).toBe(c.socket.localPort);
      expect(h.ssl).toBeUndefined(); // no TLS: no SSL TLV
      c.socket.destroy();
    } finally {
      await p.proxy.close();
      await stopLegacy(mx);
    }
  });
});

describe('connect backend down', () => {
  it('answers STARTTLS with NO [UNAVAILABLE] and keeps the preamble going', async () => {
    const gone = net.createServer();
    await new Promise<void>((r) => gone.listen(0, '127.0.0.1', r));
    const deadPort = (gone.address() as net.AddressInfo).port;
    await new Promise((r) => gone.close(r));
    const p = await startProxy('unused', {
      backend: { connect: `tcp:127.0.0.1:${deadPort}`, proxyProtocol: 'v2' },
    });
    try {
      const c = new LineClient(p.port);
      await c.until(/^\* OK/);
      c.write('a STARTTLS\r\n');
      expect(await c.until(/^a /)).toMatch(/^a NO \[UNAVAILABLE\]/m);
      c.write('b NOOP\r\n');
      expect(await c.until(/^b /)).toMatch(/^b OK/m);
      c.socket.destroy();
      expect(p.logger.lines.some((l) => l.includes('backend unreachable'))).toBe(true);
    } finally {
      await p.proxy.close();
    }
  });

  it('refuses a spec it cannot parse', async () => {
    await expect(startProxy('unused', { backend: { connect: 'udp:1.2.3.4:5' } })).rejects.toThrow(
      /tcp:HOST:PORT/,
    );
  });
});

describe('connect backend under pressure', () => {
  // Regression (review): past maxSpares, #addSpare destroyed the oldest spare in a loop that
  // waited for the spare's 'close' to take it off the list — which Node emits later, so the loop
  // never ended and the process hung at 100 % CPU (a client doing STARTTLS and leaving, ~130 times
  // a second, was enough with the default 256). Run in a child, so a hang is a failure, not a
  // test run that never ends.
  it('more spares than maxSpares: the oldest are closed, nothing hangs', {
    timeout: 15_000,
  }, async () => {
    const mx = await startLegacy({ proxy: false });
    try {
      const dist = new URL('../dist/index.js', import.meta.url).href;
      const script = `
        import { ConnectBackend } from ${JSON.stringify(dist)};
        const b = new ConnectBackend({ connect: 'tcp:127.0.0.1:${mx.port}' }, {
          dialect: { name: 'imap' },
          logger: { log() {} },
          maxSpares: 2,
        });
        for (let i = 0; i < 5; i++) if (!(await b.available())) throw new Error('unavailable');
        await new Promise((r) => setTimeout(r, 200));
        console.log('ok');
        await b.close();
        process.exit(0);
      `;
      const out = await new Promise<string>((resolve, reject) => {
        execFile(
          process.execPath,
          ['--input-type=module', '-e', script],
          { timeout: 10_000 },
          (err, stdout, stderr) =>
            err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
        );
      });
      expect(out.trim()).toBe('ok');
      // The child closed what it kept: the server sees every connection go.
      for (let i = 0; i < 50 && mx.open.size > 0; i++) await sleep(20);
      expect(mx.open.size).toBe(0);
    } finally {
      await stopLegacy(mx);
    }
  });

  // Regression (review): the client's socket had no 'error' listener while the proxy waited for
  // the server's greeting; a client reset then (here: SMTP MX mode, the client's own TCP
  // connection) was an uncaught ECONNRESET — the process exited.
  it('a client reset while the server has not greeted yet: the hand-off fails, the process goes on', async () => {
    const mute = net.createServer((s) => {
      s.on('error', () => {});
      muted.push(s);
    });
    const muted: net.Socket[] = [];
    await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
    const port = (mute.address() as net.AddressInfo).port;
    const p = await startProxy('unused', {
      dialect: 'smtp',
      options: { plaintext: 'handoff' },
      backend: { connect: `tcp:127.0.0.1:${port}`, greetingTimeoutMs: 5000 },
    });
    try {
      const c = new LineClient(p.port);
      await c.until(/^220 /);
      c.write('EHLO client.example\r\n');
      await c.until(/^250 /);
      c.write('MAIL FROM:<a@example.org>\r\n');
      for (let i = 0; i < 100 && muted.length === 0; i++) await sleep(20);
      expect(muted.length).toBe(1);
      await sleep(100); // the proxy is waiting for the greeting now
      c.socket.resetAndDestroy();
      for (let i = 0; i < 100 && !muted[0]!.destroyed && muted[0]!.readyState !== 'closed'; i++) {
        if (p.logger.lines.some((l) => /client went away|hand-off failed|handoff/i.test(l))) break;
        await sleep(20);
      }
      await sleep(200);
      // Still serving.
      const again = new LineClient(p.port);
      await again.until(/^220 /);
      again.socket.destroy();
    } finally {
      for (const s of muted) s.destroy();
      await p.proxy.close();
      await new Promise((r) => mute.close(r));
    }
  });
});
