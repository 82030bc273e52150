import { readFileSync } from 'node:fs';
import { consoleLogger, isTlsProxyError, loadDialect, TlsProxy } from '@tlsproxy/core';
import { type CliArgs, parseCli, USAGE, UsageError } from './args.js';

function read(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new UsageError(`cannot read ${what} ${path}: ${(err as Error).message}`);
  }
}

/** Start the proxy for parsed flags; resolves to the running TlsProxy. */
export async function start(args: CliArgs): Promise<TlsProxy> {
  const logger = consoleLogger(args.logLevel);
  const identities = args.cert.map((c, i) => ({
    cert: read(c, '--cert'),
    key: read(args.key[i]!, '--key'),
  }));
  const proxy = new TlsProxy({
    logger,
    pool: args.poolSocket
      ? { socket: args.poolSocket }
      : {
          identities,
          clientCert: args.clientCert,
          ...(args.ca ? { ca: read(args.ca, '--ca') } : {}),
          ...(args.alpn.length > 0 ? { alpn: args.alpn } : {}),
        },
  });
  let listen = args.listen;
  if (!listen) {
    const d = await loadDialect(args.dialect);
    const port = d.defaultPorts.starttls ?? d.defaultPorts.implicit;
    if (!port) throw new UsageError(`dialect ${d.name} has no standard port: give --listen`);
    listen = `127.0.0.1:${port}`;
  }
  await proxy.listen({
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
  });
  return proxy;
}

export async function main(argv: string[]): Promise<number> {
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
  let proxy: TlsProxy;
  try {
    proxy = await start(args);
  } catch (err) {
    const e = err as Error & { code?: string };
    process.stderr.write(`tlsproxy: ${e.message}${isTlsProxyError(e) ? ` (${e.code})` : ''}\n`);
    return err instanceof UsageError ? 2 : 1;
  }
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      proxy.logger.log('info', 'stopping', { signal: sig });
      void proxy.close().then(resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  return 0;
}
