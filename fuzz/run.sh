#!/bin/sh
# Coverage-guided fuzzing on stable Rust without cargo-fuzz: builds the targets of fuzz/ with
# SanitizerCoverage instrumentation (what `cargo fuzz build -s none` does) and runs each under
# libFuzzer for SECONDS (default 60), starting from fuzz/corpus/<target> (seeds are checked in;
# new inputs go to a scratch copy). A crash stops the run and leaves its input in
# fuzz/artifacts/<target>/.
#
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -eu
cd "$(dirname "$0")"
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-"config_load os_release host_facts k0s_status etcd_members join_token kubeconfig"}
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$(pwd)/target}
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# With an explicit --target, RUSTFLAGS reach only the target crates, not build scripts.
triple=$(rustc -vV | sed -n "s/^host: //p")
cargo build --release --bins --target "$triple"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t" "$work/$t"
    cp -r "corpus/$t/." "$work/$t/" 2>/dev/null || true
    echo "== $t: ${secs}s"
    "$CARGO_TARGET_DIR/$triple/release/$t" "$work/$t" "corpus/$t" -max_total_time="$secs" \
        -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" 2>&1 | grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss|==|INFO: Seed|.*(panicked|ERROR|SUMMARY))' || true
    if ls "artifacts/$t"/crash-* >/dev/null 2>&1; then
        echo "$t: crash inputs in fuzz/artifacts/$t" >&2
        exit 1
    fi
done
