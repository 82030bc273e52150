// Loop threads and the life of one connection.
//
// Each loop thread has an epoll set, an eventfd for its command queue, and a list of the
// connections it owns. A connection goes NEW → HANDSHAKE (⇄ SNI_WAIT while JS decides on the
// server name) → RELAY → CLOSED; conn_step() is the only place that moves it between states.
// Everything here is non-blocking: sockets are O_NONBLOCK, the queue lock is held only to copy
// commands, and events go to JS with napi_tsfn_nonblocking.
//
// Relay rules (the same as the node:tls engine's): a side is read only when nothing read from it
// earlier is still waiting for the other side (backpressure: at most one pass, RELAY_GATHER bytes,
// held per direction); the client's close_notify or EOF ends only the backend's read side
// (shutdown(SHUT_WR) on the plaintext end) so the backend can still answer; the backend's EOF,
// once its last bytes are out, becomes close_notify and a FIN to the client. The connection ends
// when both directions have ended, on any error, on a timeout, or when the engine stops.
//
// Why one file of this size: every transition of a connection is in conn_step() and the
// functions it calls (handshake, relay, renegotiation, timeouts, commands), which share the
// connection's private state; split across files they would need that state in a header and the
// "one place moves it" rule would be harder to see. ctx.c (contexts) and addon.c (N-API) are apart.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "engine.h"

// Steps of one connection per wake-up before others get a turn.
#define MAX_ROUNDS 16
// Timeouts are checked this often (ms): handshake deadlines of seconds need no finer grain.
#define SWEEP_MS 100
// Longest an event JS does not wait for (EV_COMPLETED) stays in the loop (see ev_flush).
#define LAZY_MS 50
#define MAX_EVENTS 64
// Byte counts of a live session go to JS at once when it has been quiet, then at most this often
// (ms), in the turn's batch: metrics see interactive traffic promptly and bulk traffic costs a JS
// call per session per interval, not per record.
#define BYTES_REPORT_MS 500
// Byte counts wait while JS has this many events not yet taken (ev_flush): ~50 KiB of them.
#define BYTES_MAX_QUEUED 256
// Commands taken from the queue per turn, so a flood of submissions cannot starve the relay.
#define MAX_CMDS_PER_TURN 256

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

// ---- events to JS ----

static void ev_free(ev *e) {
  if (e->fd >= 0) close(e->fd);
  free(e->text);
  free(e->alpn);
  free(e->server_name);
  free(e->der);
  free(e->data);
}

void ev_batch_free(ev_batch *b) {
  if (!b) return;
  for (size_t i = 0; i < b->n; i++) ev_free(&b->v[i]);
  free(b->v);
  free(b);
}

// A slot in this turn's batch, or NULL when out of memory (the caller then cleans up itself).
static ev *ev_add(loop *L, enum ev_type type, double jsid) {
  if (!L->out) {
    L->out = calloc(1, sizeof *L->out);
    if (!L->out) return NULL;
  }
  ev_batch *b = L->out;
  if (b->n == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 16;
    ev *v = realloc(b->v, cap * sizeof *v);
    if (!v) return NULL;
    b->v = v;
    b->cap = cap;
  }
  ev *e = &b->v[b->n++];
  memset(e, 0, sizeof *e);
  if (type != EV_COMPLETED) L->urgent++;
  else if (!L->lazy_since) L->lazy_since = now_ms();
  e->type = type;
  e->jsid = jsid;
  e->fd = -1;
  return e;
}

// One call into JS per turn. The queue of the thread-safe function is unbounded, but what it
// holds is bounded: each connection produces at most a handful of events in its life, plus one
// per control command, and commands come through a bounded queue. Byte counts, the one event a
// connection makes again and again without JS asking, wait in their connection (counters: the
// next report or the end carries them) while JS has BYTES_MAX_QUEUED events not yet taken — a
// JS thread that stalls then finds at most that many of them waiting, not one more per
// connection every BYTES_REPORT_MS for as long as it stalls.
//
// EV_COMPLETED alone does not make a call: it only tells the proxy that a session handed out
// early may give back its place under maxHandshakes, which can wait (LAZY_MS at most) for the
// next batch JS needs anyway. Measured: a call of its own per connection cost some 4 % of the
// CPU per connection under load (bench/ab.mjs, against a control). Unless JS asked for it at
// once (early_prompt): a listener short of handshake places, where 50 ms held per session would
// refuse clients while no handshake is running.
static void ev_flush(loop *L, uint64_t now) {
  if (!L->out || L->out->n == 0) return;
  if (!L->urgent && now - L->lazy_since < LAZY_MS) return;
  ev_batch *b = L->out;
  L->out = NULL;
  L->urgent = 0;
  L->lazy_since = 0;
  int n = (int)b->n;
  atomic_fetch_add(&L->eng->queued, n); // call_js takes them off
  if (napi_call_threadsafe_function(L->eng->tsfn, b, napi_tsfn_nonblocking) != napi_ok) {
    atomic_fetch_sub(&L->eng->queued, n);
    ev_batch_free(b); // closing: nobody will take the descriptors, so close them
  }
}

// ---- reference counting ----

void conn_ref(conn *c) { atomic_fetch_add(&c->refs, 1); }

void conn_unref(conn *c) {
  if (!c || atomic_fetch_sub(&c->refs, 1) != 1) return;
  // Only the struct is left by now (conn_close freed the rest), unless it never reached a
  // loop: then the descriptor still belongs to whoever submitted it.
  if (c->ssl) SSL_free(c->ssl);
  if (c->store) idstore_unref(c->store);
  free(c->alpn);
  free(c->sni);
  free(c->c2b.data);
  free(c->b2c.data);
  c->magic = 0;
  free(c);
}

// What both roles share: NULL when out of memory.
static conn *conn_alloc(int fd, double jsid, const unsigned char *alpn, unsigned alpn_len,
                        uint64_t hs_timeout_ms, uint64_t idle_ms) {
  conn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->magic = MAGIC_CONN;
  atomic_init(&c->refs, 1);
  c->jsid = jsid;
  c->state = ST_NEW;
  c->tls_fd = fd;
  c->plain_fd = -1;
  c->hs_deadline = now_ms() + hs_timeout_ms;
  c->hs_timeout_ms = hs_timeout_ms;
  c->idle_ms = idle_ms;
  if (alpn_len) {
    c->alpn = malloc(alpn_len);
    if (!c->alpn) {
      conn_unref(c);
      return NULL;
    }
    memcpy(c->alpn, alpn, alpn_len);
    c->alpn_len = alpn_len;
  }
  return c;
}

// Sessions resume only where they were made: under the same identity (as the context's own id
// says) and the same client-certificate policy. A resumed handshake asks for no certificate, so a
// session from a 'none' handshake resumed on a 'required' one would pass with no identity.
// (SSL_set_SSL_CTX keeps an id set here rather than taking the new context's: so it is set again
// after every switch.)
static int set_session_context(conn *c, SSL_CTX *ctx) {
  int i = 0;
  while (i < c->store->nctx && c->store->ctx[i] != ctx) i++;
  char sid[40];
  int n = snprintf(sid, sizeof sid, "tlsproxy-native:%d:%d", i, (int)c->policy);
  return SSL_set_session_id_context(c->ssl, (const unsigned char *)sid, (unsigned)n);
}

conn *conn_new(idstore *store, int fd, double jsid, enum cert_policy policy,
               const unsigned char *alpn, unsigned alpn_len, int check_sni,
               uint64_t hs_timeout_ms, uint64_t idle_ms, int want_bytes, int early,
               int prompt) {
  conn *c = conn_alloc(fd, jsid, alpn, alpn_len, hs_timeout_ms, idle_ms);
  if (!c) return NULL;
  c->policy = policy;
  c->check_sni = check_sni;
  c->want_bytes = want_bytes;
  // A client certificate arrives with the client's Finished: then the identity is not known
  // before the end of the handshake, and nothing goes early.
  c->early = early && policy == POLICY_NONE;
  c->early_prompt = prompt;
  c->ssl = SSL_new(store->ctx[store->default_index]);
  if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) goto fail;
  idstore_ref(store);
  c->store = store;
  if (set_session_context(c, store->ctx[store->default_index]) != 1) goto fail;
  SSL_set_app_data(c->ssl, c);
  SSL_set_accept_state(c->ssl);
  if (policy != POLICY_NONE)
    SSL_set_verify(c->ssl,
                   SSL_VERIFY_PEER | (policy == POLICY_REQUIRED ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                   conn_verify_cb);
  return c;
fail:
  ERR_clear_error();
  conn_unref(c);
  return NULL;
}

// The client role. Verification is the context's (SSL_VERIFY_PEER, always); the name to check is
// this connection's: a DNS name with SSL_set1_host (SAN dNSName, else the CN as node's
// checkServerIdentity falls back to, wildcards only as a whole left-most label) and as SNI, or an
// IP address against the iPAddress SANs, without SNI (RFC 6066 §3: no literal addresses).
conn *conn_new_client(SSL_CTX *ctx, int fd, double jsid, const unsigned char *alpn,
                      unsigned alpn_len, const char *name, int is_ip, uint64_t hs_timeout_ms,
                      uint64_t idle_ms) {
  conn *c = conn_alloc(fd, jsid, alpn, alpn_len, hs_timeout_ms, idle_ms);
  if (!c) return NULL;
  c->client = 1;
  c->ssl = SSL_new(ctx);
  if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1 || !(c->sni = strdup(name))) goto fail;
  SSL_set_app_data(c->ssl, c);
  SSL_set_connect_state(c->ssl);
  if (is_ip) {
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name) != 1) goto fail;
  } else {
    SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set1_host(c->ssl, name) != 1 || SSL_set_tlsext_host_name(c->ssl, name) != 1) goto fail;
  }
  // Offered in the caller's order; the server picks. (SSL_set_alpn_protos returns 0 on success.)
  if (c->alpn_len && SSL_set_alpn_protos(c->ssl, c->alpn, c->alpn_len) != 0) goto fail;
  return c;
fail:
  ERR_clear_error();
  conn_unref(c);
  return NULL;
}

// ---- epoll registration ----

// The low bit of the epoll cookie says which of the connection's two descriptors woke us.
#define TAG_PLAIN 1u

static void reg(loop *L, conn *c, int plain, uint32_t want) {
  // A mask of 0 still reports EPOLLERR/EPOLLHUP (epoll_ctl always adds them): a paused side
  // is watched for a reset (see on_io).
  int fd = plain ? c->plain_fd : c->tls_fd;
  uint32_t *cur = plain ? &c->plain_reg : &c->tls_reg;
  int *in = plain ? &c->plain_in_epoll : &c->tls_in_epoll;
  if (fd < 0 || (plain ? c->plain_hup : c->tls_hup)) return;
  if (*in && *cur == want) return;
  struct epoll_event e = {.events = want, .data.u64 = (uint64_t)(uintptr_t)c | (plain ? TAG_PLAIN : 0)};
  if (epoll_ctl(L->epfd, *in ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &e) == 0) {
    *in = 1;
    *cur = want;
  }
}

static void unreg(loop *L, conn *c, int plain) {
  int fd = plain ? c->plain_fd : c->tls_fd;
  int *in = plain ? &c->plain_in_epoll : &c->tls_in_epoll;
  // Explicitly: a descriptor with a duplicate elsewhere stays in the epoll set after close().
  if (*in && fd >= 0) epoll_ctl(L->epfd, EPOLL_CTL_DEL, fd, NULL);
  *in = 0;
}

// ---- closing ----

static void list_remove(loop *L, conn *c) {
  if (c->prev) c->prev->next = c->next;
  else L->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  L->nconns--;
}

static void reneg_answer(loop *L, conn *c, const char *code, const char *text);

// Release everything but the struct; the struct goes after this epoll batch (events for it may
// still be in the batch) when its last reference is dropped.
static void conn_close(loop *L, conn *c) {
  if (c->state == ST_CLOSED) return;
  // A renegotiation the backend asked for gets its answer even when the session ends first
  // (client reset or close, error): otherwise its control call would wait forever.
  if (c->reneg_pending) reneg_answer(L, c, "TLSPROXY_ERR_POOL_UNKNOWN_KEY", "session ended");
  c->state = ST_CLOSED;
  unreg(L, c, 0);
  unreg(L, c, 1);
  if (c->tls_fd >= 0) close(c->tls_fd);
  if (c->plain_fd >= 0) close(c->plain_fd);
  c->tls_fd = c->plain_fd = -1;
  SSL_free(c->ssl);
  c->ssl = NULL;
  idstore_unref(c->store);
  c->store = NULL;
  free(c->c2b.data);
  free(c->b2c.data);
  c->c2b = c->b2c = (relay_buf){0};
  list_remove(L, c);
  c->zombie_next = L->zombies;
  L->zombies = c;
}

// `fmt` with its one %s filled, in a buffer the event owns (freed with it), or NULL when out of
// memory (JS then has the code alone).
static char *ev_text(const char *fmt, const char *detail) {
  if (!detail) detail = "";
  size_t n = strlen(fmt) + strlen(detail) + 1;
  char *text = malloc(n);
  if (text) snprintf(text, n, fmt, detail);
  return text;
}

static void conn_fail(loop *L, conn *c, const char *code, const char *fmt, const char *detail) {
  // Handed off early: JS holds a session for it, so the handshake failing after that (a bad or
  // missing client Finished, the deadline, a close) ends the session — the backend's end is
  // closed with nothing relayed to it — and JS forgets the control key.
  int ended = c->early_sent && c->state != ST_RELAY;
  ev *e = ev_add(L, ended ? EV_ENDED : EV_FAILED, c->jsid);
  if (e) {
    if (ended) e->code = "TLS handshake failed after the hand-off";
    else {
      e->code = code;
      e->reason = c->fail_reason;
    }
    e->text = ev_text(fmt, detail); // why: JS's log line (onEnd's failure) or the handshake error
  }
  conn_close(L, c);
}

static void conn_end(loop *L, conn *c, const char *why) {
  ev *e = ev_add(L, EV_ENDED, c->jsid);
  if (e) {
    e->bytes_in = c->bytes_in - c->rep_in;
    e->bytes_out = c->bytes_out - c->rep_out;
    e->code = why;
  }
  conn_close(L, c);
}

// Pool's VerifyReason for an X509_V_ERR_* (the table of pool's engine.ts, X509_REASONS), or NULL
// where pool has none (its handshake then fails with TLSPROXY_ERR_POOL_HANDSHAKE).
static const char *verify_reason(long v) {
  switch (v) {
  case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
  case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
  case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
  case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
  case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
  case X509_V_ERR_CERT_UNTRUSTED:
    return "unknown-ca";
  case X509_V_ERR_UNABLE_TO_GET_CRL:
  case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
  case X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE:
  case X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY:
  case X509_V_ERR_CERT_SIGNATURE_FAILURE:
  case X509_V_ERR_CRL_SIGNATURE_FAILURE:
  case X509_V_ERR_CRL_NOT_YET_VALID:
  case X509_V_ERR_CRL_HAS_EXPIRED:
  case X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD:
  case X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD:
  case X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD:
  case X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD:
  case X509_V_ERR_OUT_OF_MEM:
  case X509_V_ERR_CERT_CHAIN_TOO_LONG:
  case X509_V_ERR_INVALID_CA:
  case X509_V_ERR_PATH_LENGTH_EXCEEDED:
  case X509_V_ERR_INVALID_PURPOSE:
  case X509_V_ERR_CERT_REJECTED:
    return "bad-certificate";
  case X509_V_ERR_CERT_HAS_EXPIRED: return "expired";
  case X509_V_ERR_CERT_NOT_YET_VALID: return "not-yet-valid";
  case X509_V_ERR_CERT_REVOKED: return "revoked";
  case X509_V_ERR_HOSTNAME_MISMATCH:
  case X509_V_ERR_IP_ADDRESS_MISMATCH:
    return "name-mismatch";
  }
  return NULL;
}

// A handshake that OpenSSL gave up on: name the reason the way the node:tls engine does.
static void handshake_failed(loop *L, conn *c, int sslerr) {
  unsigned long e = ERR_peek_last_error();
  char detail[256] = "connection closed";
  if (e) ERR_error_string_n(e, detail, sizeof detail);
  else if (sslerr == SSL_ERROR_SYSCALL && errno) snprintf(detail, sizeof detail, "%s", strerror(errno));
  ERR_clear_error();
  if (c->client) {
    // The server's certificate failed verification (the first error: the callback stops there),
    // or the handshake failed for another reason, or the server went away without a word.
    if (c->verify_err != 0) {
      const char *reason = verify_reason(c->verify_err);
      char msg[320];
      snprintf(msg, sizeof msg, reason ? "server certificate rejected (%s): %s" : "%s%s",
               reason ? reason : "TLS handshake failed: ",
               X509_verify_cert_error_string(c->verify_err));
      c->fail_reason = reason;
      conn_fail(L, c, reason ? "TLSPROXY_ERR_POOL_VERIFY" : "TLSPROXY_ERR_POOL_HANDSHAKE", "%s",
                msg);
    } else if (!e && (sslerr == SSL_ERROR_SYSCALL || sslerr == SSL_ERROR_ZERO_RETURN) && !errno) {
      conn_fail(L, c, "TLSPROXY_ERR_POOL_HANDSHAKE", "server closed during the TLS handshake%s",
                NULL);
    } else {
      conn_fail(L, c, "TLSPROXY_ERR_POOL_HANDSHAKE", "TLS handshake failed: %s", detail);
    }
  } else if (c->fail_code) {
    conn_fail(L, c, c->fail_code, "server name \"%s\" refused", c->sni);
  } else if (c->verify_err != 0 ||
             (e && ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)) {
    const char *why = c->verify_err ? X509_verify_cert_error_string(c->verify_err) : "none sent";
    conn_fail(L, c, "TLSPROXY_ERR_POOL_CLIENT_CERT",
              c->policy == POLICY_REQUIRED ? "client certificate required: %s"
                                           : "client certificate not trusted: %s",
              why);
  } else {
    conn_fail(L, c, "TLSPROXY_ERR_POOL_HANDSHAKE", "TLS handshake failed: %s", detail);
  }
}

// ---- SSL callbacks ----

// The first host_name of a server_name extension (RFC 6066 §3), checked byte by byte: this is
// the peer's input. Returns 0 ok (name may be NULL), -1 malformed.
static int parse_sni(const unsigned char *p, size_t len, char **out) {
  *out = NULL;
  if (len < 2) return -1;
  size_t list = ((size_t)p[0] << 8) | p[1];
  if (list + 2 != len) return -1;
  p += 2;
  while (list >= 3) {
    unsigned type = p[0];
    size_t n = ((size_t)p[1] << 8) | p[2];
    if (n + 3 > list) return -1;
    if (type == 0) { // host_name
      if (n == 0 || n > 255 || memchr(p + 3, 0, n)) return -1;
      char *s = malloc(n + 1);
      if (!s) return -1;
      memcpy(s, p + 3, n);
      s[n] = 0;
      *out = s;
      return 0;
    }
    p += 3 + n;
    list -= 3 + n;
  }
  return list == 0 ? 0 : -1;
}

// A host name as RFC 6066 §3 has it — a DNS name in A-labels (one trailing dot tolerated):
// labels of 1..63 letters, digits, '_' (seen in the wild) and '-' (not first or last), 253
// octets at most; the node:tls engine's test is the same. Anything else (spaces, CR/LF, UTF-8)
// would go on to the backend's server-name check, its hand-off info and a legacy server's
// PROXY header: refused with unrecognized_name.
static int host_name_ok(const char *s) {
  size_t len = strlen(s);
  if (len > 0 && s[len - 1] == '.') len--;
  if (len == 0 || len > 253) return 0;
  size_t label = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '.') {
      if (label == 0 || s[i - 1] == '-') return 0;
      label = 0;
      continue;
    }
    int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '_' || (ch == '-' && label > 0);
    if (!ok || ++label > 63) return 0;
  }
  return label > 0 && s[len - 1] != '-';
}

static int is_ip_literal(const char *s) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

int conn_client_hello_cb(SSL *ssl, int *al, void *arg) {
  (void)arg;
  conn *c = SSL_get_app_data(ssl);
  if (!c) return SSL_CLIENT_HELLO_SUCCESS;
  if (!c->sni_parsed) {
    const unsigned char *p;
    size_t len;
    c->sni_parsed = 1;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len) == 1 &&
        parse_sni(p, len, &c->sni) != 0) {
      *al = SSL_AD_DECODE_ERROR;
      return SSL_CLIENT_HELLO_ERROR;
    }
    if (c->sni && is_ip_literal(c->sni)) {
      // RFC 6066 section 3: an address is no HostName. Some clients send one anyway: as if
      // they had sent none (the default identity, no question to JS, no name handed on).
      free(c->sni);
      c->sni = NULL;
    }
    if (c->sni && !host_name_ok(c->sni)) {
      c->fail_code = "TLSPROXY_ERR_POOL_SERVER_NAME_REFUSED";
      *al = SSL_AD_UNRECOGNIZED_NAME;
      return SSL_CLIENT_HELLO_ERROR;
    }
    if (c->sni) {
      // RFC 6066: "without a trailing dot" — the name is handed on as the certificate names it.
      size_t n = strlen(c->sni);
      if (c->sni[n - 1] == '.') c->sni[n - 1] = '\0';
    }
  }
  if (c->sni && c->check_sni) {
    if (c->sni_answer == 0) {
      // Ask JS once; conn_step sees SSL_ERROR_WANT_CLIENT_HELLO_CB and waits for the answer.
      if (!c->sni_asked) {
        ev *e = ev_add(c->loop, EV_SNI, c->jsid);
        if (!e || !(e->text = strdup(c->sni))) {
          *al = SSL_AD_INTERNAL_ERROR;
          return SSL_CLIENT_HELLO_ERROR;
        }
        c->sni_asked = 1;
      }
      return SSL_CLIENT_HELLO_RETRY;
    }
    if (c->sni_answer < 0) {
      c->fail_code = "TLSPROXY_ERR_POOL_SERVER_NAME_REFUSED";
      *al = SSL_AD_UNRECOGNIZED_NAME;
      return SSL_CLIENT_HELLO_ERROR;
    }
  }
  SSL_CTX *ctx = idstore_select(c->store, c->sni);
  if (ctx != SSL_get_SSL_CTX(ssl) &&
      (!SSL_set_SSL_CTX(ssl, ctx) || set_session_context(c, ctx) != 1)) {
    *al = SSL_AD_INTERNAL_ERROR;
    return SSL_CLIENT_HELLO_ERROR;
  }
  return SSL_CLIENT_HELLO_SUCCESS;
}

int conn_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                 const unsigned char *in, unsigned int inlen, void *arg) {
  (void)arg;
  conn *c = SSL_get_app_data(ssl);
  if (!c || c->alpn_len == 0) return SSL_TLSEXT_ERR_NOACK;
  unsigned char *o;
  unsigned char ol;
  // Server preference order (the first list), as node:tls does.
  if (SSL_select_next_proto(&o, &ol, c->alpn, c->alpn_len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL; // no_application_protocol (RFC 7301 §3.2)
  *out = o;
  *outlen = ol;
  return SSL_TLSEXT_ERR_OK;
}

// Keep OpenSSL's verdict (a bad chain fails the handshake with an alert) but remember why, so
// the JS side gets the same error code as from the node:tls engine.
// During a renegotiation the backend asked for, an untrusted certificate does not end the
// session: the answer is then "no verified identity" (as with the node:tls engine).
//
// The client role names the fault the way node:tls (pool's engine) does, which verifies the chain
// and its dates in OpenSSL first and the host name in JS afterwards. OpenSSL checks the name
// (check_id) before the dates (internal_verify), so a name mismatch is held back here: chain
// and date errors found later win, and if there are none the mismatch fails the leaf's final
// "ok" call. (Found by test/connect.test.ts: an expired certificate for another name was
// "name-mismatch" here and "expired" from pool.)
int conn_verify_cb(int ok, X509_STORE_CTX *x) {
  SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
  conn *c = ssl ? SSL_get_app_data(ssl) : NULL;
  if (c && c->client) {
    int err = X509_STORE_CTX_get_error(x);
    if (!ok && (err == X509_V_ERR_HOSTNAME_MISMATCH || err == X509_V_ERR_IP_ADDRESS_MISMATCH)) {
      c->name_err = err;
      return 1;
    }
    if (!ok) {
      if (!c->verify_err) c->verify_err = err;
      return 0;
    }
    if (c->name_err && X509_STORE_CTX_get_error_depth(x) == 0) {
      X509_STORE_CTX_set_error(x, (int)c->name_err);
      if (!c->verify_err) c->verify_err = c->name_err;
      return 0;
    }
    return 1;
  }
  if (!ok && c && !c->verify_err) c->verify_err = X509_STORE_CTX_get_error(x);
  return ok || (c && c->reneg_pending);
}

// The peer certificate as DER into an event, and whether it verified.
static void peer_into(conn *c, ev *e) {
  X509 *peer = SSL_get0_peer_certificate(c->ssl);
  if (!peer) return;
  int n = i2d_X509(peer, NULL);
  if (n > 0 && (e->der = malloc((size_t)n))) {
    unsigned char *p = e->der;
    e->der_len = i2d_X509(peer, &p);
  }
  e->verified = SSL_get_verify_result(c->ssl) == X509_V_OK;
}

static void reneg_answer(loop *L, conn *c, const char *code, const char *text) {
  ev *e = ev_add(L, EV_RENEGOTIATED, c->jsid);
  c->reneg_pending = 0;
  if (!e) return;
  e->req = c->reneg_req;
  if (code) {
    e->code = code;
    e->text = strdup(text);
  } else {
    peer_into(c, e);
  }
}

// ---- the handshake's end ----

static int handoff_ready(loop *L, conn *c, int early);

static int established(loop *L, conn *c) {
  // The client role: the context verifies (SSL_VERIFY_PEER) and refuses a bad chain or name
  // during the handshake; a finished handshake without a verified certificate is still refused
  // rather than trusted (pool's 'other').
  // (A held-back name mismatch that never reached the leaf's final call lands here too.)
  if (c->client && (!SSL_get0_peer_certificate(c->ssl) || c->name_err ||
                    SSL_get_verify_result(c->ssl) != X509_V_OK)) {
    long v = c->name_err ? c->name_err : SSL_get_verify_result(c->ssl);
    const char *reason = v != X509_V_OK ? verify_reason(v) : NULL;
    char msg[320];
    snprintf(msg, sizeof msg, "server certificate rejected (%s): %s", reason ? reason : "other",
             v != X509_V_OK ? X509_verify_cert_error_string(v)
                            : "the server presented no verified certificate");
    c->fail_reason = reason ? reason : "other";
    conn_fail(L, c, "TLSPROXY_ERR_POOL_VERIFY", "%s", msg);
    return -1;
  }
  // The server role: the policy holds for every handshake, resumed ones included (they carry
  // the first handshake's certificate and verify result, and ask for none). The session context
  // already keeps sessions to their policy; this is the last word if anything ever slips past it.
  if (!c->client && c->policy != POLICY_NONE) {
    X509 *peer = SSL_get0_peer_certificate(c->ssl);
    long v = SSL_get_verify_result(c->ssl);
    if ((c->policy == POLICY_REQUIRED && !peer) || (peer && v != X509_V_OK)) {
      conn_fail(L, c, "TLSPROXY_ERR_POOL_CLIENT_CERT",
                c->policy == POLICY_REQUIRED ? "client certificate required: %s"
                                             : "client certificate not trusted: %s",
                peer ? X509_verify_cert_error_string(v) : "none sent");
      return -1;
    }
  }
  if (!c->early_sent && handoff_ready(L, c, 0) != 0) return -1;
  // Handed out early: JS learns that the handshake is now complete (its handshake places).
  if (c->early_sent) {
    if (!ev_add(L, EV_COMPLETED, c->jsid)) {
      conn_fail(L, c, "TLSPROXY_ERR_POOL_HANDSHAKE", "out of memory%s", NULL);
      return -1;
    }
    if (c->early_prompt) L->urgent++; // JS asked for it at once (HandshakeRequest.promptCompletion)
  }
  c->state = ST_RELAY;
  // From now on a peer that ends TCP without close_notify ends its direction, as close_notify
  // does (what node:tls does): without this OpenSSL 3 makes that EOF fatal, SSL_write fails after
  // it and the backend's answer to a half-closed client is lost. (During the handshake such an
  // EOF stays the error it is, with OpenSSL's reason in the log.)
  SSL_set_options(c->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
  c->tls_ready = c->plain_ready = EPOLLIN | EPOLLOUT;
  c->last_active = now_ms();
  return 0;
}

// The server's side of a TLS 1.3 handshake is done — its flight with its Finished is out, and
// all that is left is the client's Finished: what was negotiated (version, cipher, ALPN, SNI)
// can no longer change, and no client certificate was asked for. Handing off now lets the
// backend take the connection while the client verifies our certificate and finishes (most of
// a round trip, on loopback a few hundred microseconds of the client's CPU), instead of after.
// Nothing is relayed before the handshake is complete; if it fails, conn_fail ends the session.
// (TLS 1.2's server sends its Finished last, so there is no such point.)
static int early_ready(conn *c) {
  unsigned char fin[EVP_MAX_MD_SIZE];
  return c->early && !c->early_sent && !c->client && SSL_version(c->ssl) == TLS1_3_VERSION &&
         SSL_get_finished(c->ssl, fin, sizeof fin) > 0;
}

// The socketpair and EV_ESTABLISHED with what was negotiated: the backend's end goes to JS.
static int handoff_ready(loop *L, conn *c, int early) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
    // Out of descriptors or memory ends this connection alone, with pool's code for it.
    int err = errno;
    conn_fail(L, c,
              err == EMFILE || err == ENFILE || err == ENOMEM || err == ENOBUFS
                  ? "TLSPROXY_ERR_POOL_RESOURCES"
                  : "TLSPROXY_ERR_POOL_HANDSHAKE",
              "socketpair: %s", strerror(err));
    return -1;
  }
  ev *e = ev_add(L, EV_ESTABLISHED, c->jsid);
  if (!e) {
    close(sv[0]);
    close(sv[1]);
    conn_fail(L, c, "TLSPROXY_ERR_POOL_HANDSHAKE", "out of memory%s", NULL);
    return -1;
  }
  c->plain_fd = sv[0];
  e->fd = sv[1]; // the event owns it until JS wraps it
  e->early = early;
  snprintf(e->version, sizeof e->version, "%s", SSL_get_version(c->ssl));
  const SSL_CIPHER *ci = SSL_get_current_cipher(c->ssl);
  const char *std = ci ? SSL_CIPHER_standard_name(ci) : NULL;
  snprintf(e->cipher, sizeof e->cipher, "%s", std ? std : ci ? SSL_CIPHER_get_name(ci) : "unknown");
  const unsigned char *alpn;
  unsigned alpn_len;
  SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
  if (alpn_len && (e->alpn = malloc(alpn_len + 1))) {
    memcpy(e->alpn, alpn, alpn_len);
    e->alpn[alpn_len] = 0;
  }
  if (c->sni) e->server_name = strdup(c->sni);
  peer_into(c, e);
  return 0;
}

// ---- relay helpers ----

static int keep(relay_buf *b, const char *p, size_t n) {
  b->data = malloc(n);
  if (!b->data) return -1;
  memcpy(b->data, p, n);
  b->off = 0;
  b->len = n;
  return 0;
}

static void consumed(relay_buf *b, size_t n) {
  b->off += n;
  b->len -= n;
  if (b->len == 0) {
    // Idle connections hold no relay memory.
    free(b->data);
    *b = (relay_buf){0};
  }
}

// Waiting to start a renegotiation (reneg_begin): the backend's bytes wait in the socketpair.
static int reneg_waiting(const conn *c) { return c->reneg_pending && !c->reneg_started; }

static int eof_like(int sslerr) {
  // A peer that closes TCP without close_notify ends its direction like close_notify does
  // (node:tls does the same): SSL_OP_IGNORE_UNEXPECTED_EOF, set when the relay starts, makes
  // OpenSSL 3 report it as ZERO_RETURN and keep the SSL usable for our direction, instead of a
  // fatal SSL_R_UNEXPECTED_EOF_WHILE_READING.
  if (sslerr == SSL_ERROR_ZERO_RETURN) return 1;
  if (sslerr == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0) return 1;
  return 0;
}

static uint32_t want_of(int sslerr) {
  return sslerr == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN;
}

// Whether an operation that last blocked waiting for `want` (0: it did not block) is worth
// trying: level-triggered epoll says when a blocked descriptor is ready again, and until then a
// try costs a syscall that only answers EAGAIN.
static int may(uint32_t ready, uint32_t want) { return want == 0 || (ready & want) != 0; }

static void tls_blocked(conn *c, uint32_t *slot, int sslerr) {
  *slot = want_of(sslerr);
  c->tls_ready &= ~*slot;
}

// The backend's end refused bytes (EPIPE/ECONNRESET: it closed): it will never read again, so
// what the client sends from now on is dropped, while what the backend wrote before it closed
// still goes to the client (its last answer, e.g. to LOGOUT).
static void backend_gone(conn *c) {
  free(c->c2b.data);
  c->c2b = (relay_buf){0};
  c->c2b_dead = 1;
  c->plain_wr_shut = 1;
}

static void set_cork(int fd, int on) {
  // Best effort: a descriptor that is not TCP (a test's socketpair) just says no.
  (void)setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on);
}

// TCP_CORK on the client's socket while records are written one by one, so they leave as one
// segment and wake the client once. Nested (a handshake step that also relays), and released on
// every way out: uncorking pushes what waits, nothing is left to the kernel's 200 ms cork timer.
// A connection closed meanwhile has no descriptor any more (tls_fd -1): its number may already
// belong to another connection, so it is not touched.
static void cork(conn *c) {
  if (c->corked++ == 0 && c->tls_fd >= 0) set_cork(c->tls_fd, 1);
}

static void uncork(conn *c) {
  if (--c->corked == 0 && c->tls_fd >= 0) set_cork(c->tls_fd, 0);
}

// One pass of moving bytes; returns 1 if anything moved, 0 if nothing could, -1 if the
// connection was closed.
static int relay_once(loop *L, conn *c) {
  int progress = 0;
  char *s = L->scratch;

  // Client → backend: what is waiting first, then a new record only when nothing waits.
  if (c->c2b.len && (c->plain_ready & EPOLLOUT)) {
    ssize_t n = send(c->plain_fd, c->c2b.data + c->c2b.off, c->c2b.len, MSG_NOSIGNAL);
    if (n > 0) {
      consumed(&c->c2b, (size_t)n);
      progress = 1;
    } else if (n < 0 && errno == EAGAIN) {
      c->plain_ready &= ~(uint32_t)EPOLLOUT;
    } else if (n < 0 && errno != EINTR) {
      backend_gone(c);
      progress = 1;
    }
  }
  if (!c->c2b.len && !c->client_eof && may(c->tls_ready, c->rd_want)) {
    ERR_clear_error();
    errno = 0;
    int r = SSL_read(c->ssl, s, RELAY_CHUNK);
    if (r > 0) {
      c->rd_want = 0;
      progress = 1;
      // The records OpenSSL already holds (read ahead) join this one: one send() and one wake-up
      // of the backend for up to RELAY_GATHER bytes. Only what is buffered — gathering never
      // waits for the socket; what stopped it is handled here, as below for a first read.
      size_t got = (size_t)r;
      int fatal = 0;
      while (got + RELAY_CHUNK <= RELAY_GATHER && SSL_has_pending(c->ssl)) {
        ERR_clear_error();
        errno = 0;
        int r2 = SSL_read(c->ssl, s + got, RELAY_CHUNK);
        if (r2 > 0) {
          got += (size_t)r2;
          continue;
        }
        int e2 = SSL_get_error(c->ssl, r2);
        if (e2 == SSL_ERROR_WANT_READ || e2 == SSL_ERROR_WANT_WRITE) {
          tls_blocked(c, &c->rd_want, e2);
        } else if (eof_like(e2)) {
          c->client_eof = 1; // after these bytes: the backend's write side shuts once c2b drains
        } else {
          fatal = 1; // the bytes before the bad record still go out, then the session ends
        }
        ERR_clear_error();
        break;
      }
      c->bytes_in += (uint64_t)got;
      ssize_t n = c->c2b_dead                     ? (ssize_t)got
                  : (c->plain_ready & EPOLLOUT) ? send(c->plain_fd, s, got, MSG_NOSIGNAL)
                                                : 0;
      if (n < 0 && errno != EAGAIN && errno != EINTR) {
        backend_gone(c);
        n = (ssize_t)got;
      }
      if (n < 0) {
        if (errno == EAGAIN) c->plain_ready &= ~(uint32_t)EPOLLOUT;
        n = 0;
      }
      if ((size_t)n < got && keep(&c->c2b, s + n, got - (size_t)n) != 0) {
        conn_end(L, c, "out of memory");
        return -1;
      }
      if (fatal) {
        conn_end(L, c, "client error");
        return -1;
      }
    } else {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        tls_blocked(c, &c->rd_want, e);
      } else if (eof_like(e)) {
        ERR_clear_error();
        c->client_eof = 1;
        c->rd_want = 0;
        progress = 1;
      } else {
        ERR_clear_error();
        conn_end(L, c, "client error");
        return -1;
      }
    }
  }
  if (c->client_eof && !c->c2b.len && !c->plain_wr_shut) {
    shutdown(c->plain_fd, SHUT_WR);
    c->plain_wr_shut = 1;
    progress = 1;
  }

  // Backend → client, the same way round.
  if (c->b2c.len && may(c->tls_ready, c->wr_want)) {
    ERR_clear_error();
    int r = SSL_write(c->ssl, c->b2c.data + c->b2c.off, (int)c->b2c.len);
    if (r > 0) {
      c->wr_want = 0;
      c->bytes_out += (uint64_t)r;
      consumed(&c->b2c, (size_t)r);
      progress = 1;
    } else {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        tls_blocked(c, &c->wr_want, e);
      } else {
        ERR_clear_error();
        conn_end(L, c, "client error");
        return -1;
      }
    }
  }
  if (!c->b2c.len && !c->backend_eof && !c->closing && !reneg_waiting(c) &&
      (c->plain_ready & EPOLLIN)) {
    ssize_t n = recv(c->plain_fd, s, RELAY_GATHER, 0);
    if (n > 0) {
      progress = 1;
      // Written record by record (partial writes) until TLS blocks; only the rest is kept, and
      // a retry after WANT_WRITE starts with the same bytes, as OpenSSL requires.
      size_t done = 0;
      // More than one record: corked (cork()), so they leave as one segment and wake the client
      // once (up to 6 % more throughput towards the client in A/Bs on loopback).
      int hold = (size_t)n > RELAY_CHUNK;
      if (hold) cork(c);
      while (done < (size_t)n) {
        ERR_clear_error();
        int r = SSL_write(c->ssl, s + done, (int)((size_t)n - done));
        if (r > 0) {
          c->wr_want = 0;
          c->bytes_out += (uint64_t)r;
          done += (size_t)r;
          continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
          ERR_clear_error();
          if (hold) uncork(c);
          conn_end(L, c, "client error");
          return -1;
        }
        tls_blocked(c, &c->wr_want, e);
        break;
      }
      if (hold) uncork(c);
      if (done < (size_t)n && keep(&c->b2c, s + done, (size_t)n - done) != 0) {
        conn_end(L, c, "out of memory");
        return -1;
      }
    } else if (n < 0 && errno == EAGAIN) {
      c->plain_ready &= ~(uint32_t)EPOLLIN;
    } else if (n == 0 || errno != EINTR) {
      c->backend_eof = 1;
      progress = 1;
    }
  }
  if ((c->backend_eof || c->closing) && !c->b2c.len && !c->shut_done &&
      may(c->tls_ready, c->shut_want)) {
    ERR_clear_error();
    int r = SSL_shutdown(c->ssl);
    if (r >= 0) {
      c->shut_done = 1;
      c->shut_want = 0;
      shutdown(c->tls_fd, SHUT_WR);
      progress = 1;
    } else {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        tls_blocked(c, &c->shut_want, e);
      } else {
        ERR_clear_error();
        conn_end(L, c, "client error");
        return -1;
      }
    }
  }
  return progress;
}

// ---- the state machine ----

// The HelloRequest of a renegotiation the backend asked for. Not while a record is half-written
// (what the backend sent is in b2c, SSL_write wants to be retried with it): OpenSSL refuses to
// write a record of another type then (bad write retry), so the relay stops reading the backend
// until b2c has drained and then starts it here. 0, or -1 when the session ended.
static int reneg_begin(loop *L, conn *c) {
  if (c->closing || c->client_eof || c->backend_eof || c->shut_done) {
    reneg_answer(L, c, "TLSPROXY_ERR_POOL_CONTROL", "renegotiation needs an open TLS 1.2 session");
    return 0;
  }
  c->reneg_started = 1;
  c->verify_err = 0;
  SSL_set_verify(c->ssl, SSL_VERIFY_PEER, conn_verify_cb);
  ERR_clear_error();
  // SSL_renegotiate schedules it; the handshake call sends the HelloRequest. The client's
  // new ClientHello then arrives through the relay's SSL_read.
  if (SSL_renegotiate(c->ssl) != 1) {
    ERR_clear_error();
    reneg_answer(L, c, "TLSPROXY_ERR_POOL_CONTROL", "renegotiation could not start");
    return 0;
  }
  int r = SSL_do_handshake(c->ssl);
  if (r != 1) {
    int e = SSL_get_error(c->ssl, r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
      ERR_clear_error();
      reneg_answer(L, c, "TLSPROXY_ERR_POOL_CONTROL", "renegotiation could not start");
      conn_end(L, c, "client error");
      return -1;
    }
  }
  return 0;
}

static void report_bytes(loop *L, conn *c, uint64_t now) {
  if (!c->want_bytes || now < c->bytes_due ||
      (c->bytes_in == c->rep_in && c->bytes_out == c->rep_out) ||
      atomic_load(&L->eng->queued) >= BYTES_MAX_QUEUED)
    return;
  ev *e = ev_add(L, EV_BYTES, c->jsid);
  if (!e) return;
  e->bytes_in = c->bytes_in - c->rep_in;
  e->bytes_out = c->bytes_out - c->rep_out;
  c->rep_in = c->bytes_in;
  c->rep_out = c->bytes_out;
  c->bytes_due = now + BYTES_REPORT_MS;
}

static void schedule_again(loop *L, conn *c) {
  if (c->in_again) return;
  c->in_again = 1;
  conn_ref(c);
  c->again_next = L->again;
  L->again = c;
}

// Every state transition of a connection happens here.
static void step(loop *L, conn *c) {
  if (c->state == ST_NEW) {
    c->state = ST_HANDSHAKE;
    c->hs_want = EPOLLIN;
  }
  if (c->state == ST_SNI_WAIT) {
    if (c->sni_answer == 0) goto interest; // JS has not answered yet
    c->state = ST_HANDSHAKE;
  }
  if (c->state == ST_HANDSHAKE) {
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(c->ssl);
    if (r != 1) {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        c->hs_want = want_of(e);
        if (e == SSL_ERROR_WANT_READ && early_ready(c)) {
          if (handoff_ready(L, c, 1) != 0) return;
          c->early_sent = 1;
        }
      } else if (e == SSL_ERROR_WANT_CLIENT_HELLO_CB) {
        c->state = ST_SNI_WAIT;
        c->hs_want = 0;
      } else {
        handshake_failed(L, c, e);
        return;
      }
      goto interest;
    }
    if (established(L, c) != 0) return;
  }
  if (c->state == ST_RELAY) {
    int rounds = 0, r = 0;
    while (rounds++ < MAX_ROUNDS && (r = relay_once(L, c)) > 0) c->last_active = now_ms();
    if (r < 0) return;
    if (reneg_waiting(c) && !c->b2c.len) {
      if (reneg_begin(L, c) != 0) return;
      r = 1; // the HelloRequest may have gone out, or not yet: relay again
    }
    report_bytes(L, c, c->last_active);
    // The renegotiation's handshake runs inside SSL_read/SSL_write; it is over when OpenSSL no
    // longer has it pending.
    if (c->reneg_pending && c->reneg_started && !SSL_renegotiate_pending(c->ssl)) {
      reneg_answer(L, c, NULL, NULL);
      // The handshake ended inside SSL_read. An SSL_write that blocked on it (WANT_READ: it
      // needed the client's flight) would otherwise wait for more bytes from a client that may
      // only be reading now: it is tried again, as is a read that waited on a write.
      c->wr_want = c->rd_want = 0;
      r = 1;
    }
    if (c->client_eof && c->plain_wr_shut && c->shut_done) {
      conn_end(L, c, c->closing ? "closed" : "done");
      return;
    }
    // Still moving after MAX_ROUNDS: come back after the others had their turn, without
    // waiting for epoll (a peer that hung up never wakes it again).
    if (r > 0) schedule_again(L, c);
  }
interest:
  if (c->state == ST_HANDSHAKE || c->state == ST_SNI_WAIT) {
    reg(L, c, 0, c->hs_want);
  } else if (c->state == ST_RELAY) {
    uint32_t t = 0, p = 0;
    if (!c->c2b.len && !c->client_eof) t |= c->rd_want ? c->rd_want : EPOLLIN;
    if (c->b2c.len) t |= c->wr_want ? c->wr_want : EPOLLOUT;
    if ((c->backend_eof || c->closing) && !c->b2c.len && !c->shut_done) t |= c->shut_want;
    if (!c->b2c.len && !c->backend_eof && !c->closing && !reneg_waiting(c)) p |= EPOLLIN;
    if (c->c2b.len) p |= EPOLLOUT;
    reg(L, c, 0, t);
    reg(L, c, 1, p);
  }
}

static void conn_step(loop *L, conn *c) {
  // The server's handshake step after its flight went out writes, in TLS 1.3, the session
  // tickets as a record each (two by default): corked, they reach the client as one segment —
  // one write to the loopback or the wire fewer per connection, and one wake-up of the client.
  // The first flight needs no cork (OpenSSL buffers it and writes it at once), nor does the
  // client role (its last flight is one write).
  int hold = !c->client && c->state == ST_HANDSHAKE && c->ssl &&
             BIO_number_written(SSL_get_wbio(c->ssl)) > 0;
  if (hold) cork(c);
  step(L, c);
  if (hold) uncork(c);
}

// A peer that hung up reports EPOLLHUP on every epoll_wait whatever we ask for; stop watching
// that descriptor (every later operation on it completes at once) and step the connection.
static void on_io(loop *L, conn *c, int plain, uint32_t events) {
  if (c->state == ST_CLOSED) return;
  uint32_t ready = events & (EPOLLIN | EPOLLOUT);
  if (events & (EPOLLHUP | EPOLLERR)) ready = EPOLLIN | EPOLLOUT;
  if (plain) c->plain_ready |= ready;
  else c->tls_ready |= ready;
  // The client reset the connection after the handshake: what waits for it can never be
  // delivered, so end now instead of when the backend next moves (or the idle timeout). Not so
  // for the backend's end: an AF_UNIX peer that closes with input unread sets ECONNRESET on
  // ours, yet what it wrote before is still readable and owed to the client (a backend that
  // answers LOGOUT and closes), so that side goes through the hang-up path below.
  if ((events & EPOLLERR) && !plain && c->state == ST_RELAY) {
    conn_end(L, c, "client reset");
    return;
  }
  if (events & (EPOLLHUP | EPOLLERR)) {
    unreg(L, c, plain);
    if (plain) c->plain_hup = 1;
    else c->tls_hup = 1;
    if (c->state != ST_RELAY) {
      // Before the handshake is done a hang-up means the client is gone (handshake fails).
      if (c->state == ST_SNI_WAIT) { // (server side only: a client never waits for SNI)
        conn_fail(L, c, "TLSPROXY_ERR_POOL_HANDSHAKE", "client closed during the TLS handshake%s", NULL);
        return;
      }
    }
    schedule_again(L, c);
  }
  conn_step(L, c);
}

// ---- commands from JS ----

static void on_cmd(loop *L, cmd *k) {
  conn *c = k->c;
  switch (k->type) {
  case CMD_NEW: {
    // The loop's own reference (the command's becomes it).
    conn_ref(c);
    c->loop = L;
    c->next = L->conns;
    if (L->conns) L->conns->prev = c;
    L->conns = c;
    L->nconns++;
    // Usually non-blocking already (the proxy's sockets are libuv's); set only when not.
    int fl = fcntl(c->tls_fd, F_GETFL);
    if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(c->tls_fd, F_SETFL, fl | O_NONBLOCK) != 0)) {
      conn_fail(L, c, "TLSPROXY_ERR_POOL_HANDSHAKE", "fcntl: %s", strerror(errno));
      break;
    }
    conn_step(L, c);
    break;
  }
  case CMD_SNI:
    if (c->state == ST_SNI_WAIT || c->state == ST_HANDSHAKE) {
      c->sni_answer = k->ok ? 1 : -1;
      conn_step(L, c);
    }
    break;
  case CMD_EXPORTER: {
    ev *e = ev_add(L, EV_EXPORTED, c->jsid);
    if (!e) break;
    e->req = k->req;
    // Handed off early, the exporter is already what it will be: RFC 8446 §7.5 derives it from
    // the transcript up to the server's Finished.
    if (c->state != ST_RELAY && !(c->state == ST_HANDSHAKE && c->early_sent)) {
      e->code = "TLSPROXY_ERR_POOL_UNKNOWN_KEY";
      e->text = strdup("session ended");
      break;
    }
    e->data = malloc(k->length ? k->length : 1);
    if (!e->data || SSL_export_keying_material(c->ssl, e->data, k->length, k->label,
                                               strlen(k->label), k->context, k->context_len,
                                               k->has_context) != 1) {
      ERR_clear_error();
      free(e->data);
      e->data = NULL;
      e->code = "TLSPROXY_ERR_POOL_CONTROL";
      e->text = strdup("keying material export failed");
      break;
    }
    e->data_len = k->length;
    break;
  }
  case CMD_RENEGOTIATE: {
    // The reply goes out as EV_RENEGOTIATED, now on refusal or when the handshake is over.
    double req = k->req;
    if (c->state != ST_RELAY) {
      ev *e = ev_add(L, EV_RENEGOTIATED, c->jsid);
      if (e) {
        e->req = req;
        e->code = "TLSPROXY_ERR_POOL_UNKNOWN_KEY";
        e->text = strdup("session ended");
      }
      break;
    }
    if (c->client || c->reneg_pending || SSL_version(c->ssl) != TLS1_2_VERSION || c->closing ||
        c->client_eof) {
      double keep = c->reneg_req;
      int was = c->reneg_pending;
      c->reneg_req = req;
      reneg_answer(L, c, "TLSPROXY_ERR_POOL_CONTROL",
                   c->client ? "renegotiate asks a client for its certificate: not for a session this engine connected"
                   : was     ? "a renegotiation is already under way"
                             : "renegotiation needs an open TLS 1.2 session");
      c->reneg_pending = was;
      c->reneg_req = keep;
      break;
    }
    c->reneg_pending = 1;
    c->reneg_started = 0;
    c->reneg_req = req;
    c->reneg_deadline = now_ms() + c->hs_timeout_ms;
    // Started by the relay (reneg_begin) once nothing is half-written: at once, usually.
    conn_step(L, c);
    break;
  }
  case CMD_CLOSE:
    // Like the node:tls engine's tls.end(): flush, close_notify and FIN to the client; what the
    // client still sends reaches the backend until it ends too.
    if (c->state == ST_RELAY) {
      c->closing = 1;
      conn_step(L, c);
    } else if (c->state != ST_CLOSED) {
      conn_fail(L, c, "TLSPROXY_ERR_POOL_HANDSHAKE", "closed during the TLS handshake%s", NULL);
    }
    break;
  }
  free(k->label);
  free(k->context);
  conn_unref(c);
}

static void drain_commands(loop *L) {
  // One read takes the eventfd's whole count (eventfd(2)); a second would only say EAGAIN, and
  // a write racing in after this read is seen by the next epoll_wait (level-triggered).
  uint64_t junk;
  (void)!read(L->evfd, &junk, sizeof junk);
  for (int taken = 0; taken < MAX_CMDS_PER_TURN;) {
    cmd batch[32];
    size_t n = 0;
    pthread_mutex_lock(&L->mu);
    while (n < 32 && L->qlen) {
      batch[n++] = L->q[L->qhead];
      L->qhead = (L->qhead + 1) % L->qcap;
      L->qlen--;
    }
    size_t left = L->qlen;
    pthread_mutex_unlock(&L->mu);
    for (size_t i = 0; i < n; i++) on_cmd(L, &batch[i]);
    taken += (int)n;
    if (n < 32 || !left) return;
  }
  // More than a turn's worth: wake up again at once.
  uint64_t one = 1;
  (void)!write(L->evfd, &one, sizeof one);
}

int conn_of(const engine *e, const conn *c) { return c->engine_id == e->id && c->loop; }

// Fill-first: a new connection goes to the first loop sleeping for want of work, so under light
// load one thread does it all (one wake-up for several connections, warm caches) and the others
// join in as it gets busy; with every loop busy, round-robin. Round-robin alone made a second
// thread cost more CPU per connection than one (each thread woken for half the work).
static loop *pick_loop(engine *e) {
  for (int i = 0; i < e->nloops; i++)
    if (atomic_load_explicit(&e->loops[i].waiting, memory_order_relaxed)) return &e->loops[i];
  return &e->loops[atomic_fetch_add(&e->next, 1) % (unsigned)e->nloops];
}

int engine_push(engine *e, cmd *k) {
  if (e->stopped) return -1;
  if (k->type != CMD_NEW && !conn_of(e, k->c)) return -1;
  loop *L = k->type == CMD_NEW ? pick_loop(e) : k->c->loop;
  pthread_mutex_lock(&L->mu);
  if (L->qlen == L->qcap || atomic_load(&L->stop)) {
    pthread_mutex_unlock(&L->mu);
    return -1;
  }
  if (k->type == CMD_NEW) {
    k->c->loop = L;
    k->c->engine_id = e->id;
  }
  L->q[(L->qhead + L->qlen) % L->qcap] = *k;
  // Only the first command into an empty queue wakes the loop: drain_commands takes everything
  // queued until it sees the queue empty (or wakes itself again), so the others ride along.
  int wake = L->qlen++ == 0;
  pthread_mutex_unlock(&L->mu);
  if (wake) {
    uint64_t one = 1;
    (void)!write(L->evfd, &one, sizeof one);
  }
  return 0;
}

// ---- the loop ----

static void sweep(loop *L, uint64_t now) {
  for (conn *c = L->conns, *next; c; c = next) {
    next = c->next;
    if (c->state == ST_RELAY) report_bytes(L, c, now);
    if ((c->state == ST_HANDSHAKE || c->state == ST_SNI_WAIT || c->state == ST_NEW) &&
        now >= c->hs_deadline) {
      conn_fail(L, c, "TLSPROXY_ERR_POOL_TIMEOUT", "TLS handshake not done in time%s", NULL);
    } else if (c->state == ST_RELAY && c->reneg_pending && now >= c->reneg_deadline) {
      // A client may ignore a HelloRequest (RFC 5246 §7.4.1.1): answer, and end the session,
      // which is now in an unknown state.
      reneg_answer(L, c, "TLSPROXY_ERR_POOL_TIMEOUT", "the client did not renegotiate in time");
      conn_end(L, c, "renegotiation timeout");
    } else if (c->state == ST_RELAY && c->idle_ms && now - c->last_active >= c->idle_ms) {
      conn_end(L, c, "idle");
    }
  }
}

static void run_again(loop *L) {
  conn *list = L->again;
  L->again = NULL;
  while (list) {
    conn *c = list;
    list = c->again_next;
    c->in_again = 0;
    if (c->state != ST_CLOSED) conn_step(L, c);
    conn_unref(c);
  }
}

static void free_zombies(loop *L) {
  while (L->zombies) {
    conn *c = L->zombies;
    L->zombies = c->zombie_next;
    conn_unref(c); // the loop's reference
  }
}

static void *loop_main(void *arg) {
  loop *L = arg;
  // Signals are for the JS thread.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  struct epoll_event evs[MAX_EVENTS];
  while (!atomic_load(&L->stop)) {
    int timeout = -1;
    if (L->again) timeout = 0;
    else if (L->nconns || L->lazy_since) timeout = SWEEP_MS;
    if (timeout != 0) atomic_store_explicit(&L->waiting, 1, memory_order_relaxed);
    int n = epoll_wait(L->epfd, evs, MAX_EVENTS, timeout);
    atomic_store_explicit(&L->waiting, 0, memory_order_relaxed);
    for (int i = 0; i < n; i++) {
      uint64_t cookie = evs[i].data.u64;
      if (cookie == 0) {
        drain_commands(L);
        continue;
      }
      conn *c = (conn *)(uintptr_t)(cookie & ~(uint64_t)TAG_PLAIN);
      on_io(L, c, (int)(cookie & TAG_PLAIN), evs[i].events);
    }
    run_again(L);
    uint64_t now = now_ms();
    if (now >= L->next_sweep) {
      sweep(L, now);
      L->next_sweep = now + SWEEP_MS;
    }
    free_zombies(L);
    ev_flush(L, now);
  }
  // Stopping: drop every connection without a word to JS (the engine is closing).
  while (L->conns) conn_close(L, L->conns);
  run_again(L);
  free_zombies(L);
  ev_batch_free(L->out);
  L->out = NULL;
  return NULL;
}

int engine_start(engine *e, int nloops, size_t queue_cap, char *err, size_t errlen) {
  static atomic_uint_fast64_t ids = 1;
  e->id = atomic_fetch_add(&ids, 1);
  e->loops = calloc((size_t)nloops, sizeof *e->loops);
  if (!e->loops) return snprintf(err, errlen, "out of memory"), -1;
  e->nloops = nloops;
  // Every loop is in a state engine_stop can undo before any is set up: a setup that fails
  // part-way leaves later loops with no descriptors (-1), not calloc's 0 — stdin, which
  // engine_stop would otherwise write to and close, twice.
  for (int i = 0; i < nloops; i++) {
    loop *L = &e->loops[i];
    L->eng = e;
    L->index = i;
    L->epfd = L->evfd = -1;
    pthread_mutex_init(&L->mu, NULL);
    L->qcap = queue_cap;
  }
  for (int i = 0; i < nloops; i++) {
    loop *L = &e->loops[i];
    L->q = calloc(queue_cap, sizeof *L->q);
    L->epfd = epoll_create1(EPOLL_CLOEXEC);
    L->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ee = {.events = EPOLLIN, .data.u64 = 0};
    if (!L->q || L->epfd < 0 || L->evfd < 0 || epoll_ctl(L->epfd, EPOLL_CTL_ADD, L->evfd, &ee) != 0) {
      snprintf(err, errlen, "loop setup: %s", strerror(errno));
      return -1;
    }
    int r = pthread_create(&L->thread, NULL, loop_main, L);
    if (r != 0) {
      snprintf(err, errlen, "pthread_create: %s", strerror(r));
      return -1;
    }
    L->started = 1;
    // Named here rather than by the thread itself, so the name is there when the engine's
    // constructor returns (top -H, perf and the tests read it), however late the thread first runs.
    char name[16];
    snprintf(name, sizeof name, "tls-engine-%u", (unsigned)i % 1000u); // i < 256: always whole
    pthread_setname_np(L->thread, name);
  }
  return 0;
}

// Stop and join every loop, then drop what is still queued. Called on the JS thread (close() or
// environment teardown); after it returns no loop thread runs.
void engine_stop(engine *e) {
  if (e->stopped) return;
  e->stopped = 1;
  for (int i = 0; i < e->nloops; i++) {
    loop *L = &e->loops[i];
    atomic_store(&L->stop, 1);
    uint64_t one = 1;
    if (L->evfd >= 0) (void)!write(L->evfd, &one, sizeof one);
  }
  for (int i = 0; i < e->nloops; i++) {
    loop *L = &e->loops[i];
    if (L->started) pthread_join(L->thread, NULL);
    // Commands nobody ran: a NEW one still owns its client's descriptor.
    for (; L->qlen; L->qlen--, L->qhead = (L->qhead + 1) % L->qcap) {
      cmd *k = &L->q[L->qhead];
      if (k->type == CMD_NEW && k->c->tls_fd >= 0) {
        close(k->c->tls_fd);
        k->c->tls_fd = -1;
      }
      free(k->label);
      free(k->context);
      conn_unref(k->c);
    }
    free(L->q);
    L->q = NULL;
    if (L->epfd >= 0) close(L->epfd);
    if (L->evfd >= 0) close(L->evfd);
    L->epfd = L->evfd = -1;
    pthread_mutex_destroy(&L->mu);
  }
}
