#!/usr/bin/env node
// Time-boxed fuzzer of the native engine under ASan + UBSan (issue 15): runs fuzz/engine.fuzz.ts
// in vitest against build-asan/ (reused when it is newer than the C sources, else built), with a
// seed printed first and last and, on failure, the command that replays the same cases.
// Usage: node scripts/fuzz.mjs [--seconds N] [--seed S] [--no-asan] [--rebuild]
//   --seconds N  fuzzing time (default 75; the whole run is killed at N + 40 s)
//   --seed S     fast-check seed (default: random); the same seed generates the same cases
//   --no-asan    use the normal build (quicker, finds crashes and leaks but not memory errors)
//   --rebuild    build build-asan/ even if it looks fresh
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { vitestBin } from '../../../scripts/sanitizer.mjs';
import { here, asan as san } from './asan.mjs';

const argv = process.argv.slice(2);
function flag(name) {
  const i = argv.indexOf(name);
  if (i < 0) return undefined;
  const v = argv[i + 1];
  if (v === undefined || v.startsWith('--')) {
    console.error(`fuzz: ${name} needs a value`);
    process.exit(2);
  }
  return v;
}
const seconds = Number(flag('--seconds') ?? process.env.TLSPROXY_FUZZ_SECONDS ?? 75);
const seed = Number(
  flag('--seed') ?? process.env.TLSPROXY_FUZZ_SEED ?? (Math.random() * 2 ** 31) | 0,
);
const asan = !argv.includes('--no-asan');
if (!Number.isFinite(seconds) || seconds <= 0 || !Number.isInteger(seed)) {
  console.error('fuzz: --seconds must be a positive number and --seed an integer');
  process.exit(2);
}

let env = { ...process.env };
if (asan) {
  const addon = !argv.includes('--rebuild') && san.fresh() ? undefined : san.build();
  env = san.env(addon);
}
env.TLSPROXY_FUZZ_SEED = String(seed);
env.TLSPROXY_FUZZ_SECONDS = String(seconds);

const replay = `node scripts/fuzz.mjs --seed ${seed} --seconds ${seconds}${asan ? '' : ' --no-asan'}`;
console.log(
  `engine-native fuzz: seed ${seed}, ${seconds} s, ${asan ? 'ASan + UBSan build' : 'normal build'}`,
);
const started = Date.now();
const r = spawnSync(
  'timeout',
  [
    '-k',
    '10',
    String(Math.ceil(seconds + 40)),
    process.execPath,
    vitestBin(createRequire(import.meta.url)),
    'run',
    '--config',
    'vitest.fuzz.config.ts',
  ],
  { cwd: here, stdio: 'inherit', env },
);
const took = ((Date.now() - started) / 1000).toFixed(1);
if (r.status === 0) {
  console.log(`engine-native fuzz: passed in ${took} s (seed ${seed})`);
  process.exit(0);
}
console.error(
  `engine-native fuzz: FAILED after ${took} s (seed ${seed}, exit ${r.status ?? r.signal})` +
    `${r.status === 124 ? ' — killed by the time box' : ''}\n` +
    `  replay: cd packages/engine-native && ${replay}`,
);
process.exit(1);
