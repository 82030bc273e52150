// Logging. The engine talks to one small interface, `Logger.log(level, message, fields)`, so any
// logger can sit behind it. Two are built in:
//
// - pinoLogger(): structured JSON, one object per line ({"level":"info","time":…,"msg":…,
//   …fields}), for production and log shippers;
// - consoleLogger(): human-readable text (`ISO-time level message key=value …`), for a terminal.
//
// createLogger({ format: 'json' | 'text', level, destination }) picks one. Every line about a
// connection carries `conn` (its id) and `dialect`; see README "Logs and metrics".
import pino from 'pino';

export type Level = 'debug' | 'info' | 'warn' | 'error';
export type LogFormat = 'json' | 'text';

export interface Logger {
  log(level: Level, message: string, fields?: Record<string, unknown>): void;
  /** Whether lines of `level` are written at all; when false, callers skip building them (the
   * per-connection lines are several objects each). Absent: assumed true. */
  enabled?(level: Level): boolean;
}

/** Where lines go: a stream-like object (`write(line)`), a file descriptor, or a file path. */
export type LogDestination = { write(line: string): unknown } | number | string;

export interface LoggerOptions {
  /** Least severe level written; default 'info'. */
  level?: Level;
  /** 'json' (pino, the default) or 'text' (consoleLogger). */
  format?: LogFormat;
  /** Default: standard error. */
  destination?: LogDestination;
}

const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Keys pino writes itself; a field of the same name is renamed rather than clobbering them. */
const RESERVED = new Set(['level', 'time', 'msg', 'pid', 'hostname']);

/**
 * Characters that could end a log line or steer a terminal: C0 and C1 controls, DEL, and the
 * Unicode line and paragraph separators. Peer-controlled text (an SNI name, an XMPP `to`, a
 * command echo) must never start a forged line in the text format. Also the invisible format
 * characters that reorder or hide what follows them where a viewer applies bidi (Trojan Source):
 * the bidi marks, embeddings, overrides and isolates, zero-width characters, the BOM.
 */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;

/**
 * In a JSON line (pino escapes C0 itself): the rest of UNSAFE — DEL, C1, the Unicode separators
 * and format characters — which JSON allows raw inside strings. As `\uXXXX` escapes the line
 * parses to the same text; only strings can hold them.
 */
const JSON_UNSAFE = /[\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;
const jsonEscape = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

/** `s` with every unsafe character written as a visible escape (`\n`, `\x1b`, `\u2028`). */
export function escapeLogText(s: string): string {
  return s.replace(UNSAFE, (c) => {
    const n = c.charCodeAt(0);
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    return n <= 0xff
      ? `\\x${n.toString(16).padStart(2, '0')}`
      : `\\u${n.toString(16).padStart(4, '0')}`;
  });
}

/** One `key=value` value: bare when it is a plain token, else JSON (quoted), escaped either way. */
function textValue(v: unknown): string {
  if (typeof v === 'string' && !/[\s"]/.test(v)) return escapeLogText(v);
  let json: string | undefined;
  try {
    json = JSON.stringify(v);
  } catch {
    json = JSON.stringify(String(v));
  }
  return escapeLogText(json ?? String(v));
}

export function consoleLogger(
  minLevel: Level = 'info',
  write: (line: string) => void = (l) => process.stderr.write(`${l}\n`),
): Logger {
  return {
    enabled: (level) => ORDER[level] >= ORDER[minLevel],
    log(level, message, fields = {}) {
      if (ORDER[level] < ORDER[minLevel]) return;
      const kv = Object.entries(fields)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => `${escapeLogText(k)}=${textValue(v)}`)
        .join(' ');
      write(`${new Date().toISOString()} ${level} ${escapeLogText(message)}${kv ? ` ${kv}` : ''}`);
    },
  };
}

export interface PinoLoggerOptions {
  /** Least severe level written; default 'info'. */
  level?: Level;
  /** A stream-like object, a file descriptor or a path; default standard error (fd 2). */
  destination?: LogDestination;
}

/**
 * Structured JSON logs with pino: one object per line with `level` (as a name: "info"), `time`
 * (ms since the epoch), `msg`, `pid`, `hostname` and the fields. Writes are synchronous, so no
 * line is lost when the process exits.
 */
export function pinoLogger(
  options: PinoLoggerOptions = {},
): Logger & { readonly pino: pino.Logger } {
  const dest = options.destination ?? 2;
  const stream: pino.DestinationStream =
    typeof dest === 'number' || typeof dest === 'string'
      ? pino.destination({ dest, sync: true, mkdir: typeof dest === 'string' })
      : (dest as pino.DestinationStream);
  const p = pino(
    {
      level: options.level ?? 'info',
      formatters: { level: (label) => ({ level: label }) },
      // On the line as written, so the destination keeps all it is (flush, multistream).
      hooks: { streamWrite: (line) => line.replace(JSON_UNSAFE, jsonEscape) },
    },
    stream,
  );
  return {
    pino: p,
    enabled: (level) => p.isLevelEnabled(level),
    log(level, message, fields) {
      if (!p.isLevelEnabled(level)) return;
      let obj: Record<string, unknown> | undefined;
      if (fields) {
        obj = {};
        for (const [k, v] of Object.entries(fields)) {
          if (v !== undefined) obj[RESERVED.has(k) ? `field_${k}` : k] = v;
        }
      }
      if (obj) p[level](obj, message);
      else p[level](message);
    },
  };
}

/** A logger from configuration: `format: 'json'` (default) → pino, `'text'` → consoleLogger. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? 'info';
  if ((options.format ?? 'json') === 'json')
    return pinoLogger({
      level,
      ...(options.destination !== undefined && { destination: options.destination }),
    });
  const d = options.destination;
  if (d === undefined) return consoleLogger(level);
  if (typeof d === 'object') return consoleLogger(level, (l) => void d.write(`${l}\n`));
  const stream = pino.destination({ dest: d, sync: true, mkdir: typeof d === 'string' });
  return consoleLogger(level, (l) => stream.write(`${l}\n`));
}

export const silentLogger: Logger = { log() {}, enabled: () => false };
