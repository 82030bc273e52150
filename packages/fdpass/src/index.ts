// @tlsproxy/fdpass: pass file descriptors between processes over AF_UNIX SOCK_SEQPACKET.

export type { ChannelEvents, ChannelOptions, ReceivedMessage, SendCallback } from './channel.js';
export { Channel, channelPair, DEFAULT_MAX_FDS, DEFAULT_MAX_MESSAGE_BYTES } from './channel.js';
export type { FdpassErrorCode } from './errors.js';
export { FdpassError } from './errors.js';
export { detachSocket, OwnedFd, socketFd, socketpair, wrapSocket } from './fd.js';
export {
  addonLoads,
  checkAddon,
  discardPending,
  dup,
  listenSocket,
  peekPending,
  setNoDelay,
  writeSync,
} from './io.js';
export type { FdpassLimit } from './limits.js';
export { FDPASS_LIMITS } from './limits.js';
export type {
  Address,
  ConnectOptions,
  ListenOptions,
  SeqpacketServerEvents,
  SocketFileId,
} from './listener.js';
export {
  ACCEPTS_PER_TICK,
  connect,
  DEFAULT_BACKLOG,
  DEFAULT_CONNECT_TIMEOUT_MS,
  listen,
  SeqpacketServer,
} from './listener.js';
/**
 * @deprecated The raw addon, kept only until @tlsproxy/pool (engine.ts, peek) and backend's tests
 * move to the typed functions above; nothing new may use it.
 */
export type {
  AttachOptions,
  FieldSpec,
  FieldType,
  Hello,
  Incoming,
  MessageSpec,
  PeerEvents,
  ProtocolSpec,
  SendOptions,
} from './messages.js';
export {
  DecodeError,
  decode,
  defineProtocol,
  encode,
  MAX_HEADER_BYTES,
  MAX_INVALID,
  Peer,
  Protocol,
  validate,
} from './messages.js';
export type { PeerCred, SockInfo } from './native.js';
export type { RawStreamEvents } from './stream.js';
export { RawStream } from './stream.js';
export type { ListenFd } from './systemd.js';
export { listenFds } from './systemd.js';
export type { ReadableWatch } from './watch.js';
export { watchReadable } from './watch.js';
