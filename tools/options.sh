# What the benchmark scripts in tools/ share: option helpers, the machine line, and the hot
# budget that holds every row a DLRM run can touch. Source it after setting `script` (the
# name errors start with); `usage` prints the calling script's header comment.
fail() { echo "$script: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }
number() { [[ "$2" =~ ^[0-9]+$ ]] || fail "$1 wants a whole number, not '$2'"; }
decimal() { [[ "$2" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] || fail "$1 wants a number of MiB, not '$2'"; }

# The machine the figures come from.
machine_line() {
    echo "machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)), $(free -g | awk '/^Mem:/ {print $2}') GiB"
}

# MiB of hot tier per table with room for every row a run of `batch` x `steps` samples can
# touch in the largest Criteo Kaggle table (10,131,227 ids), x1.5, as a power of two: an
# SGD row of dimension 16 is a 96-byte record (16 floats and a 32-byte header).
all_rows_hot_mb() {   # batch, steps
    local rows=$(( $1 * $2 )) mb=16
    [ "$rows" -le 10131227 ] || rows=10131227
    while [ $(( mb << 20 )) -lt $(( rows * 96 * 3 / 2 )) ]; do mb=$(( mb * 2 )); done
    echo "$mb"
}
