/* epode — allocation hooks.
 *
 * Every object takes an optional `const epode_mem *` at creation; NULL means
 * the C library's malloc/realloc/free. The struct is copied, so it need not
 * outlive the call. Tests use it to fail each allocation in turn. */
#ifndef EPODE_MEM_H
#define EPODE_MEM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct epode_mem {
  void *(*alloc)(size_t size, void *ud);
  void *(*realloc)(void *ptr, size_t size, void *ud);
  void (*free)(void *ptr, void *ud);
  void *ud;
} epode_mem;

/* Frees memory that an epode call handed to the caller (for example the
 * string from epode_stanza_to_string()). `mem` must be the hooks the owning
 * object was created with (NULL for the default). */
void epode_free(const epode_mem *mem, void *ptr);

#ifdef __cplusplus
}
#endif
#endif
