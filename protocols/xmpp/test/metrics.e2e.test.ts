// Issue 17 item 4: the XMPP dialect's command reports reach the engine: through a real
// TlsProxy the refused SASL <auth/> is counted in tlsproxy_bad_commands_total and logged by name
// (packages/core connection-log.ts), and nothing else the client sent is logged.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Logger, TlsProxy } from '@tlsproxy/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dialect } from '../src/index.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const cert = (f: string) => readFileSync(join(root, 'fixtures/certs', f));

const lines: string[] = [];
const logger: Logger = {
  log(level, message, fields = {}) {
    lines.push(`${level} ${message} ${JSON.stringify(fields)}`);
  },
};

let proxy: TlsProxy;
let port: number;
let metricsUrl: string;

beforeAll(async () => {
  proxy = new TlsProxy({
    logger,
    pool: { identities: [{ cert: cert('server.pem'), key: cert('server.key') }] },
    metrics: { listen: '127.0.0.1:0' },
  });
  const l = await proxy.listen({
    dialect,
    listen: '127.0.0.1:0',
    backend: 'unix:/nonexistent/tlsproxy-test.sock',
    hostname: 'localhost',
    options: { domains: ['localhost'] },
  });
  port = (l.server.address() as net.AddressInfo).port;
  const addr = await proxy.metrics!.ready!;
  metricsUrl = `http://127.0.0.1:${addr.port}/metrics`;
});
afterAll(async () => {
  await proxy?.close();
});

async function badCommands(): Promise<number> {
  const text = await (await fetch(metricsUrl)).text();
  const m = /^tlsproxy_bad_commands_total\{dialect="xmpp"\} (\d+)$/m.exec(text);
  return m ? Number(m[1]) : 0;
}

/** Write each chunk after the previous answer; resolve with everything read until close. */
async function session(chunks: Uint8Array[]): Promise<string> {
  const s = net.connect(port, '127.0.0.1');
  let seen = '';
  s.setEncoding('latin1');
  s.on('data', (d: string) => {
    seen += d;
  });
  s.on('error', () => {});
  const closed = new Promise<void>((r) => s.once('close', () => r()));
  await new Promise<void>((r) => s.once('connect', () => r()));
  for (const c of chunks) {
    const before = seen.length;
    s.write(c);
    for (let i = 0; i < 300 && seen.length === before; i++)
      await new Promise((r) => setTimeout(r, 10));
  }
  s.end();
  await Promise.race([closed, new Promise((r) => setTimeout(r, 5000))]);
  s.destroy();
  return seen;
}

describe('XMPP command reports through the engine', () => {
  it('a refused SASL <auth/> is counted and logged by name, without its content', async () => {
    const before = await badCommands();
    await session([
      new TextEncoder().encode(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
      ),
      new TextEncoder().encode(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAGh1bnRlcjI=</auth>",
      ),
      new TextEncoder().encode('<presence/>'),
    ]);
    let after = before;
    for (let i = 0; i < 100 && after < before + 2; i++) {
      await new Promise((r) => setTimeout(r, 20));
      after = await badCommands();
    }
    expect(after - before).toBe(2);
    expect(lines.filter((l) => l.includes('bad command')).join('\n')).toMatch(
      /"command":"AUTH"[\s\S]*"command":"PRESENCE"/,
    );
    expect(lines.join('\n')).not.toContain('AGFsaWNlAGh1bnRlcjI=');
  }, 20_000);
});
