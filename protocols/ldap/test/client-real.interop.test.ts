// Interop, client role (issue 18): the LDAP client state machine drives a real OpenLDAP slapd on
// loopback (fixtures/servers, configured as fixtures/record/slapd-ldap.sh does: `security tls=1`, the test PKI's
// server.pem) over a real TCP socket; on `starttls` node:tls runs the client handshake on the
// same socket, verified against fixtures/certs/ca.pem for the name `localhost`; inside TLS a
// Who am I? (RFC 4532) and a root DSE search succeed, which slapd refuses before TLS
// (confidentialityRequired): the session is encrypted. A second slapd without a certificate
// refuses StartTLS, and the client closes. Skipped when slapd is not installed
// (apt-get install slapd ldap-utils).
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import type { ClientDialectSession } from '@tlsproxy/dialect-kit';
import { runClientSession } from '@tlsproxy/dialect-kit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as servers from '../../../fixtures/servers/index.mjs';
import { CERTS, mitm, type RealServer, SERVERS } from '../../../fixtures/servers/index.mjs';
import { Framer, int, parse, seq, str, type Tlv, text, tlv } from '../src/ber.js';
import { client } from '../src/client.js';

const CA = readFileSync(join(CERTS, 'ca.pem'));

const SLAPD = SERVERS.slapd.bin;
if (!SLAPD) console.warn('slapd not installed: the LDAP client interop test is skipped');

type Slapd = RealServer;

/** A throwaway slapd on 127.0.0.1 (fixtures/servers; with or without a certificate). */
const startSlapd = (withTls: boolean) => servers.startSlapd({ tls: withTls });

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

/** Read `count` whole LDAPMessages from a (TLS) socket. */
function readPdus(socket: net.Socket, count: number): Promise<Tlv[]> {
  return new Promise((resolve, reject) => {
    const framer = new Framer({ maxPduSize: 1 << 20 });
    const got: Tlv[] = [];
    const t = setTimeout(() => reject(new Error(`only ${got.length} of ${count} PDUs`)), 10_000);
    socket.on('data', (d: Buffer) => {
      framer.push(new Uint8Array(d));
      for (let e = framer.next(); e?.type === 'pdu'; e = framer.next()) got.push(parse(e.pdu, 64));
      if (got.length >= count) {
        clearTimeout(t);
        resolve(got);
      }
    });
    socket.on('error', reject);
  });
}

const resultCode = (m: Tlv) => m.children[1]!.children[0]!.value[0];

describe.skipIf(!SLAPD)('LDAP client role against a real slapd', () => {
  let slapd: Slapd;
  let plain: Slapd;
  beforeAll(async () => {
    slapd = await startSlapd(true);
    plain = await startSlapd(false);
  }, 30_000);
  afterAll(async () => {
    await slapd?.stop();
    await plain?.stop();
  }, 30_000);

  it('before TLS slapd refuses Who am I? (confidentialityRequired): the contrast', async () => {
    const socket = net.connect(slapd.port, '127.0.0.1');
    const reply = readPdus(socket, 1);
    socket.write(seq(int(1), tlv(0x77, str('1.3.6.1.4.1.4203.1.11.3', 0x80))));
    const [m] = await reply;
    expect(resultCode(m!)).toBe(13);
    socket.destroy();
  });

  it('StartTLS, then a verified TLS handshake; Who am I? and the root DSE work inside TLS', async () => {
    const out = await drive(slapd.port, newSession());
    expect(out.outcome.type).toBe('starttls');
    const start = out.outcome;
    expect(start).toMatchObject({ state: { messageId: 1 } });
    // (toMatchObject takes any typed array for an empty one: check the length itself.)
    expect(start.type === 'starttls' && start.toLocal.length).toBe(0);
    const secure = tls.connect({ socket: out.socket, ca: CA, servername: 'localhost' });
    await new Promise<void>((r, j) => {
      secure.once('secureConnect', () => r());
      secure.once('error', j);
    });
    expect(secure.authorized).toBe(true);
    expect(secure.getProtocol()).toMatch(/^TLSv1\.[23]$/);
    const replies = readPdus(secure, 3);
    // RFC 4532 Who am I? (id 2), then a root DSE search for supportedExtension (id 3).
    secure.write(seq(int(2), tlv(0x77, str('1.3.6.1.4.1.4203.1.11.3', 0x80))));
    secure.write(
      seq(
        int(3),
        tlv(
          0x63,
          str(''),
          int(0, 0x0a),
          int(0, 0x0a),
          int(0),
          int(0),
          tlv(0x01, Uint8Array.of(0)),
          str('objectClass', 0x87),
          seq(str('supportedExtension')),
        ),
      ),
    );
    const [whoami, entry, done] = await replies;
    // Before TLS slapd (security tls=1) answers both with confidentialityRequired (13).
    expect(whoami!.children[1]!.tag).toBe(0x78);
    expect(resultCode(whoami!)).toBe(0);
    expect(entry!.children[1]!.tag).toBe(0x64);
    const attrs = entry!.children[1]!.children[1]!.children;
    const ext = attrs.find((a) => text(a.children[0]!) === 'supportedExtension');
    expect(ext?.children[1]?.children.map(text)).toContain('1.3.6.1.4.1.4203.1.11.3');
    expect(resultCode(done!)).toBe(0);
    // The local client must not ask for StartTLS again (README): slapd refuses it inside TLS.
    const again = readPdus(secure, 1);
    secure.write(seq(int(4), tlv(0x77, str('1.3.6.1.4.1.1466.20037', 0x80))));
    const [second] = await again;
    console.log(`slapd, StartTLS inside TLS: resultCode ${resultCode(second!)}`);
    expect(resultCode(second!)).not.toBe(0);
    secure.end(seq(int(5), tlv(0x42)));
  });

  it('the same session verified against the wrong name fails the handshake (fail closed)', async () => {
    const out = await drive(slapd.port, newSession());
    expect(out.outcome.type).toBe('starttls');
    const secure = tls.connect({ socket: out.socket, ca: CA, servername: 'wrong.example.test' });
    const err = await new Promise<Error>((r) => {
      secure.once('error', r);
      secure.once('secureConnect', () => r(new Error('connected')));
    });
    expect(err.message).toMatch(/altnames|Hostname/i);
    secure.destroy();
  });

  it('a man in the middle appends a forged PDU to the real StartTLS response: close, never starttls', async () => {
    const forged = seq(int(2), tlv(0x65, int(0, 0x0a), str(''), str('')));
    const relay = await mitm(slapd.port, () => true, forged);
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

  it('a slapd without TLS refuses StartTLS: close with Unbind, never starttls', async () => {
    const out = await drive(plain.port, newSession());
    const close = out.outcome;
    if (close.type !== 'close') throw new Error(`expected a close, got ${close.type}`);
    console.log(`slapd without a certificate: ${close.reason}`);
    expect(close.reason).toMatch(/^server refused StartTLS: resultCode \d+/);
    expect(out.actions.some((a) => a.type === 'starttls')).toBe(false);
    // The UnbindRequest (…42 00) went to the server.
    expect(close.data?.[close.data.length - 2]).toBe(0x42);
    expect(out.sent.at(-2)).toBe(0x42);
  });
});
