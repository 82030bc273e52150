// RFC 9112 section 3 (Request Line) and section 5 (Field Syntax): one framed line through the
// nearley grammar in request.ne. The framer feeds a line as its octets arrive, so garbage (a TLS
// ClientHello sent to the plaintext port, a binary probe) is refused at its first bad octet
// instead of after a full line. Exactly one parse is required at the line end: two would mean
// the grammar is ambiguous (a bug, covered by tests) and the request is refused, never guessed.
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

/** Incremental parse of one line: feed() as octets arrive, finish() at the line end. */
export class LineParser {
  private readonly parser: nearley.Parser;
  private text = '';
  private failed = false;

  constructor(readonly kind: LineKind) {
    this.parser = new nearley.Parser(grammars[kind]);
  }

  /** False once the line can no longer be valid, whatever follows. */
  feed(chunk: string): boolean {
    if (this.failed) return false;
    this.text += chunk;
    try {
      this.parser.feed(chunk);
    } catch {
      this.failed = true;
    }
    return !this.failed;
  }

  get ok(): boolean {
    return !this.failed;
  }

  finishRequest(): LineResult<RequestLine> {
    const r = this.results<RequestTree>();
    if (!r.ok) return r;
    const t = r.value;
    return {
      ok: true,
      value: {
        method: slice(this.text, t.method),
        target: slice(this.text, t.target),
        version: `HTTP/${t.version.major}.${t.version.minor}`,
        major: t.version.major,
        minor: t.version.minor,
      },
    };
  }

  finishField(): LineResult<[string, string]> {
    const r = this.results<FieldTree>();
    if (!r.ok) return r;
    const { name, value } = r.value;
    return { ok: true, value: [slice(this.text, name), value ? slice(this.text, value) : ''] };
  }

  private results<T>(): LineResult<T> {
    if (this.failed) return { ok: false, reason: 'syntax' };
    const results = this.parser.results as T[];
    if (results.length === 0) return { ok: false, reason: 'syntax' };
    if (results.length > 1) return { ok: false, reason: 'ambiguous' };
    return { ok: true, value: results[0]! };
  }
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
  const p = new LineParser('request');
  p.feed(text);
  return p.finishRequest();
}

export function parseFieldLine(text: string): LineResult<[string, string]> {
  const p = new LineParser('field');
  p.feed(text);
  return p.finishField();
}

function slice(text: string, span: Span): string {
  return text.slice(span.start, span.start + span.length);
}
