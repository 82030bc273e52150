// Issue 15: the native TLS engine is the default of `tlsproxy` (flags and YAML, both roles) and of
// `tlsproxy demo`; `engine: node` keeps the node:tls engine. An explicit `engine: native` that
// cannot load is refused at start naming `engine: node`; when no engine was given and the native
// one cannot load, the proxy runs node:tls with one warning line saying why and how to silence it.
// "Cannot load" is real here: TLSPROXY_ENGINE_NATIVE_ADDON (engine-native's loader) pointed at a
// file that does not exist, or, in process, preflight's injectable loader.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultThreads as nativeDefaultThreads } from '@tlsproxy/engine-native';
import { afterAll, describe, expect, it } from 'vitest';
import { parseCli } from '../src/args.js';
import { ConfigError, parseConfig } from '../src/config.js';
import { type Demo, runDemo } from '../src/demo.js';
import { coresPerWorker, decideEngine, defaultThreads } from '../src/engine.js';
import { preflight } from '../src/preflight.js';
import { bin, cli, freePort } from './helpers.js';

const certs = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
const backendJs = fileURLToPath(
  new URL('../../../examples/imap-backend/server.mjs', import.meta.url),
);
const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-issue15-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** engine-native's loader tries only this path: the addon cannot load, as on a machine without it. */
const NO_NATIVE = { TLSPROXY_ENGINE_NATIVE_ADDON: join(dir, 'missing/engine_native.node') };
const cannotLoad = async () => {
  throw new Error('simulated: no engine_native.node');
};

const server = ['--dialect', 'imap', '--backend', 'unix:/x', '--cert', 'c', '--key', 'k'];
const client = ['--role', 'client', '--dialect', 'imap', '--listen', '127.0.0.1:1', '--connect'];

function problems(text: string): string[] {
  try {
    parseConfig(text, 'tlsproxy.yaml');
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

/** One IMAP STARTTLS session with openssl s_client, verified against the test CA. */
function sClient(port: number): string {
  const r = spawnSync(
    'bash',
    [
      '-c',
      `(sleep 1.5; printf 'a LOGIN alice secret\\r\\nb LOGOUT\\r\\n'; sleep 1) | openssl s_client -starttls imap -connect 127.0.0.1:${port} -servername localhost -CAfile ${certs}ca.pem -verify_return_error -crlf -quiet`,
    ],
    { encoding: 'utf8', timeout: 20_000 },
  );
  return r.stdout + r.stderr;
}

async function imapProxy(extra: string[], env: NodeJS.ProcessEnv = {}) {
  const sock = join(dir, `b${Math.random().toString(36).slice(2)}.sock`);
  const backend = spawn(process.execPath, [backendJs, '--path', sock, '--quiet'], {
    stdio: 'ignore',
  });
  const port = await freePort();
  const proxy = cli(
    [
      ...['--dialect', 'imap', '--listen', `127.0.0.1:${port}`, '--backend', `unix:${sock}`],
      ...['--cert', `${certs}server.pem`, '--key', `${certs}server.key`, '--hostname', 'h.test'],
      ...extra,
    ],
    env,
  );
  return {
    port,
    proxy,
    async stop() {
      await proxy.stop();
      backend.kill();
    },
  };
}

const warnings = (log: string) => log.split('\n').filter((l) => /\bwarn\b|"level":"warn"/.test(l));

describe('issue 15: the engine a proxy runs', () => {
  it('flags: no --engine means the default (native); node and native as given', () => {
    expect((parseCli(server) as { engine?: string }).engine).toBeUndefined();
    expect((parseCli([...server, '--engine', 'node']) as { engine?: string }).engine).toBe('node');
    expect((parseCli([...server, '--engine', 'native']) as { engine?: string }).engine).toBe(
      'native',
    );
    // The client role takes --engine too (it was parsed and then dropped: always node:tls).
    expect((parseCli([...client, 'h:143']) as { engine?: string }).engine).toBeUndefined();
    expect(
      (parseCli([...client, 'h:143', '--engine', 'native']) as { engine?: string }).engine,
    ).toBe('native');
    expect(() => parseCli([...client, 'h:143', '--engine', 'rust'])).toThrow(/node or native/);
  });

  it('decideEngine: the default is native where it loads, node:tls with the reason where not', async () => {
    expect(await decideEngine(undefined, async () => {})).toEqual({ kind: 'native' });
    const fallback = await decideEngine(undefined, cannotLoad);
    expect(fallback.kind).toBe('node');
    expect(fallback.fallback).toMatch(/simulated: no engine_native\.node/);
    // What was asked for is not second-guessed (preflight refuses a native that cannot load).
    expect(await decideEngine('node', cannotLoad)).toEqual({ kind: 'node' });
    expect(await decideEngine('native', cannotLoad)).toEqual({ kind: 'native' });
  });

  it('--engine-threads goes with the default and with native, not with node or a daemon', () => {
    expect(parseCli([...server, '--engine-threads', '2'])).toMatchObject({ engineThreads: 2 });
    expect(parseCli([...server, '--engine', 'native', '--engine-threads', '2'])).toMatchObject({
      engineThreads: 2,
    });
    expect(() => parseCli([...server, '--engine', 'node', '--engine-threads', '2'])).toThrow(
      /--engine-threads.*native engine|--engine node/,
    );
    const pool = ['--dialect', 'imap', '--backend', 'unix:/x', '--pool-socket', '/run/pool.sock'];
    expect(parseCli(pool)).toMatchObject({ poolSocket: '/run/pool.sock' });
    expect(() => parseCli([...pool, '--engine-threads', '2'])).toThrow(/daemon/);
    expect(() => parseCli([...pool, '--engine', 'native'])).toThrow(/daemon/);
    expect(parseCli([...client, 'h:143', '--engine-threads', '2'])).toMatchObject({
      engineThreads: 2,
    });
    expect(() =>
      parseCli([...client, 'h:143', '--engine', 'node', '--engine-threads', '2']),
    ).toThrow(/--engine node/);
  });

  it('YAML: engineThreads goes with the default; refused with engine: node and with pool.socket', () => {
    const id = `identities: [{ cert: ${certs}server.pem, key: ${certs}server.key }]`;
    const l = 'listeners: [{ dialect: imap, listen: 143, backend: unix:/x }]';
    const ok = parseConfig(`${id}\n${l}\nengineThreads: 2\n`, 'c.yaml');
    expect(ok.engine).toBeUndefined();
    expect(ok.engineThreads).toBe(2);
    expect(parseConfig(`${id}\n${l}\nengine: node\n`, 'c.yaml').engine).toBe('node');
    expect(problems(`${id}\n${l}\nengine: node\nengineThreads: 2\n`)).toEqual([
      expect.stringMatching(/engineThreads .*engine: node|engine: node.*engineThreads/),
    ]);
    // A daemon runs its own engine: the embedded default does not make these configs fail.
    const pool = `pool: { socket: /run/tlspool.sock }\n${l}\n`;
    expect(problems(pool)).toEqual([]);
    expect(problems(`${pool}engineThreads: 2\n`)).toEqual([
      expect.stringMatching(/engineThreads.*daemon/),
    ]);
  });

  it('preflight: an explicit native that cannot load is refused naming engine: node; the default is not', async () => {
    const refused = await preflight({ listeners: [], engine: 'native', loadNative: cannotLoad });
    expect(refused).toEqual([expect.stringMatching(/engine: native cannot load.*engine: node/)]);
    expect(await preflight({ listeners: [], loadNative: cannotLoad })).toEqual([]);
    expect(await preflight({ listeners: [], engine: 'node', loadNative: cannotLoad })).toEqual([]);
  });

  it("engine threads per worker: engine-native's default on the worker's share of the cores", async () => {
    expect(coresPerWorker(1, 8)).toBe(8);
    expect(coresPerWorker(2, 8)).toBe(4);
    expect(coresPerWorker(3, 8)).toBe(2);
    expect(coresPerWorker(8, 8)).toBe(1);
    expect(coresPerWorker(16, 8)).toBe(1);
    // engine-native: cores − 1, at least 1 (the JS thread needs a core) — per worker here.
    expect(await defaultThreads(1, 8)).toBe(7);
    expect(await defaultThreads(2, 8)).toBe(3);
    expect(await defaultThreads(8, 8)).toBe(1);
    expect(await defaultThreads(16, 8)).toBe(1);
    expect(await defaultThreads(1)).toBe(nativeDefaultThreads(availableParallelism()));
  });
});

describe('issue 15: the tlsproxy command', () => {
  it('flags, no --engine: a real STARTTLS session on the native engine, said at start', async () => {
    const p = await imapProxy(['--workers', '1']);
    try {
      await p.proxy.waitFor(/listening/);
      expect(p.proxy.log).toMatch(/TLS engine.*engine=native/);
      expect(warnings(p.proxy.log)).toEqual([]);
      const out = sClient(p.port);
      expect(out, p.proxy.log).toMatch(/^a OK/m);
      expect(out).toMatch(/TLSv1\.3/);
    } finally {
      await p.stop();
    }
  }, 40_000);

  it('flags, no --engine, native cannot load: node:tls serves, with one warning naming --engine node', async () => {
    const p = await imapProxy(['--workers', '2'], NO_NATIVE);
    try {
      await p.proxy.waitFor(/listening[\s\S]*listening/);
      const w = warnings(p.proxy.log);
      expect(w, p.proxy.log).toHaveLength(1);
      expect(w[0]).toMatch(/native.*cannot load/);
      expect(w[0]).toMatch(/--engine node/);
      expect(p.proxy.log).toMatch(/TLS engine.*engine=node/);
      expect(p.proxy.log).not.toMatch(/engine=native/);
      expect(sClient(p.port), p.proxy.log).toMatch(/^a OK/m);
    } finally {
      await p.stop();
    }
  }, 40_000);

  it('flags, --engine native that cannot load: refused at start naming --engine node / engine: node', async () => {
    const p = await imapProxy(['--workers', '1', '--engine', 'native'], NO_NATIVE);
    try {
      expect(await p.proxy.exited).toBe(1);
      expect(p.proxy.log).toMatch(/cannot start: engine: native cannot load.*engine: node/s);
      expect(p.proxy.log).not.toMatch(/listening/);
    } finally {
      await p.stop();
    }
  }, 30_000);

  it('flags, --engine node: the node:tls engine, no warning even where native cannot load', async () => {
    const p = await imapProxy(['--workers', '1', '--engine', 'node'], NO_NATIVE);
    try {
      await p.proxy.waitFor(/listening/);
      expect(p.proxy.log).toMatch(/TLS engine.*engine=node/);
      expect(warnings(p.proxy.log)).toEqual([]);
      expect(sClient(p.port), p.proxy.log).toMatch(/^a OK/m);
    } finally {
      await p.stop();
    }
  }, 40_000);

  it('workers: each worker runs the native default with its share of the cores as threads', async () => {
    const p = await imapProxy(['--workers', '2']);
    try {
      await p.proxy.waitFor(/listening[\s\S]*listening/);
      const lines = p.proxy.log.split('\n').filter((l) => /TLS engine/.test(l));
      expect(lines, p.proxy.log).toHaveLength(2);
      const each = nativeDefaultThreads(Math.max(1, Math.floor(availableParallelism() / 2)));
      for (const l of lines) expect(l).toMatch(new RegExp(`engine=native threads=${each}\\b`));
    } finally {
      await p.stop();
    }
  }, 40_000);

  it('--role client, no --engine: the native engine', async () => {
    const port = await freePort();
    const p = cli([...client.slice(0, 5), `127.0.0.1:${port}`, '--connect', '127.0.0.1:1']);
    try {
      await p.waitFor(/listening/);
      expect(p.log).toMatch(/TLS engine.*engine=native/);
    } finally {
      await p.stop();
    }
  }, 30_000);

  it('YAML: the default with a fallback warning, and check-config says which engine runs', async () => {
    const port = await freePort();
    const f = join(dir, 'default.yaml');
    writeFileSync(
      f,
      `identities: [{ cert: ${certs}server.pem, key: ${certs}server.key }]
listeners: [{ dialect: imap, listen: 127.0.0.1:${port}, backend: unix:/x }]
logging: { format: text }
workers: 1
engineThreads: 1
`,
    );
    const check = spawnSync(process.execPath, [bin, 'check-config', f], { encoding: 'utf8' });
    expect(check.status, check.stderr).toBe(0);
    expect(check.stdout).toMatch(/^engine: native \(default\), 1 thread/m);
    const checkNo = spawnSync(process.execPath, [bin, 'check-config', f], {
      encoding: 'utf8',
      env: { ...process.env, ...NO_NATIVE },
    });
    expect(checkNo.stdout).toMatch(/^engine: node \(the default, native, cannot load here/m);
    const p = cli(['--config', f], NO_NATIVE);
    try {
      await p.waitFor(/listening/);
      const w = warnings(p.log);
      expect(w, p.log).toHaveLength(1);
      expect(w[0]).toMatch(/--engine node|engine: node/);
      expect(p.log).toMatch(/TLS engine.*engine=node/);
    } finally {
      await p.stop();
    }
    // An explicit native that cannot load: check-config says so and exits 1, as the start would.
    const explicit = join(dir, 'explicit.yaml');
    writeFileSync(
      explicit,
      `identities: [{ cert: ${certs}server.pem, key: ${certs}server.key }]\nlisteners: [{ dialect: imap, listen: 143, backend: unix:/x }]\nengine: native\n`,
    );
    const checkExplicit = spawnSync(process.execPath, [bin, 'check-config', explicit], {
      encoding: 'utf8',
      env: { ...process.env, ...NO_NATIVE },
    });
    expect(checkExplicit.status).toBe(1);
    expect(checkExplicit.stdout).toMatch(/^engine: native \(cannot load here/m);
    expect(checkExplicit.stderr).toMatch(/engine: native cannot load here.*engine: node/);
    const pool = join(dir, 'pool.yaml');
    writeFileSync(
      pool,
      `pool: { socket: /run/tlspool.sock }\nlisteners: [{ dialect: imap, listen: 143, backend: unix:/x }]\n`,
    );
    const checkPool = spawnSync(process.execPath, [bin, 'check-config', pool], {
      encoding: 'utf8',
    });
    expect(checkPool.status, checkPool.stderr).toBe(0);
    expect(checkPool.stdout).toMatch(/^engine: the tlspool daemon at \/run\/tlspool\.sock/m);
  }, 40_000);
});

describe('issue 15: tlsproxy demo', () => {
  async function demo(engine?: 'node' | 'native'): Promise<{ d: Demo; base: number }> {
    for (let attempt = 0; ; attempt++) {
      const base = 20000 + Math.floor(Math.random() * 20000);
      try {
        return {
          d: await runDemo({ portBase: base, log: () => {}, ...(engine ? { engine } : {}) }),
          base,
        };
      } catch (err) {
        if (attempt >= 4 || !/already in use/.test((err as Error).message)) throw err;
      }
    }
  }

  it('runs on the native engine by default and says so; engine node when asked', async () => {
    const a = await demo();
    try {
      expect(a.d.lines.find((l) => l.startsWith('tlsproxy demo:'))).toMatch(/native TLS engine/);
    } finally {
      await a.d.stop();
    }
    const b = await demo('node');
    try {
      expect(b.d.lines.find((l) => l.startsWith('tlsproxy demo:'))).toMatch(/node:tls engine/);
    } finally {
      await b.d.stop();
    }
  }, 60_000);

  it('the demo where native cannot load: node:tls with a warning; --engine native refused', async () => {
    // a random base; on the rare port clash (ephemeral ports live up there too) try another
    let p = cli(
      ['demo', '--port-base', String(20000 + Math.floor(Math.random() * 20000))],
      NO_NATIVE,
    );
    for (let attempt = 0; attempt < 4; attempt++) {
      const code = await Promise.race([p.exited, p.waitFor(/Ctrl-C stops/, 30_000)]);
      if (code === undefined || !/already in use/.test(p.log)) break;
      p = cli(
        ['demo', '--port-base', String(20000 + Math.floor(Math.random() * 20000))],
        NO_NATIVE,
      );
    }
    try {
      await p.waitFor(/Ctrl-C stops/, 30_000);
      expect(p.log).toMatch(/^tlsproxy demo: the node:tls engine/m);
      const w = p.log.split('\n').filter((l) => /warning/.test(l));
      expect(w, p.log).toHaveLength(1);
      expect(w[0]).toMatch(/native TLS engine.*cannot load.*--engine node/);
      expect(p.log).toMatch(/TLS engine engine=node/);
    } finally {
      await p.stop();
    }
    const refused = spawnSync(process.execPath, [bin, 'demo', '--engine', 'native'], {
      encoding: 'utf8',
      env: { ...process.env, ...NO_NATIVE },
    });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/--engine native cannot load.*--engine node/s);
  }, 60_000);

  it('tlsproxy demo --engine node|native; anything else is a usage error', () => {
    const help = spawnSync(process.execPath, [bin, 'demo', '--help'], { encoding: 'utf8' });
    expect(help.stdout).toMatch(/--engine node\|native/);
    const bad = spawnSync(process.execPath, [bin, 'demo', '--engine', 'rust'], {
      encoding: 'utf8',
    });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--engine must be node or native/);
  });
});
