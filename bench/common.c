#define _GNU_SOURCE
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double bench_cpu(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static long status_kib(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  size_t kl = strlen(key);
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, key, kl) == 0) {
      sscanf(line + kl, "%ld", &v);
      break;
    }
  fclose(f);
  return v;
}

long bench_rss_kib(void) { return status_kib("VmRSS:"); }
long bench_hwm_kib(void) { return status_kib("VmHWM:"); }

long bench_raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl)) return -1;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  return (long)rl.rlim_cur;
}

void bench_result(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("RESULT ", stdout);
  vprintf(fmt, ap);
  fputc('\n', stdout);
  fflush(stdout);
  va_end(ap);
}

/* Counting allocator: the executable's malloc family interposes glibc's
 * for every library in the process; each forwards to glibc's own entry
 * points. The clients are single-threaded, so a plain counter will do. */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

static uint64_t n_mallocs;

uint64_t bench_mallocs(void) { return n_mallocs; }

void *malloc(size_t n) {
  n_mallocs++;
  return __libc_malloc(n);
}
void *calloc(size_t a, size_t b) {
  n_mallocs++;
  return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n) {
  n_mallocs++;
  return __libc_realloc(p, n);
}
void free(void *p) { __libc_free(p); }
