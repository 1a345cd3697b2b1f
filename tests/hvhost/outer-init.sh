#!/bin/busybox sh
# /init of the nested layer's initramfs (tests/hvhost/outer.sh): loads the
# modules (KVM with kvm_amd, 9p, overlayfs, TAP), mounts the host's root
# (9p, read-only) under a tmpfs overlay, mounts the results share at its host
# path, chroots and runs the repository's tests/hvhost/inner.sh. Powers off
# when done; `layer.ok` in the results says the layer itself worked.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "hvhost-layer: $*"; }
for m in $(cat /mods/order); do
  insmod "/mods/$m" || say "insmod $m failed"
done
[ -c /dev/kvm ] && say "/dev/kvm ready (kvm_amd, nested SVM)" || say "no /dev/kvm"
results=$(sed -n 's/.* hv.results=\([^ ]*\).*/\1/p' /proc/cmdline)
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /host ||
  { say "cannot mount the host root"; poweroff -f; }
mount -t tmpfs -o mode=755 rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot ||
  { say "cannot mount the overlay"; poweroff -f; }
r=/newroot
mount -t proc proc $r/proc
mount -t sysfs sys $r/sys
mount -t devtmpfs dev $r/dev
mkdir -p $r/dev/pts $r/dev/shm
mount -t devpts devpts $r/dev/pts
mount -t tmpfs shm $r/dev/shm
mount -t tmpfs -o mode=1777 tmp $r/tmp
mount -t tmpfs run $r/run
# cgroup v2 for the jailer (the host's v1 layout is not reproduced here).
mount -t cgroup2 cgroup2 $r/sys/fs/cgroup 2>/dev/null || say "no cgroup2"
mkdir -p "$r$results"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results "$r$results" ||
  { say "cannot mount the results share"; poweroff -f; }
. "$r$results/hvhost.env"
# The layer kernel's text symbols, for a stall report (Debian ships System.map
# as a stub; /proc/kallsyms is the real table, readable by root).
grep " [tT] " /proc/kallsyms > "$r$results/kallsyms" 2>/dev/null
chroot $r /bin/bash "$REPO/tests/hvhost/inner.sh" "$results"
say "inner run ended with $?"
touch "$r$results/layer.ok"
sync
poweroff -f
