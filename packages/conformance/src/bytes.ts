// Byte helpers shared by the recorder, the parser and the report: one escaping scheme, so what
// the recorder writes is what the report shows and what the parser reads back.

// The octet conversions are the kit's, so a transcript and a dialect decode octets alike.
export { concat, fromLatin1, latin1 } from '@tlsproxy/dialect-kit';

export function equal(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a).equals(Buffer.from(b));
}

/** Runs of one byte at least this long are written as `\*N(c)`. */
const MIN_RUN = 16;

function escapeByte(b: number): string {
  switch (b) {
    case 13:
      return '\\r';
    case 10:
      return '\\n';
    case 9:
      return '\\t';
    case 92:
      return '\\\\';
    case 36:
      return '\\$';
    case 125:
      return '\\}';
  }
  return b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
}

/**
 * Transcript text for bytes. A payload that is mostly not text (BER) becomes one `\<..>` hex
 * run; a trailing space is escaped so editors that strip whitespace cannot change the bytes.
 */
export function escapeBytes(bytes: Uint8Array, forFile = true): string {
  const binary = bytes.filter((b) => (b < 0x20 || b >= 0x7f) && b !== 13 && b !== 10 && b !== 9);
  if (bytes.length > 0 && binary.length * 4 > bytes.length) {
    return `\\<${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join(' ')}>`;
  }
  let out = '';
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i]!;
    let j = i;
    while (j < bytes.length && bytes[j] === b) j++;
    if (j - i >= MIN_RUN) {
      out += `\\*${j - i}(${escapeByte(b)})`;
      i = j;
      continue;
    }
    out += escapeByte(b);
    i++;
  }
  return forFile && out.endsWith(' ') ? `${out.slice(0, -1)}\\x20` : out;
}

/** Cut after each LF, so one transcript line holds one protocol line. */
export function splitLines(bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let start = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] === 10) {
      out.push(bytes.subarray(start, i + 1));
      start = i + 1;
    }
  }
  if (start < bytes.length) out.push(bytes.subarray(start));
  return out;
}

/** Short printable form for reports: escapes as in transcripts, cut to `max` characters. */
export function show(bytes: Uint8Array, max = 120): string {
  const s = escapeBytes(bytes, false);
  return s.length > max ? `${s.slice(0, max)}…` : s;
}
