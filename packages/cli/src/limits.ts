// A listener's limits as they take effect: core's defaults, the split over `workers: N`, and the
// report `tlsproxy check-config` prints (issue 14).
//
// Each worker is a separate process with its own counters. Left alone, `workers: 4` would quietly
// make every connection limit four times what the file says; instead the connection limits in
// the file are totals for the whole proxy and each worker gets ceil(total / N). The kernel
// spreads connections over the workers (SCHED_NONE), not evenly per client, so a per-address
// limit of L may refuse a client a little before L connections in all; never after (rounding up
// lets through at most N - 1 more than the total).
import type { Dialect, LimitDeclaration, ListenerConfig } from '@tlsproxy/core';
import {
  CLIENT_LISTENER_LIMIT_NAMES,
  CLIENT_LISTENER_LIMITS,
  LISTENER_DEFAULTS as CORE_DEFAULTS,
  ENGINE_LIMITS,
  LISTENER_LIMIT_NAMES,
  POOL_LIMITS,
  resolveLimits,
} from '@tlsproxy/core';
import type { LoadedConfig } from './config.js';

/** A declaration from core's limit tables (the same ones docs/limits.md is generated from). */
function declared(table: readonly LimitDeclaration[], name: string): number {
  const d = table.find((l) => l.name === name);
  if (typeof d?.default !== 'number') throw new Error(`no numeric limit ${name} declared`);
  return d.default;
}

/** core's defaults for what a listener leaves out, and the engine's handshake timeout
 * (@tlsproxy/pool's default), all from the limit declarations. */
export const LISTENER_DEFAULTS = Object.freeze({
  ...CORE_DEFAULTS,
  handshakeTimeoutMs: declared(POOL_LIMITS, 'handshakeTimeoutMs'),
});

/** The inbound PROXY header wait when a listener's proxyProtocol leaves it out. */
const PROXY_HEADER_TIMEOUT_MS = declared(ENGINE_LIMITS, 'proxyProtocol.timeoutMs');

/** Limits on how many connections are held at once: counted per process, so split over workers. */
export const SPLIT_OVER_WORKERS = [
  'maxConnections',
  'maxConnectionsPerAddress',
  'maxHandshakes',
] as const;

/** The listener one worker of `workers` runs: each connection-count limit ceil(total / workers). */
export function perWorker(l: ListenerConfig, workers: number): ListenerConfig {
  if (!(workers > 1)) return l;
  const out: ListenerConfig = { ...l };
  for (const key of SPLIT_OVER_WORKERS) {
    const total = l[key] ?? LISTENER_DEFAULTS[key];
    out[key] = Math.max(1, Math.ceil(total / workers));
  }
  return out;
}

/** One line per effective value; `workers` as it will run (1 with systemd: listeners). */
export function describeLimits(
  config: LoadedConfig,
  workers: { count: number; isDefault: boolean; rule?: string },
  dialects: Dialect<unknown>[],
): string[] {
  const n = workers.count;
  const dflt = workers.isDefault ? ` (default${workers.rule ? `: ${workers.rule}` : ''})` : '';
  const out: string[] = [
    n > 1
      ? `workers: ${n}${dflt}, each a separate process with its own counters: ${SPLIT_OVER_WORKERS.join(', ')} are totals for the whole proxy, each worker allowing ceil(total / ${n}); every other limit applies to each connection as written`
      : `workers: 1${dflt}, one process: every limit applies as written`,
  ];
  const raw = config.raw;
  config.listeners.forEach((l, i) => {
    const d = dialects[i]!;
    const client = l.role === 'client';
    out.push(
      client
        ? `listeners.${i}: ${d.name} client on ${String(l.listen)} → ${String(l.connect)}`
        : `listeners.${i}: ${d.name} on ${String(l.listen)}`,
    );
    const row = (name: string, value: string, isDefault: boolean) =>
      out.push(
        `  ${name.padEnd(Math.max(27, name.length + 1))}${value}${isDefault ? ' (default)' : ''}`,
      );
    const num = (key: keyof typeof LISTENER_DEFAULTS, value: number | undefined) => {
      const v = value ?? LISTENER_DEFAULTS[key];
      const split = (SPLIT_OVER_WORKERS as readonly string[]).includes(key) && n > 1;
      const text = split
        ? `${v} total, ${Math.max(1, Math.ceil(v / n))} per worker`
        : key === 'idleTimeoutMs' && v === 0
          ? '0 = off'
          : String(v);
      row(key, text, value === undefined);
    };
    // Every listener-key limit core declares, in its order (exempt, a list, after ipv6Prefix).
    for (const key of LISTENER_LIMIT_NAMES) {
      num(key, l[key]);
      if (key === 'ipv6Prefix')
        row('exempt', l.exempt && l.exempt.length > 0 ? l.exempt.join(', ') : 'none', false);
    }
    if (client) {
      for (const key of CLIENT_LISTENER_LIMIT_NAMES) {
        const v = l[key];
        row(key, String(v ?? CLIENT_LISTENER_LIMITS.get(key)!.default), v === undefined);
      }
    }
    num('handshakeTimeoutMs', l.tls?.handshakeTimeoutMs ?? raw.tls?.handshakeTimeoutMs);
    if (l.proxyProtocol) {
      row('proxyProtocol.trusted', l.proxyProtocol.trusted.join(', ') || 'none', false);
      row(
        'proxyProtocol.timeoutMs',
        String(l.proxyProtocol.timeoutMs ?? PROXY_HEADER_TIMEOUT_MS),
        l.proxyProtocol.timeoutMs === undefined,
      );
    }
    // The client role's dialect limits are its client side's (preflight said if it has none).
    const side = client && d.client ? { name: d.name, limits: d.client.limits } : d;
    const limits = resolveLimits(side, l.limits);
    for (const [name, value] of Object.entries(limits)) {
      row(`limits.${name}`, String(value), !(l.limits && name in l.limits));
    }
  });
  return out;
}
