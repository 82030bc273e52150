// Identity store: one SSL_CTX per certificate, chosen by SNI (RFC 6066 §3) with exact names
// first, then one-label "*." wildcards (RFC 6125 §6.4.3), else the default identity. A store is
// immutable once built and reference-counted: a reload builds a new store, and every connection
// keeps the store it started with (SSL_set_SSL_CTX holds its own reference to the SSL_CTX).
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "engine.h"

// Never prompt on a terminal for an encrypted key: an encrypted key is a configuration error.
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
  (void)buf, (void)size, (void)rwflag, (void)u;
  return -1;
}

static void set_err(char *err, size_t errlen, const char *what) {
  unsigned long e = ERR_peek_last_error();
  char detail[256] = "";
  if (e) ERR_error_string_n(e, detail, sizeof detail);
  snprintf(err, errlen, "%s%s%s", what, detail[0] ? ": " : "", detail);
  ERR_clear_error();
}

// The certificate chain from PEM: the first certificate is the leaf, the rest the chain.
static int load_chain(SSL_CTX *ctx, const char *pem, char *err, size_t errlen) {
  BIO *bio = BIO_new_mem_buf(pem, -1);
  if (!bio) return set_err(err, errlen, "out of memory"), -1;
  X509 *leaf = PEM_read_bio_X509_AUX(bio, NULL, no_passphrase, NULL);
  if (!leaf || SSL_CTX_use_certificate(ctx, leaf) != 1) {
    X509_free(leaf);
    BIO_free(bio);
    return set_err(err, errlen, "certificate"), -1;
  }
  X509_free(leaf);
  for (;;) {
    X509 *x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
    if (!x) break;
    if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
      X509_free(x);
      BIO_free(bio);
      return set_err(err, errlen, "certificate chain"), -1;
    }
  }
  ERR_clear_error(); // the loop above ends on "no start line"
  BIO_free(bio);
  return 0;
}

static int load_key(SSL_CTX *ctx, const char *pem, char *err, size_t errlen) {
  BIO *bio = BIO_new_mem_buf(pem, -1);
  if (!bio) return set_err(err, errlen, "out of memory"), -1;
  EVP_PKEY *k = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
  BIO_free(bio);
  if (!k || SSL_CTX_use_PrivateKey(ctx, k) != 1) {
    EVP_PKEY_free(k);
    return set_err(err, errlen, "private key"), -1;
  }
  EVP_PKEY_free(k);
  if (SSL_CTX_check_private_key(ctx) != 1)
    return set_err(err, errlen, "private key does not match the certificate"), -1;
  return 0;
}

// Trusted CAs: for client certificates (server side, also sent as the acceptable CA names,
// RFC 8446 §4.2.4) or for the server's certificate (client side, names not sent).
static int load_trust(SSL_CTX *ctx, const char *pem, int as_client_ca, char *err, size_t errlen) {
  BIO *bio = BIO_new_mem_buf(pem, -1);
  if (!bio) return set_err(err, errlen, "out of memory"), -1;
  X509_STORE *store = SSL_CTX_get_cert_store(ctx);
  int n = 0;
  for (;;) {
    X509 *x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
    if (!x) break;
    if (X509_STORE_add_cert(store, x) != 1 || (as_client_ca && SSL_CTX_add_client_CA(ctx, x) != 1)) {
      X509_free(x);
      BIO_free(bio);
      return set_err(err, errlen, "ca"), -1;
    }
    X509_free(x);
    n++;
  }
  ERR_clear_error();
  BIO_free(bio);
  if (n == 0) return snprintf(err, errlen, "ca: no certificate found"), -1;
  return 0;
}

static SSL_CTX *make_ctx(const store_params *p, int i, char *err, size_t errlen) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return set_err(err, errlen, "SSL_CTX_new"), NULL;
  // Renegotiation from clients is refused (a CPU-exhaustion lever; OpenSSL 3 refuses it unless
  // SSL_OP_ALLOW_CLIENT_RENEGOTIATION, cleared here in case a default ever changes), while the
  // server may still start one (control 'renegotiate', TLS 1.2) — so no SSL_OP_NO_RENEGOTIATION,
  // which would forbid both. A renegotiation is a full handshake (otherwise the client just
  // resumes and is never asked for a certificate). Compression is off (CRIME); the server's
  // suite order wins.
  SSL_CTX_clear_options(ctx, SSL_OP_ALLOW_CLIENT_RENEGOTIATION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION);
  // Release the record buffers of idle connections (tens of KiB each); partial writes so a
  // full socket does not hold a whole chunk hostage; the retry buffer may move (we copy it).
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // Read whole socket buffers, not a 5-byte record header and then its body: half the read()s
  // per handshake and per record. What is read ahead waits inside OpenSSL, not in epoll's view:
  // the relay tries SSL_read again until it blocks (rd_want), so nothing is stranded there.
  SSL_CTX_set_read_ahead(ctx, 1);
  if (SSL_CTX_set_min_proto_version(ctx, p->min_version) != 1 ||
      SSL_CTX_set_cipher_list(ctx, p->ciphers) != 1 ||
      (p->ciphersuites && SSL_CTX_set_ciphersuites(ctx, p->ciphersuites) != 1)) {
    set_err(err, errlen, "ciphers or minimum version");
    SSL_CTX_free(ctx);
    return NULL;
  }
  // Sessions are cached per SSL_CTX; a session id context is required once client
  // certificates are requested, or OpenSSL refuses resumption with internal_error.
  char sid[32];
  int sidlen = snprintf(sid, sizeof sid, "tlsproxy-native:%d", i);
  SSL_CTX_set_session_id_context(ctx, (const unsigned char *)sid, (unsigned)sidlen);
  if (load_chain(ctx, p->certs[i], err, errlen) != 0 ||
      load_key(ctx, p->keys[i], err, errlen) != 0 ||
      (p->ca && load_trust(ctx, p->ca, 1, err, errlen) != 0)) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  SSL_CTX_set_client_hello_cb(ctx, conn_client_hello_cb, NULL);
  SSL_CTX_set_alpn_select_cb(ctx, conn_alpn_cb, NULL);
  return ctx;
}

static char *lower_dup(const char *s) {
  size_t n = strlen(s);
  char *d = malloc(n + 1);
  if (!d) return NULL;
  for (size_t i = 0; i <= n; i++) d[i] = (char)tolower((unsigned char)s[i]);
  if (n > 0 && d[n - 1] == '.') d[n - 1] = 0;
  return d;
}

idstore *idstore_create(const store_params *p, char *err, size_t errlen) {
  if (p->n < 1) return snprintf(err, errlen, "no identity"), NULL;
  idstore *s = calloc(1, sizeof *s);
  if (!s) return snprintf(err, errlen, "out of memory"), NULL;
  s->magic = MAGIC_STORE;
  atomic_init(&s->refs, 1);
  s->ctx = calloc((size_t)p->n, sizeof *s->ctx);
  int total = 0;
  for (int i = 0; i < p->n; i++) total += p->nnames[i];
  s->names = calloc((size_t)(total > 0 ? total : 1), sizeof *s->names);
  if (!s->ctx || !s->names) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  for (int i = 0; i < p->n; i++) {
    char what[512];
    s->ctx[i] = make_ctx(p, i, what, sizeof what);
    if (!s->ctx[i]) {
      snprintf(err, errlen, "identity %d: %s", i + 1, what);
      goto fail;
    }
    s->nctx++;
    for (int j = 0; j < p->nnames[i]; j++) {
      const char *n = p->names[i][j];
      int wild = n[0] == '*' && n[1] == '.';
      char *d = lower_dup(wild ? n + 2 : n);
      if (!d) {
        snprintf(err, errlen, "out of memory");
        goto fail;
      }
      s->names[s->nnames++] = (id_name){.name = d, .wildcard = wild, .index = i};
    }
  }
  s->default_index = p->default_index >= 0 && p->default_index < p->n ? p->default_index : 0;
  return s;
fail:
  atomic_store(&s->refs, 1);
  idstore_unref(s);
  return NULL;
}

void idstore_ref(idstore *s) { atomic_fetch_add(&s->refs, 1); }

void idstore_unref(idstore *s) {
  if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
  for (int i = 0; i < s->nctx; i++) SSL_CTX_free(s->ctx[i]);
  for (int i = 0; i < s->nnames; i++) free(s->names[i].name);
  free(s->ctx);
  free(s->names);
  s->magic = 0;
  free(s);
}

// First configured identity wins a name, as in pool's IdentityStore. A linear scan: stores hold
// a handful of names, and this runs once per handshake.
SSL_CTX *idstore_select(const idstore *s, const char *name) {
  if (name && name[0]) {
    char n[256];
    size_t len = strlen(name);
    if (len < sizeof n) {
      for (size_t i = 0; i <= len; i++) n[i] = (char)tolower((unsigned char)name[i]);
      if (len > 0 && n[len - 1] == '.') n[--len] = 0;
      for (int i = 0; i < s->nnames; i++)
        if (!s->names[i].wildcard && strcmp(s->names[i].name, n) == 0)
          return s->ctx[s->names[i].index];
      const char *dot = strchr(n, '.');
      if (dot && dot > n)
        for (int i = 0; i < s->nnames; i++)
          if (s->names[i].wildcard && strcmp(s->names[i].name, dot + 1) == 0)
            return s->ctx[s->names[i].index];
    }
  }
  return s->ctx[s->default_index];
}

// ---- the client role (issue 18) ----

// A client context: the server side's version and suite policy, verification always on (the
// host name is set per connection: SSL_set1_host / X509_VERIFY_PARAM_set1_ip_asc), no
// renegotiation (a TLS 1.2 server's HelloRequest is refused: its certificate was checked once,
// and a renegotiation could bring another), no session cache (a session verified for one name is
// never offered to another server), an optional client certificate.
cctx *cctx_create(const client_params *p, char *err, size_t errlen) {
  if (!p->ca) return snprintf(err, errlen, "ca: no certificate found"), NULL;
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) return set_err(err, errlen, "SSL_CTX_new"), NULL;
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_read_ahead(ctx, 1); // as the server side's, same reason
  if (SSL_CTX_set_min_proto_version(ctx, p->min_version) != 1 ||
      SSL_CTX_set_cipher_list(ctx, p->ciphers) != 1 ||
      (p->ciphersuites && SSL_CTX_set_ciphersuites(ctx, p->ciphersuites) != 1)) {
    set_err(err, errlen, "ciphers or minimum version");
    SSL_CTX_free(ctx);
    return NULL;
  }
  if (load_trust(ctx, p->ca, 0, err, errlen) != 0 ||
      (p->cert && (load_chain(ctx, p->cert, err, errlen) != 0 ||
                   load_key(ctx, p->key ? p->key : "", err, errlen) != 0))) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, conn_verify_cb);
  cctx *c = calloc(1, sizeof *c);
  if (!c) {
    SSL_CTX_free(ctx);
    return snprintf(err, errlen, "out of memory"), NULL;
  }
  c->magic = MAGIC_CCTX;
  c->ctx = ctx;
  return c;
}

void cctx_free(cctx *c) {
  if (!c) return;
  SSL_CTX_free(c->ctx);
  c->magic = 0;
  free(c);
}
