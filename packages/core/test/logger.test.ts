// Log forging (issue 14, finding 6): peer-controlled text — an SNI name, an XMPP `to` or
// `version`, a command echo — must never start a line of its own or reach a terminal as an
// escape sequence in the text format. JSON (pino) escapes by itself; checked here as well.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConnectionLog } from '../src/connection-log.js';
import {
  consoleLogger,
  escapeLogText,
  type Level,
  pinoLogger,
  silentLogger,
} from '../src/logger.js';

const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/;
/** Bidi overrides and isolates, zero-width characters (Trojan Source): never raw in a line. */
const INVISIBLE = /[\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/;

function textLines(message: string, fields: Record<string, unknown>): string[] {
  const out: string[] = [];
  consoleLogger('debug', (l) => out.push(l)).log('info', message, fields);
  return out;
}

describe('text log format', () => {
  it('a forged line in an XMPP attribute stays on its own line, escaped', () => {
    const to = 'example.org\n2026-12-04T00:00:00.000Z info handed off conn=evil';
    const [line, ...rest] = textLines('stream header', { to, sni: 'a\r\nb', cmd: '\u001b[31mX' });
    expect(rest).toEqual([]);
    expect(line).not.toMatch(UNSAFE);
    expect(line).toContain('to="example.org\\n2026');
    expect(line).toContain('cmd=\\x1b[31mX');
  });

  it('any message and field values give exactly one line without control characters', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: 'binary' }),
        fc.dictionary(
          fc.string({ unit: 'binary', maxLength: 8 }),
          fc.oneof(fc.string({ unit: 'binary' }), fc.integer(), fc.constant(null)),
        ),
        (message, fields) => {
          const lines = textLines(message, fields);
          expect(lines).toHaveLength(1);
          expect(lines[0]).not.toMatch(UNSAFE);
        },
      ),
    );
  });

  it('a right-to-left override in an SNI name or certificate subject is written escaped', () => {
    const [line] = textLines('server name refused', {
      sni: 'evil\u202emoc.example',
      cn: 'a\u2066b',
    });
    expect(line).not.toMatch(INVISIBLE);
    expect(line).toContain('sni=evil\\u202emoc.example');
  });

  it('escapeLogText keeps plain text as it is', () => {
    expect(escapeLogText('imap.example.org:143')).toBe('imap.example.org:143');
    expect(escapeLogText('a\u2028b\u0085c\u007f')).toBe('a\\u2028b\\x85c\\x7f');
  });
});

describe('JSON log format', () => {
  it('peer text stays inside one JSON line', () => {
    const out: string[] = [];
    const log = pinoLogger({ destination: { write: (l: string) => out.push(l) } });
    log.log('info', 'x\ny', { to: 'a\nb\u2028c' });
    const text = out.join('');
    expect(text.trimEnd().split('\n')).toHaveLength(1);
    expect(JSON.parse(text).to).toBe('a\nb\u2028c');
  });

  it('controls, DEL, C1, bidi and zero-width characters are escaped and parse back the same', () => {
    fc.assert(
      fc.property(
        fc.string({
          unit: fc.constantFrom(
            'a',
            ' ',
            '"',
            '\\',
            '\u202e',
            '\u2066',
            '\u200b',
            '\ufeff',
            '\u061c',
            '\u2028',
            '\n',
            '\u001b',
            '\u007f',
            '\u0085',
            '\u009b',
          ),
        }),
        (to) => {
          const out: string[] = [];
          pinoLogger({ destination: { write: (l: string) => out.push(l) } }).log('info', to, {
            to,
          });
          const text = out.join('');
          expect(text).not.toMatch(INVISIBLE);
          expect(text.trimEnd()).not.toMatch(UNSAFE);
          expect(text.trimEnd().split('\n')).toHaveLength(1);
          const o = JSON.parse(text);
          expect([o.to, o.msg]).toEqual([to, to]);
        },
      ),
    );
  });
});

describe('Logger.enabled: lines of a level nobody writes are not built', () => {
  it('consoleLogger, pinoLogger and silentLogger say which levels they write', () => {
    const text = consoleLogger('warn', () => {});
    expect(['debug', 'info', 'warn', 'error'].map((l) => text.enabled?.(l as Level))).toEqual([
      false,
      false,
      true,
      true,
    ]);
    const json = pinoLogger({ level: 'info', destination: { write() {} } });
    expect(json.enabled?.('debug')).toBe(false);
    expect(json.enabled?.('info')).toBe(true);
    expect(silentLogger.enabled?.('error')).toBe(false);
  });

  it("a connection's lines skip a logger that writes nothing, and reach one without enabled()", () => {
    const quiet = new ConnectionLog(
      {
        enabled: () => false,
        log() {
          throw new Error('built a line nobody writes');
        },
      },
      'c1',
      'imap',
      undefined,
    );
    expect(() => quiet.log('info', 'accepted', { remote: 'x' })).not.toThrow();
    expect(quiet.enabled('error')).toBe(false);
    const lines: string[] = [];
    const plain = new ConnectionLog(
      { log: (_l, m) => void lines.push(m) },
      'c2',
      'imap',
      undefined,
    );
    plain.log('debug', 'preamble input');
    expect(plain.enabled('debug')).toBe(true);
    expect(lines).toEqual(['preamble input']);
  });
});
