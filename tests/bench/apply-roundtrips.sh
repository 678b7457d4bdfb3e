#!/usr/bin/env bash
# Benchmark (issue 5, item 11): SSH round trips a worker costs for a fresh join, and the wall
# time of a no-op re-apply, on a 10-host testenv (1 controller + 9 workers).
# Round trips are counted from k0sctl's per-run debug log (one `exec` line per remote command);
# the commands of the last worker are printed. Then 5 no-op re-applies are timed.
#
# Run as root from the workspace root:  tests/bench/apply-roundtrips.sh [HOSTS=10]
# Uses the debug binaries (builds them if missing). Talks only to the testenv hosts it creates;
# the k0sctl cache (XDG_CACHE_HOME, logs included) lives in the temp dir.
set -euo pipefail
N=${1:-10}
cd "$(dirname "$0")/../.."
[ -x target/debug/k0sctl ] && [ -x target/debug/testenv ] && [ -x target/debug/k0s ] \
    || cargo build -p k0sctl -p testenv --bins
D=$(mktemp -d /tmp/k0sctl-roundtrips.XXXXXX)
trap 'target/debug/testenv down --dir "$D/env" >/dev/null 2>&1 || true; rm -rf "$D"' EXIT
target/debug/testenv up --dir "$D/env" --hosts "$N" > /dev/null
export XDG_CACHE_HOME=$D/cache
target/debug/k0sctl apply -c "$D/env/k0sctl.yaml" > /dev/null 2>&1
LOG=$(ls -t "$D"/cache/k0sctl/logs/*.log | head -1)
W=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['hosts'][-1]['ip'])" "$D/env/hosts.json")
L=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['hosts'][0]['ip'])" "$D/env/hosts.json")
echo "fresh join: $(grep "$W:22" "$LOG" | grep ' exec' | grep -vc 'cmd=refresh lock ') round trips on worker $W:"
grep "$W:22" "$LOG" | grep ' exec' | grep -v 'cmd=refresh lock ' | sed 's/.*cmd=//' | cut -c1-100 | sed 's/^/    /'
for i in 1 2 3 4 5; do
    s=$(date +%s.%N)
    target/debug/k0sctl apply -c "$D/env/k0sctl.yaml" > /dev/null 2>&1
    e=$(date +%s.%N)
    printf 'no-op re-apply %d (%d hosts): %.2f s\n' "$i" "$N" "$(echo "$e - $s" | bc)"
done
LOG=$(ls -t "$D"/cache/k0sctl/logs/*.log | head -1)
echo "no-op re-apply round trips: worker $(grep "$W:22" "$LOG" | grep ' exec' | grep -vc 'cmd=refresh lock '), leader $(grep "$L:22" "$LOG" | grep ' exec' | grep -vc 'cmd=refresh lock ')"
