#!/usr/bin/env bash
# Turns a function's deployment ZIP into its read-only code image (squashfs),
# mounted by the Linux agent at /var/task; given several ZIPs (a function's
# layers, in order) it extracts them in that order into one tree, later ones
# overwriting earlier files, which is how Lambda fills /opt. Unix modes
# stored in the ZIP are kept (a `bootstrap` must stay executable); entries
# that would escape the tree (absolute paths, `..`) and symlinks are refused.
# Usage: code-image.sh ZIP... OUT.squashfs
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 ZIP... OUT.squashfs" >&2; exit 2; }
out=${!#}
st=$(mktemp -d)
trap 'rm -rf "$st"' EXIT
python3 - "$st" "${@:1:$#-1}" <<'PY'
import os, stat, sys, zipfile
dst = os.path.realpath(sys.argv[1])
for src in sys.argv[2:]:
    with zipfile.ZipFile(src) as z:
        for info in z.infolist():
            target = os.path.realpath(os.path.join(dst, info.filename))
            if os.path.isabs(info.filename) or not (target + os.sep).startswith(dst + os.sep) and target != dst:
                sys.exit("refusing entry outside the code tree: %r" % info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                sys.exit("refusing symlink entry: %r" % info.filename)
            if not info.is_dir() and os.path.isdir(target):
                sys.exit("entry %r of %s is a file where an earlier ZIP has a directory" % (info.filename, os.path.basename(src)))
            z.extract(info, dst)
            if mode & 0o777 and not info.is_dir():
                os.chmod(target, mode & 0o755)
PY
chmod -R a+rX "$st"
mksquashfs "$st" "$out" -noappend -all-root -quiet >&2
echo "$out"
