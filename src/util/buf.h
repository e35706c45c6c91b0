/* A growable byte buffer with a hard cap (all output and wire assembly go
 * through it). Always NUL-terminated after its data. */
#ifndef EPODE_SRC_UTIL_BUF_H
#define EPODE_SRC_UTIL_BUF_H

#include <stddef.h>
#include <string.h>

#include "epode/error.h"
#include "epode/mem.h"

typedef struct epode__buf {
  const epode_mem *mem;
  char *data;
  size_t len;
  size_t cap;
  size_t max; /* 0 = unbounded */
} epode__buf;

void epode__buf_init(epode__buf *b, const epode_mem *mem, size_t max);
void epode__buf_free(epode__buf *b);
/* EPODE_ERR_LIMIT past `max`, EPODE_ERR_NOMEM; the buffer is unchanged then. */
epode_err epode__buf_append(epode__buf *b, const void *p, size_t n);
epode_err epode__buf_append_str(epode__buf *b, const char *s);
epode_err epode__buf_printf(epode__buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends with XML escaping: attr=1 escapes & < > " ', attr=0 escapes & < >. */
epode_err epode__buf_append_escaped(epode__buf *b, const char *s, size_t n, int attr);
/* Makes room for n more bytes (and the NUL): EPODE_ERR_LIMIT past `max`,
 * EPODE_ERR_NOMEM; the buffer is unchanged then. */
epode_err epode__buf_reserve(epode__buf *b, size_t n);
/* Whether n more bytes fit without growing and within `max`. */
static inline int epode__buf_fits(const epode__buf *b, size_t n) {
  return n < b->cap - b->len && (!b->max || n <= b->max - b->len);
}
/* epode__buf_append for the serialiser's many small pieces: no call when
 * they fit. */
static inline epode_err epode__buf_add(epode__buf *b, const char *p, size_t n) {
  if (!epode__buf_fits(b, n)) {
    epode_err e = epode__buf_reserve(b, n);
    if (e) return e;
  }
  char *d = b->data + b->len;
  memcpy(d, p, n); /* a few moves when n is a constant */
  b->len += n;
  d[n] = '\0';
  return EPODE_OK;
}
/* Drops the first n bytes. */
void epode__buf_consume(epode__buf *b, size_t n);
void epode__buf_reset(epode__buf *b);
/* Hands the data to the caller (NUL-terminated, allocated with b->mem) and
 * leaves the buffer empty. Returns NULL on allocation failure of an empty buf. */
char *epode__buf_steal(epode__buf *b, size_t *len);

#endif
