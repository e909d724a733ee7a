// The C surface of strata_hnsw.h over hnswlib's C++ (0.6.2, Debian's libhnswlib-dev). Each
// entry point runs its body inside `guarded`, which turns every exception into a code and a
// message: a C++ exception that unwound into Swift frames would terminate the process.
//
// Files are written and checked here, not by hnswlib's saveIndex and loadIndex: saveIndex
// checks no write (a full disk gives a short file and no error), and loadIndex trusts every
// size and link it reads. The layout is hnswlib's, so hnswlib still reads the files.
#include "strata_hnsw.h"

#include <hnswlib/hnswlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

using Graph = hnswlib::HierarchicalNSW<float>;

struct strata_hnsw_index {
    // Declared first, destroyed last: the graph keeps a pointer to its distance function.
    hnswlib::InnerProductSpace space;
    std::unique_ptr<Graph> graph;
    int32_t dimension;

    explicit strata_hnsw_index(int32_t d) : space(size_t(d)), dimension(d) {}
};

namespace {

void fail(strata_hnsw_error *error, int32_t code, const std::string &message) {
    if (error == nullptr) return;
    error->code = code;
    std::snprintf(error->message, sizeof error->message, "%s", message.c_str());
}

// Runs `body`, returning its code; any exception becomes a code and a message.
template <typename Body>
int guarded(strata_hnsw_error *error, Body body) {
    if (error != nullptr) {
        error->code = 0;
        error->message[0] = 0;
    }
    try {
        return body();
    } catch (const std::bad_alloc &) {
        fail(error, 0, "out of memory");
        return STRATA_HNSW_OUT_OF_MEMORY;
    } catch (const std::runtime_error &e) {
        fail(error, 0, e.what());
        // hnswlib reports a failed malloc as a runtime_error.
        return std::strncmp(e.what(), "Not enough memory", 17) == 0 ? STRATA_HNSW_OUT_OF_MEMORY : STRATA_HNSW_LIBRARY;
    } catch (const std::exception &e) {
        fail(error, 0, e.what());
        return STRATA_HNSW_OTHER;
    } catch (...) {
        fail(error, 0, "an unknown C++ exception");
        return STRATA_HNSW_OTHER;
    }
}

int fileFailure(strata_hnsw_error *error, const char *operation, const char *path) {
    int code = errno;
    fail(error, code, std::string(operation) + " " + path + ": " + std::strerror(code));
    return STRATA_HNSW_FILE;
}

int invalid(strata_hnsw_error *error, const std::string &message) {
    fail(error, 0, message);
    return STRATA_HNSW_INVALID_ARGUMENT;
}

int notOurs(strata_hnsw_error *error, const std::string &message) {
    fail(error, 0, message);
    return STRATA_HNSW_NOT_OURS;
}

// Runs body(i) for i in [from, to) on `threads` threads (0: one a core), never more than
// the work; the first exception thrown is rethrown here once all threads have stopped.
template <typename Body>
void parallelFor(int64_t from, int64_t to, int32_t threads, Body body) {
    int64_t n = threads > 0 ? threads : int64_t(std::max(1u, std::thread::hardware_concurrency()));
    n = std::min(n, to - from);
    if (n <= 1) {
        for (int64_t i = from; i < to; i++) body(i);
        return;
    }
    std::atomic<int64_t> next(from);
    std::exception_ptr first;
    std::mutex firstLock;
    auto work = [&] {
        try {
            for (int64_t i = next++; i < to; i = next++) body(i);
        } catch (...) {
            std::lock_guard<std::mutex> hold(firstLock);
            if (!first) first = std::current_exception();
            next = to;
        }
    };
    std::vector<std::thread> team;
    team.reserve(size_t(n - 1));
    for (int64_t t = 1; t < n; t++) team.emplace_back(work);
    work();
    for (auto &thread : team) thread.join();
    if (first) std::rethrow_exception(first);
}

// hnswlib's file: these fields, in this order, then each row's level-0 block (links, vector,
// label), then each row's upper levels (a 4-byte size, then the links).
struct Header {
    size_t offsetLevel0, maxElements, count, sizeDataPerElement, labelOffset, offsetData;
    int maxLevel;
    hnswlib::tableint entryPoint;
    size_t maxM, maxM0, m;
    double mult;
    size_t efConstruction;
};
constexpr size_t headerBytes = 6 * sizeof(size_t) + sizeof(int) + sizeof(hnswlib::tableint) + 3 * sizeof(size_t)
                               + sizeof(double) + sizeof(size_t);
static_assert(headerBytes == 96, "hnswlib 0.6's header is 96 bytes");

// Calls `field` on each of the header's fields in the file's order, stopping at the first
// that returns false; returns whether none did. The one statement of the order, for reading
// and writing alike.
template <typename H, typename Field>
bool eachField(H &h, Field field) {
    return field(h.offsetLevel0) && field(h.maxElements) && field(h.count) && field(h.sizeDataPerElement)
           && field(h.labelOffset) && field(h.offsetData) && field(h.maxLevel) && field(h.entryPoint) && field(h.maxM)
           && field(h.maxM0) && field(h.m) && field(h.mult) && field(h.efConstruction);
}

// The header of `g` as `strata_hnsw_write` writes it. The capacity is the row count: a read
// then allocates no more than the file holds.
Header headerOf(const Graph &g) {
    return Header{g.offsetLevel0_, g.cur_element_count, g.cur_element_count, g.size_data_per_element_, g.label_offset_,
                  g.offsetData_, g.maxlevel_, g.enterpoint_node_, g.maxM_, g.maxM0_, g.M_, g.mult_, g.ef_construction_};
}

size_t upperBytes(const Graph &g, size_t row) {
    return g.element_levels_[row] > 0 ? g.size_links_per_element_ * size_t(g.element_levels_[row]) : 0;
}

int64_t fileBytes(const Graph &g) {
    int64_t total = int64_t(headerBytes) + int64_t(g.cur_element_count * g.size_data_per_element_);
    for (size_t i = 0; i < g.cur_element_count; i++) total += int64_t(sizeof(unsigned int) + upperBytes(g, i));
    return total;
}

// Why the header cannot be of an index of `dimension` floats this file wrote, or empty.
std::string headerProblem(const Header &h, int32_t dimension) {
    if (h.offsetLevel0 != 0) return "its level-0 offset is not 0";
    if (h.m < 2 || h.m > 512 || h.maxM != h.m || h.maxM0 != 2 * h.m) return "its link counts are out of range";
    const size_t links0 = h.maxM0 * sizeof(hnswlib::tableint) + sizeof(hnswlib::linklistsizeint);
    const size_t vector = size_t(dimension) * sizeof(float);
    if (h.offsetData != links0 || h.labelOffset != links0 + vector
        || h.sizeDataPerElement != links0 + vector + sizeof(hnswlib::labeltype)) {
        return "its row layout is not that of vectors of dimension " + std::to_string(dimension) + " with m "
               + std::to_string(h.m);
    }
    if (h.count > size_t(INT32_MAX) || h.maxElements != h.count) return "its row counts are out of range";
    if (h.mult != 1 / std::log(1.0 * double(h.m))) return "its level multiplier is not that of m " + std::to_string(h.m);
    if (h.efConstruction < h.m || h.efConstruction > 65536) return "its ef_construction is out of range";
    if (h.count == 0 ? h.maxLevel != -1 : (h.maxLevel < 0 || h.maxLevel > 64 || h.entryPoint >= h.count)) {
        return "its top level or entry point is out of range";
    }
    return "";
}

// Why a graph read from a file cannot be searched safely, or empty if it can. A search
// follows links unchecked into the vectors and the upper levels' lists.
std::string graphProblem(const Graph &g, int32_t dimension) {
    const size_t n = g.cur_element_count;
    if (g.label_lookup_.size() != n) return "a key is held by more than one row";
    int top = n == 0 ? -1 : 0;
    for (size_t i = 0; i < n; i++) {
        const int levels = g.element_levels_[i];
        top = std::max(top, levels);
        for (int level = 0; level <= levels; level++) {
            const hnswlib::linklistsizeint *list = g.get_linklist_at_level(hnswlib::tableint(i), level);
            // The low 16 bits count the links; byte 2 holds the deleted mark; byte 3 is unused.
            if ((*list >> 16) != 0) return "row " + std::to_string(i) + " is marked deleted, or its link count is damaged";
            const size_t count = *list & 0xffff, most = level == 0 ? g.maxM0_ : g.maxM_;
            if (count > most) return "row " + std::to_string(i) + " has " + std::to_string(count) + " links at level " + std::to_string(level);
            const hnswlib::tableint *links = list + 1;
            for (size_t j = 0; j < count; j++) {
                if (links[j] >= n || g.element_levels_[links[j]] < level) {
                    return "row " + std::to_string(i) + " links to " + std::to_string(links[j]) + ", out of range at level "
                           + std::to_string(level);
                }
            }
        }
        const float *vector = reinterpret_cast<const float *>(g.getDataByInternalId(hnswlib::tableint(i)));
        for (int32_t j = 0; j < dimension; j++) {
            if (!std::isfinite(vector[j])) return "row " + std::to_string(i) + " holds a value that is not finite";
        }
    }
    if (top != g.maxlevel_ || (n > 0 && g.element_levels_[g.enterpoint_node_] != g.maxlevel_)) {
        return "the entry point is not on the top level";
    }
    return "";
}

// Reads and checks the file's layout; returns why it is not ours, or empty.
std::string layoutProblem(std::FILE *f, int64_t size, int32_t dimension) {
    Header h{};
    if (!eachField(h, [&](auto &x) { return std::fread(&x, sizeof x, 1, f) == 1; })) return "it is shorter than an index's header";
    std::string problem = headerProblem(h, dimension);
    if (!problem.empty()) return problem;
    const size_t linksPerLevel = h.maxM * sizeof(hnswlib::tableint) + sizeof(hnswlib::linklistsizeint);
    int64_t at = int64_t(headerBytes) + int64_t(h.count * h.sizeDataPerElement);
    if (at > size) return "it is shorter than its rows";
    if (std::fseek(f, long(at), SEEK_SET) != 0) return "it is shorter than its rows";
    for (size_t i = 0; i < h.count; i++) {
        unsigned int bytes;
        if (std::fread(&bytes, sizeof bytes, 1, f) != 1) return "it ends inside row " + std::to_string(i) + "'s levels";
        if (bytes % linksPerLevel != 0 || bytes / linksPerLevel > size_t(h.maxLevel)) {
            return "row " + std::to_string(i) + "'s upper levels are " + std::to_string(bytes) + " bytes";
        }
        at += int64_t(sizeof bytes) + bytes;
        if (at > size || (bytes > 0 && std::fseek(f, long(bytes), SEEK_CUR) != 0)) {
            return "it ends inside row " + std::to_string(i) + "'s levels";
        }
    }
    if (at != size) return "it has " + std::to_string(size - at) + " bytes after its last row";
    return "";
}

}  // namespace

extern "C" int strata_hnsw_create(int32_t dimension, int64_t capacity, int32_t m, int32_t ef_construction,
                                  int32_t ef_search, strata_hnsw_index **out, strata_hnsw_error *error) {
    return guarded(error, [&] {
        if (dimension < 1 || dimension > 65536 || m < 2 || m > 512 || ef_construction < m || ef_construction > 65536
            || ef_search < 1 || ef_search > 65536 || capacity < 0 || capacity > INT32_MAX) {
            return invalid(error, "dimension, capacity, m, ef_construction or ef_search out of range");
        }
        auto index = std::make_unique<strata_hnsw_index>(dimension);
        // hnswlib's default seed (100) draws the levels: the same rows give the same graph.
        index->graph = std::make_unique<Graph>(&index->space, size_t(std::max<int64_t>(capacity, 1)), size_t(m),
                                               size_t(ef_construction));
        index->graph->setEf(size_t(ef_search));
        *out = index.release();
        return int(STRATA_HNSW_OK);
    });
}

extern "C" int strata_hnsw_add(strata_hnsw_index *index, int64_t count, const float *vectors, const uint64_t *keys,
                               int32_t threads, strata_hnsw_error *error) {
    return guarded(error, [&] {
        Graph &g = *index->graph;
        // The graph numbers its rows with 32-bit ids.
        if (count < 0 || int64_t(g.cur_element_count) + count > INT32_MAX) return invalid(error, "an index holds at most 2147483647 rows");
        if (count == 0) return int(STRATA_HNSW_OK);
        // hnswlib would replace the row of a key added again: refuse it, as a table has each key once.
        std::unordered_set<uint64_t> seen;
        seen.reserve(size_t(count));
        for (int64_t i = 0; i < count; i++) {
            if (!seen.insert(keys[i]).second || g.label_lookup_.count(keys[i]) != 0) {
                return invalid(error, "key " + std::to_string(keys[i]) + " is added twice");
            }
        }
        const size_t needed = g.cur_element_count + size_t(count);
        if (needed > g.max_elements_) g.resizeIndex(std::max(needed, std::min(g.max_elements_ + g.max_elements_ / 2, size_t(INT32_MAX))));
        const size_t d = size_t(index->dimension);
        int64_t from = 0;
        // The first row of an empty graph becomes its entry point: added alone, as hnswlib's
        // own bindings do, so that threads start from a graph.
        if (g.cur_element_count == 0) {
            g.addPoint(vectors, keys[0]);
            from = 1;
        }
        parallelFor(from, count, threads, [&](int64_t i) { g.addPoint(vectors + size_t(i) * d, keys[i]); });
        return int(STRATA_HNSW_OK);
    });
}

extern "C" int strata_hnsw_set_ef_search(strata_hnsw_index *index, int32_t ef_search, strata_hnsw_error *error) {
    return guarded(error, [&] {
        if (ef_search < 1 || ef_search > 65536) return invalid(error, "ef_search must be between 1 and 65536");
        index->graph->setEf(size_t(ef_search));
        return int(STRATA_HNSW_OK);
    });
}

extern "C" int strata_hnsw_search(const strata_hnsw_index *index, int64_t count, const float *queries, int64_t k,
                                  int32_t threads, float *scores, uint64_t *keys, int64_t *found,
                                  strata_hnsw_error *error) {
    return guarded(error, [&] {
        if (count < 0 || k < 1) return invalid(error, "the query count must be 0 or more and k at least 1");
        const Graph &g = *index->graph;
        const size_t d = size_t(index->dimension);
        parallelFor(0, count, threads, [&](int64_t q) {
            const float *query = queries + size_t(q) * d;
            auto best = g.searchKnn(query, size_t(k));
            // A max-heap of 1 − q·x: the worst comes out first.
            int64_t n = int64_t(best.size());
            found[q] = n;
            for (int64_t j = n - 1; j >= 0; j--) {
                const uint64_t key = best.top().second;
                best.pop();
                const float *row = reinterpret_cast<const float *>(g.getDataByInternalId(g.label_lookup_.at(key)));
                double dot = 0;
                for (size_t c = 0; c < d; c++) dot += double(query[c]) * double(row[c]);
                keys[q * k + j] = key;
                scores[q * k + j] = float(dot);
            }
            // Ranked by the float distance, rescored in double: where the two disagree (in the
            // last bits), an insertion sort, stable and linear on a list all but sorted.
            for (int64_t j = 1; j < n; j++) {
                const float score = scores[q * k + j];
                const uint64_t key = keys[q * k + j];
                int64_t i = j;
                for (; i > 0 && scores[q * k + i - 1] < score; i--) {
                    scores[q * k + i] = scores[q * k + i - 1];
                    keys[q * k + i] = keys[q * k + i - 1];
                }
                scores[q * k + i] = score;
                keys[q * k + i] = key;
            }
        });
        return int(STRATA_HNSW_OK);
    });
}

extern "C" int strata_hnsw_write(const strata_hnsw_index *index, const char *path, strata_hnsw_error *error) {
    return guarded(error, [&] {
        const Graph &g = *index->graph;
        std::FILE *f = std::fopen(path, "wb");
        if (f == nullptr) return fileFailure(error, "fopen", path);
        bool ok = true;
        auto put = [&](const void *bytes, size_t size) {
            if (ok && size > 0) ok = std::fwrite(bytes, size, 1, f) == 1;
        };
        const Header header = headerOf(g);
        eachField(header, [&](const auto &x) {
            put(&x, sizeof x);
            return true;
        });
        put(g.data_level0_memory_, g.cur_element_count * g.size_data_per_element_);
        for (size_t i = 0; i < g.cur_element_count && ok; i++) {
            const unsigned int bytes = unsigned(upperBytes(g, i));
            put(&bytes, sizeof bytes);
            put(g.linkLists_[i], bytes);
        }
        if (!ok || std::fflush(f) != 0) {
            int rc = fileFailure(error, "fwrite", path);
            std::fclose(f);
            return rc;
        }
        if (fsync(fileno(f)) != 0) {
            int rc = fileFailure(error, "fsync", path);
            std::fclose(f);
            return rc;
        }
        if (std::fclose(f) != 0) return fileFailure(error, "fclose", path);
        return int(STRATA_HNSW_OK);
    });
}

extern "C" int strata_hnsw_read(const char *path, int32_t dimension, strata_hnsw_index **out, strata_hnsw_error *error) {
    return guarded(error, [&] {
        if (dimension < 1 || dimension > 65536) return invalid(error, "dimension must be between 1 and 65536");
        std::FILE *f = std::fopen(path, "rb");
        if (f == nullptr) return fileFailure(error, "fopen", path);
        struct stat info;
        if (fstat(fileno(f), &info) != 0) {
            int rc = fileFailure(error, "fstat", path);
            std::fclose(f);
            return rc;
        }
        std::string problem = layoutProblem(f, int64_t(info.st_size), dimension);
        std::fclose(f);
        if (!problem.empty()) return notOurs(error, problem);
        auto index = std::make_unique<strata_hnsw_index>(dimension);
        index->graph = std::make_unique<Graph>(&index->space, std::string(path));
        problem = graphProblem(*index->graph, dimension);
        if (!problem.empty()) return notOurs(error, problem);
        *out = index.release();
        return int(STRATA_HNSW_OK);
    });
}

extern "C" strata_hnsw_shape strata_hnsw_describe(const strata_hnsw_index *index) {
    const Graph &g = *index->graph;
    return strata_hnsw_shape{index->dimension, int64_t(g.cur_element_count), int32_t(g.M_), int32_t(g.ef_construction_),
                             int32_t(g.ef_), fileBytes(g)};
}

extern "C" void strata_hnsw_free(strata_hnsw_index *index) {
    delete index;
}
