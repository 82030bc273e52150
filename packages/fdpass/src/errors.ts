// One error class for the package with a stable `code`, on the shared base (@tlsproxy/dialect-kit's
// TlsproxyError: its brand makes isTlsProxyError() work across copies); system errors also carry
// errno/syscall. Every code is listed in docs/errors.md.
import { TlsproxyError } from '@tlsproxy/dialect-kit';

export type FdpassErrorCode =
  | 'TLSPROXY_ERR_FDPASS_LOAD'
  | 'TLSPROXY_ERR_FDPASS_SYSCALL'
  | 'TLSPROXY_ERR_FDPASS_CLOSED'
  | 'TLSPROXY_ERR_FDPASS_CTRUNC'
  | 'TLSPROXY_ERR_FDPASS_TOO_BIG'
  | 'TLSPROXY_ERR_FDPASS_TOO_MANY_FDS'
  | 'TLSPROXY_ERR_FDPASS_NOT_STREAM'
  | 'TLSPROXY_ERR_FDPASS_PROTOCOL'
  | 'TLSPROXY_ERR_FDPASS_VERSION'
  | 'TLSPROXY_ERR_FDPASS_TIMEOUT'
  | 'TLSPROXY_ERR_FDPASS_REMOTE'
  | 'TLSPROXY_ERR_FDPASS_SYSTEMD'
  /** listen(): the path (or abstract name) belongs to a live socket of any type. */
  | 'TLSPROXY_ERR_FDPASS_ADDRESS_IN_USE';

export class FdpassError extends TlsproxyError<FdpassErrorCode> {
  errno?: number;
  syscall?: string;
  /** the libuv-style name of errno, e.g. 'EPIPE' */
  sysCode?: string;
  constructor(code: FdpassErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'FdpassError';
  }

  /** Wrap an error thrown by the binding (which has errno, code and syscall). */
  static fromSystem(err: unknown, what?: string): FdpassError {
    const e = err as { message?: string; errno?: number; code?: string; syscall?: string };
    const out = new FdpassError(
      'TLSPROXY_ERR_FDPASS_SYSCALL',
      what ? `${what}: ${e.message ?? String(err)}` : (e.message ?? String(err)),
      { cause: err },
    );
    if (typeof e.errno === 'number') out.errno = e.errno;
    if (typeof e.syscall === 'string') out.syscall = e.syscall;
    if (typeof e.code === 'string') out.sysCode = e.code;
    return out;
  }
}
