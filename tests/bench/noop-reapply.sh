#!/usr/bin/env bash
# Benchmark (issue 15, item 3): on N testenv hosts (default 100: 1 controller + N-1 workers),
# the wall time of a no-op re-apply beside a cold `k0sctl exec -- true` on the same hosts (both
# connect from scratch, both with the manifest's default concurrency), median of RUNS runs
# each, alternating; prints both and the ratio re-apply ÷ exec (goal ≤ 1.3), and the commands
# the last re-apply sent per host (from its log; goal: the probe and the lock release).
#
# Run as root from the workspace root:  tests/bench/noop-reapply.sh [N=100] [RUNS=5]
# Builds the release binaries if they are missing (BIN=target/debug uses the debug ones). Talks only to the testenv hosts it creates.
set -euo pipefail
N=${1:-100}
RUNS=${2:-5}
cd "$(dirname "$0")/../.."
B=${BIN:-target/release}
[ -x $B/k0sctl ] && [ -x $B/testenv ] && [ -x $B/k0s ] \
    || cargo build --release -p k0sctl -p testenv --bins
D=$(mktemp -d /tmp/k0sctl-noop.XXXXXX)
trap '$B/testenv down --dir "$D/env" >/dev/null 2>&1 || true; rm -rf "$D"' EXIT
export XDG_CACHE_HOME=$D/cache
$B/testenv up --dir "$D/env" --hosts "$N" > /dev/null
M="$D/env/k0sctl.yaml"
s=$(date +%s.%N)
$B/k0sctl apply -c "$M" > "$D/apply.out" 2>&1 || { tail -30 "$D/apply.out" >&2; exit 1; }
printf 'fresh apply (%d hosts): %.2f s\n' "$N" "$(echo "$(date +%s.%N) - $s" | bc)"

median() { sort -g | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
timed() { local s; s=$(date +%s.%N); "$@" >"$D/last.out" 2>&1 || { tail -30 "$D/last.out" >&2; exit 1; }; echo "$(date +%s.%N) - $s" | bc; }

ex=(); re=()
for _ in $(seq "$RUNS"); do
    ex+=("$(timed $B/k0sctl exec -c "$M" -- true)")
    re+=("$(timed $B/k0sctl apply -c "$M")")
    grep -q "No changes" "$D/last.out" || { echo "the re-apply changed something:" >&2; cat "$D/last.out" >&2; exit 1; }
done
E=$(printf '%s\n' "${ex[@]}" | median)
R=$(printf '%s\n' "${re[@]}" | median)
echo "exec -- true runs: ${ex[*]}"
echo "no-op re-apply runs: ${re[*]}"
printf '%d hosts: cold exec -- true %.2f s, no-op re-apply %.2f s, ratio %.2f (goal <= 1.3)\n' \
    "$N" "$E" "$R" "$(echo "$R / $E" | bc -l)"
LOG=$(ls "$D"/cache/k0sctl/logs/*.log | sort | tail -1)
grep ' exec ' "$LOG" | grep -v 'cmd=refresh lock ' | sed 's/.*exec host="\([^"]*\)".*/\1/' | sort | uniq -c | awk '{print $1}' \
    | sort -n | uniq -c | awk '{printf "commands per host in the last re-apply: %d on %d hosts\n", $2, $1}'
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
