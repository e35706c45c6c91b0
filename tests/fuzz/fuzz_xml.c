/* Fuzz target: the restricted-XML push parser (src/xml/parser.c) in both
 * modes, fed in chunks, with default and tiny limits; every stanza it
 * delivers is serialised again and walked, so the tree code is exercised
 * on whatever the parser accepted.
 *
 * Input: byte 0 picks mode (bit 0), limits (bit 1: tiny), a reset from the
 * second stanza's callback (bit 2), a reset in the middle (bit 3), a
 * second run to compare with (bit 4) and a third (bit 5); byte 1 the chunk
 * size (see fz_chunk); the rest is XML.
 *
 * The second run feeds the same chunks, but after each one another parser
 * releases its expat instance, which frees the one the parser under test
 * parked: every feed that ended between stanzas makes the next start from
 * a new instance primed with the header copy. Its events, error and error
 * message must be the same as the first run's, where the parser took its
 * parked instance back each time.
 *
 * The third run reads each chunk into buffers the parser lends
 * (epode__xml_parser_buffer/commit, as conn.c reads a TCP or TLS stream),
 * each chunk after an empty read; it too must give the same digest. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "epode/epode.h"
#include "fuzz_common.h"
#include "xml/parser.h"

typedef struct {
  epode__xml_parser *p;
  int reset_in_cb;
  unsigned stanzas;
  uint64_t digest; /* of every event */
} ctx;

static void mix(ctx *c, const char *s, size_t n) {
  uint64_t h = c->digest ? c->digest : 14695981039346656037ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  h = (h ^ 0xff) * 1099511628211ull; /* separator */
  c->digest = h;
}

static void mix_str(ctx *c, const char *s) { mix(c, s ? s : "(null)", strlen(s ? s : "(null)")); }

static void walk(const epode_stanza *st, unsigned depth) {
  if (depth > 200) abort(); /* the depth limit must have stopped this */
  if (epode_stanza_is_text(st)) {
    (void)epode_stanza_text_len(st);
    return;
  }
  (void)epode_stanza_name(st);
  (void)epode_stanza_ns(st);
  size_t n = epode_stanza_attr_count(st);
  for (size_t i = 0; i < n; i++) {
    const char *name, *value;
    if (epode_stanza_attr_at(st, i, &name, &value) == EPODE_OK && (!name || !value)) abort();
  }
  (void)epode_stanza_get_attr(st, "id");
  for (const epode_stanza *c = epode_stanza_first_child(st); c; c = epode_stanza_next_sibling(c))
    walk(c, depth + 1);
}

static epode_err on_start(void *ud, const char *name, const char *ns, const char *default_ns,
                          const char **attrs) {
  ctx *c = ud;
  if (!name) abort();
  mix_str(c, name);
  mix_str(c, ns);
  mix_str(c, default_ns);
  for (size_t i = 0; attrs && attrs[i]; i += 2) {
    if (!attrs[i + 1]) abort();
    mix_str(c, attrs[i]);
    mix_str(c, attrs[i + 1]);
  }
  return EPODE_OK;
}

static epode_err on_stanza(void *ud, epode_stanza *st) {
  ctx *c = ud;
  c->stanzas++;
  walk(st, 0);
  char *s = NULL;
  size_t len = 0;
  if (epode_stanza_to_string(st, "jabber:client", &s, &len) == EPODE_OK) {
    if (strlen(s) != len) abort();
    mix(c, s, len);
    epode_free(NULL, s);
  }
  char *text = NULL;
  if (epode_stanza_get_text(st, &text, &len) == EPODE_OK) epode_free(NULL, text);
  epode_stanza_free(st);
  if (c->reset_in_cb && c->stanzas == 2) return epode__xml_parser_reset(c->p);
  return EPODE_OK;
}

static epode_err on_end(void *ud) {
  mix_str(ud, "END");
  return EPODE_OK;
}

/* n bytes through lent buffers: an empty read first, then as many reads
 * as it takes (feed() for the rest when nothing is lent). */
static epode_err lend_feed(epode__xml_parser *p, const uint8_t *s, size_t n) {
  void *b;
  size_t len, off = 0;
  epode_err e = epode__xml_parser_buffer(p, n ? n : 1, &b, &len);
  if (e) return e;
  if (b && (e = epode__xml_parser_commit(p, 0))) return e;
  while (off < n) {
    if ((e = epode__xml_parser_buffer(p, n - off, &b, &len))) return e;
    if (!b) return epode__xml_parser_feed(p, (const char *)s + off, n - off);
    if (!len || len > n - off) abort();
    memcpy(b, s + off, len);
    off += len;
    if ((e = epode__xml_parser_commit(p, len))) return e;
  }
  return EPODE_OK;
}

/* One run over the input; returns the digest of its events and outcome. */
static uint64_t run(fz_in in, uint8_t flags, uint8_t chunk, int evict, int lend) {
  epode__xml_limits small = {512, 4, 4};
  epode__xml_callbacks cb = {on_start, on_stanza, on_end};
  ctx c = {NULL, (flags & 4) != 0, 0, 0};
  int mode = (flags & 1) ? EPODE__XML_FRAGMENTS : EPODE__XML_STREAM;
  if (epode__xml_parser_new(&c.p, NULL, (flags & 2) ? &small : NULL, mode, &cb, &c) != EPODE_OK)
    abort();
  epode__xml_parser *evictor = NULL;
  if (evict && epode__xml_parser_new(&evictor, NULL, NULL, EPODE__XML_FRAGMENTS, NULL, NULL))
    abort();
  size_t half = in.len / 2;
  size_t off = 0;
  while (off < in.len) {
    size_t n = fz_chunk(chunk, in.len - off);
    if ((flags & 8) && off < half && off + n > half) n = half - off;
    epode_err e = lend ? lend_feed(c.p, in.p + off, n)
                       : epode__xml_parser_feed(c.p, (const char *)in.p + off, n);
    if (e != EPODE_OK) {
      if (!epode__xml_parser_errmsg(c.p)) abort();
      mix_str(&c, epode_err_name(e));
      mix_str(&c, epode__xml_parser_errmsg(c.p));
      /* Stays failed: a second feed must say the same. */
      if (epode__xml_parser_feed(c.p, "<a/>", 4) == EPODE_OK) abort();
      break;
    }
    off += n;
    if ((flags & 8) && off == half) epode__xml_parser_reset(c.p);
    if (evictor) {
      /* Its own parked instance would free nothing: start it over. */
      if (epode__xml_parser_holds_expat(evictor) == 2) epode__xml_parser_reset(evictor);
      if (epode__xml_parser_feed(evictor, "<e/>", 4) != EPODE_OK) abort();
      if (epode__xml_parser_holds_expat(c.p) == 2) abort();
    }
  }
  char pending[32];
  snprintf(pending, sizeof pending, "%zu", epode__xml_parser_pending(c.p));
  mix_str(&c, pending);
  epode__xml_parser_free(evictor);
  epode__xml_parser_free(c.p);
  return c.digest;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  uint8_t flags = fz_byte(&in), chunk = fz_byte(&in);
  uint64_t d = run(in, flags, chunk, 0, 0);
  if ((flags & 16) && run(in, flags, chunk, 1, 0) != d) abort();
  if ((flags & 32) && run(in, flags, chunk, 0, 1) != d) abort();
  return 0;
}
