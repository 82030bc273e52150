// The SMTP client role against a real Postfix on loopback (issue 18): the state machine runs over
// a TCP socket (the kit's runClientSession), node:tls then does the client handshake on the same
// socket, verifying Postfix's certificate against the repo's test CA, and inside TLS the EHLO
// answer no longer lists STARTTLS: the session is encrypted. A listener without TLS fails closed
// (tls: encrypt) or goes on in plaintext (tls: may). The Postfix is fixtures/servers', on
// free ports, one listener with smtpd_tls_security_level=may and one with none.
// Needs root and Postfix; skipped when either is missing, except under CI (CI=1).
import type tls from 'node:tls';
import { clientContext, dec, runClientSession } from '@tlsproxy/dialect-kit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as servers from '../../../fixtures/servers/index.mjs';
import { connect, missing, request, startTls } from '../../../fixtures/servers/index.mjs';
import { dialect } from '../src/index.js';

const usable = missing('postfix') === undefined;
if (!usable && process.env.CI) {
  throw new Error('the Postfix interop test needs root and Postfix (apt-get install postfix)');
}

interface Postfix {
  /** STARTTLS offered (smtpd_tls_security_level=may). */
  tlsPort: number;
  /** No STARTTLS (smtpd_tls_security_level=none). */
  plainPort: number;
  stop(): Promise<void>;
}

/** fixtures/servers' Postfix, one listener with STARTTLS and one (plain) without. */
async function startPostfix(): Promise<Postfix> {
  const s = await servers.startPostfix({ plain: true });
  return { tlsPort: s.port, plainPort: s.plainPort!, stop: s.stop };
}

/** Send `line` and collect one complete reply (the line with "NNN " ends it). */
const command = (sock: tls.TLSSocket, line: string) =>
  request(sock, line, (b) => /(^|\n)\d{3} [^\n]*\n$/.test(b));

const open = (options: { tls?: 'encrypt' | 'may' } = {}) =>
  dialect.client!.create(
    clientContext(options, {}, { hostname: 'client.example.test', serverName: 'localhost' }),
  );

describe.skipIf(!usable)('SMTP client role against a real Postfix', () => {
  let postfix: Postfix;
  beforeAll(async () => {
    postfix = await startPostfix();
  }, 30_000);
  afterAll(async () => {
    await postfix?.stop();
  });

  it('EHLO, STARTTLS, a verified handshake, and inside TLS EHLO no longer lists STARTTLS', async () => {
    const sock = await connect(postfix.tlsPort);
    const r = await runClientSession(open(), sock);
    expect(r.outcome.type).toBe('starttls');
    if (r.outcome.type !== 'starttls') return;
    expect(dec(r.sent)).toBe('EHLO client.example.test\r\nSTARTTLS\r\n');
    expect(dec(r.received)).toMatch(/^220 mx\.example\.test ESMTP/);
    expect(dec(r.received)).toMatch(/\r\n250-STARTTLS\r\n/);
    expect(dec(r.received)).toMatch(/\r\n220 2\.0\.0 Ready to start TLS\r\n$/);
    expect(dec(r.outcome.toLocal)).toMatch(/^220 [^ ]+ ESMTP Service ready\r\n$/);
    expect(r.outcome.state.extensions).toContain('STARTTLS');

    const t = await startTls(sock, 'localhost');
    expect(t.authorized).toBe(true);
    expect(t.getProtocol()).toMatch(/^TLSv1\.[23]$/);
    // What the local client's EHLO gets through TLS: the extensions, without STARTTLS.
    const ehlo = await command(t, 'EHLO client.example.test');
    expect(ehlo).toMatch(/^250-mx\.example\.test\r\n/);
    expect(ehlo).toMatch(/250[- ]PIPELINING\r\n/);
    expect(ehlo).not.toMatch(/STARTTLS/);
    expect(await command(t, 'QUIT')).toMatch(/^221 /);
    t.destroy();
  }, 20_000);

  it('the same server under a name its certificate does not carry: the handshake fails', async () => {
    const sock = await connect(postfix.tlsPort);
    const r = await runClientSession(open(), sock);
    expect(r.outcome.type).toBe('starttls');
    await expect(startTls(sock, 'wrong.example.test')).rejects.toThrow(/altnames|Hostname/);
    sock.destroy();
  }, 20_000);

  it('no STARTTLS offered, tls: encrypt: close, QUIT, 421 for the local client', async () => {
    const sock = await connect(postfix.plainPort);
    const r = await runClientSession(open(), sock);
    expect(r.outcome.type).toBe('close');
    if (r.outcome.type !== 'close') return;
    expect(r.outcome.reason).toBe('server does not offer STARTTLS');
    expect(dec(r.received)).not.toMatch(/STARTTLS/);
    expect(dec(r.sent)).toBe('EHLO client.example.test\r\nQUIT\r\n');
    expect(dec(r.outcome.toLocal!)).toBe(
      '421 4.7.0 client.example.test Error: TLS unavailable, the server does not offer STARTTLS\r\n',
    );
    sock.destroy();
  }, 20_000);

  it('no STARTTLS offered, tls: may: plaintext with the greeting, and Postfix answers the local EHLO', async () => {
    const sock = await connect(postfix.plainPort);
    const r = await runClientSession(open({ tls: 'may' }), sock);
    expect(r.outcome.type).toBe('plaintext');
    if (r.outcome.type !== 'plaintext') return;
    // Without TLS the whole session is the server's, greeting included.
    expect(dec(r.outcome.toLocal)).toMatch(/^220 mx\.example\.test ESMTP/);
    expect(r.actions).toContainEqual(expect.objectContaining({ type: 'log', level: 'warn' }));
    // The relay would go on: the local client's own EHLO is answered in plaintext.
    sock.resume();
    const reply = await command(sock as unknown as tls.TLSSocket, 'EHLO local.example.test');
    expect(reply).toMatch(/^250-mx\.example\.test\r\n/);
    sock.destroy();
  }, 20_000);
});
