#!/usr/bin/env bash
# Fuzzing Strata's readers of outside bytes with libFuzzer (targets: Tests/Fuzz/Targets.swift).
#
#   tools/fuzz.sh build                   build strata-fuzz with libFuzzer and AddressSanitizer
#   tools/fuzz.sh build-tests             the same, and the tests, so built
#   tools/fuzz.sh run TARGET SECONDS [keep-going]
#                                         fuzz one target; new inputs go to .build-fuzz/corpus,
#                                         crashes, hangs and leaks to .build-fuzz/findings; with
#                                         keep-going, in a child process that is restarted after
#                                         each finding, for long unattended runs
#   tools/fuzz.sh all SECONDS             every target in turn
#   tools/fuzz.sh seed                    remake Tests/Fuzz/Corpus from files Strata writes
#
# A finding is fixed, then its input is committed to Tests/Fuzz/Findings/TARGET, which the
# test suite replays (FuzzRegressionTests) on every run.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=.build-fuzz
targets=(criteo tabular schema npy safetensors tsv cold-record warm-index slot payload catalog hnsw-index)

fuzzer_runtime() {
    local lib
    lib=$(dirname "$(readlink -f "$(command -v swiftc)")")/../lib/clang
    lib=$(ls -d "$lib"/*/lib/linux 2>/dev/null | head -1)/libclang_rt.fuzzer_no_main-x86_64.a
    [[ -f $lib ]] || { echo "fuzz.sh: libFuzzer's runtime ($lib) is not in this Swift toolchain" >&2; exit 1; }
    echo "$lib"
}

build() {
    # The program's own main calls LLVMFuzzerRunDriver, so it links libFuzzer without its
    # main; every Swift module gets coverage counters and AddressSanitizer. With
    # --build-tests, the tests are built the same way (tools/test.sh address runs them).
    swift build -c release --scratch-path "$scratch" "${@:---product=strata-fuzz}" \
        -Xswiftc -sanitize=address -Xswiftc -sanitize-coverage=edge,trace-cmp,inline-8bit-counters,pc-table \
        -Xswiftc -DSTRATA_FUZZ -Xswiftc -g -Xlinker "$(fuzzer_runtime)" -Xlinker -lstdc++
}

binary() { echo "$scratch/release/strata-fuzz"; }

run() {
    local target=$1 seconds=$2 mode=${3:-}
    local extra=()
    [[ $mode == keep-going ]] && extra=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
    [[ " ${targets[*]} " == *" $target "* ]] || { echo "fuzz.sh: no target '$target' (${targets[*]})" >&2; exit 64; }
    mkdir -p "$scratch/corpus/$target" "$scratch/findings/$target"
    # Limits: an input that takes 10 s is a hang; 2 GiB of memory, or one allocation of
    # 512 MiB, is an unbounded allocation.
    LSAN_OPTIONS="suppressions=$PWD/Tests/Fuzz/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}" \
    "$(binary)" "$target" "$scratch/corpus/$target" "Tests/Fuzz/Corpus/$target" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
        -artifact_prefix="$scratch/findings/$target/" -print_final_stats=1 "${extra[@]}" 2>&1 | tail -n 25
}

seed() {
    tmp=$(mktemp -d /tmp/strata-fuzz-seed.XXXXXX)
    trap 'rm -rf "$tmp"' EXIT
    swift build -c release --product strata >/dev/null && swift build -c release --product strata-fuzz >/dev/null
    local strata=.build/release/strata
    # A small trained store, with rows in its warm tier at the close: its payload, catalog and
    # warm indexes seed those targets, and one of its tables, exported, the importers'.
    "$strata" train --model dlrm --data synthetic:criteo --synthetic-keys 60 --steps 20 \
        --batch-size 32 --embedding-dim 4 --bottom-mlp 8 --top-mlp 8 --store "$tmp/store" --hot-mb 0.001 --warm-mb 1 >/dev/null
    .build/release/strata-fuzz seed Tests/Fuzz/Corpus "$tmp/store"
    local table
    table=$("$strata" info "$tmp/store" --json | python3 -c 'import json,sys; print(sorted(t["name"] for t in json.load(sys.stdin)["tables"])[0])')
    local sep=$'\n--strata-fuzz-file--\n'
    "$strata" export "$tmp/store" "$table" --format npy --out "$tmp/npy" --with-state >/dev/null
    "$strata" export "$tmp/store" "$table" --format safetensors --out "$tmp/t.safetensors" --with-state >/dev/null
    "$strata" export "$tmp/store" "$table" --format tsv --out "$tmp/tsv" >/dev/null
    mkdir -p Tests/Fuzz/Corpus/{npy,safetensors,tsv,criteo,tabular,schema}
    { cat "$tmp/npy/keys.npy"; printf '%s' "$sep"; cat "$tmp/npy/values.npy"; printf '%s' "$sep"
      cat "$tmp/npy/state.npy"; printf '%s' "$sep"; cat "$tmp/npy/update_counts.npy"; } > Tests/Fuzz/Corpus/npy/export
    cp "$tmp/t.safetensors" Tests/Fuzz/Corpus/safetensors/export
    { cat "$tmp/tsv/vectors.tsv"; printf '%s' "$sep"; cat "$tmp/tsv/metadata.tsv"; } > Tests/Fuzz/Corpus/tsv/export
    # Criteo's layout (label, 2 integer and 3 categorical columns, as the target reads it).
    printf '1\t5\t\t68fd1e64\t80e26c9b\tfb936136\n0\t\t3\t8cf07265\t\t0b153874\n1\t0\t110\t05db9164\t2c16a946\ta9a87e68\n' \
        > Tests/Fuzz/Corpus/criteo/lines
    echo "seeds: $(find Tests/Fuzz/Corpus -type f | wc -l) files in Tests/Fuzz/Corpus"
}

case "${1:-}" in
    build) build ;;
    build-tests) build --build-tests ;;
    run) [[ $# -eq 3 || ( $# -eq 4 && $4 == keep-going ) ]] || { echo "usage: tools/fuzz.sh run TARGET SECONDS [keep-going]" >&2; exit 64; }
        build; run "$2" "$3" "${4:-}" ;;
    all)
        [[ $# -eq 2 ]] || { echo "usage: tools/fuzz.sh all SECONDS" >&2; exit 64; }
        build
        for t in "${targets[@]}"; do echo "== $t"; run "$t" "$2"; done ;;
    seed) seed ;;
    *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 64 ;;
esac
