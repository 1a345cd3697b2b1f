#!/usr/bin/env bash
# Turns a function's deployment ZIP into its read-only code image (squashfs),
# mounted by the Linux agent at /var/task (or a layer's at /opt). Unix modes
# stored in the ZIP are kept (a `bootstrap` must stay executable); entries
# that would escape the tree (absolute paths, `..`) are refused.
# Usage: code-image.sh FUNCTION.zip OUT.squashfs
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 FUNCTION.zip OUT.squashfs" >&2; exit 2; }
zip=$1 out=$2
st=$(mktemp -d)
trap 'rm -rf "$st"' EXIT
python3 - "$zip" "$st" <<'PY'
import os, stat, sys, zipfile
src, dst = sys.argv[1], os.path.realpath(sys.argv[2])
with zipfile.ZipFile(src) as z:
    for info in z.infolist():
        target = os.path.realpath(os.path.join(dst, info.filename))
        if os.path.isabs(info.filename) or not (target + os.sep).startswith(dst + os.sep) and target != dst:
            sys.exit("refusing entry outside the code tree: %r" % info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            sys.exit("refusing symlink entry: %r" % info.filename)
        z.extract(info, dst)
        if mode & 0o777 and not info.is_dir():
            os.chmod(target, mode & 0o755)
PY
chmod -R a+rX "$st"
mksquashfs "$st" "$out" -noappend -all-root -quiet >&2
echo "$out"
