// `workers: N`: processes each running the same listeners (defaultWorkers). The kernel spreads
// connections over the workers (SCHED_NONE: every worker accepts on the shared socket) — the
// round-robin default would route every connection through the primary, one more descriptor
// hop per connection for a program whose job is moving descriptors.
import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { type ClusterMetricsServer, serveClusterMetrics } from '@tlsproxy/core';
import type { EngineKind } from './engine.js';

/**
 * Workers when not given. With the native engine (the default) a worker keeps two threads busy —
 * its JS thread (accepting, the dialects, the hand-offs) and its engine's loop thread (the
 * handshakes and the relay) —, so one per two cores, each with max(1, floor(cores / workers) − 1)
 * loop threads (engine.ts): as many busy threads as cores. One worker per core would run twice
 * as many: on 2 cores `--workers 2` cost 1.3–1.5× the CPU per connection of one worker and did
 * 18–25 % fewer connections/s (docs/benchmarks.md, the tlsproxy-w1/-w2 rows). With node:tls, or
 * the tlspool daemon doing TLS in its own process, a worker is one busy thread: one per core.
 */
export function defaultWorkers(
  engine: EngineKind | undefined,
  cores = availableParallelism(),
): number {
  return Math.max(1, engine === 'native' ? Math.floor(cores / 2) : cores);
}

// The primary tells each worker how many there are, so a worker can take its share of the
// connection limits (limits.ts perWorker) without re-deciding from a file that may have changed.
const WORKERS_ENV = 'TLSPROXY_WORKERS';

/** In a worker: how many workers share the listeners; 1 in a single process. */
export function workerShare(): number {
  if (!cluster.isWorker) return 1;
  const n = Number(process.env[WORKERS_ENV]);
  return Number.isInteger(n) && n >= 1 ? n : 1;
}

export interface PrimaryOptions {
  /** Serve /metrics here with the sum over all workers (the workers do not listen). */
  metricsListen?: string;
  /** More environment for every worker (the engine the primary decided on: engine.ts). */
  env?: Record<string, string>;
}

/**
 * In the primary: fork `count` workers running this same command, restart any that die (with a
 * growing delay), forward SIGHUP, and on SIGTERM/SIGINT forward it and wait for all to exit.
 * Resolves with the exit code. In a worker this is never called.
 */
export async function runPrimary(
  count: number,
  log: (line: string) => void,
  options: PrimaryOptions = {},
): Promise<number> {
  let metrics: ClusterMetricsServer | undefined;
  if (options.metricsListen !== undefined) {
    try {
      // Bound before any worker starts: a metrics port in use is a start-up error.
      metrics = await serveClusterMetrics(options.metricsListen);
      log(`serving metrics of all workers on ${options.metricsListen}/metrics`);
    } catch (err) {
      log(`cannot start: ${(err as Error).message}`);
      return 1;
    }
  }
  const code = await forkWorkers(count, log, options.env ?? {});
  await metrics?.close();
  return code;
}

function forkWorkers(
  count: number,
  log: (line: string) => void,
  env: Record<string, string>,
): Promise<number> {
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  let stopping = false;
  let delay = 100;
  let started = false;
  let finish: (code: number) => void = () => {};
  const each = (sig: NodeJS.Signals) => {
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill(sig);
  };
  const fork = () => {
    const w = cluster.fork({ ...env, [WORKERS_ENV]: String(count) });
    w.on('exit', (code, signal) => {
      if (stopping) return;
      if (!started) {
        // A worker that dies before anything listens has a start-up error (bad flags, missing
        // dialect, port in use) that a restart will not fix: stop, with its exit code.
        stopping = true;
        each('SIGTERM');
        finish(code || 1);
        return;
      }
      log(`worker ${w.process.pid} exited (${signal ?? code}); starting another in ${delay} ms`);
      setTimeout(fork, delay);
      delay = Math.min(delay * 2, 10_000);
    });
    w.on('listening', () => {
      started = true;
      delay = 100;
    });
  };
  for (let i = 0; i < count; i++) fork();
  log(`primary ${process.pid} started ${count} worker${count === 1 ? '' : 's'}`);
  return new Promise((resolve) => {
    finish = (code) => {
      const wait = () => {
        if (Object.keys(cluster.workers ?? {}).length === 0) resolve(code);
        else setTimeout(wait, 50);
      };
      wait();
    };
    process.on('SIGHUP', () => each('SIGHUP'));
    const stop = (sig: NodeJS.Signals) => {
      stopping = true;
      each(sig);
      const check = () => {
        if (Object.keys(cluster.workers ?? {}).length === 0) resolve(0);
        else setTimeout(check, 50);
      };
      check();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

export const isWorker = () => cluster.isWorker;
