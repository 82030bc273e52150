// Framing and tokenizing for the protocols with IMAP-style strings: atoms, quoted strings and
// counted literals — IMAP (RFC 9051 sections 2.2.1, 4.1-4.3; LITERAL+ RFC 7888), ManageSieve
// (RFC 5804 section 4: atoms, quoted strings, `{n+}` literals), ACAP.
//
// Theory of operation: a command is one or more line parts; a part whose last token is `{n}` or
// `{n+}` is followed by exactly n octets of literal data, then the command goes on with the next
// part. Framing is done by hand on octets, so nothing a client sends can move a command
// boundary. A synchronizing `{n}` means, in IMAP, that the client waits for a continuation
// (`+ OK`) before sending the octets: with `synchronizing: 'pause'` the framer stops and the
// dialect decides — accept() (it sent the continuation) or refuse() (it sent an error: the
// client will NOT send the octets, so nothing may be swallowed). With `'immediate'` (ManageSieve
// servers take `{n}` too) the octets follow at once, like `{n+}`. A non-synchronizing literal is
// always followed by its octets, so they are skipped even when the command is refused; when
// that is impossible (over `maxLiteralSize`, or a count we could not read) the stream cannot be
// resynchronised and the framer reports `fatal`.
//
// A line ends at LF; one CR before it is dropped (clients send CRLF; Dovecot also takes a bare
// LF). Every decision depends only on the octets, never on how they were chunked, and the work
// is O(input): a pending line is scanned once (the LF search resumes where the last read
// stopped), tokenized once when complete, and literal octets are copied once.
import { ByteBuffer, ByteQueue, latin1 } from './bytes.js';

export type Token =
  /** A run of atom characters (any CHAR but SP, CTL, `(`, `)`, `{`, `"`). */
  | { type: 'atom'; text: string }
  /** A quoted string, its `\"` and `\\` escapes undone (latin1: one char per octet). */
  | { type: 'quoted'; text: string }
  /** A literal's octets; `sync` for `{n}`, false for `{n+}`. */
  | { type: 'literal'; data: Uint8Array; sync: boolean }
  /** `(` and `)` (IMAP lists); nesting is the dialect's to check. */
  | { type: 'open' }
  | { type: 'close' };

/** The text of an atom, quoted string or literal (latin1), or null for `(` and `)`. */
export function tokenText(token: Token | undefined): string | null {
  if (token === undefined) return null;
  if (token.type === 'atom' || token.type === 'quoted') return token.text;
  if (token.type === 'literal') return latin1(token.data);
  return null;
}

export type TokenizeResult =
  /** The tokens of the line; `literal` when it ends in a literal marker (whose octets follow). */
  | { ok: true; tokens: Token[]; literal: { size: number; sync: boolean } | null }
  /** The line is not valid: `tokens` are those before the error (e.g. an IMAP tag). */
  | { ok: false; reason: 'syntax' | 'too-many-tokens'; detail: string; tokens: Token[] };

const SP = 0x20;
const LF = 0x0a;
const CR = 0x0d;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN = 0x28;
const CLOSE = 0x29;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const PLUS = 0x2b;

const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;
const isCtl = (c: number): boolean => c < 0x20 || c === 0x7f;

/**
 * Tokenize one line part (its content, without CRLF). Never throws. `maxTokens` bounds the
 * tokens (a literal marker counts as one); `continuation` for a part that follows a literal,
 * which must go on with a space, `)` or nothing.
 */
export function tokenizeLine(
  line: Uint8Array,
  maxTokens = Number.POSITIVE_INFINITY,
  continuation = false,
): TokenizeResult {
  const tokens: Token[] = [];
  const n = line.length;
  const fail = (detail: string): TokenizeResult => ({
    ok: false,
    reason: 'syntax',
    detail,
    tokens,
  });
  const add = (token: Token): boolean => {
    if (tokens.length >= maxTokens) return false;
    tokens.push(token);
    return true;
  };
  const tooMany = (): TokenizeResult => ({
    ok: false,
    reason: 'too-many-tokens',
    detail: `more than ${maxTokens} tokens`,
    tokens,
  });
  if (continuation && n > 0 && line[0] !== SP && line[0] !== CLOSE) {
    return fail('no space after a literal');
  }
  let i = 0;
  while (i < n) {
    const c = line[i]!;
    if (c === SP) {
      i++;
    } else if (c === OPEN || c === CLOSE) {
      if (!add({ type: c === OPEN ? 'open' : 'close' })) return tooMany();
      i++;
    } else if (c === DQUOTE) {
      // RFC 9051 quoted: DQUOTE *QUOTED-CHAR DQUOTE; only `"` and `\` are escaped.
      const parts: string[] = [];
      let from = i + 1;
      let j = from;
      for (;;) {
        if (j >= n) return fail('unterminated quoted string');
        const d = line[j]!;
        if (d === DQUOTE) break;
        if (d === 0 || d === CR || d === LF) return fail('NUL or CR in a quoted string');
        if (d === BACKSLASH) {
          const e = line[j + 1];
          if (e !== DQUOTE && e !== BACKSLASH) return fail('bad escape in a quoted string');
          parts.push(latin1(line.subarray(from, j)));
          from = j + 1; // keep the escaped octet, drop the backslash
          j += 2;
          continue;
        }
        j++;
      }
      parts.push(latin1(line.subarray(from, j)));
      i = j + 1;
      if (i < n && line[i] !== SP && line[i] !== CLOSE) return fail('no space after a string');
      if (!add({ type: 'quoted', text: parts.join('') })) return tooMany();
    } else if (c === LBRACE) {
      // A literal marker `{digits}` or `{digits+}`: only as the line's last token.
      let j = i + 1;
      while (j < n && isDigit(line[j]!)) j++;
      if (j === i + 1) return fail('no digits in a literal marker');
      const digits = latin1(line.subarray(i + 1, j));
      const sync = line[j] !== PLUS;
      if (!sync) j++;
      if (line[j] !== RBRACE) return fail('bad literal marker');
      if (j + 1 !== n) return fail('a literal marker not at the end of the line');
      if (tokens.length >= maxTokens) return tooMany();
      return { ok: true, tokens, literal: { size: literalSize(digits), sync } };
    } else if (isCtl(c) || c >= 0x80) {
      return fail(`octet 0x${c.toString(16).padStart(2, '0')} outside a string`);
    } else {
      let j = i;
      for (; j < n; j++) {
        const d = line[j]!;
        if (d === SP || d === OPEN || d === CLOSE) break;
        if (d === DQUOTE || d === LBRACE || isCtl(d) || d >= 0x80) {
          return fail(`octet 0x${d.toString(16).padStart(2, '0')} in an atom`);
        }
      }
      if (!add({ type: 'atom', text: latin1(line.subarray(i, j)) })) return tooMany();
      i = j;
    }
  }
  return { ok: true, tokens, literal: null };
}

function literalSize(digits: string): number {
  // number64 in RFC 9051; anything past 15 digits is over every limit anyway.
  const trimmed = digits.replace(/^0+(?=\d)/, '');
  return trimmed.length > 15 ? Number.POSITIVE_INFINITY : Number(trimmed);
}

export interface CommandFramerLimits {
  /** Longest line part in octets, its CRLF not counted. */
  maxLineLength: number;
  /** Largest literal in octets. */
  maxLiteralSize: number;
  /** Largest command in octets: its line parts (without CRLF) and literals. */
  maxCommandSize: number;
  /** Most tokens in one command (a literal counts as one). */
  maxTokens: number;
}

export interface CommandFramerOptions {
  /**
   * What a synchronizing `{n}` means: `pause` (IMAP: the framer returns a `literal` event and
   * waits for accept() or refuse()) or `immediate` (the octets follow at once, as for `{n+}`).
   * Default `pause`.
   */
  synchronizing?: 'pause' | 'immediate';
}

export type BadCommandReason =
  | 'line-too-long'
  | 'command-too-long'
  | 'literal-too-big'
  | 'too-many-tokens'
  | 'syntax';

export type CommandEvent =
  /** A complete command. */
  | { type: 'command'; tokens: Token[]; size: number }
  /**
   * A synchronizing literal of `size` octets was announced (`synchronizing: 'pause'`): send the
   * protocol's continuation and call accept(), or send an error and call refuse(), before next().
   * `tokens` are the command's so far (the IMAP tag is the first).
   */
  | { type: 'literal'; tokens: Token[]; size: number }
  /**
   * The command is refused; whatever is left of it (up to its line end, and the octets of any
   * non-synchronizing literal it announced) is discarded unread. `tokens`: those before the
   * error; `head`: the first octets of the command's first line (latin1), to find a tag in
   * when there are no tokens (a line too long).
   */
  | { type: 'bad'; reason: BadCommandReason; detail: string; tokens: Token[]; head: string }
  /** The stream cannot be resynchronised (a non-synchronizing literal over the limit, or one
   * whose size was cut off in a discarded line): send the protocol's goodbye and close. */
  | { type: 'fatal'; detail: string };

type State = 'line' | 'literal' | 'paused' | 'skipLine' | 'skipLiteral' | 'dead';

/** Octets of a discarded line kept to spot a trailing `{n+}`. */
const TAIL = 24;
/** Octets of a command's first line kept for `head`. */
const HEAD = 64;

export class CommandFramer {
  private readonly input = new ByteQueue();
  /** Octets of the pending line already searched for LF. */
  private scanned = 0;
  private state: State = 'line';
  private readonly synchronizing: 'pause' | 'immediate';
  // the command being framed
  private tokens: Token[] = [];
  private size = 0;
  private head: string | null = null;
  // a literal being read, skipped, or waiting for accept()/refuse()
  private remaining = 0;
  private literalSync = false;
  private readonly literal = new ByteBuffer();
  // a line being discarded
  private tail = '';
  private skipped = 0;
  /** An event to return before framing on (a `fatal` found with a `bad`). */
  private queued: CommandEvent | null = null;

  constructor(
    private readonly limits: CommandFramerLimits,
    options: CommandFramerOptions = {},
  ) {
    this.synchronizing = options.synchronizing ?? 'pause';
  }

  push(data: Uint8Array): void {
    if (this.state === 'dead') return;
    this.input.append(data);
  }

  /** Octets received but not framed yet (after STARTTLS: the trailing data). */
  takeRest(): Uint8Array {
    this.scanned = 0;
    return this.input.take();
  }

  /** Octets received and not framed yet. */
  get pending(): number {
    return this.input.length;
  }

  /** True once a `fatal` event was returned: nothing more will be framed. */
  get dead(): boolean {
    return this.state === 'dead';
  }

  /** After a `literal` event: the continuation was sent, the client sends the octets now. */
  accept(): void {
    if (this.state !== 'paused') return;
    this.size += this.remaining;
    this.state = 'literal';
  }

  /** After a `literal` event: the command was refused; the client will not send the octets. */
  refuse(): void {
    if (this.state === 'paused') this.reset();
  }

  next(): CommandEvent | null {
    for (;;) {
      if (this.queued !== null) {
        const event = this.queued;
        this.queued = null;
        return event;
      }
      switch (this.state) {
        case 'paused':
        case 'dead':
          return null;
        case 'literal':
        case 'skipLiteral': {
          const take = Math.min(this.remaining, this.input.length);
          if (take > 0) {
            if (this.state === 'literal') this.literal.append(this.input.view().subarray(0, take));
            this.input.consume(take);
            this.remaining -= take;
          }
          if (this.remaining > 0) return null;
          if (this.state === 'literal') {
            this.tokens.push({
              type: 'literal',
              data: this.literal.view().slice(),
              sync: this.literalSync,
            });
            this.literal.clear();
            this.state = 'line';
          } else {
            this.startSkip();
          }
          continue;
        }
        case 'skipLine': {
          if (this.input.length === 0) return null;
          const buf = this.input.view();
          const lf = buf.indexOf(LF);
          this.keepTail(buf.subarray(0, lf < 0 ? buf.length : lf));
          this.input.consume(lf < 0 ? buf.length : lf + 1);
          if (lf < 0) return null;
          this.endSkippedLine();
          continue;
        }
        case 'line': {
          const event = this.readLine();
          if (event !== undefined) return event;
        }
      }
    }
  }

  /** An event, null for "need more octets", or undefined to go on framing. */
  private readLine(): CommandEvent | null | undefined {
    const { maxLineLength, maxLiteralSize, maxCommandSize, maxTokens } = this.limits;
    const buf = this.input.view();
    if (buf.length === 0) return null;
    const continuation = this.tokens.length > 0 && this.tokens.at(-1)?.type === 'literal';
    const lf = buf.indexOf(LF, this.scanned);
    if (lf < 0) {
      this.scanned = buf.length;
      // +1: the octet past the limit may still be the CR of a CRLF.
      if (buf.length <= maxLineLength + 1) return null;
      this.head ??= this.headOf(buf);
      const event = this.bad('line-too-long', `a line over ${maxLineLength} octets`, []);
      this.startSkip(buf);
      this.input.consume(buf.length);
      this.scanned = 0;
      return event;
    }
    this.scanned = 0;
    const end = lf > 0 && buf[lf - 1] === CR ? lf - 1 : lf;
    const content = buf.subarray(0, end);
    this.head ??= this.headOf(content);
    this.size += end;
    let event: CommandEvent | undefined;
    if (end > maxLineLength) {
      event = this.bad('line-too-long', `a line over ${maxLineLength} octets`, []);
    } else if (this.size > maxCommandSize) {
      event = this.bad('command-too-long', `a command over ${maxCommandSize} octets`, []);
    } else {
      const r = tokenizeLine(content, maxTokens - this.tokens.length, continuation);
      if (!r.ok) {
        event = this.bad(r.reason, r.detail, r.tokens);
      } else {
        for (const t of r.tokens) this.tokens.push(t);
        if (r.literal === null) {
          event = { type: 'command', tokens: this.tokens, size: this.size };
          this.reset();
        } else {
          const { size, sync } = r.literal;
          const tooBig = size > maxLiteralSize || this.size + size > maxCommandSize;
          if (sync && this.synchronizing === 'pause') {
            if (tooBig) {
              event = this.bad('literal-too-big', `a literal of ${size} octets`, []);
              // The client waits for a continuation it will not get: nothing to skip.
              this.reset();
            } else {
              this.state = 'paused';
              this.remaining = size;
              this.literalSync = true;
              event = { type: 'literal', tokens: this.tokens.slice(), size };
            }
          } else if (tooBig) {
            event = this.fatal(`a literal of ${size} octets that cannot be skipped`);
          } else {
            this.size += size;
            this.state = 'literal';
            this.remaining = size;
            this.literalSync = sync;
          }
        }
      }
    }
    if (this.state === 'skipLine') {
      // The line was refused as a whole: it may still announce literal octets to skip. Kept up
      // to the LF, CR included, as the skipLine state keeps it: endSkippedLine strips exactly one
      // CR, so `{9999+}\r\r\n` (a bare CR after the brace) announces nothing whichever way the
      // octets were cut (it did when the line came whole: the CR of the CRLF was already gone).
      this.keepTail(buf.subarray(0, lf));
      this.input.consume(lf + 1);
      this.endSkippedLine();
    } else {
      this.input.consume(lf + 1);
    }
    return event;
  }

  /** Refuse the command being framed: the event, and discard the rest of it. */
  private bad(
    reason: BadCommandReason,
    detail: string,
    lineTokens: readonly Token[],
  ): CommandEvent {
    const tokens = this.tokens;
    for (const t of lineTokens) tokens.push(t);
    const event: CommandEvent = { type: 'bad', reason, detail, tokens, head: this.head ?? '' };
    this.reset();
    this.startSkip();
    return event;
  }

  private fatal(detail: string): CommandEvent {
    this.reset();
    this.state = 'dead';
    this.input.consume(this.input.length);
    return { type: 'fatal', detail };
  }

  private startSkip(seen?: Uint8Array): void {
    this.state = 'skipLine';
    this.tail = '';
    this.skipped = 0;
    if (seen !== undefined) this.keepTail(seen);
  }

  private keepTail(segment: Uint8Array): void {
    this.skipped += segment.length;
    this.tail = (this.tail + latin1(segment.subarray(-TAIL))).slice(-TAIL);
  }

  /** A discarded line ended: if it announced literal octets the client will send, skip them. */
  private endSkippedLine(): void {
    const tail = this.tail.endsWith('\r') ? this.tail.slice(0, -1) : this.tail;
    const truncated = this.skipped > this.tail.length;
    const m = /(\{|^)(\d+)(\+?)\}$/.exec(tail);
    const sync = m?.[3] === '';
    if (!m || (m[1] === '' && !truncated) || (sync && this.synchronizing === 'pause')) {
      // No literal follows (a synchronizing one waits for a continuation it will not get).
      this.reset();
      return;
    }
    // Digits running into the start of the kept tail: the count cannot be known.
    const size = m[1] === '' ? Number.POSITIVE_INFINITY : literalSize(m[2]!);
    if (size > this.limits.maxLiteralSize) {
      this.queued = this.fatal(`a discarded line announced a literal of ${size} octets`);
      return;
    }
    this.state = 'skipLiteral';
    this.remaining = size;
  }

  private headOf(line: Uint8Array): string {
    return latin1(line.subarray(0, Math.min(HEAD, this.limits.maxLineLength + 1)));
  }

  private reset(): void {
    this.state = 'line';
    this.tokens = [];
    this.size = 0;
    this.head = null;
    this.literal.clear();
    this.remaining = 0;
  }
}
