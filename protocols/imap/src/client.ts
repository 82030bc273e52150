// RFC 9051 section 7.1 (greeting: OK, PREAUTH or BYE), 7.2.2 (CAPABILITY) and 6.2.1 (STARTTLS),
// RFC 3501 section 6.2.1, RFC 2595 section 3.1 (STARTTLS only in the not-authenticated state;
// what was learnt before TLS is stale after it): the CLIENT side of the IMAP preamble, for the
// proxy's client role (issue 18). Sans-I/O: the server's bytes in, actions out.
//
// Theory of operation: the server's bytes are cut into lines by the kit's LineFramer (a line is
// bounded by `maxLineLength`); each line is one response, judged by this table. Literals in
// server data are not followed: before authentication a server only sends status and
// CAPABILITY responses, which carry none.
//
//   phase      | server line                               | then
//   -----------+-------------------------------------------+--------------------------------------
//   greeting   | * OK [CAPABILITY ... STARTTLS ...] text   | send `a2 STARTTLS` -> starttls
//              | * OK [CAPABILITY ...] (no STARTTLS)       | close: not offered
//              | * OK text                                 | send `a1 CAPABILITY` -> capability
//              | * PREAUTH (STARTTLS no longer allowed)    | close, LOGOUT
//              | * BYE, anything else                      | close
//   capability | * CAPABILITY ... / [CAPABILITY ...] code  | remember the list (the last one counts)
//              | other untagged (* OK, * NO, * ID, ...)    | ignored, counted
//              | a1 OK                                     | STARTTLS listed? send `a2 STARTTLS`
//              |                                           | -> starttls : close, LOGOUT
//              | a1 NO / BAD                               | close, LOGOUT
//   starttls   | other untagged                            | ignored, counted
//              | a2 OK                                     | bytes after it? close (injection)
//              |                                           | : starttls
//              | a2 NO / BAD                               | close, LOGOUT
//   any        | * BYE                                     | close (the server is leaving)
//              | +, another tag, a bad line, too long      | close
//   done       | (ignored)                                 |
//
// The timer bounds each wait as a whole (the greeting, then each reply), not the silence
// between reads: a server dripping one octet a second cannot hold the local client forever.
import {
  type ClientAction,
  type ClientContext,
  type ClientDialect,
  type LimitSpec,
  type LineClientReplies,
  LineClientSession,
  readLimits,
  upperAscii,
} from '@tlsproxy/dialect-kit';

/** The IMAP client has no options: what it does is fixed by the RFCs. */
export type ImapClientOptions = Record<string, never>;

type LimitName = 'maxLineLength' | 'maxResponseLines' | 'greetingTimeoutMs' | 'replyTimeoutMs';

const limits: Record<LimitName, LimitSpec> = {
  maxLineLength: {
    default: 8192,
    unit: 'bytes',
    phase: 'preamble',
    description:
      'Longest server response line in octets (CRLF not counted); longer: close, LOGOUT.',
    source: 'RFC 7162 section 4 (8192 octets); Dovecot MAX_IMAP_LINE 8192',
  },
  maxResponseLines: {
    default: 100,
    unit: 'count',
    phase: 'preamble',
    description: 'Server response lines before the STARTTLS go-ahead, greeting included.',
    source: 'tlsproxy: Dovecot sends 3 (greeting, tagged OK to STARTTLS, or with CAPABILITY 4)',
  },
  greetingTimeoutMs: {
    default: 30_000,
    unit: 'ms',
    phase: 'preamble',
    description: 'Wait for the server greeting; then close. 0 disables.',
    source: 'tlsproxy: Dovecot and Cyrus greet at once; a waiting mail client gives up in ~60 s',
  },
  replyTimeoutMs: {
    default: 30_000,
    unit: 'ms',
    phase: 'preamble',
    description: 'Wait for the tagged reply to CAPABILITY or STARTTLS; then close. 0 disables.',
    source: 'tlsproxy: both are answered at once by real servers',
  },
};

type Limits = { [K in LimitName]: number };
type Phase = 'greeting' | 'capability' | 'starttls' | 'done';

const CAPABILITY_TAG = 'a1';
const STARTTLS_TAG = 'a2';
const LOGOUT = `a3 LOGOUT\r\n`;
const CRLF = '\r\n';

/** One server response line, parsed only as far as the client needs. */
type Response =
  | { kind: 'untagged'; word: string; rest: string }
  | { kind: 'tagged'; tag: string; status: string; rest: string }
  | { kind: 'continuation' }
  | { kind: 'bad' };

// tag = 1*<any ASTRING-CHAR except "+"> (RFC 9051 section 9)
const TAG = /^[\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c-\x7e]+$/;

function parseResponse(line: string): Response {
  if (line.startsWith('+')) return { kind: 'continuation' };
  const sp = line.indexOf(' ');
  const head = sp < 0 ? line : line.slice(0, sp);
  const tail = sp < 0 ? '' : line.slice(sp + 1);
  const sp2 = tail.indexOf(' ');
  const word = upperAscii(sp2 < 0 ? tail : tail.slice(0, sp2));
  const rest = sp2 < 0 ? '' : tail.slice(sp2 + 1);
  if (word === '') return { kind: 'bad' };
  if (head === '*') return { kind: 'untagged', word, rest };
  if (!TAG.test(head)) return { kind: 'bad' };
  return { kind: 'tagged', tag: head, status: word, rest };
}

/** A resp-text's leading `[CODE ...]`: its text and what follows it, or null. */
function responseCode(rest: string): { code: string; after: string } | null {
  if (!rest.startsWith('[')) return null;
  const end = rest.indexOf(']');
  if (end < 0) return null;
  return { code: rest.slice(1, end), after: rest.slice(end + 1).replace(/^ /, '') };
}

/** The capability list of a `[CAPABILITY ...]` code in `rest`, or null. */
function capabilityCode(rest: string): string[] | null {
  const rc = responseCode(rest);
  if (rc === null) return null;
  const words = rc.code.split(' ').filter((w) => w !== '');
  if (words.length === 0 || upperAscii(words[0]!) !== 'CAPABILITY') return null;
  return words.slice(1);
}

const hasStartTls = (caps: readonly string[]) => caps.some((c) => upperAscii(c) === 'STARTTLS');

/**
 * What the local client gets as its greeting, and as the server's BYE: our own words, never the
 * server's. Its pre-TLS text is unauthenticated (a man in the middle writes it), and the local
 * client would read it after TLS as the verified server's: an `[ALERT]` it must show the user, a
 * `[REFERRAL]` to another server, capabilities (RFC 9051 section 6.2.1: discard what was learnt
 * before TLS). Without a CAPABILITY code a client asks, and the answer comes through TLS. The
 * server's own text is in the log (the close's reason).
 */
const LOCAL_GREETING = `* OK Server ready.${CRLF}`;
const SERVER_BYE = `* BYE [UNAVAILABLE] Server closing.${CRLF}`;

const bye = (code: 'UNAVAILABLE' | 'PRIVACYREQUIRED', text: string) =>
  `* BYE [${code}] ${text}${CRLF}`;

export class ImapClientSession extends LineClientSession<Phase> {
  private capabilities: string[] | null = null;

  constructor(limits: Limits) {
    super('imap', LOGOUT, limits);
  }

  protected replies(): LineClientReplies {
    return REPLIES;
  }

  protected waitingFor(): string {
    return this.phase === 'greeting' ? 'the greeting' : `the reply to ${this.command()}`;
  }

  protected line(text: string, now: number, out: ClientAction[]): void {
    const r = parseResponse(text);
    if (r.kind === 'untagged' && r.word === 'BYE') {
      // The server is leaving. Its words go to the log, not to the local client (they are
      // pre-TLS: a forged `[REFERRAL]` would send the client elsewhere).
      this.polite = false;
      this.close(
        out,
        `server said BYE${this.phase === 'greeting' ? ' as its greeting' : ''}: ${JSON.stringify(r.rest.slice(0, 200))}`,
        SERVER_BYE,
      );
      return;
    }
    switch (this.phase) {
      case 'greeting':
        this.onGreeting(r, now, out);
        return;
      case 'capability':
      case 'starttls':
        this.onReply(r, now, out);
        return;
    }
  }

  private onGreeting(r: Response, now: number, out: ClientAction[]): void {
    if (r.kind === 'untagged' && r.word === 'PREAUTH') {
      // RFC 2595 section 3.1 / RFC 9051 section 6.2.1: STARTTLS only before authentication.
      this.polite = true;
      this.fail(
        out,
        'PRIVACYREQUIRED',
        'server greeted PREAUTH: STARTTLS is not possible',
        'TLS unavailable.',
      );
      return;
    }
    if (r.kind !== 'untagged' || r.word !== 'OK') {
      this.fail(out, 'UNAVAILABLE', 'server greeting is not "* OK"', 'Bad greeting.');
      return;
    }
    this.polite = true;
    const caps = capabilityCode(r.rest);
    if (caps === null) {
      this.sendCommand(out, now, 'capability', `${CAPABILITY_TAG} CAPABILITY`);
      return;
    }
    this.capabilities = caps;
    this.startTls(out, now);
  }

  private onReply(r: Response, now: number, out: ClientAction[]): void {
    if (r.kind === 'untagged') {
      if (r.word === 'CAPABILITY') this.capabilities = r.rest.split(' ').filter((w) => w !== '');
      else if (r.word === 'OK') this.capabilities = capabilityCode(r.rest) ?? this.capabilities;
      return;
    }
    const tag = this.phase === 'capability' ? CAPABILITY_TAG : STARTTLS_TAG;
    if (r.kind !== 'tagged' || r.tag !== tag || !['OK', 'NO', 'BAD'].includes(r.status)) {
      this.fail(out, 'UNAVAILABLE', `unexpected reply to ${this.command()}`, 'Bad response.');
      return;
    }
    if (r.status !== 'OK') {
      const refused = this.phase === 'starttls';
      this.fail(
        out,
        refused ? 'PRIVACYREQUIRED' : 'UNAVAILABLE',
        `server answered ${this.command()} with ${r.status}`,
        refused ? 'TLS refused by the server.' : 'Bad response.',
      );
      return;
    }
    if (this.phase === 'capability') {
      this.capabilities = capabilityCode(r.rest) ?? this.capabilities;
      this.startTls(out, now);
      return;
    }
    this.goAhead(out, 'STARTTLS', LOCAL_GREETING, { capabilities: this.capabilities ?? [] });
  }

  /** STARTTLS if the capabilities offer it, else close. */
  private startTls(out: ClientAction[], now: number): void {
    if (!hasStartTls(this.capabilities ?? [])) {
      this.fail(out, 'PRIVACYREQUIRED', 'server does not offer STARTTLS', 'TLS unavailable.');
      return;
    }
    this.sendCommand(out, now, 'starttls', `${STARTTLS_TAG} STARTTLS`);
  }

  private sendCommand(out: ClientAction[], now: number, phase: Phase, command: string): void {
    this.send(out, now, phase, command, upperAscii(command.split(' ')[1]!), KNOWN);
  }

  private command(): string {
    return this.phase === 'capability' ? 'CAPABILITY' : 'STARTTLS';
  }

  /** Close with a BYE for the local client and, when the server is still listening, LOGOUT. */
  private fail(
    out: ClientAction[],
    code: 'UNAVAILABLE' | 'PRIVACYREQUIRED',
    reason: string,
    text: string,
  ): ClientAction[] {
    this.close(out, reason, bye(code, text));
    return out;
  }
}

const KNOWN: ReadonlySet<string> = new Set(['CAPABILITY', 'STARTTLS']);

/** What the local client is told when the shared skeleton ends the session. */
const REPLIES: LineClientReplies = {
  badResponse: bye('UNAVAILABLE', 'Bad response.'),
  timeout: bye('UNAVAILABLE', 'Server timeout.'),
  closed: bye('UNAVAILABLE', 'Closed.'),
  internal: bye('UNAVAILABLE', 'Error.'),
  injection: bye('PRIVACYREQUIRED', 'TLS refused: the server sent data before TLS.'),
};

/** The IMAP dialect's client side (`dialect.client`). */
export const client: ClientDialect<ImapClientOptions> = {
  options: {},
  limits,
  create: (context: ClientContext<ImapClientOptions>) =>
    new ImapClientSession(readLimits(limits, context.limits)),
};
