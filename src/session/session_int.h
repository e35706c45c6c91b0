/* Internal state of the sans-I/O session. Split across session.c (stream
 * negotiation), sasl_driver.c (mechanism selection and exchange) and
 * dispatch.c (handlers, iq tracking, timed handlers, send queue). */
#ifndef EPODE_SRC_SESSION_SESSION_INT_H
#define EPODE_SRC_SESSION_SESSION_INT_H

#include <stdint.h>

#include "epode/jid.h"
#include "epode/sasl.h"
#include "epode/session.h"
#include "sasl/registry.h"
#include "sasl/sasl.h"
#include "util/buf.h"
#include "util/config_int.h"
#include "xml/parser.h"

typedef struct epode__handler {
  struct epode__handler *next;
  char *name, *ns, *type;
  epode_handler_fn fn;
  void *ud;
  int removed;
  uint64_t gen; /* added during dispatch of generation `gen`: not called for it */
} epode__handler;

typedef struct epode__iq_wait {
  struct epode__iq_wait *next;
  char *id;
  char *to; /* the address the iq went to (NULL: our server) */
  uint64_t deadline;
  epode_iq_fn fn;
  void *ud;
} epode__iq_wait;

/* SASL negotiation state, allocated for the exchange only (an idle
 * session does not carry it). */
typedef struct epode__sasl_scratch {
  epode__sasl_entry cands[EPODE__SASL_MAX_ENTRIES]; /* acceptable, best first */
  epode_tls_info tls;
  char cb_types_buf[8][24];
  const char *cb_types[9];
  char mech_names_buf[32][24]; /* what the server offered (XEP-0474) */
  const char *mech_names[33];
  epode_scram_keys derived; /* filled by SCRAM; kept if the login succeeds */
} epode__sasl_scratch;

/* Channel-binding data from the transport's TLS, kept from the handshake
 * until authentication is over. */
typedef struct epode__cbind {
  unsigned char unique[64], exporter[64], endpoint[64];
  size_t unique_len, exporter_len, endpoint_len;
} epode__cbind;

typedef struct epode__timed {
  struct epode__timed *next;
  uint32_t period;
  uint64_t due;
  epode_timed_fn fn;
  void *ud;
  int removed;
} epode__timed;

typedef struct epode__queued {
  struct epode__queued *next;
  epode_delivery_fn fn; /* delivery report, or NULL */
  void *ud;
  char *id;
  int stanza; /* counts for XEP-0198 */
  size_t len;
  char data[];
} epode__queued;

/* A stanza waiting for the server's acknowledgement: every stanza counted
 * for XEP-0198 (with its bytes, to send again after a broken connection),
 * and tracked stanzas on a stream without it (no bytes: their report comes
 * when the session ends). */
typedef struct epode__unacked {
  struct epode__unacked *next;
  uint32_t seq; /* its number in our outbound count */
  epode_delivery_fn fn;
  void *ud;
  char *id;
  size_t len; /* bytes kept in data[] (0: none) */
  char data[];
} epode__unacked;

/* Where negotiation stands (finer than the public state). */
typedef enum {
  NEG_NONE = 0,
  NEG_WAIT_FEATURES,
  NEG_WAIT_PROCEED,
  NEG_WAIT_TLS,
  NEG_SASL,
  NEG_WAIT_RESUME, /* XEP-0198 <resume/> sent */
  NEG_WAIT_BIND,
  NEG_WAIT_SESSION,
  NEG_DONE
} epode__neg;

struct epode_session {
  epode_config *cfg;
  const epode_mem *mem;
  epode_event_fn ev_fn;
  void *ev_ud;
  epode_output_fn out_fn;
  void *out_ud;
  epode_state state;
  epode__neg neg;
  epode__xml_parser *parser;
  epode_jid *jid;
  uint64_t now;

  epode_framing framing;

  /* Output: bytes [out_off, out.len) are pending, as messages (one
   * top-level element each) whose lengths are msgs[msg_head..msg_tail);
   * msg_done bytes of the first one are already consumed. */
  epode__buf out;
  size_t out_off;
  size_t *msgs;
  size_t msg_head, msg_tail, msg_cap, msg_done;

  /* Stanzas sent before READY, serialised. */
  epode__queued *q_head, *q_tail;
  size_t q_count;

  /* TLS and channel binding (copied from the transport). */
  int secure;
  int tls_version;
  epode__cbind *cb; /* NULL outside a TLS stream's authentication */

  /* Stream. */
  char *stream_id;
  int authenticated;
  int session_needed; /* legacy RFC 3921 session, not optional */
  char *bind_id;
  char *session_id;
  char *bound_jid;

  /* SASL: the acceptable mechanisms, best first, and the one running. */
  struct epode__sasl_scratch *sx; /* what one exchange needs; freed after it */
  size_t n_cands, cand;
  const epode__sasl_entry *mech; /* NULL when no exchange runs */
  void *mech_state;
  struct epode_sasl_ctx *sasl_ctx;
  epode_scram_keys *scram_got; /* keys derived by a successful SCRAM login */
  unsigned sasl_rounds;
  char *mech_name; /* for the failure report */

  /* Timers. */
  uint64_t neg_deadline; /* 0: none */
  uint64_t close_deadline;

  /* Handlers. */
  epode__handler *handlers;
  epode__iq_wait *iqs;
  epode__timed *timed;
  uint64_t dispatch_gen;
  int dispatching;
  int to_sweep; /* a handler or timed handler was marked removed */

  /* Ids. */
  char id_prefix[9];
  uint32_t id_counter;

  /* XEP-0198. Counts are modulo 2^32 as the XEP says. */
  int sm_offered, sm_enabling, sm_enabled;
  char *sm_id;
  uint32_t sm_h_in;    /* stanzas received since <enabled/> */
  uint32_t sm_h_sent;  /* stanzas sent since <enable/> */
  uint32_t sm_h_acked; /* the server's last h */
  unsigned sm_since_r; /* stanzas sent since our last <r/> */
  uint64_t sm_r_due;   /* when to ask for an ack (0: not pending) */
  uint64_t sm_ack_due; /* an <r/> is out: its <a/> must come by then (0: none) */
  int sm_stalled;      /* the server stopped answering <r/> */
  epode__unacked *ua_head, *ua_tail;
  size_t ua_count;
  epode_framing ua_framing; /* what the kept bytes were written for */
  int sm_resume_ok;    /* the server allows resuming this stream */
  uint32_t sm_max;     /* how long it keeps it (seconds; 0: unsaid) */
  uint64_t lost_at;    /* when the connection broke (0: unknown) */
  int bind_offered;    /* the post-auth features offered bind */
  int on_resumed_stream; /* this stream was resumed, not bound */

  /* Reconnection (cfg->rc_on). */
  unsigned rc_attempts; /* consecutive failed attempts */
  uint64_t rc_due;      /* when to emit EPODE_EV_RECONNECT (0: not pending) */

  /* Keepalive: when data last arrived, and the deadline for an answer to
   * our probe (0: no probe out). */
  uint64_t last_rx;
  uint64_t ka_deadline;

  /* RFC 7395 see-other-uri, followed once. */
  int redirected;
  int clean_close; /* the server closed its side after we closed ours */

  /* Failure. */
  epode_failure failure;
  char *f_condition, *f_text, *f_mechanism, *f_detail;
  int closed_emitted;
};

/* session.c */
void epode__session_set_state(epode_session *s, epode_state st);
/* Fails the session: records why, sends a stream error (if `stream_cond`),
 * emits EPODE_EV_ERROR then EPODE_EV_CLOSED. Returns `err`. */
epode_err epode__session_fail(epode_session *s, epode_err err, const char *stream_cond,
                              const char *condition, const char *text, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Queues raw bytes for the transport; fails the session when output exceeds
 * its bound. */
epode_err epode__session_write(epode_session *s, const char *data, size_t len);
/* Serialises and writes a top-level element (and logs it). */
epode_err epode__session_write_stanza(epode_session *s, const epode_stanza *st);
/* Serialises a top-level element for this session's framing: on a stream
 * the jabber:client default is implied; in WebSocket/BOSH framing every
 * element declares its namespace. Free with epode__free(s->mem, …). */
epode_err epode__session_serialize(epode_session *s, const epode_stanza *st, char **out,
                                   size_t *len);
void epode__session_log_out(epode_session *s, const char *data, size_t len);
/* Tells the host that an app call left output (see epode_output_fn). */
void epode__session_notify_output(epode_session *s);

/* sasl_driver.c */
/* Starts SASL given <mechanisms/> from the features (and the whole features
 * element for XEP-0440 channel-binding types). */
epode_err epode__sasl_begin(epode_session *s, const epode_stanza *features,
                            const epode_stanza *mechanisms);
/* Handles an element in the SASL namespace; sets *done when <success/> was
 * verified. */
epode_err epode__sasl_handle(epode_session *s, const epode_stanza *st, int *done);
void epode__sasl_clear(epode_session *s);
/* Forgets (wipes) the channel-binding data. */
void epode__cb_clear(epode_session *s);

/* sm.c (XEP-0198) */
/* Features after authentication: remember whether <sm/> is offered. */
void epode__sm_features(epode_session *s, const epode_stanza *features);
/* Right before READY: <enable/> if offered and wanted. */
epode_err epode__sm_enable(epode_session *s);
/* Whether our stanzas count (and are kept) for XEP-0198 now. */
int epode__sm_counting(const epode_session *s);
/* A stanza of ours went out (fn may be NULL): its bytes are kept while
 * XEP-0198 counts. */
epode_err epode__sm_sent(epode_session *s, epode_delivery_fn fn, void *ud, const char *id,
                         const char *data, size_t len);
/* Resumption. suspend: the connection broke (keep what can be resent);
 * can_resume: ask with <resume/> now (after authentication); resume:
 * write it; resume_answer: 0 not an answer, 2 <resumed/> (kept stanzas
 * were written again), 3 <failed/> (bind a fresh session), 1 the session
 * failed (*err); resend_fresh: on the fresh session, right after
 * <enable/>. */
void epode__sm_suspend(epode_session *s);
int epode__sm_can_resume(const epode_session *s);
epode_err epode__sm_resume(epode_session *s);
int epode__sm_resume_answer(epode_session *s, const epode_stanza *st, epode_err *err);
epode_err epode__sm_resend_fresh(epode_session *s);
/* Not resuming: forget the old stream's id (kept stanzas stay). */
void epode__sm_fresh(epode_session *s);
/* A stanza of the server's was handled. */
void epode__sm_received(epode_session *s);
/* An element in urn:xmpp:sm:3 while ready; 1 if it was one. */
int epode__sm_element(epode_session *s, const epode_stanza *st);
/* Before our closing tag: an unsolicited <a/> with what we handled. */
epode_err epode__sm_final_ack(epode_session *s);
/* Timers: the deadline for a time-triggered <r/>, and running it. */
int64_t epode__sm_deadline(const epode_session *s);
void epode__sm_tick(epode_session *s);
/* The session ended: clean (ACKED) or not (FAILED) for everything pending. */
void epode__sm_finish(epode_session *s, int clean);
void epode__sm_free(epode_session *s);

/* keepalive.c */
void epode__ka_received(epode_session *s);
int64_t epode__ka_deadline(const epode_session *s);
void epode__ka_tick(epode_session *s);

/* dispatch.c */
epode_err epode__dispatch(epode_session *s, const epode_stanza *st);
epode_err epode__queue_flush(epode_session *s);
void epode__queue_clear(epode_session *s);
void epode__handlers_free(epode_session *s);
/* Calls every pending iq callback with `err` and forgets them. */
void epode__iqs_cancel(epode_session *s, epode_err err);
epode_err epode__timers_run(epode_session *s);
int64_t epode__timers_next(const epode_session *s);
/* Accepts an iq result/error that answers one of ours; 1 if consumed. */
int epode__iq_match(epode_session *s, const epode_stanza *st);
/* Registers a pending iq and returns its id (allocated in the wait). */
epode_err epode__iq_track(epode_session *s, const char *id, const char *to, uint32_t timeout_ms,
                          epode_iq_fn fn, void *ud);

#endif
