// RFC 1939 section 4 (greeting: +OK or -ERR) and 3 (multi-line responses, byte-stuffing),
// RFC 2449 section 5 (CAPA) and 4 (response lengths), RFC 2595 section 4 (STLS): the CLIENT side
// of the POP3 preamble, for the proxy's client role (issue 18). Sans-I/O: the server's bytes in,
// actions out.
//
// Theory of operation: the server's bytes are cut into lines by the kit's LineFramer (a line is
// bounded by `maxLineLength`); each line is judged by this table. STLS is sent only when CAPA
// lists it (RFC 2595 section 4: a client MUST NOT try STLS unless the server lists it), so a
// server without CAPA gets no STLS: the client closes rather than guess.
//
//   phase    | server line                    | then
//   ---------+--------------------------------+-----------------------------------------------
//   greeting | +OK ...                        | send CAPA -> capa
//            | -ERR ...                       | close; the server's -ERR to the local client
//            | anything else                  | close
//   capa     | +OK ...                        | -> list
//            | -ERR ... (no CAPA: RFC 1939)   | close, QUIT: STLS is not known to be offered
//   list     | .                              | STLS listed? send STLS -> stls : close, QUIT
//            | a capability (byte-unstuffed)  | remember its tag (counted)
//   stls     | +OK ...                        | bytes after it? close (injection) : starttls
//            | -ERR ...                       | close, QUIT
//   any      | a line over the limit, another | close (QUIT once greeted)
//            | reply                          |
//   done     | (ignored)                      |
//
// The timer bounds each wait as a whole (the greeting, then each reply), not the silence
// between reads: a server dripping one octet a second cannot hold the local client forever.
import {
  act,
  type ClientAction,
  type ClientContext,
  type ClientDialect,
  type ClientDialectSession,
  commandWord,
  fromLatin1,
  type LimitSpec,
  LineFramer,
  readLimits,
} from '@tlsproxy/dialect-kit';

/** The POP3 client has no options: what it does is fixed by the RFCs. */
export type Pop3ClientOptions = Record<string, never>;

type LimitName = 'maxLineLength' | 'maxCapabilityLines' | 'greetingTimeoutMs' | 'replyTimeoutMs';

const limits: Record<LimitName, LimitSpec> = {
  maxLineLength: {
    default: 4096,
    unit: 'bytes',
    phase: 'preamble',
    description: 'Longest server response line in octets (CRLF not counted); longer: close.',
    source:
      'RFC 2449 section 4 (512 octets with CRLF), with room for servers that exceed it (an APOP timestamp, a long banner)',
  },
  maxCapabilityLines: {
    default: 100,
    unit: 'count',
    phase: 'preamble',
    description: 'Lines in the CAPA list; more: close.',
    source: 'tlsproxy: Dovecot lists 8 before TLS',
  },
  greetingTimeoutMs: {
    default: 30_000,
    unit: 'ms',
    phase: 'preamble',
    description: 'Wait for the server greeting; then close. 0 disables.',
    source: 'tlsproxy: Dovecot greets at once; a waiting mail client gives up in ~60 s',
  },
  replyTimeoutMs: {
    default: 30_000,
    unit: 'ms',
    phase: 'preamble',
    description: 'Wait for the complete reply to CAPA or STLS; then close. 0 disables.',
    source: 'tlsproxy: both are answered at once by real servers',
  },
};

type Limits = { [K in LimitName]: number };
type Phase = 'greeting' | 'capa' | 'list' | 'stls' | 'done';

const CRLF = '\r\n';
const QUIT = `QUIT${CRLF}`;
const KNOWN: ReadonlySet<string> = new Set(['CAPA', 'STLS']);
/** Octets of each CAPA line kept for `starttls.state` (logs). */
const STATE_CHARS = 64;

/** `+OK` or `-ERR` (as a whole word, any case), or null for anything else. */
function status(line: string): '+OK' | '-ERR' | null {
  const word = commandWord(line);
  return word === '+OK' || word === '-ERR' ? word : null;
}

export class Pop3ClientSession implements ClientDialectSession {
  private phase: Phase = 'greeting';
  private readonly framer: LineFramer;
  private deadline = Number.POSITIVE_INFINITY;
  private greeting = '';
  private readonly capabilities: string[] = [];
  /** A +OK greeting came: the server is listening, QUIT is worth sending. */
  private polite = false;

  constructor(private readonly limits: Limits) {
    this.framer = new LineFramer(limits.maxLineLength);
  }

  start(now: number): ClientAction[] {
    return this.arm(now, this.limits.greetingTimeoutMs);
  }

  receive(data: Uint8Array, now: number): ClientAction[] {
    if (this.phase === 'done' || data.length === 0) return [];
    try {
      this.framer.push(data);
      const out: ClientAction[] = [];
      for (let e = this.framer.next(); e !== null; e = this.framer.next()) {
        if (e.type === 'tooLong') {
          return this.fail(out, 'server response line too long', 'SYS/TEMP', 'Bad response.');
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
        act.log('error', `pop3 client internal error: ${message}`),
        { type: 'close', reason: 'internal error', toLocal: enc(err_('SYS/TEMP', 'Error.')) },
      ];
    }
  }

  timer(now: number): ClientAction[] {
    // No deadline (timeouts of 0): a stray call must not ask for a timer at infinity.
    if (this.phase === 'done' || this.deadline === Number.POSITIVE_INFINITY) return [];
    if (now < this.deadline) return [act.timer(this.deadline)];
    return this.fail([], `timeout waiting for ${this.waitingFor()}`, 'SYS/TEMP', 'Server timeout.');
  }

  eof(_now: number): ClientAction[] {
    if (this.phase === 'done') return [];
    this.polite = false;
    return this.fail(
      [],
      `server closed the connection before ${this.waitingFor()}`,
      'SYS/TEMP',
      'Closed.',
    );
  }

  private line(text: string, now: number, out: ClientAction[]): void {
    switch (this.phase) {
      case 'greeting': {
        const s = status(text);
        if (s === '-ERR') {
          // The server refuses us (too many connections...): its reason is the best one.
          this.close(out, 'server greeted -ERR', `${text}${CRLF}`);
        } else if (s === '+OK') {
          this.polite = true;
          this.greeting = `${text}${CRLF}`;
          this.send(out, now, 'capa', 'CAPA');
        } else {
          this.fail(out, 'server greeting is not "+OK"', 'SYS/TEMP', 'Bad greeting.');
        }
        return;
      }
      case 'capa': {
        const s = status(text);
        if (s === '+OK') this.phase = 'list';
        else if (s === '-ERR') {
          this.fail(
            out,
            'server does not support CAPA (RFC 2449), so STLS is not offered',
            'SYS/PERM',
            'TLS unavailable.',
          );
        } else this.fail(out, 'unexpected reply to CAPA', 'SYS/TEMP', 'Bad response.');
        return;
      }
      case 'list': {
        if (text === '.') {
          if (this.capabilities.some((c) => commandWord(c) === 'STLS')) {
            this.send(out, now, 'stls', 'STLS');
          } else {
            this.fail(out, 'server does not offer STLS', 'SYS/PERM', 'TLS unavailable.');
          }
          return;
        }
        if (this.capabilities.length >= this.limits.maxCapabilityLines) {
          this.fail(out, 'too many CAPA lines', 'SYS/TEMP', 'Bad response.');
          return;
        }
        // RFC 1939 section 3: a line starting with "." was byte-stuffed. Kept for logs only,
        // cut to STATE_CHARS, so the list costs little whatever the server sends (the check
        // reads the first word, which a cut at 64 cannot turn into STLS).
        this.capabilities.push((text.startsWith('.') ? text.slice(1) : text).slice(0, STATE_CHARS));
        return;
      }
      case 'stls':
        this.onStls(text, out);
        return;
    }
  }

  private onStls(text: string, out: ClientAction[]): void {
    const s = status(text);
    if (s === '-ERR') {
      this.fail(out, 'server answered STLS with -ERR', 'SYS/TEMP', 'TLS refused by the server.');
      return;
    }
    if (s !== '+OK') {
      this.fail(out, 'unexpected reply to STLS', 'SYS/TEMP', 'Bad response.');
      return;
    }
    // The go-ahead. Whatever the server sent after it before TLS is plaintext that would be
    // taken as coming through TLS: the response-injection attack (NO STARTTLS study).
    const after = this.framer.pending;
    this.phase = 'done';
    if (after > 0) {
      this.polite = false;
      this.fail(
        out,
        `response injection: ${after} bytes after the STLS go-ahead, before TLS`,
        'SYS/PERM',
        'TLS refused: the server sent data before TLS.',
      );
      return;
    }
    out.push({
      type: 'starttls',
      toLocal: enc(this.greeting),
      state: { capabilities: [...this.capabilities] },
    });
  }

  private send(out: ClientAction[], now: number, phase: Phase, command: string): void {
    this.phase = phase;
    out.push(act.command(command, false, KNOWN));
    out.push(act.send(`${command}${CRLF}`), ...this.arm(now, this.limits.replyTimeoutMs));
  }

  /** A method, so TypeScript does not narrow `phase` across the calls that change it. */
  private done(): boolean {
    return this.phase === 'done';
  }

  private waitingFor(): string {
    switch (this.phase) {
      case 'greeting':
        return 'the greeting';
      case 'stls':
        return 'the reply to STLS';
      default:
        return 'the reply to CAPA';
    }
  }

  /** Close with an -ERR for the local client and, when the server is listening, QUIT. */
  private fail(
    out: ClientAction[],
    reason: string,
    code: 'SYS/TEMP' | 'SYS/PERM',
    text: string,
  ): ClientAction[] {
    this.close(out, reason, err_(code, text));
    return out;
  }

  private close(out: ClientAction[], reason: string, toLocal: string): void {
    this.phase = 'done';
    out.push({
      type: 'close',
      reason,
      toLocal: enc(toLocal),
      ...(this.polite ? { data: enc(QUIT) } : {}),
    });
  }

  private arm(now: number, ms: number): ClientAction[] {
    if (!(ms > 0)) {
      this.deadline = Number.POSITIVE_INFINITY;
      return [];
    }
    this.deadline = now + ms;
    return [act.timer(this.deadline)];
  }
}

/** RFC 3206 response codes: SYS/TEMP (try again later), SYS/PERM (it will not work). */
const err_ = (code: 'SYS/TEMP' | 'SYS/PERM', text: string) => `-ERR [${code}] ${text}${CRLF}`;
const enc = fromLatin1;

/** The POP3 dialect's client side (`dialect.client`). */
export const client: ClientDialect<Pop3ClientOptions> = {
  options: {},
  limits,
  create: (context: ClientContext<Pop3ClientOptions>) =>
    new Pop3ClientSession(readLimits(limits, context.limits)),
};
