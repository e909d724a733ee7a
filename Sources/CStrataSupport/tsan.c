#include "strata_support.h"

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define STRATA_TSAN 1
#endif
#endif

#ifdef STRATA_TSAN
void __tsan_acquire(void *address);
void __tsan_release(void *address);
void strata_tsan_acquire(void *address) { __tsan_acquire(address); }
void strata_tsan_release(void *address) { __tsan_release(address); }
#else
void strata_tsan_acquire(void *address) { (void)address; }
void strata_tsan_release(void *address) { (void)address; }
#endif
