#!/usr/bin/env node
// Build the addon with AddressSanitizer + UndefinedBehaviorSanitizer into build-asan/ (the normal
// build/ is left alone) and run the engine's tests against it. Node itself is not instrumented,
// so the sanitizer runtime is preloaded; leak detection is off because node's own allocations at
// exit would drown ours (the descriptor-count tests cover the resource that matters here).
// Usage: node scripts/test-asan.mjs [vitest args…]   Time-boxed by TLSPROXY_ASAN_TIMEOUT_S (600).
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(here, 'build-asan');

function lib(name) {
  const r = spawnSync(process.env.CC ?? 'cc', [`-print-file-name=${name}`], { encoding: 'utf8' });
  const p = r.stdout?.trim();
  if (!p || p === name || !existsSync(p)) {
    console.error(`test:asan: ${name} not found (install the compiler's sanitizer runtime)`);
    process.exit(1);
  }
  return p;
}

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, 'src'), { recursive: true });
cpSync(join(here, 'binding.gyp'), join(out, 'binding.gyp'));
cpSync(join(here, 'src/native'), join(out, 'src/native'), { recursive: true });
cpSync(join(here, 'scripts'), join(out, 'scripts'), { recursive: true });
cpSync(join(here, 'package.json'), join(out, 'package.json'));

const san = '-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer';
const build = spawnSync(process.execPath, [join(out, 'scripts/build-native.mjs')], {
  cwd: out,
  stdio: 'inherit',
  // gyp's Makefile appends these after the target's own flags, so -O1 -g win over -O2.
  env: { ...process.env, CFLAGS: `${san} -O1 -g -U_FORTIFY_SOURCE`, LDFLAGS: san },
});
if (build.status !== 0) process.exit(build.status ?? 1);
const addon = join(out, 'build/Release/engine_native.node');

const require = createRequire(import.meta.url);
const vitestPkg = require.resolve('vitest/package.json');
const vitestBin = join(
  dirname(vitestPkg),
  JSON.parse(readFileSync(vitestPkg, 'utf8')).bin.vitest ?? 'vitest.mjs',
);

const timeoutS = Number(process.env.TLSPROXY_ASAN_TIMEOUT_S ?? 600);
const env = {
  ...process.env,
  TLSPROXY_ENGINE_NATIVE_ADDON: addon,
  LD_PRELOAD: [lib('libasan.so'), lib('libubsan.so')].join(':'),
  ASAN_OPTIONS: 'detect_leaks=0:abort_on_error=1:halt_on_error=1',
  UBSAN_OPTIONS: 'halt_on_error=1:print_stacktrace=1',
};
// This package's tests, then (without arguments) pool's engine suite against this engine.
const runs = [['run', ...process.argv.slice(2)]];
if (process.argv.length <= 2) runs.push(['run', '--config', 'vitest.pool.config.ts']);
for (const args of runs) {
  const test = spawnSync('timeout', [String(timeoutS), process.execPath, vitestBin, ...args], {
    cwd: here,
    stdio: 'inherit',
    env,
  });
  if (test.status !== 0) process.exit(test.status ?? 1);
}
