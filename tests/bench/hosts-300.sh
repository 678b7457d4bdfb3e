#!/usr/bin/env bash
# Benchmark: N testenv hosts (default 300: 1 controller + N-1 workers): `testenv up`, a fresh
# `k0sctl apply`, then a no-op re-apply; prints each one's wall time and k0sctl's peak RSS
# (GNU time's "Maximum resident set size"; goal ≤ 100 MB).
#
# Run as root from the workspace root:  tests/bench/hosts-300.sh [N=300]
# Needs GNU time (/usr/bin/time, apt-get install time). Builds the release binaries if they are
# missing (BIN=DIR takes k0sctl, testenv and k0s from DIR instead). Talks only to the testenv
# hosts it creates. 300 hosts need about 300 × 40 MB of RAM; testenv makes up to 960 hosts
# (240 per /24, all on one bridge).
set -euo pipefail
N=${1:-300}
cd "$(dirname "$0")/../.."
[ -x /usr/bin/time ] || { echo "install GNU time (apt-get install time)" >&2; exit 1; }
# Preflight: machine limits that stop a big environment part-way.
[ "$(id -u)" = 0 ] || { echo "run as root (testenv creates namespaces)" >&2; exit 1; }
avail=$(awk '/MemAvailable/ {print int($2 / 1024)}' /proc/meminfo)
[ "$avail" -ge $((N * 40)) ] || {
    echo "$N hosts need about $((N * 40)) MB of free memory (about 40 MB a host), $avail MB available: try N=$((avail / 40))" >&2
    exit 1
}
[ "$N" -le 960 ] || { echo "testenv makes at most 960 hosts (four /24s on one bridge)" >&2; exit 1; }
# (testenv itself raises the inotify limits and the shared IPv4 neighbour table's thresholds.)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
B=${BIN:-target/release}
[ -x "$B/k0sctl" ] && [ -x "$B/testenv" ] && [ -x "$B/k0s" ] \
    || cargo build --release -p k0sctl -p testenv --bins
D=$(mktemp -d /tmp/k0sctl-300.XXXXXX)
trap '$B/testenv down --dir "$D/env" >/dev/null 2>&1 || true; rm -rf "$D"' EXIT
export XDG_CACHE_HOME=$D/cache
s=$(date +%s.%N)
$B/testenv up --dir "$D/env" --hosts "$N" > /dev/null
printf 'testenv up (%d hosts): %.1f s\n' "$N" "$(echo "$(date +%s.%N) - $s" | bc)"
for what in apply no-op-re-apply; do
    ok=1
    /usr/bin/time -v -o "$D/time.txt" $B/k0sctl apply -c "$D/env/k0sctl.yaml" \
        > "$D/out.txt" 2>&1 || ok=0
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$D/time.txt")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$D/time.txt")
    printf '%-15s wall %s   peak RSS %.1f MB\n' "$what" "$wall" "$(echo "$rss / 1024" | bc -l)"
    [ "$ok" = 1 ] || { echo "$what FAILED:" >&2; tail -30 "$D/out.txt" >&2; exit 1; }
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
