// Issue 14: every path in src/fdpass.c (and streams.c) that can fail after a descriptor (or a uv handle) was
// acquired must give it back. N-API calls do not fail on demand, so this builds the addon once
// more with test/fixtures/fault-inject.h force-included (the named N-API calls then fail while
// $FDPASS_FAULT names them) and runs each case in its own child: a crash is a failure too.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fixture } from './helpers.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const headers = resolve(dirname(process.execPath), '../include/node');
const cc = process.env.CC ?? 'cc';
const haveCompiler =
  existsSync(join(headers, 'node_api.h')) && spawnSync(cc, ['--version']).status === 0;

let dir: string;
let addon: string;
beforeAll(() => {
  if (!haveCompiler) return;
  dir = mkdtempSync(join(tmpdir(), 'fdpass-fault-'));
  addon = join(dir, 'fdpass-fault.node');
  const r = spawnSync(
    cc,
    [
      '-shared',
      '-fPIC',
      '-std=gnu11',
      '-O1',
      '-Wall',
      '-DNAPI_VERSION=8',
      '-D_GNU_SOURCE',
      '-DNODE_GYP_MODULE_NAME=fdpass_fault',
      `-I${headers}`,
      '-include',
      fixture('fault-inject.h'),
      join(root, 'src/fdpass.c'),
      join(root, 'src/streams.c'),
      '-o',
      addon,
    ],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`fault build failed:\n${r.stderr}`);
}, 60_000);
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const cases: Array<[string, string]> = [
  ['recv', 'napi_create_object'],
  ['recv', 'napi_create_array'],
  ['recv', 'napi_set_element'],
  ['recv', 'napi_create_int64'],
  ['recv', 'napi_create_buffer_copy'],
  ['socketpair', 'napi_create_array_with_length'],
  ['socketpair', 'napi_set_element'],
  ['socketpair', 'napi_create_int64'],
  ['listen', 'napi_create_int64'],
  ['connect', 'napi_create_int64'],
  ['accept', 'napi_create_int64'],
  ['dup', 'napi_create_int64'],
  ['pollCreate', 'napi_create_reference'],
  ['pollCreate', 'napi_async_init'],
  ['pollCreate', 'napi_create_object'],
  ['pollCreate', 'napi_wrap'],
  ['streamsCreate', 'napi_create_reference'],
  ['streamsCreate', 'napi_async_init'],
  ['streamsCreate', 'napi_create_object'],
  ['streamsCreate', 'napi_wrap'],
];

describe.skipIf(!haveCompiler)('native error paths after a resource was acquired', () => {
  it.each(cases)('%s with %s failing: throws, nothing leaks', (which, fault) => {
    const r = spawnSync(process.execPath, [fixture('fault-child.mjs'), addon, which, fault], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toMatchObject({
      status: 0,
      signal: null,
    });
    const got = JSON.parse(r.stdout.trim()) as { threw: boolean; leaked: number };
    expect(got).toMatchObject({ threw: true, leaked: 0 });
  });
});
