// The transcripts a dialect package ships are found without --transcripts: the folder its
// package.json declares ("tlsproxy": { "transcripts": DIR }), else its transcripts/ folder.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageTranscriptDir } from '../src/runner.js';

function pkg(json: Record<string, unknown>, dirs: string[]): string {
  const root = mkdtempSync(join(tmpdir(), 'conf-pkg-'));
  writeFileSync(join(root, 'package.json'), JSON.stringify({ name: 'x', ...json }));
  for (const d of dirs) mkdirSync(join(root, d), { recursive: true });
  return root;
}

describe('transcripts shipped by a dialect package', () => {
  it('uses the folder the package declares', () => {
    const root = pkg({ tlsproxy: { transcripts: 'recorded' } }, ['recorded', 'transcripts']);
    expect(packageTranscriptDir(root, '/')).toBe(join(root, 'recorded'));
  });
  it('a module file inside a package (--dialect ./src/my-dialect.mjs): the nearest package.json', () => {
    const root = pkg({ tlsproxy: { transcripts: 'recorded' } }, ['recorded', 'src']);
    writeFileSync(join(root, 'src', 'my-dialect.mjs'), 'export default {};\n');
    expect(packageTranscriptDir('./src/my-dialect.mjs', root)).toBe(join(root, 'recorded'));
    expect(packageTranscriptDir('my-dialect.mjs', join(root, 'src'))).toBe(join(root, 'recorded'));
  });
  it('falls back to transcripts/', () => {
    const root = pkg({}, ['transcripts']);
    expect(packageTranscriptDir(root, '/')).toBe(join(root, 'transcripts'));
  });
  it('finds nothing when there is nothing', () => {
    expect(packageTranscriptDir(pkg({}, []), '/')).toBeUndefined();
    expect(packageTranscriptDir('no-such-package-anywhere', '/')).toBeUndefined();
  });
  it('finds an installed package by name, and a built-in dialect by its short name', () => {
    // An installed copy (under node_modules) uses what the package ships.
    const root = mkdtempSync(join(tmpdir(), 'conf-app-'));
    const pkgDir = join(root, 'node_modules', '@tlsproxy', 'dialect-demo');
    mkdirSync(join(pkgDir, 'transcripts'), { recursive: true });
    writeFileSync(
      join(pkgDir, 'package.json'),
      JSON.stringify({ name: '@tlsproxy/dialect-demo', tlsproxy: { transcripts: 'transcripts' } }),
    );
    expect(packageTranscriptDir('@tlsproxy/dialect-demo', root)).toBe(join(pkgDir, 'transcripts'));
    // `--dialect demo` is the built-in shorthand for @tlsproxy/dialect-demo, as the loader has it.
    expect(packageTranscriptDir('demo', root, 'demo')).toBe(join(pkgDir, 'transcripts'));
  });

  it("a workspace package takes its checkout's fixtures, not a stale packed copy", () => {
    const repo = join(import.meta.dirname, '../../..');
    // protocols/imap/transcripts/ is what `npm pack` copies there (and leaves behind).
    expect(packageTranscriptDir('@tlsproxy/dialect-imap', repo, 'imap')).toBe(
      join(repo, 'fixtures/transcripts/imap'),
    );
    expect(packageTranscriptDir('imap', repo, 'imap')).toBe(
      join(repo, 'fixtures/transcripts/imap'),
    );
  });
});
