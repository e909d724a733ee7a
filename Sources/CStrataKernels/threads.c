// Work split over several threads: the caller and workers kept for the life of the process.
//
// A product of the Criteo model's layers takes a few milliseconds at batch 2048, and the
// steps around it less, so handing out the parts must cost microseconds: workers spin for a
// while after each task (the next one usually follows at once) and only then sleep on a
// condition variable. Dispatch's concurrentPerform, which wakes its pool per call, gained
// nothing from the second core here.
#include "strata_kernels.h"
#include "sgemm_parts.h"
#include "thread_buffers.h"
#include <stdlib.h>
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

enum { MAX_WORKERS = 63 };
// How long an idle worker spins before it sleeps.
static const long SPIN_NANOSECONDS = 100000;

typedef void (*task_body)(void *context, int index);

// A task, read by workers while the caller may already be writing the next one: generation
// is 0 while the fields change, and a reader keeps what it read only if generation was the
// same before and after (a sequence lock).
typedef struct {
    _Atomic(task_body) body;
    _Atomic(void *) context;
    atomic_int count;
    atomic_uint denormals;  // the caller's strata_denormal_mode, which every index runs in
    atomic_ulong generation;
} task;

// A part is claimed by incrementing `ticket`: generation in the high 32 bits, index in the low
// ones. A thread that wakes late, or finds nothing left, may increment it while the caller is
// already publishing the next task; the generation tells it whether its claim was for the
// task it read, so it never runs an index twice or a finished task's body. Tasks alternate
// between two slots, so the one being written is never the one being claimed.
static task tasks[2];
static atomic_ulong generation;  // the latest task's; wakes the workers
static atomic_ulong ticket;
static atomic_int parts_left;    // indices of the current task not finished
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
        unsigned long t = atomic_fetch_add(&ticket, 1), g = t >> 32;
        int index = (int)(t & 0xffffffffUL);
        task *slot = &tasks[g & 1];
        unsigned long before = atomic_load_explicit(&slot->generation, memory_order_acquire);
        task_body body = atomic_load_explicit(&slot->body, memory_order_relaxed);
        void *context = atomic_load_explicit(&slot->context, memory_order_relaxed);
        int count = atomic_load_explicit(&slot->count, memory_order_relaxed);
        unsigned denormals = atomic_load_explicit(&slot->denormals, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        unsigned long after = atomic_load_explicit(&slot->generation, memory_order_relaxed);
        if (before != after || (before & 0xffffffffUL) != g || index >= count) return;
        unsigned mine = strata_set_denormal_mode(denormals);
        body(context, index);
        strata_set_denormal_mode(mine);
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
    unsigned long next = atomic_load(&generation) + 1;
    if ((next & 0xffffffffUL) == 0) next++;  // 0 marks a slot being written
    task *slot = &tasks[(next & 0xffffffffUL) & 1];
    atomic_store_explicit(&slot->generation, 0, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&slot->body, body, memory_order_relaxed);
    atomic_store_explicit(&slot->context, context, memory_order_relaxed);
    atomic_store_explicit(&slot->count, count, memory_order_relaxed);
    atomic_store_explicit(&slot->denormals, strata_denormal_mode(), memory_order_relaxed);
    atomic_store_explicit(&slot->generation, next & 0xffffffffUL, memory_order_release);
    atomic_store(&parts_left, count);
    atomic_store(&ticket, (next & 0xffffffffUL) << 32);
    atomic_store(&generation, next);
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
    int transA, transB, m, n, k, lda, ldb, ldc;
    float alpha, beta;
    const float *a, *b;
    float *c;
    const strata_epilogue *epilogue;
    float *block;                  // this depth block of B, packed once for every thread
    int k0, kc, panels, pack_parts, rows_per_part;
} product;

static void pack_part(void *context, int part) {
    const product *p = context;
    int first = p->panels * part / p->pack_parts, last = p->panels * (part + 1) / p->pack_parts;
    strata_pack_b_block(p->transB, p->b, p->ldb, p->n, p->k0, p->kc, first, last - first, p->block);
}

static void rows_part(void *context, int part) {
    const product *p = context;
    int first = part * p->rows_per_part, rows = p->m - first < p->rows_per_part ? p->m - first : p->rows_per_part;
    if (rows > 0)
        strata_sgemm_rows(p->transA, first, rows, p->n, p->k, p->k0, p->kc, p->alpha, p->a, p->lda, p->block, p->beta,
                          p->c, p->ldc, p->epilogue);  // aborts rather than leave rows unwritten
}


int strata_sgemm_threaded(int threads, int transA, int transB, int m, int n, int k, float alpha,
                          const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc,
                          const strata_epilogue *epilogue) {
    if (!strata_sgemm_available()) return -1;
    if (threads <= 1 || m < 4 * STRATA_MR) return strata_sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, epilogue);
    if (strata_sgemm_edge(m, n, k, beta, c, ldc, epilogue)) return 0;
    int panels = (n + STRATA_NR - 1) / STRATA_NR;
    size_t floats = (size_t)STRATA_KC * panels * STRATA_NR;
    // The packed block of B: the calling thread's, shared with the workers for one product.
    float *shared_block = strata_thread_buffer(STRATA_BUFFER_SHARED_B, floats * sizeof(float));
    if (!shared_block) abort();
    // Rows in parts of whole panels, several per thread, so that a thread slowed by another
    // process (or the look-ahead) leaves its share to the others.
    int per = (m + 4 * threads - 1) / (4 * threads);
    per = (per + STRATA_MR - 1) / STRATA_MR * STRATA_MR;
    if (per < 4 * STRATA_MR) per = 4 * STRATA_MR;
    product p = {transA, transB, m, n, k, lda, ldb, ldc, alpha, beta, a, b, c, epilogue, shared_block,
                 0, 0, panels, threads < panels ? threads : panels, per};
    for (int k0 = 0; k0 < k; k0 += STRATA_KC) {
        p.k0 = k0;
        p.kc = k - k0 < STRATA_KC ? k - k0 : STRATA_KC;
        strata_parallel_for(threads, p.pack_parts, pack_part, &p);
        strata_parallel_for(threads, (m + per - 1) / per, rows_part, &p);
    }
    return 0;
}
