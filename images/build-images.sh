#!/usr/bin/env bash
# Builds the Linux guest's images, each cached on its own inputs under
#   ${EMBER_CACHE:-$HOME/.cache/ember}/images/<artifact>-<sha256 of its recipe + inputs>/
# - ember-agent       the static Linux agent (crt-static, x86_64-unknown-linux-gnu)
# - initramfs.cpio    /init = ember-agent, plus the mount points it needs
# - provided.squashfs the `provided` runtime: busybox-static + glibc (Debian
#                     packages fetched with the host's apt sources)
# - python3.11.squashfs  (only with --python: mmdebstrap of bookworm, 3-5 min
#                     and ~40 MB of downloads here) Python + AWS's runtime
#                     interface client (awslambdaric) and boto3 in /var/runtime
# The last stdout line is a directory linking the requested set; a cache hit
# returns at once. Progress goes to stderr. Function code images:
# images/code-image.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
want_python=0
[ "${1:-}" = "--python" ] && want_python=1
log() { echo "images/build-images.sh: $*" >&2; }

need=()
for pair in mksquashfs:squashfs-tools unsquashfs:squashfs-tools cpio:cpio; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
[ "$want_python" = 1 ] && ! command -v mmdebstrap >/dev/null 2>&1 && need+=(mmdebstrap)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2 && apt-get install -y -q "${need[@]}" >&2
fi
cache="${EMBER_CACHE:-$HOME/.cache/ember}/images"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

pkgver() { apt-cache policy "$1" | awk '/Candidate:/ {print $2}'; }

# Mount points and identity files every runtime image carries.
base_layout() {
  mkdir -p "$1"/{dev,proc,sys,tmp,var/task,var/runtime,opt,etc,root}
  echo "root:x:0:0:root:/root:/bin/sh" > "$1/etc/passwd"
  echo "sbx_user1051:x:993:990::/tmp:/sbin/nologin" >> "$1/etc/passwd"
  echo "root:x:0:" > "$1/etc/group"
  echo "127.0.0.1 localhost" > "$1/etc/hosts"
}

# The static agent and the initramfs holding it ($1 = output dir).
build_agent() {
  log "building the static ember-agent"
  # --target keeps RUSTFLAGS away from build scripts and proc macros.
  (cd "$root" && RUSTFLAGS="-C target-feature=+crt-static" nice -n 19 cargo build --release \
      -p ember-guest --features linux-agent --bin ember-agent \
      --target x86_64-unknown-linux-gnu --target-dir "$cache/agent-target" >&2)
  local bin="$cache/agent-target/x86_64-unknown-linux-gnu/release/ember-agent"
  if file "$bin" 2>/dev/null | grep -q "dynamically linked"; then
    log "ember-agent is not static"; return 1
  fi
  cp "$bin" "$1/ember-agent"
  # Uncompressed newc cpio: every kernel accepts it without RD_* decompressors.
  local st; st=$(mktemp -d)
  mkdir -p "$st"/{dev,proc,sys,tmp,newroot,var/task,opt}
  cp "$bin" "$st/init"
  # The kernel opens /dev/console for init before devtmpfs is mounted (the
  # agent reopens it itself if this node is missing).
  mknod -m 600 "$st/dev/console" c 5 1 2>/dev/null || log "no mknod (not root?)"
  (cd "$st" && find . | sort | cpio -o -H newc --quiet -R 0:0) > "$1/initramfs.cpio"
  rm -rf "$st"
}

# `provided`: busybox + glibc from Debian packages ($1 = output dir).
build_provided() {
  log "building provided.squashfs (busybox-static + libc6)"
  local st dl; st=$(mktemp -d); dl=$(mktemp -d)
  chmod 755 "$dl"  # apt's _apt user downloads into it
  (cd "$dl" && apt-get download busybox-static libc6 >&2)
  for deb in "$dl"/*.deb; do dpkg-deb -x "$deb" "$st"; done
  rm -rf "$st/usr/share/doc" "$st/usr/share/lintian" "$st/usr/share/man"
  # Merged /usr as in Debian bookworm: /bin, /lib... are links into /usr.
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
  mksquashfs "$st" "$1/provided.squashfs" -noappend -all-root -quiet >&2
  rm -rf "$st" "$dl"
}

# python3.11 as AWS's base image has it: Debian bookworm's python3.11, AWS's
# runtime interface client (awslambdaric, PyPI) and boto3 in /var/runtime,
# started by images/python/bootstrap ($1 = output dir). The wheels come from
# PyPI through the API tests' venv pip (cp311 manylinux, the image's ABI).
AWSLAMBDARIC=4.2.2
BOTO3=1.44.18
build_python() {
  log "building python3.11.squashfs with mmdebstrap (host apt sources) + awslambdaric $AWSLAMBDARIC, boto3 $BOTO3"
  local st; st=$(mktemp -d); rmdir "$st"
  nice -n 19 mmdebstrap --variant=minbase --include=python3.11-minimal,libpython3.11-stdlib,libstdc++6 \
    --dpkgopt='path-exclude=/usr/share/{doc,man,locale,info}/*' bookworm "$st" >&2
  base_layout "$st"
  local venv; venv=$(bash "$root/scripts/api-venv.sh")
  "$venv/bin/pip" install -q --disable-pip-version-check --no-compile --target "$st/var/runtime" \
    --implementation cp --python-version 3.11 --only-binary=:all: \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform linux_x86_64 \
    "awslambdaric==$AWSLAMBDARIC" "boto3==$BOTO3" >&2
  cp "$here/python/bootstrap" "$st/var/runtime/"
  chmod 755 "$st/var/runtime/bootstrap"
  ln -sf python3.11 "$st/usr/bin/python3"
  # Byte-compiled once here (the image is read-only in the guest), and the
  # client and boto3 must import in the image's own interpreter.
  chroot "$st" python3 -m compileall -q /var/runtime >&2 || true
  chroot "$st" env PYTHONPATH=/var/runtime python3 -c "import awslambdaric.bootstrap, boto3, runtime_client" >&2
  mksquashfs "$st" "$1/python3.11.squashfs" -noappend -all-root -quiet >&2
  rm -rf "$st"
}

# Builds artifact $1 unless cached; the key covers the recipe's own text
# (`declare -f`) and the inputs named after it. Prints the artifact's dir.
cached() {
  local name=$1 fn=$2; shift 2
  local key; key=$( { declare -f "$fn" base_layout; "$@"; } | sha256sum | cut -c1-16)
  local dir="$cache/$name-$key"
  if [ -f "$dir/.done" ]; then
    log "cache hit: $name ($key)"
  else
    rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
    "$fn" "$dir.tmp"
    touch "$dir.tmp/.done"
    rm -rf "$dir"; mv "$dir.tmp" "$dir"
  fi
  echo "$dir"
}
agent_inputs() {
  cat "$root/Cargo.lock" "$root/guest-agent/Cargo.toml"
  # abi/: the protocol the agent speaks (a version bump must rebuild it)
  find "$root/guest-agent/src" "$root/abi/src" -type f -name '*.rs' | sort | xargs cat
}
provided_inputs() { echo "busybox-static $(pkgver busybox-static) libc6 $(pkgver libc6)"; }
python_inputs() {
  cat "$here"/python/*
  echo "python3.11 $(pkgver python3.11-minimal) awslambdaric $AWSLAMBDARIC boto3 $BOTO3"
}

parts=("$(cached agent build_agent agent_inputs)" "$(cached provided build_provided provided_inputs)")
[ "$want_python" = 1 ] && parts+=("$(cached python build_python python_inputs)")
# One directory naming the set, with links to each artifact.
set_key=$(printf '%s\n' "${parts[@]}" | sha256sum | cut -c1-16)
out="$cache/set-$set_key"
if [ ! -d "$out" ]; then
  mkdir -p "$out.tmp"
  for p in "${parts[@]}"; do
    for f in "$p"/*; do ln -sfn "$f" "$out.tmp/$(basename "$f")"; done
  done
  rm -rf "$out"; mv "$out.tmp" "$out"
fi
# emberd, given no --linux-images, boots from the most recently requested set.
touch "$out"
echo "$out"
