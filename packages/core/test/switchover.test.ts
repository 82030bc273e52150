// The STARTTLS switch-over on its own (src/switchover.ts), with every dialect of this repo: any
// chunking of a valid preamble that ends in the dialect's STARTTLS command, and any bytes
// pipelined after it — in the same read, in later reads before the go-ahead, still in Node's
// buffer or the kernel's at the go-ahead — are never given to the dialect again (never
// interpreted) and never forwarded (not to the TLS engine, not to the backend): CVE-2011-0411.
//
// The driver below is session.ts's own loop reduced to its byte routing: every read goes through
// gate.read(), every action list through gate.cut(), the go-ahead through gate.goAhead().
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Action, Dialect, DialectSession, StartTlsAction } from '../src/dialect.js';
import { loadDialect, resolveLimits, resolveOptions } from '../src/index.js';
import { SwitchOver } from '../src/switchover.js';

const enc = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff);
const cat = (...parts: Uint8Array[]): Uint8Array => Uint8Array.from(parts.flatMap((p) => [...p]));

// LDAPMessage { messageID 99, ExtendedRequest { requestName "1.3.6.1.4.1.1466.20037" } }
const LDAP_OID = enc('1.3.6.1.4.1.1466.20037');
const LDAP_STARTTLS = cat(
  Uint8Array.of(0x30, 0x1d, 0x02, 0x01, 0x63, 0x77, 0x18, 0x80, 0x16),
  LDAP_OID,
);
// LDAPMessage { messageID 1, BindRequest { version 3, name "", simple "" } }
const LDAP_BIND = Uint8Array.of(
  0x30,
  0x0c,
  0x02,
  0x01,
  0x01,
  0x60,
  0x07,
  0x02,
  0x01,
  0x03,
  0x04,
  0x00,
  0x80,
  0x00,
);
const XMPP_HEADER =
  "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

/** For each dialect: commands that may come before STARTTLS, and the STARTTLS command itself. */
const PREAMBLES: ReadonlyArray<{
  name: string;
  before: readonly Uint8Array[];
  /** Fixed start of every preamble (XMPP's stream header). */
  head?: Uint8Array;
  starttls: Uint8Array;
}> = [
  {
    name: 'imap',
    before: [enc('a CAPABILITY\r\n'), enc('b NOOP\r\n'), enc('c FROB\r\n')],
    starttls: enc('z STARTTLS\r\n'),
  },
  {
    name: 'pop3',
    before: [enc('CAPA\r\n'), enc('NOOP\r\n'), enc('FROB\r\n')],
    starttls: enc('STLS\r\n'),
  },
  {
    name: 'smtp',
    before: [enc('EHLO c\r\n'), enc('NOOP\r\n'), enc('FROB\r\n')],
    starttls: enc('STARTTLS\r\n'),
  },
  { name: 'ldap', before: [LDAP_BIND], starttls: LDAP_STARTTLS },
  {
    name: 'xmpp',
    before: [enc(' '), enc('\n')],
    head: enc(XMPP_HEADER),
    starttls: enc("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
  },
  {
    name: 'http-upgrade',
    before: [],
    starttls: enc(
      'OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: TLS/1.0\r\n\r\n',
    ),
  },
];

/** Cut `bytes` at the given offsets (any chunking, empty chunks left out). */
function splitAt(bytes: Uint8Array, cuts: readonly number[]): Uint8Array[] {
  const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let from = 0;
  for (const c of [...at, bytes.length]) {
    if (c > from) out.push(bytes.subarray(from, c));
    from = c;
  }
  return out;
}

interface Run {
  /** Every byte the dialect was given, and when the starttls action came (bytes seen by then). */
  seen: number[];
  seenAtStartTls: number | undefined;
  starttls: StartTlsAction | undefined;
  /** Calls to the dialect after its starttls action. */
  callsAfter: number;
  /** Bytes passed on at the go-ahead (to the TLS engine or the backend). */
  forwarded: number;
  /** Pipelined bytes the kernel still held at the go-ahead and that were left in place. */
  leftInKernel: number;
  /** Bytes the gate counted as discarded. */
  discarded: number;
}

/**
 * session.ts's routing with a real dialect: `reads` arrive before the starttls action is known
 * or while the switch-over waits; then the go-ahead finds `buffered` in Node's buffer and
 * `kernel` bytes in the kernel's.
 */
function drive(
  session: DialectSession,
  reads: readonly Uint8Array[],
  buffered: Uint8Array,
  kernel: number,
): Run {
  const gate = new SwitchOver();
  const run: Run = {
    seen: [],
    seenAtStartTls: undefined,
    starttls: undefined,
    callsAfter: 0,
    forwarded: 0,
    leftInKernel: 0,
    discarded: 0,
  };
  const perform = (actions: Action[]) => {
    for (const a of gate.cut(actions)) {
      if (a.type === 'starttls') {
        run.starttls = a;
        run.seenAtStartTls = run.seen.length;
      }
    }
  };
  const call = (fn: () => Action[]) => {
    if (run.starttls) run.callsAfter++;
    perform(fn());
  };
  call(() => session.start(0));
  for (const r of reads) {
    const d = gate.read(r);
    if (d !== undefined) {
      run.seen.push(...d);
      call(() => session.receive(d, 0));
    }
  }
  if (run.starttls) {
    const plan = gate.goAhead(run.starttls.goAhead.length, buffered);
    run.forwarded = plan.forward.length;
    if (plan.discardKernel) gate.dropped(kernel);
    else run.leftInKernel = kernel;
  }
  run.discarded = gate.take();
  return run;
}

const dialects = new Map<string, Dialect>();
async function dialect(name: string): Promise<Dialect> {
  let d = dialects.get(name);
  if (!d) {
    d = await loadDialect(name);
    dialects.set(name, d);
  }
  return d;
}

function newSession(d: Dialect): DialectSession {
  return d.create({
    options: resolveOptions(d, {}),
    limits: resolveLimits(d, {}),
    hostname: 'localhost',
    connectionId: 'test',
    serverNames: ['localhost'],
  });
}

const pipelined = fc.array(
  fc.oneof(
    fc.uint8Array({ maxLength: 40 }),
    fc.constantFrom(
      ...[
        'a LOGIN u p\r\n',
        'QUIT\r\n',
        'MAIL FROM:<a@b>\r\n',
        '<iq/>',
        'GET / HTTP/1.1\r\n\r\n',
      ].map(enc),
      LDAP_BIND,
      LDAP_STARTTLS,
    ),
  ),
  { maxLength: 6 },
);

describe('the STARTTLS switch-over (CVE-2011-0411)', () => {
  for (const p of PREAMBLES) {
    it(`${p.name}: bytes pipelined after STARTTLS are never interpreted and never forwarded`, async () => {
      const d = await dialect(p.name);
      fc.assert(
        fc.property(
          fc.array(fc.constantFrom(...(p.before.length > 0 ? p.before : [new Uint8Array(0)])), {
            maxLength: 4,
          }),
          pipelined,
          fc.array(fc.nat(), { maxLength: 10 }),
          pipelined,
          fc.uint8Array({ maxLength: 64 }),
          fc.nat({ max: 4096 }),
          (before, sameRun, cuts, later, buffered, kernel) => {
            const preamble = cat(...(p.head ? [p.head] : []), ...before, p.starttls);
            const after = cat(...sameRun);
            // The preamble and what follows it in any chunking (so some pipelined bytes share a
            // read with the STARTTLS command); then reads that come while the switch-over waits.
            const reads = [...splitAt(cat(preamble, after), cuts), ...later];
            const run = drive(newSession(d), reads, buffered, kernel);
            expect(run.starttls, 'the preamble ends in a starttls action').toBeDefined();
            // Never interpreted: the dialect gets nothing after the read with its STARTTLS
            // command, and what it got past the command it handed back as `trailing`.
            expect(run.callsAfter).toBe(0);
            expect(run.seen.length).toBe(run.seenAtStartTls);
            const trailing = run.starttls?.trailing ?? new Uint8Array(0);
            expect(run.seen.length - trailing.length).toBe(preamble.length);
            expect(Uint8Array.from(run.seen.slice(0, preamble.length))).toEqual(preamble);
            expect(Uint8Array.from(trailing)).toEqual(
              Uint8Array.from(run.seen.slice(preamble.length)),
            );
            // Never forwarded: nothing at the go-ahead goes on, the kernel's bytes are dropped.
            expect(run.forwarded).toBe(0);
            expect(run.leftInKernel).toBe(0);
            // And every pipelined byte is accounted for as discarded (the injection metric).
            const laterBytes = later.reduce((n, r) => n + r.length, 0);
            expect(run.discarded).toBe(after.length + laterBytes + buffered.length + kernel);
          },
        ),
        { numRuns: 150 },
      );
    });
  }

  it('a temporary failure at STARTTLS drops what was pipelined; the preamble goes on after it', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), fc.nat({ max: 1000 }), (trailing, dropped) => {
        const gate = new SwitchOver();
        const [starttls] = gate.cut([
          {
            type: 'starttls',
            goAhead: enc('OK\r\n'),
            unavailable: enc('NO\r\n'),
            trailing,
            state: {},
          },
          { type: 'send', data: enc('never') },
        ]);
        expect(starttls?.type).toBe('starttls');
        expect(gate.read(enc('pipelined'))).toBeUndefined();
        expect(gate.resume(dropped)).toBe(trailing.length + 9 + dropped);
        expect(gate.phase).toBe('preamble');
        const fresh = enc('a NOOP\r\n');
        expect(gate.read(fresh)).toBe(fresh);
      }),
    );
  });

  it('implicit TLS (no go-ahead) leaves the kernel bytes for the TLS engine: they are the ClientHello', () => {
    const gate = new SwitchOver();
    gate.cut([
      {
        type: 'starttls',
        goAhead: new Uint8Array(0),
        unavailable: new Uint8Array(0),
        trailing: new Uint8Array(0),
        state: {},
      },
    ]);
    expect(gate.goAhead(0, new Uint8Array(0))).toEqual({
      forward: new Uint8Array(0),
      discardKernel: false,
    });
  });

  it('after the connection is done, reads are neither given to the dialect nor counted', () => {
    const gate = new SwitchOver();
    gate.cut([{ type: 'close', reason: 'bye' }]);
    gate.close();
    expect(gate.read(enc('x'))).toBeUndefined();
    expect(gate.take()).toBe(0);
  });
});
