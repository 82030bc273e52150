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
  it('falls back to transcripts/', () => {
    const root = pkg({}, ['transcripts']);
    expect(packageTranscriptDir(root, '/')).toBe(join(root, 'transcripts'));
  });
  it('finds nothing when there is nothing', () => {
    expect(packageTranscriptDir(pkg({}, []), '/')).toBeUndefined();
    expect(packageTranscriptDir('no-such-package-anywhere', '/')).toBeUndefined();
  });
  it('finds an installed package by name', () => {
    // dialect-imap is a devDependency here; in the workspace it has no transcripts/ of its own
    // until it is packed, so only check that the lookup by name does not throw.
    expect(() => packageTranscriptDir('@tlsproxy/dialect-imap', process.cwd())).not.toThrow();
  });
});
