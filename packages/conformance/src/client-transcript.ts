// Client transcripts (README.md, "Client transcripts"): a conversation recorded from the
// CLIENT's side, judged against a dialect's client state machine (`dialect.client`, issue 18).
// The same file format and line grammar as the server transcripts (transcript.ne, one nearley
// parse per line), with the roles of the two sides swapped: `S:` lines are what the real server
// sent — the input, exact bytes — and `C:` lines what our client must send — the output, a
// pattern that may hold placeholders. Two additions, both parsed by the same grammar:
//
//   @role client    required: a server transcript parsed here, or a client one parsed by
//                   parseTranscript, fails loudly instead of being judged the wrong way round
//   L: / L|         what the local client is given (the outcome's `toLocal`), a pattern; the
//                   line is parsed as an `S:` line, so escapes and placeholders are the same
//
// Markers keep the recorder's meaning (they say which side did what on the wire): `!tls` our
// client started TLS, `!eof` our client closed, `!close` the server closed (its end goes to the
// session's eof()), `!plaintext` our client went on without TLS (an explicit opt-in such as
// SMTP's `tls: may`). `!injected`, between the go-ahead's server lines and `S|` lines that
// continue the same read, marks where the go-ahead ends and forged bytes begin (the
// response-injection case): the properties never cut the read there.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { concat } from './bytes.js';
import { ConformanceError } from './errors.js';
import { checkPlaceholder } from './pattern.js';
import { parseLine, type Segment } from './transcript.js';

export type ClientStep =
  /** One read from the server: the client session's input, exact bytes. */
  | { type: 'server'; bytes: Uint8Array; line: number }
  /** Bytes our client writes to the server (a `send`, or a close's `data`): a pattern. */
  | { type: 'client'; segments: Segment[]; line: number }
  /** The server closed its side: the session's eof() is called here. */
  | { type: 'close'; line: number }
  /** Our client started TLS after the server's go-ahead (outcome `starttls`). */
  | { type: 'tls'; line: number }
  /** Our client closed the connection (outcome `close`). */
  | { type: 'eof'; line: number }
  /** Our client went on in plaintext (outcome `plaintext`, only where an option allows it). */
  | { type: 'plaintext'; line: number };

export interface ClientTranscript {
  file: string;
  name: string;
  headers: Record<string, string>;
  steps: ClientStep[];
  /** What the outcome writes to the local client (`toLocal`), as a pattern; null: not judged. */
  local: Segment[] | null;
  /** `!state PATH = JSON`: fields of the starttls action's `state`. */
  state: { path: string; value: unknown; line: number }[];
  options: Record<string, unknown>;
  limits: Record<string, unknown>;
  /** `@after-tls BYTES`: what the server sends first inside TLS unasked (RFC 2817's answer to
   * the upgrading OPTIONS): the engine replay's server sends it, the local client must not see it. */
  afterTls: Uint8Array | null;
  /** `!injected`: the server octet where the go-ahead ends and forged bytes in its read begin. */
  injectedAt: number | null;
  /** The client context's names (`@hostname`, `@server-name`), as when it was recorded. */
  hostname: string;
  serverName: string;
}

/** The names a recording uses unless its headers say otherwise (the interop tests' names). */
export const CLIENT_HOSTNAME = 'client.example.test';
export const CLIENT_SERVER_NAME = 'localhost';

const REQUIRED_HEADERS = ['role', 'server', 'client', 'dialect'];
const OUTCOMES = new Set(['tls', 'eof', 'plaintext']);
const MARKERS = new Set(['tls', 'eof', 'plaintext', 'close', 'state', 'injected']);
/** Placeholders a client line may hold: one line's worth each, never a line end, so an extra
 * command cannot hide inside one (`any` and `untagged` are for server text). */
export const CLIENT_PLACEHOLDERS = new Set(['text', 'word', 'host', 'number', 'words']);

function fail(file: string, line: number, message: string): never {
  throw new ConformanceError('TLSPROXY_ERR_CONFORMANCE_TRANSCRIPT', `${file}:${line}: ${message}`);
}

function parseJson(file: string, line: number, what: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return fail(file, line, `${what} is not valid JSON: ${text}`);
  }
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
      constraints: Cons<{ must: boolean; word: string }>;
      recorded: { rec: Cons<number> } | null;
    };

/** Items of one parsed data line to segments (adjacent bytes gathered, as transcript.ts does). */
function segmentsOf(items: RawItem[], bad: (m: string) => never): Segment[] {
  const out: Segment[] = [];
  let run: number[] = [];
  const flush = (): void => {
    if (run.length > 0) out.push({ type: 'bytes', bytes: new Uint8Array(run) });
    run = [];
  };
  for (const it of items) {
    if (it.type === 'placeholder') {
      flush();
      const seg: Segment = {
        type: 'placeholder',
        name: it.name,
        constraints: unCons(it.constraints),
        recorded: it.recorded ? new Uint8Array(unCons(it.recorded.rec)) : null,
      };
      const problem = checkPlaceholder(seg);
      if (problem) bad(problem);
      out.push(seg);
    } else if (it.type === 'repeat') {
      if (!(it.count <= 4 * 1024 * 1024)) bad(`repeat count ${it.count} too large`);
      for (let i = 0; i < it.count; i++) run.push(it.byte);
    } else if (it.type === 'hex') for (const b of unCons(it.bytes)) run.push(b);
    else for (const b of it.bytes) run.push(b);
  }
  flush();
  return out;
}

const bytesOnly = (segments: Segment[]): Uint8Array =>
  concat(segments.map((s) => (s.type === 'bytes' ? s.bytes : new Uint8Array())));

export function parseClientTranscript(
  source: string,
  file = '<client transcript>',
): ClientTranscript {
  const headers: Record<string, string> = {};
  const steps: ClientStep[] = [];
  const state: ClientTranscript['state'] = [];
  let local: Segment[] | null = null;
  let outcomeAt = -1;
  let lastLocal = false;
  let injectedAt: number | null = null;
  /** Set by !injected: the next line must continue the server read above it. */
  let injecting = false;
  let serverOctets = 0;
  const serverParts = new Map<ClientStep, Uint8Array[]>();
  const lines = source.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1;
    let text = lines[i]!.replace(/\r$/, '');
    if (text.trim() === '' || text.startsWith('#')) continue;
    // Judged the wrong way round, a server transcript would mislead: say so at once.
    if (!text.startsWith('@') && headers.role !== 'client') {
      fail(
        file,
        n,
        headers.role === undefined
          ? 'missing header @role client before the conversation (a server transcript?)'
          : `@role ${headers.role}: a client transcript says @role client`,
      );
    }
    // L: / L| lines are parsed by the grammar as server lines, then given to the local side.
    const isLocal = /^L[:|] /.test(text);
    if (isLocal) text = `S${text.slice(1)}`;
    const raw = parseLine(text);
    if ('error' in raw) fail(file, n, `${raw.error}: ${lines[i]!.slice(0, 80)}`);
    if (raw.kind === 'header') {
      if (steps.length > 0 || local) fail(file, n, 'headers must come before the conversation');
      headers[raw.key] = raw.value;
      continue;
    }
    if (injecting && !(raw.kind === 'data' && raw.from === 'server' && raw.cont && !isLocal)) {
      fail(file, n, '!injected must be followed by S| lines: the forged bytes in the same read');
    }
    if (raw.kind === 'directive') {
      lastLocal = false;
      if (raw.name === 'injected') {
        if (steps.at(-1)?.type !== 'server' || injectedAt !== null || outcomeAt >= 0) {
          fail(file, n, "!injected goes once, right after the go-ahead's server lines");
        }
        injectedAt = serverOctets;
        injecting = true;
        continue;
      }
      if (!MARKERS.has(raw.name)) {
        fail(
          file,
          n,
          `!${raw.name} is not a client-transcript directive (known: ${[...MARKERS].map((m) => `!${m}`).join(' ')})`,
        );
      }
      if (raw.name === 'state') {
        state.push({
          path: raw.path!,
          value: parseJson(file, n, `!state ${raw.path}`, raw.value!),
          line: n,
        });
        continue;
      }
      if (outcomeAt >= 0 && raw.name !== 'close') {
        fail(file, n, `!${raw.name} after the outcome (one of !tls, !eof, !plaintext per file)`);
      }
      if (raw.name === 'tls' && steps.at(-1)?.type !== 'server') {
        fail(file, n, '!tls must follow the server chunk that holds the go-ahead');
      }
      if (OUTCOMES.has(raw.name)) outcomeAt = steps.length;
      steps.push({ type: raw.name as 'tls' | 'eof' | 'plaintext' | 'close', line: n });
      continue;
    }
    const items = unCons(raw.items as Cons<RawItem>);
    const segments = segmentsOf(items, (m) => fail(file, n, m));
    if (isLocal) {
      if (outcomeAt < 0)
        fail(
          file,
          n,
          'L: lines say what the outcome gives the local client: after !tls, !eof or !plaintext',
        );
      if (raw.cont && !lastLocal) fail(file, n, 'local continuation without an L: line');
      if (!raw.cont && local) fail(file, n, 'one L: block per transcript (continue it with L|)');
      local = [...(local ?? []), ...segments];
      lastLocal = true;
      continue;
    }
    lastLocal = false;
    const prev = steps.at(-1);
    if (raw.from === 'server') {
      serverOctets += bytesOnly(segments).length;
      injecting = false;
    }
    if (raw.from === 'client') {
      for (const s of segments) {
        if (s.type === 'placeholder' && !CLIENT_PLACEHOLDERS.has(s.name)) {
          fail(
            file,
            n,
            `\${${s.name}} cannot stand in a client line (one line's worth only: ${[...CLIENT_PLACEHOLDERS].join(', ')})`,
          );
        }
      }
      if (outcomeAt >= 0) fail(file, n, 'our client sends nothing after its outcome');
      if (raw.cont) {
        if (prev?.type !== 'client') fail(file, n, 'client continuation without a chunk');
        prev.segments.push(...segments);
      } else steps.push({ type: 'client', segments, line: n });
      continue;
    }
    if (segments.some((s) => s.type === 'placeholder')) {
      fail(
        file,
        n,
        'server lines of a client transcript are its input: exact bytes, no placeholders',
      );
    }
    if (outcomeAt >= 0 && steps[outcomeAt]!.type === 'tls') {
      fail(
        file,
        n,
        'nothing from the server after !tls (bytes in the go-ahead read belong before it)',
      );
    }
    if (steps.some((s) => s.type === 'close'))
      fail(file, n, 'nothing from the server after !close');
    if (raw.cont) {
      if (prev?.type !== 'server') fail(file, n, 'server continuation without a chunk');
      serverParts.get(prev)!.push(bytesOnly(segments));
    } else {
      const step: ClientStep = { type: 'server', bytes: new Uint8Array(), line: n };
      serverParts.set(step, [bytesOnly(segments)]);
      steps.push(step);
    }
  }
  for (const [step, parts] of serverParts) if (step.type === 'server') step.bytes = concat(parts);
  for (const h of REQUIRED_HEADERS) if (!(h in headers)) fail(file, 1, `missing header @${h}`);
  if (headers.role !== 'client') {
    fail(file, 1, `@role ${headers.role}: a client transcript says @role client`);
  }
  if (state.length > 0 && steps[outcomeAt]?.type !== 'tls') {
    fail(file, state[0]!.line, "!state asserts the starttls action's state: it needs !tls");
  }
  const options = headers.options ? parseJson(file, 1, '@options', headers.options) : {};
  const limits = headers.limits ? parseJson(file, 1, '@limits', headers.limits) : {};
  let afterTls: Uint8Array | null = null;
  if (headers['after-tls'] !== undefined) {
    // The value in the bytes notation of S: lines (escapes, hex runs), parsed by the same grammar.
    const raw = parseLine(`S: ${headers['after-tls']}`);
    if ('error' in raw || raw.kind !== 'data')
      fail(file, 1, `@after-tls: ${'error' in raw ? raw.error : 'not bytes'}`);
    const segs = segmentsOf(unCons(raw.items as Cons<RawItem>), (m) => fail(file, 1, m));
    if (segs.some((x) => x.type === 'placeholder')) fail(file, 1, '@after-tls: exact bytes only');
    afterTls = bytesOnly(segs);
  }
  return {
    afterTls,
    file,
    name: basename(file).replace(/\.txt$/, ''),
    headers,
    steps,
    local,
    state,
    injectedAt,
    options: options as Record<string, unknown>,
    limits: limits as Record<string, unknown>,
    hostname: headers.hostname ?? CLIENT_HOSTNAME,
    serverName: headers['server-name'] ?? CLIENT_SERVER_NAME,
  };
}

export function loadClientTranscript(file: string): ClientTranscript {
  return parseClientTranscript(readFileSync(file, 'utf8'), file);
}

/** The outcome the transcript expects: starttls, close, plaintext, or none (still open). */
export function expectedOutcome(t: ClientTranscript): 'starttls' | 'close' | 'plaintext' | 'open' {
  for (const s of t.steps) {
    if (s.type === 'tls') return 'starttls';
    if (s.type === 'eof') return 'close';
    if (s.type === 'plaintext') return 'plaintext';
  }
  return 'open';
}

/** Every server byte, in order (what the real server sent while recording). */
export function serverBytes(t: ClientTranscript): Uint8Array {
  return concat(t.steps.flatMap((s) => (s.type === 'server' ? [s.bytes] : [])));
}
