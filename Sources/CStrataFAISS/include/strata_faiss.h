// A C surface over FAISS (Debian's libfaiss-dev, a static C++ library): an HNSW graph over
// flat vectors, scored by inner product, whose results are 64-bit keys. Swift cannot call
// C++ that throws, so every entry point here catches what FAISS and the standard library
// throw and returns a code instead; no exception ever leaves this file.
//
// Contracts:
// - Every function but `strata_faiss_free` and `strata_faiss_describe` returns
//   STRATA_FAISS_OK or an error code, and on error fills `error->message` (when `error` is not
//   NULL) with what failed, for that call only: there is no global "last error".
// - Vectors are row-major float32, `dimension` floats a row. The index scores by inner
//   product as given: cosine similarity is the caller's to get by normalising rows and
//   queries to unit length first (Strata does it in Swift, StrataNeighbors).
// - `threads` > 0 sets the OpenMP threads of the calling thread for that call
//   (`omp_set_num_threads`); 0 is OpenMP's default (OMP_NUM_THREADS, else a thread per core).
//   Either way a call uses no more threads than it has rows or queries. A build with one
//   thread is deterministic; with more, the graph depends on thread timing.
// - An index may be searched from one thread at a time, and not while it is being added to.
#ifndef STRATA_FAISS_H
#define STRATA_FAISS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    STRATA_FAISS_OK = 0,
    /// An argument out of range (a dimension of 0, too many rows for the graph's 32-bit ids).
    STRATA_FAISS_INVALID_ARGUMENT = 1,
    /// FAISS threw (`faiss::FaissException`): its message says what.
    STRATA_FAISS_LIBRARY = 2,
    /// Memory ran out (`std::bad_alloc`).
    STRATA_FAISS_OUT_OF_MEMORY = 3,
    /// A file could not be opened, written, synced or closed; `error->code` is its errno.
    STRATA_FAISS_FILE = 4,
    /// A file that FAISS read but that is not an index this file writes (an HNSW graph of
    /// flat vectors by inner product, under an id map).
    STRATA_FAISS_NOT_OURS = 5,
    /// Any other exception.
    STRATA_FAISS_OTHER = 6,
};

typedef struct strata_faiss_error {
    /// errno for STRATA_FAISS_FILE, else 0.
    int32_t code;
    char message[512];
} strata_faiss_error;

/// An `IndexIDMap` over an `IndexHNSWFlat` with METRIC_INNER_PRODUCT.
typedef struct strata_faiss_index strata_faiss_index;

/// What an index is; read with `strata_faiss_describe`.
typedef struct strata_faiss_shape {
    int32_t dimension;
    int64_t rows;
    /// Links per node above level 0 (level 0 has twice as many).
    int32_t m;
    int32_t ef_construction;
    int32_t ef_search;
    /// An upper bound on the bytes `strata_faiss_write` writes.
    int64_t file_bytes;
} strata_faiss_shape;

/// A new, empty index of vectors of `dimension` floats with `m` links per node
/// (`IndexHNSWFlat(dimension, m, METRIC_INNER_PRODUCT)`), building with `ef_construction`
/// candidates and searching with `ef_search`.
int strata_faiss_create(int32_t dimension, int32_t m, int32_t ef_construction, int32_t ef_search,
                        strata_faiss_index **out, strata_faiss_error *error);

/// Adds `count` vectors (`count × dimension` floats) with their keys. Keys are stored as
/// FAISS ids (int64, the same bits).
int strata_faiss_add(strata_faiss_index *index, int64_t count, const float *vectors, const uint64_t *keys,
                     int32_t threads, strata_faiss_error *error);

/// Sets the candidates kept while searching (`hnsw.efSearch`; a search uses at least `k`).
int strata_faiss_set_ef_search(strata_faiss_index *index, int32_t ef_search, strata_faiss_error *error);

/// The `k` best rows for each of `count` queries (`count × dimension` floats): for query q,
/// `found[q]` results in `keys[q*k ...]` and `scores[q*k ...]`, best first (inner products);
/// the rest of its `k` slots are left as they were. `found` is below `k` when the index has
/// fewer rows or the graph reaches fewer.
int strata_faiss_search(const strata_faiss_index *index, int64_t count, const float *queries, int64_t k,
                        int32_t threads, float *scores, uint64_t *keys, int64_t *found, strata_faiss_error *error);

/// Writes the index to `path` (created or truncated; `faiss::write_index`), then flushes and
/// `fsync`s it. Renaming it into place is the caller's.
int strata_faiss_write(const strata_faiss_index *index, const char *path, strata_faiss_error *error);

/// Reads an index `strata_faiss_write` wrote (`faiss::read_index`). A file FAISS cannot
/// parse is STRATA_FAISS_LIBRARY; one of another kind of index, STRATA_FAISS_NOT_OURS. FAISS
/// checks the structure it reads, not the values: a file damaged inside its arrays may read
/// and then misbehave in a search, so check its bytes (a checksum) before.
int strata_faiss_read(const char *path, strata_faiss_index **out, strata_faiss_error *error);

/// The index's shape. Never fails.
strata_faiss_shape strata_faiss_describe(const strata_faiss_index *index);

/// Frees the index; NULL is allowed.
void strata_faiss_free(strata_faiss_index *index);

#ifdef __cplusplus
}
#endif

#endif
