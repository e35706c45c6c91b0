#include "util/alloc.h"

#include <stdlib.h>
#include <string.h>

static void *default_alloc(size_t n, void *ud) {
  (void)ud;
  return malloc(n);
}
static void *default_realloc(void *p, size_t n, void *ud) {
  (void)ud;
  return realloc(p, n);
}
static void default_free(void *p, void *ud) {
  (void)ud;
  free(p);
}

const epode_mem epode__mem_default = {default_alloc, default_realloc, default_free, NULL};

const epode_mem *epode__mem_or_default(const epode_mem *m) {
  return m ? m : &epode__mem_default;
}

void *epode__alloc(const epode_mem *m, size_t n) {
  m = epode__mem_or_default(m);
  return m->alloc(n ? n : 1, m->ud);
}

void *epode__calloc(const epode_mem *m, size_t n) {
  void *p = epode__alloc(m, n);
  if (p) memset(p, 0, n ? n : 1);
  return p;
}

void *epode__realloc(const epode_mem *m, void *p, size_t n) {
  m = epode__mem_or_default(m);
  return m->realloc(p, n ? n : 1, m->ud);
}

void epode__free(const epode_mem *m, void *p) {
  if (!p) return;
  m = epode__mem_or_default(m);
  m->free(p, m->ud);
}

void epode_free(const epode_mem *mem, void *ptr) { epode__free(mem, ptr); }

char *epode__strndup(const epode_mem *m, const char *s, size_t n) {
  char *d = epode__alloc(m, n + 1);
  if (!d) return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

char *epode__strdup(const epode_mem *m, const char *s) {
  return s ? epode__strndup(m, s, strlen(s)) : NULL;
}

void epode__wipe(void *p, size_t n) {
  volatile unsigned char *v = p;
  while (n--) *v++ = 0;
}

void epode__free_secret(const epode_mem *m, char *s) {
  if (!s) return;
  epode__wipe(s, strlen(s));
  epode__free(m, s);
}
