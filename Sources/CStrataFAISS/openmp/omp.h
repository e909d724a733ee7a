// FAISS's headers include <omp.h> (HNSW.h declares its locks as omp_lock_t). The Swift
// toolchain's clang ships no omp.h; FAISS is built against GCC's libgomp, whose header sits
// in GCC's own include directory, which clang does not search. This directory is on the
// target's header path (Package.swift) so that <omp.h> finds this file, which includes that
// one: the lock types must be libgomp's exactly.
#if __has_include("/usr/lib/gcc/x86_64-linux-gnu/12/include/omp.h")
#include "/usr/lib/gcc/x86_64-linux-gnu/12/include/omp.h"
#elif __has_include("/usr/lib/gcc/x86_64-linux-gnu/13/include/omp.h")
#include "/usr/lib/gcc/x86_64-linux-gnu/13/include/omp.h"
#elif __has_include("/usr/lib/gcc/x86_64-linux-gnu/14/include/omp.h")
#include "/usr/lib/gcc/x86_64-linux-gnu/14/include/omp.h"
#else
#error "libgomp's omp.h not found under /usr/lib/gcc/x86_64-linux-gnu/{12,13,14}/include (install gcc)"
#endif
