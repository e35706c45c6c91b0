/* The connection: DNS → TCP → (direct TLS) → session, with STARTTLS when
 * the session asks, all driven by the host's fd readiness and timer.
 *
 * Re-entrancy: the app's event callback runs inside our processing (every
 * session event is forwarded at once). It may call epode_conn_close(),
 * epode_session_send() and friends; `depth` tells those calls that we are
 * mid-processing, so close is deferred to the end of the current entry
 * point and output is flushed after the session call returns. It must not
 * call epode_conn_free().
 *
 * Teardown: every path ends in finish(), which emits EPODE_EV_CLOSED
 * exactly once. A failure of our own (DNS, connect, TLS, I/O) emits
 * EPODE_EV_ERROR first and makes epode_conn_failure() report it; the
 * session is then told the transport ended (so pending iq callbacks run),
 * and its own ERROR event for that is suppressed. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "epode/jid.h"
#include "net/bosh.h"
#include "net/discover.h"
#include "net/net.h"
#include "net/url.h"
#include "net/ws.h"
#include "session/session_host.h"
#include "util/alloc.h"
#include "util/buf.h"

/* One read from the socket. 16 KiB is a full TLS record. */
#define READ_CHUNK 16384u
/* Bytes read per process call before yielding to the host's other fds;
 * the rest is picked up from a 0 ms timer. */
#define READ_BUDGET (256u * 1024u)
/* Ciphertext queued for the socket before we stop encrypting more session
 * output (the session's own buffer is bounded by EPODE_LIMIT_OUTPUT_BYTES). */
#define OUT_HIGH_WATER (256u * 1024u)
/* Hard cap of that queue: only a peer that never reads while making us
 * answer (TLS key updates) could reach it. */
#define OUT_MAX (4u * 1024u * 1024u)
/* How long we keep trying to deliver our last bytes after the stream ended. */
#define DRAIN_MAX_MS 5000u

enum phase {
  PH_IDLE = 0,
  PH_DISCOVERING, /* XEP-0156: finding the WebSocket/BOSH URL */
  PH_RESOLVING,
  PH_CONNECTING,
  PH_TLS,
  PH_STREAM,
  PH_BOSH, /* the BOSH transport carries the session */
  PH_DRAINING,
  PH_WAIT, /* reconnection on: the session is DISCONNECTED until its next attempt */
  PH_DONE
};

typedef struct watch {
  int fd;
  unsigned ev;
} watch;

struct epode_conn {
  epode_config *cfg;
  const epode_mem *mem;
  epode_session *s;
  const epode_jid *jid; /* the session's */
  epode_event_fn ev_fn;
  void *ev_ud;
  epode_io_fn io_fn;
  epode_timer_fn timer_fn;
  void *io_ud;
  char *dns_servers; /* test hook */

  enum phase phase;
  epode__dns *dns;
  epode__connector *k;
  int fd;
  int direct_tls;
  const char *peer; /* "host (address)" for messages; never NULL ("" or allocated) */
  epode__tls *tls;
  int tls_starttls;        /* the handshake answers EPODE_EV_STARTTLS */
  uint64_t tls_deadline;   /* 0: none */
  uint64_t close_deadline; /* backstop after epode_conn_close() */
  uint64_t drain_deadline;
  int notify_sent; /* TLS close_notify queued */
  epode__buf out;  /* ciphertext waiting for the socket */

  watch *w;
  size_t nw, capw;
  int timer_on;
  int64_t timer_at; /* absolute time last requested */

  unsigned depth; /* > 0 while inside our processing or the app's callback */
  int in_read;
  int want_starttls;  /* session asked; start after its call returns */
  int session_closed; /* session emitted EPODE_EV_CLOSED */
  int session_started;
  int close_requested, close_started;
  int closed_emitted;
  int free_requested; /* epode_conn_free() from inside a callback */
  int kick;           /* run process_timeout soon (0 ms timer) */
  int flush_pending;  /* the app sent from outside: write at the next timeout */
  int more_input;     /* read budget used up, or TLS holds decrypted data */
  int write_failed;
  int write_errno;
  uint64_t bytes_in; /* from the socket, for hints about wrong ports */
  int first_byte;
  epode_state last_state;

  int fail_set; /* our own verdict (may be EPODE_OK: closed by the app) */
  epode_failure fail;
  char *fail_detail;   /* FAIL_DETAIL_SIZE bytes, allocated when first needed */
  char fail_small[96]; /* used if that allocation fails */

  /* XEP-0156 discovery, then BOSH (XEP-0124/0206) when the URL says so. */
  epode__discover *disc;
  int64_t disc_timer_at; /* absolute ms, -1 none */
  int disc_finished;
  epode__bosh *bosh;
  int64_t bosh_timer_at;

  /* WebSocket (RFC 7395): the filter between TLS/socket and the session. */
  epode__ws *ws;
  epode__buf wsout; /* frames (and the upgrade request) for the socket */
  char *tls_name;   /* the name TLS verifies: the URL's host */
  char *redirect_to; /* see-other-uri to follow */
  int redirects, redirect_bad;
  /* Reconnection. */
  int disconnected;   /* the session went DISCONNECTED: tear down after its call */
  int reconnect_now;  /* the session said to start the next attempt */
  int ready_here;     /* this connection reached READY (or resumed) */
  epode__addr_key cur;   /* the address this connection uses */
  epode__addr_key avoid; /* failed before READY: try the others first next time */
  unsigned char cur_set, avoid_set;
  char *other_host;   /* see-other-host target for the next attempt */
  uint16_t other_port;

};

uint64_t epode_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Room for a failure's detail (a list of every address tried and why):
 * allocated only when something fails, so idle connections don't carry it. */
#define FAIL_DETAIL_SIZE 2600u

static const char no_peer[1] = "";

/* Names the peer for messages (NULL: none yet). Without memory the name is
 * just left out. */
static void set_peer(epode_conn *c, const char *name) {
  if (c->peer && c->peer != no_peer) epode__free(c->mem, (void *)(uintptr_t)c->peer);
  c->peer = name && *name ? epode__strdup(c->mem, name) : NULL;
  if (!c->peer) c->peer = no_peer;
}

static char *detail(epode_conn *c) {
  if (!c->fail_detail) {
    c->fail_detail = epode__alloc(c->mem, FAIL_DETAIL_SIZE);
    if (!c->fail_detail) return c->fail_small;
    c->fail_detail[0] = '\0';
  }
  return c->fail_detail;
}
static size_t detail_size(const epode_conn *c) {
  return c->fail_detail ? FAIL_DETAIL_SIZE : sizeof c->fail_small;
}
/* The detail so far ("" if none). */
static const char *detail_str(const epode_conn *c) {
  return c->fail_detail ? c->fail_detail : c->fail_small;
}

static void advance(epode_conn *c);
static void after_session(epode_conn *c);
static void flush(epode_conn *c);
static void read_input(epode_conn *c);

/* ------------------------------------------------------------------ events */

static void emit(epode_conn *c, epode_event_type type, epode_state st, const epode_failure *f) {
  if (!c->ev_fn || c->free_requested) return;
  epode_event ev;
  memset(&ev, 0, sizeof ev);
  ev.type = type;
  ev.state = st;
  ev.uri = type == EPODE_EV_REDIRECT ? c->redirect_to : NULL;
  ev.jid = epode_session_jid(c->s);
  ev.failure = f ? f : epode_conn_failure(c);
  c->depth++;
  c->ev_fn(&ev, c->ev_ud);
  c->depth--;
}

static void emit_state(epode_conn *c, epode_state st) {
  if (c->last_state == st) return;
  c->last_state = st;
  emit(c, EPODE_EV_STATE, st, NULL);
}

static void on_session_event(const epode_event *ev, void *ud) {
  epode_conn *c = ud;
  switch (ev->type) {
  case EPODE_EV_STATE: emit_state(c, ev->state); break;
  case EPODE_EV_STARTTLS: c->want_starttls = 1; break;
  case EPODE_EV_READY:
  case EPODE_EV_RESUMED:
    c->ready_here = 1;
    c->avoid_set = 0;
    c->redirects = 0;
    emit(c, ev->type, ev->state, ev->failure);
    break;
  case EPODE_EV_ERROR:
    /* When the transport failed, we already reported why. */
    if (!c->fail_set) emit(c, EPODE_EV_ERROR, ev->state, ev->failure);
    break;
  case EPODE_EV_CLOSED: c->session_closed = 1; break;
  case EPODE_EV_REDIRECT:
    /* Followed once the session call returns (after_session). */
    if (!c->redirect_to && !c->redirects) c->redirect_to = epode__strdup(c->mem, ev->uri);
    if (!c->redirect_to) c->redirect_bad = 1;
    emit(c, EPODE_EV_REDIRECT, ev->state, ev->failure);
    break;
  case EPODE_EV_DISCONNECTED:
    /* The transport is torn down once the session call returns. */
    c->disconnected = 1;
    if (c->ev_fn && !c->free_requested) {
      c->depth++;
      c->ev_fn(ev, c->ev_ud);
      c->depth--;
    }
    break;
  case EPODE_EV_RECONNECT: c->reconnect_now = 1; break;
  }
}

/* ------------------------------------------------------------------ io */

static void set_watch(epode_conn *c, int fd, unsigned ev) {
  size_t i;
  for (i = 0; i < c->nw && c->w[i].fd != fd; i++)
    ;
  if (i == c->nw) {
    if (!ev) return;
    if (c->nw == c->capw) {
      size_t ncap = c->capw ? c->capw * 2 : 4;
      watch *nw = epode__realloc(c->mem, c->w, ncap * sizeof *nw);
      if (!nw) return; /* cannot happen for a handful of fds; the timeout catches it */
      c->w = nw;
      c->capw = ncap;
    }
    c->w[c->nw++] = (watch){fd, 0};
  }
  if (c->w[i].ev == ev) return;
  c->w[i].ev = ev;
  if (c->io_fn) c->io_fn(fd, ev, c->io_ud);
  if (!ev) c->w[i] = c->w[--c->nw];
}

static void dns_sock_cb(int fd, unsigned events, void *ud) { set_watch(ud, fd, events); }
static void connector_close_cb(int fd, void *ud) { set_watch(ud, fd, 0); }

/* Bytes we still have to write: ciphertext queued, plus the session's
 * output once it may flow (not during a STARTTLS handshake). */
static size_t pending_out(const epode_conn *c) {
  size_t n = c->tls ? c->out.len + epode__tls_out_len(c->tls) : 0;
  if ((c->phase == PH_STREAM || c->phase == PH_DRAINING) &&
      (!c->tls || epode__tls_handshake_done(c->tls))) {
    if (c->ws)
      n += c->wsout.len + (epode__ws_open(c->ws) && !epode__ws_close_sent(c->ws)
                               ? epode_session_output_len(c->s)
                               : 0);
    else n += epode_session_output_len(c->s);
  }
  return n;
}

/* ------------------------------------------------------------------ source */

/* What flows to TLS/the socket: the session's bytes, or, over WebSocket,
 * the session's messages framed one per WebSocket message. */
static void ws_pull(epode_conn *c) {
  if (!c->ws || !epode__ws_open(c->ws)) return;
  if (epode__ws_close_sent(c->ws)) {
    /* The WebSocket is closing: nothing more can be sent on it. */
    size_t n = epode_session_output_len(c->s);
    if (n) epode_session_consume_output(c->s, n);
    return;
  }
  while (c->wsout.len < OUT_HIGH_WATER) {
    size_t len;
    const void *m = epode_session_peek_message(c->s, &len);
    if (!m) return;
    epode_err e = epode__ws_send(c->ws, m, len, &c->wsout);
    if (e) {
      c->write_failed = 1; /* reported by check_write_failed */
      c->write_errno = ENOBUFS;
      return;
    }
    epode_session_consume_output(c->s, len);
  }
}

static const void *src_peek(epode_conn *c, size_t *len) {
  if (!c->ws) return epode_session_peek_output(c->s, len);
  ws_pull(c);
  *len = c->wsout.len;
  return c->wsout.len ? c->wsout.data : NULL;
}

static void src_consume(epode_conn *c, size_t n) {
  if (c->ws)
    epode__buf_consume(&c->wsout, n);
  else
    epode_session_consume_output(c->s, n);
}

static size_t src_len(epode_conn *c) {
  size_t n;
  src_peek(c, &n);
  return n;
}

static void update_io(epode_conn *c) {
  uint64_t now = epode_now_ms();
  if (c->fd >= 0) {
    unsigned ev = 0;
    int out = pending_out(c) > 0 && !c->write_failed;
    switch (c->phase) {
    case PH_TLS:
    case PH_STREAM: ev = EPODE_IO_READ | (out ? EPODE_IO_WRITE : 0u); break;
    case PH_DRAINING: ev = out ? EPODE_IO_WRITE : 0u; break;
    default: break;
    }
    set_watch(c, c->fd, ev);
  }
  if (c->phase == PH_CONNECTING && c->k && epode__connector_fd(c->k) >= 0)
    set_watch(c, epode__connector_fd(c->k), EPODE_IO_WRITE);

  int64_t d = -1;
#define CONSIDER(x)                                                                                \
  do {                                                                                             \
    int64_t x_ = (x);                                                                              \
    if (x_ >= 0 && (d < 0 || x_ < d)) d = x_;                                                      \
  } while (0)
  if (c->phase != PH_DONE && c->phase != PH_IDLE && (c->kick || c->more_input || c->flush_pending))
    CONSIDER((int64_t)now);
  switch (c->phase) {
  case PH_DISCOVERING: CONSIDER(c->disc_timer_at); break;
  case PH_BOSH:
    CONSIDER(c->bosh_timer_at);
    CONSIDER(epode_session_next_deadline(c->s));
    CONSIDER(c->close_deadline ? (int64_t)c->close_deadline : -1);
    break;
  case PH_RESOLVING: CONSIDER(epode__dns_deadline(c->dns, now)); break;
  case PH_CONNECTING: CONSIDER(epode__connector_deadline(c->k)); break;
  case PH_TLS: CONSIDER(c->tls_deadline ? (int64_t)c->tls_deadline : -1); break;
  case PH_STREAM:
    CONSIDER(epode_session_next_deadline(c->s));
    CONSIDER(c->close_deadline ? (int64_t)c->close_deadline : -1);
    break;
  case PH_DRAINING: CONSIDER((int64_t)c->drain_deadline); break;
  case PH_WAIT: CONSIDER(epode_session_next_deadline(c->s)); break;
  default: break;
  }
#undef CONSIDER
  if (d < 0) {
    if (c->timer_on && c->timer_fn) c->timer_fn(-1, c->io_ud);
    c->timer_on = 0;
    return;
  }
  if (c->timer_on && c->timer_at == d) return;
  c->timer_on = 1;
  c->timer_at = d;
  if (c->timer_fn) c->timer_fn(d > (int64_t)now ? d - (int64_t)now : 0, c->io_ud);
}

/* ------------------------------------------------------------------ teardown */

static void shutdown_transport(epode_conn *c) {
  if (c->disc) {
    epode__discover_free(c->disc); /* reports its fds closed, cancels its timer */
    c->disc = NULL;
  }
  if (c->bosh) {
    epode__bosh_free(c->bosh);
    c->bosh = NULL;
  }
  c->disc_timer_at = c->bosh_timer_at = -1;
  if (c->dns) {
    epode__dns_free(c->dns); /* reports its sockets closed */
    c->dns = NULL;
  }
  if (c->k) {
    epode__connector_free(c->k);
    c->k = NULL;
  }
  epode__tls_free(c->tls);
  c->tls = NULL;
  if (c->fd >= 0) {
    set_watch(c, c->fd, 0);
    close(c->fd);
    c->fd = -1;
  }
  epode__buf_reset(&c->out);
  c->tls_deadline = c->close_deadline = c->drain_deadline = 0;
  c->more_input = c->kick = 0;
}

static void finish(epode_conn *c) {
  if (c->closed_emitted) return;
  shutdown_transport(c);
  c->phase = PH_DONE;
  c->closed_emitted = 1;
  epode__log(c->cfg, EPODE_LOG_INFO, "net", "connection closed%s%s",
             epode_conn_failure(c)->err ? ": " : "",
             epode_conn_failure(c)->err ? epode_conn_failure(c)->detail : "");
  emit_state(c, EPODE_STATE_CLOSED);
  emit(c, EPODE_EV_CLOSED, EPODE_STATE_CLOSED, NULL);
}

/* The session went DISCONNECTED: drop this connection's transport and wait
 * for the session's word to try again. */
static void go_wait(epode_conn *c) {
  c->disconnected = 0;
  if (c->cur_set && !c->ready_here) {
    /* It failed before the session was ready there: next time, try the
     * other addresses (the next SRV target) first. */
    c->avoid = c->cur;
    c->avoid_set = 1;
  }
  c->cur_set = c->ready_here = 0;
  shutdown_transport(c);
  epode__ws_free(c->ws);
  c->ws = NULL;
  epode__buf_reset(&c->wsout);
  epode__free(c->mem, c->tls_name);
  c->tls_name = NULL;
  c->phase = PH_WAIT;
  c->session_started = c->write_failed = c->want_starttls = 0;
  c->write_errno = 0;
  c->bytes_in = 0;
  c->first_byte = 0;
  c->notify_sent = 0;
  set_peer(c, NULL);
  c->flush_pending = 0;
}

static epode_err begin_connect(epode_conn *c);
static void fail(epode_conn *c, epode_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The reconnect delay is over: resolve and connect again. */
static void start_attempt(epode_conn *c) {
  c->reconnect_now = 0;
  if (c->phase != PH_WAIT) return;
  c->phase = PH_IDLE;
  epode__log(c->cfg, EPODE_LOG_INFO, "net", "reconnecting");
  epode_err e = begin_connect(c);
  if (e) {
    fail(c, e, "%s", detail_str(c)[0] ? detail_str(c) : epode_strerror(e));
    return;
  }
  c->kick = 1;
  if (c->phase == PH_RESOLVING || c->phase == PH_DISCOVERING) emit_state(c, EPODE_STATE_RESOLVING);
}

/* Ends the connection because of the transport: reports `err` with a
 * detail, lets the session wind down, closes — unless reconnection is on
 * and another attempt could help: then the session waits (PH_WAIT). */
static void fail(epode_conn *c, epode_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(epode_conn *c, epode_err err, const char *fmt, ...) {
  if (c->phase == PH_DONE || c->phase == PH_WAIT || c->fail_set) return;
  va_list ap;
  va_start(ap, fmt);
  char *d = detail(c);
  vsnprintf(d, detail_size(c), fmt, ap);
  va_end(ap);
  if (!c->close_requested && epode__session_will_retry(c->s, err)) {
    /* Not the end: the session keeps everything and says when to retry. */
    epode__log(c->cfg, EPODE_LOG_WARN, "net", "%s: %s", epode_strerror(err), d);
    shutdown_transport(c);
    c->depth++;
    (void)epode_session_abort(c->s, err, d, epode_now_ms());
    c->depth--;
    if (c->disconnected) {
      go_wait(c);
      return;
    }
  }
  c->fail_set = 1;
  c->fail.err = err;
  c->fail.condition = c->fail.text = c->fail.mechanism = NULL;
  c->fail.detail = d;
  epode__log(c->cfg, EPODE_LOG_ERROR, "net", "%s: %s", epode_strerror(err), d);
  emit(c, EPODE_EV_ERROR, epode_conn_state(c), &c->fail);
  shutdown_transport(c);
  /* Between reconnection attempts too: its pending stanzas get their
   * reports now, not when the connection is freed. */
  if (!c->session_closed &&
      (c->session_started || epode_session_state(c->s) == EPODE_STATE_DISCONNECTED)) {
    c->depth++;
    (void)epode_session_abort(c->s, err, d, epode_now_ms());
    c->depth--;
  }
  finish(c);
}

static const char *target_name(const epode_conn *c) {
  return c->cfg->server_host ? c->cfg->server_host : epode_jid_domain(c->jid);
}

/* ------------------------------------------------------------------ output */

/* Moves TLS ciphertext into the socket queue. */
static int move_tls_out(epode_conn *c) {
  unsigned char tmp[4096];
  while (c->tls && epode__tls_out_len(c->tls)) {
    size_t n = epode__tls_take(c->tls, tmp, sizeof tmp);
    if (!n) break;
    epode_err e = epode__buf_append(&c->out, tmp, n);
    if (e) {
      fail(c, e, "more than %u bytes are waiting to be sent to %s; the server is not reading",
           OUT_MAX, c->peer);
      return -1;
    }
  }
  return 0;
}

static void write_error(epode_conn *c, int err) {
  if (c->write_failed) return;
  c->write_failed = 1;
  c->write_errno = err;
  /* A server that hangs up usually said why first (a stream error): read
   * what is left before reporting the write failure. */
  if (!c->in_read) read_input(c);
}

/* After a write failure, if reading did not end things: report it. */
static void check_write_failed(epode_conn *c) {
  if (!c->write_failed || c->phase == PH_DONE) return;
  if (c->phase == PH_DRAINING) {
    finish(c);
    return;
  }
  int e = c->write_errno;
  fail(c, e == EPIPE || e == ECONNRESET ? EPODE_ERR_EOF : EPODE_ERR_IO, "sending to %s failed: %s",
       c->peer, strerror(e));
}

/* Sends the socket queue; 1 when empty, 0 when blocked, -1 on error. */
static int send_out(epode_conn *c) {
  while (c->out.len) {
    long w = epode__sock_send(c->fd, c->out.data, c->out.len);
    if (w < 0) {
      write_error(c, errno);
      return -1;
    }
    if (w == 0) return 0;
    epode__buf_consume(&c->out, (size_t)w);
  }
  return 1;
}

static void flush(epode_conn *c) {
  if (c->fd < 0 || c->write_failed || c->phase == PH_DONE) return;
  if (c->tls) {
    if (move_tls_out(c) < 0) return;
    int streaming =
        epode__tls_handshake_done(c->tls) && (c->phase == PH_STREAM || c->phase == PH_DRAINING);
    for (;;) {
      while (streaming && c->out.len < OUT_HIGH_WATER) {
        size_t len;
        const void *p = src_peek(c, &len);
        if (!len) break;
        if (len > READ_CHUNK) len = READ_CHUNK;
        epode_err e = epode__tls_write(c->tls, p, len);
        if (e) {
          fail(c, EPODE_ERR_TLS, "%s", epode__tls_detail(c->tls));
          return;
        }
        src_consume(c, len);
        if (move_tls_out(c) < 0) return;
      }
      int r = send_out(c);
      if (r <= 0) return;
      if (!streaming || !src_len(c)) return;
    }
  }
  if (c->phase != PH_STREAM && c->phase != PH_DRAINING) return;
  for (;;) {
    size_t len;
    const void *p = src_peek(c, &len);
    if (!len) return;
    long w = epode__sock_send(c->fd, p, len);
    if (w < 0) {
      write_error(c, errno);
      return;
    }
    if (w == 0) return;
    src_consume(c, (size_t)w);
  }
}

/* ------------------------------------------------------------------ closing */

/* The session is over: deliver its last words (and TLS close_notify), then
 * close. Bounded by DRAIN_MAX_MS. */
static void drain_step(epode_conn *c) {
  if (c->phase != PH_DRAINING) return;
  flush(c);
  if (c->phase != PH_DRAINING) return;
  if (c->ws && epode__ws_open(c->ws) && !epode__ws_close_sent(c->ws) && !c->write_failed &&
      !epode_session_output_len(c->s)) {
    /* RFC 7395 §3.6: after <close/>, close the WebSocket (1000: normal). */
    if (epode__ws_close(c->ws, 1000, &c->wsout) == EPODE_OK) flush(c);
    if (c->phase != PH_DRAINING) return;
  }
  if (c->tls && !c->notify_sent && !epode_session_output_len(c->s) &&
      (!c->ws || !c->wsout.len) && epode__tls_handshake_done(c->tls)) {
    c->notify_sent = 1;
    epode__tls_close_notify(c->tls);
    if (move_tls_out(c) < 0) return;
    flush(c);
    if (c->phase != PH_DRAINING) return;
  }
  if (c->fd < 0 || c->write_failed || !pending_out(c)) finish(c);
}

static void begin_drain(epode_conn *c) {
  c->phase = PH_DRAINING;
  uint32_t t = c->cfg->timeouts[EPODE_TIMEOUT_CLOSE];
  if (!t || t > DRAIN_MAX_MS) t = DRAIN_MAX_MS;
  c->drain_deadline = epode_now_ms() + t;
  c->close_deadline = 0;
  drain_step(c);
}

static void process_close(epode_conn *c) {
  c->close_started = 1;
  uint64_t now = epode_now_ms();
  switch (c->phase) {
  case PH_BOSH:
    if (c->session_closed) break;
    c->depth++;
    (void)epode_session_close(c->s);
    c->depth--;
    if (c->cfg->timeouts[EPODE_TIMEOUT_CLOSE])
      c->close_deadline = now + c->cfg->timeouts[EPODE_TIMEOUT_CLOSE] + 1000u;
    if (c->bosh) (void)epode__bosh_flush(c->bosh);
    break;
  case PH_STREAM:
    if (c->session_closed) break;
    epode__log(c->cfg, EPODE_LOG_DEBUG, "net", "closing the stream");
    c->depth++;
    (void)epode_session_close(c->s);
    c->depth--;
    if (c->cfg->timeouts[EPODE_TIMEOUT_CLOSE])
      c->close_deadline = now + c->cfg->timeouts[EPODE_TIMEOUT_CLOSE] + 1000u;
    after_session(c);
    break;
  case PH_DISCOVERING:
  case PH_RESOLVING:
  case PH_CONNECTING:
  case PH_TLS:
  case PH_WAIT:
    /* Nothing to say in XML yet: just stop. */
    c->fail_set = 1;
    c->fail.err = EPODE_OK;
    char *d = detail(c);
    snprintf(d, detail_size(c), "closed by the application before the stream was established");
    c->fail.detail = d;
    shutdown_transport(c);
    if (!c->session_closed &&
        (c->session_started || epode_session_state(c->s) == EPODE_STATE_DISCONNECTED)) {
      /* Between reconnection attempts too: what waits is reported failed. */
      c->depth++;
      (void)epode_session_close(c->s);
      c->depth--;
    }
    finish(c);
    break;
  default: break;
  }
}

/* End of every public entry point. */
static void end_call(epode_conn *c) {
  /* The session went DISCONNECTED inside a transport's own call (BOSH), or
   * said to try again. */
  if (c->disconnected && c->phase != PH_DONE) go_wait(c);
  if (c->reconnect_now && c->phase == PH_WAIT && !c->close_requested) start_attempt(c);
  if (c->close_requested && !c->close_started && c->phase != PH_DONE) process_close(c);
  check_write_failed(c);
  update_io(c);
}

/* ------------------------------------------------------------------ session glue */

static void start_session(epode_conn *c) {
  epode_tls_info info;
  if (c->tls) epode__tls_info(c->tls, &info);
  c->session_started = 1;
  c->depth++;
  (void)epode_session_start(c->s, epode_now_ms(), c->tls ? &info : NULL);
  c->depth--;
}

/* One WebSocket message: one complete element for the session. */
static epode_err on_ws_message(void *ud, const char *msg, size_t len) {
  epode_conn *c = ud;
  if (!c->session_started) start_session(c);
  if (c->session_closed) return EPODE_OK;
  c->depth++;
  (void)epode_session_recv(c->s, msg, len, epode_now_ms());
  c->depth--;
  return EPODE_OK;
}

static void handle_eof(epode_conn *c);

static void feed_ws(epode_conn *c, const void *p, size_t n) {
  int was_open = epode__ws_open(c->ws);
  epode_err e = epode__ws_feed(c->ws, p, n, &c->wsout, on_ws_message, c);
  if (e) {
    int status = epode__ws_http_status(c->ws);
    fail(c, status && status != 101 ? EPODE_ERR_CONNECT : EPODE_ERR_PROTOCOL,
         "WebSocket %s %s: %s", was_open ? "connection to" : "upgrade at", c->peer,
         epode__ws_errmsg(c->ws));
    return;
  }
  if (!was_open && epode__ws_open(c->ws)) {
    epode__log(c->cfg, EPODE_LOG_INFO, "net", "WebSocket open to %s (subprotocol xmpp)", c->peer);
    if (!c->session_started) start_session(c);
  }
  if (epode__ws_peer_closed(c->ws) && !c->session_closed) {
    uint16_t code = epode__ws_close_code(c->ws);
    epode__log(c->cfg, EPODE_LOG_INFO, "net", "the server closed the WebSocket (code %u%s%s)",
               (unsigned)code, *epode__ws_close_reason(c->ws) ? ": " : "",
               epode__ws_close_reason(c->ws));
  }
  after_session(c);
  if (c->phase == PH_STREAM && c->ws && epode__ws_peer_closed(c->ws)) {
    if (c->session_closed) {
      handle_eof(c);
      return;
    }
    /* RFC 7395 §3.6: a server ends the stream with <close/> first; a bare
     * WebSocket close is a failure, with its code and reason. */
    uint16_t code = epode__ws_close_code(c->ws);
    const char *reason = epode__ws_close_reason(c->ws);
    fail(c, EPODE_ERR_EOF, "the server closed the WebSocket without <close/> (code %u%s%s)",
         (unsigned)code, *reason ? ": " : "", reason);
  }
}

static void feed_session(epode_conn *c, const void *p, size_t n) {
  if (c->ws) {
    feed_ws(c, p, n);
    return;
  }
  c->depth++;
  (void)epode_session_recv(c->s, p, n, epode_now_ms());
  c->depth--;
  after_session(c);
}

/* Where the next read of a stream goes: straight into the session's XML
 * parser when it can lend its buffer (TCP or TLS stream framing; saves
 * expat's copy of every read), else into `own`. *direct says which; a lent
 * buffer must be given back with give_back() whatever the read found. */
static void *read_target(epode_conn *c, void *own, size_t *cap, int *direct) {
  *direct = 0;
  if (!c->ws && c->phase == PH_STREAM && !c->session_closed) {
    size_t len;
    void *b = epode__session_recv_buffer(c->s, READ_CHUNK, &len);
    if (b) {
      *cap = len;
      *direct = 1;
      return b;
    }
  }
  *cap = READ_CHUNK;
  return own;
}

/* The read into a lent buffer found n bytes (0: none, or it failed): the
 * session parses them as epode_session_recv() would. */
static void give_back(epode_conn *c, size_t n) {
  if (!n) {
    (void)epode__session_recv_commit(c->s, 0, epode_now_ms());
    return;
  }
  c->depth++;
  (void)epode__session_recv_commit(c->s, n, epode_now_ms());
  c->depth--;
  after_session(c);
}

/* The transport is up: over WebSocket, ask for the upgrade (the session
 * starts once the server agreed); otherwise start the session. */
static void transport_ready(epode_conn *c) {
  c->phase = PH_STREAM;
  if (c->ws) {
    epode_err e = epode__ws_handshake(c->ws, &c->wsout);
    if (e) {
      fail(c, e, "cannot build the WebSocket upgrade request");
      return;
    }
    flush(c);
    return;
  }
  start_session(c);
  after_session(c);
}

static void start_tls(epode_conn *c, int starttls);

/* After every call into the session: send what it produced, then act on
 * what it asked for. */
static void follow_redirect(epode_conn *c);

static void after_session(epode_conn *c) {
  if (c->disconnected && c->phase != PH_DONE) {
    go_wait(c);
    return;
  }
  if (c->phase == PH_DONE || c->phase == PH_DRAINING || c->phase == PH_WAIT) return;
  if ((c->redirect_to || c->redirect_bad) && c->phase == PH_STREAM) {
    follow_redirect(c);
    return;
  }
  if (c->phase == PH_BOSH) {
    /* The transport sends what the session wrote (a <close/> becomes a
     * terminate, which ends in bosh_done). */
    (void)epode__bosh_flush(c->bosh);
    if (c->phase != PH_BOSH) return;
    if (c->session_closed && !c->close_deadline) /* bound the wait for the terminate */
      c->close_deadline = epode_now_ms() + c->cfg->timeouts[EPODE_TIMEOUT_CLOSE] + 1000u;
    if (c->close_requested && !c->close_started && c->depth == 0) process_close(c);
    return;
  }
  flush(c);
  if (c->phase == PH_DONE || c->phase == PH_WAIT) return;
  if (c->want_starttls && c->phase == PH_STREAM && !c->session_closed) {
    c->want_starttls = 0;
    if (c->tls) {
      fail(c, EPODE_ERR_PROTOCOL, "the session asked for STARTTLS on an encrypted stream");
      return;
    }
    start_tls(c, 1);
    return;
  }
  if (c->session_closed && c->phase == PH_STREAM) {
    begin_drain(c);
    return;
  }
  if (c->close_requested && !c->close_started && c->depth == 0) process_close(c);
}

static void tls_established(epode_conn *c) {
  epode_tls_info info;
  epode__tls_info(c->tls, &info);
  c->tls_deadline = 0;
  size_t alen = 0;
  const char *alpn = epode__tls_alpn(c->tls, &alen);
  if (alpn) epode__log(c->cfg, EPODE_LOG_DEBUG, "net", "ALPN: %.*s", (int)alen, alpn);
  if (!c->tls_starttls) {
    transport_ready(c);
    return;
  }
  c->phase = PH_STREAM;
  c->depth++;
  (void)epode_session_tls_done(c->s, &info, epode_now_ms());
  c->depth--;
  after_session(c);
}

static void step_handshake(epode_conn *c) {
  int r = epode__tls_handshake(c->tls);
  if (r < 0) {
    /* A direct-TLS attempt answered with XML: say what it most likely is. */
    int xml = !c->tls_starttls && c->first_byte == '<';
    fail(c, (epode_err)r, "%s%s", epode__tls_detail(c->tls),
         xml ? " (the server answered in plain XML: this looks like a STARTTLS port, "
               "not direct TLS)"
             : "");
    return;
  }
  flush(c); /* our handshake messages */
  if (c->phase != PH_TLS) return;
  if (r == EPODE__TLS_DONE) tls_established(c);
}

static void start_tls(epode_conn *c, int starttls) {
  char detail[1024];
  /* Over WebSocket, TLS is HTTPS: the URL's host is verified and ALPN
   * xmpp-client (XEP-0368) does not apply. */
  const char *name = c->tls_name ? c->tls_name : epode_jid_domain(c->jid);
  epode_err e = epode__tls_new(&c->tls, c->cfg, name, !starttls && !c->ws, detail, sizeof detail);
  if (e) {
    fail(c, e == EPODE_ERR_NOMEM ? e : EPODE_ERR_TLS, "%s", detail);
    return;
  }
  c->tls_starttls = starttls;
  c->phase = PH_TLS;
  uint32_t t = c->cfg->timeouts[EPODE_TIMEOUT_TLS];
  c->tls_deadline = t ? epode_now_ms() + t : 0;
  epode__log(c->cfg, EPODE_LOG_INFO, "net", "TLS handshake with %s (%s, name %s)", c->peer,
             c->ws ? "wss" : starttls ? "STARTTLS" : "direct TLS", name);
  emit_state(c, EPODE_STATE_TLS_HANDSHAKE);
  if (c->phase != PH_TLS) return;
  step_handshake(c);
}

/* ------------------------------------------------------------------ input */

static void handle_eof(epode_conn *c) {
  if (c->phase == PH_TLS) {
    fail(c, EPODE_ERR_TLS, "%s closed the connection during the TLS handshake", c->peer);
    return;
  }
  if (c->phase != PH_STREAM) return;
  epode__log(c->cfg, EPODE_LOG_INFO, "net", "%s closed the connection", c->peer);
  c->depth++;
  (void)epode_session_eof(c->s, epode_now_ms());
  c->depth--;
  after_session(c);
  if (c->phase == PH_STREAM) finish(c); /* the session should have closed */
}

/* Decrypted data to the session. */
static void pump_plain(epode_conn *c) {
  while (c->phase == PH_STREAM && c->tls && !c->session_closed) {
    size_t n = 0;
    int eof = 0;
    /* On the stack: an idle connection holds no read buffers. */
    unsigned char pbuf[READ_CHUNK];
    size_t cap;
    int direct;
    void *dst = read_target(c, pbuf, &cap, &direct);
    epode_err e = epode__tls_read(c->tls, dst, cap, &n, &eof);
    if (direct && (e || !n)) give_back(c, 0);
    if (e) {
      fail(c, EPODE_ERR_TLS, "%s", epode__tls_detail(c->tls));
      return;
    }
    if (n) {
      if (direct)
        give_back(c, n);
      else
        feed_session(c, pbuf, n);
      continue;
    }
    if (move_tls_out(c) < 0) return; /* post-handshake replies (key update) */
    flush(c);
    if (eof) handle_eof(c);
    return;
  }
}

static void read_input(epode_conn *c) {
  size_t budget = READ_BUDGET;
  c->more_input = 0;
  c->in_read = 1;
  while (c->fd >= 0 && (c->phase == PH_TLS || c->phase == PH_STREAM) && !c->session_closed) {
    unsigned char rbuf[READ_CHUNK]; /* on the stack, as pbuf in pump_plain */
    size_t cap = sizeof rbuf;
    int direct = 0;
    unsigned char *dst = c->tls ? rbuf : read_target(c, rbuf, &cap, &direct);
    long n = epode__sock_recv(c->fd, dst, cap);
    if (direct && n <= 0) {
      int saved = errno;
      give_back(c, 0);
      errno = saved;
    }
    if (n < 0) {
      int e = errno;
      if (e == EAGAIN || e == EWOULDBLOCK) break;
      if (e == ECONNRESET && c->phase == PH_STREAM &&
          epode_session_state(c->s) == EPODE_STATE_CLOSING) {
        handle_eof(c); /* we said goodbye; a reset is an answer too */
      } else {
        /* Reset before a single byte on a plaintext stream: typically a
         * direct-TLS port that got our XML header. */
        int hint = e == ECONNRESET && !c->bytes_in && !c->tls;
        fail(c, e == ECONNRESET ? EPODE_ERR_EOF : EPODE_ERR_IO, "reading from %s failed: %s%s",
             c->peer, strerror(e),
             hint ? " before it sent anything (if this is a direct TLS port, use "
                    "EPODE_TLS_DIRECT)"
                  : "");
      }
      break;
    }
    if (n == 0) {
      handle_eof(c);
      break;
    }
    if (!c->bytes_in) c->first_byte = dst[0];
    c->bytes_in += (uint64_t)n;
    if (direct) {
      give_back(c, (size_t)n);
    } else if (c->tls) {
      epode_err e = epode__tls_feed(c->tls, rbuf, (size_t)n);
      if (e) {
        fail(c, e, "%s", epode__tls_detail(c->tls));
        break;
      }
      if (c->phase == PH_TLS) step_handshake(c);
      if (c->phase == PH_STREAM) pump_plain(c);
    } else {
      feed_session(c, rbuf, (size_t)n);
    }
    if ((size_t)n >= budget) {
      c->more_input = 1;
      break;
    }
    budget -= (size_t)n;
  }
  if (c->tls && c->phase == PH_STREAM && epode__tls_pending(c->tls)) c->more_input = 1;
  c->in_read = 0;
}

/* ------------------------------------------------------------------ BOSH, discovery */

static void bosh_watch(void *ud, int fd, unsigned events) { set_watch(ud, fd, events); }
static void bosh_timer(void *ud, int64_t ms) {
  epode_conn *c = ud;
  c->bosh_timer_at = ms < 0 ? -1 : (int64_t)epode_now_ms() + ms;
}
/* Both come as the last thing a bosh call does: freeing it here is fine. */
static void bosh_failed(void *ud, epode_err err, const char *detail) {
  fail(ud, err, "%s", detail);
}
static void bosh_done(void *ud) {
  epode_conn *c = ud;
  if (!c->session_closed) {
    c->depth++;
    (void)epode_session_eof(c->s, epode_now_ms());
    c->depth--;
  }
  if (c->disconnected) {
    go_wait(c);
    return;
  }
  finish(c);
}

static epode_err start_bosh(epode_conn *c) {
  static const epode__bosh_host hostcb = {NULL, bosh_watch, bosh_timer, bosh_failed, bosh_done};
  epode__bosh_host h = hostcb;
  h.ud = c;
  epode_err e = epode__bosh_new(&c->bosh, c->cfg, c->s, c->cfg->url, &h);
  if (e) {
    char *d = detail(c);
    snprintf(d, detail_size(c), "cannot use the BOSH URL %s", c->cfg->url);
    return e;
  }
  if (c->dns_servers) (void)epode__bosh_set_dns_servers(c->bosh, c->dns_servers);
  set_peer(c, c->cfg->url);
  c->phase = PH_BOSH;
  c->session_started = 1;
  epode__log(c->cfg, EPODE_LOG_INFO, "net", "BOSH session at %s", c->cfg->url);
  emit_state(c, EPODE_STATE_CONNECTING);
  /* libcurl runs the https:// TLS (verified like ours); say so, as the
   * TCP path does with its own handshake. */
  if (c->phase == PH_BOSH && !strncmp(c->cfg->url, "https://", 8))
    emit_state(c, EPODE_STATE_TLS_HANDSHAKE);
  if (c->phase != PH_BOSH) return EPODE_OK;
  c->depth++;
  e = epode__bosh_start(c->bosh);
  c->depth--;
  return EPODE_OK; /* a failure was reported through bosh_failed */
}

static void disc_io(int fd, unsigned events, void *ud) { set_watch(ud, fd, events); }
static void disc_timer(int64_t ms, void *ud) {
  epode_conn *c = ud;
  c->disc_timer_at = ms < 0 ? -1 : (int64_t)epode_now_ms() + ms;
}
static void disc_done(void *ud, epode_err err, const char *url, const char *detail) {
  epode_conn *c = ud;
  c->disc_finished = 1; /* acted on in advance(), outside discovery's own call */
  (void)err;
  (void)url;
  (void)detail;
}

static epode_err begin_connect(epode_conn *c);

/* "host", "host:port", "[v6]" or "[v6]:port" (RFC 6120 see-other-host). */
static int parse_other_host(const char *v, char *host, size_t size, uint16_t *port) {
  const char *h = v, *colon;
  size_t n;
  *port = 0;
  if (*v == '[') {
    const char *close = strchr(v, ']');
    if (!close) return -1;
    h = v + 1;
    n = (size_t)(close - h);
    colon = close[1] == ':' ? close + 1 : NULL;
    if (close[1] && !colon) return -1;
  } else {
    colon = strchr(v, ':');
    if (colon && strchr(colon + 1, ':')) return -1; /* bare IPv6 needs brackets */
    n = colon ? (size_t)(colon - v) : strlen(v);
  }
  if (!n || n >= size) return -1;
  memcpy(host, h, n);
  host[n] = '\0';
  if (colon) {
    char *end;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (*end || !colon[1] || p == 0 || p > 65535) return -1;
    *port = (uint16_t)p;
  }
  return 0;
}

/* The server sent us elsewhere (RFC 7395 see-other-uri over WebSocket,
 * RFC 6120 see-other-host over TCP): drop this connection and start over
 * there, once. The session kept its handlers and queued stanzas; the new
 * host is verified against the JID's domain like the old one. */
static void follow_redirect(epode_conn *c) {
  char *url = c->redirect_to;
  c->redirect_to = NULL;
  if (c->redirect_bad || !url) {
    fail(c, EPODE_ERR_NOMEM, "cannot follow the server's redirect");
    return;
  }
  c->redirects++;
  epode_err e = EPODE_OK;
  if (!c->ws) {
    char host[EPODE__MAX_HOST];
    uint16_t port;
    if (parse_other_host(url, host, sizeof host, &port)) {
      fail(c, EPODE_ERR_PROTOCOL, "the server sends us to '%s', which is not host[:port]", url);
      epode__free(c->mem, url);
      return;
    }
    epode__free(c->mem, c->other_host);
    c->other_host = epode__strdup(c->mem, host);
    c->other_port = port;
    if (!c->other_host) e = EPODE_ERR_NOMEM;
  } else {
    epode__url u;
    const char *why = NULL;
    if (epode__url_parse(url, &u, &why) != EPODE_OK ||
        (strcmp(u.scheme, "ws") != 0 && strcmp(u.scheme, "wss") != 0)) {
      fail(c, EPODE_ERR_PROTOCOL, "the server redirects to %s, which is not a WebSocket URL%s%s",
           url, why ? ": " : "", why ? why : "");
      epode__free(c->mem, url);
      return;
    }
    e = epode_config_set_url(c->cfg, url);
  }
  epode__log(c->cfg, EPODE_LOG_INFO, "net", "following the redirect to %s", url);
  epode__free(c->mem, url);
  if (e) {
    fail(c, e, "cannot follow the redirect");
    return;
  }
  go_wait(c);
  c->avoid_set = 0;
  start_attempt(c);
}

/* ------------------------------------------------------------------ state machine */

static void advance(epode_conn *c) {
  for (;;) {
    /* A close asked for before the stream exists stops here (end_call). */
    if (c->close_requested && !c->close_started) return;
    if (c->phase == PH_DISCOVERING && c->disc_finished) {
      const char *url = NULL, *detail = NULL;
      epode_err e = epode__discover_result(c->disc, &url, &detail);
      if (!e && url) e = epode_config_set_url(c->cfg, url);
      if (e) {
        fail(c, e, "no %s endpoint for %s: %s",
             c->cfg->transport == EPODE_TRANSPORT_BOSH ? "BOSH" : "WebSocket",
             epode_jid_domain(c->jid), detail ? detail : epode_strerror(e));
        return;
      }
      epode__log(c->cfg, EPODE_LOG_INFO, "net", "discovered %s (XEP-0156)", url);
      epode__discover_free(c->disc);
      c->disc = NULL;
      c->disc_timer_at = -1;
      c->phase = PH_IDLE;
      if ((e = begin_connect(c))) {
        fail(c, e, "%s", detail_str(c)[0] ? detail_str(c) : epode_strerror(e));
        return;
      }
      continue;
    }
    if (c->phase == PH_RESOLVING && epode__dns_done(c->dns)) {
      const epode__addr *addrs;
      size_t n;
      const char *detail;
      epode_err e = epode__dns_result(c->dns, &addrs, &n, &detail);
      if (e) {
        fail(c, e == EPODE_ERR_NOMEM ? e : EPODE_ERR_DNS, "%s", detail);
        return;
      }
      e = epode__connector_new(&c->k, c->cfg, addrs, n, c->cfg->timeouts[EPODE_TIMEOUT_CONNECT]);
      if (!e && c->avoid_set) epode__connector_avoid_first(c->k, &c->avoid);
      if (e) {
        fail(c, e, "cannot set up the connection attempts");
        return;
      }
      epode__connector_set_close_cb(c->k, connector_close_cb, c);
      epode__dns_free(c->dns);
      c->dns = NULL;
      c->phase = PH_CONNECTING;
      emit_state(c, EPODE_STATE_CONNECTING);
      if (c->phase != PH_CONNECTING) return;
      epode__connector_start(c->k, epode_now_ms());
      continue;
    }
    if (c->phase == PH_CONNECTING && epode__connector_done(c->k)) {
      int fd;
      size_t which;
      const char *detail;
      epode_err e = epode__connector_result(c->k, &fd, &which, &detail);
      if (e) {
        fail(c, EPODE_ERR_CONNECT, "could not connect to %s: %s", target_name(c), detail);
        return;
      }
      const epode__addr *a = epode__connector_addr(c->k, which);
      char as[80];
      epode__addr_str(a, as, sizeof as);
      char peer[EPODE__MAX_HOST + 96];
      snprintf(peer, sizeof peer, "%s (%s)", a->host, as);
      set_peer(c, peer);
      c->direct_tls = a->direct_tls;
      epode__addr_key_of(a, &c->cur);
      c->cur_set = 1;
      c->fd = fd;
      epode__connector_free(c->k); /* fd is ours now */
      c->k = NULL;
      epode__log(c->cfg, EPODE_LOG_INFO, "net", "connected to %s", c->peer);
      if (c->direct_tls)
        start_tls(c, 0);
      else
        transport_ready(c);
      continue;
    }
    return;
  }
}

/* ------------------------------------------------------------------ API */

/* The app sent something from outside our callbacks: write it now rather
 * than at the next wakeup. Inside our processing it goes out at the end. */
static void on_session_output(epode_session *s, void *ud) {
  epode_conn *c = ud;
  (void)s;
  if (c->depth || c->flush_pending) return; /* goes out when our processing ends */
  /* Not at once: an app sending many stanzas in one go would make one TCP
   * segment (and one TLS record) each. A 0 ms timer sends them together
   * at the host's next loop iteration. */
  c->flush_pending = 1;
  update_io(c);
}

epode_err epode_conn_new(epode_conn **out, const epode_config *cfg) {
  if (!out || !cfg) return EPODE_ERR_INVAL;
  *out = NULL;
  if (!cfg->jid) return EPODE_ERR_INVAL;
  epode_conn *c = epode__calloc(&cfg->mem, sizeof *c);
  if (!c) return EPODE_ERR_NOMEM;
  c->fd = -1;
  c->timer_at = -1;
  c->disc_timer_at = c->bosh_timer_at = -1;
  c->last_state = EPODE_STATE_IDLE;
  c->fail.detail = "no failure";
  c->peer = no_peer;
  /* One copy of the configuration and of the parsed JID, the session's:
   * the connection changes only what the session never reads (URL, server,
   * TLS mode). */
  epode_err e = epode_session_new(&c->s, cfg);
  if (e) {
    epode__free(&cfg->mem, c);
    return e;
  }
  c->cfg = epode__session_cfg(c->s);
  c->jid = epode__session_account(c->s);
  c->mem = &c->cfg->mem;
  epode__buf_init(&c->out, c->mem, OUT_MAX);
  epode__buf_init(&c->wsout, c->mem, OUT_MAX);
  epode_session_set_event_cb(c->s, on_session_event, c);
  epode_session_set_output_cb(c->s, on_session_output, c);
  *out = c;
  return EPODE_OK;
}

static void destroy(epode_conn *c) {
  shutdown_transport(c);
  for (size_t i = c->nw; i-- > 0;)
    set_watch(c, c->w[i].fd, 0);
  if (c->timer_on && c->timer_fn) c->timer_fn(-1, c->io_ud);
  epode__buf_free(&c->out);
  epode__buf_free(&c->wsout);
  epode__ws_free(c->ws);
  epode__free(c->mem, c->tls_name);
  epode__free(c->mem, c->redirect_to);
  epode__free(c->mem, c->other_host);
  epode__free(c->mem, c->fail_detail);
  epode__free(c->mem, c->w);
  epode__free(c->mem, c->dns_servers);
  set_peer(c, NULL);
  epode_mem mem = *c->mem; /* the session owns the config */
  epode_session_free(c->s);
  epode__free(&mem, c);
}

void epode_conn_free(epode_conn *c) {
  if (!c) return;
  if (c->depth) {
    /* From inside one of our callbacks: the stack above still uses `c`. */
    c->free_requested = 1;
    return;
  }
  destroy(c);
}

/* Every public entry point that may run callbacks returns through here. */
static epode_err leave(epode_conn *c, epode_err r) {
  if (c->free_requested) destroy(c);
  return r;
}

epode_session *epode_conn_session(epode_conn *c) { return c ? c->s : NULL; }

void *epode__conn_io_ud(const epode_conn *c, epode_io_fn *fn) {
  if (fn) *fn = c->io_fn;
  return c->io_ud;
}

void epode_conn_set_event_cb(epode_conn *c, epode_event_fn fn, void *ud) {
  if (!c) return;
  c->ev_fn = fn;
  c->ev_ud = ud;
}

void epode_conn_set_io(epode_conn *c, epode_io_fn io, epode_timer_fn timer, void *ud) {
  if (!c) return;
  c->io_fn = io;
  c->timer_fn = timer;
  c->io_ud = ud;
  /* Tell the new host what we already watch and when we want to wake. */
  if (io)
    for (size_t i = 0; i < c->nw; i++)
      if (c->w[i].ev) io(c->w[i].fd, c->w[i].ev, ud);
  if (timer && c->timer_on) {
    int64_t now = (int64_t)epode_now_ms();
    timer(c->timer_at > now ? c->timer_at - now : 0, ud);
  }
}

epode_err epode__conn_set_dns_servers(epode_conn *c, const char *csv) {
  if (!c || !csv) return EPODE_ERR_INVAL;
  char *d = epode__strdup(c->mem, csv);
  if (!d) return EPODE_ERR_NOMEM;
  epode__free(c->mem, c->dns_servers);
  c->dns_servers = d;
  return EPODE_OK;
}

/* Sets the connection up for a ws:// or wss:// URL: where to connect, what
 * TLS verifies, the filter and the session's framing. */
static epode_err setup_websocket(epode_conn *c) {
  epode__url u;
  const char *why;
  if (epode__url_parse(c->cfg->url, &u, &why) != EPODE_OK) {
    char *d = detail(c);
    snprintf(d, detail_size(c), "bad WebSocket URL %s: %s", c->cfg->url, why);
    return EPODE_ERR_INVAL;
  }
  char host_header[300];
  epode__url_host_header(&u, host_header, sizeof host_header);
  epode_err e = epode_config_set_server(c->cfg, u.host, u.port);
  if (!e) e = epode_config_set_tls_mode(c->cfg, u.tls ? EPODE_TLS_DIRECT : EPODE_TLS_STARTTLS);
  if (!e && !(c->tls_name = epode__strdup(c->mem, u.host))) e = EPODE_ERR_NOMEM;
  if (!e)
    e = epode__ws_new(&c->ws, c->mem, host_header, u.path, c->cfg->random_fn, c->cfg->random_ud);
  if (!e)
    epode__ws_set_max_message(c->ws, (size_t)c->cfg->limits[EPODE_LIMIT_STANZA_BYTES]);
  if (!e) e = epode_session_set_framing(c->s, EPODE_FRAMING_WEBSOCKET);
  if (e) {
    char *d = detail(c);
    snprintf(d, detail_size(c), "cannot set up the WebSocket transport");
  }
  return e;
}

/* Checks what can be checked before the network (CA file, client
 * certificate), then starts the transport: DNS for TCP and WebSocket, the
 * BOSH driver, or XEP-0156 discovery first when there is no URL yet. On
 * error, detail_str(c) says why and nothing was started. */
static epode_err begin_connect(epode_conn *c) {
  epode_err e;
  if (c->fail_detail) c->fail_detail[0] = '\0';
  c->fail_small[0] = '\0';
  if (c->cfg->transport != EPODE_TRANSPORT_TCP && !c->cfg->url) {
    e = epode__discover_new(&c->disc, c->cfg, c->cfg->transport, disc_io, disc_timer, disc_done,
                            c);
    if (!e && c->dns_servers) e = epode__discover_set_dns_servers(c->disc, c->dns_servers);
    if (!e) e = epode__discover_start(c->disc, epode_jid_domain(c->jid));
    if (e) {
      epode__discover_free(c->disc);
      c->disc = NULL;
      char *d = detail(c);
      snprintf(d, detail_size(c), "cannot start XEP-0156 discovery for %s",
               epode_jid_domain(c->jid));
      return e;
    }
    c->phase = PH_DISCOVERING;
    epode__log(c->cfg, EPODE_LOG_INFO, "net", "looking up the %s endpoint of %s (XEP-0156)",
               c->cfg->transport == EPODE_TRANSPORT_BOSH ? "BOSH" : "WebSocket",
               epode_jid_domain(c->jid));
    return EPODE_OK;
  }
  if (c->cfg->transport == EPODE_TRANSPORT_WEBSOCKET && !c->ws && (e = setup_websocket(c)))
    return e;
  if ((c->cfg->cafile && !(c->cfg->flags & EPODE_CFG_TLS_NO_VERIFY)) ||
      epode__config_has_client_cert(c->cfg)) {
    /* Find a bad CA file or client certificate now rather than after DNS
     * and TCP. */
    epode__tls *probe = NULL;
    char why[FAIL_DETAIL_SIZE];
    why[0] = '\0';
    e = epode__tls_new(&probe, c->cfg, c->tls_name ? c->tls_name : epode_jid_domain(c->jid), 0,
                       why, sizeof why);
    epode__tls_free(probe);
    if (e) {
      char *d = detail(c);
      snprintf(d, detail_size(c), "%s", why);
      return e == EPODE_ERR_NOMEM ? e : EPODE_ERR_TLS;
    }
  }
  if (c->cfg->transport == EPODE_TRANSPORT_BOSH) return start_bosh(c);
  /* A restored session may carry another framing: a TCP stream is a stream. */
  if (!c->ws && (e = epode_session_set_framing(c->s, EPODE_FRAMING_STREAM))) return e;
  if ((e = epode__dns_new(&c->dns, c->cfg, dns_sock_cb, c))) return e;
  if (c->dns_servers && (e = epode__dns_set_servers(c->dns, c->dns_servers))) {
    epode__dns_free(c->dns);
    c->dns = NULL;
    return e;
  }
  /* A see-other-host target serves this attempt only. */
  const char *host = c->other_host ? c->other_host : c->cfg->server_host;
  uint16_t port = c->other_host ? c->other_port : c->cfg->server_port;
  e = epode__dns_start(c->dns, epode_jid_domain(c->jid), c->cfg->tls_mode, host, port,
                       epode_now_ms());
  epode__free(c->mem, c->other_host);
  c->other_host = NULL;
  if (e) {
    epode__dns_free(c->dns);
    c->dns = NULL;
    return e;
  }
  c->phase = PH_RESOLVING;
  return EPODE_OK;
}

epode_err epode_conn_connect(epode_conn *c) {
  if (!c) return EPODE_ERR_INVAL;
  if (c->phase != PH_IDLE) return EPODE_ERR_STATE;
  epode_err e = begin_connect(c);
  if (e) {
    /* Nothing started: the failure is the return value (no events). */
    if (!detail_str(c)[0]) {
      char *d = detail(c);
      snprintf(d, detail_size(c), "%s", epode_strerror(e));
    }
    c->fail_set = 1;
    c->fail.err = e;
    c->fail.detail = detail_str(c);
    return e;
  }
  /* The rest (even a lookup that finished at once) happens from the host's
   * loop, so no terminal event fires inside this call. */
  c->kick = 1;
  if (c->phase == PH_RESOLVING || c->phase == PH_DISCOVERING) emit_state(c, EPODE_STATE_RESOLVING);
  end_call(c);
  return leave(c, EPODE_OK);
}

static epode_err result(const epode_conn *c) {
  return c->phase == PH_DONE ? epode_conn_failure(c)->err : EPODE_OK;
}

epode_err epode_conn_process_fd(epode_conn *c, int fd, unsigned events) {
  if (!c || fd < 0) return EPODE_ERR_INVAL;
  if (c->depth) return EPODE_ERR_STATE;
  uint64_t now = epode_now_ms();
  switch (c->phase) {
  case PH_DISCOVERING: epode__discover_process_fd(c->disc, fd, events); break;
  case PH_BOSH:
    c->depth++;
    (void)epode__bosh_process_fd(c->bosh, fd, events);
    c->depth--;
    break;
  case PH_RESOLVING: epode__dns_process_fd(c->dns, fd, events, now); break;
  case PH_CONNECTING:
    if (fd == epode__connector_fd(c->k)) epode__connector_process(c->k, now);
    break;
  case PH_TLS:
  case PH_STREAM:
    if (fd != c->fd) break;
    if (events & EPODE_IO_WRITE) flush(c);
    if ((events & EPODE_IO_READ) && c->fd >= 0) read_input(c);
    break;
  case PH_DRAINING:
    if (fd == c->fd) drain_step(c);
    break;
  default: break;
  }
  advance(c);
  end_call(c);
  return leave(c, result(c));
}

epode_err epode_conn_process_timeout(epode_conn *c) {
  if (!c) return EPODE_ERR_INVAL;
  if (c->depth) return EPODE_ERR_STATE;
  uint64_t now = epode_now_ms();
  c->timer_on = 0; /* the request was used */
  c->kick = 0;
  if (c->flush_pending) {
    c->flush_pending = 0;
    if (c->phase == PH_STREAM || c->phase == PH_BOSH) after_session(c);
  }
  switch (c->phase) {
  case PH_DISCOVERING:
    if (c->disc_timer_at >= 0 && (int64_t)now >= c->disc_timer_at) {
      c->disc_timer_at = -1;
      epode__discover_process_timeout(c->disc);
    }
    break;
  case PH_BOSH: {
    if (c->bosh_timer_at >= 0 && (int64_t)now >= c->bosh_timer_at) {
      c->bosh_timer_at = -1;
      c->depth++;
      (void)epode__bosh_process_timeout(c->bosh);
      c->depth--;
    }
    if (c->phase != PH_BOSH) break;
    int64_t d = epode_session_next_deadline(c->s);
    if (d >= 0 && (int64_t)now >= d) {
      c->depth++;
      (void)epode_session_tick(c->s, now);
      c->depth--;
      after_session(c);
    }
    if (c->phase == PH_BOSH && c->close_deadline && now >= c->close_deadline) {
      c->depth++;
      (void)epode_session_eof(c->s, now);
      c->depth--;
      finish(c);
    }
    break;
  }
  case PH_RESOLVING: epode__dns_process_timeout(c->dns, now); break;
  case PH_CONNECTING: epode__connector_process_timeout(c->k, now); break;
  case PH_TLS:
    if (c->tls_deadline && now >= c->tls_deadline)
      fail(c, EPODE_ERR_TLS, "the TLS handshake with %s did not finish within %u ms", c->peer,
           (unsigned)c->cfg->timeouts[EPODE_TIMEOUT_TLS]);
    else if (c->more_input)
      read_input(c);
    break;
  case PH_STREAM: {
    if (c->more_input) read_input(c);
    if (c->phase != PH_STREAM) break;
    int64_t d = epode_session_next_deadline(c->s);
    if (d >= 0 && (int64_t)now >= d) {
      c->depth++;
      (void)epode_session_tick(c->s, now);
      c->depth--;
      after_session(c);
    }
    if (c->phase == PH_STREAM && c->close_deadline && now >= c->close_deadline) {
      /* The session's own close timeout should have fired; make sure. */
      c->depth++;
      (void)epode_session_eof(c->s, now);
      c->depth--;
      after_session(c);
      if (c->phase == PH_STREAM) finish(c);
    }
    break;
  }
  case PH_WAIT: {
    int64_t d = epode_session_next_deadline(c->s);
    if (d >= 0 && (int64_t)now >= d) {
      c->depth++;
      (void)epode_session_tick(c->s, now);
      c->depth--;
    }
    break;
  }
  case PH_DRAINING:
    if (now >= c->drain_deadline) {
      epode__log(c->cfg, EPODE_LOG_INFO, "net", "giving up delivering the last %zu bytes to %s",
                 pending_out(c), c->peer);
      finish(c);
    } else {
      drain_step(c);
    }
    break;
  default: break;
  }
  advance(c);
  end_call(c);
  return leave(c, result(c));
}

epode_err epode_conn_flush(epode_conn *c) {
  if (!c) return EPODE_ERR_INVAL;
  if (c->depth) return EPODE_OK; /* flushed when the current processing ends */
  c->flush_pending = 0;
  if (c->phase != PH_STREAM && c->phase != PH_BOSH) return EPODE_OK;
  after_session(c);
  end_call(c);
  return leave(c, result(c));
}

epode_err epode_conn_close(epode_conn *c) {
  if (!c) return EPODE_ERR_INVAL;
  if (c->phase == PH_IDLE || c->phase == PH_DONE) return EPODE_ERR_STATE;
  if (c->close_requested) return EPODE_OK;
  c->close_requested = 1;
  if (c->depth) return EPODE_OK; /* done when the current processing ends */
  if (c->phase == PH_STREAM || c->phase == PH_BOSH) {
    process_close(c);
    end_call(c);
  } else {
    c->kick = 1; /* finish from the loop, not inside this call */
    update_io(c);
  }
  return leave(c, EPODE_OK);
}

epode_state epode_conn_state(const epode_conn *c) {
  if (!c) return EPODE_STATE_IDLE;
  switch (c->phase) {
  case PH_IDLE: return EPODE_STATE_IDLE;
  case PH_DISCOVERING:
  case PH_RESOLVING: return EPODE_STATE_RESOLVING;
  case PH_BOSH: return epode_session_state(c->s);
  case PH_CONNECTING: return EPODE_STATE_CONNECTING;
  case PH_TLS: return EPODE_STATE_TLS_HANDSHAKE;
  case PH_STREAM: return epode_session_state(c->s);
  case PH_DRAINING: return EPODE_STATE_CLOSING;
  case PH_WAIT: return EPODE_STATE_DISCONNECTED;
  case PH_DONE: return EPODE_STATE_CLOSED;
  }
  return EPODE_STATE_CLOSED;
}

const epode_failure *epode_conn_failure(const epode_conn *c) {
  return c->fail_set ? &c->fail : epode_session_failure(c->s);
}
