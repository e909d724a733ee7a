#!/usr/bin/env bash
# The Python package's overheads, on this machine, in one run: what calling Strata from Python
# costs against calling it from Swift, and what a PyTorch model with Strata tables trains at
# against the same model with PyTorch's own sparse embedding tables. Two benchmarks, each
# taking every figure it compares in the same process and run:
#
#   python/benchmarks/bench_lookup.py   a 1024-key lookup at dimension 64 (a table of 100,000
#       rows, all written and hot). Per mode (into one buffer; a new array per call), µs per
#       call of the library's own lookup timed inside it (strata_time_lookups: "swift") and of
#       table.lookup from Python ("python"), rounds alternating the two, and the median, min
#       and max of the per-round ratio python/swift. The "Done when" bar is a median ratio of
#       at most 1.3. Below the table: what the Python side's parts cost alone (a ctypes call,
#       the library's entry, np.empty, the wrapper), which says where the difference goes.
#   python/benchmarks/bench_dlrm.py     training samples/s of python/tests/strata_dlrm.py's
#       DLRM (8 tables of 500,000 rows, dimension 16, batch 2048, one Zipf-1.05 key per bag,
#       SGD 0.01) three ways on the same pre-built batches: nn.EmbeddingBag(sparse=True)
#       ("torch"); strata.torch.EmbeddingBag with every row in hot memory ("strata memory");
#       and with each table 10x its hot + warm budget, ~90% of its rows only in LMDB
#       ("strata 10x"). The timed steps go in 5 segments in which the three take turns, so
#       that other load falls on all of them alike. "/ torch" is the ratio over all timed
#       steps, next to the median, min and max of the segments' own ratios. Below it, the
#       Strata tables' rows per tier after they were written, and where the timed steps found
#       their rows (the cold column is reads from LMDB).
#
# Nothing is asserted: a benchmark, not a test; CI does not run it. Each figure comes with
# the share of the CPUs other processes used while it was taken; over 10% makes it
# unreliable (rerun on an idle machine, or with --wait-idle). The printed tables are also
# written as JSON: lookup.json and dlrm.json under --out.
#
# Usage:
#   tools/bench-python.sh [options]
#     --out DIR          where the JSON goes (default /tmp/strata-bench-python)
#     --only lookup|dlrm run one benchmark only
#     --rounds N         bench_lookup's counted rounds (default 9)
#     --repeats N        bench_lookup's lookups per measurement (default 2000)
#     --steps N          bench_dlrm's timed steps (default 150, after 20 untimed)
#     --rows N           bench_dlrm's rows per table (default 500000)
#     --bag N            bench_dlrm's keys per bag (default 1)
#     --threads N        bench_dlrm's torch.set_num_threads (default 2)
#     --wait-idle SECONDS  before each measurement, wait up to this long for a second in which
#                        the CPUs are under 10% busy (default 0: no wait)
#     --skip-install     use the strata package already installed in the virtual environment
#     --source           run the package from the source tree (python/, with the library at
#                        $STRATA_LIBRARY or .build/release/libStrataC.so), no install
#
# Examples:
#   tools/bench-python.sh
#   tools/bench-python.sh --only dlrm --bag 3
#   tools/bench-python.sh --source --rounds 3 --repeats 500 --steps 30    # a quick check
#
# The Python is the setup's virtual environment's, ${STRATA_PYTHON_VENV:-$HOME/.cache/strata/python}
# (tools/setup.sh makes it, with numpy and torch). Unless --skip-install or --source,
# `pip install ./python` first puts the package there, which builds libStrataC.so with swift
# (set STRATA_SKIP_SWIFT_BUILD=1 and STRATA_LIBRARY to package one built already). The stores
# live in scratch directories under ${TMPDIR:-/tmp}, removed at the end. Both benchmarks
# together take about two minutes on 2 CPUs; bench_dlrm needs about 1.5 GB of memory.
set -euo pipefail
{

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=/tmp/strata-bench-python
only=""
install=1
source_tree=0
wait_idle=0
lookup_args=()
dlrm_args=()

script=bench-python
# shellcheck source=tools/options.sh
source "$repo/tools/options.sh"

while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ -n "${2-}" ] || fail "--out wants a directory"; out="$2"; shift 2 ;;
        --only) [[ "${2-}" =~ ^(lookup|dlrm)$ ]] || fail "--only wants lookup or dlrm, not '${2-}'"; only="$2"; shift 2 ;;
        --rounds|--repeats) number "$1" "${2-}"; lookup_args+=("$1" "$2"); shift 2 ;;
        --steps|--rows|--bag|--threads) number "$1" "${2-}"; dlrm_args+=("$1" "$2"); shift 2 ;;
        --wait-idle) number "$1" "${2-}"; wait_idle="$2"; shift 2 ;;
        --skip-install) install=0; shift ;;
        --source) source_tree=1; install=0; shift ;;
        -h|--help) usage 0 ;;
        *) echo "$script: unknown option '$1'" >&2; usage ;;
    esac
done

venv="${STRATA_PYTHON_VENV:-$HOME/.cache/strata/python}"
python="$venv/bin/python"
[ -x "$python" ] || fail "no Python at $python: run tools/setup.sh (it makes the virtual environment)"
"$python" -c "import numpy, torch" 2>/dev/null || fail "$python lacks numpy or torch: run tools/setup.sh"

if [ "$install" = 1 ]; then
    (cd "$repo" && "$venv/bin/pip" install -q --disable-pip-version-check ./python)
fi
if [ "$source_tree" = 1 ]; then
    export PYTHONPATH="$repo/python${PYTHONPATH:+:$PYTHONPATH}"
fi
"$python" -c "import strata" 2>/dev/null || fail "$python cannot import strata: drop --skip-install, or use --source"
mkdir -p "$out"

echo "python: $python; strata from $("$python" -c 'import strata, os; print(os.path.dirname(strata.__file__), "with", strata.library_path())')"
if [ "$only" != dlrm ]; then
    echo
    echo "== lookup: python/benchmarks/bench_lookup.py ${lookup_args[*]-}"
    "$python" "$repo/python/benchmarks/bench_lookup.py" --wait-idle "$wait_idle" --json "$out/lookup.json" ${lookup_args[@]+"${lookup_args[@]}"}
fi
if [ "$only" != lookup ]; then
    echo
    echo "== DLRM training: python/benchmarks/bench_dlrm.py ${dlrm_args[*]-}"
    "$python" "$repo/python/benchmarks/bench_dlrm.py" --wait-idle "$wait_idle" --json "$out/dlrm.json" ${dlrm_args[@]+"${dlrm_args[@]}"}
fi
exit
}
