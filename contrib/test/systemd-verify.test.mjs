// Checks for contrib/systemd (node:test, no dependencies):
//
//   node --test contrib/test/systemd-verify.test.mjs
//
// 1. `systemd-analyze verify` on copies of the units whose ExecStart= points at this repository's
//    bin scripts (verify insists that the binaries exist); any warning fails the test.
// 2. `systemd-analyze security --offline=yes`: prints the exposure table and holds each service
//    to a ceiling, so a dropped sandboxing line shows up.
// 3. `systemd-sysusers --root=TMP` creates the users from tlsproxy.sysusers.conf in a scratch root.
// 4. The units, tlsproxy.yaml and the daemon flags agree with each other (descriptor name, pool
//    socket path, runtime directory, config path); `tlsproxy check-config` once the CLI has it.
// 5. Socket activation end to end, the way the units run it: systemd-socket-activate passes a
//    listening socket named like FileDescriptorName= to the real tlsproxy (`--listen
//    systemd:NAME`, today's flags: --config is not there yet), which uses a real tlspool daemon
//    and the example IMAP backend; a client does STARTTLS and logs in. As root it also applies
//    the uid model of the units: tlspool and tlsproxy under two different uids, /run/tlspool-like
//    directory 0750 with group tlspool, socket --mode 660, --allow-uid of tlsproxy's uid,
//    tlsproxy with the supplementary group, and tlspool in an empty network namespace
//    (PrivateNetwork=yes).
//
// No running systemd is needed. Tests whose tools are missing are skipped with the reason.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, test } from 'node:test';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const unitsDir = join(repo, 'contrib/systemd');
const bins = {
  '/usr/bin/tlsproxy': join(repo, 'packages/cli/bin/tlsproxy.js'),
  '/usr/bin/tlspool': join(repo, 'packages/pool/bin/tlspool.js'),
};
const units = ['tlsproxy.socket', 'tlsproxy.service', 'tlspool.service'];
// Exposure ceilings for `systemd-analyze security` (0 = best, 10 = worst). At the time of
// writing: tlsproxy 1.6, tlspool 0.7 with systemd 252.
const ceilings = { 'tlsproxy.service': 2.0, 'tlspool.service': 1.0 };

const which = (cmd) => {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
};
const run = (cmd, args, opts = {}) =>
  spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000, ...opts });

const scratch = [];
const tmp = (prefix) => {
  const d = mkdtempSync(join(tmpdir(), prefix));
  scratch.push(d);
  return d;
};
after(() => {
  for (const d of scratch) rmSync(d, { recursive: true, force: true });
});

/** The unit files, with ExecStart= binaries pointing into this repository. */
function unitCopies() {
  const dir = tmp('tlsproxy-units-');
  for (const u of units) {
    let text = readFileSync(join(unitsDir, u), 'utf8');
    for (const [from, to] of Object.entries(bins)) text = text.replaceAll(from, to);
    writeFileSync(join(dir, u), text);
  }
  return dir;
}

/** `Key=value` lines of a unit file (comments and sections dropped), in order. */
function directives(file) {
  const out = [];
  for (const line of readFileSync(join(unitsDir, file), 'utf8').split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) out.push([m[1], m[2]]);
  }
  return out;
}
const directive = (file, key) =>
  directives(file)
    .filter(([k]) => k === key)
    .map(([, v]) => v);

/** A flag's value in tlspool.service's ExecStart= (inside its `sh -c '…'`). */
function poolFlag(name) {
  const exec = directive('tlspool.service', 'ExecStart')[0] ?? '';
  const m = new RegExp(`--${name} "?([^\\s"']+)`).exec(exec);
  return m ? m[1] : null;
}

const analyze = which('systemd-analyze');

test('systemd-analyze verify: the units load without a warning', {
  skip: !analyze && 'systemd-analyze not installed (Debian package systemd)',
}, () => {
  const dir = unitCopies();
  const r = run(analyze, ['verify', '--man=no', ...units.map((u) => join(dir, u))], { cwd: dir });
  const complaints = `${r.stdout}${r.stderr}`.trim();
  assert.equal(r.status, 0, `systemd-analyze verify failed:\n${complaints}`);
  assert.equal(complaints, '', `systemd-analyze verify warned:\n${complaints}`);
});

test('systemd-analyze security --offline: exposure per service', {
  skip: !analyze && 'systemd-analyze not installed',
}, (t) => {
  const dir = unitCopies();
  for (const [unit, ceiling] of Object.entries(ceilings)) {
    const r = run(analyze, ['security', '--offline=yes', '--no-pager', join(dir, unit)], {
      cwd: dir,
    });
    if (r.status !== 0 && /unrecognized option|unknown option/i.test(r.stderr)) {
      t.skip(`this systemd-analyze has no --offline (needs systemd ≥ 250): ${r.stderr.trim()}`);
      return;
    }
    assert.equal(r.status, 0, r.stderr);
    const m = /Overall exposure level for \S+: ([\d.]+) (\S+)/.exec(r.stdout);
    assert.ok(m, `no overall exposure line in:\n${r.stdout}`);
    const flagged = r.stdout.split('\n').filter((l) => l.startsWith('✗'));
    t.diagnostic(`${unit}: exposure ${m[1]} ${m[2]} (ceiling ${ceiling}); not set:`);
    for (const l of flagged) t.diagnostic(`  ${l.replace(/\s{2,}/g, '  ')}`);
    assert.ok(Number(m[1]) <= ceiling, `${unit}: exposure ${m[1]} is above ${ceiling}`);
  }
});

const sysusers = which('systemd-sysusers');
test('tlsproxy.sysusers.conf creates the tlsproxy and tlspool users', {
  skip: !sysusers && 'systemd-sysusers not installed',
}, () => {
  const root = tmp('tlsproxy-sysusers-');
  mkdirSync(join(root, 'etc'));
  for (const f of ['passwd', 'group', 'shadow', 'gshadow']) writeFileSync(join(root, 'etc', f), '');
  const r = run(sysusers, [`--root=${root}`, join(unitsDir, 'tlsproxy.sysusers.conf')]);
  assert.equal(r.status, 0, r.stderr);
  const passwd = readFileSync(join(root, 'etc/passwd'), 'utf8');
  const group = readFileSync(join(root, 'etc/group'), 'utf8');
  for (const name of ['tlsproxy', 'tlspool']) {
    assert.match(passwd, new RegExp(`^${name}:x:\\d+:\\d+:`, 'm'));
    assert.match(group, new RegExp(`^${name}:x:\\d+:`, 'm'));
  }
});

test('units, tlsproxy.yaml and daemon flags agree', async (t) => {
  const names = directive('tlsproxy.socket', 'FileDescriptorName');
  assert.deepEqual(names, ['imap']);
  const exec = directive('tlsproxy.service', 'ExecStart')[0];
  const configPath = /--config (\S+)/.exec(exec)?.[1];
  assert.equal(configPath, '/etc/tlsproxy/tlsproxy.yaml');
  const poolSocket = poolFlag('socket');
  assert.equal(dirname(poolSocket), `/run/${directive('tlspool.service', 'RuntimeDirectory')[0]}`);
  assert.equal(poolFlag('mode'), '660', 'group members (tlsproxy) must be able to connect');
  assert.deepEqual(directive('tlsproxy.service', 'SupplementaryGroups'), [
    directive('tlspool.service', 'Group')[0],
  ]);
  // The key is loaded as a credential, not read from /etc by the daemon.
  const [credName, credPath] = directive('tlspool.service', 'LoadCredential')[0].split(':');
  assert.equal(poolFlag('key'), `%d/${credName}`);
  assert.match(credPath, /^\/etc\/tlsproxy\/private\//);

  const yamlText = readFileSync(join(unitsDir, 'tlsproxy.yaml'), 'utf8');
  let parse;
  try {
    ({ parse } = await import('yaml'));
  } catch {
    t.diagnostic('package "yaml" not resolvable: tlsproxy.yaml not parsed');
  }
  if (parse) {
    const config = parse(yamlText);
    assert.equal(config.pool.socket, poolSocket);
    for (const l of config.listeners) {
      const m = /^systemd:(.+)$/.exec(l.listen);
      if (m) assert.ok(names.includes(m[1]), `listener ${l.listen}: no socket named ${m[1]}`);
    }
    // The key tlspool loads as a credential is one of the configured identities.
    assert.ok(config.identities.some((i) => i.key === credPath && i.cert === poolFlag('cert')));
  }

  // Once the CLI has `check-config`, the example must pass it.
  const help = run(process.execPath, [bins['/usr/bin/tlsproxy'], '--help']);
  if (!/check-config/.test(`${help.stdout}${help.stderr}`)) {
    t.diagnostic('tlsproxy has no check-config yet: schema not checked');
    return;
  }
  const r = run(process.execPath, [
    bins['/usr/bin/tlsproxy'],
    'check-config',
    join(unitsDir, 'tlsproxy.yaml'),
  ]);
  // The certificate paths are under /etc/tlsproxy, which a test machine need not have.
  const missingEtc =
    /ENOENT[^\n]*\/etc\/tlsproxy\/|\/etc\/tlsproxy\/[^\n]*(ENOENT|no such file|not found)/i;
  if (r.status !== 0 && missingEtc.test(`${r.stdout}${r.stderr}`)) {
    t.diagnostic(`check-config stopped at the missing /etc/tlsproxy files: ${r.stderr.trim()}`);
    return;
  }
  assert.equal(
    r.status,
    0,
    `tlsproxy check-config contrib/systemd/tlsproxy.yaml:\n${r.stdout}${r.stderr}`,
  );
});

// ---- socket activation end to end -------------------------------------------------------------

const activate = which('systemd-socket-activate');
const asRoot = process.getuid?.() === 0 && which('setpriv') && which('unshare');

test('socket activation end to end: LISTEN_FDNAMES, tlspool, backend, STARTTLS', {
  skip: !activate && 'systemd-socket-activate not installed (Debian package systemd)',
  timeout: 60_000,
}, async (t) => {
  const fdName = directive('tlsproxy.socket', 'FileDescriptorName')[0];
  const dir = tmp('tlsproxy-activate-');
  chmodSync(dir, 0o755);
  // uids of the units (any unused numbers: setpriv needs no passwd entry).
  const PROXY = 61901;
  const POOL = 61902;
  const poolDir = join(dir, 'tlspool'); // RuntimeDirectory=tlspool, RuntimeDirectoryMode=0750
  const backendDir = join(dir, 'imapd');
  const credDir = join(dir, 'credentials'); // LoadCredential=
  for (const d of [poolDir, backendDir, credDir]) mkdirSync(d);
  chmodSync(poolDir, 0o750);
  const keyCopy = join(credDir, 'server.key');
  try {
    copyFileSync(join(repo, 'fixtures/certs/server.key'), keyCopy);
  } catch (err) {
    t.skip(`cannot read the test key: ${err.message}`);
    return;
  }
  chmodSync(keyCopy, 0o400);
  if (asRoot) {
    chownSync(poolDir, POOL, POOL);
    chownSync(credDir, POOL, POOL);
    chownSync(keyCopy, POOL, POOL);
    // The example backend admits only its own uid (allowUids default), so in this test it runs
    // as tlsproxy's uid; a real backend lists tlsproxy's uid in allowUids instead.
    chownSync(backendDir, PROXY, PROXY);
    t.diagnostic(
      `as root: tlspool uid ${POOL} in an empty netns, tlsproxy uid ${PROXY} + group ${POOL}`,
    );
  } else {
    t.diagnostic('not root: one uid for everything, no network namespace');
  }
  const as = (uid, groups, argv) =>
    asRoot
      ? [
          'setpriv',
          `--reuid=${uid}`,
          `--regid=${uid}`,
          groups.length ? `--groups=${groups.join(',')}` : '--clear-groups',
          ...argv,
        ]
      : argv;

  const poolSocket = join(poolDir, 'tlspool.sock');
  const backendSocket = join(backendDir, 'tlsproxy.sock');
  const procs = [];
  const logs = [];
  const start = (argv, label) => {
    const p = spawn(argv[0], argv.slice(1), { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    logs.push(() => `--- ${label} ---\n${out}`);
    procs.push(p);
    return { p, output: () => out };
  };
  t.after(async () => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
    await Promise.all(
      procs.map((p) => (p.exitCode === null ? new Promise((r) => p.once('exit', r)) : null)),
    );
  });
  const waitFor = async (what, cond, ms = 15_000) => {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end)
        throw new Error(`timed out waiting for ${what}\n${logs.map((l) => l()).join('\n')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const node = process.execPath;
  const backend = start(
    as(PROXY, [], [node, 'examples/imap-backend/server.mjs', '--path', backendSocket, '--json']),
    'backend',
  );
  const poolArgv = as(
    POOL,
    [],
    [
      node,
      bins['/usr/bin/tlspool'],
      '--socket',
      poolSocket,
      '--mode',
      poolFlag('mode'),
      ...(asRoot ? ['--allow-uid', String(PROXY)] : []),
      '--cert',
      join(repo, 'fixtures/certs/server.pem'),
      '--key',
      keyCopy,
    ],
  );
  const pool = start(asRoot ? ['unshare', '--net', ...poolArgv] : poolArgv, 'tlspool');
  await waitFor(
    'backend and tlspool',
    () => /listening/.test(backend.output()) && /listening/.test(pool.output()),
  );

  const port = await new Promise((res) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
  // Like systemd: bind, wait for the first connection, then exec tlsproxy with LISTEN_FDS=1,
  // LISTEN_FDNAMES=<FileDescriptorName=>, LISTEN_PID=its pid.
  const proxy = start(
    [
      activate,
      '-l',
      `127.0.0.1:${port}`,
      `--fdname=${fdName}`,
      ...as(PROXY, asRoot ? [POOL] : [], [
        node,
        bins['/usr/bin/tlsproxy'],
        '--dialect',
        'imap',
        '--listen',
        `systemd:${fdName}`,
        '--backend',
        `unix:${backendSocket}`,
        '--pool-socket',
        poolSocket,
      ]),
    ],
    'tlsproxy (systemd-socket-activate)',
  );
  await waitFor('systemd-socket-activate', () => /Listening on/.test(proxy.output()));

  const transcript = await imapStartTls(port, join(repo, 'fixtures/certs/ca.pem'));
  for (const l of transcript.split('\r\n').filter(Boolean)) t.diagnostic(`  S: ${l}`);
  assert.match(transcript, /^a OK/m, `${transcript}\n${logs.map((l) => l()).join('\n')}`);
  assert.match(transcript, /^b OK/m);
  assert.match(
    proxy.output(),
    new RegExp(`listening dialect=imap address=127\\.0\\.0\\.1:${port}`),
  );
  assert.match(backend.output(), /"event":"connection"/);
  if (!asRoot) return;
  assert.doesNotMatch(pool.output(), /refused/);

  // The two gates in front of tlspool, tried from a third uid. Outside group tlspool the
  // directory (0750) stops connect() with EACCES; inside the group but not in --allow-uid the
  // daemon's SO_PEERCRED check closes the channel and logs the refusal.
  const OTHER = 61903;
  const probe = (groups) =>
    run(
      'setpriv',
      as(OTHER, groups, [
        node,
        '--input-type=module',
        '-e',
        `
      const { connect } = await import(${JSON.stringify(join(repo, 'packages/fdpass/dist/index.js'))});
      try {
        const ch = await connect({ path: ${JSON.stringify(poolSocket)} }, { timeoutMs: 2000 });
        ch.on('close', () => { console.log('closed by daemon'); process.exit(0); });
        setTimeout(() => { console.log('still open'); process.exit(0); }, 3000);
      } catch (err) { console.log(err.sysCode ?? err.code ?? err.message); }
    `,
      ]).slice(1),
    );
  const outsider = probe([]);
  assert.equal(outsider.stdout.trim(), 'EACCES', outsider.stderr);
  const member = probe([POOL]);
  assert.equal(member.stdout.trim(), 'closed by daemon', member.stderr);
  await waitFor('the refusal in the tlspool log', () =>
    new RegExp(`refused a connection from uid ${OTHER}`).test(pool.output()),
  );
  t.diagnostic(`uid ${OTHER}: without group tlspool EACCES; with it, refused by SO_PEERCRED`);
});

/** STARTTLS, then LOGIN and LOGOUT over TLS; resolves with everything the server said. */
function imapStartTls(port, caFile) {
  return new Promise((resolve, reject) => {
    let said = '';
    const timer = setTimeout(() => reject(new Error(`no answer; so far:\n${said}`)), 20_000);
    const done = (value) => {
      clearTimeout(timer);
      resolve(value);
    };
    // Each step: the reply that ends it, and what to do then.
    const plain = net.connect(port, '127.0.0.1');
    plain.setEncoding('latin1');
    plain.on('error', reject);
    let step = 'greeting';
    plain.on('data', function onPlain(d) {
      said += d;
      if (step === 'greeting' && /^\* OK/m.test(said)) {
        step = 'starttls';
        plain.write('s STARTTLS\r\n');
      } else if (step === 'starttls' && /^s (NO|BAD)/m.test(said)) {
        plain.destroy();
        done(said);
      } else if (step === 'starttls' && /^s OK/m.test(said)) {
        plain.off('data', onPlain);
        step = 'login';
        const sec = tls.connect({
          socket: plain,
          servername: 'localhost',
          ca: readFileSync(caFile),
        });
        sec.setEncoding('latin1');
        sec.on('error', reject);
        sec.once('secureConnect', () => sec.write('a LOGIN alice secret\r\n'));
        sec.on('data', (x) => {
          said += x;
          if (step === 'login' && /^a (OK|NO|BAD)/m.test(said)) {
            step = 'logout';
            sec.write('b LOGOUT\r\n');
          } else if (step === 'logout' && /^b (OK|NO|BAD)/m.test(said)) {
            sec.end();
            done(said);
          }
        });
      }
    });
  });
}
