// RFC 5321 section 4.1 (SMTP Commands): turn one framed line into a command word and its main
// argument as the nearley grammar in command.ne says. The grammar is the specification and the
// tests' reference (exactly one parse per line: two would be a bug, covered by tests); at run
// time a scan per verb gives its answer (scanCommand), as nearley cost ~2 ms per KB of line.
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
  return scanCommand(trimEnd(line));
}

/** The grammar's answer for a (trimmed) line, shaped as scanCommand's: the reference it is
 * tested against. */
export function parseWithGrammar(text: string): ParseResult {
  const trees = parseAll(text);
  if (trees.length === 0) return SYNTAX;
  if (trees.length > 1) return { ok: false, reason: 'ambiguous' };
  const { verb, arg } = trees[0]!;
  return {
    ok: true,
    command: { verb, arg: arg ? text.slice(arg.start, arg.start + arg.length) : null },
  };
}

const SYNTAX = { ok: false, reason: 'syntax' } as const;

// command.ne's character classes, over latin1 code units.
const isText = (c: number) => (c >= 0x20 && c <= 0x7e) || (c >= 0x80 && c <= 0xff);
const isDomainChar = (c: number) => (c >= 0x21 && c <= 0x7e) || (c >= 0x80 && c <= 0xff);
const isMechChar = (c: number) =>
  (c >= 0x30 && c <= 0x39) ||
  (c >= 0x41 && c <= 0x5a) ||
  (c >= 0x61 && c <= 0x7a) ||
  c === 0x5f ||
  c === 0x2d;
const isDigit = (c: number) => c >= 0x30 && c <= 0x39;

/** `s` is non-empty and every code unit is in the class. */
function all(s: string, ok: (c: number) => boolean): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) if (!ok(s.charCodeAt(i))) return false;
  return true;
}

/** `s` in upper case where it is an ASCII letter; other code units as they are. */
function upperAscii(s: string): string {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    out += String.fromCharCode(c >= 0x61 && c <= 0x7a ? c - 0x20 : c);
  }
  return out;
}

const VERBS: ReadonlySet<string> = new Set<Verb>([
  'EHLO',
  'HELO',
  'MAIL',
  'RCPT',
  'DATA',
  'BDAT',
  'RSET',
  'NOOP',
  'HELP',
  'QUIT',
  'STARTTLS',
  'AUTH',
  'VRFY',
  'EXPN',
  'ETRN',
]);

const ok = (verb: Verb, arg: string | null): ParseResult => ({ ok: true, command: { verb, arg } });

/**
 * command.ne without nearley: the grammar is regular and each line has one parse, so a scan
 * per verb gives the same answer (a property test holds it to the grammar's, argument
 * included). nearley cost ~2 ms per KB of line — 99 long EHLOs, 60 ms of the proxy's thread —
 * where a scan costs microseconds.
 */
export function scanCommand(text: string): ParseResult {
  const sp = text.indexOf(' ');
  const word = sp < 0 ? text : text.slice(0, sp);
  const rest = sp < 0 ? null : text.slice(sp + 1);
  if (word.length > 8) return SYNTAX;
  const verb = upperAscii(word);
  if (!VERBS.has(verb)) return SYNTAX;
  switch (verb as Verb) {
    case 'EHLO':
    case 'HELO':
      return rest !== null && all(rest, isDomainChar) ? ok(verb as Verb, rest) : SYNTAX;
    case 'MAIL':
      return rest !== null && upperAscii(rest.slice(0, 5)) === 'FROM:' && all(rest.slice(5), isText)
        ? ok('MAIL', rest.slice(5))
        : SYNTAX;
    case 'RCPT':
      return rest !== null && upperAscii(rest.slice(0, 3)) === 'TO:' && all(rest.slice(3), isText)
        ? ok('RCPT', rest.slice(3))
        : SYNTAX;
    case 'DATA':
    case 'RSET':
    case 'QUIT':
    case 'STARTTLS':
      return rest === null ? ok(verb as Verb, null) : SYNTAX;
    case 'BDAT': {
      if (rest === null) return SYNTAX;
      const i = rest.indexOf(' ');
      const size = i < 0 ? rest : rest.slice(0, i);
      if (!all(size, isDigit)) return SYNTAX;
      if (i >= 0 && upperAscii(rest.slice(i + 1)) !== 'LAST') return SYNTAX;
      return ok('BDAT', size);
    }
    case 'NOOP':
    case 'HELP':
      if (rest === null) return ok(verb as Verb, null);
      return all(rest, isText) ? ok(verb as Verb, rest) : SYNTAX;
    case 'AUTH': {
      if (rest === null) return SYNTAX;
      const i = rest.indexOf(' ');
      const mechanism = i < 0 ? rest : rest.slice(0, i);
      if (!all(mechanism, isMechChar)) return SYNTAX;
      if (i >= 0 && !all(rest.slice(i + 1), isText)) return SYNTAX;
      return ok('AUTH', mechanism);
    }
    default:
      // VRFY, EXPN, ETRN
      return rest !== null && all(rest, isText) ? ok(verb as Verb, rest) : SYNTAX;
  }
}

/** Without its trailing spaces and tabs (a loop: a regex would be quadratic on inner runs). */
export function trimEnd(line: string): string {
  let end = line.length;
  while (end > 0) {
    const c = line.charCodeAt(end - 1);
    if (c !== 0x20 && c !== 0x09) break;
    end--;
  }
  return end === line.length ? line : line.slice(0, end);
}

/** The command word in upper case (up to the first space), or '' for an empty line. */
export function verbOf(line: string): string {
  const sp = line.indexOf(' ');
  return (sp < 0 ? trimEnd(line) : line.slice(0, sp)).toUpperCase();
}
