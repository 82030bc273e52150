// POP3 end to end: a client speaks POP3 to tlsproxy (dialect 'pop3', loaded by name as a user
// would), says STLS, completes a real TLS handshake, and its connection lands in a separate
// backend process (pop3-backend.mjs, built on @tlsproxy/backend) that called accept().
import type { HandoffInfo } from '@tlsproxy/backend';
import type { TlsProxy } from '@tlsproxy/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Backend,
  multiLineBody,
  Pop3Client,
  sleep,
  startBackend,
  startProxy,
} from './e2e-helpers.js';

const MESSAGE =
  'From: alice@example.test\r\nTo: bob@example.test\r\nSubject: hello\r\n\r\n' +
  'Hello over POP3 through tlsproxy.\r\n.a line that starts with a dot\r\n';

let backend: Backend;
let proxy: TlsProxy;
let port: number;
let logLines: string[];

beforeAll(async () => {
  backend = await startBackend();
  const p = await startProxy(`unix:${backend.path}`);
  proxy = p.proxy;
  port = p.port;
  logLines = p.logger.lines;
});
afterAll(async () => {
  await proxy?.close();
  backend?.child.kill();
});

const commandsOf = (connectionId: unknown) =>
  backend.events
    .filter((e) => e.event === 'command' && e.connectionId === connectionId)
    .map((e) => [e.command, ...(e.args as string[])].join(' '));

async function connectionAfter(count: number) {
  await backend.waitFor(
    () => backend.events.filter((e) => e.event === 'connection').length > count,
  );
  return backend.events.filter((e) => e.event === 'connection')[count]!;
}
const connections = () => backend.events.filter((e) => e.event === 'connection').length;

describe('POP3 STLS end to end', () => {
  it('logs in and retrieves a message through tlsproxy (raw node:tls client)', async () => {
    const before = connections();
    const c = new Pop3Client(port);
    expect(await c.reply()).toBe('+OK POP3 server ready.\r\n');
    const capa = await c.command('CAPA', true);
    expect(capa).toMatch(/^STLS$/m);
    expect(capa).not.toMatch(/^USER$/m);
    expect(await c.command('USER alice')).toMatch(/^-ERR \[AUTH\] /);
    expect(await c.command('STLS')).toBe('+OK Begin TLS negotiation\r\n');
    await c.startTls();
    // RFC 2595 section 4: no new greeting; the client asks for capabilities again.
    expect(await c.command('CAPA', true)).toMatch(/^USER$/m);
    expect(await c.command('USER alice')).toBe('+OK\r\n');
    expect(await c.command('PASS secret')).toMatch(/^\+OK Logged in/);
    expect(await c.command('STAT')).toBe(`+OK 1 ${MESSAGE.length}\r\n`);
    expect(await c.command('LIST', true)).toBe(`+OK 1 messages:\r\n1 ${MESSAGE.length}\r\n.\r\n`);
    const retr = await c.command('RETR 1', true);
    expect(multiLineBody(retr)).toBe(MESSAGE);
    // STLS inside TLS goes to the backend, which refuses it (RFC 2595 section 4)
    expect(await c.command('STLS')).toMatch(/^-ERR /);
    expect(await c.command('QUIT')).toBe('+OK Logging out.\r\n');
    c.end();

    const conn = await connectionAfter(before);
    const info = conn.info as unknown as HandoffInfo;
    expect(info.dialect).toBe('pop3');
    expect(info.handoff).toBe('plain');
    expect(info.serverName).toBe('localhost');
    expect(info.tls!.version).toMatch(/^TLSv1\.[23]$/);
    expect(info.controlKey).toMatch(/^[0-9a-f]{32}$/);
    expect(info.localPort).toBe(port);
    expect(info.dialectState).toEqual({});
    expect(commandsOf(info.connectionId)).toEqual([
      'CAPA',
      'USER alice',
      'PASS secret',
      'STAT',
      'LIST',
      'RETR 1',
      'STLS',
      'QUIT',
    ]);
  });

  it('never lets USER pipelined after STLS in the same write reach TLS or the backend', async () => {
    const before = connections();
    const c = new Pop3Client(port);
    await c.reply();
    c.write('STLS\r\nUSER mallory\r\n');
    expect(await c.reply()).toBe('+OK Begin TLS negotiation\r\n');
    expect(c.pending).toBe('');
    await c.startTls();
    await sleep(200);
    expect(c.pending).toBe(''); // nothing answered "USER mallory", in plaintext or inside TLS
    expect(await c.command('USER alice')).toBe('+OK\r\n');
    c.end();
    const info = (await connectionAfter(before)).info as unknown as HandoffInfo;
    expect(commandsOf(info.connectionId)).toEqual(['USER alice']);
    expect(logLines.some((l) => /discarded/.test(l))).toBe(true);
  });

  it('answers the pre-TLS commands in POP3 terms and closes on QUIT', async () => {
    const c = new Pop3Client(port);
    await c.reply();
    expect(await c.command('NOOP')).toMatch(/^-ERR /);
    expect(await c.command('FROB')).toBe('-ERR Unknown command.\r\n');
    expect(await c.command('STLS now')).toBe('-ERR STLS takes no arguments.\r\n');
    expect(await c.command('PASS secret')).toMatch(/^-ERR \[AUTH\] /);
    expect(await c.command('QUIT')).toBe('+OK Logging out.\r\n');
    await sleep(100);
    expect(c.isClosed).toBe(true);
  });
});

describe('no backend', () => {
  it('answers STLS with -ERR [SYS/TEMP] and keeps the preamble going', async () => {
    const { proxy: p, port: pt } = await startProxy('unix:/nonexistent/tlsproxy-pop3-test.sock');
    try {
      const c = new Pop3Client(pt);
      await c.reply();
      expect(await c.command('STLS')).toBe('-ERR [SYS/TEMP] TLS not available right now\r\n');
      expect(await c.command('CAPA', true)).toMatch(/^STLS$/m);
      expect(await c.command('QUIT')).toBe('+OK Logging out.\r\n');
      c.end();
    } finally {
      await p.close();
    }
  });
});
