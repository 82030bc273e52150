#!/usr/bin/env node
// `npm start` (after `turbo run build`): runs `tlsproxy demo` — every installed dialect on
// 127.0.0.1 at 10000 + its standard port, an embedded TLS engine with a self-signed certificate
// made at start, and a demo backend per dialect; it prints a line per dialect to try it with
// openssl s_client. Flags go through: `npm start -- --port-base 20000 --host ::1`. Ctrl-C stops it.
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';

const bin = fileURLToPath(new URL('../packages/cli/bin/tlsproxy.js', import.meta.url));
const child = spawn(process.execPath, [bin, 'demo', ...process.argv.slice(2)], {
  stdio: 'inherit',
});

// Ctrl-C reaches the child from the terminal (same process group) and it stops cleanly: do not
// send it a second SIGINT, which would cut its clean-up short. A SIGTERM or SIGHUP sent to this
// process alone is passed on as SIGTERM. Leave with the child's exit code.
process.on('SIGINT', () => {});
for (const sig of ['SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  });
}
child.on('exit', (code, signal) => {
  process.exitCode = code ?? 128 + (constants.signals[signal] ?? 0);
});
child.on('error', (err) => {
  console.error(`npm start: cannot run ${bin}: ${err.message}`);
  process.exitCode = 1;
});
