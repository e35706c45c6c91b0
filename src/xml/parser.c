/* The XMPP stream parser: expat in namespace mode, driven as a push parser.
 *
 * Why expat's namespace mode: the whole XMPP stream is one XML document, so
 * expat keeps the declarations of the stream header in scope for every
 * stanza (stream:features, stream:error resolve against them) and checks
 * prefixes, duplicate attributes after resolution, and the reserved xml /
 * xmlns prefixes for us. Names arrive as "URI\x01local"; U+0001 can never
 * occur in an XML 1.0 name or namespace URI, so the split is unambiguous.
 *
 * Restricted XML: every DTD-related handler (DOCTYPE, entity, element,
 * attlist, notation declarations), comments, processing instructions,
 * skipped and external entities stop the parser at the first event, before
 * any entity could be expanded. Parameter entity parsing is off.
 *
 * UTF-8: expat checks it (with the UTF-8 encoding forced, version 2.5 and
 * later refuse every ill-formed sequence: stray and overlong bytes,
 * surrogates, code points above U+10FFFF, F5..FF, truncated sequences) and
 * stops with an "invalid token" exactly at the offending character, after
 * reporting everything before it. Only when expat fails do we look at the
 * bytes there (expat's input context) to report invalid UTF-8 as such, at
 * the byte a strict decoder rejects; a separate pass over every received
 * byte would duplicate expat's own check. A sequence cut off by the end of
 * the input is not an error yet (more may come), as with expat.
 *
 * Stanza trees are built in an arena (stanza_int.h), normally one
 * allocation per stanza: its first block is sized from the stanzas seen
 * before (`arena_hint`). Within one feed, the block of a stanza its
 * callback freed is used again for the next one (`spare`), so a read that
 * holds many stanzas takes one allocation for all of them. Character data is collected in a scratch buffer
 * kept across stanzas (expat hands text over in pieces, one per entity
 * reference) and becomes one text node when the next tag starts or ends.
 *
 * Limits are counted in raw input bytes. `mark` is the byte index where the
 * unit being counted starts: the current stanza's start tag, or, between
 * stanzas, the end of the last thing consumed at stream level. Input is
 * handed to expat in pieces no larger than what the limit still allows
 * (plus one byte), so an oversized stanza is refused as soon as it goes
 * over, and expat never buffers more than the limit of one token.
 *
 * Fragment mode feeds expat a synthetic "<w>" wrapper first, so top-level
 * elements sit at depth 1 exactly like stanzas inside a stream.
 *
 * Releasing expat between stanzas: an expat instance costs ~7-10 KiB (its
 * structures, hash tables, input buffer), most of the memory of an idle
 * session. When a feed() ends exactly at a stanza boundary (depth 1, no
 * partial element, expat holding no unparsed bytes), the parser lets go of
 * its instance; the next feed() takes it back if it is still parked (see
 * "parking" below), or else creates a new one and primes it: in stream
 * mode with a copy of the stream header's start tag, the same qualified
 * name (so </stream:stream> still matches) and every namespace declaration
 * it made, so stanzas resolve exactly as before; in fragment mode with the
 * wrapper. Nothing else of the document matters at that point: a DTD is
 * refused, entities other than the predefined ones cannot exist, and the
 * only open element is the header (or wrapper). The priming bytes are
 * parsed before the handlers are installed, so no callback sees them. Byte
 * counts (limits, UTF-8 error offsets) and the line and column of error
 * messages are kept in the input's own coordinates across instances
 * (doc_start, line0/col0), so callers cannot tell whether a stanza was
 * parsed by a new instance. A parser creates its first instance at its
 * first feed (a BOSH session's parser is never fed and never holds one),
 * and reset() frees the instance instead of resetting it (nothing is held
 * while TLS is negotiated).
 *
 * Why release on every feed that ends at a boundary rather than guess
 * when the stream has gone idle: the parser cannot know that no more input
 * is coming, and whichever feed it skipped could be the last before hours
 * of silence. Making a new instance costs ~3-4 µs (expat's ~30 allocations
 * and its first parse of each name), more than a whole stanza otherwise;
 * parking makes that a cost per switch between sessions instead of per
 * stanza.
 *
 * Lent buffers (buffer()/commit()): expat built with XML_CONTEXT_BYTES, as
 * Debian's is, copies every XML_Parse() input into its own buffer. A
 * transport that reads a stream can instead read straight into that
 * buffer (XML_GetBuffer) and have it parsed in place (XML_ParseBuffer):
 * one copy of every received byte less. The piece lent is bounded like a
 * feed's pieces (the stanza limit still allowed plus one byte), so limits
 * behave exactly as with feed(). Only an instance the parser holds or has
 * parked is lent: a read that may find nothing must not make a new one.
 * XML_GetBuffer forgets where expat's last event was, so an instance that
 * was parked before the lending and got no bytes is parked again as it was
 * rather than judged again by maybe_release().
 *
 * Stream restart from inside a callback: expat cannot be freed while it is
 * running, so reset() then only sets a flag and stops expat; feed() does
 * the actual reset once XML_Parse() has returned and drops the rest of the
 * input. */
#include "xml/parser.h"

#include <expat.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "epode_limits.h"
#include "util/alloc.h"
#include "xml/stanza_int.h"

#define NS_SEP '\x01'
/* The XML declaration, whitespace and the stream header together. A real
 * header is a few hundred bytes; this bounds what expat buffers before the
 * header's start tag is complete. */
#define MAX_HEADER_BYTES (16u * 1024u)

/* Largest piece given to XML_Parse() at once (its length is an int). */
#define MAX_PIECE ((size_t)1 << 30)

/* Arena sizing: the first block of a stanza's arena gets a quarter more than
 * a slowly decaying maximum of what recent stanzas used, so stanzas of a
 * similar size take one allocation each even when they vary somewhat. The
 * hint is capped: a rare large stanza grows its arena in further blocks and
 * does not make every following small one reserve as much. */
#define ARENA_FIRST_HINT 1024u
#define ARENA_MAX_HINT (16u * 1024u)
/* Largest block kept as the spare (what the hint can ask for). */
#define ARENA_MAX_SPARE (ARENA_MAX_HINT + ARENA_MAX_HINT / 4)

static const char wrapper[] = "<w>";

/* Size of the error message buffer, allocated at the first error. */
#define ERRMSG_SIZE 256u
/* A text buffer grown past this is freed when expat is released, so one
 * large stanza does not pin its size to an idle session. */
#define TBUF_KEEP 4096u

struct epode__xml_parser {
  epode_mem mem;
  XML_Parser xp; /* NULL while released (see top) */
  epode__xml_callbacks cb;
  void *ud;
  int mode;
  size_t max_stanza;
  unsigned max_depth, max_attrs;

  epode_err err; /* sticky until reset */
  char *errmsg;  /* detail of err (ERRMSG_SIZE bytes, or NULL) */
  int stop;      /* a handler stopped expat: ignore further events */
  int reset_req; /* reset() was called during feed() */
  int in_feed;
  size_t buf_out;  /* bytes of expat's buffer lent out by buffer() */
  int lent_parked; /* the instance was released (parked) until then */
  int header_seen;
  int have_pos;       /* rel_line/rel_col were set by a release */
  unsigned depth;     /* open elements, the stream header / wrapper being 1 */
  epode_stanza *root; /* stanza being built */
  epode_stanza *cur;  /* its innermost open element */
  char *default_ns;   /* default namespace declared on the stream header,
                         until the stream_start callback has seen it */
  /* The stream header's start tag as the priming input for a new expat
   * instance: "<" qname, its namespace declarations, ">". Built while the
   * header is parsed (hdr_len bytes so far); NULL if it could not be
   * captured, and then expat is never released. */
  char *hdr;
  size_t hdr_len;
  uint64_t fed;  /* input bytes given to expat since the document started */
  uint64_t mark; /* start of what counts against the limit (see top) */
  uint64_t root_tag_end;
  /* The current expat instance: the input byte index of its first byte
   * after the priming bytes (plen of them), and the input's line (1-based)
   * and column (0-based) there, expat being at column pcol of line 1. */
  uint64_t doc_start;
  size_t plen;
  unsigned long line0, col0, pcol;
  /* Where the input stood at the last release: the start of the next
   * instance if a new one has to be made. */
  unsigned long rel_line, rel_col;
  /* The instance parked for this parser (see "parking"), 0 if none. */
  uint64_t park_serial;
  /* expat's hash salt, the same for every instance (see set_salt) */
  unsigned char salt[16];
  int salt_state;    /* 0: not made yet, 1: made, -1: none (expat picks) */
  size_t arena_hint; /* see ARENA_FIRST_HINT */
  /* The block of the last stanza's arena, if nothing of that stanza was
   * left when its callback returned: the next stanza of the same feed is
   * built in it instead of a new allocation. Freed when the feed returns,
   * so a session between reads holds no more than before. */
  epode__arena *spare;
  /* Character data of the innermost open element not yet made a text
   * node; the buffer is kept across stanzas. */
  char *tbuf;
  size_t tlen, tcap;
};

/* ------------------------------------------------------------ positions */

/* Input byte index of expat's current event (see doc_start). */
static uint64_t cur_index(const epode__xml_parser *p) {
  XML_Index i = XML_GetCurrentByteIndex(p->xp);
  uint64_t u = i < 0 ? 0 : (uint64_t)i;
  return p->doc_start + (u > p->plen ? u - p->plen : 0);
}

static uint64_t cur_end(const epode__xml_parser *p) {
  return cur_index(p) + (uint64_t)XML_GetCurrentByteCount(p->xp);
}

/* Line (1-based) and column (0-based, in characters) of expat's current
 * event in the input. The priming bytes never contain a line break. */
static void cur_pos(const epode__xml_parser *p, unsigned long *line, unsigned long *col) {
  unsigned long l = (unsigned long)XML_GetCurrentLineNumber(p->xp);
  unsigned long c = (unsigned long)XML_GetCurrentColumnNumber(p->xp);
  if (l <= 1) {
    *line = p->line0;
    *col = p->col0 + (c > p->pcol ? c - p->pcol : 0);
  } else {
    *line = p->line0 + (l - 1);
    *col = c;
  }
}

/* ------------------------------------------------------------ errors */

/* Formats the message of the error being recorded (p->err already set).
 * Without memory for it, errmsg() falls back to the error's name. */
static void vset_msg(epode__xml_parser *p, int with_pos, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static void vset_msg(epode__xml_parser *p, int with_pos, const char *fmt, va_list ap) {
  if (!p->errmsg && !(p->errmsg = epode__alloc(&p->mem, ERRMSG_SIZE))) return;
  int n = 0;
  if (with_pos && p->xp) {
    unsigned long line, col;
    cur_pos(p, &line, &col);
    n = snprintf(p->errmsg, ERRMSG_SIZE, "line %lu, column %lu: ", line, col + 1);
  }
  if (n < 0) n = 0;
  if ((size_t)n < ERRMSG_SIZE) vsnprintf(p->errmsg + n, ERRMSG_SIZE - (size_t)n, fmt, ap);
}

static void set_msg(epode__xml_parser *p, int with_pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_msg(epode__xml_parser *p, int with_pos, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vset_msg(p, with_pos, fmt, ap);
  va_end(ap);
}

__attribute__((format(printf, 4, 0)))
static void vset_error(epode__xml_parser *p, epode_err err, int with_pos, const char *fmt,
                       va_list ap) {
  if (p->err) return;
  p->err = err;
  vset_msg(p, with_pos, fmt, ap);
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len);
static void XMLCALL on_text_top(void *ud, const XML_Char *s, int len);

/* Records an error from inside an expat handler and stops expat. */
static void fail(epode__xml_parser *p, epode_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(epode__xml_parser *p, epode_err err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vset_error(p, err, 1, fmt, ap);
  va_end(ap);
  p->stop = 1;
  XML_SetCharacterDataHandler(p->xp, NULL); /* on_text does not test stop */
  XML_StopParser(p->xp, XML_FALSE);
}

/* Records an error found outside expat (limits between pieces). */
static void fail_at(epode__xml_parser *p, epode_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail_at(epode__xml_parser *p, epode_err err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vset_error(p, err, 0, fmt, ap);
  va_end(ap);
  p->stop = 1;
}

static epode_err map_expat_error(enum XML_Error code) {
  switch (code) {
  case XML_ERROR_NO_MEMORY: return EPODE_ERR_NOMEM;
  case XML_ERROR_UNBOUND_PREFIX:
  case XML_ERROR_UNDECLARING_PREFIX:
  case XML_ERROR_RESERVED_PREFIX_XML:
  case XML_ERROR_RESERVED_PREFIX_XMLNS:
  case XML_ERROR_RESERVED_NAMESPACE_URI: return EPODE_ERR_XML_NS;
  case XML_ERROR_UNDEFINED_ENTITY:
  case XML_ERROR_RECURSIVE_ENTITY_REF:
  case XML_ERROR_BINARY_ENTITY_REF:
  case XML_ERROR_ATTRIBUTE_EXTERNAL_ENTITY_REF:
  case XML_ERROR_EXTERNAL_ENTITY_HANDLING:
  case XML_ERROR_PARAM_ENTITY_REF:
  case XML_ERROR_ENTITY_DECLARED_IN_PE:
  case XML_ERROR_NOT_STANDALONE:
#if XML_MAJOR_VERSION > 2 || (XML_MAJOR_VERSION == 2 && XML_MINOR_VERSION >= 4)
  case XML_ERROR_AMPLIFICATION_LIMIT_BREACH:
#endif
    return EPODE_ERR_XML_RESTRICTED;
  case XML_ERROR_INCORRECT_ENCODING:
  case XML_ERROR_UNKNOWN_ENCODING: return EPODE_ERR_XML_UTF8;
  default: return EPODE_ERR_XML;
  }
}

/* ------------------------------------------------------------ the header copy */

/* Appends n bytes to the header copy; 0 without memory. */
static int hdr_append(epode__xml_parser *p, const char *s, size_t n) {
  char *b = epode__realloc(&p->mem, p->hdr, p->hdr_len + n + 1);
  if (!b) return 0;
  memcpy(b + p->hdr_len, s, n);
  p->hdr = b;
  p->hdr_len += n;
  b[p->hdr_len] = '\0';
  return 1;
}

/* Appends a namespace declaration, its URI escaped so that expat reads
 * back exactly the same string (attribute value normalisation would turn
 * a literal tab or line break into a space) and the copy stays on one
 * line. */
static int hdr_append_decl(epode__xml_parser *p, const char *prefix, const char *uri) {
  if (!hdr_append(p, " xmlns", 6)) return 0;
  if (prefix && (!hdr_append(p, ":", 1) || !hdr_append(p, prefix, strlen(prefix)))) return 0;
  if (!hdr_append(p, "='", 2)) return 0;
  for (const char *s = uri ? uri : ""; *s; s++) {
    unsigned char c = (unsigned char)*s;
    char esc[8];
    int n;
    if (c == '&')
      n = snprintf(esc, sizeof esc, "&amp;");
    else if (c == '<')
      n = snprintf(esc, sizeof esc, "&lt;");
    else if (c == '\'')
      n = snprintf(esc, sizeof esc, "&apos;");
    else if (c < 0x20)
      n = snprintf(esc, sizeof esc, "&#%u;", (unsigned)c);
    else {
      if (!hdr_append(p, s, 1)) return 0;
      continue;
    }
    if (!hdr_append(p, esc, (size_t)n)) return 0;
  }
  return hdr_append(p, "'", 1);
}

/* On the stream header's start tag (from its start handler): completes the
 * copy with the tag's qualified name as received, read from expat's input
 * buffer (expat only reports names resolved). Without it (expat built
 * without XML_CONTEXT_BYTES), the copy is dropped and expat kept. */
static void hdr_finish(epode__xml_parser *p) {
  int off = 0, size = 0;
  const char *ctx = XML_GetInputContext(p->xp, &off, &size);
  size_t qlen = 0;
  if (ctx && off >= 0 && off < size && ctx[off] == '<') {
    const char *q = ctx + off + 1, *end = ctx + size;
    while (q + qlen < end && !strchr(" \t\r\n/>", q[qlen]))
      qlen++;
    if (q + qlen == end) qlen = 0;
  }
  if (!qlen) {
    epode__free(&p->mem, p->hdr);
    p->hdr = NULL;
    p->hdr_len = 0;
    return;
  }
  size_t decls = p->hdr_len;
  /* "<" qname decls ">" */
  char *b = epode__realloc(&p->mem, p->hdr, 1 + qlen + decls + 2);
  if (!b) {
    fail(p, EPODE_ERR_NOMEM, "out of memory");
    return;
  }
  if (decls) memmove(b + 1 + qlen, b, decls);
  b[0] = '<';
  memcpy(b + 1, ctx + off + 1, qlen);
  b[1 + qlen + decls] = '>';
  b[2 + qlen + decls] = '\0';
  p->hdr = b;
  p->hdr_len = 1 + qlen + decls + 1;
}

/* ------------------------------------------------------------ handlers */

static void emit_stream_start(epode__xml_parser *p, const XML_Char *name, const XML_Char **atts) {
  epode_stanza *hdr;
  if (epode__stanza_new_expat(&hdr, &p->mem, name, atts, NS_SEP)) {
    fail(p, EPODE_ERR_NOMEM, "out of memory");
    return;
  }
  size_t n = epode_stanza_attr_count(hdr);
  const char **arr = epode__alloc(&p->mem, (2 * n + 1) * sizeof(*arr));
  if (!arr) {
    epode_stanza_free(hdr);
    fail(p, EPODE_ERR_NOMEM, "out of memory");
    return;
  }
  for (size_t i = 0; i < n; i++)
    epode_stanza_attr_at(hdr, i, &arr[2 * i], &arr[2 * i + 1]);
  arr[2 * n] = NULL;
  epode_err e = EPODE_OK;
  if (p->cb.stream_start)
    e = p->cb.stream_start(p->ud, epode_stanza_name(hdr), epode_stanza_ns(hdr), p->default_ns, arr);
  epode__free(&p->mem, (void *)arr);
  epode_stanza_free(hdr);
  /* Only the callback needed it. */
  epode__free(&p->mem, p->default_ns);
  p->default_ns = NULL;
  if (e) fail(p, e, "stream header rejected by the callback (%s)", epode_err_name(e));
}

/* Makes the collected character data a text node of the current element. */
static int flush_text(epode__xml_parser *p) {
  if (!p->tlen) return 1;
  size_t n = p->tlen;
  p->tlen = 0;
  if (epode__stanza_add_arena_text(p->cur, p->tbuf, n)) {
    fail(p, EPODE_ERR_NOMEM, "out of memory");
    return 0;
  }
  return 1;
}

static void note_arena(epode__xml_parser *p, size_t used) {
  size_t h = p->arena_hint;
  h -= h / 64;
  if (used > h) h = used;
  p->arena_hint = h < ARENA_MAX_HINT ? h : ARENA_MAX_HINT;
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **atts) {
  epode__xml_parser *p = ud;
  if (p->stop) return;
  size_t nattrs = 0;
  while (atts[2 * nattrs])
    nattrs++;
  if (nattrs > p->max_attrs) {
    fail(p, EPODE_ERR_LIMIT, "element has %zu attributes, more than the limit of %u", nattrs,
         p->max_attrs);
    return;
  }
  if (p->depth == 0) {
    if (p->header_seen) {
      fail(p, EPODE_ERR_XML, "element after the end of the stream");
      return;
    }
    p->depth = 1;
    p->header_seen = 1;
    p->mark = cur_end(p);
    if (p->mode == EPODE__XML_STREAM) {
      hdr_finish(p);
      if (!p->stop) emit_stream_start(p, name, atts);
    }
    return;
  }
  /* p->depth is now the depth of this element within its stanza (root 1). */
  if (p->depth > p->max_depth) {
    fail(p, EPODE_ERR_LIMIT, "elements nested deeper than the limit of %u", p->max_depth);
    return;
  }
  epode_stanza *el;
  if (!p->root) {
    size_t hint = p->arena_hint + p->arena_hint / 4;
    if (epode__stanza_new_arena_root_in(&el, &p->mem, hint, &p->spare, name, atts, NS_SEP)) {
      fail(p, EPODE_ERR_NOMEM, "out of memory");
      return;
    }
    p->root = el;
    p->mark = cur_index(p);
    p->root_tag_end = p->mark + (uint64_t)XML_GetCurrentByteCount(p->xp); /* cur_end() */
    XML_SetCharacterDataHandler(p->xp, on_text);
  } else {
    if (!flush_text(p)) return;
    if (epode__stanza_add_expat_child(&el, p->cur, name, atts, NS_SEP)) {
      fail(p, EPODE_ERR_NOMEM, "out of memory");
      return;
    }
  }
  p->cur = el;
  p->depth++;
}

static void XMLCALL on_end(void *ud, const XML_Char *name) {
  epode__xml_parser *p = ud;
  (void)name;
  if (p->stop) return;
  if (p->depth == 1) {
    p->depth = 0;
    uint64_t end = cur_end(p);
    if (end > p->mark) p->mark = end;
    if (p->mode == EPODE__XML_FRAGMENTS) {
      fail(p, EPODE_ERR_XML, "unexpected end tag");
      return;
    }
    epode_err e = p->cb.stream_end ? p->cb.stream_end(p->ud) : EPODE_OK;
    if (e) fail(p, e, "stream end rejected by the callback (%s)", epode_err_name(e));
    return;
  }
  if (!flush_text(p)) return;
  p->depth--;
  if (p->cur != p->root) {
    p->cur = epode_stanza_parent(p->cur);
    return;
  }
  /* Empty-element tags report no bytes of their own for the end event. */
  int count = XML_GetCurrentByteCount(p->xp);
  uint64_t end = count > 0 ? cur_index(p) + (uint64_t)count : p->root_tag_end;
  XML_SetCharacterDataHandler(p->xp, on_text_top);
  if (end - p->mark > p->max_stanza) {
    fail(p, EPODE_ERR_LIMIT, "stanza of %llu bytes exceeds the limit of %zu bytes",
         (unsigned long long)(end - p->mark), p->max_stanza);
    return;
  }
  epode_stanza *st = p->root;
  p->root = p->cur = NULL;
  p->mark = end;
  note_arena(p, epode__stanza_arena_used(st));
  /* The parser's own reference keeps the block through the callback; if
   * the callback left nothing of the stanza, the block is the spare. */
  epode__arena *ar = epode__stanza_arena_hold(st);
  epode_err e = EPODE_OK;
  if (p->cb.stanza)
    e = p->cb.stanza(p->ud, st);
  else
    epode_stanza_free(st);
  if ((ar = epode__arena_reclaim(ar, ARENA_MAX_SPARE))) {
    epode__arena_free(p->spare);
    p->spare = ar;
  }
  if (e) fail(p, e, "stanza rejected by the callback (%s)", epode_err_name(e));
}

/* memcpy for the pieces expat hands over: most are short (one per entity
 * reference, and the runs between them), where fixed-size moves that
 * overlap beat a call. Reads and writes stay within the n bytes. */
static inline void copy_text(char *d, const char *s, size_t n) {
  if (n >= 8 && n <= 16) {
    uint64_t a, b;
    memcpy(&a, s, 8), memcpy(&b, s + n - 8, 8);
    memcpy(d, &a, 8), memcpy(d + n - 8, &b, 8);
  } else if (n >= 4 && n < 8) {
    uint32_t a, b;
    memcpy(&a, s, 4), memcpy(&b, s + n - 4, 4);
    memcpy(d, &a, 4), memcpy(d + n - 4, &b, 4);
  } else if (n < 4) {
    d[0] = s[0];
    if (n > 1) d[n - 1] = s[n - 1], d[n / 2] = s[n / 2];
  } else {
    memcpy(d, s, n);
  }
}

/* Makes room for n more bytes of text; 0 if it failed (and stopped expat).
 * Apart from on_text so that the common path stays a leaf function. */
static __attribute__((noinline)) int grow_text(epode__xml_parser *p, size_t n) {
  /* Text never outgrows the stanza's raw bytes, which are bounded. */
  if (n > (size_t)-1 / 4 - p->tlen) {
    fail(p, EPODE_ERR_LIMIT, "text too long");
    return 0;
  }
  size_t cap = p->tcap ? p->tcap * 2 : 256;
  while (cap < p->tlen + n)
    cap *= 2;
  char *b = epode__realloc(&p->mem, p->tbuf, cap);
  if (!b) {
    fail(p, EPODE_ERR_NOMEM, "out of memory");
    return 0;
  }
  p->tbuf = b;
  p->tcap = cap;
  return 1;
}

/* Character data inside a stanza: the handler while a stanza is being
 * built (on_start and on_end switch between on_text and on_text_top, and
 * a stop removes it), so the common path tests nothing else. */
static void XMLCALL on_text(void *ud, const XML_Char *s, int len) {
  epode__xml_parser *p = ud;
  if (len <= 0) return;
  size_t n = (size_t)len;
  if (n > p->tcap - p->tlen && !grow_text(p, n)) return;
  copy_text(p->tbuf + p->tlen, s, n);
  p->tlen += n;
}

/* Character data between stanzas. */
static void XMLCALL on_text_top(void *ud, const XML_Char *s, int len) {
  epode__xml_parser *p = ud;
  if (p->stop || len <= 0) return;
  /* Between stanzas only whitespace (keepalives) may appear. */
  for (int i = 0; i < len; i++) {
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') {
      fail(p, EPODE_ERR_XML, "text outside of a stanza");
      return;
    }
  }
  p->mark = cur_end(p);
}

/* Declarations on the stream header (depth 0) are kept for the header
 * copy; the default namespace also for the stream_start callback. */
static void XMLCALL on_ns_decl(void *ud, const XML_Char *prefix, const XML_Char *uri) {
  epode__xml_parser *p = ud;
  if (p->stop || p->depth != 0 || p->header_seen) return;
  if (!hdr_append_decl(p, prefix, uri)) {
    fail(p, EPODE_ERR_NOMEM, "out of memory");
    return;
  }
  if (prefix) return;
  epode__free(&p->mem, p->default_ns);
  p->default_ns = epode__strdup(&p->mem, uri ? uri : "");
  if (!p->default_ns) fail(p, EPODE_ERR_NOMEM, "out of memory");
}

static void XMLCALL on_xml_decl(void *ud, const XML_Char *version, const XML_Char *encoding,
                                int standalone) {
  epode__xml_parser *p = ud;
  (void)standalone;
  if (p->stop) return;
  if (version && strcmp(version, "1.0") != 0)
    fail(p, EPODE_ERR_XML, "XML version '%.16s' is not supported (XMPP uses 1.0)", version);
  else if (encoding && strcasecmp(encoding, "UTF-8") != 0)
    fail(p, EPODE_ERR_XML, "encoding '%.32s' is not allowed (XMPP requires UTF-8)", encoding);
}

static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal_subset) {
  (void)name, (void)sysid, (void)pubid, (void)has_internal_subset;
  fail(ud, EPODE_ERR_XML_RESTRICTED, "DOCTYPE is not allowed in XMPP");
}

static void XMLCALL on_entity_decl(void *ud, const XML_Char *name, int is_pe, const XML_Char *value,
                                   int value_len, const XML_Char *base, const XML_Char *sysid,
                                   const XML_Char *pubid, const XML_Char *notation) {
  (void)is_pe, (void)value, (void)value_len, (void)base, (void)sysid, (void)pubid, (void)notation;
  fail(ud, EPODE_ERR_XML_RESTRICTED, "entity declaration '%.64s' is not allowed in XMPP", name);
}

static void XMLCALL on_element_decl(void *ud, const XML_Char *name, XML_Content *model) {
  epode__xml_parser *p = ud;
  XML_FreeContentModel(p->xp, model);
  fail(p, EPODE_ERR_XML_RESTRICTED, "element declaration '%.64s' is not allowed in XMPP", name);
}

static void XMLCALL on_attlist_decl(void *ud, const XML_Char *el, const XML_Char *att,
                                    const XML_Char *type, const XML_Char *dflt, int required) {
  (void)att, (void)type, (void)dflt, (void)required;
  fail(ud, EPODE_ERR_XML_RESTRICTED, "attribute list declaration for '%.64s' is not allowed", el);
}

static void XMLCALL on_notation_decl(void *ud, const XML_Char *name, const XML_Char *base,
                                     const XML_Char *sysid, const XML_Char *pubid) {
  (void)base, (void)sysid, (void)pubid;
  fail(ud, EPODE_ERR_XML_RESTRICTED, "notation declaration '%.64s' is not allowed", name);
}

static void XMLCALL on_comment(void *ud, const XML_Char *data) {
  (void)data;
  fail(ud, EPODE_ERR_XML_RESTRICTED, "comments are not allowed in XMPP");
}

static void XMLCALL on_pi(void *ud, const XML_Char *target, const XML_Char *data) {
  (void)data;
  fail(ud, EPODE_ERR_XML_RESTRICTED, "processing instruction '%.64s' is not allowed in XMPP",
       target);
}

static void XMLCALL on_skipped_entity(void *ud, const XML_Char *name, int is_pe) {
  (void)is_pe;
  fail(ud, EPODE_ERR_XML_RESTRICTED, "reference to entity '%.64s' is not allowed in XMPP", name);
}

static int XMLCALL on_external_entity(XML_Parser xp, const XML_Char *context, const XML_Char *base,
                                      const XML_Char *sysid, const XML_Char *pubid) {
  (void)context, (void)base, (void)sysid, (void)pubid;
  epode__xml_parser *p = XML_GetUserData(xp);
  fail(p, EPODE_ERR_XML_RESTRICTED, "external entities are not allowed in XMPP");
  return XML_STATUS_ERROR;
}

/* ------------------------------------------------------------ expat instances */

/* A random hash salt per parser, the same for each of its instances:
 * expat would otherwise make a getrandom() call for every new instance.
 * Expat 2.8 takes 16 bytes (and deprecates the unsigned long), older ones
 * an unsigned long. Without entropy, expat picks its own, as before. */
#if XML_MAJOR_VERSION > 2 || (XML_MAJOR_VERSION == 2 && XML_MINOR_VERSION >= 8) ||                 \
    defined(XML_BACKPORT_SET_HASH_SALT_16_BYTES)
#define SALT16 1
#define SALT_BYTES 16u
#else
#define SALT16 0
#define SALT_BYTES sizeof(unsigned long)
#endif

static void set_salt(epode__xml_parser *p, XML_Parser xp) {
  if (!p->salt_state)
    p->salt_state = getrandom(p->salt, SALT_BYTES, GRND_NONBLOCK) == (ssize_t)SALT_BYTES ? 1 : -1;
  if (p->salt_state < 0) return;
#if SALT16
  XML_SetHashSalt16Bytes(xp, p->salt);
#else
  unsigned long s;
  memcpy(&s, p->salt, sizeof s);
  if (s) XML_SetHashSalt(xp, s); /* 0 would mean "not set" */
#endif
}

static void install_handlers(XML_Parser xp) {
  XML_SetElementHandler(xp, on_start, on_end);
  XML_SetCharacterDataHandler(xp, on_text_top);
  XML_SetStartNamespaceDeclHandler(xp, on_ns_decl);
  XML_SetXmlDeclHandler(xp, on_xml_decl);
  XML_SetStartDoctypeDeclHandler(xp, on_doctype);
  XML_SetEntityDeclHandler(xp, on_entity_decl);
  XML_SetElementDeclHandler(xp, on_element_decl);
  XML_SetAttlistDeclHandler(xp, on_attlist_decl);
  XML_SetNotationDeclHandler(xp, on_notation_decl);
  XML_SetCommentHandler(xp, on_comment);
  XML_SetProcessingInstructionHandler(xp, on_pi);
  XML_SetSkippedEntityHandler(xp, on_skipped_entity);
  XML_SetExternalEntityRefHandler(xp, on_external_entity);
}

/* Creates the expat instance for the next input: a fresh document, or, in
 * fragment mode or after a release, one primed with the wrapper or the
 * header copy (see top). The priming bytes are parsed before the handlers
 * are installed, so no callback sees them. */
static epode_err open_expat(epode__xml_parser *p) {
  const char *prime = NULL;
  size_t plen = 0;
  if (p->mode == EPODE__XML_FRAGMENTS) {
    prime = wrapper;
    plen = sizeof(wrapper) - 1;
  } else if (p->header_seen) {
    prime = p->hdr; /* non-NULL, or expat would not have been released */
    plen = p->hdr_len;
  }
  if (plen > (size_t)INT32_MAX) return EPODE_ERR_NOMEM;
  /* expat's memory hooks take no user data, so expat itself allocates with
   * the C library; everything epode builds uses `mem`. */
  XML_Parser xp = XML_ParserCreateNS("UTF-8", NS_SEP);
  if (!xp) return EPODE_ERR_NOMEM;
  set_salt(p, xp);
  XML_SetUserData(xp, p);
  XML_SetParamEntityParsing(xp, XML_PARAM_ENTITY_PARSING_NEVER);
#if XML_MAJOR_VERSION > 2 || (XML_MAJOR_VERSION == 2 && XML_MINOR_VERSION >= 6)
  /* Deferral would hold back callbacks for large tokens; we bound tokens
   * ourselves and want events as soon as the bytes are there. */
  XML_SetReparseDeferralEnabled(xp, XML_FALSE);
#endif
  unsigned long pcol = 0;
  if (plen) {
    /* Our own well-formed bytes: only lack of memory can fail them. */
    if (XML_Parse(xp, prime, (int)plen, XML_FALSE) != XML_STATUS_OK ||
        XML_GetCurrentByteIndex(xp) != (XML_Index)plen || XML_GetCurrentLineNumber(xp) != 1) {
      XML_ParserFree(xp);
      return EPODE_ERR_NOMEM;
    }
    pcol = (unsigned long)XML_GetCurrentColumnNumber(xp);
  }
  install_handlers(xp);
  p->xp = xp;
  p->doc_start = p->fed;
  p->plen = plen;
  p->pcol = pcol;
  if (p->have_pos) {
    p->line0 = p->rel_line;
    p->col0 = p->rel_col;
  } else {
    /* A new document: expat's own positions, the wrapper included. */
    p->line0 = 1;
    p->col0 = pcol;
  }
  if (p->mode == EPODE__XML_FRAGMENTS) p->depth = p->header_seen = 1;
  return EPODE_OK;
}

/* ------------------------------------------------------------ parking */

/* A released instance is not freed at once: it is parked in a slot of the
 * calling thread, which holds one instance. If the next feed on that
 * thread is for the same parser (the next TLS record or WebSocket message
 * of the same read, or the next read of the only busy session), it takes
 * its instance back as it left it, at no cost. Otherwise the next release
 * on the thread, by whichever parser, frees it, and its owner makes a new
 * one when its input comes. So a thread holds at most one idle instance
 * whatever the number of sessions, and a busy stream whose reads end at
 * stanza boundaries (one TLS record or WebSocket message per stanza) does
 * not pay for a new instance per stanza. Serials are unique in the
 * process, so a parser never mistakes another's instance for its own,
 * even if it was freed on another thread and its address reused. */
typedef struct parked {
  XML_Parser xp;
  uint64_t serial;
} parked;

static _Thread_local parked slot;
static atomic_uint_least64_t park_serials;
static pthread_once_t slot_once = PTHREAD_ONCE_INIT;
static pthread_key_t slot_key;
static int slot_key_ok;

static void slot_free(parked *s) {
  if (s->xp) XML_ParserFree(s->xp);
  s->xp = NULL;
  s->serial = 0;
}

/* At thread exit: the slot's instance would otherwise be lost. */
static void slot_dtor(void *v) { slot_free(v); }

static void slot_key_make(void) { slot_key_ok = pthread_key_create(&slot_key, slot_dtor) == 0; }

static void close_expat(epode__xml_parser *p) {
  if (p->xp) XML_ParserFree(p->xp);
  p->xp = NULL;
}

/* Parks the parser's instance, freeing the one parked before. Without the
 * thread-exit hook, frees it instead. */
static void park(epode__xml_parser *p) {
  slot_free(&slot);
  pthread_once(&slot_once, slot_key_make);
  if (!slot_key_ok || (!pthread_getspecific(slot_key) && pthread_setspecific(slot_key, &slot))) {
    close_expat(p);
    return;
  }
  slot.xp = p->xp;
  slot.serial = p->park_serial = atomic_fetch_add(&park_serials, 1) + 1;
  p->xp = NULL;
}

/* Takes the parser's parked instance back, if it is still there. */
static int unpark(epode__xml_parser *p) {
  uint64_t serial = p->park_serial;
  p->park_serial = 0;
  if (!serial || slot.serial != serial) return 0;
  p->xp = slot.xp;
  slot.xp = NULL;
  slot.serial = 0;
  return 1;
}

/* Frees the parser's parked instance, if it is still there. */
static void drop_parked(epode__xml_parser *p) {
  if (p->park_serial && slot.serial == p->park_serial) slot_free(&slot);
  p->park_serial = 0;
}

/* At the end of a feed: releases expat if the input is at a stanza
 * boundary and expat holds no unparsed bytes (see top). */
static void maybe_release(epode__xml_parser *p) {
  if (!p->xp || p->err || p->stop || !p->header_seen || p->depth != 1 || p->root) return;
  /* In stream mode, the header copy to prime a new instance with. */
  if (p->mode == EPODE__XML_STREAM && !p->hdr) return;
  /* Every byte fed was consumed by an event (a partial tag, a CR that
   * may start a CR LF pair, or a cut UTF-8 sequence stay in expat). */
  if (p->mark != p->fed || cur_index(p) != p->fed) return;
  cur_pos(p, &p->rel_line, &p->rel_col);
  p->have_pos = 1;
  park(p);
  if (p->tcap > TBUF_KEEP) {
    epode__free(&p->mem, p->tbuf);
    p->tbuf = NULL;
    p->tcap = 0;
  }
}

static void clear_state(epode__xml_parser *p) {
  epode__arena_free(p->spare);
  p->spare = NULL;
  close_expat(p);
  drop_parked(p);
  epode_stanza_free(p->root);
  p->root = p->cur = NULL;
  epode__free(&p->mem, p->default_ns);
  p->default_ns = NULL;
  epode__free(&p->mem, p->hdr);
  p->hdr = NULL;
  p->hdr_len = 0;
  epode__free(&p->mem, p->errmsg);
  p->errmsg = NULL;
  p->err = EPODE_OK;
  p->stop = p->reset_req = 0;
  p->buf_out = 0;
  p->header_seen = p->have_pos = 0;
  p->depth = 0;
  p->fed = p->mark = p->root_tag_end = 0;
  p->tlen = 0;
}

epode_err epode__xml_parser_new(epode__xml_parser **out, const epode_mem *mem,
                                const epode__xml_limits *limits, int mode,
                                const epode__xml_callbacks *cb, void *ud) {
  if (!out) return EPODE_ERR_INVAL;
  *out = NULL;
  if (mode != EPODE__XML_STREAM && mode != EPODE__XML_FRAGMENTS) return EPODE_ERR_INVAL;
  mem = epode__mem_or_default(mem);
  epode__xml_parser *p = epode__calloc(mem, sizeof(*p));
  if (!p) return EPODE_ERR_NOMEM;
  p->mem = *mem;
  p->mode = mode;
  p->ud = ud;
  if (cb) p->cb = *cb;
  p->max_stanza = limits && limits->max_stanza_bytes ? limits->max_stanza_bytes
                                                     : EPODE_DEFAULT_MAX_STANZA_BYTES;
  p->max_depth = limits && limits->max_depth ? limits->max_depth : EPODE_DEFAULT_MAX_DEPTH;
  p->max_attrs = limits && limits->max_attrs ? limits->max_attrs : EPODE_DEFAULT_MAX_ATTRS;
  p->arena_hint = ARENA_FIRST_HINT;
  /* expat comes at the first feed. */
  *out = p;
  return EPODE_OK;
}

void epode__xml_parser_free(epode__xml_parser *p) {
  if (!p) return;
  clear_state(p);
  epode__free(&p->mem, p->tbuf);
  epode_mem m = p->mem;
  epode__free(&m, p);
}

int epode__xml_parser_holds_expat(const epode__xml_parser *p) {
  if (!p) return 0;
  if (p->xp) return 1;
  return p->park_serial && slot.serial == p->park_serial ? 2 : 0;
}

/* ------------------------------------------------------------ feeding */

/* Checks the UTF-8 sequence starting at s[0] (n bytes available) strictly:
 * no overlongs, surrogates or code points above U+10FFFF. Returns the
 * offset of the first byte that makes it invalid, or n + 1 if it is valid
 * or merely cut short by the end of the input. */
static size_t utf8_bad_at(const unsigned char *s, size_t n) {
  unsigned char c = s[0], lo = 0x80, hi = 0xBF;
  size_t need;
  if (c < 0x80) return n + 1;
  if (c >= 0xC2 && c <= 0xDF)
    need = 1;
  else if (c == 0xE0)
    need = 2, lo = 0xA0; /* no overlongs */
  else if (c == 0xED)
    need = 2, hi = 0x9F; /* no surrogates */
  else if (c >= 0xE1 && c <= 0xEF)
    need = 2;
  else if (c == 0xF0)
    need = 3, lo = 0x90; /* no overlongs */
  else if (c >= 0xF1 && c <= 0xF3)
    need = 3;
  else if (c == 0xF4)
    need = 3, hi = 0x8F; /* <= U+10FFFF */
  else
    return 0; /* C0, C1, F5..FF, stray 80..BF */
  for (size_t i = 1; i <= need; i++) {
    if (i >= n) return n + 1;
    if (s[i] < lo || s[i] > hi) return i;
    lo = 0x80, hi = 0xBF;
  }
  return n + 1;
}

/* After XML_Parse() failed: if the input where expat stopped is invalid
 * UTF-8, records that (with the index of the bad byte in the input, as the
 * caller counts it) and returns 1. */
static int utf8_error(epode__xml_parser *p) {
  int off = 0, size = 0;
  const char *ctx = XML_GetInputContext(p->xp, &off, &size);
  if (!ctx || off < 0 || off >= size) return 0;
  const unsigned char *s = (const unsigned char *)ctx + off;
  size_t n = (size_t)(size - off), bad = utf8_bad_at(s, n);
  if (bad > n) return 0;
  uint64_t at = cur_index(p) + bad;
  p->err = EPODE_ERR_XML_UTF8;
  p->stop = 1;
  set_msg(p, 0, "invalid UTF-8 at byte %llu of the input (byte 0x%02x)", (unsigned long long)at,
          (unsigned)s[bad]);
  return 1;
}

static size_t current_limit(const epode__xml_parser *p) {
  if (p->mode == EPODE__XML_STREAM && !p->header_seen) return MAX_HEADER_BYTES;
  return p->max_stanza;
}

static void report_limit(epode__xml_parser *p) {
  if (p->mode == EPODE__XML_STREAM && !p->header_seen)
    fail_at(p, EPODE_ERR_LIMIT, "stream header longer than %u bytes", MAX_HEADER_BYTES);
  else if (p->root)
    fail_at(p, EPODE_ERR_LIMIT, "stanza <%.64s> exceeds the limit of %zu bytes",
            epode_stanza_name(p->root), p->max_stanza);
  else
    fail_at(p, EPODE_ERR_LIMIT, "more than %zu bytes without a complete element", p->max_stanza);
}

/* How many bytes expat may be given now: at most one more than the limit
 * still allows (see top), and what XML_Parse() takes at once. */
static size_t allowed_now(const epode__xml_parser *p) {
  size_t limit = current_limit(p);
  uint64_t pending = p->fed - p->mark;
  uint64_t allow = pending <= limit ? limit - pending + 1 : 1;
  return allow < MAX_PIECE ? (size_t)allow : MAX_PIECE;
}

/* Gets an expat instance: the parked one, or a new one. */
static epode_err ensure_expat(epode__xml_parser *p) {
  if (p->xp || unpark(p)) return EPODE_OK;
  epode_err e = open_expat(p);
  if (e) {
    p->err = e;
    set_msg(p, 0, "could not start the XML parser");
  }
  return e;
}

/* After XML_Parse() or XML_ParseBuffer() returned `st` for the bytes just
 * counted in p->fed: 1 to go on with more input, 0 to stop (an error, or
 * a reset requested by a callback, which is done here: then *reset is set
 * and the callback's own error, if any, is left in p->err for the caller
 * to return once). */
static int after_parse(epode__xml_parser *p, enum XML_Status st, int *reset) {
  if (p->reset_req) {
    /* reset() inside a callback: drop the rest, start a new document. */
    epode_err cb_err = p->err;
    p->in_feed = 0;
    clear_state(p);
    p->err = cb_err; /* returned once by the caller, then cleared */
    *reset = 1;
    return 0;
  }
  if (st != XML_STATUS_OK) {
    if (!p->err && !utf8_error(p)) {
      enum XML_Error code = XML_GetErrorCode(p->xp);
      p->err = map_expat_error(code);
      const char *what = XML_ErrorString(code);
      if (code == XML_ERROR_UNDEFINED_ENTITY)
        what = "entity reference not allowed in XMPP (only amp, lt, gt, quot, apos and "
               "character references)";
      set_msg(p, 1, "%s", what ? what : "error");
    }
    return 0;
  }
  if (p->err) return 0;
  if (p->fed - p->mark > current_limit(p)) {
    report_limit(p);
    return 0;
  }
  return 1;
}

/* The end of a feed or commit that was not reset. */
static epode_err end_feed(epode__xml_parser *p) {
  if (!p->err) maybe_release(p);
  epode__arena_free(p->spare);
  p->spare = NULL;
  p->in_feed = 0;
  return p->err;
}

/* What a reset inside a callback leaves to return: the callback's error,
 * once; the parser itself starts clean. */
static epode_err reset_result(epode__xml_parser *p) {
  epode_err cb_err = p->err;
  p->err = EPODE_OK;
  return cb_err;
}

epode_err epode__xml_parser_feed(epode__xml_parser *p, const char *data, size_t len) {
  if (!p || (!data && len)) return EPODE_ERR_INVAL;
  if (p->in_feed || p->buf_out) return EPODE_ERR_STATE;
  if (p->err) return p->err;
  if (!len) return EPODE_OK;
  if (ensure_expat(p)) return p->err;
  size_t off = 0;
  int reset = 0;
  p->in_feed = 1;
  while (off < len) {
    size_t piece = allowed_now(p);
    if (piece > len - off) piece = len - off;
    p->fed += piece;
    enum XML_Status st = XML_Parse(p->xp, data + off, (int)piece, XML_FALSE);
    off += piece;
    if (!after_parse(p, st, &reset)) break;
  }
  if (reset) return reset_result(p);
  return end_feed(p);
}

epode_err epode__xml_parser_buffer(epode__xml_parser *p, size_t want, void **buf, size_t *len) {
  if (!p || !buf || !len || !want) return EPODE_ERR_INVAL;
  *buf = NULL;
  *len = 0;
  if (p->in_feed || p->buf_out) return EPODE_ERR_STATE;
  if (p->err) return p->err;
  /* A new instance is made by a feed with bytes in hand, not for a read
   * that may find none. */
  if (!p->xp && !(p->park_serial && slot.serial == p->park_serial)) return EPODE_OK;
  int was_parked = !p->xp;
  if (ensure_expat(p)) return p->err;
  size_t n = allowed_now(p);
  if (n > want) n = want;
  void *b = XML_GetBuffer(p->xp, (int)n);
  if (!b) {
    /* Nothing was parsed; the instance stays usable for a later feed. */
    if (was_parked) park(p);
    return EPODE_ERR_NOMEM;
  }
  p->buf_out = n;
  p->lent_parked = was_parked;
  *buf = b;
  *len = n;
  return EPODE_OK;
}

epode_err epode__xml_parser_commit(epode__xml_parser *p, size_t len) {
  if (!p) return EPODE_ERR_INVAL;
  if (!p->buf_out || len > p->buf_out) return EPODE_ERR_STATE;
  p->buf_out = 0;
  p->in_feed = 1;
  int reset = 0;
  if (len) {
    p->fed += len;
    enum XML_Status st = XML_ParseBuffer(p->xp, (int)len, XML_FALSE);
    (void)after_parse(p, st, &reset);
  } else if (p->lent_parked) {
    /* Released before and nothing came: released again, as it was (after
     * XML_GetBuffer expat no longer knows where its last event was, which
     * maybe_release() would ask). Otherwise it was in use before and
     * still is. */
    park(p);
  }
  if (reset) return reset_result(p);
  return end_feed(p);
}

epode_err epode__xml_parser_reset(epode__xml_parser *p) {
  if (!p) return EPODE_ERR_INVAL;
  if (p->in_feed) {
    p->reset_req = 1;
    p->stop = 1;
    XML_SetCharacterDataHandler(p->xp, NULL);
    XML_StopParser(p->xp, XML_FALSE);
    return EPODE_OK;
  }
  /* The next feed starts a new document in a new expat instance. */
  clear_state(p);
  return EPODE_OK;
}

const char *epode__xml_parser_errmsg(const epode__xml_parser *p) {
  if (!p) return "no parser";
  if (!p->err) return "no error";
  return p->errmsg && p->errmsg[0] ? p->errmsg : epode_strerror(p->err);
}

size_t epode__xml_parser_pending(const epode__xml_parser *p) {
  return p && p->fed > p->mark ? (size_t)(p->fed - p->mark) : 0;
}
