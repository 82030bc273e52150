// The TLS engine as its own process (seed note: keys live only in the TLS Pool). It listens on a
// SEQPACKET socket, checks SO_PEERCRED against allowUids, and serves handshakes and control
// requests from proxies and backends.
import { type Channel, listen, type Peer, type SeqpacketServer } from '@tlsproxy/fdpass';
import type { ControlOp, HandshakeRequest, TlsEngine } from './engine.js';
import { poolProtocol } from './protocol.js';

export interface DaemonOptions {
  path: string;
  /** Socket file mode; default 0o600. */
  mode?: number;
  /** uids allowed to connect; default this process's uid and root. */
  allowUids?: number[];
  log?: (level: 'info' | 'warn', message: string) => void;
}

export class PoolDaemon {
  readonly #server: SeqpacketServer;
  readonly #engine: TlsEngine;
  readonly #allow: Set<number>;
  readonly #peers = new Set<Peer>();
  readonly #log: NonNullable<DaemonOptions['log']>;

  constructor(engine: TlsEngine, options: DaemonOptions) {
    this.#engine = engine;
    this.#allow = new Set(options.allowUids ?? [process.getuid?.() ?? 0, 0]);
    this.#log = options.log ?? (() => {});
    this.#server = listen({ path: options.path, mode: options.mode ?? 0o600 });
    this.#server.on('connection', (ch) => this.#onChannel(ch));
    this.#server.on('error', (err) => this.#log('warn', `accept failed: ${err.message}`));
  }

  #onChannel(ch: Channel): void {
    const { uid, pid } = ch.peer;
    if (!this.#allow.has(uid)) {
      this.#log('warn', `refused a connection from uid ${uid} (pid ${pid}): not in allowUids`);
      ch.close();
      return;
    }
    const peer = poolProtocol.attach(ch);
    this.#peers.add(peer);
    peer.on('close', () => this.#peers.delete(peer));
    peer.on('invalid', (err) => this.#log('warn', `bad message from pid ${pid}: ${err.message}`));
    let unknownKeys = 0;
    peer.on('message', (m) => {
      if (m.type === 'handshake') {
        const fd = m.fds[0]!;
        const req = m.body.request as HandshakeRequest & { checkServerName?: boolean };
        const request: HandshakeRequest = {
          ...(req.clientCert ? { clientCert: req.clientCert } : {}),
          ...(req.alpn ? { alpn: req.alpn } : {}),
          ...(req.handshakeTimeoutMs ? { handshakeTimeoutMs: req.handshakeTimeoutMs } : {}),
          ...(req.connectionId ? { connectionId: req.connectionId } : {}),
        };
        if (req.checkServerName === true) {
          request.checkServerName = async (serverName) => {
            const r = await peer.request(
              'check-server-name',
              { handshake: m.id ?? 0, serverName },
              { timeoutMs: 5000 },
            );
            return r.body.accept === true;
          };
        }
        this.#engine.handshake(fd, request).then(
          (res) =>
            peer.reply(
              m,
              'established',
              {
                info: res.info as unknown as Record<string, unknown>,
                key: res.controlKey.toString('hex'),
              },
              { fds: [res.plaintext] },
            ),
          (err) =>
            peer.replyError(
              m,
              (err as { code?: string }).code ?? 'TLSPROXY_ERR_POOL_HANDSHAKE',
              (err as Error).message,
            ),
        );
        return;
      }
      for (const f of m.fds) f.close();
      if (m.type === 'control') {
        this.#engine
          .control(
            m.body.key as string,
            m.body.op as ControlOp,
            (m.body.args as Record<string, unknown>) ?? {},
          )
          .then(
            (result) => peer.reply(m, 'control-result', { result: result ?? null }),
            (err) => {
              // A peer that keeps presenting unknown keys is guessing: cut it off.
              if (
                (err as { code?: string }).code === 'TLSPROXY_ERR_POOL_UNKNOWN_KEY' &&
                ++unknownKeys >= 16
              ) {
                this.#log(
                  'warn',
                  `pid ${pid} presented too many unknown control keys; closing its channel`,
                );
                peer.replyError(m, 'TLSPROXY_ERR_POOL_UNKNOWN_KEY', (err as Error).message);
                peer.close();
                return;
              }
              peer.replyError(
                m,
                (err as { code?: string }).code ?? 'TLSPROXY_ERR_POOL_CONTROL',
                (err as Error).message,
              );
            },
          );
      } else if (m.type === 'server-names') {
        peer.reply(m, 'names', { names: this.#engine.serverNames() });
      } else {
        peer.replyError(m, 'TLSPROXY_ERR_POOL_CONTROL', `unexpected ${m.type}`);
      }
    });
  }

  async close(): Promise<void> {
    this.#server.close();
    for (const p of this.#peers) p.close();
    await this.#engine.close();
  }
}
