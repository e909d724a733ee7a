#!/usr/bin/env bash
# Puts MovieLens-100K, as RecBole's atomic files ml-100k.inter, .user and .item, into
# ${STRATA_DATA:-~/.cache/strata/data}/ml-100k/ and prints that directory on stdout.
# The files come from the recbole==1.2.1 wheel on PyPI (recbole/dataset_example/ml-100k/),
# fetched with `pip download`; once they are there, reruns touch no network. The data lives
# outside the repository and is never committed. Progress and errors go to stderr.
set -euo pipefail

version=1.2.1
names=(ml-100k.inter ml-100k.user ml-100k.item)
root="${STRATA_DATA:-$HOME/.cache/strata/data}"
dest="$root/ml-100k"

complete=1
for n in "${names[@]}"; do
    [ -s "$dest/$n" ] || complete=0
done
if [ "$complete" -eq 1 ]; then
    echo "$dest"
    exit 0
fi

fail() { echo "movielens.sh: $*" >&2; exit 1; }

venv="${STRATA_PYTHON_VENV:-$HOME/.cache/strata/python}"
if [ -x "$venv/bin/pip" ]; then
    pip=("$venv/bin/pip")
else
    pip=(python3 -m pip)
fi

mkdir -p "$root" || fail "cannot create $root"
tmp="$(mktemp -d "$root/.ml-100k.tmp.XXXXXX")" || fail "cannot make a temporary directory in $root"
trap 'rm -rf "$tmp"' EXIT

echo "downloading recbole==$version from PyPI to extract ml-100k" >&2
if ! "${pip[@]}" download --no-deps --only-binary=:all: --disable-pip-version-check \
        -d "$tmp/wheel" "recbole==$version" >"$tmp/pip.log" 2>&1; then
    fail "pip download recbole==$version failed (no network?): $(grep -v '^\s*$' "$tmp/pip.log" | tail -n 1)"
fi
wheels=("$tmp"/wheel/recbole-"$version"-*.whl)
[ -f "${wheels[0]}" ] || fail "pip download recbole==$version produced no wheel in $tmp/wheel"

mkdir "$tmp/ml-100k"
python3 - "${wheels[0]}" "$tmp/ml-100k" "${names[@]}" <<'PY' || exit 1
import os, sys, zipfile
wheel, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    present = set(z.namelist())
    for name in names:
        member = "recbole/dataset_example/ml-100k/" + name
        if member not in present:
            sys.exit(f"movielens.sh: {member} missing from {os.path.basename(wheel)}")
        data = z.read(member)
        if not data:
            sys.exit(f"movielens.sh: {member} is empty in {os.path.basename(wheel)}")
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
PY

# A partial or stale directory is moved aside (and removed with $tmp) before the new one goes in.
if [ -e "$dest" ]; then
    mv "$dest" "$tmp/stale" || fail "cannot move aside the incomplete $dest"
fi
mv "$tmp/ml-100k" "$dest" || fail "cannot move the extracted files to $dest"
echo "MovieLens-100K ready in $dest" >&2
echo "$dest"
