#!/usr/bin/env bash
# Installs what ember's build, tests and demo need on a fresh machine, and
# builds the freestanding guests. Idempotent: quick when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in qemu-system-x86_64:qemu-system-x86 clang:clang ld.lld:lld wat2wasm:wabt \
            mksquashfs:squashfs-tools mkfs.ext4:e2fsprogs \
            as:binutils objcopy:binutils \
            ip:iproute2 openssl:openssl; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# Debian's wasi-libc lives in /usr/lib/wasm32-wasi (other distros: /usr/share/wasi-sysroot)
[ -f /usr/lib/wasm32-wasi/libc.a ] || [ -d /usr/share/wasi-sysroot ] || need_apt+=(wasi-libc)
# compiler-rt builtins for wasm32 (examples/json-c links them)
ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 || need_apt+=(libclang-rt-14-dev-wasm32)
[ -x /bin/busybox ] || need_apt+=(busybox-static)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${need_apt[@]}" >/dev/null
fi

# The freestanding guests (kernel-less runtime and test guests).
if [ -f guest-agent/kernelless/Cargo.toml ]; then
  bash guest-agent/kernelless/build.sh
fi

# The Linux guest (kernel-config/, images/): test tools, then the kernel
# (cached; ~7 min on 2 busy cores the first time, instant after) and the
# images (static ember-agent, initramfs, `provided` runtime, and the
# python3.11 image via mmdebstrap, 2-5 min once; EMBER_PYTHON_IMAGE=0 skips
# it, and then the test that needs it builds it).
need_apt=()
for pair in curl:curl cc:build-essential cpio:cpio file:file python3:python3; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair##*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >/dev/null
fi
bash kernel-config/build.sh >/dev/null
if [ "${EMBER_PYTHON_IMAGE:-1}" = 0 ]; then
  bash images/build-images.sh >/dev/null
else
  bash images/build-images.sh --python >/dev/null
fi
