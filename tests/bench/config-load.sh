#!/bin/sh
# Config loading time against the size of one mapping: `k0sctl config validate` on manifests
# whose spec.k0s.config holds one mapping of 30,000, 100,000 and 300,000 keys (the last one
# about 10 MB). Prints each wall time and the ratios; linear loading keeps time/keys flat
# (10x the keys ≈ 10x the time), the old per-key duplicate scan grew with the square.
#
# Usage: tests/bench/config-load.sh [path/to/k0sctl]   (default: a release build of this tree)
set -eu
cd "$(dirname "$0")/../.."
BIN=${1:-}
if [ -z "$BIN" ]; then
    cargo build --release --quiet --bin k0sctl
    BIN=${CARGO_TARGET_DIR:-target}/release/k0sctl
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

gen() { # keys file
    awk -v n="$1" 'BEGIN {
        print "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:\n  hosts:\n  - role: controller\n    ssh:\n      address: 10.0.0.1\n  k0s:\n    config:\n      spec:\n        big:"
        for (i = 0; i < n; i++) printf "          key%07d: value-%07d\n", i, i
    }' > "$2"
}

now() { date +%s.%N; }
prev=""
for n in 30000 100000 300000; do
    f=$dir/big-$n.yaml
    gen $n "$f"
    size=$(stat -c %s "$f")
    t0=$(now)
    "$BIN" config validate -c "$f" > /dev/null
    t1=$(now)
    secs=$(echo "$t1 - $t0" | bc -l)
    printf '%7d keys  %5.1f MB  %6.2f s  %6.2f us/key\n' "$n" "$(echo "$size / 1048576" | bc -l)" "$secs" "$(echo "$secs * 1000000 / $n" | bc -l)"
    if [ -n "$prev" ]; then
        printf '        time ratio to the previous size: %.1fx for %.1fx the keys\n' \
            "$(echo "$secs / $prev" | bc -l)" "$(echo "$n / $pn" | bc -l)"
    fi
    prev=$secs; pn=$n
done

# The same number of keys as one flow mapping on a single line (columns must not be counted
# from the start of the line for every key).
f=$dir/flow.yaml
awk 'BEGIN {
    printf "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:\n  hosts:\n  - role: controller\n    ssh:\n      address: 10.0.0.1\n  k0s:\n    config:\n      spec:\n        big: {"
    for (i = 0; i < 300000; i++) printf "key%07d: value-%07d, ", i, i
    print "z: 1}"
}' > "$f"
t0=$(now)
"$BIN" config validate -c "$f" > /dev/null
t1=$(now)
printf '%7d keys  %5.1f MB  %6.2f s  (one flow mapping on one line)\n' 300000 \
    "$(echo "$(stat -c %s "$f") / 1048576" | bc -l)" "$(echo "$t1 - $t0" | bc -l)"
