// The ASan + UBSan build of the addon, shared by test-asan.mjs and fuzz.mjs: built into
// build-asan/ (the normal build/ is left alone) with the sanitizer runtime preloaded into node,
// which itself is not instrumented.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const here = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(here, 'build-asan');
export const asanAddon = join(out, 'build/Release/engine_native.node');

function lib(name) {
  const r = spawnSync(process.env.CC ?? 'cc', [`-print-file-name=${name}`], { encoding: 'utf8' });
  const p = r.stdout?.trim();
  if (!p || p === name || !existsSync(p)) {
    console.error(`${name} not found (install the compiler's sanitizer runtime)`);
    process.exit(1);
  }
  return p;
}

/** Whether build-asan/ holds an addon built from the current C sources. */
export function asanBuildFresh() {
  if (!existsSync(asanAddon)) return false;
  const built = statSync(asanAddon).mtimeMs;
  const inputs = [
    join(here, 'binding.gyp'),
    ...readdirSync(join(here, 'src/native')).map((f) => join(here, 'src/native', f)),
  ];
  return inputs.every((f) => statSync(f).mtimeMs <= built);
}

/** Build the sanitizer addon from scratch; exits the process if the build fails. */
export function buildAsan() {
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
    env: {
      ...process.env,
      CFLAGS: `${san} -O1 -g -U_FORTIFY_SOURCE -ftrivial-auto-var-init=pattern`,
      LDFLAGS: san,
    },
  });
  if (build.status !== 0) process.exit(build.status ?? 1);
  return asanAddon;
}

/**
 * The environment that runs node with the sanitizer addon: every report is fatal (UBSan too),
 * leak detection off (node's own allocations at exit would drown ours; descriptors and
 * mallocBytes() are counted by the tests instead).
 */
export function asanEnv(addon = asanAddon) {
  return {
    ...process.env,
    TLSPROXY_ENGINE_NATIVE_ADDON: addon,
    LD_PRELOAD: [lib('libasan.so'), lib('libubsan.so')].join(':'),
    ASAN_OPTIONS: 'detect_leaks=0:abort_on_error=1:halt_on_error=1:allow_user_segv_handler=0',
    UBSAN_OPTIONS: 'halt_on_error=1:abort_on_error=1:print_stacktrace=1',
  };
}

/** vitest's CLI script, run with process.execPath. */
export function vitestBin(require) {
  const pkg = require.resolve('vitest/package.json');
  const json = JSON.parse(require('node:fs').readFileSync(pkg, 'utf8'));
  return join(dirname(pkg), json.bin?.vitest ?? 'vitest.mjs');
}
