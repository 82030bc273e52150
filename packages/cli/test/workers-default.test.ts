// How many workers `tlsproxy` runs when not told: with the native engine (the default) a worker
// keeps two threads busy — its JS thread and its engine's loop thread —, so one worker per two
// cores, each with max(1, floor(cores / workers) − 1) loop threads: as many busy threads as
// cores, where one worker per core ran twice as many (on 2 cores, 1.3–1.5× the CPU per
// connection and 18–25 % fewer connections/s: docs/benchmarks.md). With node:tls or a tlspool
// daemon a worker is one busy thread: one per core, as before.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { defaultThreads } from '../src/engine.js';
import { defaultWorkers } from '../src/workers.js';
import { bin, cli, freePort } from './helpers.js';

const certs = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-workers-default-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const cores = availableParallelism();

describe('the default number of workers', () => {
  it('native: one per two cores (at least one); node:tls and the tlspool daemon: one per core', () => {
    const table: Array<[number, number, number]> = [
      // cores, native, node
      [1, 1, 1],
      [2, 1, 2],
      [3, 1, 3],
      [4, 2, 4],
      [8, 4, 8],
      [16, 8, 16],
    ];
    for (const [c, native, node] of table) {
      expect(defaultWorkers('native', c), `${c} cores`).toBe(native);
      expect(defaultWorkers('node', c), `${c} cores`).toBe(node);
      expect(defaultWorkers(undefined, c), `${c} cores`).toBe(node);
    }
    expect(defaultWorkers('native')).toBe(Math.max(1, Math.floor(cores / 2)));
  });

  it('native: the default workers and loop threads keep as many threads busy as there are cores', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 512 }), async (c) => {
        const w = defaultWorkers('native', c);
        const busy = w * (1 + (await defaultThreads(w, c)));
        // Never more busy threads than cores (one core: its JS thread and one loop thread, the
        // least an engine has), and no core left without one but where the cores do not divide.
        expect(busy).toBeLessThanOrEqual(Math.max(2, c));
        expect(busy).toBeGreaterThanOrEqual(c - 1);
      }),
    );
  });
});

describe('tlsproxy without --workers', () => {
  /** Count the workers a running CLI reports: one `listening` line each. */
  async function workersOf(args: string[]): Promise<{ listening: number; log: string }> {
    const port = await freePort();
    const p = cli([
      ...['--dialect', 'imap', '--listen', `127.0.0.1:${port}`, '--backend', 'unix:/x'],
      ...['--cert', `${certs}server.pem`, '--key', `${certs}server.key`, ...args],
    ]);
    try {
      const want = args.includes('node') ? cores : Math.max(1, Math.floor(cores / 2));
      await p.waitFor(new RegExp(Array(want).fill('listening').join('[\\s\\S]*')));
      // A worker more than expected would say so within this time.
      await new Promise((r) => setTimeout(r, 500));
      return { listening: p.log.match(/listening/g)?.length ?? 0, log: p.log };
    } finally {
      await p.stop();
    }
  }

  it('native engine (the default): one worker per two cores', async () => {
    const { listening, log } = await workersOf([]);
    expect(listening, log).toBe(Math.max(1, Math.floor(cores / 2)));
    expect(log).toMatch(/engine=native/);
  }, 30_000);

  it('--engine node: one worker per core', async () => {
    const { listening, log } = await workersOf(['--engine', 'node']);
    expect(listening, log).toBe(cores);
    expect(log).toMatch(/engine=node/);
  }, 30_000);

  it('check-config says how many and by which rule', () => {
    const f = join(dir, 'default.yaml');
    const yaml = (engine: string) =>
      `identities: [{ cert: ${certs}server.pem, key: ${certs}server.key }]
listeners: [{ dialect: imap, listen: 127.0.0.1:1143, backend: unix:/x }]
${engine}`;
    writeFileSync(f, yaml(''));
    const native = spawnSync(process.execPath, [bin, 'check-config', f], { encoding: 'utf8' });
    expect(native.status, native.stderr).toBe(0);
    const w = Math.max(1, Math.floor(cores / 2));
    expect(native.stdout).toMatch(
      new RegExp(`^workers: ${w} \\(default: one per two cores on this machine\\)`, 'm'),
    );
    writeFileSync(f, yaml('engine: node\n'));
    const node = spawnSync(process.execPath, [bin, 'check-config', f], { encoding: 'utf8' });
    expect(node.status, node.stderr).toBe(0);
    expect(node.stdout).toMatch(
      new RegExp(`^workers: ${cores} \\(default: one per core on this machine\\)`, 'm'),
    );
    // systemd passes its descriptors to one process: one, whatever the engine.
    writeFileSync(f, yaml('').replace('127.0.0.1:1143', '"systemd:imap"'));
    const sd = spawnSync(process.execPath, [bin, 'check-config', f], { encoding: 'utf8' });
    expect(sd.status, sd.stderr).toBe(0);
    expect(sd.stdout).toMatch(/^workers: 1 \(default: one with systemd: listeners\)/m);
  });
});
