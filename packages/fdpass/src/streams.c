// The stream set: one epoll instance for every RawStream (stream.ts), watched by one uv_poll.
//
// Why not a uv_poll per stream: uv_poll_init checks the descriptor with an epoll ADD + DEL and
// sets O_NONBLOCK again (ioctl), and every uv_poll_start/stop/close removes the descriptor from
// libuv's epoll first — nine system calls around one short preamble, where this set needs two
// (ADD when the stream first waits, DEL when it stops or goes). And the streams that are ready
// reach JavaScript as one batch per loop turn, their bytes already read here (one call into JS
// for all of them, not two per stream), which is what lets a busy proxy feed its dialects in
// batches.
//
// Ownership: the set owns its epoll descriptor and its uv_poll (closed at environment teardown);
// it owns no stream descriptor — each RawStream does, and removes it (DEL) before closing or
// passing it on. Level-triggered: what one batch leaves (more than BATCH streams ready, a read
// larger than READ_MAX) is reported again next turn.

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <node_api.h>
#include <uv.h>

#include "fdpass.h"

#define BATCH 128
#define READ_MAX 65536

// Events as JS sees them.
#define EV_READ 1
#define EV_WRITE 2
#define EV_HUP 4

typedef struct {
  uv_poll_t handle;
  napi_env env;
  napi_ref callback;
  napi_async_context async;
  int epfd;
  bool closing;
} streamset_t;

// The stream's registration carries its token (JS's key for it), whether it is reading (so the
// bytes are read here) and its descriptor.
static uint64_t pack(uint32_t token, bool reading, int fd) {
  return ((uint64_t)token << 33) | ((uint64_t)(reading ? 1 : 0) << 32) | (uint32_t)fd;
}

// One entry of a batch: token, events, then the bytes read (a Buffer; empty at EOF), a negative
// errno, or null (nothing read).
static void report(napi_env env, napi_value list, uint32_t *at, const struct epoll_event *e,
                   char *read_buf) {
  uint32_t token = (uint32_t)(e->data.u64 >> 33);
  bool reading = (e->data.u64 >> 32) & 1;
  int fd = (int)(uint32_t)e->data.u64;
  int ev = 0;
  if (e->events & EPOLLIN) ev |= EV_READ;
  if (e->events & EPOLLOUT) ev |= EV_WRITE;
  if (e->events & (EPOLLERR | EPOLLHUP)) ev |= EV_HUP;
  napi_value jtoken, jev, data;
  if (napi_create_uint32(env, token, &jtoken) != napi_ok ||
      napi_create_int32(env, ev, &jev) != napi_ok)
    return;
  napi_get_null(env, &data);
  if (reading && (ev & (EV_READ | EV_HUP))) {
    ssize_t n;
    do {
      n = recv(fd, read_buf, READ_MAX, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n >= 0) {
      if (napi_create_buffer_copy(env, (size_t)n, read_buf, NULL, &data) != napi_ok) return;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
      napi_create_int32(env, -errno, &data);
    }
  }
  napi_set_element(env, list, (*at)++, jtoken);
  napi_set_element(env, list, (*at)++, jev);
  napi_set_element(env, list, (*at)++, data);
}

static void set_cb(uv_poll_t *h, int status, int events) {
  (void)events;
  streamset_t *s = (streamset_t *)h->data;
  if (s->closing || status < 0) return;
  struct epoll_event evs[BATCH];
  int n;
  do {
    n = epoll_wait(s->epfd, evs, BATCH, 0);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return;
  napi_env env = s->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value list, cb;
  uint32_t at = 0;
  if (napi_create_array_with_length(env, (size_t)n * 3, &list) == napi_ok &&
      napi_get_reference_value(env, s->callback, &cb) == napi_ok) {
    // On this thread's stack: a set per environment, and worker threads have their own.
    char read_buf[READ_MAX];
    for (int i = 0; i < n; i++) report(env, list, &at, &evs[i], read_buf);
    call_from_io(env, s->async, cb, 1, &list);
  }
  napi_close_handle_scope(env, scope);
}

static void set_close_cb(uv_handle_t *h) {
  streamset_t *s = (streamset_t *)h->data;
  if (s->epfd >= 0) close(s->epfd);
  free(s);
}

// The environment is going away (process exit, a worker's end): release the set. The JS
// references die with the environment; only the handle and the descriptor are ours to close.
static void set_teardown(void *arg) {
  streamset_t *s = (streamset_t *)arg;
  s->closing = true;
  uv_close((uv_handle_t *)&s->handle, set_close_cb);
}

static void set_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  (void)hint;
  // The set lives until the environment's teardown (set_teardown), not until its wrapper dies.
}

// streamsCreate(callback(batch)) -> handle. One per module instance (stream.ts).
static napi_value js_streams_create(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv) != 0) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[0], &t);
  if (t != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "callback must be a function");
    return NULL;
  }
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return throw_napi(env, "loop");
  streamset_t *s = calloc(1, sizeof *s);
  if (!s) return throw_errno(env, ENOMEM, "calloc");
  s->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (s->epfd < 0) {
    int err = errno;
    free(s);
    return throw_errno(env, err, "epoll_create1");
  }
  int rc = uv_poll_init(loop, &s->handle, s->epfd);
  if (rc != 0) {
    close(s->epfd);
    free(s);
    return throw_errno(env, -rc, "uv_poll_init");
  }
  s->handle.data = s;
  s->env = env;
  // From here the handle is in the loop: only uv_close (set_teardown) releases it.
  napi_value name, obj;
  if (napi_create_reference(env, argv[0], 1, &s->callback) != napi_ok ||
      napi_create_string_utf8(env, "tlsproxy:streams", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &s->async) != napi_ok ||
      napi_create_object(env, &obj) != napi_ok ||
      napi_wrap(env, obj, s, set_finalize, NULL, NULL) != napi_ok) {
    set_teardown(s);
    return throw_napi(env, "streamsCreate");
  }
  if (napi_add_env_cleanup_hook(env, set_teardown, s) != napi_ok) {
    napi_remove_wrap(env, obj, NULL);
    set_teardown(s);
    return throw_napi(env, "streamsCreate");
  }
  rc = uv_poll_start(&s->handle, UV_READABLE, set_cb);
  if (rc != 0) return throw_errno(env, -rc, "uv_poll_start");
  // Holds the process only while some stream waits (streamsRef).
  uv_unref((uv_handle_t *)&s->handle);
  return obj;
}

static streamset_t *unwrap_set(napi_env env, napi_value v) {
  streamset_t *s = NULL;
  if (napi_unwrap(env, v, (void **)&s) != napi_ok || s == NULL || s->closing) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "not a stream set");
    return NULL;
  }
  return s;
}

// streamsCtl(set, fd, token, events): events 0 removes the descriptor (ENOENT and EBADF are not
// errors: it was not there); otherwise `add` says whether it is new to the set (ADD, else MOD).
// events: 1 read (the set reads its bytes), 2 write.
static napi_value js_streams_ctl(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int fd;
  if (get_args(env, info, 5, argv) != 0) return NULL;
  streamset_t *s = unwrap_set(env, argv[0]);
  if (!s || get_fd(env, argv[1], &fd) != 0) return NULL;
  uint32_t token = 0;
  int32_t events = 0;
  bool add = false;
  napi_get_value_uint32(env, argv[2], &token);
  napi_get_value_int32(env, argv[3], &events);
  napi_get_value_bool(env, argv[4], &add);
  if (token >= (1u << 31)) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "token out of range");
    return NULL;
  }
  struct epoll_event e = {0};
  if (events == 0) {
    if (epoll_ctl(s->epfd, EPOLL_CTL_DEL, fd, &e) != 0 && errno != ENOENT && errno != EBADF)
      return throw_errno(env, errno, "epoll_ctl(DEL)");
    return NULL;
  }
  e.events = ((events & EV_READ) ? EPOLLIN : 0) | ((events & EV_WRITE) ? EPOLLOUT : 0);
  e.data.u64 = pack(token, (events & EV_READ) != 0, fd);
  if (epoll_ctl(s->epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &e) != 0)
    return throw_errno(env, errno, add ? "epoll_ctl(ADD)" : "epoll_ctl(MOD)");
  return NULL;
}

// streamsRef(set, ref): whether the set keeps the event loop alive (while any stream waits).
static napi_value js_streams_ref(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (get_args(env, info, 2, argv) != 0) return NULL;
  streamset_t *s = unwrap_set(env, argv[0]);
  if (!s) return NULL;
  ref_handle(env, argv[1], (uv_handle_t *)&s->handle);
  return NULL;
}

void streams_init(napi_env env, napi_value exports) {
  static const struct {
    const char *name;
    napi_callback fn;
  } fns[] = {
      {"streamsCreate", js_streams_create},
      {"streamsCtl", js_streams_ctl},
      {"streamsRef", js_streams_ref},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f) == napi_ok)
      napi_set_named_property(env, exports, fns[i].name, f);
  }
}
