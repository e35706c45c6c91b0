/* epode — the stanza tree (L0).
 *
 * An epode_stanza is a node of an XML element tree: either an element (local
 * name, namespace URI, attributes, children) or a text node. Namespaces are
 * resolved: an element knows its namespace URI, never a prefix. Attributes
 * are stored by name: unprefixed attributes by their local name, attributes in
 * the XML namespace as "xml:NAME" (e.g. "xml:lang"), attributes in any other
 * namespace as "{URI}NAME".
 *
 * Ownership: a node belongs to its parent once added; epode_stanza_free() is
 * called on roots only (or on a node never added). Strings returned by getters
 * are owned by the node and live as long as it does.
 *
 * The serialiser writes an `xmlns` declaration only where an element's
 * namespace differs from its parent's (for a root, from the "context"
 * namespace, jabber:client for stanzas on a client stream), and escapes
 * text and attribute values (& < > " ' in attributes; & < > in text). */
#ifndef EPODE_STANZA_H
#define EPODE_STANZA_H

#include <stddef.h>

#include "error.h"
#include "mem.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EPODE_NS_CLIENT "jabber:client"
#define EPODE_NS_STREAMS "http://etherx.jabber.org/streams"
#define EPODE_NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define EPODE_NS_STANZA_ERRORS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define EPODE_NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define EPODE_NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define EPODE_NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define EPODE_NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"
#define EPODE_NS_XML "http://www.w3.org/XML/1998/namespace"

typedef struct epode_stanza epode_stanza;

/* Creates an element `name` in namespace `ns` (NULL: no namespace of its own;
 * it takes its parent's when added as a child, and EPODE_NS_CLIENT when sent
 * as a root on a client stream). */
epode_err epode_stanza_new(epode_stanza **out, const epode_mem *mem, const char *name,
                           const char *ns);
/* Frees a node and its subtree. NULL is allowed. Must not be called on a node
 * that has a parent. */
void epode_stanza_free(epode_stanza *st);
/* Deep copy, allocated with the original's hooks. */
epode_err epode_stanza_clone(epode_stanza **out, const epode_stanza *st);

int epode_stanza_is_text(const epode_stanza *st);
/* Element name / namespace; NULL for a text node. The namespace is the
 * resolved one (inherited from the parent if none was set). */
const char *epode_stanza_name(const epode_stanza *st);
const char *epode_stanza_ns(const epode_stanza *st);

/* Attributes. set replaces an existing value. get returns NULL if absent. */
epode_err epode_stanza_set_attr(epode_stanza *st, const char *name, const char *value);
const char *epode_stanza_get_attr(const epode_stanza *st, const char *name);
epode_err epode_stanza_del_attr(epode_stanza *st, const char *name);
size_t epode_stanza_attr_count(const epode_stanza *st);
/* i-th attribute in insertion order; EPODE_ERR_NOTFOUND past the end. */
epode_err epode_stanza_attr_at(const epode_stanza *st, size_t i, const char **name,
                               const char **value);

/* Shortcuts for the attributes every stanza has. */
const char *epode_stanza_id(const epode_stanza *st);
const char *epode_stanza_type(const epode_stanza *st);
const char *epode_stanza_to(const epode_stanza *st);
const char *epode_stanza_from(const epode_stanza *st);

/* Tree. add_child takes ownership of `child` (which must have no parent).
 * add_child_new creates, adds and returns the new element (owned by parent).
 * add_text appends text (merged with a preceding text node); `len` bytes,
 * which must be valid UTF-8 without NUL. */
epode_err epode_stanza_add_child(epode_stanza *parent, epode_stanza *child);
epode_err epode_stanza_add_child_new(epode_stanza **out, epode_stanza *parent, const char *name,
                                     const char *ns);
epode_err epode_stanza_add_text(epode_stanza *parent, const char *text, size_t len);
/* Detaches `child` from its parent; the caller then owns it. */
epode_err epode_stanza_detach(epode_stanza *child);

epode_stanza *epode_stanza_parent(const epode_stanza *st);
epode_stanza *epode_stanza_first_child(const epode_stanza *st);
epode_stanza *epode_stanza_next_sibling(const epode_stanza *st);
/* First child element with this name and namespace; either may be NULL
 * (wildcard). Text nodes are skipped. */
epode_stanza *epode_stanza_find_child(const epode_stanza *st, const char *name, const char *ns);
/* Next sibling element after `st` matching name/ns (same wildcard rules). */
epode_stanza *epode_stanza_find_next(const epode_stanza *st, const char *name, const char *ns);

/* Text. For a text node: its value. For an element: the value of its first
 * text child ("" if none) — adjacent text is always merged, so for an
 * element with text-only content this is the whole text. */
const char *epode_stanza_text(const epode_stanza *st);
size_t epode_stanza_text_len(const epode_stanza *st);
/* Concatenation of every descendant text node, allocated; free with
 * epode_free(mem-of-stanza). */
epode_err epode_stanza_get_text(const epode_stanza *st, char **out, size_t *len);
/* Text of the first child element `name` (in the stanza's namespace or any),
 * e.g. epode_stanza_child_text(msg, "body") ; NULL if there is no such child. */
const char *epode_stanza_child_text(const epode_stanza *st, const char *name);

/* Serialises the subtree. `context_ns` is the default namespace in force
 * around it (EPODE_NS_CLIENT for stanzas on a client stream; NULL for none).
 * Result is NUL-terminated, allocated with the stanza's hooks; free with
 * epode_free(). */
epode_err epode_stanza_to_string(const epode_stanza *st, const char *context_ns, char **out,
                                 size_t *len);

/* Builders. Any string argument may be NULL to leave it out. */
epode_err epode_message_new(epode_stanza **out, const epode_mem *mem, const char *type,
                            const char *to, const char *body);
epode_err epode_iq_new(epode_stanza **out, const epode_mem *mem, const char *type,
                       const char *id);
epode_err epode_presence_new(epode_stanza **out, const epode_mem *mem);

/* The hooks a stanza was allocated with (never NULL). */
const epode_mem *epode_stanza_mem(const epode_stanza *st);

#ifdef __cplusplus
}
#endif
#endif
