#!/usr/bin/env bash
# Builds CPython 3.11 for wasm32-wasi (the `python3.11` runtime of the
# kernel-less guest, issue 19) from Debian's sources, once, into
#   ${EMBER_CACHE:-$HOME/.cache/ember}/python-wasm/<key>/
#     python.wasm                        the interpreter (stripped), a command
#     python-reactor.wasm                the same as a reactor: the interpreter
#                                        starts once (_initialize), `handle`
#                                        serves one invocation (images/python-wasm/)
#     runtime.zip                        /var/runtime for the kernel-less guest:
#                                        lib/ below, stored (emberd adds its
#                                        ember_bootstrap.py as a second tree)
#     lib/python311.zip                  the stdlib, precompiled .pyc, zipped
#     lib/python3.11/os.py               the landmark CPython's getpath looks for
#     lib/python3.11/lib-dynload/.empty  (site wants the directory)
#     BUILD-INFO                         sources, versions, modules in and out
# and prints that directory on stdout (progress goes to stderr). <key> hashes
# this script and reactor.c, so a changed recipe builds anew and an unchanged one is
# instant. Idempotent; a fresh machine needs the Debian mirror only.
#
# Recipe (issue 19): Debian's python3.11 and zlib *source* packages (the
# orig tarballs, unpatched) fetched with `apt-get source` through a private
# deb-src list for the mirror the machine is already configured with (the
# system's apt configuration is not touched); Debian's clang, lld, wasi-libc
# and libclang-rt-14-dev-wasm32; a small sysroot holding only wasi-libc (with
# --sysroot=/usr host headers leak in); zlib built for wasm32 first; the
# host's /usr/bin/python3.11 (the same 3.11.2) as the build Python; CPython's
# own Tools/wasm/config.site-wasm32-wasi and wasm_assets.py for the zip.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache="${EMBER_CACHE:-$HOME/.cache/ember}"
pyw="$here/../images/python-wasm"
key=$(cat "$here/build-python-wasm.sh" "$pyw/reactor.c" | sha256sum | cut -c1-12)
root="$cache/python-wasm"
out="$root/3.11-$key"
if [ -f "$out/BUILD-INFO" ] && [ -f "$out/python-reactor.wasm" ] && [ -f "$out/runtime.zip" ]; then
  echo "$out"
  exit 0
fi

t_all=$SECONDS
work="$root/build-$key"
log="$root/build-$key.log"
mkdir -p "$root"
rm -rf "$work"
mkdir -p "$work"
: >"$log"
# step NAME CMD...: runs CMD with its output in the log; prints the step and
# its duration; a failing step prints the end of the log.
step() {
  local name=$1; shift
  local t0=$SECONDS
  printf 'python-wasm: %s ... ' "$name" >&2
  echo "== $name" >>"$log"
  if "$@" >>"$log" 2>&1; then
    echo "done ($((SECONDS - t0)) s)" >&2
  else
    local rc=$?
    echo "FAILED ($((SECONDS - t0)) s); the end of $log:" >&2
    tail -n 40 "$log" >&2
    exit "$rc"
  fi
}

# --- tools ------------------------------------------------------------------
need=()
for pair in clang:clang wasm-ld:lld llvm-ar:llvm llvm-ranlib:llvm \
            pkg-config:pkg-config make:make; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
[ -x /usr/bin/python3.11 ] || need+=(python3.11)
[ -f /usr/lib/wasm32-wasi/libc.a ] || need+=(wasi-libc)
ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 \
  || need+=(libclang-rt-14-dev-wasm32)
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q && apt-get install -y -q "$@"
}
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}" apt_install "${need[@]}"
fi
build_py=/usr/bin/python3.11
py_version=$("$build_py" -c 'import platform; print(platform.python_version())')

# --- sources ------------------------------------------------------------------
# A deb-src list for the configured Debian mirror, kept under the cache with
# its own package lists: `apt-get source` through it, nothing global changes.
src="$root/src"
mkdir -p "$src/lists/partial"
deb_src_list() {
  "$build_py" - "$src/deb-src.sources" <<'PY'
import glob, re, sys
codename = ""
for line in open("/etc/os-release"):
    if line.startswith("VERSION_CODENAME="):
        codename = line.split("=", 1)[1].strip().strip('"')
found = None
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        f = {}
        for line in stanza.splitlines():
            if ":" in line and not line.lstrip().startswith("#"):
                k, v = line.split(":", 1)
                f[k.strip().lower()] = v.strip()
        if "deb" in f.get("types", "").split() and codename in f.get("suites", "").split():
            found = (f["uris"].split()[0], f.get("signed-by", ""))
            break
    if found:
        break
if not found:
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        try:
            lines = open(path).read().splitlines()
        except OSError:
            continue
        for line in lines:
            m = re.match(r"\s*deb\s+(\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m and m.group(3) == codename:
                found = (m.group(2), "")
                break
        if found:
            break
if not found:
    sys.exit(f"no Debian mirror for {codename!r} configured in /etc/apt")
uri, keyring = found
keyring = keyring or "/usr/share/keyrings/debian-archive-keyring.gpg"
with open(sys.argv[1], "w") as out:
    out.write(f"Types: deb-src\nURIs: {uri}\nSuites: {codename}\n"
              f"Components: main\nSigned-By: {keyring}\n")
PY
}
apt_src() {
  apt-get -q -o Dir::Etc::SourceList="$src/deb-src.sources" \
    -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists="$src/lists" "$@"
}
fetch_sources() {
  cd "$src"
  apt_src update
  # --download-only: the orig tarballs, unpatched, checked against the
  # signed Sources index by apt.
  apt_src source --download-only python3.11 zlib
}
if ! ls "$src"/python3.11_3.11*.orig.tar.* "$src"/zlib_*.orig.tar.* >/dev/null 2>&1; then
  step "writing a deb-src list for the configured mirror" deb_src_list
  step "fetching Debian's python3.11 and zlib sources" fetch_sources
fi
py_tar=$(ls "$src"/python3.11_3.11*.orig.tar.* | sort -V | tail -n1)
zlib_tar=$(ls "$src"/zlib_*.orig.tar.* | sort -V | tail -n1)
src_version=$(basename "$py_tar" | sed 's/^python3.11_\(.*\)\.orig\.tar\..*/\1/')
if [ "$src_version" != "$py_version" ]; then
  echo "python-wasm: the source is $src_version but the build Python $build_py is $py_version; a cross build needs the same version" >&2
  exit 1
fi

# --- sysroot: wasi-libc only ---------------------------------------------------
sysroot="$work/sysroot"
mkdir -p "$sysroot/include" "$sysroot/lib"
ln -s /usr/include/wasm32-wasi "$sysroot/include/wasm32-wasi"
ln -s /usr/lib/wasm32-wasi "$sysroot/lib/wasm32-wasi"
wasm_cc="clang --target=wasm32-wasi --sysroot=$sysroot"
jobs=$(nproc)

# --- zlib -----------------------------------------------------------------------
build_zlib() {
  mkdir -p "$work/zlib-src"
  tar -xf "$zlib_tar" -C "$work/zlib-src" --strip-components=1
  cd "$work/zlib-src"
  CC="$wasm_cc" AR=llvm-ar RANLIB=llvm-ranlib CFLAGS=-O2 CHOST=wasm32 \
    ./configure --static --prefix="$work/zlib"
  make -j"$jobs" libz.a
  make install
}
step "building zlib for wasm32-wasi" build_zlib

# --- CPython ---------------------------------------------------------------------
cpython="$work/cpython"
unpack_cpython() {
  mkdir -p "$cpython"
  tar -xf "$py_tar" -C "$cpython" --strip-components=1
}
step "unpacking CPython $src_version" unpack_cpython
configure_cpython() {
  mkdir -p "$cpython/builddir/wasi"
  cd "$cpython/builddir/wasi"
  CONFIG_SITE=../../Tools/wasm/config.site-wasm32-wasi \
  CC="$wasm_cc" CPP="$wasm_cc -E" AR=llvm-ar RANLIB=llvm-ranlib \
  PKG_CONFIG_LIBDIR="$work/zlib/lib/pkgconfig" PKG_CONFIG_PATH= \
    ../../configure -C --host=wasm32-unknown-wasi --build=x86_64-pc-linux-gnu \
      --with-build-python="$build_py" --disable-test-modules
}
step "configuring CPython for wasm32-wasi" configure_cpython
make_cpython() {
  cd "$cpython/builddir/wasi"
  make -j"$jobs"
}
step "compiling CPython ($jobs jobs; the long step)" make_cpython
stdlib() {
  cd "$cpython/builddir/wasi"
  make wasm_stdlib
}
step "zipping the precompiled stdlib" stdlib
reactor() {
  cd "$cpython/builddir/wasi"
  $wasm_cc -O2 -I. -I../../Include -c "$pyw/reactor.c" -o ember_reactor.o
  # The link line of python.wasm (Makefile), as a reactor around our entry.
  $wasm_cc -mexec-model=reactor -z stack-size=524288 -Wl,--stack-first \
    -Wl,--initial-memory=10485760 -o python-reactor.wasm ember_reactor.o \
    libpython3.11.a Modules/_decimal/libmpdec/libmpdec.a Modules/expat/libexpat.a \
    -L"$work/zlib/lib" -lz -lwasi-emulated-signal -lwasi-emulated-getpid \
    -lwasi-emulated-process-clocks -lm
}
step "linking the reactor (images/python-wasm/reactor.c)" reactor

# --- install into the cache ----------------------------------------------------------
install_out() {
  local b="$cpython/builddir/wasi"
  local stage="$root/stage-$key"
  rm -rf "$stage"
  mkdir -p "$stage/lib"
  llvm-strip -o "$stage/python.wasm" "$b/python.wasm"
  llvm-strip -o "$stage/python-reactor.wasm" "$b/python-reactor.wasm"
  cp -a "$b/usr/local/lib/." "$stage/lib/"
  # Stored: a file read from the runtime tree is a slice of the archive.
  # (`python -m zipfile -c` deflates, and zipimport reopens python311.zip
  # for every module: each open inflated 4 MiB, Init took 0.6 s, not 0.12 s.)
  (cd "$stage" && "$build_py" - <<'PY'
import os, zipfile
with zipfile.ZipFile("runtime.zip", "w", zipfile.ZIP_STORED) as z:
    for top in ("lib",):
        z.write(top)
        for d, dirs, files in os.walk(top):
            for n in sorted(dirs) + sorted(files):
                z.write(os.path.join(d, n))
PY
  )
  {
    echo "cpython $src_version for wasm32-wasi, built $(date -u +%FT%TZ) by scripts/build-python-wasm.sh ($key)"
    echo "sources: $(basename "$py_tar") $(basename "$zlib_tar") (Debian, unpatched)"
    echo "toolchain: $(clang --version | head -n1); wasi-libc $(dpkg-query -W -f '${Version}' wasi-libc 2>/dev/null || echo '?')"
    echo "build python: $build_py $py_version"
    echo "modules (yes = built in; other states are not available):"
    sed -n 's/^MODULE_\(.*\)_STATE=\(.*\)$/  \1 \2/p' "$b/Makefile" | tr 'A-Z' 'a-z' | sort
  } >"$stage/BUILD-INFO"
  rm -rf "$out"
  mv "$stage" "$out"
}
step "installing into $out" install_out
rm -rf "$work"
size() { du -h "$1" | cut -f1; }
echo "python-wasm: built in $((SECONDS - t_all)) s: python.wasm $(size "$out/python.wasm"), stdlib zip $(size "$out/lib/python311.zip")" >&2
echo "$out"
