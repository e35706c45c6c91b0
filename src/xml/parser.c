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
 * before (`arena_hint`). Character data is collected in a scratch buffer
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
 * Stream restart from inside a callback: expat cannot be reset while it is
 * running, so reset() then only sets a flag and stops expat; feed() does
 * the actual reset once XML_Parse() has returned and drops the rest of the
 * input. */
#include "xml/parser.h"

#include <expat.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

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

static const char wrapper[] = "<w>";

struct epode__xml_parser {
  epode_mem mem;
  XML_Parser xp;
  epode__xml_callbacks cb;
  void *ud;
  int mode;
  size_t max_stanza;
  unsigned max_depth, max_attrs;

  epode_err err;    /* sticky until reset */
  char errmsg[256]; /* detail of err */
  int stop;         /* a handler stopped expat: ignore further events */
  int reset_req;    /* reset() was called during feed() */
  int in_feed;
  int header_seen;
  unsigned depth;     /* open elements, the stream header / wrapper being 1 */
  epode_stanza *root; /* stanza being built */
  epode_stanza *cur;  /* its innermost open element */
  char *default_ns;   /* default namespace declared on the stream header */
  uint64_t fed;       /* bytes given to expat since the document started */
  uint64_t mark;      /* start of what counts against the limit (see top) */
  uint64_t root_tag_end;
  size_t arena_hint; /* see ARENA_FIRST_HINT */
  /* Character data of the innermost open element not yet made a text
   * node; the buffer is kept across stanzas. */
  char *tbuf;
  size_t tlen, tcap;
};

/* ------------------------------------------------------------ errors */

__attribute__((format(printf, 4, 0)))
static void vset_error(epode__xml_parser *p, epode_err err, int with_pos, const char *fmt,
                       va_list ap) {
  if (p->err) return;
  p->err = err;
  int n = 0;
  if (with_pos)
    n = snprintf(p->errmsg, sizeof p->errmsg,
                 "line %lu, column %lu: ", (unsigned long)XML_GetCurrentLineNumber(p->xp),
                 (unsigned long)XML_GetCurrentColumnNumber(p->xp) + 1);
  if (n < 0) n = 0;
  if ((size_t)n < sizeof p->errmsg) vsnprintf(p->errmsg + n, sizeof p->errmsg - (size_t)n, fmt, ap);
}

/* Records an error from inside an expat handler and stops expat. */
static void fail(epode__xml_parser *p, epode_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(epode__xml_parser *p, epode_err err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vset_error(p, err, 1, fmt, ap);
  va_end(ap);
  p->stop = 1;
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

static uint64_t cur_index(const epode__xml_parser *p) {
  XML_Index i = XML_GetCurrentByteIndex(p->xp);
  return i < 0 ? 0 : (uint64_t)i;
}

static uint64_t cur_end(const epode__xml_parser *p) {
  return cur_index(p) + (uint64_t)XML_GetCurrentByteCount(p->xp);
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
    if (p->mode == EPODE__XML_STREAM) emit_stream_start(p, name, atts);
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
    if (epode__stanza_new_arena_root(&el, &p->mem, hint, name, atts, NS_SEP)) {
      fail(p, EPODE_ERR_NOMEM, "out of memory");
      return;
    }
    p->root = el;
    p->mark = cur_index(p);
    p->root_tag_end = cur_end(p);
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
  uint64_t end = XML_GetCurrentByteCount(p->xp) ? cur_end(p) : p->root_tag_end;
  if (end - p->mark > p->max_stanza) {
    fail(p, EPODE_ERR_LIMIT, "stanza of %llu bytes exceeds the limit of %zu bytes",
         (unsigned long long)(end - p->mark), p->max_stanza);
    return;
  }
  epode_stanza *st = p->root;
  p->root = p->cur = NULL;
  p->mark = end;
  note_arena(p, epode__stanza_arena_used(st));
  if (!p->cb.stanza) {
    epode_stanza_free(st);
    return;
  }
  epode_err e = p->cb.stanza(p->ud, st);
  if (e) fail(p, e, "stanza rejected by the callback (%s)", epode_err_name(e));
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len) {
  epode__xml_parser *p = ud;
  if (p->stop || len <= 0) return;
  if (p->cur) {
    size_t n = (size_t)len;
    if (n > p->tcap - p->tlen) {
      /* Text never outgrows the stanza's raw bytes, which are bounded. */
      if (n > (size_t)-1 / 4 - p->tlen) {
        fail(p, EPODE_ERR_LIMIT, "text too long");
        return;
      }
      size_t cap = p->tcap ? p->tcap * 2 : 256;
      while (cap < p->tlen + n)
        cap *= 2;
      char *b = epode__realloc(&p->mem, p->tbuf, cap);
      if (!b) {
        fail(p, EPODE_ERR_NOMEM, "out of memory");
        return;
      }
      p->tbuf = b;
      p->tcap = cap;
    }
    memcpy(p->tbuf + p->tlen, s, n);
    p->tlen += n;
    return;
  }
  /* Between stanzas only whitespace (keepalives) may appear. */
  for (int i = 0; i < len; i++) {
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') {
      fail(p, EPODE_ERR_XML, "text outside of a stanza");
      return;
    }
  }
  p->mark = cur_end(p);
}

static void XMLCALL on_ns_decl(void *ud, const XML_Char *prefix, const XML_Char *uri) {
  epode__xml_parser *p = ud;
  if (p->stop || p->depth != 0 || prefix) return;
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

/* ------------------------------------------------------------ setup */

/* Installs handlers (expat clears them on reset) and starts a document. */
static epode_err setup(epode__xml_parser *p) {
  XML_Parser xp = p->xp;
  XML_SetUserData(xp, p);
  XML_SetElementHandler(xp, on_start, on_end);
  XML_SetCharacterDataHandler(xp, on_text);
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
  XML_SetParamEntityParsing(xp, XML_PARAM_ENTITY_PARSING_NEVER);
#if XML_MAJOR_VERSION > 2 || (XML_MAJOR_VERSION == 2 && XML_MINOR_VERSION >= 6)
  /* Deferral would hold back callbacks for large tokens; we bound tokens
   * ourselves and want events as soon as the bytes are there. */
  XML_SetReparseDeferralEnabled(xp, XML_FALSE);
#endif
  if (p->mode == EPODE__XML_FRAGMENTS) {
    p->fed = sizeof(wrapper) - 1;
    if (XML_Parse(xp, wrapper, (int)(sizeof(wrapper) - 1), XML_FALSE) != XML_STATUS_OK)
      return EPODE_ERR_NOMEM; /* the only way a constant "<w>" can fail */
  }
  return EPODE_OK;
}

static void clear_state(epode__xml_parser *p) {
  epode_stanza_free(p->root);
  p->root = p->cur = NULL;
  epode__free(&p->mem, p->default_ns);
  p->default_ns = NULL;
  p->err = EPODE_OK;
  p->errmsg[0] = '\0';
  p->stop = p->reset_req = 0;
  p->header_seen = 0;
  p->depth = 0;
  p->fed = p->mark = p->root_tag_end = 0;
  p->tlen = 0;
}

static epode_err do_reset(epode__xml_parser *p) {
  clear_state(p);
  if (XML_ParserReset(p->xp, "UTF-8") != XML_TRUE) {
    p->err = EPODE_ERR_NOMEM;
    snprintf(p->errmsg, sizeof p->errmsg, "could not reset the XML parser");
    return p->err;
  }
  epode_err e = setup(p);
  if (e) {
    p->err = e;
    snprintf(p->errmsg, sizeof p->errmsg, "could not start the XML parser");
  }
  return e;
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
  /* expat's memory hooks take no user data, so expat itself allocates with
   * the C library; everything epode builds uses `mem`. */
  p->xp = XML_ParserCreateNS("UTF-8", NS_SEP);
  if (!p->xp || setup(p)) {
    if (p->xp) XML_ParserFree(p->xp);
    epode__free(mem, p);
    return EPODE_ERR_NOMEM;
  }
  *out = p;
  return EPODE_OK;
}

void epode__xml_parser_free(epode__xml_parser *p) {
  if (!p) return;
  clear_state(p);
  XML_ParserFree(p->xp);
  epode__free(&p->mem, p->tbuf);
  epode_mem m = p->mem;
  epode__free(&m, p);
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
  if (p->mode == EPODE__XML_FRAGMENTS) at -= sizeof(wrapper) - 1;
  p->err = EPODE_ERR_XML_UTF8;
  p->stop = 1;
  snprintf(p->errmsg, sizeof p->errmsg, "invalid UTF-8 at byte %llu of the input (byte 0x%02x)",
           (unsigned long long)at, (unsigned)s[bad]);
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

epode_err epode__xml_parser_feed(epode__xml_parser *p, const char *data, size_t len) {
  if (!p || (!data && len)) return EPODE_ERR_INVAL;
  if (p->in_feed) return EPODE_ERR_STATE;
  if (p->err) return p->err;
  size_t off = 0;
  p->in_feed = 1;
  while (off < len) {
    size_t limit = current_limit(p);
    uint64_t pending = p->fed - p->mark;
    /* Give expat at most one byte more than the limit still allows. */
    uint64_t allow = pending <= limit ? limit - pending + 1 : 1;
    size_t piece = len - off;
    if (piece > allow) piece = (size_t)allow;
    if (piece > MAX_PIECE) piece = MAX_PIECE; /* XML_Parse takes an int */
    p->fed += piece;
    enum XML_Status st = XML_Parse(p->xp, data + off, (int)piece, XML_FALSE);
    off += piece;
    if (p->reset_req) {
      /* reset() inside a callback: drop the rest, start a new document. A
       * callback error in the same feed is still returned once. */
      epode_err cb_err = p->err;
      p->in_feed = 0;
      epode_err e = do_reset(p);
      return e ? e : cb_err;
    }
    if (st != XML_STATUS_OK) {
      if (!p->err && !utf8_error(p)) {
        enum XML_Error code = XML_GetErrorCode(p->xp);
        p->err = map_expat_error(code);
        const char *what = XML_ErrorString(code);
        if (code == XML_ERROR_UNDEFINED_ENTITY)
          what = "entity reference not allowed in XMPP (only amp, lt, gt, quot, apos and "
                 "character references)";
        snprintf(p->errmsg, sizeof p->errmsg, "line %lu, column %lu: %s",
                 (unsigned long)XML_GetCurrentLineNumber(p->xp),
                 (unsigned long)XML_GetCurrentColumnNumber(p->xp) + 1, what ? what : "error");
      }
      break;
    }
    if (p->err) break;
    if (p->fed - p->mark > current_limit(p)) {
      report_limit(p);
      break;
    }
  }
  p->in_feed = 0;
  return p->err;
}

epode_err epode__xml_parser_reset(epode__xml_parser *p) {
  if (!p) return EPODE_ERR_INVAL;
  if (p->in_feed) {
    p->reset_req = 1;
    p->stop = 1;
    XML_StopParser(p->xp, XML_FALSE);
    return EPODE_OK;
  }
  return do_reset(p);
}

const char *epode__xml_parser_errmsg(const epode__xml_parser *p) {
  if (!p) return "no parser";
  if (!p->err) return "no error";
  return p->errmsg[0] ? p->errmsg : epode_strerror(p->err);
}

size_t epode__xml_parser_pending(const epode__xml_parser *p) {
  return p && p->fed > p->mark ? (size_t)(p->fed - p->mark) : 0;
}
