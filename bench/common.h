/* Helpers shared by the benchmark clients: clocks, CPU time, RSS, the
 * descriptor limit, and a counting malloc (every allocation in the process,
 * including expat's and OpenSSL's, which the libraries' own hooks miss). */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>

double bench_now(void);   /* seconds, CLOCK_MONOTONIC */
double bench_cpu(void);   /* user + system seconds of this process */
long bench_rss_kib(void); /* VmRSS */
long bench_hwm_kib(void); /* VmHWM */
/* Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now. */
long bench_raise_nofile(void);
/* Process-wide malloc/calloc/realloc calls so far. */
uint64_t bench_mallocs(void);
/* "RESULT key=value ..." lines for the driver. */
void bench_result(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
