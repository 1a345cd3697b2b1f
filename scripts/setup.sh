#!/usr/bin/env bash
# Installs what ember's build, tests and demo need on a fresh machine, and
# builds the freestanding guests. Idempotent: quick when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in qemu-system-x86_64:qemu-system-x86 clang:clang ld.lld:lld wat2wasm:wabt \
            mksquashfs:squashfs-tools mkfs.ext4:e2fsprogs; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
[ -d /usr/share/wasi-sysroot ] || need_apt+=(wasi-libc)
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
