// @tlsproxy/core's tests with this engine embedded: vitest.core.config.ts resolves core's
// '@tlsproxy/pool' here, so `new TlsEngine(options)` in core's Proxy builds a NativeTlsEngine.
export * from '@tlsproxy/pool'; // pool's sources under vitest.core.config.ts
export { NativeTlsEngine as TlsEngine } from '../src/index.js';
