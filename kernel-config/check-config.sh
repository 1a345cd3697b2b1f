#!/usr/bin/env bash
# Verifies that a kernel .config really carries every choice of a config
# fragment: each `CONFIG_X=y` must be `=y`, each `# CONFIG_X is not set` must
# not be enabled. `olddefconfig` silently drops options whose dependencies are
# missing, so this is the only place such a loss becomes visible.
# Usage: check-config.sh <fragment> <.config>
set -euo pipefail
frag=$1 cfg=$2
missing=0
while IFS= read -r line; do
  if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
    want="${BASH_REMATCH[1]}=${BASH_REMATCH[2]}"
    if ! grep -qxF "$want" "$cfg"; then
      got=$(grep -E "^(# )?${BASH_REMATCH[1]}[= ]" "$cfg" || echo "(absent)")
      echo "check-config: wanted $want, .config has: $got" >&2
      missing=1
    fi
  elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
    if grep -qE "^${BASH_REMATCH[1]}=[ym]" "$cfg"; then
      echo "check-config: ${BASH_REMATCH[1]} must be off, .config enables it" >&2
      missing=1
    fi
  fi
done < "$frag"
if [ "$missing" -ne 0 ]; then
  echo "check-config: FAILED: $cfg does not match $frag" >&2
  exit 1
fi
echo "check-config: all $(grep -cE '^(CONFIG_|# CONFIG_.* is not set)' "$frag") options of $(basename "$frag") present" >&2
