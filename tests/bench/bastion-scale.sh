#!/usr/bin/env bash
# Benchmark: N testenv hosts (default 100; 1 controller) reached through one bastion whose
# sshd keeps Debian's defaults (MaxStartups 10:30:100, MaxSessions 10), beside the same number
# of hosts reached directly, in one run: `k0sctl exec -- true` (cold, median of RUNS) and a
# fresh `apply` (both upload the k0s binary, relayed host to host). Any failure stops the script (the goal is no spurious failure at all); prints
# the wall times and the ratios bastion ÷ direct (goal ≤ 2).
#
# Run as root from the workspace root:  tests/bench/bastion-scale.sh [N=100] [RUNS=3]
# Builds the release binaries if they are missing (BIN=DIR takes k0sctl, testenv and k0s from
# DIR instead). Talks only to the testenv hosts it creates.
set -euo pipefail
N=${1:-100}
RUNS=${2:-3}
cd "$(dirname "$0")/../.."
B=${BIN:-target/release}
[ -x "$B/k0sctl" ] && [ -x "$B/testenv" ] && [ -x "$B/k0s" ] \
    || cargo build --release -p k0sctl -p testenv --bins
D=$(mktemp -d /tmp/k0sctl-bastion-bench.XXXXXX)
cleanup() {
    for e in direct bastion; do $B/testenv down --dir "$D/$e" >/dev/null 2>&1 || true; done
    rm -rf "$D"
}
trap cleanup EXIT
export XDG_CACHE_HOME=$D/cache

median() { sort -g | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
timed() { local s; s=$(date +%s.%N); "$@" >"$D/last.out" 2>&1 || { tail -30 "$D/last.out" >&2; exit 1; }; echo "$(date +%s.%N) - $s" | bc; }

declare -A EXEC APPLY
for e in direct bastion; do
    flag=""; [ "$e" = bastion ] && flag="--bastion"
    $B/testenv up --dir "$D/$e" --hosts "$N" $flag > /dev/null
    M="$D/$e/k0sctl.yaml"
    if [ "$e" = direct ]; then
        # Like for like: behind the bastion the hosts cannot reach the binary server, so that
        # manifest uploads k0s (k0sBinaryPath, relayed host to host); the direct one does too.
        bin=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["k0sBinaries"][0])' "$D/$e/hosts.json")
        sed -E "s|^(    )k0sDownloadURL: .*|\1k0sBinaryPath: '$bin'|" "$M" > "$D/$e/upload.yaml"
        grep -q k0sBinaryPath "$D/$e/upload.yaml" || { echo "direct manifest: no k0s download to replace" >&2; exit 1; }
        M="$D/$e/upload.yaml"
    fi
    timed $B/k0sctl exec -c "$M" --concurrency 0 -- true > /dev/null   # warm-up
    ts=()
    for _ in $(seq "$RUNS"); do ts+=("$(timed $B/k0sctl exec -c "$M" --concurrency 0 -- true)"); done
    EXEC[$e]=$(printf '%s\n' "${ts[@]}" | median)
    grep -q "succeeded, 0 failed" "$D/last.out" || { cat "$D/last.out" >&2; exit 1; }
    APPLY[$e]=$(timed $B/k0sctl apply -c "$M")
    $B/testenv down --dir "$D/$e" > /dev/null
done
printf '%d hosts          direct    bastion   ratio (goal <= 2)\n' "$N"
printf 'exec -- true   %8.2f   %8.2f   %5.2f\n' "${EXEC[direct]}" "${EXEC[bastion]}" "$(echo "${EXEC[bastion]} / ${EXEC[direct]}" | bc -l)"
printf 'apply          %8.2f   %8.2f   %5.2f\n' "${APPLY[direct]}" "${APPLY[bastion]}" "$(echo "${APPLY[bastion]} / ${APPLY[direct]}" | bc -l)"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
