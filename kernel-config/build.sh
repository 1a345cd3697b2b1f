#!/usr/bin/env bash
# Builds ember's guest kernel (an uncompressed, PVH-bootable `vmlinux`) from
# Debian's linux-source-6.1 with `microvm.config` merged over tinyconfig, out
# of tree, and caches it under
#   ${EMBER_CACHE:-$HOME/.cache/ember}/kernel/<sha256(config + source version)>/vmlinux
# and beside it the same kernel as a `bzImage` (for the bzImage boot test; with
# --bzimage an older cache entry without one gets it from its kept build tree).
# A cache hit returns at once. Build progress goes to stderr; the last line on
# stdout is the vmlinux path. The compile runs under `nice -n 19` because the
# build machines are shared.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
frag="$here/microvm.config"
cache="${EMBER_CACHE:-$HOME/.cache/ember}/kernel"
log() { echo "kernel-config/build.sh: $*" >&2; }
want_bz=0
[ "${1:-}" = "--bzimage" ] && want_bz=1

# The source package version is part of the cache key; installing the
# package is therefore the first step even on a would-be cache hit.
need=()
for pkg in build-essential bc bison flex libelf-dev libssl-dev linux-source-6.1 xz-utils; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing build dependencies: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q "${need[@]}" >&2
fi
srcver=$(dpkg-query -W -f='${Version}' linux-source-6.1)
key=$( { cat "$frag"; echo "linux-source-6.1 $srcver"; } | sha256sum | cut -c1-16)
out="$cache/$key"
bld="$cache/build-$key"
mk() { nice -n 19 make -C "$src" O="$bld" ARCH=x86_64 "$@" >&2; }
if [ -f "$out/vmlinux" ] && [ "$want_bz" = 1 ] && [ ! -f "$out/bzImage" ]; then
  exec 9>"$cache/.lock"
  flock 9
  src="$cache/src-$srcver/linux-source-6.1"
  if [ ! -f "$out/bzImage" ] && [ -f "$bld/.config" ] && [ -f "$src/Makefile" ]; then
    log "adding a bzImage to the cached kernel ($key)"
    mk -j"$(nproc)" bzImage
    cp "$bld/arch/x86/boot/bzImage" "$out/bzImage.tmp" && mv "$out/bzImage.tmp" "$out/bzImage"
  fi
  [ -f "$out/bzImage" ] || { log "no bzImage for $key (its build tree is gone: delete $out to rebuild)"; exit 1; }
fi
if [ -f "$out/vmlinux" ]; then
  log "cache hit ($key)"
  # emberd and the tests, given no kernel path, take the newest cached one.
  touch "$out"
  echo "$out/vmlinux"
  exit 0
fi

mkdir -p "$cache"
# One builder at a time (setup.sh and a test may both ask).
exec 9>"$cache/.lock"
flock 9
if [ -f "$out/vmlinux" ]; then echo "$out/vmlinux"; exit 0; fi

src="$cache/src-$srcver/linux-source-6.1"
if [ ! -f "$src/Makefile" ]; then
  log "unpacking linux-source-6.1 $srcver"
  rm -rf "$cache/src-$srcver"; mkdir -p "$cache/src-$srcver"
  tar -C "$cache/src-$srcver" -xf /usr/src/linux-source-6.1.tar.xz
fi
mkdir -p "$bld"
log "configuring: tinyconfig + $(basename "$frag")"
mk -s tinyconfig
"$src/scripts/kconfig/merge_config.sh" -m -O "$bld" "$bld/.config" "$frag" >&2
mk -s olddefconfig
bash "$here/check-config.sh" "$frag" "$bld/.config"
log "compiling vmlinux with $(nproc) jobs (about 5 min on 2 idle cores)"
start=$(date +%s)
mk -j"$(nproc)" vmlinux bzImage
log "compiled in $(( $(date +%s) - start )) s"
mkdir -p "$out.tmp"
cp "$bld/vmlinux" "$out.tmp/vmlinux"
cp "$bld/arch/x86/boot/bzImage" "$out.tmp/bzImage"
cp "$bld/.config" "$out.tmp/config"
rm -rf "$out"; mv "$out.tmp" "$out"
echo "$out/vmlinux"
