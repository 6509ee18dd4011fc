#!/usr/bin/env bash
# THE test command: installs dependencies (scripts/setup.sh), then builds and
# runs the whole suite three times -- build/plain (gcc), build/asan (clang,
# ASan+UBSan), build/tsan (clang, TSan) -- then builds the libFuzzer targets
# (build/fuzz) and runs each briefly over its corpus, and last compiles every
# target in Release with gcc and clang (build/release-gcc, build/release-clang;
# compile only: warnings that appear only at -O3 or without assert()), and
# checks that every C file is formatted as .clang-format says.
#
# Every stage runs even if an earlier one failed; a summary follows. Exit
# status is 0 only if every stage passed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

# Executions per fuzzer in the smoke run (after replaying its corpus).
FUZZ_SMOKE_RUNS=2000

bash scripts/setup.sh

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

# build NAME, then run its tests (CTest kills any test past its TIMEOUT).
suite() {
    local name=$1
    local -a wrap=()
    cmojo_configure "$name"
    cmake --build "build/$name"
    # ThreadSanitizer in clang 14 cannot map its shadow memory when the kernel
    # randomises mmap with more than 28 bits; run without ASLR there.
    if [ "$name" = tsan ] && [ "$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0)" -gt 28 ]; then
        wrap=(setarch "$(uname -m)" -R)
    fi
    "${wrap[@]}" ctest --test-dir "build/$name" --output-on-failure --no-tests=error -j2
}

# Build every fuzz_<n> and run it for FUZZ_SMOKE_RUNS inputs, starting from
# fuzz/corpus/<n>. New inputs libFuzzer finds go to build/fuzz/corpus-new/<n>,
# crashes to build/fuzz/artifacts/<n>/, its log to build/fuzz/logs/<n>.log;
# the checked-in corpus is never written.
fuzz_smoke() {
    local src name corpus new log
    local -a sources
    cmojo_configure fuzz
    cmake --build build/fuzz --target cmojo_fuzzers
    shopt -s nullglob
    sources=(fuzz/fuzz_*.c)
    if [ "${#sources[@]}" -eq 0 ]; then
        echo "no fuzz targets (fuzz/fuzz_*.c) in this tree: nothing to run"
        return 0
    fi
    mkdir -p build/fuzz/logs
    for src in "${sources[@]}"; do
        name=${src#fuzz/fuzz_}
        name=${name%.c}
        corpus=fuzz/corpus/$name
        if [ -z "$(ls -A "$corpus" 2>/dev/null)" ]; then
            echo "FAIL: fuzz_$name has no seed corpus in $corpus/"
            return 1
        fi
        new=build/fuzz/corpus-new/$name
        log=build/fuzz/logs/$name.log
        rm -rf "$new"
        mkdir -p "$new" "build/fuzz/artifacts/$name"
        if ! "build/fuzz/fuzz/fuzz_$name" -runs="$FUZZ_SMOKE_RUNS" -max_total_time=300 \
            -timeout=25 -artifact_prefix="build/fuzz/artifacts/$name/" \
            "$new" "$corpus" >"$log" 2>&1; then
            tail -n 60 "$log"
            echo "FAIL: fuzz_$name (full log: $log)"
            return 1
        fi
        echo "fuzz_$name: $(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1)"
    done
}

# Compile (not run) every target, tests included, in the Release trees.
release_build() {
    local name
    for name in release-gcc release-clang; do
        cmojo_configure "$name"
        cmake --build "build/$name"
    done
}

# Every tracked C source and header formatted as .clang-format says.
format_check() {
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files -z -- '*.c' '*.h'
    else
        find src include tests bench fuzz tools examples -name '*.[ch]' -print0
    fi | xargs -0 clang-format --dry-run -Werror
}

stages=()
results=()
times=()

# run_stage NAME COMMAND...: runs COMMAND in a subshell with errexit on (a
# plain `if COMMAND` would switch errexit off inside it) and records the result.
run_stage() {
    local name=$1 start=$SECONDS rc
    shift
    echo
    echo "==== $name: $(cmojo_describe "$name") ===="
    set +e
    (
        set -e
        "$@"
    )
    rc=$?
    set -e
    stages+=("$name")
    times+=($((SECONDS - start)))
    if [ "$rc" -eq 0 ]; then results+=(PASS); else results+=(FAIL); fi
}

run_stage plain suite plain
run_stage asan suite asan
run_stage tsan suite tsan
run_stage fuzz fuzz_smoke
run_stage release release_build
run_stage format format_check

echo
echo "==== summary ===="
status=0
for i in "${!stages[@]}"; do
    printf '  %s  %-6s %-55s %4ss\n' "${results[$i]}" "${stages[$i]}" \
        "$(cmojo_describe "${stages[$i]}")" "${times[$i]}"
    [ "${results[$i]}" = PASS ] || status=1
done
if [ "$status" -eq 0 ]; then
    echo "all stages passed"
else
    echo "SOME STAGES FAILED (details above each stage's heading)"
fi
exit "$status"
