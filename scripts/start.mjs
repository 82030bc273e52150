#!/usr/bin/env node
// `npm start`: a small fd hand-off demo until `tlsproxy demo` lands. A TCP listener accepts
// connections and hands each one, as a file descriptor, to a separately spawned worker process
// over a UNIX SOCK_SEQPACKET socket; the worker answers on the very same TCP connection.
import { fork } from 'node:child_process';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const fdpass = await import('@tlsproxy/fdpass');

if (process.argv[2] === '--worker') {
  const ch = await fdpass.connect({ path: process.argv[3] });
  ch.on('message', (m) => {
    const info = JSON.parse(m.data.toString());
    const sock = m.fds[0].toSocket();
    sock.end(
      `hello ${info.remote} from worker pid ${process.pid}: this TCP connection was accepted by ` +
        `pid ${info.pid} and passed here as a file descriptor (SCM_RIGHTS).\n`,
    );
    sock.on('error', () => {});
  });
  ch.on('end', () => process.exit(0));
} else {
  const port = Number(process.env.PORT ?? 10007);
  const path = join(tmpdir(), `tlsproxy-start-${process.pid}.sock`);
  const server = fdpass.listen({ path, mode: 0o600 });
  const worker = fork(fileURLToPath(import.meta.url), ['--worker', path]);
  const ch = await new Promise((r) => server.once('connection', r));
  console.log(
    `worker pid ${worker.pid} connected (SO_PEERCRED pid ${ch.peer.pid}, uid ${ch.peer.uid})`,
  );
  const tcp = net.createServer({ pauseOnConnect: true }, (sock) => {
    const remote = `${sock.remoteAddress}:${sock.remotePort}`;
    ch.send(
      Buffer.from(JSON.stringify({ remote, pid: process.pid })),
      [fdpass.socketFd(sock)],
      () => sock.destroy(),
    );
  });
  tcp.listen(port, '127.0.0.1', () => {
    console.log(
      `fd hand-off demo listening on 127.0.0.1:${port}; try:  nc 127.0.0.1 ${port}   (Ctrl-C stops)`,
    );
  });
  const stop = () => {
    tcp.close();
    ch.close();
    server.close();
    worker.kill();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
