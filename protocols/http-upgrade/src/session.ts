// RFC 2817 section 3 (Client Requested Upgrade to HTTP over TLS) and 4.2 (Mandatory
// Advertisement), RFC 9110 section 7.8 (Upgrade), RFC 9112 section 9.6 (Tear-down): one client
// connection's plaintext request, sans-I/O.
//
// Theory of operation (h11 style): the client speaks first; bytes go into the Framer until the
// request head is complete; request.ts decides what the head asks for; the content (by
// Content-Length) is read in full; then the session hands over. There is exactly one request
// before TLS: every answer but the 101 (and the plaintext hand-off) closes the connection.
//
//   phase | receive(bytes)                     | timer(now)      | tlsUnavailable() | eof()
//   ------+------------------------------------+-----------------+------------------+------
//   head  | frame; on a full head decide:      | 408, close      | (ignored, log)   | close
//         |  upgrade -> [100] -> body          |                 |                  |
//         |  none -> 426 + close | plaintext   |                 |                  |
//         |  bad -> 400/411/413/414/417/431/505|                 |                  |
//   body  | collect Content-Length octets,     | 408, close      | (ignored, log)   | close
//         |  then starttls (101 go-ahead)      |                 |                  |
//   tls   | discard + log, never parse         | (ignored)       | close (503 sent) | close
//   done  | (ignored)                          | (ignored)       | (ignored)        | (ignored)
//
// The starttls action ends all interpretation: every octet after the request's content goes
// out as `trailing` and is never framed, so a request pipelined after the upgrade request is
// never answered in plaintext and never reaches TLS or the backend (RFC 2817 section 3.3: the
// backend answers the ORIGINAL request, over TLS, from the hand-off state).
import type { Action, DialectSession } from '@tlsproxy/dialect-kit';
import { act, ByteBuffer, base64 } from '@tlsproxy/dialect-kit';
import { HttpProtocolError, isHttpProtocolError } from './errors.js';
import { Framer, type FramerLimits, type Head } from './framer.js';
import { type Decision, decide } from './request.js';
import { CONTINUE, errorResponse, SWITCHING_PROTOCOLS } from './responses.js';

export interface SessionConfig extends FramerLimits {
  /** What a request without a TLS upgrade gets: 426, or a plaintext hand-off. */
  plaintext: 'refuse' | 'handoff';
  /** Also put the exact request octets (base64) in the hand-off state as `raw`. */
  rawRequest: boolean;
  /** Methods whose requests may upgrade to TLS (RFC 2817 section 3.2: OPTIONS). */
  upgradeMethods: readonly string[];
  maxBodySize: number;
  maxHandoffStateBytes: number;
  /** Connect to complete request; 0 disables the timer. */
  requestTimeoutMs: number;
}

/** The original request as the backend receives it in `info.dialectState` (README). */
export interface RequestState extends Record<string, unknown> {
  method: string;
  target: string;
  version: string;
  headers: [string, string][];
  /** Content octets per Content-Length, base64 ("" when none). Absent for a plaintext hand-off. */
  body?: string;
  /** The exact request octets, base64 (option rawRequest). */
  raw?: string;
}

type Phase = 'head' | 'body' | 'tls' | 'done';

export class HttpUpgradeSession implements DialectSession {
  private phase: Phase = 'head';
  private readonly framer: Framer;
  private deadline = Number.POSITIVE_INFINITY;
  /** Every octet received until the hand-off: the request, its content, what follows. */
  private readonly received = new ByteBuffer();
  private head: Head | null = null;
  private decision: Decision | null = null;

  constructor(private readonly config: SessionConfig) {
    this.framer = new Framer(config, this.received);
  }

  start(now: number): Action[] {
    if (!(this.config.requestTimeoutMs > 0)) return [];
    this.deadline = now + this.config.requestTimeoutMs;
    return [act.timer(this.deadline)];
  }

  receive(data: Uint8Array, now: number): Action[] {
    try {
      return this.receiveUnchecked(data, now);
    } catch (err) {
      return this.internalError(err, now);
    }
  }

  timer(now: number): Action[] {
    if (this.phase !== 'head' && this.phase !== 'body') return [];
    if (now < this.deadline) return [act.timer(this.deadline)];
    return this.fail(
      new HttpProtocolError('TLSPROXY_ERR_HTTP_TIMEOUT', 408, 'request timeout'),
      now,
    );
  }

  tlsUnavailable(_now: number): Action[] {
    if (this.phase !== 'tls') return [act.log('warn', 'tlsUnavailable() outside the upgrade')];
    // The engine wrote the 503 (`unavailable`, with Connection: close): one request per
    // connection before TLS, so there is nothing left to do but close.
    this.phase = 'done';
    return [act.close('no backend for the upgrade (503 sent)')];
  }

  /**
   * The engine's pre-TLS byte cap was crossed: 413 Content Too Large with Connection: close
   * (RFC 9110 section 15.5.14; RFC 9112 section 9.6), then the engine closes. The dialect's own
   * limits (head 16 KiB, content 4 KiB) usually answer first. Pure.
   */
  overflow(now: number): Uint8Array {
    return errorResponse(413, { now, head: this.head?.request.method === 'HEAD' });
  }

  /** The engine's preamble deadline passed (before this dialect's own request timeout): 408. */
  expired(now: number): Uint8Array {
    return errorResponse(408, { now, head: this.head?.request.method === 'HEAD' });
  }

  eof(_now: number): Action[] {
    if (this.phase === 'done') return [];
    this.phase = 'done';
    return [act.close('client closed the connection')];
  }

  private receiveUnchecked(data: Uint8Array, now: number): Action[] {
    if (this.phase === 'tls') {
      return data.length === 0
        ? []
        : [act.log('warn', `discarded ${data.length} bytes sent after the upgrade request`)];
    }
    if (this.phase === 'done' || data.length === 0) return [];
    this.received.append(data);
    const out: Action[] = [];
    try {
      if (this.phase === 'head') {
        const head = this.framer.next();
        if (head === null) return out;
        this.accept(head, now, out);
      }
      if (this.phase === 'body') this.finishBody(now, out);
    } catch (err) {
      if (!isHttpProtocolError(err)) throw err;
      if (this.framer.ambiguous) out.push(act.log('error', 'HTTP grammar is ambiguous'));
      // The refused request, by method (`unknown` when there is no head or the method is not
      // one of RFC 9110's): counted by the engine in tlsproxy_bad_commands_total.
      out.push(act.command(this.head?.request.method ?? null, true, METHODS));
      out.push(...this.fail(err, now));
    }
    return out;
  }

  /** A complete head: refuse it, hand it off in plaintext, or go on to its content. */
  private accept(head: Head, now: number, out: Action[]): void {
    this.head = head;
    const decision = decide(head, this.config.maxBodySize, this.config.upgradeMethods);
    this.decision = decision;
    if (!decision.upgrade) {
      if (this.config.plaintext !== 'handoff') {
        throw new HttpProtocolError(
          'TLSPROXY_ERR_HTTP_UPGRADE_REQUIRED',
          426,
          'request without an upgrade to TLS',
        );
      }
      this.phase = 'done';
      out.push(act.command(head.request.method, false, METHODS));
      // Everything received goes to the backend, which reads the content (if any) itself.
      out.push({
        type: 'plaintext',
        buffered: this.received.view().slice(),
        state: requestState(head),
        unavailable: errorResponse(503, { now, head: decision.head }),
      });
      return;
    }
    const fixed = Buffer.byteLength(JSON.stringify(requestState(head)));
    const extra =
      b64Length(decision.length) +
      (this.config.rawRequest ? b64Length(head.size + decision.length) + 10 : 0) +
      10;
    if (fixed > this.config.maxHandoffStateBytes) {
      throw new HttpProtocolError(
        'TLSPROXY_ERR_HTTP_HEADER_TOO_LARGE',
        431,
        'request head too large for the hand-off',
      );
    }
    if (fixed + extra > this.config.maxHandoffStateBytes) {
      throw new HttpProtocolError(
        'TLSPROXY_ERR_HTTP_BODY_TOO_LARGE',
        413,
        'request content too large for the hand-off',
      );
    }
    // Reported now, before the starttls action (the engine drops actions after it).
    out.push(act.command(head.request.method, false, METHODS));
    if (decision.expectContinue) out.push(act.send(CONTINUE));
    this.phase = 'body';
  }

  /** All content octets in: the 101 go-ahead, the original request as hand-off state. */
  private finishBody(now: number, out: Action[]): void {
    const head = this.head!;
    const decision = this.decision!;
    const end = head.size + decision.length;
    if (this.received.length < end) return;
    const all = this.received.view();
    this.received.clear();
    this.phase = 'tls';
    const state = requestState(head);
    state.body = base64(all.subarray(head.size, end));
    if (this.config.rawRequest) state.raw = base64(all.subarray(0, end));
    const trailing = all.slice(end);
    out.push({
      type: 'starttls',
      goAhead: SWITCHING_PROTOCOLS,
      unavailable: errorResponse(503, { now, head: decision.head }),
      state,
      trailing,
    });
    if (trailing.length > 0) {
      out.push(act.log('warn', `discarded ${trailing.length} bytes pipelined after the upgrade`));
    }
  }

  private fail(err: HttpProtocolError, now: number): Action[] {
    this.phase = 'done';
    this.received.clear();
    const head = this.head?.request.method === 'HEAD';
    return [
      act.close(
        `${err.code}: ${err.message}`,
        errorResponse(err.status, { now, head, code: err.code }),
      ),
    ];
  }

  /** receive() must never throw: a bug of ours ends this one connection, politely. */
  private internalError(err: unknown, now: number): Action[] {
    this.phase = 'done';
    const message = err instanceof Error ? err.message : String(err);
    return [
      act.log('error', `http-upgrade dialect internal error: ${message}`),
      act.close('internal error', errorResponse(500, { now })),
    ];
  }
}

/**
 * Methods reported by name to the engine's logs and metrics (act.command): RFC 9110 section 9
 * and PATCH (RFC 5789); PRI is the HTTP/2 preface. Any other token is reported as `unknown`.
 */
const METHODS = new Set([
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'DELETE',
  'CONNECT',
  'OPTIONS',
  'TRACE',
  'PATCH',
  'PRI',
]);

function requestState(head: Head): RequestState {
  const { method, target, version } = head.request;
  return { method, target, version, headers: head.headers.map(([n, v]) => [n, v]) };
}

function b64Length(n: number): number {
  return Number.isFinite(n) ? Math.ceil(n / 3) * 4 : Number.POSITIVE_INFINITY;
}
