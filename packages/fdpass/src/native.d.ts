// Exactly what build/Release/fdpass.node exports (src/fdpass.c, init()).
export interface RecvResult {
  /** null at end of stream */
  data: Buffer | null;
  fds: number[];
  /** the message was longer than maxBytes; data holds its first maxBytes bytes */
  truncated: boolean;
  /** MSG_CTRUNC: the kernel dropped descriptors (e.g. RLIMIT_NOFILE); fds holds those that arrived */
  ctrunc: boolean;
}

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

export interface SockInfo {
  domain: 'unix' | 'inet' | 'inet6' | 'other';
  type: 'stream' | 'dgram' | 'seqpacket' | 'other';
}

export interface StreamSetHandle {
  readonly __brand: 'StreamSetHandle';
}

export interface PollHandle {
  readonly __brand: 'PollHandle';
}

export interface NativeBinding {
  readonly MAX_FDS: number;
  socketpair(seqpacket?: boolean): [number, number];
  listen(path: string, abstract: boolean, mode: number, backlog: number): number;
  accept(fd: number): number | null;
  connect(path: string, abstract: boolean): number;
  send(fd: number, data: Buffer, fds: number[]): number | null;
  recv(fd: number, maxBytes: number, maxFds: number): RecvResult | null;
  peerCred(fd: number): PeerCred;
  sockInfo(fd: number): SockInfo | null;
  setCloexec(fd: number): void;
  close(fd: number): void;
  dup(fd: number): number;
  /** Read and drop up to `max` pending bytes of a stream socket without blocking. */
  discard(fd: number, max: number): number;
  /** Pending bytes of a stream socket, left in place (MSG_PEEK); empty Buffer at EOF, null if none. */
  peek(fd: number, max: number): Buffer | null;
  /** Write without blocking; returns bytes written (short when the send buffer is full). */
  write(fd: number, data: Buffer): number;
  /** shutdown(SHUT_WR); ENOTCONN is not an error. */
  shutdownWrite(fd: number): void;
  /** TCP_NODELAY on a TCP socket; other sockets are left as they are. */
  setNoDelay(fd: number): void;
  /**
   * The stream set (streams.c): one epoll for all RawStreams. callback(batch): a flat list of
   * [token, events (1 read, 2 write, 4 error/hang-up), data (Buffer read — empty at EOF —, a
   * negative errno, or null)] per ready stream.
   */
  streamsCreate(callback: (batch: Array<number | Buffer | null>) => void): StreamSetHandle;
  /** events 0: remove fd; else ADD (`add`) or MOD with 1 read | 2 write. */
  streamsCtl(set: StreamSetHandle, fd: number, token: number, events: number, add: boolean): void;
  /** Whether the set keeps the event loop alive. */
  streamsRef(set: StreamSetHandle, ref: boolean): void;
  /** callback(status, events): status < 0 is a libuv error; events: 1 readable, 2 writable */
  pollCreate(fd: number, callback: (status: number, events: number) => void): PollHandle;
  pollStart(handle: PollHandle, events: number): void;
  pollRef(handle: PollHandle, ref: boolean): void;
  pollClose(handle: PollHandle): void;
}
