// @ts-check
// The CLIENT side of the NNTP preamble, for the proxy's client role (`role: client`): a local
// plaintext client connects to the proxy, the proxy connects to a real news server and speaks
// this part as a client, then relays the local client's bytes through TLS. RFC 4642 section 2
// (STARTTLS), RFC 3977 sections 5.1 (greeting), 5.2 (CAPABILITIES) and 3.1.1 (multi-line data
// blocks: dot-stuffing). https://www.rfc-editor.org/rfc/rfc4642#section-2.2
//
// Theory of operation (sans-I/O like the server side): the SERVER's bytes in, actions out; a
// `send` writes to the server. The kit's LineFramer cuts the server's bytes into lines, and
// each line is judged by this table. STARTTLS is sent only when CAPABILITIES lists it (RFC 4642
// section 2.1: the capability says the server supports it), so a server that does not offer it
// gets a polite QUIT and the local client a 502 — never a plaintext fallback.
//
//   phase    | server line                      | then
//   ---------+----------------------------------+---------------------------------------------
//   greeting | 200 / 201                        | send CAPABILITIES -> caps
//            | 400 / 502 (the server refuses)   | close; its code to the local client
//            | anything else                    | close, 400 to the local client
//   caps     | 101                              | -> list
//            | anything else                    | close, QUIT: STARTTLS is not known offered
//   list     | .                                | STARTTLS listed? send STARTTLS -> tls
//            |                                  |   : close, QUIT, 502 to the local client
//            | a capability (dot-unstuffed)     | remember its label (counted)
//   tls      | 382                              | bytes after it in this read? close (response
//            |                                  |   injection) : starttls, toLocal = our
//            |                                  |   greeting with the server's 200 / 201
//            | 580 / 502 / anything else        | close, QUIT
//   any      | a line over the limit            | close (QUIT once greeted)
//   done     | (ignored)                        |
//
// The timer bounds each wait as a whole (the greeting, then each reply), not the silence
// between reads, so a server dripping one octet a second cannot hold the local client.

import { act, commandWord, fromLatin1, LineFramer, readLimits } from '@tlsproxy/dialect-kit';

/** @typedef {import('@tlsproxy/dialect-kit').ClientAction} ClientAction */
/** @typedef {import('@tlsproxy/dialect-kit').ClientDialectSession} ClientDialectSession */
/** @typedef {import('@tlsproxy/dialect-kit').LimitSpec} LimitSpec */
/**
 * @typedef {{ maxLineLength: number, maxCapabilityLines: number, greetingTimeoutMs: number,
 *   replyTimeoutMs: number }} NntpClientLimits
 * @typedef {'greeting' | 'caps' | 'list' | 'tls' | 'done'} Phase
 */

/** @type {Record<keyof NntpClientLimits, LimitSpec>} */
export const clientLimits = {
  maxLineLength: {
    default: 4096,
    unit: 'bytes',
    phase: 'preamble',
    description: 'Longest server response line in octets (CRLF not counted); longer: close.',
    source:
      'RFC 3977 section 3.1 (initial response lines at most 512 octets with CRLF), with room for capability lines (INN lists 9 SASL mechanisms on one)',
  },
  maxCapabilityLines: {
    default: 100,
    unit: 'count',
    phase: 'preamble',
    description: 'Lines in the CAPABILITIES list; more: close.',
    source: 'tlsproxy: INN 2.7 lists 13 before TLS',
  },
  greetingTimeoutMs: {
    default: 30_000,
    unit: 'ms',
    phase: 'preamble',
    description: 'Wait for the server greeting; then close. 0 disables.',
    source: 'tlsproxy: INN greets at once; its own initialtimeout for a client is 10 s',
  },
  replyTimeoutMs: {
    default: 30_000,
    unit: 'ms',
    phase: 'preamble',
    description: 'Wait for the complete reply to CAPABILITIES or STARTTLS; then close. 0 disables.',
    source: 'tlsproxy: both are answered at once by real servers',
  },
};

const CRLF = '\r\n';
/** The only names this side reports (logs and metrics). */
const KNOWN = new Set(['CAPABILITIES', 'STARTTLS']);
/** Octets of each capability line kept for `starttls.state` (logs). */
const STATE_CHARS = 64;
const enc = fromLatin1;

/** RFC 3977 section 3.2: the three-digit status code of a response line, or null. */
function code(/** @type {string} */ line) {
  return /^[1-5][0-9][0-9]( |$)/.test(line) ? line.slice(0, 3) : null;
}

/** @implements {ClientDialectSession} */
export class NntpClientSession {
  /** @param {NntpClientLimits} limits */
  constructor(limits) {
    this.limits = limits;
    /** @type {Phase} */
    this.phase = 'greeting';
    this.framer = new LineFramer(limits.maxLineLength);
    this.deadline = Number.POSITIVE_INFINITY;
    /** The server's greeting line, CRLF included: what the local client gets after TLS. */
    this.greeting = '';
    /** @type {string[]} */
    this.capabilities = [];
    /** The server greeted us: QUIT is worth sending when we give up. */
    this.polite = false;
  }

  /** @param {number} now @returns {ClientAction[]} */
  start(now) {
    return this.arm(now, this.limits.greetingTimeoutMs);
  }

  /** @param {Uint8Array} data @param {number} now @returns {ClientAction[]} */
  receive(data, now) {
    if (this.phase === 'done' || data.length === 0) return [];
    try {
      this.framer.push(data);
      /** @type {ClientAction[]} */
      const out = [];
      for (let e = this.framer.next(); e !== null; e = this.framer.next()) {
        if (e.type === 'tooLong') {
          return this.fail(
            out,
            'server response line too long',
            '400 Bad response from the server',
          );
        }
        this.line(e.text, now, out);
        if (this.done()) return out;
      }
      return out;
    } catch (err) {
      // receive() must never throw: a bug of ours ends this one connection.
      this.phase = 'done';
      const message = err instanceof Error ? err.message : String(err);
      return [
        act.log('error', `nntp client internal error: ${message}`),
        { type: 'close', reason: 'internal error', toLocal: enc(`400 Internal error${CRLF}`) },
      ];
    }
  }

  /** @param {number} now @returns {ClientAction[]} */
  timer(now) {
    // No deadline (timeouts of 0): a stray call must not ask for a timer at infinity.
    if (this.phase === 'done' || this.deadline === Number.POSITIVE_INFINITY) return [];
    if (now < this.deadline) return [act.timer(this.deadline)];
    return this.fail([], `timeout waiting for ${this.waitingFor()}`, '400 Server timeout');
  }

  /** @param {number} _now @returns {ClientAction[]} */
  eof(_now) {
    if (this.phase === 'done') return [];
    this.polite = false;
    return this.fail(
      [],
      `server closed the connection before ${this.waitingFor()}`,
      '400 Connection closed by the server',
    );
  }

  /** @param {string} text @param {number} now @param {ClientAction[]} out */
  line(text, now, out) {
    switch (this.phase) {
      case 'greeting': {
        const c = code(text);
        if (c === '200' || c === '201') {
          this.polite = true;
          // Our own words with the server's code (posting allowed or not): its pre-TLS text is
          // unauthenticated, and the local client would take it as the verified server's.
          this.greeting = `${c} Server ready (posting ${c === '200' ? 'allowed' : 'prohibited'})${CRLF}`;
          this.send(out, now, 'caps', 'CAPABILITIES');
        } else if (c === '400' || c === '502') {
          // RFC 3977 section 5.1.1: the server refuses us. Its words go to the log (pre-TLS).
          this.close(
            out,
            `server greeted ${c}: ${JSON.stringify(text.slice(0, 200))}`,
            `${c} Service unavailable${CRLF}`,
          );
        } else {
          this.fail(out, 'server greeting is not 200 or 201', '400 Bad greeting from the server');
        }
        return;
      }
      case 'caps':
        if (code(text) === '101') this.phase = 'list';
        else {
          this.fail(
            out,
            'no capability list (RFC 3977 CAPABILITIES), so STARTTLS is not known to be offered',
            '502 TLS unavailable',
          );
        }
        return;
      case 'list': {
        if (text === '.') {
          if (this.capabilities.some((c) => commandWord(c) === 'STARTTLS')) {
            this.send(out, now, 'tls', 'STARTTLS');
          } else {
            this.fail(out, 'server does not offer STARTTLS', '502 TLS unavailable');
          }
          return;
        }
        if (this.capabilities.length >= this.limits.maxCapabilityLines) {
          this.fail(out, 'too many capability lines', '400 Bad response from the server');
          return;
        }
        // RFC 3977 section 3.1.1: a line starting with "." was dot-stuffed. Kept for logs only,
        // cut to STATE_CHARS (the check reads the first word, which the cut cannot change).
        this.capabilities.push((text.startsWith('.') ? text.slice(1) : text).slice(0, STATE_CHARS));
        return;
      }
      case 'tls':
        this.onStartTls(text, out);
        return;
    }
  }

  /** @param {string} text @param {ClientAction[]} out */
  onStartTls(text, out) {
    const c = code(text);
    if (c !== '382') {
      // RFC 4642 section 2.2.1: 580 (TLS temporarily unavailable), 502 (not permitted).
      this.fail(
        out,
        c === '580' || c === '502'
          ? `server answered STARTTLS with ${c}`
          : 'unexpected reply to STARTTLS',
        '400 TLS refused by the server',
      );
      return;
    }
    // The go-ahead. Whatever the server sent after it before TLS is plaintext that would be
    // taken as coming through TLS: the response-injection attack (the client-side twin of
    // CVE-2011-0411). Close, and say nothing more to that server.
    const after = this.framer.pending;
    if (after > 0) {
      this.polite = false;
      this.fail(
        out,
        `response injection: ${after} bytes after the STARTTLS go-ahead, before TLS`,
        '502 TLS refused: the server sent data before TLS',
      );
      return;
    }
    this.phase = 'done';
    out.push({
      type: 'starttls',
      toLocal: enc(this.greeting),
      state: { capabilities: [...this.capabilities] },
    });
  }

  /**
   * @param {ClientAction[]} out @param {number} now @param {Phase} phase
   * @param {'CAPABILITIES' | 'STARTTLS'} command
   */
  send(out, now, phase, command) {
    this.phase = phase;
    out.push(act.command(command, false, KNOWN));
    out.push(act.send(`${command}${CRLF}`), ...this.arm(now, this.limits.replyTimeoutMs));
  }

  /** A method, so the type checker does not narrow `phase` across the calls that change it. */
  done() {
    return this.phase === 'done';
  }

  /** @returns {string} */
  waitingFor() {
    if (this.phase === 'greeting') return 'the greeting';
    if (this.phase === 'tls') return 'the reply to STARTTLS';
    return 'the reply to CAPABILITIES';
  }

  /**
   * Close with a status line for the local client and, when the server is listening, QUIT.
   * @param {ClientAction[]} out @param {string} reason @param {string} status
   * @returns {ClientAction[]}
   */
  fail(out, reason, status) {
    this.close(out, reason, `${status}${CRLF}`);
    return out;
  }

  /** @param {ClientAction[]} out @param {string} reason @param {string} toLocal */
  close(out, reason, toLocal) {
    this.phase = 'done';
    out.push({
      type: 'close',
      reason,
      toLocal: enc(toLocal),
      ...(this.polite ? { data: enc(`QUIT${CRLF}`) } : {}),
    });
  }

  /** @param {number} now @param {number} ms @returns {ClientAction[]} */
  arm(now, ms) {
    if (!(ms > 0)) {
      this.deadline = Number.POSITIVE_INFINITY;
      return [];
    }
    this.deadline = now + ms;
    return [act.timer(this.deadline)];
  }
}

/**
 * The NNTP dialect's client side (`dialect.client`): no options, what it does is fixed by the
 * RFCs; limits as data, read with the kit's readLimits like the server side's.
 * @type {import('@tlsproxy/dialect-kit').ClientDialect<Record<string, never>>}
 */
export const client = {
  options: {},
  limits: clientLimits,
  create: (context) =>
    new NntpClientSession(
      /** @type {NntpClientLimits} */ (readLimits(clientLimits, context.limits)),
    ),
};
