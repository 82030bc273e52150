import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import {
  createLogger,
  type Dialect,
  isTlsProxyError,
  type ListenerConfig,
  loadDialect,
  type ProxyOptions,
  resolveLimits,
  resolveOptions,
  type TlsProxy,
} from '@tlsproxy/core';
import { type CliArgs, parseCli, USAGE, UsageError } from './args.js';
import { ConfigError, type LoadedConfig, loadConfig, placeIn } from './config.js';
import {
  CliProxy,
  DEFAULT_ENGINE,
  decidedByPrimary,
  decideEngine,
  defaultThreads,
  type EngineKind,
  embeddedEngine,
  engineEnv,
  fallbackWarning,
  nativeProblem,
} from './engine.js';
import { describeLimits, perWorker } from './limits.js';
import { preflight, reportPreflight, sideOf } from './preflight.js';
import { ConfigRunner } from './run-config.js';
import { defaultWorkers, isWorker, runPrimary, workerShare } from './workers.js';

/** How many processes a config runs as, with `engine` (undefined: the tlspool daemon's): systemd
 * passes descriptors to this process only, so its listeners cannot be shared by workers. */
function workersOf(
  config: LoadedConfig,
  engine: EngineKind | undefined,
): { count: number; isDefault: boolean; rule: string } {
  if (config.listeners.some((l) => String(l.listen).startsWith('systemd:')))
    return {
      count: 1,
      isDefault: config.raw.workers === undefined,
      rule: 'one with systemd: listeners',
    };
  const rule = `${engine === 'native' ? 'one per two cores' : 'one per core'} on this machine`;
  return config.raw.workers === undefined
    ? { count: defaultWorkers(engine), isDefault: true, rule }
    : { count: config.raw.workers, isDefault: false, rule };
}

function read(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new UsageError(`cannot read ${what} ${path}: ${(err as Error).message}`);
  }
}

/** The engine identity `--role client --cert/--key` become: a name no SNI or XMPP domain can be. */
export const CLI_CLIENT_IDENTITY = 'client:--cert';

/** The embedded engine (or the daemon's socket) for `pool`, said in the log, owned by the proxy. */
async function proxyWith(
  args: CliArgs,
  engine: EngineKind,
  pool: ProxyOptions['pool'],
): Promise<TlsProxy> {
  const logger = createLogger({ level: args.logLevel, format: args.logFormat });
  const built = await embeddedEngine(engine, pool, args.engineThreads, workerShare());
  logger.log('info', 'TLS engine', built.describe);
  return new CliProxy({ logger, pool: built.pool }, built.owned);
}

/** `--role client`: a connect-only engine (with our certificate, if given) and one listener. */
async function startClient(args: CliArgs, engine: EngineKind): Promise<TlsProxy> {
  const identities = args.cert.map((c, i) => ({
    cert: read(c, '--cert'),
    key: read(args.key[i]!, '--key'),
    names: [CLI_CLIENT_IDENTITY],
  }));
  const proxy = await proxyWith(
    args,
    engine,
    args.poolSocket ? { socket: args.poolSocket } : { identities, connectOnly: true },
  );
  const clientIdentity = identities.length > 0 ? CLI_CLIENT_IDENTITY : args.clientIdentity;
  const listener: ListenerConfig = {
    role: 'client',
    dialect: args.dialect,
    listen: args.listen,
    connect: args.connect!,
    options: args.options,
    tls: {
      ...(args.ca ? { ca: read(args.ca, '--ca').toString('utf8') } : {}),
      ...(args.serverName ? { serverName: args.serverName } : {}),
      ...(clientIdentity ? { clientIdentity } : {}),
      ...(args.alpn.length > 0 ? { alpn: args.alpn } : {}),
      ...(args.minVersion ? { minVersion: args.minVersion } : {}),
    },
    ...(args.hostname ? { hostname: args.hostname } : {}),
  };
  try {
    await proxy.listen(perWorker(listener, workerShare()));
  } catch (err) {
    await proxy.close();
    throw err;
  }
  return proxy;
}

/**
 * Start the proxy for parsed flags; resolves to the running TlsProxy. `engine`: the embedded
 * engine to run (main decides the default before forking); not given: what the flags ask for,
 * or the default — native, node:tls with a warning where it cannot load.
 */
export async function start(args: CliArgs, engine?: EngineKind): Promise<TlsProxy> {
  engine ??= args.poolSocket
    ? DEFAULT_ENGINE // not used: the daemon runs its own
    : await chooseEngine(
        args.engine,
        args.engineThreads !== undefined,
        createLogger({ level: args.logLevel, format: args.logFormat }),
      );
  if (args.role === 'client') return startClient(args, engine);
  const identities = args.cert.map((c, i) => ({
    cert: read(c, '--cert'),
    key: read(args.key[i]!, '--key'),
  }));
  const proxy = await proxyWith(
    args,
    engine,
    args.poolSocket
      ? { socket: args.poolSocket }
      : {
          identities,
          clientCert: args.clientCert,
          ...(args.ca ? { ca: read(args.ca, '--ca') } : {}),
          ...(args.alpn.length > 0 ? { alpn: args.alpn } : {}),
        },
  );
  try {
    await listenFlags(proxy, args);
  } catch (err) {
    // The engine's threads and the listener go with the failed start.
    await proxy.close();
    throw err;
  }
  return proxy;
}

/** The server role's one listener from the flags. */
async function listenFlags(proxy: TlsProxy, args: CliArgs): Promise<void> {
  let listen = args.listen;
  if (!listen) {
    const d = await loadDialect(args.dialect);
    const port = d.defaultPorts.starttls ?? d.defaultPorts.implicit;
    if (!port) throw new UsageError(`dialect ${d.name} has no standard port: give --listen`);
    listen = `127.0.0.1:${port}`;
  }
  const listener: ListenerConfig = {
    dialect: args.dialect,
    listen,
    backend: args.backend,
    handoff: args.handoff,
    options: args.options,
    checkServerName: args.checkServerName,
    // With a daemon the engine's own policy is the default; say it per listener only if asked.
    ...(args.poolSocket && args.clientCert !== 'none'
      ? { tls: { clientCert: args.clientCert } }
      : {}),
    ...(args.hostname ? { hostname: args.hostname } : {}),
  };
  // In one of N workers: this worker's share of the connection limits (limits.ts).
  await proxy.listen(perWorker(listener, workerShare()));
}

function fail(err: unknown): number {
  const e = err as Error & { code?: string };
  process.stderr.write(`tlsproxy: ${e.message}${isTlsProxyError(e) ? ` (${e.code})` : ''}\n`);
  return err instanceof UsageError || err instanceof ConfigError ? 2 : 1;
}

/** check-config's line on the TLS engine that will run (and a problem when it cannot). */
async function describeEngine(
  config: LoadedConfig,
): Promise<{ line: string; problem?: string; kind: EngineKind | undefined }> {
  if (!('identities' in config.pool)) {
    const socket = 'socket' in config.pool ? config.pool.socket : '?';
    return {
      line: `engine: the tlspool daemon at ${socket} (it runs its own TLS engine)`,
      kind: undefined,
    };
  }
  if (config.engine === 'node')
    return { line: 'engine: node (node:tls, the reference engine)', kind: 'node' };
  const decision = await decideEngine(config.engine);
  const why = config.engine === 'native' ? await nativeProblem() : decision.fallback;
  if (config.engine === 'native' && why !== undefined) {
    const problem = `${config.file}: engine: native cannot load here (${why.replace(/\s*\n\s*/g, ' ')}); use engine: node (node:tls) instead`;
    return {
      line: 'engine: native (cannot load here: the proxy will not start)',
      problem,
      kind: 'native',
    };
  }
  if (decision.kind === 'node')
    return {
      line: `engine: node (the default, native, cannot load here: ${why?.replace(/\s*\n\s*/g, ' ')}; the proxy warns at start, engine: node silences that)`,
      kind: 'node',
    };
  const workers = workersOf(config, 'native').count;
  const threads = config.engineThreads ?? (await defaultThreads(workers));
  const each = workers > 1 ? ' in each worker' : '';
  return {
    line:
      `engine: native${config.engine === undefined ? ' (default)' : ''}, ${threads} thread${threads === 1 ? '' : 's'}${each}` +
      (config.engineThreads === undefined
        ? ` (default: max(1, floor(${availableParallelism()} cores / ${workers} worker${workers === 1 ? '' : 's'}) − 1))`
        : ' (engineThreads)'),
    kind: 'native',
  };
}

/** `tlsproxy check-config FILE`: exit 0 and say so, or list every problem with file:line:col. */
export async function checkConfig(file: string | undefined): Promise<number> {
  if (!file) {
    process.stderr.write('Usage: tlsproxy check-config [--config] FILE\n');
    return 2;
  }
  try {
    const config = loadConfig(file);
    const dialects: Dialect<unknown>[] = [];
    for (const [i, l] of config.listeners.entries()) {
      const d = await loadDialect(l.dialect);
      let side: Dialect<unknown>;
      try {
        side = sideOf(d, l.role);
      } catch (err) {
        const text = readFileSync(file, 'utf8');
        throw new ConfigError([
          `${placeIn(file, text, ['listeners', i, 'dialect'])}: ${(err as Error).message}`,
        ]);
      }
      resolveOptions(side, l.options);
      resolveLimits(side, l.limits);
      dialects.push(d);
    }
    process.stdout.write(
      `${file}: ok (${config.listeners.length} listener${config.listeners.length === 1 ? '' : 's'})\n`,
    );
    const engine = await describeEngine(config);
    process.stdout.write(`${engine.line}\n`);
    // What will be enforced, defaults included, and how workers share it.
    process.stdout.write(
      `${describeLimits(config, workersOf(config, engine.kind), dialects).join('\n')}\n`,
    );
    if (engine.problem) {
      process.stderr.write(`${engine.problem}\n`);
      return 1;
    }
    return 0;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.problems.join('\n')}\n`);
      return 1;
    }
    return fail(err);
  }
}

/**
 * In the process the user started: the embedded engine to run — as asked, or the default, native,
 * falling back to node:tls with one warning where it cannot load (an explicit native that cannot
 * load was refused by preflight already). The workers are told the result.
 */
async function chooseEngine(
  requested: EngineKind | undefined,
  threadsGiven: boolean,
  logger: { log(l: 'warn', m: string): void },
): Promise<EngineKind> {
  const decision = await decideEngine(requested);
  if (decision.fallback) logger.log('warn', fallbackWarning(decision, threadsGiven));
  return decision.kind;
}

/** Wait for signals: SIGHUP reloads, SIGTERM drains, SIGINT stops at once. */
function untilStopped(handlers: {
  reload?: () => unknown;
  drain: () => Promise<void>;
  close: () => Promise<void>;
  logger: { log(l: 'info', m: string, f?: Record<string, unknown>): void };
}): Promise<void> {
  return new Promise<void>((resolve) => {
    const onHup = () => {
      if (handlers.reload) void handlers.reload();
      else handlers.logger.log('info', 'SIGHUP ignored: nothing to reload without --config');
    };
    process.on('SIGHUP', onHup);
    const stop = (sig: string, how: () => Promise<void>) => {
      handlers.logger.log('info', 'stopping', { signal: sig });
      process.off('SIGHUP', onHup);
      void how().then(resolve, resolve);
    };
    process.once('SIGINT', () => stop('SIGINT', handlers.close));
    process.once('SIGTERM', () => stop('SIGTERM', handlers.drain));
  });
}

export async function main(argv: string[]): Promise<number> {
  // `check-config FILE`, or `check-config --config FILE` as the proxy itself is started.
  if (argv[0] === 'check-config')
    return checkConfig(argv[1] === '--config' || argv[1] === '-c' ? argv[2] : argv[1]);
  if (argv[0] === 'demo') {
    const { demoMain } = await import('./demo-main.js');
    return demoMain(argv.slice(1));
  }
  const configAt = argv.findIndex((a) => a === '--config' || a.startsWith('--config='));
  if (configAt >= 0) {
    const file = argv[configAt]!.includes('=') ? argv[configAt]!.split('=')[1] : argv[configAt + 1];
    if (!file || argv.length > (argv[configAt]!.includes('=') ? 1 : 2)) {
      process.stderr.write('tlsproxy: --config FILE takes no other flags (put them in the file)\n');
      return 2;
    }
    // The embedded engine, decided (and a fallback warned about) once, before forking.
    let engine: EngineKind | undefined;
    if (!isWorker()) {
      // Checked here, once, before anything binds or forks: a worker would print each problem
      // again, and the proxy must not say "listening" when it cannot serve.
      let c: LoadedConfig;
      try {
        c = loadConfig(file);
      } catch (err) {
        if (err instanceof ConfigError) {
          process.stderr.write(`${err.problems.join('\n')}\n`);
          return 2;
        }
        return fail(err);
      }
      const text = readFileSync(file, 'utf8');
      const problems = await preflight({
        listeners: c.listeners.map((l, i) => ({
          // A client-role listener's problems are its dialect's (no client side) or its connect's.
          name:
            l.role === 'client'
              ? placeIn(file, text, ['listeners', i, 'dialect'])
              : `${file}: listeners.${i}`,
          dialect: l.dialect,
          ...(l.options ? { options: l.options } : {}),
          ...(l.limits ? { limits: l.limits } : {}),
          // The CA file was read when the config was loaded; the rest is checked here.
          ...(l.role === 'client'
            ? {
                role: 'client' as const,
                connect: {
                  name: placeIn(file, text, ['listeners', i, 'connect']),
                  value: String(l.connect),
                },
              }
            : {}),
        })),
        listen: c.listeners.map((l, i) => ({ name: `${file}: listeners.${i}`, listen: l.listen })),
        ...(c.engine ? { engine: c.engine } : {}),
      });
      if (problems.length > 0) {
        reportPreflight(problems);
        return 1;
      }
      if ('identities' in c.pool) {
        const log = createLogger({ level: c.logging.level, format: c.logging.format });
        engine = await chooseEngine(c.engine, c.engineThreads !== undefined, log);
      }
      const workers = workersOf(c, engine).count;
      if (workers > 1)
        return runPrimary(
          workers,
          (l) => process.stderr.write(`${new Date().toISOString()} info ${l}\n`),
          {
            ...(c.metrics?.listen === undefined ? {} : { metricsListen: c.metrics.listen }),
            ...(engine ? { env: engineEnv(engine) } : {}),
          },
        );
    } else engine = decidedByPrimary();
    let runner: ConfigRunner;
    try {
      runner = await ConfigRunner.start(file, undefined, engine);
    } catch (err) {
      if (err instanceof ConfigError) {
        process.stderr.write(`${err.problems.join('\n')}\n`);
        return 2;
      }
      return fail(err);
    }
    runner.watchFile();
    await untilStopped({
      reload: () => runner.reload(),
      drain: () => runner.drain(),
      close: () => runner.close(),
      logger: runner.logger,
    });
    return 0;
  }
  let args: CliArgs | 'help';
  try {
    args = parseCli(argv);
  } catch (err) {
    process.stderr.write(`tlsproxy: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (args === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  // The embedded engine, decided (and a fallback warned about) once, before forking.
  let engine: EngineKind | undefined;
  if (!isWorker()) {
    const problems = await preflight({
      listeners: [
        {
          name: '--dialect',
          dialect: args.dialect,
          options: args.options,
          ...(args.role === 'client'
            ? {
                role: 'client' as const,
                connect: { name: '--connect', value: args.connect! },
                ...(args.ca ? { ca: { name: '--ca', path: args.ca } } : {}),
                ...(args.serverName ? { serverName: args.serverName } : {}),
              }
            : {}),
        },
      ],
      identities: args.cert.map((cert, i) => ({
        name: `--cert/--key pair ${i + 1}`,
        cert,
        key: args.key[i]!,
      })),
      ...(args.listen ? { listen: [{ name: '--listen', listen: args.listen }] } : {}),
      ...(args.engine ? { engine: args.engine } : {}),
    });
    if (problems.length > 0) {
      reportPreflight(problems);
      return 1;
    }
    if (!args.poolSocket) {
      const log = createLogger({ level: args.logLevel, format: args.logFormat });
      engine = await chooseEngine(args.engine, args.engineThreads !== undefined, log);
    }
    // systemd passes descriptors to this process only: its listeners cannot be shared by workers.
    const workers = args.listen.startsWith('systemd:')
      ? 1
      : (args.workers ?? defaultWorkers(engine));
    if (workers > 1)
      return runPrimary(
        workers,
        (l) => process.stderr.write(`${new Date().toISOString()} info ${l}\n`),
        engine ? { env: engineEnv(engine) } : {},
      );
  } else if (!args.poolSocket)
    engine = decidedByPrimary() ?? (await decideEngine(args.engine)).kind;
  let proxy: TlsProxy;
  try {
    proxy = await start(args, engine);
  } catch (err) {
    return fail(err);
  }
  await untilStopped({
    drain: () => proxy.drain(30_000),
    close: () => proxy.close(),
    logger: proxy.logger,
  });
  return 0;
}
