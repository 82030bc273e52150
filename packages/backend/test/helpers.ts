import { readdirSync } from 'node:fs';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type Incoming, type OwnedFd, type Peer, socketpair } from '@tlsproxy/fdpass';
import { backendProtocol, type HandoffInfo } from '../src/index.js';

export function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

/** The descriptor count once it holds still (an earlier test's sockets may still be closing). */
export async function settledFdCount(): Promise<number> {
  let last = fdCount();
  for (let same = 0, i = 0; same < 3 && i < 60; i++) {
    await new Promise((r) => setTimeout(r, 30));
    const now = fdCount();
    same = now === last ? same + 1 : 0;
    last = now;
  }
  return last;
}

/** No descriptor left behind: the count comes back to `before` (or below: others closed). */
export async function noFdLeak(before: number): Promise<void> {
  await until(() => fdCount() <= before, 2000, `descriptors back to ${before} (now ${fdCount()})`);
}

let n = 0;
export function tmpSock(tag: string): string {
  return join(tmpdir(), `backend-${process.pid}-${tag}-${n++}.sock`);
}

export async function until(cond: () => boolean, ms = 3000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export function handoffInfo(over: Partial<HandoffInfo> = {}): HandoffInfo {
  return {
    dialect: 'imap',
    handoff: 'plain',
    serverName: 'imap.example.test',
    tls: { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', alpn: 'imap' },
    clientIdentity: null,
    remoteAddress: '192.0.2.7',
    remotePort: 50123,
    localAddress: '198.51.100.1',
    localPort: 143,
    controlKey: '00112233445566778899aabbccddeeff',
    connectionId: 'c1',
    dialectState: { tag: 'a1' },
    dialectStateOrigin: 'pre-tls',
    ...over,
  };
}

/** The proxy side of the backend protocol, played by the test. */
export class FakeProxy {
  readonly peer: Peer;
  /** Control requests the backend sent, answered by `onControl`. */
  readonly controls: Incoming[] = [];
  onControl: (m: Incoming) => unknown = () => ({ ok: true });

  private constructor(peer: Peer) {
    this.peer = peer;
    peer.on('message', (m) => {
      for (const f of m.fds) f.close();
      if (m.type !== 'control') {
        this.peer.replyError(m, 'TEST_UNEXPECTED', `unexpected ${m.type}`);
        return;
      }
      this.controls.push(m);
      Promise.resolve()
        .then(() => this.onControl(m))
        .then(
          (result) => this.peer.reply(m, 'control-result', { result: result ?? null }),
          (err: Error & { code?: string }) =>
            this.peer.replyError(m, err.code ?? 'TEST_ERROR', err.message),
        );
    });
  }

  static async connect(address: { path: string } | { abstract: string }): Promise<FakeProxy> {
    const p = new FakeProxy(backendProtocol.attach(await connect(address)));
    await p.peer.ready;
    return p;
  }

  /** Hand over one connection; resolves with the client's end of the socketpair. */
  async handoff(
    info: HandoffInfo = handoffInfo(),
    attachment?: Buffer,
  ): Promise<{ client: net.Socket; reply: Incoming }> {
    const [mine, theirs] = socketpair();
    const client = mine.toSocket();
    try {
      const reply = await this.peer.request(
        'connection',
        { info: info as unknown as Record<string, unknown> },
        { fds: [theirs], ...(attachment ? { attachment } : {}) },
      );
      return { client, reply };
    } catch (err) {
      (err as { client?: net.Socket }).client = client;
      throw err;
    }
  }

  /** Send a connection with a given descriptor (ownership passes). */
  send(info: HandoffInfo, fd: OwnedFd): Promise<Incoming> {
    return this.peer.request(
      'connection',
      { info: info as unknown as Record<string, unknown> },
      { fds: [fd] },
    );
  }

  serverName(name: string): Promise<Incoming> {
    return this.peer.request('server-name', { serverName: name, info: { dialect: 'imap' } });
  }

  close(): void {
    this.peer.close();
  }
}

export function nextData(s: net.Socket): Promise<string> {
  return new Promise((resolve) => s.once('data', (d: Buffer | string) => resolve(String(d))));
}

export function closed(s: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (s.destroyed && s.closed) resolve();
    else s.once('close', () => resolve());
  });
}
