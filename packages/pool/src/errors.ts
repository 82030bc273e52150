// One error class for the package on the shared base (every code is listed in docs/errors.md).
import { TlsproxyError } from '@tlsproxy/dialect-kit';

export type PoolErrorCode =
  | 'TLSPROXY_ERR_POOL_CONFIG'
  | 'TLSPROXY_ERR_POOL_HANDSHAKE'
  | 'TLSPROXY_ERR_POOL_TIMEOUT'
  | 'TLSPROXY_ERR_POOL_SERVER_NAME_REFUSED'
  | 'TLSPROXY_ERR_POOL_CLIENT_CERT'
  | 'TLSPROXY_ERR_POOL_UNKNOWN_KEY'
  | 'TLSPROXY_ERR_POOL_CONTROL'
  | 'TLSPROXY_ERR_POOL_TLS13_RENEGOTIATE'
  | 'TLSPROXY_ERR_POOL_RESOURCES'
  | 'TLSPROXY_ERR_POOL_REQUESTER_REFUSED'
  | 'TLSPROXY_ERR_POOL_VERIFY'
  | 'TLSPROXY_ERR_POOL_UNSUPPORTED';

/**
 * Why a server's certificate was rejected (TLSPROXY_ERR_POOL_VERIFY): no trusted CA issued it
 * (or it is self-signed), it does not name the server, it is out of its validity period, it was
 * revoked, or it is otherwise unusable (bad signature, wrong purpose, chain too long).
 */
export type VerifyReason =
  | 'unknown-ca'
  | 'name-mismatch'
  | 'expired'
  | 'not-yet-valid'
  | 'revoked'
  | 'bad-certificate'
  | 'other';

export const VERIFY_REASONS: ReadonlySet<VerifyReason> = new Set<VerifyReason>([
  'unknown-ca',
  'name-mismatch',
  'expired',
  'not-yet-valid',
  'revoked',
  'bad-certificate',
  'other',
]);

export class PoolError extends TlsproxyError<PoolErrorCode> {
  /** With TLSPROXY_ERR_POOL_VERIFY: why the server's certificate was rejected. */
  readonly reason: VerifyReason | undefined;
  constructor(
    code: PoolErrorCode,
    message: string,
    options?: { cause?: unknown; reason?: VerifyReason },
  ) {
    super(code, message, options?.cause === undefined ? {} : { cause: options.cause });
    this.name = 'PoolError';
    this.reason = options?.reason;
  }
}

// errno names that mean "this process (or the system) has run out of something": descriptors,
// memory, socket buffers. A connection that hits one is ended alone; the engine goes on.
const RESOURCE_ERRNOS = new Set(['EMFILE', 'ENFILE', 'ENOMEM', 'ENOBUFS']);

/** Whether a system error (FdpassError's sysCode, Node's code) is running out of resources. */
export function isResourceError(err: unknown): boolean {
  const e = err as { sysCode?: unknown; code?: unknown } | null;
  return (
    (typeof e?.sysCode === 'string' && RESOURCE_ERRNOS.has(e.sysCode)) ||
    (typeof e?.code === 'string' && RESOURCE_ERRNOS.has(e.code))
  );
}
