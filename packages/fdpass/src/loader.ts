import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FdpassError } from './errors.js';
import type { NativeBinding } from './native.js';

const require = createRequire(import.meta.url);
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

let cached: NativeBinding | undefined;

/**
 * Load the addon: TLSPROXY_FDPASS_ADDON (the sanitizer build), a prebuild for this platform
 * (prebuildify layout, found by node-gyp-build), then a local source build. On failure the error lists every path tried (node-pty's lesson:
 * install problems dominate a native package's tracker, so say exactly what was looked for).
 */
export function binding(): NativeBinding {
  if (cached) return cached;
  const tried: string[] = [];
  const errors: string[] = [];
  // The sanitizer build (npm run test:asan), for this package's tests only.
  const asan = process.env.TLSPROXY_FDPASS_ADDON;
  if (asan) {
    tried.push(asan);
    try {
      cached = require(asan) as NativeBinding;
      return cached;
    } catch (err) {
      errors.push(`${asan}: ${(err as Error).message}`);
    }
  }
  try {
    const nodeGypBuild = require('node-gyp-build') as { path(dir: string): string };
    const p = nodeGypBuild.path(root);
    tried.push(p);
    cached = require(p) as NativeBinding;
    return cached;
  } catch (err) {
    errors.push((err as Error).message.split('\n')[0] ?? String(err));
  }
  for (const p of [
    join(root, 'build/Release/fdpass.node'),
    join(root, 'build/Debug/fdpass.node'),
    join(root, `prebuilds/${process.platform}-${process.arch}/@tlsproxy+fdpass.node`),
  ]) {
    tried.push(p);
    if (!existsSync(p)) continue;
    try {
      cached = require(p) as NativeBinding;
      return cached;
    } catch (err) {
      errors.push(`${p}: ${(err as Error).message}`);
    }
  }
  throw new FdpassError(
    'TLSPROXY_ERR_FDPASS_LOAD',
    `@tlsproxy/fdpass: no loadable native addon for ${process.platform}-${process.arch} ` +
      `(node ${process.version}). Tried:\n  ${tried.join('\n  ')}\n${errors.join('\n')}\n` +
      'Build it from source with: npm rebuild @tlsproxy/fdpass (needs python3, make, a C compiler).',
  );
}
