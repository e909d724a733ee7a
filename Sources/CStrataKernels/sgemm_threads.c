// strata_sgemm over several threads: the caller and workers kept for the life of the process.
//
// A product of the Criteo model's layers takes a few milliseconds at batch 2048, so handing
// out the parts must cost microseconds: workers spin for a while after each product (the next
// one usually follows at once) and only then sleep on a condition variable. Thread pools
// that start or wake a thread per call (Dispatch's concurrentPerform here) lost the whole
// second core: new pool threads also fault in fresh packing buffers.
#include "strata_kernels.h"
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define PAUSE() _mm_pause()
#else
#define PAUSE() ((void)0)
#endif

enum { MAX_WORKERS = 63, PANEL = 14 };
// How long an idle worker spins before it sleeps.
static const long SPIN_NANOSECONDS = 300000;

typedef struct {
    int transA, transB, m, n, k;
    float alpha, beta;
    const float *a, *b;
    float *c;
    int lda, ldb, ldc, parts;
} product;

static product job;
static atomic_ulong generation;  // bumped per product
static atomic_int next_part;     // parts handed out
static atomic_int parts_left;    // parts not finished
static atomic_int sleepers;
static int workers;              // started so far
static pthread_mutex_t callers = PTHREAD_MUTEX_INITIALIZER;  // one product at a time
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;

static long elapsed(const struct timespec *since) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000000000L + (now.tv_nsec - since->tv_nsec);
}

// Runs parts of the current product until none is left to take.
static void take_parts(void) {
    const product *p = &job;
    int panels = (p->m + PANEL - 1) / PANEL;
    for (;;) {
        int part = atomic_fetch_add(&next_part, 1);
        if (part >= p->parts) return;
        int first = panels * part / p->parts * PANEL, last = panels * (part + 1) / p->parts * PANEL;
        if (last > p->m) last = p->m;
        if (first < last) {
            const float *rows = p->transA ? p->a + first : p->a + (size_t)first * p->lda;
            strata_sgemm(p->transA, p->transB, last - first, p->n, p->k, p->alpha, rows, p->lda, p->b, p->ldb,
                         p->beta, p->c + (size_t)first * p->ldc, p->ldc);
        }
        atomic_fetch_sub(&parts_left, 1);
    }
}

static void *worker(void *unused) {
    (void)unused;
    unsigned long seen = atomic_load(&generation);
    for (;;) {
        struct timespec start;
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (int spins = 0; atomic_load(&generation) == seen; spins++) {
            PAUSE();
            if ((spins & 255) == 255 && elapsed(&start) > SPIN_NANOSECONDS) {
                pthread_mutex_lock(&sleep_lock);
                atomic_fetch_add(&sleepers, 1);
                while (atomic_load(&generation) == seen) pthread_cond_wait(&wake, &sleep_lock);
                atomic_fetch_sub(&sleepers, 1);
                pthread_mutex_unlock(&sleep_lock);
            }
        }
        seen = atomic_load(&generation);
        take_parts();
    }
    return NULL;
}

int strata_sgemm_threaded(int threads, int transA, int transB, int m, int n, int k, float alpha,
                          const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    if (!strata_sgemm_available()) return -1;
    int panels = (m + PANEL - 1) / PANEL;
    int parts = threads < panels ? threads : panels;
    if (parts > MAX_WORKERS + 1) parts = MAX_WORKERS + 1;
    // Another thread's product in flight: this one runs alone (same result, by the kernel's
    // contract).
    if (parts <= 1 || pthread_mutex_trylock(&callers) != 0)
        return strata_sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    while (workers < parts - 1) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, worker, NULL) != 0) break;
        pthread_detach(thread);
        workers++;
    }
    if (workers == 0) {
        pthread_mutex_unlock(&callers);
        return strata_sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
    job = (product){transA, transB, m, n, k, alpha, beta, a, b, c, lda, ldb, ldc, parts};
    atomic_store(&next_part, 0);
    atomic_store(&parts_left, parts);
    atomic_fetch_add(&generation, 1);
    if (atomic_load(&sleepers) > 0) {
        pthread_mutex_lock(&sleep_lock);
        pthread_cond_broadcast(&wake);
        pthread_mutex_unlock(&sleep_lock);
    }
    take_parts();
    while (atomic_load(&parts_left) > 0) PAUSE();
    pthread_mutex_unlock(&callers);
    return 0;
}
