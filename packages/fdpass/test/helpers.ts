import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const fixture = (name: string) =>
  fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

/** Open descriptors of this process (readdir's own fd is constant, so deltas are exact). */
export function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

let n = 0;
export function tmpSock(tag: string): string {
  return join(tmpdir(), `fdpass-${process.pid}-${tag}-${n++}.sock`);
}

/** Resolve the next line the child prints on stdout (JSON), with a deadline. */
export function lines(child: ChildProcess): () => Promise<Record<string, unknown>> {
  let buf = '';
  const queue: string[] = [];
  const waiters: Array<(s: string) => void> = [];
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const w = waiters.shift();
      if (w) w(line);
      else queue.push(line);
    }
  });
  return () =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('child did not answer in time')), 20000);
      const take = (s: string) => {
        clearTimeout(t);
        resolve(JSON.parse(s));
      };
      const q = queue.shift();
      if (q !== undefined) take(q);
      else waiters.push(take);
    });
}

export function spawnNode(script: string, args: string[] = [], shellPrefix?: string): ChildProcess {
  if (shellPrefix) {
    return spawn(
      'bash',
      ['-c', `${shellPrefix}; exec "$0" "$@"`, process.execPath, script, ...args],
      {
        stdio: ['pipe', 'pipe', 'inherit'],
      },
    );
  }
  return spawn(process.execPath, [script, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
}
