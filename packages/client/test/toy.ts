// A tiny STARTTLS protocol for the tests, with a client dialect and a real server on loopback:
//
//   server: +READY [STARTTLS]      (greeting; STARTTLS listed when offered)
//   client: STARTTLS               → server: +GO (then TLS)  or  -NO refused
//   client: QUIT                   (when the dialect gives up)
//
// After TLS the server greets with "welcome\n" and echoes upper-cased, so a test sees both ways.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import {
  type ClientAction,
  type ClientDialect,
  type Dialect,
  defineDialect,
  LineFramer,
} from '@tlsproxy/dialect-kit';

const certDir = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
const pem = (n: string) => readFileSync(certDir + n, 'utf8');
export const certs = {
  ca: pem('ca.pem'),
  server: { cert: pem('server.pem'), key: pem('server.key') },
  client: { cert: pem('client.pem'), key: pem('client.key') },
  rogue: { cert: pem('rogue.pem'), key: pem('rogue.key') },
};

const enc = (s: string) => new TextEncoder().encode(s);

const client: ClientDialect<{ plaintextOk: boolean }> = {
  options: {
    plaintextOk: {
      type: 'boolean',
      default: false,
      description: 'go on without TLS when not offered',
    },
  },
  limits: {
    replyTimeoutMs: { default: 10_000, description: 'each wait' },
  },
  create(ctx) {
    const framer = new LineFramer(512);
    let phase: 'greeting' | 'starttls' | 'done' = 'greeting';
    let greeting = new Uint8Array(0);
    const close = (reason: string): ClientAction[] => {
      phase = 'done';
      return [{ type: 'close', reason, data: enc('QUIT\r\n'), toLocal: enc('-ERR no TLS\r\n') }];
    };
    return {
      start: (now) => [{ type: 'timer', at: now + (ctx.limits.replyTimeoutMs ?? 10_000) }],
      timer: () => (phase === 'done' ? [] : close('timeout')),
      eof: () => (phase === 'done' ? [] : close('server closed')),
      receive(data, now) {
        if (phase === 'done') return [];
        const out: ClientAction[] = [];
        framer.push(data);
        for (let ev = framer.next(); ev !== null; ev = framer.next()) {
          if (ev.type !== 'line') return [...out, ...close('line too long')];
          const line = ev.text;
          if (phase === 'greeting') {
            if (!line.startsWith('+READY')) return [...out, ...close(`bad greeting ${line}`)];
            greeting = enc(`${line}\r\n`);
            if (!/\bSTARTTLS\b/.test(line)) {
              if (ctx.options.plaintextOk) {
                phase = 'done';
                return [...out, { type: 'plaintext', toLocal: greeting, reason: 'not offered' }];
              }
              return [...out, ...close('STARTTLS not offered')];
            }
            phase = 'starttls';
            out.push({ type: 'send', data: enc('STARTTLS\r\n') });
            out.push({ type: 'timer', at: now + (ctx.limits.replyTimeoutMs ?? 10_000) });
          } else {
            if (line !== '+GO') return [...out, ...close(`refused: ${line}`)];
            // Response injection: bytes after the go-ahead in the same read.
            if (framer.pending > 0) return [...out, ...close('bytes after the go-ahead')];
            phase = 'done';
            return [...out, { type: 'starttls', toLocal: greeting, state: { greeting: line } }];
          }
        }
        return out;
      },
    };
  },
};

export const toy: Dialect = defineDialect({
  name: 'toy',
  defaultPorts: {},
  options: {},
  limits: {},
  create: () => {
    throw new Error('server side not used');
  },
  client,
});

export interface ToyServerOptions {
  /** Offer STARTTLS in the greeting; default true. */
  offer?: boolean;
  /** Answer STARTTLS with: '+GO' (default), '-NO', or nothing at all. */
  answer?: '+GO' | '-NO' | 'silent';
  /** Bytes sent right behind +GO in the same write (response injection). */
  inject?: string;
  /** Send nothing at all (not even a greeting). */
  mute?: boolean;
  /** TLS server options (certificate, requestCert...); default the fixture server identity. */
  tls?: tls.TlsOptions;
  /** Split the server's preamble writes into chunks of this size (any chunking must work). */
  chunk?: number;
}

export interface ToyServer {
  port: number;
  /** What each connection's client sent before TLS, and inside TLS. */
  log: Array<{ pre: string; inside: string; peerCN: string | null }>;
  close(): Promise<void>;
}

export async function toyServer(o: ToyServerOptions = {}): Promise<ToyServer> {
  const log: ToyServer['log'] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    const entry = { pre: '', inside: '', peerCN: null as string | null };
    log.push(entry);
    const write = async (text: string) => {
      const b = Buffer.from(text);
      const n = o.chunk ?? b.length;
      for (let i = 0; i < b.length; i += n) {
        s.write(b.subarray(i, i + n));
        if (n < b.length) await new Promise((r) => setTimeout(r, 1));
      }
    };
    if (o.mute) {
      s.resume();
      return;
    }
    void write(`+READY toy${o.offer === false ? '' : ' STARTTLS'}\r\n`);
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString('latin1');
      entry.pre += d.toString('latin1');
      if (!buf.includes('STARTTLS\r\n')) return;
      s.off('data', onData);
      if (o.answer === 'silent') {
        s.resume();
        return;
      }
      if (o.answer === '-NO') {
        void write('-NO not now\r\n');
        s.on('data', (x: Buffer) => {
          entry.pre += x.toString('latin1');
        });
        return;
      }
      s.pause();
      // +GO and any injected bytes in one write, so they arrive in one read.
      s.write(`+GO\r\n${o.inject ?? ''}`, () => {
        const t = new tls.TLSSocket(s, {
          isServer: true,
          ...certs.server,
          ...o.tls,
        });
        t.on('error', () => {});
        t.on('secure', () => {
          const cert = t.getPeerCertificate();
          entry.peerCN = typeof cert?.subject?.CN === 'string' ? cert.subject.CN : null;
          t.write('welcome\n');
        });
        t.on('data', (x: Buffer) => {
          entry.inside += x.toString('utf8');
          t.write(x.toString('utf8').toUpperCase());
        });
        t.on('end', () => t.end());
      });
    };
    s.on('data', onData);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    log,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
