/* The XMPP stream parser (L0): a push parser over expat for XMPP's
 * restricted XML.
 *
 * Input arrives in arbitrary pieces (split anywhere, even inside a UTF-8
 * sequence). The parser reports:
 *  - the stream header (<stream:stream …>): its resolved name/namespace and
 *    attributes;
 *  - each complete depth-1 element as an epode_stanza tree (ownership passes
 *    to the callback);
 *  - the end of the stream (</stream:stream>).
 *
 * Refused, with EPODE_ERR_XML_RESTRICTED: DOCTYPE/DTD, entity declarations,
 * references to entities other than the five predefined ones and character
 * references, processing instructions (the XML declaration itself is
 * allowed), comments. CDATA sections are accepted as text (RFC 6120 does not
 * list them among the restricted constructs).
 * Invalid UTF-8: EPODE_ERR_XML_UTF8. Undeclared prefix: EPODE_ERR_XML_NS.
 * Other malformed XML: EPODE_ERR_XML. Limits (stanza bytes, depth,
 * attributes): EPODE_ERR_LIMIT. After an error the parser stays failed until
 * reset; epode__xml_parser_errmsg() says what and where.
 *
 * Fragment mode (for WebSocket/BOSH framing later): no stream wrapper; each
 * top-level element is delivered as a stanza (depth 0). */
#ifndef EPODE_SRC_XML_PARSER_H
#define EPODE_SRC_XML_PARSER_H

#include <stddef.h>

#include "epode/error.h"
#include "epode/mem.h"
#include "epode/stanza.h"

typedef struct epode__xml_parser epode__xml_parser;

typedef struct epode__xml_limits {
  size_t max_stanza_bytes; /* 0 = default */
  unsigned max_depth;
  unsigned max_attrs;
} epode__xml_limits;

typedef struct epode__xml_callbacks {
  /* attrs: NULL-terminated name/value pairs, names as in the stanza API
   * ("xml:lang", "{uri}local"). `ns` is the element's resolved namespace and
   * `default_ns` the default namespace declared on it (jabber:client). */
  epode_err (*stream_start)(void *ud, const char *name, const char *ns, const char *default_ns,
                            const char **attrs);
  /* A complete top-level element; the callee owns `st`. */
  epode_err (*stanza)(void *ud, epode_stanza *st);
  epode_err (*stream_end)(void *ud);
} epode__xml_callbacks;

enum { EPODE__XML_STREAM = 0, EPODE__XML_FRAGMENTS = 1 };

epode_err epode__xml_parser_new(epode__xml_parser **out, const epode_mem *mem,
                                const epode__xml_limits *limits, int mode,
                                const epode__xml_callbacks *cb, void *ud);
void epode__xml_parser_free(epode__xml_parser *p);
/* Feeds bytes. A non-OK return from a callback stops parsing and is
 * returned as is. */
epode_err epode__xml_parser_feed(epode__xml_parser *p, const char *data, size_t len);
/* Starts over for a new stream (after STARTTLS / SASL success). Safe to call
 * from inside a callback: the rest of the current feed() is then dropped
 * (the peer sends nothing after those elements until we restart). */
epode_err epode__xml_parser_reset(epode__xml_parser *p);
/* Human-readable description of the last error ("line 1, column 40:
 * DOCTYPE is not allowed in XMPP"). Never NULL. */
const char *epode__xml_parser_errmsg(const epode__xml_parser *p);
/* Bytes of the current partial stanza (for log/limits). */
size_t epode__xml_parser_pending(const epode__xml_parser *p);

#endif
