#!/usr/bin/env bash
# Out-of-core training throughput against all-in-memory training, on this machine, in one
# run: `strata train --data synthetic:criteo --json` on the same data for the same steps,
#   1. all in memory: a hot budget per table with room for every row the run can touch
#      (x1.5, a power of two MiB, as tools/compare-pytorch.sh picks it), no warm tier;
#   2. out of core: hot + warm budgets per table that add up to at least --budget-ratio
#      (default 10) times less than the tables' records as run 1 built them (so run 1 goes
#      first), with look-ahead; LMDB's map pages are left to the kernel as clean page cache
#      (no --map-resident-mb cap) unless --map-resident-mb gives one;
#   3. a baseline (unless --no-baseline): run 2's command for a few steps with every
#      categorical feature's key space cut to 10 ids, whose peak resident memory is the
#      process's fixed memory (binary, dense model, batch buffers, prefetch queue), so that
#      run 2's peak can be set against its budget.
# Then prints samples/s of both and their ratio (the goal is out of core >= 0.70 x all in
# memory), the tables' record bytes against the memory budget, peak resident memory against
# the budget, and where lookups found their rows (hot, warm, LMDB).
# A benchmark, not a test: CI does not run it.
#
# The model and data are Criteo Kaggle's DLRM: embedding dimension 16, bottom MLP
# 13-512-256-64-16, top MLP 367-512-256-1, SGD with learning rate 0.1 on both sides, synthetic
# data with Kaggle's 26 key spaces (up to 10.1 million ids), Zipf 1.05.
#
# Usage:
#   tools/out-of-core.sh [options]
#     --steps N             steps of both runs (default 400)
#     --batch-size N        samples per step (default 2048)
#     --lookahead N         --lookahead of the out-of-core run (default 4); the all-in-memory
#                           run uses the same
#     --threads N           --threads of every run (default 2)
#     --budget-ratio N      the out-of-core run's memory budget is the tables' record bytes
#                           (from the all-in-memory run) / N (default 10), split evenly over the
#                           26 tables, half hot, half warm; with --map-resident-mb, the cap
#                           counts in it too. Ignored for whatever --hot-mb and --warm-mb set
#     --hot-mb X            the out-of-core run's hot budget per table, MiB (fractions allowed)
#     --warm-mb X           its warm budget per table, MiB
#     --map-resident-mb X   cap LMDB's map pages resident in the process at X MiB (default: no
#                           cap). A small cap costs time: the store drops all of LMDB's mapped
#                           pages each time half of it has been added, and the next reads fault
#                           the B-tree back in (0.45 of the all-in-memory rate with 3 MiB here,
#                           against 0.89 without)
#     --memory-hot-mb N     the all-in-memory run's hot budget per table, MiB (default: room
#                           for every row it can touch, as above)
#     --checkpoint-every N  --checkpoint-every of both runs (default: steps / 4, so that rows
#                           pushed out of the out-of-core run's budget reach LMDB and are read
#                           back from it; 0: only the final checkpoint, and rows pushed out wait
#                           in the spill file instead). Every checkpoint is inside the timing;
#                           the table also shows samples/s without the final one
#     --no-baseline         skip run 3 (the table then shows peaks without a baseline)
#     --drop-caches         also run 2's command toward twice the steps, stopped (kill -9) once
#                           its checkpoint at --steps is durable, then drop the page cache (sync;
#                           echo 3 > /proc/sys/vm/drop_caches: needs root) and resume it, so
#                           that its LMDB file starts on the device, not in memory; reports the
#                           resumed run's samples/s and its page faults that read the device
#                           (/usr/bin/time's major faults) per second
#     --skip-build          use the strata binary already built in .build-release
#     --strata PATH         use this strata binary (no build)
#     --keep                keep the scratch directory (stores, logs, metrics)
#
# Examples:
#   tools/out-of-core.sh
#   tools/out-of-core.sh --steps 1000 --budget-ratio 20
#   tools/out-of-core.sh --skip-build --steps 30        # a quick check that it all works
#
# The build goes to .build-release (`swift build -c release --scratch-path .build-release
# --product strata`). The stores, logs and metrics live in a scratch directory under
# ${TMPDIR:-/tmp}, removed at exit unless --keep; they take the disk their rows need.
# Every step that fails stops the script with its log.
# Figures vary about +-20% from run to run on a shared machine; run it twice before
# believing a ratio.
set -euo pipefail
# All of it in one group, so that bash reads the whole script before running it: editing the
# file while a benchmark runs cannot change what the run does.
{

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
steps=400
batch=2048
lookahead=4
threads=2
budget_ratio=10
hot_mb=""
warm_mb=""
map_mb=""
memory_hot_mb=""
checkpoint_every=""
baseline=1
drop_caches=0
build=1
keep=0
strata=""

script=out-of-core
# shellcheck source=tools/options.sh
source "$repo/tools/options.sh"

while [ $# -gt 0 ]; do
    case "$1" in
        --steps) number "$1" "${2-}"; steps="$2"; shift 2 ;;
        --batch-size) number "$1" "${2-}"; batch="$2"; shift 2 ;;
        --lookahead) number "$1" "${2-}"; lookahead="$2"; shift 2 ;;
        --threads) number "$1" "${2-}"; threads="$2"; shift 2 ;;
        --budget-ratio) decimal "$1" "${2-}"; budget_ratio="$2"; shift 2 ;;
        --hot-mb) decimal "$1" "${2-}"; hot_mb="$2"; shift 2 ;;
        --warm-mb) decimal "$1" "${2-}"; warm_mb="$2"; shift 2 ;;
        --map-resident-mb) decimal "$1" "${2-}"; map_mb="$2"; shift 2 ;;
        --memory-hot-mb) decimal "$1" "${2-}"; memory_hot_mb="$2"; shift 2 ;;
        --checkpoint-every) number "$1" "${2-}"; checkpoint_every="$2"; shift 2 ;;
        --no-baseline) baseline=0; shift ;;
        --drop-caches) drop_caches=1; shift ;;
        --skip-build) build=0; shift ;;
        --strata) [ -n "${2-}" ] || fail "--strata wants a path"; strata="$2"; build=0; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "out-of-core: unknown option '$1'" >&2; usage ;;
    esac
done
[ "$steps" -ge 1 ] || fail "--steps must be at least 1"
[ "$batch" -ge 1 ] || fail "--batch-size must be at least 1"
if [ -z "$checkpoint_every" ]; then checkpoint_every=$(( steps / 4 )); [ "$checkpoint_every" -ge 1 ] || checkpoint_every=1; fi
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 1 else 1)" "$budget_ratio" \
    || fail "--budget-ratio must be at least 1, not $budget_ratio"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/strata-out-of-core.XXXXXX")
if [ "$keep" = 1 ]; then
    echo "scratch directory (kept): $scratch"
else
    trap 'rm -rf "$scratch"' EXIT
fi

# Shows the end of a failed step's output and stops.
step_failed() {   # what, exit code (- if none), output file
    if [ "$2" = - ]; then echo "out-of-core: FAILED: $1" >&2; else echo "out-of-core: FAILED: $1 (exit code $2)" >&2; fi
    if [ -s "$3" ]; then
        echo "---- last lines of $(basename "$3") ----" >&2
        tail -n 25 "$3" >&2
        echo "----" >&2
    fi
    exit 1
}

# ---- strata, built in release ------------------------------------------------------------
if [ "$build" = 1 ]; then
    echo "building strata (swift build -c release --scratch-path .build-release --product strata)"
    ( cd "$repo" && swift build -c release --scratch-path .build-release --product strata ) >"$scratch/build.log" 2>&1 \
        || step_failed "swift build -c release --scratch-path .build-release --product strata" $? "$scratch/build.log"
fi
[ -n "$strata" ] || strata="$(cd "$repo" && swift build -c release --scratch-path .build-release --show-bin-path)/strata"
[ -x "$strata" ] || fail "no strata binary at $strata (run without --skip-build, or give --strata)"
echo "strata: $strata ($(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')$( [ -n "$(git -C "$repo" status --porcelain 2>/dev/null)" ] && echo ', with uncommitted changes'))"
machine_line
echo

tables=26
[ -n "$memory_hot_mb" ] || memory_hot_mb=$(all_rows_hot_mb "$batch" "$steps")

common=(train --model dlrm --data synthetic:criteo --synthetic-key-spaces kaggle --synthetic-zipf 1.05
        --embedding-dim 16 --bottom-mlp 512-256-64 --top-mlp 512-256 --learning-rate 0.1 --optimizer sgd
        --batch-size "$batch" --eval-samples 0 --threads "$threads" --checkpoint-every "$checkpoint_every" --json)

# Runs strata with a name and arguments; the JSON summary goes to $scratch/NAME.json.
run() {   # name, what, arguments...
    local name=$1 what=$2 status=0 started
    shift 2
    echo "$what: strata $*"
    started=$(date +%s.%N)
    # ${store_of:-NAME} picks another run's store; ${timed:-} runs strata under /usr/bin/time -v.
    ${timed:+/usr/bin/time -v -o "$scratch/$name.time"} "$strata" "$@" --store "$scratch/store-${store_of:-$name}" \
        --metrics "$scratch/$name.metrics.jsonl" >"$scratch/$name.out" 2>&1 || status=$?
    [ "$keep" = 1 ] || [ -n "${keep_store:-}" ] || rm -rf "$scratch/store-${store_of:-$name}"
    [ "$status" = 0 ] || step_failed "strata $*" "$status" "$scratch/$name.out"
    grep '^{' "$scratch/$name.out" | tail -n 1 >"$scratch/$name.json" || true
    python3 -c 'import json, sys; json.load(open(sys.argv[1]))["tables"]' "$scratch/$name.json" 2>/dev/null \
        || step_failed "strata $*: no --json summary" - "$scratch/$name.out"
    echo "  done in $(python3 -c 'import sys, time; print("%.1f" % (time.time() - float(sys.argv[1])))' "$started") s"
}

# ---- 1. all in memory --------------------------------------------------------------------
run memory "[1/3] all in memory ($steps steps)" "${common[@]}" --steps "$steps" --lookahead "$lookahead" \
    --hot-mb "$memory_hot_mb" --warm-mb 0

# ---- 2. out of core ----------------------------------------------------------------------
# Budgets from the tables run 1 built, unless given.
budgets=$(python3 - "$scratch/memory.json" "$budget_ratio" "$tables" "${hot_mb:--}" "${warm_mb:--}" "${map_mb:--}" <<'EOF'
import json, sys
summary, ratio, tables = json.load(open(sys.argv[1])), float(sys.argv[2]), int(sys.argv[3])
given = [None if a == "-" else float(a) for a in sys.argv[4:7]]
mib = 1 << 20
budget = summary["tables"]["row_bytes"] / ratio / mib          # MiB, tables and any map cap together
per_table = (budget - (given[2] or 0)) / tables
hot = given[0] if given[0] is not None else per_table / 2
warm = given[1] if given[1] is not None else per_table / 2
# Whole bytes, as strata rounds them down; at least one 96-byte row of hot.
hot = max(hot, 96 / mib)
print("%.6f %.6f %s" % (hot, warm, "-" if given[2] is None else "%.6f" % given[2]))
EOF
) || fail "cannot work out the budgets from $scratch/memory.json"
read -r hot_mb warm_mb map_mb <<<"$budgets"
map_cap=()
[ "$map_mb" = - ] || map_cap=(--map-resident-mb "$map_mb")
run disk "[2/3] out of core ($steps steps)" "${common[@]}" --steps "$steps" --lookahead "$lookahead" \
    --hot-mb "$hot_mb" --warm-mb "$warm_mb" "${map_cap[@]}"
if [ "$drop_caches" = 1 ]; then
    # Run 2's command toward twice the steps, stopped with kill -9 once its checkpoint at
    # `steps` is durable (a resume must use the very same options), then resumed from there
    # with the page cache dropped.
    long=("${common[@]}" --steps $(( 2 * steps )) --lookahead "$lookahead" --hot-mb "$hot_mb" --warm-mb "$warm_mb" "${map_cap[@]}")
    echo "[2/3] out of core toward $(( 2 * steps )) steps, stopped after its checkpoint at step $steps: strata ${long[*]}"
    "$strata" "${long[@]}" --store "$scratch/store-cold" --metrics "$scratch/prep.metrics.jsonl" >"$scratch/prep.out" 2>&1 &
    pid=$!
    until grep -q "\"event\":\"checkpoint\".*\"step\":$steps[,}]" "$scratch/prep.metrics.jsonl" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || step_failed "the run to stop at step $steps ended before its checkpoint there" - "$scratch/prep.out"
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    sync
    echo 3 2>/dev/null >/proc/sys/vm/drop_caches || fail "--drop-caches: cannot write /proc/sys/vm/drop_caches (needs root)"
    store_of=cold timed=1 run cold "[2/3] resumed at step $steps with the page cache dropped" "${long[@]}" --resume
fi

# ---- 3. baseline -------------------------------------------------------------------------
if [ "$baseline" = 1 ]; then
    base_steps=20
    [ "$steps" -ge "$base_steps" ] || base_steps=$steps
    # --synthetic-keys 10 with geometric key spaces: 10 ids per feature, 260 rows in all.
    base_args=("${common[@]}")
    for i in "${!base_args[@]}"; do [ "${base_args[$i]}" = kaggle ] && base_args[$i]=geometric; done
    run base "[3/3] baseline: run 2 with 10 ids per feature ($base_steps steps)" "${base_args[@]}" --steps "$base_steps" \
        --synthetic-keys 10 --lookahead "$lookahead" --hot-mb "$hot_mb" --warm-mb "$warm_mb" "${map_cap[@]}"
fi

echo
python3 - "$scratch" "$baseline" "$hot_mb" "$warm_mb" "$map_mb" "$memory_hot_mb" "$tables" "$steps" "$batch" "$lookahead" "$checkpoint_every" <<'EOF'
import json, os, sys
scratch, baseline = sys.argv[1], sys.argv[2] == "1"
hot_mb, warm_mb, memory_hot_mb = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[6])
map_mb = None if sys.argv[5] == "-" else float(sys.argv[5])
tables, steps, batch, lookahead, checkpoint_every = (int(a) for a in sys.argv[7:12])
mib = 1 << 20

def load(name):
    return json.load(open(os.path.join(scratch, name + ".json")))

def final_checkpoint_seconds(name):
    seconds = None
    try:
        for line in open(os.path.join(scratch, name + ".metrics.jsonl")):
            event = json.loads(line)
            if event.get("event") == "checkpoint":
                seconds = event.get("seconds")
    except OSError:
        pass
    return seconds

mem, disk = load("memory"), load("disk")
base = load("base") if baseline else None

def without_checkpoint(s, name):
    c = final_checkpoint_seconds(name)
    return s["samples"] / (s["seconds"] - c) if c is not None and s["seconds"] > c else None

def mb(b):
    return "-" if b is None else ("%.1f MB" % (b / 1e6) if b < 1e9 else "%.2f GB" % (b / 1e9))

def rate(x):
    return "-" if x is None else "{:,.0f}".format(x)

def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else "%.2f" % (a / b)

def pct(t):
    # What is left are rows never written before (their value is the initializer's).
    h, w, c = t["hot_hit_ratio"], t["warm_hit_ratio"], t["cold_hit_ratio"]
    return "%.1f / %.1f / %.1f / %.1f" % (100 * h, 100 * w, 100 * c, 100 * max(0.0, 1 - h - w - c))

mt, dt = mem["tables"], disk["tables"]
table_budget = dt["budget_bytes_per_table"] * tables
map_bytes = int((map_mb or 0) * mib)
budget = table_budget + map_bytes
mem_wo, disk_wo = without_checkpoint(mem, "memory"), without_checkpoint(disk, "disk")
if mt["row_bytes"] != dt["row_bytes"]:
    print("warning: the runs built tables of different sizes (%d and %d bytes of records)" % (mt["row_bytes"], dt["row_bytes"]))

print("%d steps of %d samples, look-ahead %d, a checkpoint every %d steps; out of core: hot %.3f MiB + warm %.3f MiB a table x %d tables, "
      "LMDB map pages %s; all in memory: hot %g MiB a table" % (steps, batch, lookahead, checkpoint_every, hot_mb, warm_mb, tables,
      "left to the kernel (no cap)" if map_mb is None else "capped at %.2f MiB" % map_mb, memory_hot_mb))
print()
w = 36
print(f"{'':{w}} {'all in memory':>22} {'out of core':>22} {'ratio':>8}")
print(f"{'samples/s':{w}} {rate(mem['samples_per_second']):>22} {rate(disk['samples_per_second']):>22} "
      f"{ratio(disk['samples_per_second'], mem['samples_per_second']):>8}   (goal >= 0.70)")
print(f"{'samples/s without final checkpoint':{w}} {rate(mem_wo):>22} {rate(disk_wo):>22} {ratio(disk_wo, mem_wo):>8}")
print(f"{'tables: rows':{w}} {mt['rows']:>22,} {dt['rows']:>22,}")
print(f"{'tables: record bytes':{w}} {mb(mt['row_bytes']):>22} {mb(dt['row_bytes']):>22}   (largest table {mb(dt['largest_table_bytes'])})")
print(f"{'memory budget: tables (hot + warm)':{w}} {mb(mt['budget_bytes_per_table'] * tables):>22} {mb(table_budget):>22} "
      f"{ratio(dt['row_bytes'], table_budget):>8}   (record bytes / budget)")
if map_mb is not None:
    print(f"{'memory budget: tables + LMDB map':{w}} {'':>22} {mb(budget):>22} {ratio(dt['row_bytes'], budget):>8}   (record bytes / budget)")
print(f"{'overhead (index, admission, sketch)':{w}} {mb(mt['overhead_bytes']):>22} {mb(dt['overhead_bytes']):>22}")
print(f"{'peak resident (VmHWM)':{w}} {mb(mem.get('peak_resident_bytes')):>22} {mb(disk.get('peak_resident_bytes')):>22}")
print(f"{'anonymous between steps (RssAnon)':{w}} {mb(mem.get('anonymous_bytes_between_steps')):>22} {mb(disk.get('anonymous_bytes_between_steps')):>22}")
print(f"{'dirty file pages between steps':{w}} {mb(mem.get('file_dirty_bytes_between_steps')):>22} {mb(disk.get('file_dirty_bytes_between_steps')):>22}")
if base is not None and base.get("anonymous_bytes_between_steps") and disk.get("anonymous_bytes_between_steps"):
    grown = disk["anonymous_bytes_between_steps"] + disk["file_dirty_bytes_between_steps"] - base["anonymous_bytes_between_steps"] - base["file_dirty_bytes_between_steps"]
    print(f"{'anonymous + dirty - baseline':{w}} {'':>22} {mb(grown):>22} {ratio(grown, budget + dt['overhead_bytes']):>8}   (x budget + overhead)")
if base is not None and base.get("peak_resident_bytes") and disk.get("peak_resident_bytes"):
    fixed = base["peak_resident_bytes"]
    growth = disk["peak_resident_bytes"] - fixed
    allowed = budget + dt["overhead_bytes"]
    print(f"{'baseline peak (fixed memory)':{w}} {'':>22} {mb(fixed):>22}")
    print(f"{'peak - baseline':{w}} {mb(mem['peak_resident_bytes'] - fixed):>22} {mb(growth):>22} "
          f"{ratio(growth, allowed):>8}   (x budget + overhead, {mb(allowed)})")
    between = disk.get("resident_bytes_between_steps")
    if between:
        print(f"{'resident between steps - baseline':{w}} {mb(mem['resident_bytes_between_steps'] - fixed):>22} "
              f"{mb(between - fixed):>22} {ratio(between - fixed, allowed):>8}   (x budget + overhead)")
print(f"{'lookups, % hot/warm+spill/LMDB/new':{w}} {pct(mt):>22} {pct(dt):>22}")
if os.path.exists(os.path.join(scratch, "cold.json")):
    cold = load("cold")
    faults = elapsed = None
    for line in open(os.path.join(scratch, "cold.time")):
        key, _, value = line.strip().rpartition(": ")
        if key == "Major (requiring I/O) page faults":
            faults = int(value)
        elif key.startswith("Elapsed (wall clock) time"):
            parts = [float(p) for p in value.split(":")]
            elapsed = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    print()
    print(f"{'resumed, page cache dropped: samples/s':{w}} {'':>22} {rate(cold['samples_per_second']):>22} "
          f"{ratio(cold['samples_per_second'], mem['samples_per_second']):>8}   (x all in memory)")
    print(f"{'  lookups, % hot/warm+spill/LMDB/new':{w}} {'':>22} {pct(cold['tables']):>22}")
    if faults is not None and elapsed:
        print(f"{'  page faults that read the device':{w}} {'':>22} {faults:>22,}   ({faults / elapsed:,.0f}/s over {elapsed:.1f} s)")
if base is not None and disk.get("peak_resident_bytes") and disk["peak_resident_bytes"] - base["peak_resident_bytes"] > budget + dt["overhead_bytes"]:
    print()
    over = (disk["peak_resident_bytes"] - base["peak_resident_bytes"] - budget - dt["overhead_bytes"]) / 1e6
    print(f"note: the out-of-core peak exceeds budget + overhead by {over:.1f} MB: memory no budget covers (a checkpoint's")
    print("sorted copy of a table's change list, LZ4 and journal buffers, freed memory malloc keeps, LMDB pages mapped")
    print("between two of the store's measurements of them; README, Memory).")
EOF
exit 0
}
