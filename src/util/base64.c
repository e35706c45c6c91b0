/* Base64 (RFC 4648 section 4), strict: the decoder accepts exactly the
 * canonical encoding of some byte string, so two encodings never decode to
 * the same bytes (SCRAM compares what it decodes; a lenient decoder would
 * let a peer smuggle data in padding bits or whitespace). Table-driven in
 * both directions. */
#include "epode/base64.h"

#include <stdint.h>

#include "util/alloc.h"
#include "util/base64_int.h"

static const char enc_tab[64] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* 0..63 for alphabet characters, 0xFF for everything else ('=' included:
 * padding is handled separately, at the end only). */
#define X 0xFF
static const unsigned char dec_tab[256] = {
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  /* 0x00 */
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  /* 0x10 */
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  62, X,  X,  X,  63, /* 0x20 */
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, X,  X,  X,  X,  X,  X,  /* 0x30 */
    X,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, /* 0x40 */
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, X,  X,  X,  X,  X,  /* 0x50 */
    X,  26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, /* 0x60 */
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, X,  X,  X,  X,  X,  /* 0x70 */
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  /* 0x80 */
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  /* 0x90 */
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  /* 0xA0 */
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  /* 0xB0 */
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  /* 0xC0 */
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  /* 0xD0 */
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  /* 0xE0 */
    X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  X,  /* 0xF0 */
};
#undef X

size_t epode__base64_enc_len(size_t n, int *ok) {
  size_t groups = n / 3 + (n % 3 != 0);
  if (groups > SIZE_MAX / 4 - 1) { /* keep room for the caller's NUL */
    *ok = 0;
    return 0;
  }
  *ok = 1;
  return groups * 4;
}

void epode__base64_enc(const unsigned char *in, size_t n, char *out) {
  size_t i = 0;
  for (; n - i >= 3; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    *out++ = enc_tab[v >> 18];
    *out++ = enc_tab[(v >> 12) & 63];
    *out++ = enc_tab[(v >> 6) & 63];
    *out++ = enc_tab[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)in[i] << 16;
    *out++ = enc_tab[v >> 18];
    *out++ = enc_tab[(v >> 12) & 63];
    *out++ = '=';
    *out++ = '=';
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    *out++ = enc_tab[v >> 18];
    *out++ = enc_tab[(v >> 12) & 63];
    *out++ = enc_tab[(v >> 6) & 63];
    *out++ = '=';
  }
}

epode_err epode__base64_enc_buf(epode__buf *b, const void *p, size_t n) {
  int ok;
  size_t el = epode__base64_enc_len(n, &ok);
  if (!ok || el > (size_t)-1 - b->len - 1) return EPODE_ERR_LIMIT;
  if (b->max && b->len + el > b->max) return EPODE_ERR_LIMIT;
  /* buf.h has no "reserve", so encode through a stack chunk; on failure
   * roll back to the original length. */
  const unsigned char *in = p;
  size_t start = b->len;
  char chunk[1024];
  do {
    size_t take = n > 768 ? 768 : n; /* 768 bytes -> 1024 characters */
    size_t cl = epode__base64_enc_len(take, &ok);
    epode__base64_enc(in, take, chunk);
    epode_err e = epode__buf_append(b, chunk, cl);
    if (e) {
      b->len = start;
      if (b->data) b->data[start] = '\0';
      return e;
    }
    in += take;
    n -= take;
  } while (n);
  return EPODE_OK;
}

epode_err epode__base64_dec(const char *in, size_t n, unsigned char *out, size_t *out_len) {
  const unsigned char *s = (const unsigned char *)in;
  *out_len = 0;
  if (n % 4) return EPODE_ERR_BASE64;
  if (n == 0) return EPODE_OK;
  /* All quanta but the last are four alphabet characters. OR-ing the table
   * values lets one branch per quantum catch any invalid character. */
  size_t full = n / 4 - 1;
  unsigned char *o = out;
  for (size_t q = 0; q < full; q++, s += 4) {
    unsigned a = dec_tab[s[0]], b = dec_tab[s[1]], c = dec_tab[s[2]], d = dec_tab[s[3]];
    if ((a | b | c | d) & 0x80) return EPODE_ERR_BASE64;
    uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | d;
    *o++ = (unsigned char)(v >> 16);
    *o++ = (unsigned char)(v >> 8);
    *o++ = (unsigned char)v;
  }
  /* The last quantum: "xxxx", "xxx=" or "xx==", with the bits that the
   * padding leaves over required to be zero (RFC 4648 section 3.5). */
  unsigned a = dec_tab[s[0]], b = dec_tab[s[1]];
  if ((a | b) & 0x80) return EPODE_ERR_BASE64;
  if (s[3] != '=') {
    unsigned c = dec_tab[s[2]], d = dec_tab[s[3]];
    if ((c | d) & 0x80) return EPODE_ERR_BASE64;
    uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | d;
    *o++ = (unsigned char)(v >> 16);
    *o++ = (unsigned char)(v >> 8);
    *o++ = (unsigned char)v;
  } else if (s[2] != '=') {
    unsigned c = dec_tab[s[2]];
    if ((c & 0x80) || (c & 0x03)) return EPODE_ERR_BASE64;
    uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6;
    *o++ = (unsigned char)(v >> 16);
    *o++ = (unsigned char)(v >> 8);
  } else {
    if (b & 0x0F) return EPODE_ERR_BASE64;
    *o++ = (unsigned char)(((uint32_t)a << 2) | (b >> 4));
  }
  *out_len = (size_t)(o - out);
  return EPODE_OK;
}

epode_err epode_base64_encode(const epode_mem *mem, const void *data, size_t len, char **out,
                              size_t *out_len) {
  if (!out || (!data && len)) return EPODE_ERR_INVAL;
  *out = NULL;
  if (out_len) *out_len = 0;
  int ok;
  size_t el = epode__base64_enc_len(len, &ok);
  if (!ok) return EPODE_ERR_LIMIT;
  char *s = epode__alloc(mem, el + 1);
  if (!s) return EPODE_ERR_NOMEM;
  if (len) epode__base64_enc(data, len, s);
  s[el] = '\0';
  *out = s;
  if (out_len) *out_len = el;
  return EPODE_OK;
}

epode_err epode_base64_decode(const epode_mem *mem, const char *b64, size_t len,
                              unsigned char **out, size_t *out_len) {
  if (!out || (!b64 && len)) return EPODE_ERR_INVAL;
  *out = NULL;
  if (out_len) *out_len = 0;
  /* Reject before allocating: a hostile peer should not make us allocate
   * for input that cannot be valid. */
  if (len % 4) return EPODE_ERR_BASE64;
  unsigned char *d = epode__alloc(mem, len / 4 * 3 + 1);
  if (!d) return EPODE_ERR_NOMEM;
  size_t dl = 0;
  epode_err e = len ? epode__base64_dec(b64, len, d, &dl) : EPODE_OK;
  if (e) {
    epode__free(mem, d);
    return e;
  }
  d[dl] = '\0';
  *out = d;
  if (out_len) *out_len = dl;
  return EPODE_OK;
}
