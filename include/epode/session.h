/* epode — the sans-I/O XMPP session (L1).
 *
 * The session speaks XMPP over whatever carries its bytes. It owns no socket
 * and reads no clock: the host feeds it received bytes and the current time
 * (milliseconds on any monotonic clock), takes the bytes it wants written, and
 * receives events. It reports the next moment it needs a tick.
 *
 *   host                              session
 *   ----                              -------
 *   epode_session_start(now, tls)  -> stream header queued
 *   epode_session_peek_output()    <- bytes to write; consume_output(n)
 *   epode_session_recv(bytes, now) -> parse, negotiate, dispatch handlers
 *   EPODE_EV_STARTTLS              <- host runs TLS, then epode_session_tls_done()
 *   epode_session_tick(now)        -> timers, iq timeouts
 *   epode_session_next_deadline()  <- when to tick next
 *
 * Negotiation: stream open, STARTTLS (required unless the config allows
 * plaintext), SASL (PLAIN, SCRAM-SHA-1, SCRAM-SHA-256 and -PLUS when channel
 * binding data is available), stream restart, resource binding, and the
 * legacy session request when a server marks it mandatory. Then
 * EPODE_EV_READY.
 *
 * Stanzas sent before the session is ready are queued (bounded by
 * EPODE_LIMIT_SEND_QUEUE) and go out, in order, once it is. */
#ifndef EPODE_SESSION_H
#define EPODE_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "error.h"
#include "stanza.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct epode_session epode_session;

typedef enum epode_state {
  EPODE_STATE_IDLE = 0,       /* created, not started */
  EPODE_STATE_RESOLVING,      /* (connection only) DNS */
  EPODE_STATE_CONNECTING,     /* (connection only) TCP connect */
  EPODE_STATE_TLS_HANDSHAKE,  /* (connection only) TLS handshake in progress */
  EPODE_STATE_OPENING,        /* stream header sent, waiting for features */
  EPODE_STATE_STARTTLS,       /* <proceed/> received; waiting for the host's TLS */
  EPODE_STATE_AUTHENTICATING, /* SASL exchange */
  EPODE_STATE_BINDING,        /* resource binding (and legacy session) */
  EPODE_STATE_READY,          /* stanzas flow */
  EPODE_STATE_CLOSING,        /* </stream:stream> sent, waiting for the peer's */
  EPODE_STATE_CLOSED,         /* finished; see epode_session_failure() */
  /* Reconnection is on (epode_config_set_reconnect) and the transport was
   * lost: the session waits for the next attempt, keeping its handlers,
   * pending iqs, queued and unacknowledged stanzas. */
  EPODE_STATE_DISCONNECTED
} epode_state;

const char *epode_state_name(epode_state state);

/* Why something failed, as precisely as the peer said it. */
typedef struct epode_failure {
  epode_err err;         /* EPODE_OK if nothing failed */
  const char *condition; /* stream-error or SASL condition ("not-authorized"), or NULL */
  const char *text;      /* the server's <text/>, or NULL */
  const char *mechanism; /* SASL mechanism tried, for auth failures, or NULL */
  const char *detail;    /* epode's own explanation, never NULL */
} epode_failure;

typedef enum epode_event_type {
  EPODE_EV_STATE = 0, /* state changed: ev->state */
  EPODE_EV_STARTTLS,  /* start TLS on the transport now, then epode_session_tls_done() */
  EPODE_EV_READY,     /* resource bound: ev->jid is the full JID */
  EPODE_EV_ERROR,     /* fatal: ev->failure says why; EPODE_EV_CLOSED follows */
  EPODE_EV_CLOSED,    /* stream over; ev->failure->err is EPODE_OK for a clean close */
  /* The server said to connect elsewhere: over WebSocket before
   * authentication (RFC 7395 see-other-uri, ev->uri a ws:// or wss:// URL),
   * or over TCP with the stream error <see-other-host/> (RFC 6120 §4.9.3.19,
   * ev->uri "host", "host:port" or "[v6]:port"; the new host is verified
   * against the JID's domain as the old one was). The session is back in
   * IDLE, keeping its handlers, queued and unacknowledged stanzas (and its
   * resumption state); the transport connects there and starts it again.
   * Followed once: a second redirect is a failure. */
  EPODE_EV_REDIRECT,
  /* Reconnection is on and the connection was lost (or an attempt failed):
   * ev->failure says why, ev->retry_ms when the next attempt starts,
   * ev->attempt how many have failed in a row. State DISCONNECTED. */
  EPODE_EV_DISCONNECTED,
  /* For hosts driving the session themselves: the reconnect delay is over;
   * connect a new transport and call epode_session_start() again.
   * (epode_conn does this itself and does not forward it.) */
  EPODE_EV_RECONNECT,
  /* XEP-0198 resumption succeeded on a new connection: the stream goes on
   * where it broke, with the same full JID (ev->jid); stanzas the server
   * had not acknowledged were sent again. When resumption is not possible
   * a fresh session is negotiated instead and EPODE_EV_READY comes again
   * (the app sends its presence again then). */
  EPODE_EV_RESUMED
} epode_event_type;

typedef struct epode_event {
  epode_event_type type;
  epode_state state;
  const char *jid;
  const epode_failure *failure;
  const char *uri; /* EPODE_EV_REDIRECT only */
  uint32_t retry_ms; /* EPODE_EV_DISCONNECTED: delay before the next attempt */
  unsigned attempt;  /* EPODE_EV_DISCONNECTED: consecutive failed attempts */
} epode_event;

typedef void (*epode_event_fn)(const epode_event *ev, void *ud);

/* What the transport learnt from TLS. Channel binding data unlocks the
 * SCRAM -PLUS mechanisms. Any pointer may be NULL (length 0). */
typedef struct epode_tls_info {
  int version; /* 0x0303 for TLS 1.2, 0x0304 for TLS 1.3 */
  const unsigned char *tls_unique;
  size_t tls_unique_len;
  const unsigned char *tls_exporter; /* RFC 9266, 32 bytes */
  size_t tls_exporter_len;
  const unsigned char *tls_server_end_point; /* RFC 5929 */
  size_t tls_server_end_point_len;
} epode_tls_info;

/* How elements travel (ARCHITECTURE L1'). The negotiation is the same.
 *  STREAM     RFC 6120 over a byte stream: <stream:stream> header, STARTTLS.
 *  WEBSOCKET  RFC 7395: <open/> / <close/> in urn:ietf:params:xml:ns:xmpp-framing,
 *             one complete element per message, every element carrying its
 *             own namespace declarations; no STARTTLS (wss:// is TLS).
 *  BOSH       XEP-0124/0206: the same <open/> / <close/> elements are emitted
 *             as control messages the BOSH transport turns into session
 *             creation / xmpp:restart / terminate; received children of
 *             <body/> come in through epode_session_recv_element(). */
typedef enum epode_framing {
  EPODE_FRAMING_STREAM = 0,
  EPODE_FRAMING_WEBSOCKET = 1,
  EPODE_FRAMING_BOSH = 2
} epode_framing;

#define EPODE_NS_FRAMING "urn:ietf:params:xml:ns:xmpp-framing"

epode_err epode_session_new(epode_session **out, const epode_config *cfg);
/* Chooses the framing; only before epode_session_start(). */
epode_err epode_session_set_framing(epode_session *s, epode_framing framing);
epode_framing epode_session_framing(const epode_session *s);
void epode_session_free(epode_session *s);
void epode_session_set_event_cb(epode_session *s, epode_event_fn fn, void *ud);

/* Opens the stream. `tls` is non-NULL when the transport is already
 * encrypted (direct TLS), NULL for a plaintext start (STARTTLS follows). */
epode_err epode_session_start(epode_session *s, uint64_t now_ms, const epode_tls_info *tls);
/* Feeds received bytes. Returns the fatal error if the input ended the
 * session (the EPODE_EV_ERROR event carries the details). */
epode_err epode_session_recv(epode_session *s, const void *data, size_t len, uint64_t now_ms);
/* BOSH: one child element of a received <body/> (the caller keeps it). The
 * BOSH transport calls this in document order; an <open/>-equivalent is not
 * needed: features may arrive directly. */
epode_err epode_session_recv_element(epode_session *s, const epode_stanza *el, uint64_t now_ms);
/* The transport closed. */
epode_err epode_session_eof(epode_session *s, uint64_t now_ms);
/* The transport failed on its own (TLS, I/O): ends the session with `err`
 * and `detail` as its failure, writes nothing more, emits EPODE_EV_ERROR
 * and EPODE_EV_CLOSED. No-op once closed. */
epode_err epode_session_abort(epode_session *s, epode_err err, const char *detail,
                              uint64_t now_ms);
/* After EPODE_EV_STARTTLS: the TLS handshake finished; the stream restarts. */
epode_err epode_session_tls_done(epode_session *s, const epode_tls_info *tls, uint64_t now_ms);
/* Runs timers and timeouts due at `now_ms`. */
epode_err epode_session_tick(epode_session *s, uint64_t now_ms);
/* Absolute time of the next timer, or -1 if none. */
int64_t epode_session_next_deadline(const epode_session *s);

/* Output. peek returns the pending bytes (NULL/0 if none); consume drops the
 * first `n` of them after the transport took them. */
const void *epode_session_peek_output(const epode_session *s, size_t *len);
/* Called when the app's own call (send, send_iq, send_raw, close) has left
 * output for the transport, so a host can write it without waiting for its
 * next wakeup. Not called for output produced inside recv/tick/start/tls_done,
 * after which the host looks at the output anyway. */
typedef void (*epode_output_fn)(epode_session *s, void *ud);
void epode_session_set_output_cb(epode_session *s, epode_output_fn fn, void *ud);
void epode_session_consume_output(epode_session *s, size_t n);
/* The first pending output message: one complete top-level element (or the
 * stream header / closing tag in STREAM framing), NULL if none. Messages
 * are contiguous in peek_output()'s bytes; consume_output(len) drops one.
 * WebSocket sends each as one message; BOSH batches them in a <body/>. */
const void *epode_session_peek_message(const epode_session *s, size_t *len);
size_t epode_session_output_len(const epode_session *s);

/* Sends a stanza (serialised at once; the caller keeps `st`). Before READY it
 * is queued: EPODE_ERR_QUEUE_FULL when EPODE_LIMIT_SEND_QUEUE is reached,
 * EPODE_ERR_STATE once the session is closing or closed. */
epode_err epode_session_send(epode_session *s, const epode_stanza *st);
/* Delivery reports (XEP-0198 stream management, on by default where the
 * server offers it). ACKED: the server acknowledged the stanza, or the
 * stream closed cleanly after it (RFC 6120 §4.4: the server processed all
 * it received before its closing tag). FAILED: the session ended without
 * either; the stanza may or may not have arrived. Called exactly once. */
typedef enum epode_delivery { EPODE_DELIVERY_ACKED = 0, EPODE_DELIVERY_FAILED = 1 } epode_delivery;
typedef void (*epode_delivery_fn)(epode_session *s, epode_delivery status, const char *id,
                                  void *ud);
/* Like epode_session_send(), and reports the stanza's fate to `fn` (`id`
 * is the stanza's id attribute, or NULL). If this returns an error, `fn`
 * is never called. Without XEP-0198 the reports come when the session
 * ends; at most EPODE_LIMIT_UNACKED stanzas wait for theirs
 * (EPODE_ERR_QUEUE_FULL beyond). */
epode_err epode_session_send_tracked(epode_session *s, const epode_stanza *st,
                                     epode_delivery_fn fn, void *ud);
/* Whether XEP-0198 is active on this stream (the server answered
 * <enabled/>), and how many of our stanzas wait for its acknowledgement. */
int epode_session_sm_enabled(const epode_session *s);
size_t epode_session_sm_unacked(const epode_session *s);
/* XEP-0198 resumption state. A session is resumable once the server
 * enabled stream management with resume='true'. epode_session_save()
 * writes what resuming needs — the stream id, both counts, the bound JID
 * and the bytes of every stanza not yet acknowledged — into a new buffer
 * (free it with epode_free(epode_session_mem(s), …)); it works while READY,
 * DISCONNECTED or (restored, not started) IDLE — EPODE_ERR_STATE otherwise,
 * EPODE_ERR_NOTFOUND if not resumable. A new process restores it into a fresh session (IDLE, same
 * account and framing) before starting it: the session then asks the
 * server to resume instead of binding. Restored stanzas report their fate
 * to `fn` (may be NULL). EPODE_ERR_INVAL for data that is not a saved
 * state, is damaged, or belongs to another account. The session takes the
 * framing it was saved with; an epode_conn sets its own when it connects
 * (a state saved over TCP can resume over WebSocket and back). The state
 * holds no secret, but it names the stream: whoever has it (and the
 * account's credentials) can take the stream over. Do not close the old
 * session (closing ends the stream for the server); just drop it. */
int epode_session_resumable(const epode_session *s);
epode_err epode_session_save(const epode_session *s, char **out, size_t *len);
epode_err epode_session_restore(epode_session *s, const void *data, size_t len,
                                epode_delivery_fn fn, void *ud);
/* Sends raw XML, which must be one or more complete elements. */
epode_err epode_session_send_raw(epode_session *s, const char *xml, size_t len);

/* Sends an iq get/set and calls `fn` once: with the result or error reply
 * (err EPODE_OK; check its type), or with reply NULL and err
 * EPODE_ERR_TIMEOUT / EPODE_ERR_CLOSED. An id is generated if `iq` has none.
 * timeout_ms 0 uses EPODE_TIMEOUT_IQ. */
typedef void (*epode_iq_fn)(epode_session *s, const epode_stanza *reply, epode_err err, void *ud);
epode_err epode_session_send_iq(epode_session *s, const epode_stanza *iq, uint32_t timeout_ms,
                                epode_iq_fn fn, void *ud);

/* Handlers for incoming stanzas once the session is ready. Each filter may be
 * NULL (match anything): `name` the stanza's element name, `ns` the stanza's
 * namespace or that of one of its direct children, `type` its type
 * attribute. Return EPODE_HANDLER_KEEP to stay registered. An iq get/set
 * that no handler matched is answered with service-unavailable. */
#define EPODE_HANDLER_REMOVE 0
#define EPODE_HANDLER_KEEP 1
typedef int (*epode_handler_fn)(epode_session *s, const epode_stanza *st, void *ud);
epode_err epode_session_add_handler(epode_session *s, const char *name, const char *ns,
                                    const char *type, epode_handler_fn fn, void *ud);
/* Removes every handler registered with this fn and ud. */
epode_err epode_session_remove_handler(epode_session *s, epode_handler_fn fn, void *ud);

/* Timed handlers: `fn` runs every `period_ms` while it returns KEEP. */
typedef int (*epode_timed_fn)(epode_session *s, void *ud);
epode_err epode_session_add_timed_handler(epode_session *s, uint32_t period_ms,
                                          epode_timed_fn fn, void *ud);
epode_err epode_session_remove_timed_handler(epode_session *s, epode_timed_fn fn, void *ud);

/* Closes the stream cleanly (</stream:stream>, then waits for the peer's). */
epode_err epode_session_close(epode_session *s);

epode_state epode_session_state(const epode_session *s);
/* The bound full JID once READY, else NULL. */
const char *epode_session_jid(const epode_session *s);
/* The failure that closed the session (err EPODE_OK while none). Never NULL. */
const epode_failure *epode_session_failure(const epode_session *s);
/* After a successful SCRAM login: the keys derived for this account, to be
 * kept instead of the password (epode_config_set_scram_keys()).
 * EPODE_ERR_NOTFOUND if the login did not use SCRAM. */
struct epode_scram_keys;
epode_err epode_session_scram_keys(const epode_session *s, struct epode_scram_keys *out);
/* Writes a fresh unique id ("ep-" + 16 hex digits) into buf (size >= 20). */
epode_err epode_session_new_id(epode_session *s, char *buf, size_t size);
const epode_mem *epode_session_mem(const epode_session *s);
const epode_config *epode_session_config(const epode_session *s);

#ifdef __cplusplus
}
#endif
#endif
