// RFC 4511 section 4.14 (StartTLS), 4.4.1 (Notice of Disconnection), 5.1 (BER restrictions),
// RFC 4513 section 3.1 (StartTLS sequencing): one client connection's plaintext preamble,
// sans-I/O.
//
// Theory of operation (h11 style): bytes go into the Framer, which cuts them into LDAPMessage
// PDUs (or says the stream is malformed); each PDU is parsed with a depth limit, decoded and
// answered from the table in operations.ts. LDAP has no greeting: start() only arms the timer.
//
//   phase     | receive(bytes)                | timer(now)          | tlsUnavailable() | eof()
//   ----------+-------------------------------+---------------------+------------------+------
//   preamble  | frame, answer, re-arm timer   | close (no Notice)   | (ignored, log)   | close
//   tls       | discard + log, never parse    | (ignored)           | -> preamble      | close
//   closed    | (ignored)                     | (ignored)           | (ignored)        | (ignored)
//
// StartTLS moves to `tls` at once: every octet after the StartTLS PDU goes out as `trailing`
// and is never framed (RFC 4511 4.14.1: the client MUST NOT send PDUs until the response and
// the handshake; CVE-2011-0411 class). Malformed BER, an unknown request or a decoding error
// ends the session with the Notice of Disconnection (protocolError), as RFC 4511 4.1.1 says.
import type { Action, DialectSession } from '@tlsproxy/dialect-kit';
import { act } from '@tlsproxy/dialect-kit';
import { BerError, Framer, parse } from './ber.js';
import { isLdapProtocolError, LdapProtocolError } from './errors.js';
import { decodeMessage, noticeOfDisconnection, OID, OP, RESULT } from './messages.js';
import { answer, type Outcome, type ReplyConfig } from './operations.js';

export interface SessionConfig extends ReplyConfig {
  maxPduSize: number;
  maxDepth: number;
  maxPdus: number;
  maxBadPdus: number;
  /** 0 disables the timer. */
  idleTimeoutMs: number;
}

type Phase = 'preamble' | 'tls' | 'closed';

/**
 * Operation names reported to the engine's logs and `tlsproxy_bad_commands_total`
 * (act.command; the engine accepts [A-Za-z0-9_-] only, so "MODDN", not "modDN"). A PDU that
 * cannot be decoded is reported as `unknown`.
 */
const KNOWN = new Set([
  'BIND',
  'UNBIND',
  'SEARCH',
  'MODIFY',
  'ADD',
  'DELETE',
  'MODDN',
  'COMPARE',
  'ABANDON',
  'EXTENDED',
  'STARTTLS',
]);
const UPDATE_NAMES = new Map<number, string>([
  [OP.modifyResponse, 'MODIFY'],
  [OP.addResponse, 'ADD'],
  [OP.delResponse, 'DELETE'],
  [OP.modDNResponse, 'MODDN'],
  [OP.compareResponse, 'COMPARE'],
]);

function operationName(request: ReturnType<typeof decodeMessage>['request']): string {
  switch (request.op) {
    case 'extended':
      return request.name === OID.startTls ? 'STARTTLS' : 'EXTENDED';
    case 'update':
      return UPDATE_NAMES.get(request.responseTag) ?? 'unknown';
    default:
      return request.op.toUpperCase();
  }
}

const log = (level: 'debug' | 'info' | 'warn' | 'error', message: string): Action => ({
  type: 'log',
  level,
  message,
});

export class LdapSession implements DialectSession {
  private phase: Phase = 'preamble';
  private framer: Framer;
  private deadline = Number.POSITIVE_INFINITY;
  private pdus = 0;
  private bad = 0;

  constructor(private readonly config: SessionConfig) {
    this.framer = this.newFramer();
  }

  start(now: number): Action[] {
    return this.arm(now);
  }

  receive(data: Uint8Array, now: number): Action[] {
    try {
      return this.receiveUnchecked(data, now);
    } catch (err) {
      return this.internalError(err);
    }
  }

  timer(now: number): Action[] {
    if (this.phase !== 'preamble') return [];
    if (now < this.deadline) return [{ type: 'timer', at: this.deadline }];
    // slapd's idletimeout closes without a Notice; so do we.
    this.phase = 'closed';
    return [{ type: 'close', reason: 'idle timeout' }];
  }

  tlsUnavailable(now: number): Action[] {
    if (this.phase !== 'tls') return [log('warn', 'tlsUnavailable() outside StartTLS ignored')];
    // Whatever arrived while the engine looked for a backend was discarded, never parsed.
    this.phase = 'preamble';
    this.framer = this.newFramer();
    return this.arm(now);
  }

  /**
   * The engine's pre-TLS byte cap was crossed: a Notice of Disconnection (RFC 4511 section
   * 4.4.1, OID 1.3.6.1.4.1.1466.20036), then the engine closes. protocolError: a client that
   * sends this much before StartTLS is not speaking the preamble any server expects.
   */
  overflow(_now: number): Uint8Array {
    return noticeOfDisconnection(RESULT.protocolError, 'too much data before StartTLS');
  }

  eof(_now: number): Action[] {
    if (this.phase === 'closed') return [];
    this.phase = 'closed';
    return [{ type: 'close', reason: 'client closed the connection' }];
  }

  private receiveUnchecked(data: Uint8Array, now: number): Action[] {
    if (this.phase === 'tls') {
      return data.length === 0
        ? []
        : [log('warn', `discarded ${data.length} bytes sent after StartTLS`)];
    }
    if (this.phase === 'closed' || data.length === 0) return [];
    this.framer.push(data);
    const out: Action[] = [];
    for (let event = this.framer.next(); event; event = this.framer.next()) {
      try {
        if (event.type === 'malformed') throw malformed(event.reason);
        this.pdu(event.pdu, out);
      } catch (err) {
        if (!isLdapProtocolError(err)) throw err;
        if (
          err.code === 'TLSPROXY_ERR_LDAP_MALFORMED' ||
          err.code === 'TLSPROXY_ERR_LDAP_UNKNOWN_REQUEST'
        ) {
          out.push(act.command(null, true, KNOWN));
        }
        out.push(log('info', `${err.code}: ${err.message}`));
        this.closeWith(out, err.reply, err.code);
      }
      if (this.phase !== 'preamble') return out;
    }
    out.push(...this.arm(now));
    return out;
  }

  private pdu(pdu: Uint8Array, out: Action[]): void {
    let message: ReturnType<typeof decodeMessage>;
    try {
      message = decodeMessage(parse(pdu, this.config.maxDepth));
    } catch (err) {
      if (!(err instanceof BerError)) throw err;
      if (err.message.startsWith('unknown LDAP request')) {
        throw new LdapProtocolError(
          'TLSPROXY_ERR_LDAP_UNKNOWN_REQUEST',
          err.message,
          noticeOfDisconnection(RESULT.protocolError, 'unknown LDAP request'),
        );
      }
      throw malformed(err.message);
    }
    const name = operationName(message.request);
    if (++this.pdus > this.config.maxPdus) {
      out.push(act.command(name, true, KNOWN));
      throw new LdapProtocolError(
        'TLSPROXY_ERR_LDAP_TOO_MANY_PDUS',
        `more than ${this.config.maxPdus} requests before StartTLS`,
        noticeOfDisconnection(RESULT.adminLimitExceeded, 'too many requests before StartTLS'),
      );
    }
    this.complete(answer(message, this.config), out, name);
  }

  private complete(outcome: Outcome, out: Action[], name: string): void {
    out.push(act.command(name, outcome.kind === 'reply' && outcome.bad, KNOWN));
    switch (outcome.kind) {
      case 'none':
        return;
      case 'close':
        this.phase = 'closed';
        out.push({ type: 'close', reason: outcome.reason });
        return;
      case 'reply':
        for (const data of outcome.data) out.push({ type: 'send', data });
        if (outcome.bad && ++this.bad >= this.config.maxBadPdus) {
          throw new LdapProtocolError(
            'TLSPROXY_ERR_LDAP_TOO_MANY_BAD',
            `${this.bad} refused requests`,
            noticeOfDisconnection(RESULT.adminLimitExceeded, 'too many refused requests'),
          );
        }
        return;
      case 'starttls': {
        this.phase = 'tls';
        const trailing = this.framer.takeRest();
        out.push({
          type: 'starttls',
          goAhead: outcome.goAhead,
          unavailable: outcome.unavailable,
          state: { messageId: outcome.messageId },
          trailing,
        });
        if (trailing.length > 0) {
          out.push(log('warn', `discarded ${trailing.length} bytes pipelined after StartTLS`));
        }
        return;
      }
    }
  }

  private closeWith(out: Action[], data: Uint8Array, reason: string): void {
    this.phase = 'closed';
    out.push({ type: 'close', reason, data });
  }

  private arm(now: number): Action[] {
    if (!(this.config.idleTimeoutMs > 0)) return [];
    this.deadline = now + this.config.idleTimeoutMs;
    return [{ type: 'timer', at: this.deadline }];
  }

  private newFramer(): Framer {
    return new Framer({ maxPduSize: this.config.maxPduSize });
  }

  /** receive() must never throw: a bug of ours ends this one connection, politely. */
  private internalError(err: unknown): Action[] {
    this.phase = 'closed';
    const message = err instanceof Error ? err.message : String(err);
    return [
      log('error', `ldap dialect internal error: ${message}`),
      {
        type: 'close',
        reason: 'internal error',
        data: noticeOfDisconnection(RESULT.unavailable, 'internal server error'),
      },
    ];
  }
}

function malformed(reason: string): LdapProtocolError {
  return new LdapProtocolError(
    'TLSPROXY_ERR_LDAP_MALFORMED',
    reason,
    noticeOfDisconnection(RESULT.protocolError, 'decoding error'),
  );
}
