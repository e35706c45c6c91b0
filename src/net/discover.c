/* XEP-0156 discovery: host-meta (XRD) and host-meta.json over HTTPS with
 * libcurl's multi interface, through the owner's loop.
 *
 * Why the resolver dance (see discover.h): Debian's libcurl resolves in a
 * thread. We resolve each host with epode__dns (c-ares, driven by the same
 * fd/timer callbacks) and give curl the answer as CURLOPT_RESOLVE, which
 * lands in curl's DNS cache; curl then never starts its resolver. For the
 * same reason curl does not follow redirects (a new host would be resolved
 * by curl) and environment proxies are off.
 *
 * Callbacks: curl's socket/timer callbacks only forward to the owner. Work
 * that changes transfers (removing the finished one, starting the next)
 * runs after curl_multi_socket_action() returns, never inside curl. The
 * done callback fires at the end of a process call, so the owner may free
 * us from it. */
#include "net/discover.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "net/net.h"
#include "net/url.h"
#include "util/alloc.h"
#include "util/buf.h"
#include "util/config_int.h"
#include "xml/parser.h"

#define XRD_NS "http://docs.oasis-open.org/ns/xri/xrd-1.0"
#define MAX_HREF 2048u
/* Nesting in host-meta.json: the real shape is 3 deep. */
#define JSON_MAX_DEPTH 32

/* ================================================================== link choice */

typedef struct pick {
  const epode_mem *mem;
  epode_transport want;
  int allow_plain;
  const char *rel;
  char *secure, *plain;
  unsigned matched, insecure, invalid;
  int nomem;
} pick;

static void pick_init(pick *k, const epode_mem *mem, epode_transport want, int allow_plain) {
  memset(k, 0, sizeof *k);
  k->mem = epode__mem_or_default(mem);
  k->want = want;
  k->allow_plain = allow_plain;
  k->rel = want == EPODE_TRANSPORT_BOSH ? EPODE__REL_BOSH : EPODE__REL_WEBSOCKET;
}

static void pick_free(pick *k) {
  epode__free(k->mem, k->secure);
  epode__free(k->mem, k->plain);
  k->secure = k->plain = NULL;
}

static void pick_link(pick *k, const char *rel, size_t rel_len, const char *href, size_t href_len) {
  if (!rel || rel_len != strlen(k->rel) || memcmp(rel, k->rel, rel_len)) return;
  k->matched++;
  char tmp[MAX_HREF + 1];
  epode__url u;
  /* Absolute URLs only: a relative href has no "://" and fails to parse. */
  if (!href || !href_len || href_len > MAX_HREF || memchr(href, '\0', href_len)) {
    k->invalid++;
    return;
  }
  memcpy(tmp, href, href_len);
  tmp[href_len] = '\0';
  if (epode__url_parse(tmp, &u, NULL)) {
    k->invalid++;
    return;
  }
  const char *sec = k->want == EPODE_TRANSPORT_BOSH ? "https" : "wss";
  const char *pl = k->want == EPODE_TRANSPORT_BOSH ? "http" : "ws";
  char **slot;
  if (!strcmp(u.scheme, sec)) {
    slot = &k->secure;
  } else if (!strcmp(u.scheme, pl)) {
    k->insecure++;
    if (!k->allow_plain) return;
    slot = &k->plain;
  } else {
    k->invalid++; /* e.g. an https:// link under the websocket rel */
    return;
  }
  if (*slot) return; /* the first one in document order wins */
  *slot = epode__strdup(k->mem, tmp);
  if (!*slot) k->nomem = 1;
}

static epode_err pick_result(pick *k, char **url, char *why, size_t why_size) {
  if (k->nomem) {
    pick_free(k);
    snprintf(why, why_size, "out of memory");
    return EPODE_ERR_NOMEM;
  }
  char *best = k->secure ? k->secure : k->plain;
  if (best) {
    if (best == k->secure)
      k->secure = NULL;
    else
      k->plain = NULL;
    pick_free(k);
    *url = best;
    why[0] = '\0';
    return EPODE_OK;
  }
  int n = snprintf(why, why_size, "no usable %s link", k->rel);
  if (n < 0 || (size_t)n >= why_size) return EPODE_ERR_NOTFOUND;
  if (k->insecure && !k->allow_plain)
    n += snprintf(why + n, why_size - (size_t)n,
                  " (ignored %u insecure %s:// link%s: plaintext is not allowed)", k->insecure,
                  k->want == EPODE_TRANSPORT_BOSH ? "http" : "ws", k->insecure == 1 ? "" : "s");
  if (n > 0 && (size_t)n < why_size && k->invalid)
    snprintf(why + n, why_size - (size_t)n,
             " (ignored %u relative, malformed or wrong-scheme link%s)", k->invalid,
             k->invalid == 1 ? "" : "s");
  return EPODE_ERR_NOTFOUND;
}

static void set_why(char *why, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_why(char *why, size_t size, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, size, fmt, ap);
  va_end(ap);
}

static int check_args(const char *doc, size_t len, epode_transport want, char **url, char *why,
                      size_t why_size) {
  if (!url || !why || !why_size || (!doc && len)) return 0;
  *url = NULL;
  why[0] = '\0';
  return want == EPODE_TRANSPORT_WEBSOCKET || want == EPODE_TRANSPORT_BOSH;
}

/* ================================================================== XRD */

typedef struct xrd_ctx {
  epode_stanza *root;
} xrd_ctx;

static epode_err xrd_stanza(void *ud, epode_stanza *st) {
  xrd_ctx *c = ud;
  if (c->root) {
    epode_stanza_free(st);
    return EPODE_ERR_PROTOCOL;
  }
  c->root = st;
  return EPODE_OK;
}

epode_err epode__discover_parse_xrd(const epode_mem *mem, const char *doc, size_t len,
                                    epode_transport want, int allow_plain, char **url, char *why,
                                    size_t why_size) {
  if (!check_args(doc, len, want, url, why, why_size)) return EPODE_ERR_INVAL;
  if (len > EPODE__DISCOVER_MAX_BODY) {
    set_why(why, why_size, "document of %zu bytes is over the %u-byte limit", len,
            EPODE__DISCOVER_MAX_BODY);
    return EPODE_ERR_LIMIT;
  }
  const char *p = doc, *end = doc + len;
  if (end - p >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3)) p += 3;
  /* Fragment mode parses inside a wrapper element, where an XML declaration
   * may not appear: take it off here (it must come first). */
  if (end - p >= 6 && !memcmp(p, "<?xml", 5) && strchr(" \t\r\n", p[5])) {
    const char *q = p + 5, *lim = end - p > 256 ? p + 256 : end;
    while (q + 1 < lim && !(q[0] == '?' && q[1] == '>'))
      q++;
    if (q + 1 >= lim) {
      set_why(why, why_size, "malformed XML declaration");
      return EPODE_ERR_PROTOCOL;
    }
    p = q + 2;
  }
  xrd_ctx c = {NULL};
  epode__xml_parser *xp;
  epode__xml_limits lim = {EPODE__DISCOVER_MAX_BODY + 1, 16, 32};
  epode__xml_callbacks cb = {NULL, xrd_stanza, NULL};
  epode_err e = epode__xml_parser_new(&xp, mem, &lim, EPODE__XML_FRAGMENTS, &cb, &c);
  if (e) {
    set_why(why, why_size, "cannot create the XML parser: %s", epode_strerror(e));
    return e;
  }
  e = epode__xml_parser_feed(xp, p, (size_t)(end - p));
  if (e == EPODE_ERR_PROTOCOL)
    set_why(why, why_size, "malformed XRD: more than one root element");
  else if (e)
    set_why(why, why_size, "malformed XRD: %s", epode__xml_parser_errmsg(xp));
  else if (!c.root)
    set_why(why, why_size, "malformed XRD: %s",
            epode__xml_parser_pending(xp) ? "the document ends inside its root element"
                                          : "no root element");
  epode__xml_parser_free(xp);
  if (e) {
    epode_stanza_free(c.root);
    return e == EPODE_ERR_XML ? EPODE_ERR_PROTOCOL : e;
  }
  if (!c.root) return EPODE_ERR_PROTOCOL;
  const char *rn = epode_stanza_name(c.root), *rns = epode_stanza_ns(c.root);
  if (strcmp(rn, "XRD") || !rns || strcmp(rns, XRD_NS)) {
    set_why(why, why_size, "root element is {%.100s}%.100s, not an XRD", rns ? rns : "", rn);
    epode_stanza_free(c.root);
    return EPODE_ERR_PROTOCOL;
  }
  pick k;
  pick_init(&k, mem, want, allow_plain);
  for (epode_stanza *l = epode_stanza_first_child(c.root); l; l = epode_stanza_next_sibling(l)) {
    if (epode_stanza_is_text(l) || strcmp(epode_stanza_name(l), "Link")) continue;
    const char *ns = epode_stanza_ns(l);
    if (ns && strcmp(ns, XRD_NS)) continue;
    const char *rel = epode_stanza_get_attr(l, "rel"), *href = epode_stanza_get_attr(l, "href");
    pick_link(&k, rel, rel ? strlen(rel) : 0, href, href ? strlen(href) : 0);
  }
  epode_stanza_free(c.root);
  return pick_result(&k, url, why, why_size);
}

/* ================================================================== JSON */

/* A strict recursive-descent reader for RFC 8259 JSON, bounded in depth,
 * that keeps only what host-meta.json needs: links[].rel and links[].href. */
typedef struct jp {
  const unsigned char *p, *start, *end;
  const char *err; /* what is wrong, at p */
} jp;

static void jws(jp *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
    j->p++;
}

static int jfail(jp *j, const char *what) {
  if (!j->err) j->err = what;
  return 0;
}

static int hex4(const unsigned char *p, unsigned *v) {
  *v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned c = p[i], d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      d = c - 'A' + 10;
    else
      return 0;
    *v = *v << 4 | d;
  }
  return 1;
}

/* Length of the valid UTF-8 sequence at p (0: invalid). */
static size_t utf8_len(const unsigned char *p, const unsigned char *end) {
  unsigned char b = p[0];
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF)
    n = 2;
  else if (b == 0xE0)
    n = 3, lo = 0xA0;
  else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF)
    n = 3;
  else if (b == 0xED)
    n = 3, hi = 0x9F;
  else if (b == 0xF0)
    n = 4, lo = 0x90;
  else if (b >= 0xF1 && b <= 0xF3)
    n = 4;
  else if (b == 0xF4)
    n = 4, hi = 0x8F;
  else
    return 0;
  if ((size_t)(end - p) < n) return 0;
  if (p[1] < lo || p[1] > hi) return 0;
  for (size_t i = 2; i < n; i++)
    if (p[i] < 0x80 || p[i] > 0xBF) return 0;
  return n;
}

/* A string at j->p ('"'). Decoded into dst (cap bytes incl. NUL) when dst
 * is set; *len is the decoded length, *fits 0 when it did not fit or
 * contained U+0000 (then the value is unusable, but the JSON is fine). */
static int jstring(jp *j, char *dst, size_t cap, size_t *len, int *fits) {
  size_t o = 0;
  int ok = 1;
  j->p++; /* the quote */
  while (1) {
    if (j->p >= j->end) return jfail(j, "unterminated string");
    unsigned char c = *j->p;
    unsigned char enc[4];
    size_t n = 0;
    if (c == '"') {
      j->p++;
      break;
    }
    if (c < 0x20) return jfail(j, "control character in a string");
    if (c == '\\') {
      if (j->end - j->p < 2) return jfail(j, "unterminated string");
      unsigned char x = j->p[1];
      j->p += 2;
      const char *simple = strchr("\"\\/bfnrt", x);
      if (x && simple) {
        static const char map[] = "\"\\/\b\f\n\r\t";
        enc[n++] = (unsigned char)map[simple - "\"\\/bfnrt"];
      } else if (x == 'u') {
        unsigned v, v2;
        if (j->end - j->p < 4 || !hex4(j->p, &v)) return jfail(j, "bad \\u escape");
        j->p += 4;
        if (v >= 0xDC00 && v <= 0xDFFF) return jfail(j, "lone low surrogate in \\u escape");
        if (v >= 0xD800 && v <= 0xDBFF) {
          if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' || !hex4(j->p + 2, &v2) ||
              v2 < 0xDC00 || v2 > 0xDFFF)
            return jfail(j, "high surrogate without its low half in \\u escape");
          j->p += 6;
          v = 0x10000 + ((v - 0xD800) << 10) + (v2 - 0xDC00);
        }
        if (v == 0) ok = 0;
        if (v < 0x80) {
          enc[n++] = (unsigned char)v;
        } else if (v < 0x800) {
          enc[n++] = (unsigned char)(0xC0 | v >> 6);
          enc[n++] = (unsigned char)(0x80 | (v & 0x3F));
        } else if (v < 0x10000) {
          enc[n++] = (unsigned char)(0xE0 | v >> 12);
          enc[n++] = (unsigned char)(0x80 | ((v >> 6) & 0x3F));
          enc[n++] = (unsigned char)(0x80 | (v & 0x3F));
        } else {
          enc[n++] = (unsigned char)(0xF0 | v >> 18);
          enc[n++] = (unsigned char)(0x80 | ((v >> 12) & 0x3F));
          enc[n++] = (unsigned char)(0x80 | ((v >> 6) & 0x3F));
          enc[n++] = (unsigned char)(0x80 | (v & 0x3F));
        }
      } else {
        j->p -= 2;
        return jfail(j, "unknown escape in a string");
      }
    } else {
      n = utf8_len(j->p, j->end);
      if (!n) return jfail(j, "invalid UTF-8 in a string");
      memcpy(enc, j->p, n);
      j->p += n;
    }
    if (dst) {
      if (o + n < cap)
        memcpy(dst + o, enc, n);
      else
        ok = 0;
    }
    o += n;
  }
  if (dst) dst[o < cap ? o : cap - 1] = '\0';
  if (len) *len = o;
  if (fits) *fits = ok;
  return 1;
}

static int jvalue(jp *j, int depth);

static int jnumber(jp *j) {
  const unsigned char *p = j->p;
  if (p < j->end && *p == '-') p++;
  if (p >= j->end) return jfail(j, "bad number");
  if (*p == '0') {
    p++;
  } else if (*p >= '1' && *p <= '9') {
    while (p < j->end && *p >= '0' && *p <= '9')
      p++;
  } else {
    return jfail(j, "unexpected character");
  }
  if (p < j->end && *p == '.') {
    p++;
    if (p >= j->end || *p < '0' || *p > '9') return jfail(j, "bad number");
    while (p < j->end && *p >= '0' && *p <= '9')
      p++;
  }
  if (p < j->end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < j->end && (*p == '+' || *p == '-')) p++;
    if (p >= j->end || *p < '0' || *p > '9') return jfail(j, "bad number");
    while (p < j->end && *p >= '0' && *p <= '9')
      p++;
  }
  j->p = p;
  return 1;
}

/* Walks an object; for each member calls `member` with the key (decoded
 * into a small buffer) positioned at the value, which it must consume. */
typedef int (*jmember_fn)(jp *j, const char *key, int key_ok, int depth, void *ud);

static int jobject(jp *j, int depth, jmember_fn member, void *ud) {
  if (depth > JSON_MAX_DEPTH) return jfail(j, "nested too deeply");
  j->p++; /* '{' */
  jws(j);
  if (j->p < j->end && *j->p == '}') {
    j->p++;
    return 1;
  }
  while (1) {
    jws(j);
    if (j->p >= j->end || *j->p != '"') return jfail(j, "expected a member name");
    char key[32];
    int key_ok;
    if (!jstring(j, key, sizeof key, NULL, &key_ok)) return 0;
    jws(j);
    if (j->p >= j->end || *j->p != ':') return jfail(j, "expected ':'");
    j->p++;
    jws(j);
    if (!(member ? member(j, key, key_ok, depth, ud) : jvalue(j, depth + 1))) return 0;
    jws(j);
    if (j->p >= j->end) return jfail(j, "unterminated object");
    if (*j->p == '}') {
      j->p++;
      return 1;
    }
    if (*j->p != ',') return jfail(j, "expected ',' or '}'");
    j->p++;
  }
}

typedef int (*jelem_fn)(jp *j, int depth, void *ud);

static int jarray(jp *j, int depth, jelem_fn elem, void *ud) {
  if (depth > JSON_MAX_DEPTH) return jfail(j, "nested too deeply");
  j->p++; /* '[' */
  jws(j);
  if (j->p < j->end && *j->p == ']') {
    j->p++;
    return 1;
  }
  while (1) {
    jws(j);
    if (!(elem ? elem(j, depth, ud) : jvalue(j, depth + 1))) return 0;
    jws(j);
    if (j->p >= j->end) return jfail(j, "unterminated array");
    if (*j->p == ']') {
      j->p++;
      return 1;
    }
    if (*j->p != ',') return jfail(j, "expected ',' or ']'");
    j->p++;
  }
}

static int jlit(jp *j, const char *lit) {
  size_t n = strlen(lit);
  if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n)) return jfail(j, "unexpected token");
  j->p += n;
  return 1;
}

static int jvalue(jp *j, int depth) {
  if (depth > JSON_MAX_DEPTH) return jfail(j, "nested too deeply");
  jws(j);
  if (j->p >= j->end) return jfail(j, "unexpected end of the document");
  switch (*j->p) {
  case '{': return jobject(j, depth, NULL, NULL);
  case '[': return jarray(j, depth, NULL, NULL);
  case '"': return jstring(j, NULL, 0, NULL, NULL);
  case 't': return jlit(j, "true");
  case 'f': return jlit(j, "false");
  case 'n': return jlit(j, "null");
  default: return jnumber(j);
  }
}

/* One link object: remembers rel and href when they are usable strings. */
typedef struct jlink {
  char rel[64];
  char href[MAX_HREF + 1];
  size_t rel_len, href_len;
  int has_rel, has_href;
} jlink;

static int link_member(jp *j, const char *key, int key_ok, int depth, void *ud) {
  jlink *l = ud;
  int is_rel = key_ok && !strcmp(key, "rel"), is_href = key_ok && !strcmp(key, "href");
  if ((is_rel || is_href) && j->p < j->end && *j->p == '"') {
    int fits;
    if (is_rel) {
      if (!jstring(j, l->rel, sizeof l->rel, &l->rel_len, &fits)) return 0;
      l->has_rel = fits;
    } else {
      if (!jstring(j, l->href, sizeof l->href, &l->href_len, &fits)) return 0;
      l->has_href = 1;
      if (!fits) l->href_len = 0; /* too long or with NUL: counts as malformed */
    }
    return 1;
  }
  return jvalue(j, depth + 1);
}

static int link_elem(jp *j, int depth, void *ud) {
  if (j->p < j->end && *j->p == '{') {
    jlink l;
    l.has_rel = l.has_href = 0;
    l.rel_len = l.href_len = 0;
    if (!jobject(j, depth + 1, link_member, &l)) return 0;
    if (l.has_rel) pick_link(ud, l.rel, l.rel_len, l.has_href ? l.href : NULL, l.href_len);
    return 1;
  }
  return jvalue(j, depth + 1); /* not a link object: ignored */
}

static int top_member(jp *j, const char *key, int key_ok, int depth, void *ud) {
  if (key_ok && !strcmp(key, "links")) {
    if (j->p >= j->end || *j->p != '[') return jfail(j, "\"links\" is not an array");
    return jarray(j, depth + 1, link_elem, ud);
  }
  return jvalue(j, depth + 1);
}

epode_err epode__discover_parse_json(const epode_mem *mem, const char *doc, size_t len,
                                     epode_transport want, int allow_plain, char **url, char *why,
                                     size_t why_size) {
  if (!check_args(doc, len, want, url, why, why_size)) return EPODE_ERR_INVAL;
  if (len > EPODE__DISCOVER_MAX_BODY) {
    set_why(why, why_size, "document of %zu bytes is over the %u-byte limit", len,
            EPODE__DISCOVER_MAX_BODY);
    return EPODE_ERR_LIMIT;
  }
  jp j;
  j.start = j.p = (const unsigned char *)(doc ? doc : "");
  j.end = j.p + len;
  j.err = NULL;
  if (len >= 3 && !memcmp(j.p, "\xEF\xBB\xBF", 3)) j.p += 3;
  pick k;
  pick_init(&k, mem, want, allow_plain);
  jws(&j);
  int ok;
  if (j.p < j.end && *j.p == '{') {
    ok = jobject(&j, 0, top_member, &k);
  } else {
    ok = jfail(&j, "the document is not a JSON object");
  }
  if (ok) {
    jws(&j);
    if (j.p != j.end) ok = jfail(&j, "text after the JSON object");
  }
  if (!ok) {
    pick_free(&k);
    set_why(why, why_size, "malformed JSON at byte %zu: %s", (size_t)(j.p - j.start), j.err);
    return strstr(j.err, "deeply") ? EPODE_ERR_LIMIT : EPODE_ERR_PROTOCOL;
  }
  return pick_result(&k, url, why, why_size);
}

/* ================================================================== fetching */

enum { PH_IDLE = 0, PH_DNS, PH_FETCH, PH_DONE };
enum { DOC_XRD = 0, DOC_JSON = 1 };
static const char *const doc_path[2] = {"/.well-known/host-meta", "/.well-known/host-meta.json"};
static const char *const doc_name[2] = {"host-meta", "host-meta.json"};

struct epode__discover {
  const epode_config *cfg;
  const epode_mem *mem;
  epode_transport want;
  epode_io_fn io;
  epode_timer_fn timer;
  epode__discover_done_fn done;
  void *ud;
  char *base;
  char *dns_servers;
  struct curl_slist *resolve; /* "host:port:addr,…" we know */
  char domain[EPODE__MAX_HOST];
  int phase;
  int doc;
  unsigned redirects;
  char url[MAX_HREF + 64];
  epode__url cur;
  uint64_t deadline; /* overall, ms on CLOCK_MONOTONIC; 0: none */

  epode__dns *dns;
  CURLM *multi;
  CURL *easy;
  epode__buf body;
  int too_big;
  char status[96]; /* the response's reason phrase, cleaned */
  char curl_err[CURL_ERROR_SIZE];

  epode_err doc_err[2];
  char doc_detail[2][600];
  epode_err err;
  char *result;
  char detail[1300];
  int finished, reported, depth, free_pending;
};

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void fetch_next(epode__discover *d);

/* ------------------------------------------------------------------ ending */

static void finish(epode__discover *d, epode_err err) {
  d->err = err;
  d->phase = PH_DONE;
  d->finished = 1;
  if (d->err) {
    if (d->doc == DOC_JSON)
      snprintf(d->detail, sizeof d->detail, "%s: %s; %s: %s", doc_name[0], d->doc_detail[0],
               doc_name[1], d->doc_detail[1]);
    else
      snprintf(d->detail, sizeof d->detail, "%s: %s", doc_name[0], d->doc_detail[0]);
  } else {
    snprintf(d->detail, sizeof d->detail, "found in %s", doc_name[d->doc]);
  }
  if (d->timer) d->timer(d->depth ? -1 : 0, d->ud); /* outside a process call: deliver soon */
}

/* The current document failed. Transport failures (DNS, connect, TLS,
 * timeout) end discovery: the other document lives on the same server. */
static void doc_fail(epode__discover *d, epode_err err, int transport, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void doc_fail(epode__discover *d, epode_err err, int transport, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(d->doc_detail[d->doc], sizeof d->doc_detail[d->doc], fmt, ap);
  va_end(ap);
  d->doc_err[d->doc] = err;
  epode__log(d->cfg, EPODE_LOG_INFO, "net", "discovery: %s: %s", doc_name[d->doc],
             d->doc_detail[d->doc]);
  if (d->doc == DOC_XRD && !transport && err != EPODE_ERR_NOMEM) {
    d->doc = DOC_JSON;
    d->redirects = 0;
    snprintf(d->url, sizeof d->url, "%s%s", d->base, doc_path[DOC_JSON]);
    fetch_next(d);
    return;
  }
  /* Report the more telling failure: anything over "not found". */
  epode_err e = d->doc_err[0];
  if (d->doc == DOC_JSON && (e == EPODE_ERR_NOTFOUND || !e)) e = d->doc_err[1];
  finish(d, e);
}

/* ------------------------------------------------------------------ io plumbing */

static void report_dns_timer(epode__discover *d) {
  if (!d->timer || !d->dns) return;
  uint64_t now = now_ms();
  int64_t at = epode__dns_deadline(d->dns, now);
  d->timer(at < 0 ? -1 : at <= (int64_t)now ? 0 : at - (int64_t)now, d->ud);
}

static void dns_sock(int fd, unsigned events, void *ud) {
  epode__discover *d = ud;
  if (d->io) d->io(fd, events, d->ud);
}

static int curl_sock(CURL *e, curl_socket_t s, int what, void *userp, void *socketp) {
  epode__discover *d = userp;
  unsigned ev = what == CURL_POLL_IN      ? EPODE_IO_READ
                : what == CURL_POLL_OUT   ? EPODE_IO_WRITE
                : what == CURL_POLL_INOUT ? EPODE_IO_READ | EPODE_IO_WRITE
                                          : 0;
  if (d->io) d->io((int)s, ev, d->ud);
  return 0;
}

static int curl_timer(CURLM *m, long timeout_ms, void *userp) {
  epode__discover *d = userp;
  if (d->timer && d->phase == PH_FETCH) d->timer(timeout_ms, d->ud);
  return 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  epode__discover *d = ud;
  size_t len = size * n;
  if (d->body.len + len > EPODE__DISCOVER_MAX_BODY) {
    d->too_big = 1;
    return 0; /* CURLE_WRITE_ERROR */
  }
  if (epode__buf_append(&d->body, p, len)) return 0;
  return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  epode__discover *d = ud;
  size_t len = size * n;
  if (len > 9 && !memcmp(p, "HTTP/", 5)) {
    /* "HTTP/1.1 404 Not Found": keep the reason phrase, printable only. */
    const char *sp = memchr(p, ' ', len);
    const char *r = sp ? memchr(sp + 1, ' ', len - (size_t)(sp + 1 - p)) : NULL;
    size_t o = 0;
    if (r)
      for (r++; r < p + len && *r != '\r' && *r != '\n' && o + 1 < sizeof d->status; r++)
        d->status[o++] = (*r >= 0x20 && *r < 0x7f) ? *r : '?';
    d->status[o] = '\0';
  }
  return len;
}

/* ------------------------------------------------------------------ steps */

static int have_addrs(const epode__discover *d, const char *host, uint16_t port) {
  char pre[EPODE__MAX_HOST + 16];
  int v6 = strchr(host, ':') != NULL;
  int n = snprintf(pre, sizeof pre, v6 ? "[%s]:%u:" : "%s:%u:", host, (unsigned)port);
  for (const struct curl_slist *s = d->resolve; s; s = s->next)
    if (!strncasecmp(s->data, pre, (size_t)n)) return 1;
  return 0;
}

static void start_transfer(epode__discover *d) {
  uint64_t now = now_ms();
  long left = 0;
  if (d->deadline) {
    if (now >= d->deadline) {
      doc_fail(d, EPODE_ERR_TIMEOUT, 1, "timed out");
      return;
    }
    left = (long)(d->deadline - now);
  }
  epode__buf_reset(&d->body);
  d->too_big = 0;
  d->status[0] = '\0';
  d->curl_err[0] = '\0';
  CURL *e = curl_easy_init();
  if (!e) {
    doc_fail(d, EPODE_ERR_NOMEM, 1, "cannot create a transfer");
    return;
  }
  int verify = !(d->cfg->flags & EPODE_CFG_TLS_NO_VERIFY);
  CURLcode rc = CURLE_OK;
#define SET(opt, val)                                                                              \
  do {                                                                                             \
    if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val);                                        \
  } while (0)
  SET(CURLOPT_URL, d->url);
  SET(CURLOPT_PROTOCOLS_STR, "https");
  SET(CURLOPT_FOLLOWLOCATION, 0L);
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_PROXY, "");
  SET(CURLOPT_RESOLVE, d->resolve);
  SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  SET(CURLOPT_FORBID_REUSE, 1L);
  SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
  SET(CURLOPT_SSL_VERIFYPEER, verify ? 1L : 0L);
  SET(CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L);
  if (verify && d->cfg->cafile) {
    SET(CURLOPT_CAINFO, d->cfg->cafile);
    SET(CURLOPT_CAPATH, (char *)NULL); /* the CA file instead of the system store */
  }
  SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)EPODE__DISCOVER_MAX_BODY);
  SET(CURLOPT_WRITEFUNCTION, on_body);
  SET(CURLOPT_WRITEDATA, d);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_HEADERDATA, d);
  SET(CURLOPT_ERRORBUFFER, d->curl_err);
  SET(CURLOPT_USERAGENT, "epode");
  if (left) {
    SET(CURLOPT_TIMEOUT_MS, left);
    SET(CURLOPT_CONNECTTIMEOUT_MS, left);
  }
#undef SET
  if (rc != CURLE_OK) {
    curl_easy_cleanup(e);
    doc_fail(d, rc == CURLE_OUT_OF_MEMORY ? EPODE_ERR_NOMEM : EPODE_ERR_INVAL, 1,
             "cannot set up the transfer: %s", curl_easy_strerror(rc));
    return;
  }
  d->phase = PH_FETCH; /* before adding: curl reports its first timer from inside */
  if (curl_multi_add_handle(d->multi, e) != CURLM_OK) {
    curl_easy_cleanup(e);
    doc_fail(d, EPODE_ERR_NOMEM, 1, "cannot start the transfer");
    return;
  }
  d->easy = e;
  epode__log(d->cfg, EPODE_LOG_INFO, "net", "discovery: fetching %s", d->url);
}

/* The resolver finished: its answer becomes a CURLOPT_RESOLVE entry. */
static void dns_finished(epode__discover *d) {
  const epode__addr *a;
  size_t n;
  const char *why;
  epode_err e = epode__dns_result(d->dns, &a, &n, &why);
  epode__buf line;
  epode__buf_init(&line, d->mem, 0);
  if (!e && n) {
    int v6h = strchr(d->cur.host, ':') != NULL;
    e = epode__buf_printf(&line, v6h ? "[%s]:%u:" : "%s:%u:", d->cur.host, (unsigned)d->cur.port);
    for (size_t i = 0; i < n && !e; i++) {
      char s[INET6_ADDRSTRLEN + 2];
      const void *src = a[i].sa.ss_family == AF_INET6
                            ? (const void *)&((const struct sockaddr_in6 *)&a[i].sa)->sin6_addr
                            : (const void *)&((const struct sockaddr_in *)&a[i].sa)->sin_addr;
      if (!inet_ntop(a[i].sa.ss_family, src, s, sizeof s)) continue;
      e = epode__buf_printf(&line, a[i].sa.ss_family == AF_INET6 ? "%s[%s]" : "%s%s",
                            line.data[line.len - 1] == ':' ? "" : ",", s);
    }
  }
  /* Free the resolver now: its fds are reported closed (events 0). */
  char dns_why[300];
  snprintf(dns_why, sizeof dns_why, "%s", why && *why ? why : "no addresses");
  epode__dns_free(d->dns);
  d->dns = NULL;
  if (e == EPODE_ERR_NOMEM || (!e && n && !line.len)) {
    epode__buf_free(&line);
    doc_fail(d, EPODE_ERR_NOMEM, 1, "out of memory");
    return;
  }
  if (e || !n) {
    epode__buf_free(&line);
    doc_fail(d, e ? e : EPODE_ERR_DNS, 1, "%s", dns_why);
    return;
  }
  struct curl_slist *s = curl_slist_append(d->resolve, line.data);
  epode__buf_free(&line);
  if (!s) {
    doc_fail(d, EPODE_ERR_NOMEM, 1, "out of memory");
    return;
  }
  d->resolve = s;
  start_transfer(d);
}

/* Fetches d->url: resolves its host first unless known. */
static void fetch_next(epode__discover *d) {
  const char *why = NULL;
  if (epode__url_parse(d->url, &d->cur, &why) || strcmp(d->cur.scheme, "https")) {
    doc_fail(d, EPODE_ERR_PROTOCOL, 0, "refusing to fetch %.200s: %s", d->url,
             why ? why : "not an https:// URL");
    return;
  }
  if (have_addrs(d, d->cur.host, d->cur.port)) {
    start_transfer(d);
    return;
  }
  epode_err e = epode__dns_new(&d->dns, d->cfg, dns_sock, d);
  if (!e && d->dns_servers) e = epode__dns_set_servers(d->dns, d->dns_servers);
  if (!e)
    e = epode__dns_start(d->dns, d->cur.host, EPODE_TLS_AUTO, d->cur.host, d->cur.port, now_ms());
  if (e) {
    epode__dns_free(d->dns);
    d->dns = NULL;
    doc_fail(d, e, 1, "cannot resolve %s: %s", d->cur.host, epode_strerror(e));
    return;
  }
  d->phase = PH_DNS;
  if (epode__dns_done(d->dns))
    dns_finished(d);
  else
    report_dns_timer(d);
}

static epode_err map_curl(CURLcode rc, int *transport) {
  *transport = 1;
  switch (rc) {
  case CURLE_PEER_FAILED_VERIFICATION: return EPODE_ERR_TLS_VERIFY;
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS: return EPODE_ERR_TLS;
  case CURLE_COULDNT_RESOLVE_HOST: return EPODE_ERR_DNS;
  case CURLE_COULDNT_CONNECT: return EPODE_ERR_CONNECT;
  case CURLE_OPERATION_TIMEDOUT: return EPODE_ERR_TIMEOUT;
  case CURLE_OUT_OF_MEMORY: return EPODE_ERR_NOMEM;
  case CURLE_FILESIZE_EXCEEDED: *transport = 0; return EPODE_ERR_LIMIT;
  default: return EPODE_ERR_IO;
  }
}

/* A transfer ended: what now. */
static void transfer_done(epode__discover *d, CURLcode rc) {
  long code = 0;
  char *loc = NULL;
  curl_easy_getinfo(d->easy, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_getinfo(d->easy, CURLINFO_REDIRECT_URL, &loc);
  char next[sizeof d->url];
  next[0] = '\0';
  if (loc && strlen(loc) < sizeof next) snprintf(next, sizeof next, "%s", loc);
  int loc_too_long = loc && !next[0];
  curl_multi_remove_handle(d->multi, d->easy);
  curl_easy_cleanup(d->easy);
  d->easy = NULL;

  if (rc != CURLE_OK) {
    int transport;
    epode_err e = map_curl(rc, &transport);
    if (d->too_big || rc == CURLE_FILESIZE_EXCEEDED)
      doc_fail(d, EPODE_ERR_LIMIT, 0, "document larger than %u bytes", EPODE__DISCOVER_MAX_BODY);
    else
      doc_fail(d, e, transport, "%.200s: %s", d->url,
               d->curl_err[0] ? d->curl_err : curl_easy_strerror(rc));
    return;
  }
  if (code >= 300 && code < 400 && code != 304) {
    if (!next[0]) {
      doc_fail(d, EPODE_ERR_PROTOCOL, 0, "HTTP %ld redirect %s", code,
               loc_too_long ? "to an overlong URL" : "without a Location");
      return;
    }
    if (d->redirects >= EPODE__DISCOVER_MAX_REDIRECTS) {
      doc_fail(d, EPODE_ERR_PROTOCOL, 0, "more than %u redirects", EPODE__DISCOVER_MAX_REDIRECTS);
      return;
    }
    d->redirects++;
    epode__log(d->cfg, EPODE_LOG_INFO, "net", "discovery: %s redirects to %s", d->url, next);
    snprintf(d->url, sizeof d->url, "%s", next);
    fetch_next(d);
    return;
  }
  if (code != 200) {
    doc_fail(d, EPODE_ERR_NOTFOUND, 0, "HTTP %ld%s%s from %.200s", code, d->status[0] ? " " : "",
             d->status, d->url);
    return;
  }
  char why[400];
  char *url = NULL;
  int plain = (d->cfg->flags & EPODE_CFG_ALLOW_PLAINTEXT) != 0;
  epode_err e = d->doc == DOC_XRD
                    ? epode__discover_parse_xrd(d->mem, d->body.data, d->body.len, d->want, plain,
                                                &url, why, sizeof why)
                    : epode__discover_parse_json(d->mem, d->body.data, d->body.len, d->want, plain,
                                                 &url, why, sizeof why);
  epode__buf_free(&d->body);
  if (e) {
    doc_fail(d, e, 0, "%s", why);
    return;
  }
  d->result = url;
  finish(d, EPODE_OK);
}

static void check_curl(epode__discover *d) {
  CURLMsg *m;
  int left;
  while (d->phase == PH_FETCH && (m = curl_multi_info_read(d->multi, &left))) {
    if (m->msg == CURLMSG_DONE && m->easy_handle == d->easy) {
      transfer_done(d, m->data.result);
      break; /* the queue referred to the removed handle */
    }
  }
}

/* ------------------------------------------------------------------ public */

epode_err epode__discover_new(epode__discover **out, const epode_config *cfg, epode_transport want,
                              epode_io_fn io, epode_timer_fn timer, epode__discover_done_fn done,
                              void *ud) {
  if (!out) return EPODE_ERR_INVAL;
  *out = NULL;
  if (!cfg || !io || !timer || !done ||
      (want != EPODE_TRANSPORT_WEBSOCKET && want != EPODE_TRANSPORT_BOSH))
    return EPODE_ERR_INVAL;
  epode__discover *d = epode__calloc(&cfg->mem, sizeof *d);
  if (!d) return EPODE_ERR_NOMEM;
  d->cfg = cfg;
  d->mem = &cfg->mem;
  d->want = want;
  d->io = io;
  d->timer = timer;
  d->done = done;
  d->ud = ud;
  epode__buf_init(&d->body, d->mem, EPODE__DISCOVER_MAX_BODY);
  d->multi = curl_multi_init();
  if (!d->multi) {
    epode__discover_free(d);
    return EPODE_ERR_NOMEM;
  }
  curl_multi_setopt(d->multi, CURLMOPT_SOCKETFUNCTION, curl_sock);
  curl_multi_setopt(d->multi, CURLMOPT_SOCKETDATA, d);
  curl_multi_setopt(d->multi, CURLMOPT_TIMERFUNCTION, curl_timer);
  curl_multi_setopt(d->multi, CURLMOPT_TIMERDATA, d);
  *out = d;
  return EPODE_OK;
}

static void really_free(epode__discover *d) {
  if (d->easy) {
    curl_multi_remove_handle(d->multi, d->easy);
    curl_easy_cleanup(d->easy);
  }
  if (d->multi) curl_multi_cleanup(d->multi);
  epode__dns_free(d->dns);
  curl_slist_free_all(d->resolve);
  epode__buf_free(&d->body);
  epode__free(d->mem, d->base);
  epode__free(d->mem, d->dns_servers);
  epode__free(d->mem, d->result);
  if (d->timer) d->timer(-1, d->ud);
  epode__free(d->mem, d);
}

void epode__discover_free(epode__discover *d) {
  if (!d) return;
  if (d->depth) {
    d->free_pending = 1;
    return;
  }
  really_free(d);
}

epode_err epode__discover_add_addrs(epode__discover *d, const char *host, uint16_t port,
                                    const char *addrs) {
  if (!d || !host || !*host || !port || !addrs || !*addrs || d->phase != PH_IDLE ||
      strlen(host) >= EPODE__MAX_HOST || strlen(addrs) > 4096)
    return EPODE_ERR_INVAL;
  for (const char *p = host; *p; p++)
    if ((unsigned char)*p <= ' ' || *p == ':' || *p == ',') return EPODE_ERR_INVAL;
  for (const char *p = addrs; *p; p++)
    if ((unsigned char)*p <= ' ') return EPODE_ERR_INVAL;
  epode__buf line;
  epode__buf_init(&line, d->mem, 0);
  epode_err e = epode__buf_printf(&line, "%s:%u:%s", host, (unsigned)port, addrs);
  struct curl_slist *s = e ? NULL : curl_slist_append(d->resolve, line.data);
  epode__buf_free(&line);
  if (!s) return EPODE_ERR_NOMEM;
  d->resolve = s;
  return EPODE_OK;
}

static epode_err set_copy(epode__discover *d, char **slot, const char *s) {
  if (!d || !s || d->phase != PH_IDLE) return EPODE_ERR_INVAL;
  char *c = epode__strdup(d->mem, s);
  if (!c) return EPODE_ERR_NOMEM;
  epode__free(d->mem, *slot);
  *slot = c;
  return EPODE_OK;
}

epode_err epode__discover_set_base(epode__discover *d, const char *base) {
  epode__url u;
  if (!base || epode__url_parse(base, &u, NULL) || strcmp(u.scheme, "https") ||
      strcmp(u.path, "/") || base[strlen(base) - 1] == '/')
    return EPODE_ERR_INVAL;
  return set_copy(d, &d->base, base);
}

epode_err epode__discover_set_dns_servers(epode__discover *d, const char *csv) {
  return set_copy(d, &d->dns_servers, csv);
}

epode_err epode__discover_start(epode__discover *d, const char *domain) {
  if (!d || !domain) return EPODE_ERR_INVAL;
  if (d->phase != PH_IDLE) return EPODE_ERR_STATE;
  size_t n = strlen(domain);
  if (!n || n >= EPODE__MAX_HOST) return EPODE_ERR_INVAL;
  for (const char *p = domain; *p; p++) {
    unsigned char c = (unsigned char)*p;
    if (c <= ' ' || c >= 0x7f || strchr("/?#@:[]\\%", c)) return EPODE_ERR_INVAL;
  }
  snprintf(d->domain, sizeof d->domain, "%s", domain);
  if (!d->base) {
    epode__buf b;
    epode__buf_init(&b, d->mem, 0);
    if (epode__buf_printf(&b, "https://%s", domain)) {
      epode__buf_free(&b);
      return EPODE_ERR_NOMEM;
    }
    d->base = epode__buf_steal(&b, NULL);
    if (!d->base) return EPODE_ERR_NOMEM;
  }
  uint32_t t = d->cfg->timeouts[EPODE_TIMEOUT_CONNECT];
  d->deadline = t ? now_ms() + t : 0;
  d->doc = DOC_XRD;
  snprintf(d->url, sizeof d->url, "%s%s", d->base, doc_path[DOC_XRD]);
  d->phase = PH_FETCH; /* not idle any more; fetch_next sets the real phase */
  fetch_next(d);       /* outside a process call: a quick end is delivered by timer 0 */
  return EPODE_OK;
}

/* Delivers the end, once, then honours a free requested meanwhile. */
static void leave(epode__discover *d) {
  if (d->depth == 1 && d->finished && !d->reported && !d->free_pending) {
    d->reported = 1;
    d->done(d->ud, d->err, d->result, d->detail);
  }
  d->depth--;
  if (!d->depth && d->free_pending) really_free(d);
}

void epode__discover_process_fd(epode__discover *d, int fd, unsigned events) {
  if (!d) return;
  d->depth++;
  if (d->phase == PH_DNS) {
    epode__dns_process_fd(d->dns, fd, events, now_ms());
    if (epode__dns_done(d->dns))
      dns_finished(d);
    else
      report_dns_timer(d);
  } else if (d->phase == PH_FETCH) {
    int mask = ((events & EPODE_IO_READ) ? CURL_CSELECT_IN : 0) |
               ((events & EPODE_IO_WRITE) ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(d->multi, fd, mask, &running);
    check_curl(d);
  }
  leave(d);
}

void epode__discover_process_timeout(epode__discover *d) {
  if (!d) return;
  d->depth++;
  if (d->phase == PH_DNS) {
    epode__dns_process_timeout(d->dns, now_ms());
    if (epode__dns_done(d->dns))
      dns_finished(d);
    else
      report_dns_timer(d);
  } else if (d->phase == PH_FETCH) {
    int running;
    curl_multi_socket_action(d->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_curl(d);
  }
  leave(d);
}

int epode__discover_done(const epode__discover *d) { return d && d->reported; }

epode_err epode__discover_result(const epode__discover *d, const char **url, const char **detail) {
  if (url) *url = d && d->finished ? d->result : NULL;
  if (detail) *detail = d && d->finished ? d->detail : "";
  if (!d) return EPODE_ERR_INVAL;
  if (!d->reported) return EPODE_ERR_STATE;
  return d->err;
}
