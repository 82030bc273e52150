// `tlsproxy --config FILE`: YAML (or JSON), checked against schema/tlsproxy.schema.json, with
// errors that name the file, line and key; then turned into what TlsProxy needs.

import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import {
  addressProblem,
  type ListenerConfig,
  type ProxyOptions,
  parseServerAddress,
} from '@tlsproxy/core';
import { TlsproxyError } from '@tlsproxy/dialect-kit';
import { certificateNames, type EngineOptions, type IdentityConfig } from '@tlsproxy/pool';
import { Ajv, type ErrorObject } from 'ajv';
import { isMap, isScalar, LineCounter, type Node, parseDocument } from 'yaml';

const require = createRequire(import.meta.url);
export const schema = require('../schema/tlsproxy.schema.json') as Record<string, unknown>;

export class ConfigError extends TlsproxyError<'TLSPROXY_ERR_CONFIG'> {
  constructor(readonly problems: string[]) {
    super('TLSPROXY_ERR_CONFIG', problems.join('\n'));
    this.name = 'ConfigError';
  }
}

type BackendSpec = { handoff?: string; connect?: string; proxyProtocol?: 'v1' | 'v2' | false };

export interface ConfigFile {
  identities?: Array<{ cert: string; key: string; names?: string[]; default?: boolean }>;
  tls?: {
    ca?: string;
    clientCert?: 'none' | 'optional' | 'required';
    alpn?: string[];
    handshakeTimeoutMs?: number;
    minVersion?: 'TLSv1.2' | 'TLSv1.3';
  };
  pool?: { socket?: string; allowUids?: number[] };
  engine?: 'node' | 'native';
  engineThreads?: number;
  backendUids?: number[];
  backends?: Record<string, BackendSpec>;
  listeners: Array<
    Omit<ListenerConfig, 'backend' | 'dialect' | 'tls'> & {
      dialect: string;
      backend?: string | BackendSpec;
      tls?: ListenerTlsFile;
    }
  >;
  logging?: { level?: 'debug' | 'info' | 'warn' | 'error'; format?: 'json' | 'text' };
  metrics?: { listen?: string };
  shutdownTimeoutMs?: number;
  workers?: number;
}

/** A listener's `tls` as written in the file: the server role's keys, or the client role's (file
 * paths for `ca`, `cert`, `key`). */
export interface ListenerTlsFile {
  clientCert?: 'none' | 'optional' | 'required';
  /** Server role: hand off before the client's Finished (TLS 1.3, no client certificates). */
  earlyHandoff?: boolean;
  alpn?: string[];
  handshakeTimeoutMs?: number;
  ca?: string;
  serverName?: string;
  cert?: string;
  key?: string;
  clientIdentity?: string;
  minVersion?: 'TLSv1.2' | 'TLSv1.3';
}

/** Keys of a listener's `tls` that only the client role takes, and those only the server role takes. */
const CLIENT_TLS_KEYS = ['ca', 'serverName', 'cert', 'key', 'clientIdentity', 'minVersion'];
const SERVER_TLS_KEYS = ['clientCert', 'earlyHandoff'];
/** Listener keys of one role only. */
const CLIENT_ONLY_KEYS = ['connect', 'connectTimeoutMs'];
const SERVER_ONLY_KEYS = ['backend', 'handoff', 'checkServerName', 'serverNames'];

/** The engine identity a client-role listener's `tls.cert`/`tls.key` become: a name that no SNI
 * name or XMPP domain can be, so the server role never serves it. */
export const clientIdentityName = (i: number) => `client:listeners.${i}`;

/** What a loaded config turns into: TlsProxy's options and its listeners. */
export interface LoadedConfig {
  file: string;
  raw: ConfigFile;
  pool: ProxyOptions['pool'];
  /** The embedded engine the file asks for; absent: the default, native (node:tls, with a
   * warning, where native cannot load — engine.ts decideEngine). */
  engine?: 'node' | 'native';
  engineThreads?: number;
  listeners: ListenerConfig[];
  logging: { level: 'debug' | 'info' | 'warn' | 'error'; format: 'json' | 'text' };
  metrics?: { listen: string };
  shutdownTimeoutMs: number;
  backendUids?: number[];
}

const ajv = new Ajv({ allErrors: true, strict: false });
const validate = ajv.compile(schema);

function where(file: string, lines: LineCounter, node: Node | null | undefined): string {
  const offset = node?.range?.[0];
  if (offset === undefined) return file;
  const { line, col } = lines.linePos(offset);
  return `${file}:${line}:${col}`;
}

function keyPath(instancePath: string): (string | number)[] {
  return instancePath
    .split('/')
    .slice(1)
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((p) => (/^\d+$/.test(p) ? Number(p) : p));
}

function describe(e: ErrorObject): string {
  if (e.keyword === 'additionalProperties')
    return `unknown key "${(e.params as { additionalProperty: string }).additionalProperty}"`;
  if (e.keyword === 'enum')
    return `must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
  if (e.keyword === 'required')
    return `missing key "${(e.params as { missingProperty: string }).missingProperty}"`;
  return e.message ?? e.keyword;
}

/** The address lists of a (possibly invalid) config: every entry checked, each problem placed. */
function addressProblems(data: unknown, place: (path: (string | number)[]) => string): string[] {
  const out: string[] = [];
  const listeners = (data as { listeners?: unknown } | null)?.listeners;
  if (!Array.isArray(listeners)) return out;
  listeners.forEach((l: unknown, i) => {
    if (typeof l !== 'object' || l === null) return;
    const lists: Array<[(string | number)[], unknown]> = [
      [['listeners', i, 'proxyProtocol', 'trusted'], (l as ListenerShape).proxyProtocol?.trusted],
      [['listeners', i, 'exempt'], (l as ListenerShape).exempt],
    ];
    for (const [path, list] of lists) {
      // Not a list, or an entry not a string: the schema says so.
      if (!Array.isArray(list)) continue;
      list.forEach((entry: unknown, j) => {
        if (typeof entry !== 'string') return;
        const why = addressProblem(entry);
        if (why !== undefined)
          out.push(`${place([...path, j])}: ${[...path, j].join('.')}: ${why}`);
      });
    }
  });
  return out;
}

type ListenerShape = { proxyProtocol?: { trusted?: unknown }; exempt?: unknown };

/** engine and engineThreads against each other and pool.socket, placed at file:line:col. */
function engineProblems(data: unknown, place: (path: (string | number)[]) => string): string[] {
  if (typeof data !== 'object' || data === null) return [];
  const o = data as { engine?: unknown; engineThreads?: unknown; pool?: { socket?: unknown } };
  const daemon = typeof o.pool === 'object' && o.pool !== null && Boolean(o.pool.socket);
  const out: string[] = [];
  if (o.engine === 'native' && daemon)
    out.push(
      `${place(['engine'])}: engine: native is for the embedded engine; a tlspool daemon runs its own`,
    );
  // engineThreads goes with the default engine (native) as with an explicit engine: native; a
  // daemon (which runs its own engine) and node:tls have no use for it.
  if (o.engineThreads !== undefined && daemon)
    out.push(
      `${place(['engineThreads'])}: engineThreads is for the embedded engine; a tlspool daemon runs its own`,
    );
  else if (o.engineThreads !== undefined && o.engine === 'node')
    out.push(
      `${place(['engineThreads'])}: engineThreads is for the native engine, not engine: node`,
    );
  return out;
}

/**
 * Keys that belong to the other role, and the client role's own checks (the server address, a
 * certificate without its key), each placed at its file:line:col. Runs on a config the schema
 * may still reject; only what the schema cannot say.
 */
function roleProblems(data: unknown, place: (path: (string | number)[]) => string): string[] {
  const out: string[] = [];
  const listeners = (data as { listeners?: unknown } | null)?.listeners;
  if (!Array.isArray(listeners)) return out;
  const say = (path: (string | number)[], why: string) =>
    out.push(`${place(path)}: ${path.join('.')}: ${why}`);
  listeners.forEach((l: unknown, i) => {
    if (typeof l !== 'object' || l === null) return;
    const o = l as Record<string, unknown>;
    const client = o.role === 'client';
    const tls =
      typeof o.tls === 'object' && o.tls !== null ? (o.tls as Record<string, unknown>) : {};
    for (const k of client ? SERVER_ONLY_KEYS : CLIENT_ONLY_KEYS) {
      if (k in o)
        say(
          ['listeners', i, k],
          client
            ? 'not used with role: client (the proxy connects to `connect` itself)'
            : 'only with role: client',
        );
    }
    for (const k of client ? SERVER_TLS_KEYS : CLIENT_TLS_KEYS) {
      if (k in tls)
        say(
          ['listeners', i, 'tls', k],
          client
            ? 'not used with role: client'
            : k === 'ca'
              ? 'only with role: client (the CAs for client certificates are the top-level tls.ca)'
              : 'only with role: client',
        );
    }
    if (!client) return;
    if (typeof o.connect === 'string') {
      try {
        parseServerAddress(o.connect);
      } catch (err) {
        say(['listeners', i, 'connect'], (err as Error).message);
      }
    }
    if ('cert' in tls !== 'key' in tls)
      say(
        ['listeners', i, 'tls', 'cert' in tls ? 'cert' : 'key'],
        'give tls.cert and tls.key together',
      );
    if ('clientIdentity' in tls && 'cert' in tls)
      say(
        ['listeners', i, 'tls', 'clientIdentity'],
        'give tls.cert/tls.key or tls.clientIdentity, not both',
      );
  });
  return out;
}

/**
 * Whether a file of trusted CAs is usable: at least one PEM certificate, each of which parses.
 * 'PATH has no PEM certificate' / 'PATH: …' or undefined.
 */
export function caProblem(pem: Buffer, path: string): string | undefined {
  const blocks = pem
    .toString('latin1')
    .match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g);
  if (!blocks || blocks.length === 0) return `${path} has no PEM certificate`;
  for (const b of blocks) {
    try {
      new X509Certificate(b);
    } catch (err) {
      return `${path}: a certificate does not parse (${firstLine(err)})`;
    }
  }
  return undefined;
}

/** Parse and check a config file's text; throws ConfigError listing every problem with its place. */
export function parseConfig(text: string, file: string): ConfigFile {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => {
        const { line, col } = lines.linePos(e.pos[0]);
        return `${file}:${line}:${col}: ${e.message.split('\n')[0]}`;
      }),
    );
  }
  const data = doc.toJS() as unknown;
  // Address lists are checked here, not when a connection arrives: a bad entry used to pass
  // check-config and crash the proxy on the first connection (issue 14).
  const place = (path: (string | number)[]) =>
    where(file, lines, doc.getIn(path, true) as Node | undefined);
  const badAddresses = [
    ...addressProblems(data, place),
    ...roleProblems(data, place),
    ...engineProblems(data, place),
  ];
  if (validate(data)) {
    if (badAddresses.length > 0) throw new ConfigError(badAddresses);
    return data as ConfigFile;
  }
  const seen = new Set<string>();
  const problems: string[] = [];
  // oneOf failures repeat what their branches said; keep the most specific message per place.
  for (const e of validate.errors ?? []) {
    if (e.keyword === 'oneOf' || e.keyword === 'if') continue;
    const path = keyPath(e.instancePath);
    let node = doc.getIn(path, true) as Node | undefined;
    if (e.keyword === 'additionalProperties') {
      const extra = (e.params as { additionalProperty: string }).additionalProperty;
      const map = doc.getIn(path, true);
      if (isMap(map)) {
        const pair = map.items.find((p) => isScalar(p.key) && p.key.value === extra);
        if (pair && isScalar(pair.key)) node = pair.key as Node;
      }
    }
    const key = path.length > 0 ? path.join('.') : '(top level)';
    const line = `${where(file, lines, node)}: ${key}: ${describe(e)}`;
    if (!seen.has(line)) {
      seen.add(line);
      problems.push(line);
    }
  }
  problems.push(...badAddresses);
  throw new ConfigError(problems.length > 0 ? problems : [`${file}: does not match the schema`]);
}

function readText(path: string, what: string, problems: string[]): Buffer | undefined {
  try {
    return readFileSync(path);
  } catch (err) {
    problems.push(`${what}: cannot read ${path}: ${(err as Error).message}`);
    return undefined;
  }
}

/**
 * Whether a PEM certificate chain and key parse and belong together: 'cert: …' / 'key: …' saying
 * what is wrong, or undefined. Checked before anything listens (and by check-config), so a bad
 * file is one clear message instead of an engine error in every worker.
 */
export function identityProblem(
  cert: Buffer,
  key: Buffer,
  certPath: string,
  keyPath: string,
): string | undefined {
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    return `key: ${keyPath} is not a PEM private key (${firstLine(err)})`;
  }
  let x509: X509Certificate;
  try {
    // The first certificate of the chain is the one the key must match.
    x509 = new X509Certificate(cert);
  } catch (err) {
    return `cert: ${certPath} is not a PEM certificate (${firstLine(err)})`;
  }
  if (!x509.checkPrivateKey(privateKey))
    return `key: ${keyPath} does not match the certificate in ${certPath}`;
  return undefined;
}

const firstLine = (err: unknown) => String((err as Error).message ?? err).split('\n')[0];

/** Every name the engine's identities answer to (as given, or the certificate's own). */
function identityNames(identities: IdentityConfig[]): Set<string> {
  const out = new Set<string>();
  for (const id of identities) {
    let names = id.names;
    if (!names) {
      try {
        names = certificateNames(id.cert);
      } catch {
        names = [];
      }
    }
    for (const n of names) out.add(n.toLowerCase());
  }
  return out;
}

/**
 * `file:line:col: key.path` for a key of a file already parsed once, for problems found after
 * parsing (a file that cannot be read, a dialect without a client side): the same form as the
 * schema's. Falls back to `file: key.path`.
 */
export function placeIn(file: string, text: string, path: (string | number)[]): string {
  const key = path.join('.');
  try {
    const lines = new LineCounter();
    const doc = parseDocument(text, { lineCounter: lines });
    return `${where(file, lines, doc.getIn(path, true) as Node | undefined)}: ${key}`;
  } catch {
    return `${file}: ${key}`;
  }
}

/** Load a config file: parse, check, read the certificate files, resolve backends. */
export function loadConfig(file: string): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([`${file}: ${(err as Error).message}`]);
  }
  const raw = parseConfig(text, file);
  const base = dirname(resolve(file));
  const abs = (p: string) => resolve(base, p);
  const problems: string[] = [];

  let pool: ProxyOptions['pool'];
  if (raw.pool?.socket) {
    pool = {
      socket: abs(raw.pool.socket),
      ...(raw.pool.allowUids ? { allowUids: raw.pool.allowUids } : {}),
    };
  } else {
    // Client-role listeners need no certificate of ours (one given as tls.cert/key is added below).
    const serving = raw.listeners.some((l) => l.role !== 'client');
    if (serving && (!raw.identities || raw.identities.length === 0)) {
      problems.push(`${file}: identities: needed unless pool.socket names a tlspool daemon`);
    }
    const identities = (raw.identities ?? []).map((id, i) => {
      const cert = readText(abs(id.cert), `${file}: identities.${i}.cert`, problems);
      const key = readText(abs(id.key), `${file}: identities.${i}.key`, problems);
      if (cert && key) {
        const p = identityProblem(cert, key, abs(id.cert), abs(id.key));
        if (p) problems.push(`${file}: identities.${i}.${p}`);
      }
      return {
        cert: cert ?? Buffer.alloc(0),
        key: key ?? Buffer.alloc(0),
        ...(id.names ? { names: id.names } : {}),
        ...(id.default ? { default: true } : {}),
      };
    });
    // Only client-role listeners: the engine only connects (it may hold no certificate at all).
    const engine: EngineOptions = serving ? { identities } : { identities, connectOnly: true };
    if (raw.tls?.ca) {
      const ca = readText(abs(raw.tls.ca), `${file}: tls.ca`, problems);
      if (ca) engine.ca = ca;
    }
    if (raw.tls?.clientCert) engine.clientCert = raw.tls.clientCert;
    if (raw.tls?.alpn) engine.alpn = raw.tls.alpn;
    if (raw.tls?.handshakeTimeoutMs) engine.handshakeTimeoutMs = raw.tls.handshakeTimeoutMs;
    if (raw.tls?.minVersion) engine.minVersion = raw.tls.minVersion;
    if (engine.clientCert && engine.clientCert !== 'none' && !engine.ca) {
      problems.push(`${file}: tls.clientCert ${engine.clientCert} needs tls.ca`);
    }
    pool = engine;
  }

  // Client role: the CA file is read here (the engine gets PEM text), a certificate and key
  // become an engine identity the listener names, and a named identity must exist.
  const clientTls = new Map<number, NonNullable<ListenerConfig['tls']>>();
  raw.listeners.forEach((l, i) => {
    if (l.role !== 'client') return;
    const t = l.tls ?? {};
    const place = (k: string) => placeIn(file, text, ['listeners', i, 'tls', k]);
    const out: NonNullable<ListenerConfig['tls']> = {};
    if (t.ca !== undefined) {
      const ca = readText(abs(t.ca), place('ca'), problems);
      const p = ca && caProblem(ca, abs(t.ca));
      if (p) problems.push(`${place('ca')}: ${p}`);
      if (ca) out.ca = ca.toString('utf8');
    }
    if (t.serverName !== undefined) out.serverName = t.serverName;
    if (t.alpn !== undefined) out.alpn = t.alpn;
    if (t.minVersion !== undefined) out.minVersion = t.minVersion;
    if (t.handshakeTimeoutMs !== undefined) out.handshakeTimeoutMs = t.handshakeTimeoutMs;
    if (t.cert !== undefined && t.key !== undefined) {
      if (!('identities' in pool)) {
        problems.push(
          `${place('cert')}: with pool.socket the daemon holds the keys: name one of its identities in tls.clientIdentity`,
        );
      } else {
        const cert = readText(abs(t.cert), place('cert'), problems);
        const key = readText(abs(t.key), place('key'), problems);
        if (cert && key) {
          const p = identityProblem(cert, key, abs(t.cert), abs(t.key));
          // identityProblem says 'cert: …' or 'key: …'.
          if (p) problems.push(`${place(p.slice(0, p.indexOf(':')))}${p.slice(p.indexOf(':'))}`);
          else
            (pool.identities as IdentityConfig[]).push({
              cert,
              key,
              names: [clientIdentityName(i)],
            });
        }
        out.clientIdentity = clientIdentityName(i);
      }
    } else if (t.clientIdentity !== undefined) {
      out.clientIdentity = t.clientIdentity;
      if (
        'identities' in pool &&
        !identityNames(pool.identities).has(t.clientIdentity.toLowerCase())
      )
        problems.push(
          `${place('clientIdentity')}: no identity named "${t.clientIdentity}" (identities[].names)`,
        );
    }
    clientTls.set(i, out);
  });

  const listeners: ListenerConfig[] = raw.listeners.map((l, i) => {
    if (l.role === 'client') {
      const { tls: _file, ...rest } = l;
      const dialect = l.dialect.startsWith('.') ? abs(l.dialect) : l.dialect;
      return { ...rest, dialect, tls: clientTls.get(i) ?? {} } as ListenerConfig;
    }
    let backend: ListenerConfig['backend'];
    const spec = l.backend;
    const named =
      typeof spec === 'string' && !spec.includes(':') ? raw.backends?.[spec] : undefined;
    if (typeof spec === 'string' && !spec.includes(':') && !named) {
      problems.push(`${file}: listeners.${i}.backend: no backend named "${spec}" in backends`);
    }
    const b: string | BackendSpec | undefined = named ?? spec;
    if (typeof b === 'string') backend = b;
    else if (b === undefined) backend = undefined;
    else if (b.handoff) backend = b.handoff;
    else
      backend = {
        connect: b.connect!,
        ...(b.proxyProtocol !== undefined ? { proxyProtocol: b.proxyProtocol } : {}),
      } as never;
    const dialect = l.dialect.startsWith('.') ? abs(l.dialect) : l.dialect;
    return { ...l, dialect, backend } as ListenerConfig;
  });

  if (problems.length > 0) throw new ConfigError(problems);
  return {
    file,
    raw,
    pool,
    ...(raw.engine !== undefined ? { engine: raw.engine } : {}),
    ...(raw.engineThreads !== undefined ? { engineThreads: raw.engineThreads } : {}),
    listeners,
    logging: { level: raw.logging?.level ?? 'info', format: raw.logging?.format ?? 'json' },
    ...(raw.metrics?.listen ? { metrics: { listen: raw.metrics.listen } } : {}),
    shutdownTimeoutMs: raw.shutdownTimeoutMs ?? 30_000,
    ...(raw.backendUids ? { backendUids: raw.backendUids } : {}),
  };
}
