// Which embedded TLS engine a proxy gets (issue 15): the native engine (@tlsproxy/engine-native,
// C on its own threads) by default, built here and handed to core as an engine object; node:tls
// (core builds it from options) when asked for with `engine: node`, or when no engine was asked
// for and the native one cannot load here — a proxy must not fail to start on a machine where
// only the fallback works. A tlspool daemon's socket is passed through: it runs its own engine.
import { availableParallelism } from 'node:os';
import { type ProxyOptions, TlsProxy } from '@tlsproxy/core';
import type { EngineOptions, TlsEngineApi } from '@tlsproxy/pool';

export type EngineKind = 'node' | 'native';

/** Used when neither `--engine` nor `engine:` says which. */
export const DEFAULT_ENGINE: EngineKind = 'native';

/** Loads the native addon (and the OpenSSL symbols it takes from node), throwing why not. */
export type NativeLoader = () => Promise<void>;

export const loadNative: NativeLoader = async () => {
  const native = await import('@tlsproxy/engine-native');
  native.checkNative();
};

/** Why the native engine cannot run in this process; undefined when it can. */
export async function nativeProblem(load: NativeLoader = loadNative): Promise<string | undefined> {
  try {
    await load();
    return undefined;
  } catch (err) {
    return String((err as Error)?.message ?? err);
  }
}

export interface EngineDecision {
  kind: EngineKind;
  /** The default fell back to node:tls: why the native engine could not load. */
  fallback?: string;
}

/**
 * The engine to run for what was asked: an explicit kind as given (an explicit native that cannot
 * load is refused by preflight, not replaced), nothing → native, or node:tls when it cannot load.
 */
export async function decideEngine(
  requested: EngineKind | undefined,
  load: NativeLoader = loadNative,
): Promise<EngineDecision> {
  if (requested) return { kind: requested };
  const why = await nativeProblem(load);
  return why === undefined ? { kind: DEFAULT_ENGINE } : { kind: 'node', fallback: why };
}

/** The one warning line of a fallback (the reason folded onto that line). */
export function fallbackWarning(decision: EngineDecision, threadsGiven: boolean): string {
  return (
    'the native TLS engine (the default) cannot load here; running the node:tls engine instead' +
    `${threadsGiven ? ' (engineThreads is not used by it)' : ''}. ` +
    `Choose it with --engine node (engine: node in a config) to silence this warning. Why: ${
      decision.fallback?.replace(/\s*\n\s*/g, ' ') ?? 'unknown'
    }`
  );
}

/** This process's share of the cores: each worker builds its own engine, so N workers divide
 * them rather than each running a loop thread per core (N × cores threads). The default number
 * of workers is workers.ts's defaultWorkers. */
export function coresPerWorker(workers: number, cores = availableParallelism()): number {
  return Math.max(1, Math.floor(cores / Math.max(1, workers)));
}

/**
 * The native engine's loop threads when not given: engine-native's own default (cores − 1, at
 * least 1: the JS thread that runs preambles and hand-offs needs a core too) applied to this
 * worker's share of the cores — max(1, floor(cores / workers) − 1).
 */
export async function defaultThreads(workers: number, cores?: number): Promise<number> {
  const native = await import('@tlsproxy/engine-native');
  return native.defaultThreads(coresPerWorker(workers, cores));
}

// The workers run the engine the primary decided on (and warned about, once).
const ENGINE_ENV = 'TLSPROXY_ENGINE_DECIDED';

/** For runPrimary: what every worker's environment carries. */
export const engineEnv = (kind: EngineKind): Record<string, string> => ({ [ENGINE_ENV]: kind });

/** In a worker: the engine the primary decided on; undefined when it did not say. */
export function decidedByPrimary(): EngineKind | undefined {
  const v = process.env[ENGINE_ENV];
  return v === 'node' || v === 'native' ? v : undefined;
}

/** The pool option for core and, for the log, what it is: node:tls options, a daemon's socket,
 * or the native engine built from those options (`threads`, or the default for one of `workers`). */
export async function embeddedEngine(
  kind: EngineKind,
  pool: ProxyOptions['pool'],
  threads: number | undefined,
  workers: number,
): Promise<{
  pool: ProxyOptions['pool'];
  owned?: TlsEngineApi;
  describe: Record<string, unknown>;
}> {
  if (!('identities' in pool)) {
    const socket = 'socket' in pool ? pool.socket : undefined;
    return { pool, describe: { engine: 'tlspool daemon', socket } };
  }
  if (kind !== 'native') return { pool, describe: { engine: 'node' } };
  const { NativeTlsEngine } = await import('@tlsproxy/engine-native');
  threads ??= await defaultThreads(workers);
  const engine = new NativeTlsEngine({ ...(pool as EngineOptions), threads });
  return { pool: engine, owned: engine, describe: { engine: 'native', threads } };
}

/**
 * A TlsProxy that also closes the engine object the CLI built for it (core closes only the
 * engines it builds itself); drain() ends in close(), so both paths release the engine's threads.
 */
export class CliProxy extends TlsProxy {
  readonly #owned: TlsEngineApi | undefined;
  constructor(options: ProxyOptions, owned?: TlsEngineApi) {
    super(options);
    this.#owned = owned;
  }
  override async close(): Promise<void> {
    await super.close();
    await this.#owned?.close();
  }
}
