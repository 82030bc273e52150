// Interop, client role (issue 18): the XMPP client state machine drives a real Prosody on
// loopback (fixtures/servers, configured as fixtures/record/prosody-xmpp.sh does — c2s and s2s with
// c2s_require_encryption / s2s_require_encryption, the test PKI's server.pem, VirtualHost
// "localhost" — but on free ports of its own) over a real TCP socket, in c2s and in s2s mode; on
// `starttls` node:tls runs the client handshake on the same socket, verified against
// fixtures/certs/ca.pem for `localhost`; inside TLS a new stream is opened (as the local client
// would) and Prosody's post-TLS features no longer list <starttls/> (c2s: and now offer SASL,
// which it withholds before TLS). Skipped when prosody is not installed (apt-get install
// prosody).
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import type { ClientDialectSession } from '@tlsproxy/dialect-kit';
import { runClientSession } from '@tlsproxy/dialect-kit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as servers from '../../../fixtures/servers/index.mjs';
import { CERTS, mitm, SERVERS } from '../../../fixtures/servers/index.mjs';
import { client } from '../src/client.js';

const CA = readFileSync(join(CERTS, 'ca.pem'));
const TLS_NS = 'urn:ietf:params:xml:ns:xmpp-tls';

const PROSODY = SERVERS.prosody.bin;
if (!PROSODY) console.warn('prosody not installed: the XMPP client interop test is skipped');

type Prosody = Awaited<ReturnType<typeof servers.startProsody>>;

/** `withTls` false: mod_tls disabled and encryption not required, so no STARTTLS is offered. */
const startProsody = (withTls = true) =>
  servers.startProsody({ tls: withTls, allowPlain: !withTls });

/** The engine's part, over a real socket: the kit's driver (lets go of the socket on starttls). */
async function drive(port: number, session: ClientDialectSession) {
  const socket = net.connect(port, '127.0.0.1');
  const run = await runClientSession(session, socket);
  return { ...run, socket };
}

const newSession = (mode: 'c2s' | 's2s') =>
  client.create({
    options: { mode },
    limits: {},
    hostname: 'client.example.test',
    serverName: 'localhost',
    connectionId: 'interop',
  });

/** The TLS handshake on `socket`, verified against the test CA for `localhost`. */
async function handshake(socket: net.Socket): Promise<tls.TLSSocket> {
  const secure = tls.connect({ socket, ca: CA, servername: 'localhost' });
  await new Promise<void>((r, j) => {
    secure.once('secureConnect', () => r());
    secure.once('error', j);
  });
  return secure;
}

/** Open a stream inside TLS (as the local client would) and return Prosody's features. */
function postTlsFeatures(secure: tls.TLSSocket, header: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const t = setTimeout(() => reject(new Error(`no features over TLS: ${got}`)), 10_000);
    secure.on('data', (d: Buffer) => {
      got += d.toString('utf8');
      const m = /<stream:features(?:\/>|[\s\S]*?<\/stream:features>)/.exec(got);
      if (m) {
        clearTimeout(t);
        resolve(m[0]);
      }
    });
    secure.on('error', reject);
    secure.write(header);
  });
}

describe.skipIf(!PROSODY)('XMPP client role against a real Prosody', () => {
  let prosody: Prosody;
  let plain: Prosody;
  beforeAll(async () => {
    [prosody, plain] = await Promise.all([startProsody(), startProsody(false)]);
  }, 30_000);
  afterAll(async () => {
    await prosody?.stop();
    await plain?.stop();
  }, 30_000);

  it('a Prosody without mod_tls offers no STARTTLS: the client closes, never starttls', async () => {
    const out = await drive(plain.c2s, newSession('c2s'));
    console.log(
      `Prosody without TLS: ${out.outcome.type === 'close' ? out.outcome.reason : out.outcome.type}`,
    );
    expect(out.outcome).toMatchObject({
      type: 'close',
      reason: expect.stringMatching(/^the server does not offer STARTTLS \(features: .*xmpp-sasl/),
    });
    expect(new TextDecoder().decode(out.sent)).toMatch(/<\/stream:stream>$/);
    out.socket.destroy();
  });

  it('c2s: STARTTLS offered and taken; inside TLS the new stream has no <starttls/>, SASL now', async () => {
    const out = await drive(prosody.c2s, newSession('c2s'));
    expect(out.outcome.type).toBe('starttls');
    const go = out.outcome;
    // Before TLS Prosody (c2s_require_encryption) offers STARTTLS alone.
    expect(go).toMatchObject({
      state: { streamType: 'c2s', from: 'localhost', features: [`{${TLS_NS}}starttls`] },
    });
    expect(go.type === 'starttls' && go.toLocal.length).toBe(0);
    const secure = await handshake(out.socket);
    expect(secure.authorized).toBe(true);
    const features = await postTlsFeatures(
      secure,
      "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
    );
    console.log(`Prosody c2s features over TLS: ${features}`);
    expect(features).not.toContain('starttls');
    expect(features).toContain('urn:ietf:params:xml:ns:xmpp-sasl');
    expect(features).toContain('<mechanism>PLAIN</mechanism>');
    secure.end('</stream:stream>');
  });

  it('s2s: STARTTLS offered and taken; inside TLS the new stream has no <starttls/>', async () => {
    const out = await drive(prosody.s2s, newSession('s2s'));
    expect(out.outcome.type).toBe('starttls');
    expect(out.outcome).toMatchObject({
      state: { streamType: 's2s', features: expect.arrayContaining([`{${TLS_NS}}starttls`]) },
    });
    const secure = await handshake(out.socket);
    expect(secure.authorized).toBe(true);
    const features = await postTlsFeatures(
      secure,
      "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' to='localhost' from='client.example.test' version='1.0'>",
    );
    console.log(`Prosody s2s features over TLS: ${features}`);
    expect(features).not.toContain('starttls');
    secure.end('</stream:stream>');
  });

  it('a man in the middle appends a forged stream to the real <proceed/>: close, never starttls', async () => {
    const forged = new TextEncoder().encode(
      "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='localhost' version='1.0'><stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>",
    );
    const relay = await mitm(prosody.c2s, (d) => d.includes('<proceed'), forged);
    try {
      const out = await drive(relay.port, newSession('c2s'));
      expect(out.actions.some((a) => a.type === 'starttls')).toBe(false);
      expect(out.outcome).toMatchObject({
        type: 'close',
        reason: `response injection: the server sent octets after <proceed/> in the same read (plaintext that would be taken as protected; NO STARTTLS response-injection attack): ${forged.length} octets`,
      });
      out.socket.destroy();
    } finally {
      await relay.close();
    }
  });

  it('c2s to a domain Prosody does not serve: its stream error closes, never starttls', async () => {
    const s = client.create({
      options: {},
      limits: {},
      hostname: 'client.example.test',
      serverName: 'nowhere.example.test',
      connectionId: 'interop',
    });
    const out = await drive(prosody.c2s, s);
    expect(out.outcome).toMatchObject({
      type: 'close',
      reason: 'server stream error: host-unknown',
    });
    out.socket.destroy();
  });

  it('verified against the wrong name the handshake fails (fail closed)', async () => {
    const out = await drive(prosody.c2s, newSession('c2s'));
    expect(out.outcome.type).toBe('starttls');
    const secure = tls.connect({ socket: out.socket, ca: CA, servername: 'xmpp.wrong.test' });
    const err = await new Promise<Error>((r) => {
      secure.once('error', r);
      secure.once('secureConnect', () => r(new Error('connected')));
    });
    expect(err.message).toMatch(/altnames|Hostname/i);
    secure.destroy();
  });
});
