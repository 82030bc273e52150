// A typed, versioned message layer over Channel. Packages declare their message types with a
// schema (defineProtocol); fdpass provides framing, the hello/version check, validation on
// receipt, error replies, request/response matching, and descriptor ownership.
//
// Wire format of one Channel payload (see README "Wire format"):
//   u32 big-endian H | H bytes of UTF-8 JSON header | attachment bytes (the rest, may be empty)
//   header: { "t": type, "b": body, "id"?: request id, "re"?: id this replies to }
//
// Why one file of ~480 lines (issue 16): schema validation, framing, the hello and the Peer
// state machine share the one wire format above and the MAX_* bounds; split apart, each half
// would have to be read with the other open.

import { EventEmitter } from 'node:events';
import { TlsproxyError } from '@tlsproxy/dialect-kit';
import type { Channel } from './channel.js';
import { FdpassError } from './errors.js';
import type { OwnedFd } from './fd.js';

export type FieldType = 'string' | 'number' | 'integer' | 'boolean' | 'object' | 'array' | 'any';
/** 'string' required, 'string?' optional, 'string|null' required but nullable. */
export type FieldSpec = FieldType | `${FieldType}?` | `${FieldType}|null`;

export interface MessageSpec {
  fields: Record<string, FieldSpec>;
  /** Descriptors the message must carry: exact count or [min, max]; default 0. */
  fds?: number | [number, number];
  /** Whether a binary attachment may follow the header; default false. */
  attachment?: boolean;
}

export interface ProtocolSpec {
  /** e.g. 'tlsproxy-handoff' */
  name: string;
  /** Integer; peers with a different version are refused at hello. */
  version: number;
  messages: Record<string, MessageSpec>;
}

export interface AttachOptions {
  /**
   * Extra fields for our hello (e.g. what this side supports). They travel next to protocol and
   * version, which they cannot replace; a peer that does not know them ignores them.
   */
  hello?: Record<string, unknown>;
}

/** The peer's hello: its protocol and version, and the whole hello body (extra fields included). */
export interface Hello {
  protocol: string;
  version: number;
  /** Every field of the peer's hello, as sent (peer-controlled: check before use). */
  hello: Readonly<Record<string, unknown>>;
}

export interface Incoming {
  type: string;
  body: Record<string, unknown>;
  /** Owned by the receiver: adopt or close each one. */
  fds: OwnedFd[];
  attachment: Buffer;
  id?: number;
  re?: number;
}

export interface SendOptions {
  fds?: ReadonlyArray<number | OwnedFd>;
  attachment?: Uint8Array;
  re?: number;
  id?: number;
}

/** Header size cap: bodies are small control data, payload goes in the attachment. */
export const MAX_HEADER_BYTES = 32 * 1024;
/** A peer that sends this many invalid messages is cut off. */
export const MAX_INVALID = 16;
/** How long a request waits for its answer when the caller gives no timeout. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;

// Every name the peer picks (message type, field name) is looked up in a Map, never in a plain
// object: a type of "constructor" or "__proto__" must find nothing, not Object.prototype's member.
const RESERVED: ReadonlyMap<string, MessageSpec> = new Map<string, MessageSpec>([
  ['hello', { fields: { protocol: 'string', version: 'integer' } }],
  ['error', { fields: { code: 'string', message: 'string' } }],
]);

const FIELD_SPEC = /^(string|number|integer|boolean|object|array|any)(\?|\|null)?$/;

/** A spec as checked at definition time: own fields only, as a list. */
function freezeSpec(type: string, m: MessageSpec): MessageSpec {
  if (typeof m !== 'object' || m === null || typeof m.fields !== 'object' || m.fields === null)
    throw new TypeError(`message type "${type}": fields must be an object`);
  const fields: Record<string, FieldSpec> = Object.create(null);
  for (const [k, f] of Object.entries(m.fields)) {
    if (typeof f !== 'string' || !FIELD_SPEC.test(f))
      throw new TypeError(`message type "${type}": field "${k}" has no valid type (${String(f)})`);
    fields[k] = f;
  }
  return Object.freeze({
    fields: Object.freeze(fields),
    ...(m.fds !== undefined ? { fds: m.fds } : {}),
    ...(m.attachment !== undefined ? { attachment: m.attachment } : {}),
  });
}

export class Protocol {
  readonly name: string;
  readonly version: number;
  /** Message types by name (hello and error included). */
  readonly messages: ReadonlyMap<string, MessageSpec>;
  constructor(spec: ProtocolSpec) {
    const messages = new Map(RESERVED);
    for (const [k, m] of Object.entries(spec.messages)) {
      if (RESERVED.has(k)) throw new TypeError(`message type "${k}" is reserved`);
      messages.set(k, freezeSpec(k, m));
    }
    this.name = spec.name;
    this.version = spec.version;
    this.messages = messages;
  }

  /** Start speaking this protocol on a channel; both sides send hello at once. */
  attach(channel: Channel, options: AttachOptions = {}): Peer {
    return new Peer(this, channel, options);
  }
}

export function defineProtocol(spec: ProtocolSpec): Protocol {
  return new Protocol(spec);
}

function checkField(spec: FieldSpec, v: unknown): boolean {
  const optional = spec.endsWith('?');
  const nullable = spec.endsWith('|null');
  const base = spec.replace(/\?$|\|null$/, '') as FieldType;
  if (v === undefined) return optional;
  if (v === null) return nullable || base === 'any';
  switch (base) {
    case 'string':
      return typeof v === 'string';
    case 'number':
      return typeof v === 'number' && Number.isFinite(v);
    case 'integer':
      return Number.isSafeInteger(v);
    case 'boolean':
      return typeof v === 'boolean';
    case 'object':
      return typeof v === 'object' && !Array.isArray(v);
    case 'array':
      return Array.isArray(v);
    case 'any':
      return true;
  }
}

/** Why a message does not match its spec, or undefined when it does. */
export function validate(
  spec: MessageSpec,
  body: unknown,
  nfds: number,
  attachment: number,
): string | undefined {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    return 'body is not an object';
  for (const [k, f] of Object.entries(spec.fields)) {
    // Own properties only: a missing "constructor" field must not be found on Object.prototype.
    const present = Object.hasOwn(body, k);
    if (!present && !f.endsWith('?')) return `field "${k}" is missing`;
    if (!checkField(f, present ? (body as Record<string, unknown>)[k] : undefined))
      return `field "${k}" is not ${f}`;
  }
  const [min, max] = Array.isArray(spec.fds) ? spec.fds : [spec.fds ?? 0, spec.fds ?? 0];
  if (nfds < min || nfds > max)
    return `carries ${nfds} descriptors, expected ${min === max ? min : `${min}..${max}`}`;
  if (attachment > 0 && !spec.attachment) return 'unexpected attachment';
  return undefined;
}

export function encode(
  type: string,
  body: Record<string, unknown>,
  opts: SendOptions = {},
): Buffer {
  const header: Record<string, unknown> = { t: type, b: body };
  if (opts.id !== undefined) header.id = opts.id;
  if (opts.re !== undefined) header.re = opts.re;
  const json = Buffer.from(JSON.stringify(header));
  const att = opts.attachment ?? new Uint8Array(0);
  const out = Buffer.allocUnsafe(4 + json.length + att.byteLength);
  out.writeUInt32BE(json.length, 0);
  json.copy(out, 4);
  out.set(att, 4 + json.length);
  return out;
}

/** A payload that does not parse; `id` is the request id when the header got that far. */
export class DecodeError extends TlsproxyError<'TLSPROXY_ERR_FDPASS_DECODE'> {
  readonly id: number | undefined;
  constructor(message: string, id?: number) {
    super('TLSPROXY_ERR_FDPASS_DECODE', message);
    this.name = 'DecodeError';
    this.id = id;
  }
}

/** Parse a payload's framing; throws a DecodeError whose message suits an error reply. */
export function decode(data: Buffer): {
  t: string;
  b: unknown;
  id?: number;
  re?: number;
  attachment: Buffer;
} {
  if (data.length < 4) throw new DecodeError('message shorter than its length prefix');
  const h = data.readUInt32BE(0);
  if (h > MAX_HEADER_BYTES || 4 + h > data.length)
    throw new DecodeError('header length out of range');
  let header: unknown;
  try {
    header = JSON.parse(data.subarray(4, 4 + h).toString('utf8'));
  } catch {
    throw new DecodeError('header is not JSON');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header))
    throw new DecodeError('header is not an object');
  // Own properties only (JSON.parse makes "__proto__" an own key, but be explicit).
  const own = (k: string): unknown =>
    Object.hasOwn(header as object, k) ? (header as Record<string, unknown>)[k] : undefined;
  const t = own('t');
  const b = own('b');
  const id = own('id');
  const re = own('re');
  if (id !== undefined && !Number.isSafeInteger(id)) throw new DecodeError('bad id');
  const okId = id as number | undefined;
  if (typeof t !== 'string') throw new DecodeError('header has no type', okId);
  if (re !== undefined && !Number.isSafeInteger(re)) throw new DecodeError('bad re', okId);
  return {
    t,
    b,
    ...(okId !== undefined ? { id: okId } : {}),
    ...(re !== undefined ? { re: re as number } : {}),
    attachment: data.subarray(4 + h),
  };
}

/** A peer-chosen name, quoted and cut short, for error messages and logs. */
function quote(name: string): string {
  return JSON.stringify(name.length > 64 ? `${name.slice(0, 64)}…` : name);
}

export interface PeerEvents {
  /** A valid message (not hello, and not a reply to a pending request). */
  message: [Incoming];
  /** The peer sent something invalid; it got an error reply, descriptors were closed. */
  invalid: [FdpassError];
  /** An error message from the peer that answers no pending request. */
  remoteError: [FdpassError];
  close: [];
}

/** One end of a protocol conversation over a Channel. Owns the channel. */
export class Peer extends EventEmitter<PeerEvents> {
  readonly protocol: Protocol;
  readonly channel: Channel;
  /** Resolves with the peer's hello; rejects on version mismatch or close before hello. */
  readonly ready: Promise<Hello>;
  #hello = false;
  #nextId = 1;
  #invalid = 0;
  #pending = new Map<
    number,
    { resolve(m: Incoming): void; reject(e: Error): void; timer: NodeJS.Timeout }
  >();
  #resolveReady!: (h: Hello) => void;
  #rejectReady!: (e: Error) => void;

  constructor(protocol: Protocol, channel: Channel, options: AttachOptions = {}) {
    super();
    this.protocol = protocol;
    this.channel = channel;
    this.ready = new Promise((res, rej) => {
      this.#resolveReady = res;
      this.#rejectReady = rej;
    });
    this.ready.catch(() => {});
    channel.on('message', (m) => this.#onMessage(m.data, m.fds));
    channel.on('dropped', (err) => this.#invalidMessage(err.message, [], undefined, err.code));
    channel.on('error', () => {});
    channel.on('close', () => this.#onClose());
    this.#raw('hello', {
      ...options.hello,
      protocol: protocol.name,
      version: protocol.version,
    });
  }

  get closed(): boolean {
    return this.channel.closed;
  }

  /** Send a message; it is checked against its own schema first (our bug, not the peer's). */
  send(type: string, body: Record<string, unknown>, opts: SendOptions = {}): boolean {
    const spec = this.protocol.messages.get(type);
    if (!spec)
      throw new FdpassError('TLSPROXY_ERR_FDPASS_PROTOCOL', `unknown message type ${quote(type)}`);
    const why = validate(spec, body, opts.fds?.length ?? 0, opts.attachment?.byteLength ?? 0);
    if (why) throw new FdpassError('TLSPROXY_ERR_FDPASS_PROTOCOL', `${type}: ${why}`);
    return this.#raw(type, body, opts);
  }

  /** Send and wait for the message that answers it (any type with re = our id, or an error). */
  request(
    type: string,
    body: Record<string, unknown>,
    opts: SendOptions & { timeoutMs?: number; onId?: (id: number) => void } = {},
  ): Promise<Incoming> {
    const id = this.#nextId++;
    // Lets the caller correlate messages the peer sends about this request before answering it.
    opts.onId?.(id);
    return new Promise<Incoming>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new FdpassError(
            'TLSPROXY_ERR_FDPASS_TIMEOUT',
            `no answer to ${type} within ${opts.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS} ms`,
          ),
        );
      }, opts.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS);
      timer.unref?.();
      this.#pending.set(id, { resolve, reject, timer });
      const fail = (err: unknown) => {
        clearTimeout(timer);
        this.#pending.delete(id);
        reject(err);
      };
      try {
        // A send the kernel refuses (too big, channel closed) fails the request now, not at
        // its timeout.
        this.send(type, body, { ...opts, id, onSendError: fail } as SendOptions);
      } catch (err) {
        fail(err);
      }
    });
  }

  reply(
    to: Incoming,
    type: string,
    body: Record<string, unknown>,
    opts: SendOptions = {},
  ): boolean {
    return this.send(type, body, to.id === undefined ? opts : { ...opts, re: to.id });
  }

  replyError(to: Incoming | undefined, code: string, message: string): void {
    this.#raw('error', { code, message }, to?.id === undefined ? {} : { re: to.id });
  }

  close(): void {
    this.channel.close();
  }

  #raw(type: string, body: Record<string, unknown>, opts: SendOptions = {}): boolean {
    if (this.channel.closed) {
      for (const f of opts.fds ?? []) if (typeof f !== 'number') f.close();
      return false;
    }
    const failed = (opts as { onSendError?: (err: Error) => void }).onSendError;
    return this.channel.send(encode(type, body, opts), opts.fds ?? [], (err) => {
      if (err) failed?.(err);
    });
  }

  #invalidMessage(
    why: string,
    fds: OwnedFd[],
    re: number | undefined,
    code = 'TLSPROXY_ERR_FDPASS_PROTOCOL',
  ): void {
    for (const f of fds) f.close();
    const err = new FdpassError('TLSPROXY_ERR_FDPASS_PROTOCOL', why);
    this.#raw('error', { code, message: why }, re === undefined ? {} : { re });
    this.emit('invalid', err);
    if (++this.#invalid >= MAX_INVALID) this.close();
  }

  #onMessage(data: Buffer, fds: OwnedFd[]): void {
    let m: ReturnType<typeof decode>;
    try {
      m = decode(data);
    } catch (err) {
      this.#invalidMessage((err as Error).message, fds, (err as DecodeError).id);
      return;
    }
    const spec = this.protocol.messages.get(m.t);
    if (!spec) {
      this.#invalidMessage(`unknown message type ${quote(m.t)}`, fds, m.id);
      return;
    }
    let why: string | undefined;
    try {
      why = validate(spec, m.b, fds.length, m.attachment.length);
    } catch (err) {
      // validate() does not throw on any input we know of; if it ever does, that is this
      // peer's message refused, not the process gone.
      why = `could not be checked (${(err as Error).message})`;
    }
    if (why) {
      // m.t is one of our own type names here (its spec was found).
      this.#invalidMessage(`${m.t}: ${why}`, fds, m.id);
      return;
    }
    const body = m.b as Record<string, unknown>;
    if (m.t === 'hello') {
      if (body.protocol !== this.protocol.name || body.version !== this.protocol.version) {
        const err = new FdpassError(
          'TLSPROXY_ERR_FDPASS_VERSION',
          `peer speaks ${String(body.protocol)} v${String(body.version)}, we speak ${this.protocol.name} v${this.protocol.version}`,
        );
        this.#raw('error', { code: err.code, message: err.message });
        this.#rejectReady(err);
        this.close();
        return;
      }
      this.#hello = true;
      this.#resolveReady({
        protocol: body.protocol as string,
        version: body.version as number,
        hello: Object.freeze({ ...body }),
      });
      for (const f of fds) f.close();
      return;
    }
    if (!this.#hello) {
      this.#invalidMessage(`${m.t} before hello`, fds, m.id);
      return;
    }
    const msg: Incoming = { type: m.t, body, fds, attachment: m.attachment };
    if (m.id !== undefined) msg.id = m.id;
    if (m.re !== undefined) msg.re = m.re;
    const waiter = m.re !== undefined ? this.#pending.get(m.re) : undefined;
    if (waiter && m.re !== undefined) {
      this.#pending.delete(m.re);
      clearTimeout(waiter.timer);
      if (m.t === 'error') {
        for (const f of fds) f.close();
        const e = new FdpassError(
          'TLSPROXY_ERR_FDPASS_REMOTE',
          `${String(body.code)}: ${String(body.message)}`,
        );
        (e as FdpassError & { remoteCode?: unknown }).remoteCode = body.code;
        waiter.reject(e);
      } else {
        waiter.resolve(msg);
      }
      return;
    }
    if (m.t === 'error') {
      const e = new FdpassError(
        'TLSPROXY_ERR_FDPASS_REMOTE',
        `${String(body.code)}: ${String(body.message)}`,
      );
      (e as FdpassError & { remoteCode?: unknown }).remoteCode = body.code;
      if (body.code === 'TLSPROXY_ERR_FDPASS_VERSION') this.#rejectReady(e);
      this.emit('remoteError', e);
      return;
    }
    if (this.listenerCount('message') === 0) {
      for (const f of fds) f.close();
      return;
    }
    this.emit('message', msg);
  }

  #onClose(): void {
    this.#rejectReady(new FdpassError('TLSPROXY_ERR_FDPASS_CLOSED', 'channel closed before hello'));
    const err = new FdpassError(
      'TLSPROXY_ERR_FDPASS_CLOSED',
      'channel closed before the answer came',
    );
    for (const [, w] of this.#pending) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.#pending.clear();
    this.emit('close');
  }
}
