// Find a dialect at run time without the engine (the conformance suite loads one with no core
// installed). Every form a user would try works, and a failure says what was tried and why each
// failed (not found / not a dialect / threw on import):
//
//   - a path: a module file ('./my-dialect.js', '/abs/x.mjs') or a package folder ('.',
//     './my-dialect', '../x') through its package.json `exports` / `main`;
//   - a bare file name in the current folder ('my-dialect.js');
//   - a package name as given ('tlsproxy-dialect-sieve', '@acme/dialect-x'), then, for a short
//     name ('imap'), the built-in shorthand @tlsproxy/dialect-NAME.
//
// Packages are looked up beside the kit first, then from the user's folder (`from`). The module's
// default export (or named `dialect`) is shape-checked.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Dialect } from './contract.js';
import { type DialectDefinitionCode, defineDialect } from './define.js';
import { TlsproxyError } from './errors.js';

/** One place a dialect may be: what to import and how to name it in an error. */
interface Candidate {
  label: string;
  /** A file URL, or a package specifier. */
  target: string;
  /** Suggest `npm install` when it is missing (only for packages that exist: the built-ins). */
  install?: string;
}

/** Why one candidate failed; `found` means it was there but is broken (stop looking). */
interface Miss {
  label: string;
  why: string;
  found: boolean;
  cause?: unknown;
}

const SHORT_NAME = /^[a-z][a-z0-9-]*$/;
/** The dialects published as @tlsproxy/dialect-NAME: only these get an `npm install` hint. */
const BUILT_INS = new Set(['imap', 'pop3', 'smtp', 'ldap', 'xmpp', 'http-upgrade']);

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** A package folder's entry: `exports` ('.' → import/default) or `main`, else index.js. */
function folderEntry(dir: string): string | { why: string } {
  const pj = join(dir, 'package.json');
  if (!existsSync(pj)) {
    const index = join(dir, 'index.js');
    return existsSync(index) ? index : { why: `no package.json and no index.js in ${dir}` };
  }
  let pkg: { exports?: unknown; main?: unknown };
  try {
    pkg = JSON.parse(readFileSync(pj, 'utf8')) as typeof pkg;
  } catch (err) {
    return { why: `${pj} is not JSON: ${(err as Error).message}` };
  }
  const pick = (e: unknown): string | undefined => {
    if (typeof e === 'string') return e;
    if (typeof e !== 'object' || e === null || Array.isArray(e)) return undefined;
    const o = e as Record<string, unknown>;
    if (Object.hasOwn(o, '.')) return pick(o['.']);
    for (const k of ['import', 'node', 'default']) if (Object.hasOwn(o, k)) return pick(o[k]);
    return undefined;
  };
  const entry = pick(pkg.exports) ?? (typeof pkg.main === 'string' ? pkg.main : 'index.js');
  const file = resolve(dir, entry);
  return existsSync(file) ? file : { why: `its entry ${entry} (package.json) does not exist` };
}

function candidates(spec: string, from: string): Candidate[] | Miss {
  const asPath = resolve(from, spec);
  const looksLikePath = spec.startsWith('.') || isAbsolute(spec) || spec.includes('\\');
  if (looksLikePath || isFile(asPath) || (isDir(asPath) && !SHORT_NAME.test(spec))) {
    if (isDir(asPath)) {
      const entry = folderEntry(asPath);
      if (typeof entry !== 'string')
        return { label: `folder ${asPath}`, why: entry.why, found: true };
      return [{ label: `folder ${asPath} (${entry})`, target: pathToFileURL(entry).href }];
    }
    if (isFile(asPath)) return [{ label: `file ${asPath}`, target: pathToFileURL(asPath).href }];
    return { label: `path ${asPath}`, why: 'not found', found: false };
  }
  const out: Candidate[] = [{ label: `package ${spec}`, target: spec }];
  if (SHORT_NAME.test(spec)) {
    const builtIn = `@tlsproxy/dialect-${spec}`;
    out.push({
      label: `package ${builtIn}`,
      target: builtIn,
      ...(BUILT_INS.has(spec) ? { install: builtIn } : {}),
    });
  }
  return out;
}

function notFound(err: unknown, target: string): boolean {
  const e = err as NodeJS.ErrnoException;
  if (e?.code !== 'ERR_MODULE_NOT_FOUND' && e?.code !== 'MODULE_NOT_FOUND') return false;
  // Only the dialect itself missing counts: a dialect whose own import is missing is broken.
  const m = String(e.message);
  if (target.startsWith('file:')) return false;
  return m.includes(`'${target}'`) || m.includes(`"${target}"`);
}

/** Import from beside the kit first, then from the user's project (where they installed it). */
async function importFrom(target: string, from: string): Promise<unknown> {
  try {
    return await import(target);
  } catch (err) {
    if (target.startsWith('file:') || !notFound(err, target)) throw err;
    let resolved: string;
    try {
      resolved = createRequire(resolve(from, 'package.json')).resolve(target);
    } catch {
      throw err;
    }
    return import(pathToFileURL(resolved).href);
  }
}

async function tryCandidate(c: Candidate, from: string): Promise<{ dialect: Dialect } | Miss> {
  let mod: Record<string, unknown>;
  try {
    mod = (await importFrom(c.target, from)) as Record<string, unknown>;
  } catch (err) {
    if (notFound(err, c.target)) return { label: c.label, why: 'not installed', found: false };
    const msg = String((err as Error)?.message ?? err).split('\n')[0];
    return { label: c.label, why: `threw on import: ${msg}`, found: true, cause: err };
  }
  const candidate = (mod.default ?? mod.dialect) as Dialect | undefined;
  if (candidate === undefined)
    return {
      label: c.label,
      why: 'not a dialect: no default export and no named "dialect"',
      found: false,
    };
  try {
    return { dialect: defineDialect(candidate) };
  } catch (err) {
    return {
      label: c.label,
      why: `not a dialect: ${(err as Error).message}`,
      found: false,
      cause: err,
    };
  }
}

export async function loadDialect(
  spec: string | Dialect,
  from: string = process.cwd(),
): Promise<Dialect> {
  if (typeof spec !== 'string') return defineDialect(spec);
  const list = candidates(spec, from);
  const misses: Miss[] = [];
  if (!Array.isArray(list)) misses.push(list);
  else {
    for (const c of list) {
      const r = await tryCandidate(c, from);
      if ('dialect' in r) return r.dialect;
      misses.push(r);
      // Found but broken: what it says is the answer; the shorthand would only confuse.
      if (r.found) break;
    }
  }
  const install = Array.isArray(list)
    ? list.find(
        (c) => c.install && misses.some((m) => m.label === c.label && m.why === 'not installed'),
      )
    : undefined;
  const onlyMissing = misses.every((m) => m.why === 'not installed' || m.why === 'not found');
  // One line (start-up checks print the first line of an error): every place tried, and why.
  const tried = misses.map((m) => `${m.label} (${m.why})`).join('; ');
  const hint =
    onlyMissing && install ? `; for the built-in dialect run: npm install ${install.install}` : '';
  const shape =
    misses.some((m) => m.why.startsWith('not a dialect')) && !misses.some((m) => m.found);
  throw new TlsproxyError<DialectDefinitionCode>(
    shape ? 'TLSPROXY_ERR_DIALECT_SHAPE' : 'TLSPROXY_ERR_DIALECT_NOT_FOUND',
    `dialect "${spec}" could not be loaded: tried ${tried}${hint}`,
    { cause: misses.find((m) => m.cause)?.cause },
  );
}
