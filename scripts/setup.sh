#!/usr/bin/env bash
# Installs what ember's build, tests and demo need on a fresh machine, and
# builds the freestanding guests. Idempotent: quick when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${EMBER_CACHE:-$HOME/.cache/ember}"
mkdir -p "$cache"
setup_log="$cache/setup.log"
: >"$setup_log"
# step NAME CMD...: runs CMD with its output in the log, and prints the step
# and its duration (the first run builds a kernel and images for minutes).
# A failing step prints the end of the log.
step() {
  local name=$1; shift
  local t0=$SECONDS
  printf 'setup: %s ... ' "$name"
  echo "== $name" >>"$setup_log"
  if "$@" >>"$setup_log" 2>&1; then
    echo "done ($((SECONDS - t0)) s)"
  else
    local rc=$?
    echo "FAILED ($((SECONDS - t0)) s); the end of $setup_log:"
    tail -n 40 "$setup_log" >&2
    exit "$rc"
  fi
}
command -v cargo >/dev/null 2>&1 || {
  echo "setup: cargo is not on PATH: install rustup and Rust 1.95.0, the rust-toolchain.toml pin (under sudo, keep PATH: sudo env PATH=\"\$PATH\" ...)" >&2
  exit 1
}

need_apt=()
for pair in qemu-system-x86_64:qemu-system-x86 clang:clang ld.lld:lld wat2wasm:wabt \
            mksquashfs:squashfs-tools mkfs.ext4:e2fsprogs \
            as:binutils objcopy:binutils \
            ip:iproute2 openssl:openssl prometheus:prometheus \
            chromium:chromium /usr/bin/time:time nats-server:nats-server; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# Debian's wasi-libc lives in /usr/lib/wasm32-wasi (other distros: /usr/share/wasi-sysroot)
[ -f /usr/lib/wasm32-wasi/libc.a ] || [ -d /usr/share/wasi-sysroot ] || need_apt+=(wasi-libc)
# compiler-rt builtins for wasm32 (examples/json-c links them)
ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 || need_apt+=(libclang-rt-14-dev-wasm32)
[ -x /bin/busybox ] || need_apt+=(busybox-static)
# `ember bench` plots draw their text with a TrueType font read at run time;
# tests/bench renders report.html in headless chromium (above).
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q && apt-get install -y -q "$@"
}
if [ ${#need_apt[@]} -gt 0 ]; then
  step "installing ${need_apt[*]}" apt_install "${need_apt[@]}"
fi

# The freestanding guests (kernel-less runtime and test guests).
if [ -f guest-agent/kernelless/Cargo.toml ]; then
  step "building the kernel-less guests" bash guest-agent/kernelless/build.sh
fi

# CPython for wasm32-wasi, the kernel-less guest's python3.11 (issue 19):
# built from Debian's sources once into $cache/python-wasm (~2-4 min on 2
# cores the first time, instant after).
step "CPython 3.11 for wasm32-wasi (cached; 2-4 min the first time)" bash scripts/build-python-wasm.sh

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
  step "installing ${need_apt[*]}" apt_install "${need_apt[@]}"
fi
step "the guest kernel (cached; ~7 min the first time)" bash kernel-config/build.sh
if [ "${EMBER_PYTHON_IMAGE:-1}" = 0 ]; then
  step "the guest images (cached)" bash images/build-images.sh
else
  step "the guest images incl. python3.11 (cached; 3-5 min the first time)" bash images/build-images.sh --python
fi
