#!/usr/bin/env node
// Build the addon from source with the headers of the Node that runs this script, so nothing is
// downloaded: node-gyp would otherwise fetch a headers tarball from the network.
// Usage: node scripts/build-native.mjs [--if-missing]
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

if (process.argv.includes('--if-missing')) {
  try {
    // A prebuild for this platform, or an earlier build, that loads: nothing to do.
    require('node-gyp-build')(here);
    process.exit(0);
  } catch {
    // fall through to a source build
  }
}

function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(
      dirname(process.execPath),
      '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
    ),
  ];
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js'));
  } catch {}
  for (const c of candidates) if (c && existsSync(c)) return c;
  console.error(
    `@tlsproxy/engine-native: node-gyp not found (tried ${candidates.filter(Boolean).join(', ')})`,
  );
  process.exit(1);
}

function findNodeDir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  // Distro and official tarball layouts both put headers at <prefix>/include/node.
  const prefix = resolve(dirname(process.execPath), '..');
  if (existsSync(join(prefix, 'include/node/node_api.h'))) return prefix;
  return undefined;
}

const args = [findNodeGyp(), 'rebuild', '--loglevel=warn'];
const nodedir = findNodeDir();
if (nodedir) args.push(`--nodedir=${nodedir}`);
else
  console.warn(
    '@tlsproxy/engine-native: local Node headers not found; node-gyp may try to download them',
  );
const r = spawnSync(process.execPath, args, { cwd: here, stdio: ['ignore', 'inherit', 'inherit'] });
process.exit(r.status ?? 1);
