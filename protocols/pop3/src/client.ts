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
  type ClientAction,
  type ClientContext,
  type ClientDialect,
  commandWord,
  type LimitSpec,
  type LineClientReplies,
  LineClientSession,
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

/**
 * What the local client gets as its greeting: our own words, never the server's — its pre-TLS
 * text is unauthenticated (a man in the middle writes it) and the local client would take it as
 * the verified server's. Only an APOP timestamp (RFC 1939 section 7: the last `<…@…>`, as a
 * msg-id) is carried over, checked, since APOP digests it: a forged one can only make APOP fail.
 */
function localGreeting(serverGreeting: string): string {
  const stamps = serverGreeting.match(APOP_TIMESTAMP);
  const stamp = stamps?.[stamps.length - 1];
  return `+OK Server ready.${stamp === undefined ? '' : ` ${stamp}`}${CRLF}`;
}
const APOP_TIMESTAMP = /<[\x21-\x3b\x3d\x3f-\x7e]{1,120}@[\x21-\x3b\x3d\x3f-\x7e]{1,120}>/g;

export class Pop3ClientSession extends LineClientSession<Phase> {
  private greeting = '';
  private readonly capabilities: string[] = [];

  constructor(private readonly limits: Limits) {
    super('pop3', QUIT, limits);
  }

  protected replies(): LineClientReplies {
    return REPLIES;
  }

  protected line(text: string, now: number, out: ClientAction[]): void {
    switch (this.phase) {
      case 'greeting': {
        const s = status(text);
        if (s === '-ERR') {
          // The server refuses us (too many connections...): its words go to the log, ours to
          // the local client (they are pre-TLS).
          this.close(
            out,
            `server greeted -ERR: ${JSON.stringify(text.slice(0, 200))}`,
            err_('SYS/TEMP', 'Server unavailable.'),
          );
        } else if (s === '+OK') {
          this.polite = true;
          this.greeting = localGreeting(text);
          this.sendCommand(out, now, 'capa', 'CAPA');
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
            this.sendCommand(out, now, 'stls', 'STLS');
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
    this.goAhead(out, 'STLS', this.greeting, { capabilities: [...this.capabilities] });
  }

  private sendCommand(out: ClientAction[], now: number, phase: Phase, command: string): void {
    this.send(out, now, phase, command, command, KNOWN);
  }

  protected waitingFor(): string {
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
}

/** RFC 3206 response codes: SYS/TEMP (try again later), SYS/PERM (it will not work). */
const err_ = (code: 'SYS/TEMP' | 'SYS/PERM', text: string) => `-ERR [${code}] ${text}${CRLF}`;

/** What the local client is told when the shared skeleton ends the session. */
const REPLIES: LineClientReplies = {
  badResponse: err_('SYS/TEMP', 'Bad response.'),
  timeout: err_('SYS/TEMP', 'Server timeout.'),
  closed: err_('SYS/TEMP', 'Closed.'),
  internal: err_('SYS/TEMP', 'Error.'),
  injection: err_('SYS/PERM', 'TLS refused: the server sent data before TLS.'),
};

/** The POP3 dialect's client side (`dialect.client`). */
export const client: ClientDialect<Pop3ClientOptions> = {
  options: {},
  limits,
  create: (context: ClientContext<Pop3ClientOptions>) =>
    new Pop3ClientSession(readLimits(limits, context.limits)),
};
