// The way from the preamble to the hand-off, performing switchover.ts's decisions: STARTTLS
// (availability check, flush, detach, drop pending bytes, go-ahead, then the handshake or the
// `crypt` delivery), the plaintext hand-off, and the temporary failures on the way.
import { discardPending, writeSync } from '@tlsproxy/fdpass';
import type { ConnectionState } from './connection.js';
import type { PlaintextAction, StartTlsAction } from './dialect.js';
import { deliver, handshake, replyOn } from './handoff.js';

/** Dialect state handed to the backend, as JSON; leaves room in fdpass's 32 KiB header for the
 * rest of the info (client certificate PEM, addresses). */
export const MAX_DIALECT_STATE = 16 * 1024;

/** Cap on bytes thrown away at the go-ahead (more than this is an attack; the rest goes to TLS and fails). */
export const MAX_DISCARD = 1 << 20;

/** Back in the preamble after a temporary failure: run the dialect's tlsUnavailable(). */
export type Resume = () => void;

/**
 * Any failure on the way to the hand-off (EMFILE from dup or socketpair, ENOMEM, a bug) ends
 * this one connection: the temporary-failure reply while the client still speaks plaintext,
 * everything it holds released, the process serving on.
 */
export async function startTls(
  c: ConnectionState,
  a: StartTlsAction,
  resume: Resume,
): Promise<void> {
  try {
    await startTlsSteps(c, a, resume);
  } catch (err) {
    fail(c, err, a.unavailable);
  }
}

export async function plaintext(c: ConnectionState, a: PlaintextAction): Promise<void> {
  try {
    await plaintextSteps(c, a);
  } catch (err) {
    fail(c, err, a.unavailable);
  }
}

function fail(c: ConnectionState, err: unknown, unavailable: Uint8Array): void {
  const code = (err as { code?: string }).code;
  c.log.log('error', 'connection failed on its way to the hand-off; closing it', {
    error: (err as Error)?.message ?? String(err),
    code,
  });
  c.log.end(
    c.log.ended ? 'handoff_failed' : 'closed_in_preamble',
    `internal failure: ${code ?? (err as Error)?.message ?? String(err)}`,
  );
  c.releaseHandshake();
  const fd = c.fd;
  c.fd = undefined;
  if (fd && !fd.closed) {
    // Detached, go-ahead not yet sent: the client still speaks plaintext.
    if (!c.goAheadSent && unavailable.length > 0) replyOn(fd, unavailable);
    fd.close();
  } else if (!c.socket.destroyed && !c.goAheadSent) {
    c.endSocket(unavailable);
  } else {
    c.socket.destroy();
  }
  c.relaying = false;
  c.finish();
}

/** Drop what the client sent while we were deciding (the stream's and the kernel's). */
function drainPending(c: ConnectionState): number {
  try {
    return c.socket.discardPending(MAX_DISCARD);
  } catch {
    return 0;
  }
}

/** Temporary failure before the go-ahead: the client hears so and the preamble goes on. */
function unavailableNow(c: ConnectionState, a: StartTlsAction, resume: Resume): void {
  const dropped = drainPending(c);
  c.log.discarded(dropped);
  const discarded = c.gate.resume(dropped);
  if (discarded > 0) c.log.m.injection(discarded);
  if (a.unavailable.length > 0) c.socket.write(a.unavailable);
  resume();
}

/** The client went away while we waited: count what was dropped, end, release. */
function clientClosed(c: ConnectionState): void {
  const discarded = c.gate.take();
  if (discarded > 0) c.log.m.injection(discarded);
  c.log.end('closed_in_preamble', 'client closed during STARTTLS');
  c.finish();
}

async function startTlsSteps(c: ConnectionState, a: StartTlsAction, resume: Resume): Promise<void> {
  const { config, log, socket } = c;
  socket.stopReading();
  // Time to the STARTTLS command; implicit TLS has none.
  if (a.goAhead.length > 0) log.m.starttls(log.seconds());
  log.log('info', a.goAhead.length > 0 ? 'STARTTLS' : 'starting TLS (implicit)', {
    afterMs: log.elapsed(),
    preambleBytes: log.received,
    replies: log.replies,
    commands: log.commands || undefined,
  });
  // The hand-off info travels as one fdpass message header: refuse a dialect state that could
  // not be delivered *before* the go-ahead, not as a dead connection after the handshake.
  if (Buffer.byteLength(JSON.stringify(a.state)) > MAX_DIALECT_STATE) {
    log.log('error', 'dialect state too large to hand off; temporary failure', {
      limit: MAX_DIALECT_STATE,
    });
    // What the client pipelined after STARTTLS is dropped here too, never interpreted.
    return unavailableNow(c, a, resume);
  }
  // The listener's cap on handshakes at once: past it, a temporary failure like a busy backend.
  if (!c.acquireHandshake()) {
    log.log('warn', 'TLS handshake limit reached: temporary failure');
    log.m.backendUnavailable('starttls');
    c.unavailable = true;
    return unavailableNow(c, a, resume);
  }
  log.discarded(a.trailing.length);
  let ok = false;
  try {
    // Both must be there before the go-ahead: the backend, and (when it runs in its own
    // process) the TLS engine — otherwise the client would get a dead TLS session.
    const [backendOk, poolOk] = await Promise.all([
      config.backend.available(),
      config.handoff === 'crypt' || !config.pool.available ? true : config.pool.available(),
    ]);
    ok = backendOk && poolOk;
  } catch {}
  if (socket.destroyed) return clientClosed(c);
  if (!ok) {
    log.log('warn', 'no backend or TLS engine can take the connection: temporary failure', {
      backend: config.backend.description,
    });
    log.m.backendUnavailable('starttls');
    c.unavailable = true;
    c.releaseHandshake();
    return unavailableNow(c, a, resume);
  }
  c.unavailable = false;
  c.clearTimers();
  // Earlier replies must be on the wire before the descriptor changes hands.
  await c.flushed();
  if (socket.destroyed) return clientClosed(c);
  const { fd, buffered } = socket.detach();
  c.fd = fd;
  // With a go-ahead to send, everything pending predates it: pipelined plaintext. With none
  // (implicit TLS) the client never waits, and what is pending is its ClientHello — but then
  // reading stopped before the first read, so the stream holds none of it.
  const plan = c.gate.goAhead(a.goAhead.length, buffered);
  let dropped = buffered.length;
  if (plan.discardKernel) {
    try {
      const n = discardPending(fd.fd, MAX_DISCARD);
      c.gate.dropped(n);
      dropped += n;
    } catch {}
  }
  log.discarded(dropped);
  const discarded = c.gate.take();
  if (discarded > 0) log.m.injection(discarded);
  if (a.goAhead.length > 0) {
    let n = 0;
    try {
      n = writeSync(fd.fd, a.goAhead);
    } catch {}
    if (n !== a.goAhead.length) {
      log.log('info', 'client not reading; could not send the STARTTLS go-ahead');
      c.fd = undefined;
      fd.close();
      log.end('closed_in_preamble', 'could not send the STARTTLS go-ahead');
      return c.finish();
    }
    c.goAheadSent = true;
  }
  const info = c.info({ dialectState: a.state });
  c.fd = undefined;
  if (config.handoff === 'crypt') {
    c.releaseHandshake();
    return deliver(c, fd, info);
  }
  return handshake(c, fd, info);
}

async function plaintextSteps(c: ConnectionState, a: PlaintextAction): Promise<void> {
  const { config, log, socket } = c;
  socket.stopReading();
  c.clearTimers();
  let ok = false;
  try {
    ok = await config.backend.available();
  } catch {}
  if (!ok) {
    log.log('warn', 'no backend for a plaintext hand-off: temporary failure');
    log.m.backendUnavailable('plaintext');
    log.end('backend_unavailable', 'no backend for a plaintext hand-off');
    // Reading is paused, so a client that never closes would hold the socket: bound it.
    c.endSocket(a.unavailable);
    return c.finish();
  }
  await c.flushed();
  if (socket.destroyed) {
    log.end('closed_in_preamble', 'client closed before the plaintext hand-off');
    return c.finish();
  }
  const { fd, buffered } = socket.detach();
  c.fd = fd; // ours until deliver() has it: fail() closes it if what follows throws
  // Here the pending bytes are the client's next commands: they belong to the backend.
  const all = Buffer.concat([Buffer.from(a.buffered), buffered]);
  const info = c.info({ handoff: 'plaintext', dialectState: a.state });
  c.fd = undefined;
  // The client is waiting for an answer to what it sent: on failure, the temporary failure.
  await deliver(c, fd, info, all, { reply: a.unavailable });
}
