// Exactly what build/Release/engine_native.node exports (src/native/addon.c, init()).
export interface EngineHandle {
  readonly __brand: 'EngineHandle';
}
export interface StoreHandle {
  readonly __brand: 'StoreHandle';
}
export interface SessionHandle {
  readonly __brand: 'SessionHandle';
}
export interface ClientContextHandle {
  readonly __brand: 'ClientContextHandle';
}

/** A client context (the client role): trust, an optional client certificate, suite policy. */
export interface ClientContextOptions {
  /** Trusted CAs, PEM (the caller passes Node's bundled roots when a request names none). */
  ca: string;
  cert: string | null;
  key: string | null;
  ciphers: string;
  ciphersuites: string | null;
  /** 0x0303 (TLS 1.2) or 0x0304 (TLS 1.3) */
  minVersion: number;
}

export interface StoreIdentity {
  cert: string;
  key: string;
  names: string[];
}

export interface StoreOptions {
  defaultIndex: number;
  /** 0x0303 (TLS 1.2) or 0x0304 (TLS 1.3) */
  minVersion: number;
  ca: string | null;
  /** OpenSSL cipher list for TLS 1.2 */
  ciphers: string;
  /** TLS 1.3 suites; null for OpenSSL's default */
  ciphersuites: string | null;
}

export type NativeEvent =
  | {
      type: 'established';
      id: number;
      /** the backend's end of the socketpair, owned by whoever receives the event */
      fd: number;
      version: string;
      cipher: string;
      alpn: string | null;
      serverName: string | null;
      peerCertificate: Buffer | null;
      verified: boolean;
      /** handed out before the client's Finished (earlyHandoff): 'completed' or 'ended' follows */
      early?: boolean;
    }
  | { type: 'completed'; id: number }
  | {
      type: 'failed';
      id: number;
      code: string;
      message: string | null;
      /** with TLSPROXY_ERR_POOL_VERIFY: pool's VerifyReason */
      reason: string | null;
    }
  | { type: 'sni'; id: number; name: string }
  | {
      type: 'ended';
      id: number;
      bytesIn: number;
      bytesOut: number;
      reason: string | null;
      /** Handed off early, the handshake then failed: why. */
      failure?: string | null;
    }
  /** bytes relayed since the last report: at once after a quiet time, then at most every 500 ms */
  | { type: 'bytes'; id: number; bytesIn: number; bytesOut: number; reason: null }
  | {
      type: 'renegotiated';
      id: number;
      req: number;
      code?: string;
      message?: string | null;
      peerCertificate: Buffer | null;
      verified: boolean;
    }
  | {
      type: 'exported';
      id: number;
      req: number;
      data?: Buffer;
      code?: string;
      message?: string | null;
    };

export interface NativeBinding {
  openssl(): { version: number; text: string; headers: number };
  /** malloc'd bytes of the whole process (glibc mallinfo2), for memory measurements */
  mallocBytes(): number;
  engineCreate(threads: number, onEvents: (events: NativeEvent[]) => void): EngineHandle;
  engineClose(engine: EngineHandle): void;
  engineRef(engine: EngineHandle, ref: boolean): void;
  storeCreate(identities: StoreIdentity[], options: StoreOptions): StoreHandle;
  /** null when the engine is busy (the caller still owns fd); otherwise fd belongs to C. */
  submit(
    engine: EngineHandle,
    store: StoreHandle,
    fd: number,
    id: number,
    policy: 0 | 1 | 2,
    alpn: Buffer | null,
    handshakeTimeoutMs: number,
    idleTimeoutMs: number,
    checkServerName: boolean,
    /** report byte counts while the session lives ('bytes' events), for onBytes */
    wantBytes: boolean,
    /** HandshakeRequest.earlyHandoff: 'established' once the server's TLS 1.3 flight is out */
    early?: boolean,
    /** HandshakeRequest.promptCompletion: 'completed' goes to JS at once, not with a later batch */
    prompt?: boolean,
  ): SessionHandle | null;
  clientContextCreate(options: ClientContextOptions): ClientContextHandle;
  /** The client role: null when the engine is busy (the caller still owns fd); otherwise C's. */
  connect(
    engine: EngineHandle,
    context: ClientContextHandle,
    fd: number,
    id: number,
    alpn: Buffer | null,
    /** a DNS name without a trailing dot (checked and sent as SNI), or an IP address */
    name: string,
    isIp: boolean,
    handshakeTimeoutMs: number,
    idleTimeoutMs: number,
  ): SessionHandle | null;
  sniAnswer(engine: EngineHandle, session: SessionHandle, ok: boolean): boolean;
  exporter(
    engine: EngineHandle,
    session: SessionHandle,
    req: number,
    label: string,
    context: Buffer | null,
    length: number,
  ): boolean;
  closeSession(engine: EngineHandle, session: SessionHandle): boolean;
  renegotiate(engine: EngineHandle, session: SessionHandle, req: number): boolean;
}
