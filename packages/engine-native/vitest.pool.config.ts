// `npm run test:pool-suite`: @tlsproxy/pool's engine tests, unmodified, against NativeTlsEngine.
// Both this package and pool's tests must see one copy of pool (one PoolError class), so
// '@tlsproxy/pool' is resolved to pool's sources too.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const poolTest = fileURLToPath(new URL('../pool/test/', import.meta.url));
const shim = fileURLToPath(new URL('./test/pool-shim.ts', import.meta.url));
const poolSrc = fileURLToPath(new URL('../pool/src/index.ts', import.meta.url));

export default defineConfig({
  plugins: [
    {
      name: 'native-engine-under-pool-tests',
      enforce: 'pre',
      resolveId(source, importer) {
        if (source === '@tlsproxy/pool') return poolSrc;
        if (importer?.startsWith(poolTest) && source === '../src/index.js') return shim;
        return null;
      },
    },
  ],
  test: {
    include: ['../pool/test/**/*.test.ts'],
    root: fileURLToPath(new URL('.', import.meta.url)),
  },
});
