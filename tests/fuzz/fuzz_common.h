/* Shared helpers for the fuzz targets: a byte reader over the input that
 * turns its first bytes into choices (framing, chunk sizes, limits) and the
 * rest into data. Header-only: each target is one translation unit. */
#ifndef EPODE_TESTS_FUZZ_COMMON_H
#define EPODE_TESTS_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

typedef struct fz_in {
  const uint8_t *p;
  size_t len;
} fz_in;

/* One byte of choice, 0 when the input is exhausted. */
static inline uint8_t fz_byte(fz_in *in) {
  if (!in->len) return 0;
  uint8_t b = *in->p++;
  in->len--;
  return b;
}

/* Deterministic random source for epode_config_set_random / the SASL params:
 * a counter, so runs are reproducible. */
static inline int fz_random(void *ud, unsigned char *buf, size_t len) {
  unsigned *ctr = ud;
  for (size_t i = 0; i < len; i++)
    buf[i] = (unsigned char)((*ctr)++ * 131u + 7u);
  return 0;
}

/* Chunk size for feeding: 0 means "all at once"; otherwise 1..255 bytes. */
static inline size_t fz_chunk(uint8_t sel, size_t left) {
  size_t c = sel & 0x7f;
  if (!c || sel & 0x80) return left;
  return c < left ? c : left;
}

/* Splits the data at a separator byte sequence "\x00\xff" (rare in text,
 * easy for the fuzzer to insert): returns the next piece. */
static inline int fz_next_piece(fz_in *in, const uint8_t **piece, size_t *len) {
  if (!in->len && !in->p) return 0;
  const uint8_t *start = in->p;
  for (size_t i = 0; i + 1 < in->len; i++) {
    if (start[i] == 0x00 && start[i + 1] == 0xff) {
      *piece = start;
      *len = i;
      in->p += i + 2;
      in->len -= i + 2;
      return 1;
    }
  }
  *piece = start;
  *len = in->len;
  in->p = NULL;
  in->len = 0;
  return 1;
}

#endif
