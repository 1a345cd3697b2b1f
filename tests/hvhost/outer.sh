#!/usr/bin/env bash
# The nested layer of tests/hvhost (see hvhost.sh): Debian's stock kernel under
# QEMU TCG with emulated AMD SVM. Usage: outer.sh RESULTS_DIR VERBOSE.
# Fetches and caches the kernel package, builds (and caches) the outer
# initramfs (busybox + the modules for KVM, 9p, overlayfs, TAP), boots it with
# this machine's / shared read-only and RESULTS_DIR shared writable; the
# initramfs's init (outer-init.sh) chroots into the shared root and runs
# inner.sh. The console goes to RESULTS_DIR/console.log (and to stderr with
# VERBOSE=1). Exit status: QEMU's.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
results=$1
verbose=${2:-0}
log() { echo "hvhost: $*" >&2; }
cache="${EMBER_CACHE:-$HOME/.cache/ember}/hvhost"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v cpio >/dev/null 2>&1 || need+=(cpio)
command -v depmod >/dev/null 2>&1 || [ -x /usr/sbin/depmod ] || [ -x /sbin/depmod ] || need+=(kmod)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2 && apt-get install -y -q "${need[@]}" >&2
fi

# --- the outer kernel: Debian's linux-image-<abi>-amd64 ----------------------
kdir=$(ls -d "$cache"/linux-image-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$kdir" ] || [ ! -d "$kdir/root/boot" ]; then
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$pkg" ] || { log "cannot find Debian's linux-image-*-amd64 (apt sources?)"; exit 1; }
  log "fetching $pkg with apt-get download"
  kdir="$cache/$pkg"
  dl=$(mktemp -d); chmod 755 "$dl"
  (cd "$dl" && apt-get download "$pkg" >&2)
  rm -rf "$kdir.tmp"; mkdir -p "$kdir.tmp"
  dpkg-deb -x "$dl"/*.deb "$kdir.tmp/root"
  rm -rf "$dl" "$kdir"; mv "$kdir.tmp" "$kdir"
fi
kver=$(basename "$kdir"); kver=${kver#linux-image-}
vmlinuz="$kdir/root/boot/vmlinuz-$kver"
moddir="$kdir/root/lib/modules/$kver"
# Newer packages (6.1.0-57) ship no modules.dep: the postinst's depmod makes
# it on an installed system; make it here, in the extracted tree.
if [ -f "$vmlinuz" ] && [ -d "$moddir/kernel" ] && [ ! -f "$moddir/modules.dep" ]; then
  depmod -b "$kdir/root" "$kver" || { log "depmod failed in $kdir"; exit 1; }
fi
[ -f "$vmlinuz" ] && [ -f "$moddir/modules.dep" ] || { log "incomplete kernel package in $kdir"; exit 1; }

# --- the outer initramfs -----------------------------------------------------
# Modules, dependencies first (modules.dep order: a module's deps are listed
# after it, the deepest last).
want="irqbypass kvm ccp kvm-amd virtio_pci netfs fscache 9pnet 9pnet_virtio 9p overlay tun veth"
mods=$(python3 - "$moddir/modules.dep" $want <<'EOF'
import sys
deps = {}
for line in open(sys.argv[1]):
    mod, _, rest = line.partition(":")
    deps[mod] = rest.split()
def name(path):
    return path.rsplit("/", 1)[-1].split(".ko")[0].replace("-", "_")
by_name = {name(p): p for p in deps}
order = []
def visit(p):
    for d in reversed(deps.get(p, [])):
        visit(d)
    if p not in order:
        order.append(p)
for w in sys.argv[2:]:
    p = by_name.get(w.replace("-", "_"))
    if p is None:
        sys.exit("no module " + w)
    visit(p)
print("\n".join(order))
EOF
)
key=$( { cat "$here/outer-init.sh"; echo "$mods"; sha256sum /bin/busybox; } | sha256sum | cut -c1-16)
initrd="$kdir/initramfs-$key.cpio.gz"
if [ ! -f "$initrd" ]; then
  log "building the outer initramfs ($key)"
  st=$(mktemp -d)
  mkdir -p "$st"/{bin,dev,proc,sys,host,rw,newroot,mods}
  cp /bin/busybox "$st/bin/busybox"
  cp "$here/outer-init.sh" "$st/init"; chmod 755 "$st/init"
  : > "$st/mods/order"
  for m in $mods; do
    cp "$moddir/$m" "$st/mods/"
    basename "$m" >> "$st/mods/order"
  done
  (cd "$st" && find . | sort | cpio -o -H newc --quiet -R 0:0 | gzip -1) > "$initrd.tmp"
  mv "$initrd.tmp" "$initrd"
  rm -rf "$st"
fi
flock -u 9

# --- boot --------------------------------------------------------------------
# Time cap: hvhost.sh sizes it from the suites' budgets. The layer boots with
# nokaslr so that a stall's RIP can be named from System.map, and with
# no_timer_check: on a loaded host TCG ran the kernel's IO-APIC timer check
# too slowly and the layer panicked at boot ("IO-APIC + timer doesn't work!",
# nested run C).
mem=${HVHOST_MEM_MIB:-3072}
smp=${HVHOST_SMP:-1}
cap=${HVHOST_TIMEOUT_S:-2400}
stall=${HVHOST_STALL_S:-240}
boot_cap=${HVHOST_BOOT_S:-400}
log "booting $kver under QEMU TCG with emulated SVM (-m $mem, $smp vCPU; cap $cap s, stall $stall s)"
mon="$results/monitor.sock"
qemu=(qemu-system-x86_64 -accel tcg -cpu EPYC,+svm -m "$mem" -smp "$smp"
  -nographic -nodefaults -no-reboot -serial stdio
  -monitor "unix:$mon,server=on,wait=off"
  -kernel "$vmlinuz" -initrd "$initrd"
  -append "console=ttyS0 loglevel=4 panic=-1 nokaslr no_timer_check hv.results=$results"
  -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
  -virtfs "local,path=$results,mount_tag=results,security_model=none,multidevs=remap")
"${qemu[@]}" < /dev/null > "$results/console.log" 2>&1 &
qpid=$!
tailer=
if [ "$verbose" = 1 ]; then
  tail -n +1 -f --pid="$qpid" "$results/console.log" >&2 &
  tailer=$!
fi

# Ends QEMU early when the layer stops responding (watch.sh), dumping where
# its vCPU is: `info registers` with RIP named from the layer kernel's
# symbols (its /proc/kallsyms, saved at boot) or else from the Linux guest
# kernel's System.map (a nested guest's address).
set +e
bash "$here/watch.sh" "$qpid" "$results" "$cap" "$stall" "$boot_cap" \
  python3 "$here/registers.py" "$mon" "layer=$results/kallsyms" \
  "guest=$(ls -t "$(dirname "$cache")"/kernel/build-*/System.map 2>/dev/null | head -n 1)"
watched=$?
wait "$qpid"
rc=$?
[ -z "$tailer" ] || wait "$tailer" 2>/dev/null
set -e
[ "$watched" = 0 ] || rc=124
[ -f "$results/layer.ok" ] || log "the nested layer did not finish its run (see console.log)"
exit "$rc"
