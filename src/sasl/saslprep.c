/* SASLprep (RFC 4013) through libidn's stringprep. Usernames and passwords
 * are nearly always plain ASCII, for which SASLprep is the identity, so
 * that case skips libidn (and its malloc) entirely. */
#include <stringprep.h>
#include <string.h>

#include "sasl/sasl.h"
#include "util/alloc.h"

#if defined(__has_include)
#if __has_include(<idn-free.h>)
#include <idn-free.h>
#define EPODE__IDN_FREE(p) idn_free(p)
#endif
#endif
#ifndef EPODE__IDN_FREE
#include <stdlib.h>
#define EPODE__IDN_FREE(p) free(p)
#endif

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF):
 * libidn's own decoder is lenient in older releases, and a malformed
 * password must fail here rather than be silently altered. */
static int utf8_valid(const unsigned char *s) {
  while (*s) {
    unsigned c = *s;
    if (c < 0x80) {
      s++;
      continue;
    }
    size_t n;
    unsigned cp, min;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1, cp = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2, cp = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return 0;
    }
    for (size_t i = 1; i <= n; i++) {
      if ((s[i] & 0xC0) != 0x80) return 0; /* also stops at the NUL */
      cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    s += n + 1;
  }
  return 1;
}

epode_err epode__saslprep(const epode_mem *mem, const char *in, char **out) {
  if (!in || !out) return EPODE_ERR_INVAL;
  *out = NULL;
  const unsigned char *u = (const unsigned char *)in;
  size_t i = 0;
  /* Printable ASCII and space map to themselves and are neither prohibited
   * nor bidirectional: nothing for stringprep to do. */
  while (u[i] >= 0x20 && u[i] < 0x7F)
    i++;
  if (u[i] == '\0') {
    *out = epode__strndup(mem, in, i);
    return *out ? EPODE_OK : EPODE_ERR_NOMEM;
  }
  if (!utf8_valid(u)) return EPODE_ERR_INVAL;
  char *res = NULL;
  /* Flags 0: unassigned code points are allowed, as for a "query" string
   * (RFC 4013 section 2.5); the server applies the stored-string rules. */
  int rc = stringprep_profile(in, &res, "SASLprep", 0);
  if (rc != STRINGPREP_OK) {
    if (res) EPODE__IDN_FREE(res);
    return rc == STRINGPREP_MALLOC_ERROR ? EPODE_ERR_NOMEM : EPODE_ERR_INVAL;
  }
  size_t n = strlen(res);
  *out = epode__strndup(mem, res, n);
  /* The result may be a password: wipe libidn's copy before it goes. */
  epode__wipe(res, n);
  EPODE__IDN_FREE(res);
  return *out ? EPODE_OK : EPODE_ERR_NOMEM;
}
