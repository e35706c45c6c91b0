/* epode — JIDs (RFC 7622).
 *
 * A parsed JID keeps its three parts. Validation follows RFC 7622 for
 * structure and length (each part 1..1023 bytes, whole JID at most 3071),
 * rejects the characters RFC 7622 forbids in a localpart (" & ' / : < > @),
 * control characters, invalid UTF-8, and an empty part where a separator is
 * present. Domain parts are lower-cased (ASCII) and a trailing dot removed. */
#ifndef EPODE_JID_H
#define EPODE_JID_H

#include "error.h"
#include "mem.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct epode_jid epode_jid;

/* Parses `s`. EPODE_ERR_JID if invalid. */
epode_err epode_jid_parse(epode_jid **out, const epode_mem *mem, const char *s);
void epode_jid_free(epode_jid *jid);
/* Parts; local and resource are NULL when absent. */
const char *epode_jid_local(const epode_jid *jid);
const char *epode_jid_domain(const epode_jid *jid);
const char *epode_jid_resource(const epode_jid *jid);
/* "local@domain" (or "domain") and the full form, normalised. */
const char *epode_jid_bare(const epode_jid *jid);
const char *epode_jid_full(const epode_jid *jid);
/* EPODE_OK if `s` is a valid JID. */
epode_err epode_jid_validate(const char *s);

#ifdef __cplusplus
}
#endif
#endif
