// https://xmpp.org/rfcs/rfc6120.html#xml-restrictions (RFC 6120 section 11.1, restricted XML),
// https://xmpp.org/rfcs/rfc6120.html#xml-wellformed (section 11.3): the client's side of the
// stream, read incrementally with saxes (a strict, synchronous, non-validating XML parser that
// never reads a DTD and knows only the five predefined entities plus character references).
//
// Framing: bytes are cut into pieces and each piece goes to the parser whole. A piece ends after
// every '>' that can end markup, so after each piece the parser has emitted all the events it
// can, at most one tag's worth (0x3E never occurs inside a multi-byte UTF-8 sequence). A small
// lexer (Cutter) tells those from a '>' in character data or in a quoted attribute value, which
// cannot end a tag. After a cut a piece also ends after the 1st, 2nd, 4th … 64th octet, so
// garbage fails at once (its first octet is fed at once); the rest of a run waits, as octets in
// our queue, for the '>' that ends it. Issue 14: saxes keeps a pending attribute value or text
// run at ~28 octets of heap per char (and more when fed in many writes), so feeding it every read
// made a pending 10,000-octet stanza cost ~330 KB; now it costs its octets and a constant. The cut points depend only on the bytes, never on how TCP chunked them,
// so any chunking yields the same events. The octets after the piece that ends an element are
// still ours, untouched: that is the `trailing` data after <starttls/>.
//
// Restricted XML is refused as it is met: a DOCTYPE (so no entity declarations: no billion
// laughs, no external entities), comments, processing instructions other than the XML
// declaration, references to undefined entities. Size, depth and attribute count are bounded.

import { ByteQueue } from '@tlsproxy/dialect-kit';
import { SaxesParser, type SaxesTagNS } from 'saxes';
import { type StreamCondition, type XmppErrorCode, XmppStreamError } from './errors.js';

export const NS_STREAMS = 'http://etherx.jabber.org/streams';
export const NS_TLS = 'urn:ietf:params:xml:ns:xmpp-tls';
export const NS_STREAM_ERRORS = 'urn:ietf:params:xml:ns:xmpp-streams';
export const NS_XML = 'http://www.w3.org/XML/1998/namespace';

export interface XmlLimits {
  /** Octets from the end of one top-level element to the end of the next (header included). */
  maxStanzaSize: number;
  /** Element nesting, the stream element counting as 1. */
  maxDepth: number;
  /** Attributes on one element, namespace declarations included. */
  maxAttributes: number;
}

export interface XmlElement {
  /** Qualified name as sent, e.g. "stream:stream". */
  name: string;
  local: string;
  uri: string;
  /** Attribute values by qualified name (namespace declarations included). */
  attributes: Record<string, string>;
  /** Namespaces declared on this element ('' is the default namespace). */
  ns: Record<string, string>;
}

export type XmlEvent =
  /** The stream header (the root element's start tag). */
  | { type: 'open'; element: XmlElement }
  /** A top-level element (child of the stream) started. */
  | { type: 'start'; element: XmlElement }
  /** That top-level element ended. */
  | { type: 'end'; element: XmlElement }
  /** The client closed its stream (</stream:stream>). */
  | { type: 'close' };

function fail(code: XmppErrorCode, condition: StreamCondition, detail: string): XmppStreamError {
  return new XmppStreamError(code, condition, { detail });
}

/** Map a saxes error message to the RFC 6120 condition (section 4.9.3). */
function saxesError(message: string): XmppStreamError {
  if (/undefined entity|doctype|processing instruction|comment/i.test(message)) {
    return fail('TLSPROXY_ERR_XMPP_RESTRICTED_XML', 'restricted-xml', message);
  }
  if (/unbound namespace prefix|prefix must be bound|as prefix/i.test(message)) {
    return fail('TLSPROXY_ERR_XMPP_BAD_NAMESPACE_PREFIX', 'bad-namespace-prefix', message);
  }
  return fail('TLSPROXY_ERR_XMPP_NOT_WELL_FORMED', 'not-well-formed', message);
}

export class StreamReader {
  private readonly parser = new SaxesParser({ xmlns: true, position: false });
  /** Octets received, not fed to the parser yet. */
  private readonly pending = new ByteQueue();
  private readonly cutter = new Cutter();
  private readonly queue: XmlEvent[] = [];
  private depth = 0;
  private top: XmlElement | null = null;
  /** Octets fed since the last point where no top-level element was open. */
  private stanzaBytes = 0;
  private failed: XmppStreamError | null = null;
  private readonly decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

  constructor(private readonly limits: XmlLimits) {
    const p = this.parser;
    p.on('error', (err) => {
      throw saxesError(err.message);
    });
    p.on('doctype', () => {
      throw fail('TLSPROXY_ERR_XMPP_RESTRICTED_XML', 'restricted-xml', 'DOCTYPE');
    });
    p.on('comment', () => {
      throw fail('TLSPROXY_ERR_XMPP_RESTRICTED_XML', 'restricted-xml', 'comment');
    });
    p.on('processinginstruction', (pi) => {
      throw fail(
        'TLSPROXY_ERR_XMPP_RESTRICTED_XML',
        'restricted-xml',
        `processing instruction ${pi.target}`,
      );
    });
    p.on('xmldecl', (decl) => {
      // RFC 6120 section 11.6: UTF-8 only.
      if (decl.encoding !== undefined && !/^utf-8$/i.test(decl.encoding)) {
        throw fail('TLSPROXY_ERR_XMPP_UNSUPPORTED_ENCODING', 'unsupported-encoding', decl.encoding);
      }
    });
    p.on('opentag', (tag) => this.opened(tag));
    p.on('closetag', () => this.closed());
  }

  /** Append octets from the client. */
  push(data: Uint8Array): void {
    this.pending.append(data);
  }

  /** The next event, or null when more octets are needed. Throws XmppStreamError. */
  next(): XmlEvent | null {
    if (this.failed) throw this.failed;
    try {
      return this.nextUnchecked();
    } catch (err) {
      if (err instanceof XmppStreamError) this.failed = err;
      throw err;
    }
  }

  /** Octets pushed but not yet read (after the element just returned). */
  takeRest(): Uint8Array {
    this.cutter.rewind();
    return this.pending.take();
  }

  private nextUnchecked(): XmlEvent | null {
    while (this.queue.length === 0) {
      const pending = this.pending.view();
      const cut = this.cutter.next(pending);
      const size = cut === null ? pending.length : cut.end;
      if (this.stanzaBytes + size > this.limits.maxStanzaSize) {
        // The octets up to the limit are parsed first, so an error in them wins however the
        // input was chunked.
        const allowed = this.limits.maxStanzaSize - this.stanzaBytes;
        if (allowed > 0) this.feed(pending.subarray(0, allowed));
        throw new XmppStreamError('TLSPROXY_ERR_XMPP_TOO_BIG', 'policy-violation', {
          text: 'XML stanza is too big',
          extra: "<stanza-too-big xmlns='urn:xmpp:errors'/>",
          detail: `over ${this.limits.maxStanzaSize} octets`,
        });
      }
      if (cut === null) return null;
      this.feed(pending.subarray(0, cut.end));
      this.pending.consume(cut.end);
      this.stanzaBytes += cut.end;
      // Only a '>' can end an element.
      if (cut.gt && this.depth <= 1) this.stanzaBytes = 0;
    }
    return this.queue.shift() ?? null;
  }

  private feed(piece: Uint8Array): void {
    let text: string;
    try {
      // stream: a piece without '>' may end inside a multi-byte sequence
      text = this.decoder.decode(piece, { stream: true });
    } catch {
      throw fail('TLSPROXY_ERR_XMPP_NOT_WELL_FORMED', 'not-well-formed', 'invalid UTF-8');
    }
    if (text !== '') this.parser.write(text);
  }

  private opened(tag: SaxesTagNS): void {
    this.depth += 1;
    if (this.depth > this.limits.maxDepth) {
      throw fail(
        'TLSPROXY_ERR_XMPP_TOO_DEEP',
        'policy-violation',
        `nesting over ${this.limits.maxDepth}`,
      );
    }
    const names = Object.keys(tag.attributes);
    if (names.length > this.limits.maxAttributes) {
      throw fail(
        'TLSPROXY_ERR_XMPP_TOO_MANY_ATTRIBUTES',
        'policy-violation',
        `more than ${this.limits.maxAttributes} attributes`,
      );
    }
    if (this.depth > 2) return;
    // Null-prototype records: the names are the peer's, and `__proto__='x'` or `constructor`
    // must be plain keys, never members of Object.prototype (issue 14).
    const attributes: Record<string, string> = Object.create(null);
    for (const n of names) attributes[n] = tag.attributes[n]!.value;
    const ns: Record<string, string> = Object.create(null);
    for (const [prefix, uri] of Object.entries(tag.ns)) ns[prefix] = uri;
    const element: XmlElement = {
      name: tag.name,
      local: tag.local,
      uri: tag.uri,
      attributes,
      ns,
    };
    if (this.depth === 1) {
      this.queue.push({ type: 'open', element });
    } else {
      this.top = element;
      this.queue.push({ type: 'start', element });
    }
  }

  private closed(): void {
    this.depth -= 1;
    if (this.depth === 1 && this.top) {
      this.queue.push({ type: 'end', element: this.top });
      this.top = null;
    } else if (this.depth === 0) {
      this.queue.push({ type: 'close' });
    }
  }
}

/** Octets after a cut fed early (at 1, 2, 4, … of them): enough for garbage to fail at once. */
const PROBE = 64;

enum L {
  /** Character data. */
  Text,
  /** Just after '<'. */
  Open,
  /** Inside a start or end tag, outside quotes. */
  Tag,
  SingleQuoted,
  DoubleQuoted,
  /** A processing instruction or the XML declaration: ends at "?>". */
  Pi,
  PiQuestion,
  /** Just after '<!'. */
  Bang,
  /** '<![': a CDATA section. */
  Cdata,
  /** '<!-': a comment (refused by the parser's handler when it ends). */
  Comment,
  /** '<!' anything else: a DOCTYPE (refused) or garbage. */
  Declaration,
}

/**
 * Where the pending octets are cut into pieces for the parser (see the top of this file). It
 * scans each octet once; `next` resumes where the last call stopped.
 */
class Cutter {
  private state = L.Text;
  /** Octets scanned since the last cut (the pending octets up to here). */
  private scanned = 0;
  /** Octets since the last '>' cut. */
  private run = 0;
  /** The two octets before the current one, for "]]>" and "-->". */
  private prev1 = 0;
  private prev2 = 0;

  /** The next cut in `pending` (which starts at the last cut): its end and whether at '>'. */
  next(pending: Uint8Array): { end: number; gt: boolean } | null {
    while (this.scanned < pending.length) {
      const b = pending[this.scanned]!;
      this.scanned += 1;
      const gt = this.markupEnds(b);
      this.prev2 = this.prev1;
      this.prev1 = b;
      const run = gt ? 0 : ++this.run;
      if (gt || (run <= PROBE && (run & (run - 1)) === 0)) {
        const end = this.scanned;
        this.scanned = 0;
        return { end, gt };
      }
    }
    return null;
  }

  /** After takeRest(): the octets scanned are gone. */
  rewind(): void {
    this.scanned = 0;
  }

  /** Step the lexer over `b`; true when `b` is a '>' that may end markup. */
  private markupEnds(b: number): boolean {
    switch (this.state) {
      case L.Text:
        if (b === 0x3c) this.state = L.Open;
        return false;
      case L.Open:
        if (b === 0x3f) this.state = L.Pi;
        else if (b === 0x21) this.state = L.Bang;
        else return this.tag(b);
        return false;
      case L.Tag:
        return this.tag(b);
      case L.SingleQuoted:
        if (b === 0x27) this.state = L.Tag;
        return false;
      case L.DoubleQuoted:
        if (b === 0x22) this.state = L.Tag;
        return false;
      case L.Pi:
        if (b === 0x3f) this.state = L.PiQuestion;
        return false;
      case L.PiQuestion:
        if (b === 0x3e) {
          this.state = L.Text;
          return true;
        }
        if (b !== 0x3f) this.state = L.Pi;
        return false;
      case L.Bang:
        // "<![CDATA[" ends at "]]>", "<!--" at "-->"; anything else (a DOCTYPE, refused) is cut
        // at every '>', which is harmless: only one more write.
        this.state = b === 0x5b ? L.Cdata : b === 0x2d ? L.Comment : L.Declaration;
        return this.state === L.Declaration && b === 0x3e;
      case L.Declaration:
        return b === 0x3e;
      case L.Cdata:
      case L.Comment: {
        const close = this.state === L.Cdata ? 0x5d : 0x2d;
        if (b !== 0x3e || this.prev1 !== close || this.prev2 !== close) return false;
        this.state = L.Text;
        return true;
      }
    }
  }

  private tag(b: number): boolean {
    if (b === 0x3e) {
      this.state = L.Text;
      return true;
    }
    if (b === 0x27) this.state = L.SingleQuoted;
    else if (b === 0x22) this.state = L.DoubleQuoted;
    else this.state = L.Tag;
    return false;
  }
}

/** Escape for an XML attribute value in single quotes or for character data. */
export function escapeXml(s: string): string {
  return s.replace(
    /[&<>'"]/g,
    (c) => `&${{ '&': 'amp', '<': 'lt', '>': 'gt', "'": 'apos', '"': 'quot' }[c]};`,
  );
}
