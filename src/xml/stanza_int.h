/* Internal fast paths of the stanza tree, for the parser (src/xml/parser.c).
 *
 * The parser builds trees from expat's namespace-processing output, which
 * expat has already checked (names, UTF-8, XML characters), so these skip
 * the validation the public API does and build each element with a single
 * allocation. */
#ifndef EPODE_SRC_XML_STANZA_INT_H
#define EPODE_SRC_XML_STANZA_INT_H

#include <stddef.h>

#include "epode/stanza.h"

/* Creates an element from expat NS-mode data: `name` is "URI<sep>local" or
 * "local" (no namespace: stored as ns ""), `atts` the NULL-terminated
 * name/value array with names in the same form. Attribute names are stored
 * as "local", "xml:local" (XML namespace) or "{URI}local". One allocation. */
epode_err epode__stanza_new_expat(epode_stanza **out, const epode_mem *mem, const char *name,
                                  const char **atts, char sep);
/* Appends an element that has no parent as the last child of `parent`. No
 * checks: the caller guarantees `child` is a parentless element. */
void epode__stanza_link(epode_stanza *parent, epode_stanza *child);
/* Appends already-validated text to `parent` (merged with a trailing text
 * node). */
epode_err epode__stanza_append_text(epode_stanza *parent, const char *text, size_t len);

#endif
