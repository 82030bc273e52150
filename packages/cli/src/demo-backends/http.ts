// Demo HTTP backend behind the http-upgrade dialect (RFC 2817), after the backend of
// protocols/http-upgrade/test/e2e.test.ts: the client's ORIGINAL request arrives as
// info.dialectState ({ method, target, version, headers, body }) and must be answered first,
// over TLS (section 3.3). The answer is a small page showing the hand-off info; then it closes.
import type net from 'node:net';
import type { HandoffInfo } from '@tlsproxy/backend';
import { handoffSummary, type Serve } from './common.js';

interface RequestState {
  method?: string;
  target?: string;
  version?: string;
  headers?: [string, string][];
  body?: string;
}

export const serveHttp: Serve = (socket: net.Socket, info: HandoffInfo) => {
  socket.on('data', () => {}); // nothing after the original request is read in this demo
  const r = info.dialectState as RequestState;
  const body = Buffer.from(r.body ?? '', 'base64');
  const page =
    'tlsproxy demo: this is the answer to your original request, sent over TLS (RFC 2817).\n' +
    `request: ${r.method} ${r.target} ${r.version} (${body.length} bytes of content)\n` +
    `headers: ${(r.headers ?? []).map(([k, v]) => `${k}: ${v}`).join('; ')}\n` +
    `hand-off: ${handoffSummary(info)}\n`;
  const head =
    'HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n' +
    `Content-Length: ${Buffer.byteLength(page)}\r\nConnection: close\r\n\r\n`;
  socket.end(r.method === 'HEAD' ? head : head + page);
};
