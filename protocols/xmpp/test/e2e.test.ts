// XMPP end to end: a client opens a stream to tlsproxy (dialect xmpp), gets <proceed/>, runs the
// TLS handshake, and opens a new stream inside TLS; that stream lands in a backend built on
// @tlsproxy/backend (xmpp-backend.ts), which does SASL PLAIN and resource binding. Clients:
// @xmpp/client (in a child process, for NODE_EXTRA_CA_CERTS) and a raw node:tls one.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { type Logger, TlsProxy } from '@tlsproxy/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../../fixtures/engine.mjs';
import { dialect } from '../src/index.js';
import { startXmppBackend, type XmppBackend } from './xmpp-backend.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const cert = (f: string) => readFileSync(join(root, 'fixtures/certs', f));
const clientScript = fileURLToPath(new URL('./xmpp-client.mjs', import.meta.url));

const lines: string[] = [];
const logger: Logger = {
  log: (level, message, fields = {}) =>
    void lines.push(`${level} ${message} ${JSON.stringify(fields)}`),
};

let backend: XmppBackend;
let proxy: TlsProxy;
let port: number;
let deadPort: number;

beforeAll(async () => {
  backend = await startXmppBackend(join(tmpdir(), `xmpp-e2e-${process.pid}.sock`));
  proxy = new TlsProxy({
    logger,
    createEngine,
    pool: { identities: [{ cert: cert('server.pem'), key: cert('server.key') }] },
  });
  const l = await proxy.listen({
    dialect, // the source under test; the interop test loads it by name from dist/
    listen: '127.0.0.1:0',
    backend: `unix:${backend.path}`,
  });
  port = (l.server.address() as net.AddressInfo).port;
  const dead = await proxy.listen({
    dialect,
    listen: '127.0.0.1:0',
    backend: `unix:${join(tmpdir(), `xmpp-e2e-${process.pid}-none.sock`)}`,
  });
  deadPort = (dead.server.address() as net.AddressInfo).port;
});
afterAll(async () => {
  await proxy?.close();
  await backend?.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(get: () => T | undefined, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = get();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('timed out');
    await sleep(20);
  }
}

/** A raw client: plaintext until <proceed/>, then node:tls on the same socket. */
class RawClient {
  socket: net.Socket | tls.TLSSocket;
  buf = '';
  closed = false;
  constructor(p: number) {
    this.socket = net.connect(p, '127.0.0.1');
    this.attach();
  }
  attach() {
    this.socket.setEncoding('utf8');
    this.socket.on('data', (d: string) => {
      this.buf += d;
    });
    this.socket.on('error', () => {});
    this.socket.on('close', () => {
      this.closed = true;
    });
  }
  async until(pattern: RegExp, ms = 5000): Promise<string> {
    await waitFor(() => (pattern.test(this.buf) || this.closed ? true : undefined), ms);
    const out = this.buf;
    this.buf = '';
    return out;
  }
  startTls(): Promise<void> {
    const plain = this.socket;
    plain.removeAllListeners('data');
    return new Promise((resolve, reject) => {
      const t = tls.connect({ socket: plain, servername: 'localhost', ca: cert('ca.pem') }, () =>
        resolve(),
      );
      t.once('error', reject);
      this.socket = t;
      this.closed = false;
      this.attach();
    });
  }
}

const OPEN =
  "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' xml:lang='en'>";

describe('XMPP STARTTLS end to end', () => {
  it('@xmpp/client goes online with a bound JID through tlsproxy', async () => {
    const before = backend.sessions.length;
    const out = await new Promise<string>((resolve, reject) => {
      execFile(
        process.execPath,
        [clientScript, String(port), 'localhost', 'alice', 'secret'],
        {
          env: { ...process.env, NODE_EXTRA_CA_CERTS: join(root, 'fixtures/certs/ca.pem') },
          timeout: 20_000,
        },
        (err, stdout, stderr) =>
          err ? reject(new Error(`${err.message} ${stderr}`)) : resolve(stdout),
      );
    });
    expect(JSON.parse(out.trim())).toEqual({ online: 'alice@localhost/e2e' });
    const s = await waitFor(() => backend.sessions[before]);
    expect(s.authenticatedAs).toBe('alice');
    expect(s.boundJid).toBe('alice@localhost/e2e');
    const info = s.info;
    expect(info.dialect).toBe('xmpp');
    // @xmpp/starttls passes only `host` to tls.connect on an existing socket, so no SNI is sent
    expect(info.serverName).toBeNull();
    expect(info.tls!.version).toMatch(/^TLSv1\.[23]$/);
    expect(info.dialectState).toEqual({
      streamType: 'c2s',
      to: 'localhost',
      from: null,
      lang: null,
    });
    // nothing consumed: the backend's first bytes are the client's new stream header
    expect(s.first).toMatch(/^(<\?xml[^>]*\?>)?\s*<stream:stream /);
  });

  it('a raw client: proceed, TLS, new stream, SASL, bind; pipelined bytes never arrive', async () => {
    const before = backend.sessions.length;
    const c = new RawClient(port);
    c.socket.write(OPEN);
    const features = await c.until(/<\/stream:features>/);
    expect(features).toContain(
      "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>",
    );
    // pipelined after <starttls/>: must be discarded, never reach the backend
    c.socket.write(
      "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGV2ZQBldmls</auth>",
    );
    expect(await c.until(/<proceed/)).toBe("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    await c.startTls();
    c.socket.write(OPEN);
    expect(await c.until(/<\/stream:features>/)).toContain('<mechanism>PLAIN</mechanism>');
    c.socket.write(
      `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from('\0alice\0secret').toString('base64')}</auth>`,
    );
    expect(await c.until(/<success/)).toContain('<success');
    c.socket.write(OPEN);
    expect(await c.until(/<\/stream:features>/)).toContain('xmpp-bind');
    c.socket.write(
      "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>raw</resource></bind></iq>",
    );
    expect(await c.until(/<\/iq>/)).toContain('<jid>alice@localhost/raw</jid>');
    c.socket.write('</stream:stream>');
    await c.until(/<\/stream:stream>/);
    c.socket.destroy();
    const s = await waitFor(() => backend.sessions[before]);
    expect(s.elements).toEqual(['auth', 'iq']);
    expect(s.authenticatedAs).toBe('alice');
    expect(lines.some((l) => /discarded bytes sent after STARTTLS/.test(l))).toBe(true);
  });

  it('an s2s stream gets the same STARTTLS and its state', async () => {
    const before = backend.sessions.length;
    const c = new RawClient(port);
    c.socket.write(
      "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='chat.wild.example.test' from='remote.example' version='1.0'>",
    );
    const head = await c.until(/<\/stream:features>/);
    expect(head).toContain("xmlns='jabber:server'");
    expect(head).toContain("from='chat.wild.example.test'");
    c.socket.write("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    await c.until(/<proceed/);
    await c.startTls();
    c.socket.write(OPEN);
    await c.until(/<\/stream:features>/);
    c.socket.destroy();
    const s = await waitFor(() => backend.sessions[before]);
    expect(s.info.dialectState).toEqual({
      streamType: 's2s',
      to: 'chat.wild.example.test',
      from: 'remote.example',
      lang: null,
    });
  });

  it('refuses stanzas before TLS and unknown domains with stream errors', async () => {
    const c = new RawClient(port);
    c.socket.write(OPEN);
    await c.until(/<\/stream:features>/);
    c.socket.write(
      "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>",
    );
    // RFC 6120 section 6.4.5, as Prosody: a SASL failure, and the stream stays open
    expect(await c.until(/<\/failure>/)).toBe(
      "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><encryption-required/></failure>",
    );
    c.socket.write('<presence/>');
    expect(await c.until(/<\/stream:stream>/)).toBe(
      "<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Use of STARTTLS required</text></stream:error></stream:stream>",
    );
    await waitFor(() => (c.closed ? true : undefined));

    const d = new RawClient(port);
    d.socket.write(OPEN.replace("to='localhost'", "to='elsewhere.example'"));
    expect(await d.until(/<\/stream:stream>/)).toContain('<host-unknown ');
    await waitFor(() => (d.closed ? true : undefined));
  });

  it('no backend: <failure/>, the stream closed, then the connection', async () => {
    const c = new RawClient(deadPort);
    c.socket.write(OPEN);
    await c.until(/<\/stream:features>/);
    c.socket.write("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    expect(await c.until(/<\/stream:stream>/)).toBe(
      "<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>",
    );
    await waitFor(() => (c.closed ? true : undefined));
  });
});
