// Past a connection limit new clients get the dialect's own "busy" reply and are closed;
// existing sessions are unaffected.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { REFUSED_MAX_LINGERING } from '../src/connection.js';
import { loadDialect } from '../src/index.js';
import { LineClient, startProxy } from './helpers.js';

describe('connection limits', () => {
  it('per client address: the next connection gets * BYE, the others go on', async () => {
    const { proxy, port, logger } = await startProxy('unix:/nonexistent.sock', {
      maxConnectionsPerAddress: 2,
    });
    try {
      const a = new LineClient(port);
      const b = new LineClient(port);
      await a.until(/^\* OK/);
      await b.until(/^\* OK/);
      const c = new LineClient(port);
      expect(await c.until(/^\* BYE/)).toMatch(/^\* BYE \[UNAVAILABLE\] Too many connections/m);
      await new Promise((r) => c.socket.once('close', r));
      a.write('x NOOP\r\n');
      expect(await a.until(/^x /)).toMatch(/^x OK/m);
      expect(logger.lines.some((l) => l.includes('per-address connection limit reached'))).toBe(
        true,
      );
      // a slot frees up when a session ends
      b.socket.destroy();
      await new Promise((r) => setTimeout(r, 100));
      const d = new LineClient(port);
      expect(await d.until(/^\* /)).toMatch(/^\* OK/);
      a.socket.destroy();
      d.socket.destroy();
    } finally {
      await proxy.close();
    }
  });

  it('overall: SMTP says 421 past maxConnections', async () => {
    const { proxy, port } = await startProxy('unix:/nonexistent.sock', {
      dialect: 'smtp',
      maxConnections: 1,
    });
    try {
      const a = new LineClient(port);
      await a.until(/^220 /);
      const b = new LineClient(port);
      expect(await b.until(/^421 /)).toMatch(
        /^421 4\.7\.0 test\.example Error: too many connections/m,
      );
      a.socket.destroy();
    } finally {
      await proxy.close();
    }
  });

  it('every dialect in this repo has a busy reply', async () => {
    for (const name of ['imap', 'pop3', 'smtp', 'ldap', 'xmpp', 'http-upgrade']) {
      const d = await loadDialect(name);
      const reply = d.busy?.({ hostname: 'h.example', now: Date.now() });
      expect(reply?.length, name).toBeGreaterThan(0);
    }
  });

  it('every dialect says which limit: the per-address reply names the address', async () => {
    for (const name of ['imap', 'pop3', 'smtp', 'ldap', 'xmpp', 'http-upgrade']) {
      const d = await loadDialect(name);
      const text = (limit: 'maxConnections' | 'maxConnectionsPerAddress') =>
        Buffer.from(d.busy!({ hostname: 'h.example', now: Date.now(), limit })).toString('latin1');
      expect(text('maxConnectionsPerAddress'), name).toMatch(/from your address/);
      expect(text('maxConnections'), name).not.toMatch(/from your address/);
    }
  });

  it('the client hears it over the wire', async () => {
    const { proxy, port } = await startProxy('unix:/nonexistent.sock', {
      maxConnectionsPerAddress: 1,
    });
    try {
      const a = new LineClient(port);
      await a.until(/^\* OK/);
      const b = new LineClient(port);
      expect(await b.until(/^\* BYE/)).toMatch(/from your address/);
      a.socket.destroy();
    } finally {
      await proxy.close();
    }
  });

  it('a flood of refused clients that never close holds a bounded number of descriptors, and one log line a second', async () => {
    const { proxy, port, logger } = await startProxy('unix:/nonexistent.sock', {
      maxConnections: 1,
    });
    const n = REFUSED_MAX_LINGERING + 400;
    // The clients live in another process, so this one's descriptors are the proxy's: each
    // reads its busy reply and then neither reads nor closes (half-open: our FIN is not answered).
    const child = spawn(
      process.execPath,
      [
        '-e',
        `const net = require('node:net');
         let got = 0;
         for (let i = 0; i < ${n}; i++) {
           const s = net.connect({ port: ${port}, host: '127.0.0.1', allowHalfOpen: true });
           s.once('data', () => { if (++got === ${n}) console.log('all refused'); });
           s.on('error', () => {});
         }
         setInterval(() => {}, 1000);`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      const a = new LineClient(port);
      await a.until(/^\* OK/);
      const before = readdirSync('/proc/self/fd').length;
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => d.includes('all refused') && resolve());
        child.once('exit', () => reject(new Error('the clients exited')));
      });
      // Every client heard the busy reply; this process holds at most the bound.
      const held = readdirSync('/proc/self/fd').length - before;
      expect(held).toBeLessThanOrEqual(REFUSED_MAX_LINGERING + 8);
      const lines = logger.lines.filter((l) => l.includes('connection limit reached, refusing'));
      expect(lines.length).toBeGreaterThanOrEqual(1);
      expect(lines.length).toBeLessThanOrEqual(4);
      expect(lines[0]).toMatch(/"refused":1/);
      // The rest of the burst is said when its second is over, with its count: all of them.
      await new Promise((r) => setTimeout(r, 1200));
      const counted = logger.lines
        .filter((l) => l.includes('connection limit reached, refusing'))
        .reduce((n, l) => n + Number(/"refused":(\d+)/.exec(l)![1]), 0);
      expect(counted).toBe(n);
      // The lingering ones go after CLOSE_LINGER_MS; nothing is left behind.
      const deadline = Date.now() + 5000;
      while (readdirSync('/proc/self/fd').length > before + 2 && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      expect(readdirSync('/proc/self/fd').length).toBeLessThanOrEqual(before + 2);
      a.socket.destroy();
    } finally {
      child.kill();
      await proxy.close();
    }
  }, 20_000);

  it('a client that leaves its end open after the last reply still counts until its socket goes', async () => {
    const { proxy, port } = await startProxy('unix:/nonexistent.sock', { maxConnections: 1 });
    try {
      // LOGOUT answered and our FIN sent; the client neither closes nor is cut off yet (2 s).
      const a = new LineClient(port, { allowHalfOpen: true });
      await a.until(/^\* OK/);
      a.write('x LOGOUT\r\n');
      await a.until(/^x OK/);
      await new Promise((r) => a.socket.once('end', r));
      const b = new LineClient(port);
      expect(await b.until(/^\* /)).toMatch(/^\* BYE \[UNAVAILABLE\]/);
      // Once it closes, the place is free.
      a.socket.end();
      await new Promise((r) => a.socket.once('close', r));
      await new Promise((r) => setTimeout(r, 100));
      const c = new LineClient(port);
      expect(await c.until(/^\* /)).toMatch(/^\* OK/);
      b.socket.destroy();
      c.socket.destroy();
    } finally {
      await proxy.close();
    }
  });

  it('the same after a plaintext hand-off that found no backend (503, our FIN, the client silent)', async () => {
    const { proxy, port } = await startProxy('unix:/nonexistent.sock', {
      dialect: 'http-upgrade',
      options: { plaintext: 'handoff' },
      maxConnections: 1,
    });
    try {
      const a = new LineClient(port, { allowHalfOpen: true });
      a.write('GET / HTTP/1.1\r\nHost: h.example\r\n\r\n');
      expect(await a.until(/^HTTP\//)).toMatch(/^HTTP\/1\.1 503 /);
      await new Promise((r) => a.socket.once('end', r));
      // Refused before it says anything: the busy reply.
      const b = new LineClient(port);
      expect(await b.until(/^HTTP\//, 2000)).toMatch(/^HTTP\/1\.1 503 /);
      a.socket.end();
      await new Promise((r) => a.socket.once('close', r));
      await new Promise((r) => setTimeout(r, 100));
      // Its place is back: a new client is let in (nothing until it asks).
      const c = new LineClient(port);
      await expect(c.until(/^HTTP\//, 300)).rejects.toThrow(/timed out/);
      b.socket.destroy();
      c.socket.destroy();
    } finally {
      await proxy.close();
    }
  });

  it('past preambleTimeoutMs a busy client gets the dialect’s timeout reply, then the close', async () => {
    for (const [dialect, send, reply] of [
      ['imap', 'n NOOP\r\n', /^\* BYE Disconnected: too long before STARTTLS\./m],
      ['smtp', 'NOOP\r\n', /^421 4\.4\.2 test\.example Error: timeout exceeded$/m],
    ] as const) {
      const { proxy, port, logger } = await startProxy('unix:/nonexistent.sock', {
        dialect,
        preambleTimeoutMs: 600,
      });
      try {
        const c = new LineClient(port);
        const closed = new Promise((r) => c.socket.once('close', r));
        // Never idle, so only the whole-preamble deadline ends it.
        const busy = setInterval(() => c.write(send), 100);
        try {
          expect(await c.until(reply, 3000)).toMatch(reply);
          await closed;
        } finally {
          clearInterval(busy);
        }
        expect(logger.lines.some((l) => /"outcome":"preamble_timeout"/.test(l))).toBe(true);
      } finally {
        await proxy.close();
      }
    }
  });

  it('a client that floods after our goodbye is cut off, not read for the whole linger', async () => {
    const { proxy, port } = await startProxy('unix:/nonexistent.sock');
    try {
      // LOGOUT answered and our FIN sent; the client ignores it and writes as fast as it can.
      const c = new LineClient(port, { allowHalfOpen: true });
      await c.until(/^\* OK/);
      c.write('x LOGOUT\r\n');
      await c.until(/^x OK/);
      let written = 0;
      const chunk = Buffer.alloc(64 * 1024, 'x');
      const gone = new Promise((r) => c.socket.once('close', r));
      const pump = () => {
        while (!c.socket.destroyed && written < 1 << 30) {
          written += chunk.length;
          if (!c.socket.write(chunk)) return;
        }
      };
      c.socket.on('drain', pump);
      pump();
      await gone;
      // The kernel's buffers hold some megabytes; the proxy reads at most 64 KiB more.
      expect(written).toBeLessThan(32 << 20);
    } finally {
      await proxy.close();
    }
  });
});
