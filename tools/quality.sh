#!/usr/bin/env bash
# The model zoo's quality runs on MovieLens-100K: each documented command, with seeds 1, 2
# and 3 (the seed draws the split, the initial weights and the data order), and the mean and
# spread (min–max) of each final test metric next to the published figure. These are the
# README's results table. The settings were chosen on the validation split (and, for the
# ratings protocol, which has none, on a 70:10:20 split), never on the test figures.
#
#   tools/quality.sh               every run (about 90 minutes on 2 cores; the session models take most)
#   tools/quality.sh mf-bpr mf-ratings     only these
#   tools/quality.sh --list        the runs and their commands
#   tools/quality.sh --seeds 1,2   other seeds
#   STRATA=path/to/strata tools/quality.sh ...   a strata already built
#
# The data comes from tools/movielens.sh (RecBole 1.2.1's copy, cached outside the repository).
# Results go to stdout as a table, and to $STRATA_QUALITY_OUT (default quality.jsonl in a
# temporary directory) as one JSON object per run.
set -euo pipefail
cd "$(dirname "$0")/.."

# name | published figure | the run's options after `strata train`
runs=(
    "mf-bpr|BPR-MF (RecBole, random 8:1:1 per user, full ranking): NDCG@10 0.277-0.292, Recall@10 0.237-0.252|--model mf --set biases=false --protocol topk --embedding-dim 64 --batch-size 2048 --epochs 150 --optimizer adam --learning-rate 0.001 --sparse-optimizer adam"
    "neumf|NeuMF: NDCG@10 within 10% of mf-bpr's|--model neumf --protocol topk --negatives 4 --loss bce --batch-size 2048 --epochs 20 --optimizer adam --learning-rate 0.001 --sparse-optimizer adam"
    "mf-ratings|Surprise SVD (5-fold CV): RMSE 0.934|--model mf --protocol ratings --embedding-dim 64 --batch-size 128 --epochs 20 --optimizer adam --learning-rate 0.002 --sparse-optimizer adam --weight-decay 0.0007"
    "wide-deep-ratings|Microsoft Recommenders Wide & Deep: RMSE 0.925|--model wide-deep --protocol ratings --batch-size 256 --epochs 20 --optimizer adam --learning-rate 0.001 --sparse-optimizer adam --weight-decay 0.1"
    "deep-click|RecBole logistic regression (click = rating >= 4, 8:1:1): AUC 0.7765|--model deep --protocol click --batch-size 2048 --epochs 20 --optimizer adam --learning-rate 0.001 --sparse-optimizer adam --weight-decay 0.001"
    "wide-deep-click|RecBole logistic regression: AUC 0.7765|--model wide-deep --protocol click --batch-size 2048 --epochs 20 --optimizer adam --learning-rate 0.001 --sparse-optimizer adam --weight-decay 0.001"
    "deepfm-click|RecBole logistic regression: AUC 0.7765|--model deepfm --protocol click --batch-size 2048 --epochs 20 --optimizer adam --learning-rate 0.001 --sparse-optimizer adam --weight-decay 0.001"
    "dcn-v2-click|RecBole logistic regression: AUC 0.7765|--model dcn-v2 --protocol click --batch-size 2048 --epochs 20 --optimizer adam --learning-rate 0.001 --sparse-optimizer adam --weight-decay 0.001"
    "gru4rec|GRU4Rec (RecBole, leave-one-out in time, full ranking): Hit@10 0.1103, NDCG@10 0.0513|--model gru4rec --protocol next-item --batch-size 256 --epochs 4 --optimizer adam --learning-rate 0.001"
    "sasrec|SASRec: NDCG@10 at least gru4rec's|--model sasrec --protocol next-item --batch-size 256 --epochs 3 --optimizer adam --learning-rate 0.001"
    "bert4rec|BERT4Rec: next to sasrec|--model bert4rec --protocol next-item --batch-size 256 --epochs 4 --optimizer adam --learning-rate 0.001"
    "deep-history-none|deep without the history: the baseline of deep-history-gru|--model deep --protocol next-item --set history=none --negatives 4 --loss bce --embedding-dim 32 --batch-size 1024 --epochs 5 --optimizer adam --learning-rate 0.001"
    "deep-history-gru|deep with a GRU over the history as a feature: above deep-history-none|--model deep --protocol next-item --set history=gru --set max_length=20 --negatives 4 --loss bce --embedding-dim 32 --batch-size 1024 --epochs 5 --optimizer adam --learning-rate 0.001"
    "two-tower|two-tower retrieval by the full softmax: next to gru4rec|--model two-tower --protocol next-item --batch-size 256 --epochs 20 --optimizer adam --learning-rate 0.001"
    "two-tower-sampled|the sampled softmax (256 drawn by popularity, in-batch, log-Q): near two-tower|--model two-tower --protocol next-item --loss softmax --negatives 256 --negative-sampling popularity --batch-size 256 --epochs 30 --optimizer adam --learning-rate 0.001"
    "two-tower-item-tower|an item tower over the item's id, genres and year: against two-tower-sampled|--model two-tower --set item_tower=[128] --protocol next-item --loss softmax --negatives 256 --negative-sampling popularity --batch-size 256 --epochs 20 --optimizer adam --learning-rate 0.001"
    "mmoe-click-rating|multi-task: above mmoe-click's AUC or mmoe-rating's RMSE|--model mmoe --protocol click --task click:bce --task rating:mse --batch-size 2048 --epochs 20 --optimizer adam --learning-rate 0.001 --sparse-optimizer adam --weight-decay 0.001"
    "mmoe-click|the same model on the click alone|--model mmoe --protocol click --task click:bce --batch-size 2048 --epochs 20 --optimizer adam --learning-rate 0.001 --sparse-optimizer adam --weight-decay 0.001"
    "mmoe-rating|the same model on the rating alone|--model mmoe --protocol click --task rating:mse --batch-size 2048 --epochs 20 --optimizer adam --learning-rate 0.001 --sparse-optimizer adam --weight-decay 0.001"
    "shared-bottom-click-rating|multi-task: above shared-bottom-click's AUC or shared-bottom-rating's RMSE|--model shared-bottom --protocol click --task click:bce --task rating:mse --batch-size 2048 --epochs 20 --optimizer adam --learning-rate 0.001 --sparse-optimizer adam --weight-decay 0.001"
    "shared-bottom-click|the same model on the click alone|--model shared-bottom --protocol click --task click:bce --batch-size 2048 --epochs 20 --optimizer adam --learning-rate 0.001 --sparse-optimizer adam --weight-decay 0.001"
    "shared-bottom-rating|the same model on the rating alone|--model shared-bottom --protocol click --task rating:mse --batch-size 2048 --epochs 20 --optimizer adam --learning-rate 0.001 --sparse-optimizer adam --weight-decay 0.001"
)

seeds="1,2,3"
selected=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) seeds="$2"; shift 2 ;;
        --list)
            for run in "${runs[@]}"; do
                IFS='|' read -r name published options <<<"$run"
                echo "$name: strata train --data movielens $options --seed S   ($published)"
            done
            exit 0 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) selected+=("$1"); shift ;;
    esac
done

data=$(tools/movielens.sh)
strata=${STRATA:-.build/release/strata}
[ -n "${STRATA:-}" ] || swift build -c release --product strata >&2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
out="${STRATA_QUALITY_OUT:-$scratch/quality.jsonl}"
: >"$out"

for run in "${runs[@]}"; do
    IFS='|' read -r name published options <<<"$run"
    if [ ${#selected[@]} -gt 0 ] && [[ ! " ${selected[*]} " == *" $name "* ]]; then continue; fi
    for seed in ${seeds//,/ }; do
        echo "$name seed $seed: strata train --data movielens $options --seed $seed" >&2
        start=$(date +%s.%N)
        # shellcheck disable=SC2086
        "$strata" train --data "movielens:$data" $options --seed "$seed" --store "$scratch/store" --overwrite \
            --lookahead 2 --json >"$scratch/run.json" 2>"$scratch/run.err" || { cat "$scratch/run.err" >&2; exit 1; }
        end=$(date +%s.%N)
        python3 - "$scratch/run.json" "$name" "$seed" "$start" "$end" "$options" >>"$out" <<'EOF'
import json, sys
summary = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
e = summary["evaluation"]
metrics = {k: v for k, v in e.items() if k not in ("step", "split", "samples")}
print(json.dumps({"run": sys.argv[2], "seed": int(sys.argv[3]), "seconds": float(sys.argv[5]) - float(sys.argv[4]),
                  "split": e["split"], "metrics": metrics, "options": sys.argv[6]}))
EOF
        tail -1 "$out" >&2
    done
done

python3 - "$out" "${runs[@]}" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
published = {r.split("|")[0]: r.split("|")[1] for r in sys.argv[2:]}
for name in dict.fromkeys(r["run"] for r in rows):
    mine = [r for r in rows if r["run"] == name]
    seconds = sum(r["seconds"] for r in mine) / len(mine)
    parts = []
    for metric in mine[0]["metrics"]:
        values = [r["metrics"][metric] for r in mine]
        parts.append(f"{metric} {sum(values) / len(values):.4f} ({min(values):.4f}-{max(values):.4f})")
    print(f"{name}: {', '.join(parts)}; {len(mine)} seeds, {seconds:.0f} s a run")
    print(f"    published: {published[name]}")
EOF
