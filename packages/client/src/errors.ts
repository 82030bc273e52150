// One error class for the package on the shared base (every code is listed in docs/errors.md).
// TLS failures are the engine's own PoolError (TLSPROXY_ERR_POOL_VERIFY with its `reason`,
// _HANDSHAKE, _TIMEOUT, ...), passed through unchanged; these codes cover what happens before.
import { TlsproxyError } from '@tlsproxy/dialect-kit';

export type ClientErrorCode =
  /** Bad arguments, a dialect without a client side, an engine without connect(). */
  | 'TLSPROXY_ERR_CLIENT_CONFIG'
  /** The TCP connection could not be made, or failed during the preamble. */
  | 'TLSPROXY_ERR_CLIENT_CONNECT'
  /** timeoutMs passed before the server's go-ahead. */
  | 'TLSPROXY_ERR_CLIENT_TIMEOUT'
  /**
   * The preamble ended without TLS: STARTTLS not offered or refused, a reply out of protocol,
   * the server closed, or bytes after the go-ahead (response injection). `reason` says which.
   */
  | 'TLSPROXY_ERR_CLIENT_REFUSED'
  /** The dialect would go on in plaintext (an opt-in fallback) and allowPlaintext is not set. */
  | 'TLSPROXY_ERR_CLIENT_PLAINTEXT';

export class ClientError extends TlsproxyError<ClientErrorCode> {
  /** The dialect's reason (its close action's `reason`), when the dialect ended the preamble. */
  readonly reason: string | undefined;
  /**
   * What the dialect would tell a local client about it (its close action's `toLocal`, e.g.
   * IMAP `* BYE ...`), for applications that relay a protocol to a user of their own.
   */
  readonly toLocal: Uint8Array | undefined;
  constructor(
    code: ClientErrorCode,
    message: string,
    options: { cause?: unknown; reason?: string; toLocal?: Uint8Array } = {},
  ) {
    super(code, message, options.cause === undefined ? {} : { cause: options.cause });
    this.name = 'ClientError';
    this.reason = options.reason;
    this.toLocal = options.toLocal;
  }
}
