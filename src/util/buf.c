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

epode_err epode__buf_reserve(epode__buf *b, size_t extra) {
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
  epode_err e = epode__buf_reserve(b, n);
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
  epode_err e = epode__buf_reserve(b, (size_t)n);
  if (e) return e;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return EPODE_OK;
}

/* What each byte becomes when escaped: an index into `esc_rep`, 0 for
 * itself. Text escapes & < > and CR (which XML would normalise);
 * attribute values also " ' and the tab and line feed (which attribute
 * value normalisation would turn into spaces). */
static const char esc_rep[][8] = {"",       "&amp;", "&lt;", "&gt;", "&quot;",
                                  "&apos;", "&#13;", "&#9;", "&#10;"};
static const unsigned char esc_len[] = {0, 5, 4, 4, 6, 6, 5, 4, 5};
static const unsigned char esc_text[256] = {['&'] = 1, ['<'] = 2, ['>'] = 3, ['\r'] = 6};
static const unsigned char esc_attr[256] = {
    ['&'] = 1, ['<'] = 2, ['>'] = 3, ['"'] = 4, ['\''] = 5, ['\r'] = 6, ['\t'] = 7, ['\n'] = 8};

epode_err epode__buf_append_escaped(epode__buf *b, const char *s, size_t n, int attr) {
  const unsigned char *tab = attr ? esc_attr : esc_text;
  size_t start = b->len;
  epode_err e = EPODE_OK;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    const unsigned char *u = (const unsigned char *)s;
    while (n - j >= 4 && !(tab[u[j]] | tab[u[j + 1]] | tab[u[j + 2]] | tab[u[j + 3]]))
      j += 4;
    while (j < n && !tab[u[j]])
      j++;
    if (j > i && (e = epode__buf_add(b, s + i, j - i))) break;
    if (j == n) break;
    unsigned k = tab[(unsigned char)s[j]];
    if ((e = epode__buf_add(b, esc_rep[k], esc_len[k]))) break;
    i = j + 1;
  }
  if (!e && !b->data) e = epode__buf_reserve(b, 0); /* n == 0: still terminated, as before */
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
    if (epode__buf_reserve(b, 0)) return NULL;
    b->data[0] = '\0'; /* a never-written buffer is not terminated yet */
  }
  char *d = b->data;
  if (len) *len = b->len;
  b->data = NULL;
  b->len = b->cap = 0;
  return d;
}
