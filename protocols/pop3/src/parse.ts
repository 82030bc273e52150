// RFC 1939 section 3 and RFC 2449 section 3 (General Command and Response Grammar): turn one
// framed line into a keyword and arguments as the nearley grammar in command.ne says. The
// grammar is the specification and the tests' reference (exactly one parse per line: two would
// be a bug, covered by tests); at run time a scan gives its answer (parseCommand).
import nearley from 'nearley';
import grammar from './command.gen.js';

export interface Command {
  /** Upper case: keywords are case-insensitive (RFC 1939 section 3). */
  name: string;
  args: string[];
}

export type ParseResult =
  | { ok: true; command: Command }
  | { ok: false; reason: 'syntax' | 'ambiguous' };

interface Span {
  start: number;
  length: number;
}
/** The grammar's cons list of arguments, newest first (see command.ne). */
interface Cons {
  item: Span;
  rest: Cons | null;
}
interface Tree {
  keyword: Span;
  args: Cons | null;
}

const compiled = nearley.Grammar.fromCompiled(grammar);

/** Every parse of `text` (tests use this to check that the grammar is unambiguous). */
export function parseAll(text: string): Tree[] {
  const parser = new nearley.Parser(compiled);
  try {
    parser.feed(text);
  } catch {
    return [];
  }
  return parser.results as Tree[];
}

/**
 * One line, as command.ne says: a keyword of VCHARs, then arguments each after one space. The
 * grammar is regular with one parse per line, so a scan gives its answer (a property test holds
 * them together); nearley cost ~2 ms per KB of line at run time.
 */
export function parseCommand(text: string): ParseResult {
  const parts = text.split(' ');
  const keyword = parts[0]!;
  if (!all(keyword, false)) return SYNTAX;
  const args = parts.slice(1);
  for (const a of args) if (!all(a, true)) return SYNTAX;
  return { ok: true, command: { name: keyword.toUpperCase(), args } };
}

const SYNTAX = { ok: false, reason: 'syntax' } as const;

/** Non-empty, and every code unit a keyChar (VCHAR) or, `wide`, an argChar (also 0x80-0xff). */
function all(s: string, wide: boolean): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 0x21 && c <= 0x7e) || (wide && c >= 0x80 && c <= 0xff))) return false;
  }
  return true;
}

/** The grammar's answer, shaped as parseCommand's: the reference it is tested against. */
export function parseWithGrammar(text: string): ParseResult {
  const trees = parseAll(text);
  if (trees.length === 0) return SYNTAX;
  if (trees.length > 1) return { ok: false, reason: 'ambiguous' };
  const tree = trees[0]!;
  const args: string[] = [];
  for (let c = tree.args; c; c = c.rest) args.push(slice(text, c.item));
  return {
    ok: true,
    command: { name: slice(text, tree.keyword).toUpperCase(), args: args.reverse() },
  };
}

function slice(text: string, span: Span): string {
  return text.slice(span.start, span.start + span.length);
}

/** The keyword in upper case, for a line the grammar refused (to say why it is refused). */
export function nameOf(text: string): string | null {
  const m = /^([\x21-\x7e]+)/.exec(text);
  return m ? m[1]!.toUpperCase() : null;
}
