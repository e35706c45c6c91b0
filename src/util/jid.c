/* JIDs (RFC 7622): split, validate, normalise.
 *
 * No PRECIS/IDNA mapping is done (that would need Unicode tables); what is
 * checked is structure, length, UTF-8 validity and the characters RFC 7622
 * and its PRECIS profiles always refuse: control characters everywhere,
 * spaces in local and domain parts, " & ' / : < > @ in the localpart.
 * Normalisation is what can be done without tables: ASCII lower-casing of
 * the domain and removal of its trailing dot (RFC 7622 §3.2).
 *
 * A parsed JID is one allocation: the struct followed by its strings. */
#include "epode/jid.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

#include "epode_limits.h"
#include "util/alloc.h"

struct epode_jid {
  epode_mem mem;
  char *local; /* NULL when absent */
  char *domain;
  char *resource; /* NULL when absent */
  char *bare;
  char *full;
};

typedef struct parts {
  const char *local, *domain, *resource; /* local/resource NULL if absent */
  size_t llen, dlen, rlen;               /* dlen without a trailing dot */
} parts;

/* Strict UTF-8 decode of one sequence; 0 if invalid or truncated. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
  unsigned char c = s[0];
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t len;
  uint32_t v, min;
  if (c >= 0xC2 && c <= 0xDF)
    len = 2, v = c & 0x1F, min = 0x80;
  else if (c >= 0xE0 && c <= 0xEF)
    len = 3, v = c & 0x0F, min = 0x800;
  else if (c >= 0xF0 && c <= 0xF4)
    len = 4, v = c & 0x07, min = 0x10000;
  else
    return 0;
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    v = (v << 6) | (s[i] & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  *cp = v;
  return len;
}

static int is_control(uint32_t c) { return c < 0x20 || (c >= 0x7F && c <= 0x9F); }

/* Unicode space separators (Zs), refused by the PRECIS IdentifierClass. */
static int is_space(uint32_t c) {
  return c == 0x20 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

enum { PART_LOCAL, PART_DOMAIN, PART_RESOURCE };

static int check_part(const char *s, size_t n, int kind) {
  if (n == 0 || n > EPODE_MAX_JID_PART_BYTES) return 0;
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    uint32_t c;
    size_t l = utf8_decode(u + i, n - i, &c);
    if (!l || is_control(c)) return 0;
    if (kind != PART_RESOURCE && is_space(c)) return 0;
    if (kind == PART_LOCAL && c < 0x80 && strchr("\"&'/:<>@", (int)c)) return 0;
    if (kind == PART_DOMAIN && c < 0x80) {
      /* ASCII in a domain: letters, digits, hyphen, dot (and underscore,
       * which some deployments use in host names); labels not empty. */
      int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '_' || c == '.';
      if (!ok) return 0;
      if (c == '.' && (i == 0 || s[i - 1] == '.' || i + 1 == n)) return 0;
    }
    i += l;
  }
  return 1;
}

static int check_domain(const char *s, size_t n) {
  if (n > 0 && s[0] == '[') {
    /* IPv6 literal, RFC 7622 §3.2 (IP-literal of RFC 3986 without IPvFuture). */
    char tmp[64];
    unsigned char addr[16];
    if (n < 3 || s[n - 1] != ']' || n - 2 >= sizeof tmp) return 0;
    memcpy(tmp, s + 1, n - 2);
    tmp[n - 2] = '\0';
    return inet_pton(AF_INET6, tmp, addr) == 1;
  }
  return check_part(s, n, PART_DOMAIN);
}

static int split(const char *s, parts *pt) {
  size_t n = strlen(s);
  if (n == 0 || n > EPODE_MAX_JID_BYTES + 1) return 0; /* +1: a trailing dot */
  memset(pt, 0, sizeof *pt);
  /* RFC 7622 §3.1: the first '/' starts the resource; then the first '@'
   * before it ends the localpart. */
  const char *slash = memchr(s, '/', n);
  size_t pre = slash ? (size_t)(slash - s) : n;
  if (slash) {
    pt->resource = slash + 1;
    pt->rlen = n - pre - 1;
    if (!check_part(pt->resource, pt->rlen, PART_RESOURCE)) return 0;
  }
  const char *at = memchr(s, '@', pre);
  if (at) {
    pt->local = s;
    pt->llen = (size_t)(at - s);
    if (!check_part(pt->local, pt->llen, PART_LOCAL)) return 0;
    pt->domain = at + 1;
    pt->dlen = pre - pt->llen - 1;
  } else {
    pt->domain = s;
    pt->dlen = pre;
  }
  if (pt->dlen > 1 && pt->domain[pt->dlen - 1] == '.' && pt->domain[0] != '[') pt->dlen--;
  if (n - (pre - (size_t)(pt->domain - s) - pt->dlen) > EPODE_MAX_JID_BYTES) return 0;
  return check_domain(pt->domain, pt->dlen);
}

epode_err epode_jid_validate(const char *s) {
  parts pt;
  return s && split(s, &pt) ? EPODE_OK : EPODE_ERR_JID;
}

static char *put(char **p, const char *s, size_t n) {
  char *d = *p;
  memcpy(d, s, n);
  d[n] = '\0';
  *p = d + n + 1;
  return d;
}

epode_err epode_jid_parse(epode_jid **out, const epode_mem *mem, const char *s) {
  if (!out) return EPODE_ERR_INVAL;
  *out = NULL;
  parts pt;
  if (!s || !split(s, &pt)) return EPODE_ERR_JID;
  size_t bare = (pt.local ? pt.llen + 1 : 0) + pt.dlen;
  size_t full = bare + (pt.resource ? pt.rlen + 1 : 0);
  size_t need = (pt.local ? pt.llen + 1 : 0) + pt.dlen + 1 + (pt.resource ? pt.rlen + 1 : 0) +
                bare + 1 + full + 1;
  mem = epode__mem_or_default(mem);
  epode_jid *j = epode__alloc(mem, sizeof(*j) + need);
  if (!j) return EPODE_ERR_NOMEM;
  j->mem = *mem;
  char *p = (char *)(j + 1);
  j->local = pt.local ? put(&p, pt.local, pt.llen) : NULL;
  j->domain = put(&p, pt.domain, pt.dlen);
  for (char *c = j->domain; *c; c++)
    if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
  j->resource = pt.resource ? put(&p, pt.resource, pt.rlen) : NULL;
  j->bare = p;
  if (j->local) {
    memcpy(p, j->local, pt.llen);
    p += pt.llen;
    *p++ = '@';
  }
  memcpy(p, j->domain, pt.dlen + 1);
  p += pt.dlen + 1;
  j->full = p;
  memcpy(p, j->bare, bare);
  p += bare;
  if (j->resource) {
    *p++ = '/';
    memcpy(p, j->resource, pt.rlen);
    p += pt.rlen;
  }
  *p = '\0';
  *out = j;
  return EPODE_OK;
}

void epode_jid_free(epode_jid *jid) {
  if (!jid) return;
  epode_mem m = jid->mem;
  epode__free(&m, jid);
}

const char *epode_jid_local(const epode_jid *jid) { return jid ? jid->local : NULL; }
const char *epode_jid_domain(const epode_jid *jid) { return jid ? jid->domain : NULL; }
const char *epode_jid_resource(const epode_jid *jid) { return jid ? jid->resource : NULL; }
const char *epode_jid_bare(const epode_jid *jid) { return jid ? jid->bare : NULL; }
const char *epode_jid_full(const epode_jid *jid) { return jid ? jid->full : NULL; }
