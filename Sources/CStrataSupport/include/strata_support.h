// Small pieces Swift cannot express directly: a CPU prefetch hint and CRC-32C with the
// SSE4.2 instruction when the CPU has it.
#ifndef STRATA_SUPPORT_H
#define STRATA_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

/// Hints the CPU to bring the cache line holding `address` into cache for reading.
/// Never faults, whatever the address (`__builtin_prefetch`).
static inline void strata_prefetch(const void *address) {
    __builtin_prefetch(address, 0, 3);
}

/// CRC-32C (Castagnoli), the checksum of iSCSI, ext4 and RocksDB. `crc` is the value of
/// the bytes before (0 to start). Uses the SSE4.2 `crc32` instruction where the CPU has it,
/// else an 8-slice table.
uint32_t strata_crc32c(uint32_t crc, const void *bytes, size_t count);

#endif
