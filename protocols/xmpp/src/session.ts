// https://xmpp.org/rfcs/rfc6120.html#streams-open (RFC 6120 section 4.2), #streams-error
// (4.9), #tls-process (5.4) and #streams-close-idle (4.6.1): one connection's plaintext stream
// up to STARTTLS, sans-I/O.
//
// Theory of operation (h11 style): the client speaks first. Bytes go into the StreamReader
// (xml.ts), which yields stream events; the session answers them from this table:
//
//   phase   | event / call                  | answer
//   --------+-------------------------------+-----------------------------------------------
//   header  | open (valid stream header)    | our header + <stream:features> with STARTTLS
//           | open (bad header)             | our header + <stream:error> + </stream:stream>
//   stream  | start <starttls xmlns=tls>    | wait for its end
//           | end <starttls/>               | starttls action (proceed / failure) -> tls
//           | start <auth xmlns=sasl>       | wait for its end (its content is never read)
//           | end <auth/>                   | SASL <failure><encryption-required/>, stream open
//           |                               | (the maxBadCommands-th: + policy-violation, close)
//           | start <iq|message|presence>   | not-authorized "Use of STARTTLS required"
//           |   in the content namespace    |
//           | start (anything else)         | unsupported-stanza-type
//           | close (</stream:stream>)      | </stream:stream>, close
//   any     | XML / limit error             | (header if not sent) + stream error, close
//           | timer(now) past deadline      | connection-timeout stream error, close
//           | eof()                         | close
//   tls     | receive(bytes)                | one log action; nothing parsed or answered
//           | tlsUnavailable()              | close (<failure/></stream:stream> already sent)
//   closed  | anything                      | nothing
//
// After <proceed/> the client starts TLS and opens a new stream inside it (RFC 6120 section
// 5.4.3.3): that one belongs to the backend, which gets the connection with nothing consumed.
import type { Action, DialectSession } from '@tlsproxy/dialect-kit';
import { act, utf8 } from '@tlsproxy/dialect-kit';
import { type DomainSet, normalizeDomain } from './domains.js';
import { isXmppStreamError, XmppStreamError } from './errors.js';
import {
  escapeXml,
  NS_STREAM_ERRORS,
  NS_STREAMS,
  NS_TLS,
  StreamReader,
  type XmlElement,
  type XmlEvent,
  type XmlLimits,
} from './xml.js';

export const NS_CLIENT = 'jabber:client';
export const NS_SERVER = 'jabber:server';
export const NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';

/**
 * Names reported to the engine's logs and `tlsproxy_bad_commands_total` (act.command): the
 * stream header and the first-level elements this dialect knows. Any other element name is
 * reported as `unknown`, so nothing a client chose reaches a log.
 */
const KNOWN = new Set([
  'STREAM',
  'STARTTLS',
  'AUTH',
  'IQ',
  'MESSAGE',
  'PRESENCE',
  'RESULT',
  'VERIFY',
]);
/** RFC 6120 section 8: the three stanza kinds, in the stream's content namespace. */
const STANZAS = new Set(['iq', 'message', 'presence']);

export type StreamType = 'c2s' | 's2s';

export interface SessionConfig extends XmlLimits {
  domains: DomainSet;
  /** Our stream header `from` when the client's `to` cannot be used. */
  defaultDomain: string;
  /** Stream id: unique per connection, from the engine's connection id. */
  streamId: string;
  /** xml:lang of our stream header when the client's is unusable. */
  lang: string;
  /** Refused <auth/> elements before the stream is closed with policy-violation. */
  maxBadCommands: number;
  /** 0 disables the timer. */
  idleTimeoutMs: number;
}

/** What the backend gets in the hand-off (`dialectState`). */
export interface XmppState {
  streamType: StreamType;
  /** The domain the client asked for (normalized: lowercase A-labels). */
  to: string;
  /** The client's `from` attribute as sent, or null. */
  from: string | null;
  /** The client's xml:lang, or null. */
  lang: string | null;
}

type Phase = 'header' | 'stream' | 'tls' | 'closed';

const TLS_REQUIRED = 'Use of STARTTLS required';
const LANG = /^[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*$/;
/**
 * What a `from` in the handed-off state may look like: a JID (RFC 7622: at most 3071 octets) with
 * no space, control, bidi or XML-special character — anything else is not an address the backend
 * could use, only text to smuggle into its logs.
 */
const JID_LIKE =
  /^[^\s\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff<>'"&]{1,3071}$/;

export class XmppSession implements DialectSession {
  private phase: Phase = 'header';
  private readonly reader: StreamReader;
  private deadline = Number.POSITIVE_INFINITY;
  private headerSent = false;
  private streamType: StreamType = 'c2s';
  private state: XmppState | null = null;
  /** The top-level element whose end is awaited: <starttls/> or a SASL <auth/>. */
  private pending: 'starttls' | 'auth' | null = null;
  private bad = 0;

  constructor(private readonly config: SessionConfig) {
    this.reader = new StreamReader(config);
  }

  start(now: number): Action[] {
    return this.arm(now);
  }

  receive(data: Uint8Array, now: number): Action[] {
    try {
      return this.receiveUnchecked(data, now);
    } catch (err) {
      return this.internalError(err);
    }
  }

  timer(now: number): Action[] {
    if (this.phase !== 'header' && this.phase !== 'stream') return [];
    if (now < this.deadline) return [act.timer(this.deadline)];
    const out: Action[] = [];
    this.streamError(out, new XmppStreamError('TLSPROXY_ERR_XMPP_TIMEOUT', 'connection-timeout'));
    return out;
  }

  tlsUnavailable(_now: number): Action[] {
    if (this.phase !== 'tls') return [act.log('warn', 'tlsUnavailable() outside STARTTLS ignored')];
    // RFC 6120 section 5.4.2.2: after <failure/> the receiving entity closes the stream and
    // the TCP connection; `unavailable` already carried </stream:stream>.
    this.phase = 'closed';
    return [act.close('TLS not available')];
  }

  /**
   * The engine's pre-TLS byte cap was crossed: RFC 6120 section 4.9.3.14 <policy-violation/>
   * and the closing tag, preceded by our stream header when none was sent yet (section
   * 4.9.1.2), then the engine closes. Pure: the engine calls nothing after it.
   */
  overflow(_now: number): Uint8Array {
    const head = this.headerSent ? '' : this.headerText(null, null, null);
    return utf8(
      `${head}<stream:error><policy-violation xmlns='${NS_STREAM_ERRORS}'/>` +
        `<text xmlns='${NS_STREAM_ERRORS}'>Too much data before STARTTLS</text>` +
        '</stream:error></stream:stream>',
    );
  }

  /**
   * The engine's preamble deadline passed: RFC 6120 section 4.9.3.4 <connection-timeout/> and
   * the closing tag, preceded by our stream header when none was sent yet.
   */
  expired(_now: number): Uint8Array {
    const head = this.headerSent ? '' : this.headerText(null, null, null);
    return utf8(
      `${head}<stream:error><connection-timeout xmlns='${NS_STREAM_ERRORS}'/></stream:error>` +
        '</stream:stream>',
    );
  }

  eof(_now: number): Action[] {
    if (this.phase === 'closed') return [];
    this.phase = 'closed';
    return [act.close('client closed the connection')];
  }

  private receiveUnchecked(data: Uint8Array, now: number): Action[] {
    if (this.phase === 'tls') {
      return data.length === 0
        ? []
        : [act.log('warn', `discarded ${data.length} bytes sent after <starttls/>`)];
    }
    if (this.phase === 'closed' || data.length === 0) return [];
    this.reader.push(data);
    const out: Action[] = [];
    try {
      for (let e = this.next(out); e; e = this.next(out)) {
        this.handle(e, out);
        if (this.finished()) return out;
      }
    } catch (err) {
      if (!isXmppStreamError(err)) throw err;
      this.streamError(out, err);
      return out;
    }
    out.push(...this.arm(now));
    return out;
  }

  /** The reader's next event; XML it refuses is reported as a bad command (`unknown`). */
  private next(out: Action[]): XmlEvent | null {
    try {
      return this.reader.next();
    } catch (err) {
      if (isXmppStreamError(err)) out.push(act.command(null, true, KNOWN));
      throw err;
    }
  }

  /** Whether the last event ended the preamble (handle() moves the phase). */
  private finished(): boolean {
    return this.phase === 'tls' || this.phase === 'closed';
  }

  private handle(event: XmlEvent, out: Action[]): void {
    switch (event.type) {
      case 'open':
        this.open(event.element, out);
        return;
      case 'start':
        this.firstLevel(event.element, out);
        return;
      case 'end':
        if (this.pending === 'starttls') this.startTls(out);
        else if (this.pending === 'auth') this.refuseAuth(out);
        this.pending = null;
        return;
      case 'close':
        // RFC 6120 section 4.4: answer the closing tag with ours, then close.
        this.phase = 'closed';
        out.push(act.close('client closed its stream', '</stream:stream>'));
        return;
    }
  }

  /** A first-level element started: the table at the top of this file. */
  private firstLevel(element: XmlElement, out: Action[]): void {
    const name = element.local.toUpperCase();
    if (element.local === 'starttls' && element.uri === NS_TLS) {
      out.push(act.command(name, false, KNOWN));
      this.pending = 'starttls';
      return;
    }
    out.push(act.command(name, true, KNOWN));
    if (element.local === 'auth' && element.uri === NS_SASL) {
      // RFC 6120 section 6.4.5 and Prosody: answered at its end, the stream stays open. The
      // reader gives us no character data, so a credential inside is never read.
      this.pending = 'auth';
      return;
    }
    const content = this.streamType === 's2s' ? NS_SERVER : NS_CLIENT;
    if (STANZAS.has(element.local) && element.uri === content) {
      // RFC 6120 section 4.9.3.12: stanzas before the stream is authenticated (here: before
      // TLS, so before SASL too). Prosody routes them and answers a stanza error per stanza,
      // keeping the stream open; that would echo the client's id and addresses, and a proxy
      // routes nothing.
      throw new XmppStreamError('TLSPROXY_ERR_XMPP_TLS_REQUIRED', 'not-authorized', {
        text: TLS_REQUIRED,
        detail: `<${element.local}> before STARTTLS`,
      });
    }
    // RFC 6120 section 4.9.3.24, and Prosody's answer: <starttls/> or <auth/> in another
    // namespace, dialback (not offered before TLS), <stream:features/>, anything unknown.
    throw new XmppStreamError(
      'TLSPROXY_ERR_XMPP_UNSUPPORTED_STANZA_TYPE',
      'unsupported-stanza-type',
      { detail: `first-level element {${element.uri}}${element.local} before STARTTLS` },
    );
  }

  /** RFC 6120 section 6.4.5: SASL needs TLS first; the client may still send <starttls/>. */
  private refuseAuth(out: Action[]): void {
    out.push(act.send(`<failure xmlns='${NS_SASL}'><encryption-required/></failure>`));
    if (++this.bad >= this.config.maxBadCommands) {
      throw new XmppStreamError('TLSPROXY_ERR_XMPP_TOO_MANY_BAD', 'policy-violation', {
        text: 'Too many failed requests before STARTTLS',
        detail: `${this.bad} refused <auth/> elements`,
      });
    }
  }

  /** RFC 6120 sections 4.7 and 4.8: check the client's stream header and answer it. */
  private open(header: XmlElement, out: Action[]): void {
    try {
      this.openUnchecked(header, out);
    } catch (err) {
      if (isXmppStreamError(err)) out.push(act.command('STREAM', true, KNOWN));
      throw err;
    }
    out.push(act.command('STREAM', false, KNOWN));
  }

  private openUnchecked(header: XmlElement, out: Action[]): void {
    const content = header.ns[''];
    if (content === NS_SERVER) this.streamType = 's2s';
    if (header.local !== 'stream' || header.uri !== NS_STREAMS) {
      throw new XmppStreamError('TLSPROXY_ERR_XMPP_INVALID_NAMESPACE', 'invalid-namespace', {
        detail: `root element {${header.uri}}${header.local}`,
      });
    }
    if (content !== NS_CLIENT && content !== NS_SERVER) {
      throw new XmppStreamError('TLSPROXY_ERR_XMPP_INVALID_NAMESPACE', 'invalid-namespace', {
        detail: `content namespace ${content ?? '(none)'}`,
      });
    }
    // Section 4.7.5: no version means 0.9, which has no stream features and so no STARTTLS.
    const version = /^(\d{1,9})\.(\d{1,9})$/.exec(header.attributes.version ?? '');
    if (!version || Number(version[1]) !== 1) {
      throw new XmppStreamError('TLSPROXY_ERR_XMPP_UNSUPPORTED_VERSION', 'unsupported-version', {
        detail: `version ${header.attributes.version ?? '(none)'}`,
      });
    }
    const rawTo = header.attributes.to;
    // Prosody mod_c2s: "A 'to' attribute is required on stream headers" (improper-addressing).
    if (rawTo === undefined || rawTo === '') {
      throw new XmppStreamError('TLSPROXY_ERR_XMPP_IMPROPER_ADDRESSING', 'improper-addressing', {
        text: "A 'to' attribute is required on stream headers",
      });
    }
    const to = normalizeDomain(rawTo);
    if (to === null) {
      throw new XmppStreamError('TLSPROXY_ERR_XMPP_IMPROPER_ADDRESSING', 'improper-addressing', {
        text: "A valid 'to' attribute is required on stream headers",
      });
    }
    if (!this.config.domains.serves(to)) {
      throw new XmppStreamError('TLSPROXY_ERR_XMPP_HOST_UNKNOWN', 'host-unknown', {
        // Prosody's wording; `to` is normalized (LDH labels only), so it is safe to echo.
        text: `This server does not serve ${to}`,
      });
    }
    const from = header.attributes.from ?? null;
    const lang = header.attributes['xml:lang'] ?? null;
    // Hints for the backend (pre-TLS): what cannot be a JID or a language tag is dropped.
    this.state = {
      streamType: this.streamType,
      to,
      from: from !== null && JID_LIKE.test(from) ? from : null,
      lang: lang !== null && LANG.test(lang) ? lang : null,
    };
    this.phase = 'stream';
    out.push(
      act.send(
        `${this.header(to, from, lang)}<stream:features>` +
          `<starttls xmlns='${NS_TLS}'><required/></starttls></stream:features>`,
      ),
    );
  }

  /** RFC 6120 section 5.4.2.3: <proceed/>; or <failure/> and close if no backend can. */
  private startTls(out: Action[]): void {
    this.phase = 'tls';
    const trailing = this.reader.takeRest();
    out.push({
      type: 'starttls',
      goAhead: utf8(`<proceed xmlns='${NS_TLS}'/>`),
      unavailable: utf8(`<failure xmlns='${NS_TLS}'/></stream:stream>`),
      state: { ...this.state! },
      trailing,
    });
    if (trailing.length > 0) {
      out.push(act.log('warn', `discarded ${trailing.length} bytes pipelined after <starttls/>`));
    }
  }

  /** RFC 6120 section 4.7.1: our response stream header, now sent. */
  private header(to: string | null, peer: string | null, lang: string | null): string {
    this.headerSent = true;
    return this.headerText(to, peer, lang);
  }

  /** The stream header text (pure). */
  private headerText(to: string | null, peer: string | null, lang: string | null): string {
    const xmlns = this.streamType === 's2s' ? NS_SERVER : NS_CLIENT;
    const from = escapeXml(to ?? this.config.defaultDomain);
    // Section 4.7.1: `to` is the initiating entity's `from`, when it sent one.
    const toAttr =
      peer !== null && normalizeDomain(peer.replace(/^[^@/]*@/, '').replace(/\/.*$/, ''))
        ? ` to='${escapeXml(peer)}'`
        : '';
    const l = lang !== null && LANG.test(lang) ? lang : this.config.lang;
    return (
      `<?xml version='1.0'?><stream:stream xmlns='${xmlns}' xmlns:stream='${NS_STREAMS}'` +
      ` id='${escapeXml(this.config.streamId)}' from='${from}'${toAttr}` +
      ` version='1.0' xml:lang='${l}'>`
    );
  }

  /** RFC 6120 section 4.9.1.2: an error before our header still opens the stream first. */
  private streamError(out: Action[], err: XmppStreamError): void {
    const head = this.headerSent ? '' : this.header(null, null, null);
    const text =
      err.text === undefined
        ? ''
        : `<text xmlns='${NS_STREAM_ERRORS}'>${escapeXml(err.text)}</text>`;
    this.phase = 'closed';
    out.push(act.log('info', `stream error ${err.message}`));
    out.push(
      act.close(
        err.code,
        `${head}<stream:error><${err.condition} xmlns='${NS_STREAM_ERRORS}'/>${text}` +
          `${err.extra ?? ''}</stream:error></stream:stream>`,
      ),
    );
  }

  private arm(now: number): Action[] {
    if (!(this.config.idleTimeoutMs > 0)) return [];
    this.deadline = now + this.config.idleTimeoutMs;
    return [act.timer(this.deadline)];
  }

  /** receive() must never throw: a bug of ours ends this one connection, politely. */
  private internalError(err: unknown): Action[] {
    const message = err instanceof Error ? err.message : String(err);
    const head = this.headerSent ? '' : this.header(null, null, null);
    this.phase = 'closed';
    return [
      act.log('error', `xmpp dialect internal error: ${message}`),
      act.close(
        'internal error',
        `${head}<stream:error><internal-server-error xmlns='${NS_STREAM_ERRORS}'/>` +
          '</stream:error></stream:stream>',
      ),
    ];
  }
}
