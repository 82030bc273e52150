// Past a connection limit new clients get the dialect's own "busy" reply and are closed;
// existing sessions are unaffected.
import { describe, expect, it } from 'vitest';
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
});
