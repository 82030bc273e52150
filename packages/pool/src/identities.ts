// Certificates chosen by SNI (RFC 6066 §3): exact names first, then one-label "*." wildcards
// (RFC 6125 §6.4.3: the wildcard covers exactly one label), else the default identity.
import { constants, createHash, X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { PoolError } from './errors.js';

export interface IdentityConfig {
  /** PEM certificate chain */
  cert: string | Buffer;
  /** PEM private key */
  key: string | Buffer;
  /** Names served; default: the certificate's DNS subjectAltNames (and CN when it has none). */
  names?: string[];
  /** Use this identity when no name matches (default: the first identity). */
  default?: boolean;
}

export interface Identity {
  names: string[];
  context: tls.SecureContext;
  fingerprint256: string;
}

/** Mozilla's "intermediate" TLS 1.2 list (ECDHE + AES-GCM / ChaCha20-Poly1305), then Node's TLS 1.3 suites. */
export const TLS12_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

export interface ContextOptions {
  /** PEM CA certificates trusted for client certificates */
  ca?: string | Buffer | Array<string | Buffer>;
  minVersion?: tls.SecureVersion;
  /** OpenSSL cipher list; default TLS12_CIPHERS. */
  ciphers?: string;
}

export function certificateNames(cert: string | Buffer): string[] {
  const x = new X509Certificate(cert);
  const dns = (x.subjectAltName ?? '')
    .split(/,\s*/)
    .filter((s) => s.startsWith('DNS:'))
    .map((s) => s.slice(4).toLowerCase());
  if (dns.length > 0) return dns;
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(x.subject)?.[1];
  return cn ? [cn.toLowerCase()] : [];
}

export class IdentityStore {
  readonly #exact = new Map<string, Identity>();
  readonly #wild = new Map<string, Identity>();
  readonly default: Identity;
  readonly all: Identity[];
  // The certificate and key of each identity, kept so a client handshake (issue 18) can build a
  // context with the trust settings of its own request; never exposed.
  readonly #credentials = new Map<Identity, { cert: string | Buffer; key: string | Buffer }>();

  constructor(configs: IdentityConfig[], options: ContextOptions = {}) {
    if (configs.length === 0)
      throw new PoolError(
        'TLSPROXY_ERR_POOL_CONFIG',
        'at least one identity (certificate and key) is needed',
      );
    this.all = configs.map((c, i) => {
      let context: tls.SecureContext;
      let fp: string;
      try {
        fp = new X509Certificate(c.cert).fingerprint256;
        context = tls.createSecureContext({
          cert: c.cert,
          key: c.key,
          ...(options.ca ? { ca: options.ca } : {}),
          minVersion: options.minVersion ?? 'TLSv1.2',
          // TLS 1.2 suites: forward secrecy and AEAD only (Mozilla "intermediate"); TLS 1.3
          // suites are Node's default (all AEAD).
          ciphers: options.ciphers ?? TLS12_CIPHERS,
          // tls.Server sets a session id context; a bare TLSSocket does not, and without one
          // OpenSSL fails TLS 1.2 session resumption (and renegotiation) with internal_error
          // whenever a client certificate is requested.
          sessionIdContext: createHash('sha256')
            .update(`tlsproxy-pool:${fp}`)
            .digest('hex')
            .slice(0, 32),
          // A renegotiation (control 'renegotiate') must be a full handshake, or the client just
          // resumes its session and is never asked for a certificate.
          secureOptions: constants.SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION,
        });
      } catch (err) {
        throw new PoolError(
          'TLSPROXY_ERR_POOL_CONFIG',
          `identity ${i + 1}: ${(err as Error).message}`,
          { cause: err },
        );
      }
      const identity: Identity = {
        names: (c.names ?? certificateNames(c.cert)).map((n) => n.toLowerCase()),
        context,
        fingerprint256: fp,
      };
      this.#credentials.set(identity, { cert: c.cert, key: c.key });
      return identity;
    });
    for (const id of this.all) {
      for (const n of id.names) {
        if (n.startsWith('*.')) {
          if (!this.#wild.has(n.slice(2))) this.#wild.set(n.slice(2), id);
        } else if (!this.#exact.has(n)) this.#exact.set(n, id);
      }
    }
    const d = configs.findIndex((c) => c.default);
    this.default = this.all[Math.max(d, 0)]!;
  }

  /** The identity serving `name`, or undefined when only the default would. */
  match(name: string): Identity | undefined {
    const n = name.toLowerCase().replace(/\.$/, '');
    const exact = this.#exact.get(n);
    if (exact) return exact;
    const dot = n.indexOf('.');
    return dot > 0 ? this.#wild.get(n.slice(dot + 1)) : undefined;
  }

  select(name: string | null | undefined): Identity {
    return (name ? this.match(name) : undefined) ?? this.default;
  }

  /**
   * The identity named exactly `name` (any case; a wildcard name only as written) with its
   * certificate and key, for presenting as a client certificate.
   */
  named(
    name: string,
  ): { identity: Identity; cert: string | Buffer; key: string | Buffer } | undefined {
    const n = name.toLowerCase();
    const identity = this.all.find((i) => i.names.includes(n));
    const creds = identity && this.#credentials.get(identity);
    return identity && creds ? { identity, ...creds } : undefined;
  }

  /** Every name served, for dialects that need the list (e.g. XMPP domains). */
  names(): string[] {
    return this.all.flatMap((i) => i.names);
  }
}
