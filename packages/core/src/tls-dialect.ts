// The built-in 'tls' dialect: implicit TLS with no plaintext preamble (IMAPS on 993, POP3S on
// 995, SMTPS on 465, LDAPS on 636): the old TLS Tunnel, expressed as a dialect that asks for TLS
// the moment the client connects.
import type { Dialect, DialectSession } from './dialect.js';

const EMPTY = new Uint8Array(0);

export const tlsDialect: Dialect = {
  name: 'tls',
  description: 'Implicit TLS: the handshake starts at once, no plaintext preamble',
  defaultPorts: { implicit: 993 },
  options: {},
  limits: {},
  create(): DialectSession {
    return {
      start: () => [
        { type: 'starttls', goAhead: EMPTY, unavailable: EMPTY, state: {}, trailing: EMPTY },
      ],
      // Never called before TLS (the engine stops reading at once); nothing to interpret.
      receive: () => [],
      timer: () => [],
      tlsUnavailable: () => [{ type: 'close', reason: 'no backend can take the connection' }],
    };
  },
};
