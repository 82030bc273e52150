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
  act,
  type ClientAction,
  type ClientContext,
  type ClientDialect,
  type ClientDialectSession,
  fromLatin1,
  type LimitSpec,
  LineFramer,
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
 * What the local client gets as its greeting: the server's, without a CAPABILITY response code
 * (it advertised STARTTLS and LOGINDISABLED, both wrong for a client that never sees TLS; a
 * client that wants capabilities asks, and the answer then comes through TLS).
 */
function localGreeting(rest: string): string {
  const text = capabilityCode(rest) === null ? rest : responseCode(rest)!.after;
  return `* OK ${text === '' ? 'Server ready.' : text}${CRLF}`;
}

const bye = (code: 'UNAVAILABLE' | 'PRIVACYREQUIRED', text: string) =>
  `* BYE [${code}] ${text}${CRLF}`;

export class ImapClientSession implements ClientDialectSession {
  private phase: Phase = 'greeting';
  private readonly framer: LineFramer;
  private deadline = Number.POSITIVE_INFINITY;
  private lines = 0;
  private capabilities: string[] | null = null;
  private greeting = '';
  /** A valid greeting came and the server has not said BYE: LOGOUT is worth sending. */
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
          return this.fail(out, 'UNAVAILABLE', 'server response line too long', 'Bad response.');
        }
        if (++this.lines > this.limits.maxResponseLines) {
          return this.fail(out, 'UNAVAILABLE', 'too many server response lines', 'Bad response.');
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
        act.log('error', `imap client internal error: ${message}`),
        { type: 'close', reason: 'internal error', toLocal: enc(bye('UNAVAILABLE', 'Error.')) },
      ];
    }
  }

  timer(now: number): ClientAction[] {
    // No deadline (timeouts of 0): a stray call must not ask for a timer at infinity.
    if (this.phase === 'done' || this.deadline === Number.POSITIVE_INFINITY) return [];
    if (now < this.deadline) return [act.timer(this.deadline)];
    const what = this.phase === 'greeting' ? 'the greeting' : `the reply to ${this.command()}`;
    return this.fail([], 'UNAVAILABLE', `timeout waiting for ${what}`, 'Server timeout.');
  }

  eof(_now: number): ClientAction[] {
    if (this.phase === 'done') return [];
    this.polite = false;
    const what = this.phase === 'greeting' ? 'the greeting' : `the reply to ${this.command()}`;
    return this.fail([], 'UNAVAILABLE', `server closed the connection before ${what}`, 'Closed.');
  }

  private line(text: string, now: number, out: ClientAction[]): void {
    const r = parseResponse(text);
    if (r.kind === 'untagged' && r.word === 'BYE') {
      // The server is leaving: its own BYE is the local client's best explanation.
      this.polite = false;
      this.close(out, `server said BYE${this.phase === 'greeting' ? ' as its greeting' : ''}`, {
        toLocal: `* BYE ${r.rest === '' ? 'Server closing.' : r.rest}${CRLF}`,
      });
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
    this.greeting = localGreeting(r.rest);
    const caps = capabilityCode(r.rest);
    if (caps === null) {
      this.send(out, now, 'capability', `${CAPABILITY_TAG} CAPABILITY`);
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
    // The go-ahead. Whatever the server sent after it before TLS is plaintext that would be
    // taken as coming through TLS: the response-injection attack (NO STARTTLS study).
    const after = this.framer.pending;
    this.phase = 'done';
    if (after > 0) {
      this.polite = false;
      this.close(
        out,
        `response injection: ${after} bytes after the STARTTLS go-ahead, before TLS`,
        { toLocal: bye('PRIVACYREQUIRED', 'TLS refused: the server sent data before TLS.') },
      );
      return;
    }
    out.push({
      type: 'starttls',
      toLocal: enc(this.greeting),
      state: { capabilities: this.capabilities ?? [] },
    });
  }

  /** STARTTLS if the capabilities offer it, else close. */
  private startTls(out: ClientAction[], now: number): void {
    if (!hasStartTls(this.capabilities ?? [])) {
      this.fail(out, 'PRIVACYREQUIRED', 'server does not offer STARTTLS', 'TLS unavailable.');
      return;
    }
    this.send(out, now, 'starttls', `${STARTTLS_TAG} STARTTLS`);
  }

  private send(out: ClientAction[], now: number, phase: Phase, command: string): void {
    this.phase = phase;
    out.push(act.command(upperAscii(command.split(' ')[1]!), false, KNOWN));
    out.push(act.send(`${command}${CRLF}`), ...this.arm(now, this.limits.replyTimeoutMs));
  }

  /** A method, so TypeScript does not narrow `phase` across the calls that change it. */
  private done(): boolean {
    return this.phase === 'done';
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
    this.close(out, reason, { toLocal: bye(code, text) });
    return out;
  }

  private close(out: ClientAction[], reason: string, opts: { toLocal: string }): void {
    this.phase = 'done';
    out.push({
      type: 'close',
      reason,
      toLocal: enc(opts.toLocal),
      ...(this.polite ? { data: enc(LOGOUT) } : {}),
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

const KNOWN: ReadonlySet<string> = new Set(['CAPABILITY', 'STARTTLS']);
const enc = fromLatin1;

/** The IMAP dialect's client side (`dialect.client`). */
export const client: ClientDialect<ImapClientOptions> = {
  options: {},
  limits,
  create: (context: ClientContext<ImapClientOptions>) =>
    new ImapClientSession(readLimits(limits, context.limits)),
};
