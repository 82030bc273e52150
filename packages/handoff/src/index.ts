// @tlsproxy/handoff: the proxy ↔ backend hand-off contract, as data and types only, so the proxy
// (@tlsproxy/core) and the backend library (@tlsproxy/backend) share it without one depending on
// the other. Each side makes it a live protocol with fdpass's defineProtocol(BACKEND_PROTOCOL).
//
// The proxy ↔ backend protocol over @tlsproxy/fdpass (a SEQPACKET socket the backend listens on).
// The backend listens; the proxy connects, and both send hello (fdpass message layer). Then:
//
//   proxy → backend  request  'server-name' { serverName, info }       → 'server-name-ok' { accept }
//   proxy → backend  request  'connection'  { info } + 1 fd (+ attachment: bytes the backend must
//                                            answer, plaintext MX hand-off only) → 'accepted' {}
//   backend → proxy  request  'control'     { key, op, args }          → 'control-result' { result }
//
// A refused or failed request is answered with an fdpass 'error' message.
//
// Features (what the backend wants from the proxy) travel in the backend's hello, next to
// protocol and version:
//
//   backend → proxy  hello { protocol, version, features: { checkServerName: boolean } }
//
// checkServerName: true means "ask me with 'server-name' before every handshake completes and
// refuse names I refuse" (TLS Pool's LOCALID_CHECK flag), whatever the proxy's own
// --check-server-name says: a backend that registered onServerName must not be failed open.
// Read it with readBackendFeatures(hello). The hello, not a later message, carries it because
// the proxy may hand over the first connection as soon as the hello arrives; and an older proxy
// ignores unknown hello fields (no error, no version bump). A backend without the field (older
// library) means checkServerName: false.
export const PROTOCOL_NAME = 'tlsproxy-backend';
export const PROTOCOL_VERSION = 1;

/** What a backend declares in its hello (see the comment at the top). */
export interface BackendFeatures {
  /** The backend answers 'server-name' and the proxy must ask it (never fail open). */
  checkServerName: boolean;
}

/**
 * The features a backend declared, from its hello as the proxy received it
 * (`(await peer.ready).hello`). Anything missing or not of the right type reads as "not wanted".
 */
export function readBackendFeatures(hello: Readonly<Record<string, unknown>>): BackendFeatures {
  const f = Object.hasOwn(hello, 'features') ? hello.features : undefined;
  const own = (k: string): unknown =>
    typeof f === 'object' && f !== null && !Array.isArray(f) && Object.hasOwn(f, k)
      ? (f as Record<string, unknown>)[k]
      : undefined;
  return { checkServerName: own('checkServerName') === true };
}

/** The protocol's schema (fdpass's ProtocolSpec): `defineProtocol(BACKEND_PROTOCOL)`. */
export const BACKEND_PROTOCOL = {
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
} as const;

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
  /**
   * The dialect's own state (IMAP: { tag }, SMTP: { ehlo }, XMPP: { to }, HTTP Upgrade: the
   * original request, ...). Gathered in plaintext before the TLS handshake: see
   * dialectStateOrigin. Use it for logging and routing hints and to go on with the conversation,
   * never to decide who the client is or what it may do.
   */
  dialectState: Record<string, unknown>;
  /**
   * Where dialectState comes from: always 'pre-tls'. The dialect read it from the client before
   * the handshake, in plaintext, so a man-in-the-middle could have changed it (an HTTP Upgrade
   * request, XMPP stream attributes, SMTP's EHLO name, an IMAP tag). Never use it for
   * authorization; re-validate whatever matters over TLS. HTTP Upgrade: the backend answers the
   * original request over TLS (RFC 2817 §3.3), but that request travelled in plaintext: take no
   * credentials, cookies or authority from it, authenticate over TLS. SMTP: the client repeats
   * EHLO after STARTTLS (RFC 3207 §4.2). XMPP: the client opens a new stream after TLS
   * (RFC 6120 §5.4.3.3). This library sets it to 'pre-tls' when an older proxy omits it.
   */
  dialectStateOrigin: 'pre-tls';
}

const HANDOFF_KINDS: ReadonlySet<string> = new Set(['plain', 'crypt', 'plaintext']);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** v's own property k (never one inherited from Object.prototype). */
function own(v: Record<string, unknown>, k: string): unknown {
  return Object.hasOwn(v, k) ? v[k] : undefined;
}

const isString = (v: unknown): v is string => typeof v === 'string';
const isPort = (v: unknown): boolean =>
  Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 65535;
const isStringArray = (v: unknown): boolean => Array.isArray(v) && v.every(isString);

/** Why a TLS info object is malformed, or undefined. */
function checkTls(v: unknown): string | undefined {
  if (v === null) return undefined;
  if (!isObject(v)) return 'tls is not an object or null';
  if (!isString(own(v, 'version'))) return 'tls.version is not a string';
  if (!isString(own(v, 'cipher'))) return 'tls.cipher is not a string';
  const alpn = own(v, 'alpn');
  if (alpn !== null && !isString(alpn)) return 'tls.alpn is not a string or null';
  return undefined;
}

function checkIdentity(v: unknown): string | undefined {
  if (v === null) return undefined;
  if (!isObject(v)) return 'clientIdentity is not an object or null';
  for (const k of ['subject', 'issuer', 'fingerprint256'])
    if (!isString(own(v, k))) return `clientIdentity.${k} is not a string`;
  const cert = own(v, 'certificate');
  if (cert !== undefined && !isString(cert)) return 'clientIdentity.certificate is not a string';
  const san = own(v, 'san');
  if (!isObject(san)) return 'clientIdentity.san is not an object';
  for (const k of ['dns', 'email', 'uri'])
    if (!isStringArray(own(san, k))) return `clientIdentity.san.${k} is not a list of strings`;
  return undefined;
}

/**
 * Check the hand-off info of a 'connection' message field by field (the message layer checked
 * only that it is an object). Returns the info (dialectStateOrigin defaulted to 'pre-tls' when
 * absent) or why it is malformed.
 */
export function parseHandoffInfo(v: unknown): { info: HandoffInfo } | { error: string } {
  if (!isObject(v)) return { error: 'info is not an object' };
  const bad = (error: string) => ({ error });
  if (!isString(own(v, 'dialect'))) return bad('dialect is not a string');
  const handoff = own(v, 'handoff');
  if (!isString(handoff) || !HANDOFF_KINDS.has(handoff))
    return bad('handoff is not plain, crypt or plaintext');
  const serverName = own(v, 'serverName');
  if (serverName !== null && !isString(serverName))
    return bad('serverName is not a string or null');
  const tlsWhy = checkTls(own(v, 'tls'));
  if (tlsWhy) return bad(tlsWhy);
  const idWhy = checkIdentity(own(v, 'clientIdentity'));
  if (idWhy) return bad(idWhy);
  for (const k of ['remoteAddress', 'localAddress', 'connectionId'])
    if (!isString(own(v, k))) return bad(`${k} is not a string`);
  for (const k of ['remotePort', 'localPort'])
    if (!isPort(own(v, k))) return bad(`${k} is not a port number`);
  const key = own(v, 'controlKey');
  if (key !== null && !isString(key)) return bad('controlKey is not a string or null');
  if (!isObject(own(v, 'dialectState'))) return bad('dialectState is not an object');
  const origin = own(v, 'dialectStateOrigin');
  if (origin !== undefined && origin !== 'pre-tls')
    return bad("dialectStateOrigin is not 'pre-tls'");
  return { info: { ...(v as unknown as HandoffInfo), dialectStateOrigin: 'pre-tls' } };
}

export type ControlOp = 'info' | 'exporter' | 'renegotiate' | 'close';
