#!/usr/bin/env bash
# Training throughput of `strata train` against PyTorch's reference DLRM training step, on
# this machine, in one run: samples per second of both and their ratio (Strata / PyTorch).
# A benchmark, not a test: CI does not run it.
#
# Both sides train the Criteo Kaggle DLRM (embedding dimension 16, bottom MLP
# 13-512-256-64-16, top MLP 367-512-256-1, dot interaction, binary cross-entropy, SGD with
# learning rate 0.1) for the same number of steps on synthetic data of the same shape
# (13 dense features, 26 categorical ids, Zipf 1.05 over the Kaggle table sizes):
#   - PyTorch: tools/pytorch_dlrm.py, a re-implementation of facebookresearch/dlrm's
#     DLRM_Net step (26 nn.EmbeddingBag tables with sparse gradients, torch.optim.SGD), data
#     generated before the clock starts, --warmup-steps untimed steps first;
#   - Strata: `strata train --data synthetic:criteo --synthetic-key-spaces kaggle ...`; its
#     figure is the `samples_per_second` of its --json summary (the whole run: the data is
#     generated as it goes, and the final checkpoint is inside the time). The table also
#     shows it without the final checkpoint, from the --metrics file.
#
# Usage:
#   tools/compare-pytorch.sh [options]
#     --batch-sizes "128 2048"  batch sizes to measure
#     --steps N                 steps per run on both sides (default: max(200, 256000 / batch),
#                               so 2000 at batch 128 and 200 at batch 2048)
#     --warmup-steps N          untimed PyTorch steps before the timed ones (default 20)
#     --repeats N               runs per side and batch size, alternating pytorch, strata,
#                               pytorch, strata...; the table shows medians (default 1)
#     --threads N               threads on both sides (default 2)
#     --lookahead N             strata's --lookahead (default 4)
#     --hot-mb N                strata's --hot-mb, per table (default: room for every row the
#                               run can touch, x1.5, as a power of two: 64 for the defaults;
#                               like PyTorch, which holds every row in memory. A far larger
#                               budget, such as 4096, made strata about half as fast on these
#                               short runs when measured)
#     --warm-mb N               strata's --warm-mb (default 0)
#     --venv DIR                the PyTorch virtual environment, made if missing
#                               (default ${XDG_CACHE_HOME:-$HOME/.cache}/strata/torch-venv)
#     --torch SPEC              what pip installs (default torch==2.13.0+cpu: the CPU wheel;
#                               pip finds it through PIP_FIND_LINKS, e.g. /opt/wheels)
#     --profile                 also print where PyTorch's step time goes (first run of each
#                               batch size)
#     --only pytorch|strata     run one side only (no ratio)
#     --wait-idle SECONDS       before each run, wait up to this long for a second in which
#                               other processes use under 10% of the CPUs (default 0: no wait).
#                               Every run is checked afterwards either way: one during which
#                               others used over 10% of the CPUs gets a warning
#     --skip-build              use the strata binary already built in release
#     --strata PATH             use this strata binary (no build)
#     --keep                    keep the scratch directory (logs, metrics, stores)
#
# Examples:
#   tools/compare-pytorch.sh
#   tools/compare-pytorch.sh --repeats 3 --profile
#   tools/compare-pytorch.sh --batch-sizes 2048 --steps 400
#
# The virtual environment lives outside the repository; the first run makes it (about 1 GB,
# half a minute from a local wheel). Each PyTorch run builds its 33.8 million embedding rows
# (2.2 GB) and generates its data first, which takes ten to twenty seconds outside the timing.
# Every step that fails stops the script with its log.
set -euo pipefail
# All of it in one group, so that bash reads the whole script before running it: editing the
# file while a benchmark runs cannot change what the run does.
{

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
batch_sizes="128 2048"
steps=""
warmup=20
repeats=1
threads=2
lookahead=4
hot_mb=""
warm_mb=0
venv="${XDG_CACHE_HOME:-$HOME/.cache}/strata/torch-venv"
torch_spec="torch==2.13.0+cpu"
profile=0
only=""
build=1
keep=0
wait_idle=0
strata=""

script=compare-pytorch
# shellcheck source=tools/options.sh
source "$repo/tools/options.sh"

while [ $# -gt 0 ]; do
    case "$1" in
        --batch-sizes) batch_sizes="$2"; shift 2 ;;
        --steps) number "$1" "$2"; steps="$2"; shift 2 ;;
        --warmup-steps) number "$1" "$2"; warmup="$2"; shift 2 ;;
        --repeats) number "$1" "$2"; repeats="$2"; shift 2 ;;
        --threads) number "$1" "$2"; threads="$2"; shift 2 ;;
        --lookahead) number "$1" "$2"; lookahead="$2"; shift 2 ;;
        --hot-mb) number "$1" "$2"; hot_mb="$2"; shift 2 ;;
        --warm-mb) number "$1" "$2"; warm_mb="$2"; shift 2 ;;
        --venv) venv="$2"; shift 2 ;;
        --torch) torch_spec="$2"; shift 2 ;;
        --profile) profile=1; shift ;;
        --only) only="$2"; shift 2
                [ "$only" = pytorch ] || [ "$only" = strata ] || fail "--only: pytorch or strata, not '$only'" ;;
        --skip-build) build=0; shift ;;
        --strata) strata="$2"; build=0; shift 2 ;;
        --keep) keep=1; shift ;;
        --wait-idle) number "$1" "$2"; wait_idle="$2"; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "compare-pytorch: unknown option '$1'" >&2; usage ;;
    esac
done
for b in $batch_sizes; do number "--batch-sizes" "$b"; [ "$b" -gt 0 ] || fail "a batch size must be positive"; done
[ -n "$batch_sizes" ] || fail "--batch-sizes is empty"
[ "$repeats" -ge 1 ] || fail "--repeats must be at least 1"
[ -z "$steps" ] || [ "$steps" -ge 1 ] || fail "--steps must be at least 1"
case "$venv" in "$repo"|"$repo"/*) fail "the virtual environment must live outside the repository ($venv)" ;; esac

run_pytorch() { [ "$only" != strata ]; }
run_strata() { [ "$only" != pytorch ]; }

scratch=$(mktemp -d "${TMPDIR:-/tmp}/strata-compare.XXXXXX")
if [ "$keep" = 1 ]; then
    echo "scratch directory (kept): $scratch"
else
    trap 'rm -rf "$scratch"' EXIT
fi

# Shows the end of a failed step's output and stops.
step_failed() {   # what, exit code (- if none), stdout file, stderr file
    if [ "$2" = - ]; then echo "compare-pytorch: FAILED: $1" >&2; else echo "compare-pytorch: FAILED: $1 (exit code $2)" >&2; fi
    for f in "$4" "$3"; do
        [ -s "$f" ] || continue
        echo "---- last lines of $(basename "$f") ----" >&2
        tail -n 25 "$f" >&2
    done
    echo "----" >&2
    exit 1
}

# JSON fields of the last line of a file, tab-separated ('' where absent); fails if it is not JSON.
json_fields() {   # file field...
    python3 - "$@" <<'EOF'
import json, sys
path, fields = sys.argv[1], sys.argv[2:]
lines = [l for l in open(path, encoding="utf-8", errors="replace").read().splitlines() if l.strip()]
try:
    obj = json.loads(lines[-1])
    assert isinstance(obj, dict)
except Exception:
    sys.exit(1)
print("\t".join("" if obj.get(f) is None else str(obj[f]) for f in fields))
EOF
}

# ---- PyTorch in its virtual environment --------------------------------------------------
py="$venv/bin/python"
if run_pytorch; then
    if [ ! -x "$py" ]; then
        echo "making the virtual environment $venv"
        mkdir -p "$(dirname "$venv")"
        python3 -m venv "$venv" || fail "python3 -m venv $venv failed (on Debian: apt-get install python3-venv)"
    fi
    want_version="${torch_spec#torch==}"
    have_version=$("$py" -c 'import numpy, torch; print(torch.__version__)' 2>/dev/null || true)
    if [ -z "$have_version" ] || { [ "$want_version" != "$torch_spec" ] && [ "$have_version" != "$want_version" ]; }; then
        echo "installing $torch_spec and numpy into $venv (PIP_FIND_LINKS=${PIP_FIND_LINKS:-unset})"
        started=$(date +%s)
        "$py" -m pip install --quiet "$torch_spec" numpy \
            || fail "pip could not install '$torch_spec' and numpy into $venv. The default is the CPU wheel \
torch==2.13.0+cpu, which pip finds through PIP_FIND_LINKS (a directory holding the wheel) or a CPU index \
(pip install --index-url https://download.pytorch.org/whl/cpu); choose another with --torch SPEC. Plain 'torch' \
from PyPI pulls gigabytes of CUDA packages."
        echo "installed in $(( $(date +%s) - started )) s"
    fi
    torch_info=$("$py" -c 'import torch; print(torch.__version__, "cuda" if torch.version.cuda else "cpu-only")') \
        || fail "torch does not import in $venv"
    echo "PyTorch: $torch_info ($venv)"
    case "$torch_info" in *cpu-only) ;; *) echo "compare-pytorch: warning: this torch is a CUDA build; the CPU wheel is the intended baseline" >&2 ;; esac
fi

# ---- Strata, built in release ------------------------------------------------------------
if run_strata; then
    if [ "$build" = 1 ]; then
        echo "building strata (swift build -c release --product strata)"
        ( cd "$repo" && swift build -c release --product strata ) >"$scratch/build.log" 2>&1 \
            || step_failed "swift build -c release --product strata" $? /dev/null "$scratch/build.log"
    fi
    [ -n "$strata" ] || strata="$(cd "$repo" && swift build -c release --show-bin-path)/strata"
    [ -x "$strata" ] || fail "no strata binary at $strata (run without --skip-build or --strata)"
    echo "Strata: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')$( [ -n "$(git -C "$repo" status --porcelain 2>/dev/null)" ] && echo ' (with uncommitted changes)')"
fi
machine_line
echo

default_steps() { local n=$(( (256000 + $1 - 1) / $1 )); [ "$n" -ge 200 ] || n=200; echo "$n"; }

# Other work on the machine makes the figures low and noisy, so each run is checked: the
# CPU time the whole machine used during the run (from /proc/stat, steal included) minus the
# run's own, as a share of all CPUs.
hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
cpus=$(nproc)
snapshot() {   # sets snap: machine busy seconds, children's CPU seconds, wall seconds
    local busy children
    busy=$(awk -v hz="$hz" '/^cpu / {printf "%.2f", ($2+$3+$4+$7+$8+$9) / hz}' /proc/stat)
    times >"$scratch/times"   # in this shell: a subshell would not see the runs as its children
    children=$(awk 'NR == 2 {
        n = split($0, f, " "); s = 0
        for (i = 1; i <= n; i++) { split(f[i], ms, "m"); sub("s", "", ms[2]); s += ms[1] * 60 + ms[2] }
        printf "%.2f", s }' "$scratch/times")
    snap="$busy $children $(date +%s.%N)"
}
busy_runs=0
wait_for_idle() {   # up to $wait_idle seconds, for a second in which the CPUs are under 10% busy
    [ "$wait_idle" -gt 0 ] || return 0
    local deadline=$(( $(date +%s) + wait_idle )) a b busy
    while :; do
        a=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
        sleep 1
        b=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
        busy=$(echo "$a $b" | awk '{ t = $4 - $2; u = 0; if (t > 0) u = 100 * ($3 - $1) / t; printf "%.0f", u }')
        [ "$busy" -ge 10 ] || return 0
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "  warning: the CPUs are still ${busy}% busy after waiting ${wait_idle} s; running anyway"
            return 0
        fi
    done
}
check_other_load() {   # snapshot before the run; warns when others used more than 10% of the CPUs
    local other
    snapshot
    other=$(echo "$1 $snap" | awk -v cpus="$cpus" '{
        wall = $6 - $3; others = ($4 - $1) - ($5 - $2)
        share = 0; if (wall > 0) share = 100 * others / (wall * cpus); printf "%.0f", share }')
    if [ "$other" -gt 10 ]; then
        echo "  warning: other processes used ${other}% of the CPUs during this run; its figure is not reliable"
        busy_runs=$((busy_runs + 1))
    fi
}

results="$scratch/results.tsv"   # side, batch, repeat, samples/s, samples/s without final checkpoint
: >"$results"

for b in $batch_sizes; do
    n=${steps:-$(default_steps "$b")}
    hot=${hot_mb:-$(all_rows_hot_mb "$b" "$n")}
    for r in $(seq 1 "$repeats"); do
        if run_pytorch; then
            out="$scratch/pytorch-$b-$r.out" err="$scratch/pytorch-$b-$r.err"
            args=(--batch-size "$b" --steps "$n" --warmup-steps "$warmup" --threads "$threads")
            [ "$profile" = 1 ] && [ "$r" = 1 ] && args+=(--profile)
            echo "[batch $b, run $r/$repeats] pytorch: $n steps (+$warmup warm-up)"
            wait_for_idle
            snapshot; before=$snap
            status=0
            "$py" "$repo/tools/pytorch_dlrm.py" "${args[@]}" >"$out" 2>"$err" || status=$?
            [ "$status" = 0 ] || step_failed "pytorch_dlrm.py ${args[*]}" "$status" "$out" "$err"
            fields=$(json_fields "$out" framework samples_per_second seconds steps) \
                || step_failed "pytorch_dlrm.py ${args[*]}: its last line is not JSON" - "$out" "$err"
            IFS=$'\t' read -r fw sps secs got_steps <<<"$fields"
            [ "$fw" = pytorch ] && [ -n "$sps" ] && [ "$got_steps" = "$n" ] \
                || step_failed "pytorch_dlrm.py: unexpected summary: $(tail -n1 "$out")" - "$out" "$err"
            printf '  %.0f samples/s (%.1f s)\n' "$sps" "$secs"
            check_other_load "$before"
            printf 'pytorch\t%s\t%s\t%s\t%s\n' "$b" "$r" "$sps" "$sps" >>"$results"
            if [ "$profile" = 1 ] && [ "$r" = 1 ]; then
                sed -n '/^pytorch profile/,$p' "$err" | grep -v '^  {' | sed 's/^/  /'
            fi
        fi
        if run_strata; then
            out="$scratch/strata-$b-$r.out" err="$scratch/strata-$b-$r.err"
            metrics="$scratch/strata-$b-$r.metrics.jsonl" store="$scratch/store-$b"
            args=(train --model dlrm --data synthetic:criteo --synthetic-key-spaces kaggle --batch-size "$b"
                  --steps "$n" --learning-rate 0.1 --optimizer sgd --eval-samples 0 --threads "$threads"
                  --lookahead "$lookahead" --hot-mb "$hot" --warm-mb "$warm_mb" --store "$store"
                  --metrics "$metrics" --json)
            echo "[batch $b, run $r/$repeats] strata: $n steps (--hot-mb $hot --warm-mb $warm_mb --lookahead $lookahead)"
            wait_for_idle
            snapshot; before=$snap
            status=0
            "$strata" "${args[@]}" >"$out" 2>"$err" || status=$?
            rm -rf "$store"
            [ "$status" = 0 ] || step_failed "strata ${args[*]}" "$status" "$out" "$err"
            fields=$(json_fields "$out" samples_per_second seconds steps samples) \
                || step_failed "strata train: its last line is not the --json summary" - "$out" "$err"
            IFS=$'\t' read -r sps secs got_steps samples <<<"$fields"
            [ -n "$sps" ] && [ "$got_steps" = "$n" ] \
                || step_failed "strata train: unexpected summary (want $n steps): $(tail -n1 "$out")" - "$out" "$err"
            # The final checkpoint's duration, from the metrics file's last checkpoint event.
            ckpt=$(python3 - "$metrics" <<'EOF' || true
import json, sys
seconds = ""
try:
    for line in open(sys.argv[1]):
        e = json.loads(line)
        if e.get("event") == "checkpoint":
            seconds = e.get("seconds", "")
except OSError:
    pass
print(seconds)
EOF
)
            train_sps=$(python3 -c 'import sys; s, t, c = sys.argv[1:]; print(float(s) / (float(t) - float(c)) if c and float(t) > float(c) else "")' \
                        "${samples:-0}" "$secs" "$ckpt")
            if [ -n "$train_sps" ]; then
                printf '  %.0f samples/s (%.1f s, of which the final checkpoint %.1f s: %.0f samples/s without it)\n' \
                    "$sps" "$secs" "$ckpt" "$train_sps"
            else
                printf '  %.0f samples/s (%.1f s; no checkpoint time in the metrics file)\n' "$sps" "$secs"
            fi
            check_other_load "$before"
            printf 'strata\t%s\t%s\t%s\t%s\n' "$b" "$r" "$sps" "$train_sps" >>"$results"
        fi
    done
done

echo
python3 - "$results" "$batch_sizes" "$repeats" <<'EOF'
import statistics, sys
path, batches, repeats = sys.argv[1], [int(b) for b in sys.argv[2].split()], int(sys.argv[3])
runs = {}
for line in open(path):
    side, b, _r, sps, train = line.rstrip("\n").split("\t")
    runs.setdefault((side, int(b)), []).append((float(sps), float(train) if train else None))

def median(side, b, column):
    values = [v[column] for v in runs.get((side, b), []) if v[column] is not None]
    return statistics.median(values) if values else None

def cell(x, width, fmt="{:,.0f}"):
    return (fmt.format(x) if x is not None else "-").rjust(width)

what = "median of %d runs" % repeats if repeats > 1 else "one run"
print(f"samples per second ({what}; ratio = Strata / PyTorch; acceptance >= 1.00, goal 1.50)")
print(f"{'batch':>6} {'PyTorch':>12} {'Strata':>12} {'ratio':>7}   {'Strata w/o final ckpt':>22} {'ratio':>7}")
for b in batches:
    p, s, t = median("pytorch", b, 0), median("strata", b, 0), median("strata", b, 1)
    r1 = s / p if p and s else None
    r2 = t / p if p and t else None
    print(f"{b:>6} {cell(p, 12)} {cell(s, 12)} {cell(r1, 7, '{:.2f}')}   {cell(t, 22)} {cell(r2, 7, '{:.2f}')}")
EOF
if [ "$busy_runs" -gt 0 ]; then
    echo "warning: $busy_runs run(s) shared the machine with other work (see above): rerun when it is idle" >&2
fi
exit 0
}
