// MX mode in front of a real Postfix reached as a legacy (connect-mode) backend: a sender without
// STARTTLS is handed over in plaintext, and Postfix must see the sender's EHLO first — the dialect
// answered it, so the engine replays it (backendReplay) and swallows Postfix's 250. Without the
// replay Postfix (smtpd_helo_required = yes) answers MAIL with "503 5.5.1 Error: send HELO/EHLO
// first" — the control test below shows it — and the same holds behind a PROXY v2 header.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { silentLogger, TlsProxy } from '@tlsproxy/core';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../../fixtures/engine.mjs';
import { dialect } from '../src/index.js';
import { type Postfix, startPostfix } from './postfix.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const cert = (f: string) => readFileSync(join(root, 'fixtures/certs', f));

let postfix: Postfix;
let proxy: TlsProxy;
let port: number;
/** MX mode into the same Postfix behind a PROXY v2 header. */
let proxiedPort: number;
/** MX mode without the replay: the control that shows what the replay is for. */
let noReplayPort: number;

beforeAll(async () => {
  postfix = await startPostfix();
  proxy = new TlsProxy({
    logger: silentLogger,
    createEngine,
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
  const proxied = await proxy.listen({
    dialect,
    listen: '127.0.0.1:0',
    backend: { connect: `tcp:127.0.0.1:${postfix.proxyPort}`, proxyProtocol: 'v2' },
    hostname: 'mx.example.test',
    options: { plaintext: 'handoff' },
  });
  proxiedPort = (proxied.server.address() as net.AddressInfo).port;
  const { backendReplay: _, ...withoutReplay } = dialect;
  const noReplay = await proxy.listen({
    dialect: withoutReplay,
    listen: '127.0.0.1:0',
    // core keeps one connect backend per dialect name and spec: `proxyProtocol: false` makes
    // this spec another key, so this listener does not share the first one's (which replays).
    backend: { connect: `tcp:127.0.0.1:${postfix.port}`, proxyProtocol: false },
    hostname: 'mx.example.test',
    options: { plaintext: 'handoff' },
  });
  noReplayPort = (noReplay.server.address() as net.AddressInfo).port;
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

/** A raw SMTP client: `until(re)` waits for `re` in what arrived since the last call. */
function rawClient(to: number) {
  const s = net.connect(to, '127.0.0.1');
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
  return { s, until };
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
  it('behind a PROXY v2 header: Postfix sees the EHLO replayed, then MAIL, from the client’s address', async () => {
    const before = postfix.log().length;
    const { s, until } = rawClient(proxiedPort);
    await until(/^220 /);
    s.write('EHLO proxied.example.test\r\n');
    await until(/^250 /m);
    s.write('MAIL FROM:<gina@proxied.example.test>\r\n');
    expect(await until(/^\d{3} .*\r\n/m)).toMatch(/^250 2\.1\.0 Ok\r\n$/);
    s.write('QUIT\r\n');
    expect(await until(/^221 /m)).toMatch(/^221 /);
    s.destroy();
    // That smtpd accepts nothing without a PROXY header (smtpd_upstream_proxy_protocol), and it
    // counted one EHLO (ours, replayed in the client's name) before the MAIL.
    const session = / ehlo=1 mail=1 quit=1 commands=3/;
    for (let i = 0; i < 100 && !session.test(postfix.log().slice(before)); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const log = postfix.log().slice(before);
    expect(log).toMatch(session);
    expect(log).not.toMatch(/send HELO\/EHLO first|haproxy read/);
  }, 20_000);

  it('control: without backendReplay Postfix refuses the MAIL (503 send HELO/EHLO first)', async () => {
    const { s, until } = rawClient(noReplayPort);
    await until(/^220 /);
    s.write('EHLO control.example.test\r\n');
    await until(/^250 /m);
    s.write('MAIL FROM:<hal@control.example.test>\r\n');
    expect(await until(/^\d{3} .*\r\n/m)).toMatch(/^503 5\.5\.1 Error: send HELO\/EHLO first/);
    s.destroy();
  }, 20_000);
});
