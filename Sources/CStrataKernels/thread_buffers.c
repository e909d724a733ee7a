// Per-thread scratch buffers: allocating them anew on every call costs fresh zeroed pages from
// the kernel on every product. A `__thread` pointer alone would leak its buffer when the thread
// exits; a pthread key's destructor frees them instead.
#include "thread_buffers.h"
#include "strata_kernels.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

typedef struct {
    void *data;
    size_t bytes;
} buffer;

static __thread buffer buffers[STRATA_BUFFER_SLOTS];
static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
static atomic_size_t released;

// Runs as the thread exits, with the address of that thread's `buffers`.
static void release(void *mine) {
    buffer *b = mine;
    for (int i = 0; i < STRATA_BUFFER_SLOTS; i++) {
        if (b[i].data) atomic_fetch_add(&released, 1);
        free(b[i].data);
        b[i].data = NULL;
        b[i].bytes = 0;
    }
}

static void make_key(void) {
    if (pthread_key_create(&exit_key, release) != 0) abort();
}

void *strata_thread_buffer(int slot, size_t bytes) {
    buffer *b = &buffers[slot];
    if (b->bytes < bytes) {
        pthread_once(&exit_once, make_key);
        // A non-NULL value is what makes the destructor run.
        if (pthread_getspecific(exit_key) == NULL) pthread_setspecific(exit_key, buffers);
        free(b->data);
        b->data = aligned_alloc(64, (bytes + 63) / 64 * 64);
        b->bytes = b->data ? bytes : 0;
    }
    return b->data;
}

size_t strata_thread_buffers_released(void) { return atomic_load(&released); }
