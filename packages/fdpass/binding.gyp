{
  "targets": [
    {
      "target_name": "fdpass",
      "sources": ["src/fdpass.c", "src/streams.c"],
      "cflags": [
        "-std=gnu11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration",
        "-O2", "-fstack-protector-strong", "-D_FORTIFY_SOURCE=2", "-fvisibility=hidden"
      ],
      "ldflags": ["-Wl,-z,relro,-z,now"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"]
    }
  ]
}
