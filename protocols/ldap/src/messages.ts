// RFC 4511 section 4.1.1 (LDAPMessage), 4.1.9 (LDAPResult), 4.1.11 (Controls), 4.5.1
// (SearchRequest), 4.12 (ExtendedRequest/Response), 4.4.1 (Notice of Disconnection), 4.14
// (StartTLS) and Appendix B (the ASN.1 module): decoding requests and encoding replies.
import {
  BerError,
  enumerated,
  expectTag,
  int,
  isConstructed,
  readBoolean,
  readInt,
  seq,
  str,
  TAG,
  type Tlv,
  text,
  tlv,
} from './ber.js';

export const OID = {
  startTls: '1.3.6.1.4.1.1466.20037',
  noticeOfDisconnection: '1.3.6.1.4.1.1466.20036',
} as const;

/** RFC 4511 Appendix A.2. */
export const RESULT = {
  success: 0,
  operationsError: 1,
  protocolError: 2,
  adminLimitExceeded: 11,
  unavailableCriticalExtension: 12,
  confidentialityRequired: 13,
  unavailable: 52,
  unwillingToPerform: 53,
} as const;

/** protocolOp tags of RFC 4511 Appendix B ([APPLICATION n], constructed unless noted). */
export const OP = {
  bindRequest: 0x60,
  bindResponse: 0x61,
  unbindRequest: 0x42, // primitive NULL
  searchRequest: 0x63,
  searchResultEntry: 0x64,
  searchResultDone: 0x65,
  modifyRequest: 0x66,
  modifyResponse: 0x67,
  addRequest: 0x68,
  addResponse: 0x69,
  delRequest: 0x4a, // primitive LDAPDN
  delResponse: 0x6b,
  modDNRequest: 0x6c,
  modDNResponse: 0x6d,
  compareRequest: 0x6e,
  compareResponse: 0x6f,
  abandonRequest: 0x50, // primitive MessageID
  extendedRequest: 0x77,
  extendedResponse: 0x78,
} as const;

/** Requests that need a response, mapped to their response tag. */
// A Map: the peer's tag selects the entry (numbers cannot name Object.prototype members, but
// no peer input selects anything through a plain object; issue 14).
export const RESPONSE_OF: ReadonlyMap<number, number> = new Map([
  [OP.bindRequest, OP.bindResponse],
  [OP.searchRequest, OP.searchResultDone],
  [OP.modifyRequest, OP.modifyResponse],
  [OP.addRequest, OP.addResponse],
  [OP.delRequest, OP.delResponse],
  [OP.modDNRequest, OP.modDNResponse],
  [OP.compareRequest, OP.compareResponse],
  [OP.extendedRequest, OP.extendedResponse],
]);

export interface Control {
  type: string;
  critical: boolean;
}

export interface Search {
  base: string;
  scope: number;
  typesOnly: boolean;
  filter: Tlv;
  attributes: string[];
}

export type Request =
  | { op: 'bind' }
  | { op: 'unbind' }
  | { op: 'abandon' }
  | { op: 'search'; search: Search }
  | { op: 'extended'; name: string; hasValue: boolean }
  /** Add, Modify, Delete, ModifyDN, Compare: refused before TLS. */
  | { op: 'update'; responseTag: number };

export interface Message {
  messageId: number;
  request: Request;
  controls: Control[];
}

/**
 * RFC 4511 section 4: "clients and servers MUST (unless otherwise specified) ignore trailing
 * SEQUENCE components whose tags they do not recognize" (slapd does). `rest` are the components
 * after the known ones: those with a tag of `known` are an error (a second requestValue, ...),
 * the others are ignored.
 */
function trailing(rest: Tlv[], known: readonly number[], what: string): void {
  for (const t of rest) if (known.includes(t.tag)) throw new BerError(`extra elements in ${what}`);
}

/** Decode one parsed LDAPMessage; throws BerError for anything RFC 4511 does not allow. */
export function decodeMessage(root: Tlv): Message {
  const [id, op, ...rest] = root.children;
  // controls [0] is the one optional component after protocolOp; anything else trails.
  const controls = rest[0]?.tag === 0xa0 ? rest.shift() : undefined;
  trailing(rest, [0xa0], 'LDAPMessage');
  const messageId = readInt(expectTag(id, TAG.INTEGER, 'messageID'), 'messageID');
  // RFC 4511 section 4.1.1.1: 0 is reserved for unsolicited notifications.
  if (messageId === 0) throw new BerError('messageID 0 in a request');
  if (op === undefined) throw new BerError('protocolOp missing');
  return {
    messageId,
    request: decodeRequest(op),
    controls: controls === undefined ? [] : decodeControls(controls),
  };
}

function decodeRequest(op: Tlv): Request {
  const c = op.children;
  switch (op.tag) {
    case OP.bindRequest: {
      // version INTEGER (1..127), name LDAPDN, authentication CHOICE { simple [0], sasl [3] }
      expectTag(c[0], TAG.INTEGER, 'bind version');
      expectTag(c[1], TAG.OCTET_STRING, 'bind name');
      if (c.length !== 3 || (c[2]!.tag !== 0x80 && c[2]!.tag !== 0xa3)) {
        throw new BerError('bind authentication must be simple [0] or sasl [3]');
      }
      return { op: 'bind' };
    }
    case OP.unbindRequest:
      if (op.value.length !== 0) throw new BerError('UnbindRequest must be NULL');
      return { op: 'unbind' };
    case OP.abandonRequest:
      readInt(op, 'abandon messageID');
      return { op: 'abandon' };
    case OP.searchRequest:
      return { op: 'search', search: decodeSearch(c) };
    case OP.extendedRequest: {
      const [name, ...rest] = c;
      const oid = expectTag(name, 0x80, 'requestName');
      const value = rest[0]?.tag === 0x81 ? rest.shift() : undefined;
      trailing(rest, [0x80, 0x81], 'ExtendedRequest');
      return { op: 'extended', name: text(oid), hasValue: value !== undefined };
    }
    case OP.modifyRequest:
    case OP.addRequest:
    case OP.modDNRequest:
    case OP.compareRequest:
      if (c.length < 2) throw new BerError('request too short');
      return { op: 'update', responseTag: RESPONSE_OF.get(op.tag)! };
    case OP.delRequest:
      return { op: 'update', responseTag: OP.delResponse };
    default:
      throw new BerError(`unknown LDAP request 0x${op.tag.toString(16)}`);
  }
}

/** The tags SearchRequest's own components use (universal ones, filter choices [0]..[9]). */
const SEARCH_TAGS: readonly number[] = [
  TAG.OCTET_STRING,
  TAG.ENUMERATED,
  TAG.INTEGER,
  TAG.BOOLEAN,
  TAG.SEQUENCE,
  ...Array.from({ length: 10 }, (_, n) => 0x80 + n),
  ...Array.from({ length: 10 }, (_, n) => 0xa0 + n),
];

function decodeSearch(c: Tlv[]): Search {
  const [base, scope, deref, size, time, typesOnly, filter, attributes, ...extra] = c;
  trailing(extra, SEARCH_TAGS, 'SearchRequest');
  const search: Search = {
    base: text(expectTag(base, TAG.OCTET_STRING, 'baseObject')),
    scope: readInt(expectTag(scope, TAG.ENUMERATED, 'scope'), 'scope'),
    typesOnly: false,
    filter: filter ?? { tag: 0, value: new Uint8Array(0), children: [] },
    attributes: [],
  };
  if (search.scope > 3) throw new BerError('scope out of range');
  readInt(expectTag(deref, TAG.ENUMERATED, 'derefAliases'), 'derefAliases');
  readInt(expectTag(size, TAG.INTEGER, 'sizeLimit'), 'sizeLimit');
  readInt(expectTag(time, TAG.INTEGER, 'timeLimit'), 'timeLimit');
  search.typesOnly = readBoolean(expectTag(typesOnly, TAG.BOOLEAN, 'typesOnly'), 'typesOnly');
  checkFilter(filter);
  for (const a of expectTag(attributes, TAG.SEQUENCE, 'attributes').children) {
    search.attributes.push(text(expectTag(a, TAG.OCTET_STRING, 'attribute selector')));
  }
  return search;
}

/** Filter CHOICE tags [0]..[9] (RFC 4511 section 4.5.1.7): and, or, not are constructed. */
function checkFilter(f: Tlv | undefined): void {
  if (f === undefined) throw new BerError('filter missing');
  const n = f.tag & 0x1f;
  const constructed = isConstructed(f.tag);
  if ((f.tag & 0xc0) !== 0x80 || n > 9) throw new BerError('bad filter choice');
  if (n === 7 && constructed) throw new BerError('present filter must be primitive');
  if (n !== 7 && !constructed) throw new BerError('filter must be constructed');
  if (n === 2 && f.children.length !== 1) throw new BerError('not filter takes one filter');
  if (n <= 2) for (const child of f.children) checkFilter(child);
}

function decodeControls(controls: Tlv): Control[] {
  if (controls.tag !== 0xa0) throw new BerError('controls must be [0]');
  return controls.children.map((ctl) => {
    const [type, ...rest] = expectTag(ctl, TAG.SEQUENCE, 'control').children;
    const out = { type: text(expectTag(type, TAG.OCTET_STRING, 'controlType')), critical: false };
    if (rest[0]?.tag === TAG.BOOLEAN) out.critical = readBoolean(rest.shift()!, 'criticality');
    if (rest[0]?.tag === TAG.OCTET_STRING) rest.shift();
    trailing(rest, [TAG.BOOLEAN, TAG.OCTET_STRING], 'Control');
    return out;
  });
}

// --- replies -----------------------------------------------------------------------------

/** LDAPMessage { messageID, protocolOp } with an LDAPResult body (plus `extra` fields). */
export function result(
  messageId: number,
  opTag: number,
  code: number,
  diagnostic: string,
  ...extra: Uint8Array[]
): Uint8Array {
  return seq(int(messageId), tlv(opTag, enumerated(code), str(''), str(diagnostic), ...extra));
}

/** ExtendedResponse; `name` is the responseName [10], omitted when undefined. */
export function extendedResponse(
  messageId: number,
  code: number,
  diagnostic: string,
  name?: string,
): Uint8Array {
  const extra = name === undefined ? [] : [str(name, 0x8a)];
  return result(messageId, OP.extendedResponse, code, diagnostic, ...extra);
}

/** RFC 4511 section 4.4.1: unsolicited, messageID 0, responseName ...20036. */
export function noticeOfDisconnection(code: number, diagnostic: string): Uint8Array {
  return extendedResponse(0, code, diagnostic, OID.noticeOfDisconnection);
}

export type Attribute = [type: string, values: string[]];

/** SearchResultEntry { objectName, attributes PartialAttributeList }. */
export function searchEntry(
  messageId: number,
  dn: string,
  attributes: Attribute[],
  typesOnly: boolean,
): Uint8Array {
  const list = attributes.map(([type, values]) =>
    seq(str(type), tlv(TAG.SET, ...(typesOnly ? [] : values.map((v) => str(v))))),
  );
  return seq(int(messageId), tlv(OP.searchResultEntry, str(dn), seq(...list)));
}
