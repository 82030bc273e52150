// `npm run test:fuzz` (scripts/fuzz.mjs): the time-boxed fuzzer, not part of `npm test`.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['fuzz/**/*.fuzz.ts'],
    root: fileURLToPath(new URL('.', import.meta.url)),
    // The fuzzer keeps its own time box; this is only the backstop.
    testTimeout: 600_000,
    hookTimeout: 60_000,
  },
});
