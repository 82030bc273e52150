// Transcript files (README.md, "Transcript format"): lines framed by hand, each handed to the
// nearley grammar in transcript.ne, exactly one parse required, then assembled into steps.
//
// Cost (issue 14): each line is its own nearley parse, nothing carried over from one line to the
// next, and assembling is linear: adjacent bytes are gathered and copied once, and a chunk
// continued over many `C|` lines is joined once at the end.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import nearley from 'nearley';
import { concat, fromLatin1 } from './bytes.js';
import { ConformanceError } from './errors.js';
import { checkPlaceholder, PLACEHOLDERS } from './pattern.js';
import grammar from './transcript.gen.js';

export interface Constraint {
  must: boolean;
  word: string;
}

export type Segment =
  | { type: 'bytes'; bytes: Uint8Array }
  | { type: 'placeholder'; name: string; constraints: Constraint[]; recorded: Uint8Array | null };

export type Step =
  /** One read from the client (a chunk as TCP delivered it when recorded). */
  | { type: 'client'; bytes: Uint8Array; line: number }
  /** One read from the server; matched as a pattern, chunking not judged. */
  | { type: 'server'; segments: Segment[]; line: number; relax?: string[] }
  /** The go-ahead was the last server output: TLS starts here. */
  | { type: 'tls'; line: number }
  /** Either the go-ahead and TLS, or a close (pipelined bytes after STARTTLS: DESIGN allows both). */
  | { type: 'tls-or-close'; line: number }
  /** The server closed the connection. */
  | { type: 'close'; line: number }
  /** The client closed its sending side. */
  | { type: 'eof'; line: number }
  /** The backend receives nothing the client sent before TLS. */
  | { type: 'no-leftover'; line: number }
  /** A field of the hand-off's dialect state. */
  | { type: 'state'; path: string; value: unknown; line: number };

export interface Transcript {
  file: string;
  name: string;
  headers: Record<string, string>;
  steps: Step[];
  /** Dialect options and limits the server's configuration corresponds to (@options, @limits). */
  options: Record<string, unknown>;
  limits: Record<string, unknown>;
  /** `!allow` directives: strict checks this whole transcript opts out of. */
  allow: string[];
}

type Cons<T> = { item: T; rest: Cons<T> | null } | null;
function unCons<T>(list: Cons<T>): T[] {
  const out: T[] = [];
  for (let c = list; c; c = c.rest) out.push(c.item);
  return out.reverse();
}

type RawItem =
  | { type: 'bytes'; bytes: number[] }
  | { type: 'hex'; bytes: Cons<number> }
  | { type: 'repeat'; count: number; byte: number }
  | {
      type: 'placeholder';
      name: string;
      constraints: Cons<Constraint>;
      recorded: { rec: Cons<number> } | null;
    };
type RawLine =
  | { kind: 'header'; key: string; value: string }
  | { kind: 'data'; from: 'client' | 'server'; cont: boolean; items: Cons<RawItem> }
  | { kind: 'directive'; name: string; path: string | null; value: string | null };

const compiled = nearley.Grammar.fromCompiled(grammar);
/** A `\\*N(x)` larger than this is a mistake, not a transcript (overlong lines need ~10 KiB). */
export const MAX_REPEAT = 4 * 1024 * 1024;
const REQUIRED_HEADERS = ['server', 'client', 'dialect'];
const DIRECTIVES = new Set([
  'tls',
  'tls-or-close',
  'close',
  'eof',
  'no-leftover',
  'state',
  'allow',
  'relax',
]);
/** `!allow WHAT`: a strict check the whole transcript opts out of. */
export const ALLOWS = new Set(['auth-before-tls']);
/** `!relax WHAT`: a strict check the server chunk above opts out of. */
export const RELAXES = new Set(['replies']);

function fail(file: string, line: number, message: string): never {
  throw new ConformanceError('TLSPROXY_ERR_CONFORMANCE_TRANSCRIPT', `${file}:${line}: ${message}`);
}

/** Parse one framed line; exactly one parse, or the line (or the grammar) is wrong. */
export function parseLine(text: string): RawLine | { error: string } {
  const parser = new nearley.Parser(compiled);
  try {
    parser.feed(text);
  } catch (err) {
    const offset = (err as { offset?: number }).offset;
    return { error: `syntax error at column ${(offset ?? 0) + 1}` };
  }
  if (parser.results.length === 0) return { error: 'incomplete line' };
  if (parser.results.length > 1) return { error: 'ambiguous line (grammar bug)' };
  return parser.results[0] as RawLine;
}

/** Items to segments; adjacent bytes are gathered and copied once (not once per item). */
function segmentsOf(items: RawItem[], fail: (message: string) => never): Segment[] {
  const out: Segment[] = [];
  let run: number[] = [];
  const flush = (): void => {
    if (run.length > 0) out.push({ type: 'bytes', bytes: new Uint8Array(run) });
    run = [];
  };
  for (const it of items) {
    switch (it.type) {
      case 'placeholder':
        flush();
        out.push({
          type: 'placeholder',
          name: it.name,
          constraints: unCons(it.constraints),
          recorded: it.recorded ? new Uint8Array(unCons(it.recorded.rec)) : null,
        });
        break;
      case 'repeat':
        if (!(it.count <= MAX_REPEAT)) fail(`repeat count ${it.count} over ${MAX_REPEAT}`);
        for (let i = 0; i < it.count; i++) run.push(it.byte);
        break;
      case 'hex':
        for (const b of unCons(it.bytes)) run.push(b);
        break;
      case 'bytes':
        for (const b of it.bytes) run.push(b);
        break;
    }
  }
  flush();
  return out;
}

function parseJson(file: string, line: number, what: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return fail(file, line, `${what} is not valid JSON: ${text}`);
  }
}

export function parseTranscript(source: string, file = '<transcript>'): Transcript {
  // Header names come from the file: a null-prototype table, so `@constructor` is just a name.
  const headers: Record<string, string> = Object.create(null);
  const steps: Step[] = [];
  // Continuation lines add to a client chunk: its parts are joined once, at the end.
  const parts = new Map<Step, Uint8Array[]>();
  let tlsAt = -1;
  const allow: string[] = [];
  // Frame by hand: one line per record, CRLF tolerated, comments and blank lines skipped.
  const lines = source.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1;
    const text = lines[i]!.replace(/\r$/, '');
    if (text.trim() === '' || text.startsWith('#')) continue;
    const raw = parseLine(text);
    if ('error' in raw) fail(file, n, `${raw.error}: ${text.slice(0, 80)}`);
    if (raw.kind === 'header') {
      if (steps.length > 0) fail(file, n, 'headers must come before the conversation');
      headers[raw.key] = raw.value;
      continue;
    }
    if (raw.kind === 'directive') {
      if (!DIRECTIVES.has(raw.name)) fail(file, n, `unknown directive !${raw.name}`);
      if (raw.name === 'allow' || raw.name === 'relax') {
        const known = raw.name === 'allow' ? ALLOWS : RELAXES;
        const what = raw.value!.split(' ');
        for (const w of what) {
          if (!known.has(w))
            fail(file, n, `unknown !${raw.name} ${w} (known: ${[...known].join(', ')})`);
        }
        if (raw.name === 'allow') allow.push(...what);
        else {
          const prev = steps.at(-1);
          if (prev?.type !== 'server') fail(file, n, '!relax must follow a server chunk (S: / S|)');
          prev.relax = [...(prev.relax ?? []), ...what];
        }
        continue;
      }
      if (raw.name === 'state') {
        const value = parseJson(file, n, `!state ${raw.path}`, raw.value!);
        steps.push({ type: 'state', path: raw.path!, value, line: n });
      } else {
        if (raw.name === 'tls' || raw.name === 'tls-or-close') {
          if (tlsAt >= 0) fail(file, n, 'only one !tls per transcript');
          tlsAt = steps.length;
        }
        steps.push({
          type: raw.name as 'tls' | 'tls-or-close' | 'close' | 'eof' | 'no-leftover',
          line: n,
        });
      }
      continue;
    }
    if (tlsAt >= 0) fail(file, n, 'no conversation after !tls (only assertions)');
    const segments = segmentsOf(unCons(raw.items), (m) => fail(file, n, m));
    for (const s of segments) {
      if (s.type !== 'placeholder') continue;
      if (raw.from === 'client') fail(file, n, 'placeholders are for server text only');
      const problem = checkPlaceholder(s);
      if (problem) fail(file, n, problem);
    }
    const prev = steps.at(-1);
    if (raw.cont) {
      if (prev?.type !== raw.from) fail(file, n, `${raw.from} continuation without a chunk`);
      if (prev.type === 'client') parts.get(prev)!.push(bytesOf(segments));
      else if (prev.type === 'server') for (const s of segments) prev.segments.push(s);
    } else if (raw.from === 'client') {
      const step: Step = { type: 'client', bytes: new Uint8Array(), line: n };
      parts.set(step, [bytesOf(segments)]);
      steps.push(step);
    } else {
      steps.push({ type: 'server', segments, line: n });
    }
  }
  for (const [step, chunk] of parts) if (step.type === 'client') step.bytes = concat(chunk);
  for (const h of REQUIRED_HEADERS) {
    if (!(h in headers)) fail(file, 1, `missing header @${h}`);
  }
  // A client transcript (S: and C: swapped) judged as a server one would pass or fail for the
  // wrong reasons: `run --role client` reads those.
  if (headers.role !== undefined && headers.role !== 'server')
    fail(file, 1, `@role ${headers.role}: a server transcript; run it with --role ${headers.role}`);
  const options = headers.options ? parseJson(file, 1, '@options', headers.options) : {};
  const limits = headers.limits ? parseJson(file, 1, '@limits', headers.limits) : {};
  return {
    file,
    name: basename(file).replace(/\.txt$/, ''),
    headers,
    steps,
    options: options as Record<string, unknown>,
    limits: limits as Record<string, unknown>,
    allow,
  };
}

function bytesOf(segments: Segment[]): Uint8Array {
  return concat(segments.map((s) => (s.type === 'bytes' ? s.bytes : new Uint8Array())));
}

export function loadTranscript(file: string): Transcript {
  return parseTranscript(readFileSync(file, 'utf8'), file);
}

/** The server's expected output as one pattern, chunk boundaries dropped. */
export function serverSegments(t: Transcript): Segment[] {
  return t.steps.flatMap((s) => (s.type === 'server' ? s.segments : []));
}

/** The exact bytes the server sent when recorded, or null if a placeholder has no recording. */
export function recordedServerBytes(t: Transcript): Uint8Array | null {
  const parts: Uint8Array[] = [];
  for (const s of serverSegments(t)) {
    const b = s.type === 'bytes' ? s.bytes : s.recorded;
    if (b === null) return null;
    parts.push(b);
  }
  return concat(parts);
}

export function clientChunks(t: Transcript): Uint8Array[] {
  return t.steps.flatMap((s) => (s.type === 'client' ? [s.bytes] : []));
}

export { fromLatin1, PLACEHOLDERS };
