// With `workers: N` each worker process counts its own connections, and a scrape of a port the
// workers shared would see one worker at random. Instead the primary alone serves /metrics and
// asks every worker for its registry over the cluster IPC channel (prom-client's
// AggregatorRegistry protocol): counters, histograms and gauges are summed across workers;
// process metrics use the aggregation prom-client declares for each.
import cluster from 'node:cluster';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { AggregatorRegistry, type Registry } from 'prom-client';
import { CoreError } from './errors.js';
import { serveMetrics } from './metrics.js';

/** In a cluster worker: answer the primary's requests with `registry` (instead of listening). */
export function shareMetricsWithPrimary(registry: Registry): void {
  if (!cluster.isWorker)
    throw new CoreError('TLSPROXY_ERR_CONFIG', 'shareMetricsWithPrimary() is for cluster workers');
  // Constructing one installs the worker's IPC responder (once per process).
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([registry]);
}

export interface ClusterMetricsServer {
  readonly address: AddressInfo;
  close(): Promise<void>;
}

/** In the cluster primary: serve GET /metrics on `spec` with the sum over all live workers. */
export async function serveClusterMetrics(spec: string | number): Promise<ClusterMetricsServer> {
  const aggregator = new AggregatorRegistry();
  const { server, ready } = serveMetrics(
    spec,
    () => aggregator.clusterMetrics(),
    () => aggregator.contentType,
  );
  const address = await ready;
  return {
    address,
    close: () => closeServer(server),
  };
}

function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
