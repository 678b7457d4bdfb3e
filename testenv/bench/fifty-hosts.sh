#!/bin/sh
# Measure time and memory to bring up N testenv hosts (default 50). Run as root from the
# workspace root after `cargo build -p testenv --bins`. Prints wall time of `testenv up`, the
# machine's used-memory delta (MemTotal - MemAvailable) and the summed PSS of all host processes.
set -eu
N=${1:-50}
BIN=${TESTENV_BIN:-target/debug/testenv}
DIR=$(mktemp -d /tmp/testenv-bench.XXXXXX)
# Memory in use excluding page cache (MemTotal - MemFree - Buffers - Cached + Shmem), in KiB.
used() { awk '/^MemTotal:/{t=$2} /^MemFree:/{f=$2} /^Buffers:/{b=$2} /^Cached:/{c=$2} /^Shmem:/{s=$2} END{print t-f-b-c+s}' /proc/meminfo; }
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
before=$(used)
start=$(date +%s.%N)
"$BIN" up --dir "$DIR" --hosts "$N" > "$DIR.up.log"
end=$(date +%s.%N)
sleep 5   # let every host finish its (minimal) boot
after=$(used)
pss=0
for ns in $(ip netns list | awk '{print $1}' | grep "^$("$BIN" get --dir "$DIR" prefix)-"); do
    for p in $(ip netns pids "$ns"); do
        v=$(awk '/^Pss:/{s+=$2} END{print s+0}' /proc/$p/smaps_rollup 2>/dev/null || echo 0)
        pss=$((pss + v))
    done
done
echo "hosts: $N"
echo "up wall time: $(awk "BEGIN{printf \"%.1f\", $end - $start}") s"
echo "used memory delta (excl. page cache): $(( (after - before) / 1024 )) MiB"
echo "summed PSS of host processes: $((pss / 1024)) MiB"
echo "per-host upper layers on disk: $(du -sm "$DIR/hosts" | cut -f1) MiB"
"$BIN" down --dir "$DIR"
rm -rf "$DIR" "$DIR.up.log"
