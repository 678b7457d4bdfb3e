#!/usr/bin/env bash
# Benchmark (issue 6, item 8): wall time of a rolling worker upgrade of 1 controller + N workers
# (default 20) from the oldest to the newest stand-in k0s version, with
#   spec.options.concurrency.workerDisruptionPercent: 25   (20 workers: batches of 5, 4 batches)
# vs the same on a fresh environment with
#   spec.options.concurrency.workerDisruptionPercent: 5    (20 workers: batches of 1, 20 batches).
# Each case: `testenv up` with N+1 hosts, `k0sctl apply` at the oldest version, a workload of N
# replicas with a PodDisruptionBudget maxUnavailable: 1 (WORKLOAD=0 skips it), then the timed
# `k0sctl apply --output json` to the newest version. Prints both wall times, the batch counts
# (upgrade_batch events, and the "upgrading X of Y workers at a time" line), the ratios
# time(5%)/time(25%) vs batches(5%)/batches(25%) (goal: close), and a per-batch breakdown from
# the timestamps of k0sctl's stderr (drain, node upgrade incl. the Ready wait, the rest).
#
# Run as root from the workspace root:  tests/bench/upgrade-batches.sh [N=20]
# Environment: WORKLOAD=0|1 (default 1), PROFILE=debug|release (default debug; builds the
# binaries if missing), KEEP=1 keeps the logs in the temp dir (environments are always torn
# down). Needs kubectl for the workload. Talks only to the testenv hosts it creates; the k0sctl
# cache (XDG_CACHE_HOME) lives in the temp dir. Takes a few minutes.
set -euo pipefail
N=${1:-20}
WORKLOAD=${WORKLOAD:-1}
PROFILE=${PROFILE:-debug}
cd "$(dirname "$0")/../.."
B=target/$PROFILE
if ! { [ -x "$B/k0sctl" ] && [ -x "$B/testenv" ] && [ -x "$B/k0s" ]; }; then
    if [ "$PROFILE" = release ]; then cargo build --release -p k0sctl -p testenv --bins
    else cargo build -p k0sctl -p testenv --bins; fi
fi
command -v jq >/dev/null || { echo "install jq (apt-get install jq)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "needs python3" >&2; exit 1; }
[ "$WORKLOAD" = 0 ] || command -v kubectl >/dev/null || { echo "install kubectl (or WORKLOAD=0)" >&2; exit 1; }

DIR=$(mktemp -d /tmp/k0sctl-bench-upgrade.XXXXXX)
export XDG_CACHE_HOME="$DIR/cache"
unset DEBUG DRY_RUN SSH_AUTH_SOCK KUBECONFIG
cleanup() {
    for e in "$DIR"/env-*; do [ -d "$e" ] && "$B/testenv" down --dir "$e" >/dev/null 2>&1 || true; done
    if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
fail() { echo "$1; logs: $2" >&2; tail -30 "$2" >&2; KEEP=1; exit 1; }

# Ready, not terminating pods of app=bench; with "all": "<ready> <listed>".
ready_pods() {
    kubectl --kubeconfig "$1" get pods -n default -l app=bench -o json 2>/dev/null | jq -r --arg all "${2:-}" '
        (.items | length) as $n | [.items[]
        | select(.metadata.deletionTimestamp == null)
        | select(any(.status.conditions[]?; .type == "Ready" and .status == "True"))] | length
        | if $all == "" then . else "\(.) \($n)" end'
}

workload() {
    cat <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: bench, namespace: default}
spec:
  replicas: $N
  selector: {matchLabels: {app: bench}}
  template:
    metadata: {labels: {app: bench}}
    spec: {containers: [{name: c, image: nginx}]}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: bench-pdb, namespace: default}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: bench}}
EOF
}

# run_case PCT: fresh environment, install the oldest version, workload, timed upgrade.
# Sets UP_S, INSTALL_S, UPGRADE_S, BATCHES, LOGLINE, UPGRADED, MIN_READY.
run_case() {
    local pct=$1 c="$DIR/p$1" env="$DIR/env-$1" t
    mkdir -p "$c"
    t=$(now)
    "$B/testenv" up --dir "$env" --hosts $((N + 1)) >"$c/up.log" 2>&1 || fail "testenv up failed" "$c/up.log"
    UP_S=$(since "$t")
    local old new
    old=$(head -n1 "$env/k0s-versions")
    new=$(tail -n1 "$env/k0s-versions")
    [ "$old" != "$new" ] || fail "testenv offers only one version" "$env/k0s-versions"
    # The manifest ends with spec.k0s; options go under spec.
    { cat "$env/k0sctl.yaml"
      printf '  options:\n    concurrency:\n      workerDisruptionPercent: %s\n' "$pct"; } >"$c/k0sctl.yaml"
    grep -q "version: \"$old\"" "$c/k0sctl.yaml" || fail "manifest does not pin $old" "$c/k0sctl.yaml"

    t=$(now)
    "$B/k0sctl" apply -c "$c/k0sctl.yaml" --kubeconfig-out "$c/kubeconfig" </dev/null \
        >"$c/install.out" 2>"$c/install.err" || fail "install of $old failed" "$c/install.err"
    INSTALL_S=$(since "$t")

    MIN_READY=-
    if [ "$WORKLOAD" != 0 ]; then
        workload | kubectl --kubeconfig "$c/kubeconfig" apply -f - >"$c/workload.log" 2>&1 \
            || fail "kubectl apply failed" "$c/workload.log"
        local deadline=$((SECONDS + 120))
        until [ "$(ready_pods "$c/kubeconfig")" = "$N" ]; do
            [ $SECONDS -lt $deadline ] || fail "$N bench pods never became Ready" "$c/workload.log"
            sleep 1
        done
        # Sample the workload through the upgrade (1/s; a failed sample is skipped).
        ( while [ ! -e "$c/done" ]; do ready_pods "$c/kubeconfig" all >>"$c/samples" || true; sleep 1; done ) &
        SAMPLER=$!
    fi

    python3 - "$c/k0sctl.yaml" "$old" "$new" <<'PY'
import sys
p, old, new = sys.argv[1:]
s = open(p).read()
open(p, "w").write(s.replace(f'version: "{old}"', f'version: "{new}"'))
PY
    t=$(now)
    "$B/k0sctl" apply -c "$c/k0sctl.yaml" --output json </dev/null \
        >"$c/upgrade.json" 2>"$c/upgrade.err" || { touch "$c/done"; fail "upgrade to $new failed" "$c/upgrade.err"; }
    UPGRADE_S=$(since "$t")
    touch "$c/done"
    if [ "$WORKLOAD" != 0 ]; then
        wait "$SAMPLER" || true
        # Samples listing no pod at all (the API answering before its state is back) are
        # counted apart.
        MIN_READY=$(awk '$2 > 0 {print $1}' "$c/samples" | sort -n | head -n1)
        MIN_READY="${MIN_READY:-?} of $N (min of $(awk '$2 > 0' "$c/samples" | wc -l) samples; $(awk '$2 == 0' "$c/samples" | wc -l) empty lists)"
    fi

    BATCHES=$(jq -R 'fromjson? | select(.event == "upgrade_batch") | .batch' "$c/upgrade.json" | wc -l)
    UPGRADED=$(jq -R 'fromjson? | select(.event == "change" and (.action | startswith("upgraded k0s worker")))' \
        "$c/upgrade.json" | jq -s length)
    LOGLINE=$(grep -o 'upgrading [0-9]* of [0-9]* workers at a time[^)]*)' "$c/upgrade.err" | head -n1 || true)
    [ "$UPGRADED" = "$N" ] || fail "$UPGRADED of $N workers reported upgraded" "$c/upgrade.err"
    "$B/testenv" down --dir "$env" >/dev/null 2>&1 || true
    rm -rf "$env"
}

# Per-batch breakdown from the timestamps of the plain (non-terminal) stderr lines.
breakdown() {
    python3 - "$1" <<'PY'
import re, sys
from datetime import datetime
ts_re = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+)Z\s+\w+\s+(.*)$")
def ts(s):
    s = s[:26]  # microseconds
    return datetime.fromisoformat(s).timestamp()
lines = []
for l in open(sys.argv[1]):
    m = ts_re.match(l.rstrip("\n"))
    if m:
        lines.append((ts(m.group(1)), m.group(2)))
if not lines:
    print("    (no timestamped log lines)"); sys.exit()
start = lines[0][0]
batches = []  # [start, {node: {...}}]
first_batch = None
for t, msg in lines:
    m = re.match(r"upgrading worker batch (\d+)/(\d+): (.*)", msg)
    if m:
        batches.append({"t": t, "nodes": m.group(3).split(", "), "drained": [], "upg_start": [], "upgraded": []})
        continue
    if not batches:
        continue
    b = batches[-1]
    if re.search(r": drained node ", msg): b["drained"].append(t)
    elif re.search(r": upgrading k0s \S+ to ", msg): b["upg_start"].append(t)
    elif re.search(r": upgraded to k0s ", msg): b["upgraded"].append(t)
end = lines[-1][0]
if not batches:
    print("    (no batches in the log)"); sys.exit()
print(f"    before the first batch (connect, facts, controller upgrade, ...): {batches[0]['t'] - start:6.1f} s")
tot = {"drain": 0.0, "node": 0.0, "rest": 0.0}
rows = []
for i, b in enumerate(batches):
    nxt = batches[i + 1]["t"] if i + 1 < len(batches) else None
    d_end = max(b["drained"] or b["upg_start"] or [b["t"]])
    u_end = max(b["upgraded"] or [d_end])
    e = nxt if nxt is not None else u_end
    drain, node, rest = d_end - b["t"], u_end - d_end, e - u_end
    tot["drain"] += drain; tot["node"] += node; tot["rest"] += rest
    rows.append((i + 1, len(b["nodes"]), drain, node, rest, e - b["t"]))
for r in rows[:3] + ([("..",)] if len(rows) > 6 else []) + rows[max(3, len(rows) - 3):]:
    if len(r) == 1:
        print("      ..."); continue
    print(f"      batch {r[0]:>2} ({r[1]} nodes): drain {r[2]:5.1f} s, stop+binary+reinstall+start+Ready {r[3]:5.1f} s, "
          f"uncordon/next {r[4]:4.1f} s = {r[5]:5.1f} s")
n = len(rows)
print(f"    batches total {sum(r[5] for r in rows):6.1f} s: drain {tot['drain']:.1f} s, node upgrade {tot['node']:.1f} s, "
      f"between {tot['rest']:.1f} s; per batch {sum(r[5] for r in rows)/n:.1f} s")
print(f"    after the last batch: {end - max(batches[-1]['upgraded'] or [batches[-1]['t']]):6.1f} s")
PY
}

declare -A R
for pct in 25 5; do
    run_case "$pct"
    echo "workerDisruptionPercent $pct%: testenv up ($((N + 1)) hosts) $(printf %.1f "$UP_S") s," \
        "install $(printf %.1f "$INSTALL_S") s, upgrade $(printf %.1f "$UPGRADE_S") s," \
        "$BATCHES upgrade_batch events, log: \"$LOGLINE\"; workload Ready during upgrade: $MIN_READY"
    breakdown "$DIR/p$pct/upgrade.err"
    R[t$pct]=$UPGRADE_S
    R[b$pct]=$BATCHES
done

echo "upgrade of 1 controller + $N workers, oldest -> newest stand-in version (wall seconds, $PROFILE build):"
printf '  workerDisruptionPercent 25%%  %8.1f s  %3d batches\n' "${R[t25]}" "${R[b25]}"
printf '  workerDisruptionPercent  5%%  %8.1f s  %3d batches\n' "${R[t5]}" "${R[b5]}"
printf 'ratios: time(5%%)/time(25%%) = %.2f vs batches(5%%)/batches(25%%) = %.2f (goal: close)\n' \
    "$(echo "${R[t5]} / ${R[t25]}" | bc -l)" "$(echo "${R[b5]} / ${R[b25]}" | bc -l)"
