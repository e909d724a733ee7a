// A C surface over hnswlib (Debian's libhnswlib-dev, header-only C++): an HNSW graph over
// float vectors, scored by inner product, whose results are 64-bit keys. Swift cannot call
// C++ that throws, so every entry point here catches what hnswlib and the standard library
// throw and returns a code instead; no exception ever leaves hnsw.cpp.
//
// Contracts:
// - Every function but `strata_hnsw_free` and `strata_hnsw_describe` returns STRATA_HNSW_OK
//   or an error code, and on error fills `error->message` (when `error` is not NULL) with
//   what failed, for that call only: there is no global "last error".
// - Vectors are row-major float32, `dimension` floats a row. The index scores by inner
//   product as given: cosine similarity is the caller's to get by normalising rows and
//   queries to unit length first (Strata does it in Swift, StrataNeighbors).
// - `threads` > 0 is the threads a call uses; 0 is one a core. Either way a call uses no
//   more threads than it has rows or queries. An add on one thread is deterministic: the
//   same rows in the same order give the same graph, bit for bit. On more, the links depend
//   on thread timing.
// - An index may be searched from one thread at a time (which may fan out to `threads`),
//   and not while it is being added to.
// - The file `strata_hnsw_write` writes is hnswlib's own layout (`saveIndex`), its labels
//   the keys: hnswlib's Python `Index(space="ip", dim=d).load_index(path)` reads it.
#ifndef STRATA_HNSW_H
#define STRATA_HNSW_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    STRATA_HNSW_OK = 0,
    /// An argument out of range (a dimension of 0, a key added twice, too many rows for the
    /// graph's 32-bit ids).
    STRATA_HNSW_INVALID_ARGUMENT = 1,
    /// hnswlib threw (`std::runtime_error`): its message says what.
    STRATA_HNSW_LIBRARY = 2,
    /// Memory ran out (`std::bad_alloc`, or hnswlib's own "Not enough memory").
    STRATA_HNSW_OUT_OF_MEMORY = 3,
    /// A file could not be opened, read, written, synced or closed; `error->code` is its errno.
    STRATA_HNSW_FILE = 4,
    /// A file that is not an index this library writes, or whose graph does not hold
    /// together (links out of range, levels that disagree, a key twice).
    STRATA_HNSW_NOT_OURS = 5,
    /// Any other exception.
    STRATA_HNSW_OTHER = 6,
};

typedef struct strata_hnsw_error {
    /// errno for STRATA_HNSW_FILE, else 0.
    int32_t code;
    char message[512];
} strata_hnsw_error;

/// An `hnswlib::HierarchicalNSW<float>` over an `InnerProductSpace`.
typedef struct strata_hnsw_index strata_hnsw_index;

/// What an index is; read with `strata_hnsw_describe`.
typedef struct strata_hnsw_shape {
    int32_t dimension;
    int64_t rows;
    /// Links per node above level 0 (level 0 has twice as many).
    int32_t m;
    int32_t ef_construction;
    int32_t ef_search;
    /// The bytes `strata_hnsw_write` writes, exactly.
    int64_t file_bytes;
} strata_hnsw_shape;

/// A new, empty index of vectors of `dimension` floats (1...65536) with `m` links per node
/// (2...512), building with `ef_construction` candidates (m...65536) and searching with
/// `ef_search` (1...65536). `capacity` rows are allocated up front (more are added by
/// growing the graph's arrays); pass the row count when it is known.
int strata_hnsw_create(int32_t dimension, int64_t capacity, int32_t m, int32_t ef_construction, int32_t ef_search,
                       strata_hnsw_index **out, strata_hnsw_error *error);

/// Adds `count` vectors (`count × dimension` floats) with their keys. A key already in the
/// index, or twice in `keys`, is refused before any row is added; so is growing past
/// 2^31 − 1 rows. On another failure (memory) rows added before it stay.
int strata_hnsw_add(strata_hnsw_index *index, int64_t count, const float *vectors, const uint64_t *keys,
                    int32_t threads, strata_hnsw_error *error);

/// Sets the candidates kept while searching (hnswlib's `ef`; a search keeps at least `k`).
int strata_hnsw_set_ef_search(strata_hnsw_index *index, int32_t ef_search, strata_hnsw_error *error);

/// The `k` best rows for each of `count` queries (`count × dimension` floats): for query q,
/// `found[q]` results in `keys[q*k ...]` and `scores[q*k ...]`, best first. Scores are the
/// inner products recomputed in double from the stored rows (hnswlib ranks by 1 − q·x in
/// float, which loses the low bits of large products). The rest of a query's `k` slots are
/// left as they were; `found` is below `k` when the index has fewer rows.
int strata_hnsw_search(const strata_hnsw_index *index, int64_t count, const float *queries, int64_t k,
                       int32_t threads, float *scores, uint64_t *keys, int64_t *found, strata_hnsw_error *error);

/// Writes the index to `path` (created or truncated) in hnswlib's layout, checking every
/// write, then flushes and `fsync`s it. Renaming it into place is the caller's. On failure
/// the file is left partial, for the caller to remove.
int strata_hnsw_write(const strata_hnsw_index *index, const char *path, strata_hnsw_error *error);

/// Reads an index `strata_hnsw_write` wrote, of vectors of `dimension` floats. hnswlib's
/// reader trusts its file, so the file's layout is checked first (header fields against
/// each other and `dimension`, every link list's size, the total against the file's) and
/// the graph after (every link in range and at a level its target has, no row marked
/// deleted, each key once, the entry point on the top level, every value finite): a file
/// that fails is STRATA_HNSW_NOT_OURS, and never reaches a search. A file damaged only in
/// its vectors' values or its links' choice reads; check its bytes (a checksum) first.
int strata_hnsw_read(const char *path, int32_t dimension, strata_hnsw_index **out, strata_hnsw_error *error);

/// The index's shape. Never fails.
strata_hnsw_shape strata_hnsw_describe(const strata_hnsw_index *index);

/// Frees the index; NULL is allowed.
void strata_hnsw_free(strata_hnsw_index *index);

#ifdef __cplusplus
}
#endif

#endif
