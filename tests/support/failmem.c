/* The failing allocator behind tests/support/failmem.h. */
#include "failmem.h"

#include <execinfo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void trace(const epode_test_failmem *f) {
  const char *t = getenv("EPODE_ALLOC_TRACE");
  if (!t || atol(t) != f->calls) return;
  void *frames[32];
  int n = backtrace(frames, 32);
  fprintf(stderr, "allocation %ld:\n", f->calls);
  backtrace_symbols_fd(frames, n, 2);
}

/* Counts the call; returns nonzero when it is to fail. */
static int fails(epode_test_failmem *f, size_t n) {
  if (n > f->biggest) f->biggest = n;
  f->calls++;
  if (f->fail_at < 1 || f->calls < f->fail_at) return 0;
  if (f->calls > f->fail_at && !f->sticky) return 0;
  f->failed++;
  trace(f);
  return 1;
}

static void *fm_alloc(size_t n, void *ud) {
  epode_test_failmem *f = ud;
  if (fails(f, n)) return NULL;
  void *p = malloc(n);
  if (p) f->live++;
  return p;
}

static void *fm_realloc(void *p, size_t n, void *ud) {
  epode_test_failmem *f = ud;
  if (fails(f, n)) return NULL;
  void *q = realloc(p, n);
  if (q && !p) f->live++;
  return q;
}

static void fm_free(void *p, void *ud) {
  epode_test_failmem *f = ud;
  if (p) f->live--;
  free(p);
}

void epode_test_failmem_init(epode_test_failmem *f, long fail_at) {
  memset(f, 0, sizeof *f);
  f->fail_at = fail_at;
  f->mem = (epode_mem){fm_alloc, fm_realloc, fm_free, f};
}

void epode_test_failmem_init_budget(epode_test_failmem *f, long budget) {
  epode_test_failmem_init(f, budget < 0 ? 0 : budget + 1);
  f->sticky = 1;
}
