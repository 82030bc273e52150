import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NativeEngineError } from './errors.js';
import type { NativeBinding } from './native.js';

const require = createRequire(import.meta.url);
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

// OpenSSL 3.0: the API this addon is written against (and what Node >= 18 bundles).
const MIN_OPENSSL = 0x30000000;

let cached: NativeBinding | undefined;

const FALLBACK = 'Use the node:tls engine instead (engine: node).';

/**
 * Load the addon: TLSPROXY_ENGINE_NATIVE_ADDON (the sanitizer build), a prebuild for this
 * platform, then a local source build. The addon links against the OpenSSL inside the running
 * node binary; a Node built against a shared OpenSSL without exporting it fails here with
 * "undefined symbol", which is reported as such, naming the fallback engine.
 */
export function binding(): NativeBinding {
  if (cached) return cached;
  const tried: string[] = [];
  const errors: string[] = [];
  const candidates: string[] = [];
  if (process.env.TLSPROXY_ENGINE_NATIVE_ADDON)
    candidates.push(process.env.TLSPROXY_ENGINE_NATIVE_ADDON);
  else {
    try {
      const nodeGypBuild = require('node-gyp-build') as { path(dir: string): string };
      candidates.push(nodeGypBuild.path(root));
    } catch (err) {
      errors.push((err as Error).message.split('\n')[0] ?? String(err));
    }
    candidates.push(
      join(root, 'build/Release/engine_native.node'),
      join(root, `prebuilds/${process.platform}-${process.arch}/@tlsproxy+engine-native.node`),
    );
  }
  for (const p of candidates) {
    if (tried.includes(p)) continue;
    tried.push(p);
    if (!existsSync(p)) continue;
    let b: NativeBinding;
    try {
      b = require(p) as NativeBinding;
    } catch (err) {
      const msg = (err as Error).message;
      if (/undefined symbol/.test(msg)) {
        throw new NativeEngineError(
          'TLSPROXY_ERR_NATIVE_OPENSSL',
          `@tlsproxy/engine-native: this node binary (${process.version}) does not export the OpenSSL symbols the native engine needs (${msg}). ${FALLBACK}`,
          { cause: err },
        );
      }
      errors.push(`${p}: ${msg}`);
      continue;
    }
    const v = b.openssl();
    if (v.version < MIN_OPENSSL) {
      throw new NativeEngineError(
        'TLSPROXY_ERR_NATIVE_OPENSSL',
        `@tlsproxy/engine-native: needs OpenSSL >= 3.0 inside node, found ${v.text}. ${FALLBACK}`,
      );
    }
    cached = b;
    return b;
  }
  throw new NativeEngineError(
    'TLSPROXY_ERR_NATIVE_LOAD',
    `@tlsproxy/engine-native: no loadable native addon for ${process.platform}-${process.arch} ` +
      `(node ${process.version}). Tried:\n  ${tried.join('\n  ')}\n${errors.join('\n')}\n` +
      `Build it from source with: npm rebuild @tlsproxy/engine-native (needs python3, make, a C compiler). ${FALLBACK}`,
  );
}
