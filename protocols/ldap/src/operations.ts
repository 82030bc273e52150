// RFC 4513 section 3 (StartTLS) and 5 (Bind), RFC 4511 section 4.5 (Search), 4.12 (Extended
// operations), 4.1.11 (Controls), RFC 4512 section 5.1 (the root DSE), RFC 3673 ("+").
//
// What each request gets before TLS, as data. The wording and codes are slapd's (OpenLDAP 2.5
// with `security tls=1`, recorded in fixtures/transcripts/ldap/), except that the root DSE is
// answered so clients can discover StartTLS (slapd refuses it too before TLS).
//
//   request                         | answer
//   --------------------------------+-------------------------------------------------------
//   any with a critical control     | its response, unavailableCriticalExtension (12)
//   ExtendedRequest StartTLS        | starttls (requestValue present: protocolError (2))
//   ExtendedRequest slapd knows     | ExtendedResponse confidentialityRequired (13)
//   ExtendedRequest other           | ExtendedResponse protocolError (2), RFC 4511 4.12
//   Search base "" scope baseObject | root DSE entry (if the filter matches), Done success
//   Search other                    | SearchResultDone confidentialityRequired (13)
//   Bind, Add, Modify, Delete,      | its response, confidentialityRequired (13)
//   ModifyDN, Compare               |
//   Abandon                         | nothing (RFC 4511 4.11)
//   Unbind                          | close, nothing sent (RFC 4511 4.3)
import { type Tlv, text } from './ber.js';
import {
  type Attribute,
  extendedResponse,
  type Message,
  OID,
  OP,
  RESPONSE_OF,
  RESULT,
  result,
  type Search,
  searchEntry,
} from './messages.js';

export interface ReplyConfig {
  /** namingContexts of the root DSE; omitted when empty. */
  namingContexts: readonly string[];
  /** Put responseName (the StartTLS OID) into StartTLS responses; slapd leaves it out. */
  startTlsResponseName: boolean;
}

export type Outcome =
  | { kind: 'reply'; data: Uint8Array[]; bad: boolean }
  | { kind: 'none' }
  | { kind: 'close'; reason: string }
  | { kind: 'starttls'; messageId: number; goAhead: Uint8Array; unavailable: Uint8Array };

export const DIAGNOSTIC = {
  confidentiality: 'TLS confidentiality required',
  critical: 'critical extension is not recognized',
  unsupportedExtended: 'unsupported extended operation',
  requestData: 'no request data expected',
  unavailable: 'TLS not available right now',
} as const;

/** The extended operations slapd 2.5 supports (its supportedExtension): 13 before TLS. */
export const KNOWN_EXTENDED: readonly string[] = [
  '1.3.6.1.4.1.4203.1.11.1', // Password Modify, RFC 3062
  '1.3.6.1.4.1.4203.1.11.3', // Who am I?, RFC 4532
  '1.3.6.1.1.8', // Cancel, RFC 3909
  '1.3.6.1.1.21.1', // Start Transaction, RFC 5805
  '1.3.6.1.1.21.3', // End Transaction, RFC 5805
];

/** RFC 3673 all-operational-attributes feature: we honour "+". */
const FEATURE_ALL_OPERATIONAL = '1.3.6.1.4.1.4203.1.5.1';

const refuse = (m: Message, tag: number, code: number, diagnostic: string): Outcome => ({
  kind: 'reply',
  data: [result(m.messageId, tag, code, diagnostic)],
  bad: true,
});

export function answer(m: Message, config: ReplyConfig): Outcome {
  const r = m.request;
  if (r.op === 'unbind') return { kind: 'close', reason: 'client sent UnbindRequest' };
  if (r.op === 'abandon') return { kind: 'none' };
  const startTls = r.op === 'extended' && r.name === OID.startTls;
  const name = startTls && config.startTlsResponseName ? OID.startTls : undefined;
  if (m.controls.some((c) => c.critical)) {
    const code = RESULT.unavailableCriticalExtension;
    if (r.op === 'extended') {
      return {
        kind: 'reply',
        data: [extendedResponse(m.messageId, code, DIAGNOSTIC.critical, name)],
        bad: true,
      };
    }
    return refuse(m, responseTag(r), code, DIAGNOSTIC.critical);
  }
  switch (r.op) {
    case 'extended': {
      if (startTls && !r.hasValue) {
        return {
          kind: 'starttls',
          messageId: m.messageId,
          goAhead: extendedResponse(m.messageId, RESULT.success, '', name),
          unavailable: extendedResponse(
            m.messageId,
            RESULT.unavailable,
            DIAGNOSTIC.unavailable,
            name,
          ),
        };
      }
      // RFC 4511 4.14.1: requestValue is absent; 4.14.2: protocolError for a bad PDU.
      const [code, text] = startTls
        ? [RESULT.protocolError, DIAGNOSTIC.requestData]
        : KNOWN_EXTENDED.includes(r.name)
          ? [RESULT.confidentialityRequired, DIAGNOSTIC.confidentiality]
          : [RESULT.protocolError, DIAGNOSTIC.unsupportedExtended];
      return { kind: 'reply', data: [extendedResponse(m.messageId, code, text, name)], bad: true };
    }
    case 'search':
      if (r.search.base === '' && r.search.scope === 0)
        return rootDse(m.messageId, r.search, config);
      return refuse(
        m,
        OP.searchResultDone,
        RESULT.confidentialityRequired,
        DIAGNOSTIC.confidentiality,
      );
    case 'bind':
      return refuse(m, OP.bindResponse, RESULT.confidentialityRequired, DIAGNOSTIC.confidentiality);
    case 'update':
      return refuse(m, r.responseTag, RESULT.confidentialityRequired, DIAGNOSTIC.confidentiality);
  }
}

function responseTag(r: Message['request']): number {
  switch (r.op) {
    case 'bind':
      return OP.bindResponse;
    case 'search':
      return OP.searchResultDone;
    case 'update':
      return r.responseTag;
    default:
      return RESPONSE_OF.get(OP.extendedRequest)!;
  }
}

// --- the root DSE ------------------------------------------------------------------------

interface DseAttribute {
  type: string;
  values: readonly string[];
  operational: boolean;
}

/** In slapd's order; operational attributes only when asked for by name or "+". */
export function rootDseAttributes(config: ReplyConfig): DseAttribute[] {
  const all: DseAttribute[] = [
    { type: 'objectClass', values: ['top'], operational: false },
    { type: 'namingContexts', values: config.namingContexts, operational: true },
    { type: 'supportedExtension', values: [OID.startTls], operational: true },
    { type: 'supportedFeatures', values: [FEATURE_ALL_OPERATIONAL], operational: true },
    { type: 'supportedLDAPVersion', values: ['3'], operational: true },
  ];
  return all.filter((a) => a.values.length > 0);
}

/** RFC 4511 section 4.5.1.8: which attributes a SearchRequest's selector list returns. */
export function selectAttributes(all: DseAttribute[], selectors: readonly string[]): Attribute[] {
  const wanted = new Set(selectors.map((s) => s.toLowerCase()));
  const noAttributes = wanted.size === 1 && wanted.has('1.1');
  const users = wanted.size === 0 || wanted.has('*');
  const operational = wanted.has('+');
  return all
    .filter(
      (a) =>
        !noAttributes &&
        (wanted.has(a.type.toLowerCase()) || (a.operational ? operational : users)),
    )
    .map((a) => [a.type, [...a.values]]);
}

function rootDse(messageId: number, search: Search, config: ReplyConfig): Outcome {
  const all = rootDseAttributes(config);
  const done = result(messageId, OP.searchResultDone, RESULT.success, '');
  if (matches(search.filter, all) !== true) return { kind: 'reply', data: [done], bad: false };
  const entry = searchEntry(
    messageId,
    '',
    selectAttributes(all, search.attributes),
    search.typesOnly,
  );
  return { kind: 'reply', data: [entry, done], bad: false };
}

/**
 * RFC 4511 section 4.5.1.7 evaluated on the root DSE, three-valued (undefined = Undefined):
 * and, or, not, equalityMatch and present; every other filter type is Undefined, as for an
 * attribute without a matching rule. Values compare case-insensitively (all ours are IA5).
 */
export function matches(f: Tlv, attributes: readonly DseAttribute[]): boolean | undefined {
  const find = (type: string) =>
    attributes.find((a) => a.type.toLowerCase() === type.toLowerCase());
  switch (f.tag) {
    case 0xa0: {
      let out: boolean | undefined = true;
      for (const c of f.children) {
        const v = matches(c, attributes);
        if (v === false) return false;
        if (v === undefined) out = undefined;
      }
      return out;
    }
    case 0xa1: {
      let out: boolean | undefined = false;
      for (const c of f.children) {
        const v = matches(c, attributes);
        if (v === true) return true;
        if (v === undefined) out = undefined;
      }
      return out;
    }
    case 0xa2: {
      const v = matches(f.children[0]!, attributes);
      return v === undefined ? undefined : !v;
    }
    case 0x87:
      return find(text(f)) !== undefined;
    case 0xa3: {
      const [type, value] = f.children;
      if (type === undefined || value === undefined) return undefined;
      const a = find(text(type));
      if (a === undefined) return false;
      const want = text(value).toLowerCase();
      return a.values.some((v) => v.toLowerCase() === want);
    }
    default:
      return undefined;
  }
}
