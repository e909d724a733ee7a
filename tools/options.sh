# Option helpers shared by the benchmark scripts in tools/. Source it after setting `script`
# (the name errors start with); `usage` prints the calling script's header comment.
fail() { echo "$script: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }
number() { [[ "$2" =~ ^[0-9]+$ ]] || fail "$1 wants a whole number, not '$2'"; }
decimal() { [[ "$2" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] || fail "$1 wants a number of MiB, not '$2'"; }
