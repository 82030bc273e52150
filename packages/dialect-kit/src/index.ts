// @tlsproxy/dialect-kit: the leaf package every dialect builds on (no native code, no
// dependency on other tlsproxy packages): the contract, action builders, the error base, octet
// and line framing, options and limits as data. The test kit is `@tlsproxy/dialect-kit/testing`.
export * from './actions.js';
export * from './bytes.js';
export * from './contract.js';
export * from './define.js';
export type { DialectErrorOptions, TlsproxyErrorOptions } from './errors.js';
export { DialectError, isErrorWithPrefix, isTlsProxyError, TlsproxyError } from './errors.js';
export * from './framing.js';
export { type LineClientLimits, type LineClientReplies, LineClientSession } from './line-client.js';
export * from './lines.js';
export { loadDialect } from './load.js';
