// systemd socket activation, sd_listen_fds(3): descriptors start at 3 (SD_LISTEN_FDS_START),
// LISTEN_PID must be us, LISTEN_FDNAMES gives colon-separated names.
import { FdpassError } from './errors.js';
import { OwnedFd } from './fd.js';
import { binding } from './loader.js';
import type { SockInfo } from './native.js';

const SD_LISTEN_FDS_START = 3;

export interface ListenFd {
  fd: OwnedFd;
  /** From LISTEN_FDNAMES, or 'unknown' as systemd itself defaults. */
  name: string;
  socket: SockInfo | null;
}

/**
 * Take the descriptors systemd passed. With `unsetEnv` (default true) the variables are removed
 * so child processes do not try to take them too. Every descriptor is made close-on-exec.
 */
export function listenFds(
  env: NodeJS.ProcessEnv = process.env,
  options: { unsetEnv?: boolean } = {},
): ListenFd[] {
  const pid = env.LISTEN_PID;
  const count = env.LISTEN_FDS;
  if (!pid || !count) return [];
  if (Number(pid) !== process.pid) return [];
  const n = Number(count);
  if (!Number.isInteger(n) || n < 0 || n > 1024) {
    throw new FdpassError(
      'TLSPROXY_ERR_FDPASS_SYSTEMD',
      `LISTEN_FDS is not a sane count: ${count}`,
    );
  }
  const names = (env.LISTEN_FDNAMES ?? '').split(':');
  const out: ListenFd[] = [];
  for (let i = 0; i < n; i++) {
    const fd = SD_LISTEN_FDS_START + i;
    try {
      binding().setCloexec(fd);
    } catch (err) {
      throw FdpassError.fromSystem(err, `systemd descriptor ${fd}`);
    }
    out.push({ fd: new OwnedFd(fd), name: names[i] || 'unknown', socket: binding().sockInfo(fd) });
  }
  if (options.unsetEnv ?? true) {
    delete env.LISTEN_PID;
    delete env.LISTEN_FDS;
    delete env.LISTEN_FDNAMES;
  }
  return out;
}
