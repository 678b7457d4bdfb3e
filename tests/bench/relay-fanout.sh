#!/usr/bin/env bash
# Benchmark: one big `files:` entry to every one of N testenv hosts behind a shaped operator
# uplink (`testenv --uplink-mbit`), sent today's way (K0SCTL_RELAY=0: one full copy per host
# from the operator) and with the host-to-host fan-out (the default), in the same run against
# the same hosts. For each case it prints
#   time ratio  = duration of the "Upload files to hosts" phase ÷ (size ÷ uplink rate)
#   bytes ratio = bytes the operator sent through the shaped uplink ÷ size
# (goals for the fan-out: time ≤ 1.5, bytes ≤ 1.2), and the CPU floor of this machine:
#   CPU s       = CPU time spent while the phase ran by the testenv hosts (the sum of their
#                 cgroups' cpu.stat usage_usec: sshd, ssh, tee, the hashes, …) plus by k0sctl
#   floor s     = CPU s ÷ the machine's cores: the phase cannot be shorter than that here,
#                 since all N "hosts" share these cores (on real machines each host brings its
#                 own CPU and only its own hop's share counts)
#   floor ratio = phase s ÷ max(bytes the operator sent ÷ uplink rate, floor s): how far the
#                 phase is from the best this machine allows for what was sent (the uplink
#                 bound is 1 × size for the fan-out, N × size for direct uploads)
# A case with uplink 0 leaves the uplink unshaped (the CPU-bound floor itself; no time ratio).
# Not a timed test: it prints figures. Other load on the machine (see the load averages it
# prints) makes phases longer than their floor; compare ratios measured in the same run.
#
# Run as root from the workspace root:
#   tests/bench/relay-fanout.sh [N=20] [CASES="128:400 256:200 128:0"]   (size MiB:uplink Mbit/s)
# Environment: BIN=target/release (k0sctl and testenv binaries), MODES="direct relay".
# Builds the release binaries if they are missing. Talks only to the testenv hosts it creates.
# Disk: about N × 2 × the largest size under /tmp while it runs.
set -euo pipefail
N=${1:-20}
CASES=${2:-"128:400 256:200 128:0"}
MODES=${MODES:-"direct relay"}
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release}
if [ "$BIN" = target/release ]; then
    [ -x target/release/k0sctl ] && [ -x target/release/testenv ] && [ -x target/release/k0s ] \
        || cargo build --release -p k0sctl -p testenv --bins
fi
K0SCTL=$BIN/k0sctl TESTENV=$BIN/testenv

DIR=$(mktemp -d /tmp/k0sctl-relay-bench.XXXXXX)
cleanup() { "$TESTENV" down --dir "$DIR/env" >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap cleanup EXIT
ENV="$DIR/env"
"$TESTENV" up --dir "$ENV" --hosts "$N" --uplink-mbit 1000 > "$DIR/up.log"
PREFIX=$("$TESTENV" get --dir "$ENV" prefix)
BR="${PREFIX}br"
CORES=$(nproc)
# The hosts' cgroups (testenv puts each host in <cgroup2 root>/testenv/<prefix>-<host>).
CG_ROOT=$(python3 -c '
for l in open("/proc/self/mountinfo"):
    a, b = l.split(" - ", 1)
    if b.split()[0] == "cgroup2":
        print(a.split()[4]); break
')
CG_GLOB="$CG_ROOT/testenv/$PREFIX-*/cpu.stat"

# The manifest: every host gets $DIR/payload as /opt/bench/payload.
python3 - "$ENV/k0sctl.yaml" "$DIR/payload" > "$DIR/k0sctl.yaml" <<'PY'
import sys
text = open(sys.argv[1]).read()
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

# Runs k0sctl (arguments after --), copies its JSON events to $2 and prints
# "exit-code phase-ms wall-s hosts-cpu-s k0sctl-cpu-s", the CPU counted while the "Upload files
# to hosts" phase ran (between its phase_start and phase_end events).
cat > "$DIR/measure.py" <<'PY'
import glob, json, os, subprocess, sys, time
PHASE = "Upload files to hosts"
cg_glob, out_path = sys.argv[1], sys.argv[2]
cmd = sys.argv[sys.argv.index("--") + 1:]
tick = os.sysconf("SC_CLK_TCK")
def hosts_cpu():
    files = glob.glob(cg_glob)
    if not files:
        return None
    tot = 0
    for f in files:
        try:
            for line in open(f):
                if line.startswith("usage_usec "):
                    tot += int(line.split()[1])
        except OSError:
            pass
    return tot / 1e6
def tool_cpu(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / tick
    except OSError:
        return None
t0 = time.time()
p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
marks, phase_ms = {}, None
with open(out_path, "w") as out:
    for line in p.stdout:
        out.write(line)
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("phase") != PHASE:
            continue
        if e.get("event") == "phase_start":
            marks["start"] = (hosts_cpu(), tool_cpu(p.pid))
        elif e.get("event") == "phase_end":
            marks["end"] = (hosts_cpu(), tool_cpu(p.pid))
            phase_ms = e.get("duration_ms")
rc = p.wait()
def diff(i):
    try:
        return "%.2f" % (marks["end"][i] - marks["start"][i])
    except (KeyError, TypeError):
        return "-"
print(rc, phase_ms if phase_ms is not None else "-", "%.2f" % (time.time() - t0), diff(0), diff(1))
PY

sent_bytes() { tc -s qdisc show dev "$BR" | awk '/Sent/ {print $2; exit}'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

# Install the cluster first with a tiny payload (not measured).
head -c 1024 /dev/urandom > "$DIR/payload"
"$K0SCTL" apply -c "$M" > "$DIR/install.out" 2>&1 || { tail -30 "$DIR/install.out" >&2; exit 1; }

echo "k0sctl: $K0SCTL ($(stat -c '%y' "$K0SCTL" | cut -c1-19)), $N hosts, $CORES cores, load average at start: $(load)"
printf '%-7s %-7s %-7s %8s %8s %8s %8s %8s %8s %8s  %s\n' size uplink mode "phase s" "ideal s" \
    "time r." "bytes r." "CPU s" "floor s" "floor r." "(apply wall, load avg after)"
for c in $CASES; do
    mib=${c%%:*}; mbit=${c#*:}
    if [ "$mbit" = 0 ]; then
        tc qdisc del dev "$BR" root 2>/dev/null || true
    else
        tc qdisc replace dev "$BR" root tbf rate "${mbit}mbit" burst 256kb latency 100ms
    fi
    size=$((mib * 1024 * 1024))
    ideal=-
    [ "$mbit" = 0 ] || ideal=$(echo "scale=3; $size * 8 / ($mbit * 1000000)" | bc)
    for mode in $MODES; do
        # New content every time, so every host needs it.
        head -c "$size" /dev/urandom > "$DIR/payload"
        relay=1; [ "$mode" = direct ] && relay=0
        b0=$(sent_bytes)
        read -r rc ms wall hcpu tcpu < <(K0SCTL_RELAY=$relay python3 "$DIR/measure.py" "$CG_GLOB" \
            "$DIR/$mode-$c.json" -- "$K0SCTL" apply -c "$M" --output json 2> "$DIR/$mode-$c.err")
        [ "$rc" = 0 ] || { echo "apply ($mode) failed:" >&2; tail -30 "$DIR/$mode-$c.err" >&2; exit 1; }
        b1=$(sent_bytes)
        secs=$(echo "scale=2; $ms / 1000" | bc)
        tr=- br=- cpu=- floor=- fr=-
        if [ "$mbit" != 0 ]; then
            tr=$(echo "scale=2; $secs / $ideal" | bc)
            br=$(echo "scale=2; ($b1 - $b0) / $size" | bc)
        fi
        if [ "$hcpu" != - ] && [ "$tcpu" != - ]; then
            cpu=$(echo "scale=2; $hcpu + $tcpu" | bc)
            floor=$(echo "scale=2; $cpu / $CORES" | bc)
            best=$floor
            if [ "$ideal" != - ]; then
                link=$(echo "scale=3; ($b1 - $b0) * 8 / ($mbit * 1000000)" | bc)
                [ "$(echo "$link > $floor" | bc)" = 1 ] && best=$link
            fi
            fr=$(echo "scale=2; $secs / $best" | bc)
        fi
        label=${mbit}M; [ "$mbit" = 0 ] && label=none
        printf '%-7s %-7s %-7s %8s %8s %8s %8s %8s %8s %8s  (%.1f s, %s)\n' "${mib}MiB" "$label" "$mode" \
            "$secs" "$ideal" "$tr" "$br" "$cpu" "$floor" "$fr" "$wall" "$(load)"
    done
done
