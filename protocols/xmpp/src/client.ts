// https://xmpp.org/rfcs/rfc6120.html#tls (RFC 6120 section 5, STARTTLS negotiation),
// #streams-open (4.2), #streams-negotiation-features (4.3.2) and #streams-error (4.9): the
// CLIENT side of the XMPP STARTTLS preamble (issue 18), for client-to-server (`jabber:client`)
// and server-to-server (`jabber:server`) streams, sans-I/O — bytes from the server in, actions
// out.
//
// Theory of operation (h11 style): start() sends our stream header (`to` = the server name; s2s
// also `from` = our host name) and arms one deadline for the whole preamble. The server's octets
// go through the server side's StreamReader (xml.ts: saxes, no DTD, no entities beyond the five
// predefined, no comments or PIs, bounded size, depth and attributes), which reports the stream
// header and each top-level element. It does not report the children of an element, so the
// octets of <stream:features/> (and of <stream:error/>) are kept while it arrives and read once
// more by a second StreamReader, wrapped in an element that declares the namespaces in scope:
// then its children are top-level elements there.
//
//   phase    | event                                         | actions
//   ---------+-----------------------------------------------+---------------------------------
//   header   | server stream header (streams ns, version 1.x)| -> features
//   features | <stream:features> with <starttls xmlns=tls>   | send <starttls/>, -> proceed
//            | <stream:features> without it                  | close (</stream:stream>)
//   proceed  | <proceed xmlns=tls/>, nothing after it        | starttls (toLocal empty)
//            | ... with ANY octet after it in the same read  | close (response injection)
//            | <failure xmlns=tls/>                          | close (</stream:stream>)
//   any      | <stream:error>, </stream:stream>, another     | close (</stream:stream>)
//            | element, a bad header, XML or limit error     |   (XML errors: a stream error)
//            | timer past the deadline / eof                 | close
//   done     | anything                                      | one warn log, never parsed
//
// What the local client sees: nothing on success (`toLocal` empty). After TLS the local client
// opens its own stream inside (RFC 6120 section 5.4.3.3: the stream restarts after TLS), and the
// server answers it with a fresh header and post-TLS features, exactly as if the local client
// had negotiated TLS itself. On failure nothing either: there is no stream of the local client's
// to put an error into yet (it may not even have sent its header), so the connection is closed
// and the reason logged.
import {
  ByteBuffer,
  type ClientAction,
  type ClientContext,
  type ClientDialect,
  type ClientDialectSession,
  concat,
  type LimitSpec,
  type OptionSpec,
  readLimits,
  readOptions,
  utf8,
} from '@tlsproxy/dialect-kit';
import { normalizeDomain } from './domains.js';
import { isXmppStreamError } from './errors.js';
import { NS_CLIENT, NS_SERVER, type StreamType } from './session.js';
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

export interface XmppClientOptions {
  mode: StreamType;
  lang: string;
}

export interface XmppClientConfig extends XmlLimits {
  responseTimeoutMs: number;
}

export const clientOptions: Record<keyof XmppClientOptions, OptionSpec> = {
  mode: {
    type: 'string',
    default: 'c2s',
    oneOf: ['c2s', 's2s'],
    problem: '"c2s" or "s2s"',
    description:
      'c2s: a jabber:client stream to the server name; s2s: a jabber:server stream from our host name to it.',
  },
  lang: {
    type: 'string',
    default: 'en',
    pattern: /^[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*$/,
    problem: 'a language tag such as "en" (RFC 5646)',
    description: 'xml:lang of our stream header (RFC 6120 section 4.7.4).',
  },
};

export const clientLimits: Record<keyof XmppClientConfig, LimitSpec> = {
  maxStanzaSize: {
    default: 16_384,
    unit: 'bytes',
    phase: 'preamble',
    description:
      "Octets of one top-level element from the server (or its prolog and stream header) before TLS; more: close. A pending <stream:features/> is held twice (the reader's queue and the copy read for its children): at most about 4 times this per connection.",
    source:
      'tlsproxy: Prosody and ejabberd pre-TLS features are 100-2000 octets; RFC 6120 section 13.12 asks servers to accept 10000-octet stanzas, so 16 KiB',
  },
  maxDepth: {
    default: 16,
    unit: 'count',
    phase: 'preamble',
    description: "Element nesting in the server's stream, the stream element counting as 1.",
    source: 'tlsproxy: <stream:features><starttls><required/> is 4 deep',
  },
  maxAttributes: {
    default: 32,
    unit: 'count',
    phase: 'preamble',
    description: 'Attributes on one element from the server, xmlns declarations included.',
    source: 'tlsproxy: a stream header has about 7 (to, from, version, xml:lang, id, 2 xmlns)',
  },
  responseTimeoutMs: {
    default: 30_000,
    unit: 'ms',
    phase: 'preamble',
    description: 'From our stream header to <proceed/>; then close; 0 disables.',
    source:
      'tlsproxy: Prosody answers at once; 30 s bounds a silent server as in the other client dialects',
  },
};

export const INJECTION_REASON =
  'response injection: the server sent octets after <proceed/> in the same read (plaintext ' +
  'that would be taken as protected; NO STARTTLS response-injection attack)';

const CLOSE_STREAM = utf8('</stream:stream>');
/** RFC 6120 section 5.4.2.1: the STARTTLS command. */
export const STARTTLS_COMMAND = utf8(`<starttls xmlns='${NS_TLS}'/>`);

type Phase = 'header' | 'features' | 'proceed' | 'done' | 'closed';

/** An element whose children we need: its qualified name and the octets after its start tag. */
interface Collecting {
  element: XmlElement;
  octets: ByteBuffer;
}

export class XmppClientSession implements ClientDialectSession {
  private phase: Phase = 'header';
  private readonly reader: StreamReader;
  private deadline = Number.POSITIVE_INFINITY;
  private header: XmlElement | null = null;
  private collecting: Collecting | null = null;
  private inTls: XmlElement | null = null;
  private features: string[] = [];

  constructor(
    private readonly config: XmppClientConfig,
    private readonly mode: StreamType,
    /** Our stream header, or a reason why none can be sent. */
    private readonly streamHeader: Uint8Array | string,
  ) {
    this.reader = new StreamReader(config);
  }

  start(now: number): ClientAction[] {
    if (typeof this.streamHeader === 'string') {
      this.phase = 'closed';
      return [{ type: 'close', reason: this.streamHeader }];
    }
    const out: ClientAction[] = [{ type: 'send', data: this.streamHeader }];
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
      const message = err instanceof Error ? err.message : String(err);
      return [
        { type: 'log', level: 'error', message: `xmpp client internal error: ${message}` },
        this.fail('internal error'),
      ];
    }
  }

  timer(now: number): ClientAction[] {
    if (!this.waiting()) return [];
    if (now < this.deadline) return [{ type: 'timer', at: this.deadline }];
    return [this.fail(`no <proceed/> from the server in time (${this.phase})`)];
  }

  eof(_now: number): ClientAction[] {
    if (!this.waiting()) return [];
    this.phase = 'closed';
    return [{ type: 'close', reason: `the server closed the connection (${this.phaseText()})` }];
  }

  private waiting(): boolean {
    return this.phase === 'header' || this.phase === 'features' || this.phase === 'proceed';
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
    this.reader.push(data);
    this.collecting?.octets.append(data);
    const out: ClientAction[] = [];
    try {
      for (let e = this.reader.next(); e !== null; e = this.reader.next()) {
        this.handle(e, out);
        if (!this.waiting()) return out;
      }
    } catch (err) {
      if (!isXmppStreamError(err)) throw err;
      // RFC 6120 section 4.9.1.1: the entity that finds the error sends it, then closes.
      this.phase = 'closed';
      out.push({
        type: 'close',
        reason: `server stream: ${err.message}`,
        data: utf8(
          `<stream:error><${err.condition} xmlns='${NS_STREAM_ERRORS}'/></stream:error></stream:stream>`,
        ),
      });
    }
    return out;
  }

  private handle(e: XmlEvent, out: ClientAction[]): void {
    switch (e.type) {
      case 'open':
        this.open(e.element, out);
        return;
      case 'close':
        out.push(this.fail(`the server closed its stream (${this.phaseText()})`));
        return;
      case 'start':
        this.started(e.element, out);
        return;
      case 'end':
        this.ended(e.element, out);
        return;
    }
  }

  /** RFC 6120 section 4.7: the server's response stream header. */
  private open(header: XmlElement, out: ClientAction[]): void {
    const content = header.ns[''];
    const want = this.mode === 's2s' ? NS_SERVER : NS_CLIENT;
    if (header.local !== 'stream' || header.uri !== NS_STREAMS) {
      out.push(this.fail(`server root element {${header.uri}}${header.local} is not a stream`));
      return;
    }
    if (content !== want) {
      out.push(this.fail(`server stream content namespace ${content ?? '(none)'}, not ${want}`));
      return;
    }
    // Section 4.7.5: no version (0.9) has no stream features, so no STARTTLS.
    const version = /^(\d{1,9})\.(\d{1,9})$/.exec(header.attributes.version ?? '');
    if (!version || Number(version[1]) !== 1) {
      out.push(
        this.fail(`server stream version ${header.attributes.version ?? '(none)'}, no STARTTLS`),
      );
      return;
    }
    this.header = header;
    this.phase = 'features';
  }

  private started(element: XmlElement, out: ClientAction[]): void {
    const stream = element.uri === NS_STREAMS;
    if (
      stream &&
      (element.local === 'error' || (element.local === 'features' && this.phase === 'features'))
    ) {
      // Keep the octets after its start tag (pushed back into the reader unchanged).
      const rest = this.reader.takeRest();
      this.reader.push(rest);
      const octets = new ByteBuffer();
      octets.append(rest);
      this.collecting = { element, octets };
      return;
    }
    if (
      this.phase === 'proceed' &&
      element.uri === NS_TLS &&
      (element.local === 'proceed' || element.local === 'failure')
    ) {
      this.inTls = element;
      return;
    }
    out.push(this.fail(`unexpected <${element.name}> from the server (${this.phaseText()})`));
  }

  private ended(element: XmlElement, out: ClientAction[]): void {
    if (this.collecting !== null) {
      const { octets } = this.collecting;
      this.collecting = null;
      const rest = this.reader.takeRest();
      this.reader.push(rest);
      const inner = innerOctets(octets.view().subarray(0, octets.length - rest.length));
      const children = this.children(element, inner);
      if (element.local === 'error') {
        const condition = children.find((c) => c.uri === NS_STREAM_ERRORS && c.local !== 'text');
        out.push(this.fail(`server stream error: ${condition?.local ?? '(no condition)'}`));
        return;
      }
      this.featuresDone(children, out);
      return;
    }
    if (this.inTls === null) return;
    this.inTls = null;
    if (element.local === 'failure') {
      out.push(this.fail('the server answered <starttls/> with <failure/>'));
      return;
    }
    // RFC 6120 section 5.4.2.3: TLS starts right after <proceed/>'s closing '>'.
    const rest = this.reader.takeRest();
    this.phase = 'closed';
    if (rest.length > 0) {
      out.push({ type: 'close', reason: `${INJECTION_REASON}: ${rest.length} octets` });
      return;
    }
    this.phase = 'done';
    out.push({
      type: 'starttls',
      toLocal: new Uint8Array(0),
      state: {
        streamType: this.mode,
        from: this.header?.attributes.from ?? null,
        id: this.header?.attributes.id ?? null,
        features: this.features,
      },
    });
  }

  /** RFC 6120 section 5.3.1 and 5.4.1: STARTTLS offered in the features, then sent. */
  private featuresDone(children: XmlElement[], out: ClientAction[]): void {
    this.features = children.slice(0, 32).map((c) => `{${c.uri}}${c.local}`);
    if (!children.some((c) => c.uri === NS_TLS && c.local === 'starttls')) {
      out.push(
        this.fail(
          `the server does not offer STARTTLS (features: ${this.features.join(' ') || 'none'})`,
        ),
      );
      return;
    }
    this.phase = 'proceed';
    out.push({ type: 'send', data: STARTTLS_COMMAND });
  }

  /**
   * The children of `element` from the octets inside it: a second reader over a wrapper that
   * declares the namespaces in scope (the stream header's, then the element's own).
   */
  private children(element: XmlElement, inner: Uint8Array): XmlElement[] {
    const ns = new Map<string, string>();
    for (const scope of [this.header?.ns ?? {}, element.ns]) {
      for (const [prefix, uri] of Object.entries(scope)) ns.set(prefix, uri);
    }
    let open = '<w';
    for (const [prefix, uri] of ns) {
      open += ` ${prefix === '' ? 'xmlns' : `xmlns:${prefix}`}='${escapeXml(uri)}'`;
    }
    const wrapper = utf8(`${open}>`);
    const reader = new StreamReader({
      maxStanzaSize: this.config.maxStanzaSize + wrapper.length + 4,
      maxDepth: this.config.maxDepth,
      maxAttributes: 2 * this.config.maxAttributes + 2,
    });
    reader.push(concat([wrapper, inner, utf8('</w>')]));
    const out: XmlElement[] = [];
    try {
      for (let e = reader.next(); e !== null; e = reader.next()) {
        if (e.type === 'start') out.push(e.element);
      }
    } catch (err) {
      // The first reader read the same octets already; this cannot fail on well-formed input.
      if (!isXmppStreamError(err)) throw err;
    }
    return out;
  }

  private phaseText(): string {
    return this.phase === 'header'
      ? 'before its stream header'
      : this.phase === 'features'
        ? 'before its stream features'
        : 'before <proceed/>';
  }

  /** Close our stream (the server is still reading it) and the connection. */
  private fail(reason: string): ClientAction {
    this.phase = 'closed';
    this.collecting = null;
    return { type: 'close', reason, data: CLOSE_STREAM };
  }
}

/** The octets between a start tag and its end tag (`octets` ends with the end tag). */
function innerOctets(octets: Uint8Array): Uint8Array {
  // An end tag holds no '<' and nothing after it is included, so the last '<' starts it; a
  // self-closed element has no octets at all.
  const lt = octets.lastIndexOf(0x3c);
  return lt < 0 ? new Uint8Array(0) : octets.subarray(0, lt);
}

/** Our stream header (RFC 6120 section 4.7), or why none can be sent. */
export function streamHeader(
  mode: StreamType,
  serverName: string,
  hostname: string,
  lang: string,
): Uint8Array | string {
  const to = normalizeDomain(serverName);
  if (to === null) return `server name ${JSON.stringify(serverName)} is not an XMPP domain`;
  let from = '';
  if (mode === 's2s') {
    const host = normalizeDomain(hostname);
    if (host === null) return `host name ${JSON.stringify(hostname)} is not an XMPP domain`;
    from = ` from='${escapeXml(host)}'`;
  }
  const xmlns = mode === 's2s' ? NS_SERVER : NS_CLIENT;
  return utf8(
    `<?xml version='1.0'?><stream:stream xmlns='${xmlns}' xmlns:stream='${NS_STREAMS}'` +
      ` to='${escapeXml(to)}'${from} version='1.0' xml:lang='${lang}'>`,
  );
}

export function clientConfig(context: ClientContext): XmppClientConfig {
  return readLimits(clientLimits, context.limits);
}

/** `dialect.client`: XMPP STARTTLS as the initiating entity (c2s or s2s). */
export const client: ClientDialect<Partial<XmppClientOptions>> = {
  options: clientOptions,
  limits: clientLimits,
  create: (context) => {
    const { mode, lang } = readOptions<XmppClientOptions>(clientOptions, context.options);
    return new XmppClientSession(
      clientConfig(context),
      mode,
      streamHeader(mode, context.serverName, context.hostname, lang),
    );
  },
};
