// `npm run test:core-suite [files]`: @tlsproxy/core's tests, unmodified, with NativeTlsEngine as
// the embedded engine. '@tlsproxy/pool' resolves to a shim whose TlsEngine is NativeTlsEngine
// for core's (and its tests') imports, and to pool's sources for everything else, so there is
// one PoolError class.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const here = fileURLToPath(new URL('./', import.meta.url));
const coreDir = fileURLToPath(new URL('../core/', import.meta.url));
const shim = fileURLToPath(new URL('./test/core-shim.ts', import.meta.url));
const poolSrc = fileURLToPath(new URL('../pool/src/index.ts', import.meta.url));

export default defineConfig({
  plugins: [
    {
      name: 'native-engine-under-core-tests',
      enforce: 'pre',
      resolveId(source, importer) {
        if (source !== '@tlsproxy/pool') return null;
        return importer?.startsWith(coreDir) ? shim : poolSrc;
      },
    },
  ],
  test: {
    include: ['../core/test/**/*.test.ts'],
    // Interop tests need openssl/dovecot/… installed: TLSPROXY_INTEROP=1 to include them.
    exclude: process.env.TLSPROXY_INTEROP ? [] : ['../core/test/**/*.interop.test.ts'],
    root: here,
    testTimeout: 20_000,
  },
});
