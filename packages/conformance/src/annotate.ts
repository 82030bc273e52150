// Placeholders for a freshly recorded server line, so a recording from Dovecot judges another
// implementation on structure (tag, status, response code, line ends) rather than on wording.
// One small rule table per protocol; anything no rule recognises stays byte-exact.
import { escapeBytes, fromLatin1, latin1 } from './bytes.js';

/** One annotation rule: a note for a recorded line, or undefined. */
export type Rule = (line: string) => string | undefined;

const esc = (s: string): string => escapeBytes(fromLatin1(s));
const ph = (cls: string, recorded: string, constraints = ''): string =>
  `\${${cls}${constraints}:${esc(recorded).replace(/\\x20$/, ' ')}}`;

/** Capability lists before TLS must offer STARTTLS and no SASL mechanism (RFC 3501 6.2.1). */
const PRE_TLS_CAPS = ' +STARTTLS !AUTH=*';

// RFC 9051 section 7.1: status responses; 7.2.2 CAPABILITY; RFC 2971 ID.
const imap: Rule[] = [
  // Untagged informational status lines (not the greeting, not BYE): clients ignore what they do
  // not know (RFC 9051 section 7.1), so another server may leave them out.
  (l) => (/^\* (OK|NO|BAD) \[ALERT\]/.test(l) ? `\${untagged:${esc(l)}}` : undefined),
  (l) => {
    const m = /^(\S+) (OK|NO|BAD|BYE|PREAUTH) (?:\[([A-Z-]+)(?: ([^\]]*))?\] )?(.*)\r\n$/.exec(l);
    if (!m) return undefined;
    const [, tag, status, code, args, text] = m;
    let out = `${esc(tag!)} ${status} `;
    if (code !== undefined) {
      out +=
        args === undefined
          ? `[${code}] `
          : code === 'CAPABILITY'
            ? `[CAPABILITY ${ph('words', args, PRE_TLS_CAPS)}] `
            : `[${code} ${ph('text', args)}] `;
    }
    return `${out}${ph('text', text!)}\\r\\n`;
  },
  (l) => {
    const m = /^\* CAPABILITY (.*)\r\n$/.exec(l);
    return m ? `* CAPABILITY ${ph('words', m[1]!, PRE_TLS_CAPS)}\\r\\n` : undefined;
  },
  (l) => {
    const m = /^\* ID (.*)\r\n$/.exec(l);
    return m ? `* ID ${ph('text', m[1]!)}\\r\\n` : undefined;
  },
  (l) => {
    const m = /^\+ (.*)\r\n$/.exec(l);
    return m ? `+ ${ph('text', m[1]!)}\\r\\n` : undefined;
  },
];

// RFC 1939 / RFC 2449 (CAPA) / RFC 2595 (STLS): +OK / -ERR [RESP-CODE] text.
const pop3: Rule[] = [
  (l) => {
    const m = /^(\+OK|-ERR)(?: (\[[A-Z/-]+\] )?(.*))?\r\n$/.exec(l);
    if (!m) return undefined;
    // The text is optional (RFC 1939 section 3): Dovecot's CAPA says "+OK", others "+OK Capability
    // list follows" (RFC 2449 section 5), so even an empty one is a placeholder.
    if (m[3] === undefined) return `${m[1]}${ph('text', '')}\\r\\n`;
    return `${m[1]} ${m[2] ?? ''}${ph('text', m[3])}\\r\\n`;
  },
];

// RFC 5321 section 4.2 reply lines, RFC 3463 enhanced codes; the greeting's host is text too.
const smtp: Rule[] = [
  (l) => {
    const m = /^(\d{3})([ -])(\d\.\d{1,3}\.\d{1,3} )?(.*)\r\n$/.exec(l);
    if (!m) return undefined;
    const keyword = /^[A-Z0-9-]+( |$)/.test(m[4]!) && m[2] === '-';
    // EHLO keyword lines (PIPELINING, SIZE 10240000) are matched exactly: clients act on them.
    if (keyword && !m[4]!.includes('.')) return undefined;
    return `${m[1]}${m[2]}${m[3] ?? ''}${ph('text', m[4]!)}\\r\\n`;
  },
];

// Any other line protocol (NNTP, ManageSieve, FTP, a third-party dialect): the common reply
// shapes keep their structure (code, status word) and lose their wording. Lines of no known
// shape stay byte-exact, as before.
const generic: Rule[] = [
  // RFC 3977 / RFC 959 / RFC 5321 style: a three-digit code, then text.
  (l) => {
    const m = /^(\d{3})([ -])(.*)\r\n$/.exec(l);
    return m && m[3]!.length > 0 ? `${m[1]}${m[2]}${ph('text', m[3]!)}\\r\\n` : undefined;
  },
  // RFC 1939 / RFC 5804 style: a status word, then text.
  (l) => {
    const m = /^(\+OK|-ERR|OK|NO|BYE) (.+)\r\n$/.exec(l);
    return m ? `${m[1]} ${ph('text', m[2]!)}\\r\\n` : undefined;
  },
];

/** A Map, so a protocol name from the command line can never select `constructor`. */
export const ANNOTATORS: ReadonlyMap<string, readonly Rule[]> = new Map([
  ['imap', imap],
  ['pop3', pop3],
  ['smtp', smtp],
]);

/**
 * Transcript text for one server line: the first rule that applies, or exact bytes. A protocol
 * without its own rules gets the generic ones; `undefined` (no --annotate) leaves lines exact.
 */
export function annotateLine(protocol: string | undefined, line: Uint8Array): string {
  const text = latin1(line);
  const rules = protocol === undefined ? [] : (ANNOTATORS.get(protocol) ?? generic);
  for (const rule of rules) {
    const out = rule(text);
    if (out !== undefined) return out;
  }
  return escapeBytes(line);
}
