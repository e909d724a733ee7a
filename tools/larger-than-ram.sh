#!/usr/bin/env bash
# A table larger than this machine's memory, written, checkpointed, reopened, read back and
# trained: `strata roundtrip` with dense keys (0..<rows, written in key order), checkpoints
# every --checkpoint-rows rows while writing, every row read back twice and checked bit for
# bit, then Zipf-skewed training (lookup and gradient step) with checkpoints beside it, and a
# reopen after each phase. Prints the figures: resident memory by kind (anonymous, file-backed,
# dirty file pages; sampled every second), throughput, checkpoint times and sizes, reopen
# times, and disk bytes per row against the raw values and optimizer state.
# A benchmark, not a test: CI does not run it. It takes about (rows x 600 bytes) of disk and,
# for the default 51 million rows, 33 minutes on this 2-core VM.
#
# Usage:
#   tools/larger-than-ram.sh [options]
#     --rows N            rows (default 51000000: with --dim 128 and row-wise Adagrad, 26.3 GB
#                         of values and state (24.5 GiB), 27.9 GB of records)
#     --dim N             floats per row (default 128)
#     --hot-mb N          hot budget, MiB (default 512)
#     --warm-mb N         warm budget, MiB (default 512)
#     --map-resident-mb N LMDB map pages kept resident, MiB (default 256)
#     --checkpoint-rows N rows between checkpoints while writing (default 1000000)
#     --train-batches N   training batches of 4096 keys (default 2000)
#     --checkpoint-every N training batches between checkpoints (default 250)
#     --dir DIR           where the store goes (default ${TMPDIR:-/tmp}/strata-larger-than-ram);
#                         it must be new or empty, or an earlier run's
#     --keep              keep the store (it is removed at the end otherwise)
#     --skip-build        use the strata binary already built in .build-release
#     --strata PATH       use this strata binary (no build)
#
# Before it starts, it checks that the disk has room (rows x 640 bytes + 2 GiB) and says how
# the records compare with the machine's memory (MemTotal).
set -euo pipefail
cd "$(dirname "$0")/.."

rows=51000000 dim=128 hot=512 warm=512 mapres=256 ckrows=1000000 batches=2000 every=250
dir="${TMPDIR:-/tmp}/strata-larger-than-ram" keep=0 build=1 strata=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rows) rows="$2"; shift 2 ;;
        --dim) dim="$2"; shift 2 ;;
        --hot-mb) hot="$2"; shift 2 ;;
        --warm-mb) warm="$2"; shift 2 ;;
        --map-resident-mb) mapres="$2"; shift 2 ;;
        --checkpoint-rows) ckrows="$2"; shift 2 ;;
        --train-batches) batches="$2"; shift 2 ;;
        --checkpoint-every) every="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        --skip-build) build=0; shift ;;
        --strata) strata="$2"; build=0; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "larger-than-ram.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
for v in "$rows" "$dim" "$hot" "$warm" "$mapres" "$ckrows" "$batches" "$every"; do
    [[ "$v" =~ ^[0-9]+$ ]] || { echo "larger-than-ram.sh: '$v' is not a whole number" >&2; exit 2; }
done

if [ -z "$strata" ]; then
    strata=.build-release/release/strata
    if [ "$build" = 1 ]; then swift build -c release --scratch-path .build-release --product strata; fi
fi
[ -x "$strata" ] || { echo "larger-than-ram.sh: no strata binary at $strata (drop --skip-build)" >&2; exit 2; }

mkdir -p "$(dirname "$dir")"
need=$(( rows * 640 + (2 << 30) ))
free=$(( $(df --output=avail -k "$(dirname "$dir")" | tail -1) * 1024 ))
if [ "$free" -lt "$need" ]; then
    echo "larger-than-ram.sh: $rows rows need about $(( need >> 30 )) GiB of disk under $(dirname "$dir"); it has $(( free >> 30 )) GiB free. Give --dir on a larger disk or fewer --rows." >&2
    exit 1
fi
memory=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 1024 ))
values=$(( rows * 4 * (dim + 1) ))
echo "this machine: $(( memory >> 20 )) MiB of memory (MemTotal), $(( free >> 30 )) GiB free disk; the table's values and optimizer state: $(( values >> 20 )) MiB ($(awk -v a="$values" -v b="$memory" 'BEGIN {printf "%.2f", a / b}') x memory)"

log="$dir.log"
status=0
"$strata" roundtrip --store "$dir" --rows "$rows" --dim "$dim" --keys dense --checkpoint-rows "$ckrows" \
    --hot-mb "$hot" --warm-mb "$warm" --map-resident-mb "$mapres" \
    --train-batches "$batches" --train-batch 4096 --checkpoint-every "$every" --json 2>&1 | tee "$log" || status=$?
if [ "$keep" = 0 ] && [ "$status" = 0 ]; then rm -rf "$dir"; fi
[ "$status" = 0 ] || { echo "larger-than-ram.sh: strata roundtrip failed (status $status); its output is in $log" >&2; exit "$status"; }

tail -1 "$log" | python3 -c '
import json, sys
f = json.loads(sys.stdin.read())
mib = lambda b: "%.1f MiB" % (b / 2**20)
print()
print("| | |")
print("|---|---|")
print("| rows x dim | %d x %d, row-wise Adagrad |" % (f["rows"], f["dim"]))
print("| memory budget (hot + warm + LMDB map pages) | %s |" % mib(f["budget_bytes"]))
print("| resident, largest sampled: anonymous | %s |" % mib(f["resident_anonymous_bytes_max"]))
print("| resident, largest sampled: file-backed (of it dirty) | %s (%s) |" % (mib(f["resident_file_bytes_max"]), mib(f["resident_file_dirty_bytes_max"])))
print("| high-water mark (VmHWM) | %s |" % mib(f["resident_peak_bytes"]))
print("| write: rows/s (checkpoints beside) | %.0f |" % f["write_rows_per_second"])
print("| write: checkpoints, mean / longest s | %d, %.1f / %.1f |" % (f["write_checkpoints"], f["write_checkpoint_seconds_total"] / max(f["write_checkpoints"], 1), f["write_checkpoint_seconds_longest"]))
print("| reopen after writing / after training, s | %.2f / %.2f |" % (f["reopen_seconds"], f.get("reopen_after_training_seconds", float("nan"))))
print("| read back: rows/s, lookup / peek | %.0f / %.0f |" % (f["read_lookup_rows_per_second"], f["read_peek_rows_per_second"]))
if "train_keys_per_second" in f:
    print("| train: keys/s (lookup + gradient step) | %.0f |" % f["train_keys_per_second"])
    print("| train: batch p50 / p99 / longest ms | %.1f / %.1f / %.1f |" % (1e3 * f["train_batch_p50_seconds"], 1e3 * f["train_batch_p99_seconds"], 1e3 * f["train_batch_longest_seconds"]))
    print("| train: hits hot / warm+spill / LMDB | %.1f / %.1f / %.1f %% |" % (100 * f["train_hit_hot"], 100 * f["train_hit_warm_and_spill"], 100 * f["train_hit_lmdb"]))
    print("| train: checkpoints, rows and MiB each, mean / longest s | %d, %.0f rows, %s, %.1f / %.1f |" % (f["train_checkpoints"], f["train_checkpoint_rows_mean"], mib(f["train_checkpoint_bytes_mean"]), f["train_checkpoint_seconds_mean"], f["train_checkpoint_seconds_longest"]))
print("| disk: bytes a row, all files / LMDB pages | %.0f / %.0f |" % (f["disk_bytes_per_row"], f["lmdb_bytes_per_row"]))
print("| disk against the values and optimizer state | %.2f x |" % f["disk_vs_values_and_state"])
'
