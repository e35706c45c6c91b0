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

#endif
