#!/usr/bin/env bash
# Installs what Strata needs beyond the Swift toolchain: Debian's LMDB, LZ4 and OpenBLAS
# development packages, found through pkg-config, hnswlib (libhnswlib-dev: header-only C++,
# for StrataNeighbors' nearest-neighbour index) and Open MPI (libopenmpi-dev, pkg-config
# ompi-c, and openmpi-bin's mpirun, for training over several processes); a Python virtual environment
# outside the repository (~/.cache/strata/python, or $STRATA_PYTHON_VENV) with numpy and
# safetensors, which the tests use to load what `strata export` writes, matplotlib, which
# draws the pictures of `strata bench --report`, and PyTorch (the CPU build) with pytest, for
# the Python package's tests and benchmarks; and MovieLens-100K (tools/movielens.sh), which
# the model tests and tools/quality.sh train on, cached outside the repository. Safe to rerun.
#
#   tools/setup.sh            all of the above
#   tools/setup.sh --python   then also the Python package (python/, `pip install ./python`: it
#                             builds libStrataC.so in release) into that environment
set -euo pipefail

debian=(liblmdb-dev liblz4-dev libopenblas-dev libhnswlib-dev libopenmpi-dev openmpi-bin libgcc-12-dev libstdc++-12-dev pkg-config python3 python3-venv)
missing=()
for p in "${debian[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

venv="${STRATA_PYTHON_VENV:-$HOME/.cache/strata/python}"
if ! "$venv/bin/python" -c "import numpy, safetensors, matplotlib, torch, pytest" 2>/dev/null; then
    echo "setting up $venv (numpy, safetensors, matplotlib, torch, pytest)" >&2
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check numpy safetensors matplotlib torch==2.13.0+cpu pytest
fi

"$(dirname "$0")/movielens.sh" >/dev/null

if [ "${1:-}" = "--python" ]; then
    "$venv/bin/pip" install -q --disable-pip-version-check "$(dirname "$0")/../python"
    echo "strata installed in $venv: $venv/bin/python -c 'import strata, strata.torch'" >&2
fi
