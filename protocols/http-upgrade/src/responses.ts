// RFC 2817 section 3.3 (Server Acceptance of Upgrade Request) and 4.2 (Mandatory Advertisement),
// RFC 9110 section 15 (Status Codes), 8.6 (Content-Length), 6.6.1 (Date), 7.6.1 (Connection):
// every response this dialect writes. None echoes client input, so nothing a client sends can
// inject a header or body line into a response.
import { ascii } from '@tlsproxy/dialect-kit';

/** Reason phrases as RFC 9110 section 15 words them (413 was "Payload Too Large" in RFC 7231). */
export const REASONS: Readonly<Record<number, string>> = {
  100: 'Continue',
  101: 'Switching Protocols',
  400: 'Bad Request',
  408: 'Request Timeout',
  411: 'Length Required',
  413: 'Content Too Large',
  414: 'URI Too Long',
  417: 'Expectation Failed',
  426: 'Upgrade Required',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  505: 'HTTP Version Not Supported',
};

const BODIES: Readonly<Record<number, string>> = {
  408: 'The request did not arrive in time.',
  411: 'A request that upgrades to TLS must carry its content with Content-Length.',
  413: 'The request content is too large to be taken before TLS.',
  414: 'The request line is too long.',
  426: 'This service requires TLS: send the request again with the header fields "Upgrade: TLS/1.0" and "Connection: Upgrade" (RFC 2817).',
  431: 'The request header fields are too large.',
  503: 'No server can take the connection right now; try again later.',
};

/** The protocols offered, layer-ascending (RFC 2817 section 3.3 and 4.2, RFC 9110 section 7.8). */
export const UPGRADE_OFFER = 'TLS/1.0, HTTP/1.1';

/** RFC 2817 section 3.3: the go-ahead. 1xx responses never carry Content-Length (RFC 9110 8.6). */
export const SWITCHING_PROTOCOLS = ascii(
  `HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${UPGRADE_OFFER}\r\nConnection: Upgrade\r\n\r\n`,
);

/** RFC 9110 section 10.1.1 and 7.8: a 100 must precede the 101 when the client expects it. */
export const CONTINUE = ascii('HTTP/1.1 100 Continue\r\n\r\n');

/** Bodies for particular refusals, by error code (the status alone does not say why). */
const BODIES_BY_CODE: ReadonlyMap<string, string> = new Map([
  ['TLSPROXY_BUSY_PER_ADDRESS', 'Too many connections from your address, try again later.'],
  [
    'TLSPROXY_ERR_HTTP_UPGRADE_METHOD',
    'Upgrade to TLS with "OPTIONS * HTTP/1.1", "Upgrade: TLS/1.0" and "Connection: Upgrade" (RFC 2817 section 3.2), then send this request over TLS.',
  ],
]);

export interface ErrorResponseOptions {
  /** The time (ms since the epoch) for the Date field; omitted when not a valid time. */
  now: number;
  /** The request was HEAD: Content-Length as for GET, no content (RFC 9110 section 9.3.2). */
  head?: boolean;
  /** The error's code, when it has a body of its own. */
  code?: string;
}

/**
 * A final response after which the connection closes: `Connection: close` (RFC 9112 section 9.6);
 * 426 also advertises the upgrade with `Upgrade` and the `upgrade` connection option (RFC 2817
 * section 4.2, RFC 9110 section 7.8: "MUST send an Upgrade header field").
 */
export function errorResponse(status: number, options: ErrorResponseOptions): Uint8Array {
  const reason = REASONS[status] ?? 'Error';
  const own = options.code === undefined ? undefined : BODIES_BY_CODE.get(options.code);
  const body = `${own ?? BODIES[status] ?? `${reason}.`}\n`;
  const lines = [`HTTP/1.1 ${status} ${reason}`];
  const date = httpDate(options.now);
  if (date) lines.push(`Date: ${date}`);
  if (status === 426) {
    lines.push(`Upgrade: ${UPGRADE_OFFER}`, 'Connection: Upgrade, close');
  } else {
    lines.push('Connection: close');
  }
  lines.push('Content-Type: text/plain; charset=utf-8', `Content-Length: ${body.length}`);
  return ascii(`${lines.join('\r\n')}\r\n\r\n${options.head ? '' : body}`);
}

/** IMF-fixdate (RFC 9110 section 5.6.7), e.g. "Sun, 06 Nov 1994 08:49:37 GMT". */
export function httpDate(now: number): string | null {
  if (!Number.isFinite(now) || Math.abs(now) > 8.64e15) return null;
  return new Date(now).toUTCString();
}
