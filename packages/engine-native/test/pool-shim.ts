// Pool's own engine suite, run against this engine: @tlsproxy/pool's test/engine.test.ts imports
// `TlsEngine` from '../src/index.js'; vitest.pool.config.ts points that import here.
export * from '@tlsproxy/pool'; // pool's sources under vitest.pool.config.ts
export { NativeTlsEngine as TlsEngine } from '../src/index.js';
