// Find a dialect at run time without the engine (the conformance suite loads one with no core
// installed): a bare name ('imap') means the package @tlsproxy/dialect-imap; a package name or a
// module path works for third-party dialects. The module's default export (or named `dialect`)
// is shape-checked.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Dialect } from './contract.js';
import { type DialectDefinitionCode, defineDialect } from './define.js';
import { TlsproxyError } from './errors.js';

export async function loadDialect(
  spec: string | Dialect,
  from: string = process.cwd(),
): Promise<Dialect> {
  if (typeof spec !== 'string') return defineDialect(spec);
  const isPath = spec.startsWith('.') || isAbsolute(spec);
  const target = isPath
    ? pathToFileURL(resolve(from, spec)).href
    : /^[a-z][a-z0-9-]*$/.test(spec)
      ? `@tlsproxy/dialect-${spec}`
      : spec;
  let mod: Record<string, unknown>;
  try {
    mod = (await importFrom(target, from)) as Record<string, unknown>;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    // "Not installed" only when the dialect itself is missing: a dialect that is there but whose
    // own import is missing would otherwise be reported as absent, and reinstalling it won't help.
    const itself = isPath
      ? !existsSync(resolve(from, spec))
      : String(e.message).includes(`'${target}'`) || String(e.message).includes(`"${target}"`);
    throw new TlsproxyError<DialectDefinitionCode>(
      'TLSPROXY_ERR_DIALECT_NOT_FOUND',
      (e.code === 'ERR_MODULE_NOT_FOUND' || e.code === 'MODULE_NOT_FOUND') && itself
        ? isPath
          ? `dialect module not found: ${spec}`
          : `dialect "${spec}" is not installed: run  npm install ${target}`
        : `dialect ${spec} failed to load: ${e.message}`,
      { cause: err },
    );
  }
  const candidate = (mod.default ?? mod.dialect) as Dialect | undefined;
  if (candidate === undefined) {
    throw new TlsproxyError<DialectDefinitionCode>(
      'TLSPROXY_ERR_DIALECT_SHAPE',
      `${spec} has no default export (or named "dialect") to use as a dialect`,
    );
  }
  return defineDialect(candidate);
}

/** Import from beside the kit first, then from the user's project (where they installed it). */
async function importFrom(target: string, from: string): Promise<unknown> {
  try {
    return await import(target);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (
      target.startsWith('file:') ||
      (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND')
    )
      throw err;
    let resolved: string;
    try {
      resolved = createRequire(resolve(from, 'package.json')).resolve(target);
    } catch {
      throw err;
    }
    return import(pathToFileURL(resolved).href);
  }
}
