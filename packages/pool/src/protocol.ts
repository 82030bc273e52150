// The proxy ↔ tlspool daemon protocol over @tlsproxy/fdpass (the daemon listens). It carries
// the TlsEngineApi across a process boundary: fd in, fd out.
//
//   proxy → daemon   request 'handshake' { request } + 1 fd (TCP)  → 'established' { info, key, sessionEnd? } + 1 fd (plaintext end)
//   daemon → proxy   request 'check-server-name' { handshake: id, serverName } → 'server-name-ok' { accept }
//   proxy → daemon   request 'connect' { request } + 1 fd (TCP, preamble done) + attachment:
//                    the trusted CAs as PEM text (empty: the daemon's Node roots)
//                    → 'established' { info, key, sessionEnd? } + 1 fd (plaintext end)
//   any → daemon     request 'control' { key, op, args }           → 'control-result' { result }
//   proxy → daemon   request 'server-names' {}                     → 'names' { names }
//   daemon → proxy   'session-end' { handshake: id }   (no answer) the session established by
//                    that handshake request (its id on this channel) has ended; sent only when
//                    the handshake request asked for it (request.sessionEnd: true), so a proxy
//                    that does not know this message never receives it. 'established' says
//                    sessionEnd: true when it will be sent. With `failure` (text): the session
//                    was handed out early (earlyHandoff) and its handshake then failed.
//   daemon → proxy   'handshake-complete' { handshake: id }   (no answer) a session handed out
//                    early ('established' said early: true) has had the client's Finished: its
//                    handshake is complete (HandshakeResult.completed resolves).
//
// In a handshake request, `request` carries the HandshakeRequest's data fields (clientCert,
// alpn, handshakeTimeoutMs, idleTimeoutMs, connectionId, earlyHandoff, promptCompletion) and two
// flags: checkServerName (ask back with 'check-server-name') and sessionEnd (send 'session-end').
// A connect request's `request` carries the ConnectRequest's data fields (serverName,
// clientIdentity — a NAME: the key stays in the daemon —, alpn, minVersion, handshakeTimeoutMs,
// idleTimeoutMs, connectionId) and the sessionEnd flag ('session-end' names the connect
// request's id in its `handshake` field). The CAs travel as the attachment, so a bundle is not
// bound by the 32 KiB header (the channel's 64 KiB message cap still is). A daemon older than
// 'connect' answers it with an error (unknown message type) and closes the descriptor.
// A control request's args may carry `requester`: who asked, for counting unknown keys (see
// daemon.ts).
import { defineProtocol } from '@tlsproxy/fdpass';

/** Longest failure text in a 'session-end' (an OpenSSL error string is well under this). */
export const MAX_FAILURE = 512;

export const poolProtocol = defineProtocol({
  name: 'tlsproxy-pool',
  version: 1,
  messages: {
    handshake: { fields: { request: 'object' }, fds: 1 },
    established: { fields: { info: 'object', key: 'string' }, fds: 1 },
    connect: { fields: { request: 'object' }, fds: 1, attachment: true },
    'check-server-name': { fields: { handshake: 'integer', serverName: 'string' } },
    'server-name-ok': { fields: { accept: 'boolean' } },
    control: { fields: { key: 'string', op: 'string', args: 'object' } },
    'control-result': { fields: { result: 'any' } },
    'server-names': { fields: {} },
    names: { fields: { names: 'array' } },
    // reason: 'idle' when the daemon's engine ended it for its idle timeout (the proxy logs it).
    'session-end': { fields: { handshake: 'integer', failure: 'string?', reason: 'string?' } },
    'handshake-complete': { fields: { handshake: 'integer' } },
  },
});
