// This addon's ASan + UBSan build (the shared helper: the repository's scripts/sanitizer.mjs).
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sanitizer } from '../../../scripts/sanitizer.mjs';

export const here = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const asan = sanitizer({
  here,
  addon: 'engine_native.node',
  sources: ['src/native'],
  envVar: 'TLSPROXY_ENGINE_NATIVE_ADDON',
});
