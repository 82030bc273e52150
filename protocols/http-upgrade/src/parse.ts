// RFC 9112 section 3 (Request Line) and section 5 (Field Syntax): one framed line through the
// nearley grammar in request.ne.
//
// Theory of operation: while a line arrives, each octet is checked in O(1) by a small automaton
// that accepts exactly the prefixes the grammar can still complete (a property test compares it
// with nearley), so garbage (a TLS ClientHello sent to the plaintext port, a binary probe) is
// refused at its first bad octet instead of after a full line. The checker keeps no octets (the
// framer has them). At the line end the same automaton, ending in a complete state, is the
// parse (scanRequest, scanField): the grammar is regular, its lines have one parse each, and
// property tests hold the scan to nearley's results, spans included. nearley itself runs only
// in tests — fed octet by octet (as this file did until issue 14) it kept every partial parse
// alive, 1.85 MB and 25 ms for one unfinished 8,000-octet line; once per complete line it still
// cost ~2 ms per KB, which made a slow header a cheaper attack on the proxy's CPU than a TLS
// handshake.
import nearley from 'nearley';
import grammar from './request.gen.js';

interface Span {
  start: number;
  length: number;
}
interface RequestTree {
  method: Span;
  target: Span;
  version: { major: number; minor: number };
}
interface FieldTree {
  name: Span;
  value: Span | null;
}

export interface RequestLine {
  method: string;
  target: string;
  /** As received, e.g. "HTTP/1.1". */
  version: string;
  major: number;
  minor: number;
}

export type LineKind = 'request' | 'field';

const grammars: Record<LineKind, nearley.Grammar> = {
  request: nearley.Grammar.fromCompiled(grammar),
  field: nearley.Grammar.fromCompiled({ ...grammar, ParserStart: 'fieldLine' }),
};

export type LineResult<T> = { ok: true; value: T } | { ok: false; reason: 'syntax' | 'ambiguous' };

const SP = 0x20;
const HTAB = 0x09;
const COLON = 0x3a;
const VERSION = [0x48, 0x54, 0x54, 0x50, 0x2f, -1, 0x2e, -1]; // "HTTP/" DIGIT "." DIGIT

/** tchar (RFC 9110 section 5.6.2), as request.ne spells it. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TCHAR[c] = 1;

const isVchar = (b: number): boolean => b >= 0x21 && b <= 0x7e;
const isDigit = (b: number): boolean => b >= 0x30 && b <= 0x39;
/** field-content octets and OWS: HTAB, SP, VCHAR, obs-text. */
const isValueOctet = (b: number): boolean => b === HTAB || (b >= SP && b !== 0x7f);

// Automaton states. Request line: method, SP, target, SP, then VERSION[state - R_VERSION].
const R_METHOD0 = 0;
const R_METHOD = 1;
const R_TARGET0 = 2;
const R_TARGET = 3;
const R_VERSION = 4;
// Field line: name, ":", then any field-content octet or OWS (every such rest parses).
// (F_NAME0 = 0 is the initial state, as R_METHOD0.)
const F_NAME = 1;
const F_VALUE = 2;
const FAILED = -1;

/** The automaton's next state for one octet, or FAILED: the grammar can no longer match. */
function step(kind: LineKind, state: number, b: number): number {
  if (kind === 'field') {
    if (state === F_VALUE) return isValueOctet(b) ? F_VALUE : FAILED;
    if (TCHAR[b] === 1) return F_NAME;
    return state === F_NAME && b === COLON ? F_VALUE : FAILED;
  }
  switch (state) {
    case R_METHOD0:
      return TCHAR[b] === 1 ? R_METHOD : FAILED;
    case R_METHOD:
      return TCHAR[b] === 1 ? R_METHOD : b === SP ? R_TARGET0 : FAILED;
    case R_TARGET0:
      return isVchar(b) ? R_TARGET : FAILED;
    case R_TARGET:
      return isVchar(b) ? R_TARGET : b === SP ? R_VERSION : FAILED;
    default: {
      const want = VERSION[state - R_VERSION];
      if (want === undefined) return FAILED; // the version is complete: nothing may follow
      return (want === -1 ? isDigit(b) : b === want) ? state + 1 : FAILED;
    }
  }
}

/** One line's octets as they arrive, O(1) each and nothing kept: can it still parse? */
export class LineChecker {
  private state = 0;

  constructor(readonly kind: LineKind) {}

  /** False once the line can no longer be valid, whatever follows. Strings are latin1. */
  feed(chunk: Uint8Array | string): boolean {
    for (let i = 0; i < chunk.length && this.state !== FAILED; i++) {
      const b = typeof chunk === 'string' ? chunk.charCodeAt(i) & 0xff : chunk[i]!;
      this.state = step(this.kind, this.state, b);
    }
    return this.state !== FAILED;
  }

  get ok(): boolean {
    return this.state !== FAILED;
  }

  /** The complete line (latin1), checked by feed(). */
  finishRequest(text: string): LineResult<RequestLine> {
    if (!this.ok) return SYNTAX;
    return scanRequest(text);
  }

  finishField(text: string): LineResult<[string, string]> {
    if (!this.ok) return SYNTAX;
    return scanField(text);
  }
}

const SYNTAX = { ok: false, reason: 'syntax' } as const;
const REQUEST_DONE = R_VERSION + VERSION.length;

/** The automaton over a whole line: its final state. Lines are latin1; anything wider fails. */
function run(kind: LineKind, text: string): number {
  let state = 0;
  for (let i = 0; i < text.length && state !== FAILED; i++) {
    const c = text.charCodeAt(i);
    state = c > 0xff ? FAILED : step(kind, state, c);
  }
  return state;
}

/**
 * The request line without the grammar: the automaton accepts exactly request.ne's lines (a
 * property test holds it to nearley's parse, spans included), so a line it ends complete has
 * one parse, cut at its two spaces. nearley on a complete line still cost ~2 ms per KB — an
 * 8,000-octet field line 17 ms, a 16 KB head 60+ ms of the proxy's thread: a preamble at that
 * price is a cheaper attack than a TLS handshake.
 */
export function scanRequest(text: string): LineResult<RequestLine> {
  if (run('request', text) !== REQUEST_DONE) return SYNTAX;
  const sp1 = text.indexOf(' ');
  const sp2 = text.indexOf(' ', sp1 + 1);
  const major = text.charCodeAt(sp2 + 6) - 0x30;
  const minor = text.charCodeAt(sp2 + 8) - 0x30;
  return {
    ok: true,
    value: {
      method: text.slice(0, sp1),
      target: text.slice(sp1 + 1, sp2),
      version: `HTTP/${major}.${minor}`,
      major,
      minor,
    },
  };
}

/** A field line without the grammar (as scanRequest): name, then the value without its OWS. */
export function scanField(text: string): LineResult<[string, string]> {
  if (run('field', text) !== F_VALUE) return SYNTAX;
  const colon = text.indexOf(':');
  let start = colon + 1;
  let end = text.length;
  while (start < end && isOws(text.charCodeAt(start))) start++;
  while (end > start && isOws(text.charCodeAt(end - 1))) end--;
  return { ok: true, value: [text.slice(0, colon), text.slice(start, end)] };
}

const isOws = (b: number): boolean => b === SP || b === HTAB;

/** The grammar's answer for a whole line, shaped as scanRequest's and scanField's: the reference
 * they are tested against. */
export function parseWithGrammar(kind: 'request', text: string): LineResult<RequestLine>;
export function parseWithGrammar(kind: 'field', text: string): LineResult<[string, string]>;
export function parseWithGrammar(
  kind: LineKind,
  text: string,
): LineResult<RequestLine> | LineResult<[string, string]> {
  const all = parseAll(kind, text);
  if (all.length === 0) return SYNTAX;
  if (all.length > 1) return { ok: false, reason: 'ambiguous' };
  if (kind === 'field') {
    const { name, value } = all[0] as FieldTree;
    return { ok: true, value: [slice(text, name), value ? slice(text, value) : ''] };
  }
  const t = all[0] as RequestTree;
  return {
    ok: true,
    value: {
      method: slice(text, t.method),
      target: slice(text, t.target),
      version: `HTTP/${t.version.major}.${t.version.minor}`,
      major: t.version.major,
      minor: t.version.minor,
    },
  };
}

/**
 * Whether nearley, fed `text`, can still complete a line: the reference the octet automaton
 * must agree with (tests only; feeding nearley octet by octet is what the automaton replaces).
 */
export function grammarAcceptsPrefix(kind: LineKind, text: string): boolean {
  const parser = new nearley.Parser(grammars[kind]);
  try {
    for (const c of text) parser.feed(c);
  } catch {
    return false;
  }
  return true;
}

/** Every parse of a whole line (tests use this to check that the grammar is unambiguous). */
export function parseAll(kind: LineKind, text: string): unknown[] {
  const parser = new nearley.Parser(grammars[kind]);
  try {
    parser.feed(text);
  } catch {
    return [];
  }
  return parser.results;
}

export function parseRequestLine(text: string): LineResult<RequestLine> {
  const p = new LineChecker('request');
  p.feed(text);
  return p.finishRequest(text);
}

export function parseFieldLine(text: string): LineResult<[string, string]> {
  const p = new LineChecker('field');
  p.feed(text);
  return p.finishField(text);
}

function slice(text: string, span: Span): string {
  return text.slice(span.start, span.start + span.length);
}
