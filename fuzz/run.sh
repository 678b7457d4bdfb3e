#!/bin/sh
# Coverage-guided fuzzing on stable Rust without cargo-fuzz: builds the targets of fuzz/ with
# SanitizerCoverage instrumentation and runs each under libFuzzer for SECONDS (default 60),
# starting from fuzz/corpus/<target> (seeds are checked in; new inputs go to a scratch copy).
# A crash, a timeout (an input taking over 10 s) or an out-of-memory stops the run with exit 1
# and leaves its input in fuzz/artifacts/<target>/. Exit 3: libFuzzer itself could not be found
# or fetched (nothing was fuzzed).
#
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
#
# Cheap to build: the targets compile in the dev profile into the workspace's target directory
# (CARGO_TARGET_DIR, else ./target), with the workspace's Cargo.lock and the same features, so
# every dependency already built by `cargo build`/`cargo test --workspace` is reused and only
# k0sctl and fuzz/ compile; rustc-sancov adds the instrumentation to those two crates only.
# libFuzzer is LLVM's prebuilt libFuzzer.a: LIBFUZZER_A, else /usr/lib/llvm-*/lib/libFuzzer.a,
# else unpacked (not installed: it would pull in clang) from Debian's libfuzzer-NN-dev.
set -eu
cd "$(dirname "$0")"
fuzz=$(pwd)
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-"config_load os_release host_facts k0s_status etcd_members join_token kubeconfig"}
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$(cd .. && pwd)/target}}
case $CARGO_TARGET_DIR in /*) ;; *) CARGO_TARGET_DIR=$(cd .. && pwd)/$CARGO_TARGET_DIR ;; esac

if [ -z "${LIBFUZZER_A:-}" ]; then
    LIBFUZZER_A=$(ls -v /usr/lib/llvm-*/lib/libFuzzer.a 2>/dev/null | tail -n 1 || true)
fi
if [ -z "$LIBFUZZER_A" ]; then
    # The package matching rustc's LLVM if there is one, else the newest.
    llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
    search() { apt-cache search --names-only '^libfuzzer-[0-9]+-dev$' 2>/dev/null | cut -d' ' -f1 | sort -V; }
    pkgs=$(search)
    if [ -z "$pkgs" ] && [ "$(id -u)" = 0 ]; then
        apt-get update -qq >/dev/null 2>&1 || true
        pkgs=$(search)
    fi
    pkg=$(echo "$pkgs" | grep -x "libfuzzer-$llvm-dev" || echo "$pkgs" | tail -n 1)
    [ -n "$pkg" ] || {
        echo "fuzz/run.sh: no libFuzzer.a: set LIBFUZZER_A, or make a libfuzzer-NN-dev package available to apt" >&2
        exit 3
    }
    dir=$CARGO_TARGET_DIR/libfuzzer/$pkg
    if [ ! -d "$dir/usr" ]; then
        mkdir -p "$dir"
        fetch() { (cd "$dir" && apt-get download "$pkg" >/dev/null 2>&1 && dpkg -x ./*.deb . && rm -f ./*.deb); }
        fetch || { [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 && fetch; } || {
            echo "fuzz/run.sh: could not fetch and unpack $pkg with apt-get download" >&2
            exit 3
        }
    fi
    LIBFUZZER_A=$(ls "$dir"/usr/lib/llvm-*/lib/libFuzzer.a)
fi
export LIBFUZZER_A

# The workspace's lock file, so that the versions are those already built (Cargo drops the
# entries the targets do not need; fuzz/Cargo.lock is not checked in).
cp ../Cargo.lock Cargo.lock
echo "== build (libFuzzer: $LIBFUZZER_A; target dir: $CARGO_TARGET_DIR)"
RUSTC_WRAPPER=$fuzz/rustc-sancov cargo build --bins --quiet

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t" "$work/$t"
    cp -r "corpus/$t/." "$work/$t/" 2>/dev/null || true
    echo "== $t: ${secs}s"
    status=0
    "$CARGO_TARGET_DIR/debug/$t" "$work/$t" "corpus/$t" -max_total_time="$secs" \
        -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" >"$work/$t.log" 2>&1 || status=$?
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::new_units_added|stat::peak_rss|==|INFO: Seed|.*(panicked|ERROR|SUMMARY|Test unit written))' "$work/$t.log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$work/$t.log" >&2
        echo "$t: libFuzzer exited $status; inputs in fuzz/artifacts/$t" >&2
        exit 1
    fi
done
