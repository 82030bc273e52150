// RFC 1939 section 3 and RFC 2449 section 3 (General Command and Response Grammar): turn one
// framed line into a keyword and arguments with the nearley grammar in command.ne. Exactly one
// parse is required: two would mean the grammar is ambiguous (a bug, covered by tests), and the
// command is then refused, never guessed at.
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

export function parseCommand(text: string): ParseResult {
  const trees = parseAll(text);
  if (trees.length === 0) return { ok: false, reason: 'syntax' };
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
