#!/usr/bin/env node
// Build the addon with AddressSanitizer + UndefinedBehaviorSanitizer into build-asan/ (the normal
// build/ is left alone) and run this package's tests against it: descriptor passing, the
// RawStream set (streams.c), the hostile peers. Usage: node scripts/test-asan.mjs [vitest args…]
// Time-boxed by TLSPROXY_ASAN_TIMEOUT_S (300). Development only (not in the tarball's use).
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sanitizer, vitestBin } from '../../../scripts/sanitizer.mjs';

const here = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const san = sanitizer({
  here,
  addon: 'fdpass.node',
  sources: ['src/fdpass.c', 'src/streams.c', 'src/fdpass.h'],
  envVar: 'TLSPROXY_FDPASS_ADDON',
});
const addon = san.build();
const vitest = vitestBin(createRequire(import.meta.url));
const timeoutS = Number(process.env.TLSPROXY_ASAN_TIMEOUT_S ?? 300);
const test = spawnSync(
  'timeout',
  [String(timeoutS), process.execPath, vitest, 'run', ...process.argv.slice(2)],
  { cwd: here, stdio: 'inherit', env: san.env(addon) },
);
process.exit(test.status ?? 1);
