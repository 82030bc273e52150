// RFC 5321 section 4.1 (SMTP Commands): turn one framed line into a command word and its main
// argument with the nearley grammar in command.ne. Exactly one parse is required: two would mean
// the grammar is ambiguous (a bug, covered by tests), and the line is then refused, never guessed.
import nearley from 'nearley';
import grammar from './command.gen.js';

export type Verb =
  | 'EHLO'
  | 'HELO'
  | 'MAIL'
  | 'RCPT'
  | 'DATA'
  | 'BDAT'
  | 'RSET'
  | 'NOOP'
  | 'HELP'
  | 'QUIT'
  | 'STARTTLS'
  | 'AUTH'
  | 'VRFY'
  | 'EXPN'
  | 'ETRN';

export interface Command {
  verb: Verb;
  /** The EHLO/HELO name, AUTH mechanism, MAIL/RCPT path text, ... as sent; null when absent. */
  arg: string | null;
}

export type ParseResult =
  | { ok: true; command: Command }
  | { ok: false; reason: 'syntax' | 'ambiguous' };

interface Tree {
  verb: Verb;
  arg: { start: number; length: number } | null;
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

/** Parse one line; trailing spaces and tabs are ignored (Postfix and Exim ignore them too). */
export function parseCommand(line: string): ParseResult {
  const text = trimEnd(line);
  const trees = parseAll(text);
  if (trees.length === 0) return { ok: false, reason: 'syntax' };
  if (trees.length > 1) return { ok: false, reason: 'ambiguous' };
  const { verb, arg } = trees[0]!;
  return {
    ok: true,
    command: { verb, arg: arg ? text.slice(arg.start, arg.start + arg.length) : null },
  };
}

export function trimEnd(line: string): string {
  return line.replace(/[ \t]+$/, '');
}

/** The command word in upper case (up to the first space), or '' for an empty line. */
export function verbOf(line: string): string {
  const sp = line.indexOf(' ');
  return (sp < 0 ? trimEnd(line) : line.slice(0, sp)).toUpperCase();
}
