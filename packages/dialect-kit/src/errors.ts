// The one error base of every tlsproxy package (undici's pattern): a stable `code` to branch on,
// and a brand (`Symbol.for`, so it survives duplicate installs where `instanceof` would not).
// Packages subclass it with their own union of codes; every code is listed in docs/errors.md.
import { latin1 } from './bytes.js';

const BRAND = Symbol.for('tlsproxy.error');

export interface TlsproxyErrorOptions {
  cause?: unknown;
  /** For dialect errors: the protocol reply the dialect sends for this error (e.g. `BAD`). */
  reply?: Uint8Array;
}

export class TlsproxyError<Code extends string = string> extends Error {
  readonly code: Code;
  /** The protocol reply that goes with this error, when a dialect raised it. */
  readonly reply: Uint8Array | undefined;
  readonly [BRAND] = true;
  constructor(code: Code, message: string, options: TlsproxyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'TlsproxyError';
    this.code = code;
    this.reply = options.reply;
  }
}

/** True for an error from any tlsproxy package (any copy of it), whatever its class. */
export function isTlsProxyError(err: unknown): err is TlsproxyError {
  return (
    typeof err === 'object' && err !== null && (err as Record<symbol, unknown>)[BRAND] === true
  );
}

const encoder = new TextEncoder();

export interface DialectErrorOptions {
  cause?: unknown;
  /** The protocol reply: text (sent as its UTF-8/ASCII octets) or octets (LDAP's BER). */
  reply?: string | Uint8Array;
  /** True when the connection must close after the reply (the stream cannot be resynchronised). */
  fatal?: boolean;
}

/**
 * The peer broke the protocol (h11's RemoteProtocolError): handlers throw it, and the session
 * turns it into actions in one place — write `reply`, then close when `fatal`. Each dialect
 * declares its own union of codes (`TLSPROXY_ERR_<DIALECT>_*`) and subclasses this once when it
 * needs more than the reply (XMPP's stream condition, HTTP's status).
 */
export class DialectError<Code extends string = string> extends TlsproxyError<Code> {
  /** The reply's octets (empty when the error has none). */
  declare readonly reply: Uint8Array;
  /** The reply as text (decoded as latin1 when it was given as octets). */
  readonly replyText: string;
  readonly fatal: boolean;
  constructor(code: Code, message: string, options: DialectErrorOptions = {}) {
    const reply = typeof options.reply === 'string' ? encoder.encode(options.reply) : options.reply;
    super(code, message, { cause: options.cause, reply: reply ?? new Uint8Array(0) });
    this.name = 'DialectError';
    this.replyText =
      typeof options.reply === 'string' ? options.reply : reply === undefined ? '' : latin1(reply);
    this.fatal = options.fatal ?? false;
  }
}

/**
 * A tlsproxy error whose code starts with `prefix` (e.g. 'TLSPROXY_ERR_IMAP_'), from any copy of
 * the kit: the brand, not `instanceof`, so duplicate installs still match.
 */
export function isErrorWithPrefix<E extends TlsproxyError>(err: unknown, prefix: string): err is E {
  return isTlsProxyError(err) && typeof err.code === 'string' && err.code.startsWith(prefix);
}
