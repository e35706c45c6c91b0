/* Internal allocation through the per-object epode_mem hooks. */
#ifndef EPODE_SRC_UTIL_ALLOC_H
#define EPODE_SRC_UTIL_ALLOC_H

#include <stddef.h>

#include "epode/mem.h"

/* The default hooks (malloc/realloc/free). */
extern const epode_mem epode__mem_default;
/* `m` or the default when NULL. */
const epode_mem *epode__mem_or_default(const epode_mem *m);

void *epode__alloc(const epode_mem *m, size_t n);
void *epode__calloc(const epode_mem *m, size_t n); /* zeroed */
void *epode__realloc(const epode_mem *m, void *p, size_t n);
void epode__free(const epode_mem *m, void *p);
char *epode__strdup(const epode_mem *m, const char *s);
char *epode__strndup(const epode_mem *m, const char *s, size_t n);
/* Overwrites then frees (for secrets). */
void epode__free_secret(const epode_mem *m, char *s);
/* memset that the compiler may not drop. */
void epode__wipe(void *p, size_t n);

#endif
