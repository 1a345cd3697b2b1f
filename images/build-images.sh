#!/usr/bin/env bash
# Builds the Linux guest's images, cached under
#   ${EMBER_CACHE:-$HOME/.cache/ember}/images/<sha256 of inputs>/
# - ember-agent       the static Linux agent (crt-static, x86_64-unknown-linux-gnu)
# - initramfs.cpio    /init = ember-agent, plus the mount points it needs
# - provided.squashfs the `provided` runtime: busybox-static + glibc (Debian
#                     packages fetched with the host's apt sources)
# - python3.11.squashfs  (only with --python: mmdebstrap of bookworm, ~1-2 min
#                     and ~100 MB of downloads) Python + ember's runtime loop
#                     in /var/runtime
# A cache hit returns at once. Progress goes to stderr; the last stdout line
# is the image directory. Function code images: images/code-image.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
want_python=0
[ "${1:-}" = "--python" ] && want_python=1
log() { echo "images/build-images.sh: $*" >&2; }

need=()
for pair in mksquashfs:squashfs-tools cpio:cpio; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
[ "$want_python" = 1 ] && ! command -v mmdebstrap >/dev/null 2>&1 && need+=(mmdebstrap)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2 && apt-get install -y -q "${need[@]}" >&2
fi

pkgver() { apt-cache policy "$1" | awk '/Candidate:/ {print $2}'; }
key=$( {
  cat "$0" "$here"/python/* "$root/Cargo.lock" "$root/guest-agent/Cargo.toml"
  find "$root/guest-agent/src" -type f -name '*.rs' | sort | xargs cat
  echo "busybox-static $(pkgver busybox-static) libc6 $(pkgver libc6)"
} | sha256sum | cut -c1-16)
cache="${EMBER_CACHE:-$HOME/.cache/ember}/images"
out="$cache/$key"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ -f "$out/provided.squashfs" ] && { [ "$want_python" = 0 ] || [ -f "$out/python3.11.squashfs" ]; }; then
  log "cache hit ($key)"
fi

# 1. The static agent.
if [ ! -x "$out/ember-agent" ]; then
  log "building the static ember-agent"
  mkdir -p "$out"
  # --target keeps RUSTFLAGS away from build scripts and proc macros.
  (cd "$root" && RUSTFLAGS="-C target-feature=+crt-static" nice -n 19 cargo build --release \
      -p ember-guest --features linux-agent --bin ember-agent \
      --target x86_64-unknown-linux-gnu --target-dir "$cache/agent-target" >&2)
  bin="$cache/agent-target/x86_64-unknown-linux-gnu/release/ember-agent"
  if file "$bin" 2>/dev/null | grep -q "dynamically linked"; then
    log "ember-agent is not static"; exit 1
  fi
  cp "$bin" "$out/ember-agent.tmp" && mv "$out/ember-agent.tmp" "$out/ember-agent"
fi

# 2. The initramfs: just the agent and its mount points (uncompressed cpio,
# which every kernel accepts without RD_* decompressors).
if [ ! -f "$out/initramfs.cpio" ]; then
  log "building initramfs.cpio"
  st=$(mktemp -d)
  mkdir -p "$st"/{dev,proc,sys,tmp,newroot,var/task,opt}
  cp "$out/ember-agent" "$st/init"
  # The kernel opens /dev/console for init before devtmpfs is mounted.
  mknod -m 600 "$st/dev/console" c 5 1 2>/dev/null || log "no mknod (not root?): agent reopens the console itself"
  (cd "$st" && find . | sort | cpio -o -H newc --quiet -R 0:0) > "$out/initramfs.cpio.tmp"
  mv "$out/initramfs.cpio.tmp" "$out/initramfs.cpio"
  rm -rf "$st"
fi

# Mount points and identity files every runtime image carries.
base_layout() {
  mkdir -p "$1"/{dev,proc,sys,tmp,var/task,var/runtime,opt,etc,root}
  echo "root:x:0:0:root:/root:/bin/sh" > "$1/etc/passwd"
  echo "sbx_user1051:x:993:990::/tmp:/sbin/nologin" >> "$1/etc/passwd"
  echo "root:x:0:" > "$1/etc/group"
  echo "127.0.0.1 localhost" > "$1/etc/hosts"
}

# 3. `provided`: busybox + glibc from Debian packages.
if [ ! -f "$out/provided.squashfs" ]; then
  log "building provided.squashfs (busybox-static + libc6)"
  st=$(mktemp -d); dl=$(mktemp -d)
  (cd "$dl" && apt-get download busybox-static libc6 >&2)
  for deb in "$dl"/*.deb; do dpkg-deb -x "$deb" "$st"; done
  rm -rf "$st/usr/share/doc" "$st/usr/share/lintian" "$st/usr/share/man"
  # Debian bookworm is merged-/usr: /lib64 etc. are symlinks into /usr.
  for d in bin sbin lib lib64; do
    if [ -d "$st/$d" ] && [ ! -L "$st/$d" ]; then
      mkdir -p "$st/usr/$d"; cp -a "$st/$d/." "$st/usr/$d/"; rm -rf "${st:?}/$d"
    fi
    [ -e "$st/usr/$d" ] || mkdir -p "$st/usr/$d"
    ln -sfn "usr/$d" "$st/$d"
  done
  for app in $("$st/usr/bin/busybox" --list); do
    [ -e "$st/usr/bin/$app" ] || ln -s busybox "$st/usr/bin/$app"
  done
  base_layout "$st"
  mksquashfs "$st" "$out/provided.squashfs.tmp" -noappend -all-root -quiet >&2
  mv "$out/provided.squashfs.tmp" "$out/provided.squashfs"
  rm -rf "$st" "$dl"
fi

# 4. python3.11 (on request): Debian bookworm's python3 + ember's runtime loop.
if [ "$want_python" = 1 ] && [ ! -f "$out/python3.11.squashfs" ]; then
  log "building python3.11.squashfs with mmdebstrap (host apt sources)"
  st=$(mktemp -d)
  rmdir "$st"
  nice -n 19 mmdebstrap --variant=minbase --include=python3.11-minimal,libpython3.11-stdlib \
    --dpkgopt='path-exclude=/usr/share/{doc,man,locale,info}/*' bookworm "$st" >&2
  base_layout "$st"
  cp "$here/python/bootstrap" "$here/python/ember_runtime.py" "$st/var/runtime/"
  ln -sf python3.11 "$st/usr/bin/python3"
  mksquashfs "$st" "$out/python3.11.squashfs.tmp" -noappend -all-root -quiet >&2
  mv "$out/python3.11.squashfs.tmp" "$out/python3.11.squashfs"
  rm -rf "$st"
fi
echo "$out"
