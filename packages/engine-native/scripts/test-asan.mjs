#!/usr/bin/env node
// Build the addon with AddressSanitizer + UndefinedBehaviorSanitizer into build-asan/ (the normal
// build/ is left alone) and run the engine's tests against it (see ../../../scripts/sanitizer.mjs).
// Usage: node scripts/test-asan.mjs [vitest args…]   Time-boxed by TLSPROXY_ASAN_TIMEOUT_S (600).
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { vitestBin } from '../../../scripts/sanitizer.mjs';
import { here, asan as san } from './asan.mjs';

const addon = san.build();
const vitest = vitestBin(createRequire(import.meta.url));
const timeoutS = Number(process.env.TLSPROXY_ASAN_TIMEOUT_S ?? 600);
const env = san.env(addon);
// This package's tests, then (without arguments) pool's engine suite against this engine.
const runs = [['run', ...process.argv.slice(2)]];
if (process.argv.length <= 2) runs.push(['run', '--config', 'vitest.pool.config.ts']);
for (const args of runs) {
  const test = spawnSync('timeout', [String(timeoutS), process.execPath, vitest, ...args], {
    cwd: here,
    stdio: 'inherit',
    env,
  });
  if (test.status !== 0) process.exit(test.status ?? 1);
}
