/* A failing allocator for the unit tests: epode_mem hooks that fail a chosen
 * allocation call and count what they see, so that a test can fail each
 * allocation of a scenario in turn and check that nothing leaks.
 *
 *   epode_test_failmem f;
 *   epode_test_failmem_init(&f, n);      // call n fails, the others succeed
 *   epode_x_new(&x, &f.mem, ...);        // the hooks are f.mem (ud = &f)
 *   ...
 *   assert_int_equal(f.live, 0);         // every block was freed
 *
 * alloc and realloc are calls (numbered from 1); free is not. The struct may
 * be reused: init it again (the hooks in f.mem keep pointing at it), or set
 * fail_at and calls directly to arm the failure only after some setup.
 *
 * EPODE_ALLOC_TRACE=N in the environment prints a backtrace to stderr when
 * call N is made to fail (to find the call site behind a failing run). */
#ifndef EPODE_TEST_FAILMEM_H
#define EPODE_TEST_FAILMEM_H

#include <stddef.h>

#include "epode/mem.h"

typedef struct epode_test_failmem {
  long fail_at;   /* the call that fails, counting from 1; < 1: none */
  int sticky;     /* nonzero: every call after fail_at fails as well */
  long calls;     /* alloc and realloc calls so far, the failed ones included */
  long failed;    /* calls made to fail */
  long live;      /* blocks allocated (alloc, or realloc of NULL) and not freed */
  size_t biggest; /* the largest size asked for */
  epode_mem mem;  /* the hooks; ud is this struct */
} epode_test_failmem;

/* Makes call `fail_at` (counting from 1) fail and only that one; fail_at < 1:
 * none fails. Zeroes the counters and sets f->mem. */
void epode_test_failmem_init(epode_test_failmem *f, long fail_at);

/* The first `budget` calls succeed and every later one fails; budget < 0:
 * none fails. (A run that meets a failure keeps failing, as when memory is
 * really exhausted.) Zeroes the counters and sets f->mem. */
void epode_test_failmem_init_budget(epode_test_failmem *f, long budget);

#endif
