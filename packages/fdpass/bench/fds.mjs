#!/usr/bin/env node
// Descriptors passed per second between two processes, the receiver wrapping each one in a
// net.Socket, for @tlsproxy/fdpass and for child_process.send(msg, socket) in the same run.
// Usage: node bench/fds.mjs [--json] [--count N]
import { fork } from 'node:child_process';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { listen, socketFd, socketpair } from '../dist/index.js';

const args = process.argv.slice(2);
const json = args.includes('--json');
const count = Number(args[args.indexOf('--count') + 1]) || 20000;
const self = fileURLToPath(import.meta.url);

// ---- child side -------------------------------------------------------------------------------
if (process.argv[2] === '--child-addon') {
  const { connect } = await import('../dist/index.js');
  const ch = await connect({ path: process.argv[3] });
  let n = 0;
  ch.on('message', (m) => {
    for (const f of m.fds) {
      f.toSocket().destroy();
      n++;
    }
    if (m.data[0] === 0x21) ch.send(Buffer.from(String(n)));
  });
  ch.on('end', () => process.exit(0));
} else if (process.argv[2] === '--child-cp') {
  let n = 0;
  process.on('message', (msg, handle) => {
    if (handle) {
      handle.destroy();
      n++;
    }
    if (msg === 'done?') process.send(String(n));
  });
} else {
  await main();
}

async function tcpSockets(k) {
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  const socks = await Promise.all(
    Array.from(
      { length: k },
      () =>
        new Promise((r) => {
          const c = net.connect(port, '127.0.0.1', () => r(c));
        }),
    ),
  );
  return { server, socks };
}

async function addonRate(socks) {
  const path = join(tmpdir(), `fdpass-bench-${process.pid}.sock`);
  const server = listen({ path });
  const accepted = new Promise((r) => server.once('connection', r));
  const child = fork(self, ['--child-addon', path], { stdio: 'inherit' });
  const ch = await accepted;
  const fds = socks.map((s) => socketFd(s));
  const run = async (n) => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) {
      if (!ch.send(Buffer.from('x'), [fds[i % fds.length]]))
        await new Promise((r) => ch.once('drain', r));
    }
    const done = new Promise((r) => ch.once('message', (m) => r(Number(m.data.toString()))));
    ch.send(Buffer.from('!'));
    await done;
    return Number(process.hrtime.bigint() - t0) / 1e9;
  };
  await run(Math.min(2000, count)); // warm-up: JIT, lazily opened descriptors
  const secs = await run(count);
  ch.close();
  server.close();
  await new Promise((r) => child.once('exit', r));
  return count / secs;
}

async function cpRate(socks) {
  const child = fork(self, ['--child-cp'], { stdio: ['inherit', 'inherit', 'inherit', 'ipc'] });
  const run = async (n) => {
    const t0 = process.hrtime.bigint();
    // child_process queues handles itself and waits for an ACK per handle.
    for (let i = 0; i < n; i++) child.send('fd', socks[i % socks.length], { keepOpen: true });
    const done = new Promise((r) => child.once('message', r));
    child.send('done?');
    await done;
    return Number(process.hrtime.bigint() - t0) / 1e9;
  };
  const cpCount = Math.max(1000, Math.floor(count / 4));
  await run(Math.min(1000, cpCount));
  const secs = await run(cpCount);
  child.kill();
  return cpCount / secs;
}

function socketpairRate() {
  const k = 50000;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < k; i++) {
    const [a, b] = socketpair();
    a.close();
    b.close();
  }
  return k / (Number(process.hrtime.bigint() - t0) / 1e9);
}

async function main() {
  const { server, socks } = await tcpSockets(16);
  const addonTcp = await addonRate(socks);
  const cpTcp = await cpRate(socks);
  // socketpair ends: a few pairs, their first ends sent repeatedly
  const pairs = Array.from({ length: 16 }, () => socketpair());
  const pairSocks = pairs.map(([a]) => a.toSocket());
  const addonPair = await addonRate(pairSocks);
  const cpPair = await cpRate(pairSocks);
  pairSocks.forEach((s) => s.destroy());
  pairs.forEach(([, b]) => b.close());
  const sp = socketpairRate();
  socks.forEach((s) => s.destroy());
  server.close();
  const result = {
    count,
    addon_fds_per_s: Math.round(addonTcp),
    child_process_fds_per_s: Math.round(cpTcp),
    ratio_tcp: Number((addonTcp / cpTcp).toFixed(2)),
    addon_socketpair_fds_per_s: Math.round(addonPair),
    child_process_socketpair_fds_per_s: Math.round(cpPair),
    ratio_socketpair: Number((addonPair / cpPair).toFixed(2)),
    socketpairs_per_s: Math.round(sp),
    node: process.version,
  };
  if (json) console.log(JSON.stringify(result));
  else {
    console.log(
      `fd hand-off between two processes, receiver wraps each fd in a net.Socket (${count} fds)`,
    );
    console.log(
      `  TCP:        addon ${result.addon_fds_per_s}/s  child_process.send ${result.child_process_fds_per_s}/s  ratio ${result.ratio_tcp}x`,
    );
    console.log(
      `  socketpair: addon ${result.addon_socketpair_fds_per_s}/s  child_process.send ${result.child_process_socketpair_fds_per_s}/s  ratio ${result.ratio_socketpair}x`,
    );
    console.log(`  socketpair() created and closed: ${result.socketpairs_per_s}/s`);
  }
}
