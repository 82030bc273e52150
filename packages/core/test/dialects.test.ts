import { describe, expect, it } from 'vitest';
import { defineDialect, dialectProblems, loadDialect, resolveOptions } from '../src/index.js';

describe('dialect plugins', () => {
  it('loads a dialect by short name at run time', async () => {
    const d = await loadDialect('imap');
    expect(d.name).toBe('imap');
    expect(d.defaultPorts.starttls).toBe(143);
  });

  it('names the package to install only for a built-in dialect', async () => {
    await expect(loadDialect('nntp')).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_DIALECT_NOT_FOUND',
      message: expect.not.stringContaining('npm install'),
    });
    await expect(loadDialect('./no/such/dialect.js')).rejects.toThrow(/not found/);
  });

  it('says what is missing from a malformed plugin', () => {
    expect(dialectProblems({ name: 'X', defaultPorts: { starttls: 70000 } })).toEqual([
      'name must be a lowercase string like "imap"',
      'create(context) must be a function',
      'defaultPorts.starttls must be a port number',
      'options must be an object of { type, default, description }',
      'limits must be an object of { default, description }',
    ]);
    expect(() => defineDialect({} as never)).toThrow(/is not a valid tlsproxy dialect/);
  });

  it('validates options against the dialect declaration', async () => {
    const d = await loadDialect('imap');
    expect(() => resolveOptions(d, { nope: 1 })).toThrow(/unknown option "nope"/);
    expect(() => resolveOptions(d, { greeting: 5 })).toThrow(/greeting/);
  });
});
