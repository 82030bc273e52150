// @tlsproxy/core: the engine.

export type { ControlHandler, HandoffTarget, UnixBackendOptions } from './backend.js';
export { parseBackend, UnixBackend } from './backend.js';
export * from './dialect-api.js';
export { loadDialect } from './load.js';
export type { Level, Logger } from './logger.js';
export { consoleLogger, silentLogger } from './logger.js';
export type { ListenerConfig, ProxyOptions, RunningListener } from './proxy.js';
export { TlsProxy } from './proxy.js';
export type { SessionConfig } from './session.js';
export { Session } from './session.js';
export { tlsDialect } from './tls-dialect.js';
