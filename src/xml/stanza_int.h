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

#include "epode/stanza.h"

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
/* Creates an element from expat data in the arena of `parent` (a node made
 * by these functions) and appends it as its last child. */
epode_err epode__stanza_add_expat_child(epode_stanza **out, epode_stanza *parent, const char *name,
                                        const char **atts, char sep);
/* Appends a text node holding `len` bytes of already-validated text to
 * `parent` (an arena node whose last child is not text), in its arena.
 * len 0 adds nothing. */
epode_err epode__stanza_add_arena_text(epode_stanza *parent, const char *text, size_t len);
/* Bytes of arena used by the tree `st` was built in (0 if none). */
size_t epode__stanza_arena_used(const epode_stanza *st);
/* Appends an element that has no parent as the last child of `parent`. No
 * checks: the caller guarantees `child` is a parentless element. */
void epode__stanza_link(epode_stanza *parent, epode_stanza *child);

#endif
