#!/bin/sh
# The nearest-neighbour probe behind the README's hnswlib figures: 1,000,000 i.i.d. normal
# vectors of dimension 64 and 1,000 separate queries, hnswlib's HNSW (and FAISS's IVF-Flat)
# against exact search one query at a time (FAISS IndexFlatIP, and OpenBLAS sgemv with a
# top-10 heap), all on one thread, each ratio from baselines measured in the same process. It
# is not part of Strata; it measured what moving Strata's index from FAISS's HNSW to hnswlib
# would give, before the move. Needs libhnswlib-dev, libfaiss-dev, libopenblas-dev and g++.
#
#   tools/ann-probe/run.sh        about 1.5 hours of one core; writes 2 GB under $ANN_PROBE_DIR
#
# Data, indexes and logs go to $ANN_PROBE_DIR (default ~/.cache/strata/ann-probe), never into
# the repository. The vectors are drawn deterministically (mt19937_64, seeds 12345 and 67890).
set -e
here=$(cd "$(dirname "$0")" && pwd)
work=${ANN_PROBE_DIR:-$HOME/.cache/strata/ann-probe}
mkdir -p "$work/data" "$work/idx" "$work/logs"
cd "$work"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
make -s -j1 -C "$work" -f "$here/Makefile" VPATH="$here"   # ann_sse, ann_avx2 (-mavx2 -mfma), ann_avx512 (-mavx512f)
for c in "d1m_ip 1000000 ip" "d200k_cos 200000 cos" "d50k_ip 50000 ip"; do
    set -- $c
    ./ann_avx512 "data/$1" "$2" "$3" gen
done
# Build and sweep ef-search (arguments: m, ef-construction, ef-search list, index file, brute-force queries).
./ann_avx512 data/d1m_ip 1000000 ip hnsw 32 100 64,128,192,256,320,384,512,768,1024 idx/h1m_ip_M32_efc100.bin 200 > logs/1m_ip_avx512_M32_efc100.log
./ann_avx512 data/d1m_ip 1000000 ip hnsw 48 200 128,256,384,512,640,768,1024 idx/h1m_ip_M48_efc200.bin 200 > logs/1m_ip_avx512_M48_efc200.log
# The same graphs searched by the other SIMD builds (the file does not depend on them).
for b in sse avx2; do
    ./ann_$b data/d1m_ip 1000000 ip hnsw 32 100 512,640,768,1024 idx/h1m_ip_M32_efc100.bin 200 > logs/1m_ip_${b}_M32_efc100_load.log
    ./ann_$b data/d1m_ip 1000000 ip hnsw 48 200 288,320,352,384 idx/h1m_ip_M48_efc200.bin 200 > logs/1m_ip_${b}_M48_efc200_load.log
done
# Cosine at 200,000, and FAISS IVF-Flat (1,024 lists) at 1M.
./ann_avx512 data/d200k_cos 200000 cos hnsw 32 100 64,128,256,384,512,1024 "" 100 > logs/200k_cos_avx512_M32_efc100.log
./ann_avx512 data/d1m_ip 1000000 ip ivf 1024 16,32,64,96,128,192,256 102400 200 > logs/1m_ip_ivf1024.log
grep -h "^BUILD\|^RESULT\|\[bf\]" logs/*.log
