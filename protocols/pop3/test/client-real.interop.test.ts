// The POP3 client role against a real Dovecot on loopback (issue 18): the state machine runs
// over a TCP socket (the kit's runClientSession), node:tls then does the client handshake on the
// same socket, verifying Dovecot's certificate against the repo's test CA, and inside TLS the
// CAPA answer no longer lists STLS (and USER/PASS work): the session is encrypted. A Dovecot
// without TLS fails closed. Needs dovecot-core + dovecot-pop3d; skipped when Dovecot is missing,
// except under CI (CI=1), where a missing server is a failure. (The Dovecot setup is the IMAP
// client test's, for POP3: fixtures/servers.)
import type tls from 'node:tls';
import { clientContext, dec, runClientSession } from '@tlsproxy/dialect-kit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as servers from '../../../fixtures/servers/index.mjs';
import {
  connect,
  DOVECOT_POP3,
  type RealServer,
  request,
  startTls,
} from '../../../fixtures/servers/index.mjs';
import { dialect } from '../src/index.js';

// dovecot-core alone has no POP3 (Debian: dovecot-pop3d brings pop3-login).
const usable = DOVECOT_POP3;
if (!usable && process.env.CI) {
  throw new Error('Dovecot is missing: apt-get install dovecot-core dovecot-pop3d');
}

type Server = RealServer;

/** A throwaway Dovecot (fixtures/servers) with TLS (ssl = required) on or off, POP3 only. */
const startDovecot = (ssl: boolean) =>
  servers.startDovecot({ tls: ssl && 'required', protocols: ['pop3'] });

/** Send `line` over `sock` and collect the reply: one line, or up to "." when `multi`. */
const command = (sock: tls.TLSSocket, line: string, multi = false) =>
  request(sock, line, (b) => (multi ? /(^-ERR[^\n]*\n|\r\n\.\r\n$)/.test(b) : b.endsWith('\n')));

const open = () => dialect.client!.create(clientContext({}, {}, { serverName: 'localhost' }));

describe.skipIf(!usable)('POP3 client role against a real Dovecot', () => {
  let withTls: Server;
  let withoutTls: Server;
  beforeAll(async () => {
    [withTls, withoutTls] = await Promise.all([startDovecot(true), startDovecot(false)]);
  }, 30_000);
  afterAll(async () => {
    await Promise.all([withTls?.stop(), withoutTls?.stop()]);
  });

  it('CAPA, STLS, a verified handshake, and inside TLS no STLS; USER/PASS work', async () => {
    const sock = await connect(withTls.port);
    const r = await runClientSession(open(), sock);
    expect(r.outcome.type).toBe('starttls');
    if (r.outcome.type !== 'starttls') return;
    expect(dec(r.received)).toMatch(
      /^\+OK .*\r\n\+OK\r\n(?:.*\r\n)*STLS\r\n(?:.*\r\n)*\.\r\n\+OK /,
    );
    expect(dec(r.sent)).toBe('CAPA\r\nSTLS\r\n');
    expect(dec(r.outcome.toLocal)).toBe('+OK Server ready.\r\n');
    expect(r.outcome.state.capabilities).toContain('STLS');

    const t = await startTls(sock, 'localhost');
    expect(t.authorized).toBe(true);
    expect(t.getProtocol()).toMatch(/^TLSv1\.[23]$/);
    const capa = await command(t, 'CAPA', true);
    expect(capa).toMatch(/^\+OK\r\n/);
    expect(capa).toMatch(/\r\nUSER\r\n/);
    expect(capa).not.toMatch(/STLS/);
    expect(await command(t, 'USER alice')).toMatch(/^\+OK/);
    expect(await command(t, 'PASS secret')).toMatch(/^\+OK/);
    expect(await command(t, 'QUIT')).toMatch(/^\+OK/);
    t.destroy();
  }, 20_000);

  it('the same server under a name its certificate does not carry: the handshake fails', async () => {
    const sock = await connect(withTls.port);
    const r = await runClientSession(open(), sock);
    expect(r.outcome.type).toBe('starttls');
    await expect(startTls(sock, 'wrong.example.test')).rejects.toThrow(/altnames|Hostname/);
    sock.destroy();
  }, 20_000);

  it('a Dovecot without TLS does not list STLS: close, QUIT, -ERR for the local client', async () => {
    const sock = await connect(withoutTls.port);
    const r = await runClientSession(open(), sock);
    expect(r.outcome.type).toBe('close');
    if (r.outcome.type !== 'close') return;
    expect(r.outcome.reason).toBe('server does not offer STLS');
    expect(dec(r.received)).not.toMatch(/STLS/);
    expect(dec(r.sent)).toBe('CAPA\r\nQUIT\r\n');
    expect(dec(r.outcome.toLocal!)).toBe('-ERR [SYS/PERM] TLS unavailable.\r\n');
    sock.destroy();
  }, 20_000);
});
