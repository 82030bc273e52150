// `tlsproxy-conformance record`: a loopback relay between a real client and a real server that
// writes both directions as a transcript, byte-exact and with chunk boundaries, up to and
// including the STARTTLS go-ahead.
//
// How the go-ahead is found without knowing the protocol: the first client read that starts
// like a TLS record (handshake, 0x16 0x03) comes right after it, so the last server output before
// that read was the go-ahead. Bytes the client pipelined after STARTTLS arrive earlier and are
// recorded as client data, which is the point of recording those cases.
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { annotateLine } from './annotate.js';
import { escapeBytes, splitLines } from './bytes.js';
import { ConformanceError } from './errors.js';

export interface RecordOptions {
  listen: { host: string; port: number };
  upstream: { host: string; port: number };
  out: string;
  /** Header lines (server, client, dialect, ...), written in this order. */
  headers: Record<string, string>;
  /** Put placeholders into server lines with this protocol's rules (see annotate.ts). */
  annotate?: string;
  /**
   * Local address for the upstream connection. Dovecot counts a client whose address equals its
   * own as secure and then offers AUTH= before TLS; 127.0.0.2 → 127.0.0.1 avoids that.
   */
  bind?: string;
  /** Called once listening, with the bound port. */
  onListening?: (port: number) => void;
}

/** One recorded event: bytes from a side, or a marker. */
export type Event =
  | { from: 'client' | 'server'; bytes: Uint8Array }
  | { marker: 'tls' | 'close' | 'eof' };

export function parseHostPort(spec: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(spec);
  if (!m || Number(m[3]) > 65535) {
    throw new ConformanceError('TLSPROXY_ERR_CONFORMANCE_USAGE', `${what} must be HOST:PORT`);
  }
  return { host: (m[1] ?? m[2])!, port: Number(m[3]) };
}

const isTlsRecord = (b: Uint8Array): boolean => b.length >= 2 && b[0] === 0x16 && b[1] === 0x03;

export function renderTranscript(
  headers: Record<string, string>,
  events: Event[],
  annotate?: string,
): string {
  const out = Object.entries(headers).map(([k, v]) => `@${k} ${v}`);
  out.push('');
  for (const e of events) {
    if ('marker' in e) {
      out.push(`!${e.marker}`);
      if (e.marker === 'tls') out.push('!no-leftover', ...stateAssertions(annotate, events));
      continue;
    }
    const side = e.from === 'client' ? 'C' : 'S';
    splitLines(e.bytes).forEach((line, i) => {
      const text = e.from === 'server' ? annotateLine(annotate, line) : escapeBytes(line);
      out.push(`${side}${i === 0 ? ':' : '|'} ${text}`);
    });
  }
  return `${out.join('\n')}\n`;
}

/** Hand-off state a protocol's go-ahead reveals (IMAP: the STARTTLS tag it echoes). */
function stateAssertions(annotate: string | undefined, events: Event[]): string[] {
  if (annotate !== 'imap') return [];
  const last = events.findLast((e) => 'from' in e && e.from === 'server');
  if (!last || !('bytes' in last)) return [];
  const tag = /(?:^|\n)(\S+) OK[^\n]*\r?\n$/.exec(Buffer.from(last.bytes).toString('latin1'));
  return tag ? [`!state tag = ${JSON.stringify(tag[1])}`] : [];
}

/** Relay one connection, write its transcript, resolve with the file's text. */
export function record(options: RecordOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const events: Event[] = [];
    let recording = true;
    let written = false;
    const server = net.createServer({ allowHalfOpen: true });
    const finish = (): void => {
      if (written) return;
      written = true;
      server.close();
      const text = renderTranscript(options.headers, events, options.annotate);
      writeFileSync(options.out, text);
      resolve(text);
    };
    server.on('error', (err) =>
      reject(
        new ConformanceError('TLSPROXY_ERR_CONFORMANCE_RECORD', `listen: ${err.message}`, {
          cause: err,
        }),
      ),
    );
    server.once('connection', (client) => {
      server.close();
      client.setNoDelay(true);
      const upstream = net.connect({
        ...options.upstream,
        ...(options.bind ? { localAddress: options.bind } : {}),
        allowHalfOpen: true,
      });
      upstream.setNoDelay(true);
      const note = (e: Event): void => {
        if (recording) events.push(e);
      };
      client.on('data', (d: Buffer) => {
        if (recording && isTlsRecord(d)) {
          note({ marker: 'tls' });
          recording = false;
        }
        note({ from: 'client', bytes: new Uint8Array(d) });
        upstream.write(d);
      });
      upstream.on('data', (d: Buffer) => {
        note({ from: 'server', bytes: new Uint8Array(d) });
        client.write(d);
      });
      client.on('end', () => {
        note({ marker: 'eof' });
        upstream.end();
      });
      upstream.on('end', () => {
        note({ marker: 'close' });
        client.end();
      });
      let closed = 0;
      const done = (): void => {
        if (++closed === 2) finish();
      };
      client.on('close', done);
      upstream.on('close', done);
      client.on('error', () => upstream.destroy());
      upstream.on('error', (err) => {
        note({ marker: 'close' });
        client.destroy();
        if (events.length <= 1)
          reject(
            new ConformanceError(
              'TLSPROXY_ERR_CONFORMANCE_RECORD',
              `upstream ${options.upstream.host}:${options.upstream.port}: ${err.message}`,
            ),
          );
      });
    });
    server.listen(options.listen, () => {
      const addr = server.address() as net.AddressInfo;
      options.onListening?.(addr.port);
    });
  });
}
