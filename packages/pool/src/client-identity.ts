import type { X509Certificate } from 'node:crypto';
import type tls from 'node:tls';

export interface ClientIdentity {
  subject: string;
  issuer: string;
  san: { dns: string[]; email: string[]; uri: string[] };
  fingerprint256: string;
  certificate?: string;
}

function dn(s: string): string {
  return s.split('\n').filter(Boolean).join(', ');
}

/** Whether the peer's certificate chain verified against the trusted CAs. A bare server-side
 * TLSSocket never sets `authorized` (only tls.Server does), so ask OpenSSL directly. */
export function peerVerified(socket: tls.TLSSocket): boolean {
  if (!socket.getPeerX509Certificate()) return false;
  const handle = (socket as unknown as { _handle?: { verifyError(): Error | null } })._handle;
  return handle ? handle.verifyError() === null : socket.authorized;
}

/** The client certificate's identity, only when it was verified against the trusted CAs. */
export function clientIdentity(socket: tls.TLSSocket): ClientIdentity | null {
  if (!peerVerified(socket)) return null;
  const x = socket.getPeerX509Certificate();
  if (!x) return null;
  return identityFromCertificate(x);
}

/** The identity a certificate names (subject, issuer, subjectAltName, fingerprint, PEM); used by
 * both engines once the certificate is verified. */
export function identityFromCertificate(x: X509Certificate): ClientIdentity {
  const san = { dns: [] as string[], email: [] as string[], uri: [] as string[] };
  for (const part of (x.subjectAltName ?? '').split(/,\s*/)) {
    if (part.startsWith('DNS:')) san.dns.push(part.slice(4));
    else if (part.startsWith('email:')) san.email.push(part.slice(6));
    else if (part.startsWith('URI:')) san.uri.push(part.slice(4));
  }
  return {
    subject: dn(x.subject),
    issuer: dn(x.issuer),
    san,
    fingerprint256: x.fingerprint256,
    certificate: x.toString(),
  };
}
