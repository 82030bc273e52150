// Core loads dialects with the kit's loader (one copy of the rules: bare names are
// @tlsproxy/dialect-NAME, package names and module paths for third-party dialects, shape-checked),
// plus the built-in `tls` dialect (implicit TLS), which lives in core.
import { loadDialect as loadFromKit } from '@tlsproxy/dialect-kit';
import type { Dialect } from './dialect.js';
import { tlsDialect } from './tls-dialect.js';

/**
 * Find a dialect at run time, so users install only the ones they need: 'tls' is built in; see
 * the kit's `loadDialect` for the rest. Errors are the kit's (`TLSPROXY_ERR_DIALECT_NOT_FOUND`,
 * `TLSPROXY_ERR_DIALECT_SHAPE`).
 */
export async function loadDialect(
  spec: string | Dialect,
  from: string = process.cwd(),
): Promise<Dialect> {
  if (spec === 'tls') return tlsDialect;
  return loadFromKit(spec, from);
}
