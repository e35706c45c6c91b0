/* Text handling for the program: what a message body may contain, reading
 * stdin, and the two output formats of `epode listen`. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Decodes one UTF-8 sequence at s[i]; returns its length (0 if invalid) and
 * the code point in *cp. Strict: shortest form only, no surrogates. */
static size_t utf8_decode(const unsigned char *s, size_t len, size_t i, unsigned long *cp) {
  unsigned char c = s[i];
  size_t n;
  unsigned long v, min;
  if (c < 0x80) {
    *cp = c;
    return 1;
  } else if (c >= 0xC2 && c <= 0xDF) {
    n = 2, v = c & 0x1Fu, min = 0x80;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3, v = c & 0x0Fu, min = 0x800;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4, v = c & 0x07u, min = 0x10000;
  } else {
    return 0;
  }
  if (len - i < n) return 0;
  for (size_t k = 1; k < n; k++) {
    if ((s[i + k] & 0xC0u) != 0x80u) return 0;
    v = (v << 6) | (s[i + k] & 0x3Fu);
  }
  if (v < min || v > 0x10FFFFul || (v >= 0xD800ul && v <= 0xDFFFul)) return 0;
  *cp = v;
  return n;
}

int app_utf8_valid(const char *s, size_t len, size_t *bad) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  unsigned long cp;
  while (i < len) {
    size_t n = utf8_decode(u, len, i, &cp);
    if (!n) {
      if (bad) *bad = i;
      return 0;
    }
    i += n;
  }
  return 1;
}

const char *app_body_problem(const char *s, size_t len, size_t *at) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  unsigned long cp;
  while (i < len) {
    size_t n = utf8_decode(u, len, i, &cp);
    *at = i;
    if (!n) return "invalid UTF-8";
    if (cp == 0) return "a NUL byte (XML cannot carry it)";
    if (cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r')
      return "a control character (XML 1.0 allows only tab, LF and CR)";
    if (cp == 0xFFFE || cp == 0xFFFF) return "U+FFFE/U+FFFF (not allowed in XML)";
    i += n;
  }
  return NULL;
}

int app_read_all(FILE *f, size_t max, char **out, size_t *len) {
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap + 1);
  if (!buf) return -1;
  for (;;) {
    if (n == cap) {
      if (cap > max) break;
      size_t ncap = cap * 2;
      char *nb = realloc(buf, ncap + 1);
      if (!nb) {
        free(buf);
        errno = ENOMEM;
        return -1;
      }
      buf = nb, cap = ncap;
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) {
      if (ferror(f)) {
        int e = errno;
        free(buf);
        errno = e ? e : EIO;
        return -1;
      }
      break;
    }
  }
  if (n > max) {
    free(buf);
    return -2;
  }
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return 0;
}

void app_json_string(FILE *f, const char *s) {
  static const char hex[] = "0123456789abcdef";
  putc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    unsigned char c = *p;
    switch (c) {
    case '"': fputs("\\\"", f); break;
    case '\\': fputs("\\\\", f); break;
    case '\n': fputs("\\n", f); break;
    case '\r': fputs("\\r", f); break;
    case '\t': fputs("\\t", f); break;
    case '\b': fputs("\\b", f); break;
    case '\f': fputs("\\f", f); break;
    default:
      if (c < 0x20 || c == 0x7F) {
        fputs("\\u00", f);
        putc(hex[c >> 4], f);
        putc(hex[c & 15], f);
      } else {
        putc(c, f); /* UTF-8 passes through: the stanza text is valid UTF-8 */
      }
    }
  }
  putc('"', f);
}

void app_plain_escaped(FILE *f, const char *s) {
  for (const char *p = s; *p; p++) {
    switch (*p) {
    case '\\': fputs("\\\\", f); break;
    case '\n': fputs("\\n", f); break;
    case '\r': fputs("\\r", f); break;
    default: putc(*p, f);
    }
  }
}
