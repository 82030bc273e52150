// Interop: tlsproxy in connect mode with PROXY protocol v2 in front of a real Dovecot (Debian's
// dovecot-imapd) that trusts PROXY headers from loopback (haproxy_trusted_networks) and refuses
// plaintext authentication on connections it does not consider secured
// (disable_plaintext_auth = yes, ssl = no: Dovecot itself has no TLS at all).
//
// The client connects from 127.0.0.2 to tlsproxy on 127.0.0.1, so the header says
// 127.0.0.2 → 127.0.0.1: Dovecot treats a client whose address equals its own as secured, and
// that must not be what lets the login through. The login succeeds only because of the SSL TLV
// (PP2_CLIENT_SSL) — shown by the same login failing when the TLVs are left out.
//
// Fails (does not skip) when Dovecot is missing: apt-get install dovecot-core dovecot-imapd.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TlsProxy } from '../src/index.js';
import { type Dovecot, startDovecot } from './dovecot.js';
import { LineClient, startProxy } from './helpers.js';

let dovecot: Dovecot | undefined;
const proxies: TlsProxy[] = [];

beforeAll(async () => {
  dovecot = await startDovecot();
}, 30_000);
afterAll(async () => {
  for (const p of proxies) await p.close();
  await dovecot?.stop();
}, 30_000);

async function proxyFor(tlvs: boolean): Promise<number> {
  const p = await startProxy('unused', {
    backend: {
      connect: `tcp:127.0.0.1:${dovecot!.port}`,
      proxyProtocol: 'v2',
      proxyProtocolTlvs: tlvs,
    },
  });
  proxies.push(p.proxy);
  return p.port;
}

/** From 127.0.0.2: tlsproxy's greeting, STARTTLS, TLS, then LOGIN at Dovecot. */
async function login(port: number): Promise<{ first: string; answer: string }> {
  const c = new LineClient(port, { localAddress: '127.0.0.2' });
  const greeting = await c.until(/^\* OK/);
  expect(greeting).toMatch(/LOGINDISABLED/); // tlsproxy's greeting, not Dovecot's
  c.write('a STARTTLS\r\n');
  await c.until(/^a OK/);
  const t = await c.startTls();
  try {
    t.socket.write('b CAPABILITY\r\n');
    const first = await t.until(/^b (OK|NO|BAD)/m, 10_000);
    t.socket.write(`c LOGIN ${dovecot!.user} ${dovecot!.password}\r\n`);
    const answer = await t.until(/^c (OK|NO|BAD)/m, 10_000);
    t.socket.write('d LOGOUT\r\n');
    await t.until(/^d OK/m, 5000).catch(() => {});
    return { first, answer };
  } finally {
    t.socket.destroy();
  }
}

describe('Dovecot behind tlsproxy with PROXY protocol v2', () => {
  it('logs in after STARTTLS because Dovecot trusts the SSL TLV', async () => {
    const { first, answer } = await login(await proxyFor(true));
    // Dovecot's own greeting was swallowed: the first thing inside TLS answers our command.
    expect(first).toMatch(/^\* CAPABILITY /);
    expect(first).not.toMatch(/Dovecot.*ready/i);
    // Secured: AUTH=PLAIN offered, no LOGINDISABLED.
    expect(first).toMatch(/AUTH=PLAIN/);
    expect(first).not.toMatch(/LOGINDISABLED/);
    expect(answer).toMatch(/^c OK /m);
    // Dovecot took the client's address from the header and calls the connection secured.
    const log = dovecot!.log();
    expect(log).toMatch(/Login: user=<alice>.*rip=127\.0\.0\.2, lip=127\.0\.0\.1.*(secured|TLS)/);
  });

  it('refuses the same login when the TLVs are left out (addresses only)', async () => {
    const { first, answer } = await login(await proxyFor(false));
    expect(first).toMatch(/LOGINDISABLED/);
    expect(answer).toMatch(
      /^c NO (\[PRIVACYREQUIRED\] )?Plaintext authentication disallowed|^c NO \[PRIVACYREQUIRED\]/m,
    );
    expect(dovecot!.log()).toMatch(/rip=127\.0\.0\.2, lip=127\.0\.0\.1/);
  });
});
