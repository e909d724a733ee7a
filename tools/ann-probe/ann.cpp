// ANN benchmark for Strata: hnswlib / FAISS IVF vs brute force (FAISS IndexFlatIP, cblas_sgemv).
// Single-threaded everything. Build: see Makefile.
#include <hnswlib/hnswlib.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/index_io.h>
#include <cblas.h>
#include <omp.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <queue>
#include <random>
#include <string>
#include <sys/stat.h>
#include <vector>

extern "C" void openblas_set_num_threads(int);

using Clock = std::chrono::steady_clock;
static double now() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }
static std::string loadavg() {
    std::ifstream f("/proc/loadavg"); std::string a, b, c; f >> a >> b >> c; return a + " " + b + " " + c;
}
static long rss_kb() {
    std::ifstream f("/proc/self/status"); std::string l;
    while (std::getline(f, l)) if (l.rfind("VmRSS:", 0) == 0) return atol(l.c_str() + 6);
    return -1;
}
static bool exists(const std::string& p) { struct stat s; return stat(p.c_str(), &s) == 0; }
static const char* simd_name() {
#if defined(__AVX512F__)
    return "avx512";
#elif defined(__AVX2__)
    return "avx2";
#elif defined(__AVX__)
    return "avx";
#else
    return "sse";
#endif
}

static const int D = 64, K = 10;

static void write_vec(const std::string& p, const void* d, size_t bytes) {
    FILE* f = fopen(p.c_str(), "wb"); fwrite(d, 1, bytes, f); fclose(f);
}
template <class T> static std::vector<T> read_vec(const std::string& p) {
    FILE* f = fopen(p.c_str(), "rb"); if (!f) { fprintf(stderr, "missing %s\n", p.c_str()); exit(1); }
    fseek(f, 0, SEEK_END); size_t n = ftell(f); fseek(f, 0, SEEK_SET);
    std::vector<T> v(n / sizeof(T)); if (fread(v.data(), 1, n, f) != n) exit(2); fclose(f); return v;
}

static void normalize(std::vector<float>& x) {
    for (size_t i = 0; i < x.size() / D; i++) {
        float* v = &x[i * D]; double s = 0; for (int j = 0; j < D; j++) s += v[j] * v[j];
        float inv = 1.0f / std::sqrt(s); for (int j = 0; j < D; j++) v[j] *= inv;
    }
}

struct Data {
    size_t n, nq; std::vector<float> xb, xq; std::vector<faiss::Index::idx_t> gt;
};

// dir layout: base.f32, query.f32, gt.i64  (generated deterministically)
static Data load_or_gen(const std::string& dir, size_t n, bool cosine) {
    mkdir(dir.c_str(), 0755);
    Data d; d.n = n; d.nq = 1000;
    std::string pb = dir + "/base.f32", pq = dir + "/query.f32", pg = dir + "/gt.i64";
    if (exists(pb) && exists(pq) && exists(pg)) {
        d.xb = read_vec<float>(pb); d.xq = read_vec<float>(pq); d.gt = read_vec<faiss::Index::idx_t>(pg);
        if (d.xb.size() != n * D) { fprintf(stderr, "size mismatch\n"); exit(3); }
        return d;
    }
    double t0 = now();
    std::mt19937_64 rb(12345), rq(67890);
    std::normal_distribution<float> nd(0.f, 1.f);
    d.xb.resize(n * D); for (auto& v : d.xb) v = nd(rb);
    d.xq.resize(d.nq * D); for (auto& v : d.xq) v = nd(rq);
    if (cosine) { normalize(d.xb); normalize(d.xq); }
    faiss::IndexFlatIP flat(D); flat.add(n, d.xb.data());
    std::vector<float> dist(d.nq * K); d.gt.resize(d.nq * K);
    flat.search(d.nq, d.xq.data(), K, dist.data(), d.gt.data());  // batched -> sgemm path (exact)
    write_vec(pb, d.xb.data(), d.xb.size() * 4); write_vec(pq, d.xq.data(), d.xq.size() * 4);
    write_vec(pg, d.gt.data(), d.gt.size() * 8);
    printf("generated %s n=%zu cosine=%d in %.1fs\n", dir.c_str(), n, (int)cosine, now() - t0);
    return d;
}

static double recall_at_k(const Data& d, const std::vector<faiss::Index::idx_t>& res, size_t nq) {
    size_t hit = 0;
    for (size_t q = 0; q < nq; q++)
        for (int i = 0; i < K; i++)
            for (int j = 0; j < K; j++) if (res[q * K + i] == d.gt[q * K + j]) { hit++; break; }
    return double(hit) / (nq * K);
}

struct BF { double faiss_qps, sgemv_qps; };

// Brute-force baselines, one query at a time, on first nq queries (after 20-query warm-up).
static BF brute_force(const Data& d, size_t nq) {
    BF r{};
    faiss::IndexFlatIP flat(D); flat.add(d.n, d.xb.data());
    std::vector<faiss::Index::idx_t> res(nq * K); std::vector<float> dist(K);
    for (size_t q = 0; q < 20; q++) flat.search(1, &d.xq[q * D], K, dist.data(), &res[0]);
    double t0 = now();
    for (size_t q = 0; q < nq; q++) flat.search(1, &d.xq[q * D], K, dist.data(), &res[q * K]);
    double t = now() - t0; r.faiss_qps = nq / t;
    printf("  [bf] faiss IndexFlatIP 1-query: %.2f ms/q  %.1f q/s  recall=%.4f  load=%s\n", 1e3 * t / nq, r.faiss_qps,
           recall_at_k(d, res, nq), loadavg().c_str());
    // sgemv + top-k (min-heap of size K) per query
    std::vector<float> scores(d.n);
    auto one = [&](size_t q, faiss::Index::idx_t* out) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, d.n, D, 1.0f, d.xb.data(), D, &d.xq[q * D], 1, 0.0f, scores.data(), 1);
        std::priority_queue<std::pair<float, faiss::Index::idx_t>, std::vector<std::pair<float, faiss::Index::idx_t>>,
                            std::greater<>> h;
        for (size_t i = 0; i < K; i++) h.emplace(scores[i], i);
        float thr = h.top().first;
        for (size_t i = K; i < d.n; i++)
            if (scores[i] > thr) { h.pop(); h.emplace(scores[i], i); thr = h.top().first; }
        for (int i = K - 1; i >= 0; i--) { out[i] = h.top().second; h.pop(); }
    };
    for (size_t q = 0; q < 20; q++) one(q, &res[0]);
    t0 = now();
    for (size_t q = 0; q < nq; q++) one(q, &res[q * K]);
    t = now() - t0; r.sgemv_qps = nq / t;
    printf("  [bf] cblas_sgemv+top10 1-query: %.2f ms/q  %.1f q/s  recall=%.4f  load=%s\n", 1e3 * t / nq, r.sgemv_qps,
           recall_at_k(d, res, nq), loadavg().c_str());
    return r;
}

static std::vector<int> parse_list(const char* s) {
    std::vector<int> v; std::string t(s); size_t p = 0;
    while (p < t.size()) { size_t c = t.find(',', p); if (c == std::string::npos) c = t.size(); v.push_back(atoi(t.substr(p, c - p).c_str())); p = c + 1; }
    return v;
}

static void print_row(const char* tag, const char* param, int val, double rec, double qps, const BF& bf) {
    printf("RESULT %s %s=%d recall@10=%.4f qps=%.1f ms/q=%.3f xfaiss=%.1f xsgemv=%.1f load=%s\n", tag, param, val, rec,
           qps, 1e3 / qps, qps / bf.faiss_qps, qps / bf.sgemv_qps, loadavg().c_str());
    fflush(stdout);
}

int main(int argc, char** argv) {
    omp_set_num_threads(1);
    openblas_set_num_threads(1);
    if (argc < 4) {
        fprintf(stderr,
                "usage: ann <datadir> <n> <ip|cos> gen\n"
                "       ann <datadir> <n> <ip|cos> bf [nq]\n"
                "       ann <datadir> <n> <ip|cos> hnsw M efC efs_list [index_file] [bf_nq]\n"
                "       ann <datadir> <n> <ip|cos> ivf nlist nprobe_list [ntrain] [bf_nq]\n"
                "       ann <datadir> <n> <ip|cos> fhnsw M efC efs_list [bf_nq]   (FAISS IndexHNSWFlat)\n");
        return 1;
    }
    std::string dir = argv[1]; size_t n = atol(argv[2]); bool cosine = std::string(argv[3]) == "cos";
    std::string mode = argc > 4 ? argv[4] : "gen";
    Data d = load_or_gen(dir, n, cosine);
    printf("# simd=%s n=%zu metric=%s mode=%s load=%s rss=%ldMB\n", simd_name(), n, cosine ? "cos" : "ip", mode.c_str(),
           loadavg().c_str(), rss_kb() / 1024);
    fflush(stdout);
    if (mode == "gen") return 0;
    if (mode == "bf") { brute_force(d, argc > 5 ? atoi(argv[5]) : 200); return 0; }

    std::vector<faiss::Index::idx_t> res(d.nq * K);
    if (mode == "hnsw") {
        int M = atoi(argv[5]), efC = atoi(argv[6]); auto efs = parse_list(argv[7]);
        std::string file = argc > 8 ? argv[8] : "";
        size_t bfnq = argc > 9 ? atoi(argv[9]) : 200;
        hnswlib::InnerProductSpace space(D);
        hnswlib::HierarchicalNSW<float>* idx;
        long rss0 = rss_kb();
        if (!file.empty() && exists(file)) {
            double t0 = now();
            idx = new hnswlib::HierarchicalNSW<float>(&space, file, false, n);
            printf("loaded %s in %.1fs\n", file.c_str(), now() - t0);
        } else {
            double t0 = now();
            idx = new hnswlib::HierarchicalNSW<float>(&space, n, M, efC, 100);
            for (size_t i = 0; i < n; i++) {
                idx->addPoint(&d.xb[i * D], i);
                if ((i + 1) % 100000 == 0) { printf("  built %zu  %.1fs  load=%s\n", i + 1, now() - t0, loadavg().c_str()); fflush(stdout); }
            }
            double bt = now() - t0;
            printf("BUILD hnswlib simd=%s M=%d efC=%d n=%zu build_s=%.1f load=%s\n", simd_name(), M, efC, n, bt, loadavg().c_str());
            if (!file.empty()) idx->saveIndex(file);
        }
        long rss1 = rss_kb();
        printf("  index RSS delta=%.0fMB (raw vectors=%.0fMB)\n", (rss1 - rss0) / 1024.0, n * D * 4 / 1048576.0);
        fflush(stdout);
        BF bf = brute_force(d, bfnq);
        char tag[128]; snprintf(tag, sizeof tag, "hnswlib/%s/%s M=%d efC=%d", simd_name(), cosine ? "cos" : "ip", M, efC);
        for (int ef : efs) {
            idx->setEf(ef);
            for (size_t q = 0; q < 50; q++) idx->searchKnn(&d.xq[q * D], K);  // warm-up
            double t0 = now();
            for (size_t q = 0; q < d.nq; q++) {
                auto pq = idx->searchKnn(&d.xq[q * D], K);
                for (int i = K - 1; i >= 0 && !pq.empty(); i--) { res[q * K + i] = pq.top().second; pq.pop(); }
            }
            double t = now() - t0;
            print_row(tag, "ef", ef, recall_at_k(d, res, d.nq), d.nq / t, bf);
        }
        delete idx;
    } else if (mode == "ivf") {
        int nlist = atoi(argv[5]); auto nps = parse_list(argv[6]);
        size_t ntrain = argc > 7 ? atol(argv[7]) : std::min<size_t>(n, 100 * nlist);
        size_t bfnq = argc > 8 ? atoi(argv[8]) : 200;
        faiss::IndexFlatIP quant(D);
        faiss::IndexIVFFlat ivf(&quant, D, nlist, faiss::METRIC_INNER_PRODUCT);
        double t0 = now();
        ivf.train(ntrain, d.xb.data());
        double tt = now() - t0;
        ivf.add(n, d.xb.data());
        printf("BUILD faiss IVFFlat nlist=%d ntrain=%zu train_s=%.1f total_s=%.1f load=%s\n", nlist, ntrain, tt, now() - t0, loadavg().c_str());
        BF bf = brute_force(d, bfnq);
        char tag[128]; snprintf(tag, sizeof tag, "faissIVFFlat/%s nlist=%d", cosine ? "cos" : "ip", nlist);
        std::vector<float> dist(K);
        for (int np : nps) {
            ivf.nprobe = np;
            for (size_t q = 0; q < 20; q++) ivf.search(1, &d.xq[q * D], K, dist.data(), &res[0]);
            double t1 = now();
            for (size_t q = 0; q < d.nq; q++) ivf.search(1, &d.xq[q * D], K, dist.data(), &res[q * K]);
            double t = now() - t1;
            print_row(tag, "nprobe", np, recall_at_k(d, res, d.nq), d.nq / t, bf);
        }
    } else if (mode == "fhnsw") {
        int M = atoi(argv[5]), efC = atoi(argv[6]); auto efs = parse_list(argv[7]);
        size_t bfnq = argc > 8 ? atoi(argv[8]) : 200;
        faiss::IndexHNSWFlat idx(D, M, faiss::METRIC_INNER_PRODUCT);
        idx.hnsw.efConstruction = efC;
        double t0 = now(); idx.add(n, d.xb.data());
        printf("BUILD faiss HNSWFlat M=%d efC=%d build_s=%.1f load=%s\n", M, efC, now() - t0, loadavg().c_str());
        BF bf = brute_force(d, bfnq);
        char tag[128]; snprintf(tag, sizeof tag, "faissHNSW/%s M=%d efC=%d", cosine ? "cos" : "ip", M, efC);
        std::vector<float> dist(K);
        for (int ef : efs) {
            idx.hnsw.efSearch = ef;
            double t1 = now();
            for (size_t q = 0; q < d.nq; q++) idx.search(1, &d.xq[q * D], K, dist.data(), &res[q * K]);
            double t = now() - t1;
            print_row(tag, "ef", ef, recall_at_k(d, res, d.nq), d.nq / t, bf);
        }
    }
    return 0;
}
