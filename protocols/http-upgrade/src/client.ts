// RFC 2817 section 3.2 (Mandatory Upgrade) and 3.3 (Server Acceptance of Upgrade Request),
// RFC 9110 section 7.8 (Upgrade) and 15.2 (Informational 1xx), RFC 9112 section 4 (Status
// Line) and 5 (Field Syntax): the CLIENT side of an HTTP Upgrade to TLS (issue 18), sans-I/O —
// bytes from the server in, actions out.
//
// Theory of operation (h11 style): start() sends `OPTIONS * HTTP/1.1` with `Host`,
// `Upgrade: TLS/1.0` and `Connection: Upgrade` (RFC 2817 section 3.2) and arms the response
// timer. The server's octets are cut into lines by the kit's LineFramer (a bounded line, scanned
// once); field lines go through the server side's field grammar (parse.ts: one parse per
// complete line, obs-fold and whitespace before ':' refused); the status line is checked here.
//
//   phase | event                                                  | actions
//   ------+--------------------------------------------------------+----------------------------
//   head  | interim 1xx (not 101) head complete                    | read the next head
//         | 101 head with a TLS token in Upgrade, nothing after    | starttls (toLocal empty)
//         | ... the same with ANY octet after the empty line       | close (response injection)
//         | 101 without TLS in Upgrade, any other final status     | close, 502 to the local client
//         | malformed or oversized head, timer past deadline, eof  | close, 502 to the local client
//   done  | anything                                               | one warn log, never parsed
//   closed| anything                                               | nothing
//
// What the 101 must carry: `Upgrade` with a `TLS` or `TLS/x.y` token (any case, anywhere in the
// list). `Connection: Upgrade` is not required: CUPS answers `Connection: Keep-Alive` (and a
// `Content-Length: 0`, which RFC 9110 section 8.6 forbids on a 1xx; we ignore it) — see the
// recorded transcript fixtures/transcripts/http-upgrade/options-upgrade.txt.
//
// What the local client sees. On success nothing (`toLocal` empty): the local client then sends
// its own requests over TLS. RFC 2817 section 3.3 has the server answer the OPTIONS request
// itself over TLS once the handshake is done (cupsd does, before anything is asked): that answer
// must not reach the local client, and `afterTls` (upgradeAnswerLength, below) tells the engine
// which of the server's first octets over TLS form it (see the README's "Client role"). On
// failure a `502 Bad Gateway` with `Connection: close` (RFC 9110 section 15.6.3: the gateway got
// no acceptable answer from the server), written before the local client has asked anything, as
// servers write an unsolicited 408; no word of the server's is echoed. HTTP has no polite
// goodbye for the server: the connection is just closed.
import {
  ascii,
  type ClientAction,
  type ClientContext,
  type ClientDialect,
  type ClientDialectSession,
  type LimitSpec,
  LineFramer,
  latin1,
  type OptionSpec,
  readLimits,
  readOptions,
} from '@tlsproxy/dialect-kit';
import { LineChecker } from './parse.js';
import { errorResponse } from './responses.js';

export interface HttpUpgradeClientOptions {
  /** The Host field value; empty: the server name (RFC 9110 section 7.2). */
  host: string;
}

export interface HttpUpgradeClientConfig {
  maxLineLength: number;
  maxHeaderSize: number;
  maxHeaderFields: number;
  responseTimeoutMs: number;
}

/** RFC 3986 reg-name / IPv4 (optionally ":port"), or a bracketed IP-literal: no CR, LF, SP. */
const HOST = /^(?:[A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;

export const clientOptions: Record<keyof HttpUpgradeClientOptions, OptionSpec> = {
  host: {
    type: 'string',
    default: '',
    description:
      'Host field of the OPTIONS request (e.g. "printer.example:631"); empty: the server name the certificate is checked against.',
    validate: (v) =>
      typeof v === 'string' && (v === '' || HOST.test(v))
        ? undefined
        : 'a host name or address, optionally with ":port"',
  },
};

export const clientLimits: Record<keyof HttpUpgradeClientConfig, LimitSpec> = {
  maxLineLength: {
    default: 8192,
    unit: 'bytes',
    phase: 'preamble',
    description: "Longest status or field line in the server's response (line end not counted).",
    source: 'Apache LimitRequestFieldSize 8190; the server side uses the same 8 KiB',
  },
  maxHeaderSize: {
    default: 16_384,
    unit: 'bytes',
    phase: 'preamble',
    description:
      'Every response head before the 101 (interim 1xx included), line ends counted; more: close.',
    source: "Node's --max-http-header-size (16 KiB); h11's 16 KiB incomplete-event cap",
  },
  maxHeaderFields: {
    default: 100,
    unit: 'count',
    phase: 'preamble',
    description: 'Field lines in all response heads before the 101; more: close.',
    source: 'Apache LimitRequestFields 100',
  },
  responseTimeoutMs: {
    default: 30_000,
    unit: 'ms',
    phase: 'preamble',
    description:
      'From sending the upgrade request to the complete 101 head; then close; 0 disables.',
    source:
      'tlsproxy: cupsd answers at once; 30 s bounds a silent server as in the other client dialects',
  },
};

export const INJECTION_REASON =
  'response injection: the server sent octets after its 101 Switching Protocols head in the ' +
  'same read (plaintext that would be taken as protected; NO STARTTLS response-injection attack)';

/** RFC 9112 section 4: HTTP-version SP 3DIGIT SP [ reason-phrase ] (the last SP is optional:
 * some servers leave it out with an empty reason). */
const STATUS_LINE = /^HTTP\/(\d)\.(\d) (\d{3})(?: ([\t\x20-\x7e\x80-\xff]*))?$/;
/** A TLS upgrade token (RFC 2817 section 3.3: "TLS/1.0"; CUPS also lists TLS/1.2, TLS/1.1). */
const TLS_TOKEN = /^tls(?:\/[0-9]+(?:\.[0-9]+)?)?$/i;

type Phase = 'status' | 'fields' | 'done' | 'closed';

export function upgradeRequest(host: string): Uint8Array {
  return ascii(
    `OPTIONS * HTTP/1.1\r\nHost: ${host}\r\nUpgrade: TLS/1.0\r\nConnection: Upgrade\r\n\r\n`,
  );
}

export class HttpUpgradeClientSession implements ClientDialectSession {
  private phase: Phase = 'status';
  private readonly lines: LineFramer;
  private deadline = Number.POSITIVE_INFINITY;
  private size = 0;
  private fields = 0;
  private status = 0;
  private reason = '';
  private upgrade: string[] = [];

  constructor(
    private readonly config: HttpUpgradeClientConfig,
    private readonly host: string,
  ) {
    this.lines = new LineFramer(config.maxLineLength);
  }

  start(now: number): ClientAction[] {
    if (!HOST.test(this.host)) {
      this.phase = 'closed';
      return [
        {
          type: 'close',
          reason: `cannot send Host ${JSON.stringify(this.host)}: not a host name`,
          toLocal: errorResponse(502, { now }),
        },
      ];
    }
    const out: ClientAction[] = [{ type: 'send', data: upgradeRequest(this.host) }];
    if (this.config.responseTimeoutMs > 0) {
      this.deadline = now + this.config.responseTimeoutMs;
      out.push({ type: 'timer', at: this.deadline });
    }
    return out;
  }

  receive(data: Uint8Array, now: number): ClientAction[] {
    try {
      return this.receiveUnchecked(data, now);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      return [
        { type: 'log', level: 'error', message: `http-upgrade client internal error: ${message}` },
        this.fail('internal error', now),
      ];
    }
  }

  timer(now: number): ClientAction[] {
    if (this.phase !== 'status' && this.phase !== 'fields') return [];
    if (now < this.deadline) return [{ type: 'timer', at: this.deadline }];
    return [this.fail('no 101 Switching Protocols from the server in time', now)];
  }

  eof(now: number): ClientAction[] {
    if (this.phase !== 'status' && this.phase !== 'fields') return [];
    return [this.fail('the server closed the connection before 101 Switching Protocols', now)];
  }

  private receiveUnchecked(data: Uint8Array, now: number): ClientAction[] {
    if (this.phase === 'closed' || data.length === 0) return [];
    if (this.phase === 'done') {
      // After starttls the connection is the TLS engine's: octets fed here by mistake are never
      // parsed and never reach the local client; one action only, as the contract allows
      // exactly one close or starttls per session.
      return [
        {
          type: 'log',
          level: 'warn',
          message: `ignored ${data.length} octets fed after the go-ahead`,
        },
      ];
    }
    this.lines.push(data);
    for (let e = this.lines.next(); e !== null; e = this.lines.next()) {
      if (e.type === 'tooLong') {
        return [this.fail(`a response line is over ${this.config.maxLineLength} octets`, now)];
      }
      this.size += e.raw.length;
      if (this.size > this.config.maxHeaderSize) {
        return [this.fail(`response head over ${this.config.maxHeaderSize} octets`, now)];
      }
      const out = this.line(e.text, now);
      if (out !== null) return out;
    }
    // A line still arriving is judged when it ends (the framer holds at most maxLineLength + 1
    // octets of it): judging the head size on a partial line too made the verdict depend on the
    // chunking ("head over" for one read per octet, "line over" for one read).
    return [];
  }

  /** One complete line; the actions once decided, or null to read on. */
  private line(text: string, now: number): ClientAction[] | null {
    if (this.phase === 'status') {
      const m = STATUS_LINE.exec(text);
      if (m === null) return [this.fail('malformed status line', now)];
      if (m[1] !== '1') return [this.fail(`server answered HTTP/${m[1]}.${m[2]}`, now)];
      this.status = Number(m[3]);
      this.reason = (m[4] ?? '').slice(0, 100);
      this.phase = 'fields';
      return null;
    }
    if (text === '') return this.headDone(now);
    // RFC 9112 section 5.2: obs-fold is refused (a recipient MAY reject it); so is anything the
    // field grammar does not parse.
    const checker = new LineChecker('field');
    checker.feed(text);
    const field = checker.finishField(text);
    if (!field.ok) return [this.fail('malformed field line in the response', now)];
    if (++this.fields > this.config.maxHeaderFields) {
      return [this.fail(`more than ${this.config.maxHeaderFields} response fields`, now)];
    }
    const [name, value] = field.value;
    if (name.toLowerCase() === 'upgrade') {
      for (const token of value.split(',')) {
        const t = token.trim();
        if (t !== '') this.upgrade.push(t);
      }
    }
    return null;
  }

  private headDone(now: number): ClientAction[] | null {
    const status = this.status;
    if (status >= 100 && status < 200 && status !== 101) {
      // RFC 9110 section 15.2: a client must parse (and may ignore) interim responses.
      this.phase = 'status';
      this.upgrade = [];
      return null;
    }
    if (status !== 101) {
      return [this.fail(`server answered ${status} ${this.reason} instead of 101`.trim(), now)];
    }
    if (!this.upgrade.some((t) => TLS_TOKEN.test(t))) {
      return [
        this.fail(`101 without a TLS upgrade (Upgrade: ${this.upgrade.join(', ') || 'none'})`, now),
      ];
    }
    const rest = this.lines.takeRest();
    if (rest.length > 0) {
      this.phase = 'closed';
      return [
        {
          type: 'close',
          reason: `${INJECTION_REASON}: ${rest.length} octets`,
          toLocal: errorResponse(502, { now }),
        },
      ];
    }
    this.phase = 'done';
    return [
      {
        type: 'starttls',
        toLocal: new Uint8Array(0),
        state: { status, upgrade: [...this.upgrade] },
      },
    ];
  }

  private fail(reason: string, now: number): ClientAction {
    this.phase = 'closed';
    this.lines.takeRest();
    return { type: 'close', reason, toLocal: errorResponse(502, { now }) };
  }
}

export function clientConfig(context: ClientContext): HttpUpgradeClientConfig {
  return readLimits(clientLimits, context.limits);
}

/** The Host field value: the `host` option, else the server name (an IPv6 address bracketed). */
export function hostField(context: ClientContext<Partial<HttpUpgradeClientOptions>>): string {
  const { host } = readOptions<HttpUpgradeClientOptions>(clientOptions, context.options);
  if (host !== '') return host;
  const name = context.serverName;
  return name.includes(':') && !name.startsWith('[') ? `[${name}]` : name;
}

/** `dialect.client`: RFC 2817 upgrade as a client. */
/** Bounds the wait for the answer to the upgrading request (its head): past it, relay. */
const MAX_ANSWER_HEAD = 16_384;
const TRANSFER_ENCODING = /^transfer-encoding$/i;
const CONTENT_LENGTH = /^content-length$/i;

/**
 * RFC 2817 section 3.3: "Once the TLS handshake completes successfully, the server MUST continue
 * with the response to the original request" — the server answers our `OPTIONS *` over TLS
 * (cupsd: `200 OK`, `Content-Length: 0`) before anything the local client asks. Relayed, that
 * answer would be taken by the local client as the answer to its own first request. Given every
 * octet the server sent over TLS so far, this returns how many form that answer (interim 1xx
 * heads, the final head and its Content-Length content), to be dropped; `null` while more are
 * needed; 0 when they are not such an answer (not HTTP/1.x, chunked, malformed, or a head over
 * 16 KiB): nothing is dropped and the octets are relayed as they are. The same contract as
 * `Dialect.backendGreeting`. Pure; never throws.
 */
export function upgradeAnswerLength(data: Uint8Array): number | null {
  let at = 0;
  for (;;) {
    const head = headEnd(data, at);
    if (head === null) return data.length - at > MAX_ANSWER_HEAD ? 0 : null;
    if (head.end - at > MAX_ANSWER_HEAD) return 0;
    const lines = latin1(data.subarray(at, head.end)).split(/\r?\n/);
    const m = STATUS_LINE.exec(lines[0] ?? '');
    if (m === null || m[1] !== '1') return 0;
    const status = Number(m[3]);
    if (status < 200) {
      // Interim (and no second 101 can come): read on.
      if (status === 101) return 0;
      at = head.end;
      continue;
    }
    let length = 0;
    let lengths = 0;
    for (const line of lines.slice(1, -2)) {
      const colon = line.indexOf(':');
      if (colon <= 0) return 0;
      const name = line.slice(0, colon);
      if (TRANSFER_ENCODING.test(name)) return 0;
      if (CONTENT_LENGTH.test(name)) {
        const v = line.slice(colon + 1).trim();
        if (!/^[0-9]{1,15}$/.test(v) || (lengths++ > 0 && Number(v) !== length)) return 0;
        length = Number(v);
      }
    }
    // RFC 9110 section 6.4.1: 204 and 304 have no content whatever the fields say.
    if (status === 204 || status === 304) length = 0;
    const end = head.end + length;
    return end <= data.length ? end : null;
  }
}

/** The end of the head that starts at `from` (after its empty line), or null. */
function headEnd(data: Uint8Array, from: number): { end: number } | null {
  for (let i = data.indexOf(0x0a, from); i >= 0; i = data.indexOf(0x0a, i + 1)) {
    if (data[i + 1] === 0x0a) return { end: i + 2 };
    if (data[i + 1] === 0x0d && data[i + 2] === 0x0a) return { end: i + 3 };
  }
  return null;
}

/**
 * `dialect.client`: RFC 2817 upgrade as a client. `afterTls` (the kit's ClientDialect.afterTls)
 * is `upgradeAnswerLength`: what the engine drops from the server's first octets over TLS (see
 * the README's "Client role" section).
 */
export const client: ClientDialect<Partial<HttpUpgradeClientOptions>> = {
  options: clientOptions,
  limits: clientLimits,
  create: (context) => new HttpUpgradeClientSession(clientConfig(context), hostField(context)),
  afterTls: upgradeAnswerLength,
};
