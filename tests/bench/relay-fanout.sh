#!/usr/bin/env bash
# Benchmark: one big `files:` entry to every one of N testenv hosts behind a shaped operator
# uplink (`testenv --uplink-mbit`), sent today's way (K0SCTL_RELAY=0: one full copy per host
# from the operator) and with the host-to-host fan-out (the default), in the same run against
# the same hosts. For each case it prints
#   time ratio  = duration of the "Upload files to hosts" phase ÷ (size ÷ uplink rate)
#   bytes ratio = bytes the operator sent through the shaped uplink ÷ size
# (goals for the fan-out: time ≤ 1.5, bytes ≤ 1.2). Not a timed test: it prints figures.
#
# Run as root from the workspace root:
#   tests/bench/relay-fanout.sh [N=20] [CASES="128:400 256:200"]   (CASES: size MiB:uplink Mbit/s)
# Builds the release binaries if they are missing. Talks only to the testenv hosts it creates.
# Disk: about N × 2 × the largest size under /tmp while it runs.
set -euo pipefail
N=${1:-20}
CASES=${2:-"128:400 256:200"}
cd "$(dirname "$0")/../.."
[ -x target/release/k0sctl ] && [ -x target/release/testenv ] && [ -x target/release/k0s ] \
    || cargo build --release -p k0sctl -p testenv --bins

DIR=$(mktemp -d /tmp/k0sctl-relay-bench.XXXXXX)
cleanup() { target/release/testenv down --dir "$DIR/env" >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap cleanup EXIT
ENV="$DIR/env"
first_rate=${CASES#*:}; first_rate=${first_rate%% *}
target/release/testenv up --dir "$ENV" --hosts "$N" --uplink-mbit "$first_rate" > "$DIR/up.log"
BR="$(target/release/testenv get --dir "$ENV" prefix)br"

# The manifest: every host gets $DIR/payload as /opt/bench/payload.
python3 - "$ENV/k0sctl.yaml" "$DIR/payload" > "$DIR/k0sctl.yaml" <<'PY'
import sys
text = open(sys.argv[1]).read()
entry = f"    files:\n    - src: {sys.argv[2]}\n      dstDir: /opt/bench\n"
out = text.splitlines(keepends=True)
# Insert the files entry right after each host's "role:" line, keeping its indentation.
res = []
for line in out:
    res.append(line)
    s = line.lstrip()
    if s.startswith("- role:"):
        ind = " " * (len(line) - len(s) + 2)
        res.append(f"{ind}files:\n{ind}- src: {sys.argv[2]}\n{ind}  dstDir: /opt/bench\n")
sys.stdout.write("".join(res))
PY
M="$DIR/k0sctl.yaml"

sent_bytes() { tc -s qdisc show dev "$BR" | awk '/Sent/ {print $2; exit}'; }
phase_ms() { # the Upload files phase's duration from --output json events
    python3 -c '
import json, sys
for l in open(sys.argv[1]):
    try: e = json.loads(l)
    except Exception: continue
    if e.get("event") == "phase_end" and e.get("phase") == "Upload files to hosts":
        print(e["duration_ms"]); break
' "$1"
}

# Install the cluster first with a tiny payload (not measured).
head -c 1024 /dev/urandom > "$DIR/payload"
target/release/k0sctl apply -c "$M" > "$DIR/install.out" 2>&1 || { tail -30 "$DIR/install.out" >&2; exit 1; }

printf '%-10s %-6s %-9s %9s %9s %11s %11s\n' size uplink mode "phase s" "ideal s" "time ratio" "bytes ratio"
for c in $CASES; do
    mib=${c%%:*}; mbit=${c#*:}
    tc qdisc change dev "$BR" root tbf rate "${mbit}mbit" burst 256kb latency 100ms
    size=$((mib * 1024 * 1024))
    ideal=$(echo "scale=3; $size * 8 / ($mbit * 1000000)" | bc)
    for mode in direct relay; do
        # New content every time, so every host needs it.
        head -c "$size" /dev/urandom > "$DIR/payload"
        relay=1; [ "$mode" = direct ] && relay=0
        b0=$(sent_bytes)
        t0=$(date +%s.%N)
        K0SCTL_RELAY=$relay target/release/k0sctl apply -c "$M" --output json \
            > "$DIR/$mode-$mib.json" 2> "$DIR/$mode-$mib.err" \
            || { echo "apply ($mode) failed:" >&2; tail -30 "$DIR/$mode-$mib.err" >&2; exit 1; }
        wall=$(echo "$(date +%s.%N) - $t0" | bc)
        b1=$(sent_bytes)
        ms=$(phase_ms "$DIR/$mode-$mib.json")
        secs=$(echo "scale=2; $ms / 1000" | bc)
        printf '%-10s %-6s %-9s %9s %9s %11s %11s   (apply wall %.1f s)\n' "${mib}MiB" "${mbit}M" "$mode" "$secs" "$ideal" \
            "$(echo "scale=2; $secs / $ideal" | bc)" "$(echo "scale=2; ($b1 - $b0) / $size" | bc)" "$wall"
    done
done
