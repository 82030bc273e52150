// The STARTTLS switch-over: what happens to client bytes at and after the STARTTLS command.
//
// Why bytes are discarded rather than the connection closed: the dialect hands back `trailing`
// (bytes after the STARTTLS command in the same read). At the go-ahead the engine also drops
// whatever is still pending in Node's buffer and the kernel's — all of it was sent before the
// client could have seen the go-ahead, so it is pipelined plaintext (CVE-2011-0411). It is never
// interpreted (never given to the dialect again) and never forwarded (not to the TLS engine, not
// to the backend); a log line says how much was dropped. Closing instead would punish clients
// that merely pipeline harmlessly, and an attacker gains nothing from discarded bytes. Bytes that
// arrive *after* the go-ahead are the client's TLS handshake and belong to the TLS engine.
//
// This unit only decides, and counts; it does no I/O. The session performs its decisions
// (transition.ts), so the rule can be property-tested on its own (test/switchover.test.ts).
import type { Action } from './dialect.js';

/** Where a connection is: talking to its dialect, switching over, or finished with plaintext. */
export type Phase = 'preamble' | 'transition' | 'done';

/** What to do at the go-ahead with the bytes that are still pending. */
export interface GoAheadPlan {
  /** Bytes of Node's buffer to pass on to the TLS engine: always none (they predate the go-ahead). */
  readonly forward: Uint8Array;
  /** Drop what the kernel holds too (with a go-ahead: pipelined plaintext; implicit TLS: its
   * ClientHello, which must stay). */
  readonly discardKernel: boolean;
}

const NOTHING = new Uint8Array(0);

export class SwitchOver {
  #phase: Phase = 'preamble';
  /** Bytes thrown away for the current STARTTLS and not yet reported (more than 0: an injection attempt). */
  #discarded = 0;

  get phase(): Phase {
    return this.#phase;
  }

  /**
   * A read from the client: the bytes the dialect gets, or undefined. Only the preamble reaches
   * the dialect; during the switch-over reads are dropped (and counted), after it ignored.
   */
  read(chunk: Uint8Array): Uint8Array | undefined {
    if (this.#phase === 'preamble') return chunk;
    if (this.#phase === 'transition') this.#discarded += chunk.length;
    return undefined;
  }

  /**
   * The actions to perform from a dialect's list: everything up to and including the first one
   * that ends the preamble (close, starttls, plaintext), nothing after it. A starttls action
   * starts the switch-over here, so no later read can reach the dialect; its `trailing` is
   * counted as discarded.
   */
  cut(actions: readonly Action[]): Action[] {
    if (this.#phase !== 'preamble') return [];
    const out: Action[] = [];
    for (const a of actions) {
      out.push(a);
      if (a.type === 'starttls') {
        this.#phase = 'transition';
        this.#discarded += a.trailing.length;
        return out;
      }
      if (a.type === 'plaintext') {
        // Plaintext hand-off: what the client sent next belongs to the backend (not discarded).
        this.#phase = 'transition';
        return out;
      }
      if (a.type === 'close') return out;
    }
    return out;
  }

  /** The connection is finished with plaintext (closed, handed off, or failed). */
  close(): void {
    this.#phase = 'done';
  }

  /**
   * A temporary failure before the go-ahead: the bytes the client pipelined meanwhile (`dropped`,
   * from Node's buffer and the kernel's) are thrown away and the preamble goes on. Returns the
   * bytes discarded for this STARTTLS, in all, and resets the count.
   */
  resume(dropped: number): number {
    this.#discarded += dropped;
    this.#phase = 'preamble';
    return this.take();
  }

  /**
   * At the go-ahead (`goAheadLength` 0: implicit TLS, there is no go-ahead): Node's `buffered`
   * bytes are dropped and never forwarded; the kernel's are dropped too when there is a go-ahead.
   */
  goAhead(goAheadLength: number, buffered: Uint8Array): GoAheadPlan {
    this.#discarded += buffered.length;
    return { forward: NOTHING, discardKernel: goAheadLength > 0 };
  }

  /** Bytes the session dropped from the kernel on this unit's say-so. */
  dropped(n: number): void {
    this.#discarded += n;
  }

  /** The bytes discarded since the last take(), for the log and the injection metric. */
  take(): number {
    const n = this.#discarded;
    this.#discarded = 0;
    return n;
  }
}
