// @tlsproxy/engine-native: shared declarations of the C side.
//
// Theory of operation. The JS thread builds an identity store (one SSL_CTX per certificate,
// ctx.c) and submits connections: a connected stream socket whose descriptor C now owns. Each
// connection is pinned to one of N loop threads (loop.c); a loop thread owns everything about its
// connections (SSL object, descriptors, buffers) and is the only one that touches them. The JS
// thread talks to a loop only through that loop's bounded command queue (woken by an eventfd);
// loops talk back through one N-API thread-safe function, one batch of events per loop turn.
// A connection struct is reference-counted because three parties may hold it: its loop (until
// it closes), a queued command, and the JS handle (until garbage collection).
#ifndef TLSPROXY_ENGINE_H
#define TLSPROXY_ENGINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <node_api.h>
#include <openssl/ssl.h>

// First field of every struct JS holds as an external: the glue checks it before trusting a
// pointer, so an external of another kind (or another addon's) is a TypeError, not a crash.
#define MAGIC_STORE 0x53544f52u  // 'STOR'
#define MAGIC_CONN 0x434f4e4eu   // 'CONN'
#define MAGIC_ENGINE 0x454e4749u // 'ENGI'
#define MAGIC_CCTX 0x43435458u   // 'CCTX'

// One TLS record's worth of plaintext (RFC 8446 §5.1: at most 2^14 bytes).
#define RELAY_CHUNK 16384
// What one pass moves in one system call on the plaintext side: up to four records' worth (the
// records OpenSSL already holds go to the backend in one send(); one recv() from the backend is
// written as records until TLS blocks). It also bounds what a blocked side keeps per direction.
#define RELAY_GATHER (4 * RELAY_CHUNK)

// ---- identity store (ctx.c) ----

typedef struct id_name {
  char *name;   // lower case; for a wildcard, the part after "*."
  int wildcard; // 1 for "*.example.org"
  int index;    // into store->ctx
} id_name;

typedef struct idstore {
  uint32_t magic;
  atomic_int refs;
  int nctx;
  SSL_CTX **ctx;
  int default_index;
  int nnames;
  id_name *names;
} idstore;

typedef struct store_params {
  int n;
  const char **certs; // PEM chains
  const char **keys;  // PEM keys
  const char ***names;
  const int *nnames;
  int default_index;
  const char *ca;           // PEM, may be NULL
  const char *ciphers;      // TLS 1.2 list
  const char *ciphersuites; // TLS 1.3 list, may be NULL (OpenSSL default)
  int min_version;          // TLS1_2_VERSION or TLS1_3_VERSION
} store_params;

// Returns NULL and fills err on failure.
idstore *idstore_create(const store_params *p, char *err, size_t errlen);
void idstore_ref(idstore *s);
void idstore_unref(idstore *s);
SSL_CTX *idstore_select(const idstore *s, const char *name);

// ---- client contexts (ctx.c): the client role, issue 18 ----

// One SSL_CTX per distinct (trusted CAs, client identity, minimum version), cached by JS. JS
// holds it as an external; every client connection's SSL holds its own reference (SSL_new takes
// one), so a context dropped from the cache lives on until its last session ends.
typedef struct cctx {
  uint32_t magic;
  SSL_CTX *ctx;
} cctx;

typedef struct client_params {
  const char *ca;   // PEM, required (JS passes Node's bundled roots when the request has none)
  const char *cert; // client certificate chain, PEM, may be NULL
  const char *key;  // its key, PEM (with cert)
  const char *ciphers;
  const char *ciphersuites; // may be NULL
  int min_version;
} client_params;

cctx *cctx_create(const client_params *p, char *err, size_t errlen);
void cctx_free(cctx *c);

// ---- connections and loops (loop.c) ----

enum conn_state { ST_NEW, ST_HANDSHAKE, ST_SNI_WAIT, ST_RELAY, ST_CLOSED };
enum cert_policy { POLICY_NONE = 0, POLICY_OPTIONAL = 1, POLICY_REQUIRED = 2 };

typedef struct relay_buf {
  char *data; // heap copy of what the other side could not take yet; NULL when empty
  size_t off, len;
} relay_buf;

struct loop;

typedef struct conn {
  uint32_t magic;
  atomic_int refs;
  struct loop *loop;
  // The engine the connection was submitted to (engine.id): a JS handle can outlive that engine,
  // so its loop pointer is only followed once the id says the engine in hand is the one.
  uint64_t engine_id;
  struct conn *prev, *next; // the loop's list of live connections
  struct conn *again_next;  // the loop's list of connections to step again without waiting
  struct conn *zombie_next; // closed, unreferenced after the current epoll batch
  double jsid;
  enum conn_state state;
  int tls_fd, plain_fd;
  SSL *ssl;
  idstore *store; // NULL for a client connection
  int client;     // the client role (connect()): we sent the ClientHello

  // Request, fixed at submit.
  enum cert_policy policy;
  unsigned char *alpn; // wire format (RFC 7301 §3.1), server preference order
  unsigned alpn_len;
  int check_sni;
  // Hand off early (TLS 1.3, no client certificate asked for): EV_ESTABLISHED goes to JS once
  // the server's flight with its Finished is out, while the client finishes (see early_ready()).
  int early;
  // JS wants EV_COMPLETED at once (its handshake places are short), not with a later batch.
  int early_prompt;
  uint64_t hs_deadline, idle_ms, last_active;
  uint64_t hs_timeout_ms;

  // Handshake.
  int sni_parsed;
  char *sni;      // as the client sent it
  int sni_answer; // 0 not yet, 1 accepted, -1 refused
  int sni_asked;
  long verify_err;
  long name_err; // client role: a host name mismatch held back (see conn_verify_cb)
  const char *fail_code;
  const char *fail_reason; // with TLSPROXY_ERR_POOL_VERIFY: pool's VerifyReason
  int early_sent; // EV_ESTABLISHED is out before the client's Finished: JS holds a session

  // Relay.
  relay_buf c2b, b2c;
  unsigned client_eof : 1, backend_eof : 1, closing : 1, shut_done : 1, plain_wr_shut : 1;
  unsigned tls_hup : 1, plain_hup : 1, in_again : 1;
  unsigned c2b_dead : 1; // the backend closed its end: client data is dropped from now on
  unsigned corked;       // TCP_CORK holds on the client's socket (nested: see cork())
  uint32_t hs_want, rd_want, wr_want, shut_want; // epoll events a blocked SSL call waits for
  uint32_t tls_reg, plain_reg;                   // what epoll has now (for fewer epoll_ctl)
  uint32_t tls_ready, plain_ready; // not known to block: EPOLLIN/EPOLLOUT until EAGAIN says so
  int tls_in_epoll, plain_in_epoll;
  uint64_t bytes_in, bytes_out;
  int want_bytes;               // report byte counts while the session lives (metrics)
  uint64_t rep_in, rep_out;     // what has been reported so far
  uint64_t bytes_due;           // no report before this time (ms)

  // A renegotiation the backend asked for (TLS 1.2): answered with EV_RENEGOTIATED.
  int reneg_pending;
  int reneg_started; // the HelloRequest is on its way (it waits for a half-written record)
  double reneg_req;
  uint64_t reneg_deadline;
} conn;

enum cmd_type { CMD_NEW, CMD_SNI, CMD_EXPORTER, CMD_CLOSE, CMD_RENEGOTIATE };

typedef struct cmd {
  enum cmd_type type;
  conn *c; // holds a reference while queued
  int ok;  // CMD_SNI
  double req;
  char *label;
  unsigned char *context;
  size_t context_len;
  int has_context;
  size_t length;
} cmd;

enum ev_type {
  EV_ESTABLISHED,
  EV_FAILED,
  EV_SNI,
  EV_ENDED,
  EV_EXPORTED,
  EV_RENEGOTIATED,
  EV_BYTES,
  EV_COMPLETED // a session handed out early (EV_ESTABLISHED with early) finished its handshake
};

typedef struct ev {
  enum ev_type type;
  double jsid;
  double req;
  int fd; // EV_ESTABLISHED: the backend's end of the socketpair, owned by the event
  const char *code;
  const char *reason; // EV_FAILED with TLSPROXY_ERR_POOL_VERIFY
  char *text; // error message, server name for EV_SNI
  char version[16];
  char cipher[64];
  char *alpn;
  char *server_name;
  unsigned char *der; // peer certificate, DER (EV_ESTABLISHED, EV_RENEGOTIATED)
  int der_len;
  int verified;
  int early; // EV_ESTABLISHED: handed out before the client's Finished; EV_COMPLETED follows
  unsigned char *data; // EV_EXPORTED
  size_t data_len;
  uint64_t bytes_in, bytes_out; // EV_ENDED, EV_BYTES: since the last report
} ev;

typedef struct ev_batch {
  ev *v;
  size_t n, cap;
} ev_batch;

struct engine;

typedef struct loop {
  struct engine *eng;
  int index;
  pthread_t thread;
  int started;
  int epfd, evfd;
  atomic_int stop;
  // 1 while the thread sleeps in epoll_wait (nothing of its own to do): where new connections go
  // first (engine_push).
  atomic_int waiting;
  pthread_mutex_t mu;
  cmd *q;
  size_t qhead, qlen, qcap;
  conn *conns; // doubly linked
  size_t nconns;
  conn *again;
  conn *zombies;
  ev_batch *out; // events of this turn, not yet handed to JS
  // Of those, how many JS waits for (all but EV_COMPLETED); and since when (ms) the others have
  // waited without one (0: none wait). See ev_flush().
  size_t urgent;
  uint64_t lazy_since;
  uint64_t next_sweep;
  char scratch[RELAY_GATHER];
} loop;

typedef struct engine {
  uint64_t id; // unique in the process, never reused (conn.engine_id)
  napi_threadsafe_function tsfn;
  int nloops;
  loop *loops;
  atomic_uint next;
  atomic_int queued; // events given to the thread-safe function, not yet taken by JS
  int stopped;
  napi_env env;
} engine;

int engine_start(engine *e, int nloops, size_t queue_cap, char *err, size_t errlen);
void engine_stop(engine *e); // JS thread; joins the loops
void ev_batch_free(ev_batch *b);

conn *conn_new(idstore *store, int fd, double jsid, enum cert_policy policy,
               const unsigned char *alpn, unsigned alpn_len, int check_sni,
               uint64_t hs_timeout_ms, uint64_t idle_ms, int want_bytes, int early,
               int prompt);
// The client role: a TLS client on fd verifying the server as `name` (a DNS name without a
// trailing dot, SNI sent, or an IP address, no SNI).
conn *conn_new_client(SSL_CTX *ctx, int fd, double jsid, const unsigned char *alpn,
                      unsigned alpn_len, const char *name, int is_ip, uint64_t hs_timeout_ms,
                      uint64_t idle_ms);
void conn_ref(conn *c);
// Whether c was submitted to e (and so its loop is one of e's).
int conn_of(const engine *e, const conn *c);
void conn_unref(conn *c);
// Queue a command for c's loop (for CMD_NEW: the next loop in turn). 0 on success; -1 when the
// queue is full or the engine stopped (the caller still owns what the command carries).
// Commands for a connection of another engine are a caller error: check conn_of() first.
int engine_push(engine *e, cmd *k);

// SSL callbacks installed on every SSL_CTX (defined in loop.c, where the connection lives).
int conn_client_hello_cb(SSL *ssl, int *al, void *arg);
int conn_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                 const unsigned char *in, unsigned int inlen, void *arg);
int conn_verify_cb(int ok, X509_STORE_CTX *x);

#endif
