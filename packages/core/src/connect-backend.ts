// Connect-mode backends: legacy servers that cannot take a descriptor (Dovecot, Postfix,
// OpenLDAP, Prosody). After TLS, tlsproxy opens a stream to the server, optionally writes a
// PROXY protocol header (v2 with the TLS TLVs, or v1), swallows the server's greeting with the
// dialect's `backendGreeting` (the client already got the dialect's own), and relays both ways
// between the plaintext end of the TLS engine and the server.
//
// "Can a backend take this connection?" must be answered before the STARTTLS go-ahead. Like
// nginx's mail proxy we connect once per session; unlike it we connect *at* that question:
// available() opens the connection and keeps it as a spare for the deliver() that follows the
// handshake, so a refused or unreachable server gives the client the dialect's temporary failure
// and each session still costs the server one connection. Spares unused after `spareMaxAgeMs`
// (a failed handshake) are closed, well inside the servers' PROXY-header timeouts (Dovecot
// haproxy_timeout 3 s, Postfix smtpd_upstream_proxy_timeout 5 s).
//
// Why one file of ~400 lines (issue 16): the spare connection, the greeting swallow and the relay
// are one sequence over the same two sockets and their timers; it reads top to bottom.

import { X509Certificate } from 'node:crypto';
import net from 'node:net';
import type { OwnedFd } from '@tlsproxy/fdpass';
import type { HandoffInfo } from '@tlsproxy/handoff';
import type { DeliverOptions, HandoffTarget } from './backend.js';
import type { Dialect } from './dialect.js';
import { CoreError } from './errors.js';
import type { Logger } from './logger.js';
import {
  commonName,
  encodeProxyV1,
  encodeProxyV2,
  type ProxyHeaderInput,
} from './proxy-protocol.js';

/** The object form of a listener's `backend`. */
export interface ConnectBackendSpec {
  /** 'tcp:HOST:PORT', 'tcp:[V6]:PORT', 'unix:/path' or 'unix:@abstract' */
  connect: string;
  /** Send a PROXY header first: 'v2' (binary, with TLS TLVs), 'v1' (text, addresses only), or false (default). */
  proxyProtocol?: 'v1' | 'v2' | false;
  /** v2 only: send the TLVs (ALPN, AUTHORITY, SSL); default true. false: addresses only. */
  proxyProtocolTlvs?: boolean;
  /** Connect timeout; default 2000 ms (then the client gets the temporary failure). */
  connectTimeoutMs?: number;
  /** How long the server may take to greet after the header; default 10,000 ms. */
  greetingTimeoutMs?: number;
}

export interface ConnectBackendOptions {
  /** The listener's dialect: its `backendGreeting` decides what to swallow. */
  dialect: Pick<Dialect<unknown>, 'name' | 'backendGreeting' | 'backendReplay'>;
  logger: Logger;
  /** Longest greeting swallowed; default 8192 octets (more: the connection is closed). */
  maxGreetingBytes?: number;
  /** A pre-connected spare older than this is closed unused; default 2000 ms. */
  spareMaxAgeMs?: number;
  /** Spares kept at most; default 256. */
  maxSpares?: number;
}

export type ConnectAddress = { host: string; port: number } | { path: string };

export function parseConnect(spec: string): ConnectAddress {
  const tcp = /^tcp:(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(spec);
  if (tcp) {
    const port = Number(tcp[3]);
    if (port > 0 && port < 65536) return { host: (tcp[1] ?? tcp[2])!, port };
  }
  const unix = /^unix:(.+)$/.exec(spec);
  if (unix) {
    const rest = unix[1]!;
    return { path: rest.startsWith('@') ? `\0${rest.slice(1)}` : rest };
  }
  throw new CoreError(
    'TLSPROXY_ERR_BACKEND',
    `connect backend "${spec}" is not understood: use tcp:HOST:PORT, tcp:[V6]:PORT or unix:/path`,
  );
}

function validateSpec(spec: ConnectBackendSpec): void {
  const pp = spec.proxyProtocol;
  if (pp !== undefined && pp !== false && pp !== 'v1' && pp !== 'v2') {
    throw new CoreError(
      'TLSPROXY_ERR_BACKEND',
      `proxyProtocol must be 'v1', 'v2' or false, not ${JSON.stringify(pp)}`,
    );
  }
}

/** The PROXY header fields for one hand-off. */
export function proxyHeaderInput(info: HandoffInfo): ProxyHeaderInput {
  const id = info.clientIdentity;
  let cn: string | undefined;
  if (id) {
    try {
      // The PEM's subject has one RDN per line, so a CN with a comma survives.
      cn = id.certificate ? commonName(new X509Certificate(id.certificate).subject) : undefined;
    } catch {}
    cn ??= commonName(id.subject);
  }
  return {
    sourceAddress: info.remoteAddress,
    sourcePort: info.remotePort,
    destinationAddress: info.localAddress,
    destinationPort: info.localPort,
    alpn: info.tls?.alpn ?? null,
    authority: info.serverName,
    ssl: info.tls
      ? {
          version: info.tls.version,
          cipher: info.tls.cipher,
          cn: cn ?? null,
          clientCertVerified: id !== null,
        }
      : null,
  };
}

interface Spare {
  socket: net.Socket;
  timer: NodeJS.Timeout;
}

export class ConnectBackend implements HandoffTarget {
  readonly description: string;
  readonly #address: ConnectAddress;
  readonly #options: ConnectBackendOptions & ConnectBackendSpec;
  readonly #spares: Spare[] = [];
  readonly #relays = new Set<net.Socket>();
  #closed = false;

  constructor(spec: ConnectBackendSpec, options: ConnectBackendOptions) {
    validateSpec(spec);
    this.#address = parseConnect(spec.connect);
    this.#options = { ...options, ...spec };
    const pp = this.#options.proxyProtocol;
    this.description = `connect:${spec.connect}${pp ? ` (PROXY ${pp})` : ''}`;
  }

  /** Connections relaying now (for tests and metrics). */
  get activeRelays(): number {
    return this.#relays.size / 2;
  }

  #open(): Promise<net.Socket> {
    const timeoutMs = this.#options.connectTimeoutMs ?? 2000;
    return new Promise((resolve, reject) => {
      const s = net.connect({ ...this.#address, allowHalfOpen: true });
      const fail = (err: Error) => {
        clearTimeout(t);
        s.destroy();
        reject(
          new CoreError(
            'TLSPROXY_ERR_BACKEND',
            `cannot connect to ${this.description}: ${err.message}`,
            { cause: err },
          ),
        );
      };
      const t = setTimeout(() => fail(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
      s.once('error', fail);
      s.once('connect', () => {
        clearTimeout(t);
        s.removeListener('error', fail);
        if ('host' in this.#address) s.setNoDelay(true);
        resolve(s);
      });
    });
  }

  #addSpare(socket: net.Socket): void {
    socket.pause();
    const drop = () => {
      const i = this.#spares.findIndex((x) => x.socket === socket);
      if (i >= 0) {
        clearTimeout(this.#spares[i]!.timer);
        this.#spares.splice(i, 1);
      }
    };
    socket.on('error', () => {});
    socket.once('close', drop);
    const timer = setTimeout(() => socket.destroy(), this.#options.spareMaxAgeMs ?? 2000);
    timer.unref();
    this.#spares.push({ socket, timer });
    // Off the list before destroy(): its 'close' (drop) comes later, not inside destroy().
    while (this.#spares.length > (this.#options.maxSpares ?? 256)) {
      const oldest = this.#spares.shift()!;
      clearTimeout(oldest.timer);
      oldest.socket.removeAllListeners('close');
      oldest.socket.destroy();
    }
  }

  #takeSpare(): net.Socket | undefined {
    // Newest first: the oldest are closest to the server's header timeout.
    for (let s = this.#spares.pop(); s; s = this.#spares.pop()) {
      clearTimeout(s.timer);
      s.socket.removeAllListeners('close');
      s.socket.removeAllListeners('error');
      if (!s.socket.destroyed && s.socket.readyState === 'open') return s.socket;
      s.socket.destroy();
    }
    return undefined;
  }

  async available(): Promise<boolean> {
    if (this.#closed) return false;
    try {
      this.#addSpare(await this.#open());
      return true;
    } catch (err) {
      this.#options.logger.log('warn', 'backend unreachable', {
        backend: this.description,
        error: (err as Error).message,
      });
      return false;
    }
  }

  /** No server to ask: a legacy server serves whatever name the certificate covers. */
  async checkServerName(): Promise<boolean> {
    return true;
  }

  readonly relays = true;

  async deliver(
    fd: OwnedFd,
    info: HandoffInfo,
    buffered?: Uint8Array,
    options: DeliverOptions = {},
  ): Promise<void> {
    let server: net.Socket | undefined;
    let client: net.Socket | undefined;
    try {
      if (this.#closed) throw new CoreError('TLSPROXY_ERR_BACKEND', 'backend closed');
      server = this.#takeSpare() ?? (await this.#open());
      client = fd.toSocket({ allowHalfOpen: true });
      // The client may reset while the server greets (with `crypt` and `plaintext` hand-offs it
      // is the client's own TCP connection): 'close' follows and #swallow fails on it; without a
      // listener the error would be thrown. #relay adds its own.
      client.on('error', () => {});
    } catch (err) {
      if (!fd.closed) fd.close();
      server?.destroy();
      throw err;
    }
    try {
      const header = this.#header(info);
      if (header) server.write(header);
      let rest = await this.#swallow(
        server,
        client,
        this.#options.dialect.backendGreeting,
        'greeting',
      );
      // A plaintext hand-off continues a conversation the dialect began: replay what the server
      // must have heard (SMTP: EHLO). Not after a refusal, which the client is about to read.
      const replay =
        buffered !== undefined && rest.length === 0
          ? this.#options.dialect.backendReplay?.(info.dialectState)
          : null;
      if (replay) {
        server.write(replay.send);
        rest = await this.#swallow(server, client, replay.reply, 'answer to the replayed command');
      }
      if (buffered && buffered.length > 0) server.write(buffered);
      if (rest.length > 0) client.write(rest);
    } catch (err) {
      server.destroy();
      client.destroy();
      throw err;
    }
    this.#relay(client, server, info.connectionId, options);
  }

  #header(info: HandoffInfo): Uint8Array | undefined {
    const pp = this.#options.proxyProtocol;
    if (!pp) return undefined;
    const input = proxyHeaderInput(info);
    return pp === 'v1'
      ? encodeProxyV1(input)
      : encodeProxyV2(input, { tlvs: this.#options.proxyProtocolTlvs !== false });
  }

  /** Read until `judge` says the server's greeting (or answer) is complete; resolve with the bytes after it. */
  #swallow(
    server: net.Socket,
    client: net.Socket,
    judge: ((data: Uint8Array) => number | null) | undefined,
    what: string,
  ): Promise<Buffer> {
    if (!judge) return Promise.resolve(Buffer.alloc(0));
    const max = this.#options.maxGreetingBytes ?? 8192;
    const timeoutMs = this.#options.greetingTimeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      let acc: Buffer = Buffer.alloc(0);
      const done = (err: Error | undefined, rest?: Buffer) => {
        clearTimeout(t);
        server.removeListener('data', onData);
        server.removeListener('end', onEnd);
        server.removeListener('error', onError);
        client.removeListener('close', onClientClose);
        server.pause();
        if (err) reject(err);
        else resolve(rest!);
      };
      const fail = (why: string) =>
        done(new CoreError('TLSPROXY_ERR_BACKEND', `${this.description}: ${why}`));
      const onData = (d: Buffer) => {
        acc = acc.length === 0 ? d : Buffer.concat([acc, d]);
        let n: number | null;
        try {
          n = judge(acc);
        } catch (err) {
          return fail(`dialect judging the ${what} threw: ${(err as Error).message}`);
        }
        if (n === null) {
          if (acc.length >= max) fail(`${what} longer than ${max} octets`);
          return;
        }
        if (!Number.isInteger(n) || n < 0 || n > acc.length) {
          return fail(`dialect judging the ${what} returned ${n} for ${acc.length} octets`);
        }
        if (n > 0)
          this.#options.logger.log('debug', `swallowed the backend's ${what}`, { bytes: n });
        done(undefined, acc.subarray(n));
      };
      const onEnd = () => fail(`closed the connection before its ${what} was complete`);
      const onError = (err: Error) => fail(`connection error: ${err.message}`);
      const onClientClose = () => fail(`client went away during the backend's ${what}`);
      const t = setTimeout(() => fail(`no complete ${what} within ${timeoutMs} ms`), timeoutMs);
      server.on('data', onData);
      server.once('end', onEnd);
      server.once('error', onError);
      client.once('close', onClientClose);
      server.resume();
    });
  }

  /** Both ways, with half-close; either side failing ends both. */
  #relay(client: net.Socket, server: net.Socket, conn: string, options: DeliverOptions): void {
    const log = this.#options.logger;
    this.#relays.add(client);
    this.#relays.add(server);
    let bytesUp = 0;
    let bytesDown = 0;
    let closed = 0;
    let idle: NodeJS.Timeout | undefined;
    const idleMs = options.idleTimeoutMs ?? 0;
    // No traffic either way for idleMs: the peer may be gone without a word (no FIN, no RST).
    const touch =
      idleMs > 0
        ? () => {
            if (idle) idle.refresh();
            else
              idle = setTimeout(() => {
                log.log('info', 'relay idle too long, closing', { conn, idleTimeoutMs: idleMs });
                client.destroy();
                server.destroy();
              }, idleMs);
          }
        : () => {};
    touch();
    const onClose = () => {
      if (++closed < 2) return;
      if (idle) clearTimeout(idle);
      this.#relays.delete(client);
      this.#relays.delete(server);
      log.log('debug', 'backend relay closed', { conn, bytesUp, bytesDown });
      options.onRelayEnd?.();
    };
    const onError = (side: string) => (err: Error) => {
      log.log('debug', 'relay error', { conn, side, error: err.message });
      client.destroy();
      server.destroy();
    };
    client.on('error', onError('client'));
    server.on('error', onError('backend'));
    client.once('close', onClose);
    server.once('close', onClose);
    client.on('data', (d: Buffer) => {
      bytesUp += d.length;
      touch();
    });
    server.on('data', (d: Buffer) => {
      bytesDown += d.length;
      touch();
    });
    // pipe() carries backpressure and ends the other side on 'end' (half-close); a side that is
    // fully closed by then has nothing more to say, so close the other at once.
    client.pipe(server);
    server.pipe(client);
    const finish = (other: net.Socket) => () => {
      if (!other.writableEnded) other.end();
    };
    client.once('close', finish(server));
    server.once('close', finish(client));
  }

  close(): void {
    this.#closed = true;
    for (let s = this.#spares.pop(); s; s = this.#spares.pop()) {
      clearTimeout(s.timer);
      s.socket.destroy();
    }
  }

  /** End the relays too (tests, hard shutdown); close() alone lets them run to their end. */
  destroy(): void {
    this.close();
    for (const s of this.#relays) s.destroy();
  }
}
