// `tlsproxy --config FILE`: YAML (or JSON), checked against schema/tlsproxy.schema.json, with
// errors that name the file, line and key; then turned into what TlsProxy needs.

import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { addressProblem, type ListenerConfig, type ProxyOptions } from '@tlsproxy/core';
import { TlsproxyError } from '@tlsproxy/dialect-kit';
import type { EngineOptions } from '@tlsproxy/pool';
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
    Omit<ListenerConfig, 'backend' | 'dialect'> & { dialect: string; backend: string | BackendSpec }
  >;
  logging?: { level?: 'debug' | 'info' | 'warn' | 'error'; format?: 'json' | 'text' };
  metrics?: { listen?: string };
  shutdownTimeoutMs?: number;
  workers?: number;
}

/** What a loaded config turns into: TlsProxy's options and its listeners. */
export interface LoadedConfig {
  file: string;
  raw: ConfigFile;
  pool: ProxyOptions['pool'];
  /** The embedded engine: node:tls (default) or the native one. */
  engine: 'node' | 'native';
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
  const badAddresses = addressProblems(data, (path) =>
    where(file, lines, doc.getIn(path, true) as Node | undefined),
  );
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
    if (!raw.identities || raw.identities.length === 0) {
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
    const engine: EngineOptions = { identities };
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

  const listeners: ListenerConfig[] = raw.listeners.map((l, i) => {
    let backend: ListenerConfig['backend'];
    const spec = l.backend;
    const named =
      typeof spec === 'string' && !spec.includes(':') ? raw.backends?.[spec] : undefined;
    if (typeof spec === 'string' && !spec.includes(':') && !named) {
      problems.push(`${file}: listeners.${i}.backend: no backend named "${spec}" in backends`);
    }
    const b: string | BackendSpec = named ?? spec;
    if (typeof b === 'string') backend = b;
    else if (b.handoff) backend = b.handoff;
    else
      backend = {
        connect: b.connect!,
        ...(b.proxyProtocol !== undefined ? { proxyProtocol: b.proxyProtocol } : {}),
      } as never;
    const dialect = l.dialect.startsWith('.') ? abs(l.dialect) : l.dialect;
    return { ...l, dialect, backend } as ListenerConfig;
  });

  if (raw.engine === 'native' && raw.pool?.socket)
    problems.push(
      `${file}: engine: native is for the embedded engine; a tlspool daemon runs its own`,
    );
  if (raw.engineThreads !== undefined && raw.engine !== 'native')
    problems.push(`${file}: engineThreads goes with engine: native`);
  if (problems.length > 0) throw new ConfigError(problems);
  return {
    file,
    raw,
    pool,
    engine: raw.engine ?? 'node',
    ...(raw.engineThreads !== undefined ? { engineThreads: raw.engineThreads } : {}),
    listeners,
    logging: { level: raw.logging?.level ?? 'info', format: raw.logging?.format ?? 'json' },
    ...(raw.metrics?.listen ? { metrics: { listen: raw.metrics.listen } } : {}),
    shutdownTimeoutMs: raw.shutdownTimeoutMs ?? 30_000,
    ...(raw.backendUids ? { backendUids: raw.backendUids } : {}),
  };
}
