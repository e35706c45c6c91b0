/* Internal fast paths of the stanza tree, for the parser (src/xml/parser.c).
 *
 * The parser builds trees from expat's namespace-processing output, which
 * expat has already checked (names, UTF-8, XML characters), so these skip
 * the validation the public API does.
 *
 * A received stanza is built in an arena: one growing block holding every
 * node, attribute and string of the stanza (usually one allocation), freed
 * when epode_stanza_free() is called on the root. The public API treats
 * such trees like any other (see stanza.c: nodes detached from one keep the
 * arena alive until they are freed too). */
#ifndef EPODE_SRC_XML_STANZA_INT_H
#define EPODE_SRC_XML_STANZA_INT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "epode/stanza.h"
#include "util/buf.h"

/* Atoms: one static copy of the element names, namespaces, attribute names
 * and 'type' values XMPP uses all the time. Trees store these strings as
 * pointers to their atom instead of copies (the parser, epode_stanza_new,
 * clone and detach all do), so that a received stanza carries fewer bytes
 * and two atoms compare as pointers: distinct atoms are distinct strings.
 * A string that is not an atom is compared with strcmp, so an equality test
 * is right whoever made the strings (epode__str_eq). The session uses the
 * fields directly (epode__atoms.ns_client). */
struct epode__atoms {
  char ns_none[1], ns_client[14], ns_streams[33], ns_stream_errors[36], ns_stanza_errors[36];
  char ns_tls[32], ns_sasl[33], ns_bind[33], ns_session[36], ns_framing[36], ns_sm[14];
  char ns_roster[17], ns_data[14], ns_disco_info[38], ns_disco_items[39], ns_caps[32];
  char ns_chatstates[38], ns_muc[31], ns_muc_user[36], ns_pubsub_event[40], ns_receipts[18];
  char ns_delay[15], ns_ping[14], ns_carbons[19], ns_forward[19], ns_mam[15], ns_sid[15];
  char ns_markers[24], message[8], presence[9], iq[3], body[5], subject[8], thread[7], error[6];
  char show[5], status[7], priority[9], query[6], item[5], items[6], x[2], c[2], delay[6];
  char active[7], composing[10], paused[7], inactive[9], gone[5], request[8], received[9];
  char markable[9], displayed[10], stanza_id[10], origin_id[10], features[9], a[2], r[2];
  char enable[7], enabled[8], failed[7], resumed[8], bind[5], jid[4], session[8], mechanisms[11];
  char challenge[10], success[8], failure[8], proceed[8], forwarded[10], result[7], identity[9];
  char feature[8], group[6], event[6], ping[5], sent[5], from[5], to[3], type[5], id[3];
  char xml_lang[9], h[2], by[3], name[5], node[5], hash[5], stamp[6], subscription[13], ask[4];
  char code[5], var[4], chat[5], normal[7], groupchat[10], headline[9], get[4], set[4];
  char unavailable[12], subscribe[10], subscribed[11], unsubscribe[12], unsubscribed[13];
  char probe[6], cancel[7], modify[7], wait[5], continue_[9];
};
extern const struct epode__atoms epode__atoms;

/* The atom equal to the n bytes at s, or NULL. */
const char *epode__atom(const char *s, size_t n);

static inline int epode__is_atom(const char *p) {
  return (uintptr_t)p - (uintptr_t)&epode__atoms < sizeof epode__atoms;
}

/* strcmp(a, b) == 0, without strcmp when both are atoms. */
static inline int epode__str_eq(const char *a, const char *b) {
  if (a == b) return 1;
  if (epode__is_atom(a) && epode__is_atom(b)) return 0;
  return strcmp(a, b) == 0;
}

typedef struct epode__arena epode__arena;

/* Creates an element from expat NS-mode data: `name` is "URI<sep>local" or
 * "local" (no namespace: stored as ns ""), `atts` the NULL-terminated
 * name/value array with names in the same form. Attribute names are stored
 * as "local", "xml:local" (XML namespace) or "{URI}local". One allocation,
 * no arena. */
epode_err epode__stanza_new_expat(epode_stanza **out, const epode_mem *mem, const char *name,
                                  const char **atts, char sep);
/* The same as the root of a new arena whose first block has room for at
 * least `size_hint` bytes of nodes (epode__stanza_arena_used() of a
 * previous, similar stanza). */
epode_err epode__stanza_new_arena_root(epode_stanza **out, const epode_mem *mem, size_t size_hint,
                                       const char *name, const char **atts, char sep);
/* The same, taking the block of *spare (an arena returned by
 * epode__arena_reclaim() with the same `mem`) if it is large enough for
 * the root, else freeing it; *spare is NULL afterwards either way. */
epode_err epode__stanza_new_arena_root_in(epode_stanza **out, const epode_mem *mem,
                                          size_t size_hint, epode__arena **spare,
                                          const char *name, const char **atts, char sep);
/* Recycling the block of a received stanza's arena (the parser, around its
 * stanza callback): hold() takes one more reference on the arena of `root`
 * (an arena root) and returns the arena. reclaim() gives that reference
 * back: if it was the last one and the arena is one block of at most
 * `max_size` bytes, the arena is returned empty for
 * epode__stanza_new_arena_root_in() (nothing of its trees is alive any
 * more); otherwise the reference is dropped as epode_stanza_free() would
 * and NULL is returned. An arena reclaimed and not reused is freed with
 * epode__arena_free() (NULL: nothing). */
epode__arena *epode__stanza_arena_hold(epode_stanza *root);
epode__arena *epode__arena_reclaim(epode__arena *ar, size_t max_size);
void epode__arena_free(epode__arena *ar);
/* Creates an element from expat data in the arena of `parent` (a node made
 * by these functions) and appends it as its last child. */
epode_err epode__stanza_add_expat_child(epode_stanza **out, epode_stanza *parent, const char *name,
                                        const char **atts, char sep);
/* Appends a text node holding `len` bytes of already-validated text to
 * `parent` (an arena node whose last child is not text), in its arena.
 * len 0 adds nothing. */
epode_err epode__stanza_add_arena_text(epode_stanza *parent, const char *text, size_t len);
/* Appends the XML of `st` to `b`, as epode_stanza_to_string() would
 * return it; `root_decl`, if not NULL, is written right after the root's
 * name (the session adds " xmlns='jabber:client'" there on framed streams).
 * On error `b` is as it was: EPODE_ERR_LIMIT past its max, EPODE_ERR_NOMEM. */
epode_err epode__stanza_serialize(epode__buf *b, const epode_stanza *st, const char *context_ns,
                                  const char *root_decl);
/* Bytes of arena used by the tree `st` was built in (0 if none). */
size_t epode__stanza_arena_used(const epode_stanza *st);
/* Appends an element that has no parent as the last child of `parent`. No
 * checks: the caller guarantees `child` is a parentless element. */
void epode__stanza_link(epode_stanza *parent, epode_stanza *child);

#endif
