// An SMTP backend for the end-to-end tests: @tlsproxy/backend accept() + the `smtp-server`
// package on the handed-off socket, through a small adapter (Spliced) because smtp-server always
// starts a connection itself: it sends a 220 greeting and answers "421 You talk too soon" to
// input that arrives in its first 100 ms. Behind tlsproxy the client already had its greeting:
//   - after STARTTLS (info.handoff 'plain'): the client sends EHLO again inside TLS (RFC 3207
//     section 4.2) and expects no greeting, so the adapter drops smtp-server's 220 and holds
//     client bytes until smtp-server is ready;
//   - MX mode (info.handoff 'plaintext'): the client already had the greeting and the EHLO
//     reply from tlsproxy, so the adapter also replays `EHLO <dialectState.ehlo>` (HELO when
//     dialectState.esmtp is false), drops its reply, then feeds `buffered` and the socket.
import type net from 'node:net';
import { Duplex } from 'node:stream';
import { type BackendServer, type HandoffInfo, listen } from '@tlsproxy/backend';
import { SMTPServer, type SMTPServerSession } from 'smtp-server';

export interface Received {
  info: HandoffInfo;
  buffered: Buffer;
  from: string;
  to: string[];
  message: Buffer;
  secure: boolean;
}

/** A socket for smtp-server that hides the greeting(s) the client must not see twice. */
class Spliced extends Duplex {
  readonly #socket: net.Socket;
  #drop: number;
  #out = '';
  #held: (Buffer | null)[] = [];
  #inject: Buffer | null;

  constructor(socket: net.Socket, drop: number, inject: Buffer | null) {
    super();
    this.#socket = socket;
    this.#drop = drop;
    this.#inject = inject;
    socket.on('data', (d: Buffer) => this.#input(d));
    socket.on('end', () => this.#input(null));
    socket.on('close', () => this.destroy());
    socket.on('error', (e) => this.destroy(e));
  }

  #input(d: Buffer | null): void {
    if (this.#held) this.#held.push(d);
    else this.push(d);
  }

  /** smtp-server is ready (it wrote its greeting): let the client's bytes in. */
  #release(): void {
    const held = this.#held;
    if (!held) return;
    this.#held = null as never;
    if (this.#inject) this.push(this.#inject);
    for (const d of held) this.push(d);
  }

  override _read(): void {}

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    if (this.#drop === 0) {
      this.#socket.write(chunk, cb);
      return;
    }
    this.#out += chunk.toString('latin1');
    for (let m = REPLY.exec(this.#out); m && this.#drop > 0; m = REPLY.exec(this.#out)) {
      this.#out = this.#out.slice(m[0].length);
      this.#drop--;
      this.#release();
    }
    if (this.#drop === 0 && this.#out) {
      const rest = this.#out;
      this.#out = '';
      this.#socket.write(Buffer.from(rest, 'latin1'), cb);
      return;
    }
    cb();
  }

  override _final(cb: () => void): void {
    this.#socket.end(cb);
  }

  override _destroy(err: Error | null, cb: (e: Error | null) => void): void {
    this.#socket.destroy();
    cb(err);
  }

  get readyState(): string {
    return this.#socket.readyState;
  }
  setTimeout(ms: number, cb?: () => void): this {
    this.#socket.setTimeout(ms, cb);
    return this;
  }
  setNoDelay(): this {
    return this;
  }
}

/** One complete SMTP reply: any "NNN-" lines, then a "NNN " line. */
const REPLY = /^(?:\d{3}-[^\n]*\n)*\d{3} [^\n]*\n/;

export interface SmtpBackend {
  server: BackendServer;
  path: string;
  /** Resolves with the next message delivered. */
  next(timeoutMs?: number): Promise<Received>;
  received: Received[];
  close(): Promise<void>;
}

export async function startSmtpBackend(path: string): Promise<SmtpBackend> {
  const server = await listen({ path });
  const received: Received[] = [];
  const waiters: Array<(r: Received) => void> = [];
  const deliver = (r: Received) => {
    received.push(r);
    const w = waiters.shift();
    if (w) w(received.shift()!);
  };
  const make = (secure: boolean, info: HandoffInfo, buffered: Buffer) =>
    new SMTPServer({
      secure,
      secured: secure, // TLS is terminated by tlsproxy's TLS engine
      needsUpgrade: false,
      disabledCommands: secure ? [] : ['STARTTLS'],
      authOptional: true,
      disableReverseLookup: true,
      size: 10240000,
      logger: false,
      name: 'backend.example',
      onData(stream, session: SMTPServerSession, cb) {
        const parts: Buffer[] = [];
        stream.on('data', (d: Buffer) => parts.push(d));
        stream.on('end', () => {
          deliver({
            info,
            buffered,
            secure: session.secure,
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            to: session.envelope.rcptTo.map((r) => r.address),
            message: Buffer.concat(parts),
          });
          cb(null);
        });
      },
    });
  void (async () => {
    for await (const { socket, info, buffered } of server) {
      const plaintext = info.handoff === 'plaintext';
      const state = info.dialectState as { ehlo?: string | null; esmtp?: boolean };
      const inject = plaintext
        ? Buffer.concat([
            Buffer.from(`${state.esmtp === false ? 'HELO' : 'EHLO'} ${state.ehlo}\r\n`, 'latin1'),
            buffered,
          ])
        : null;
      const spliced = new Spliced(socket, plaintext ? 2 : 1, inject);
      make(!plaintext, info, buffered).connect(
        spliced as unknown as net.Socket,
        {
          remoteAddress: info.remoteAddress,
          remotePort: info.remotePort,
          localAddress: info.localAddress,
          localPort: info.localPort,
        } as never,
      );
    }
  })();
  return {
    server,
    path,
    received,
    next(timeoutMs = 10_000) {
      if (received.length > 0) return Promise.resolve(received.shift()!);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no message reached the backend')), timeoutMs);
        waiters.push((r) => {
          clearTimeout(t);
          resolve(r);
        });
      });
    },
    close: () => server.close(),
  };
}
