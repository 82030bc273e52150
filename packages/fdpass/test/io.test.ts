// The typed descriptor operations other packages use instead of the raw addon.
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  addonLoads,
  checkAddon,
  connect,
  discardPending,
  dup,
  FdpassError,
  listenSocket,
  OwnedFd,
  peekPending,
  socketpair,
  wrapSocket,
  writeSync,
} from '../src/index.js';

/** The code wrapSocket() refuses `fd` with (it closes it either way). */
function wrapAttempt(fd: OwnedFd): string | undefined {
  try {
    wrapSocket(fd).destroy();
    return undefined;
  } catch (err) {
    return (err as FdpassError).code;
  }
}

describe('typed descriptor operations', () => {
  it('write, peek, discard and dup on a real socketpair', () => {
    const [a, b] = socketpair();
    try {
      expect(peekPending(b.fd, 16)).toBeNull();
      expect(writeSync(a.fd, Uint8Array.from([1, 2, 3, 4, 5]))).toBe(5);
      expect([...(peekPending(b.fd, 16) ?? [])]).toEqual([1, 2, 3, 4, 5]);
      expect(discardPending(b.fd, 2)).toBe(2);
      expect([...(peekPending(b.fd, 16) ?? [])]).toEqual([3, 4, 5]);
      const copy = dup(b.fd);
      expect(copy).toBeInstanceOf(OwnedFd);
      expect(copy.fd).not.toBe(b.fd);
      expect(discardPending(copy.fd, 1 << 20)).toBe(3);
      copy.close();
    } finally {
      a.close();
      b.close();
    }
  });

  it('dup of a bad descriptor is an FdpassError with the errno', () => {
    try {
      dup(1 << 20);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(FdpassError);
      expect((err as FdpassError).code).toBe('TLSPROXY_ERR_FDPASS_SYSCALL');
      expect((err as FdpassError).sysCode).toBe('EBADF');
    }
  });

  it('a seqpacket socketpair, and a listening socket to pass on', async () => {
    const [a, b] = socketpair('seqpacket');
    expect(wrapAttempt(a)).toBe('TLSPROXY_ERR_FDPASS_NOT_STREAM');
    b.close();
    const path = join(tmpdir(), `fdpass-io-${process.pid}.sock`);
    const l = listenSocket(path, { backlog: 4 });
    try {
      const ch = await connect({ path });
      ch.close();
    } finally {
      l.close();
      rmSync(path, { force: true });
    }
  });

  it('says whether the addon loads', () => {
    expect(addonLoads()).toBe(true);
    expect(() => checkAddon()).not.toThrow();
  });
});
