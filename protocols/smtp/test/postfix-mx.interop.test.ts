// MX mode in front of a real Postfix reached as a legacy (connect-mode) backend: a sender without
// STARTTLS is handed over in plaintext, and Postfix must see the sender's EHLO first — the dialect
// answered it, so the engine replays it (backendReplay) and swallows Postfix's 250. Without the
// replay Postfix answers MAIL with "503 5.5.1 Error: send HELO/EHLO first".
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { silentLogger, TlsProxy } from '@tlsproxy/core';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dialect } from '../src/index.js';
import { type Postfix, startPostfix } from './postfix.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const cert = (f: string) => readFileSync(join(root, 'fixtures/certs', f));

let postfix: Postfix;
let proxy: TlsProxy;
let port: number;

beforeAll(async () => {
  postfix = await startPostfix();
  proxy = new TlsProxy({
    logger: silentLogger,
    pool: { identities: [{ cert: cert('server.pem'), key: cert('server.key') }] },
  });
  const l = await proxy.listen({
    dialect,
    listen: '127.0.0.1:0',
    backend: { connect: `tcp:127.0.0.1:${postfix.port}` },
    hostname: 'mx.example.test',
    options: { plaintext: 'handoff' },
  });
  port = (l.server.address() as net.AddressInfo).port;
}, 30_000);
afterAll(async () => {
  await proxy?.close();
  await postfix?.stop();
});

async function waitForLog(re: RegExp): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const text = postfix.log();
    if (re.test(text)) return text;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no ${re} in the Postfix log:\n${postfix.log()}`);
}

describe('MX mode into Postfix (connect backend)', () => {
  it('nodemailer without STARTTLS: Postfix queues the message, having seen the EHLO once', async () => {
    const t = nodemailer.createTransport({
      host: '127.0.0.1',
      port,
      secure: false,
      ignoreTLS: true,
      name: 'sender.example.test',
      connectionTimeout: 5000,
      greetingTimeout: 5000,
    });
    const result = await t.sendMail({
      envelope: { from: 'carol@sender.example.test', to: ['dave@mx.example.test'] },
      raw: 'Subject: via tlsproxy MX mode\r\n\r\nhello Postfix\r\n',
    });
    t.close();
    expect(result.accepted).toEqual(['dave@mx.example.test']);
    expect(result.response).toMatch(/^250 2\.0\.0 Ok: queued as /);
    // Postfix's own summary of the session: one EHLO (the replay), then the transaction.
    const log = await waitForLog(/disconnect from .* ehlo=1 mail=1 rcpt=1 data=1 /);
    expect(log).not.toMatch(/send HELO\/EHLO first/);
    expect(log).toMatch(/status=sent/);
  }, 20_000);

  it('a raw HELO sender gets Postfix’s replies to MAIL and RCPT, not 503', async () => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      buf += d;
    });
    const until = async (re: RegExp) => {
      for (let i = 0; i < 200 && !re.test(buf); i++) await new Promise((r) => setTimeout(r, 25));
      if (!re.test(buf)) throw new Error(`no ${re} in ${JSON.stringify(buf)}`);
      const out = buf;
      buf = '';
      return out;
    };
    await until(/^220 /);
    s.write('HELO old.example.test\r\n');
    await until(/^250 /m);
    s.write('MAIL FROM:<erin@old.example.test>\r\n');
    expect(await until(/^\d{3} .*\r\n/m)).toMatch(/^250 2\.1\.0 Ok\r\n$/);
    s.write('RCPT TO:<frank@elsewhere.example>\r\n');
    // Postfix refuses relaying: its own reply, proof the transaction is Postfix's now.
    expect(await until(/^\d{3} .*\r\n/m)).toMatch(/^554 5\.7\.1 .*Access denied/);
    s.write('QUIT\r\n');
    expect(await until(/^221 /m)).toMatch(/^221 /);
    s.destroy();
    await waitForLog(/disconnect from .* helo=1 mail=1 rcpt=0\/1 quit=1/);
  }, 20_000);
});
