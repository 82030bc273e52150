// A throwaway Postfix (Debian: postfix) on loopback for the MX-mode interop test: fixtures/servers'
// instance with `accept` — it accepts mail for mx.example.test and discards it (no delivery, no
// relaying), and its log is kept for assertions. HELO/EHLO is required (smtpd_helo_required), so
// a MAIL without one gets "503 5.5.1 send HELO/EHLO first". No STARTTLS; a second listener takes a
// PROXY protocol header. Needs root (the master drops to the postfix user). start() throws a
// readable error when Postfix is missing.
import * as servers from '../../../fixtures/servers/index.mjs';

export interface Postfix {
  port: number;
  /** The same smtpd behind a PROXY protocol header (smtpd_upstream_proxy_protocol = haproxy). */
  proxyPort: number;
  log(): string;
  stop(): Promise<void>;
}

export async function startPostfix(): Promise<Postfix> {
  const why = servers.missing('postfix');
  if (why) throw new Error(`the Postfix interop test needs a real Postfix: ${why}`);
  const s = await servers.startPostfix({ tls: false, proxy: true, accept: true });
  return { port: s.port, proxyPort: s.proxyPort!, log: s.log, stop: s.stop };
}
