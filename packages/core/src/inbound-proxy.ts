// PROXY protocol v1/v2 *inbound*, from trusted load balancers (HAProxy, cloud L4 balancers), so
// client addresses survive. The header is read with MSG_PEEK and then consumed to its exact
// length, so the bytes after it (an early ClientHello for implicit TLS) stay in the socket.

import type net from 'node:net';
import { BlockList } from 'node:net';
import { discardPending, peekPending, socketFd } from '@tlsproxy/fdpass';
import { type AddressMatcher, canonicalAddress, parseAddressMatcher } from './addresses.js';
import { decodeProxyHeader } from './proxy-protocol.js';
import type { SessionAddresses } from './session.js';

/** How long a trusted load balancer may take to send its PROXY header. */
export const DEFAULT_PROXY_HEADER_TIMEOUT_MS = 5000;

export interface InboundProxyConfig {
  /** Addresses or CIDR ranges of the balancers allowed to send a header ('10.0.0.0/8', '::1'). */
  trusted: string[];
  /** How long a trusted peer may take to send its header; default 5000 ms. */
  timeoutMs?: number;
}

/**
 * The trusted balancers as a BlockList. Every entry is checked first (addresses.ts): a malformed
 * one throws CoreError TLSPROXY_ERR_CONFIG naming proxyProtocol.trusted[i] — call this when the
 * config is applied, not per connection. (Node's own parsing threw RangeError from inside the
 * accept callback, and read '1.2.3.4/' as /0: trust everyone.)
 */
export function trustList(trusted: readonly string[]): BlockList {
  const matcher = parseAddressMatcher(trusted, 'proxyProtocol.trusted');
  const list = new BlockList();
  for (const entry of matcher.entries) {
    // Canonical entries from the matcher: these calls cannot throw.
    const [addr, bits] = entry.split('/') as [string, string | undefined];
    const type = addr.includes(':') ? 'ipv6' : 'ipv4';
    if (bits !== undefined) list.addSubnet(addr, Number(bits), type);
    else list.addAddress(addr, type);
  }
  return list;
}

function isTrusted(list: BlockList | AddressMatcher, address: string | undefined): boolean {
  if (!address) return false;
  if (!(list instanceof BlockList)) return list.has(address);
  // IPv4-mapped peers as IPv4, zone ids left off; anything that is not an address: not trusted.
  const a = canonicalAddress(address);
  if (!a) return false;
  try {
    return list.check(a.text, a.family === 4 ? 'ipv4' : 'ipv6');
  } catch {
    return false;
  }
}

/**
 * For a socket accepted paused: if its peer is trusted, wait for its PROXY header and return the
 * addresses it names (undefined for a LOCAL health check or UNKNOWN); if not trusted, return the
 * socket's own addresses. Rejects (the caller closes) on a missing, malformed or slow header.
 */
export async function readInboundProxy(
  socket: net.Socket,
  list: BlockList | AddressMatcher,
  timeoutMs: number,
): Promise<SessionAddresses | undefined> {
  const own: SessionAddresses = {
    address: socket.remoteAddress ?? '',
    port: socket.remotePort ?? 0,
    localAddress: socket.localAddress ?? '',
    localPort: socket.localPort ?? 0,
  };
  if (!isTrusted(list, socket.remoteAddress)) return own;
  return readProxyHeader(socketFd(socket), own, timeoutMs);
}

/** The same for a descriptor accepted as such (proxy.ts): `own` are its addresses. */
export async function readInboundProxyFd(
  fd: number,
  own: SessionAddresses,
  list: BlockList | AddressMatcher,
  timeoutMs: number,
): Promise<SessionAddresses | undefined> {
  if (!isTrusted(list, own.address)) return own;
  return readProxyHeader(fd, own, timeoutMs);
}

async function readProxyHeader(
  fd: number,
  own: SessionAddresses,
  timeoutMs: number,
): Promise<SessionAddresses | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (let wait = 2; ; wait = Math.min(wait * 2, 50)) {
    const data = peekPending(fd, 4096 + 16);
    if (data !== null && data.length === 0) throw new Error('closed before its PROXY header');
    if (data !== null) {
      const r = decodeProxyHeader(data);
      if (r.kind === 'none') throw new Error('trusted peer sent no PROXY header');
      if (r.kind === 'header') {
        discardPending(fd, r.length);
        const h = r.header;
        if (h.command === 'local' || h.sourceAddress === undefined) return own;
        return {
          address: h.sourceAddress,
          port: h.sourcePort ?? 0,
          localAddress: h.destinationAddress ?? own.localAddress,
          localPort: h.destinationPort ?? own.localPort,
        };
      }
    }
    if (Date.now() > deadline) throw new Error(`no complete PROXY header within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, wait));
  }
}
