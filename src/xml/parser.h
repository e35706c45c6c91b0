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
 * top-level element is delivered as a stanza (depth 0), and the stream
 * callbacks are not used.
 *
 * The parser does not check that the root element is
 * {http://etherx.jabber.org/streams}stream: stream_start reports what was
 * received and the session decides (it owes the peer an <invalid-namespace/>
 * stream error otherwise).
 *
 * Stream level: only whitespace may appear between stanzas (keepalives);
 * other text is EPODE_ERR_XML. Whatever follows </stream:stream> other than
 * whitespace is EPODE_ERR_XML.
 *
 * Limits, in raw input bytes: a stanza counts from the '<' of its start tag
 * to the '>' of its end tag, across feeds; it is refused as soon as it goes
 * over (at most one byte past the limit is handed to expat), so a huge
 * stanza is never buffered. Whitespace between stanzas does not count. The
 * XML declaration plus the stream header are bounded separately (16 KiB,
 * MAX_HEADER_BYTES in parser.c). Depth counts the stanza element as 1;
 * namespace declarations do not count as attributes. The encoding is always
 * UTF-8: a declaration naming another encoding, or version other than 1.0,
 * is EPODE_ERR_XML.
 *
 * Memory: the parser and every tree it builds use `mem`; expat's own
 * internal buffers use the C library allocator (expat's hooks cannot carry
 * user data). A parser lets go of its expat instance whenever a feed ends
 * exactly between two stanzas, and gets one again at the next feed: the
 * same one if no other parser on the thread released one in between, or a
 * new one (parser.c explains how). Callers see no difference; an idle
 * session holds no expat state, and a thread at most one idle instance. */
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
  /* A complete top-level element; the callee owns `st` (whatever it
   * returns). */
  epode_err (*stanza)(void *ud, epode_stanza *st);
  epode_err (*stream_end)(void *ud);
} epode__xml_callbacks;

enum { EPODE__XML_STREAM = 0, EPODE__XML_FRAGMENTS = 1 };

epode_err epode__xml_parser_new(epode__xml_parser **out, const epode_mem *mem,
                                const epode__xml_limits *limits, int mode,
                                const epode__xml_callbacks *cb, void *ud);
void epode__xml_parser_free(epode__xml_parser *p);
/* Feeds bytes. A non-OK return from a callback stops parsing and is
 * returned as is (and again by later feeds, until reset). Calling feed()
 * from inside a callback returns EPODE_ERR_STATE. Bytes before an invalid
 * UTF-8 sequence are parsed (their stanzas delivered) before the error. */
epode_err epode__xml_parser_feed(epode__xml_parser *p, const char *data, size_t len);
/* Zero-copy input: lends the caller up to `want` bytes of expat's own input
 * buffer to read into (recv(), SSL_read()), saving the copy feed() makes.
 * Sets *buf and *len (len <= want: no more than the stanza limit still
 * allows plus one byte, as feed() hands over), or *buf = NULL when the
 * parser holds no expat instance now (released and no longer parked):
 * then read elsewhere and feed(), which makes one. After a lent buffer
 * the next call on the parser must be commit(), with the number of bytes
 * written to its start (0 if the read found none, which lets the parser
 * release expat again); commit() then parses them exactly as feed() would.
 * A buffer cannot be lent from inside a callback (EPODE_ERR_STATE). */
epode_err epode__xml_parser_buffer(epode__xml_parser *p, size_t want, void **buf, size_t *len);
epode_err epode__xml_parser_commit(epode__xml_parser *p, size_t len);
/* Starts over for a new stream (after STARTTLS / SASL success): drops any
 * partial stanza and clears a previous error. Safe to call from inside a
 * callback: no further callbacks fire for the current feed(), whose
 * remaining bytes are dropped (the peer sends nothing after those elements
 * until we restart); feed() then returns EPODE_OK, or the error the
 * callback itself returned. epode__xml_parser_free() must not be called
 * from a callback. */
epode_err epode__xml_parser_reset(epode__xml_parser *p);
/* Human-readable description of the last error ("line 1, column 40:
 * DOCTYPE is not allowed in XMPP"). Never NULL. */
const char *epode__xml_parser_errmsg(const epode__xml_parser *p);
/* Bytes of the current partial stanza (for log/limits). */
size_t epode__xml_parser_pending(const epode__xml_parser *p);
/* For tests: 1 if the parser is using an expat instance, 2 if it released
 * it and the instance is still parked for it on this thread, 0 if it has
 * none. */
int epode__xml_parser_holds_expat(const epode__xml_parser *p);

#endif
