// Every limit tlsproxy's engine side enforces, declared once as data: name, default, unit, phase,
// where it is set, what happens past it, and where the default comes from. The listener defaults
// (LISTENER_DEFAULTS in proxy.ts) are derived from LISTENER_LIMITS; docs/limits.md is generated
// from LIMIT_GROUPS (scripts/gen-limits.mjs, `npm run docs:limits`; a test fails when it is
// stale); `tlsproxy check-config` prints the effective values of the same declarations.
//
// The TLS engine's and the backend library's rows are declared here for now because core is the
// package that integrates them; their values are the defaults in @tlsproxy/pool and
// @tlsproxy/backend (engine.ts, remote.ts, daemon.ts, server.ts), which do not export them yet.
//
// Why one file of ~480 lines (issue 16): it is a data table, one entry per limit, and nothing
// else; its length is the number of limits, and one list is what a reader wants to scan.
import type { LimitPhase, LimitUnit } from '@tlsproxy/dialect-kit';
import { FDPASS_LIMITS } from '@tlsproxy/fdpass';
import {
  AFTER_TLS_TIMEOUT_MS,
  DEFAULT_CONNECT_TIMEOUT_MS,
  LOCAL_PROBE_MS,
  MAX_AFTER_TLS_BYTES,
} from './client-session.js';
import {
  CLOSE_DRAIN_BYTES,
  CLOSE_LINGER_MS,
  FLUSH_TIMEOUT_MS,
  REFUSED_MAX_LINGERING,
} from './connection.js';
import { DEFAULT_PROXY_HEADER_TIMEOUT_MS } from './inbound-proxy.js';
import { DEFAULT_MAX_V2_LENGTH, V1_MAX_LENGTH } from './proxy-protocol.js';
import { MAX_PREAMBLE_OUTPUT } from './session.js';
import { MAX_DIALECT_STATE, MAX_DISCARD } from './transition.js';

export interface LimitDeclaration {
  /** What the limit bounds, for people ("Preamble deadline"). */
  readonly title: string;
  /** The name as written where it is set (listener key, option, constant). */
  readonly name: string;
  readonly default: number | string;
  /** `version` for the lowest TLS version; the rest are the dialect kit's units. */
  readonly unit: LimitUnit | 'version';
  readonly phase: LimitPhase;
  /** Words after the default ("per listener (a total over workers)"). */
  readonly note?: string;
  /** Where it is set: a listener key, an engine option, API only, or a constant (and its file). */
  readonly where: string;
  /** What happens past it. */
  readonly past: string;
  /** Where the default comes from: an RFC, a peer (nginx, Postfix, Dovecot…), or a tlsproxy choice. */
  readonly source: string;
}

export interface LimitGroup {
  /** Heading row of the table in docs/limits.md. */
  readonly title: string;
  readonly limits: readonly LimitDeclaration[];
}

/** core: the listener keys and the constants of the connection path. */
export const ENGINE_LIMITS: readonly LimitDeclaration[] = Object.freeze([
  {
    title: 'Preamble deadline',
    name: 'preambleTimeoutMs',
    default: 900_000,
    unit: 'ms',
    phase: 'preamble',
    note: '(15 min)',
    where: 'listener key `preambleTimeoutMs`',
    past: 'Counted from the start of the session (after the PROXY header, if any) until the hand-off begins (the backend said it can take the connection). Log `preamble took too long, closing`; the dialect’s `expired()` reply if it has one (IMAP `* BYE`, SMTP `421 4.4.2`, XMPP `<connection-timeout/>`, HTTP `408`), then closed; without one (POP3, LDAP) closed without a word; outcome `preamble_timeout`.',
    source:
      "tlsproxy: a backstop above every dialect idle timer (the longest is POP3's 10 min, RFC 1939 §3)",
  },
  {
    title: 'Bytes before TLS',
    name: 'maxPreambleBytes',
    default: 64 * 1024,
    unit: 'bytes',
    phase: 'preamble',
    where: 'listener key `maxPreambleBytes`',
    past: "Counted over every read in the preamble; the read that crosses the limit is not given to the dialect. Log `too many bytes before TLS, closing`; the dialect's own closing error first (its `overflow()`: IMAP `* BYE`, POP3 `-ERR`, SMTP `421`, LDAP Notice of Disconnection, XMPP `<policy-violation/>`, HTTP `413`/`400`), then close; outcome `preamble_too_large`.",
    source: 'tlsproxy choice',
  },
  {
    title: 'Replies the client leaves unread',
    name: 'MAX_PREAMBLE_OUTPUT',
    default: MAX_PREAMBLE_OUTPUT,
    unit: 'bytes',
    phase: 'preamble',
    note: '(64 KiB, past what the kernel holds)',
    where: 'constant `MAX_PREAMBLE_OUTPUT` (`packages/core/src/session.ts`)',
    past: "The dialect's replies waiting for a client that does not read them: past this, the client is not read (its commands stay in the kernel, unanswered) until the replies are out. Log `client not reading its replies: reading paused`. The preamble deadline and the dialect's idle timer go on; a closing reply that is never taken is dropped with the connection after 2 s.",
    source:
      "tlsproxy: like Dovecot's and Postfix's output buffers, which stop reading a client whose output is stuck",
  },
  {
    title: 'Concurrent connections',
    name: 'maxConnections',
    default: 10_000,
    unit: 'count',
    phase: 'accept',
    note: 'per listener (a total over workers)',
    where: 'listener key `maxConnections`',
    past: "In every phase (see the table above). Log `connection limit reached, refusing` with `limit=maxConnections` (one line a second at most, `refused` = how many since the last); the client gets the dialect's busy reply; not counted in `tlsproxy_connections_total`. Existing connections are unaffected.",
    source:
      'tlsproxy choice (nginx `worker_connections` 512 per worker, HAProxy `maxconn` per frontend)',
  },
  {
    title: 'Connections per client',
    name: 'maxConnectionsPerAddress',
    default: 64,
    unit: 'count',
    phase: 'accept',
    note: 'per IPv4 address / IPv6 /64 (`ipv6Prefix`); no exemptions (`exempt`)',
    where: 'listener keys `maxConnectionsPerAddress`, `ipv6Prefix`, `exempt`',
    past: 'In every phase (see above); past it, the busy reply, log `per-address connection limit reached` with `limit=maxConnectionsPerAddress` (one line a second at most, with `refused`: how many since the last line, and the first `remote` of them).',
    source: 'tlsproxy choice; Postfix anvil `smtpd_client_connection_count_limit` 50',
  },
  {
    title: 'Handshakes at once',
    name: 'maxHandshakes',
    default: 1000,
    unit: 'count',
    phase: 'handshake',
    note: 'per listener (a total over workers)',
    where: 'listener key `maxHandshakes`',
    past: "From the go-ahead (implicit TLS: accept) to the end of the handshake (handed off early: the client's Finished, which the native engine may report up to 50 ms late while the listener uses less than half its places). Past it: log `TLS handshake limit reached`; STARTTLS gets the temporary failure and the preamble goes on; implicit TLS is closed.",
    source:
      "like nginx's and HAProxy's handshake caps (`maxsslconn`): handshakes cost CPU and memory before anything is authenticated",
  },
  {
    title: 'Idle relayed connection',
    name: 'idleTimeoutMs',
    default: 0,
    unit: 'ms',
    phase: 'relay',
    note: '= off',
    where:
      "listener key `idleTimeoutMs` (also per handshake to the engine; `tlspool --idle-timeout MS` for the daemon's default)",
    past: "No bytes either way for this long after the hand-off: both sides closed, the session's end reported (its control key forgotten), log `relay idle too long`. A peer that vanished (reset) is noticed even while the other side is paused by backpressure.",
    source:
      'stunnel `TIMEOUTidle` (12 h), nginx `proxy_timeout` (10 min): off by default, since IMAP IDLE and LDAP persistent searches are legitimately idle for long',
  },
  {
    title: 'Go-ahead discard cap',
    name: 'MAX_DISCARD',
    default: MAX_DISCARD,
    unit: 'bytes',
    phase: 'handoff',
    note: '(1 MiB)',
    where: 'constant `MAX_DISCARD` (`packages/core/src/transition.ts`)',
    past: 'At the STARTTLS go-ahead (and when answering "unavailable") at most this much pending plaintext is read from the kernel and thrown away, never interpreted. Anything beyond stays in the socket, reaches the TLS engine as if it were the ClientHello, and fails the handshake (`tls_failed`).',
    source: 'tlsproxy: "more than this is an attack" (`transition.ts`)',
  },
  {
    title: 'Dialect state handed off',
    name: 'MAX_DIALECT_STATE',
    default: MAX_DIALECT_STATE,
    unit: 'bytes',
    phase: 'handoff',
    note: 'of JSON',
    where: 'constant `MAX_DIALECT_STATE` (`packages/core/src/transition.ts`)',
    past: "Checked before the go-ahead: log `dialect state too large to hand off; temporary failure`; what the client pipelined after the STARTTLS command is dropped, never interpreted (as on every temporary-failure path); the client gets the dialect's `unavailable` reply (IMAP `tag NO [UNAVAILABLE] …`, POP3 `-ERR [SYS/TEMP] …`, SMTP `454 4.7.0 …`, LDAP `unavailable (52)`, XMPP `<failure/>`, HTTP `503`) and the dialect's `tlsUnavailable()` decides what follows.",
    source:
      "leaves room in fdpass's 32 KiB message header for the rest of the hand-off info (`transition.ts`)",
  },
  {
    title: 'Flush before hand-off',
    name: 'FLUSH_TIMEOUT_MS',
    default: FLUSH_TIMEOUT_MS,
    unit: 'ms',
    phase: 'handoff',
    where: 'constant `FLUSH_TIMEOUT_MS` (`packages/core/src/connection.ts`)',
    past: 'Earlier replies not yet written after 5 s: the hand-off goes on anyway.',
    source: 'tlsproxy choice',
  },
  {
    title: 'Close linger',
    name: 'CLOSE_LINGER_MS',
    default: CLOSE_LINGER_MS,
    unit: 'ms',
    phase: 'preamble',
    where: 'constant `CLOSE_LINGER_MS` (`packages/core/src/connection.ts`)',
    past: "After a dialect's closing reply (or the plaintext hand-off's `unavailable`), a client that does not read is destroyed after 2 s.",
    source: 'tlsproxy: "a client that never reads must not hold the socket open forever"',
  },
  {
    title: "Peer's bytes after our goodbye",
    name: 'CLOSE_DRAIN_BYTES',
    default: CLOSE_DRAIN_BYTES,
    unit: 'bytes',
    phase: 'preamble',
    where: 'constant `CLOSE_DRAIN_BYTES` (`packages/core/src/connection.ts`)',
    past: "After the proxy's last reply and FIN — to a client (`* BYE`, `221`, a busy or timeout reply) or, in the client role, to a server that gave no TLS (`a3 LOGOUT`, `QUIT`) — what the peer still sends is read and dropped for up to `CLOSE_LINGER_MS`, so its FIN ends the connection at once; past this many bytes the connection is closed at once (a peer that ignores the FIN and goes on writing is not read for the whole linger).",
    source: 'tlsproxy choice (a goodbye is one line; as `maxPreambleBytes`)',
  },
  {
    title: 'Refused connections lingering',
    name: 'REFUSED_MAX_LINGERING',
    default: REFUSED_MAX_LINGERING,
    unit: 'count',
    phase: 'accept',
    where: 'constant `REFUSED_MAX_LINGERING` (`packages/core/src/connection.ts`), per process',
    past: "A connection refused past a limit gets its busy reply and waits up to `CLOSE_LINGER_MS` for the client's FIN; past this many such in the process, the next ones are closed as soon as the reply is with the kernel (refusals come at the client's rate; each lingering one is a descriptor).",
    source: 'tlsproxy choice',
  },
  {
    title: 'Inbound PROXY header wait',
    name: 'proxyProtocol.timeoutMs',
    default: DEFAULT_PROXY_HEADER_TIMEOUT_MS,
    unit: 'ms',
    phase: 'accept',
    where:
      'listener key `proxyProtocol.timeoutMs` (`packages/core/src/inbound-proxy.ts`, `proxy.ts`)',
    past: 'Trusted peers only. Log `PROXY header refused; closing` (`no complete PROXY header within … ms`); connection destroyed, no reply.',
    source: 'tlsproxy choice',
  },
  {
    title: 'Inbound PROXY v2 header size',
    name: 'maxV2Length',
    default: DEFAULT_MAX_V2_LENGTH,
    unit: 'bytes',
    phase: 'accept',
    note: '(prefix included); at most 4 112 bytes are peeked (`MSG_PEEK`)',
    where: '`decodeProxyHeader` option `maxV2Length`, fixed at its default by `inbound-proxy.ts`',
    past: '`PROXY v2 header of N octets exceeds 4096`: refused, connection destroyed.',
    source:
      'code comment: the protocol allows 65 551, real headers with TLS TLVs are a few hundred octets (`proxy-protocol.ts`)',
  },
  {
    title: 'Inbound PROXY v1 line',
    name: 'V1_MAX_LENGTH',
    default: V1_MAX_LENGTH,
    unit: 'bytes',
    phase: 'accept',
    note: 'CRLF included',
    where: 'constant `V1_MAX_LENGTH` (`proxy-protocol.ts`)',
    past: '`PROXY v1 line too long`: refused, connection destroyed.',
    source: 'HAProxy proxy-protocol.txt §2.1',
  },
]);

/**
 * The client role (`role: client`, packages/core/src/client-session.ts): the limits of its own.
 * The listener keys above apply too, counted the same way: `maxConnections`,
 * `maxConnectionsPerAddress` (local clients), `maxHandshakes` (handshakes with servers),
 * `preambleTimeoutMs` and `maxPreambleBytes` (the SERVER's preamble, up to its go-ahead),
 * `idleTimeoutMs` (the relay), and `tls.handshakeTimeoutMs`.
 */
export const CLIENT_ROLE_LIMITS: readonly LimitDeclaration[] = Object.freeze([
  {
    title: 'Connect to the server',
    name: 'connectTimeoutMs',
    default: DEFAULT_CONNECT_TIMEOUT_MS,
    unit: 'ms',
    phase: 'accept',
    note: '(role client)',
    where: 'listener key `connectTimeoutMs` (`client-session.ts`)',
    past: 'Log `cannot connect to the server, closing the local connection` (also for a refused or unreachable server); the local client is closed without a word; outcome `connect_failed`.',
    source: "stunnel's `TIMEOUTconnect` (10 s)",
  },
  {
    title: "Server's preamble (role client)",
    name: 'maxPreambleBytes',
    default: 64 * 1024,
    unit: 'bytes',
    phase: 'preamble',
    where: 'listener key `maxPreambleBytes` (the same key as above)',
    past: 'Bytes the server sends before its STARTTLS go-ahead. Log `server sent too many bytes before TLS, closing`; both connections closed; outcome `preamble_too_large`.',
    source: 'tlsproxy choice (the same default as the server role)',
  },
  {
    title: 'Handshakes at once (role client)',
    name: 'maxHandshakes',
    default: 1000,
    unit: 'count',
    phase: 'handshake',
    note: 'per listener (a total over workers)',
    where: 'listener key `maxHandshakes` (the same key as above)',
    past: "TLS handshakes with servers at once. Past it, at the server's go-ahead: log `TLS handshake limit reached, closing`; the server connection is closed, the local client gets the dialect's busy reply (as past `maxConnections`); outcome `closed_in_preamble`.",
    source: 'as for the server role',
  },
  {
    title: 'Bytes after the go-ahead (role client)',
    name: 'injectedAfterGoAhead',
    default: 0,
    unit: 'bytes',
    phase: 'handshake',
    where: "fixed (`client-session.ts`); the dialect refuses bytes in the go-ahead's own read",
    past: 'Any byte the server sends after its go-ahead and before our ClientHello (not TLS: the response-injection attack class). Log `server sent bytes after its STARTTLS go-ahead (never relayed); closing`; counted in `tlsproxy_injection_attempts_total`; both connections closed; the local client gets none of it.',
    source: 'RFC 3207 §4.2, RFC 2595 §3.1: no plaintext after the go-ahead',
  },
  {
    title: 'Local client gone before TLS (role client)',
    name: 'LOCAL_PROBE_MS',
    default: LOCAL_PROBE_MS,
    unit: 'ms',
    phase: 'preamble',
    note: 'between looks',
    where: 'constant (`client-session.ts`)',
    past: 'The local socket is not read before TLS; it is peeked at this often until the handshake starts. EOF with nothing queued, or a reset: log `local client went away before TLS, closing`; the server connection is closed; outcome `closed_in_preamble`.',
    source: "as the TLS engine's probe of a paused relay side (`PROBE_MS`, 1 s)",
  },
  {
    title: "Server's answer to the upgrade, over TLS (role client)",
    name: 'AFTER_TLS_TIMEOUT_MS',
    default: AFTER_TLS_TIMEOUT_MS,
    unit: 'ms',
    phase: 'relay',
    note: `and ${MAX_AFTER_TLS_BYTES} bytes (\`MAX_AFTER_TLS_BYTES\`)`,
    where:
      'constants (`client-session.ts`); only for a dialect whose client side has `afterTls` (HTTP Upgrade)',
    past: "The server's own answer to the upgrading request (RFC 2817 §3.3), which must not reach the local client, is not complete in time or size: log `server’s first answer over TLS not as expected, closing`; both connections closed.",
    source:
      "as the connect-mode greeting swallow (10 s); 64 KiB above the HTTP dialect's 16 KiB head bound",
  },
]);

/** `unix:` backends (descriptor hand-off), packages/core/src/backend.ts. */
export const UNIX_BACKEND_LIMITS: readonly LimitDeclaration[] = Object.freeze([
  {
    title: 'Backend connect + hello',
    name: 'connectTimeoutMs',
    default: 2000,
    unit: 'ms',
    phase: 'handoff',
    where:
      '`UnixBackendOptions.connectTimeoutMs` (`backend.ts`); API only — `TlsProxy` does not pass it (`proxy.ts`)',
    past: "Log `backend unreachable` / `backend refused the hand-off protocol`; at STARTTLS the client gets the dialect's temporary failure and the preamble goes on.",
    source: 'tlsproxy choice (core README)',
  },
  {
    title: 'Backend answer (SNI check, taking a connection)',
    name: 'requestTimeoutMs',
    default: 5000,
    unit: 'ms',
    phase: 'handoff',
    where: '`UnixBackendOptions.requestTimeoutMs` (`backend.ts`, `backend.ts`); API only',
    past: "SNI check: counted as a refusal (`handoff.ts`), the client gets an `unrecognized_name` alert. Connection: log `backend did not take the connection`, outcome `handoff_failed`; the proxy closes its copy of the descriptor and, after TLS, asks the engine to close the session (`handoff.ts`); plaintext MX hand-off: the client first gets the dialect's `unavailable`. A backend that received the descriptor but did not answer still holds it.",
    source: 'tlsproxy choice (core README)',
  },
  {
    title: 'Control keys remembered',
    name: 'MAX_KEYS',
    default: 100_000,
    unit: 'count',
    phase: 'relay',
    note: 'per backend',
    where: 'constant `MAX_KEYS` (`backend.ts`)',
    past: 'With the embedded engine a key is forgotten when its session ends, so this bounds only live connections; with a tlspool daemon (which does not report ends) the oldest key is forgotten first. A forgotten key is refused (`TLSPROXY_ERR_POOL_UNKNOWN_KEY`).',
    source: 'tlsproxy choice',
  },
  {
    title: 'Ended keys recognised',
    name: 'MAX_ENDED_KEYS',
    default: 4096,
    unit: 'count',
    phase: 'relay',
    note: 'per backend',
    where: 'constant `MAX_ENDED_KEYS` (`backend.ts`)',
    past: 'Keys of recently ended connections are refused as `the connection has ended` without counting towards the 16 unknown keys; older ones count as unknown.',
    source: 'tlsproxy choice',
  },
  {
    title: 'SMTP MX mode replay answer (connect-mode backends)',
    name: 'replayTimeoutMs',
    default: 10_000,
    unit: 'ms',
    phase: 'handoff',
    note: 'and 8 192 bytes (the greeting bounds below)',
    where: 'same bounds as the greeting below (`#swallow`)',
    past: "`no complete answer to the replayed command within … ms`: both sockets destroyed; the client gets the dialect's `unavailable` reply.",
    source: 'as the greeting',
  },
]);

/** `connect:` backends (legacy servers), packages/core/src/connect-backend.ts. */
export const CONNECT_BACKEND_LIMITS: readonly LimitDeclaration[] = Object.freeze([
  {
    title: 'Connect timeout',
    name: 'connectTimeoutMs',
    default: 2000,
    unit: 'ms',
    phase: 'handoff',
    where:
      '`ConnectBackendSpec.connectTimeoutMs` (`connect-backend.ts`); API only (not in the YAML schema, `packages/cli/src/config.ts` passes only `connect` and `proxyProtocol`)',
    past: "At STARTTLS: log `backend unreachable`; the client gets the dialect's temporary failure, the preamble goes on.",
    source: 'tlsproxy choice',
  },
  {
    title: 'Greeting swallow time',
    name: 'greetingTimeoutMs',
    default: 10_000,
    unit: 'ms',
    phase: 'relay',
    where: '`ConnectBackendSpec.greetingTimeoutMs` (`connect-backend.ts`, `#swallow`); API only',
    past: "`no complete greeting within … ms`: both sockets destroyed; outcome `handoff_failed` (the client's TLS session ends).",
    source: 'tlsproxy choice (core README: "the engine bounds the wait (10 s)")',
  },
  {
    title: 'Greeting swallow size',
    name: 'maxGreetingBytes',
    default: 8192,
    unit: 'bytes',
    phase: 'relay',
    where:
      '`ConnectBackendOptions.maxGreetingBytes` (`connect-backend.ts`, `#swallow`); not reachable through `TlsProxy` (`proxy.ts`)',
    past: '`greeting longer than 8192 octets`: as above.',
    source: 'tlsproxy choice (core README: "and the size (8 KiB)")',
  },
  {
    title: 'Pre-connected spare age',
    name: 'spareMaxAgeMs',
    default: 2000,
    unit: 'ms',
    phase: 'handoff',
    where:
      '`ConnectBackendOptions.spareMaxAgeMs` (`connect-backend.ts`); not reachable through `TlsProxy`',
    past: 'The unused connection opened at STARTTLS (e.g. after a failed handshake) is closed.',
    source:
      "inside the servers' PROXY-header timeouts: Dovecot `haproxy_timeout` 3 s, Postfix `smtpd_upstream_proxy_timeout` 5 s (`connect-backend.ts`)",
  },
  {
    title: 'Spares kept',
    name: 'maxSpares',
    default: 256,
    unit: 'count',
    phase: 'handoff',
    where:
      '`ConnectBackendOptions.maxSpares` (`connect-backend.ts`); not reachable through `TlsProxy`',
    past: 'The oldest spare is destroyed.',
    source: 'tlsproxy choice',
  },
]);

/** The TLS engine, @tlsproxy/pool (its defaults in engine.ts). */
export const POOL_LIMITS: readonly LimitDeclaration[] = Object.freeze([
  {
    title: 'Handshake timeout',
    name: 'handshakeTimeoutMs',
    default: 10_000,
    unit: 'ms',
    phase: 'handshake',
    where:
      'engine option `handshakeTimeoutMs`; YAML `tls.handshakeTimeoutMs` (embedded engine) or per listener `listeners[].tls.handshakeTimeoutMs` (also sent to a tlspool daemon); `tlspool` has no flag for its own default (`engine.ts`)',
    past: "`TLSPROXY_ERR_POOL_TIMEOUT` `TLS handshake not done within … ms`: the TCP connection is destroyed, no TLS alert; log `TLS handshake failed`, outcome `tls_failed`. Handed off early (native engine, TLS 1.3, no client certificates: `tls.earlyHandoff`), a client that stalls after our Finished: the backend's end closes empty, log `TLS handshake failed after the hand-off`.",
    source:
      '`engine.ts`: shorter than nginx\'s `ssl_handshake_timeout` and stunnel\'s (60 s each) — "a proxy in front of many idle clients wants it shorter"',
  },
  {
    title: 'Live TLS sessions',
    name: 'maxSessions',
    default: 100_000,
    unit: 'count',
    phase: 'handshake',
    note: 'per engine (per process)',
    where: 'engine option `maxSessions` (`engine.ts`); API only (not in YAML, no `tlspool` flag)',
    past: 'The handshake is refused before it starts: connection destroyed, `TLSPROXY_ERR_POOL_HANDSHAKE` `TLS engine is closed or at its session limit`; outcome `tls_failed`.',
    source: 'tlsproxy choice',
  },
  {
    title: 'Lowest TLS version',
    name: 'minVersion',
    default: 'TLSv1.2',
    unit: 'version',
    phase: 'handshake',
    where:
      'engine option `minVersion`; YAML `tls.minVersion` (`TLSv1.2` or `TLSv1.3`, embedded engine only; no `tlspool` flag) (`identities.ts`)',
    past: 'Older ClientHellos fail the handshake (OpenSSL protocol-version alert); outcome `tls_failed`.',
    source: 'tlsproxy choice (pool README)',
  },
  {
    title: 'Byte counts waiting for JS (native engine)',
    name: 'BYTES_MAX_QUEUED',
    default: 256,
    unit: 'count',
    phase: 'relay',
    note: 'events (~52 KiB) per engine',
    where: 'constant `BYTES_MAX_QUEUED` (`packages/engine-native/src/native/loop.c`)',
    past: "While this many of the engine's events are not yet taken by the JS thread, live sessions' byte counts (`onBytes`, the metrics' byte totals) wait in their connections — counters, so nothing is lost: the next report or the session's end carries them. Bounds what a stalled JS thread finds queued (a 4 s stall with 60 trickling sessions: 480 reports before, about 300 now).",
    source: 'tlsproxy choice',
  },
  {
    title: 'Exporter length',
    name: 'exporterLength',
    default: 1024,
    unit: 'bytes',
    phase: 'relay',
    note: 'at most (1..1024)',
    where: 'constant (`engine.ts`)',
    past: '`TLSPROXY_ERR_POOL_CONTROL` `exporter needs a label and a length of 1..1024`.',
    source: 'tlsproxy choice',
  },
]);

/** The tlspool daemon and its client (@tlsproxy/pool remote.ts, daemon.ts). */
export const POOL_DAEMON_LIMITS: readonly LimitDeclaration[] = Object.freeze([
  {
    title: 'Daemon connect + hello',
    name: 'connectTimeoutMs',
    default: 2000,
    unit: 'ms',
    phase: 'handoff',
    where: '`RemoteOptions.connectTimeoutMs` (`remote.ts`); API only',
    past: "The engine counts as unavailable: at STARTTLS the client gets the dialect's temporary failure. The same deadline bounds the `server-names` request (`remote.ts`; on timeout the name list stays empty).",
    source: 'tlsproxy choice',
  },
  {
    title: 'Handshake request to the daemon',
    name: 'handshakeRequestSlackMs',
    default: 5000,
    unit: 'ms',
    phase: 'handshake',
    note: "on top of the listener's `tls.handshakeTimeoutMs` (else 10 000 ms)",
    where: 'derived (`remote.ts`)',
    past: '`TLSPROXY_ERR_FDPASS_TIMEOUT` wrapped as `TLSPROXY_ERR_POOL_HANDSHAKE`; outcome `tls_failed`.',
    source: "tlsproxy: the daemon's own deadline plus slack",
  },
  {
    title: 'Control request to the daemon',
    name: 'controlTimeoutMs',
    default: 10_000,
    unit: 'ms',
    phase: 'relay',
    where: 'constant (`remote.ts`)',
    past: 'The control request fails (`TLSPROXY_ERR_POOL_CONTROL`).',
    source: 'tlsproxy choice',
  },
  {
    title: 'Daemon → proxy SNI question',
    name: 'serverNameTimeoutMs',
    default: 5000,
    unit: 'ms',
    phase: 'handshake',
    where: 'constant (`daemon.ts`)',
    past: 'The SNI callback rejects: the handshake fails.',
    source: 'same as the backend answer timeout',
  },
]);

/** The backend library, @tlsproxy/backend (server.ts). */
export const BACKEND_LIBRARY_LIMITS: readonly LimitDeclaration[] = Object.freeze([
  {
    title: 'Queued connections',
    name: 'maxPending',
    default: 128,
    unit: 'count',
    phase: 'handoff',
    where: '`listen({ maxPending })` (`server.ts`)',
    past: 'Error reply `TLSPROXY_ERR_BACKEND_BUSY` `backend is not accepting connections`, descriptor closed; the proxy logs `backend did not take the connection`, outcome `handoff_failed`.',
    source: 'tlsproxy choice',
  },
  {
    title: 'Control request',
    name: 'controlTimeoutMs',
    default: 10_000,
    unit: 'ms',
    phase: 'relay',
    where: 'constant (`server.ts`)',
    past: '`TLSPROXY_ERR_BACKEND_CONTROL`.',
    source: 'tlsproxy choice (backend README)',
  },
]);

/** The limits a listener sets by key (a subset of ENGINE_LIMITS, plus ipv6Prefix). */
export const LISTENER_LIMIT_NAMES = [
  'maxConnections',
  'maxConnectionsPerAddress',
  'ipv6Prefix',
  'maxHandshakes',
  'preambleTimeoutMs',
  'maxPreambleBytes',
  'idleTimeoutMs',
] as const;
export type ListenerLimitName = (typeof LISTENER_LIMIT_NAMES)[number];

/** Listener keys of the client role only (role: client). */
export const CLIENT_LISTENER_LIMIT_NAMES = ['connectTimeoutMs'] as const;
export type ClientListenerLimitName = (typeof CLIENT_LISTENER_LIMIT_NAMES)[number];

/** The client role's own listener keys, by name. */
export const CLIENT_LISTENER_LIMITS: ReadonlyMap<ClientListenerLimitName, LimitDeclaration> =
  new Map(
    CLIENT_LISTENER_LIMIT_NAMES.map((name) => {
      const d = CLIENT_ROLE_LIMITS.find((l) => l.name === name);
      if (!d || typeof d.default !== 'number')
        throw new Error(`no numeric declaration for ${name}`);
      return [name, d] as const;
    }),
  );

/** ipv6Prefix is part of the per-client row in the docs; declared here for the defaults. */
const IPV6_PREFIX: LimitDeclaration = {
  title: 'IPv6 client network',
  name: 'ipv6Prefix',
  default: 64,
  unit: 'count',
  phase: 'accept',
  note: 'bits',
  where: 'listener key `ipv6Prefix`',
  past: 'IPv6 clients are counted per network of this many bits for `maxConnectionsPerAddress`.',
  source: 'one host usually owns a whole /64',
};

/** Every listener-key limit, by name. */
export const LISTENER_LIMITS: ReadonlyMap<ListenerLimitName, LimitDeclaration> = new Map(
  LISTENER_LIMIT_NAMES.map((name) => {
    const d = name === 'ipv6Prefix' ? IPV6_PREFIX : ENGINE_LIMITS.find((l) => l.name === name);
    if (!d || typeof d.default !== 'number') throw new Error(`no numeric declaration for ${name}`);
    return [name, d] as const;
  }),
);

/** Every group of limits outside the dialects, in the order of docs/limits.md. */
export const LIMIT_GROUPS: readonly LimitGroup[] = Object.freeze([
  { title: 'Engine (`@tlsproxy/core`)', limits: ENGINE_LIMITS },
  {
    title: 'Client role (`role: client`, `packages/core/src/client-session.ts`)',
    limits: CLIENT_ROLE_LIMITS,
  },
  {
    title: 'Backends that take descriptors (`unix:`, `packages/core/src/backend.ts`)',
    limits: UNIX_BACKEND_LIMITS,
  },
  {
    title: 'Legacy servers (`connect:`, `packages/core/src/connect-backend.ts`)',
    limits: CONNECT_BACKEND_LIMITS,
  },
  { title: 'TLS engine (`@tlsproxy/pool`)', limits: POOL_LIMITS },
  {
    title: '`tlspool` daemon and its client (`packages/pool/src/remote.ts`, `daemon.ts`)',
    limits: POOL_DAEMON_LIMITS,
  },
  {
    title: 'Backend library (`@tlsproxy/backend`, `packages/backend/src/server.ts`)',
    limits: BACKEND_LIBRARY_LIMITS,
  },
  { title: 'fdpass (`@tlsproxy/fdpass`)', limits: FDPASS_LIMITS },
]);
