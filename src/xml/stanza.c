/* The stanza tree: elements and text nodes, resolved namespaces, and the
 * serialiser.
 *
 * Memory layout: an element is one block holding the node, its attribute
 * array and its strings (name, namespace, attribute names and values), so
 * the parser builds an element with a single allocation. Later changes
 * (new attributes, replaced values, a namespace frozen on detach) move the
 * affected piece to its own allocation and mark it in `flags`/`own` so that
 * freeing knows what to release. A text node keeps its first text inline
 * and moves to a growable heap buffer when more text is merged in.
 *
 * Received stanzas live in an arena: the parser builds every node of one
 * stanza (element blocks as above, and text nodes with their text inline)
 * from one growing block, usually a single allocation (sized from the
 * previous stanza's). Such nodes point at their arena (`ar`) and are never
 * freed one by one; the arena is reference-counted by the nodes that own a
 * reference (ARENA_REF): the root it was built for, and any node detached
 * from the tree (the caller then owns it, independently of the root, so the
 * arena lives until both are freed). Everything else works as for heap
 * nodes: pieces changed later still move to their own allocations, nodes
 * added through the API are ordinary heap nodes, and freeing a tree walks it
 * to release those, dropping the arena reference last.
 *
 * Every walk over a tree (free, clone, serialise, text) is iterative: trees
 * built through the API have no depth limit and must not overflow the
 * stack. */
#include "xml/stanza_int.h"

#include <stdint.h>
#include <string.h>

#include "util/alloc.h"
#include "util/buf.h"

typedef struct attr {
  char *name;
  char *value;
  unsigned char own; /* OWN_NAME: `name` is its own block (holding the
                        original value too); OWN_VALUE: `value` is. */
} attr;

enum { OWN_NAME = 1, OWN_VALUE = 2 };
enum { NS_HEAP = 1, ATTRS_HEAP = 2, TEXT_HEAP = 4, ARENA_REF = 8 };

/* Blocks of an arena after the first (which holds the arena itself). */
typedef struct arena_chunk {
  struct arena_chunk *next;
} arena_chunk;

struct epode__arena {
  epode_mem mem;
  size_t refs;       /* nodes with ARENA_REF */
  arena_chunk *more; /* further blocks, newest first */
  char *pos, *end;   /* free space in the newest block */
  size_t size;       /* bytes reserved in all blocks */
  /* Set once any of its nodes owns a heap piece (an attribute, grown text, a
   * frozen namespace) or one of its elements got a child through the API.
   * Until then its trees hold nothing but the arena: freeing one is
   * dropping its reference (see epode_stanza_free). */
  unsigned char dirty;
};

/* Alignment of everything carved from an arena (nodes, attribute arrays). */
#define ARENA_ALIGN                                                                                \
  _Alignof(union {                                                                                 \
    void *p;                                                                                       \
    size_t z;                                                                                      \
    long long ll;                                                                                  \
    double d;                                                                                      \
  })
#define ARENA_ROUND(n) (((n) + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1))
/* Offset of the first block's space, after the arena header. */
#define ARENA_HDR ARENA_ROUND(sizeof(epode__arena))
#define CHUNK_HDR ARENA_ROUND(sizeof(arena_chunk))

struct epode_stanza {
  epode_mem mem;
  epode__arena *ar; /* NULL: the node is its own heap block */
  epode_stanza *parent, *first, *last, *prev, *next;
  char *name; /* NULL for a text node */
  char *ns;   /* NULL: inherited from the parent */
  attr *attrs;
  size_t nattrs, attrs_cap;
  char *text; /* text node: NUL-terminated value */
  size_t text_len, text_cap;
  unsigned char flags;
};

/* ------------------------------------------------------------ atoms */

/* In the order of struct epode__atoms (stanza_int.h). */
// clang-format off
const struct epode__atoms epode__atoms = {
    "", "jabber:client", "http://etherx.jabber.org/streams",
    "urn:ietf:params:xml:ns:xmpp-streams", "urn:ietf:params:xml:ns:xmpp-stanzas",
    "urn:ietf:params:xml:ns:xmpp-tls", "urn:ietf:params:xml:ns:xmpp-sasl",
    "urn:ietf:params:xml:ns:xmpp-bind", "urn:ietf:params:xml:ns:xmpp-session",
    "urn:ietf:params:xml:ns:xmpp-framing", "urn:xmpp:sm:3", "jabber:iq:roster", "jabber:x:data",
    "http://jabber.org/protocol/disco#info", "http://jabber.org/protocol/disco#items",
    "http://jabber.org/protocol/caps", "http://jabber.org/protocol/chatstates",
    "http://jabber.org/protocol/muc", "http://jabber.org/protocol/muc#user",
    "http://jabber.org/protocol/pubsub#event", "urn:xmpp:receipts", "urn:xmpp:delay",
    "urn:xmpp:ping", "urn:xmpp:carbons:2", "urn:xmpp:forward:0", "urn:xmpp:mam:2",
    "urn:xmpp:sid:0", "urn:xmpp:chat-markers:0", "message", "presence", "iq", "body", "subject",
    "thread", "error", "show", "status", "priority", "query", "item", "items", "x", "c", "delay",
    "active", "composing", "paused", "inactive", "gone", "request", "received", "markable",
    "displayed", "stanza-id", "origin-id", "features", "a", "r", "enable", "enabled", "failed",
    "resumed", "bind", "jid", "session", "mechanisms", "challenge", "success", "failure",
    "proceed", "forwarded", "result", "identity", "feature", "group", "event", "ping", "sent",
    "from", "to", "type", "id", "xml:lang", "h", "by", "name", "node", "hash", "stamp",
    "subscription", "ask", "code", "var", "chat", "normal", "groupchat", "headline", "get", "set",
    "unavailable", "subscribe", "subscribed", "unsubscribe", "unsubscribed", "probe", "cancel",
    "modify", "wait", "continue"};
// clang-format on

/* memcmp(a, b, n) == 0 for a constant n: a few loads and compares where
 * memcmp would be a call. */
static inline __attribute__((always_inline)) int same_bytes(const char *a, const char *b,
                                                            size_t n) {
  for (; n >= 8; a += 8, b += 8, n -= 8) {
    uint64_t x, y;
    memcpy(&x, a, 8), memcpy(&y, b, 8);
    if (x != y) return 0;
  }
  if (n >= 4) {
    uint32_t x, y;
    memcpy(&x, a, 4), memcpy(&y, b, 4);
    if (x != y) return 0;
    a += 4, b += 4, n -= 4;
  }
  if (n >= 2) {
    uint16_t x, y;
    memcpy(&x, a, 2), memcpy(&y, b, 2);
    if (x != y) return 0;
    a += 2, b += 2, n -= 2;
  }
  return !n || *a == *b;
}

const char *epode__atom(const char *s, size_t n) {
  /* By length, then by the first byte (the last for strings of 10 bytes or
   * more: namespaces share their beginnings). TRY checks the length again
   * (a constant the compiler folds), so an atom listed in the wrong place
   * is merely never found. */
#define TRY(f)                                                                                     \
  if (n == sizeof epode__atoms.f - 1 && same_bytes(s, epode__atoms.f, sizeof epode__atoms.f - 1))  \
  return epode__atoms.f
  unsigned char k = n ? (unsigned char)s[n < 10 ? 0 : n - 1] : 0;
  // clang-format off
  switch (n) {
  case 0: return epode__atoms.ns_none;
  case 1:
    switch (k) {
    case 'a': TRY(a); break; case 'c': TRY(c); break; case 'h': TRY(h); break;
    case 'r': TRY(r); break; case 'x': TRY(x); break;
    default: break;
    }
    break;
  case 2:
    switch (k) {
    case 'b': TRY(by); break; case 'i': TRY(iq); TRY(id); break; case 't': TRY(to); break;
    default: break;
    }
    break;
  case 3:
    switch (k) {
    case 'a': TRY(ask); break; case 'g': TRY(get); break; case 'j': TRY(jid); break;
    case 's': TRY(set); break; case 'v': TRY(var); break;
    default: break;
    }
    break;
  case 4:
    switch (k) {
    case 'b': TRY(body); TRY(bind); break; case 'c': TRY(code); TRY(chat); break;
    case 'f': TRY(from); break; case 'g': TRY(gone); break; case 'h': TRY(hash); break;
    case 'i': TRY(item); break; case 'n': TRY(name); TRY(node); break; case 'p': TRY(ping); break;
    case 's': TRY(show); TRY(sent); break; case 't': TRY(type); break; case 'w': TRY(wait); break;
    default: break;
    }
    break;
  case 5:
    switch (k) {
    case 'd': TRY(delay); break; case 'e': TRY(error); TRY(event); break;
    case 'g': TRY(group); break; case 'i': TRY(items); break; case 'p': TRY(probe); break;
    case 'q': TRY(query); break; case 's': TRY(stamp); break;
    default: break;
    }
    break;
  case 6:
    switch (k) {
    case 'a': TRY(active); break; case 'c': TRY(cancel); break; case 'e': TRY(enable); break;
    case 'f': TRY(failed); break; case 'm': TRY(modify); break; case 'n': TRY(normal); break;
    case 'p': TRY(paused); break; case 'r': TRY(result); break; case 's': TRY(status); break;
    case 't': TRY(thread); break;
    default: break;
    }
    break;
  case 7:
    switch (k) {
    case 'e': TRY(enabled); break; case 'f': TRY(failure); TRY(feature); break;
    case 'm': TRY(message); break; case 'p': TRY(proceed); break;
    case 'r': TRY(request); TRY(resumed); break;
    case 's': TRY(subject); TRY(session); TRY(success); break;
    default: break;
    }
    break;
  case 8:
    switch (k) {
    case 'c': TRY(continue_); break; case 'f': TRY(features); break; case 'h': TRY(headline); break;
    case 'i': TRY(inactive); TRY(identity); break; case 'm': TRY(markable); break;
    case 'p': TRY(presence); TRY(priority); break; case 'r': TRY(received); break;
    case 'x': TRY(xml_lang); break;
    default: break;
    }
    break;
  case 9:
    switch (k) {
    case 'c': TRY(composing); TRY(challenge); break; case 'd': TRY(displayed); break;
    case 'f': TRY(forwarded); break; case 'g': TRY(groupchat); break;
    case 'o': TRY(origin_id); break; case 's': TRY(stanza_id); TRY(subscribe); break;
    default: break;
    }
    break;
  case 10:
    switch (k) {
    case 'd': TRY(subscribed); break; case 's': TRY(mechanisms); break;
    default: break;
    }
    break;
  case 11:
    switch (k) {
    case 'e': TRY(unavailable); TRY(unsubscribe); break;
    default: break;
    }
    break;
  case 12:
    switch (k) {
    case 'd': TRY(unsubscribed); break; case 'n': TRY(subscription); break;
    default: break;
    }
    break;
  case 13:
    switch (k) {
    case '3': TRY(ns_sm); break; case 'a': TRY(ns_data); break; case 'g': TRY(ns_ping); break;
    case 't': TRY(ns_client); break;
    default: break;
    }
    break;
  case 14:
    switch (k) {
    case '0': TRY(ns_sid); break; case '2': TRY(ns_mam); break; case 'y': TRY(ns_delay); break;
    default: break;
    }
    break;
  case 16:
    switch (k) {
    case 'r': TRY(ns_roster); break;
    default: break;
    }
    break;
  case 17:
    switch (k) {
    case 's': TRY(ns_receipts); break;
    default: break;
    }
    break;
  case 18:
    switch (k) {
    case '0': TRY(ns_forward); break; case '2': TRY(ns_carbons); break;
    default: break;
    }
    break;
  case 23:
    switch (k) {
    case '0': TRY(ns_markers); break;
    default: break;
    }
    break;
  case 30:
    switch (k) {
    case 'c': TRY(ns_muc); break;
    default: break;
    }
    break;
  case 31:
    switch (k) {
    case 's': TRY(ns_tls); TRY(ns_caps); break;
    default: break;
    }
    break;
  case 32:
    switch (k) {
    case 'd': TRY(ns_bind); break; case 'l': TRY(ns_sasl); break; case 's': TRY(ns_streams); break;
    default: break;
    }
    break;
  case 35:
    switch (k) {
    case 'g': TRY(ns_framing); break; case 'n': TRY(ns_session); break;
    case 'r': TRY(ns_muc_user); break;
    case 's': TRY(ns_stream_errors); TRY(ns_stanza_errors); break;
    default: break;
    }
    break;
  case 37:
    switch (k) {
    case 'o': TRY(ns_disco_info); break; case 's': TRY(ns_chatstates); break;
    default: break;
    }
    break;
  case 38:
    switch (k) {
    case 's': TRY(ns_disco_items); break;
    default: break;
    }
    break;
  case 39:
    switch (k) {
    case 't': TRY(ns_pubsub_event); break;
    default: break;
    }
    break;
  default: break;
  }
  // clang-format on
#undef TRY
  return NULL;
}

/* ------------------------------------------------------------ UTF-8 / names */

/* Decodes one strict UTF-8 sequence (no overlongs, surrogates, > U+10FFFF).
 * Returns its length, 0 if invalid or truncated. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
  unsigned char c = s[0];
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t len;
  uint32_t v, min;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2, v = c & 0x1F, min = 0x80;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3, v = c & 0x0F, min = 0x800;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4, v = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    v = (v << 6) | (s[i] & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  *cp = v;
  return len;
}

/* UTF-8 that decodes to XML Chars only (strict: no overlongs, surrogates,
 * code points above U+10FFFF or truncated sequences; no control characters
 * but tab, line feed and carriage return; not U+FFFE or U+FFFF). */
static int valid_text(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    /* Eight bytes at a time while they are printable ASCII: none has its
     * top bit set, none is below 0x20 (subtracting 0x20 would set it). */
    for (; n - i >= 8; i += 8) {
      uint64_t x;
      memcpy(&x, u + i, 8);
      if ((x | (x - 0x2020202020202020ull)) & 0x8080808080808080ull) break;
    }
    if (i == n) break;
    unsigned c = u[i];
    if (c < 0x80) {
      if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') return 0;
      i++;
      continue;
    }
    size_t more;                   /* continuation bytes */
    unsigned lo = 0x80, hi = 0xBF; /* range of the first of them */
    if (c >= 0xC2 && c <= 0xDF)
      more = 1;
    else if (c == 0xE0)
      more = 2, lo = 0xA0; /* no overlongs */
    else if (c == 0xED)
      more = 2, hi = 0x9F; /* no surrogates */
    else if (c >= 0xE1 && c <= 0xEF)
      more = 2;
    else if (c == 0xF0)
      more = 3, lo = 0x90; /* no overlongs */
    else if (c >= 0xF1 && c <= 0xF3)
      more = 3;
    else if (c == 0xF4)
      more = 3, hi = 0x8F; /* up to U+10FFFF */
    else
      return 0;
    if (n - i <= more || u[i + 1] < lo || u[i + 1] > hi) return 0;
    for (size_t k = 2; k <= more; k++)
      if ((u[i + k] & 0xC0) != 0x80) return 0;
    if (c == 0xEF && u[i + 1] == 0xBF && u[i + 2] >= 0xBE) return 0; /* U+FFFE, U+FFFF */
    i += more + 1;
  }
  return 1;
}

static int is_name_start(uint32_t c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || (c >= 0xC0 && c <= 0xD6) ||
         (c >= 0xD8 && c <= 0xF6) || (c >= 0xF8 && c <= 0x2FF) || (c >= 0x370 && c <= 0x37D) ||
         (c >= 0x37F && c <= 0x1FFF) || (c >= 0x200C && c <= 0x200D) ||
         (c >= 0x2070 && c <= 0x218F) || (c >= 0x2C00 && c <= 0x2FEF) ||
         (c >= 0x3001 && c <= 0xD7FF) || (c >= 0xF900 && c <= 0xFDCF) ||
         (c >= 0xFDF0 && c <= 0xFFFD) || (c >= 0x10000 && c <= 0xEFFFF);
}

static int is_name_char(uint32_t c) {
  return is_name_start(c) || c == '-' || c == '.' || (c >= '0' && c <= '9') || c == 0xB7 ||
         (c >= 0x300 && c <= 0x36F) || (c >= 0x203F && c <= 0x2040);
}

/* An XML Name without colons (a namespace-aware local name). */
static int valid_ncname(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  if (n == 0) return 0;
  while (i < n) {
    unsigned c = u[i];
    if (c < 0x80) { /* ASCII: letters and '_', then also digits, '-' and '.' */
      if (!((c | 0x20) - 'a' < 26 || c == '_' || (i && (c - '0' < 10 || c == '-' || c == '.'))))
        return 0;
      i++;
      continue;
    }
    uint32_t cp;
    size_t l = utf8_decode(u + i, n - i, &cp);
    if (!l || !(i == 0 ? is_name_start(cp) : is_name_char(cp))) return 0;
    i += l;
  }
  return 1;
}

/* ------------------------------------------------------------ nodes */

/* A node with every field cleared but its memory hooks and arena. Field by
 * field: a memset of the whole node compiles to `rep stos`, whose start-up
 * cost showed in profiles of received stanzas (three nodes per message). */
static void node_init(epode_stanza *st, const epode_mem *mem, epode__arena *ar) {
  st->mem = *mem;
  st->ar = ar;
  st->parent = st->first = st->last = st->prev = st->next = NULL;
  st->name = st->ns = NULL;
  st->attrs = NULL;
  st->nattrs = st->attrs_cap = 0;
  st->text = NULL;
  st->text_len = st->text_cap = 0;
  st->flags = 0;
}

static epode_stanza *node_alloc(const epode_mem *mem, size_t extra) {
  mem = epode__mem_or_default(mem);
  epode_stanza *st = epode__alloc(mem, sizeof(*st) + extra);
  if (!st) return NULL;
  node_init(st, mem, NULL);
  return st;
}

/* ------------------------------------------------------------ arena */

static void arena_release(epode__arena *ar) {
  if (--ar->refs) return;
  epode_mem m = ar->mem;
  for (arena_chunk *c = ar->more, *next; c; c = next) {
    next = c->next;
    epode__free(&m, c);
  }
  epode__free(&m, ar);
}

/* `n` bytes (a multiple of ARENA_ALIGN) from the arena; a new block, at
 * least as large as everything reserved so far, when the current one is
 * full. */
static void *arena_take(epode__arena *ar, size_t n) {
  if ((size_t)(ar->end - ar->pos) < n) {
    size_t cap = ar->size > n ? ar->size : n;
    if (cap > (size_t)-1 - CHUNK_HDR) return NULL;
    arena_chunk *c = epode__alloc(&ar->mem, CHUNK_HDR + cap);
    if (!c) return NULL;
    c->next = ar->more;
    ar->more = c;
    ar->pos = (char *)c + CHUNK_HDR;
    ar->end = ar->pos + cap;
    ar->size += cap;
  }
  void *p = ar->pos;
  ar->pos += n;
  return p;
}

/* A zeroed node with `extra` bytes after it, from the arena. */
static epode_stanza *arena_node(epode__arena *ar, size_t extra) {
  if (extra > (size_t)-1 - sizeof(epode_stanza) - ARENA_ALIGN) return NULL;
  epode_stanza *st = arena_take(ar, ARENA_ROUND(sizeof(*st) + extra));
  if (!st) return NULL;
  node_init(st, &ar->mem, ar);
  return st;
}

/* Frees one node's own storage (not its children). */
static void node_free(epode_stanza *st) {
  const epode_mem *m = &st->mem;
  for (size_t i = 0; i < st->nattrs; i++) {
    if (st->attrs[i].own & OWN_VALUE) epode__free(m, st->attrs[i].value);
    if (st->attrs[i].own & OWN_NAME) epode__free(m, st->attrs[i].name);
  }
  if (st->flags & ATTRS_HEAP) epode__free(m, st->attrs);
  if (st->flags & NS_HEAP) epode__free(m, st->ns);
  if (st->flags & TEXT_HEAP) epode__free(m, st->text);
  if (!st->ar) {
    epode_mem copy = st->mem;
    epode__free(&copy, st);
  } else if (st->flags & ARENA_REF) {
    arena_release(st->ar);
  }
}

static void unlink_node(epode_stanza *c) {
  epode_stanza *p = c->parent;
  if (!p) return;
  if (c->prev)
    c->prev->next = c->next;
  else
    p->first = c->next;
  if (c->next)
    c->next->prev = c->prev;
  else
    p->last = c->prev;
  c->parent = c->prev = c->next = NULL;
}

static void link_node(epode_stanza *parent, epode_stanza *child) {
  child->parent = parent;
  child->prev = parent->last;
  child->next = NULL;
  if (parent->last)
    parent->last->next = child;
  else
    parent->first = child;
  parent->last = child;
}

void epode__stanza_link(epode_stanza *parent, epode_stanza *child) {
  if (parent->ar) parent->ar->dirty = 1;
  link_node(parent, child);
}

/* Attributes an element made through the API has room for in its own
 * block; more move the array to the heap. */
#define INLINE_ATTRS 4

/* An element with inline name and namespace (ns NULL: inherit), or
 * pointing at their atoms (aname, ans: NULL if none). Atoms are never
 * written through a node's pointers: names and namespaces do not change
 * once set. */
static epode_stanza *element_new(const epode_mem *mem, const char *name, size_t nlen,
                                 const char *aname, const char *ns, size_t nslen, const char *ans) {
  size_t arr = INLINE_ATTRS * sizeof(attr);
  epode_stanza *st = node_alloc(mem, arr + (aname ? 0 : nlen + 1) + (ns && !ans ? nslen + 1 : 0));
  if (!st) return NULL;
  st->attrs = (attr *)(st + 1);
  st->attrs_cap = INLINE_ATTRS;
  char *p = (char *)(st + 1) + arr;
  if (aname) {
    st->name = (char *)aname;
  } else {
    st->name = p;
    memcpy(p, name, nlen);
    p[nlen] = '\0';
    p += nlen + 1;
  }
  if (ans) {
    st->ns = (char *)ans;
  } else if (ns) {
    st->ns = p;
    memcpy(p, ns, nslen);
    p[nslen] = '\0';
  }
  return st;
}

static epode_stanza *text_fill(epode_stanza *st, const char *s, size_t len) {
  if (!st) return NULL;
  st->text = (char *)(st + 1);
  memcpy(st->text, s, len);
  st->text[len] = '\0';
  st->text_len = st->text_cap = len;
  return st;
}

static epode_stanza *text_new(const epode_mem *mem, const char *s, size_t len) {
  return text_fill(node_alloc(mem, len + 1), s, len);
}

static epode_err text_append(epode_stanza *t, const char *s, size_t len) {
  if (len > (size_t)-1 / 2 - t->text_len) return EPODE_ERR_LIMIT;
  size_t need = t->text_len + len;
  if (need > t->text_cap) {
    size_t cap = t->text_cap * 2;
    if (cap < need) cap = need;
    if (cap < 32) cap = 32;
    char *p;
    if (t->ar) t->ar->dirty = 1;
    if (t->flags & TEXT_HEAP) {
      p = epode__realloc(&t->mem, t->text, cap + 1);
      if (!p) return EPODE_ERR_NOMEM;
    } else {
      p = epode__alloc(&t->mem, cap + 1);
      if (!p) return EPODE_ERR_NOMEM;
      memcpy(p, t->text, t->text_len);
      t->flags |= TEXT_HEAP;
    }
    t->text = p;
    t->text_cap = cap;
  }
  memcpy(t->text + t->text_len, s, len);
  t->text_len = need;
  t->text[need] = '\0';
  return EPODE_OK;
}

static const char *resolved_ns(const epode_stanza *st) {
  while (st && !st->ns)
    st = st->parent;
  return st ? st->ns : NULL;
}

/* ------------------------------------------------------------ public: nodes */

/* Namespaces XML reserves: no element may be declared in them (a parser
 * refuses xmlns='…' with either). */
static int reserved_ns(const char *ns) {
  return strcmp(ns, EPODE_NS_XML) == 0 || strcmp(ns, "http://www.w3.org/2000/xmlns/") == 0;
}

epode_err epode_stanza_new(epode_stanza **out, const epode_mem *mem, const char *name,
                           const char *ns) {
  if (!out) return EPODE_ERR_INVAL;
  *out = NULL;
  if (!name) return EPODE_ERR_INVAL;
  size_t nlen = strlen(name), nslen = ns ? strlen(ns) : 0;
  if (!valid_ncname(name, nlen)) return EPODE_ERR_INVAL;
  /* Namespace atoms are valid and none is reserved. */
  const char *ans = ns ? epode__atom(ns, nslen) : NULL;
  if (ns && !ans && (!valid_text(ns, nslen) || reserved_ns(ns))) return EPODE_ERR_INVAL;
  epode_stanza *st = element_new(mem, name, nlen, epode__atom(name, nlen), ns, nslen, ans);
  if (!st) return EPODE_ERR_NOMEM;
  *out = st;
  return EPODE_OK;
}

void epode_stanza_free(epode_stanza *st) {
  if (!st) return;
  /* A received tree (or a subtree detached from it) that nothing changed
   * holds nothing but its arena reference. */
  if ((st->flags & ARENA_REF) && !st->parent && !st->ar->dirty) {
    arena_release(st->ar);
    return;
  }
  /* Freeing a child is a caller bug; unlinking first keeps the parent valid
   * instead of leaving it pointing at freed memory. */
  unlink_node(st);
  epode_stanza *n = st;
  while (n) {
    if (n->first) {
      n = n->first;
      continue;
    }
    if (n == st) {
      node_free(n);
      break;
    }
    epode_stanza *par = n->parent, *next = n->next;
    par->first = next;
    if (next)
      next->prev = NULL;
    else
      par->last = NULL;
    node_free(n);
    n = next ? next : par;
  }
}

/* Bytes a copy of `v` takes in a node's block (none for an atom). */
static size_t copy_size(const char *v) { return epode__is_atom(v) ? 0 : strlen(v) + 1; }

/* `v` itself if it is an atom, else a copy at *p (advanced past it). */
static char *copy_piece(char **p, const char *v) {
  if (epode__is_atom(v)) return (char *)v;
  size_t n = strlen(v) + 1;
  char *d = memcpy(*p, v, n);
  *p += n;
  return d;
}

/* Copies one node (not its children) into a single block. `ns` overrides
 * the namespace stored (used to freeze an inherited one on the root). */
static epode_stanza *clone_node(const epode_stanza *s, const char *ns) {
  if (!s->name) return text_new(&s->mem, s->text, s->text_len);
  /* Atoms are shared, everything else copied into the node's block. */
  size_t extra = s->nattrs * sizeof(attr) + copy_size(s->name) + (ns ? copy_size(ns) : 0);
  for (size_t i = 0; i < s->nattrs; i++)
    extra += copy_size(s->attrs[i].name) + copy_size(s->attrs[i].value);
  epode_stanza *d = node_alloc(&s->mem, extra);
  if (!d) return NULL;
  char *p = (char *)(d + 1);
  if (s->nattrs) {
    d->attrs = (attr *)p;
    p += s->nattrs * sizeof(attr);
  }
  d->nattrs = d->attrs_cap = s->nattrs;
  d->name = copy_piece(&p, s->name);
  if (ns) d->ns = copy_piece(&p, ns);
  for (size_t i = 0; i < s->nattrs; i++) {
    d->attrs[i].name = copy_piece(&p, s->attrs[i].name);
    d->attrs[i].value = copy_piece(&p, s->attrs[i].value);
    d->attrs[i].own = 0;
  }
  return d;
}

epode_err epode_stanza_clone(epode_stanza **out, const epode_stanza *st) {
  if (!out) return EPODE_ERR_INVAL;
  *out = NULL;
  if (!st) return EPODE_ERR_INVAL;
  epode_stanza *root = NULL, *dparent = NULL;
  const epode_stanza *s = st;
  for (;;) {
    epode_stanza *d = clone_node(s, s == st ? resolved_ns(s) : s->ns);
    if (!d) {
      epode_stanza_free(root);
      return EPODE_ERR_NOMEM;
    }
    if (dparent)
      epode__stanza_link(dparent, d);
    else
      root = d;
    if (s->first) {
      s = s->first;
      dparent = d;
      continue;
    }
    while (s != st && !s->next) {
      s = s->parent;
      dparent = dparent->parent;
    }
    if (s == st) break;
    s = s->next;
  }
  *out = root;
  return EPODE_OK;
}

int epode_stanza_is_text(const epode_stanza *st) { return st && !st->name; }
const char *epode_stanza_name(const epode_stanza *st) { return st ? st->name : NULL; }
const char *epode_stanza_ns(const epode_stanza *st) {
  return st && st->name ? resolved_ns(st) : NULL;
}
const epode_mem *epode_stanza_mem(const epode_stanza *st) {
  return st ? &st->mem : &epode__mem_default;
}

/* ------------------------------------------------------------ attributes */

/* The atom for a string about to be compared with many (NULL if it is none:
 * then no atom equals it). */
static const char *key_of(const char *s) {
  return epode__is_atom(s) ? s : epode__atom(s, strlen(s));
}

/* strcmp(stored, s) == 0, given key = key_of(s). */
static inline int key_eq(const char *stored, const char *s, const char *key) {
  if (stored == key) return 1;
  return !epode__is_atom(stored) && strcmp(stored, s) == 0;
}

static attr *find_key(const epode_stanza *st, const char *name, const char *key, size_t *idx) {
  for (size_t i = 0; i < st->nattrs; i++) {
    if (key_eq(st->attrs[i].name, name, key)) {
      if (idx) *idx = i;
      return &st->attrs[i];
    }
  }
  return NULL;
}

static attr *find_attr(const epode_stanza *st, const char *name, size_t *idx) {
  return find_key(st, name, key_of(name), idx);
}

/* Checks an attribute name. Canonical forms are "local", "xml:local" and
 * "{uri}local"; "{XML namespace}local" is accepted and returns 2 (the caller
 * stores it as "xml:local", with *local pointing at the local part). Returns
 * 0 if invalid, 1 if already canonical. */
static int check_attr_name(const char *name, const char **local) {
  size_t n = strlen(name);
  if (name[0] == '{') {
    const char *close = strrchr(name, '}');
    if (!close || close == name + 1) return 0;
    size_t ulen = (size_t)(close - name - 1);
    *local = close + 1;
    if (!valid_ncname(*local, strlen(*local)) || !valid_text(name + 1, ulen)) return 0;
    static const char xmlns_ns[] = "http://www.w3.org/2000/xmlns/";
    if (ulen == sizeof(xmlns_ns) - 1 && memcmp(name + 1, xmlns_ns, ulen) == 0) return 0;
    if (ulen == sizeof(EPODE_NS_XML) - 1 && memcmp(name + 1, EPODE_NS_XML, ulen) == 0) return 2;
    return 1;
  }
  if (n >= 4 && memcmp(name, "xml:", 4) == 0) return valid_ncname(name + 4, n - 4);
  /* "xmlns" would clash with the declarations the serialiser writes. */
  if (n == 5 && memcmp(name, "xmlns", 5) == 0) return 0;
  return valid_ncname(name, n);
}

epode_err epode_stanza_set_attr(epode_stanza *st, const char *name, const char *value) {
  if (!st || !st->name || !name || !value) return EPODE_ERR_INVAL;
  const char *local = NULL;
  int kind = check_attr_name(name, &local);
  if (!kind) return EPODE_ERR_INVAL;
  size_t vlen = strlen(value);
  if (!valid_text(value, vlen)) return EPODE_ERR_INVAL;
  if (st->ar) st->ar->dirty = 1; /* the attribute takes heap pieces */
  char *canon = NULL;
  if (kind == 2) {
    size_t ll = strlen(local);
    if (ll == 4 && memcmp(local, "lang", 4) == 0) {
      name = epode__atoms.xml_lang;
    } else {
      if (!(canon = epode__alloc(&st->mem, ll + 5))) return EPODE_ERR_NOMEM;
      memcpy(canon, "xml:", 4);
      memcpy(canon + 4, local, ll + 1);
      name = canon;
    }
  }
  epode_err e = EPODE_OK;
  /* A name that is an atom is kept as the atom, with the value in a block
   * of its own; any other in one block with its value. */
  const char *key = key_of(name);
  attr *a = find_key(st, name, key, NULL);
  if (a) {
    char *v = epode__strndup(&st->mem, value, vlen);
    if (!v) {
      e = EPODE_ERR_NOMEM;
      goto out;
    }
    if (a->own & OWN_VALUE) epode__free(&st->mem, a->value);
    a->value = v;
    a->own |= OWN_VALUE;
    goto out;
  }
  if (st->nattrs == st->attrs_cap) {
    size_t cap = st->attrs_cap ? st->attrs_cap * 2 : 4;
    attr *arr;
    if (st->flags & ATTRS_HEAP) {
      arr = epode__realloc(&st->mem, st->attrs, cap * sizeof(attr));
    } else {
      arr = epode__alloc(&st->mem, cap * sizeof(attr));
      if (arr && st->nattrs) memcpy(arr, st->attrs, st->nattrs * sizeof(attr));
    }
    if (!arr) {
      e = EPODE_ERR_NOMEM;
      goto out;
    }
    st->flags |= ATTRS_HEAP;
    st->attrs = arr;
    st->attrs_cap = cap;
  }
  size_t nlen = key ? 0 : strlen(name) + 1;
  char *blk = epode__alloc(&st->mem, nlen + vlen + 1);
  if (!blk) {
    e = EPODE_ERR_NOMEM;
    goto out;
  }
  memcpy(blk, name, nlen);
  memcpy(blk + nlen, value, vlen + 1);
  a = &st->attrs[st->nattrs++];
  a->name = key ? (char *)key : blk;
  a->value = blk + nlen;
  a->own = key ? OWN_VALUE : OWN_NAME;
out:
  epode__free(&st->mem, canon);
  return e;
}

const char *epode_stanza_get_attr(const epode_stanza *st, const char *name) {
  if (!st || !name) return NULL;
  attr *a = find_attr(st, name, NULL);
  return a ? a->value : NULL;
}

epode_err epode_stanza_del_attr(epode_stanza *st, const char *name) {
  if (!st || !st->name || !name) return EPODE_ERR_INVAL;
  size_t i;
  attr *a = find_attr(st, name, &i);
  if (!a) return EPODE_ERR_NOTFOUND;
  if (a->own & OWN_VALUE) epode__free(&st->mem, a->value);
  if (a->own & OWN_NAME) epode__free(&st->mem, a->name);
  memmove(&st->attrs[i], &st->attrs[i + 1], (st->nattrs - i - 1) * sizeof(attr));
  st->nattrs--;
  return EPODE_OK;
}

size_t epode_stanza_attr_count(const epode_stanza *st) { return st ? st->nattrs : 0; }

epode_err epode_stanza_attr_at(const epode_stanza *st, size_t i, const char **name,
                               const char **value) {
  if (!st) return EPODE_ERR_INVAL;
  if (i >= st->nattrs) return EPODE_ERR_NOTFOUND;
  if (name) *name = st->attrs[i].name;
  if (value) *value = st->attrs[i].value;
  return EPODE_OK;
}

const char *epode_stanza_id(const epode_stanza *st) {
  return epode_stanza_get_attr(st, epode__atoms.id);
}
const char *epode_stanza_type(const epode_stanza *st) {
  return epode_stanza_get_attr(st, epode__atoms.type);
}
const char *epode_stanza_to(const epode_stanza *st) {
  return epode_stanza_get_attr(st, epode__atoms.to);
}
const char *epode_stanza_from(const epode_stanza *st) {
  return epode_stanza_get_attr(st, epode__atoms.from);
}

/* ------------------------------------------------------------ tree */

epode_err epode_stanza_add_child(epode_stanza *parent, epode_stanza *child) {
  if (!parent || !child || !parent->name || child->parent) return EPODE_ERR_INVAL;
  for (const epode_stanza *a = parent; a; a = a->parent)
    if (a == child) return EPODE_ERR_INVAL; /* would make a cycle */
  if (!child->name) {
    /* Keep adjacent text merged: a text node after text is folded in. */
    if (parent->last && !parent->last->name) {
      epode_err e = text_append(parent->last, child->text, child->text_len);
      if (e) return e;
      node_free(child);
      return EPODE_OK;
    }
    if (child->text_len == 0) {
      node_free(child);
      return EPODE_OK;
    }
  }
  epode__stanza_link(parent, child);
  return EPODE_OK;
}

epode_err epode_stanza_add_child_new(epode_stanza **out, epode_stanza *parent, const char *name,
                                     const char *ns) {
  if (out) *out = NULL;
  if (!parent || !parent->name) return EPODE_ERR_INVAL;
  epode_stanza *c;
  epode_err e = epode_stanza_new(&c, &parent->mem, name, ns);
  if (e) return e;
  epode__stanza_link(parent, c);
  if (out) *out = c;
  return EPODE_OK;
}

static epode_err append_text(epode_stanza *parent, const char *text, size_t len) {
  if (len == 0) return EPODE_OK;
  if (parent->last && !parent->last->name) return text_append(parent->last, text, len);
  epode_stanza *t = text_new(&parent->mem, text, len);
  if (!t) return EPODE_ERR_NOMEM;
  epode__stanza_link(parent, t);
  return EPODE_OK;
}

epode_err epode_stanza_add_text(epode_stanza *parent, const char *text, size_t len) {
  if (!parent || !parent->name || (!text && len)) return EPODE_ERR_INVAL;
  if (!valid_text(text, len)) return EPODE_ERR_INVAL;
  return append_text(parent, text, len);
}

epode_err epode_stanza_detach(epode_stanza *child) {
  if (!child || !child->parent) return EPODE_ERR_INVAL;
  /* Keep the namespace the element had in its tree. */
  char *frozen = NULL;
  const char *atom = NULL;
  if (child->name && !child->ns) {
    const char *ns = resolved_ns(child->parent);
    if (ns && epode__is_atom(ns))
      atom = ns;
    else if (ns && !(frozen = epode__strdup(&child->mem, ns)))
      return EPODE_ERR_NOMEM;
  }
  /* Removing a node between two text nodes would leave them adjacent. */
  epode_stanza *prev = child->prev, *next = child->next;
  int merge = prev && next && !prev->name && !next->name;
  if (merge) {
    epode_err e = text_append(prev, next->text, next->text_len);
    if (e) {
      epode__free(&child->mem, frozen);
      return e;
    }
  }
  unlink_node(child);
  if (merge) {
    unlink_node(next);
    node_free(next);
  }
  if (atom) child->ns = (char *)atom;
  if (frozen) {
    child->ns = frozen;
    child->flags |= NS_HEAP;
    if (child->ar) child->ar->dirty = 1;
  }
  /* The caller now owns the node apart from its old root: it keeps the
   * arena alive on its own. */
  if (child->ar && !(child->flags & ARENA_REF)) {
    child->flags |= ARENA_REF;
    child->ar->refs++;
  }
  return EPODE_OK;
}

epode_stanza *epode_stanza_parent(const epode_stanza *st) { return st ? st->parent : NULL; }
epode_stanza *epode_stanza_first_child(const epode_stanza *st) { return st ? st->first : NULL; }
epode_stanza *epode_stanza_next_sibling(const epode_stanza *st) { return st ? st->next : NULL; }

/* The first element from `c` on with that name and namespace (NULL: any). */
static epode_stanza *find_from(epode_stanza *c, const char *name, const char *ns) {
  const char *kname = name ? key_of(name) : NULL, *kns = ns ? key_of(ns) : NULL;
  for (; c; c = c->next) {
    if (!c->name) continue;
    if (name && !key_eq(c->name, name, kname)) continue;
    if (ns) {
      const char *cns = resolved_ns(c);
      if (!cns || !key_eq(cns, ns, kns)) continue;
    }
    return c;
  }
  return NULL;
}

epode_stanza *epode_stanza_find_child(const epode_stanza *st, const char *name, const char *ns) {
  return st ? find_from(st->first, name, ns) : NULL;
}

epode_stanza *epode_stanza_find_next(const epode_stanza *st, const char *name, const char *ns) {
  return st ? find_from(st->next, name, ns) : NULL;
}

/* ------------------------------------------------------------ text */

static const epode_stanza *first_text(const epode_stanza *st) {
  if (!st) return NULL;
  if (!st->name) return st;
  for (const epode_stanza *c = st->first; c; c = c->next)
    if (!c->name) return c;
  return NULL;
}

const char *epode_stanza_text(const epode_stanza *st) {
  if (!st) return NULL;
  const epode_stanza *t = first_text(st);
  return t ? t->text : "";
}

size_t epode_stanza_text_len(const epode_stanza *st) {
  const epode_stanza *t = first_text(st);
  return t ? t->text_len : 0;
}

epode_err epode_stanza_get_text(const epode_stanza *st, char **out, size_t *len) {
  if (!out) return EPODE_ERR_INVAL;
  *out = NULL;
  if (len) *len = 0;
  if (!st) return EPODE_ERR_INVAL;
  epode__buf b;
  epode__buf_init(&b, &st->mem, 0);
  const epode_stanza *n = st;
  for (;;) {
    if (!n->name) {
      epode_err e = epode__buf_append(&b, n->text, n->text_len);
      if (e) {
        epode__buf_free(&b);
        return e;
      }
    } else if (n->first) {
      n = n->first;
      continue;
    }
    while (n != st && !n->next)
      n = n->parent;
    if (n == st) break;
    n = n->next;
  }
  char *s = epode__buf_steal(&b, len);
  if (!s) return EPODE_ERR_NOMEM;
  *out = s;
  return EPODE_OK;
}

const char *epode_stanza_child_text(const epode_stanza *st, const char *name) {
  if (!st || !st->name || !name) return NULL;
  const char *ns = resolved_ns(st);
  epode_stanza *c = ns ? epode_stanza_find_child(st, name, ns) : NULL;
  if (!c) c = epode_stanza_find_child(st, name, NULL);
  return c ? epode_stanza_text(c) : NULL;
}

/* ------------------------------------------------------------ serialiser */

/* For a "{uri}local" attribute: the uri span. */
static size_t attr_uri(const char *name, const char **uri) {
  const char *close = strrchr(name, '}');
  *uri = name + 1;
  return (size_t)(close - name - 1);
}

/* Prefix number (1-based) of the namespace of attribute i: the ordinal of
 * its URI among the distinct URIs of the element's "{uri}" attributes. */
static unsigned uri_ordinal(const epode_stanza *st, size_t i, int *first_use) {
  const char *u;
  size_t ul = attr_uri(st->attrs[i].name, &u);
  unsigned k = 0;
  for (size_t j = 0; j < i; j++) {
    if (st->attrs[j].name[0] != '{') continue;
    const char *v;
    size_t vl = attr_uri(st->attrs[j].name, &v);
    /* Count j only if it is the first use of its URI. */
    int seen = 0;
    for (size_t m = 0; m < j && !seen; m++) {
      const char *w;
      if (st->attrs[m].name[0] != '{') continue;
      size_t wl = attr_uri(st->attrs[m].name, &w);
      seen = wl == vl && memcmp(w, v, vl) == 0;
    }
    if (seen) continue;
    k++;
    if (vl == ul && memcmp(v, u, ul) == 0) {
      *first_use = 0;
      return k;
    }
  }
  *first_use = 1;
  return k + 1;
}

static inline epode_err put_str(epode__buf *b, const char *s) {
  return epode__buf_add(b, s, strlen(s));
}

static epode_err write_open(epode__buf *b, const epode_stanza *n, const char *ens, const char *pns,
                            const char *decl) {
  epode_err e = epode__buf_add(b, "<", 1);
  if (!e) e = put_str(b, n->name);
  if (!e && decl) e = put_str(b, decl);
  if (!e && !epode__str_eq(ens, pns)) {
    e = epode__buf_add(b, " xmlns='", 8);
    if (!e) e = epode__buf_append_escaped(b, ens, strlen(ens), 1);
    if (!e) e = epode__buf_add(b, "'", 1);
  }
  /* Declarations for the namespaces of "{uri}local" attributes. */
  for (size_t i = 0; i < n->nattrs && !e; i++) {
    if (n->attrs[i].name[0] != '{') continue;
    int first;
    unsigned k = uri_ordinal(n, i, &first);
    if (!first) continue;
    const char *u;
    size_t ul = attr_uri(n->attrs[i].name, &u);
    e = epode__buf_printf(b, " xmlns:ns%u='", k);
    if (!e) e = epode__buf_append_escaped(b, u, ul, 1);
    if (!e) e = epode__buf_add(b, "'", 1);
  }
  for (size_t i = 0; i < n->nattrs && !e; i++) {
    const char *name = n->attrs[i].name;
    if (name[0] == '{') {
      int first;
      unsigned k = uri_ordinal(n, i, &first);
      e = epode__buf_printf(b, " ns%u:%s='", k, strrchr(name, '}') + 1);
    } else {
      e = epode__buf_add(b, " ", 1);
      if (!e) e = put_str(b, name);
      if (!e) e = epode__buf_add(b, "='", 2);
    }
    if (!e) e = epode__buf_append_escaped(b, n->attrs[i].value, strlen(n->attrs[i].value), 1);
    if (!e) e = epode__buf_add(b, "'", 1);
  }
  if (!e) e = n->first ? epode__buf_add(b, ">", 1) : epode__buf_add(b, "/>", 2);
  return e;
}

/* Output namespaces of the open elements kept inline up to this depth. */
#define SER_STACK 16

epode_err epode__stanza_serialize(epode__buf *b, const epode_stanza *st, const char *context_ns,
                                  const char *root_decl) {
  const char *ctx = context_ns ? context_ns : "";
  size_t start = b->len;
  /* Output namespace of each open element, to decide where xmlns goes. */
  const char *inline_stk[SER_STACK], **stk = inline_stk;
  size_t depth = 0, cap = SER_STACK;
  epode_err e = EPODE_OK;
  const epode_stanza *n = st;
  for (;;) {
    if (!n->name) {
      e = epode__buf_append_escaped(b, n->text, n->text_len, 0);
    } else {
      const char *pns = depth ? stk[depth - 1] : ctx;
      const char *ens = n->ns;
      if (!ens) ens = n == st ? resolved_ns(n) : pns;
      if (!ens) ens = ctx;
      e = write_open(b, n, ens, pns, n == st ? root_decl : NULL);
      if (!e && n->first) {
        if (depth == cap) {
          size_t ncap = cap * 2;
          const char **s2 = epode__alloc(&st->mem, ncap * sizeof(*stk));
          if (!s2) {
            e = EPODE_ERR_NOMEM;
          } else {
            memcpy((void *)s2, (const void *)stk, depth * sizeof(*stk));
            if (stk != inline_stk) epode__free(&st->mem, (void *)stk);
            stk = s2, cap = ncap;
          }
        }
        if (!e) {
          stk[depth++] = ens;
          n = n->first;
          continue;
        }
      }
    }
    if (e) break;
    while (n != st && !n->next && !e) {
      n = n->parent;
      depth--;
      e = epode__buf_add(b, "</", 2);
      if (!e) e = put_str(b, n->name);
      if (!e) e = epode__buf_add(b, ">", 1);
    }
    if (e || n == st) break;
    n = n->next;
  }
  if (stk != inline_stk) epode__free(&st->mem, (void *)stk);
  if (e) {
    b->len = start;
    if (b->data) b->data[start] = '\0';
  }
  return e;
}

epode_err epode_stanza_to_string(const epode_stanza *st, const char *context_ns, char **out,
                                 size_t *len) {
  if (!out) return EPODE_ERR_INVAL;
  *out = NULL;
  if (len) *len = 0;
  if (!st) return EPODE_ERR_INVAL;
  epode__buf b;
  epode__buf_init(&b, &st->mem, 0);
  epode_err e = epode__stanza_serialize(&b, st, context_ns, NULL);
  if (!e) {
    char *s = epode__buf_steal(&b, len);
    if (!s)
      e = EPODE_ERR_NOMEM;
    else
      *out = s;
  }
  epode__buf_free(&b);
  return e;
}

/* ------------------------------------------------------------ parser support */

/* Size and layout of an element built from expat NS-mode data (see
 * stanza_int.h): the bytes needed after the node, and the pieces of `name`
 * and of the attributes, measured once (the first EXPAT_ATTS attributes;
 * any further ones are measured again while filling). Names, namespaces,
 * attribute names and 'type' values that are atoms are not copied. */
#define EXPAT_ATTS 8

typedef struct expat_att {
  const char *name;  /* the stored name's atom, or NULL */
  const char *local; /* after the namespace URI, if any */
  size_t ul, ll;     /* lengths of the URI (0: none) and of local */
  int xml;           /* the URI is the XML namespace: stored as "xml:" local */
  const char *value; /* the value's atom, or NULL */
  size_t vl;
} expat_att;

typedef struct expat_el {
  const char *name, *ns; /* atoms, or NULL */
  const char *local;
  size_t llen, nslen, na, extra;
  expat_att att[EXPAT_ATTS];
} expat_el;

static const char xml_ns[] = EPODE_NS_XML;

/* The atom of an attribute name: the four every stanza has tested inline,
 * the others looked up. */
static inline const char *common_att(const char *s, size_t n) {
  if (n == 2 && same_bytes(s, "to", 2)) return epode__atoms.to;
  if (n == 2 && same_bytes(s, "id", 2)) return epode__atoms.id;
  if (n == 4 && same_bytes(s, "type", 4)) return epode__atoms.type;
  if (n == 4 && same_bytes(s, "from", 4)) return epode__atoms.from;
  return epode__atom(s, n);
}

/* The atom of a NUL-terminated attribute name without a namespace, for the
 * four every stanza has; NULL for anything else. Each byte is read only
 * after the one before it was found not to be the NUL. */
static inline const char *common_att_z(const char *s, size_t *len) {
  switch (s[0]) {
  case 't':
    if (s[1] == 'o' && !s[2]) return *len = 2, epode__atoms.to;
    if (s[1] == 'y' && s[2] == 'p' && s[3] == 'e' && !s[4]) return *len = 4, epode__atoms.type;
    break;
  case 'i':
    if (s[1] == 'd' && !s[2]) return *len = 2, epode__atoms.id;
    break;
  case 'f':
    if (s[1] == 'r' && s[2] == 'o' && s[3] == 'm' && !s[4]) return *len = 4, epode__atoms.from;
    break;
  default: break;
  }
  return NULL;
}

/* Measures one attribute; returns the bytes it takes in the block. Inline:
 * it runs for every attribute received. */
static inline __attribute__((always_inline)) size_t att_measure(expat_att *a, const char *an,
                                                                const char *av, char sep) {
  if ((a->name = common_att_z(an, &a->ll))) {
    a->ul = 0;
    a->local = an;
    a->xml = 0;
    /* The 'type' of nearly every message, without measuring it. */
    if (a->name == epode__atoms.type && av[0] == 'c' && av[1] == 'h' && av[2] == 'a' &&
        av[3] == 't' && !av[4]) {
      a->vl = 4;
      a->value = epode__atoms.chat;
      return 0;
    }
    a->vl = strlen(av);
    a->value = a->name == epode__atoms.type ? epode__atom(av, a->vl) : NULL;
    return a->value ? 0 : a->vl + 1;
  }
  const char *q = an;
  while (*q && *q != sep) /* names are short: no call */
    q++;
  size_t size;
  if (*q) {
    a->ul = (size_t)(q - an);
    a->local = q + 1;
    a->ll = strlen(a->local);
    a->xml = a->ul == sizeof(xml_ns) - 1 && memcmp(an, xml_ns, a->ul) == 0;
    a->name =
        a->xml && a->ll == 4 && memcmp(a->local, "lang", 4) == 0 ? epode__atoms.xml_lang : NULL;
    size = a->xml ? 4 + a->ll + 1 : 1 + a->ul + 1 + a->ll + 1; /* "xml:" l, "{" uri "}" l */
  } else {
    a->ul = 0;
    a->local = an;
    a->ll = (size_t)(q - an);
    a->xml = 0;
    a->name = common_att(an, a->ll);
    size = a->ll + 1;
  }
  if (a->name) size = 0;
  a->vl = strlen(av);
  a->value = a->name == epode__atoms.type ? epode__atom(av, a->vl) : NULL;
  return size + (a->value ? 0 : a->vl + 1);
}

static void expat_measure(expat_el *m, const char *name, const char **atts, char sep) {
  static const size_t cl = sizeof epode__atoms.ns_client - 1;
  const char *local = strchr(name, sep);
  m->nslen = local ? (size_t)(local - name) : 0;
  m->local = local ? local + 1 : name;
  /* jabber:client, the namespace of nearly every element, without a call. */
  m->ns = m->nslen == cl && same_bytes(name, epode__atoms.ns_client, cl)
              ? epode__atoms.ns_client
              : epode__atom(name, m->nslen);
  /* message and body, the two elements of nearly every stanza, without a
   * call; bytes read in order, each only after a non-NUL one. */
  const char *l = m->local;
  if (l[0] == 'm' && l[1] == 'e' && l[2] == 's' && l[3] == 's' && l[4] == 'a' && l[5] == 'g' &&
      l[6] == 'e' && !l[7]) {
    m->llen = 7;
    m->name = epode__atoms.message;
  } else if (l[0] == 'b' && l[1] == 'o' && l[2] == 'd' && l[3] == 'y' && !l[4]) {
    m->llen = 4;
    m->name = epode__atoms.body;
  } else {
    m->llen = strlen(l);
    m->name = epode__atom(l, m->llen);
  }
  size_t na = 0, extra = (m->name ? 0 : m->llen + 1) + (m->ns ? 0 : m->nslen + 1);
  for (; atts[2 * na]; na++) {
    expat_att tmp;
    extra += att_measure(na < EXPAT_ATTS ? &m->att[na] : &tmp, atts[2 * na], atts[2 * na + 1], sep);
  }
  m->na = na;
  m->extra = extra + na * sizeof(attr);
}

/* Copies n bytes and a NUL at *p (advanced past them). Most pieces are
 * short (JIDs, ids): fixed-size moves that overlap instead of a call, each
 * within the n bytes. */
static inline char *put(char **p, const char *s, size_t n) {
  char *d = *p;
  if (n >= 16 && n <= 32) {
    uint64_t a, b, c, e;
    memcpy(&a, s, 8), memcpy(&b, s + 8, 8), memcpy(&c, s + n - 16, 8), memcpy(&e, s + n - 8, 8);
    memcpy(d, &a, 8), memcpy(d + 8, &b, 8), memcpy(d + n - 16, &c, 8), memcpy(d + n - 8, &e, 8);
  } else if (n >= 8 && n < 16) {
    uint64_t a, b;
    memcpy(&a, s, 8), memcpy(&b, s + n - 8, 8);
    memcpy(d, &a, 8), memcpy(d + n - 8, &b, 8);
  } else {
    memcpy(d, s, n);
  }
  d[n] = '\0';
  *p = d + n + 1;
  return d;
}

static void expat_fill(epode_stanza *st, const expat_el *m, const char *name, const char **atts,
                       char sep) {
  char *p = (char *)(st + 1);
  size_t na = m->na;
  if (na) {
    st->attrs = (attr *)p;
    p += na * sizeof(attr);
  }
  st->nattrs = st->attrs_cap = na;
  st->name = m->name ? (char *)m->name : put(&p, m->local, m->llen);
  st->ns = m->ns ? (char *)m->ns : put(&p, name, m->nslen);
  for (size_t i = 0; i < na; i++) {
    const char *an = atts[2 * i], *av = atts[2 * i + 1];
    expat_att tmp;
    const expat_att *x = &m->att[i];
    if (i >= EXPAT_ATTS) {
      att_measure(&tmp, an, av, sep);
      x = &tmp;
    }
    attr *a = &st->attrs[i];
    a->own = 0;
    if (x->name) {
      a->name = (char *)x->name;
    } else if (!x->ul) {
      a->name = put(&p, an, x->ll);
    } else {
      a->name = p;
      if (x->xml) {
        memcpy(p, "xml:", 4);
        p += 4;
      } else {
        *p++ = '{';
        memcpy(p, an, x->ul);
        p += x->ul;
        *p++ = '}';
      }
      put(&p, x->local, x->ll);
    }
    a->value = x->value ? (char *)x->value : put(&p, av, x->vl);
  }
}

/* The element in one pass, straight into the free space of the arena's
 * current block: what expat_measure() and expat_fill() make, with the same
 * layout and size, without keeping what was measured. NULL if it does not
 * fit (nothing taken: the caller measures it and takes a new block). */
static epode_stanza *expat_build(epode__arena *ar, const char *name, const char **atts, char sep) {
  static const size_t cl = sizeof epode__atoms.ns_client - 1;
  char *const base = ar->pos, *const end = ar->end;
  size_t na = 0;
  while (atts[2 * na])
    na++;
  if ((size_t)(end - base) < sizeof(epode_stanza) || na > (size_t)(end - base) / sizeof(attr))
    return NULL;
  size_t fixed = sizeof(epode_stanza) + na * sizeof(attr);
  if ((size_t)(end - base) < fixed) return NULL;
  epode_stanza *st = (epode_stanza *)base;
  char *p = base + fixed;
  const char *local = strchr(name, sep);
  size_t nslen = local ? (size_t)(local - name) : 0;
  local = local ? local + 1 : name;
  const char *ns = nslen == cl && same_bytes(name, epode__atoms.ns_client, cl)
                       ? epode__atoms.ns_client
                       : epode__atom(name, nslen);
  const char *el, *l = local;
  size_t llen;
  if (l[0] == 'm' && l[1] == 'e' && l[2] == 's' && l[3] == 's' && l[4] == 'a' && l[5] == 'g' &&
      l[6] == 'e' && !l[7]) {
    llen = 7;
    el = epode__atoms.message;
  } else if (l[0] == 'b' && l[1] == 'o' && l[2] == 'd' && l[3] == 'y' && !l[4]) {
    llen = 4;
    el = epode__atoms.body;
  } else {
    llen = strlen(l);
    el = epode__atom(l, llen);
  }
  if ((size_t)(end - p) < (el ? 0 : llen + 1) + (ns ? 0 : nslen + 1)) return NULL;
  node_init(st, &ar->mem, ar);
  st->name = el ? (char *)el : put(&p, local, llen);
  st->ns = ns ? (char *)ns : put(&p, name, nslen);
  st->attrs = na ? (attr *)(st + 1) : NULL;
  st->nattrs = st->attrs_cap = na;
  for (size_t i = 0; i < na; i++) {
    const char *an = atts[2 * i], *av = atts[2 * i + 1];
    expat_att x;
    if ((size_t)(end - p) < att_measure(&x, an, av, sep)) return NULL;
    attr *a = &st->attrs[i];
    a->own = 0;
    if (x.name) {
      a->name = (char *)x.name;
    } else if (!x.ul) {
      a->name = put(&p, an, x.ll);
    } else {
      a->name = p;
      if (x.xml) {
        memcpy(p, "xml:", 4);
        p += 4;
      } else {
        *p++ = '{';
        memcpy(p, an, x.ul);
        p += x.ul;
        *p++ = '}';
      }
      put(&p, x.local, x.ll);
    }
    a->value = x.value ? (char *)x.value : put(&p, av, x.vl);
  }
  /* Blocks and everything taken from them are multiples of ARENA_ALIGN, so
   * the rounded end is still within the block. */
  ar->pos = base + ARENA_ROUND((size_t)(p - base));
  return st;
}

epode_err epode__stanza_new_expat(epode_stanza **out, const epode_mem *mem, const char *name,
                                  const char **atts, char sep) {
  expat_el m;
  expat_measure(&m, name, atts, sep);
  epode_stanza *st = node_alloc(mem, m.extra);
  if (!st) return EPODE_ERR_NOMEM;
  expat_fill(st, &m, name, atts, sep);
  *out = st;
  return EPODE_OK;
}

epode_err epode__stanza_new_arena_root_in(epode_stanza **out, const epode_mem *mem,
                                          size_t size_hint, epode__arena **spare,
                                          const char *name, const char **atts, char sep) {
  mem = epode__mem_or_default(mem);
  epode__arena *ar = NULL;
  if (spare && *spare) {
    ar = *spare;
    *spare = NULL;
    ar->refs = 1;
    ar->more = NULL;
    ar->pos = (char *)ar + ARENA_HDR;
    ar->end = ar->pos + ar->size;
    ar->dirty = 0;
    epode_stanza *st = expat_build(ar, name, atts, sep);
    if (st) {
      st->flags = ARENA_REF;
      *out = st;
      return EPODE_OK;
    }
  }
  expat_el m;
  expat_measure(&m, name, atts, sep);
  size_t need = ARENA_ROUND(sizeof(epode_stanza) + m.extra);
  if (ar && ar->size < need) {
    epode__arena_free(ar);
    ar = NULL;
  }
  if (!ar) {
    size_t cap = ARENA_ROUND(size_hint) > need ? ARENA_ROUND(size_hint) : need;
    if (cap > (size_t)-1 - ARENA_HDR) return EPODE_ERR_NOMEM;
    ar = epode__alloc(mem, ARENA_HDR + cap);
    if (!ar) return EPODE_ERR_NOMEM;
    ar->mem = *mem;
    ar->size = cap;
  }
  ar->refs = 1;
  ar->more = NULL;
  ar->pos = (char *)ar + ARENA_HDR;
  ar->end = ar->pos + ar->size;
  ar->dirty = 0;
  epode_stanza *st = arena_node(ar, m.extra); /* fits: size >= need */
  expat_fill(st, &m, name, atts, sep);
  st->flags = ARENA_REF;
  *out = st;
  return EPODE_OK;
}

epode_err epode__stanza_new_arena_root(epode_stanza **out, const epode_mem *mem, size_t size_hint,
                                       const char *name, const char **atts, char sep) {
  return epode__stanza_new_arena_root_in(out, mem, size_hint, NULL, name, atts, sep);
}

epode__arena *epode__stanza_arena_hold(epode_stanza *root) {
  root->ar->refs++;
  return root->ar;
}

epode__arena *epode__arena_reclaim(epode__arena *ar, size_t max_size) {
  if (ar->refs == 1 && !ar->more && ar->size <= max_size) return ar;
  arena_release(ar);
  return NULL;
}

void epode__arena_free(epode__arena *ar) {
  if (!ar) return;
  epode_mem m = ar->mem;
  epode__free(&m, ar);
}

epode_err epode__stanza_add_expat_child(epode_stanza **out, epode_stanza *parent, const char *name,
                                        const char **atts, char sep) {
  epode_stanza *st = expat_build(parent->ar, name, atts, sep);
  if (st) {
    link_node(parent, st);
    *out = st;
    return EPODE_OK;
  }
  expat_el m;
  expat_measure(&m, name, atts, sep);
  st = arena_node(parent->ar, m.extra);
  if (!st) return EPODE_ERR_NOMEM;
  expat_fill(st, &m, name, atts, sep);
  link_node(parent, st);
  *out = st;
  return EPODE_OK;
}

epode_err epode__stanza_add_arena_text(epode_stanza *parent, const char *text, size_t len) {
  if (len == 0) return EPODE_OK;
  epode_stanza *t = text_fill(arena_node(parent->ar, len + 1), text, len);
  if (!t) return EPODE_ERR_NOMEM;
  link_node(parent, t);
  return EPODE_OK;
}

size_t epode__stanza_arena_used(const epode_stanza *st) {
  const epode__arena *ar = st ? st->ar : NULL;
  return ar ? ar->size - (size_t)(ar->end - ar->pos) : 0;
}

/* ------------------------------------------------------------ builders */

static epode_err set_opt(epode_stanza *st, const char *name, const char *value) {
  return value ? epode_stanza_set_attr(st, name, value) : EPODE_OK;
}

epode_err epode_message_new(epode_stanza **out, const epode_mem *mem, const char *type,
                            const char *to, const char *body) {
  if (!out) return EPODE_ERR_INVAL;
  epode_stanza *st;
  epode_err e = epode_stanza_new(&st, mem, "message", EPODE_NS_CLIENT);
  if (e) {
    *out = NULL;
    return e;
  }
  if (!e) e = set_opt(st, "type", type);
  if (!e) e = set_opt(st, "to", to);
  if (!e && body) {
    epode_stanza *b;
    e = epode_stanza_add_child_new(&b, st, "body", NULL);
    if (!e) e = epode_stanza_add_text(b, body, strlen(body));
  }
  if (e) {
    epode_stanza_free(st);
    st = NULL;
  }
  *out = st;
  return e;
}

epode_err epode_iq_new(epode_stanza **out, const epode_mem *mem, const char *type, const char *id) {
  if (!out) return EPODE_ERR_INVAL;
  epode_stanza *st;
  epode_err e = epode_stanza_new(&st, mem, "iq", EPODE_NS_CLIENT);
  if (e) {
    *out = NULL;
    return e;
  }
  e = set_opt(st, "type", type);
  if (!e) e = set_opt(st, "id", id);
  if (e) {
    epode_stanza_free(st);
    st = NULL;
  }
  *out = st;
  return e;
}

epode_err epode_presence_new(epode_stanza **out, const epode_mem *mem) {
  return epode_stanza_new(out, mem, "presence", EPODE_NS_CLIENT);
}
