// The proxy ↔ backend protocol over @tlsproxy/fdpass (a SEQPACKET socket the backend listens on).
// The backend listens; the proxy connects, and both send hello (fdpass message layer). Then:
//
//   proxy → backend  request  'server-name' { serverName, info }       → 'server-name-ok' { accept }
//   proxy → backend  request  'connection'  { info } + 1 fd (+ attachment: bytes the backend must
//                                            answer, plaintext MX hand-off only) → 'accepted' {}
//   backend → proxy  request  'control'     { key, op, args }          → 'control-result' { result }
//
// A refused or failed request is answered with an fdpass 'error' message.
import { defineProtocol } from '@tlsproxy/fdpass';

export const PROTOCOL_NAME = 'tlsproxy-backend';
export const PROTOCOL_VERSION = 1;

export const backendProtocol = defineProtocol({
  name: PROTOCOL_NAME,
  version: PROTOCOL_VERSION,
  messages: {
    'server-name': { fields: { serverName: 'string', info: 'object' } },
    'server-name-ok': { fields: { accept: 'boolean' } },
    connection: { fields: { info: 'object' }, fds: 1, attachment: true },
    accepted: { fields: {} },
    control: { fields: { key: 'string', op: 'string', args: 'object' } },
    'control-result': { fields: { result: 'any' } },
  },
});

/** Verified client identity from a client certificate (null when none was asked for or sent). */
export interface ClientIdentity {
  /** Subject distinguished name, e.g. "CN=alice,O=Example" */
  subject: string;
  /** Issuer distinguished name */
  issuer: string;
  /** subjectAltName entries by kind */
  san: { dns: string[]; email: string[]; uri: string[] };
  /** SHA-256 fingerprint of the certificate, colon-separated hex */
  fingerprint256: string;
  /** PEM of the client certificate */
  certificate?: string;
}

export interface TlsInfo {
  version: string;
  cipher: string;
  alpn: string | null;
}

/** What the backend receives with each connection (documented in README "Hand-off info"). */
export interface HandoffInfo {
  /** Dialect name, e.g. 'imap' */
  dialect: string;
  /** 'plain': the socket carries plaintext, the TLS engine terminates TLS. 'crypt': the raw
   * TCP connection right after the STARTTLS go-ahead; the backend runs TLS itself.
   * 'plaintext': no TLS at all (e.g. SMTP MX mode for senders without STARTTLS). */
  handoff: 'plain' | 'crypt' | 'plaintext';
  /** SNI server name the client asked for, or null */
  serverName: string | null;
  /** null for 'crypt' and 'plaintext' hand-offs */
  tls: TlsInfo | null;
  clientIdentity: ClientIdentity | null;
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
  /** Hex of the 16-byte control key, for control requests (null when there is no TLS session). */
  controlKey: string | null;
  /** Unique id of the connection in the proxy's logs */
  connectionId: string;
  /** The dialect's own state (IMAP: { tag }, SMTP: { ehlo }, XMPP: { to }, ...) */
  dialectState: Record<string, unknown>;
}

export type ControlOp = 'info' | 'exporter' | 'renegotiate' | 'close';
