#!/usr/bin/env bash
# Installs what Strata needs beyond the Swift toolchain: Debian's LMDB, LZ4 and OpenBLAS
# development packages, found through pkg-config. Safe to rerun.
set -euo pipefail

debian=(liblmdb-dev liblz4-dev libopenblas-dev pkg-config)
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
