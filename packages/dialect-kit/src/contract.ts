// The Dialect contract (DESIGN.md "Dialect interface — contract").
//
// Theory of operation: a dialect is a sans-I/O state machine in the style of h11/aioquic. The
// engine creates one DialectSession per client connection, calls start() once, then receive()
// with whatever bytes TCP delivered and timer() when a deadline the dialect asked for passes.
// Every call returns a list of actions the engine carries out in order. A dialect never touches
// a socket, a timer or a promise, so the same session can be replayed byte by byte in tests.

/** Bytes to write to the client. */
export interface SendAction {
  type: 'send';
  data: Uint8Array;
}

/**
 * The client asked to start TLS. The engine first makes sure a backend can take the connection;
 * only then does it write `goAhead` and start the TLS handshake. If no backend can, it writes
 * `unavailable` (the protocol's temporary-failure reply) and calls `tlsUnavailable()`.
 * Any bytes the client sent after the STARTTLS command are in `trailing`: the engine never
 * interprets them and never lets them reach TLS or the backend.
 */
export interface StartTlsAction {
  type: 'starttls';
  goAhead: Uint8Array;
  unavailable: Uint8Array;
  /** Dialect state the backend needs after the hand-off (documented per dialect). */
  state: Record<string, unknown>;
  /** Bytes received after the STARTTLS command line; discarded by the engine (logged). */
  trailing: Uint8Array;
}

/**
 * Hand the connection over in plaintext (e.g. SMTP MX mode: a sender without STARTTLS). The
 * backend receives `buffered` (bytes the client already sent that the backend must answer).
 */
export interface PlaintextAction {
  type: 'plaintext';
  buffered: Uint8Array;
  state: Record<string, unknown>;
  /** Written to the client if no backend can take the connection; the engine then closes. */
  unavailable: Uint8Array;
}

/** Write `data` (if any) and close the connection. */
export interface CloseAction {
  type: 'close';
  data?: Uint8Array;
  reason: string;
}

/** Ask for timer(now) to be called at `at` (ms, same clock as `now`). Replaces any earlier one. */
export interface TimerAction {
  type: 'timer';
  at: number;
}

/** A line for the engine's log, tagged with the connection. */
export interface LogAction {
  type: 'log';
  level: 'debug' | 'info' | 'warn' | 'error';
  message: string;
  /**
   * Optional, for logs and metrics: this line reports a pre-TLS command. 'command': one was
   * answered; 'bad-command': one was refused as malformed, unknown or out of place (the
   * protocol's BAD / 500 / -ERR), counted in `tlsproxy_bad_commands_total`. With an event the
   * engine logs only `command`, never `message`.
   */
  event?: 'command' | 'bad-command';
  /** With `event`: the command's NAME only ('LOGIN', 'EHLO'), never arguments or credentials.
   * The engine keeps a short token (letters, digits, '-', '_', up to 32) and upper-cases it. */
  command?: string;
}

export type Action =
  | SendAction
  | StartTlsAction
  | PlaintextAction
  | CloseAction
  | TimerAction
  | LogAction;

export interface DialectSession {
  /** Called once when the client connects: usually returns the greeting and an idle timer. */
  start(now: number): Action[];
  /** Bytes from the client, in any chunking. Must never throw on peer input. */
  receive(data: Uint8Array, now: number): Action[];
  /** A deadline set with a timer action has passed. */
  timer(now: number): Action[];
  /** The engine could not find a backend after a starttls action; the preamble goes on. */
  tlsUnavailable(now: number): Action[];
  /** The client closed its sending side. */
  eof?(now: number): Action[];
  /**
   * The engine's cap on bytes before TLS (`maxPreambleBytes`) was crossed: return the protocol's
   * own closing error (IMAP `* BYE`, POP3 `-ERR`, SMTP `500`/`421`, LDAP Notice of Disconnection,
   * XMPP `<policy-violation/>` (with a stream header if none was sent yet), HTTP `413`/`400`).
   * The engine writes it, then closes; receive() is not called again. Pure, must not throw.
   * Absent: the connection is closed without a word.
   */
  overflow?(now: number): Uint8Array;
  /**
   * The engine's whole-preamble deadline (`preambleTimeoutMs`) passed — a client that kept the
   * connection busy, e.g. one octet at a time, without reaching TLS: return the protocol's own
   * closing reply for a timeout (IMAP `* BYE`, SMTP `421 4.4.2`, XMPP `<connection-timeout/>`
   * (with a stream header if none was sent yet), HTTP `408`), which the engine writes before it
   * closes; nothing is called after it. Pure, must not throw. Absent: closed without a word (as
   * RFC 1939 asks of POP3's autologout, and slapd does).
   */
  expired?(now: number): Uint8Array;
}

/** Context the engine gives a new session. */
export interface SessionContext<O = Record<string, unknown>> {
  options: O;
  limits: Readonly<Record<string, number>>;
  /** Host name to use in greetings (configured, or the machine's). */
  hostname: string;
  /** Unique per connection; usable as a stream id, never as a secret. */
  connectionId: string;
  /** DNS names the TLS engine has certificates for (lowercase; may include `*.` wildcards).
   * Dialects that must know the served domains (XMPP stream `to`) use these by default. */
  serverNames?: readonly string[];
  /** Whether the listener already runs TLS (implicit TLS): dialects may then skip STARTTLS. */
  secure?: boolean;
}

export type OptionType = 'string' | 'number' | 'boolean' | 'string[]';

/**
 * One option as data: its type, default and constraints. The kit's one validator
 * (`resolveOptions`, `readOptions`) checks the constraints in this order: type, `oneOf`,
 * `min`/`max`, `pattern` (for a string, or every string of a list), `minItems`, then `validate`
 * for what data cannot say. `problem` is the message when `pattern` or `oneOf` fails.
 */
export interface OptionSpec {
  type: OptionType;
  default: unknown;
  description: string;
  /** The allowed values (strings or numbers). */
  oneOf?: readonly (string | number)[];
  /** For numbers: inclusive bounds (and integers only when `integer`). */
  min?: number;
  max?: number;
  integer?: boolean;
  /** For a string, or each string of a list: must match. */
  pattern?: RegExp;
  /** For a list: at least this many items. */
  minItems?: number;
  /** The message when `pattern` or `oneOf` fails ("printable ASCII, not empty"). */
  problem?: string;
  /** Return an error message for a bad value, or undefined (after the checks above passed). */
  validate?: (value: unknown) => string | undefined;
}

/** What a limit counts: octets, milliseconds, or a number of things (commands, PDUs, ...). */
export type LimitUnit = 'bytes' | 'ms' | 'count';

/**
 * When a limit applies in a connection's life: `accept` (before the dialect runs), `preamble`
 * (the plaintext exchange before STARTTLS), `handshake` (TLS), `handoff` (to the backend),
 * `relay` (after the hand-off).
 */
export type LimitPhase = 'accept' | 'preamble' | 'handshake' | 'handoff' | 'relay';

export const LIMIT_UNITS: readonly LimitUnit[] = ['bytes', 'ms', 'count'];
export const LIMIT_PHASES: readonly LimitPhase[] = [
  'accept',
  'preamble',
  'handshake',
  'handoff',
  'relay',
];

/**
 * One limit, declared once: the dialect reads it from `context.limits`, the engine validates it,
 * and docs/limits.md is generated from these declarations. `unit` and `phase` are optional for
 * third-party dialects written before they existed; every tlsproxy dialect declares both.
 */
export interface LimitSpec {
  default: number;
  description: string;
  /** Where the default comes from (an RFC, a real server). */
  source?: string;
  unit?: LimitUnit;
  phase?: LimitPhase;
}

/** Which limit turned a connection away, for the busy reply's text ("too many connections from
 * your address" vs "too many connections"). */
export type BusyLimit = 'maxConnections' | 'maxConnectionsPerAddress';

/** What a dialect plugin exports (default export or named `dialect`). */
export interface Dialect<O = Record<string, unknown>> {
  name: string;
  description?: string;
  /** Standard ports: `starttls` for the plaintext port, `implicit` for an implicit-TLS port. */
  defaultPorts: { starttls?: number; implicit?: number };
  options: Record<string, OptionSpec>;
  limits: Record<string, LimitSpec>;
  create(context: SessionContext<O>): DialectSession;
  /**
   * The protocol's "too busy, try later" reply, written (then the connection closed) when a
   * connection is refused at accept because a limit is reached (IMAP `* BYE`, POP3
   * `-ERR [SYS/TEMP]`, SMTP `421`, LDAP Notice of Disconnection, XMPP
   * `<resource-constraint/>`, HTTP `503`). Absent: the connection is closed without a word.
   */
  busy?(context: { hostname: string; now: number; limit?: BusyLimit }): Uint8Array;
  /**
   * For connect-mode backends (`backend: { connect: 'tcp:host:port' }`, a legacy server that
   * greets every new connection): the client already got the dialect's greeting before TLS, so
   * the engine swallows the backend's own. Pure and sans-I/O like the rest: given every byte the
   * backend has sent so far after the connect (and after the PROXY header was written), return
   * how many of them form its greeting once it is complete — those are discarded, anything after
   * them is relayed to the client — or `null` while more bytes are needed. Return 0 for bytes
   * that are not a greeting to swallow (a refusal such as IMAP `* BYE`, POP3 `-ERR`, SMTP `554`):
   * they are relayed so the client sees the server's own reason. Must not throw.
   *
   * Absent: the backend sends nothing first (LDAP, XMPP, HTTP), and bytes are relayed as they
   * come. The engine bounds the wait (`greetingTimeoutMs`, default 10 s) and the size
   * (`maxGreetingBytes`, default 8 KiB): past either, the connection is closed.
   */
  backendGreeting?: (data: Uint8Array) => number | null;
  /**
   * For plaintext hand-offs (`plaintext` action) to connect-mode backends: what the legacy server
   * must hear before the client's buffered bytes because the dialect already answered it for the
   * client — SMTP's EHLO, without which a server refuses MAIL with 503. Given the action's
   * `state`, return the bytes to send (after the greeting was swallowed) and a judge of the
   * server's answer with `backendGreeting`'s contract: octets to swallow once complete, `null`
   * while more are needed, 0 to relay the answer to the client instead (a refusal). Return null
   * when nothing needs replaying. Pure; must not throw. Absent: nothing is replayed.
   */
  backendReplay?: (
    state: Record<string, unknown>,
  ) => { send: Uint8Array; reply: (data: Uint8Array) => number | null } | null;
  /**
   * The client role (`role: client`): speak this protocol to a server up to STARTTLS as a
   * client. Absent: the dialect is server-side only.
   */
  // biome-ignore lint/suspicious/noExplicitAny: each dialect's client has its own option type
  client?: ClientDialect<any>;
}

// ---------------------------------------------------------------------------------------------
// The client role (issue 18): the proxy accepts a plaintext connection from a local client,
// connects to a real server, speaks the server's preamble up to STARTTLS as a client, runs the
// TLS client handshake (server certificate verified: chain and name), and then relays the local
// client's bytes through TLS. The same sans-I/O shape as the server side: bytes from the SERVER
// in, actions out. The local client's bytes are not read until TLS is up (the engine pauses
// them), so a client dialect never sees them.

/**
 * The server gave the go-ahead for TLS (IMAP `OK`, POP3 `+OK`, SMTP `220`, LDAP success,
 * XMPP `<proceed/>`, HTTP `101`): the engine starts the TLS client handshake on the server
 * connection now. The dialect consumed exactly the go-ahead. If the same read carried bytes
 * after it — plaintext the server (or a man in the middle) sent that would otherwise be taken
 * as if it had come over TLS, the response-injection attack class — the dialect returns a
 * `close` instead of this, never a `starttls`.
 */
export interface ClientStartTlsAction {
  type: 'starttls';
  /**
   * Written to the local client once the handshake succeeded and the server's certificate was
   * verified, before any relayed byte. Per dialect and documented: IMAP/POP3/SMTP the server's
   * greeting, held until TLS is verified (stunnel's client mode instead writes to the local
   * client before TLS, and its IMAP client a fixed `* OK Connected.`; IMAP here is sent without its pre-TLS CAPABILITY code,
   * which would advertise STARTTLS/LOGINDISABLED to a client that will never see TLS), empty for
   * LDAP, XMPP (the local client opens its own stream inside) and HTTP Upgrade.
   */
  toLocal: Uint8Array;
  /** For logs: what was learnt before TLS (e.g. `{ capabilities: [...] }`). */
  state: Record<string, unknown>;
}

/**
 * No TLS: STARTTLS not offered, refused, a timeout, bytes after the go-ahead, or a reply out of
 * protocol. The engine writes `data` to the server if any (a polite `LOGOUT`/`QUIT`), writes
 * `toLocal` to the local client if any (the protocol's own error, e.g. IMAP `* BYE`, SMTP `421`),
 * closes both and logs `reason`. There is never a silent plaintext fallback.
 */
export interface ClientCloseAction {
  type: 'close';
  data?: Uint8Array;
  toLocal?: Uint8Array;
  reason: string;
}

/**
 * An explicit, opt-in plaintext fallback (SMTP's Postfix `may` policy, off by default): the
 * server does not offer STARTTLS and the dialect's options allow going on without TLS. The
 * engine writes `toLocal` to the local client and relays in plaintext, with a warning log line.
 */
export interface ClientPlaintextAction {
  type: 'plaintext';
  toLocal: Uint8Array;
  reason: string;
}

/** What a client-side session returns: `send` writes to the SERVER. */
export type ClientAction =
  | SendAction
  | ClientStartTlsAction
  | ClientCloseAction
  | ClientPlaintextAction
  | TimerAction
  | LogAction;

export interface ClientDialectSession {
  /** Called once when the server connection is up: LDAP/XMPP/HTTP send first; IMAP/POP3/SMTP
   * usually only set a timer and wait for the greeting. */
  start(now: number): ClientAction[];
  /** Bytes from the server, in any chunking. Must never throw on peer input. */
  receive(data: Uint8Array, now: number): ClientAction[];
  /** A deadline set with a timer action has passed (a silent server: close). */
  timer(now: number): ClientAction[];
  /** The server closed its sending side before the go-ahead. */
  eof?(now: number): ClientAction[];
}

export interface ClientContext<O = Record<string, unknown>> {
  options: O;
  limits: Readonly<Record<string, number>>;
  /** Our own name, for SMTP `EHLO` and XMPP `from` (configured, or the machine's). */
  hostname: string;
  /** The server's name: XMPP stream `to`, HTTP `Host`; the certificate is checked against it. */
  serverName: string;
  /** Unique per connection, for logs and ids; never a secret. */
  connectionId: string;
}

/** A dialect's client side (`Dialect.client`): options and limits as data, like the server's. */
export interface ClientDialect<O = Record<string, unknown>> {
  options: Record<string, OptionSpec>;
  limits: Record<string, LimitSpec>;
  create(context: ClientContext<O>): ClientDialectSession;
  /**
   * What the server sends FIRST inside TLS that answers the preamble rather than the local
   * client, and must be dropped before relaying: CUPS answers the RFC 2817 `OPTIONS *` again
   * after the handshake (a `200 OK` the local HTTP client would take for the answer to its own
   * first request). `backendGreeting`'s contract: given every decrypted byte so far, the number
   * of octets to drop once complete, `null` while more are needed, 0 for nothing to drop. The
   * engine bounds the wait and the size as for `backendGreeting`. Pure; must not throw.
   * Absent: every byte is relayed.
   */
  afterTls?: (data: Uint8Array) => number | null;
}
