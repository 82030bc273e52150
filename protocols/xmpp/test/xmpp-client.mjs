// @xmpp/client in its own process (so NODE_EXTRA_CA_CERTS can add the test CA: @xmpp/starttls
// passes no TLS options of its own). Prints one JSON line: { online: jid } or { error }.
// usage: node xmpp-client.mjs PORT DOMAIN USER PASSWORD
import { client } from '@xmpp/client';

const [port, domain, username, password] = process.argv.slice(2);
const xmpp = client({
  service: `xmpp://127.0.0.1:${port}`,
  domain,
  username,
  password,
  resource: 'e2e',
});
xmpp.reconnect.stop();
const done = (result) => {
  process.stdout.write(`${JSON.stringify(result)}\n`);
  xmpp
    .stop()
    .catch(() => {})
    .finally(() => process.exit(0));
};
const timer = setTimeout(() => done({ error: 'timeout' }), 10_000);
xmpp.on('error', (err) => {
  clearTimeout(timer);
  done({ error: String(err?.condition ?? err?.message ?? err) });
});
xmpp.on('online', (address) => {
  clearTimeout(timer);
  done({ online: address.toString() });
});
xmpp.start().catch(() => {});
