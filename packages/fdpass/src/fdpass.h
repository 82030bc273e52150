// What fdpass.c shares with streams.c: argument checks and errors thrown the same way.
#ifndef TLSPROXY_FDPASS_H
#define TLSPROXY_FDPASS_H

#include <node_api.h>
#include <uv.h>

napi_value throw_napi(napi_env env, const char *what);
napi_value throw_errno(napi_env env, int err, const char *syscall);
int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv);
int get_fd(napi_env env, napi_value v, int *fd);
// Whether `h` keeps the event loop alive, from a JS boolean (pollRef, streamsRef).
void ref_handle(napi_env env, napi_value ref, uv_handle_t *h);
// Call `cb` from an I/O callback: make_callback drains microtasks, and an exception is reported
// as uncaught, like any I/O callback's.
void call_from_io(napi_env env, napi_async_context async, napi_value cb, size_t argc,
                  const napi_value *argv);
void streams_init(napi_env env, napi_value exports);

#endif
