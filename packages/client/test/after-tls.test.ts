// ClientDialect.afterTls: the server's answer to the preamble that comes first inside TLS
// (cupsd re-answers the RFC 2817 OPTIONS * over TLS) never reaches the application; what
// follows it does, in order. The toy server's "welcome\n" plays that answer here.
import type { Dialect } from '@tlsproxy/dialect-kit';
import { socketpair } from '@tlsproxy/fdpass';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dropAfterTls } from '../src/after-tls.js';
import { connectStartTls, connectStartTlsFd } from '../src/index.js';
import { viaEngine } from './engine.js';
import { certs, type ToyServer, toy, toyServer } from './toy.js';

const withJudge = (afterTls: (d: Uint8Array) => number | null): Dialect => ({
  ...toy,
  client: { ...toy.client!, afterTls },
});
const WELCOME = 'welcome\n'.length;
const text = (d: Uint8Array) => Buffer.from(d).toString('latin1');

function readUntil(socket: import('node:net').Socket, end: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.endsWith(end)) resolve(got);
    });
    socket.once('error', reject);
  });
}

describe('afterTls', () => {
  let server: ToyServer;
  beforeAll(async () => {
    server = await toyServer();
  });
  afterAll(() => server.close());
  const opts = (dialect: Dialect) => ({
    ...viaEngine,
    dialect,
    host: '127.0.0.1',
    port: server.port,
    serverName: 'localhost',
    ca: certs.ca,
    timeoutMs: 5000,
  });

  it('drops exactly the octets the judge names; the application sees the rest in order', async () => {
    const seen: string[] = [];
    const dialect = withJudge((d) => {
      seen.push(text(d));
      return text(d).startsWith('welcome\n') ? WELCOME : null;
    });
    const r = await connectStartTls(opts(dialect));
    r.socket.write('ping\n');
    // The greeting (toLocal), then the echo — never the dropped "welcome".
    expect(await readUntil(r.socket, 'PING\n')).toBe('+READY toy STARTTLS\r\nPING\n');
    expect(seen[0]?.startsWith('w')).toBe(true);
    r.socket.destroy();
  });

  it('0: nothing dropped', async () => {
    const r = await connectStartTlsFd(opts(withJudge(() => 0)));
    expect(r.toLocal.toString()).toBe('+READY toy STARTTLS\r\nwelcome\n');
    r.fd.close();
  });

  it('a server silent after the handshake has nothing to drop (bounded wait)', async () => {
    const r = await connectStartTlsFd({ ...opts(withJudge(() => null)), timeoutMs: 800 });
    // The judge never decided on "welcome\n" alone: after the wait it is delivered, not lost.
    expect(r.toLocal.toString()).toBe('+READY toy STARTTLS\r\nwelcome\n');
    r.fd.close();
  });
});

describe('dropAfterTls on a socketpair', () => {
  it('an answer that never ends within maxBytes: refused and the descriptor closed', async () => {
    const [mine, theirs] = socketpair();
    const peer = theirs.toSocket();
    peer.write(Buffer.alloc(4096, 0x41));
    await expect(dropAfterTls(mine, () => null, 5000, 1024)).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_CLIENT_REFUSED',
    });
    await new Promise<void>((resolve) => peer.once('close', () => resolve()).resume());
  });

  it('the server closing before the answer is complete: refused', async () => {
    const [mine, theirs] = socketpair();
    const peer = theirs.toSocket();
    peer.end('HTTP/1.1 200');
    await expect(dropAfterTls(mine, () => null, 5000)).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_CLIENT_REFUSED',
    });
  });

  it('split answers: the verdict comes when complete; octets after it are kept', async () => {
    const [mine, theirs] = socketpair();
    const peer = theirs.toSocket();
    const judge = (d: Uint8Array) => {
      const t = Buffer.from(d).toString('latin1');
      return t.includes('END\n') ? t.indexOf('END\n') + 4 : null;
    };
    const pending = dropAfterTls(mine, judge, 5000);
    peer.write('AN');
    setTimeout(() => peer.write('SWER END\nkept'), 20);
    const { fd, rest } = await pending;
    expect(rest.toString()).toBe('kept');
    fd.close();
    peer.destroy();
  });
});
