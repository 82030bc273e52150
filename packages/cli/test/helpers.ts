// What several CLI test files share: the real `tlsproxy` binary, a free loopback port, and a
// spawned CLI whose log can be waited on.
import { spawn } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

export const bin = fileURLToPath(new URL('../bin/tlsproxy.js', import.meta.url));

export function freePort(): Promise<number> {
  return new Promise((r) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => r(p));
    });
  });
}

/** The real CLI: its log so far, a wait for a line, and a stop that waits for the exit. */
export function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const child = spawn(process.execPath, [bin, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  return {
    get log() {
      return log;
    },
    exited,
    async waitFor(re: RegExp, ms = 15_000): Promise<void> {
      for (const end = Date.now() + ms; Date.now() < end; ) {
        if (re.test(log)) return;
        if (child.exitCode !== null) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`no ${re} in the log:\n${log}`);
    },
    async stop(): Promise<void> {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGINT');
        const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}
