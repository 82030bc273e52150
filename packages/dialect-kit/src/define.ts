// A dialect's shape, options and limits as data, and the one validator for all of them
// (changesets' pattern: a plugin is a typed object checked once, with a message that says what is
// missing). The engine calls resolveOptions/resolveLimits once per listener and throws on a bad
// configuration; a session calls readOptions/readLimits, which never throw, so a session created
// by hand (tests, the conformance suite) still gets the defaults.
import {
  type Dialect,
  LIMIT_PHASES,
  LIMIT_UNITS,
  type LimitSpec,
  type OptionSpec,
} from './contract.js';
import { TlsproxyError } from './errors.js';

export type DialectDefinitionCode =
  | 'TLSPROXY_ERR_DIALECT_SHAPE'
  | 'TLSPROXY_ERR_DIALECT_OPTIONS'
  | 'TLSPROXY_ERR_DIALECT_NOT_FOUND';

/**
 * Check a plugin's shape once, at load time, and say exactly what is missing: a third-party
 * dialect fails here with a readable message, not deep in a session.
 */
export function defineDialect<O = Record<string, unknown>>(dialect: Dialect<O>): Dialect<O> {
  const problems = dialectProblems(dialect);
  if (problems.length > 0) {
    const name = typeof (dialect as { name?: unknown })?.name === 'string' ? dialect.name : '?';
    throw new TlsproxyError<DialectDefinitionCode>(
      'TLSPROXY_ERR_DIALECT_SHAPE',
      `dialect "${name}" is not a valid tlsproxy dialect: ${problems.join('; ')}`,
    );
  }
  return Object.freeze(dialect);
}

export function dialectProblems(value: unknown): string[] {
  const out: string[] = [];
  if (typeof value !== 'object' || value === null) return ['expected an object'];
  const d = value as Record<string, unknown>;
  if (typeof d.name !== 'string' || !/^[a-z][a-z0-9-]*$/.test(d.name)) {
    out.push('name must be a lowercase string like "imap"');
  }
  if (typeof d.create !== 'function') out.push('create(context) must be a function');
  if (d.busy !== undefined && typeof d.busy !== 'function')
    out.push('busy, if present, must be a function');
  if (d.backendGreeting !== undefined && typeof d.backendGreeting !== 'function') {
    out.push('backendGreeting, when present, must be a function (data) => number | null');
  }
  if (d.backendReplay !== undefined && typeof d.backendReplay !== 'function') {
    out.push('backendReplay, when present, must be a function (state) => { send, reply } | null');
  }
  if (d.client !== undefined) {
    const c = d.client as Record<string, unknown> | null;
    if (typeof c !== 'object' || c === null || typeof c.create !== 'function') {
      out.push('client, when present, must be an object with create(context)');
    } else if (typeof c.options !== 'object' || c.options === null) {
      out.push('client.options must be an object (may be empty)');
    } else if (typeof c.limits !== 'object' || c.limits === null) {
      out.push('client.limits must be an object (may be empty)');
    }
  }
  const ports = d.defaultPorts as Record<string, unknown> | undefined;
  if (typeof ports !== 'object' || ports === null) {
    out.push('defaultPorts must be an object { starttls?, implicit? }');
  } else {
    for (const k of ['starttls', 'implicit']) {
      const p = ports[k];
      if (p !== undefined && !(Number.isInteger(p) && (p as number) > 0 && (p as number) < 65536)) {
        out.push(`defaultPorts.${k} must be a port number`);
      }
    }
  }
  if (typeof d.options !== 'object' || d.options === null) {
    out.push('options must be an object of { type, default, description }');
  } else {
    for (const [k, spec] of Object.entries(d.options as Record<string, OptionSpec>)) {
      if (!spec || !['string', 'number', 'boolean', 'string[]'].includes(spec.type)) {
        out.push(`options.${k}.type must be string, number, boolean or string[]`);
      } else if (typeCheck(spec.type, spec.default) !== undefined) {
        out.push(`options.${k}.default does not match its type ${spec.type}`);
      }
    }
  }
  if (typeof d.limits !== 'object' || d.limits === null) {
    out.push('limits must be an object of { default, description }');
  } else {
    for (const [k, spec] of Object.entries(d.limits as Record<string, Partial<LimitSpec>>)) {
      if (!spec || typeof spec.default !== 'number' || !(spec.default >= 0)) {
        out.push(`limits.${k}.default must be a non-negative number`);
        continue;
      }
      if (spec.unit !== undefined && !LIMIT_UNITS.includes(spec.unit)) {
        out.push(`limits.${k}.unit must be one of ${LIMIT_UNITS.join(', ')}`);
      }
      if (spec.phase !== undefined && !LIMIT_PHASES.includes(spec.phase)) {
        out.push(`limits.${k}.phase must be one of ${LIMIT_PHASES.join(', ')}`);
      }
    }
  }
  return out;
}

function typeCheck(type: OptionSpec['type'], v: unknown): string | undefined {
  switch (type) {
    case 'string':
      return typeof v === 'string' ? undefined : 'expected a string';
    case 'number':
      return typeof v === 'number' && Number.isFinite(v) ? undefined : 'expected a number';
    case 'boolean':
      return typeof v === 'boolean' ? undefined : 'expected true or false';
    case 'string[]':
      return Array.isArray(v) && v.every((x) => typeof x === 'string')
        ? undefined
        : 'expected a list of strings';
  }
}

/** What is wrong with `value` for `spec` (the schema's checks, then `validate`), or undefined. */
export function optionProblem(spec: OptionSpec, value: unknown): string | undefined {
  const bad = typeCheck(spec.type, value);
  if (bad) return bad;
  if (spec.oneOf !== undefined && !spec.oneOf.includes(value as string | number)) {
    return spec.problem ?? `expected one of ${spec.oneOf.map((v) => JSON.stringify(v)).join(', ')}`;
  }
  if (typeof value === 'number') {
    if (spec.integer && !Number.isInteger(value)) return 'expected a whole number';
    if (spec.min !== undefined && value < spec.min) return `must be at least ${spec.min}`;
    if (spec.max !== undefined && value > spec.max) return `must be at most ${spec.max}`;
  }
  if (spec.pattern !== undefined) {
    const pattern = spec.pattern;
    const strings = typeof value === 'string' ? [value] : Array.isArray(value) ? value : [];
    const off = strings.find((s) => !pattern.test(s as string));
    if (off !== undefined) {
      return spec.problem ?? `"${String(off)}" does not match ${String(pattern)}`;
    }
  }
  if (spec.minItems !== undefined && Array.isArray(value) && value.length < spec.minItems) {
    return `expected at least ${spec.minItems} item(s)`;
  }
  return spec.validate?.(value);
}

/** Merge user options over the dialect's defaults; unknown keys and bad values are errors. */
export function resolveOptions<O>(dialect: Dialect<O>, raw: Record<string, unknown> = {}): O {
  const out: Record<string, unknown> = {};
  const errors: string[] = [];
  for (const key of Object.keys(raw)) {
    if (!Object.hasOwn(dialect.options, key)) errors.push(`unknown option "${key}"`);
  }
  for (const [key, spec] of Object.entries(dialect.options)) {
    const value = Object.hasOwn(raw, key) ? raw[key] : spec.default;
    const bad = optionProblem(spec, value);
    if (bad) errors.push(`option "${key}": ${bad}`);
    out[key] = value;
  }
  if (errors.length > 0) {
    throw new TlsproxyError<DialectDefinitionCode>(
      'TLSPROXY_ERR_DIALECT_OPTIONS',
      `dialect "${dialect.name}": ${errors.join('; ')}`,
    );
  }
  return out as O;
}

/** Merge user limits over the dialect's defaults; unknown names and negatives are errors. */
export function resolveLimits(
  dialect: Pick<Dialect<never>, 'name' | 'limits'>,
  raw: Record<string, unknown> = {},
): Readonly<Record<string, number>> {
  const out: Record<string, number> = {};
  const errors: string[] = [];
  for (const key of Object.keys(raw)) {
    if (!Object.hasOwn(dialect.limits, key)) errors.push(`unknown limit "${key}"`);
  }
  for (const [key, spec] of Object.entries(dialect.limits)) {
    const value = Object.hasOwn(raw, key) ? raw[key] : spec.default;
    if (typeof value !== 'number' || !(value >= 0)) errors.push(`limit "${key}" must be >= 0`);
    out[key] = value as number;
  }
  if (errors.length > 0) {
    throw new TlsproxyError<DialectDefinitionCode>(
      'TLSPROXY_ERR_DIALECT_OPTIONS',
      `dialect "${dialect.name}": ${errors.join('; ')}`,
    );
  }
  return Object.freeze(out);
}

/**
 * The options a session uses: each one the context gives when the schema accepts it, else its
 * default. Never throws: the engine has already refused a bad configuration (resolveOptions);
 * this is defence in depth for sessions created by hand, and it is the same validator.
 */
export function readOptions<O extends object>(
  schema: { readonly [K in keyof O]: OptionSpec },
  raw: Readonly<Partial<O>> | Readonly<Record<string, unknown>> | undefined,
): O {
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(schema) as [string, OptionSpec][]) {
    const value =
      raw !== undefined && raw !== null && Object.hasOwn(raw, key)
        ? (raw as Record<string, unknown>)[key]
        : undefined;
    out[key] =
      value !== undefined && optionProblem(spec, value) === undefined
        ? value
        : cloneDefault(spec.default);
  }
  return out as O;
}

/** The limits a session uses: each non-negative number the context gives, else the default. */
export function readLimits<S extends Record<string, LimitSpec>>(
  schema: S,
  raw: Readonly<Record<string, number>> | undefined,
): { [K in keyof S]: number } {
  const out: Record<string, number> = {};
  for (const [key, spec] of Object.entries(schema)) {
    const v = raw !== undefined && raw !== null && Object.hasOwn(raw, key) ? raw[key] : undefined;
    out[key] = typeof v === 'number' && v >= 0 ? v : spec.default;
  }
  return out as { [K in keyof S]: number };
}

const cloneDefault = (v: unknown): unknown => (Array.isArray(v) ? [...v] : v);
