// connectStartTls against a real Prosody on loopback (issue 18): the XMPP client dialect (c2s)
// opens the stream, sees <starttls/> offered, gets <proceed/>; the engine runs the verified
// handshake; the application then opens its own stream inside TLS (the XMPP dialect gives it
// nothing first) and Prosody's features no longer list <starttls/> but now offer SASL, which it
// withholds before TLS: the session is encrypted. A Prosody without mod_tls fails closed. The
// Prosody is fixtures/servers', on free ports of its own. Skipped when
// prosody is not installed (apt-get install prosody), except under CI (CI=1).
import type net from 'node:net';
import type { PoolError } from '@tlsproxy/pool';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as servers from '../../../fixtures/servers/index.mjs';
import { SERVERS } from '../../../fixtures/servers/index.mjs';
import { type ClientError, connectStartTls } from '../src/index.js';
import { viaEngine } from './engine.js';
import { certs } from './toy.js';

const PROSODY = SERVERS.prosody.bin;
if (!PROSODY && process.env.CI) throw new Error('prosody is missing: apt-get install prosody');

type Prosody = Awaited<ReturnType<typeof servers.startProsody>>;

/** `withTls` false: mod_tls disabled and encryption not required, so no STARTTLS is offered. */
const startProsody = (withTls = true) =>
  servers.startProsody({ tls: withTls, allowPlain: !withTls });

/** Open a stream (as the application does inside TLS) and return the server's features. */
function features(s: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const t = setTimeout(() => reject(new Error(`no features: ${got}`)), 10_000);
    s.on('data', (d: Buffer) => {
      got += d.toString('utf8');
      const m = /<stream:features(?:\/>|[\s\S]*?<\/stream:features>)/.exec(got);
      if (m) {
        clearTimeout(t);
        resolve(m[0]);
      }
    });
    s.write(
      "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
    );
  });
}

describe.skipIf(!PROSODY)('connectStartTls against a real Prosody (XMPP c2s)', () => {
  let prosody: Prosody;
  let plain: Prosody;
  beforeAll(async () => {
    [prosody, plain] = await Promise.all([startProsody(), startProsody(false)]);
  }, 30_000);
  afterAll(async () => {
    await prosody?.stop();
    await plain?.stop();
  }, 30_000);

  it('<starttls/>, <proceed/>, verified; inside TLS no <starttls/> and SASL offered', async () => {
    const r = await connectStartTls({
      ...viaEngine,
      dialect: 'xmpp',
      host: '127.0.0.1',
      port: prosody.c2s,
      serverName: 'localhost',
      ca: certs.ca,
      options: { mode: 'c2s' },
    });
    expect(r.info.serverIdentity.san.dns).toContain('localhost');
    const f = await features(r.socket);
    expect(f).not.toMatch(/xmpp-tls/);
    expect(f).toMatch(/urn:ietf:params:xml:ns:xmpp-sasl/);
    r.socket.destroy();
  }, 20_000);

  it('a wrong CA fails closed', async () => {
    const err = await connectStartTls({
      ...viaEngine,
      dialect: 'xmpp',
      host: '127.0.0.1',
      port: prosody.c2s,
      serverName: 'localhost',
      ca: certs.rogue.cert,
    }).then(
      () => null,
      (e: PoolError) => e,
    );
    expect([err?.code, err?.reason]).toEqual(['TLSPROXY_ERR_POOL_VERIFY', 'unknown-ca']);
  }, 20_000);

  it('a Prosody without mod_tls: no STARTTLS offered, fails closed', async () => {
    const err = await connectStartTls({
      ...viaEngine,
      dialect: 'xmpp',
      host: '127.0.0.1',
      port: plain.c2s,
      serverName: 'localhost',
      ca: certs.ca,
    }).then(
      () => null,
      (e: ClientError) => e,
    );
    expect(err?.code).toBe('TLSPROXY_ERR_CLIENT_REFUSED');
    expect(err?.reason).toMatch(/STARTTLS/);
  }, 20_000);
});
