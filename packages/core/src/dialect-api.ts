// The entry point a dialect package imports ('@tlsproxy/core/dialect'): types and pure helpers
// only, so a dialect never pulls in the engine, sockets or the native addon.

export * from './actions.js';
export { defineDialect, dialectProblems, resolveLimits, resolveOptions } from './define.js';
export * from './dialect.js';
export { CoreError, isTlsProxyError } from './errors.js';
