// What an idle, parked preamble connection costs in the proxy's JS heap: a declared bound, held
// with the clients in another process (their sockets are not the proxy's to count). Idle
// connections are what an attacker or a crowd of slow clients multiplies by the thousand.
import { spawn } from 'node:child_process';
import { collectGarbage, memoryUsed } from '@tlsproxy/dialect-kit/testing';
import { describe, expect, it } from 'vitest';
import { parked, sharedBackend, sleep, startProxy } from './helpers.js';

/** Live JS heap per parked idle preamble connection, at most (bytes). */
const MAX_HEAP_PER_PARKED = 2048;
const N = 400;

const backend = sharedBackend();

/** N clients in a child process that read their greeting, then hold still until stdin closes. */
function holdClients(port: number, n: number): { ready: Promise<void>; stop: () => void } {
  const code = `
    const net = require('node:net');
    let greeted = 0;
    for (let i = 0; i < ${n}; i++) {
      const s = net.connect(${port}, '127.0.0.1');
      s.on('error', () => {});
      s.once('data', () => { if (++greeted === ${n}) process.stdout.write('ready\\n'); });
    }
    process.stdin.on('end', () => process.exit(0));
    process.stdin.resume();
  `;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['pipe', 'pipe', 'inherit'] });
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d) => {
      if (String(d).includes('ready')) resolve();
    });
    child.once('exit', () => reject(new Error('client process exited early')));
  });
  return { ready, stop: () => child.stdin.end() };
}

async function settledHeap(): Promise<number> {
  let used = 0;
  for (let i = 0; i < 3; i++) {
    await sleep(50);
    collectGarbage();
    used = memoryUsed();
  }
  return used;
}

describe('memory of parked idle preamble connections', () => {
  it(`stays within ${MAX_HEAP_PER_PARKED} bytes of JS heap each`, async () => {
    const { proxy, port, logger } = await startProxy(`unix:${backend.path}`, {
      maxConnectionsPerAddress: N + 100,
    });
    // Warm up the paths (first connection compiles code and fills caches), then measure.
    const warm = holdClients(port, 20);
    await warm.ready;
    await parked(logger, 20);
    // The test's logger keeps every line; those are not the proxy's memory.
    logger.lines.length = 0;
    const before = await settledHeap();
    const clients = holdClients(port, N);
    try {
      await clients.ready;
      await parked(logger, N);
      logger.lines.length = 0;
      const after = await settledHeap();
      const perConnection = (after - before) / N;
      expect(perConnection).toBeLessThan(MAX_HEAP_PER_PARKED);
    } finally {
      clients.stop();
      warm.stop();
      await proxy.close();
    }
  }, 30_000);
});
