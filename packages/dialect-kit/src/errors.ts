// The one error base of every tlsproxy package (undici's pattern): a stable `code` to branch on,
// and a brand (`Symbol.for`, so it survives duplicate installs where `instanceof` would not).
// Packages subclass it with their own union of codes; every code is listed in docs/errors.md.
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
