/* Fuzz target: the whole sans-I/O session driven by a hostile server, the
 * nghttp2 way: everything the server says is the fuzz input; the host side
 * (TLS, time, the application) is simulated deterministically.
 *
 * Input layout:
 *   byte 0  framing (bits 0-1: STREAM, WEBSOCKET, BOSH), start over direct
 *           TLS (bit 2), allow plaintext (bit 3), traffic logging (bit 4),
 *           channel-binding data on TLS (bit 5), tiny limits (bit 6),
 *           send a stanza before READY (bit 7)
 *   byte 1  chunk size for epode_session_recv (fz_chunk)
 *   byte 2  SASL allow-list: all / ANONYMOUS / EXTERNAL / DIGEST-MD5 /
 *           OAUTHBEARER / SCRAM-SHA-1 / SCRAM-SHA-512-PLUS / PLAIN
 *   rest    the server's bytes, in turns separated by "\x00\xff"; between
 *           turns the host drains the output, answers STARTTLS, ticks the
 *           clock forward and, once READY, sends a message and an iq.
 * BOSH: each turn is parsed as fragments and every top-level element goes to
 * epode_session_recv_element (what the BOSH transport does with <body/>
 * children). SCRAM iteration limits are lowered so PBKDF2 stays cheap. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "epode/epode.h"
#include "fuzz_common.h"
#include "xml/parser.h"

typedef struct {
  epode_session *s;
  int starttls;
  int ready;
  int closed;
  int iq_replies;
  uint64_t now;
} host;

static void on_event(const epode_event *ev, void *ud) {
  host *h = ud;
  switch (ev->type) {
  case EPODE_EV_STARTTLS: h->starttls = 1; break;
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

static void on_iq(epode_session *s, const epode_stanza *reply, epode_err err, void *ud) {
  host *h = ud;
  (void)s;
  if (!reply && err == EPODE_OK) abort();
  h->iq_replies++;
}

static void drain(host *h) {
  size_t len;
  /* Alternate between message-wise and bulk consumption. */
  while (epode_session_peek_message(h->s, &len) && len && (h->now & 1)) {
    epode_session_consume_output(h->s, len);
    h->now++;
  }
  const void *p = epode_session_peek_output(h->s, &len);
  if (p && len) epode_session_consume_output(h->s, len);
  if (epode_session_output_len(h->s) != 0) abort();
}

typedef struct {
  host *h;
} bosh_ctx;

static epode_err bosh_element(void *ud, epode_stanza *st) {
  bosh_ctx *b = ud;
  epode_session_recv_element(b->h->s, st, b->h->now);
  epode_stanza_free(st);
  return EPODE_OK;
}

static void app_traffic(host *h) {
  epode_stanza *m = NULL;
  if (epode_message_new(&m, NULL, "chat", "bob@example.org", "hello") == EPODE_OK) {
    epode_session_send(h->s, m);
    epode_stanza_free(m);
  }
  epode_stanza *iq = NULL, *q = NULL;
  if (epode_iq_new(&iq, NULL, "get", NULL) == EPODE_OK) {
    epode_stanza_set_attr(iq, "to", "example.org");
    if (epode_stanza_add_child_new(&q, iq, "ping", "urn:xmpp:ping") == EPODE_OK)
      epode_session_send_iq(h->s, iq, 5000, on_iq, h);
    epode_stanza_free(iq);
  }
}

static const char *const allow_lists[8] = {NULL,
                                           "ANONYMOUS",
                                           "EXTERNAL",
                                           "DIGEST-MD5",
                                           "OAUTHBEARER",
                                           "SCRAM-SHA-1",
                                           "SCRAM-SHA-512-PLUS,SCRAM-SHA-256-PLUS,SCRAM-SHA-1-PLUS",
                                           "PLAIN"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  uint8_t flags = fz_byte(&in), chunk = fz_byte(&in), mech = fz_byte(&in);
  unsigned rng = 1;
  host h;
  memset(&h, 0, sizeof h);
  h.now = 1000;

  epode_config *cfg = NULL;
  if (epode_config_new(&cfg, NULL) != EPODE_OK) return 0;
  epode_config_set_jid(cfg, "alice@example.org/res");
  epode_config_set_password(cfg, "pencil");
  epode_config_set_oauth_token(cfg, "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==");
  epode_config_set_client_cert(cfg, "/nonexistent/cert.pem", NULL);
  epode_config_set_random(cfg, fz_random, &rng);
  epode_config_set_limit(cfg, EPODE_LIMIT_SCRAM_ITER_MIN, 1);
  epode_config_set_limit(cfg, EPODE_LIMIT_SCRAM_ITER_MAX, 64);
  if (allow_lists[mech & 7]) epode_config_set_mechanisms(cfg, allow_lists[mech & 7]);
  if (mech & 8) epode_config_set_sasl_fallback(cfg, 1);
  if (flags & 8) epode_config_set_flags(cfg, EPODE_CFG_ALLOW_PLAINTEXT);
  if (flags & 16) epode_config_set_log(cfg, on_log, NULL, EPODE_LOG_TRAFFIC);
  if (flags & 64) {
    epode_config_set_limit(cfg, EPODE_LIMIT_STANZA_BYTES, 300);
    epode_config_set_limit(cfg, EPODE_LIMIT_DEPTH, 3);
    epode_config_set_limit(cfg, EPODE_LIMIT_ATTRS, 3);
    epode_config_set_limit(cfg, EPODE_LIMIT_SEND_QUEUE, 1);
    epode_config_set_limit(cfg, EPODE_LIMIT_OUTPUT_BYTES, 2048);
    epode_config_set_limit(cfg, EPODE_LIMIT_SASL_ROUNDS, 2);
  }

  if (epode_session_new(&h.s, cfg) != EPODE_OK) {
    epode_config_free(cfg);
    return 0;
  }
  epode_config_free(cfg); /* the session keeps its own copy */
  epode_session_set_event_cb(h.s, on_event, &h);
  epode_session_add_handler(h.s, "message", NULL, NULL, on_message, &h);
  epode_framing framing = (epode_framing)((flags & 3) % 3);
  epode_session_set_framing(h.s, framing);

  unsigned char unique[12], exporter[32], endpoint[32];
  memset(unique, 0xA5, sizeof unique);
  memset(exporter, 0x5A, sizeof exporter);
  memset(endpoint, 0x3C, sizeof endpoint);
  epode_tls_info tls = {0x0303, NULL, 0, NULL, 0, NULL, 0};
  if (flags & 32) {
    tls = (epode_tls_info){0x0303,          unique,   sizeof unique,  exporter,
                           sizeof exporter, endpoint, sizeof endpoint};
  }
  epode_session_start(h.s, h.now, (flags & 4) ? &tls : NULL);
  if (flags & 128) app_traffic(&h);
  drain(&h);

  epode__xml_parser *bp = NULL;
  bosh_ctx bc = {&h};
  if (framing == EPODE_FRAMING_BOSH) {
    epode__xml_callbacks cb = {NULL, bosh_element, NULL};
    epode__xml_parser_new(&bp, NULL, NULL, EPODE__XML_FRAGMENTS, &cb, &bc);
  }

  const uint8_t *piece;
  size_t plen;
  int turn = 0;
  while (!h.closed && fz_next_piece(&in, &piece, &plen)) {
    if (framing == EPODE_FRAMING_BOSH) {
      if (bp) {
        /* One <body/>'s children per turn; a broken turn ends the transport's
         * parse of that response only. */
        if (epode__xml_parser_feed(bp, (const char *)piece, plen) != EPODE_OK ||
            epode__xml_parser_pending(bp))
          epode__xml_parser_reset(bp);
      }
    } else {
      size_t off = 0;
      while (off < plen && !h.closed) {
        size_t n = fz_chunk(chunk, plen - off);
        epode_session_recv(h.s, piece + off, n, h.now);
        off += n;
        h.now += 3;
      }
    }
    drain(&h);
    if (h.starttls) {
      h.starttls = 0;
      epode_session_tls_done(h.s, &tls, h.now);
      drain(&h);
    }
    if (h.ready == 1) {
      h.ready = 2;
      app_traffic(&h);
      drain(&h);
    }
    h.now += 1000u << (turn & 7);
    epode_session_tick(h.s, h.now);
    (void)epode_session_next_deadline(h.s);
    (void)epode_session_state(h.s);
    drain(&h);
    turn++;
  }
  if (!h.closed) {
    if (turn & 1) {
      epode_session_close(h.s);
      drain(&h);
      epode_session_tick(h.s, h.now + 10000000);
    } else {
      epode_session_eof(h.s, h.now);
    }
  }
  const epode_failure *f = epode_session_failure(h.s);
  if (!f || !f->detail) abort();
  epode__xml_parser_free(bp);
  epode_session_free(h.s);
  return 0;
}
