// Issue 17 item 4: the engine's pre-TLS byte cap (maxPreambleBytes, 64 KiB) never ends a
// connection without a word: through a real TlsProxy on loopback the client reads LDAP's
// own error before the close, whether the dialect's limits answer first (the default) or the
// cap is crossed first and the engine sends the dialect's overflow() reply.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Logger, TlsProxy } from '@tlsproxy/core';
import { afterEach, describe, expect, it } from 'vitest';
import { dialect } from '../src/index.js';
import { noticeOfDisconnection, RESULT } from '../src/messages.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const cert = (f: string) => readFileSync(join(root, 'fixtures/certs', f));

const lines: string[] = [];
const logger: Logger = {
  log(level, message, fields = {}) {
    lines.push(`${level} ${message} ${JSON.stringify(fields)}`);
  },
};

let proxy: TlsProxy | undefined;
afterEach(async () => {
  await proxy?.close();
  proxy = undefined;
  lines.length = 0;
});

async function listen(extra: { maxPreambleBytes?: number; limits?: Record<string, number> }) {
  proxy = new TlsProxy({
    logger,
    pool: { identities: [{ cert: cert('server.pem'), key: cert('server.key') }] },
  });
  const l = await proxy.listen({
    dialect,
    listen: '127.0.0.1:0',
    backend: 'unix:/nonexistent/tlsproxy-test.sock',
    hostname: 'localhost',
    ...extra,
  });
  return (l.server.address() as net.AddressInfo).port;
}

/** Connect, wait for `ready` (the greeting; '' for none), write `first`, then `flood`; read until close. */
async function exchange(port: number, ready: string, first: string, flood: Uint8Array) {
  const s = net.connect(port, '127.0.0.1');
  let seen = '';
  s.setEncoding('latin1');
  s.on('data', (d: string) => {
    seen += d;
  });
  s.on('error', () => {});
  const closed = new Promise<void>((r) => s.once('close', () => r()));
  for (let i = 0; i < 200 && !seen.includes(ready); i++)
    await new Promise((r) => setTimeout(r, 10));
  const greeting = seen;
  seen = '';
  s.write(first);
  if (first !== '') {
    for (let i = 0; i < 200 && seen === ''; i++) await new Promise((r) => setTimeout(r, 10));
  }
  const afterFirst = seen;
  seen = '';
  s.write(flood);
  await Promise.race([closed, new Promise((r) => setTimeout(r, 8000))]);
  const wasClosed = s.destroyed || s.readyState === 'closed';
  s.destroy();
  return { greeting, afterFirst, reply: seen, closed: wasClosed };
}

describe('LDAP through the engine: too much before TLS', () => {
  it('70 KiB without an end: the dialect’s own error, then the close', async () => {
    const port = await listen({});
    const r = await exchange(
      port,
      '',
      '',
      Uint8Array.from([0x30, 0x83, 0x01, 0x86, 0xa0, ...new Uint8Array(70 * 1024)]),
    );
    expect(r.reply).toMatch(/^0/);
    expect(r.closed).toBe(true);
  }, 20_000);

  it('past maxPreambleBytes first: overflow() is written, then the close', async () => {
    const port = await listen({ maxPreambleBytes: 4096, limits: { maxPduSize: 200_000 } });
    const r = await exchange(
      port,
      '',
      '',
      Uint8Array.from([0x30, 0x83, 0x01, 0x86, 0xa0, ...new Uint8Array(5000)]),
    );
    expect(Buffer.from(r.reply, 'latin1').toString('hex')).toBe(
      Buffer.from(
        noticeOfDisconnection(RESULT.protocolError, 'too much data before StartTLS'),
      ).toString('hex'),
    );
    expect(r.closed).toBe(true);
    expect(lines.some((l) => l.includes('too many bytes before TLS'))).toBe(true);
  }, 20_000);
});
