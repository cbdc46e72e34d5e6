#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder of repository data (fuzz/), on the stable toolchain:
# libFuzzer comes from the libfuzzer-sys crate, SanitizerCoverage from stable -C options. Each
# target runs RUNS executions (default 10,000,000) from its checked-in seeds (fuzz/corpus/), in
# parallel JOBS at a time; new inputs it finds go to target/fuzz/work/<target>. Prints one line
# per target: executions, seconds, crashes. A crash leaves crash-* in target/fuzz/artifacts.
#   benches/fuzz.sh                # every target, 10 M executions each
#   RUNS=100000 benches/fuzz.sh tree snapshot
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10000000}
JOBS=${JOBS:-2}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=($(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^drvault-fuzz$'))
fi
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
# An explicit --target keeps the flags off build scripts and proc macros (they run on the host
# without libFuzzer's hooks).
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --manifest-path fuzz/Cargo.toml --target-dir target/fuzz --target "$host" --bins
mkdir -p target/fuzz/work target/fuzz/artifacts target/fuzz/logs
run() {
    local t=$1 start end
    mkdir -p "target/fuzz/work/$t"
    start=$(date +%s)
    if "target/fuzz/$host/release/$t" -runs="$RUNS" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 -artifact_prefix="target/fuzz/artifacts/$t-" \
        "target/fuzz/work/$t" "fuzz/corpus/$t" >"target/fuzz/logs/$t.log" 2>&1; then
        result=ok
    else
        result="CRASH (target/fuzz/logs/$t.log)"
    fi
    end=$(date +%s)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "target/fuzz/logs/$t.log" | tail -1)
    printf '%-14s %12s executions %6s s  %s\n' "$t" "${execs:-?}" "$((end - start))" "$result"
}
running=0
for t in "${targets[@]}"; do
    run "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait
