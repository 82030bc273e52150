// The docs that list things declared in code stay in step with the code: every error code thrown
// anywhere in the repo is in docs/errors.md (codes only ever get added; the page is the one list),
// and docs/limits.md is generated from the limit declarations (it reads the built packages).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');

function* files(dir: string): Generator<string> {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* files(p);
    else yield p;
  }
}

/** Every `TLSPROXY_ERR_…` string in the packages' and dialects' sources, with where it is. */
function codesInSources(): Map<string, string> {
  const found = new Map<string, string>();
  for (const top of ['packages', 'protocols']) {
    for (const pkg of readdirSync(join(ROOT, top))) {
      const src = join(ROOT, top, pkg, 'src');
      try {
        if (!statSync(src).isDirectory()) continue;
      } catch {
        continue;
      }
      for (const f of files(src)) {
        for (const m of readFileSync(f, 'utf8').matchAll(/TLSPROXY_ERR_[A-Z0-9_]+/g)) {
          // A prefix ('TLSPROXY_ERR_IMAP_') names a family for isErrorWithPrefix, not a code.
          if (m[0].endsWith('_')) continue;
          if (!found.has(m[0])) found.set(m[0], f.slice(ROOT.length + 1));
        }
      }
    }
  }
  return found;
}

describe('docs/limits.md', () => {
  it('is what scripts/gen-limits.mjs writes from the declarations (else: npm run docs:limits)', async () => {
    const script = join(ROOT, 'scripts/gen-limits.mjs');
    const { render } = (await import(script)) as { render(): Promise<string> };
    const current = readFileSync(join(ROOT, 'docs/limits.md'), 'utf8');
    expect(current === (await render()), 'docs/limits.md is stale: run  npm run docs:limits').toBe(
      true,
    );
  });
});

describe('docs/errors.md', () => {
  it('lists every error code the sources use', () => {
    const doc = readFileSync(join(ROOT, 'docs/errors.md'), 'utf8');
    const listed = new Set(
      [...doc.matchAll(/^\| `(TLSPROXY_ERR_[A-Z0-9_]+)` \|/gm)].map((m) => m[1]),
    );
    const codes = codesInSources();
    expect(codes.size).toBeGreaterThan(50);
    const missing = [...codes].filter(([c]) => !listed.has(c)).map(([c, f]) => `${c} (${f})`);
    expect(missing, 'add these codes to docs/errors.md (code, package, meaning)').toEqual([]);
  });
});
