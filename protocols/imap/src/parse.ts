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

/**
 * Could more input turn `text` into a command? nearley's answer, for tests: the session uses
 * PrefixChecker, which gives the same answer in O(1) per char (a property test compares them).
 */
export function isViablePrefix(text: string): boolean {
  const parser = new nearley.Parser(compiled);
  try {
    parser.feed(text);
    return true;
  } catch {
    return false;
  }
}

function charClass(ranges: [number, number][]): Uint8Array {
  const table = new Uint8Array(256);
  for (const [a, b] of ranges) for (let c = a; c <= b; c++) table[c] = 1;
  return table;
}
// The character classes of command.ne.
const TAG_CHAR = charClass([
  [0x21, 0x21],
  [0x23, 0x24],
  [0x26, 0x27],
  [0x2c, 0x5b],
  [0x5d, 0x7a],
  [0x7c, 0x7e],
]);
const ATOM_CHAR = charClass([
  [0x21, 0x21],
  [0x23, 0x24],
  [0x26, 0x27],
  [0x2b, 0x5b],
  [0x5e, 0x7a],
  [0x7c, 0x7e],
]);
const ARG_CHAR = charClass([
  [0x21, 0x21],
  [0x23, 0x27],
  [0x2a, 0x7a],
  [0x7c, 0x7e],
]);
const QUOTED_CHAR = charClass([
  [0x01, 0x09],
  [0x0b, 0x0c],
  [0x0e, 0x21],
  [0x23, 0x5b],
  [0x5d, 0xff],
]);

enum P {
  Failed,
  Tag0,
  Tag,
  Name0,
  Name,
  Arg0,
  ListOpen,
  Atom,
  AfterArg,
  Quoted,
  QuotedEscape,
  Literal0,
  LiteralDigits,
  LiteralPlus,
}

/**
 * The prefixes command.ne can still complete, recognised char by char in O(1) with a paren
 * depth (issue 14: running nearley over the whole command at every `{n}` was O(n²) in the
 * command size; a command of 2,000 `{0}` parts took seconds). Fed the command text as it
 * grows; keeps no text.
 */
export class PrefixChecker {
  private state = P.Tag0;
  private depth = 0;
  /** Chars of the command text fed so far. */
  fed = 0;

  /** Feed `text` from `fed` on (the command text so far); false once it cannot parse. */
  viable(text: string): boolean {
    for (; this.fed < text.length && this.state !== P.Failed; this.fed++) {
      this.state = this.step(text.charCodeAt(this.fed) & 0xff);
    }
    this.fed = text.length;
    return this.state !== P.Failed;
  }

  private step(c: number): P {
    switch (this.state) {
      case P.Tag0:
        return TAG_CHAR[c] ? P.Tag : P.Failed;
      case P.Tag:
        return TAG_CHAR[c] ? P.Tag : c === 0x20 ? P.Name0 : P.Failed;
      case P.Name0:
        return ATOM_CHAR[c] ? P.Name : P.Failed;
      case P.Name:
        return ATOM_CHAR[c] ? P.Name : c === 0x20 ? P.Arg0 : P.Failed;
      case P.ListOpen:
        if (c === 0x29) {
          this.depth -= 1;
          return P.AfterArg;
        }
        return this.argStart(c);
      case P.Arg0:
        return this.argStart(c);
      case P.Atom:
        return ARG_CHAR[c] ? P.Atom : this.afterArg(c);
      case P.AfterArg:
        return this.afterArg(c);
      case P.Quoted:
        return c === 0x22
          ? P.AfterArg
          : c === 0x5c
            ? P.QuotedEscape
            : QUOTED_CHAR[c]
              ? P.Quoted
              : P.Failed;
      case P.QuotedEscape:
        return c === 0x22 || c === 0x5c ? P.Quoted : P.Failed;
      case P.Literal0:
        return c >= 0x30 && c <= 0x39 ? P.LiteralDigits : P.Failed;
      case P.LiteralDigits:
        if (c >= 0x30 && c <= 0x39) return P.LiteralDigits;
        return c === 0x7d ? P.AfterArg : c === 0x2b ? P.LiteralPlus : P.Failed;
      case P.LiteralPlus:
        return c === 0x7d ? P.AfterArg : P.Failed;
      default:
        return P.Failed;
    }
  }

  private argStart(c: number): P {
    if (c === 0x22) return P.Quoted;
    if (c === 0x7b) return P.Literal0;
    if (c === 0x28) {
      this.depth += 1;
      return P.ListOpen;
    }
    return ARG_CHAR[c] ? P.Atom : P.Failed;
  }

  private afterArg(c: number): P {
    if (c === 0x20) return P.Arg0;
    if (c === 0x29 && this.depth > 0) {
      this.depth -= 1;
      return P.AfterArg;
    }
    return P.Failed;
  }
}

/**
 * Parse one framed command: the fast path for the shapes clients send before TLS, else the
 * grammar. Both give the same result for every text the fast path takes (a property test
 * compares them on valid and invalid lines); anything else, and every failure, is nearley's.
 */
export function parseCommand(
  text: string,
  literalEnds: readonly number[],
  literals: readonly Uint8Array[],
): ParseResult {
  // A literal marker the framer cut must be checked against the tree: nearley's job.
  return (
    (literalEnds.length === 0 ? parseSimple(text) : undefined) ??
    parseWithGrammar(text, literalEnds, literals)
  );
}

/**
 * The commands real clients send before TLS (`a1 CAPABILITY`, `a2 STARTTLS`, `a ID ("name"
 * "x")`, `a LOGIN u p`) parsed by hand in one pass, without nearley: `tag SP name`, then
 * arguments that are atoms, quoted strings, or one level of parenthesised list of those,
 * separated by single spaces. Returns the grammar's result for such a text, or undefined
 * ("declined": not this shape, or no parse) for anything else, which then goes to nearley:
 * this never refuses a command, so it can only be wrong by accepting, and the property test
 * checks every accepted text against nearley. Literals (`{n}`) and nested lists are declined.
 */
export function parseSimple(text: string): ParseResult | undefined {
  const n = text.length;
  let i = 0;
  while (TAG_CHAR[text.charCodeAt(i)] === 1) i++;
  if (i === 0 || text.charCodeAt(i) !== 0x20) return undefined;
  const tag = text.slice(0, i);
  const nameStart = ++i;
  while (ATOM_CHAR[text.charCodeAt(i)] === 1) i++;
  if (i === nameStart) return undefined;
  const name = text.slice(nameStart, i).toUpperCase();
  const args: Arg[] = [];
  if (i < n) {
    if (text.charCodeAt(i) !== 0x20) return undefined;
    i++;
    /** The items of the open list, if one is open. */
    let list: Arg[] | null = null;
    for (;;) {
      // At the start of an argument. (Past the end, charCodeAt is NaN: in no table.)
      const c = text.charCodeAt(i);
      const into: Arg[] = list ?? args;
      if (c === 0x28) {
        if (list !== null) return undefined; // a nested list: the grammar's
        list = [];
        i++;
        if (text.charCodeAt(i) !== 0x29) continue;
      } else if (c === 0x22) {
        let j = i + 1;
        let escaped = false;
        for (let q = text.charCodeAt(j); q !== 0x22; q = text.charCodeAt(j)) {
          if (q === 0x5c) {
            const e = text.charCodeAt(j + 1);
            if (e !== 0x22 && e !== 0x5c) return undefined;
            escaped = true;
            j += 2;
          } else if (QUOTED_CHAR[q] === 1) j++;
          else return undefined; // also the end of the text: unterminated
        }
        const raw = text.slice(i + 1, j);
        into.push({ type: 'quoted', value: escaped ? raw.replace(/\\(["\\])/g, '$1') : raw });
        i = j + 1;
      } else if (ARG_CHAR[c] === 1) {
        let j = i + 1;
        while (ARG_CHAR[text.charCodeAt(j)] === 1) j++;
        into.push({ type: 'atom', value: text.slice(i, j) });
        i = j;
      } else return undefined; // a literal marker, a stray ")" or space, or nothing
      // After an argument: ")" closes the open list (and is itself an argument), a space
      // starts the next one, the end of the text ends the command outside a list.
      let d = text.charCodeAt(i);
      if (d === 0x29 && list !== null) {
        args.push({ type: 'list', items: list });
        list = null;
        d = text.charCodeAt(++i);
      }
      if (i === n && list === null) break;
      if (d !== 0x20) return undefined;
      i++;
    }
  }
  return { ok: true, command: { tag, name, args } };
}

/** The grammar's parse of one framed command (the fast path's reference; tests compare). */
export function parseWithGrammar(
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
  // /^[^ ]+ ([^ ]+)/ without a regex: this runs for every command.
  const sp = text.indexOf(' ');
  if (sp <= 0 || sp + 1 >= text.length || text.charCodeAt(sp + 1) === 0x20) return null;
  const end = text.indexOf(' ', sp + 1);
  return text.slice(sp + 1, end < 0 ? text.length : end).toUpperCase();
}
