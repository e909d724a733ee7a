// Small pieces Swift cannot express directly: CPU prefetch hints, a write that changes
// nothing, CRC-32C with the SSE4.2 instruction when the CPU has it, and LMDB reads guarded
// against damaged pages (strata_lmdb_guard.h).
#ifndef STRATA_SUPPORT_H
#define STRATA_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

/// Hints the CPU to bring the cache line holding `address` into cache for reading.
/// Never faults, whatever the address (`__builtin_prefetch`).
static inline void strata_prefetch(const void *address) {
    __builtin_prefetch(address, 0, 3);
}

/// Like `strata_prefetch`, but with low temporal locality (`prefetcht2` on x86-64), which
/// fills the level-2 cache. On AMD Zen it does not hold one of the few level-1 miss buffers
/// while its line is on the way, so many more can be in flight.
static inline void strata_prefetch_l2(const void *address) {
    __builtin_prefetch(address, 0, 1);
}

/// Makes the page holding `address` present and writable with a write fault, changing no
/// byte: a locked `or` of 0. A read first would take a read fault, and on a file mapping
/// the kernel then maps up to 16 neighbouring cached pages with it (fault-around). Compilers
/// may turn an atomic add of 0 into a fenced load, hence the assembly. Single-threaded use:
/// elsewhere a plain read and write back.
static inline void strata_touch_for_write(void *address) {
#if defined(__x86_64__)
    __asm__ volatile("lock orl $0, %0" : "+m"(*(volatile uint32_t *)address) : : "memory");
#else
    volatile uint32_t *word = (volatile uint32_t *)address;
    *word = *word;
#endif
}

/// CRC-32C (Castagnoli), the checksum of iSCSI, ext4 and RocksDB. `crc` is the value of
/// the bytes before (0 to start). Uses the SSE4.2 `crc32` instruction where the CPU has it,
/// else an 8-slice table.
uint32_t strata_crc32c(uint32_t crc, const void *bytes, size_t count);

/// Tell ThreadSanitizer that the calling thread takes (`acquire`) or gives up (`release`) the
/// lock at `address`, for a lock it cannot see: Synchronization's `Mutex` parks in futex
/// calls inside the standard library, which is not instrumented. Empty unless this file
/// is built with `-fsanitize=thread`.
void strata_tsan_acquire(void *address);
void strata_tsan_release(void *address);

#include "strata_lmdb_guard.h"

#endif
