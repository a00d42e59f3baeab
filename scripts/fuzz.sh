#!/usr/bin/env bash
# Coverage-guided fuzzing of zmesh's decoders with libFuzzer, on the stable toolchain.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 20 s, every target)
#
# Builds fuzz/ (its own Cargo.lock, --locked) in release with debug assertions and
# overflow checks, instrumented for libFuzzer by codegen flags stable rustc accepts, into
# ${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-target}/fuzz}. Then runs each target for the
# given time on a copy of its seed corpus (fuzz/corpus/TARGET), so the repository stays
# clean. Targets run FUZZ_JOBS at a time (default: the number of CPUs).
# Exits non-zero if a target crashes (panic, overflow, timeout, out of memory): the
# input is kept under ${FUZZ_TARGET_DIR}/artifacts/TARGET/ and shown as a hex dump.
# See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

secs=${1:-20}
[[ $secs =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2; }
shift $(($# > 0 ? 1 : 0))
all_targets=(stun relay_frame probe datagram filter wire policy dns)
targets=("$@")
((${#targets[@]})) || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
    [[ " ${all_targets[*]} " == *" $t "* ]] || { echo "fuzz: unknown target $t (have: ${all_targets[*]})" >&2; exit 2; }
done

target_dir=${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-target}/fuzz}
[[ $target_dir == /* ]] || target_dir=$root/$target_dir
jobs=${FUZZ_JOBS:-$(nproc)}
((jobs >= 1)) || jobs=1
((jobs <= ${#targets[@]})) || jobs=${#targets[@]}
# Bounds: the build, and each run (libFuzzer stops itself at -max_total_time; this
# catches a run that hangs anyway, e.g. in a loop that never reaches a check).
build_limit=${FUZZ_BUILD_TIMEOUT:-1500}
run_limit=$((secs + 120))

# libfuzzer-sys compiles libFuzzer (C++) in its build script.
if ! command -v "${CXX:-c++}" >/dev/null; then
    echo "fuzz: no C++ compiler (${CXX:-c++}): libFuzzer is built from C++; install g++" >&2
    exit 1
fi
host=$(rustc -vV | sed -n 's/^host: //p')
# What cargo-fuzz passes, minus the sanitizer (-Z flags need nightly). The explicit
# --target keeps these flags off build scripts and proc macros; fuzz/rustc-wrapper.sh
# keeps the coverage instrumentation to zmesh's crates and the parsers they use.
rustflags=(
    --cfg fuzzing
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
)
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
echo "fuzz: building ${targets[*]} into $target_dir"
build_start=$SECONDS
(
    cd fuzz
    RUSTFLAGS="${rustflags[*]}" CARGO_TARGET_DIR=$target_dir RUSTC_WRAPPER=$root/fuzz/rustc-wrapper.sh \
        timeout "$build_limit" cargo build --release --locked --target "$host" "${bins[@]}"
)
echo "fuzz: built in $((SECONDS - build_start)) s"

work=$(mktemp -d /tmp/zmesh-fuzz.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# One run: fuzz/corpus/T copied to $work/T/corpus, libFuzzer's log in $work/T/log,
# crash inputs in $work/T/artifacts/.
run_one() {
    local t=$1 d=$work/$1
    mkdir -p "$d/corpus" "$d/artifacts"
    if [[ -d fuzz/corpus/$t ]]; then
        cp fuzz/corpus/"$t"/* "$d/corpus/" 2>/dev/null || true
    fi
    local rc=0
    timeout -k 10 "$run_limit" "$target_dir/$host/release/$t" \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$d/artifacts/" "$d/corpus" >"$d/log" 2>&1 || rc=$?
    echo "$rc" >"$d/rc"
}

run_start=$SECONDS
running=0
for t in "${targets[@]}"; do
    if ((running >= jobs)); then
        wait -n || true
        running=$((running - 1))
    fi
    run_one "$t" &
    pids+=($!)
    running=$((running + 1))
done
wait || true
pids=()

failed=()
for t in "${targets[@]}"; do
    d=$work/$t
    rc=$(cat "$d/rc" 2>/dev/null || echo 1)
    seeds=$(find "fuzz/corpus/$t" -type f 2>/dev/null | wc -l)
    counters=$(grep -Eo 'Loaded 1 modules +\([0-9]+ inline 8-bit counters\)' "$d/log" | grep -Eo '[0-9]+ inline' | grep -Eo '[0-9]+' || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$d/log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$d/log" | tail -n 1)
    last=$(grep -E '^#[0-9]+' "$d/log" | tail -n 1 || true)
    cov=$(grep -Eo 'cov: [0-9]+' <<<"$last" | grep -Eo '[0-9]+' || echo "?")
    ft=$(grep -Eo 'ft: [0-9]+' <<<"$last" | grep -Eo '[0-9]+' || echo "?")
    corp=$(grep -Eo 'corp: [0-9]+' <<<"$last" | grep -Eo '[0-9]+' || echo "?")
    crashes=("$d"/artifacts/*)
    [[ -e ${crashes[0]} ]] || crashes=()
    if [[ $rc != 0 || ${#crashes[@]} -gt 0 || -z $counters || $counters == 0 ]]; then
        failed+=("$t")
        echo "fuzz: $t FAILED (exit $rc)" >&2
        if [[ -z $counters || $counters == 0 ]]; then
            echo "fuzz: $t: no coverage counters loaded: the build is not instrumented" >&2
        fi
        keep=$target_dir/artifacts/$t
        mkdir -p "$keep"
        for c in "${crashes[@]}"; do
            cp "$c" "$keep/"
            echo "fuzz: $t: crash input $keep/$(basename "$c") ($(stat -c %s "$c") bytes):" >&2
            od -A x -t x1z -v "$c" | head -n 32 >&2
        done
        # The panic message and libFuzzer's summary, without progress lines and
        # backtrace frames (those are in the full log).
        echo "fuzz: $t: end of libFuzzer's log:" >&2
        grep -Ev '^#[0-9]|^ +[0-9]+: |^ +at ' "$d/log" | tail -n 25 >&2
        cp "$d/log" "$keep/log"
        echo "fuzz: $t: full log in $keep/log" >&2
        for c in "${crashes[@]}"; do
            echo "fuzz: $t: reproduce: $target_dir/$host/release/$t $keep/$(basename "$c")" >&2
        done
    fi
    echo "fuzz: $t: ${execs:-?} execs (${rate:-?}/s), cov $cov, ft $ft, corpus $corp (from $seeds seeds), ${counters:-0} counters"
done
echo "fuzz: ran ${#targets[@]} targets in $((SECONDS - run_start)) s ($jobs at a time)"

if ((${#failed[@]})); then
    echo "fuzz: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: OK ${#targets[@]} targets, $secs s each"
