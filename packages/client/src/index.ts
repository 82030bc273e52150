// @tlsproxy/client: client-side STARTTLS for Node applications (issue 18). Speak a dialect's
// preamble to a server, upgrade with a verified TLS handshake in a TLS engine (embedded, or a
// tlspool daemon that keeps the client key), and get a plaintext socket back.
export type {
  ConnectStartTlsOptions,
  PlaintextResult,
  StartTlsFdResult,
  StartTlsResult,
} from './connect.js';
export { connectStartTls, connectStartTlsFd } from './connect.js';
export type { ClientErrorCode } from './errors.js';
export { ClientError } from './errors.js';
