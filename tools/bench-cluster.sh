#!/usr/bin/env bash
# Hybrid-parallel training throughput against the number of ranks, on this machine, in one
# run: `strata train --data synthetic:criteo --json`, first as one process without MPI, then
# under `mpirun -np N` for each N of --ranks, every rank with the same per-rank batch (so the
# global batch is N times it, as the field measures data-parallel scaling). For each run it
# prints samples/s over the whole run (every rank's samples), the ratio to the one process,
# and the bytes each rank sent to and received from the others a step (keys, rows and
# gradients of the sharded tables, and the dense gradients), averaged over the ranks, with
# the dense gradients' share of what it sent.
# A benchmark, not a test: CI does not run it.
#
# On one machine the ranks share its cores and memory bandwidth: more ranks than cores
# measure the exchange's cost, not a speed-up. The bytes a step are what a network would
# carry between machines; the README's worked estimate for a cluster starts from them.
#
# The model and data are Criteo Kaggle's DLRM (embedding dimension 16, bottom MLP
# 13-512-256-64-16, top MLP 367-512-256-1, SGD 0.1), synthetic data with Kaggle's 26 key
# spaces, as tools/out-of-core.sh runs it, with a hot budget that holds every row.
#
# Usage:
#   tools/bench-cluster.sh [options]
#     --ranks LIST       rank counts to run, comma-separated (default 1,2,4)
#     --steps N          steps of every run (default 200)
#     --batch-size N     samples per step and rank (default 1024)
#     --threads N        --threads of each rank (default: the CPUs / the ranks, at least 1)
#     --skip-build       use the strata binary already built in .build-release
#     --strata PATH      use this strata binary (no build)
#     --keep             keep the scratch directory (stores, logs)
#
# Examples:
#   tools/bench-cluster.sh
#   tools/bench-cluster.sh --ranks 1,2 --steps 50 --skip-build    # a quick check
#
# mpirun runs with --oversubscribe (more ranks than cores), --bind-to none (Open MPI binds
# each rank to one core when there are at most two: a rank of two threads would then run on
# one core, at half speed), and with --allow-run-as-root when run as root. The build goes to .build-release; the stores live in a scratch directory
# under ${TMPDIR:-/tmp}, removed at exit unless --keep.
set -euo pipefail
{

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ranks_list=1,2,4
steps=200
batch=1024
threads=""
build=1
keep=0
strata=""

script=bench-cluster
# shellcheck source=tools/options.sh
source "$repo/tools/options.sh"

while [ $# -gt 0 ]; do
    case "$1" in
        --ranks) [[ "${2-}" =~ ^[0-9]+(,[0-9]+)*$ ]] || fail "--ranks wants a list like 1,2,4, not '${2-}'"; ranks_list="$2"; shift 2 ;;
        --steps) number "$1" "${2-}"; steps="$2"; shift 2 ;;
        --batch-size) number "$1" "${2-}"; batch="$2"; shift 2 ;;
        --threads) number "$1" "${2-}"; threads="$2"; shift 2 ;;
        --skip-build) build=0; shift ;;
        --strata) [ -n "${2-}" ] || fail "--strata wants a path"; strata="$2"; build=0; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "$script: unknown option '$1'" >&2; usage ;;
    esac
done
[ "$steps" -ge 1 ] || fail "--steps must be at least 1"
[ "$batch" -ge 1 ] || fail "--batch-size must be at least 1"
command -v mpirun >/dev/null || fail "mpirun is missing: run tools/setup.sh (it installs Open MPI)"

if [ "$build" = 1 ]; then
    (cd "$repo" && swift build -c release --scratch-path .build-release --product strata >/dev/null)
fi
strata=${strata:-$repo/.build-release/release/strata}
[ -x "$strata" ] || fail "no strata binary at $strata (drop --skip-build)"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench-cluster.XXXXXX")
if [ "$keep" = 1 ]; then echo "scratch directory (kept): $scratch"; else trap 'rm -rf "$scratch"' EXIT; fi

root=()
[ "$(id -u)" -ne 0 ] || root=(--allow-run-as-root)
cpus=$(nproc)
hot_mb=$(all_rows_hot_mb "$batch" "$steps")
arguments=(train --model dlrm --data synthetic:criteo --synthetic-key-spaces kaggle --synthetic-zipf 1.05
           --embedding-dim 16 --bottom-mlp 512-256-64 --top-mlp 512-256 --learning-rate 0.1 --optimizer sgd
           --steps "$steps" --eval-samples 0 --json --hot-mb "$hot_mb" --lookahead 4)

# One run: its summary JSON on the last line of its output.
run() {   # name, ranks (0: no MPI), threads
    local name=$1 n=$2 out="$scratch/$1.log"
    local command=("$strata" "${arguments[@]}" --batch-size "$batch" --threads "$3" --store "$scratch/$name")
    if [ "$n" -gt 0 ]; then command=(mpirun "${root[@]}" --oversubscribe --bind-to none -np "$n" "${command[@]}"); fi
    if ! "${command[@]}" >"$out" 2>&1; then
        echo "$script: FAILED: $name" >&2
        tail -n 25 "$out" >&2
        exit 1
    fi
    tail -n 1 "$out"
}

machine_line
echo "DLRM, $steps steps of $batch samples a rank, hot budget $hot_mb MiB a table and shard"
printf '%-14s %8s %12s %10s %8s %16s %12s %20s\n' run threads "global batch" samples/s "x one" "sent/step/rank" "dense part" "received/step/rank"
base=""
for n in 0 ${ranks_list//,/ }; do
    t=${threads:-$(( cpus / (n > 0 ? n : 1) ))}
    [ "$t" -ge 1 ] || t=1
    name=$([ "$n" = 0 ] && echo "one process" || echo "$n ranks")
    json=$(run "run-$n" "$n" "$t")
    read -r rate sent dense received < <(python3 -c '
import json, sys
s = json.loads(sys.argv[1])
print(s["samples_per_second"], s.get("bytes_sent_per_step_per_rank", 0), s.get("dense_bytes_sent_per_step_per_rank", 0),
      s.get("bytes_received_per_step_per_rank", 0))
' "$json")
    [ -n "$base" ] || base=$rate
    python3 -c '
import sys
name, t, batch, rate, base, sent, dense, received = sys.argv[1:]
def size(b):
    b = float(b)
    return "-" if b == 0 else ("%.1f KB" % (b / 1e3) if b < 1e6 else "%.2f MB" % (b / 1e6))
print("%-14s %8s %12s %10.0f %8.2f %16s %12s %20s" % (name, t, batch, float(rate), float(rate) / float(base), size(sent),
                                                    size(dense), size(received)))
' "$name" "$t" "$(( batch * (n > 0 ? n : 1) ))" "$rate" "$base" "$sent" "$dense" "$received"
done
}
