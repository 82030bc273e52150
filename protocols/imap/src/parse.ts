// RFC 9051 section 9 (Formal Syntax): turn one framed command into tag, name and arguments with
// the nearley grammar in command.ne. Exactly one parse is required: two would mean the grammar
// is ambiguous (a bug, covered by tests), and the command is then refused, never guessed at.
import nearley from 'nearley';
import grammar from './command.gen.js';

export type Arg =
  | { type: 'atom'; value: string }
  | { type: 'quoted'; value: string }
  | { type: 'literal'; value: Uint8Array; sync: boolean }
  | { type: 'list'; items: Arg[] };

export interface Command {
  tag: string;
  /** Upper case: command names are case-insensitive. */
  name: string;
  args: Arg[];
}

export type ParseResult =
  | { ok: true; command: Command }
  | { ok: false; reason: 'syntax' | 'ambiguous' | 'literal' };

interface Span {
  start: number;
  length: number;
}
/** The grammar's cons list of arguments, newest first (see command.ne). */
interface Cons {
  item: Node;
  rest: Cons | null;
}
type Node =
  | ({ type: 'atom' | 'quoted' } & Span)
  | ({ type: 'literal'; sync: boolean } & Span)
  | { type: 'list'; start: number; items: Cons | null };
interface Tree {
  tag: Span;
  name: Span;
  args: Cons | null;
}

function toArray(list: Cons | null): Node[] {
  const out: Node[] = [];
  for (let c = list; c; c = c.rest) out.push(c.item);
  return out.reverse();
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

/** Could more input turn `text` into a command? (Used before answering `+ OK` to a literal.) */
export function isViablePrefix(text: string): boolean {
  const parser = new nearley.Parser(compiled);
  try {
    parser.feed(text);
    return true;
  } catch {
    return false;
  }
}

export function parseCommand(
  text: string,
  literalEnds: readonly number[],
  literals: readonly Uint8Array[],
): ParseResult {
  const trees = parseAll(text);
  if (trees.length === 0) return { ok: false, reason: 'syntax' };
  if (trees.length > 1) return { ok: false, reason: 'ambiguous' };
  const tree = trees[0]!;
  // A `{5}` typed in the middle of a line is not a literal: markers must sit exactly where the
  // framer cut a literal out, one for one.
  const found: { end: number; node: Node }[] = [];
  const walk = (nodes: Node[]): void => {
    for (const n of nodes) {
      if (n.type === 'list') walk(toArray(n.items));
      else if (n.type === 'literal') found.push({ end: n.start + n.length, node: n });
    }
  };
  const args = toArray(tree.args);
  walk(args);
  if (found.length !== literalEnds.length || found.some((f, i) => f.end !== literalEnds[i])) {
    return { ok: false, reason: 'literal' };
  }
  let next = 0;
  const convert = (n: Node): Arg => {
    switch (n.type) {
      case 'list':
        return { type: 'list', items: toArray(n.items).map(convert) };
      case 'literal':
        return { type: 'literal', value: literals[next++]!, sync: n.sync };
      case 'quoted':
        return {
          type: 'quoted',
          value: text.slice(n.start + 1, n.start + n.length - 1).replace(/\\(["\\])/g, '$1'),
        };
      case 'atom':
        return { type: 'atom', value: text.slice(n.start, n.start + n.length) };
    }
  };
  return {
    ok: true,
    command: {
      tag: slice(text, tree.tag),
      name: slice(text, tree.name).toUpperCase(),
      args: args.map(convert),
    },
  };
}

function slice(text: string, span: Span): string {
  return text.slice(span.start, span.start + span.length);
}

/** Dovecot's IMAP_TAG_MAX_LEN: longer tags are not echoed back. */
export const MAX_TAG_LENGTH = 100;
const TAG = /^[\x21\x23\x24\x26\x27\x2C-\x5B\x5D-\x7A\x7C-\x7E]+$/;

/**
 * The tag to answer with, or null when the first word is not a valid tag: an invalid tag is
 * never echoed (Dovecot's reasoning: do not reflect what may be an HTTP request or an attack).
 */
export function tagOf(text: string): string | null {
  const sp = text.indexOf(' ');
  const tag = sp < 0 ? text : text.slice(0, sp);
  return tag.length <= MAX_TAG_LENGTH && TAG.test(tag) ? tag : null;
}

/** The command name in upper case, if the text has one after the tag. */
export function nameOf(text: string): string | null {
  const m = /^[^ ]+ ([^ ]+)/.exec(text);
  return m ? m[1]!.toUpperCase() : null;
}
