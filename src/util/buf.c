#include "util/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/alloc.h"

void epode__buf_init(epode__buf *b, const epode_mem *mem, size_t max) {
  b->mem = mem;
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  b->max = max;
}

void epode__buf_free(epode__buf *b) {
  epode__free(b->mem, b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

static epode_err reserve(epode__buf *b, size_t extra) {
  if (extra > (size_t)-1 - b->len - 1) return EPODE_ERR_LIMIT;
  size_t need = b->len + extra + 1;
  if (b->max && need - 1 > b->max) return EPODE_ERR_LIMIT;
  if (need <= b->cap) return EPODE_OK;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < need) cap = cap > ((size_t)-1) / 2 ? need : cap * 2;
  char *p = epode__realloc(b->mem, b->data, cap);
  if (!p) return EPODE_ERR_NOMEM;
  b->data = p;
  b->cap = cap;
  return EPODE_OK;
}

epode_err epode__buf_append(epode__buf *b, const void *p, size_t n) {
  epode_err e = reserve(b, n);
  if (e) return e;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return EPODE_OK;
}

epode_err epode__buf_append_str(epode__buf *b, const char *s) {
  return epode__buf_append(b, s, strlen(s));
}

epode_err epode__buf_printf(epode__buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return EPODE_ERR_INVAL;
  epode_err e = reserve(b, (size_t)n);
  if (e) return e;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return EPODE_OK;
}

epode_err epode__buf_append_escaped(epode__buf *b, const char *s, size_t n, int attr) {
  size_t start = b->len;
  size_t run = 0; /* start of the pending unescaped run */
  for (size_t i = 0; i < n; i++) {
    const char *rep = NULL;
    switch (s[i]) {
    case '&': rep = "&amp;"; break;
    case '<': rep = "&lt;"; break;
    case '>': rep = "&gt;"; break;
    case '"': rep = attr ? "&quot;" : NULL; break;
    case '\'': rep = attr ? "&apos;" : NULL; break;
    case '\r': rep = "&#13;"; break;  /* keep CR across parsing (XML normalises it) */
    case '\t': rep = attr ? "&#9;" : NULL; break;
    case '\n': rep = attr ? "&#10;" : NULL; break;
    default: break;
    }
    if (!rep) continue;
    epode_err e = epode__buf_append(b, s + run, i - run);
    if (!e) e = epode__buf_append_str(b, rep);
    if (e) {
      b->len = start;
      if (b->data) b->data[start] = '\0';
      return e;
    }
    run = i + 1;
  }
  epode_err e = epode__buf_append(b, s + run, n - run);
  if (e) {
    b->len = start;
    if (b->data) b->data[start] = '\0';
  }
  return e;
}

void epode__buf_consume(epode__buf *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    if (b->data) b->data[0] = '\0';
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
  b->data[b->len] = '\0';
}

void epode__buf_reset(epode__buf *b) {
  b->len = 0;
  if (b->data) b->data[0] = '\0';
}

char *epode__buf_steal(epode__buf *b, size_t *len) {
  if (!b->data) {
    if (reserve(b, 0)) return NULL;
    b->data[0] = '\0'; /* a never-written buffer is not terminated yet */
  }
  char *d = b->data;
  if (len) *len = b->len;
  b->data = NULL;
  b->len = b->cap = 0;
  return d;
}
