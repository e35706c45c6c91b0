/* The BOSH transport (L2): XEP-0124 HTTP binding carrying an XMPP session
 * framed as in XEP-0206, over libcurl's multi-socket API.
 *
 * The owning epode_conn gives it a session in EPODE_FRAMING_BOSH (set here)
 * and a host: the fds to watch and one timer, exactly like the connection's
 * own fd + timeout API. The transport turns the session's output messages
 * into HTTP requests:
 *   - the first <open/> creates the BOSH session (to, xml:lang, ver 1.6,
 *     wait, hold 1, xmpp:version 1.0), later ones send xmpp:restart='true';
 *   - <close/> sends type='terminate' (with any stanzas queued before it);
 *   - every other message goes, packed with its neighbours, into the next
 *     <body/>; an empty <body/> long-polls when nothing is pending.
 * Each response <body/> is parsed on its own (one document per response) and
 * its children go to epode_session_recv_element() in rid order, however the
 * responses arrive.
 *
 * No threads: curl never resolves a name itself. The URL's host is resolved
 * with epode's c-ares resolver through the same host loop (IP literals and
 * "localhost" need no lookup) and handed to curl with CURLOPT_RESOLVE. curl
 * is told to use no proxy from the environment for the same reason.
 *
 * Failures (network after bounded retries, HTTP status, malformed or
 * oversized responses, wrong sid, the server's terminate condition) are
 * reported once through host->failed with a detail; the owner then aborts
 * the session. A terminate we sent ends in host->done once its response is
 * in (the session is told the stream ended with epode_session_eof()).
 *
 * Memory: the transport's own objects use the config's epode_mem; libcurl
 * allocates with its own (process-wide) allocator, which cannot carry
 * per-object hooks. */
#ifndef EPODE_SRC_NET_BOSH_H
#define EPODE_SRC_NET_BOSH_H

#include <stddef.h>
#include <stdint.h>

#include "epode/config.h"
#include "epode/error.h"
#include "epode/session.h"

typedef struct epode__bosh epode__bosh;

/* What the owning connection provides. Callbacks run from inside the
 * epode__bosh_* calls. `failed` and `done` come at most once in all, as the
 * last thing the call does: the owner may free the transport from inside
 * them. */
typedef struct epode__bosh_host {
  void *ud;
  /* Watch `fd` for `events` (EPODE_IO_READ|EPODE_IO_WRITE); 0 = forget it. */
  void (*watch)(void *ud, int fd, unsigned events);
  /* Call epode__bosh_process_timeout() in `timeout_ms` (0: soon); -1 cancels. */
  void (*timer)(void *ud, int64_t timeout_ms);
  /* The transport failed; `detail` (valid during the call) says why. */
  void (*failed)(void *ud, epode_err err, const char *detail);
  /* The BOSH session was terminated (by our terminate) and no request is
   * left. */
  void (*done)(void *ud);
} epode__bosh_host;

/* Creates a transport for `url` (http:// or https://) carrying `s`, which
 * it switches to EPODE_FRAMING_BOSH. `cfg` and `s` must outlive it; `host`
 * is copied. EPODE_ERR_INVAL for a URL curl cannot parse or another
 * scheme; EPODE_ERR_NOMEM. Nothing happens on the network yet. */
epode_err epode__bosh_new(epode__bosh **out, const epode_config *cfg, epode_session *s,
                          const char *url, const epode__bosh_host *host);
/* Starts the session (epode_session_start, with TLS info for https://),
 * resolves the host and sends the session creation request. Once only
 * (EPODE_ERR_STATE otherwise). Any failure from here on, this call's
 * included, is reported through host->failed, and returned. */
epode_err epode__bosh_start(epode__bosh *b);
/* The host saw `events` on `fd`. These three return EPODE_OK, or the error
 * already reported through host->failed (also on later calls). */
epode_err epode__bosh_process_fd(epode__bosh *b, int fd, unsigned events);
/* The timer requested through host->timer fired. */
epode_err epode__bosh_process_timeout(epode__bosh *b);
/* The session has new output (its output callback fired). */
epode_err epode__bosh_flush(epode__bosh *b);
/* Stops everything at once: no terminate is sent; fds are forgotten
 * (watch(fd, 0)) and the timer cancelled. NULL is fine. */
void epode__bosh_free(epode__bosh *b);

/* The BOSH parameters in force (the server's, once the session exists). */
typedef struct epode__bosh_params {
  const char *sid; /* NULL before the session exists */
  const char *ver; /* the server's protocol version, or NULL */
  uint64_t rid;    /* the last rid used */
  unsigned requests, wait, polling, inactivity, maxpause, hold;
} epode__bosh_params;
void epode__bosh_get_params(const epode__bosh *b, epode__bosh_params *out);

/* ----------------------------------------------------------- test hooks */

/* The session calls the transport makes, so tests can drive it with a
 * scripted session. Default: the real epode_session_* functions. */
typedef struct epode__bosh_session_ops {
  epode_err (*set_framing)(epode_session *s, epode_framing framing);
  epode_err (*start)(epode_session *s, uint64_t now_ms, const epode_tls_info *tls);
  const void *(*peek_message)(const epode_session *s, size_t *len);
  void (*consume_output)(epode_session *s, size_t n);
  epode_err (*recv_element)(epode_session *s, const epode_stanza *el, uint64_t now_ms);
  epode_err (*eof)(epode_session *s, uint64_t now_ms);
  epode_state (*state)(const epode_session *s);
} epode__bosh_session_ops;
/* Before epode__bosh_start(); `ops` must outlive the transport. */
void epode__bosh_set_session_ops(epode__bosh *b, const epode__bosh_session_ops *ops);
/* Name servers for the host lookup ("127.0.0.1:5353"); before start. */
epode_err epode__bosh_set_dns_servers(epode__bosh *b, const char *csv);

/* ------------------------------------ internal, for tests and fuzzing
 * How the transport reads one HTTP response <body/>, without curl, sockets
 * or a session. The transport itself runs the same checks in two steps
 * (when the response is complete, then when its rid's turn comes); this
 * runs them in one call, in the same order. Not for applications. */

typedef enum epode__bosh_body_type {
  EPODE__BOSH_BODY_NORMAL = 0,
  EPODE__BOSH_BODY_TERMINATE, /* type='terminate': the BOSH session is over */
  EPODE__BOSH_BODY_ERROR      /* type='error': the transport sends the request again
                                 (unless it was its own terminate) */
} epode__bosh_body_type;

typedef struct epode__bosh_response {
  epode__bosh_body_type type;
  size_t children; /* elements handed to on_child */
  /* TERMINATE: what the transport fails with when the terminate is not the
   * answer to its own: EPODE_ERR_EOF (no condition) or EPODE_ERR_STREAM. */
  epode_err terminate_err;
  char condition[64]; /* TERMINATE: the condition, control bytes blanked; "" if none */
  /* Why, for an error return, a TERMINATE (its condition explained, with
   * see-other-uri's URI or remote-stream-error's stream error) or an ERROR. */
  char detail[1024];
} epode__bosh_response;

/* One element child of a response <body/>, in document order (text is
 * skipped, and so is a terminate's stream error). `child` lives until the
 * call returns. Anything but EPODE_OK stops the walk (the session ended);
 * it is not an error of the parse. */
typedef epode_err (*epode__bosh_child_fn)(const epode_stanza *child, void *ud);

/* Reads `data` (`len` bytes, one HTTP response body) as the transport
 * does: one XML document (an XML declaration in front allowed; depth and
 * attribute limits from `cfg`), at most `max` bytes, whose root is
 * <body xmlns='http://jabber.org/protocol/httpbind'>.
 * `sid_expected` NULL: a session creation response, which must carry a
 * usable sid unless it is a terminate (whose children are then not
 * handed over); otherwise a sid, if present, must equal `sid_expected`.
 * Then hands the body's element children to `on_child` (may be NULL), except
 * for type='error'. `*out` is always filled (cleared first).
 * Returns EPODE_OK (see out->type: a terminate is not an error here),
 * EPODE_ERR_LIMIT when len > max, EPODE_ERR_PROTOCOL for a body that is not
 * XML, has another root or names another sid (out->detail says which),
 * EPODE_ERR_NOMEM, EPODE_ERR_INVAL. On an error on_child never fired. */
epode_err epode__bosh_parse_response(epode__bosh_response *out, const epode_config *cfg,
                                     const char *sid_expected, const char *data, size_t len,
                                     size_t max, epode__bosh_child_fn on_child, void *ud);
/* The largest response the transport reads for `cfg`: 4 stanzas' worth
 * (EPODE_LIMIT_STANZA_BYTES) plus room for the <body/> wrapper. */
size_t epode__bosh_response_cap(const epode_config *cfg);

#endif
