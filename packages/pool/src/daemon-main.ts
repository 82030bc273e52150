// `tlspool --socket PATH --cert C --key K [...]`: run the TLS engine as its own process.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { type DaemonEngine, PoolDaemon } from './daemon.js';
import { type ClientCertPolicy, type EngineOptions, TlsEngine } from './engine.js';

/** The engine kinds: node:tls (this package) or the C engine, which is a separate package that
 * depends on this one — loaded by name, so it must be installed beside it. */
async function createEngine(
  kind: 'node' | 'native',
  options: EngineOptions,
  threads: number | undefined,
): Promise<DaemonEngine & { reload(o: EngineOptions): void }> {
  if (kind === 'node') return new TlsEngine(options);
  const name = '@tlsproxy/engine-native';
  let mod: { NativeTlsEngine: new (o: EngineOptions & { threads?: number }) => DaemonEngine };
  try {
    mod = (await import(name)) as typeof mod;
  } catch (err) {
    throw new NativeUnavailable(
      `--engine native needs ${name} installed beside @tlsproxy/pool (${firstLine(err)}); --engine node runs without it`,
    );
  }
  try {
    return new mod.NativeTlsEngine({
      ...options,
      ...(threads !== undefined ? { threads } : {}),
    }) as DaemonEngine & { reload(o: EngineOptions): void };
  } catch (err) {
    // A configuration error is the same under either engine: only a missing addon falls back.
    if ((err as { code?: string }).code === 'TLSPROXY_ERR_POOL_CONFIG') throw err;
    throw new NativeUnavailable(
      `the native engine cannot start (${firstLine(err)}); --engine node runs node:tls`,
    );
  }
}

/** The native engine is not there or cannot load on this machine (not a configuration error). */
class NativeUnavailable extends Error {}

const firstLine = (err: unknown) => String((err as Error)?.message ?? err).split('\n')[0];

export const USAGE = `Usage: tlspool --socket PATH --cert CERT.pem --key KEY.pem [options]
       tlspool --socket PATH --connect-only [--cert CLIENT.pem --key CLIENT.key] [options]

  --socket PATH           SEQPACKET socket to listen on (proxies and backends connect here)
  --cert FILE --key FILE  certificate chain and key; repeat for more identities (chosen by SNI;
                          a client's connect request names one as its client certificate by
                          one of its names: DNS subjectAltNames, else the CN, lower-cased)
  --connect-only          client role only: no --cert needed, handshake requests are refused
  --ca FILE               CAs trusted for client certificates
  --client-cert MODE      none (default) | optional | required
  --alpn LIST             comma-separated ALPN protocols
  --idle-timeout MS       close relayed sessions idle (no data either way) this long; default 0
                          (off). A proxy's handshake request may set its own.
  --allow-uid UID         uid allowed to connect (repeatable; default: own uid and root)
  --mode OCTAL            socket file mode (default 600)
  --engine node|native    the C engine of @tlsproxy/engine-native (the default when it is
                          installed beside this package and loads; otherwise node:tls, with a
                          warning) or node:tls, the reference; --engine-threads N for the C
                          engine's event-loop threads (default: cores - 1, at least 1)

SIGHUP re-reads the certificate, key and CA files: handshakes from then on use them, sessions
already established keep theirs. If a file cannot be read or a key does not match its
certificate, the old ones stay and an error is logged. SIGTERM/SIGINT stop.
`;

export async function main(argv: string[]): Promise<number> {
  let values: Record<string, string | string[] | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        socket: { type: 'string' },
        cert: { type: 'string', multiple: true },
        key: { type: 'string', multiple: true },
        ca: { type: 'string' },
        'client-cert': { type: 'string' },
        alpn: { type: 'string' },
        'idle-timeout': { type: 'string' },
        'allow-uid': { type: 'string', multiple: true },
        mode: { type: 'string' },
        'connect-only': { type: 'boolean' },
        engine: { type: 'string' },
        'engine-threads': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    process.stderr.write(`tlspool: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const certs = (values.cert as string[] | undefined) ?? [];
  const keys = (values.key as string[] | undefined) ?? [];
  const connectOnly = values['connect-only'] === true;
  if (!values.socket || (certs.length === 0 && !connectOnly) || certs.length !== keys.length) {
    process.stderr.write(
      `tlspool: need --socket and one --key per --cert (at least one, unless --connect-only)\n\n${USAGE}`,
    );
    return 2;
  }
  const idle = values['idle-timeout'] === undefined ? 0 : Number(values['idle-timeout']);
  if (!Number.isFinite(idle) || idle < 0) {
    process.stderr.write(`tlspool: --idle-timeout needs a number of milliseconds ≥ 0\n\n${USAGE}`);
    return 2;
  }
  const asked = values.engine as string | undefined;
  if (asked !== undefined && asked !== 'node' && asked !== 'native') {
    process.stderr.write(`tlspool: --engine is node or native\n\n${USAGE}`);
    return 2;
  }
  const threads =
    values['engine-threads'] === undefined ? undefined : Number(values['engine-threads']);
  if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1 && threads <= 256)) {
    process.stderr.write(`tlspool: --engine-threads needs a whole number 1..256\n\n${USAGE}`);
    return 2;
  }
  if (threads !== undefined && asked === 'node') {
    process.stderr.write(
      `tlspool: --engine-threads goes with the native engine, not --engine node\n\n${USAGE}`,
    );
    return 2;
  }
  const log = (level: string, message: string) =>
    process.stderr.write(`${new Date().toISOString()} ${level} ${message}\n`);
  // Read at start and again at each SIGHUP (certificate renewal without ending sessions).
  const engineOptions = (): EngineOptions => ({
    identities: certs.map((c, i) => ({ cert: readFileSync(c), key: readFileSync(keys[i]!) })),
    ...(values.ca ? { ca: readFileSync(values.ca as string) } : {}),
    clientCert: ((values['client-cert'] as string | undefined) ?? 'none') as ClientCertPolicy,
    ...(values.alpn ? { alpn: (values.alpn as string).split(',') } : {}),
    ...(idle > 0 ? { idleTimeoutMs: idle } : {}),
    ...(connectOnly ? { connectOnly: true } : {}),
  });
  let daemon: PoolDaemon;
  let engine: DaemonEngine & { reload(o: EngineOptions): void };
  // Native unless told otherwise; without --engine a machine where it cannot load still gets a
  // daemon (node:tls) and one line saying so, while an explicit --engine native is refused.
  let kind: 'node' | 'native' = asked === 'node' ? 'node' : 'native';
  try {
    try {
      engine = await createEngine(kind, engineOptions(), threads);
    } catch (err) {
      if (asked !== undefined || !(err instanceof NativeUnavailable)) throw err;
      log('warn', `${err.message}; running node:tls (--engine node says so and silences this)`);
      kind = 'node';
      engine = await createEngine(kind, engineOptions(), undefined);
    }
    daemon = new PoolDaemon(engine, {
      path: values.socket as string,
      mode: values.mode ? Number.parseInt(values.mode as string, 8) : 0o600,
      ...(values['allow-uid'] ? { allowUids: (values['allow-uid'] as string[]).map(Number) } : {}),
      log,
    });
  } catch (err) {
    process.stderr.write(`tlspool: ${(err as Error).message}\n`);
    return 1;
  }
  log(
    'info',
    `tlspool listening on ${values.socket as string} (pid ${process.pid}, engine ${kind})`,
  );
  // Without a handler SIGHUP would kill the process, and every session it relays with it.
  const reload = () => {
    try {
      engine.reload(engineOptions());
      log('info', `certificates reloaded (${engine.serverNames().join(', ') || 'no names'})`);
    } catch (err) {
      log('error', `reload refused, keeping the current certificates: ${(err as Error).message}`);
    }
  };
  process.on('SIGHUP', reload);
  await new Promise<void>((resolve) => {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => resolve());
  });
  process.off('SIGHUP', reload);
  await daemon.close();
  return 0;
}
