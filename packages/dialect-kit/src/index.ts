// @tlsproxy/dialect-kit: the leaf package every dialect builds on (no native code, no
// dependency on other tlsproxy packages).
export type { TlsproxyErrorOptions } from './errors.js';
export { isTlsProxyError, TlsproxyError } from './errors.js';
