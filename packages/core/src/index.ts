// @tlsproxy/core: the engine.

export type { AddressMatcher } from './addresses.js';
export {
  addressKey,
  addressProblem,
  canonicalAddress,
  checkAddressList,
  DEFAULT_IPV6_PREFIX,
  parseAddressMatcher,
} from './addresses.js';
export type {
  ControlHandler,
  DeliverOptions,
  HandoffTarget,
  UnixBackendOptions,
} from './backend.js';
export { parseBackend, UnixBackend } from './backend.js';
export type { ClientSessionConfig } from './client-session.js';
export { ClientSession, DEFAULT_CONNECT_TIMEOUT_MS } from './client-session.js';
export type { ClusterMetricsServer } from './cluster-metrics.js';
export { serveClusterMetrics, shareMetricsWithPrimary } from './cluster-metrics.js';
export type {
  ConnectAddress,
  ConnectBackendOptions,
  ConnectBackendSpec,
} from './connect-backend.js';
export { ConnectBackend, parseConnect, proxyHeaderInput } from './connect-backend.js';
export type { SessionHooks } from './connection.js';
export * from './dialect-api.js';
export type { InboundProxyConfig } from './inbound-proxy.js';
export { readInboundProxy, trustList } from './inbound-proxy.js';
export type {
  ClientListenerLimitName,
  LimitDeclaration,
  LimitGroup,
  ListenerLimitName,
} from './limits.js';
export {
  BACKEND_LIBRARY_LIMITS,
  CLIENT_LISTENER_LIMIT_NAMES,
  CLIENT_LISTENER_LIMITS,
  CLIENT_ROLE_LIMITS,
  CONNECT_BACKEND_LIMITS,
  ENGINE_LIMITS,
  LIMIT_GROUPS,
  LISTENER_LIMIT_NAMES,
  LISTENER_LIMITS,
  POOL_DAEMON_LIMITS,
  POOL_LIMITS,
  UNIX_BACKEND_LIMITS,
} from './limits.js';
export type { ClientTlsConfig, ListenerTlsConfig } from './listener.js';
export { parseServerAddress } from './listener.js';
export { loadDialect } from './load.js';
export type {
  Level,
  LogDestination,
  LogFormat,
  Logger,
  LoggerOptions,
  PinoLoggerOptions,
} from './logger.js';
export {
  consoleLogger,
  createLogger,
  escapeLogText,
  pinoLogger,
  silentLogger,
} from './logger.js';
export type {
  ConnectionMetrics,
  Direction,
  MetricsOptions,
  Outcome,
  Role,
  Stage,
} from './metrics.js';
export { Metrics } from './metrics.js';
export type { ListenerConfig, ProxyOptions, RunningListener } from './proxy.js';
export { LISTENER_DEFAULTS, TlsProxy } from './proxy.js';
export type {
  DecodeOptions,
  DecodeResult,
  ProxyAddresses,
  ProxyHeader,
  ProxyHeaderInput,
  ProxySsl,
} from './proxy-protocol.js';
export * as proxyProtocol from './proxy-protocol.js';
export {
  decodeProxyHeader,
  encodeProxyV1,
  encodeProxyV2,
  ProxyProtocolError,
} from './proxy-protocol.js';
export type { SessionAddresses, SessionConfig } from './session.js';
export { Session } from './session.js';
export { tlsDialect } from './tls-dialect.js';
