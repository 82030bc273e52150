// The CLI's errors are on the shared base: a stable code, their own name, isTlsProxyError.
import { isTlsProxyError, TlsproxyError } from '@tlsproxy/dialect-kit';
import { describe, expect, it } from 'vitest';
import { parseCli, UsageError } from '../src/args.js';
import { ConfigError } from '../src/config.js';

describe('cli errors', () => {
  it('ConfigError keeps its code, name and problems', () => {
    const e = new ConfigError(['a: bad', 'b: worse']);
    expect(e).toBeInstanceOf(TlsproxyError);
    expect(isTlsProxyError(e)).toBe(true);
    expect(e.code).toBe('TLSPROXY_ERR_CONFIG');
    expect(e.name).toBe('ConfigError');
    expect(e.problems).toEqual(['a: bad', 'b: worse']);
    expect(e.message).toBe('a: bad\nb: worse');
  });

  it('a bad command line is a UsageError with a code', () => {
    let err: unknown;
    try {
      parseCli(['--no-such-flag']);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    expect(isTlsProxyError(err)).toBe(true);
    expect((err as UsageError).code).toBe('TLSPROXY_ERR_USAGE');
  });
});
