// glibc's mallopt and malloc_trim, which Swift's Glibc module does not expose.

#include "include/ckernels.h"

// Any C library header defines (or not) __GLIBC__: without one first, the test below would
// always fail and the policy silently never apply.
#include <limits.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

int evk_retain_freed_memory(void) {
#if defined(__GLIBC__)
  return mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1;
#else
  return 0;
#endif
}

int evk_limit_arenas(int count) {
#if defined(__GLIBC__)
  return mallopt(M_ARENA_MAX, count);
#else
  (void)count;
  return 0;
#endif
}

int evk_release_free_memory(void) {
#if defined(__GLIBC__)
  return malloc_trim(0);
#else
  return 0;
#endif
}
