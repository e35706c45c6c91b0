/* epode — base64 (RFC 4648, standard alphabet, padded). */
#ifndef EPODE_BASE64_H
#define EPODE_BASE64_H

#include <stddef.h>

#include "error.h"
#include "mem.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Encodes `len` bytes; *out is NUL-terminated, free with epode_free(mem). */
epode_err epode_base64_encode(const epode_mem *mem, const void *data, size_t len, char **out,
                              size_t *out_len);
/* Decodes; whitespace is not allowed, padding is required, non-zero trailing
 * bits are rejected. *out has a NUL after the data; free with epode_free(mem).
 * EPODE_ERR_BASE64 on bad input. */
epode_err epode_base64_decode(const epode_mem *mem, const char *b64, size_t len,
                              unsigned char **out, size_t *out_len);

#ifdef __cplusplus
}
#endif
#endif
