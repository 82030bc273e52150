// The walking skeleton end to end: a client speaks IMAP to tlsproxy, says STARTTLS, completes a
// real TLS handshake, and its connection lands in a separate backend process (the example
// backend, built on @tlsproxy/backend) that called accept().

import type { ChildProcess } from 'node:child_process';
import type { HandoffInfo } from '@tlsproxy/backend';
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TlsProxy } from '../src/index.js';
import { cert, type Events, LineClient, sleep, startBackend, startProxy } from './helpers.js';

let backend: { child: ChildProcess; path: string; events: Events };
let proxy: TlsProxy;
let port: number;
let logLines: string[];

beforeAll(async () => {
  backend = await startBackend(['--refuse-name', 'refused.example.test']);
  const p = await startProxy(
    `unix:${backend.path}`,
    { checkServerName: true },
    { clientCert: 'optional' },
  );
  proxy = p.proxy;
  port = p.port;
  logLines = p.logger.lines;
});
afterAll(async () => {
  await proxy?.close();
  backend?.child.kill();
});

describe('IMAP STARTTLS end to end', () => {
  it('imapflow logs in through tlsproxy to a backend in another process', async () => {
    const client = new ImapFlow({
      host: '127.0.0.1',
      port,
      secure: false,
      doSTARTTLS: true,
      servername: 'localhost',
      auth: { user: 'alice', pass: 'secret' },
      tls: { ca: cert('ca.pem'), servername: 'localhost', minVersion: 'TLSv1.2' },
      logger: false,
    });
    await client.connect();
    const box = await client.mailboxOpen('INBOX');
    expect(box.exists).toBe(0);
    await client.logout();
    const conn = await backend.events.next((e) => e.event === 'connection');
    const info = conn.info as unknown as HandoffInfo;
    expect(info.dialect).toBe('imap');
    expect(info.serverName).toBe('localhost');
    expect(info.tls!.version).toMatch(/^TLSv1\.[23]$/);
    // The example backend shows that a key came, never the key itself.
    expect(info.controlKey).toBe('(present, not shown)');
    expect(info.clientIdentity).toBeNull();
    expect(info.remoteAddress).toBe('127.0.0.1');
    expect(info.localPort).toBe(port);
    expect(typeof info.dialectState.tag).toBe('string');
  });

  it('gives the backend the verified client identity from a client certificate', async () => {
    const c = new LineClient(port);
    await c.until(/^\* OK/);
    c.write('a STARTTLS\r\n');
    await c.until(/^a OK/);
    const t = await c.startTls({ cert: cert('client.pem'), key: cert('client.key') });
    t.socket.write('b XTLSINFO\r\n');
    const out = await t.until(/b OK/);
    expect(out).toContain('CN=alice');
    const conn = await backend.events.next((e) => e.event === 'connection');
    const id = (conn.info as unknown as HandoffInfo).clientIdentity!;
    expect(id.subject).toContain('CN=alice');
    expect(id.san.email).toEqual(['alice@example.test']);
    expect(id.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    t.socket.destroy();
  });

  it('never lets a command pipelined after STARTTLS reach TLS or the backend (one write)', async () => {
    const c = new LineClient(port);
    await c.until(/^\* OK/);
    c.write('a STARTTLS\r\nb NOOP\r\n');
    const goAhead = await c.until(/^a OK/);
    expect(goAhead).not.toMatch(/^b /m);
    const t = await c.startTls();
    await sleep(200);
    expect(t.buf).toBe(''); // nothing answered "b NOOP" inside TLS
    t.socket.write('c NOOP\r\n');
    expect(await t.until(/c OK/)).not.toMatch(/^b /m);
    const conn = await backend.events.next((e) => e.event === 'connection');
    const id = (conn.info as Record<string, unknown>).connectionId;
    const cmds = backend.events.all
      .filter((e) => e.event === 'command' && e.connectionId === id)
      .map((e) => e.tag);
    expect(cmds).toEqual(['c']);
    expect(logLines.some((l) => l.includes('discarded bytes sent after STARTTLS'))).toBe(true);
    t.socket.destroy();
  });

  it('drops a command pipelined in a separate write before the go-ahead was read', async () => {
    const c = new LineClient(port);
    await c.until(/^\* OK/);
    c.write('a STARTTLS\r\n');
    c.write('b LOGIN mallory x\r\n');
    await c.until(/^a OK/);
    const t = await c.startTls();
    t.socket.write('c NOOP\r\n');
    await t.until(/c OK/);
    const conn = await backend.events.next((e) => e.event === 'connection');
    const id = (conn.info as Record<string, unknown>).connectionId;
    const cmds = backend.events.all
      .filter((e) => e.event === 'command' && e.connectionId === id)
      .map((e) => e.tag);
    expect(cmds).toEqual(['c']);
    t.socket.destroy();
  });

  it('fails the handshake for a name the backend refuses; the backend gets no connection', async () => {
    const before = backend.events.all.filter((e) => e.event === 'connection').length;
    const c = new LineClient(port);
    await c.until(/^\* OK/);
    c.write('a STARTTLS\r\n');
    await c.until(/^a OK/);
    await expect(c.startTls({ servername: 'refused.example.test' })).rejects.toThrow(
      /unrecognized name/i,
    );
    await sleep(200);
    expect(backend.events.all.filter((e) => e.event === 'connection').length).toBe(before);
  });

  it('answers refused authentication before TLS in IMAP terms', async () => {
    const c = new LineClient(port);
    const greeting = await c.until(/^\* OK/);
    expect(greeting).toMatch(/STARTTLS/);
    expect(greeting).toMatch(/LOGINDISABLED/);
    c.write('a LOGIN alice secret\r\n');
    expect(await c.until(/^a /)).toMatch(/^a NO \[PRIVACYREQUIRED\]/m);
    c.write('b LOGOUT\r\n');
    expect(await c.until(/^b /)).toMatch(/^\* BYE/m);
    c.socket.destroy();
  });
});

describe('no backend', () => {
  it('answers STARTTLS with NO [UNAVAILABLE] and keeps the preamble going', async () => {
    const { proxy: p, port: pt } = await startProxy('unix:/nonexistent/tlsproxy-test.sock');
    try {
      const c = new LineClient(pt);
      await c.until(/^\* OK/);
      c.write('a STARTTLS\r\n');
      const r = await c.until(/^a /);
      expect(r).toMatch(/^a NO \[UNAVAILABLE\]/m);
      c.write('b NOOP\r\n');
      expect(await c.until(/^b /)).toMatch(/^b OK/m);
      c.socket.destroy();
    } finally {
      await p.close();
    }
  });
});
