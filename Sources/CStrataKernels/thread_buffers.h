// Scratch buffers kept per thread between calls, freed when the thread exits.
#ifndef STRATA_THREAD_BUFFERS_H
#define STRATA_THREAD_BUFFERS_H
#include <stddef.h>

/// The buffers a thread keeps, one of each.
enum {
    STRATA_BUFFER_PACKED_A,   // strata_sgemm_rows: a block of A, packed
    STRATA_BUFFER_PACKED_B,   // strata_sgemm: a depth block of B, packed
    STRATA_BUFFER_SHARED_B,   // strata_sgemm_threaded: the caller's block of B, shared with workers
    STRATA_BUFFER_TILES,      // the dot interaction's registers-shaped tiles
    STRATA_BUFFER_SLOTS
};

/// The calling thread's buffer `slot`, 64-byte aligned, of at least `bytes`: the one it had if
/// large enough (its contents kept), else a new one (contents undefined). NULL without memory.
/// Freed when the thread exits, so that threads that come and go (Swift's and libdispatch's
/// pools) leave nothing behind; the process's main thread keeps its own until exit.
void *strata_thread_buffer(int slot, size_t bytes);

#endif
