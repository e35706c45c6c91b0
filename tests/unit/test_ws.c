/* The WebSocket client filter: the upgrade request and response, the frame
 * codec both ways, and what a hostile server can send. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "epode_limits.h"
#include "net/ws.h"
#include "util/buf.h"

#include "failmem.h"

/* ------------------------------------------------------------------ helpers */

/* Deterministic "random": 0, 1, 2, … */
typedef struct rnd_state {
  unsigned next;
  int fail;
} rnd_state;

static int test_rnd(void *ud, unsigned char *buf, size_t len) {
  rnd_state *r = ud;
  if (r->fail) return -1;
  for (size_t i = 0; i < len; i++)
    buf[i] = (unsigned char)(r->next++);
  return 0;
}

typedef struct msgs {
  char all[1 << 17]; /* messages joined by '|' */
  size_t len;
  int count;
  epode_err ret;
} msgs;

static epode_err on_msg(void *ud, const char *m, size_t n) {
  msgs *s = ud;
  s->count++;
  if (s->len + n + 1 < sizeof s->all) {
    memcpy(s->all + s->len, m, n);
    s->len += n;
    s->all[s->len++] = '|';
    s->all[s->len] = '\0';
  }
  return s->ret;
}

typedef struct fx {
  rnd_state rnd;
  epode__ws *w;
  epode__buf out;
  msgs m;
} fx;

static const char REQ_KEY[] = "AAECAwQFBgcICQoLDA0ODw=="; /* base64 of bytes 0..15 */

static fx *fx_new(void) {
  fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_int_equal(
      epode__ws_new(&f->w, NULL, "example.com:5280", "/xmpp-websocket", test_rnd, &f->rnd),
      EPODE_OK);
  epode__buf_init(&f->out, NULL, 0);
  return f;
}

static void fx_free(fx *f) {
  epode__ws_free(f->w);
  epode__buf_free(&f->out);
  free(f);
}

/* A 101 answer to the handshake sent with REQ_KEY. */
static void good_101(char *buf, size_t size) {
  char acc[29];
  assert_int_equal(epode__ws_accept_key(REQ_KEY, acc), EPODE_OK);
  snprintf(buf, size,
           "HTTP/1.1 101 Switching Protocols\r\n"
           "Upgrade: websocket\r\n"
           "Connection: Upgrade\r\n"
           "Sec-WebSocket-Accept: %s\r\n"
           "Sec-WebSocket-Protocol: xmpp\r\n"
           "\r\n",
           acc);
}

static epode_err feed(fx *f, const void *p, size_t n) {
  return epode__ws_feed(f->w, p, n, &f->out, on_msg, &f->m);
}

/* A filter past the handshake, with empty output. */
static fx *fx_open(void) {
  fx *f = fx_new();
  assert_int_equal(epode__ws_handshake(f->w, &f->out), EPODE_OK);
  char resp[512];
  good_101(resp, sizeof resp);
  assert_int_equal(feed(f, resp, strlen(resp)), EPODE_OK);
  assert_true(epode__ws_open(f->w));
  epode__buf_reset(&f->out);
  return f;
}

/* A server frame (unmasked unless mask is non-NULL). Returns its length. */
static size_t frame(unsigned char *b, int fin, unsigned op, const void *p, size_t n,
                    const unsigned char *mask) {
  size_t o = 0;
  b[o++] = (unsigned char)((fin ? 0x80 : 0) | op);
  unsigned char m = mask ? 0x80 : 0;
  if (n < 126) {
    b[o++] = (unsigned char)(m | n);
  } else if (n <= 0xFFFF) {
    b[o++] = m | 126;
    b[o++] = (unsigned char)(n >> 8);
    b[o++] = (unsigned char)n;
  } else {
    b[o++] = m | 127;
    for (int i = 7; i >= 0; i--)
      b[o++] = (unsigned char)((uint64_t)n >> (8 * i));
  }
  if (mask) {
    memcpy(b + o, mask, 4);
    o += 4;
  }
  for (size_t i = 0; i < n; i++)
    b[o + i] = (unsigned char)(((const unsigned char *)p)[i] ^ (mask ? mask[i & 3] : 0));
  return o + n;
}

/* Decodes one client frame from p (masked, as it must be): returns its
 * total length and puts the unmasked payload in `payload`. */
static size_t unframe(const unsigned char *p, size_t n, unsigned *op, int *fin,
                      unsigned char *payload, size_t *plen) {
  assert_true(n >= 2);
  *fin = p[0] >> 7;
  assert_int_equal(p[0] & 0x70, 0);
  *op = p[0] & 0x0F;
  assert_true(p[1] & 0x80); /* clients mask */
  size_t len = p[1] & 0x7F, o = 2;
  if (len == 126) {
    len = (size_t)p[2] << 8 | p[3];
    assert_true(len >= 126);
    o = 4;
  } else if (len == 127) {
    len = 0;
    for (int i = 0; i < 8; i++)
      len = len << 8 | p[2 + i];
    assert_true(len > 0xFFFF);
    o = 10;
  }
  const unsigned char *key = p + o;
  o += 4;
  assert_true(o + len <= n);
  for (size_t i = 0; i < len; i++)
    payload[i] = p[o + i] ^ key[i & 3];
  *plen = len;
  return o + len;
}

/* ------------------------------------------------------------------ handshake */

static void t_accept_key_rfc_example(void **st) {
  char acc[29];
  assert_int_equal(epode__ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", acc), EPODE_OK);
  assert_string_equal(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void t_request_shape(void **st) {
  fx *f = fx_new();
  assert_int_equal(epode__ws_handshake(f->w, &f->out), EPODE_OK);
  assert_string_equal(f->out.data, "GET /xmpp-websocket HTTP/1.1\r\n"
                                   "Host: example.com:5280\r\n"
                                   "Upgrade: websocket\r\n"
                                   "Connection: Upgrade\r\n"
                                   "Sec-WebSocket-Key: AAECAwQFBgcICQoLDA0ODw==\r\n"
                                   "Sec-WebSocket-Version: 13\r\n"
                                   "Sec-WebSocket-Protocol: xmpp\r\n"
                                   "\r\n");
  assert_int_equal(epode__ws_handshake(f->w, &f->out), EPODE_ERR_STATE);
  assert_false(epode__ws_open(f->w));
  fx_free(f);
}

static void t_new_rejects_bad_args(void **st) {
  epode__ws *w;
  rnd_state r = {0};
  assert_int_equal(epode__ws_new(&w, NULL, "a b", "/", test_rnd, &r), EPODE_ERR_INVAL);
  assert_int_equal(epode__ws_new(&w, NULL, "a", "x", test_rnd, &r), EPODE_ERR_INVAL);
  assert_int_equal(epode__ws_new(&w, NULL, "a", "/x\r\nEvil: 1", test_rnd, &r), EPODE_ERR_INVAL);
  assert_int_equal(epode__ws_new(&w, NULL, "", "/", test_rnd, &r), EPODE_ERR_INVAL);
  assert_int_equal(epode__ws_new(&w, NULL, "a", "/", NULL, &r), EPODE_ERR_INVAL);
  assert_null(w);
  /* Feeding before the handshake was sent. */
  assert_int_equal(epode__ws_new(&w, NULL, "a", "/", test_rnd, &r), EPODE_OK);
  epode__buf out;
  epode__buf_init(&out, NULL, 0);
  assert_int_equal(epode__ws_feed(w, "x", 1, &out, on_msg, NULL), EPODE_ERR_STATE);
  assert_int_equal(epode__ws_send(w, "x", 1, &out), EPODE_ERR_STATE);
  /* A failing random source. */
  r.fail = 1;
  assert_int_equal(epode__ws_handshake(w, &out), EPODE_ERR_SYS);
  assert_int_equal(out.len, 0);
  epode__ws_free(w);
  epode__buf_free(&out);
}

static void t_101_ok_with_frames_after(void **st) {
  fx *f = fx_new();
  assert_int_equal(epode__ws_handshake(f->w, &f->out), EPODE_OK);
  epode__buf_reset(&f->out);
  unsigned char buf[1024];
  good_101((char *)buf, sizeof buf);
  size_t n = strlen((char *)buf);
  n += frame(buf + n, 1, 1, "<open/>", 7, NULL);
  n += frame(buf + n, 1, 1, "<features/>", 11, NULL);
  assert_int_equal(feed(f, buf, n), EPODE_OK);
  assert_true(epode__ws_open(f->w));
  assert_int_equal(epode__ws_http_status(f->w), 101);
  assert_string_equal(f->m.all, "<open/>|<features/>|");
  assert_int_equal(f->out.len, 0);
  fx_free(f);
}

static void t_101_split_every_byte(void **st) {
  unsigned char buf[1024];
  good_101((char *)buf, sizeof buf);
  size_t n = strlen((char *)buf);
  n += frame(buf + n, 1, 1, "<open/>", 7, NULL);
  for (size_t cut = 0; cut <= n; cut++) {
    fx *f = fx_new();
    assert_int_equal(epode__ws_handshake(f->w, &f->out), EPODE_OK);
    assert_int_equal(feed(f, buf, cut), EPODE_OK);
    assert_int_equal(feed(f, buf + cut, n - cut), EPODE_OK);
    assert_true(epode__ws_open(f->w));
    assert_string_equal(f->m.all, "<open/>|");
    fx_free(f);
  }
  /* And one byte at a time. */
  fx *f = fx_new();
  assert_int_equal(epode__ws_handshake(f->w, &f->out), EPODE_OK);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(feed(f, buf + i, 1), EPODE_OK);
  assert_string_equal(f->m.all, "<open/>|");
  fx_free(f);
}

/* Feeds `resp` after the handshake; expects `err` and `msg` in errmsg. */
static void expect_resp(const char *resp, epode_err err, const char *msg) {
  fx *f = fx_new();
  assert_int_equal(epode__ws_handshake(f->w, &f->out), EPODE_OK);
  assert_int_equal(feed(f, resp, strlen(resp)), err);
  assert_false(epode__ws_open(f->w));
  if (!strstr(epode__ws_errmsg(f->w), msg)) fail_msg("errmsg \"%s\"", epode__ws_errmsg(f->w));
  /* Sticky. */
  assert_int_equal(feed(f, "x", 1), err);
  assert_int_equal(epode__ws_error(f->w), err);
  assert_int_equal(f->m.count, 0);
  fx_free(f);
}

static void t_status_errors(void **st) {
  expect_resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", EPODE_ERR_PROTOCOL, "HTTP 200 OK");
  expect_resp("HTTP/1.1 404 Not Found\r\n\r\n", EPODE_ERR_PROTOCOL, "HTTP 404 Not Found");
  expect_resp("HTTP/1.1 500 Internal Server Error\r\nX: y\r\n\r\n", EPODE_ERR_PROTOCOL,
              "HTTP 500 Internal Server Error");
  expect_resp("HTTP/1.1 404 \x01\x02\xff\r\n\r\n", EPODE_ERR_PROTOCOL, "HTTP 404 ???");
  expect_resp("HTTP/1.1 10 x\r\n\r\n", EPODE_ERR_PROTOCOL, "malformed HTTP status line");
  expect_resp("HTTP/1.1 101Switching\r\n\r\n", EPODE_ERR_PROTOCOL, "malformed HTTP status line");
  expect_resp("HTTP/1.0 101 Switching\r\n\r\n", EPODE_ERR_PROTOCOL, "malformed HTTP status line");
  expect_resp("<?xml version='1.0'?><stream:stream>", EPODE_ERR_PROTOCOL, "not an HTTP response");
  expect_resp("\x15\x03\x03\x00\x02\x02\x28", EPODE_ERR_PROTOCOL, "not an HTTP response");
}

static void t_header_errors(void **st) {
  char acc[29], buf[1024];
  assert_int_equal(epode__ws_accept_key(REQ_KEY, acc), EPODE_OK);
#define R101 "HTTP/1.1 101 Switching Protocols\r\n"
  snprintf(buf, sizeof buf,
           R101 "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                "Sec-WebSocket-Protocol: xmpp\r\n\r\n");
  expect_resp(buf, EPODE_ERR_PROTOCOL, "wrong Sec-WebSocket-Accept");
  snprintf(buf, sizeof buf,
           R101 "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
           acc);
  expect_resp(buf, EPODE_ERR_PROTOCOL, "server did not agree to the xmpp subprotocol");
  snprintf(buf, sizeof buf,
           R101 "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                "Sec-WebSocket-Protocol: chat\r\n\r\n",
           acc);
  expect_resp(buf, EPODE_ERR_PROTOCOL, "subprotocol \"chat\"");
  snprintf(buf, sizeof buf,
           R101 "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                "Sec-WebSocket-Protocol: xmpp\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n",
           acc);
  expect_resp(buf, EPODE_ERR_PROTOCOL, "duplicate Sec-WebSocket-Protocol");
  snprintf(buf, sizeof buf,
           R101 "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                "Sec-WebSocket-Protocol: xmpp\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"
                "\r\n",
           acc);
  expect_resp(buf, EPODE_ERR_PROTOCOL, "extension \"permessage-deflate\"");
  snprintf(buf, sizeof buf,
           R101 "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                "Sec-WebSocket-Protocol: xmpp\r\n\r\n",
           acc);
  expect_resp(buf, EPODE_ERR_PROTOCOL, "without Upgrade: websocket");
  snprintf(buf, sizeof buf,
           R101 "Upgrade: websocket\r\nConnection: keep-alive\r\nSec-WebSocket-Accept: %s\r\n"
                "Sec-WebSocket-Protocol: xmpp\r\n\r\n",
           acc);
  expect_resp(buf, EPODE_ERR_PROTOCOL, "without Connection: upgrade");
  snprintf(buf, sizeof buf,
           R101
           "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n");
  expect_resp(buf, EPODE_ERR_PROTOCOL, "without Sec-WebSocket-Accept");
  expect_resp(R101 " folded\r\n\r\n", EPODE_ERR_PROTOCOL, "folded");
  expect_resp(R101 "NoColon\r\n\r\n", EPODE_ERR_PROTOCOL, "malformed HTTP header line");
  expect_resp(R101 "Bad Name: x\r\n\r\n", EPODE_ERR_PROTOCOL, "malformed HTTP header line");
  expect_resp(R101 "X: a\rb\r\n\r\n", EPODE_ERR_PROTOCOL, "bare CR");
  expect_resp(R101 "X: a\x01z\r\n\r\n", EPODE_ERR_PROTOCOL, "control character");
  /* Case-insensitive names and token lists are fine. */
  snprintf(buf, sizeof buf,
           "HTTP/1.1 101 OK\r\nUPGRADE: WebSocket\r\nconnection: keep-alive, Upgrade\r\n"
           "sec-websocket-accept:   %s  \r\nsec-websocket-protocol:xmpp\r\n"
           "Sec-WebSocket-Extensions:\r\n\r\n",
           acc);
  fx *f = fx_new();
  assert_int_equal(epode__ws_handshake(f->w, &f->out), EPODE_OK);
  assert_int_equal(feed(f, buf, strlen(buf)), EPODE_OK);
  assert_true(epode__ws_open(f->w));
  fx_free(f);
#undef R101
}

static void t_header_too_big(void **st) {
  /* Endless headers in small pieces, then in one big piece. */
  fx *f = fx_new();
  assert_int_equal(epode__ws_handshake(f->w, &f->out), EPODE_OK);
  assert_int_equal(feed(f, "HTTP/1.1 101 OK\r\n", 17), EPODE_OK);
  epode_err e = EPODE_OK;
  size_t fed = 17;
  for (int i = 0; i < 10000 && !e; i++, fed += 20)
    e = feed(f, "X-Padding: aaaaaaa\r\n", 20);
  assert_int_equal(e, EPODE_ERR_LIMIT);
  assert_true(fed <= EPODE__WS_MAX_HEADER_BYTES + 20);
  assert_non_null(strstr(epode__ws_errmsg(f->w), "16384"));
  fx_free(f);

  f = fx_new();
  assert_int_equal(epode__ws_handshake(f->w, &f->out), EPODE_OK);
  size_t n = 1 << 20;
  char *big = malloc(n);
  memcpy(big, "HTTP/1.1 101 OK\r\n", 17);
  memset(big + 17, 'a', n - 17);
  assert_int_equal(feed(f, big, n), EPODE_ERR_LIMIT);
  free(big);
  fx_free(f);
}

/* ------------------------------------------------------------------ frames in */

static void t_text_and_fragments(void **st) {
  fx *f = fx_open();
  unsigned char b[4096];
  size_t n = 0;
  n += frame(b + n, 1, 1, "<a/>", 4, NULL);
  n += frame(b + n, 0, 1, "<b>", 3, NULL);
  n += frame(b + n, 0, 0, "hello", 5, NULL);
  n += frame(b + n, 1, 9, "hi", 2, NULL); /* a ping between fragments */
  n += frame(b + n, 1, 0, "</b>", 4, NULL);
  n += frame(b + n, 1, 1, "", 0, NULL); /* empty message */
  n += frame(b + n, 0, 1, "", 0, NULL); /* empty fragments */
  n += frame(b + n, 1, 0, "<c/>", 4, NULL);
  n += frame(b + n, 1, 10, "x", 1, NULL); /* unsolicited pong: ignored */
  assert_int_equal(feed(f, b, n), EPODE_OK);
  assert_string_equal(f->m.all, "<a/>|<b>hello</b>||<c/>|");
  /* The PONG answers the ping's payload. */
  unsigned op;
  int fin;
  unsigned char pl[200];
  size_t pn;
  size_t used = unframe((unsigned char *)f->out.data, f->out.len, &op, &fin, pl, &pn);
  assert_int_equal(used, f->out.len);
  assert_int_equal(op, 10);
  assert_int_equal(fin, 1);
  assert_int_equal(pn, 2);
  assert_memory_equal(pl, "hi", 2);
  fx_free(f);
}

static void t_messages_split_every_byte(void **st) {
  unsigned char b[4096];
  size_t n = 0;
  char big[300];
  memset(big, 'x', sizeof big);
  memcpy(big, "<m>", 3);
  memcpy(big + sizeof big - 4, "</m>", 4);
  n += frame(b + n, 1, 1, "<a>\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80</a>", 16, NULL);
  n += frame(b + n, 0, 1, "<b>\xc3", 4, NULL); /* a UTF-8 sequence across frames */
  n += frame(b + n, 1, 0, "\xa9</b>", 5, NULL);
  n += frame(b + n, 1, 1, big, sizeof big, NULL); /* 16-bit length */
  n += frame(b + n, 1, 9, "p", 1, NULL);
  n += frame(b + n, 1, 8,
             "\x03\xe8"
             "bye",
             5, NULL);
  char want[1024];
  snprintf(want, sizeof want, "<a>\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80</a>|<b>\xc3\xa9</b>|%.*s|",
           (int)sizeof big, big);
  for (size_t cut = 0; cut <= n; cut++) {
    fx *f = fx_open();
    assert_int_equal(feed(f, b, cut), EPODE_OK);
    assert_int_equal(feed(f, b + cut, n - cut), EPODE_OK);
    assert_string_equal(f->m.all, want);
    assert_true(epode__ws_peer_closed(f->w));
    assert_int_equal(epode__ws_close_code(f->w), 1000);
    assert_string_equal(epode__ws_close_reason(f->w), "bye");
    fx_free(f);
  }
}

static void t_ping_pong_exact(void **st) {
  fx *f = fx_open();
  f->rnd.next = 0xA0; /* mask A0 A1 A2 A3 */
  unsigned char b[256];
  size_t n = frame(b, 1, 9, "abcde", 5, NULL);
  assert_int_equal(feed(f, b, n), EPODE_OK);
  const unsigned char want[] = {0x8A,       0x85,       0xA0,       0xA1,       0xA2,      0xA3,
                                'a' ^ 0xA0, 'b' ^ 0xA1, 'c' ^ 0xA2, 'd' ^ 0xA3, 'e' ^ 0xA0};
  assert_int_equal(f->out.len, sizeof want);
  assert_memory_equal(f->out.data, want, sizeof want);
  /* An empty ping: an empty pong. */
  epode__buf_reset(&f->out);
  f->rnd.next = 0;
  n = frame(b, 1, 9, "", 0, NULL);
  assert_int_equal(feed(f, b, n), EPODE_OK);
  const unsigned char want0[] = {0x8A, 0x80, 0, 1, 2, 3};
  assert_int_equal(f->out.len, sizeof want0);
  assert_memory_equal(f->out.data, want0, sizeof want0);
  /* A 125-byte ping is fine. */
  epode__buf_reset(&f->out);
  char p125[125];
  memset(p125, 'z', sizeof p125);
  n = frame(b, 1, 9, p125, 125, NULL);
  assert_int_equal(feed(f, b, n), EPODE_OK);
  unsigned op;
  int fin;
  unsigned char pl[200];
  size_t pn;
  unframe((unsigned char *)f->out.data, f->out.len, &op, &fin, pl, &pn);
  assert_int_equal(pn, 125);
  assert_memory_equal(pl, p125, 125);
  fx_free(f);
}

static void t_close_from_server(void **st) {
  fx *f = fx_open();
  unsigned char b[256];
  size_t n = frame(b, 1, 8, "\x0f\xa1going away now", 16, NULL); /* 4001 */
  n += frame(b + n, 1, 1, "<ignored/>", 10, NULL);
  assert_int_equal(feed(f, b, n), EPODE_OK);
  assert_true(epode__ws_peer_closed(f->w));
  assert_int_equal(epode__ws_close_code(f->w), 4001);
  assert_string_equal(epode__ws_close_reason(f->w), "going away now");
  assert_int_equal(f->m.count, 0);
  /* Our answer echoes the code. */
  unsigned op;
  int fin;
  unsigned char pl[200];
  size_t pn;
  assert_int_equal(unframe((unsigned char *)f->out.data, f->out.len, &op, &fin, pl, &pn),
                   f->out.len);
  assert_int_equal(op, 8);
  assert_int_equal(pn, 2);
  assert_int_equal(pl[0] << 8 | pl[1], 4001);
  assert_true(epode__ws_close_sent(f->w));
  assert_int_equal(epode__ws_send(f->w, "x", 1, &f->out), EPODE_ERR_STATE);
  assert_int_equal(epode__ws_close(f->w, 1000, &f->out), EPODE_ERR_STATE);
  fx_free(f);

  /* An empty close: code 0, empty reply. */
  f = fx_open();
  n = frame(b, 1, 8, "", 0, NULL);
  assert_int_equal(feed(f, b, n), EPODE_OK);
  assert_true(epode__ws_peer_closed(f->w));
  assert_int_equal(epode__ws_close_code(f->w), 0);
  assert_string_equal(epode__ws_close_reason(f->w), "");
  assert_int_equal(f->out.len, 6);
  assert_int_equal((unsigned char)f->out.data[0], 0x88);
  fx_free(f);

  /* We closed first: their close is not answered. */
  f = fx_open();
  assert_int_equal(epode__ws_close(f->w, 1000, &f->out), EPODE_OK);
  size_t after = f->out.len;
  n = frame(b, 1, 9, "p", 1, NULL);            /* a ping after our close: no pong */
  n += frame(b + n, 1, 1, "<late/>", 7, NULL); /* data until theirs arrives */
  n += frame(b + n, 1, 8, "\x03\xe8", 2, NULL);
  assert_int_equal(feed(f, b, n), EPODE_OK);
  assert_int_equal(f->out.len, after);
  assert_string_equal(f->m.all, "<late/>|");
  assert_int_equal(epode__ws_close_code(f->w), 1000);
  fx_free(f);
}

static void t_close_bad(void **st) {
  struct {
    const char *p;
    size_t n;
    epode_err e;
    const char *msg;
  } cases[] = {
      {"\x03", 1, EPODE_ERR_PROTOCOL, "1-byte"},
      {"\x03\xed", 2, EPODE_ERR_PROTOCOL, "invalid code 1005"},
      {"\x00\x00", 2, EPODE_ERR_PROTOCOL, "invalid code 0"},
      {"\x13\x88", 2, EPODE_ERR_PROTOCOL, "invalid code 5000"},
      {"\x03\xe8\xff", 3, EPODE_ERR_XML_UTF8, "not valid UTF-8"},
      {"\x03\xe8\xc3", 3, EPODE_ERR_XML_UTF8, "not valid UTF-8"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fx *f = fx_open();
    unsigned char b[64];
    size_t n = frame(b, 1, 8, cases[i].p, cases[i].n, NULL);
    assert_int_equal(feed(f, b, n), cases[i].e);
    assert_non_null(strstr(epode__ws_errmsg(f->w), cases[i].msg));
    assert_false(epode__ws_peer_closed(f->w));
    fx_free(f);
  }
}

/* Raw bytes after the handshake; expects `err`, `msg`, and `code`. */
static void expect_frames(const void *p, size_t n, epode_err err, const char *msg, uint16_t code) {
  fx *f = fx_open();
  assert_int_equal(feed(f, p, n), err);
  if (!strstr(epode__ws_errmsg(f->w), msg)) fail_msg("errmsg \"%s\"", epode__ws_errmsg(f->w));
  assert_int_equal(epode__ws_fail_code(f->w), code);
  assert_int_equal(f->m.count, 0);
  /* The caller may still say goodbye with that code. */
  epode__buf_reset(&f->out);
  assert_int_equal(epode__ws_close(f->w, code, &f->out), EPODE_OK);
  assert_int_equal(f->out.len, 8);
  fx_free(f);
}

static void t_frame_errors(void **st) {
  unsigned char b[256];
  const unsigned char mask[4] = {1, 2, 3, 4};
  size_t n = frame(b, 1, 2, "\x00\x01", 2, NULL);
  expect_frames(b, n, EPODE_ERR_PROTOCOL, "binary message", 1007);
  n = frame(b, 1, 1, "<a/>", 4, mask);
  expect_frames(b, n, EPODE_ERR_PROTOCOL, "masked frame", 1002);
  for (unsigned rsv = 1; rsv < 8; rsv++) {
    n = frame(b, 1, 1, "<a/>", 4, NULL);
    b[0] |= (unsigned char)(rsv << 4);
    expect_frames(b, n, EPODE_ERR_PROTOCOL, "reserved bits", 1002);
  }
  unsigned bad_ops[] = {3, 4, 5, 6, 7, 11, 12, 13, 14, 15};
  for (size_t i = 0; i < sizeof bad_ops / sizeof bad_ops[0]; i++) {
    n = frame(b, 1, bad_ops[i], "", 0, NULL);
    expect_frames(b, n, EPODE_ERR_PROTOCOL, "unknown opcode", 1002);
  }
  char p126[126];
  memset(p126, 'p', sizeof p126);
  n = frame(b, 1, 9, p126, 126, NULL);
  expect_frames(b, n, EPODE_ERR_PROTOCOL, "ping frame longer than 125", 1002);
  n = frame(b, 0, 9, "", 0, NULL);
  expect_frames(b, n, EPODE_ERR_PROTOCOL, "fragmented ping", 1002);
  n = frame(b, 0, 8, "", 0, NULL);
  expect_frames(b, n, EPODE_ERR_PROTOCOL, "fragmented close", 1002);
  n = frame(b, 1, 0, "x", 1, NULL);
  expect_frames(b, n, EPODE_ERR_PROTOCOL, "continuation frame without a message", 1002);
  n = frame(b, 0, 1, "<a", 2, NULL);
  n += frame(b + n, 1, 1, "/>", 2, NULL);
  expect_frames(b, n, EPODE_ERR_PROTOCOL, "before the previous one was finished", 1002);
  n = frame(b, 0, 1, "<a", 2, NULL);
  n += frame(b + n, 1, 2, "/>", 2, NULL);
  expect_frames(b, n, EPODE_ERR_PROTOCOL, "binary", 1007);
  /* Non-minimal lengths. */
  const unsigned char nm16[] = {0x81, 126, 0, 5, 'h', 'e', 'l', 'l', 'o'};
  expect_frames(nm16, sizeof nm16, EPODE_ERR_PROTOCOL, "not minimally encoded", 1002);
  const unsigned char nm64[] = {0x81, 127, 0, 0, 0, 0, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'};
  expect_frames(nm64, sizeof nm64, EPODE_ERR_PROTOCOL, "not minimally encoded", 1002);
  const unsigned char top[] = {0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 0};
  expect_frames(top, sizeof top, EPODE_ERR_PROTOCOL, "top bit", 1002);
}

static void t_invalid_utf8(void **st) {
  const char *bad[] = {
      "\xff",             /* never valid */
      "\xc0\xaf",         /* overlong '/' */
      "\xe0\x80\xaf",     /* overlong */
      "\xed\xa0\x80",     /* surrogate U+D800 */
      "\xf4\x90\x80\x80", /* > U+10FFFF */
      "\xc3",             /* truncated at the end */
      "a\x80",            /* stray continuation */
      "\xf0\x9f\x98",     /* truncated 4-byte */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    unsigned char b[64];
    size_t n = frame(b, 1, 1, bad[i], strlen(bad[i]), NULL);
    expect_frames(b, n, EPODE_ERR_XML_UTF8, "UTF-8", 1007);
  }
  /* A bad byte in the first fragment fails before the message ends. */
  unsigned char b[64];
  size_t n = frame(b, 0, 1, "<a>\xff", 4, NULL);
  expect_frames(b, n, EPODE_ERR_XML_UTF8, "not valid UTF-8", 1007);
}

/* The counting allocator (tests/support/failmem.h) also records the largest
 * request. */
static void t_oversized_never_allocated(void **st) {
  epode_test_failmem c;
  epode_test_failmem_init(&c, 0);
  epode_mem mem = c.mem;
  rnd_state r = {0};
  epode__ws *w;
  assert_int_equal(epode__ws_new(&w, &mem, "h", "/", test_rnd, &r), EPODE_OK);
  epode__ws_set_max_message(w, 1000);
  epode__buf out;
  epode__buf_init(&out, NULL, 0);
  assert_int_equal(epode__ws_handshake(w, &out), EPODE_OK);
  char resp[512];
  good_101(resp, sizeof resp);
  assert_int_equal(epode__ws_feed(w, resp, strlen(resp), &out, on_msg, NULL), EPODE_OK);
  /* 2^62 bytes announced. */
  const unsigned char huge[] = {0x81, 127, 0x40, 0, 0, 0, 0, 0, 0, 0, 'x'};
  c.biggest = 0;
  assert_int_equal(epode__ws_feed(w, huge, sizeof huge, &out, on_msg, NULL), EPODE_ERR_LIMIT);
  assert_true(c.biggest < 1000);
  assert_non_null(strstr(epode__ws_errmsg(w), "exceeds the limit of 1000"));
  assert_int_equal(epode__ws_fail_code(w), 1009);
  epode__ws_free(w);

  /* Fragments that add up past the limit: refused at the fragment's header. */
  assert_int_equal(epode__ws_new(&w, &mem, "h", "/", test_rnd, &r), EPODE_OK);
  epode__ws_set_max_message(w, 1000);
  r.next = 0;
  assert_int_equal(epode__ws_handshake(w, &out), EPODE_OK);
  assert_int_equal(epode__ws_feed(w, resp, strlen(resp), &out, on_msg, NULL), EPODE_OK);
  unsigned char b[2048];
  char part[600];
  memset(part, 'a', sizeof part);
  size_t n = frame(b, 0, 1, part, sizeof part, NULL);
  assert_int_equal(epode__ws_feed(w, b, n, &out, on_msg, NULL), EPODE_OK);
  n = frame(b, 1, 0, part, 401, NULL);
  assert_int_equal(epode__ws_feed(w, b, 4, &out, on_msg, NULL), EPODE_ERR_LIMIT);
  epode__ws_free(w);
  /* Exactly at the limit is fine. */
  assert_int_equal(epode__ws_new(&w, &mem, "h", "/", test_rnd, &r), EPODE_OK);
  epode__ws_set_max_message(w, 1000);
  r.next = 0;
  assert_int_equal(epode__ws_handshake(w, &out), EPODE_OK);
  assert_int_equal(epode__ws_feed(w, resp, strlen(resp), &out, on_msg, NULL), EPODE_OK);
  n = frame(b, 0, 1, part, sizeof part, NULL);
  n += frame(b + n, 1, 0, part, 400, NULL);
  msgs *m = calloc(1, sizeof *m);
  assert_int_equal(epode__ws_feed(w, b, n, &out, on_msg, m), EPODE_OK);
  assert_int_equal(m->count, 1);
  assert_int_equal(m->len, 1001);
  free(m);
  epode__ws_free(w);
  epode__buf_free(&out);
  assert_int_equal(c.live, 0);
}

static void t_handler_error_stops(void **st) {
  fx *f = fx_open();
  f->m.ret = EPODE_ERR_XML;
  unsigned char b[64];
  size_t n = frame(b, 1, 1, "<a/>", 4, NULL);
  n += frame(b + n, 1, 1, "<b/>", 4, NULL);
  assert_int_equal(feed(f, b, n), EPODE_ERR_XML);
  assert_int_equal(f->m.count, 1);
  assert_non_null(strstr(epode__ws_errmsg(f->w), "message handler failed"));
  assert_int_equal(feed(f, b, n), EPODE_ERR_XML);
  assert_int_equal(f->m.count, 1);
  fx_free(f);
}

/* ------------------------------------------------------------------ frames out */

static void t_outgoing_sizes(void **st) {
  size_t sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 70000};
  unsigned char *msg = malloc(70000), *pl = malloc(70000);
  for (size_t i = 0; i < 70000; i++)
    msg[i] = (unsigned char)(' ' + i % 90);
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    fx *f = fx_open();
    f->rnd.next = (unsigned)k * 7;
    assert_int_equal(epode__ws_send(f->w, msg, sizes[k], &f->out), EPODE_OK);
    /* A second message into a buffer that already has room (the one-pass
     * path), with a different mask. */
    assert_int_equal(epode__ws_send(f->w, msg, sizes[k], &f->out), EPODE_OK);
    size_t hl = sizes[k] < 126 ? 6 : sizes[k] <= 0xFFFF ? 8 : 14;
    assert_int_equal(f->out.len, 2 * (hl + sizes[k]));
    size_t off = 0;
    unsigned char keys[2][4];
    for (int j = 0; j < 2; j++) {
      unsigned op;
      int fin;
      size_t pn;
      memcpy(keys[j], f->out.data + off + hl - 4, 4);
      off += unframe((unsigned char *)f->out.data + off, f->out.len - off, &op, &fin, pl, &pn);
      assert_int_equal(op, 1);
      assert_int_equal(fin, 1);
      assert_int_equal(pn, sizes[k]);
      if (pn) assert_memory_equal(pl, msg, pn);
    }
    assert_memory_not_equal(keys[0], keys[1], 4);
    fx_free(f);
  }
  free(msg);
  free(pl);
}

static void t_send_bounded_out(void **st) {
  fx *f = fx_open();
  epode__buf small;
  epode__buf_init(&small, NULL, 100);
  char msg[200];
  memset(msg, 'm', sizeof msg);
  assert_int_equal(epode__ws_send(f->w, msg, 50, &small), EPODE_OK);
  size_t before = small.len;
  assert_int_equal(epode__ws_send(f->w, msg, 60, &small), EPODE_ERR_LIMIT);
  assert_int_equal(small.len, before); /* unchanged */
  assert_int_equal(epode__ws_send(f->w, msg, 200, &small), EPODE_ERR_LIMIT);
  assert_int_equal(small.len, before);
  f->rnd.fail = 1;
  assert_int_equal(epode__ws_send(f->w, msg, 1, &small), EPODE_ERR_SYS);
  assert_int_equal(small.len, before);
  f->rnd.fail = 0;
  assert_int_equal(epode__ws_ping(f->w, &small), EPODE_OK);
  assert_int_equal(epode__ws_close(f->w, 1005, &small), EPODE_ERR_INVAL);
  assert_int_equal(epode__ws_close(f->w, 999, &small), EPODE_ERR_INVAL);
  assert_int_equal(epode__ws_close(f->w, 1000, &small), EPODE_OK);
  assert_int_equal(epode__ws_send(f->w, msg, 1, &small), EPODE_ERR_STATE);
  assert_int_equal(epode__ws_ping(f->w, &small), EPODE_ERR_STATE);
  epode__buf_free(&small);
  fx_free(f);
}

/* ------------------------------------------------------------------ hostile input */

static void t_allocation_failures(void **st) {
  char resp[512];
  good_101(resp, sizeof resp);
  unsigned char b[4096];
  size_t n = 0;
  n += frame(b + n, 0, 1, "<b>", 3, NULL);
  n += frame(b + n, 1, 0, "hello</b>", 9, NULL);
  n += frame(b + n, 1, 9, "p", 1, NULL);
  long ok_at = -1;
  for (long k = 1; k < 100 && ok_at < 0; k++) {
    epode_test_failmem c;
    epode_test_failmem_init(&c, k);
    epode_mem mem = c.mem;
    rnd_state r = {0};
    epode__ws *w = NULL;
    epode__buf out;
    epode__buf_init(&out, &mem, 0);
    msgs *m = calloc(1, sizeof *m);
    epode_err e = epode__ws_new(&w, &mem, "h", "/", test_rnd, &r);
    if (!e) e = epode__ws_handshake(w, &out);
    if (!e) e = epode__ws_feed(w, resp, strlen(resp), &out, on_msg, m);
    if (!e) e = epode__ws_feed(w, b, n, &out, on_msg, m);
    if (!e) e = epode__ws_send(w, "<x/>", 4, &out);
    if (!e) {
      ok_at = k;
      assert_string_equal(m->all, "<b>hello</b>|");
    } else {
      assert_int_equal(e, EPODE_ERR_NOMEM);
    }
    epode__ws_free(w);
    epode__buf_free(&out);
    free(m);
    assert_int_equal(c.live, 0);
  }
  assert_true(ok_at > 3); /* several allocations were each failed in turn */
}

/* xorshift: reproducible noise. */
static uint32_t xs(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

static void t_random_input_no_crash(void **st) {
  uint32_t seed = 12345;
  unsigned char b[512];
  for (int round = 0; round < 3000; round++) {
    fx *f = fx_open();
    epode__ws_set_max_message(f->w, 4096);
    size_t n = xs(&seed) % sizeof b;
    for (size_t i = 0; i < n; i++)
      b[i] = (unsigned char)xs(&seed);
    /* Often start with a plausible header so the decoder gets further. */
    if (n > 2 && round % 2) b[0] = (unsigned char)(0x80 | (xs(&seed) % 3)), b[1] &= 0x7F;
    size_t i = 0;
    epode_err e = EPODE_OK;
    while (i < n && !e) {
      size_t k = 1 + xs(&seed) % 64;
      if (k > n - i) k = n - i;
      e = feed(f, b + i, k);
      i += k;
    }
    if (e) assert_true(epode__ws_errmsg(f->w)[0]);
    fx_free(f);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_accept_key_rfc_example),
      cmocka_unit_test(t_request_shape),
      cmocka_unit_test(t_new_rejects_bad_args),
      cmocka_unit_test(t_101_ok_with_frames_after),
      cmocka_unit_test(t_101_split_every_byte),
      cmocka_unit_test(t_status_errors),
      cmocka_unit_test(t_header_errors),
      cmocka_unit_test(t_header_too_big),
      cmocka_unit_test(t_text_and_fragments),
      cmocka_unit_test(t_messages_split_every_byte),
      cmocka_unit_test(t_ping_pong_exact),
      cmocka_unit_test(t_close_from_server),
      cmocka_unit_test(t_close_bad),
      cmocka_unit_test(t_frame_errors),
      cmocka_unit_test(t_invalid_utf8),
      cmocka_unit_test(t_oversized_never_allocated),
      cmocka_unit_test(t_handler_error_stops),
      cmocka_unit_test(t_outgoing_sizes),
      cmocka_unit_test(t_send_bounded_out),
      cmocka_unit_test(t_allocation_failures),
      cmocka_unit_test(t_random_input_no_crash),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
