// Work split over several threads: the caller and workers kept for the life of the process.
//
// A product of the Criteo model's layers takes a few milliseconds at batch 2048, and the
// steps around it less, so handing out the parts must cost microseconds: workers spin for a while after each product (the next
// one usually follows at once) and only then sleep on a condition variable. Thread pools
// that start or wake a thread per call (Dispatch's concurrentPerform here) lost the whole
// second core: new pool threads also fault in fresh packing buffers.
#include "strata_kernels.h"
#include <pthread.h>
#include <sched.h>
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
static const long SPIN_NANOSECONDS = 100000;

typedef struct {
    void (*body)(void *context, int index);
    void *context;
    int count;
} task;

static task job;
static atomic_ulong generation;  // bumped per task
static atomic_int next_part;     // indices handed out
static atomic_int parts_left;    // indices not finished
static atomic_int sleepers;
static int workers;              // started so far
static pthread_mutex_t callers = PTHREAD_MUTEX_INITIALIZER;  // one task at a time
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;

static long elapsed(const struct timespec *since) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000000000L + (now.tv_nsec - since->tv_nsec);
}

// Runs indices of the current task until none is left to take.
static void take_parts(void) {
    for (;;) {
        int index = atomic_fetch_add(&next_part, 1);
        if (index >= job.count) return;
        job.body(job.context, index);
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

int strata_parallel_for(int threads, int count, void (*body)(void *context, int index), void *context) {
    if (count <= 0) return 0;
    int parts = threads < count ? threads : count;
    if (parts > MAX_WORKERS + 1) parts = MAX_WORKERS + 1;
    // Another thread's task in flight (or this is one of its parts): run here, in order.
    if (parts <= 1 || pthread_mutex_trylock(&callers) != 0) {
        for (int i = 0; i < count; i++) body(context, i);
        return 0;
    }
    while (workers < parts - 1) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, worker, NULL) != 0) break;
        pthread_detach(thread);
        workers++;
    }
    if (workers == 0) {
        pthread_mutex_unlock(&callers);
        for (int i = 0; i < count; i++) body(context, i);
        return 0;
    }
    job = (task){body, context, count};
    atomic_store(&next_part, 0);
    atomic_store(&parts_left, count);
    atomic_fetch_add(&generation, 1);
    if (atomic_load(&sleepers) > 0) {
        pthread_mutex_lock(&sleep_lock);
        pthread_cond_broadcast(&wake);
        pthread_mutex_unlock(&sleep_lock);
    }
    take_parts();
    // The last parts are in other threads. Spin briefly, then yield: on a machine with more
    // runnable threads than cores, the thread being waited for may need this core.
    for (int spins = 0; atomic_load(&parts_left) > 0; spins++) {
        if (spins < 4096) PAUSE(); else sched_yield();
    }
    pthread_mutex_unlock(&callers);
    return 0;
}

typedef struct {
    int transA, transB, m, n, k, lda, ldb, ldc, parts;
    float alpha, beta;
    const float *a, *b, *bias;
    float *c;
} product;

// Part `part` of a product: whole panels of C's rows.
static void product_part(void *context, int part) {
    const product *p = context;
    int panels = (p->m + PANEL - 1) / PANEL;
    int first = panels * part / p->parts * PANEL, last = panels * (part + 1) / p->parts * PANEL;
    if (last > p->m) last = p->m;
    if (first >= last) return;
    const float *rows = p->transA ? p->a + first : p->a + (size_t)first * p->lda;
    strata_sgemm(p->transA, p->transB, last - first, p->n, p->k, p->alpha, rows, p->lda, p->b, p->ldb, p->beta,
                 p->c + (size_t)first * p->ldc, p->ldc, p->bias);
}

int strata_sgemm_threaded(int threads, int transA, int transB, int m, int n, int k, float alpha,
                          const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc,
                          const float *bias) {
    if (!strata_sgemm_available()) return -1;
    int panels = (m + PANEL - 1) / PANEL;
    int parts = threads < panels ? threads : panels;
    if (parts <= 1) return strata_sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias);
    product p = {transA, transB, m, n, k, lda, ldb, ldc, parts, alpha, beta, a, b, bias, c};
    return strata_parallel_for(parts, parts, product_part, &p);
}
