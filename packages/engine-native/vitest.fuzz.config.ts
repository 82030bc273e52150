// `npm run test:fuzz` (scripts/fuzz.mjs): the time-boxed fuzzer, not part of `npm test`.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['fuzz/**/*.fuzz.ts'],
    root: fileURLToPath(new URL('.', import.meta.url)),
    // The fuzzer keeps its own time box (each phase a share of TLSPROXY_FUZZ_SECONDS, the
    // largest 0.6); this is only the backstop, so it grows with the box. A fixed 10 minutes cut a
    // 1500 s run's concurrent phase short with a session live, failing the check after it.
    testTimeout: Math.max(600_000, Number(process.env.TLSPROXY_FUZZ_SECONDS ?? 0) * 600 + 120_000),
    hookTimeout: 60_000,
  },
});
