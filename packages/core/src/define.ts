import type { Dialect, OptionSpec } from './dialect.js';
import { CoreError } from './errors.js';

/**
 * Check a plugin's shape once, at load time, and say exactly what is missing (changesets'
 * pattern): a third-party dialect fails here with a readable message, not deep in a session.
 */
export function defineDialect<O = Record<string, unknown>>(dialect: Dialect<O>): Dialect<O> {
  const problems = dialectProblems(dialect);
  if (problems.length > 0) {
    const name = typeof (dialect as { name?: unknown })?.name === 'string' ? dialect.name : '?';
    throw new CoreError(
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
    for (const [k, spec] of Object.entries(d.limits as Record<string, { default?: unknown }>)) {
      if (!spec || typeof spec.default !== 'number' || !(spec.default >= 0)) {
        out.push(`limits.${k}.default must be a non-negative number`);
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

/** Merge user options over the dialect's defaults; unknown keys and bad types are errors. */
export function resolveOptions<O>(dialect: Dialect<O>, raw: Record<string, unknown> = {}): O {
  const out: Record<string, unknown> = {};
  const errors: string[] = [];
  for (const key of Object.keys(raw)) {
    if (!Object.hasOwn(dialect.options, key)) errors.push(`unknown option "${key}"`);
  }
  for (const [key, spec] of Object.entries(dialect.options)) {
    const value = Object.hasOwn(raw, key) ? raw[key] : spec.default;
    const bad = typeCheck(spec.type, value) ?? spec.validate?.(value);
    if (bad) errors.push(`option "${key}": ${bad}`);
    out[key] = value;
  }
  if (errors.length > 0) {
    throw new CoreError(
      'TLSPROXY_ERR_DIALECT_OPTIONS',
      `dialect "${dialect.name}": ${errors.join('; ')}`,
    );
  }
  return out as O;
}

/** Merge user limits over the dialect's defaults; unknown names and negatives are errors. */
export function resolveLimits(
  dialect: Dialect<unknown>,
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
    throw new CoreError(
      'TLSPROXY_ERR_DIALECT_OPTIONS',
      `dialect "${dialect.name}": ${errors.join('; ')}`,
    );
  }
  return Object.freeze(out);
}
