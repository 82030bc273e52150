// A throw-away self-signed certificate for `tlsproxy demo`: ECDSA P-256 with SHA-256, made in
// memory at start by the `selfsigned` package (pure JS on node:crypto's WebCrypto; no openssl
// binary, no network). Not for production: nothing but the demo should trust it.
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { generate } from 'selfsigned';

export interface SelfSigned {
  /** PEM certificate */
  cert: string;
  /** PEM private key (PKCS#8) */
  key: string;
  /** SHA-256 of the DER certificate, colon-separated upper-case hex (as openssl prints it) */
  fingerprint256: string;
  /** the DNS names and IP addresses in its subjectAltName */
  names: string[];
  notAfter: Date;
}

/** A DNS host name we may put in a certificate (letters, digits, hyphens, dots; no wildcard). */
export function isDnsName(name: string): boolean {
  return (
    name.length > 0 &&
    name.length <= 253 &&
    name
      .split('.')
      .every((l) => /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(l) && !/^\d+$/.test(l))
  );
}

/**
 * Make a certificate for `names` (DNS names and IP addresses; duplicates and names that are
 * neither are dropped), valid from an hour ago (clock skew) for `days` days.
 */
export async function makeSelfSigned(names: string[], days = 7): Promise<SelfSigned> {
  const seen = new Set<string>();
  const altNames: { type: 2 | 7; value?: string; ip?: string }[] = [];
  for (const raw of names) {
    const n = raw.toLowerCase();
    if (seen.has(n)) continue;
    if (isIP(n)) altNames.push({ type: 7, ip: n });
    else if (isDnsName(n)) altNames.push({ type: 2, value: n });
    else continue;
    seen.add(n);
  }
  if (altNames.length === 0) throw new TypeError('makeSelfSigned: no usable name');
  const first = [...seen][0]!;
  const notBeforeDate = new Date(Date.now() - 3600_000);
  const notAfterDate = new Date(Date.now() + days * 86400_000);
  const pems = await generate([{ name: 'commonName', value: first }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate,
    notAfterDate,
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames },
    ],
  });
  const x = new X509Certificate(pems.cert);
  return {
    cert: pems.cert,
    key: pems.private,
    fingerprint256: x.fingerprint256,
    names: [...seen],
    notAfter: new Date(x.validTo),
  };
}
