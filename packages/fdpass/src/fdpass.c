// @tlsproxy/fdpass native part: the few syscalls Node has no public API for.
//
// sendmsg/recvmsg with SCM_RIGHTS on AF_UNIX SOCK_SEQPACKET (unix(7), cmsg(3)), socketpair(2),
// SO_PEERCRED, and a uv_poll watcher so the JS side is driven by the event loop. The stream set
// that drives RawStreams (one epoll for all of them) is in streams.c. Every failure
// becomes a JS Error with errno, code and syscall; nothing here may abort the process (node-pty's
// lesson: argument checks throw, they never assert).

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <node_api.h>
#include <uv.h>

#include "fdpass.h"

// SCM_MAX_FD in the kernel is 253; a message never carries more.
#define FDPASS_MAX_FDS 253

// An N-API call failed. It may have left a JS exception pending (then that one is reported);
// otherwise throw our own. Callers release what they hold before calling this.
napi_value throw_napi(napi_env env, const char *what) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return NULL;
  char msg[160];
  snprintf(msg, sizeof msg, "N-API call failed: %s", what);
  napi_throw_error(env, "TLSPROXY_ERR_FDPASS_NAPI", msg);
  return NULL;
}

// For calls made before anything is acquired that would need releasing.
#define CHECK_NAPI(env, call)                                \
  do {                                                       \
    if ((call) != napi_ok) return throw_napi((env), #call);  \
  } while (0)

// Throw an Error with errno, code (libuv name) and syscall; `what` replaces the default message.
static napi_value throw_errno_msg(napi_env env, int err, const char *syscall, const char *what) {
  const char *code = uv_err_name(uv_translate_sys_error(err));
  char msg[256];
  if (what) snprintf(msg, sizeof msg, "%s", what);
  else snprintf(msg, sizeof msg, "%s failed: %s", syscall, strerror(err));
  napi_value jmsg, jcode, jerr, jerrno, jsys;
  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &jmsg) != napi_ok ||
      napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &jcode) != napi_ok ||
      napi_create_error(env, jcode, jmsg, &jerr) != napi_ok)
    return throw_napi(env, "creating an error");
  if (napi_create_int32(env, -err, &jerrno) == napi_ok)
    napi_set_named_property(env, jerr, "errno", jerrno);
  if (napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &jsys) == napi_ok)
    napi_set_named_property(env, jerr, "syscall", jsys);
  napi_throw(env, jerr);
  return NULL;
}

napi_value throw_errno(napi_env env, int err, const char *syscall) {
  return throw_errno_msg(env, err, syscall, NULL);
}

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
  if (argc < want) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "missing arguments");
    return -1;
  }
  return 0;
}

int get_fd(napi_env env, napi_value v, int *fd) {
  int32_t x;
  if (napi_get_value_int32(env, v, &x) != napi_ok || x < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "file descriptor must be a non-negative integer");
    return -1;
  }
  *fd = x;
  return 0;
}

// NULL when the number cannot be created (callers check: an uninitialised napi_value is UB).
static napi_value make_int(napi_env env, int64_t v) {
  napi_value out;
  if (napi_create_int64(env, v, &out) != napi_ok) return NULL;
  return out;
}

// Hand a descriptor we just acquired to JS as a number. If that fails the descriptor is closed
// here: nobody else knows its number, so nobody else could.
static napi_value return_fd(napi_env env, int fd, const char *what) {
  napi_value out = make_int(env, fd);
  if (out == NULL) {
    close(fd);
    return throw_napi(env, what);
  }
  return out;
}

// A number result (no resource attached): throws if it cannot be created.
static napi_value int_result(napi_env env, int64_t v, const char *what) {
  napi_value out = make_int(env, v);
  return out ? out : throw_napi(env, what);
}

// Build a sockaddr_un from a path; abstract names get a leading NUL (unix(7)).
static int make_addr(napi_env env, napi_value jpath, bool abstract, struct sockaddr_un *addr,
                     socklen_t *len) {
  char path[sizeof addr->sun_path + 1];
  size_t n = 0;
  if (napi_get_value_string_utf8(env, jpath, path, sizeof path, &n) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "path must be a string");
    return -1;
  }
  // A path needs room for its NUL; an abstract name needs room for the leading NUL.
  if (n == 0 || n >= sizeof addr->sun_path) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "socket path is empty or longer than 107 bytes");
    return -1;
  }
  if (!abstract && strlen(path) != n) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "socket path contains a NUL byte");
    return -1;
  }
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if (abstract) {
    memcpy(addr->sun_path + 1, path, n);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
  } else {
    memcpy(addr->sun_path, path, n);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  }
  return 0;
}

// socketpair(seqpacket?): AF_UNIX SOCK_STREAM (or SOCK_SEQPACKET), non-blocking, close-on-exec.
static napi_value js_socketpair(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  bool seq = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc >= 1)
    napi_get_value_bool(env, argv[0], &seq);
  int sv[2];
  int type = (seq ? SOCK_SEQPACKET : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC;
  if (socketpair(AF_UNIX, type, 0, sv) != 0)
    return throw_errno(env, errno, "socketpair");
  napi_value arr, a, b;
  if (napi_create_array_with_length(env, 2, &arr) != napi_ok || (a = make_int(env, sv[0])) == NULL ||
      (b = make_int(env, sv[1])) == NULL || napi_set_element(env, arr, 0, a) != napi_ok ||
      napi_set_element(env, arr, 1, b) != napi_ok) {
    close(sv[0]);
    close(sv[1]);
    return throw_napi(env, "socketpair result");
  }
  return arr;
}

// seqpacketSocket(): one unbound SOCK_SEQPACKET socket, for listen or connect.
static int new_seqpacket(void) {
  return socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
}

// Is the socket file at addr stale, i.e. may it be replaced? Only ECONNREFUSED says so: the file
// is there but no socket is bound to it any more (its owner died). Everything else means someone
// may be using it: success or EAGAIN (a SEQPACKET listener), EPROTOTYPE (a live SOCK_STREAM or
// SOCK_DGRAM server: unlinking would cut it off), EACCES (we cannot even tell). Returns 0 when
// stale or gone, else throws EADDRINUSE naming why and returns -1.
static int probe_stale(napi_env env, const struct sockaddr_un *addr, socklen_t alen) {
  int probe = new_seqpacket();
  if (probe < 0) {
    throw_errno(env, errno, "socket");
    return -1;
  }
  int rc = connect(probe, (const struct sockaddr *)addr, alen);
  int err = rc == 0 ? 0 : errno;
  close(probe);
  if (err == ECONNREFUSED || err == ENOENT) return 0;
  char msg[256];
  snprintf(msg, sizeof msg, "listen failed: address in use by a live socket (probe connect: %s)",
           rc == 0 ? "accepted" : strerror(err));
  throw_errno_msg(env, EADDRINUSE, "listen", msg);
  return -1;
}

// listen(path, abstract, mode, backlog) -> fd
// A stale socket file (nobody bound to it) is removed; a live one of any socket type is
// EADDRINUSE; a file that is not a socket is never removed (EEXIST), so a typo cannot delete
// someone's data.
static napi_value js_listen(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (get_args(env, info, 4, argv) != 0) return NULL;
  bool abstract = false;
  int32_t mode = 0600, backlog = 511;
  napi_get_value_bool(env, argv[1], &abstract);
  napi_get_value_int32(env, argv[2], &mode);
  napi_get_value_int32(env, argv[3], &backlog);
  struct sockaddr_un addr;
  socklen_t alen;
  if (make_addr(env, argv[0], abstract, &addr, &alen) != 0) return NULL;

  if (!abstract) {
    struct stat st;
    if (lstat(addr.sun_path, &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) return throw_errno(env, EEXIST, "listen (path exists, not a socket)");
      if (probe_stale(env, &addr, alen) != 0) return NULL;
      // Unlink only the file that was probed: if another server replaced it meanwhile, that one
      // is live (the window left is between this lstat and unlink, which no syscall closes).
      struct stat again;
      if (lstat(addr.sun_path, &again) == 0) {
        if (again.st_dev != st.st_dev || again.st_ino != st.st_ino)
          return throw_errno_msg(env, EADDRINUSE, "listen",
                                 "listen failed: address in use by a live socket (replaced while probing)");
        if (unlink(addr.sun_path) != 0 && errno != ENOENT) return throw_errno(env, errno, "unlink");
      }
    }
  }

  int fd = new_seqpacket();
  if (fd < 0) return throw_errno(env, errno, "socket");
  // The socket file takes its mode from the umask at bind(); narrowing the umask around bind()
  // means there is no window in which the file is more open than asked, then chmod makes it exact.
  mode_t old = umask((mode_t)(~mode & 0777));
  int rc = bind(fd, (struct sockaddr *)&addr, alen);
  int err = errno;
  umask(old);
  if (rc != 0) {
    close(fd);
    if (err == EADDRINUSE)
      return throw_errno_msg(env, err, "bind", "bind failed: address in use by a live socket");
    return throw_errno(env, err, "bind");
  }
  // From here the file at the path is ours: every failure removes it again.
  if (!abstract && chmod(addr.sun_path, (mode_t)mode) != 0) {
    err = errno;
    close(fd);
    unlink(addr.sun_path);
    return throw_errno(env, err, "chmod");
  }
  if (listen(fd, backlog) != 0) {
    err = errno;
    close(fd);
    if (!abstract) unlink(addr.sun_path);
    return throw_errno(env, err, "listen");
  }
  napi_value out = make_int(env, fd);
  if (out == NULL) {
    close(fd);
    if (!abstract) unlink(addr.sun_path);
    return throw_napi(env, "listen result");
  }
  return out;
}

// accept(fd) -> fd | null (nothing pending)
static napi_value js_accept(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (get_args(env, info, 1, argv) != 0 || get_fd(env, argv[0], &fd) != 0) return NULL;
  int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (c < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED || errno == EINTR) {
      napi_value null;
      napi_get_null(env, &null);
      return null;
    }
    return throw_errno(env, errno, "accept4");
  }
  return return_fd(env, c, "accept result");
}

// connect(path, abstract) -> fd. AF_UNIX connect completes at once or fails at once; EAGAIN
// (listener backlog full) is reported so the caller can retry later.
static napi_value js_connect(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (get_args(env, info, 2, argv) != 0) return NULL;
  bool abstract = false;
  napi_get_value_bool(env, argv[1], &abstract);
  struct sockaddr_un addr;
  socklen_t alen;
  if (make_addr(env, argv[0], abstract, &addr, &alen) != 0) return NULL;
  int fd = new_seqpacket();
  if (fd < 0) return throw_errno(env, errno, "socket");
  if (connect(fd, (struct sockaddr *)&addr, alen) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "connect");
  }
  return return_fd(env, fd, "connect result");
}

// send(fd, buffer, fds[]) -> bytes sent | null (would block)
static napi_value js_send(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  if (get_args(env, info, 3, argv) != 0 || get_fd(env, argv[0], &fd) != 0) return NULL;
  void *data = NULL;
  size_t len = 0;
  bool isbuf = false;
  napi_is_buffer(env, argv[1], &isbuf);
  if (!isbuf) return throw_type(env, "payload must be a Buffer");
  CHECK_NAPI(env, napi_get_buffer_info(env, argv[1], &data, &len));
  uint32_t nfds = 0;
  bool isarr = false;
  napi_is_array(env, argv[2], &isarr);
  if (!isarr) return throw_type(env, "fds must be an array");
  CHECK_NAPI(env, napi_get_array_length(env, argv[2], &nfds));
  if (nfds > FDPASS_MAX_FDS) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "at most 253 descriptors per message");
    return NULL;
  }
  int fds[FDPASS_MAX_FDS];
  for (uint32_t i = 0; i < nfds; i++) {
    napi_value v;
    CHECK_NAPI(env, napi_get_element(env, argv[2], i, &v));
    if (get_fd(env, v, &fds[i]) != 0) return NULL;
  }

  struct iovec iov = {.iov_base = data, .iov_len = len};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  char cbuf[CMSG_SPACE(sizeof(int) * FDPASS_MAX_FDS)];
  if (nfds > 0) {
    memset(cbuf, 0, sizeof cbuf);
    msg.msg_control = cbuf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      napi_value null;
      napi_get_null(env, &null);
      return null;
    }
    return throw_errno(env, errno, "sendmsg");
  }
  return int_result(env, n, "send result");
}

// recv(fd, maxBytes, maxFds) -> null (would block) | { data, fds, truncated, ctrunc }
// data is null at end of stream. Received descriptors are close-on-exec (MSG_CMSG_CLOEXEC).
// With MSG_CTRUNC the kernel dropped descriptors (e.g. the receiver hit RLIMIT_NOFILE); the
// ones that did arrive are still returned so JS can close them and report the error.
static napi_value js_recv(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  if (get_args(env, info, 3, argv) != 0 || get_fd(env, argv[0], &fd) != 0) return NULL;
  uint32_t maxbytes = 0, maxfds = 0;
  napi_get_value_uint32(env, argv[1], &maxbytes);
  napi_get_value_uint32(env, argv[2], &maxfds);
  if (maxbytes == 0 || maxbytes > (16u << 20)) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "maxBytes must be 1..16 MiB");
    return NULL;
  }
  if (maxfds > FDPASS_MAX_FDS) maxfds = FDPASS_MAX_FDS;

  // One receive buffer for the process (addon calls all run on the JS thread), grown on
  // demand, so a small message does not cost a maxBytes allocation. One extra byte: a message
  // longer than maxBytes is then seen as truncated.
  static char *rbuf = NULL;
  static size_t rcap = 0;
  size_t want = (size_t)maxbytes + 1;
  if (rcap < want) {
    char *nb = realloc(rbuf, want);
    if (!nb) return throw_errno(env, ENOMEM, "realloc");
    rbuf = nb;
    rcap = want;
  }
  void *data = rbuf;
  struct iovec iov = {.iov_base = data, .iov_len = want};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  // Room for at least one fd even when none are expected, so unwanted ones are seen and closed.
  char cbuf[CMSG_SPACE(sizeof(int) * FDPASS_MAX_FDS)];
  msg.msg_control = cbuf;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * (maxfds > 0 ? maxfds : 1));
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      napi_value null;
      napi_get_null(env, &null);
      return null;
    }
    return throw_errno(env, errno, "recvmsg");
  }

  // From here this function owns every received descriptor until the result object reaches JS;
  // any failure on the way closes them all (once: JS never sees a result that failed).
  int rfds[FDPASS_MAX_FDS];
  uint32_t k = 0;
  bool lost = false;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int *p = (int *)CMSG_DATA(c);
    for (size_t i = 0; i < count; i++) {
      int rfd;
      memcpy(&rfd, p + i, sizeof rfd);
      // The control buffer holds at most FDPASS_MAX_FDS, so this cannot overflow; if it ever
      // did, the extra ones are closed and reported like a kernel truncation.
      if (k < FDPASS_MAX_FDS) {
        rfds[k++] = rfd;
      } else {
        close(rfd);
        lost = true;
      }
    }
  }
  bool eof = (n == 0 && k == 0 && (msg.msg_flags & MSG_CTRUNC) == 0);
  bool trunc = (msg.msg_flags & MSG_TRUNC) != 0 || (size_t)n > maxbytes;
  bool ctrunc = (msg.msg_flags & MSG_CTRUNC) != 0 || lost;

  napi_value out, jfds, jtrunc, jctrunc, jdata;
  if (napi_create_object(env, &out) != napi_ok || napi_create_array(env, &jfds) != napi_ok)
    goto fail;
  for (uint32_t i = 0; i < k; i++) {
    napi_value v = make_int(env, rfds[i]);
    if (v == NULL || napi_set_element(env, jfds, i, v) != napi_ok) goto fail;
  }
  if (eof) {
    if (napi_get_null(env, &jdata) != napi_ok) goto fail;
  } else if (napi_create_buffer_copy(env, (size_t)n > maxbytes ? maxbytes : (size_t)n, data, NULL,
                                     &jdata) != napi_ok) {
    goto fail;
  }
  if (napi_get_boolean(env, trunc, &jtrunc) != napi_ok ||
      napi_get_boolean(env, ctrunc, &jctrunc) != napi_ok ||
      napi_set_named_property(env, out, "data", jdata) != napi_ok ||
      napi_set_named_property(env, out, "fds", jfds) != napi_ok ||
      napi_set_named_property(env, out, "truncated", jtrunc) != napi_ok ||
      napi_set_named_property(env, out, "ctrunc", jctrunc) != napi_ok)
    goto fail;
  return out;

fail:
  for (uint32_t i = 0; i < k; i++) close(rfds[i]);
  return throw_napi(env, "recv result (received descriptors were closed)");
}

// peerCred(fd) -> { pid, uid, gid } (SO_PEERCRED, the credentials at connect()/socketpair())
static napi_value js_peercred(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (get_args(env, info, 1, argv) != 0 || get_fd(env, argv[0], &fd) != 0) return NULL;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    return throw_errno(env, errno, "getsockopt(SO_PEERCRED)");
  napi_value out, pid, uid, gid;
  if (napi_create_object(env, &out) != napi_ok || (pid = make_int(env, cred.pid)) == NULL ||
      (uid = make_int(env, cred.uid)) == NULL || (gid = make_int(env, cred.gid)) == NULL ||
      napi_set_named_property(env, out, "pid", pid) != napi_ok ||
      napi_set_named_property(env, out, "uid", uid) != napi_ok ||
      napi_set_named_property(env, out, "gid", gid) != napi_ok)
    return throw_napi(env, "peerCred result");
  return out;
}

// sockInfo(fd) -> { domain, type } | null when fd is not a socket
static napi_value js_sockinfo(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (get_args(env, info, 1, argv) != 0 || get_fd(env, argv[0], &fd) != 0) return NULL;
  int domain = 0, type = 0;
  socklen_t len = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) {
    if (errno == ENOTSOCK) {
      napi_value null;
      napi_get_null(env, &null);
      return null;
    }
    return throw_errno(env, errno, "getsockopt(SO_DOMAIN)");
  }
  len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
    return throw_errno(env, errno, "getsockopt(SO_TYPE)");
  const char *d = domain == AF_UNIX ? "unix" : domain == AF_INET ? "inet" : domain == AF_INET6 ? "inet6" : "other";
  const char *t = type == SOCK_STREAM ? "stream" : type == SOCK_DGRAM ? "dgram" : type == SOCK_SEQPACKET ? "seqpacket" : "other";
  napi_value out, jd, jt;
  if (napi_create_object(env, &out) != napi_ok ||
      napi_create_string_utf8(env, d, NAPI_AUTO_LENGTH, &jd) != napi_ok ||
      napi_create_string_utf8(env, t, NAPI_AUTO_LENGTH, &jt) != napi_ok ||
      napi_set_named_property(env, out, "domain", jd) != napi_ok ||
      napi_set_named_property(env, out, "type", jt) != napi_ok)
    return throw_napi(env, "sockInfo result");
  return out;
}

// setCloexec(fd): systemd passes descriptors without FD_CLOEXEC; children must not inherit them.
static napi_value js_setcloexec(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (get_args(env, info, 1, argv) != 0 || get_fd(env, argv[0], &fd) != 0) return NULL;
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) != 0) return throw_errno(env, errno, "fcntl");
  return NULL;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (get_args(env, info, 1, argv) != 0 || get_fd(env, argv[0], &fd) != 0) return NULL;
  // Linux closes the descriptor even when close() reports EINTR: never retry.
  if (close(fd) != 0 && errno != EINTR) return throw_errno(env, errno, "close");
  return NULL;
}

// dup(fd) -> new close-on-exec fd (used to give a net.Socket its own copy)
static napi_value js_dup(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (get_args(env, info, 1, argv) != 0 || get_fd(env, argv[0], &fd) != 0) return NULL;
  int n = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (n < 0) return throw_errno(env, errno, "fcntl(F_DUPFD_CLOEXEC)");
  return return_fd(env, n, "dup result");
}

// discard(fd, max) -> bytes thrown away: read and drop whatever a stream socket has pending,
// without blocking. Used at the STARTTLS go-ahead: bytes already there were sent before the
// client could have seen the go-ahead, so they are pipelined plaintext and must never reach TLS.
static napi_value js_discard(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  if (get_args(env, info, 2, argv) != 0 || get_fd(env, argv[0], &fd) != 0) return NULL;
  int64_t max = 0;
  napi_get_value_int64(env, argv[1], &max);
  char buf[4096];
  int64_t total = 0;
  while (total < max) {
    size_t want = (size_t)(max - total < (int64_t)sizeof buf ? max - total : (int64_t)sizeof buf);
    ssize_t n = recv(fd, buf, want, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0) return throw_errno(env, errno, "recv");
    if (n == 0) break;
    total += n;
  }
  return int_result(env, total, "discard result");
}

// peek(fd, max) -> Buffer of up to max pending bytes, left in the socket (MSG_PEEK), or null
// when nothing is pending. Lets a caller read an exact-length prefix (a PROXY protocol header)
// without consuming what follows it.
static napi_value js_peek(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  if (get_args(env, info, 2, argv) != 0 || get_fd(env, argv[0], &fd) != 0) return NULL;
  uint32_t max = 0;
  napi_get_value_uint32(env, argv[1], &max);
  if (max == 0 || max > 65536) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "max must be 1..65536");
    return NULL;
  }
  char buf[65536];
  ssize_t n;
  do {
    n = recv(fd, buf, max, MSG_PEEK | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    napi_value null;
    napi_get_null(env, &null);
    return null;
  }
  if (n < 0) return throw_errno(env, errno, "recv(MSG_PEEK)");
  napi_value out;
  CHECK_NAPI(env, napi_create_buffer_copy(env, (size_t)n, buf, NULL, &out));
  return out;
}

// writeAll(fd, buffer) -> bytes written without blocking (may be short if the buffer is full)
static napi_value js_write(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  if (get_args(env, info, 2, argv) != 0 || get_fd(env, argv[0], &fd) != 0) return NULL;
  void *data = NULL;
  size_t len = 0;
  bool isbuf = false;
  napi_is_buffer(env, argv[1], &isbuf);
  if (!isbuf) return throw_type(env, "data must be a Buffer");
  CHECK_NAPI(env, napi_get_buffer_info(env, argv[1], &data, &len));
  size_t off = 0;
  while (off < len) {
    ssize_t n = send(fd, (char *)data + off, len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0) return throw_errno(env, errno, "send");
    off += (size_t)n;
  }
  return int_result(env, (int64_t)off, "write result");
}

// shutdownWrite(fd): our side is done sending (FIN); a peer already gone is not an error.
static napi_value js_shutdown_write(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (get_args(env, info, 1, argv) != 0 || get_fd(env, argv[0], &fd) != 0) return NULL;
  if (shutdown(fd, SHUT_WR) != 0 && errno != ENOTCONN) return throw_errno(env, errno, "shutdown");
  return NULL;
}

// setNoDelay(fd): TCP_NODELAY, as Node sets it on accepted sockets; a non-TCP socket is left as is.
static napi_value js_set_nodelay(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (get_args(env, info, 1, argv) != 0 || get_fd(env, argv[0], &fd) != 0) return NULL;
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 && errno != EOPNOTSUPP &&
      errno != ENOPROTOOPT && errno != EINVAL)
    return throw_errno(env, errno, "setsockopt(TCP_NODELAY)");
  return NULL;
}

// ---- uv_poll watcher -------------------------------------------------------------------------

typedef struct {
  uv_poll_t handle;
  napi_env env;
  napi_ref callback;
  napi_async_context async;
  napi_ref self;  // keeps the JS wrapper alive while the handle is open
  bool closing;
} poller_t;

static void poll_cb(uv_poll_t *h, int status, int events) {
  poller_t *p = (poller_t *)h->data;
  if (p->closing) return;
  napi_env env = p->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, argv[2];
  napi_get_reference_value(env, p->callback, &cb);
  napi_create_int32(env, status, &argv[0]);
  napi_create_int32(env, events, &argv[1]);
  call_from_io(env, p->async, cb, 2, argv);
  napi_close_handle_scope(env, scope);
}

void call_from_io(napi_env env, napi_async_context async, napi_value cb, size_t argc,
                  const napi_value *argv) {
  napi_value recv, result;
  if (napi_get_global(env, &recv) != napi_ok) return;
  napi_make_callback(env, async, recv, cb, argc, argv, &result);
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
}

// Frees whatever part of the watcher was set up (pollCreate may have failed half-way).
static void poll_close_cb(uv_handle_t *h) {
  poller_t *p = (poller_t *)h->data;
  napi_env env = p->env;
  if (p->callback) napi_delete_reference(env, p->callback);
  if (p->async) napi_async_destroy(env, p->async);
  if (p->self) napi_delete_reference(env, p->self);
  free(p);
}

static void poller_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  (void)hint;
  // The handle owns the memory; it is freed in poll_close_cb after an explicit close.
}

// pollCreate(fd, callback(status, events)) -> handle object
static napi_value js_poll_create(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  if (get_args(env, info, 2, argv) != 0 || get_fd(env, argv[0], &fd) != 0) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[1], &t);
  if (t != napi_function) return throw_type(env, "callback must be a function");
  uv_loop_t *loop;
  CHECK_NAPI(env, napi_get_uv_event_loop(env, &loop));
  poller_t *p = calloc(1, sizeof *p);
  if (!p) return throw_errno(env, ENOMEM, "calloc");
  int rc = uv_poll_init_socket(loop, &p->handle, fd);
  if (rc != 0) {
    free(p);
    return throw_errno(env, -rc, "uv_poll_init");
  }
  p->handle.data = p;
  p->env = env;
  // The handle is now in the loop's list: from here it can only be released by uv_close, whose
  // callback frees the rest. Freeing it directly would leave the loop a dangling pointer.
  napi_value name, obj;
  bool wrapped = false;
  if (napi_create_reference(env, argv[1], 1, &p->callback) != napi_ok ||
      napi_create_string_utf8(env, "tlsproxy:fdpass", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &p->async) != napi_ok ||
      napi_create_object(env, &obj) != napi_ok)
    goto fail;
  if (napi_wrap(env, obj, p, poller_finalize, NULL, NULL) != napi_ok) goto fail;
  wrapped = true;
  if (napi_create_reference(env, obj, 1, &p->self) != napi_ok) goto fail;
  return obj;

fail:
  if (wrapped) napi_remove_wrap(env, obj, NULL);
  p->closing = true;
  uv_close((uv_handle_t *)&p->handle, poll_close_cb);
  return throw_napi(env, "pollCreate");
}

static poller_t *unwrap_poller(napi_env env, napi_value v) {
  poller_t *p = NULL;
  if (napi_unwrap(env, v, (void **)&p) != napi_ok || p == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "not a poll handle");
    return NULL;
  }
  if (p->closing) {
    napi_throw_error(env, "ERR_SOCKET_CLOSED", "poll handle is closed");
    return NULL;
  }
  return p;
}

// pollStart(handle, events): events is a mask of 1 (readable) | 2 (writable)
static napi_value js_poll_start(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (get_args(env, info, 2, argv) != 0) return NULL;
  poller_t *p = unwrap_poller(env, argv[0]);
  if (!p) return NULL;
  int32_t ev = 0;
  napi_get_value_int32(env, argv[1], &ev);
  int mask = 0;
  if (ev & 1) mask |= UV_READABLE;
  if (ev & 2) mask |= UV_WRITABLE;
  int rc = mask ? uv_poll_start(&p->handle, mask, poll_cb) : uv_poll_stop(&p->handle);
  if (rc != 0) return throw_errno(env, -rc, "uv_poll_start");
  return NULL;
}

static napi_value js_poll_ref(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (get_args(env, info, 2, argv) != 0) return NULL;
  poller_t *p = unwrap_poller(env, argv[0]);
  if (!p) return NULL;
  ref_handle(env, argv[1], (uv_handle_t *)&p->handle);
  return NULL;
}

void ref_handle(napi_env env, napi_value ref, uv_handle_t *h) {
  bool on = true;
  napi_get_value_bool(env, ref, &on);
  if (on) uv_ref(h);
  else uv_unref(h);
}

// pollClose(handle): stop watching. The fd itself is closed separately by its owner.
static napi_value js_poll_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv) != 0) return NULL;
  poller_t *p = NULL;
  if (napi_unwrap(env, argv[0], (void **)&p) != napi_ok || p == NULL) return throw_type(env, "not a poll handle");
  if (p->closing) return NULL;
  p->closing = true;
  uv_poll_stop(&p->handle);
  napi_remove_wrap(env, argv[0], NULL);
  uv_close((uv_handle_t *)&p->handle, poll_close_cb);
  return NULL;
}

#define EXPORT_FN(name, fn)                                               \
  do {                                                                    \
    napi_value f;                                                         \
    napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f);      \
    napi_set_named_property(env, exports, name, f);                       \
  } while (0)

static napi_value init(napi_env env, napi_value exports) {
  EXPORT_FN("socketpair", js_socketpair);
  EXPORT_FN("listen", js_listen);
  EXPORT_FN("accept", js_accept);
  EXPORT_FN("connect", js_connect);
  EXPORT_FN("send", js_send);
  EXPORT_FN("recv", js_recv);
  EXPORT_FN("peerCred", js_peercred);
  EXPORT_FN("sockInfo", js_sockinfo);
  EXPORT_FN("setCloexec", js_setcloexec);
  EXPORT_FN("close", js_close);
  EXPORT_FN("dup", js_dup);
  EXPORT_FN("discard", js_discard);
  EXPORT_FN("peek", js_peek);
  EXPORT_FN("write", js_write);
  EXPORT_FN("shutdownWrite", js_shutdown_write);
  EXPORT_FN("setNoDelay", js_set_nodelay);
  EXPORT_FN("pollCreate", js_poll_create);
  EXPORT_FN("pollStart", js_poll_start);
  EXPORT_FN("pollRef", js_poll_ref);
  EXPORT_FN("pollClose", js_poll_close);
  streams_init(env, exports);
  napi_value max;
  napi_create_int32(env, FDPASS_MAX_FDS, &max);
  napi_set_named_property(env, exports, "MAX_FDS", max);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
