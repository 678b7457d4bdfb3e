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
# CPU spent by all testenv hosts (their cgroups' cpu.stat usage_usec: sshd, the shells and
# whatever the commands start), in seconds. testenv puts each host in
# <cgroup2 root>/testenv/<prefix>-<host>.
PREFIX=$($B/testenv get --dir "$D/env" prefix)
CG_ROOT=$(python3 -c '
for l in open("/proc/self/mountinfo"):
    a, b = l.split(" - ", 1)
    if b.split()[0] == "cgroup2":
        print(a.split()[4]); break
')
hosts_cpu() { cat "$CG_ROOT"/testenv/"$PREFIX"-*/cpu.stat 2>/dev/null | awk '$1 == "usage_usec" {t += $2} END {printf "%.3f", t / 1e6}'; }
# Runs k0sctl; prints "wall-s cpu-s tool-cpu-s": the wall time, the CPU the run cost the hosts
# and k0sctl together, and k0sctl's own share (user+sys from GNU time when present, else 0).
timed() {
    local s h0 tool=0
    h0=$(hosts_cpu); s=$(date +%s.%N)
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f '%U %S' -o "$D/tool.cpu" "$@" >"$D/last.out" 2>&1 || { tail -30 "$D/last.out" >&2; exit 1; }
        tool=$(awk '{print $1 + $2}' "$D/tool.cpu")
    else
        "$@" >"$D/last.out" 2>&1 || { tail -30 "$D/last.out" >&2; exit 1; }
    fi
    echo "$(echo "$(date +%s.%N) - $s" | bc) $(echo "$(hosts_cpu) - $h0 + $tool" | bc) $tool"
}

ex=(); re=(); exc=(); rec=(); ext=(); ret=()
for _ in $(seq "$RUNS"); do
    read -r w c t < <(timed $B/k0sctl exec -c "$M" -- true); ex+=("$w"); exc+=("$c"); ext+=("$t")
    read -r w c t < <(timed $B/k0sctl apply -c "$M"); re+=("$w"); rec+=("$c"); ret+=("$t")
    grep -q "No changes" "$D/last.out" || { echo "the re-apply changed something:" >&2; cat "$D/last.out" >&2; exit 1; }
done
E=$(printf '%s\n' "${ex[@]}" | median)
R=$(printf '%s\n' "${re[@]}" | median)
EC=$(printf '%s\n' "${exc[@]}" | median)
RC=$(printf '%s\n' "${rec[@]}" | median)
echo "exec -- true runs: ${ex[*]} (CPU s: ${exc[*]}; of it k0sctl: ${ext[*]})"
echo "no-op re-apply runs: ${re[*]} (CPU s: ${rec[*]}; of it k0sctl: ${ret[*]})"
printf '%d hosts: cold exec -- true %.2f s, no-op re-apply %.2f s, ratio %.2f (goal <= 1.3)\n' \
    "$N" "$E" "$R" "$(echo "$R / $E" | bc -l)"
# CPU (hosts + k0sctl) ÷ cores is the least wall time this machine can give a run whose hosts
# share its cores; on real machines each host brings its own CPU.
CORES=$(nproc)
printf 'CPU (hosts + k0sctl): exec %.2f s, re-apply %.2f s, ratio %.2f; floor on %d cores: exec %.2f s, re-apply %.2f s\n' \
    "$EC" "$RC" "$(echo "$RC / $EC" | bc -l)" "$CORES" "$(echo "$EC / $CORES" | bc -l)" "$(echo "$RC / $CORES" | bc -l)"
LOG=$(ls "$D"/cache/k0sctl/logs/*.log | sort | tail -1)
grep ' exec ' "$LOG" | grep -v 'cmd=refresh lock ' | sed 's/.*exec host="\([^"]*\)".*/\1/' | sort | uniq -c | awk '{print $1}' \
    | sort -n | uniq -c | awk '{printf "commands per host in the last re-apply: %d on %d hosts\n", $2, $1}'
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
