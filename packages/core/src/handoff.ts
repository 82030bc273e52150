// The hand-off: the client's descriptor goes to the backend — through the TLS engine's handshake
// first (`plain`), or as it is (`crypt`, `plaintext`). A copy of the descriptor is kept until the
// backend confirms, so a failed delivery can still give a plaintext client its temporary failure.

import { dup, type OwnedFd, writeSync } from '@tlsproxy/fdpass';
import type { HandoffInfo } from '@tlsproxy/handoff';
import type { HandshakeRequest, SessionEndReason, TlsEngineApi } from '@tlsproxy/pool';
import type { ConnectionState } from './connection.js';

/** Write a temporary-failure reply on a descriptor, best effort (the client may be gone). */
export function replyOn(fd: OwnedFd, bytes: Uint8Array): void {
  try {
    writeSync(fd.fd, bytes);
  } catch {}
}

/** TLS handshake in the engine, then delivery of the plaintext side to the backend. */
export async function handshake(c: ConnectionState, fd: OwnedFd, info: HandoffInfo): Promise<void> {
  const { config, log } = c;
  const backend = config.backend;
  const request: HandshakeRequest = { ...config.tls, connectionId: c.id };
  if (log.m.onBytes) request.onBytes = log.m.onBytes;
  const end = new SessionEnd(c, backend);
  request.onEnd = end.onEnd;
  if (config.idleTimeoutMs) request.idleTimeoutMs = config.idleTimeoutMs;
  // Handed out early, the session holds its handshake place until the engine reports the end of
  // the handshake, which the native engine otherwise batches (up to 50 ms): short of places, a
  // session sequence could be refused with no handshake running.
  if (request.earlyHandoff && config.handshakes?.short?.()) request.promptCompletion = true;
  c.relaying = true;
  log.m.stage('handshake');
  const t0 = performance.now();
  // Asked when the listener says so, and whenever the backend declared that it checks names
  // (a backend that registered onServerName expects to be able to refuse them).
  if (config.checkServerName || backend.wantsServerNameCheck?.() === true) {
    request.checkServerName = (name) =>
      backend.checkServerName(name, { ...info, serverName: name }).catch(() => false);
  }
  let result: Awaited<ReturnType<TlsEngineApi['handshake']>>;
  try {
    result = await config.pool.handshake(fd, request);
  } catch (err) {
    c.relaying = false;
    c.releaseHandshake();
    const ms = performance.now() - t0;
    log.m.handshake('failed', ms / 1000);
    log.log('info', 'TLS handshake failed', {
      error: (err as Error).message,
      code: (err as { code?: string }).code,
      durationMs: Math.round(ms * 10) / 10,
    });
    log.end('tls_failed', (err as Error).message);
    return c.finish();
  }
  const ms = performance.now() - t0;
  // Handed out early, the handshake is not over yet: it keeps its place under maxHandshakes
  // until the client's Finished (or the failure), so the cap holds to the handshake's end; and
  // the metric counts it then, as failed if it failed (the duration stays the time to the
  // hand-off: the engine reports the Finished up to 50 ms late, lazily).
  const ended = (ok: boolean) => {
    c.releaseHandshake();
    log.m.handshake(ok ? 'ok' : 'failed', (ok ? ms : performance.now() - t0) / 1000);
  };
  if (result.completed)
    result.completed.then(
      () => ended(true),
      () => ended(false),
    );
  else ended(true);
  const { version, cipher, alpn, serverName, clientIdentity } = result.info;
  log.log('info', 'TLS established', {
    version,
    cipher,
    alpn,
    sni: serverName ?? undefined,
    client: clientIdentity?.subject,
    durationMs: Math.round(ms * 10) / 10,
  });
  const controlKey = result.controlKey.toString('hex');
  end.controlKey = controlKey;
  await deliver(
    c,
    result.plaintext,
    { ...info, serverName, tls: { version, cipher, alpn }, clientIdentity, controlKey },
    undefined,
    // The client speaks TLS to the engine now: no reply is owed on the descriptor, so no spare
    // copy of it is kept (a dup and a close per connection); the engine ends the session.
    { run: () => void config.pool.control(result.controlKey, 'close').catch(() => {}) },
  );
  if (end.ended) backend.forget?.(controlKey);
}

/**
 * What the engine calls when a relayed session ends. An object of its own, so the callback the
 * engine holds for the session's whole life keeps only the connection and the backend — a
 * closure in handshake() would keep that function's whole scope (the request, the hand-off
 * info, the engine's result).
 */
class SessionEnd {
  /** The backend may use the control key while the session lives; after that it is forgotten
   * (a session can end before the hand-off is confirmed: then right after it). */
  controlKey: string | undefined;
  ended = false;
  readonly #c: ConnectionState;
  readonly #backend: ConnectionState['config']['backend'];

  constructor(c: ConnectionState, backend: ConnectionState['config']['backend']) {
    this.#c = c;
    this.#backend = backend;
  }

  readonly onEnd = (failure?: Error, reason?: SessionEndReason): void => {
    this.ended = true;
    // Handed off early, the handshake failed at its last step (the client's Finished): the
    // backend's end was closed with nothing on it. Said here, as "TLS handshake failed" is.
    if (failure)
      this.#c.log.log('info', 'TLS handshake failed after the hand-off', {
        error: failure.message,
      });
    // The engine closed both sides for the listener's idleTimeoutMs: only it saw the quiet.
    else if (reason === 'idle')
      this.#c.log.log('info', 'relay idle too long, closed', {
        idleTimeoutMs: this.#c.config.idleTimeoutMs,
      });
    if (this.controlKey !== undefined) this.#backend.forget?.(this.controlKey);
    // The relay is over: the connection's places in the limits are free.
    this.#c.relayEnded();
  };
}

/** What happens when the backend does not take the connection. */
export interface OnFail {
  /** Written to the client (the temporary failure it waits for, in plaintext). */
  reply?: Uint8Array;
  run?: () => void;
}

/**
 * Give `fd` to the backend. When the backend does not take it, `onFail.reply` is written on a
 * spare copy of the descriptor and `onFail.run` called.
 */
export async function deliver(
  c: ConnectionState,
  fd: OwnedFd,
  info: HandoffInfo,
  buffered?: Uint8Array,
  onFail?: OnFail,
): Promise<void> {
  const { config, log } = c;
  // Keep a copy until the backend confirms when a reply may be owed on it (deliver() takes
  // ownership of what it is given and closes it once sent).
  log.m.stage('handoff');
  let spare: OwnedFd | undefined;
  if (onFail?.reply) {
    try {
      spare = dup(fd.fd);
    } catch {}
  }
  const backend = config.backend;
  // A connect-mode backend relays a raw (crypt) or plaintext connection in this process: the
  // connection counts against the limits until that relay ends. (With TLS the engine's session
  // end says so.)
  // With `crypt` and `plaintext` the descriptor is the client's own socket: until the backend
  // has taken it, it is in this process and counts (a slow backend must not let clients hold
  // descriptors here uncounted). (`plain`: the TLS session counts until the engine reports its end.)
  const ownSocket = info.handoff !== 'plain';
  const relayHere = backend.relays === true && ownSocket;
  if (ownSocket) c.relaying = true;
  try {
    await backend.deliver(fd, info, buffered, {
      ...(relayHere ? { onRelayEnd: () => c.relayEnded() } : {}),
      // With TLS (`plain`) the engine times the session out and says so (SessionEnd): a second
      // timer here, over the same bytes, would race it.
      ...(config.idleTimeoutMs && ownSocket ? { idleTimeoutMs: config.idleTimeoutMs } : {}),
    });
    log.log('info', 'handed off', { backend: backend.description, handoff: info.handoff });
    log.end('handed_off', `handed off (${info.handoff})`);
    if (ownSocket && !relayHere) c.relaying = false; // the backend's now
  } catch (err) {
    log.log('warn', 'backend did not take the connection', { error: (err as Error).message });
    log.m.backendUnavailable('handoff');
    log.end('handoff_failed', (err as Error).message);
    if (ownSocket) c.relaying = false;
    if (!fd.closed) fd.close();
    if (spare && onFail?.reply) replyOn(spare, onFail.reply);
    onFail?.run?.();
  }
  spare?.close();
  c.finish();
}
