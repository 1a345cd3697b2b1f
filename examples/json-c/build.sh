#!/usr/bin/env bash
# Builds examples/json-c/handler.c into handler.wasm (wasm32-wasi command
# module) with Debian's clang + lld + wasi-libc, installing them with apt if
# they are missing. Prints the path of the module.
#   bash examples/json-c/build.sh && echo '{"name":"Ada","numbers":[1,2]}' | ember-run examples/json-c/handler.wasm
set -euo pipefail
cd "$(dirname "$0")"
need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v wasm-ld >/dev/null 2>&1 || command -v wasm-ld-14 >/dev/null 2>&1 || need+=(lld)
[ -f /usr/lib/wasm32-wasi/libc.a ] || need+=(wasi-libc)
ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 || need+=(libclang-rt-14-dev-wasm32)
if [ ${#need[@]} -gt 0 ]; then
  echo "json-c: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${need[@]}" >/dev/null
fi
out=${1:-handler.wasm}
clang --target=wasm32-wasi --sysroot=/usr -O2 -Wall -Wextra -o "$out" handler.c
echo "$PWD/$out"
