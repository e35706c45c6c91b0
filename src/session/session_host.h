/* What the library's own transports (src/net/) may ask a session beyond
 * the public API. */
#ifndef EPODE_SRC_SESSION_SESSION_HOST_H
#define EPODE_SRC_SESSION_SESSION_HOST_H

#include "epode/jid.h"
#include "epode/session.h"

/* Whether a transport failure `err` now would send the session to
 * EPODE_STATE_DISCONNECTED (reconnection on, the error retryable, attempts
 * left) rather than end it. */
int epode__session_will_retry(const epode_session *s, epode_err err);
/* The session's own copy of the configuration and the parsed account JID,
 * shared by its connection (which may change only what the session never
 * reads: URL, server, TLS mode). */
epode_config *epode__session_cfg(epode_session *s);
const epode_jid *epode__session_account(const epode_session *s);

/* Zero-copy input for a stream-framed transport (TCP, TLS): up to `want`
 * bytes of the XML parser's own buffer to read into (*len set), or NULL
 * when none can be lent now (the session takes no input, or the parser
 * would have to make a new expat instance for it): then read into a buffer
 * of one's own and use epode_session_recv(), as ever. After a non-NULL
 * return the next call on the session must be
 * epode__session_recv_commit() with the number of bytes read into the
 * buffer's start, 0 if none; it does what epode_session_recv() does with
 * them. parser.h has the details (epode__xml_parser_buffer). */
void *epode__session_recv_buffer(epode_session *s, size_t want, size_t *len);
epode_err epode__session_recv_commit(epode_session *s, size_t len, uint64_t now_ms);

#endif
