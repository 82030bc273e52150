// Real clients through tlsproxy to an SMTP backend built on @tlsproxy/backend and smtp-server:
// nodemailer with STARTTLS required; a raw client that pipelines plaintext after STARTTLS; and MX
// mode, where senders without STARTTLS are handed to the backend in plaintext.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { type Logger, TlsProxy } from '@tlsproxy/core';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../../fixtures/engine.mjs';
import { dialect } from '../src/index.js';
import { type SmtpBackend, startSmtpBackend } from './smtp-backend.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const cert = (f: string) => readFileSync(join(root, 'fixtures/certs', f));

const lines: string[] = [];
const logger: Logger = {
  log: (level, message, fields = {}) =>
    void lines.push(`${level} ${message} ${JSON.stringify(fields)}`),
};

let backend: SmtpBackend;
let proxy: TlsProxy;
let port: number; // plaintext: refuse
let mxPort: number; // plaintext: handoff

/** A message with a dot-stuffing case, a long line, 8-bit octets and CRLF throughout. */
const MESSAGE = Buffer.concat([
  Buffer.from(
    'From: alice@example.test\r\nTo: bob@example.test\r\nSubject: through tlsproxy\r\n' +
      'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n' +
      'Hello Bob,\r\n.\r\n..a line that starts with dots\r\n' +
      `${'x'.repeat(900)}\r\n`,
  ),
  Buffer.from('gr\u00fc\u00dfe\r\n', 'utf8'),
]);

beforeAll(async () => {
  backend = await startSmtpBackend(join(tmpdir(), `smtp-e2e-${process.pid}.sock`));
  proxy = new TlsProxy({
    logger,
    createEngine,
    pool: { identities: [{ cert: cert('server.pem'), key: cert('server.key') }] },
  });
  const listen = async (options: Record<string, unknown>) => {
    const l = await proxy.listen({
      // the source under test, not a possibly stale dist/ (the interop test loads it by name)
      dialect,
      listen: '127.0.0.1:0',
      backend: `unix:${backend.path}`,
      hostname: 'mx.example.test',
      options,
    });
    return (l.server.address() as net.AddressInfo).port;
  };
  port = await listen({});
  mxPort = await listen({ plaintext: 'handoff' });
});
afterAll(async () => {
  await proxy?.close();
  await backend?.close();
});

function transport(p: number, extra: Record<string, unknown>) {
  return nodemailer.createTransport({
    host: '127.0.0.1',
    port: p,
    secure: false,
    name: 'sender.example.test',
    tls: { ca: cert('ca.pem'), servername: 'localhost' },
    connectionTimeout: 5000,
    greetingTimeout: 5000,
    socketTimeout: 5000,
    ...extra,
  } as never);
}

/** A line client on a raw socket. */
function rawClient(p: number) {
  const socket = net.connect(p, '127.0.0.1');
  let buf = '';
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => {
    buf += d;
  });
  socket.on('error', () => {});
  return {
    socket,
    async until(re: RegExp, timeoutMs = 5000): Promise<string> {
      const end = Date.now() + timeoutMs;
      while (!re.test(buf)) {
        if (Date.now() > end)
          throw new Error(`timed out waiting for ${re}; have ${JSON.stringify(buf)}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      const out = buf;
      buf = '';
      return out;
    },
  };
}

describe('SMTP STARTTLS end to end', () => {
  it('nodemailer (requireTLS) delivers a message whole through tlsproxy', async () => {
    const t = transport(port, { requireTLS: true });
    const result = await t.sendMail({
      envelope: { from: 'alice@example.test', to: ['bob@example.test'] },
      raw: MESSAGE,
    });
    expect(result.accepted).toEqual(['bob@example.test']);
    const got = await backend.next();
    expect(got.message.equals(MESSAGE)).toBe(true);
    expect(got.from).toBe('alice@example.test');
    expect(got.to).toEqual(['bob@example.test']);
    expect(got.secure).toBe(true);
    expect(got.info.dialect).toBe('smtp');
    expect(got.info.handoff).toBe('plain');
    expect(got.info.tls?.version).toMatch(/^TLSv1\.[23]$/);
    expect(got.info.serverName).toBe('localhost');
    expect(got.info.dialectState).toEqual({ ehlo: 'sender.example.test', esmtp: true });
    expect(got.buffered.length).toBe(0);
    t.close();
  });

  it('refuses mail without STARTTLS with 530 when plaintext is "refuse"', async () => {
    const t = transport(port, { ignoreTLS: true });
    await expect(
      t.sendMail({ envelope: { from: 'a@example.test', to: ['b@example.test'] }, raw: MESSAGE }),
    ).rejects.toThrow(/530/);
    t.close();
  });

  it('never lets commands pipelined after STARTTLS reach TLS or the backend', async () => {
    const c = rawClient(port);
    expect(await c.until(/^220 .*\r\n/)).toBe('220 mx.example.test ESMTP Service ready\r\n');
    c.socket.write('EHLO evil.example\r\n');
    expect(await c.until(/250 STARTTLS\r\n/)).toContain('250-PIPELINING');
    // one write: STARTTLS and an injected transaction (CVE-2011-0411)
    c.socket.write(
      'STARTTLS\r\nMAIL FROM:<evil@example.test>\r\nRCPT TO:<victim@example.test>\r\n',
    );
    expect(await c.until(/\r\n/)).toBe('220 2.0.0 Ready to start TLS\r\n');
    c.socket.removeAllListeners('data');
    const s = tls.connect({ socket: c.socket, servername: 'localhost', ca: cert('ca.pem') });
    await new Promise<void>((resolve, reject) => {
      s.once('secureConnect', resolve);
      s.once('error', reject);
    });
    let buf = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      buf += d;
    });
    // no greeting inside TLS; the first thing the backend says is its EHLO reply
    s.write('EHLO again.example\r\n');
    const deadline = Date.now() + 5000;
    while (!/^250 /m.test(buf) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10));
    expect(buf).toMatch(/^250-backend\.example/);
    expect(buf).not.toMatch(/^220/m);
    // the backend has no transaction: RCPT without MAIL is a bad sequence there
    buf = '';
    s.write('RCPT TO:<victim@example.test>\r\n');
    while (!/\r\n$/.test(buf) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(buf).toMatch(/^503 /);
    s.destroy();
    expect(lines.some((l) => /discarded bytes sent after STARTTLS/.test(l))).toBe(true);
  });

  it('answers HTTP sent to the port with 554 and closes', async () => {
    const c = rawClient(port);
    await c.until(/^220 /);
    c.socket.write('GET / HTTP/1.1\r\nHost: mx.example.test\r\n\r\n');
    expect(await c.until(/\r\n/)).toMatch(/^554 5\.7\.0 /);
    if (!c.socket.closed) await new Promise((r) => c.socket.once('close', r));
  });
});

describe('MX mode (plaintext: "handoff")', () => {
  it('a plaintext sender (nodemailer, ignoreTLS) delivers byte-exact to the backend', async () => {
    const t = transport(mxPort, { ignoreTLS: true });
    const result = await t.sendMail({
      envelope: { from: 'carol@example.test', to: ['dave@example.test'] },
      raw: MESSAGE,
    });
    expect(result.accepted).toEqual(['dave@example.test']);
    const got = await backend.next();
    expect(got.message.equals(MESSAGE)).toBe(true);
    expect(got.secure).toBe(false);
    expect(got.info.handoff).toBe('plaintext');
    expect(got.info.tls).toBeNull();
    expect(got.info.dialectState).toEqual({ ehlo: 'sender.example.test', esmtp: true });
    expect(got.buffered.toString('latin1')).toMatch(/^MAIL FROM:<carol@example\.test>/);
    t.close();
  });

  it('a raw sender pipelining the whole transaction gets every reply from the backend', async () => {
    const c = rawClient(mxPort);
    await c.until(/^220 /);
    c.socket.write('EHLO raw.example\r\n');
    await c.until(/250 STARTTLS\r\n/);
    const body = 'Subject: raw\r\n\r\nline one\r\n..dot\r\n';
    c.socket.write(`MAIL FROM:<e@example.test>\r\nRCPT TO:<f@example.test>\r\nDATA\r\n`);
    // DATA must be answered before the content is sent (RFC 2920 section 3.1)
    const replies = await c.until(/^354 /m);
    expect(replies).toMatch(/^250 .*\r\n250 .*\r\n354 /);
    c.socket.write(`${body}.\r\nQUIT\r\n`);
    expect(await c.until(/^221 /m)).toMatch(/^250 /);
    const got = await backend.next();
    expect(got.message.toString('latin1')).toBe('Subject: raw\r\n\r\nline one\r\n.dot\r\n');
    expect(got.info.dialectState).toEqual({ ehlo: 'raw.example', esmtp: true });
    c.socket.destroy();
  });

  it('STARTTLS still works on the MX listener', async () => {
    const t = transport(mxPort, { requireTLS: true });
    await t.sendMail({
      envelope: { from: 'g@example.test', to: ['h@example.test'] },
      raw: MESSAGE,
    });
    const got = await backend.next();
    expect(got.info.handoff).toBe('plain');
    expect(got.message.equals(MESSAGE)).toBe(true);
    t.close();
  });
});

describe('no backend', () => {
  let dead: number;
  let deadMx: number;
  beforeAll(async () => {
    const missing = `unix:${join(tmpdir(), `smtp-e2e-missing-${process.pid}.sock`)}`;
    const listen = async (options: Record<string, unknown>) => {
      const l = await proxy.listen({
        dialect,
        listen: '127.0.0.1:0',
        backend: missing,
        hostname: 'mx.example.test',
        options,
      });
      return (l.server.address() as net.AddressInfo).port;
    };
    dead = await listen({});
    deadMx = await listen({ plaintext: 'handoff' });
  });

  it('STARTTLS gets 454 and the preamble goes on', async () => {
    const c = rawClient(dead);
    await c.until(/^220 /);
    c.socket.write('EHLO c.example\r\nSTARTTLS\r\n');
    expect(await c.until(/^454 /m)).toMatch(
      /250 STARTTLS\r\n454 4\.7\.0 TLS not available due to temporary reason\r\n$/,
    );
    c.socket.write('NOOP\r\nQUIT\r\n');
    expect(await c.until(/^221 /m)).toBe('250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n');
    c.socket.destroy();
  });

  it('an MX hand-off gets 421 and is closed', async () => {
    const c = rawClient(deadMx);
    await c.until(/^220 /);
    c.socket.write('EHLO c.example\r\n');
    await c.until(/250 STARTTLS\r\n/);
    c.socket.write('MAIL FROM:<a@example.test>\r\n');
    expect(await c.until(/\r\n/)).toMatch(/^421 4\.3\.0 mx\.example\.test /);
    if (!c.socket.closed) await new Promise((r) => c.socket.once('close', r));
  });
});
