// What fdpass.c shares with streams.c: argument checks and errors thrown the same way.
#ifndef TLSPROXY_FDPASS_H
#define TLSPROXY_FDPASS_H

#include <node_api.h>

napi_value throw_napi(napi_env env, const char *what);
napi_value throw_errno(napi_env env, int err, const char *syscall);
int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv);
int get_fd(napi_env env, napi_value v, int *fd);
void streams_init(napi_env env, napi_value exports);

#endif
