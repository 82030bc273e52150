// Command-line flags for one listener (the first form of the CLI contract).

import { parseArgs } from 'node:util';
import { TlsproxyError } from '@tlsproxy/dialect-kit';

export interface CliArgs {
  /** 'server' (default): STARTTLS served to clients; 'client': done with a server for local clients. */
  role: 'server' | 'client';
  dialect: string;
  listen: string;
  /** Server role: the backend. Client role: '' (not used). */
  backend: string;
  /** Client role: the server, HOST:PORT. */
  connect?: string;
  /** Client role: the name the server's certificate must match (default: the connect host). */
  serverName?: string;
  /** Client role: lowest TLS version accepted from the server. */
  minVersion?: 'TLSv1.2' | 'TLSv1.3';
  /** Client role: an identity the tlspool daemon holds, presented as our certificate. */
  clientIdentity?: string;
  cert: string[];
  workers?: number;
  poolSocket?: string;
  /** The embedded TLS engine asked for: 'native' (@tlsproxy/engine-native) or 'node' (node:tls).
   * Not given: the default, native — or node:tls, with a warning, where native cannot load. */
  engine?: 'node' | 'native';
  /** The native engine's loop threads per worker (default: max(1, floor(cores / workers) − 1)). */
  engineThreads?: number;
  key: string[];
  ca?: string;
  clientCert: 'none' | 'optional' | 'required';
  handoff: 'plain' | 'crypt';
  hostname?: string;
  checkServerName: boolean;
  alpn: string[];
  options: Record<string, unknown>;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  logFormat: 'json' | 'text';
}

export const USAGE = `Usage: tlsproxy --dialect NAME --listen HOST:PORT --backend unix:/PATH --cert CERT.pem --key KEY.pem [options]
       tlsproxy --role client --dialect NAME --listen HOST:PORT --connect HOST:PORT [--ca CA.pem] [options]

  --dialect NAME          imap, pop3, smtp, ldap, xmpp, http-upgrade, tls (implicit TLS),
                          a package name, or a module path (./my-dialect.js)
  --listen HOST:PORT      address to listen on ([::1]:PORT for IPv6, systemd:NAME for socket activation);
                          default: 127.0.0.1 and the dialect's standard port
  --backend unix:/PATH    backend socket (a server using @tlsproxy/backend)
  --cert FILE --key FILE  certificate chain and key (PEM); repeat for more identities (chosen by SNI)
  --pool-socket PATH      use a tlspool daemon on PATH instead of an embedded TLS engine
                          (the keys live there; --cert/--key are then not needed here)
  --engine native|node    the embedded TLS engine: native (default: @tlsproxy/engine-native, C,
                          handshake and relay on its own threads) or node (node:tls, the
                          reference engine). Not given and native cannot load here: node:tls,
                          with one warning (--engine node chooses it and silences that)
  --engine-threads N      the native engine's event-loop threads in each worker (default: each
                          worker's share of the cores less one for its JS thread,
                          max(1, floor(cores / workers) - 1))
  --ca FILE               CAs trusted for client certificates
  --client-cert MODE      none (default) | optional | required
  --handoff MODE          plain (default: tlsproxy terminates TLS) | crypt (pass the raw TCP socket)
  --check-server-name     ask the backend (onServerName) to accept each SNI name
  --alpn LIST             comma-separated ALPN protocols to offer
  --hostname NAME         host name used in greetings
  --option KEY=VALUE      a dialect option (repeatable; VALUE is JSON or a plain string)
  --workers N             processes sharing the listeners (default: one per two cores with the
                          native engine, one per core with node:tls; 1 with systemd:)
  --log-format FORMAT     text (default) | json (one pino JSON object per line)
  --log-level LEVEL       debug | info (default) | warn | error
  -h, --help              this text

Client role (--role client: local clients speak plaintext to --listen; tlsproxy connects to the
server, does the protocol's STARTTLS there, verifies the server's certificate, relays through TLS):
  --connect HOST:PORT     the server ([v6]:PORT for IPv6)
  --ca FILE               CAs trusted for the server's certificate (default: Node's bundled roots)
  --server-name NAME      the name its certificate must match, and SNI (default: the --connect host)
  --cert FILE --key FILE  our client certificate and key (optional; one pair)
  --client-identity NAME  with --pool-socket: the daemon's identity to present as our certificate
  --alpn LIST             ALPN protocols to offer
  --min-version VERSION   TLSv1.2 (default) | TLSv1.3
  --engine, --engine-threads  as for the server role (the native engine by default)
  --option KEY=VALUE      an option of the dialect's client side
  (--backend, --handoff, --client-cert, --check-server-name are for the server role only)
`;

/** A bad command line: main prints it with the usage text and exits 2. */
export class UsageError extends TlsproxyError<'TLSPROXY_ERR_USAGE'> {
  constructor(message: string, options?: { cause?: unknown }) {
    super('TLSPROXY_ERR_USAGE', message, options);
    this.name = 'UsageError';
  }
}

function parseValue(v: string): unknown {
  try {
    return JSON.parse(v);
  } catch {
    return v;
  }
}

type Values = Record<string, string | boolean | string[] | undefined>;

function parseOptions(values: Values): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  for (const o of (values.option as string[] | undefined) ?? []) {
    const i = o.indexOf('=');
    if (i <= 0) throw new UsageError(`--option ${o}: expected KEY=VALUE`);
    options[o.slice(0, i)] = parseValue(o.slice(i + 1));
  }
  return options;
}

/** `--engine` and `--engine-threads`, the same in both roles. Threads go with the default engine
 * (native) as with an explicit native, never with node:tls or a daemon (which runs its own). */
function engineFlags(values: Values): Pick<CliArgs, 'engine' | 'engineThreads'> {
  const out: Pick<CliArgs, 'engine' | 'engineThreads'> = {};
  const engine = values.engine as string | undefined;
  if (engine !== undefined) {
    if (engine !== 'node' && engine !== 'native')
      throw new UsageError('--engine must be node or native');
    if (engine === 'native' && values['pool-socket'])
      throw new UsageError('--engine is for the embedded engine: a tlspool daemon runs its own');
    out.engine = engine;
  }
  if (values['engine-threads'] !== undefined) {
    const n = Number(values['engine-threads']);
    if (!Number.isInteger(n) || n < 1 || n > 256)
      throw new UsageError('--engine-threads must be 1..256');
    if (values['pool-socket'])
      throw new UsageError(
        '--engine-threads is for the embedded engine: a tlspool daemon runs its own',
      );
    if (engine === 'node')
      throw new UsageError('--engine-threads is for the native engine, not --engine node');
    out.engineThreads = n;
  }
  return out;
}

function logFlags(values: Values): Pick<CliArgs, 'logLevel' | 'logFormat'> {
  const logLevel = (values['log-level'] ?? 'info') as string;
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel))
    throw new UsageError('--log-level must be debug, info, warn or error');
  if (
    values['log-format'] !== undefined &&
    !['json', 'text'].includes(values['log-format'] as string)
  ) {
    throw new UsageError('--log-format must be json or text');
  }
  return {
    logLevel: logLevel as CliArgs['logLevel'],
    logFormat: values['log-format'] === 'json' ? 'json' : 'text',
  };
}

/** `--role client`: one listener for local clients, one server to connect to. */
function clientArgs(values: Values): CliArgs {
  const missing = ['dialect', 'listen', 'connect'].filter((k) => values[k] === undefined);
  if (missing.length > 0)
    throw new UsageError(`--role client needs ${missing.map((m) => `--${m}`).join(', ')}`);
  for (const flag of ['backend', 'handoff', 'client-cert', 'check-server-name']) {
    if (values[flag] !== undefined)
      throw new UsageError(`--${flag} is for the server role, not --role client`);
  }
  const cert = (values.cert as string[] | undefined) ?? [];
  const key = (values.key as string[] | undefined) ?? [];
  if (cert.length !== key.length) throw new UsageError('give --cert and --key together');
  if (cert.length > 1) throw new UsageError('--role client takes one --cert/--key pair');
  if (values['client-identity'] !== undefined && !values['pool-socket'])
    throw new UsageError(
      '--client-identity names an identity of the tlspool daemon: give --pool-socket (or --cert and --key)',
    );
  if (values['client-identity'] !== undefined && cert.length > 0)
    throw new UsageError('give --cert/--key or --client-identity, not both');
  if (values['pool-socket'] && cert.length > 0)
    throw new UsageError(
      'with --pool-socket the daemon holds the keys: use --client-identity NAME',
    );
  const minVersion = values['min-version'] as string | undefined;
  if (minVersion !== undefined && minVersion !== 'TLSv1.2' && minVersion !== 'TLSv1.3')
    throw new UsageError('--min-version must be TLSv1.2 or TLSv1.3');
  if (values.workers !== undefined) {
    const n = Number(values.workers);
    if (!Number.isInteger(n) || n < 1 || n > 256) throw new UsageError('--workers must be 1..256');
  }
  const out: CliArgs = {
    role: 'client',
    dialect: values.dialect as string,
    listen: values.listen as string,
    backend: '',
    connect: values.connect as string,
    cert,
    key,
    clientCert: 'none',
    handoff: 'plain',
    checkServerName: false,
    alpn: values.alpn
      ? (values.alpn as string)
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
      : [],
    options: parseOptions(values),
    ...logFlags(values),
    ...engineFlags(values),
  };
  if (values.workers !== undefined) out.workers = Number(values.workers);
  if (values.ca) out.ca = values.ca as string;
  if (values['pool-socket']) out.poolSocket = values['pool-socket'] as string;
  if (values.hostname) out.hostname = values.hostname as string;
  if (values['server-name']) out.serverName = values['server-name'] as string;
  if (minVersion) out.minVersion = minVersion as CliArgs['minVersion'];
  if (values['client-identity']) out.clientIdentity = values['client-identity'] as string;
  return out;
}

export function parseCli(argv: string[]): CliArgs | 'help' {
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        role: { type: 'string' },
        connect: { type: 'string' },
        'server-name': { type: 'string' },
        'min-version': { type: 'string' },
        'client-identity': { type: 'string' },
        dialect: { type: 'string' },
        listen: { type: 'string' },
        backend: { type: 'string' },
        cert: { type: 'string', multiple: true },
        key: { type: 'string', multiple: true },
        ca: { type: 'string' },
        'pool-socket': { type: 'string' },
        engine: { type: 'string' },
        'engine-threads': { type: 'string' },
        'client-cert': { type: 'string' },
        handoff: { type: 'string' },
        hostname: { type: 'string' },
        'check-server-name': { type: 'boolean' },
        alpn: { type: 'string' },
        option: { type: 'string', multiple: true },
        'log-level': { type: 'string' },
        'log-format': { type: 'string' },
        workers: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) return 'help';
  const role = (values.role ?? 'server') as string;
  if (role !== 'server' && role !== 'client')
    throw new UsageError('--role must be server or client');
  if (role === 'client') return clientArgs(values);
  for (const flag of ['connect', 'server-name', 'min-version', 'client-identity']) {
    if (values[flag] !== undefined) throw new UsageError(`--${flag} goes with --role client`);
  }
  const required = values['pool-socket']
    ? ['dialect', 'backend']
    : ['dialect', 'backend', 'cert', 'key'];
  const missing = required.filter((k) => values[k] === undefined);
  if (missing.length > 0)
    throw new UsageError(`missing ${missing.map((m) => `--${m}`).join(', ')}`);
  const cert = (values.cert as string[] | undefined) ?? [];
  const key = (values.key as string[] | undefined) ?? [];
  if (cert.length !== key.length) throw new UsageError('give one --key for each --cert');
  const clientCert = (values['client-cert'] ?? 'none') as string;
  if (!['none', 'optional', 'required'].includes(clientCert))
    throw new UsageError('--client-cert must be none, optional or required');
  if (clientCert !== 'none' && !values.ca && !values['pool-socket'])
    throw new UsageError(`--client-cert ${clientCert} needs --ca`);
  const handoff = (values.handoff ?? 'plain') as string;
  if (!['plain', 'crypt'].includes(handoff))
    throw new UsageError('--handoff must be plain or crypt');
  const logLevel = (values['log-level'] ?? 'info') as string;
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel))
    throw new UsageError('--log-level must be debug, info, warn or error');
  if (
    values['log-format'] !== undefined &&
    !['json', 'text'].includes(values['log-format'] as string)
  ) {
    throw new UsageError('--log-format must be json or text');
  }
  const options = parseOptions(values);
  const out: CliArgs = {
    role: 'server',
    dialect: values.dialect as string,
    listen: (values.listen as string | undefined) ?? '',
    backend: values.backend as string,
    cert,
    key,
    clientCert: clientCert as CliArgs['clientCert'],
    handoff: handoff as CliArgs['handoff'],
    checkServerName: values['check-server-name'] === true,
    alpn: values.alpn
      ? (values.alpn as string)
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
      : [],
    options,
    logLevel: logLevel as CliArgs['logLevel'],
    logFormat: values['log-format'] === 'json' ? 'json' : 'text',
    ...engineFlags(values),
  };
  if (values.workers !== undefined) {
    const n = Number(values.workers);
    if (!Number.isInteger(n) || n < 1 || n > 256) throw new UsageError('--workers must be 1..256');
    out.workers = n;
  }
  if (values.ca) out.ca = values.ca as string;
  if (values['pool-socket']) out.poolSocket = values['pool-socket'] as string;
  if (values.hostname) out.hostname = values.hostname as string;
  return out;
}
