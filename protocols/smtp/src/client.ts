// RFC 5321 section 3.1 (session initiation: 220, or 554 and wait for QUIT), 4.2 (reply lines,
// multi-line replies), 4.1.1.1 (EHLO) and 4.5.3.2 (timeouts); RFC 3207 section 4 (STARTTLS: 220
// go-ahead, 454 / 501 refusals): the CLIENT side of the SMTP preamble, for the proxy's client role
// (issue 18). Sans-I/O: the server's bytes in, actions out.
//
// Theory of operation: the server's bytes are cut into lines by the kit's LineFramer (a line is
// bounded by `maxLineLength`); lines are gathered into replies (`250-...` continues, `250 ...` or
// `250` ends, one code per reply), and each complete reply is judged by this table.
//
//   phase    | server reply                  | then
//   ---------+-------------------------------+-----------------------------------------------
//   greeting | 220                           | send EHLO <hostname> -> ehlo
//            | 554 (no service, RFC 5321 3.1)| close, QUIT
//            | 421                           | close
//   ehlo     | 250 listing STARTTLS          | send STARTTLS -> starttls
//            | 250 without it, 5yz (no ESMTP)| tls 'may': plaintext (warn log); 'encrypt': close, QUIT
//            | 421                           | close
//   starttls | 220                           | bytes after it? close (injection) : starttls
//            | 454, 501, other 4yz/5yz       | close, QUIT (no fallback, even with 'may')
//            | 421                           | close
//   any      | another code, a line that is  | close (QUIT once greeted)
//            | no reply, too long, too many  |
//   done     | (ignored)                     |
//
// The timer bounds each wait as a whole (the greeting, then each reply), not the silence
// between reads: a server dripping one octet a second cannot hold the local client forever.
import {
  act,
  type ClientAction,
  type ClientContext,
  type ClientDialect,
  commandWord,
  fromLatin1,
  type LimitSpec,
  type LineClientReplies,
  LineClientSession,
  type OptionSpec,
  readLimits,
  readOptions,
} from '@tlsproxy/dialect-kit';

export interface SmtpClientOptions {
  /** Like Postfix's smtp_tls_security_level: 'encrypt' (TLS or nothing) or 'may'. */
  tls: 'encrypt' | 'may';
}

const options: Record<keyof SmtpClientOptions, OptionSpec> = {
  tls: {
    type: 'string',
    default: 'encrypt',
    description:
      'As Postfix smtp_tls_security_level: "encrypt" closes when the server does not offer STARTTLS; "may" then goes on in plaintext (warn log). A refused STARTTLS closes either way.',
    oneOf: ['encrypt', 'may'],
    problem: 'expected "encrypt" or "may"',
  },
};

type LimitName = 'maxLineLength' | 'maxReplyLines' | 'greetingTimeoutMs' | 'replyTimeoutMs';

const limits: Record<LimitName, LimitSpec> = {
  maxLineLength: {
    default: 2048,
    unit: 'bytes',
    phase: 'preamble',
    description: 'Longest server reply line in octets (CRLF not counted); longer: close.',
    source: 'RFC 5321 section 4.5.3.1.5 (512 octets with CRLF), with room for long banners',
  },
  maxReplyLines: {
    default: 100,
    unit: 'count',
    phase: 'preamble',
    description:
      'Lines in one reply (the greeting, kept for the local client when `tls: may` relays without TLS, or the EHLO reply); more: close.',
    source: 'tlsproxy: Postfix sends 1 greeting line and about 10 EHLO lines',
  },
  greetingTimeoutMs: {
    default: 300_000,
    unit: 'ms',
    phase: 'preamble',
    description: 'Wait for the complete 220 greeting; then close. 0 disables.',
    source: 'RFC 5321 section 4.5.3.2.1 (initial 220: 5 minutes); Postfix smtp_helo_timeout 300s',
  },
  replyTimeoutMs: {
    default: 300_000,
    unit: 'ms',
    phase: 'preamble',
    description: 'Wait for the complete reply to EHLO or STARTTLS; then close. 0 disables.',
    source: 'Postfix smtp_helo_timeout and smtp_starttls_timeout (300s)',
  },
};

type Limits = { [K in LimitName]: number };
type Phase = 'greeting' | 'ehlo' | 'starttls' | 'done';

const CRLF = '\r\n';
const QUIT = `QUIT${CRLF}`;
const KNOWN: ReadonlySet<string> = new Set(['EHLO', 'STARTTLS']);
/** Octets of each EHLO line kept for `starttls.state` (logs). */
const STATE_CHARS = 64;

// Reply-line = Reply-code [ ( "-" / SP ) textstring ] CRLF; Reply-code = %x32-35 %x30-35 %x30-39
// (RFC 5321 section 4.2).
const REPLY_LINE = /^([2-5][0-5][0-9])(?:([ -])(.*))?$/s;

/** Our EHLO argument: a domain, or an address literal for a bare IPv4/IPv6 address. */
export function ehloName(hostname: string): string {
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(hostname)) return `[${hostname}]`;
  if (/^[0-9a-f:.]+$/i.test(hostname) && hostname.includes(':')) return `[IPv6:${hostname}]`;
  return hostname.replace(/[^A-Za-z0-9.-]/g, '') || 'localhost';
}

export class SmtpClientSession extends LineClientSession<Phase> {
  /** The reply being gathered: its code and lines (the greeting's, for the local client when
   * `tls: may` relays without TLS). */
  private code: string | null = null;
  private lines: string[] = [];
  private greeting = '';
  private extensions: string[] = [];
  private readonly host: string;
  private readonly local: LineClientReplies;

  constructor(
    private readonly options: SmtpClientOptions,
    private readonly limits: Limits,
    hostname: string,
  ) {
    super('smtp', QUIT, limits);
    this.host = ehloName(hostname);
    const r = (enhanced: string, text: string) => reply421(this.host, enhanced, text);
    this.local = {
      badResponse: r('4.5.0', 'Error: bad reply from the server'),
      timeout: r('4.4.2', 'Error: timeout exceeded'),
      closed: r('4.4.2', 'Error: lost connection with the server'),
      internal: r('4.3.0', 'Error: internal error'),
      injection: r('4.7.0', 'Error: TLS refused, the server sent data before TLS'),
    };
  }

  protected replies(): LineClientReplies {
    return this.local;
  }

  /** One reply line: gather it; a complete reply goes to `reply`. */
  protected line(text: string, now: number, out: ClientAction[]): void {
    const m = REPLY_LINE.exec(text);
    if (m === null || (this.code !== null && m[1] !== this.code)) {
      this.fail(
        out,
        `not an SMTP reply while waiting for ${this.waitingFor()}`,
        '4.5.0',
        'Error: bad reply from the server',
      );
      return;
    }
    if (this.lines.length >= this.limits.maxReplyLines) {
      this.fail(out, 'too many reply lines', '4.5.0', 'Error: bad reply from the server');
      return;
    }
    this.code = m[1]!;
    // Only the greeting is kept whole (for the local client); of the EHLO reply, its keywords.
    if (this.phase === 'greeting') this.lines.push(text);
    // (cut to STATE_CHARS: they are for logs, and a cut at 64 cannot make a first word STARTTLS).
    else if (this.phase === 'ehlo')
      this.lines.push(this.lines.length === 0 ? '' : (m[3] ?? '').slice(0, STATE_CHARS));
    else this.lines.push('');
    if (m[2] === '-') return;
    const code = this.code;
    const lines = this.lines;
    this.code = null;
    this.lines = [];
    this.reply(code, lines, now, out);
  }

  private reply(code: string, lines: string[], now: number, out: ClientAction[]): void {
    if (code === '421') {
      // RFC 5321 section 3.8: the server is closing the channel.
      this.polite = false;
      this.fail(
        out,
        `server said 421 while waiting for ${this.waitingFor()}`,
        '4.3.2',
        'Error: the server is not available',
      );
      return;
    }
    switch (this.phase) {
      case 'greeting':
        if (code === '220') {
          this.polite = true;
          this.greeting = lines.map((l) => `${l}${CRLF}`).join('');
          this.sendCommand(out, now, 'ehlo', `EHLO ${this.host}`);
        } else if (code === '554') {
          // RFC 5321 section 3.1: after a 554 greeting the server waits for QUIT.
          this.polite = true;
          this.fail(
            out,
            'server refused the connection (554 greeting)',
            '4.3.2',
            'Error: the server refused the connection',
          );
        } else {
          this.fail(
            out,
            `server greeting is ${code}, not 220`,
            '4.5.0',
            'Error: bad greeting from the server',
          );
        }
        return;
      case 'ehlo':
        this.onEhlo(code, lines, out, now);
        return;
      case 'starttls':
        this.onStartTls(code, out);
        return;
    }
  }

  private onEhlo(code: string, lines: string[], out: ClientAction[], now: number): void {
    if (code === '250') {
      this.extensions = lines.slice(1);
      if (this.extensions.some((e) => commandWord(e) === 'STARTTLS')) {
        this.sendCommand(out, now, 'starttls', 'STARTTLS');
        return;
      }
      this.notOffered(out, 'server does not offer STARTTLS');
      return;
    }
    if (code[0] === '5') {
      // No ESMTP (RFC 5321 section 4.1.4: a server may refuse EHLO): no STARTTLS either.
      this.notOffered(out, `server refused EHLO (${code}), so it does not offer STARTTLS`);
      return;
    }
    this.fail(
      out,
      `server answered EHLO with ${code}`,
      '4.5.0',
      'Error: bad reply from the server',
    );
  }

  private notOffered(out: ClientAction[], reason: string): void {
    if (this.options.tls === 'may') {
      // Postfix's "may": opportunistic, and the operator asked for it. Never silent.
      this.phase = 'done';
      out.push(act.log('warn', `${reason}: going on WITHOUT TLS (tls: may)`), {
        type: 'plaintext',
        toLocal: enc(this.greeting),
        reason: `${reason} (tls: may)`,
      });
      return;
    }
    this.fail(out, reason, '4.7.0', 'Error: TLS unavailable, the server does not offer STARTTLS');
  }

  private onStartTls(code: string, out: ClientAction[]): void {
    if (code !== '220') {
      const known = code === '454' || code[0] === '4' || code[0] === '5';
      this.fail(
        out,
        known ? `server answered STARTTLS with ${code}` : `unexpected reply ${code} to STARTTLS`,
        '4.7.0',
        'Error: TLS refused by the server',
      );
      return;
    }
    // The local client's greeting is ours, never the server's pre-TLS one (unauthenticated: a
    // man in the middle writes it, and the local client would take it as the verified server's);
    // its EHLO then goes through TLS and gets the server's real extensions.
    this.goAhead(out, 'STARTTLS', `220 ${this.host} ESMTP Service ready${CRLF}`, {
      extensions: [...this.extensions],
    });
  }

  private sendCommand(out: ClientAction[], now: number, phase: Phase, command: string): void {
    this.send(out, now, phase, command, commandWord(command), KNOWN);
  }

  protected waitingFor(): string {
    switch (this.phase) {
      case 'greeting':
        return 'the greeting';
      case 'ehlo':
        return 'the reply to EHLO';
      default:
        return 'the reply to STARTTLS';
    }
  }

  /** Close with a 421 for the local client and, when the server is listening, QUIT. */
  private fail(
    out: ClientAction[],
    reason: string,
    enhanced: string,
    text: string,
  ): ClientAction[] {
    this.close(out, reason, reply421(this.host, enhanced, text));
    return out;
  }
}

/** RFC 5321 section 3.8 / 4.2.3: 421 closes the channel; RFC 3463 enhanced code; Postfix wording. */
const reply421 = (host: string, enhanced: string, text: string) =>
  `421 ${enhanced} ${host} ${text}${CRLF}`;
const enc = fromLatin1;

/** The SMTP dialect's client side (`dialect.client`). */
export const client: ClientDialect<Partial<SmtpClientOptions>> = {
  options,
  limits,
  create: (context: ClientContext<Partial<SmtpClientOptions>>) =>
    new SmtpClientSession(
      readOptions<SmtpClientOptions>(options, context.options),
      readLimits(limits, context.limits),
      context.hostname ?? '',
    ),
};
