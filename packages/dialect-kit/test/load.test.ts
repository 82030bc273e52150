// Issue 17, item 1: every form a user would try loads a dialect — a package folder ('.',
// './x', '../x') through its package.json, a bare file name in the current folder, an unscoped
// or scoped package by its own name — and a failure says, on one line, what was tried and why,
// suggesting `npm install` only for a package that exists (the built-in dialects).
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadDialect } from '../src/load.js';

const dialectSource = (name: string) => `export default {
  name: '${name}', defaultPorts: {}, options: {}, limits: {},
  create: () => ({ start: () => [], receive: () => [], timer: () => [], tlsUnavailable: () => [] }),
};\n`;

function project(): string {
  const root = mkdtempSync(join(tmpdir(), 'kit-load-'));
  writeFileSync(join(root, 'package.json'), '{"name":"app","type":"module"}');
  // a dialect package folder with exports
  mkdirSync(join(root, 'my-dialect', 'lib'), { recursive: true });
  writeFileSync(
    join(root, 'my-dialect', 'package.json'),
    JSON.stringify({ name: 'my-dialect', type: 'module', exports: { '.': './lib/main.js' } }),
  );
  writeFileSync(join(root, 'my-dialect', 'lib', 'main.js'), dialectSource('folder'));
  // a bare file in the folder
  writeFileSync(join(root, 'sieve.js'), dialectSource('file'));
  // an unscoped and a scoped package installed in the project
  for (const [dir, name] of [
    ['tlsproxy-dialect-sieve', 'unscoped'],
    ['@acme/dialect-x', 'scoped'],
  ] as const) {
    const p = join(root, 'node_modules', dir);
    mkdirSync(p, { recursive: true });
    writeFileSync(
      join(p, 'package.json'),
      JSON.stringify({ name: dir, type: 'module', main: 'i.js' }),
    );
    writeFileSync(join(p, 'i.js'), dialectSource(name));
  }
  // a module that is not a dialect, and one that throws
  writeFileSync(join(root, 'nothing.js'), 'export const x = 1;\n');
  writeFileSync(join(root, 'throws.js'), "throw new Error('boom at import');\n");
  return root;
}

describe('loadDialect: every form', () => {
  const root = project();
  it('a package folder by path, with its exports', async () => {
    expect((await loadDialect('./my-dialect', root)).name).toBe('folder');
    expect((await loadDialect('.', join(root, 'my-dialect'))).name).toBe('folder');
    expect((await loadDialect('../my-dialect', join(root, 'node_modules'))).name).toBe('folder');
  });
  it('a bare file name in the current folder', async () => {
    expect((await loadDialect('sieve.js', root)).name).toBe('file');
  });
  it('an unscoped and a scoped package by their own names', async () => {
    expect((await loadDialect('tlsproxy-dialect-sieve', root)).name).toBe('unscoped');
    expect((await loadDialect('@acme/dialect-x', root)).name).toBe('scoped');
  });
  it('a failure names every place tried and why, on one line, without inventing packages', async () => {
    const err = await loadDialect('gopher', root).catch((e: Error) => e);
    expect(err).toMatchObject({ code: 'TLSPROXY_ERR_DIALECT_NOT_FOUND' });
    const msg = (err as Error).message;
    expect(msg).toContain('package gopher (not installed)');
    expect(msg).toContain('package @tlsproxy/dialect-gopher (not installed)');
    expect(msg).not.toMatch(/npm install|\n| {2}/);
  });
  it('a built-in short name that is missing suggests its real package', async () => {
    const msg = await loadDialect('imap', mkdtempSync(join(tmpdir(), 'kit-empty-'))).then(
      () => 'loaded (workspace link)',
      (e: Error) => e.message,
    );
    // In this workspace @tlsproxy/dialect-imap may resolve beside the kit; otherwise the hint.
    if (msg !== 'loaded (workspace link)')
      expect(msg).toContain('npm install @tlsproxy/dialect-imap');
  });
  it('not a dialect, and a module that throws, say so', async () => {
    await expect(loadDialect('./nothing.js', root)).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_DIALECT_SHAPE',
      message: expect.stringContaining('not a dialect'),
    });
    await expect(loadDialect('./throws.js', root)).rejects.toThrow(
      /threw on import: boom at import/,
    );
    await expect(loadDialect('./no/such.js', root)).rejects.toThrow(/not found/);
  });
});
