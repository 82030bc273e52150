// Which embedded TLS engine a proxy gets: core builds the node:tls engine from options itself;
// the native engine (@tlsproxy/engine-native, C on its own threads) is built here, on request,
// and handed to core as an engine object. A tlspool daemon's socket is passed through.
import type { ProxyOptions } from '@tlsproxy/core';
import type { EngineOptions } from '@tlsproxy/pool';

export type EngineKind = 'node' | 'native';

export async function embeddedEngine(
  kind: EngineKind,
  pool: ProxyOptions['pool'],
  threads?: number,
): Promise<ProxyOptions['pool']> {
  if (kind !== 'native' || !('identities' in pool)) return pool;
  const { NativeTlsEngine } = await import('@tlsproxy/engine-native');
  return new NativeTlsEngine({
    ...(pool as EngineOptions),
    ...(threads !== undefined ? { threads } : {}),
  });
}
