// The systems under test. Each start() returns { port, proxy: [child], backend: [child] } so the
// phases can read proxy and backend CPU separately.
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { defaultThreads } from '@tlsproxy/engine-native';
import { freePort, node, root, start, workDir } from './procs.mjs';

export const cert = `${root}fixtures/certs/server.pem`;
export const key = `${root}fixtures/certs/server.key`;

/** The native engine's default loop threads (engine-native's defaultThreads(): cores − 1, ≥ 1). */
export const DEFAULT_ENGINE_THREADS = defaultThreads();

/**
 * tlsproxy embedded (TlsProxy, in-process TLS engine) in one process, backend in another.
 * `engine` is 'node' (node:tls) or 'native' (@tlsproxy/engine-native, `threads` loop threads or
 * its default); `backendFlags` are node flags for the backend process.
 */
export async function startTlsproxy(
  name,
  nodeFlags = [],
  engine = 'node',
  threads = null,
  backendFlags = [],
) {
  const sock = join(workDir, `${name}.sock`);
  const port = await freePort();
  // --expose-gc: the memory phases ask both processes to collect garbage before reading RSS.
  const gc = '--expose-gc';
  const [bcmd, bargv] = node('servers.mjs', 'backend', sock);
  const backend = await start(bcmd, [gc, ...backendFlags, ...bargv], { ready: 'ready' });
  const [cmd, argv] = node('servers.mjs', 'tlsproxy', port, sock, engine);
  const env = threads ? { BENCH_ENGINE_THREADS: String(threads) } : {};
  const proxy = await start(cmd, [gc, ...nodeFlags, ...argv], { ready: 'ready', env });
  return { port, proxy: [proxy], backend: [backend], mem: true };
}

/**
 * The native rows: the default (cores − 1 loop threads, at least 1) and engineThreads 1 and 2 for the
 * target "engineThreads > 1 costs no more CPU per connection than 1" — without running the
 * default twice: where the default is 1 or 2 threads, that row is the default's.
 */
function nativeSystems() {
  const row = (threads) => ({
    id: `tlsproxy-native-t${threads}`,
    label: `tlsproxy (TlsProxy, native engine, engineThreads ${threads})`,
    cores: `1 proxy process, ${threads} engine loop thread${threads > 1 ? 's' : ''} (+ backend process)`,
    engine: 'native',
    engineThreads: threads,
    start: () => startTlsproxy(`n${threads}`, [], 'native', threads),
  });
  const d = DEFAULT_ENGINE_THREADS;
  return [
    {
      id: 'tlsproxy-native',
      label: `tlsproxy (TlsProxy, native engine, default engineThreads = ${d}: cores − 1)`,
      cores: `1 proxy process, ${d} engine loop thread${d > 1 ? 's' : ''} (the default) (+ backend process)`,
      engine: 'native',
      engineThreads: d,
      bulk: true,
      idle: true,
      start: () => startTlsproxy('n0', [], 'native'),
    },
    ...[1, 2].filter((t) => t !== d).map(row),
  ];
}

/** The id of the native row with `threads` engine loop threads (the default's when it has them). */
export function nativeRowWithThreads(threads) {
  return nativeSystems().find((s) => s.engineThreads === threads)?.id ?? null;
}

/** The CLI's default engine threads with `workers` processes: max(1, ⌊cores ÷ workers⌋ − 1). */
const cliThreads = (workers) => Math.max(1, Math.floor(availableParallelism() / workers) - 1);
/** The CLI's default workers with the native engine: one per two cores (cli's workers.ts). */
const cliWorkers = Math.max(1, Math.floor(availableParallelism() / 2));

/**
 * The CLI (`tlsproxy --config`) with `workers` processes and the native engine: the target
 * "workers > 1 costs no more CPU per connection than 1" compares two of these, the same code
 * path (config, logger, limits) but for the workers.
 */
export async function startCli(workers) {
  const sock = join(workDir, `w${workers}.sock`);
  const port = await freePort();
  const backend = await start(...node('servers.mjs', 'backend', sock), { ready: 'ready' });
  // A config file rather than flags: like the embedded rows, the load generator's one address
  // must be exempt from maxConnectionsPerAddress (64), which relayed sessions count until the
  // engine reports their end — at 32 clients that tail alone reaches 64 and the CLI answers
  // `* BYE [UNAVAILABLE]` (seen as "closed waiting for * OK").
  const conf = join(workDir, `w${workers}.yaml`);
  writeFileSync(
    conf,
    [
      'engine: native # explicit: the CLI default is not what this row is about',
      `workers: ${workers}`,
      'logging: { level: error }',
      'identities:',
      `  - { cert: ${cert}, key: ${key} }`,
      'listeners:',
      `  - { dialect: imap, listen: "127.0.0.1:${port}", backend: "unix:${sock}", exempt: [127.0.0.1] }`,
      '',
    ].join('\n'),
  );
  const proxy = await start(
    process.execPath,
    [join(root, 'packages/cli/bin/tlsproxy.js'), '--config', conf],
    { port, name: 'tlsproxy CLI' },
  );
  await new Promise((r) => setTimeout(r, 1000)); // let every worker listen
  return { port, proxy: [proxy], backend: [backend] };
}

/** node:tls doing the preamble, STARTTLS and the IMAP answers in one process. */
export async function startNodeTls(nodeFlags = []) {
  const port = await freePort();
  const [cmd, argv] = node('servers.mjs', 'nodetls', port);
  const proxy = await start(cmd, [...nodeFlags, ...argv], { ready: 'ready' });
  return { port, proxy: [proxy], backend: [] };
}

/** node:tls implicit TLS (port-993 style), then the same IMAP logic, in one process. */
export async function startImplicit(nodeFlags = []) {
  const port = await freePort();
  const [cmd, argv] = node('servers.mjs', 'implicit', port);
  const proxy = await start(cmd, [...nodeFlags, ...argv], { ready: 'ready' });
  return { port, proxy: [proxy], backend: [], implicit: true };
}

function stunnelConf(port, bport) {
  return [
    'foreground = yes',
    'pid =',
    'syslog = no',
    'debug = 3',
    `output = ${join(workDir, 'stunnel.log')}`,
    '[imap]',
    `accept = 127.0.0.1:${port}`,
    `connect = 127.0.0.1:${bport}`,
    'protocol = imap',
    `cert = ${cert}`,
    `key = ${key}`,
    'sslVersionMin = TLSv1.3',
    '',
  ].join('\n');
}

function nginxConf(d, port) {
  return `load_module /usr/lib/nginx/modules/ngx_mail_module.so;
daemon off;
master_process on;
worker_processes 2;
${process.getuid() === 0 ? 'user root;' : ''}
pid ${d}/nginx.pid;
error_log ${d}/error.log error;
worker_rlimit_nofile 20000;
events { worker_connections 16384; }
mail {
  # Only consulted at LOGIN/AUTHENTICATE, which the benchmark never sends.
  auth_http 127.0.0.1:9/auth;
  server {
    listen 127.0.0.1:${port};
    protocol imap;
    starttls only;
    ssl_certificate ${cert};
    ssl_certificate_key ${key};
    ssl_protocols TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
  }
}
`;
}

export const SYSTEMS = [
  {
    id: 'tlsproxy',
    label: 'tlsproxy (TlsProxy, node:tls engine, 1 process)',
    cores: '1 proxy process, node:tls engine on its JS thread (+ backend process)',
    engine: 'node',
    bulk: true,
    idle: true,
    start: () => startTlsproxy('a1'),
  },
  ...nativeSystems(),
  ...[1, 2].map((workers) => ({
    id: `tlsproxy-w${workers}`,
    label: `tlsproxy CLI --workers ${workers} --engine native`,
    cores:
      (workers === 1
        ? `1 process (the CLI), native engine, ${cliThreads(1)} loop thread(s) (+ backend process)`
        : `${workers} worker processes, native engine, ${cliThreads(workers)} loop thread(s) each (the CLI's default: max(1, ⌊cores ÷ workers⌋ − 1)) (+ primary, + backend process)`) +
      (workers === cliWorkers ? '; the CLI’s default workers on this machine' : ''),
    engine: 'native',
    workers,
    bulk: workers > 1,
    start: () => startCli(workers),
  })),
  {
    id: 'node-tls',
    label: 'node:tls in-process (1 process)',
    cores: '1 process (preamble, TLS and backend logic)',
    bulk: true,
    start: () => startNodeTls(),
  },
  {
    id: 'node-tls-implicit',
    label: 'node:tls implicit TLS (1 process)',
    cores: '1 process (TLS from the first byte, then the same IMAP logic; no preamble)',
    start: () => startImplicit(),
  },
  {
    id: 'stunnel',
    label: 'stunnel4 protocol=imap',
    cores: 'stunnel threads (any core) (+ plaintext backend process)',
    bulk: true,
    idle: true,
    needs: 'stunnel4',
    async start() {
      const port = await freePort();
      const bport = await freePort();
      const backend = await start(...node('servers.mjs', 'plain', bport), { ready: 'ready' });
      const conf = join(workDir, 'stunnel.conf');
      writeFileSync(conf, stunnelConf(port, bport));
      const proxy = await start('stunnel4', [conf], { port, name: 'stunnel4' });
      return { port, proxy: [proxy], backend: [backend] };
    },
  },
  {
    id: 'stunnel-c256',
    label: 'stunnel4 protocol=imap, concurrency 256',
    cores: 'same stunnel instance, 8× the clients (its 200 ms RFC 2595 wait caps it at c/0.2 s)',
    reuse: 'stunnel',
    concurrency: 256,
  },
  {
    id: 'nginx',
    label: 'nginx mail, starttls only',
    cores: '2 worker processes (+ master)',
    idle: true,
    needs: 'nginx',
    async start() {
      const port = await freePort();
      const d = join(workDir, 'nginx');
      mkdirSync(d, { recursive: true });
      const conf = join(d, 'nginx.conf');
      writeFileSync(conf, nginxConf(d, port));
      const proxy = await start('nginx', ['-p', d, '-e', `${d}/error.log`, '-c', conf], {
        port,
        name: 'nginx',
      });
      return { port, proxy: [proxy], backend: [] };
    },
  },
];
