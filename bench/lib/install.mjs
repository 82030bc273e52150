// The peers are Debian packages: install what is missing (stunnel4, nginx with its mail module)
// with apt-get, as root or through passwordless sudo. Without either, the bench runs the systems
// it has and the report names the ones it could not start.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { log } from './procs.mjs';

const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

export const NGINX_MAIL_MODULE = '/usr/lib/nginx/modules/ngx_mail_module.so';

/** Debian packages the systems under test need and this machine lacks. */
export function missingPackages(systems) {
  const ids = new Set(systems.map((s) => s.needs).filter(Boolean));
  const need = [];
  if (ids.has('stunnel4') && !has('stunnel4')) need.push('stunnel4');
  if (ids.has('nginx')) {
    if (!has('nginx')) need.push('nginx');
    if (!existsSync(NGINX_MAIL_MODULE)) need.push('libnginx-mod-mail');
  }
  return need;
}

/** Install `pkgs`; returns null on success or the reason it could not. */
export function install(pkgs) {
  if (pkgs.length === 0) return null;
  if (!has('apt-get')) return `apt-get not found; install ${pkgs.join(' ')} by hand`;
  const sudo = process.getuid?.() === 0 ? [] : ['sudo', '-n'];
  if (sudo.length && spawnSync('sudo', ['-n', 'true'], { stdio: 'ignore' }).status !== 0)
    return `not root and no passwordless sudo; run: sudo apt-get install ${pkgs.join(' ')}`;
  const run = (argv) =>
    execFileSync(sudo[0] ?? argv[0], [...sudo.slice(1), ...(sudo.length ? argv : argv.slice(1))], {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      timeout: 600_000,
    });
  log(`installing ${pkgs.join(' ')} with apt-get`);
  // The nginx and stunnel4 packages would start system daemons (nginx on port 80). The bench
  // runs private instances on free loopback ports, so keep the packages' services from starting
  // for the duration of the install (policy-rc.d exit 101, as Debian container images do).
  const policy = '/usr/sbin/policy-rc.d';
  const ownPolicy = !existsSync(policy);
  try {
    if (ownPolicy)
      run(['sh', '-c', `printf '#!/bin/sh\\nexit 101\\n' > ${policy} && chmod 755 ${policy}`]);
    run(['apt-get', 'update', '-qq']);
    run(['apt-get', 'install', '-y', '-qq', '--no-install-recommends', ...pkgs]);
  } catch (e) {
    return `apt-get install ${pkgs.join(' ')} failed: ${e.message.split('\n')[0]}`;
  } finally {
    if (ownPolicy) {
      try {
        run(['rm', '-f', policy]);
      } catch {}
    }
  }
  return null;
}
