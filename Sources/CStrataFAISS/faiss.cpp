// The C surface of strata_faiss.h over FAISS's C++ API. Each entry point runs its body inside
// `guarded`, which turns every exception into a code and a message: a C++ exception that
// unwound into Swift frames would terminate the process.
#include "strata_faiss.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_io.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <omp.h>
#include <unistd.h>

struct strata_faiss_index {
    std::unique_ptr<faiss::IndexIDMap> map;
    faiss::IndexHNSWFlat *hnsw;  // owned by `map`
};

namespace {

void fail(strata_faiss_error *error, int32_t code, const std::string &message) {
    if (error == nullptr) return;
    error->code = code;
    std::snprintf(error->message, sizeof error->message, "%s", message.c_str());
}

// Runs `body`, returning its code; any exception becomes a code and a message.
template <typename Body>
int guarded(strata_faiss_error *error, Body body) {
    if (error != nullptr) {
        error->code = 0;
        error->message[0] = 0;
    }
    try {
        return body();
    } catch (const faiss::FaissException &e) {
        fail(error, 0, e.what());
        return STRATA_FAISS_LIBRARY;
    } catch (const std::bad_alloc &) {
        fail(error, 0, "out of memory");
        return STRATA_FAISS_OUT_OF_MEMORY;
    } catch (const std::exception &e) {
        fail(error, 0, e.what());
        return STRATA_FAISS_OTHER;
    } catch (...) {
        fail(error, 0, "an unknown C++ exception");
        return STRATA_FAISS_OTHER;
    }
}

int fileFailure(strata_faiss_error *error, const char *operation, const char *path) {
    int code = errno;
    fail(error, code, std::string(operation) + " " + path + ": " + std::strerror(code));
    return STRATA_FAISS_FILE;
}

// OpenMP's thread count as the process started (OMP_NUM_THREADS, else a thread per core),
// read before this file sets any.
int defaultThreads() {
    static const int threads = omp_get_max_threads();
    return threads;
}

// Sets the calling thread's OpenMP threads for a call over `work` rows or queries: `threads`,
// or the default for 0, and never more than `work`. A parallel region for one query costs
// more than the query: waking a team takes milliseconds on a busy machine.
void setThreads(int32_t threads, int64_t work) {
    int64_t n = threads > 0 ? threads : defaultThreads();
    if (work < n) n = work;
    omp_set_num_threads(int(n < 1 ? 1 : n));
}

// Why a graph read from a file cannot be searched safely, or empty if it can. FAISS checks
// the sizes it reads against the file, not that the arrays agree with each other; a search
// indexes `neighbors` through `offsets` and the vectors through neighbour ids unchecked.
std::string graphProblem(const faiss::IndexIDMap &map, const faiss::IndexHNSWFlat &index) {
    const faiss::HNSW &g = index.hnsw;
    const auto n = index.ntotal;
    auto flat = dynamic_cast<const faiss::IndexFlatCodes *>(index.storage);
    if (flat == nullptr) return "the graph's vectors are not stored flat";
    if (flat->d != index.d || flat->ntotal != n || flat->code_size != sizeof(float) * size_t(index.d)
        || flat->codes.size() != size_t(n) * flat->code_size) {
        return "the stored vectors do not match the index's dimension and row count";
    }
    if (map.ntotal != n || map.id_map.size() != size_t(n)) return "the id map does not have one key a row";
    if (g.levels.size() != size_t(n) || g.offsets.size() != size_t(n) + 1 || g.offsets[0] != 0) {
        return "the graph's level and offset tables do not have one entry a row";
    }
    // Levels are numbered from 0; `levels[i]` is one more than row i's top level.
    const auto &cum = g.cum_nneighbor_per_level;
    if (g.max_level < (n > 0 ? 0 : -1) || cum.size() < size_t(g.max_level) + 2) return "the graph's level count is out of range";
    if (cum[0] != 0) return "the graph's links per level are out of range";
    for (size_t l = 1; l < cum.size(); l++) {
        if (cum[l] < cum[l - 1]) return "the graph's links per level are out of range";
    }
    for (size_t i = 0; i < size_t(n); i++) {
        int level = g.levels[i];
        if (level < 1 || level > g.max_level + 1) {
            return "row " + std::to_string(i) + " has level " + std::to_string(level) + ", out of range";
        }
        if (g.offsets[i + 1] != g.offsets[i] + size_t(cum[level])) {
            return "row " + std::to_string(i) + "'s neighbour list does not match its level";
        }
    }
    if (g.offsets[n] != g.neighbors.size()) return "the neighbour table's size does not match the offsets";
    // A search reads a neighbour's links at the level it found it on: each must reach it.
    for (size_t i = 0; i < size_t(n); i++) {
        for (int level = 0; level < g.levels[i]; level++) {
            for (size_t j = g.offsets[i] + cum[level]; j < g.offsets[i] + cum[level + 1]; j++) {
                auto id = g.neighbors[j];
                if (id < -1 || id >= n || (id >= 0 && g.levels[id] <= level)) {
                    return "row " + std::to_string(i) + " links to " + std::to_string(id) + ", out of range at level "
                           + std::to_string(level);
                }
            }
        }
    }
    if (n > 0 && (g.entry_point < 0 || g.entry_point >= n || g.levels[g.entry_point] != g.max_level + 1)) {
        return "the graph's entry point is out of range";
    }
    if (g.efSearch < 1 || g.efConstruction < 1 || g.upper_beam < 1) return "the graph's search parameters are out of range";
    return "";
}

}  // namespace

extern "C" int strata_faiss_create(int32_t dimension, int32_t m, int32_t ef_construction, int32_t ef_search,
                                   strata_faiss_index **out, strata_faiss_error *error) {
    return guarded(error, [&] {
        if (dimension < 1 || m < 2 || ef_construction < 1 || ef_search < 1) {
            fail(error, 0, "dimension, m, ef_construction and ef_search must be positive (m at least 2)");
            return int(STRATA_FAISS_INVALID_ARGUMENT);
        }
        auto hnsw = std::make_unique<faiss::IndexHNSWFlat>(dimension, m, faiss::METRIC_INNER_PRODUCT);
        hnsw->hnsw.efConstruction = ef_construction;
        hnsw->hnsw.efSearch = ef_search;
        auto index = std::make_unique<strata_faiss_index>();
        index->hnsw = hnsw.get();
        index->map = std::make_unique<faiss::IndexIDMap>(hnsw.get());
        index->map->own_fields = true;
        hnsw.release();
        *out = index.release();
        return int(STRATA_FAISS_OK);
    });
}

extern "C" int strata_faiss_add(strata_faiss_index *index, int64_t count, const float *vectors, const uint64_t *keys,
                                int32_t threads, strata_faiss_error *error) {
    return guarded(error, [&] {
        // The graph numbers its rows with int.
        if (count < 0 || index->map->ntotal + count > INT32_MAX) {
            fail(error, 0, "an index holds at most 2147483647 rows");
            return int(STRATA_FAISS_INVALID_ARGUMENT);
        }
        if (count == 0) return int(STRATA_FAISS_OK);
        setThreads(threads, count);
        static_assert(sizeof(faiss::Index::idx_t) == sizeof(uint64_t), "keys are stored as FAISS ids");
        index->map->add_with_ids(count, vectors, reinterpret_cast<const faiss::Index::idx_t *>(keys));
        return int(STRATA_FAISS_OK);
    });
}

extern "C" int strata_faiss_set_ef_search(strata_faiss_index *index, int32_t ef_search, strata_faiss_error *error) {
    return guarded(error, [&] {
        if (ef_search < 1) {
            fail(error, 0, "ef_search must be at least 1");
            return int(STRATA_FAISS_INVALID_ARGUMENT);
        }
        index->hnsw->hnsw.efSearch = ef_search;
        return int(STRATA_FAISS_OK);
    });
}

extern "C" int strata_faiss_search(const strata_faiss_index *index, int64_t count, const float *queries, int64_t k,
                                   int32_t threads, float *scores, uint64_t *keys, int64_t *found,
                                   strata_faiss_error *error) {
    return guarded(error, [&] {
        if (count < 0 || k < 1) {
            fail(error, 0, "the query count must be 0 or more and k at least 1");
            return int(STRATA_FAISS_INVALID_ARGUMENT);
        }
        if (count == 0) return int(STRATA_FAISS_OK);
        setThreads(threads, count);
        // The graph's own search gives row numbers, -1 for an empty slot; keys are mapped
        // here rather than by IndexIDMap::search, where key 2^64-1 would read as -1.
        std::vector<faiss::Index::idx_t> rows(size_t(count) * size_t(k));
        index->hnsw->search(count, queries, k, scores, rows.data());
        const auto &ids = index->map->id_map;
        for (int64_t q = 0; q < count; q++) {
            int64_t n = 0;
            for (int64_t j = 0; j < k; j++) {
                faiss::Index::idx_t row = rows[size_t(q * k + j)];
                if (row < 0 || size_t(row) >= ids.size()) continue;
                keys[q * k + n] = uint64_t(ids[size_t(row)]);
                scores[q * k + n] = scores[q * k + j];
                n++;
            }
            found[q] = n;
        }
        return int(STRATA_FAISS_OK);
    });
}

extern "C" int strata_faiss_write(const strata_faiss_index *index, const char *path, strata_faiss_error *error) {
    return guarded(error, [&] {
        FILE *f = std::fopen(path, "wb");
        if (f == nullptr) return fileFailure(error, "fopen", path);
        try {
            faiss::write_index(index->map.get(), f);
        } catch (...) {
            // A failed fwrite (a full disk) surfaces as FaissException; report it as the file
            // error it is, with its errno.
            const int code = errno;
            const bool failedWrite = std::ferror(f) != 0;
            std::fclose(f);
            if (!failedWrite) throw;
            errno = code;
            return fileFailure(error, "fwrite", path);
        }
        if (std::fflush(f) != 0 || fsync(fileno(f)) != 0) {
            int rc = fileFailure(error, "fflush/fsync", path);
            std::fclose(f);
            return rc;
        }
        if (std::fclose(f) != 0) return fileFailure(error, "fclose", path);
        return int(STRATA_FAISS_OK);
    });
}

extern "C" int strata_faiss_read(const char *path, strata_faiss_index **out, strata_faiss_error *error) {
    return guarded(error, [&] {
        FILE *f = std::fopen(path, "rb");
        if (f == nullptr) return fileFailure(error, "fopen", path);
        std::unique_ptr<faiss::Index> read;
        try {
            read.reset(faiss::read_index(f));
        } catch (...) {
            std::fclose(f);
            throw;
        }
        std::fclose(f);
        auto map = dynamic_cast<faiss::IndexIDMap *>(read.get());
        auto hnsw = map == nullptr ? nullptr : dynamic_cast<faiss::IndexHNSWFlat *>(map->index);
        if (hnsw == nullptr || hnsw->metric_type != faiss::METRIC_INNER_PRODUCT || !map->own_fields) {
            fail(error, 0, "not an HNSW index of flat vectors by inner product under an id map");
            return int(STRATA_FAISS_NOT_OURS);
        }
        std::string problem = graphProblem(*map, *hnsw);
        if (!problem.empty()) {
            fail(error, 0, problem);
            return int(STRATA_FAISS_NOT_OURS);
        }
        auto index = std::make_unique<strata_faiss_index>();
        index->hnsw = hnsw;
        index->map.reset(map);
        read.release();
        *out = index.release();
        return int(STRATA_FAISS_OK);
    });
}

extern "C" strata_faiss_shape strata_faiss_describe(const strata_faiss_index *index) {
    const faiss::HNSW &g = index->hnsw->hnsw;
    const int64_t n = index->map->ntotal;
    const int64_t d = index->map->d;
    // write_index's layout: the vectors, the graph's tables, the keys, each array with an
    // 8-byte length, and headers; 64 KiB covers the headers many times over.
    const int64_t bytes = n * d * 4 + int64_t(g.levels.size()) * 4 + int64_t(g.offsets.size()) * 8
                          + int64_t(g.neighbors.size()) * 4 + int64_t(g.assign_probas.size()) * 8
                          + int64_t(g.cum_nneighbor_per_level.size()) * 4 + n * 8 + (64 << 10);
    // Level 0 has 2m links, the levels above m each.
    const auto &cum = g.cum_nneighbor_per_level;
    const int32_t m = cum.size() > 2 ? cum[2] - cum[1] : cum.size() > 1 ? cum[1] / 2 : 0;
    return strata_faiss_shape{int32_t(d), n, m, g.efConstruction, g.efSearch, bytes};
}

extern "C" void strata_faiss_free(strata_faiss_index *index) {
    delete index;
}
