/* A growable byte buffer with a hard cap (all output and wire assembly go
 * through it). Always NUL-terminated after its data. */
#ifndef EPODE_SRC_UTIL_BUF_H
#define EPODE_SRC_UTIL_BUF_H

#include <stddef.h>

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
/* Drops the first n bytes. */
void epode__buf_consume(epode__buf *b, size_t n);
void epode__buf_reset(epode__buf *b);
/* Hands the data to the caller (NUL-terminated, allocated with b->mem) and
 * leaves the buffer empty. Returns NULL on allocation failure of an empty buf. */
char *epode__buf_steal(epode__buf *b, size_t *len);

#endif
