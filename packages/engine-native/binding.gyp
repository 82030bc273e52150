{
  "targets": [
    {
      "target_name": "engine_native",
      "sources": ["src/native/addon.c", "src/native/ctx.c", "src/native/loop.c"],
      "cflags": [
        "-std=gnu11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration",
        "-O2", "-fstack-protector-strong", "-D_FORTIFY_SOURCE=2", "-fvisibility=hidden"
      ],
      "ldflags": ["-Wl,-z,relro,-z,now", "-pthread"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE", "OPENSSL_API_COMPAT=30000", "OPENSSL_NO_DEPRECATED"]
    }
  ]
}
