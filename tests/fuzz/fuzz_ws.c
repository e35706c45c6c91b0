/* Fuzz target: the WebSocket client filter (src/net/ws.c): the server's
 * HTTP upgrade response and its frames.
 *
 * Input: byte 0: bit 0 = prepend a correct 101 response (so the fuzzer
 * spends its time on frames), bit 1 = small message limit (64 bytes),
 * bit 2 = send a message and a ping from inside the message callback,
 * bit 3 = close from our side halfway; byte 1 the chunk size; the rest is
 * what the server sends. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "net/ws.h"
#include "util/buf.h"

typedef struct {
  epode__ws *w;
  epode__buf *out;
  int reply;
  size_t msgs;
} ctx;

static epode_err on_msg(void *ud, const char *msg, size_t len) {
  ctx *c = ud;
  c->msgs++;
  if (len && !msg) abort();
  /* Touch every byte so ASan sees an overrun. */
  volatile unsigned sum = 0;
  for (size_t i = 0; i < len; i++)
    sum += (unsigned char)msg[i];
  (void)sum;
  if (c->reply) {
    epode__ws_send(c->w, "<r/>", 4, c->out);
    if (c->msgs == 2) epode__ws_ping(c->w, c->out);
  }
  return EPODE_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  uint8_t flags = fz_byte(&in), chunk = fz_byte(&in);
  unsigned rng = 1;
  epode__ws *w = NULL;
  if (epode__ws_new(&w, NULL, "example.org:5280", "/xmpp-websocket", fz_random, &rng) != EPODE_OK)
    return 0;
  if (flags & 2) epode__ws_set_max_message(w, 64);
  epode__buf out;
  epode__buf_init(&out, NULL, 1 << 20);
  if (epode__ws_handshake(w, &out) != EPODE_OK) goto done;
  ctx c = {w, &out, (flags & 4) != 0, 0};

  if (flags & 1) {
    const char *k = strstr(out.data, "Sec-WebSocket-Key: ");
    char key[32] = "", accept[29];
    if (!k || sscanf(k + 19, "%31[^\r]", key) != 1) abort();
    if (epode__ws_accept_key(key, accept) != EPODE_OK) abort();
    char resp[512];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                     "Sec-WebSocket-Protocol: xmpp\r\n\r\n",
                     accept);
    if (epode__ws_feed(w, resp, (size_t)n, &out, on_msg, &c) != EPODE_OK) abort();
    if (!epode__ws_open(w)) abort();
  }
  epode__buf_reset(&out);
  size_t off = 0;
  while (off < in.len) {
    size_t n = fz_chunk(chunk, in.len - off);
    epode_err e = epode__ws_feed(w, in.p + off, n, &out, on_msg, &c);
    if (e != EPODE_OK) {
      if (epode__ws_error(w) != e || !*epode__ws_errmsg(w)) abort();
      if (epode__ws_feed(w, "x", 1, &out, on_msg, &c) != e) abort(); /* sticky */
      if (epode__ws_open(w)) epode__ws_close(w, epode__ws_fail_code(w), &out);
      break;
    }
    off += n;
    if ((flags & 8) && off >= in.len / 2 && epode__ws_open(w) && !epode__ws_close_sent(w))
      epode__ws_close(w, 1000, &out);
    epode__buf_reset(&out); /* the transport took it */
  }
  if (epode__ws_peer_closed(w)) {
    (void)epode__ws_close_code(w);
    if (!epode__ws_close_reason(w)) abort();
  }
  (void)epode__ws_http_status(w);
done:
  epode__buf_free(&out);
  epode__ws_free(w);
  return 0;
}
