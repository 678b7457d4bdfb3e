#!/usr/bin/env bash
# Benchmark: one command on N testenv hosts, cold (new connections every run), with
#   k0sctl exec -- true      vs   parallel-ssh (Debian's pssh)   vs   ansible ad-hoc (-f N)
# all measured in the same run against the same hosts; prints medians and ratios.
#
# Run as root from the workspace root:  tests/bench/exec-fanout.sh [N=50] [RUNS=5]
# Needs: pssh (apt-get install pssh), ansible-core (pip install ansible-core); builds the
# release binaries if they are missing. Talks only to the testenv hosts it creates.
set -euo pipefail
N=${1:-50}
RUNS=${2:-5}
cd "$(dirname "$0")/../.."
[ -x target/release/k0sctl ] && [ -x target/release/testenv ] && [ -x target/release/k0s ] \
    || cargo build --release -p k0sctl -p testenv --bins
command -v parallel-ssh >/dev/null || { echo "install pssh (apt-get install pssh)" >&2; exit 1; }
command -v ansible >/dev/null || { echo "install ansible-core (pip install ansible-core)" >&2; exit 1; }

DIR=$(mktemp -d /tmp/k0sctl-bench.XXXXXX)
cleanup() { target/release/testenv down --dir "$DIR/env" >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap cleanup EXIT

t0=$(date +%s.%N)
target/release/testenv up --dir "$DIR/env" --hosts "$N" > "$DIR/up.log"
echo "testenv up ($N hosts): $(echo "$(date +%s.%N) - $t0" | bc) s"

ENV="$DIR/env"
KEY="$ENV/id_ed25519"
KH="$ENV/known_hosts"
python3 - "$ENV/hosts.json" "$DIR" "$KEY" "$KH" <<'PY'
import json, sys
hosts = json.load(open(sys.argv[1]))["hosts"]
d, key, kh = sys.argv[2], sys.argv[3], sys.argv[4]
with open(f"{d}/pssh-hosts", "w") as f:
    for h in hosts:
        f.write(f"root@{h['ip']}:{h['ssh_port']}\n")
with open(f"{d}/inventory.ini", "w") as f:
    f.write("[all]\n")
    for h in hosts:
        f.write(f"{h['name']} ansible_host={h['ip']} ansible_port={h['ssh_port']} ansible_user=root\n")
    f.write("[all:vars]\n")
    f.write(f"ansible_ssh_private_key_file={key}\n")
    f.write("ansible_python_interpreter=/usr/bin/python3\n")
PY

SSH_OPTS="-o UserKnownHostsFile=$KH -o StrictHostKeyChecking=yes -o ControlMaster=no -o ControlPath=none -i $KEY"
export ANSIBLE_SSH_ARGS="-o ControlMaster=no -o ControlPath=none -o UserKnownHostsFile=$KH -o StrictHostKeyChecking=yes"
export ANSIBLE_HOST_KEY_CHECKING=True ANSIBLE_PIPELINING=True ANSIBLE_STDOUT_CALLBACK=minimal
export ANSIBLE_LOCAL_TEMP="$DIR/ansible-local" ANSIBLE_NOCOLOR=1 ANSIBLE_GATHERING=explicit

k0sctl_run() { target/release/k0sctl exec -c "$ENV/k0sctl.yaml" --concurrency 0 -- true >/dev/null 2>"$DIR/k0sctl.err"; }
pssh_run() { parallel-ssh -h "$DIR/pssh-hosts" -p "$N" -t 60 -x "$SSH_OPTS" true >"$DIR/pssh.out" 2>&1; }
ansible_run() { ansible all -i "$DIR/inventory.ini" -f "$N" -m command -a true >"$DIR/ansible.out" 2>&1; }

# Median wall time of RUNS runs (after one warm-up run that is not counted).
measure() {
    local fn=$1 times=() t
    "$fn" || { echo "$fn failed; see $DIR" >&2; cat "$DIR"/*.out "$DIR"/*.err 2>/dev/null | tail -20 >&2; exit 1; }
    for _ in $(seq "$RUNS"); do
        t=$(date +%s.%N); "$fn"; times+=("$(echo "$(date +%s.%N) - $t" | bc)")
    done
    printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'
}

K=$(measure k0sctl_run)
P=$(measure pssh_run)
A=$(measure ansible_run)
grep -q "succeeded, 0 failed, 0 unreachable" "$DIR/k0sctl.err" || { cat "$DIR/k0sctl.err" >&2; exit 1; }
echo "cold fan-out of 'true' to $N hosts, median of $RUNS runs (wall seconds):"
printf '  k0sctl exec     %8.3f\n  parallel-ssh    %8.3f\n  ansible -f %-4s %8.3f\n' "$K" "$P" "$N" "$A"
printf 'ratios: k0sctl/pssh = %.2f (goal <= 0.5), k0sctl/ansible = %.3f (goal <= 0.1)\n' \
    "$(echo "$K / $P" | bc -l)" "$(echo "$K / $A" | bc -l)"
