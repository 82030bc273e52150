// N-API glue: argument checks that throw JS errors (never abort), externals for the C objects,
// and the thread-safe function that turns a loop's batch of events into one JS call.
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/opensslv.h>

#include "engine.h"

// Bounded per-loop command queue: enough for a burst of accepts, small enough to refuse work
// (the caller sees "busy") long before memory is at stake.
#define QUEUE_CAP 8192

#define NAPI(env, call)                                                                      \
  do {                                                                                       \
    if ((call) != napi_ok) {                                                                 \
      napi_throw_error((env), "TLSPROXY_ERR_NATIVE_NAPI", "N-API call failed: " #call);      \
      return NULL;                                                                           \
    }                                                                                        \
  } while (0)

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

static int args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
  if (argc < want) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "missing arguments");
    return -1;
  }
  return 0;
}

// A string argument copied to the heap (NUL-terminated), or NULL with a JS error pending.
static char *get_string(napi_env env, napi_value v, const char *what) {
  size_t n;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be a string", what);
    throw_type(env, msg);
    return NULL;
  }
  char *s = malloc(n + 1);
  if (!s) {
    napi_throw_error(env, "ERR_MEMORY", "out of memory");
    return NULL;
  }
  napi_get_value_string_utf8(env, v, s, n + 1, &n);
  if (strlen(s) != n) {
    free(s);
    throw_type(env, "string contains a NUL character");
    return NULL;
  }
  return s;
}

static int is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && (t == napi_null || t == napi_undefined);
}

// ---- engine lifetime ----

// The engine struct is shared by the JS external and the thread-safe function; whichever
// finalizer runs last frees it (their order differs between close() and process teardown).
typedef struct engine_box {
  uint32_t magic;
  engine e;
  atomic_int refs;
  int hook; // env cleanup hook registered
  int released;
} engine_box;

static void box_unref(engine_box *b) {
  if (atomic_fetch_sub(&b->refs, 1) != 1) return;
  free(b->e.loops);
  b->magic = 0;
  free(b);
}

static void teardown_hook(void *arg) {
  engine_box *b = arg;
  b->hook = 0;
  engine_stop(&b->e);
}

static void tsfn_finalize(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  engine_box *b = data;
  // At environment teardown node finalizes the function itself, possibly before the engine's
  // external: that one must not release it again.
  b->released = 1;
  box_unref(b);
}

static void engine_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  engine_box *b = data;
  if (b->hook) {
    napi_remove_env_cleanup_hook(env, teardown_hook, b);
    b->hook = 0;
  }
  engine_stop(&b->e);
  if (!b->released) {
    b->released = 1;
    napi_release_threadsafe_function(b->e.tsfn, napi_tsfn_release);
  }
  box_unref(b);
}

static napi_value str(napi_env env, const char *s) {
  napi_value v;
  if (!s) napi_get_null(env, &v);
  else napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  return v;
}

static void set(napi_env env, napi_value o, const char *k, napi_value v) {
  napi_set_named_property(env, o, k, v);
}

static napi_value num(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

static const char *ev_name(enum ev_type t) {
  switch (t) {
  case EV_ESTABLISHED: return "established";
  case EV_FAILED: return "failed";
  case EV_SNI: return "sni";
  case EV_ENDED: return "ended";
  case EV_EXPORTED: return "exported";
  case EV_RENEGOTIATED: return "renegotiated";
  case EV_BYTES: return "bytes";
  case EV_COMPLETED: return "completed";
  }
  return "unknown";
}

// Runs on the JS thread with one loop turn's events. Descriptors move into JS here: once an
// event's fd is in a JS object, JS owns it (it wraps it in an OwnedFd straight away).
static void call_js(napi_env env, napi_value cb, void *context, void *data) {
  ev_batch *b = data;
  atomic_fetch_sub(&((engine_box *)context)->e.queued, (int)b->n); // taken (see ev_flush)
  if (!env || !cb) {
    ev_batch_free(b); // teardown: close what nobody will adopt
    return;
  }
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) {
    ev_batch_free(b);
    return;
  }
  napi_value arr;
  napi_create_array_with_length(env, b->n, &arr);
  for (size_t i = 0; i < b->n; i++) {
    ev *e = &b->v[i];
    napi_value o;
    napi_create_object(env, &o);
    set(env, o, "type", str(env, ev_name(e->type)));
    set(env, o, "id", num(env, e->jsid));
    switch (e->type) {
    case EV_ESTABLISHED: {
      set(env, o, "fd", num(env, e->fd));
      e->fd = -1;
      set(env, o, "version", str(env, e->version));
      set(env, o, "cipher", str(env, e->cipher));
      set(env, o, "alpn", str(env, e->alpn));
      if (e->server_name) {
        napi_value v;
        napi_create_string_latin1(env, e->server_name, NAPI_AUTO_LENGTH, &v);
        set(env, o, "serverName", v);
      } else set(env, o, "serverName", str(env, NULL));
      napi_value cert;
      if (e->der) napi_create_buffer_copy(env, (size_t)e->der_len, e->der, NULL, &cert);
      else napi_get_null(env, &cert);
      set(env, o, "peerCertificate", cert);
      napi_value ok, early;
      napi_get_boolean(env, e->verified, &ok);
      set(env, o, "verified", ok);
      napi_get_boolean(env, e->early, &early);
      set(env, o, "early", early);
      break;
    }
    case EV_COMPLETED:
      break;
    case EV_FAILED:
      set(env, o, "code", str(env, e->code));
      set(env, o, "message", str(env, e->text));
      set(env, o, "reason", str(env, e->reason));
      break;
    case EV_SNI: {
      napi_value v;
      napi_create_string_latin1(env, e->text ? e->text : "", NAPI_AUTO_LENGTH, &v);
      set(env, o, "name", v);
      break;
    }
    case EV_BYTES:
    case EV_ENDED:
      set(env, o, "bytesIn", num(env, (double)e->bytes_in));
      set(env, o, "bytesOut", num(env, (double)e->bytes_out));
      set(env, o, "reason", str(env, e->code));
      // EV_ENDED of a session handed off early whose handshake then failed: why (else null).
      set(env, o, "failure", str(env, e->type == EV_ENDED ? e->text : NULL));
      break;
    case EV_RENEGOTIATED: {
      set(env, o, "req", num(env, e->req));
      if (e->code) {
        set(env, o, "code", str(env, e->code));
        set(env, o, "message", str(env, e->text));
      }
      napi_value cert, ok;
      if (e->der) napi_create_buffer_copy(env, (size_t)e->der_len, e->der, NULL, &cert);
      else napi_get_null(env, &cert);
      set(env, o, "peerCertificate", cert);
      napi_get_boolean(env, e->verified, &ok);
      set(env, o, "verified", ok);
      break;
    }
    case EV_EXPORTED:
      set(env, o, "req", num(env, e->req));
      if (e->data) {
        napi_value buf;
        napi_create_buffer_copy(env, e->data_len, e->data, NULL, &buf);
        set(env, o, "data", buf);
      } else {
        set(env, o, "code", str(env, e->code));
        set(env, o, "message", str(env, e->text));
      }
      break;
    }
    napi_set_element(env, arr, (uint32_t)i, o);
  }
  ev_batch_free(b);
  napi_value undef;
  napi_get_undefined(env, &undef);
  napi_call_function(env, undef, cb, 1, &arr, NULL);
  napi_close_handle_scope(env, scope);
}

// engineCreate(threads, callback) → external
static napi_value js_engine_create(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (args(env, info, 2, argv)) return NULL;
  int32_t threads;
  if (napi_get_value_int32(env, argv[0], &threads) != napi_ok || threads < 1 || threads > 256)
    return throw_type(env, "threads must be an integer in 1..256");
  engine_box *b = calloc(1, sizeof *b);
  if (!b) return throw_type(env, "out of memory");
  b->magic = MAGIC_ENGINE;
  atomic_init(&b->refs, 2);
  b->e.env = env;
  napi_value name;
  napi_create_string_utf8(env, "tlsproxy-engine-native", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[1], NULL, name, 0, 1, b, tsfn_finalize, b,
                                      call_js, &b->e.tsfn) != napi_ok) {
    free(b);
    return throw_type(env, "callback must be a function");
  }
  napi_value ext;
  if (napi_create_external(env, b, engine_finalize, NULL, &ext) != napi_ok) {
    napi_release_threadsafe_function(b->e.tsfn, napi_tsfn_release); // frees via tsfn_finalize
    box_unref(b);
    napi_throw_error(env, "TLSPROXY_ERR_NATIVE_NAPI", "napi_create_external failed");
    return NULL;
  }
  char err[256];
  if (engine_start(&b->e, threads, QUEUE_CAP, err, sizeof err) != 0) {
    engine_stop(&b->e);
    b->released = 1;
    napi_release_threadsafe_function(b->e.tsfn, napi_tsfn_release);
    napi_throw_error(env, "TLSPROXY_ERR_NATIVE_START", err);
    return NULL;
  }
  // Stop the threads before the environment goes (workers, process exit), registered after
  // the thread-safe function so it runs first.
  napi_add_env_cleanup_hook(env, teardown_hook, b);
  b->hook = 1;
  return ext;
}

// The pointer of an external, if the value is one and its struct starts with `magic`.
static void *external_of(napi_env env, napi_value v, uint32_t magic) {
  napi_valuetype t;
  void *p = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external) return NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) return NULL;
  return *(uint32_t *)p == magic ? p : NULL;
}

static engine_box *get_engine(napi_env env, napi_value v) {
  void *p = external_of(env, v, MAGIC_ENGINE);
  if (!p) {
    throw_type(env, "not an engine");
    return NULL;
  }
  return p;
}

// engineClose(engine): stop and join the loops; pending events are still delivered.
static napi_value js_engine_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (args(env, info, 1, argv)) return NULL;
  engine_box *b = get_engine(env, argv[0]);
  if (!b) return NULL;
  if (b->hook) {
    napi_remove_env_cleanup_hook(env, teardown_hook, b);
    b->hook = 0;
  }
  engine_stop(&b->e);
  if (!b->released) {
    b->released = 1;
    napi_release_threadsafe_function(b->e.tsfn, napi_tsfn_release);
  }
  return NULL;
}

// engineRef(engine, ref): keep the process alive while sessions exist, not otherwise.
static napi_value js_engine_ref(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (args(env, info, 2, argv)) return NULL;
  engine_box *b = get_engine(env, argv[0]);
  if (!b) return NULL;
  bool ref = false;
  napi_get_value_bool(env, argv[1], &ref);
  if (!b->released) {
    if (ref) napi_ref_threadsafe_function(env, b->e.tsfn);
    else napi_unref_threadsafe_function(env, b->e.tsfn);
  }
  return NULL;
}

// ---- identity stores ----

static void store_finalize(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  idstore_unref(data);
}

// storeCreate([{cert, key, names}], {defaultIndex, ca, ciphers, ciphersuites, minVersion})
static napi_value js_store_create(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (args(env, info, 2, argv)) return NULL;
  uint32_t n = 0;
  bool isarr = false;
  napi_is_array(env, argv[0], &isarr);
  if (!isarr || napi_get_array_length(env, argv[0], &n) != napi_ok || n == 0 || n > 10000)
    return throw_type(env, "identities must be a non-empty array");
  store_params p = {0};
  p.n = (int)n;
  p.certs = calloc(n, sizeof *p.certs);
  p.keys = calloc(n, sizeof *p.keys);
  p.names = calloc(n, sizeof *p.names);
  int *nnames = calloc(n, sizeof *nnames);
  p.nnames = nnames;
  napi_value out = NULL;
  char err[768];
  if (!p.certs || !p.keys || !p.names || !nnames) {
    napi_throw_error(env, "ERR_MEMORY", "out of memory");
    goto done;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value id, v, names;
    if (napi_get_element(env, argv[0], i, &id) != napi_ok) goto done;
    if (napi_get_named_property(env, id, "cert", &v) != napi_ok ||
        !(p.certs[i] = get_string(env, v, "cert")))
      goto done;
    if (napi_get_named_property(env, id, "key", &v) != napi_ok ||
        !(p.keys[i] = get_string(env, v, "key")))
      goto done;
    uint32_t m = 0;
    bool a = false;
    if (napi_get_named_property(env, id, "names", &names) != napi_ok ||
        napi_is_array(env, names, &a) != napi_ok || !a ||
        napi_get_array_length(env, names, &m) != napi_ok || m > 100000) {
      throw_type(env, "names must be an array of strings");
      goto done;
    }
    p.names[i] = calloc(m ? m : 1, sizeof(char *));
    if (!p.names[i]) {
      napi_throw_error(env, "ERR_MEMORY", "out of memory");
      goto done;
    }
    for (uint32_t j = 0; j < m; j++) {
      if (napi_get_element(env, names, j, &v) != napi_ok) goto done;
      char *s = get_string(env, v, "name");
      if (!s) goto done;
      p.names[i][j] = s;
      nnames[i]++;
    }
  }
  // Every property read is checked: on a non-object (or a getter that throws) N-API leaves the
  // out-value unset with an exception pending, and reading it then is reading garbage.
  napi_value o = argv[1], v = NULL;
  napi_valuetype ot;
  int32_t x;
  if (napi_typeof(env, o, &ot) != napi_ok || ot != napi_object) {
    throw_type(env, "options must be an object");
    goto done;
  }
  if (napi_get_named_property(env, o, "defaultIndex", &v) != napi_ok) goto done;
  p.default_index = napi_get_value_int32(env, v, &x) == napi_ok ? x : 0;
  if (napi_get_named_property(env, o, "minVersion", &v) != napi_ok) goto done;
  p.min_version = napi_get_value_int32(env, v, &x) == napi_ok ? x : TLS1_2_VERSION;
  if (p.min_version != TLS1_2_VERSION && p.min_version != TLS1_3_VERSION) {
    throw_type(env, "minVersion must be TLS 1.2 or 1.3");
    goto done;
  }
  if (napi_get_named_property(env, o, "ca", &v) != napi_ok) goto done;
  if (!is_nullish(env, v) && !(p.ca = get_string(env, v, "ca"))) goto done;
  if (napi_get_named_property(env, o, "ciphers", &v) != napi_ok) goto done;
  if (!(p.ciphers = get_string(env, v, "ciphers"))) goto done;
  if (napi_get_named_property(env, o, "ciphersuites", &v) != napi_ok) goto done;
  if (!is_nullish(env, v) && !(p.ciphersuites = get_string(env, v, "ciphersuites"))) goto done;
  idstore *s = idstore_create(&p, err, sizeof err);
  if (!s) {
    napi_throw_error(env, "TLSPROXY_ERR_NATIVE_CONFIG", err);
    goto done;
  }
  if (napi_create_external(env, s, store_finalize, NULL, &out) != napi_ok) {
    idstore_unref(s);
    out = NULL;
  }
done:
  for (uint32_t i = 0; i < n; i++) {
    if (p.certs) free((void *)p.certs[i]);
    if (p.keys) free((void *)p.keys[i]);
    if (p.names && p.names[i]) {
      for (int j = 0; j < nnames[i]; j++) free((void *)p.names[i][j]);
      free((void *)p.names[i]);
    }
  }
  free((void *)p.certs);
  free((void *)p.keys);
  free((void *)p.names);
  free(nnames);
  free((void *)p.ca);
  free((void *)p.ciphers);
  free((void *)p.ciphersuites);
  return out;
}

// ---- connections ----

static void conn_finalize(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  conn_unref(data); // the JS handle's reference
}

// A session handle of engine b: a handle can outlive its engine (both are garbage-collected
// independently), and its loop pointer then points into freed memory.
static conn *get_conn(napi_env env, engine_box *b, napi_value v) {
  conn *c = external_of(env, v, MAGIC_CONN);
  if (!c) {
    throw_type(env, "not a session handle");
    return NULL;
  }
  if (!conn_of(&b->e, c)) {
    throw_type(env, "session handle of another engine");
    return NULL;
  }
  return c;
}

// ---- shared by submit (server side) and connect (client side) ----

/** An ALPN list from JS (a Buffer, or null/undefined for none) into alpn/len; false: thrown. The
 * list goes to OpenSSL (SSL_select_next_proto as the server's, SSL_set_alpn_protos as the
 * client's): OpenSSL before 3.0.15 (fixed with CVE-2024-5535) could read past the end of a
 * malformed one, and older node 20 releases bundle such versions. So only well-formed lists get
 * that far. */
static bool get_alpn(napi_env env, napi_value v, void **alpn, size_t *len) {
  *alpn = NULL;
  *len = 0;
  if (is_nullish(env, v)) return true;
  if (napi_get_buffer_info(env, v, alpn, len) != napi_ok || *len > 65535) {
    throw_type(env, "alpn must be a Buffer");
    return false;
  }
  for (size_t i = 0; i < *len;) {
    size_t n = ((const unsigned char *)*alpn)[i];
    if (n == 0 || n > *len - i - 1) {
      throw_type(env, "alpn must be ALPN wire format");
      return false;
    }
    i += 1 + n;
  }
  return true;
}

/** The handshake and idle timeouts (ms) from JS; false: thrown. */
static bool get_timeouts(napi_env env, napi_value hsv, napi_value idlev, double *hs,
                         double *idle) {
  if (napi_get_value_double(env, hsv, hs) != napi_ok || !(*hs >= 1 && *hs < 1e10)) {
    throw_type(env, "bad handshake timeout");
    return false;
  }
  if (napi_get_value_double(env, idlev, idle) != napi_ok || !(*idle >= 0 && *idle < 1e12)) {
    throw_type(env, "bad idle timeout");
    return false;
  }
  return true;
}

/**
 * A new session `c` (one reference: ours) to its JS handle and to the loop thread: the handle
 * holds one reference (its finalizer drops it), the CMD_NEW command another. Returns the handle,
 * or null when the loop refused the command (the engine is closing: JS still owns the fd and the
 * handle's finalizer frees c), or NULL after a throw.
 */
static napi_value hand_to_loop(napi_env env, engine_box *b, conn *c) {
  napi_value ext;
  if (napi_create_external(env, c, conn_finalize, NULL, &ext) != napi_ok) {
    conn_unref(c);
    napi_throw_error(env, "TLSPROXY_ERR_NATIVE_NAPI", "napi_create_external failed");
    return NULL;
  }
  conn_ref(c); // the command's
  cmd k = {.type = CMD_NEW, .c = c};
  if (engine_push(&b->e, &k) != 0) {
    conn_unref(c);
    napi_value nul;
    napi_get_null(env, &nul);
    return nul;
  }
  return ext;
}

// submit(engine, store, fd, id, policy, alpnWire|null, handshakeTimeoutMs, idleTimeoutMs,
//        checkSni, wantBytes[, early[, prompt]]) → handle, or null when the engine is busy (the
//        caller keeps the fd).
static napi_value js_submit(napi_env env, napi_callback_info info) {
  // Ten arguments, and an eleventh (early) and twelfth (prompt) that may be left out.
  napi_value argv[12];
  size_t argc = 12;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 10) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "missing arguments");
    return NULL;
  }
  engine_box *b = get_engine(env, argv[0]);
  if (!b) return NULL;
  void *sp = external_of(env, argv[1], MAGIC_STORE);
  if (!sp) return throw_type(env, "not an identity store");
  int32_t fd, policy;
  double id, hs, idle;
  bool check = false;
  if (napi_get_value_int32(env, argv[2], &fd) != napi_ok || fd < 0)
    return throw_type(env, "fd must be a non-negative integer");
  if (napi_get_value_double(env, argv[3], &id) != napi_ok) return throw_type(env, "bad id");
  if (napi_get_value_int32(env, argv[4], &policy) != napi_ok || policy < 0 || policy > 2)
    return throw_type(env, "bad client certificate policy");
  void *alpn = NULL;
  size_t alpn_len = 0;
  if (!get_alpn(env, argv[5], &alpn, &alpn_len) || !get_timeouts(env, argv[6], argv[7], &hs, &idle))
    return NULL;
  napi_get_value_bool(env, argv[8], &check);
  bool want_bytes = false;
  napi_get_value_bool(env, argv[9], &want_bytes);
  bool early = false, prompt = false;
  if (argc > 10) napi_get_value_bool(env, argv[10], &early);
  if (argc > 11) napi_get_value_bool(env, argv[11], &prompt);
  conn *c = conn_new(sp, fd, id, (enum cert_policy)policy, alpn, (unsigned)alpn_len, check,
                     (uint64_t)hs, (uint64_t)idle, want_bytes, early, prompt);
  if (!c) {
    napi_throw_error(env, "TLSPROXY_ERR_NATIVE_SSL", "could not create the TLS session");
    return NULL;
  }
  return hand_to_loop(env, b, c);
}

// ---- the client role (issue 18) ----

static void cctx_finalize(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  cctx_free(data); // connections made with it hold their own references to its SSL_CTX
}

// clientContextCreate({ca, cert|null, key|null, ciphers, ciphersuites|null, minVersion})
static napi_value js_cctx_create(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (args(env, info, 1, argv)) return NULL;
  napi_value o = argv[0], v = NULL, out = NULL;
  napi_valuetype ot;
  if (napi_typeof(env, o, &ot) != napi_ok || ot != napi_object)
    return throw_type(env, "options must be an object");
  client_params p = {0};
  int32_t x;
  char err[768];
  // Every read checked, as in storeCreate: a throwing getter leaves v unset.
  if (napi_get_named_property(env, o, "minVersion", &v) != napi_ok) goto done;
  p.min_version = napi_get_value_int32(env, v, &x) == napi_ok ? x : TLS1_2_VERSION;
  if (p.min_version != TLS1_2_VERSION && p.min_version != TLS1_3_VERSION) {
    throw_type(env, "minVersion must be TLS 1.2 or 1.3");
    goto done;
  }
  if (napi_get_named_property(env, o, "ca", &v) != napi_ok) goto done;
  if (!(p.ca = get_string(env, v, "ca"))) goto done;
  if (napi_get_named_property(env, o, "cert", &v) != napi_ok) goto done;
  if (!is_nullish(env, v)) {
    if (!(p.cert = get_string(env, v, "cert"))) goto done;
    if (napi_get_named_property(env, o, "key", &v) != napi_ok) goto done;
    if (!(p.key = get_string(env, v, "key"))) goto done;
  }
  if (napi_get_named_property(env, o, "ciphers", &v) != napi_ok) goto done;
  if (!(p.ciphers = get_string(env, v, "ciphers"))) goto done;
  if (napi_get_named_property(env, o, "ciphersuites", &v) != napi_ok) goto done;
  if (!is_nullish(env, v) && !(p.ciphersuites = get_string(env, v, "ciphersuites"))) goto done;
  cctx *c = cctx_create(&p, err, sizeof err);
  if (!c) {
    napi_throw_error(env, "TLSPROXY_ERR_NATIVE_CONFIG", err);
    goto done;
  }
  if (napi_create_external(env, c, cctx_finalize, NULL, &out) != napi_ok) {
    cctx_free(c);
    out = NULL;
  }
done:
  free((void *)p.ca);
  free((void *)p.cert);
  free((void *)p.key);
  free((void *)p.ciphers);
  free((void *)p.ciphersuites);
  return out;
}

// connect(engine, clientContext, fd, id, alpnWire|null, name, isIp, handshakeTimeoutMs,
//         idleTimeoutMs) → handle, or null when the engine is busy (the caller keeps the fd).
static napi_value js_connect(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  if (args(env, info, 9, argv)) return NULL;
  engine_box *b = get_engine(env, argv[0]);
  if (!b) return NULL;
  cctx *cc = external_of(env, argv[1], MAGIC_CCTX);
  if (!cc) return throw_type(env, "not a client context");
  int32_t fd;
  double id, hs, idle;
  bool is_ip = false;
  if (napi_get_value_int32(env, argv[2], &fd) != napi_ok || fd < 0)
    return throw_type(env, "fd must be a non-negative integer");
  if (napi_get_value_double(env, argv[3], &id) != napi_ok) return throw_type(env, "bad id");
  void *alpn = NULL;
  size_t alpn_len = 0;
  if (!get_alpn(env, argv[4], &alpn, &alpn_len)) return NULL;
  if (napi_get_value_bool(env, argv[6], &is_ip) != napi_ok)
    return throw_type(env, "isIp must be a boolean");
  if (!get_timeouts(env, argv[7], argv[8], &hs, &idle)) return NULL;
  char *name = get_string(env, argv[5], "name");
  if (!name) return NULL;
  if (name[0] == 0 || strlen(name) > 253) {
    free(name);
    return throw_type(env, "name must be a DNS name or an IP address");
  }
  conn *c = conn_new_client(cc->ctx, fd, id, alpn, (unsigned)alpn_len, name, is_ip, (uint64_t)hs,
                            (uint64_t)idle);
  free(name);
  if (!c) {
    napi_throw_error(env, "TLSPROXY_ERR_NATIVE_SSL", "could not create the TLS session");
    return NULL;
  }
  return hand_to_loop(env, b, c);
}

static napi_value push_result(napi_env env, engine_box *b, cmd *k) {
  conn_ref(k->c);
  int r = engine_push(&b->e, k);
  if (r != 0) {
    free(k->label);
    free(k->context);
    conn_unref(k->c);
  }
  napi_value v;
  napi_get_boolean(env, r == 0, &v);
  return v;
}

// sniAnswer(engine, handle, ok) → queued?
static napi_value js_sni_answer(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (args(env, info, 3, argv)) return NULL;
  engine_box *b = get_engine(env, argv[0]);
  conn *c = b ? get_conn(env, b, argv[1]) : NULL;
  if (!c) return NULL;
  bool ok = false;
  napi_get_value_bool(env, argv[2], &ok);
  cmd k = {.type = CMD_SNI, .c = c, .ok = ok};
  return push_result(env, b, &k);
}

// exporter(engine, handle, req, label, context|null, length) → queued?
static napi_value js_exporter(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  if (args(env, info, 6, argv)) return NULL;
  engine_box *b = get_engine(env, argv[0]);
  conn *c = b ? get_conn(env, b, argv[1]) : NULL;
  if (!c) return NULL;
  double req;
  int32_t len;
  if (napi_get_value_double(env, argv[2], &req) != napi_ok) return throw_type(env, "bad req");
  if (napi_get_value_int32(env, argv[5], &len) != napi_ok || len < 1 || len > 1024)
    return throw_type(env, "length must be 1..1024");
  cmd k = {.type = CMD_EXPORTER, .c = c, .req = req, .length = (size_t)len};
  if (!(k.label = get_string(env, argv[3], "label"))) return NULL;
  if (!is_nullish(env, argv[4])) {
    void *p;
    size_t n;
    if (napi_get_buffer_info(env, argv[4], &p, &n) != napi_ok || n > 65535) {
      free(k.label);
      return throw_type(env, "context must be a Buffer");
    }
    k.context = malloc(n ? n : 1);
    if (!k.context) {
      free(k.label);
      return throw_type(env, "out of memory");
    }
    if (n) memcpy(k.context, p, n); // an empty Buffer's data may be NULL
    k.context_len = n;
    k.has_context = 1;
  }
  return push_result(env, b, &k);
}

// renegotiate(engine, handle, req) → queued?
static napi_value js_renegotiate(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (args(env, info, 3, argv)) return NULL;
  engine_box *b = get_engine(env, argv[0]);
  conn *c = b ? get_conn(env, b, argv[1]) : NULL;
  if (!c) return NULL;
  double req;
  if (napi_get_value_double(env, argv[2], &req) != napi_ok) return throw_type(env, "bad req");
  cmd k = {.type = CMD_RENEGOTIATE, .c = c, .req = req};
  return push_result(env, b, &k);
}

// closeSession(engine, handle) → queued?
static napi_value js_close_session(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (args(env, info, 2, argv)) return NULL;
  engine_box *b = get_engine(env, argv[0]);
  conn *c = b ? get_conn(env, b, argv[1]) : NULL;
  if (!c) return NULL;
  cmd k = {.type = CMD_CLOSE, .c = c};
  return push_result(env, b, &k);
}

// openssl() → { version, text }: the OpenSSL this addon is linked against, i.e. Node's own.
static napi_value js_openssl(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value o;
  NAPI(env, napi_create_object(env, &o));
  set(env, o, "version", num(env, (double)OpenSSL_version_num()));
  set(env, o, "text", str(env, OpenSSL_version(OPENSSL_VERSION)));
  set(env, o, "headers", num(env, (double)OPENSSL_VERSION_NUMBER));
  return o;
}

// Defined only when AddressSanitizer's runtime is in the process (the test:asan and fuzz
// builds), whose allocator glibc's mallinfo2 knows nothing about.
extern size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));

// mallocBytes() → bytes allocated by malloc in the whole process, all arenas (glibc
// mallinfo2): what the C side (this addon, OpenSSL) holds, for memory measurements.
static napi_value js_malloc_bytes(napi_env env, napi_callback_info info) {
  (void)info;
  if (__sanitizer_get_current_allocated_bytes)
    return num(env, (double)__sanitizer_get_current_allocated_bytes());
  struct mallinfo2 m = mallinfo2();
  return num(env, (double)m.uordblks + (double)m.hblkhd);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"openssl", NULL, js_openssl, NULL, NULL, NULL, napi_default, NULL},
      {"mallocBytes", NULL, js_malloc_bytes, NULL, NULL, NULL, napi_default, NULL},
      {"engineCreate", NULL, js_engine_create, NULL, NULL, NULL, napi_default, NULL},
      {"engineClose", NULL, js_engine_close, NULL, NULL, NULL, napi_default, NULL},
      {"engineRef", NULL, js_engine_ref, NULL, NULL, NULL, napi_default, NULL},
      {"storeCreate", NULL, js_store_create, NULL, NULL, NULL, napi_default, NULL},
      {"submit", NULL, js_submit, NULL, NULL, NULL, napi_default, NULL},
      {"clientContextCreate", NULL, js_cctx_create, NULL, NULL, NULL, napi_default, NULL},
      {"connect", NULL, js_connect, NULL, NULL, NULL, napi_default, NULL},
      {"sniAnswer", NULL, js_sni_answer, NULL, NULL, NULL, napi_default, NULL},
      {"exporter", NULL, js_exporter, NULL, NULL, NULL, napi_default, NULL},
      {"closeSession", NULL, js_close_session, NULL, NULL, NULL, napi_default, NULL},
      {"renegotiate", NULL, js_renegotiate, NULL, NULL, NULL, napi_default, NULL},
  };
  NAPI(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
