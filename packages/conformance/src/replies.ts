// Reply classes and pre-TLS security rules per dialect (issue 17, item 3).
//
// The byte pattern of a transcript is exact outside its placeholders, but a placeholder such as
// `${any}` (an EHLO extension list, HTTP header fields, an XMPP stream header) can hide a whole
// extra reply, an `AUTH` line or a changed status. So a dialect with rules here is also judged
// reply by reply: its output is cut into replies (lines, SMTP reply groups, BER PDUs, XML
// elements, HTTP responses) and each reply's *class* (tagged OK/NO/BAD, +OK/-ERR, the SMTP
// code and its single/multi-line form, the LDAP message id, operation and result code, the XMPP
// element and its condition, the HTTP status) must equal the recorded reply's class at the same
// position: same number of replies, same classes. A dialect whose name has no entry here (a
// third-party one) is judged by the byte pattern alone.
//
// The security rules hold for every transcript: nothing the dialect writes before TLS may
// advertise or accept an authentication mechanism. A transcript recorded from a server that does
// so on purpose says `!allow auth-before-tls`.
//
// Pure functions over latin1 text (one char per octet): no state, nothing peer-controlled
// selects a handler except through a Map.

export interface Reply {
  /** Offsets in the output (latin1 text) this reply spans. */
  start: number;
  end: number;
  /** What a client acts on: equal classes are interchangeable replies. */
  cls: string;
}

export interface ReplyRules {
  /** Cut server output into replies; an incomplete tail is one reply of class `partial …`. */
  replies(output: string): Reply[];
  /** Whether a reply class refuses (for the `unavailable` reply of a starttls action). */
  refusal(cls: string): boolean;
  /** A reply that may follow a refusal because it ends the conversation (XMPP's stream end). */
  closing?(cls: string): boolean;
  /**
   * Authentication offered or accepted before TLS, in the dialect's output `output` (cut into
   * `replies`) answering the client bytes `client`: a description, or undefined.
   */
  authBeforeTls(output: string, replies: Reply[], client: string): string | undefined;
}

/** Lines, each with its line end (a tail without LF is a line too). */
function lines(text: string, from = 0): { start: number; end: number; text: string }[] {
  const out: { start: number; end: number; text: string }[] = [];
  let start = from;
  while (start < text.length) {
    const lf = text.indexOf('\n', start);
    const end = lf < 0 ? text.length : lf + 1;
    out.push({ start, end, text: text.slice(start, end).replace(/\r?\n$/, '') });
    start = end;
  }
  return out;
}

const tokens = (s: string): string[] => s.split(/\s+/).filter((w) => w !== '');

// ---- IMAP (RFC 9051 §7): `+` continuation, `* ...` untagged, `TAG OK|NO|BAD ...` tagged.

function imapClass(line: string): string {
  if (line.startsWith('+')) return 'continue';
  const m = /^(\S+) (\S+)/.exec(line);
  if (!m) return `line`;
  const word = m[2]!.toUpperCase();
  if (m[1] === '*') {
    if (/^[0-9]+$/.test(word)) return 'untagged data';
    return `untagged ${word}`;
  }
  return ['OK', 'NO', 'BAD'].includes(word) ? `tagged ${m[1]} ${word}` : `tagged ${m[1]} ?`;
}

/** Capability lists: `* CAPABILITY a b c` and `[CAPABILITY a b c]` response codes. */
function imapCapabilities(text: string): string[][] {
  const out: string[][] = [];
  for (const l of lines(text)) {
    const untagged = /^\* CAPABILITY (.*)$/i.exec(l.text);
    if (untagged) out.push(tokens(untagged[1]!));
    const code = /\[CAPABILITY ([^\]]*)\]/i.exec(l.text);
    if (code) out.push(tokens(code[1]!));
  }
  return out;
}

const imap: ReplyRules = {
  replies: (text) =>
    lines(text).map((l) => ({
      start: l.start,
      end: l.end,
      cls: text[l.end - 1] === '\n' ? imapClass(l.text) : `partial ${imapClass(l.text)}`,
    })),
  refusal: (cls) => / (NO|BAD)$/.test(cls) || cls === 'untagged BYE',
  authBeforeTls(text, replies, client) {
    // RFC 9051 §7.1.4: PREAUTH greets a client that is already authenticated.
    if (replies.some((r) => r.cls === 'untagged PREAUTH')) return 'greets with PREAUTH before TLS';
    for (const caps of imapCapabilities(text)) {
      const upper = caps.map((c) => c.toUpperCase());
      const auth = upper.find((c) => c.startsWith('AUTH='));
      if (auth) return `advertises ${auth} before TLS`;
      if (!upper.includes('LOGINDISABLED'))
        return 'a capability list without LOGINDISABLED before TLS (LOGIN is offered)';
    }
    const authTags = new Set<string>();
    for (const l of lines(client)) {
      const m = /^(\S+) (LOGIN|AUTHENTICATE)(?: |$)/i.exec(l.text);
      if (m) authTags.add(m[1]!);
    }
    for (const r of replies) {
      const m = /^tagged (\S+) OK$/.exec(r.cls);
      if (m && authTags.has(m[1]!)) return `accepts authentication before TLS (${m[1]} OK)`;
    }
    return undefined;
  },
};

// ---- POP3 (RFC 1939 §3, RFC 2449, RFC 5034): `+OK`/`-ERR` status lines, a multi-line body
// after `+OK` up to `.`, `+ ` SASL continuations.

const pop3: ReplyRules = {
  replies(text) {
    const out: Reply[] = [];
    const ls = lines(text);
    for (let i = 0; i < ls.length; i++) {
      const l = ls[i]!;
      const complete = text[l.end - 1] === '\n';
      const status = /^(\+OK|-ERR)(?:[ \r]|$)/.exec(l.text)?.[1];
      if (status === '+OK') {
        // A multi-line body: lines up to `.` that are not themselves status lines.
        let j = i + 1;
        while (j < ls.length && !/^(\+OK|-ERR|\+ |\+$)/.test(ls[j]!.text) && ls[j]!.text !== '.')
          j++;
        const body = j < ls.length && ls[j]!.text === '.' && j > i;
        if (body) {
          out.push({ start: l.start, end: ls[j]!.end, cls: '+OK multi' });
          i = j;
          continue;
        }
      }
      const cls = status ?? (l.text.startsWith('+') ? 'continue' : 'line');
      out.push({ start: l.start, end: l.end, cls: complete ? cls : `partial ${cls}` });
    }
    return out;
  },
  refusal: (cls) => cls === '-ERR',
  authBeforeTls(text, replies, client) {
    // RFC 1939 §7: a timestamp `<…@…>` in the greeting offers APOP.
    const greeting = replies[0] ? text.slice(replies[0].start, replies[0].end) : '';
    if (/^\+OK .*<[^<>\s]*@[^<>\s]*>/.test(greeting))
      return 'offers APOP (a greeting timestamp) before TLS';
    for (const r of replies) {
      if (r.cls !== '+OK multi') continue;
      for (const l of lines(text.slice(r.start, r.end)).slice(1)) {
        const [cap, ...args] = tokens(l.text.toUpperCase());
        if (cap === 'USER') return 'advertises USER before TLS';
        if (cap === 'SASL' && args.length > 0)
          return `advertises SASL ${args.join(' ')} before TLS`;
      }
    }
    // Replies answer commands in order; the greeting answers none.
    const commands = lines(client).map((l) => tokens(l.text)[0]?.toUpperCase() ?? '');
    const answers = replies.slice(1);
    for (let i = 0; i < answers.length && i < commands.length; i++) {
      const c = commands[i]!;
      const cls = answers[i]!.cls;
      if (!['USER', 'PASS', 'APOP', 'AUTH'].includes(c)) continue;
      if (c === 'AUTH' && cls === '+OK multi') {
        // AUTH without arguments lists mechanisms: an empty list offers nothing.
        const body = lines(text.slice(answers[i]!.start, answers[i]!.end)).slice(1, -1);
        if (body.length > 0) return 'lists SASL mechanisms before TLS';
        continue;
      }
      if (cls.startsWith('+OK') || cls === 'continue')
        return `accepts ${c} before TLS (${cls === 'continue' ? '+' : '+OK'})`;
    }
    return undefined;
  },
};

// ---- SMTP (RFC 5321 §4.2): replies are groups of `ddd-text` lines ending in a `ddd text` line.

const smtp: ReplyRules = {
  replies(text) {
    const out: Reply[] = [];
    let start = -1;
    let code = '';
    let n = 0;
    for (const l of lines(text)) {
      const m = /^([0-9]{3})([- ]|$)/.exec(l.text);
      const complete = text[l.end - 1] === '\n';
      if (!m) {
        if (start >= 0) out.push({ start, end: l.start, cls: `partial ${code}` });
        out.push({ start: l.start, end: l.end, cls: 'line' });
        start = -1;
        continue;
      }
      if (start >= 0 && m[1] !== code) {
        out.push({ start, end: l.start, cls: `partial ${code}` });
        start = -1;
      }
      if (start < 0) {
        start = l.start;
        code = m[1]!;
        n = 0;
      }
      n++;
      if (m[2] !== '-' && complete) {
        out.push({ start, end: l.end, cls: n > 1 ? `${code} multi` : code });
        start = -1;
      }
    }
    if (start >= 0) out.push({ start, end: text.length, cls: `partial ${code}` });
    return out;
  },
  refusal: (cls) => /^[45]/.test(cls),
  authBeforeTls(text, replies) {
    for (const r of replies) {
      if (/^(235|334)\b/.test(r.cls)) return `accepts AUTH before TLS (${r.cls.slice(0, 3)})`;
      if (!r.cls.startsWith('250')) continue;
      for (const l of lines(text.slice(r.start, r.end)).slice(1)) {
        const kw = /^250[- ]([A-Za-z0-9-]+)(?:[ =](.*))?$/.exec(l.text);
        if (kw && kw[1]!.toUpperCase() === 'AUTH')
          return `advertises AUTH ${kw[2] ?? ''} in EHLO before TLS`.trim();
      }
    }
    return undefined;
  },
};

// ---- LDAP (RFC 4511 §4.1.1): BER LDAPMessage PDUs; the class is the message id, the
// protocolOp tag and, for responses carrying an LDAPResult, the result code.

/** A BER length at `i`: [length, header bytes] or null (incomplete or unsupported). */
function berLength(b: string, i: number): [number, number] | null {
  if (i >= b.length) return null;
  const first = b.charCodeAt(i);
  if (first < 0x80) return [first, 1];
  const n = first & 0x7f;
  if (n === 0 || n > 4 || i + n >= b.length) return null;
  let len = 0;
  for (let k = 1; k <= n; k++) len = len * 256 + b.charCodeAt(i + k);
  return [len, 1 + n];
}

/** Response operations whose body starts with an LDAPResult (resultCode ENUMERATED first). */
const RESULT_OPS = new Set([0x61, 0x65, 0x67, 0x69, 0x6b, 0x6d, 0x6f, 0x78]);
const LDAP_OPS = new Map<number, string>([
  [0x61, 'bindResponse'],
  [0x64, 'searchResEntry'],
  [0x65, 'searchResDone'],
  [0x73, 'searchResRef'],
  [0x67, 'modifyResponse'],
  [0x69, 'addResponse'],
  [0x6b, 'delResponse'],
  [0x6d, 'modDNResponse'],
  [0x6f, 'compareResponse'],
  [0x78, 'extendedResp'],
  [0x79, 'intermediateResponse'],
]);

function ldapClass(pdu: string): string {
  // SEQUENCE { messageID INTEGER, protocolOp [APPLICATION n] ... }
  const seq = berLength(pdu, 1);
  if (pdu.charCodeAt(0) !== 0x30 || !seq) return 'malformed';
  let i = 1 + seq[1];
  if (pdu.charCodeAt(i) !== 0x02) return 'malformed';
  const idLen = berLength(pdu, i + 1);
  if (!idLen) return 'malformed';
  let id = 0;
  for (let k = 0; k < idLen[0]; k++) id = id * 256 + pdu.charCodeAt(i + 1 + idLen[1] + k);
  i += 1 + idLen[1] + idLen[0];
  const op = pdu.charCodeAt(i);
  const opName = LDAP_OPS.get(op) ?? `op 0x${op.toString(16)}`;
  if (!RESULT_OPS.has(op)) return `#${id} ${opName}`;
  const opLen = berLength(pdu, i + 1);
  if (!opLen) return `#${id} ${opName} malformed`;
  const r = i + 1 + opLen[1];
  if (pdu.charCodeAt(r) !== 0x0a || pdu.charCodeAt(r + 1) !== 1)
    return `#${id} ${opName} malformed`;
  return `#${id} ${opName} result ${pdu.charCodeAt(r + 2)}`;
}

const ldap: ReplyRules = {
  replies(text) {
    const out: Reply[] = [];
    let i = 0;
    while (i < text.length) {
      const len = berLength(text, i + 1);
      if (!len || i + 1 + len[1] + len[0] > text.length) {
        out.push({ start: i, end: text.length, cls: 'partial' });
        break;
      }
      const end = i + 1 + len[1] + len[0];
      out.push({ start: i, end, cls: ldapClass(text.slice(i, end)) });
      i = end;
    }
    return out;
  },
  refusal: (cls) => / result [0-9]+$/.test(cls) && !cls.endsWith(' result 0'),
  authBeforeTls(text, replies) {
    for (const r of replies) {
      // A root DSE entry listing SASL mechanisms (RFC 4512 §5.1) offers them.
      if (/ searchResEntry$/.test(r.cls)) {
        const pdu = text.slice(r.start, r.end);
        const at = pdu.indexOf('supportedSASLMechanisms');
        const set = at + 'supportedSASLMechanisms'.length;
        if (at >= 0 && pdu.charCodeAt(set) === 0x31 && (berLength(pdu, set + 1)?.[0] ?? 0) > 0)
          return 'lists supportedSASLMechanisms before TLS';
      }
      const m = / bindResponse result ([0-9]+)$/.exec(r.cls);
      // success (0) or saslBindInProgress (14): the bind goes ahead in plaintext.
      if (m && (m[1] === '0' || m[1] === '14'))
        return `accepts a bind before TLS (resultCode ${m[1]})`;
    }
    return undefined;
  },
};

// ---- XMPP (RFC 6120 §4, §6, §5): the stream header, then each top-level element of the
// stream is a reply; its class is its name with the name of its first child (the condition of
// <stream:error/> and <failure/>, the features offered).

interface XmlTag {
  start: number;
  end: number;
  name: string;
  kind: 'open' | 'close' | 'empty' | 'decl';
}

function xmlTags(text: string): XmlTag[] | null {
  const out: XmlTag[] = [];
  let i = 0;
  while (i < text.length) {
    const lt = text.indexOf('<', i);
    if (lt < 0) break;
    const gt = text.indexOf('>', lt);
    if (gt < 0) return out.concat({ start: lt, end: text.length, name: '', kind: 'decl' });
    const inner = text.slice(lt + 1, gt);
    const name = /^[/?!]?([^\s/>]*)/.exec(inner)?.[1] ?? '';
    const kind =
      inner.startsWith('?') || inner.startsWith('!')
        ? 'decl'
        : inner.startsWith('/')
          ? 'close'
          : inner.endsWith('/')
            ? 'empty'
            : 'open';
    out.push({ start: lt, end: gt + 1, name, kind });
    i = gt + 1;
  }
  return out;
}

const xmpp: ReplyRules = {
  replies(text) {
    const tags = xmlTags(text);
    if (!tags) return [{ start: 0, end: text.length, cls: 'malformed' }];
    const out: Reply[] = [];
    let depth = 0;
    let cur: { start: number; name: string; child?: string } | undefined;
    for (const t of tags) {
      if (t.kind === 'decl') {
        // A tag cut off at the end: its own partial reply, or part of the open element's.
        if (t.name === '' && !cur) out.push({ start: t.start, end: t.end, cls: 'partial' });
        continue;
      }
      // The stream header and its end only at the top (inside an element they are content).
      if ((t.name === 'stream:stream' || t.name === 'stream') && !cur) {
        // The stream header opens depth 1; its end closes the stream.
        if (t.kind === 'open') {
          out.push({ start: t.start, end: t.end, cls: 'stream header' });
          depth = 1;
        } else if (t.kind === 'close') {
          out.push({ start: t.start, end: t.end, cls: 'stream end' });
          depth = 0;
        }
        continue;
      }
      if (t.kind === 'open' || t.kind === 'empty') {
        if (depth <= 1) cur = { start: t.start, name: t.name };
        else if (depth === 2 && cur && cur.child === undefined) cur.child = t.name;
        if (t.kind === 'open') depth++;
        else if (depth <= 1 && cur) {
          out.push({ start: cur.start, end: t.end, cls: cur.name });
          cur = undefined;
        }
      } else {
        depth = Math.max(0, depth - 1);
        if (depth <= 1 && cur) {
          const cls = cur.child === undefined ? cur.name : `${cur.name} ${cur.child}`;
          out.push({ start: cur.start, end: t.end, cls });
          cur = undefined;
        }
      }
    }
    if (cur) out.push({ start: cur.start, end: text.length, cls: `partial ${cur.name}` });
    return out;
  },
  refusal: (cls) => /^(failure|stream:error)\b/.test(cls),
  closing: (cls) => cls === 'stream end',
  authBeforeTls(text) {
    if (/<(?:[a-z]+:)?mechanisms[\s>/]/.test(text)) return 'offers SASL <mechanisms/> before TLS';
    // XEP-0078 (obsolete, still served): legacy iq-auth offered as a stream feature.
    if (/<auth\s+xmlns=['"]http:\/\/jabber\.org\/features\/iq-auth['"]/.test(text))
      return 'offers legacy iq-auth before TLS';
    if (/<(?:[a-z]+:)?(success|challenge)[\s>/]/.test(text))
      return 'goes on with SASL before TLS (<success/> or <challenge/>)';
    return undefined;
  },
};

// ---- HTTP/1.1 (RFC 9112 §4, §6): a status line, header fields up to the empty line, then a
// body of Content-Length octets; after a 101 the connection is TLS and nothing more is HTTP.

const http: ReplyRules = {
  replies(text) {
    const out: Reply[] = [];
    let i = 0;
    while (i < text.length) {
      const status = /^HTTP\/[0-9.]+ ([0-9]{3})/.exec(text.slice(i, i + 20));
      const head = text.indexOf('\r\n\r\n', i);
      if (!status || head < 0) {
        out.push({ start: i, end: text.length, cls: status ? `partial ${status[1]}` : 'line' });
        break;
      }
      const fields = text.slice(i, head);
      const len = /\r\ncontent-length: *([0-9]+)/i.exec(fields);
      const end = Math.min(text.length, head + 4 + (len ? Number(len[1]) : 0));
      out.push({ start: i, end, cls: status[1]! });
      i = end;
      if (status[1] === '101') break;
    }
    return out;
  },
  refusal: (cls) => /^[45]/.test(cls),
  authBeforeTls(text, replies) {
    for (const r of replies) {
      const head = text.slice(r.start, r.end).split('\r\n\r\n')[0]!;
      if (/\r\n(www|proxy)-authenticate:/i.test(head))
        return 'asks for HTTP authentication before TLS';
    }
    return undefined;
  },
};

// ---- NNTP (RFC 3977 §3.2, RFC 4643, RFC 4642): `ddd text` status lines; the multi-line
// responses (§3.1.1: HELP 100, CAPABILITIES 101, LIST 215, article 220-222, OVER 224, HDR 225,
// NEWNEWS 230, NEWGROUPS 231, LISTGROUP 211 when a body follows) run to `.`. The guide's
// example dialect (examples/dialect-nntp) is judged by these.

const NNTP_MULTI = new Set(['100', '101', '215', '220', '221', '222', '224', '225', '230', '231']);

const nntp: ReplyRules = {
  replies(text) {
    const out: Reply[] = [];
    const ls = lines(text);
    for (let i = 0; i < ls.length; i++) {
      const l = ls[i]!;
      const code = /^([0-9]{3})(?: |$)/.exec(l.text)?.[1];
      const complete = text[l.end - 1] === '\n';
      if (code && NNTP_MULTI.has(code)) {
        let j = i + 1;
        while (j < ls.length && ls[j]!.text !== '.') j++;
        if (j < ls.length) {
          out.push({ start: l.start, end: ls[j]!.end, cls: `${code} multi` });
          i = j;
        } else out.push({ start: l.start, end: text.length, cls: `partial ${code} multi` });
        if (j >= ls.length) break;
        continue;
      }
      const cls = code ?? 'line';
      out.push({ start: l.start, end: l.end, cls: complete ? cls : `partial ${cls}` });
    }
    return out;
  },
  refusal: (cls) => /^[45]/.test(cls),
  authBeforeTls(text, replies) {
    for (const r of replies) {
      // 281 authenticated, 381 password wanted (the user name was taken), 383 SASL goes on.
      if (/^(281|381|383)$/.test(r.cls)) return `accepts AUTHINFO before TLS (${r.cls})`;
      if (r.cls !== '101 multi') continue;
      for (const l of lines(text.slice(r.start, r.end)).slice(1)) {
        const [cap, ...args] = tokens(l.text.toUpperCase());
        // RFC 4643 §2.2: AUTHINFO with no arguments offers nothing now.
        if ((cap === 'AUTHINFO' || cap === 'SASL') && args.length > 0)
          return `advertises ${cap} ${args.join(' ')} before TLS`;
      }
    }
    return undefined;
  },
};

/** Reply rules by dialect name (a Map: a dialect's name never reaches an object prototype). */
export const REPLY_RULES: ReadonlyMap<string, ReplyRules> = new Map([
  ['imap', imap],
  ['pop3', pop3],
  ['smtp', smtp],
  ['ldap', ldap],
  ['xmpp', xmpp],
  ['http-upgrade', http],
  ['nntp', nntp],
]);
