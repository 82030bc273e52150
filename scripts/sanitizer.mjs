// ASan + UBSan builds of the repository's native addons (engine-native, fdpass), shared by their
// test:asan and fuzz scripts: built into the package's build-asan/ (its normal build/ is left
// alone) and run with the sanitizer runtime preloaded into node, which itself is not
// instrumented. Development only: not part of any package's tarball.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';

function lib(name) {
  const r = spawnSync(process.env.CC ?? 'cc', [`-print-file-name=${name}`], { encoding: 'utf8' });
  const p = r.stdout?.trim();
  if (!p || p === name || !existsSync(p)) {
    console.error(`${name} not found (install the compiler's sanitizer runtime)`);
    process.exit(1);
  }
  return p;
}

/**
 * One addon's sanitizer build. `here`: the package; `addon`: the .node file's name; `sources`:
 * what binding.gyp compiles (files or folders under here, copied as they are); `envVar`: the
 * variable the package's loader takes an addon path from.
 */
export function sanitizer({ here, addon, sources, envVar }) {
  const out = join(here, 'build-asan');
  const asanAddon = join(out, 'build/Release', addon);
  const inputs = () =>
    sources.flatMap((rel) => {
      const p = join(here, rel);
      return statSync(p).isDirectory() ? readdirSync(p).map((f) => join(p, f)) : [p];
    });
  return {
    asanAddon,
    /** Whether build-asan/ holds an addon built from the current C sources. */
    fresh() {
      if (!existsSync(asanAddon)) return false;
      const built = statSync(asanAddon).mtimeMs;
      return [join(here, 'binding.gyp'), ...inputs()].every((f) => statSync(f).mtimeMs <= built);
    },
    /** Build the sanitizer addon from scratch; exits the process if the build fails. */
    build() {
      return buildAsan(here, out, sources, asanAddon);
    },
    /** The environment that runs node with the sanitizer addon. */
    env(path = asanAddon) {
      return asanEnv(envVar, path);
    },
  };
}

function buildAsan(here, out, sources, asanAddon) {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(join(out, 'src'), { recursive: true });
  cpSync(join(here, 'binding.gyp'), join(out, 'binding.gyp'));
  for (const rel of sources) cpSync(join(here, rel), join(out, rel), { recursive: true });
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
function asanEnv(envVar, addon) {
  return {
    ...process.env,
    [envVar]: addon,
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
