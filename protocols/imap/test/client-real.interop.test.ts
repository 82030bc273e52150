// The IMAP client role against a real Dovecot on loopback (issue 18): the state machine runs
// over a TCP socket (the kit's runClientSession), node:tls then does the client handshake on the
// same socket, verifying Dovecot's certificate against the repo's test CA, and inside TLS the
// CAPABILITY answer no longer lists STARTTLS (and LOGIN works): the session is encrypted. A
// Dovecot without TLS fails closed. Needs dovecot-core + dovecot-imapd; skipped when Dovecot is
// missing, except under CI (CI=1), where a missing server is a failure.
import type tls from 'node:tls';
import { clientContext, dec, runClientSession } from '@tlsproxy/dialect-kit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as servers from '../../../fixtures/servers/index.mjs';
import {
  connect,
  type RealServer,
  request,
  SERVERS,
  startTls,
} from '../../../fixtures/servers/index.mjs';
import { dialect } from '../src/index.js';

const bin = SERVERS.dovecot.bin;
if (!bin && process.env.CI) {
  throw new Error('Dovecot is missing: apt-get install dovecot-core dovecot-imapd');
}

type Server = RealServer;

/** A throwaway Dovecot (fixtures/servers) with TLS (ssl = required) on or off, IMAP only. */
const startDovecot = (ssl: boolean) =>
  servers.startDovecot({ tls: ssl && 'required', protocols: ['imap'] });

/** Send `command` with `tag` over `sock` and collect the lines up to the tagged reply. */
const command = (sock: tls.TLSSocket, tag: string, command: string) =>
  request(sock, `${tag} ${command}`, (b) => new RegExp(`(^|\\n)${tag} [A-Z]+[^\\n]*\\n`).test(b));

const open = () =>
  dialect.client!.create(clientContext({}, {}, { serverName: 'imap.example.test' }));

describe.skipIf(!bin)('IMAP client role against a real Dovecot', () => {
  let withTls: Server;
  let withoutTls: Server;
  beforeAll(async () => {
    [withTls, withoutTls] = await Promise.all([startDovecot(true), startDovecot(false)]);
  }, 30_000);
  afterAll(async () => {
    await Promise.all([withTls?.stop(), withoutTls?.stop()]);
  });

  it('STARTTLS, a verified handshake, and inside TLS no STARTTLS; LOGIN works', async () => {
    const sock = await connect(withTls.port);
    const r = await runClientSession(open(), sock);
    expect(r.outcome.type).toBe('starttls');
    if (r.outcome.type !== 'starttls') return;
    // Dovecot's greeting carries [CAPABILITY ... STARTTLS LOGINDISABLED]: STARTTLS at once.
    expect(dec(r.received)).toMatch(/^\* OK \[CAPABILITY [^\]]*STARTTLS[^\]]*\] .*\r\na2 OK /);
    expect(dec(r.sent)).toBe('a2 STARTTLS\r\n');
    expect(dec(r.outcome.toLocal)).toBe('* OK Server ready.\r\n');
    expect(r.outcome.state.capabilities).toContain('STARTTLS');

    const t = await startTls(sock, 'imap.example.test');
    expect(t.authorized).toBe(true);
    const caps = await command(t, 'b1', 'CAPABILITY');
    expect(caps).toMatch(/^\* CAPABILITY IMAP4rev1 /);
    expect(caps).not.toMatch(/STARTTLS/);
    // (Dovecot counts loopback as secured, so AUTH=PLAIN was offered before TLS too.)
    expect(t.getProtocol()).toMatch(/^TLSv1\.[23]$/);
    expect(caps).toMatch(/\r\nb1 OK /);
    expect(await command(t, 'b2', 'LOGIN alice secret')).toMatch(/^b2 OK /m);
    expect(await command(t, 'b3', 'LOGOUT')).toMatch(/^\* BYE /);
    t.destroy();
  }, 20_000);

  it('the same server under a name its certificate does not carry: the handshake fails', async () => {
    const sock = await connect(withTls.port);
    const r = await runClientSession(open(), sock);
    expect(r.outcome.type).toBe('starttls');
    await expect(startTls(sock, 'wrong.example.test')).rejects.toThrow(/altnames|Hostname/);
    sock.destroy();
  }, 20_000);

  it('a Dovecot without TLS does not offer STARTTLS: close, LOGOUT, BYE for the local client', async () => {
    const sock = await connect(withoutTls.port);
    const r = await runClientSession(open(), sock);
    expect(r.outcome.type).toBe('close');
    if (r.outcome.type !== 'close') return;
    expect(r.outcome.reason).toBe('server does not offer STARTTLS');
    expect(dec(r.received)).not.toMatch(/STARTTLS/);
    expect(dec(r.sent)).toBe('a3 LOGOUT\r\n');
    expect(dec(r.outcome.toLocal!)).toBe('* BYE [PRIVACYREQUIRED] TLS unavailable.\r\n');
    sock.destroy();
  }, 20_000);
});
