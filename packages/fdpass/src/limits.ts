// fdpass's limits as data: each declared once, with the constant the code uses, so docs/limits.md
// (scripts/gen-limits.mjs) and `tlsproxy check-config` read the same values the channels enforce.
import {
  DEFAULT_HIGH_WATER_MARK,
  DEFAULT_MAX_FDS,
  DEFAULT_MAX_MESSAGE_BYTES,
  READS_PER_TICK,
} from './channel.js';
import { DEFAULT_BACKLOG, DEFAULT_CONNECT_TIMEOUT_MS } from './listener.js';
import { DEFAULT_REQUEST_TIMEOUT_MS, MAX_HEADER_BYTES, MAX_INVALID } from './messages.js';

/** One limit: the same shape as @tlsproxy/core's LimitDeclaration (fdpass depends on no tlsproxy package but the kit). */
export interface FdpassLimit {
  /** What the limit bounds, for people. */
  readonly title: string;
  /** The name as written where it is set (option, constant). */
  readonly name: string;
  readonly default: number;
  readonly unit: 'bytes' | 'ms' | 'count';
  /** When it applies in a connection's life: fdpass carries the hand-off. */
  readonly phase: 'accept' | 'handoff';
  /** Words after the default ("(hard cap 253)"). */
  readonly note?: string;
  /** Where it is set. */
  readonly where: string;
  /** What happens past it. */
  readonly past: string;
  /** Where the default comes from (an RFC, a peer, a tlsproxy choice). */
  readonly source: string;
}

export const FDPASS_LIMITS: readonly FdpassLimit[] = Object.freeze([
  {
    title: 'Message payload',
    name: 'maxMessageBytes',
    default: DEFAULT_MAX_MESSAGE_BYTES,
    unit: 'bytes',
    phase: 'handoff',
    where:
      'channel option `maxMessageBytes`, constant `DEFAULT_MAX_MESSAGE_BYTES` (`packages/fdpass/src/channel.ts`); every tlsproxy channel uses the default',
    past: "Send: `TLSPROXY_ERR_FDPASS_TOO_BIG`, owned descriptors closed — but the message layer sends with an empty callback (`messages.ts`), so the error is swallowed and a request waits for its timeout (e.g. 5 s for a hand-off, then `handoff_failed`). Receive: the message is dropped (`'dropped'`), its descriptors closed; the message layer answers with an `error` and counts it as invalid.",
    source: 'fits the default AF_UNIX socket buffer (`net.core.wmem_default`) (fdpass README)',
  },
  {
    title: 'JSON header',
    name: 'MAX_HEADER_BYTES',
    default: MAX_HEADER_BYTES,
    unit: 'bytes',
    phase: 'handoff',
    where: 'constant `MAX_HEADER_BYTES` (`packages/fdpass/src/messages.ts`)',
    past: 'Receive: `header length out of range` → `error` reply, descriptors closed, counted as invalid. (On send only the 64 KiB payload limit applies.)',
    source: '"bodies are small control data, payload goes in the attachment"',
  },
  {
    title: 'Descriptors per message',
    name: 'maxFds',
    default: DEFAULT_MAX_FDS,
    unit: 'count',
    phase: 'handoff',
    note: '(hard cap 253, `FDPASS_MAX_FDS`)',
    where:
      'channel option `maxFds`, constant `DEFAULT_MAX_FDS` (`channel.ts`); hard cap `FDPASS_MAX_FDS` (`fdpass.c`)',
    past: 'Send: refused. Receive: `MSG_CTRUNC` → message dropped, the descriptors that arrived closed, counted as invalid. Each message type also declares its exact count (`validate`, `messages.ts`); a mismatch is an invalid message.',
    source: '`SCM_MAX_FD` in the kernel is 253',
  },
  {
    title: 'Invalid messages per channel',
    name: 'MAX_INVALID',
    default: MAX_INVALID,
    unit: 'count',
    phase: 'handoff',
    note: "over the channel's lifetime, not per time window",
    where: 'constant `MAX_INVALID` (`messages.ts`)',
    past: 'The 16th invalid message closes the channel (`messages.ts`).',
    source: '"a broken or hostile peer is cut off"',
  },
  {
    title: 'Request without answer',
    name: 'timeoutMs',
    default: DEFAULT_REQUEST_TIMEOUT_MS,
    unit: 'ms',
    phase: 'handoff',
    note: 'unless the caller sets one (see the rows above)',
    where: '`Peer.request` option `timeoutMs` (`messages.ts`)',
    past: '`TLSPROXY_ERR_FDPASS_TIMEOUT`.',
    source: 'tlsproxy choice',
  },
  {
    title: 'Reads / accepts per event-loop turn',
    name: 'READS_PER_TICK',
    default: READS_PER_TICK,
    unit: 'count',
    phase: 'handoff',
    note: 'reads, and as many accepts (`ACCEPTS_PER_TICK`)',
    where: 'constants `READS_PER_TICK` (`channel.ts`), `ACCEPTS_PER_TICK` (`listener.ts`)',
    past: 'The rest waits for the next turn.',
    source: '"one busy peer cannot starve the event loop"',
  },
  {
    title: 'Queued sends',
    name: 'highWaterMark',
    default: DEFAULT_HIGH_WATER_MARK,
    unit: 'count',
    phase: 'handoff',
    note: 'messages',
    where: 'channel option `highWaterMark` (`channel.ts`)',
    past: '`send()` returns `false` (the message is still queued).',
    source: 'tlsproxy choice',
  },
  {
    title: 'Connect retry on a full backlog',
    name: 'timeoutMs',
    default: DEFAULT_CONNECT_TIMEOUT_MS,
    unit: 'ms',
    phase: 'handoff',
    note: '(the proxy passes 2 000)',
    where: '`connect({ timeoutMs })` (`listener.ts`)',
    past: 'The `EAGAIN` error is thrown.',
    source: 'tlsproxy choice',
  },
  {
    title: 'Listen backlog',
    name: 'backlog',
    default: DEFAULT_BACKLOG,
    unit: 'count',
    phase: 'accept',
    where: '`listen({ backlog })` (`listener.ts`)',
    past: 'Kernel behaviour (`connect()` gets `EAGAIN`).',
    source: 'tlsproxy choice',
  },
]);
