// Running from a config file: start, reload on SIGHUP or when the file changes (without dropping
// connections; a broken config is refused and the old one stays), drain on SIGTERM.
import { type FSWatcher, watch } from 'node:fs';
import {
  createLogger,
  type ListenerConfig,
  type Logger,
  loadDialect,
  type RunningListener,
  resolveLimits,
  resolveOptions,
  shareMetricsWithPrimary,
  type TlsProxy,
} from '@tlsproxy/core';
import type { EngineOptions } from '@tlsproxy/pool';
import { ConfigError, type LoadedConfig, loadConfig } from './config.js';
import {
  CliProxy,
  decideEngine,
  type EngineKind,
  embeddedEngine,
  fallbackWarning,
} from './engine.js';
import { perWorker, SPLIT_OVER_WORKERS } from './limits.js';
import { sideOf } from './preflight.js';
import { isWorker, workerShare } from './workers.js';

/** The config as this process runs it: in one of N workers, each listener's connection limits
 * are its share of the totals in the file. */
function share(config: LoadedConfig, logger?: Logger): LoadedConfig {
  const n = workerShare();
  if (n === 1) return config;
  const listeners = config.listeners.map((l) => perWorker(l, n));
  for (const l of listeners) {
    logger?.log('info', 'per-worker limits', {
      listen: String(l.listen),
      workers: n,
      ...Object.fromEntries(SPLIT_OVER_WORKERS.map((k) => [k, l[k]])),
    });
  }
  return { ...config, listeners };
}

const keyOf = (l: ListenerConfig) => String(l.listen);

export class ConfigRunner {
  readonly file: string;
  readonly proxy: TlsProxy;
  readonly logger: Logger;
  #config: LoadedConfig;
  #watcher: FSWatcher | undefined;
  #reloading: Promise<boolean> | undefined;
  #debounce: NodeJS.Timeout | undefined;

  private constructor(file: string, config: LoadedConfig, proxy: TlsProxy, logger: Logger) {
    this.file = file;
    this.#config = config;
    this.proxy = proxy;
    this.logger = logger;
  }

  /**
   * Start from the file. `engine`: the embedded engine main decided on (and warned about) before
   * forking; without it the default is decided here, with the fallback's warning.
   */
  static async start(file: string, logger?: Logger, engine?: EngineKind): Promise<ConfigRunner> {
    const loaded = loadConfig(file);
    const log =
      logger ?? createLogger({ level: loaded.logging.level, format: loaded.logging.format });
    const config = share(loaded, log);
    // In a worker the primary serves /metrics with the sum over all workers: only collect here.
    const worker = isWorker();
    let kind = engine ?? config.engine;
    if (kind === undefined && 'identities' in config.pool) {
      const decision = await decideEngine(undefined);
      if (decision.fallback)
        log.log('warn', fallbackWarning(decision, config.engineThreads !== undefined));
      kind = decision.kind;
    }
    const built = await embeddedEngine(
      kind ?? 'node',
      config.pool,
      config.engineThreads,
      workerShare(),
    );
    log.log('info', 'TLS engine', built.describe);
    const proxy: TlsProxy = new CliProxy(
      {
        pool: built.pool,
        logger: log,
        ...(config.backendUids ? { backendUids: config.backendUids } : {}),
        ...(config.metrics ? { metrics: worker ? {} : { listen: config.metrics.listen } } : {}),
      },
      built.owned,
    );
    if (worker && proxy.metrics) shareMetricsWithPrimary(proxy.metrics.registry);
    const runner = new ConfigRunner(file, config, proxy, log);
    try {
      // A metrics port that cannot be bound is a start-up error, not a log line.
      if (proxy.metrics?.ready) await proxy.metrics.ready;
      for (const l of config.listeners) await proxy.listen(l);
    } catch (err) {
      await proxy.close();
      throw err;
    }
    return runner;
  }

  /** Reload when the file changes (editors replace files, so watch the directory entry too). */
  watchFile(): void {
    try {
      this.#watcher = watch(this.file, () => {
        if (this.#debounce) clearTimeout(this.#debounce);
        this.#debounce = setTimeout(() => void this.reload('file changed'), 300);
      });
      this.#watcher.on('error', () => {});
    } catch (err) {
      this.logger.log('warn', 'cannot watch the config file; reload with SIGHUP', {
        error: (err as Error).message,
      });
    }
  }

  /** Apply the file as it is now; resolves false (old config kept) if it is broken. */
  reload(reason = 'SIGHUP'): Promise<boolean> {
    // One reload at a time; a request during a reload runs after it.
    const run = async (): Promise<boolean> => {
      let next: LoadedConfig;
      try {
        next = share(loadConfig(this.file));
        // Check every listener's dialect, options and limits before touching anything.
        for (const l of next.listeners) {
          const side = sideOf(await loadDialect(l.dialect), l.role);
          resolveOptions(side, l.options);
          resolveLimits(side, l.limits);
        }
        if (
          next.engine !== this.#config.engine ||
          next.engineThreads !== this.#config.engineThreads
        )
          this.logger.log('warn', 'engine or engineThreads changed: takes effect after a restart');
        if ('identities' in next.pool) this.proxy.reloadPool(next.pool as EngineOptions);
        else if (JSON.stringify(next.pool) !== JSON.stringify(this.#config.pool)) {
          this.logger.log('warn', 'pool.socket changed: takes effect after a restart');
        }
      } catch (err) {
        const problems = err instanceof ConfigError ? err.problems : [(err as Error).message];
        this.logger.log('error', 'config refused; still running the previous one', {
          reason,
          problems,
        });
        return false;
      }
      const current = new Map(this.proxy.listeners.map((l) => [keyOf(l.config), l] as const));
      const wanted = new Set(next.listeners.map(keyOf));
      for (const l of next.listeners) {
        const running: RunningListener | undefined = current.get(keyOf(l));
        try {
          if (running) await running.update(l);
          else await this.proxy.listen(l);
        } catch (err) {
          this.logger.log('error', 'listener not reloaded', {
            listen: String(l.listen),
            error: (err as Error).message,
          });
        }
      }
      for (const [key, l] of current) {
        if (!wanted.has(key)) await this.proxy.closeListener(l);
      }
      this.#config = next;
      this.logger.log('info', 'config reloaded', { reason, listeners: next.listeners.length });
      return true;
    };
    const prev = this.#reloading ?? Promise.resolve(true);
    this.#reloading = prev.then(run, run);
    return this.#reloading;
  }

  async drain(): Promise<void> {
    this.#watcher?.close();
    await this.proxy.drain(this.#config.shutdownTimeoutMs);
  }

  async close(): Promise<void> {
    this.#watcher?.close();
    if (this.#debounce) clearTimeout(this.#debounce);
    await this.proxy.close();
  }
}
