// The entry point a dialect package imported before @tlsproxy/dialect-kit existed
// ('@tlsproxy/core/dialect'): types and pure helpers only, so a dialect never pulls in the
// engine, sockets or the native addon. New dialects import @tlsproxy/dialect-kit directly.

export * from './actions.js';
export { defineDialect, dialectProblems, resolveLimits, resolveOptions } from './define.js';
export * from './dialect.js';
export { CoreError, type CoreErrorCode, isTlsProxyError } from './errors.js';
