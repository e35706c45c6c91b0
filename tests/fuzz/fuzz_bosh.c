/* Fuzz target: BOSH response bodies (src/net/bosh.c) as a hostile
 * connection manager sends them, read by epode__bosh_parse_response() (the
 * transport's own checks: one XML document, root {httpbind}body, sid,
 * type='terminate' and its condition, the size cap), every child handed to
 * a real session in EPODE_FRAMING_BOSH, as the transport does.
 *
 * Input layout:
 *   byte 0  bit 0: every response is checked against sid 'sid-1' (else the
 *           first is the session creation response: no expected sid);
 *           bit 1: small size cap (512 bytes, else the transport's);
 *           bit 2: the session starts over TLS (https://);
 *           bit 3: allow plaintext; bit 4: traffic logging;
 *           bit 5: tiny limits (stanza bytes, depth, attributes);
 *           bit 6: send a stanza before READY;
 *           bit 7: the child callback stops the walk after the first child
 *   rest    one HTTP response body per turn, turns separated by "\x00\xff".
 * Turns stop where the transport would stop: at an error or a terminate
 * (type='error' is sent again by the transport: the next turn goes on). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "epode/epode.h"
#include "fuzz_common.h"
#include "net/bosh.h"

typedef struct {
  epode_session *s;
  uint64_t now;
  int ready;
  int closed;
  int stop_after_first;
  size_t calls;
} host;

static void on_event(const epode_event *ev, void *ud) {
  host *h = ud;
  switch (ev->type) {
  case EPODE_EV_READY:
    h->ready = 1;
    if (!ev->jid) abort();
    break;
  case EPODE_EV_ERROR:
    if (!ev->failure || ev->failure->err == EPODE_OK || !ev->failure->detail) abort();
    break;
  case EPODE_EV_CLOSED:
    if (h->closed) abort(); /* exactly once */
    h->closed = 1;
    break;
  default: break;
  }
}

static void on_log(void *ud, epode_log_level level, const char *area, const char *msg) {
  (void)ud;
  (void)level;
  if (!area || !msg) abort();
  (void)strlen(msg);
}

static int on_message(epode_session *s, const epode_stanza *st, void *ud) {
  (void)s;
  (void)ud;
  (void)epode_stanza_child_text(st, "body");
  return EPODE_HANDLER_KEEP;
}

static void drain(host *h) {
  size_t len;
  while (epode_session_peek_message(h->s, &len) && len)
    epode_session_consume_output(h->s, len);
  if (epode_session_output_len(h->s) != 0) abort();
}

static void app_traffic(host *h) {
  epode_stanza *m = NULL;
  if (epode_message_new(&m, NULL, "chat", "bob@localhost", "hello") == EPODE_OK) {
    epode_session_send(h->s, m);
    epode_stanza_free(m);
  }
}

static epode_err on_child(const epode_stanza *child, void *ud) {
  host *h = ud;
  if (!child || epode_stanza_is_text(child)) abort();
  h->calls++;
  epode_err e = epode_session_recv_element(h->s, child, h->now);
  h->now += 7;
  if (h->stop_after_first) return EPODE_ERR_CLOSED;
  return e;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  uint8_t flags = fz_byte(&in);
  unsigned rng = 1;
  host h;
  memset(&h, 0, sizeof h);
  h.now = 1000;
  h.stop_after_first = (flags & 128) != 0;

  epode_config *cfg = NULL;
  if (epode_config_new(&cfg, NULL) != EPODE_OK) return 0;
  epode_config_set_jid(cfg, "alice@localhost/res");
  epode_config_set_password(cfg, "secret");
  epode_config_set_random(cfg, fz_random, &rng);
  epode_config_set_limit(cfg, EPODE_LIMIT_SCRAM_ITER_MIN, 1);
  epode_config_set_limit(cfg, EPODE_LIMIT_SCRAM_ITER_MAX, 64);
  if (flags & 8) epode_config_set_flags(cfg, EPODE_CFG_ALLOW_PLAINTEXT);
  if (flags & 16) epode_config_set_log(cfg, on_log, NULL, EPODE_LOG_TRAFFIC);
  if (flags & 32) {
    epode_config_set_limit(cfg, EPODE_LIMIT_STANZA_BYTES, 300);
    epode_config_set_limit(cfg, EPODE_LIMIT_DEPTH, 3);
    epode_config_set_limit(cfg, EPODE_LIMIT_ATTRS, 3);
  }
  size_t max = (flags & 2) ? 512 : epode__bosh_response_cap(cfg);

  if (epode_session_new(&h.s, cfg) != EPODE_OK) {
    epode_config_free(cfg);
    return 0;
  }
  epode_session_set_event_cb(h.s, on_event, &h);
  epode_session_add_handler(h.s, "message", NULL, NULL, on_message, &h);
  if (epode_session_set_framing(h.s, EPODE_FRAMING_BOSH) != EPODE_OK) abort();
  epode_tls_info tls = {0x0303, NULL, 0, NULL, 0, NULL, 0};
  epode_session_start(h.s, h.now, (flags & 4) ? &tls : NULL);
  if (flags & 64) app_traffic(&h);
  drain(&h);

  const char *sid = (flags & 1) ? "sid-1" : NULL;
  const uint8_t *piece;
  size_t plen;
  int turn = 0;
  while (!h.closed && fz_next_piece(&in, &piece, &plen)) {
    epode__bosh_response r;
    h.calls = 0;
    epode_err e =
        epode__bosh_parse_response(&r, cfg, sid, (const char *)piece, plen, max, on_child, &h);
    /* What the call promises. */
    size_t dl = strnlen(r.detail, sizeof r.detail);
    if (dl == sizeof r.detail) abort();
    if (r.children != h.calls || (h.stop_after_first && h.calls > 1)) abort();
    if (e != EPODE_OK) {
      if (h.calls || !dl) abort(); /* an error: the callback never fired */
      if (e != EPODE_ERR_PROTOCOL && e != EPODE_ERR_LIMIT && e != EPODE_ERR_NOMEM) abort();
      if (e == EPODE_ERR_LIMIT && plen <= max) abort();
      break; /* the transport fails here */
    }
    if (r.type == EPODE__BOSH_BODY_TERMINATE) {
      if (!dl) abort();
      if (r.terminate_err != (r.condition[0] ? EPODE_ERR_STREAM : EPODE_ERR_EOF)) abort();
      drain(&h);
      epode_session_eof(h.s, h.now); /* the transport ends the session */
      break;
    }
    if (r.type == EPODE__BOSH_BODY_ERROR) {
      if (r.children || !dl) abort();
    } else if (r.terminate_err != EPODE_OK || r.condition[0]) {
      abort();
    }
    sid = "sid-1"; /* the session exists from the first good response on */
    drain(&h);
    if (h.ready == 1) {
      h.ready = 2;
      app_traffic(&h);
      drain(&h);
    }
    h.now += 1000u << (turn & 7);
    epode_session_tick(h.s, h.now);
    drain(&h);
    turn++;
  }
  if (!h.closed) {
    epode_session_close(h.s);
    drain(&h);
    epode_session_tick(h.s, h.now + 10000000);
  }
  drain(&h);
  const epode_failure *f = epode_session_failure(h.s);
  if (!f || !f->detail) abort();
  epode_session_free(h.s);
  epode_config_free(cfg);
  return 0;
}
