// Interop, client role (issue 18): the HTTP Upgrade client state machine drives a real CUPS
// cupsd on loopback (fixtures/servers, configured as fixtures/record/cupsd.sh does: DefaultEncryption
// IfRequested, the test PKI's server.pem, /admin with `Encryption Required`) over a real TCP
// socket; on `starttls` node:tls runs the client handshake on the same socket, verified against
// fixtures/certs/ca.pem for `localhost`. Over TLS cupsd first answers the upgrading OPTIONS *
// (RFC 2817 section 3.3), which the client's afterTls drops; then an OPTIONS and an IPP
// CUPS-Get-Printers request get their HTTP answers. A man in the middle appending bytes to the
// real 101 gets the connection closed; Python's http.server (no RFC 2817) gets a close and a 502. (No plaintext contrast: cupsd does not
// enforce `Encryption Required` on loopback connections, httpAddrLocalhost.) Skipped when cupsd is not installed (apt-get install cups-daemon); cupsd needs root.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import type { ClientDialectSession } from '@tlsproxy/dialect-kit';
import { runClientSession } from '@tlsproxy/dialect-kit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as servers from '../../../fixtures/servers/index.mjs';
import {
  CERTS,
  missing,
  mitm,
  type RealServer,
  SERVERS,
} from '../../../fixtures/servers/index.mjs';
import { client, upgradeAnswerLength } from '../src/client.js';

const CA = readFileSync(join(CERTS, 'ca.pem'));

const CUPSD = missing('cupsd') === undefined ? SERVERS.cupsd.bin : undefined;
if (!CUPSD)
  console.warn(
    'cupsd not installed (or not root): the HTTP Upgrade client interop test is skipped',
  );

type Cupsd = RealServer;

/** fixtures/servers' cupsd: DefaultEncryption IfRequested with the test certificate. */
const startCupsd = () => servers.startCupsd();

/** The engine's part, over a real socket: the kit's driver (lets go of the socket on starttls). */
async function drive(port: number, session: ClientDialectSession) {
  const socket = net.connect(port, '127.0.0.1');
  const run = await runClientSession(session, socket);
  return { ...run, socket };
}

const newSession = () =>
  client.create({
    options: {},
    limits: {},
    hostname: 'client.example.test',
    serverName: 'localhost',
    connectionId: 'interop',
  });

/** RFC 8011 CUPS-Get-Printers (0x4002), the least IPP request: charset and language only. */
function ippGetPrinters(): Buffer {
  const attr = (tag: number, name: string, value: string) => {
    const n = Buffer.from(name);
    const v = Buffer.from(value);
    return Buffer.concat([
      Buffer.from([tag, n.length >> 8, n.length & 0xff]),
      n,
      Buffer.from([v.length >> 8, v.length & 0xff]),
      v,
    ]);
  };
  const body = Buffer.concat([
    Buffer.from([0x02, 0x00, 0x40, 0x02, 0x00, 0x00, 0x00, 0x01, 0x01]),
    attr(0x47, 'attributes-charset', 'utf-8'),
    attr(0x48, 'attributes-natural-language', 'en'),
    Buffer.from([0x03]),
  ]);
  return Buffer.concat([
    Buffer.from(
      `POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/ipp\r\nContent-Length: ${body.length}\r\n\r\n`,
    ),
    body,
  ]);
}

/** Everything `socket` sends until `done` says so or `ms` pass. */
function collect(socket: net.Socket, done: (text: string) => boolean, ms = 5000): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const t = setTimeout(() => resolve(got), ms);
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (done(got)) {
        clearTimeout(t);
        resolve(got);
      }
    });
    socket.on('close', () => {
      clearTimeout(t);
      resolve(got);
    });
  });
}

/** Complete HTTP responses in `text` (head + Content-Length body), as status codes. */
function statuses(text: string): number[] {
  const out: number[] = [];
  let rest = text;
  for (;;) {
    const m = /^HTTP\/1\.[01] (\d{3})[^\r\n]*\r\n([\s\S]*?)\r\n\r\n/.exec(rest);
    if (!m) return out;
    const len = Number(/\r\ncontent-length: *(\d+)/i.exec(`\r\n${m[2]}`)?.[1] ?? 0);
    const end = m[0].length + len;
    if (rest.length < end) return out;
    out.push(Number(m[1]));
    rest = rest.slice(end);
  }
}

describe.skipIf(!CUPSD)('HTTP Upgrade client role against a real cupsd', () => {
  let cupsd: Cupsd;
  beforeAll(async () => {
    cupsd = await startCupsd();
  }, 30_000);
  afterAll(async () => {
    await cupsd?.stop();
  }, 30_000);

  it('101, a verified TLS handshake, the OPTIONS answer over TLS dropped, then requests get HTTP answers', async () => {
    const out = await drive(cupsd.port, newSession());
    expect(out.outcome.type).toBe('starttls');
    const go = out.outcome;
    expect(go).toMatchObject({ state: { status: 101 } });
    expect(go.type === 'starttls' && go.toLocal.length).toBe(0);
    const secure = tls.connect({ socket: out.socket, ca: CA, servername: 'localhost' });
    await new Promise<void>((r, j) => {
      secure.once('secureConnect', () => r());
      secure.once('error', j);
    });
    expect(secure.authorized).toBe(true);
    expect(secure.getProtocol()).toMatch(/^TLSv1\.[23]$/);
    // RFC 2817 section 3.3: cupsd answers the upgrading OPTIONS * over TLS before anything is
    // asked; the client dialect's afterTls says how much of that to drop.
    let first = Buffer.alloc(0);
    let drop: number | null = null;
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no OPTIONS answer: ${first.toString()}`)), 5000);
      const onData = (d: Buffer) => {
        first = Buffer.concat([first, d]);
        drop = upgradeAnswerLength(new Uint8Array(first));
        if (drop === null) return;
        clearTimeout(t);
        secure.off('data', onData);
        resolve();
      };
      secure.on('data', onData);
    });
    console.log(`cupsd over TLS before any request: ${JSON.stringify(first.toString('latin1'))}`);
    expect(first.toString('latin1')).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(drop).toBe(first.length);
    // Now as a local client would: two requests, two answers, in order.
    const replies = collect(secure, (text) => statuses(text).length >= 2);
    secure.write('OPTIONS / HTTP/1.1\r\nHost: localhost\r\n\r\n');
    secure.write(ippGetPrinters());
    const text = await replies;
    const codes = statuses(text);
    console.log(`cupsd over TLS: statuses ${codes.join(', ')}`);
    expect(codes).toEqual([200, 200]);
    // The second is the IPP answer: application/ipp, version 2.0, status successful-ok.
    expect(text).toMatch(/Content-Type: application\/ipp/i);
    secure.destroy();
  });

  it('a man in the middle appends a forged answer to the real 101: close, never starttls', async () => {
    const forged = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
    const relay = await mitm(cupsd.port, (d) => d.includes(' 101 '), forged);
    try {
      const out = await drive(relay.port, newSession());
      expect(out.actions.some((a) => a.type === 'starttls')).toBe(false);
      expect(out.outcome).toMatchObject({
        type: 'close',
        reason: expect.stringMatching(
          new RegExp(`^response injection: .*: ${forged.length} octets$`),
        ),
      });
      out.socket.destroy();
    } finally {
      await relay.close();
    }
  });

  it('verified against the wrong CA the handshake fails (fail closed)', async () => {
    const out = await drive(cupsd.port, newSession());
    expect(out.outcome.type).toBe('starttls');
    const other = readFileSync(join(CERTS, 'rogue.pem'));
    const secure = tls.connect({ socket: out.socket, ca: other, servername: 'localhost' });
    const err = await new Promise<Error>((r) => {
      secure.once('error', r);
      secure.once('secureConnect', () => r(new Error('connected')));
    });
    expect(err.message).toMatch(/certificate/i);
    secure.destroy();
  });
});

// A real HTTP server that knows nothing of RFC 2817 (cupsd upgrades whatever its DefaultEncryption
// says, so it cannot play this part): Python's http.server answers OPTIONS with 501.
const PYTHON = SERVERS.python3.bin;

describe.skipIf(!PYTHON)('HTTP Upgrade client role against a server without RFC 2817', () => {
  it("Python's http.server answers 501: the client closes, 502 for the local client, never starttls", async () => {
    const http = await servers.startPlainHttp();
    try {
      const out = await drive(http.port, newSession());
      console.log(
        `http.server: ${out.outcome.type === 'close' ? out.outcome.reason : out.outcome.type}`,
      );
      expect(out.outcome).toMatchObject({
        type: 'close',
        reason: expect.stringMatching(/^server answered 501 .*instead of 101$/),
      });
      const local = out.outcome.type === 'close' ? out.outcome.toLocal : undefined;
      expect(Buffer.from(local ?? []).toString('latin1')).toMatch(/^HTTP\/1\.1 502 /);
      out.socket.destroy();
    } finally {
      await http.stop();
    }
  });
});
