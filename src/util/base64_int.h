/* Allocation-free base64 primitives behind include/epode/base64.h, for
 * callers that already own a buffer (SCRAM, the session's SASL framing). */
#ifndef EPODE_SRC_UTIL_BASE64_INT_H
#define EPODE_SRC_UTIL_BASE64_INT_H

#include <stddef.h>

#include "epode/error.h"
#include "util/buf.h"

/* Encoded length of n bytes (4 * ceil(n / 3)), or 0 with *ok=0 on overflow. */
size_t epode__base64_enc_len(size_t n, int *ok);
/* Writes exactly epode__base64_enc_len(n) characters to out (no NUL). */
void epode__base64_enc(const unsigned char *in, size_t n, char *out);
/* Appends the encoding of p[0..n) to b (the buffer is unchanged on error). */
epode_err epode__base64_enc_buf(epode__buf *b, const void *p, size_t n);
/* Strict decode of in[0..n) into out, which must hold n / 4 * 3 bytes.
 * EPODE_ERR_BASE64 on any defect (see base64.h); out is then undefined. */
epode_err epode__base64_dec(const char *in, size_t n, unsigned char *out, size_t *out_len);

#endif
