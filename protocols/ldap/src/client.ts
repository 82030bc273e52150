// RFC 4511 section 4.14 (StartTLS operation), 4.12 (ExtendedResponse), 4.4.1 (Notice of
// Disconnection), 4.3 (Unbind), RFC 4513 section 3.1 (StartTLS sequencing): the CLIENT side of
// the LDAP StartTLS preamble (issue 18), sans-I/O — bytes from the server in, actions out.
//
// Theory of operation (h11 style): LDAP has no greeting, so start() sends the StartTLS
// ExtendedRequest (messageID 1, no requestValue) at once and arms the response timer. The
// server's octets go through the server side's Framer and parse() (ber.ts: definite lengths only,
// a size cap checked on the header before anything is buffered, a depth cap); exactly one PDU is
// expected, the ExtendedResponse for messageID 1:
//
//   phase    | event                                          | actions
//   ---------+------------------------------------------------+-----------------------------------
//   waiting  | ExtendedResponse id 1, success, nothing after  | starttls (toLocal empty)
//            | ... the same with ANY octet after it           | close (response injection)
//            | ExtendedResponse id 1, another resultCode      | close, Unbind, Notice to local
//            | Notice of Disconnection (id 0, ...20036)       | close, Notice to local (no Unbind)
//            | any other PDU, a wrong id, malformed BER       | close, Unbind, Notice to local
//            | timer past the deadline / eof                  | close (Unbind on timeout)
//   done     | anything                                       | one warn log, never parsed
//   closed   | anything                                       | nothing
//
// What the local client sees. On success nothing (`toLocal` empty): LDAP has no greeting, and the
// local client starts its own session inside TLS with its own message ids, as if it had dialled
// the server. On failure a Notice of Disconnection (RFC 4511 section 4.4.1) with `unavailable`
// (52) — "the server is going away" is what the local client must hear: the connection closes
// and nothing it sends can get through — and a fixed diagnostic, so the server's own words never
// reach the local client; the reason goes to the engine's log. The server gets an UnbindRequest
// (messageID 2) where it is still listening, the polite LDAP goodbye (RFC 4511 section 4.3).
import {
  type ClientAction,
  type ClientContext,
  type ClientDialect,
  type ClientDialectSession,
  type LimitSpec,
  readLimits,
} from '@tlsproxy/dialect-kit';
import {
  BerError,
  expectTag,
  Framer,
  int,
  parse,
  readInt,
  seq,
  str,
  TAG,
  type Tlv,
  text,
  tlv,
} from './ber.js';
import { noticeOfDisconnection, OID, OP, RESULT } from './messages.js';

/** The message id of our StartTLS request (the first and only request before TLS). */
export const STARTTLS_MESSAGE_ID = 1;

/** RFC 4511 section 4.12 and 4.14.1: ExtendedRequest { requestName [0] "...20037" }. */
export const START_TLS_REQUEST: Uint8Array = seq(
  int(STARTTLS_MESSAGE_ID),
  tlv(OP.extendedRequest, str(OID.startTls, 0x80)),
);

/** RFC 4511 section 4.3: UnbindRequest ::= [APPLICATION 2] NULL, with a new message id. */
export const UNBIND_REQUEST: Uint8Array = seq(int(STARTTLS_MESSAGE_ID + 1), tlv(OP.unbindRequest));

/** What the local client gets when StartTLS with the server fails (see the header). */
export const LOCAL_NOTICE: Uint8Array = noticeOfDisconnection(
  RESULT.unavailable,
  'StartTLS with the server failed',
);

export const INJECTION_REASON =
  'response injection: the server sent octets after its StartTLS response in the same read ' +
  '(plaintext that would be taken as protected; NO STARTTLS response-injection attack)';

export interface LdapClientConfig {
  maxPduSize: number;
  maxDepth: number;
  responseTimeoutMs: number;
}

export const clientLimits: Record<keyof LdapClientConfig, LimitSpec> = {
  maxPduSize: {
    default: 65_536,
    unit: 'bytes',
    phase: 'preamble',
    description:
      'Largest LDAPMessage contents from the server before TLS; a longer length closes the connection before any of it is buffered.',
    source:
      'tlsproxy: an ExtendedResponse is tens of octets (slapd: 14); 64 KiB leaves room for a long diagnosticMessage and referrals',
  },
  maxDepth: {
    default: 16,
    unit: 'count',
    phase: 'preamble',
    description: "Deepest BER nesting in the server's response (LDAPMessage = 1).",
    source: 'tlsproxy: an ExtendedResponse with controls nests 5 deep',
  },
  responseTimeoutMs: {
    default: 30_000,
    unit: 'ms',
    phase: 'preamble',
    description: 'From sending StartTLS to a complete response; then close (Unbind); 0 disables.',
    source:
      'tlsproxy: slapd answers at once; stunnel TIMEOUTbusy is 300 s, 30 s bounds a silent server',
  },
};

type Phase = 'waiting' | 'done' | 'closed';

/** The decoded ExtendedResponse (or another PDU, `op` its protocolOp tag). */
interface Response {
  messageId: number;
  op: number;
  resultCode: number | null;
  diagnostic: string;
  responseName: string | null;
}

export class LdapClientSession implements ClientDialectSession {
  private phase: Phase = 'waiting';
  private readonly framer: Framer;
  private deadline = Number.POSITIVE_INFINITY;

  constructor(private readonly config: LdapClientConfig) {
    this.framer = new Framer({ maxPduSize: config.maxPduSize });
  }

  start(now: number): ClientAction[] {
    const out: ClientAction[] = [{ type: 'send', data: START_TLS_REQUEST }];
    if (this.config.responseTimeoutMs > 0) {
      this.deadline = now + this.config.responseTimeoutMs;
      out.push({ type: 'timer', at: this.deadline });
    }
    return out;
  }

  receive(data: Uint8Array, _now: number): ClientAction[] {
    try {
      return this.receiveUnchecked(data);
    } catch (err) {
      // receive() must never throw: a bug of ours ends this one connection.
      const message = err instanceof Error ? err.message : String(err);
      return [
        { type: 'log', level: 'error', message: `ldap client internal error: ${message}` },
        this.fail('internal error', true),
      ];
    }
  }

  timer(now: number): ClientAction[] {
    if (this.phase !== 'waiting') return [];
    if (now < this.deadline) return [{ type: 'timer', at: this.deadline }];
    return [this.fail('no StartTLS response from the server in time', true)];
  }

  eof(_now: number): ClientAction[] {
    if (this.phase !== 'waiting') return [];
    return [this.fail('the server closed the connection before its StartTLS response', false)];
  }

  private receiveUnchecked(data: Uint8Array): ClientAction[] {
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
    this.framer.push(data);
    const event = this.framer.next();
    if (event === null) return [];
    if (event.type === 'malformed') return [this.fail(`malformed response: ${event.reason}`, true)];
    let response: Response;
    try {
      response = decodeResponse(parse(event.pdu, this.config.maxDepth));
    } catch (err) {
      if (!(err instanceof BerError)) throw err;
      return [this.fail(`malformed response: ${err.message}`, true)];
    }
    return this.judge(response);
  }

  private judge(r: Response): ClientAction[] {
    if (r.messageId === 0) {
      const notice = r.op === OP.extendedResponse && r.responseName === OID.noticeOfDisconnection;
      const what = notice ? 'Notice of Disconnection' : 'unsolicited notification';
      return [this.fail(`server sent a ${what}${describe(r)}`, !notice)];
    }
    if (r.messageId !== STARTTLS_MESSAGE_ID) {
      return [this.fail(`response for message id ${r.messageId}, expected 1`, true)];
    }
    if (r.op !== OP.extendedResponse) {
      return [this.fail(`protocolOp 0x${r.op.toString(16)} instead of ExtendedResponse`, true)];
    }
    if (r.resultCode !== RESULT.success) {
      return [this.fail(`server refused StartTLS${describe(r)}`, true)];
    }
    // RFC 4511 section 4.14.2: responseName, when present, is the StartTLS OID (slapd omits it).
    if (r.responseName !== null && r.responseName !== OID.startTls) {
      return [this.fail(`StartTLS response named ${JSON.stringify(r.responseName)}`, true)];
    }
    const rest = this.framer.takeRest();
    if (rest.length > 0) {
      this.phase = 'closed';
      return [
        {
          type: 'close',
          reason: `${INJECTION_REASON}: ${rest.length} octets`,
          toLocal: LOCAL_NOTICE,
        },
      ];
    }
    this.phase = 'done';
    return [
      {
        type: 'starttls',
        toLocal: new Uint8Array(0),
        state: { messageId: STARTTLS_MESSAGE_ID, responseName: r.responseName !== null },
      },
    ];
  }

  /** Close; `unbind`: the server is still listening, so say goodbye first. */
  private fail(reason: string, unbind: boolean): ClientAction {
    this.phase = 'closed';
    this.framer.takeRest();
    return unbind
      ? { type: 'close', reason, data: UNBIND_REQUEST, toLocal: LOCAL_NOTICE }
      : { type: 'close', reason, toLocal: LOCAL_NOTICE };
  }
}

/** RFC 4511 Appendix B: LDAPMessage { messageID, protocolOp, controls [0] OPTIONAL }. */
function decodeResponse(root: Tlv): Response {
  const [id, op, controls, ...extra] = root.children;
  if (extra.length > 0) throw new BerError('extra elements in LDAPMessage');
  if (controls !== undefined && controls.tag !== 0xa0) throw new BerError('controls must be [0]');
  const messageId = readInt(expectTag(id, TAG.INTEGER, 'messageID'), 'messageID');
  if (op === undefined) throw new BerError('protocolOp missing');
  const out: Response = {
    messageId,
    op: op.tag,
    resultCode: null,
    diagnostic: '',
    responseName: null,
  };
  if (op.tag !== OP.extendedResponse) return out;
  // ExtendedResponse ::= [APPLICATION 24] SEQUENCE { COMPONENTS OF LDAPResult,
  //   responseName [10] LDAPOID OPTIONAL, responseValue [11] OCTET STRING OPTIONAL }
  const [code, matched, diagnostic, ...rest] = op.children;
  out.resultCode = readInt(expectTag(code, TAG.ENUMERATED, 'resultCode'), 'resultCode');
  expectTag(matched, TAG.OCTET_STRING, 'matchedDN');
  out.diagnostic = text(expectTag(diagnostic, TAG.OCTET_STRING, 'diagnosticMessage'));
  let at = 0;
  if (rest[at]?.tag === 0xa3) at++; // referral [3]
  if (rest[at]?.tag === 0x8a) out.responseName = text(rest[at++]!);
  if (rest[at]?.tag === 0x8b) at++; // responseValue [11]
  if (at !== rest.length) throw new BerError('unexpected element in ExtendedResponse');
  return out;
}

/** ": resultCode N "diagnostic"" for a log line; the diagnostic is the server's, quoted. */
function describe(r: Response): string {
  if (r.resultCode === null) return '';
  const diag = r.diagnostic.slice(0, 200);
  return `: resultCode ${r.resultCode}${diag === '' ? '' : ` ${JSON.stringify(diag)}`}`;
}

export function clientConfig(context: ClientContext): LdapClientConfig {
  return readLimits(clientLimits, context.limits);
}

/** `dialect.client`: LDAP StartTLS as a client (no options). */
export const client: ClientDialect<Record<string, never>> = {
  options: {},
  limits: clientLimits,
  create: (context) => new LdapClientSession(clientConfig(context)),
};
