#!/usr/bin/env bash
# Benchmark (issue 13, item 5): what real etcd costs. Times `testenv up` of 5 hosts
# (3 controllers + 2 workers) and a fresh HA `k0sctl apply` on them, ROUNDS times, for one or two
# sets of binaries, and prints the mean of each and the ratio of the totals.
#
# Run as root from the workspace root:
#   tests/bench/ha-cost.sh [ROUNDS=3] [BASELINE_BIN_DIR]
# BASELINE_BIN_DIR: a directory with k0sctl, testenv and k0s built from another commit (e.g. main
# before real etcd); without it only the current debug binaries are measured. Talks only to the
# testenv hosts it creates; the k0sctl cache lives in the temp dir.
set -euo pipefail
ROUNDS=${1:-3}
BASE=${2:-}
cd "$(dirname "$0")/../.."
[ -x target/debug/k0sctl ] && [ -x target/debug/testenv ] && [ -x target/debug/k0s ] \
    || cargo build -p k0sctl -p testenv --bins
D=$(mktemp -d /tmp/k0sctl-hacost.XXXXXX)
cleanup() {
    for b in "$D"/bin-*; do [ -x "$b/testenv" ] && "$b/testenv" down --dir "$D/env" >/dev/null 2>&1 || true; done
    rm -rf "$D"
}
trap cleanup EXIT
mkdir -p "$D/bin-current"
cp target/debug/k0sctl target/debug/testenv target/debug/k0s "$D/bin-current/"
SETS=current
if [ -n "$BASE" ]; then
    mkdir -p "$D/bin-baseline"
    cp "$BASE/k0sctl" "$BASE/testenv" "$BASE/k0s" "$D/bin-baseline/"
    SETS="baseline current"
fi
now() { date +%s.%N; }
declare -A UP AP
for set in $SETS; do UP[$set]=0; AP[$set]=0; done
for r in $(seq 1 "$ROUNDS"); do
    for set in $SETS; do
        B=$D/bin-$set
        s=$(now)
        "$B/testenv" up --dir "$D/env" --hosts 5 --controllers 3 --k0s-bin "$B/k0s" >/dev/null
        m=$(now)
        XDG_CACHE_HOME=$D/cache-$set "$B/k0sctl" apply -c "$D/env/k0sctl.yaml" >"$D/apply-$set.log" 2>&1 \
            || { echo "apply failed ($set, round $r):"; tail -20 "$D/apply-$set.log"; exit 1; }
        e=$(now)
        "$B/testenv" down --dir "$D/env" >/dev/null
        rm -rf "$D/env"
        up=$(echo "$m - $s" | bc); ap=$(echo "$e - $m" | bc)
        printf '%-8s round %d: testenv up %.1f s, HA apply %.1f s, total %.1f s\n' "$set" "$r" "$up" "$ap" "$(echo "$up + $ap" | bc)"
        UP[$set]=$(echo "${UP[$set]} + $up" | bc); AP[$set]=$(echo "${AP[$set]} + $ap" | bc)
    done
done
for set in $SETS; do
    printf '%-8s mean: testenv up %.1f s, HA apply %.1f s, total %.1f s\n' "$set" \
        "$(echo "${UP[$set]} / $ROUNDS" | bc -l)" "$(echo "${AP[$set]} / $ROUNDS" | bc -l)" \
        "$(echo "(${UP[$set]} + ${AP[$set]}) / $ROUNDS" | bc -l)"
done
if [ -n "$BASE" ]; then
    printf 'ratio current/baseline (total): %.2f\n' \
        "$(echo "(${UP[current]} + ${AP[current]}) / (${UP[baseline]} + ${AP[baseline]})" | bc -l)"
fi
