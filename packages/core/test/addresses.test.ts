// Issue 14: every list of addresses in the config (proxyProtocol.trusted, a listener's exempt
// list) is parsed once, by one module, when the config is loaded; matching and the per-address
// key never throw on whatever address a peer turns up with.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  addressKey,
  addressProblem,
  checkAddressList,
  DEFAULT_IPV6_PREFIX,
  parseAddressMatcher,
} from '../src/addresses.js';
import { isTlsProxyError } from '../src/errors.js';

const refused = (entry: string): string => {
  try {
    parseAddressMatcher([entry], 'listeners.0.exempt');
  } catch (err) {
    expect(isTlsProxyError(err)).toBe(true);
    expect((err as { code: string }).code).toBe('TLSPROXY_ERR_CONFIG');
    return (err as Error).message;
  }
  throw new Error(`accepted ${JSON.stringify(entry)}`);
};

// fast-check arbitraries for addresses in their many spellings.
const v4bytes = fc.uint8Array({ minLength: 4, maxLength: 4 });
const v6bytes = fc.uint8Array({ minLength: 16, maxLength: 16 });
const v4text = (b: Uint8Array) => Array.from(b).join('.');
const v6full = (b: Uint8Array) =>
  Array.from({ length: 8 }, (_, i) => ((b[2 * i]! << 8) | b[2 * i + 1]!).toString(16)).join(':');
const mask = (b: Uint8Array, prefix: number) =>
  b.map((x, i) => {
    const keep = Math.max(0, Math.min(8, prefix - 8 * i));
    return x & ((0xff << (8 - keep)) & 0xff);
  });

describe('parseAddressMatcher', () => {
  it('matches addresses and CIDR ranges of both families', () => {
    const m = parseAddressMatcher(
      ['10.0.0.0/8', '192.0.2.7', '::1', '2001:db8::/32', 'fe80::/10'],
      'trusted',
    );
    expect(m.has('10.200.3.4')).toBe(true);
    expect(m.has('11.0.0.1')).toBe(false);
    expect(m.has('192.0.2.7')).toBe(true);
    expect(m.has('192.0.2.8')).toBe(false);
    expect(m.has('::1')).toBe(true);
    expect(m.has('0:0:0:0:0:0:0:1')).toBe(true);
    expect(m.has('::2')).toBe(false);
    expect(m.has('2001:db8:ffff::1')).toBe(true);
    expect(m.has('2001:db9::1')).toBe(false);
    // a link-local client's address carries its zone: the address part is what is matched
    expect(m.has('fe80::1%eth0')).toBe(true);
  });

  it('matches IPv4-mapped IPv6 client addresses against IPv4 entries, and mapped entries as IPv4', () => {
    const m = parseAddressMatcher(['10.0.0.0/8', '::ffff:192.0.2.0/120'], 'trusted');
    expect(m.has('::ffff:10.1.2.3')).toBe(true);
    expect(m.has('::FFFF:10.1.2.3')).toBe(true);
    expect(m.has('::ffff:a01:203')).toBe(true);
    expect(m.has('::ffff:11.1.2.3')).toBe(false);
    expect(m.has('192.0.2.99')).toBe(true);
    expect(m.entries).toEqual(['10.0.0.0/8', '192.0.2.0/24']);
  });

  it('an empty list matches nothing', () => {
    const m = parseAddressMatcher([], 'exempt');
    expect(m.has('127.0.0.1')).toBe(false);
    expect(m.size).toBe(0);
  });

  it.each([
    ['10.0.0.0/33', /prefix length \/33 is more than 32/],
    ['::/129', /prefix length \/129 is more than 128/],
    ['not-an-address', /not an IPv4 or IPv6 address/],
    ['1.2.3.4/', /prefix length "" is not a number/],
    ['/8', /not an IPv4 or IPv6 address/],
    ['1.2.3.4/08', /leading zero/],
    ['1.2.3.4/8.0', /not a number/],
    ['1.2.3.4/-1', /not a number/],
    ['1.2.3.4/ 8', /not a number/],
    [' 10.0.0.1', /spaces/],
    ['10.0.0.1 ', /spaces/],
    ['', /empty/],
    ['fe80::1%eth0', /zone/],
    ['10.1.2.3/8', /bits set after the \/8 prefix: did you mean 10\.0\.0\.0\/8\?/],
    ['01.2.3.4', /not an IPv4 or IPv6 address/],
    ['1.2.3.256', /not an IPv4 or IPv6 address/],
    ['1:2:3:4:5:6:7:8:9', /not an IPv4 or IPv6 address/],
    ['1::2::3', /not an IPv4 or IPv6 address/],
    ['::ffff:10.0.0.0/95', /IPv4-mapped range needs a prefix of at least \/96/],
    ['10.0.0.0/8/8', /not a number/],
  ])('refuses %j', (entry, why) => {
    const message = refused(entry);
    expect(message).toMatch(why);
    // names the list, the index and the entry itself
    expect(message).toContain('listeners.0.exempt[0]');
    expect(message).toContain(JSON.stringify(entry));
  });

  it('names the index of the bad entry', () => {
    expect(() => parseAddressMatcher(['10.0.0.0/8', '::1', 'bogus'], 'trusted')).toThrow(
      /trusted\[2\]: "bogus"/,
    );
  });

  it('refuses what is not a list of strings (JavaScript callers)', () => {
    expect(() => parseAddressMatcher('10.0.0.0/8' as never, 'trusted')).toThrow(
      /trusted: must be a list/,
    );
    expect(() => parseAddressMatcher([8] as never, 'trusted')).toThrow(
      /trusted\[0\]: not a string/,
    );
  });

  it('has() never throws, whatever the string (property)', () => {
    const m = parseAddressMatcher(['0.0.0.0/0', '::/0'], 'x');
    const n = parseAddressMatcher(['10.0.0.0/8', '2001:db8::/32'], 'x');
    const odd = fc.oneof(
      fc.string(),
      fc.string({ unit: 'binary' }),
      fc.string({ unit: fc.constantFrom('0', '1', 'f', ':', '.', '%', '/', 'x', ' ', '[', ']') }),
      fc.ipV4().map((a) => `::ffff:${a}`),
      fc.ipV6(),
      fc.ipV4Extended(),
    );
    fc.assert(
      fc.property(odd, (s) => {
        expect(typeof m.has(s)).toBe('boolean');
        expect(typeof n.has(s)).toBe('boolean');
      }),
      { numRuns: 2000 },
    );
    for (const v of [undefined, null, 3, {}, 'a'.repeat(100_000)])
      expect(m.has(v as never)).toBe(false);
  });

  it('agrees with a reference for every valid address (property)', () => {
    fc.assert(
      fc.property(v4bytes, fc.integer({ min: 0, max: 32 }), v4bytes, (net, prefix, probe) => {
        const base = mask(net, prefix);
        const m = parseAddressMatcher([`${v4text(base)}/${prefix}`], 'x');
        const inside = mask(probe, prefix).every((b, i) => b === base[i]);
        expect(m.has(v4text(probe))).toBe(inside);
        expect(m.has(`::ffff:${v4text(probe)}`)).toBe(inside);
      }),
    );
    fc.assert(
      fc.property(v6bytes, fc.integer({ min: 0, max: 128 }), v6bytes, (net, prefix, probe) => {
        const base = mask(net, prefix);
        const isMapped = (b: Uint8Array) =>
          b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
        fc.pre(!isMapped(base) && !isMapped(probe));
        const m = parseAddressMatcher([`${v6full(base)}/${prefix}`], 'x');
        const inside = mask(probe, prefix).every((b, i) => b === base[i]);
        expect(m.has(v6full(probe))).toBe(inside);
      }),
    );
  });

  it('valid CIDRs round-trip through their canonical form (property)', () => {
    const cidr = fc.oneof(
      fc
        .tuple(v4bytes, fc.integer({ min: 0, max: 32 }))
        .map(([b, p]) => `${v4text(mask(b, p))}/${p}`),
      fc
        .tuple(v6bytes, fc.integer({ min: 0, max: 128 }))
        .filter(
          ([b]) => !(b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff),
        )
        .map(([b, p]) => `${v6full(mask(b, p))}/${p}`),
      fc.ipV4(),
      fc.ipV6(),
    );
    fc.assert(
      fc.property(cidr, (entry) => {
        const [canonical] = parseAddressMatcher([entry], 'x').entries;
        expect(canonical).toBeDefined();
        // the canonical form parses to itself, and means the same range
        expect(parseAddressMatcher([canonical!], 'x').entries).toEqual([canonical]);
        const a = parseAddressMatcher([entry], 'x');
        const b = parseAddressMatcher([canonical!], 'x');
        const host = entry.split('/')[0]!;
        expect(b.has(host)).toBe(a.has(host));
        expect(a.has(host)).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  it('refuses every invalid prefix length (property)', () => {
    const badPrefix = fc.oneof(
      fc.integer({ min: 33, max: 100_000 }).map((n) => ['10.0.0.0', String(n)] as const),
      fc.integer({ min: 129, max: 100_000 }).map((n) => ['2001:db8::', String(n)] as const),
      fc.integer({ min: -1000, max: -1 }).map((n) => ['10.0.0.0', String(n)] as const),
      fc.integer({ min: 0, max: 128 }).map((n) => ['2001:db8::', `0${n}`] as const),
      fc
        .string()
        .filter((s) => !/^(0|[1-9]\d*)$/.test(s))
        .map((s) => ['10.0.0.0', s] as const),
    );
    fc.assert(
      fc.property(badPrefix, ([addr, prefix]) => {
        expect(() => parseAddressMatcher([`${addr}/${prefix}`], 'x')).toThrow(/x\[0\]/);
        expect(addressProblem(`${addr}/${prefix}`)).toBeDefined();
      }),
      { numRuns: 1000 },
    );
  });
});

describe('checkAddressList', () => {
  it('returns undefined for a good list and a message naming the entry for a bad one', () => {
    expect(checkAddressList(['10.0.0.0/8', '::1'], 'trusted')).toBeUndefined();
    expect(checkAddressList(['10.0.0.0/8', '10.0.0.0/33'], 'trusted')).toMatch(
      /^trusted\[1\]: "10\.0\.0\.0\/33": prefix length \/33 is more than 32/,
    );
    expect(checkAddressList('10.0.0.0/8', 'trusted')).toMatch(/must be a list/);
    expect(checkAddressList([null], 'trusted')).toMatch(/trusted\[0\]: not a string/);
  });
});

describe('addressKey', () => {
  it('counts IPv4 (and IPv4-mapped) per address, IPv6 per /prefix', () => {
    expect(addressKey('10.1.2.3', 64)).toBe('10.1.2.3');
    expect(addressKey('::ffff:10.1.2.3', 64)).toBe('10.1.2.3');
    expect(addressKey('2001:db8:1:2:aaaa::1', 64)).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8:1:2:bbbb::2', 64)).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8:1:3::1', 64)).toBe('2001:db8:1:3::/64');
    expect(addressKey('2001:db8:1:3::1', 128)).toBe('2001:db8:1:3::1/128');
    expect(addressKey('2001:db8:1:3::1', 48)).toBe('2001:db8:1::/48');
    expect(addressKey('fe80::1%eth0', 64)).toBe('fe80::/64');
    expect(DEFAULT_IPV6_PREFIX).toBe(64);
  });

  it('never throws, and keys an unparsable address by itself (property)', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.ipV6(), fc.ipV4()), fc.double(), (s, p) => {
        expect(typeof addressKey(s, p)).toBe('string');
        expect(typeof addressKey(s, 64)).toBe('string');
      }),
      { numRuns: 2000 },
    );
    expect(addressKey('garbage', 64)).toBe('garbage');
    expect(addressKey(undefined as never, 64)).toBe('');
  });

  it('every address of one IPv6 /64 shares a key, and IPv4 keys are the address (property)', () => {
    fc.assert(
      fc.property(v6bytes, fc.uint8Array({ minLength: 8, maxLength: 8 }), (a, low) => {
        const b = Uint8Array.from([...a.slice(0, 8), ...low]);
        fc.pre(!(a.slice(0, 10).every((x) => x === 0) && a[10] === 0xff && a[11] === 0xff));
        fc.pre(!(b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff));
        expect(addressKey(v6full(a), 64)).toBe(addressKey(v6full(b), 64));
      }),
    );
    fc.assert(
      fc.property(fc.ipV4(), (a) => {
        expect(addressKey(a, 64)).toBe(a);
        expect(addressKey(`::ffff:${a}`, 64)).toBe(a);
      }),
    );
  });
});
