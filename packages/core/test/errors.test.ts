// One error model: every error class of the non-dialect packages is a TlsproxyError (the kit's
// base), keeps its own name and stable code, and is recognised by isTlsProxyError from any copy.
import { BackendError } from '@tlsproxy/backend';
import { isTlsProxyError as kitIsTlsProxyError, TlsproxyError } from '@tlsproxy/dialect-kit';
import { DecodeError, FdpassError } from '@tlsproxy/fdpass';
import { PoolError } from '@tlsproxy/pool';
import { describe, expect, it } from 'vitest';
import { CoreError, isTlsProxyError, ProxyProtocolError } from '../src/index.js';

const cases: Array<[string, Error, string]> = [
  ['FdpassError', new FdpassError('TLSPROXY_ERR_FDPASS_CLOSED', 'x'), 'TLSPROXY_ERR_FDPASS_CLOSED'],
  ['DecodeError', new DecodeError('x', 3), 'TLSPROXY_ERR_FDPASS_DECODE'],
  ['PoolError', new PoolError('TLSPROXY_ERR_POOL_TIMEOUT', 'x'), 'TLSPROXY_ERR_POOL_TIMEOUT'],
  ['BackendError', new BackendError('TLSPROXY_ERR_BACKEND_PEER', 'x'), 'TLSPROXY_ERR_BACKEND_PEER'],
  ['CoreError', new CoreError('TLSPROXY_ERR_LISTEN', 'x'), 'TLSPROXY_ERR_LISTEN'],
  ['ProxyProtocolError', new ProxyProtocolError('x'), 'TLSPROXY_ERR_PROXY_PROTOCOL'],
];

describe('one error model', () => {
  it.each(cases)('%s is a TlsproxyError with its name and code', (name, err, code) => {
    expect(err).toBeInstanceOf(TlsproxyError);
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe(name);
    expect((err as TlsproxyError).code).toBe(code);
    expect(isTlsProxyError(err)).toBe(true);
    expect(kitIsTlsProxyError(err)).toBe(true);
  });

  it('keeps the cause and the system fields', () => {
    const cause = Object.assign(new Error('EMFILE: too many open files'), {
      errno: -24,
      code: 'EMFILE',
      syscall: 'dup',
    });
    const e = FdpassError.fromSystem(cause, 'dup(3)');
    expect(e.cause).toBe(cause);
    expect(e.sysCode).toBe('EMFILE');
    expect(e.code).toBe('TLSPROXY_ERR_FDPASS_SYSCALL');
    expect(new DecodeError('bad', 7).id).toBe(7);
  });

  it('plain errors are not tlsproxy errors', () => {
    expect(isTlsProxyError(new Error('x'))).toBe(false);
    expect(isTlsProxyError(null)).toBe(false);
  });
});
