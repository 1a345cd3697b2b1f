# Sourced by the demo and the benchmark: builds what is missing, starts
# emberd on a free loopback port with a throw-away data directory (removed,
# and emberd stopped with SIGTERM, when the sourcing script exits), and sets
#   bin   the directory of the release binaries
#   work  the data directory (emberd's stdout in $work/out, stderr in $work/log)
#   ep    emberd's endpoint
# and EMBER_CREDENTIALS (the ember CLI signs with the key emberd creates at
# first start). Usage: source scripts/throwaway-emberd.sh TAG
bin="${EMBER_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}"
agent="${EMBER_WASM_AGENT:-guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release/ember-wasm-agent}"
[ -x "$bin/emberd" ] && [ -x "$bin/ember" ] && [ -x "$bin/ember-vmm" ] || cargo build --release --bins -p ember-host -p ember-vmm
[ -f "$agent" ] || bash guest-agent/kernelless/build.sh >/dev/null
work=$(mktemp -d "/tmp/${1:-ed}.XXXXXX")
export EMBER_CREDENTIALS="$work/credentials.json"
# shellcheck disable=SC2086 # EMBERD_ARGS: extra emberd flags, split on spaces
"$bin/emberd" --listen 127.0.0.1:0 --data-dir "$work" --vmm "$bin/ember-vmm" --wasm-agent "$agent" ${EMBERD_ARGS:-} \
  >"$work/out" 2>"$work/log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.1; done
ep=$(grep -o 'http://[0-9.:]*' "$work/out")
