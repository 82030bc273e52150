// RFC 9110 section 7.8 (Upgrade), 7.6.1 (Connection), 10.1.1 (Expect), 5.6.1 (Lists) and
// RFC 9112 section 3.2 (Request Target, Host), 6 (Message Body): what a complete request head
// asks for, judged before any answer.
//
// Decisions (each cites its source):
// - An upgrade is accepted only with the methods in the upgradeMethods option (default
//   OPTIONS, RFC 2817 section 3.2); other methods with Upgrade: TLS get 400.
// - Only HTTP/1.x is served (505 otherwise, RFC 9110 section 15.6.6); HTTP/1.2+ counts as 1.1
//   (RFC 9110 section 2.5: a recipient uses the highest minor version it implements).
// - Upgrade counts only in HTTP/1.1 and only with the `upgrade` connection option: RFC 9110
//   section 7.8 says a server MUST ignore Upgrade in an HTTP/1.0 request, and Upgrade without
//   `Connection: upgrade` is hop-by-hop debris (section 7.6.1). Such a request is a request
//   without an upgrade: 426 (or the plaintext hand-off).
// - Protocol names compare case-insensitively (RFC 9110 section 7.8); TLS is offered by
//   "TLS" or "TLS/1.x" in any list element; `h2c` and `websocket` alone are not TLS.
// - Transfer-Encoding on an upgrade request: 411 Length Required. The content must be read in
//   full before the 101 (afterwards the octets are TLS), and only Content-Length frames it here
//   (RFC 9110 section 15.5.12; RFC 9112 section 6.1 lets a server refuse codings). With
//   Content-Length too it is a smuggling signature: 400 on every path (RFC 9112 section 6.3),
//   as is Transfer-Encoding in HTTP/1.0 (section 6.1: "MUST treat the message as faulty").
import { HttpProtocolError } from './errors.js';
import type { Head } from './framer.js';

export interface Decision {
  upgrade: boolean;
  /** Content-Length, 0 when absent. */
  length: number;
  /** The client sent `Expect: 100-continue`. */
  expectContinue: boolean;
  /** The request method is HEAD (responses then carry no content). */
  head: boolean;
}

/** Lower-case list elements of every field line named `name` (RFC 9110 section 5.6.1). */
export function listValues(headers: readonly [string, string][], name: string): string[] {
  const out: string[] = [];
  for (const [n, v] of headers) {
    if (n.toLowerCase() !== name) continue;
    for (const e of v.split(',')) {
      const t = e.trim().toLowerCase();
      if (t !== '') out.push(t);
    }
  }
  return out;
}

const TOKEN = "[!#$%&'*+\\-.^_`|~0-9a-z]+";
const PROTOCOL = new RegExp(`^(${TOKEN})(?:/(${TOKEN}))?$`);

/** True when an Upgrade list offers TLS: "TLS" or "TLS/1.x", any case. */
export function offersTls(elements: readonly string[]): boolean {
  return elements.some((e) => {
    const m = PROTOCOL.exec(e);
    return m !== null && m[1] === 'tls' && (m[2] === undefined || /^1\.[0-9]$/.test(m[2]));
  });
}

const HOST =
  /^(?:\[[0-9A-Fa-f:.]+\]|\[v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?$/;
const ABSOLUTE = /^[A-Za-z][A-Za-z0-9+.-]*:/;
const AUTHORITY = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+):[0-9]+$/;

function bad(code: 'SYNTAX' | 'BAD_HOST' | 'BAD_LENGTH', message: string): HttpProtocolError {
  return new HttpProtocolError(`TLSPROXY_ERR_HTTP_${code}`, 400, message);
}

/**
 * Throws HttpProtocolError for a request refused whatever it asks for. `upgradeMethods`: the
 * methods whose requests may upgrade (option upgradeMethods, default OPTIONS only).
 */
export function decide(
  head: Head,
  maxBodySize: number,
  upgradeMethods: readonly string[] = ['OPTIONS'],
): Decision {
  const { request, headers } = head;
  if (request.major !== 1) {
    throw new HttpProtocolError('TLSPROXY_ERR_HTTP_VERSION', 505, `${request.version} request`);
  }
  const http11 = request.minor >= 1;
  // RFC 9112 section 3.2.3 and 3.2.4: authority-form only for CONNECT, "*" only for OPTIONS.
  const t = request.target;
  if (request.method === 'CONNECT') {
    if (!AUTHORITY.test(t)) throw bad('SYNTAX', 'CONNECT needs host:port as its target');
  } else if (t === '*') {
    if (request.method !== 'OPTIONS') throw bad('SYNTAX', '"*" target outside OPTIONS');
  } else if (!t.startsWith('/') && !ABSOLUTE.test(t)) {
    throw bad('SYNTAX', 'request target in no known form');
  }
  // RFC 9112 section 3.2: "MUST respond with 400 ... to any HTTP/1.1 request message that lacks
  // a Host header field and to any request message that contains more than one Host header
  // field line or a Host header field with an invalid field value."
  const hosts = headers.filter(([n]) => n.toLowerCase() === 'host');
  if (hosts.length > 1 || (http11 && hosts.length === 0)) throw bad('BAD_HOST', 'Host count');
  if (hosts.length === 1 && !HOST.test(hosts[0]![1])) throw bad('BAD_HOST', 'invalid Host');

  // RFC 9112 section 6.3: a list of identical lengths may be taken as one; anything else is an
  // unrecoverable framing error.
  const lengths = listValues(headers, 'content-length');
  let length = 0;
  if (lengths.length > 0) {
    if (!lengths.every((l) => /^[0-9]+$/.test(l) && l === lengths[0])) {
      throw bad('BAD_LENGTH', 'invalid Content-Length');
    }
    length = lengths[0]!.length > 15 ? Number.POSITIVE_INFINITY : Number(lengths[0]);
  }
  const codings = headers.some(([n]) => n.toLowerCase() === 'transfer-encoding');
  if (codings && lengths.length > 0)
    throw bad('BAD_LENGTH', 'Transfer-Encoding and Content-Length');
  if (codings && !http11) throw bad('BAD_LENGTH', 'Transfer-Encoding in HTTP/1.0');

  const upgrade =
    http11 &&
    listValues(headers, 'connection').includes('upgrade') &&
    offersTls(listValues(headers, 'upgrade'));
  const expect = listValues(headers, 'expect');
  const decision = {
    upgrade,
    length,
    expectContinue: expect.includes('100-continue'),
    head: request.method === 'HEAD',
  };
  if (!upgrade) return decision;

  // RFC 2817 section 3.2: "When the client sends an OPTIONS request, it MAY include an Upgrade
  // header field [...] so that the actual request can be sent over TLS". With any other method
  // the request itself (target, fields, content) has already crossed the network in plaintext,
  // and the backend would have to answer it from pre-TLS state a man in the middle could have
  // changed. So only the methods the operator lists may upgrade (issue 14); the others get a
  // 400 that says how to upgrade. (CUPS upgrades any method and then answers the request.)
  if (!upgradeMethods.includes(request.method)) {
    throw new HttpProtocolError(
      'TLSPROXY_ERR_HTTP_UPGRADE_METHOD',
      400,
      `upgrade to TLS with ${request.method} (only ${upgradeMethods.join(', ')})`,
    );
  }

  // RFC 9110 section 10.1.1: "A server that receives an Expect field value containing a member
  // other than 100-continue MAY respond with a 417 (Expectation Failed)".
  if (expect.some((e) => e !== '100-continue')) {
    throw new HttpProtocolError('TLSPROXY_ERR_HTTP_EXPECTATION', 417, 'unknown expectation');
  }
  if (codings) {
    throw new HttpProtocolError(
      'TLSPROXY_ERR_HTTP_LENGTH_REQUIRED',
      411,
      'Transfer-Encoding on an upgrade request',
    );
  }
  if (length > maxBodySize) {
    throw new HttpProtocolError('TLSPROXY_ERR_HTTP_BODY_TOO_LARGE', 413, 'content too large');
  }
  return decision;
}
