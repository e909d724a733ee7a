// Not part of the API: what the library's Swift half calls in its C half.
#ifndef STRATA_INTERNAL_H
#define STRATA_INTERNAL_H
#include <stddef.h>

// Keeps `message` (truncated to 4095 bytes) as this thread's strata_last_error().
void strata_set_last_error(const char *message);
// malloc, for memory the caller frees with strata_free (never NULL for size 0 unless out of memory).
void *strata_allocate(size_t size);

// Forks since the library was loaded, in this process's line: a handle's owner check.
unsigned long long strata_fork_generation(void);

#endif
