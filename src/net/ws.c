/* The WebSocket client filter (RFC 6455 for RFC 7395): the HTTP upgrade and
 * the frame codec, as pure computation over caller buffers.
 *
 * Why not wslay (which the build links): its frame API fits a pull/push
 * shape, but wslay_frame_context_init() allocates with malloc (no hooks, so
 * the epode_mem promise and the allocation-failure tests would not cover
 * it), the Debian 1.1.1 release lacks wslay_frame_write(), so masking goes
 * through a 4 KiB stack buffer and a send callback (a second copy into
 * `out`), and receiving copies every payload byte through its 4 KiB
 * internal buffer before we can look at it. The codec itself is ~150 lines
 * below; doing it here keeps single-frame messages zero-copy (delivered
 * straight from the caller's input) and every limit checked at the header.
 *
 * Incoming text is checked as UTF-8 incrementally, across frame and feed
 * boundaries, so a bad byte fails at once instead of after a huge message. */
#include "net/ws.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "epode_limits.h"
#include "util/alloc.h"
#include "util/base64_int.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum {
  OP_CONT = 0x0,
  OP_TEXT = 0x1,
  OP_BINARY = 0x2,
  OP_CLOSE = 0x8,
  OP_PING = 0x9,
  OP_PONG = 0xA
};
enum { ST_NEW = 0, ST_HANDSHAKE, ST_OPEN };

/* Close codes (RFC 6455 §7.4.1). */
enum { CC_PROTOCOL = 1002, CC_BAD_DATA = 1007, CC_TOO_BIG = 1009, CC_INTERNAL = 1011 };

/* Incremental UTF-8 check: bytes still expected in the current sequence and
 * the range the next one must fall in (RFC 3629 table, which excludes
 * overlongs, surrogates and code points past U+10FFFF). */
typedef struct utf8_state {
  unsigned need;
  unsigned char lo, hi;
} utf8_state;

struct epode__ws {
  epode_mem mem;
  char *host;
  char *path;
  epode_random_fn rnd;
  void *rnd_ud;
  size_t max_msg;
  int state;
  char key[25];    /* base64 of 16 random bytes */
  char accept[29]; /* what the server must answer */
  epode__buf head; /* the HTTP response head while it arrives */
  int http_status;

  /* Frame decoder. */
  unsigned char hdr[10]; /* 2 bytes + up to 8 of extended length */
  size_t hdr_len, hdr_need;
  int in_payload;
  unsigned opcode;
  int fin;
  uint64_t plen, poff;
  unsigned char ctl[125]; /* control frame payload */

  /* Message being reassembled. */
  int in_msg;
  uint64_t msg_len; /* bytes of the current message so far */
  epode__buf msg;
  utf8_state utf8;

  int peer_closed, close_sent;
  uint16_t close_code;
  char close_reason[124];

  epode_err err;
  uint16_t fail_code;
  char errmsg[256];
};

/* ------------------------------------------------------------------ helpers */

static epode_err fail(epode__ws *w, epode_err err, uint16_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static epode_err fail(epode__ws *w, epode_err err, uint16_t code, const char *fmt, ...) {
  if (w->err) return w->err;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(w->errmsg, sizeof w->errmsg, fmt, ap);
  va_end(ap);
  w->err = err;
  w->fail_code = code;
  return err;
}

/* Server text for an error message: printable ASCII only, bounded. */
static void clean(char *dst, size_t size, const char *src, size_t n) {
  size_t o = 0;
  for (size_t i = 0; i < n && o + 4 < size; i++) {
    unsigned char c = (unsigned char)src[i];
    dst[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
  }
  if (n && o + 4 >= size && o + 3 < size) {
    memcpy(dst + o, "...", 3);
    o += 3;
  }
  dst[o] = '\0';
}

static int utf8_ok(utf8_state *s, const unsigned char *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned char b = p[i];
    if (s->need) {
      if (b < s->lo || b > s->hi) return 0;
      s->need--;
      s->lo = 0x80;
      s->hi = 0xBF;
      i++;
      continue;
    }
    if (b < 0x80) {
      i++;
      continue;
    }
    s->lo = 0x80;
    s->hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF)
      s->need = 1;
    else if (b == 0xE0)
      s->need = 2, s->lo = 0xA0;
    else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF)
      s->need = 2;
    else if (b == 0xED)
      s->need = 2, s->hi = 0x9F;
    else if (b == 0xF0)
      s->need = 3, s->lo = 0x90;
    else if (b >= 0xF1 && b <= 0xF3)
      s->need = 3;
    else if (b == 0xF4)
      s->need = 3, s->hi = 0x8F;
    else
      return 0;
    i++;
  }
  return 1;
}

static int close_code_ok(unsigned c) {
  /* 1004-1006 and 1015 must never be sent; 1016-2999 are unassigned
   * protocol codes; 1012-1014 were registered after RFC 6455. */
  return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

static int bad_text(const char *s, int path) {
  if (!*s) return 1;
  if (path && *s != '/') return 1;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c <= 0x20 || c == 0x7f) return 1;
  }
  return 0;
}

epode_err epode__ws_accept_key(const char *key, char out[29]) {
  if (!key || strlen(key) > 64) return EPODE_ERR_INVAL;
  char in[64 + sizeof WS_GUID];
  size_t n = strlen(key);
  memcpy(in, key, n);
  memcpy(in + n, WS_GUID, sizeof WS_GUID - 1);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned mdlen = 0;
  if (EVP_Digest(in, n + sizeof WS_GUID - 1, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
    return EPODE_ERR_NOMEM;
  epode__base64_enc(md, 20, out);
  out[28] = '\0';
  return EPODE_OK;
}

/* ------------------------------------------------------------------ lifecycle */

epode_err epode__ws_new(epode__ws **out, const epode_mem *mem, const char *host_header,
                        const char *path, epode_random_fn rnd, void *rnd_ud) {
  if (!out) return EPODE_ERR_INVAL;
  *out = NULL;
  if (!host_header || !path || !rnd || bad_text(host_header, 0) || bad_text(path, 1) ||
      strlen(host_header) > 300 || strlen(path) > 4096)
    return EPODE_ERR_INVAL;
  mem = epode__mem_or_default(mem);
  epode__ws *w = epode__calloc(mem, sizeof *w);
  if (!w) return EPODE_ERR_NOMEM;
  w->mem = *mem;
  w->host = epode__strdup(&w->mem, host_header);
  w->path = epode__strdup(&w->mem, path);
  if (!w->host || !w->path) {
    epode__ws_free(w);
    return EPODE_ERR_NOMEM;
  }
  w->rnd = rnd;
  w->rnd_ud = rnd_ud;
  w->max_msg = EPODE_DEFAULT_MAX_STANZA_BYTES;
  epode__buf_init(&w->head, &w->mem, EPODE__WS_MAX_HEADER_BYTES);
  epode__buf_init(&w->msg, &w->mem, 0); /* bounded by max_msg, checked per frame */
  *out = w;
  return EPODE_OK;
}

void epode__ws_free(epode__ws *w) {
  if (!w) return;
  epode__buf_free(&w->head);
  epode__buf_free(&w->msg);
  epode__free(&w->mem, w->host);
  epode__free(&w->mem, w->path);
  epode__free(&w->mem, w);
}

void epode__ws_set_max_message(epode__ws *w, size_t max) {
  if (w) w->max_msg = max ? max : EPODE_DEFAULT_MAX_STANZA_BYTES;
}

int epode__ws_open(const epode__ws *w) { return w && w->state == ST_OPEN; }
int epode__ws_peer_closed(const epode__ws *w) { return w && w->peer_closed; }
uint16_t epode__ws_close_code(const epode__ws *w) { return w ? w->close_code : 0; }
const char *epode__ws_close_reason(const epode__ws *w) { return w ? w->close_reason : ""; }
int epode__ws_close_sent(const epode__ws *w) { return w && w->close_sent; }
int epode__ws_http_status(const epode__ws *w) { return w ? w->http_status : 0; }
epode_err epode__ws_error(const epode__ws *w) { return w ? w->err : EPODE_ERR_INVAL; }
uint16_t epode__ws_fail_code(const epode__ws *w) { return w ? w->fail_code : 0; }
const char *epode__ws_errmsg(const epode__ws *w) { return w ? w->errmsg : ""; }

/* ------------------------------------------------------------------ handshake */

epode_err epode__ws_handshake(epode__ws *w, epode__buf *out) {
  if (!w || !out) return EPODE_ERR_INVAL;
  if (w->state != ST_NEW) return EPODE_ERR_STATE;
  unsigned char nonce[16];
  if (w->rnd(w->rnd_ud, nonce, sizeof nonce) != 0) return EPODE_ERR_SYS;
  epode__base64_enc(nonce, sizeof nonce, w->key);
  w->key[24] = '\0';
  epode_err e = epode__ws_accept_key(w->key, w->accept);
  if (e) return e;
  size_t mark = out->len;
  e = epode__buf_printf(out,
                        "GET %s HTTP/1.1\r\n"
                        "Host: %s\r\n"
                        "Upgrade: websocket\r\n"
                        "Connection: Upgrade\r\n"
                        "Sec-WebSocket-Key: %s\r\n"
                        "Sec-WebSocket-Version: 13\r\n"
                        "Sec-WebSocket-Protocol: xmpp\r\n"
                        "\r\n",
                        w->path, w->host, w->key);
  if (e) {
    out->len = mark;
    if (out->data) out->data[mark] = '\0';
    return e;
  }
  w->state = ST_HANDSHAKE;
  return EPODE_OK;
}

static int is_tchar(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Whether a comma-separated header value lists `tok` (case-insensitive). */
static int list_has(const char *v, size_t n, const char *tok) {
  size_t tl = strlen(tok), i = 0;
  while (i < n) {
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    size_t s = i;
    while (i < n && v[i] != ',')
      i++;
    size_t e = i;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
      e--;
    if (e - s == tl && !strncasecmp(v + s, tok, tl)) return 1;
  }
  return 0;
}

/* The complete response head, `n` bytes ending with CRLF CRLF. */
static epode_err parse_head(epode__ws *w, const char *h, size_t n) {
  char shown[128];
  const char *end = h + n - 2; /* the final empty line's CRLF */
  const char *eol = memchr(h, '\r', n);
  /* Status line: HTTP/1.1 SP 3DIGIT SP reason (the prefix was checked). */
  size_t sl = (size_t)(eol - h);
  if (eol[1] != '\n' || sl < 12 || memcmp(h, "HTTP/1.1 ", 9) || h[9] < '1' || h[9] > '5' ||
      h[10] < '0' || h[10] > '9' || h[11] < '0' || h[11] > '9' || (sl > 12 && h[12] != ' ')) {
    clean(shown, sizeof shown, h, sl);
    return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "malformed HTTP status line \"%s\"", shown);
  }
  w->http_status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
  if (w->http_status != 101) {
    clean(shown, sizeof shown, h + 9, sl - 9);
    return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "HTTP %s (expected 101 Switching Protocols)",
                shown);
  }
  int upgrade = 0, connection = 0, accept = 0, protocol = 0;
  const char *line = eol + 2;
  while (line < end) {
    const char *le = memchr(line, '\r', (size_t)(end - line) + 1);
    if (!le || le[1] != '\n') /* a bare CR inside a line */
      return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "malformed HTTP header line (bare CR)");
    size_t ll = (size_t)(le - line);
    if (line[0] == ' ' || line[0] == '\t')
      return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "folded HTTP header line (obsolete)");
    const char *colon = memchr(line, ':', ll);
    size_t nl = colon ? (size_t)(colon - line) : 0;
    for (size_t i = 0; i < nl && colon; i++)
      if (!is_tchar((unsigned char)line[i])) colon = NULL;
    if (!colon || !nl) {
      clean(shown, sizeof shown, line, ll < 40 ? ll : 40);
      return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "malformed HTTP header line \"%s\"", shown);
    }
    const char *v = colon + 1, *ve = le;
    while (v < ve && (*v == ' ' || *v == '\t'))
      v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
      ve--;
    size_t vl = (size_t)(ve - v);
    for (size_t i = 0; i < vl; i++) {
      unsigned char c = (unsigned char)v[i];
      if ((c < 0x20 && c != '\t') || c == 0x7f) {
        clean(shown, sizeof shown, line, nl);
        return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "control character in HTTP header %s",
                    shown);
      }
    }
#define NAME_IS(s) (nl == sizeof(s) - 1 && !strncasecmp(line, s, nl))
    if (NAME_IS("Upgrade")) {
      upgrade |= list_has(v, vl, "websocket");
    } else if (NAME_IS("Connection")) {
      connection |= list_has(v, vl, "upgrade");
    } else if (NAME_IS("Sec-WebSocket-Accept")) {
      if (accept++)
        return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "duplicate Sec-WebSocket-Accept header");
      if (vl != 28 || memcmp(v, w->accept, 28)) {
        clean(shown, sizeof shown, v, vl < 64 ? vl : 64);
        return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL,
                    "wrong Sec-WebSocket-Accept \"%s\" (expected \"%s\")", shown, w->accept);
      }
    } else if (NAME_IS("Sec-WebSocket-Protocol")) {
      if (protocol++)
        return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "duplicate Sec-WebSocket-Protocol header");
      if (vl != 4 || memcmp(v, "xmpp", 4)) {
        clean(shown, sizeof shown, v, vl < 64 ? vl : 64);
        return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL,
                    "server chose subprotocol \"%s\", not the xmpp one we asked for", shown);
      }
    } else if (NAME_IS("Sec-WebSocket-Extensions")) {
      if (vl) {
        clean(shown, sizeof shown, v, vl < 64 ? vl : 64);
        return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL,
                    "server chose extension \"%s\", which we did not offer", shown);
      }
    }
#undef NAME_IS
    line = le + 2;
  }
  if (!upgrade)
    return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "101 response without Upgrade: websocket");
  if (!connection)
    return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "101 response without Connection: upgrade");
  if (!accept)
    return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "101 response without Sec-WebSocket-Accept");
  if (!protocol)
    return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL,
                "server did not agree to the xmpp subprotocol (no Sec-WebSocket-Protocol)");
  w->state = ST_OPEN;
  return EPODE_OK;
}

/* Takes response bytes; *used says how many were part of the head. */
static epode_err feed_head(epode__ws *w, const char *p, size_t len, size_t *used) {
  size_t old = w->head.len;
  size_t room = EPODE__WS_MAX_HEADER_BYTES - old;
  size_t take = len < room ? len : room;
  epode_err e = epode__buf_append(&w->head, p, take);
  if (e) return fail(w, e, CC_INTERNAL, "out of memory reading the HTTP response");
  const char *h = w->head.data;
  size_t n = w->head.len;
  /* Anything but HTTP (a TLS alert, an XMPP stream) fails at once. */
  static const char pre[] = "HTTP/1.";
  size_t cmp = n < sizeof pre - 1 ? n : sizeof pre - 1;
  if (memcmp(h, pre, cmp)) {
    char shown[40];
    clean(shown, sizeof shown, h, n < 16 ? n : 16);
    return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "not an HTTP response (starts \"%s\")", shown);
  }
  for (size_t i = old >= 3 ? old - 3 : 0; i + 4 <= n; i++) {
    if (h[i] == '\r' && h[i + 1] == '\n' && h[i + 2] == '\r' && h[i + 3] == '\n') {
      *used = i + 4 - old;
      e = parse_head(w, h, i + 4);
      epode__buf_free(&w->head);
      return e;
    }
  }
  if (n >= EPODE__WS_MAX_HEADER_BYTES)
    return fail(w, EPODE_ERR_LIMIT, CC_TOO_BIG, "HTTP response head exceeds %u bytes",
                EPODE__WS_MAX_HEADER_BYTES);
  *used = len;
  return EPODE_OK;
}

/* ------------------------------------------------------------------ frames out */

/* Appends one masked frame; `out` is unchanged on error. */
static epode_err write_frame(epode__ws *w, epode__buf *out, unsigned opcode, const void *data,
                             size_t n) {
  unsigned char hdr[14];
  size_t hl = 0;
  hdr[hl++] = (unsigned char)(0x80u | opcode);
  if (n < 126) {
    hdr[hl++] = (unsigned char)(0x80u | n);
  } else if (n <= 0xFFFF) {
    hdr[hl++] = 0x80u | 126;
    hdr[hl++] = (unsigned char)(n >> 8);
    hdr[hl++] = (unsigned char)n;
  } else {
    hdr[hl++] = 0x80u | 127;
    uint64_t v = n;
    for (int i = 7; i >= 0; i--)
      hdr[hl++] = (unsigned char)(v >> (8 * i));
  }
  unsigned char *key = hdr + hl;
  if (w->rnd(w->rnd_ud, key, 4) != 0) return EPODE_ERR_SYS;
  hl += 4;
  size_t mark = out->len;
  epode_err e = epode__buf_append(out, hdr, hl);
  if (e) return e;
  const unsigned char *src = data;
  unsigned char *dst;
  if (out->cap - out->len > n && out->data) {
    /* Room already: mask straight from the message into `out` (one pass). */
    dst = (unsigned char *)out->data + out->len;
    if (out->max && out->len + n > out->max) {
      e = EPODE_ERR_LIMIT;
      goto undo;
    }
    for (size_t i = 0; i < n; i++)
      dst[i] = src[i] ^ key[i & 3];
    out->len += n;
    out->data[out->len] = '\0';
  } else {
    /* Growing: let the buffer copy, then mask in place. */
    e = epode__buf_append(out, data, n);
    if (e) goto undo;
    dst = (unsigned char *)out->data + out->len - n;
    for (size_t i = 0; i < n; i++)
      dst[i] ^= key[i & 3];
  }
  return EPODE_OK;
undo:
  out->len = mark;
  out->data[mark] = '\0';
  return e;
}

epode_err epode__ws_send(epode__ws *w, const void *msg, size_t len, epode__buf *out) {
  if (!w || !out || (!msg && len)) return EPODE_ERR_INVAL;
  if (w->err) return w->err;
  if (w->state != ST_OPEN || w->close_sent) return EPODE_ERR_STATE;
  return write_frame(w, out, OP_TEXT, msg ? msg : "", len);
}

epode_err epode__ws_ping(epode__ws *w, epode__buf *out) {
  if (!w || !out) return EPODE_ERR_INVAL;
  if (w->err) return w->err;
  if (w->state != ST_OPEN || w->close_sent) return EPODE_ERR_STATE;
  unsigned char payload[4];
  if (w->rnd(w->rnd_ud, payload, sizeof payload) != 0) return EPODE_ERR_SYS;
  return write_frame(w, out, OP_PING, payload, sizeof payload);
}

static epode_err send_close(epode__ws *w, uint16_t code, epode__buf *out) {
  unsigned char p[2] = {(unsigned char)(code >> 8), (unsigned char)code};
  epode_err e = write_frame(w, out, OP_CLOSE, p, code ? 2 : 0);
  if (!e) w->close_sent = 1;
  return e;
}

epode_err epode__ws_close(epode__ws *w, uint16_t code, epode__buf *out) {
  if (!w || !out || (code && !close_code_ok(code))) return EPODE_ERR_INVAL;
  if (w->state != ST_OPEN || w->close_sent) return EPODE_ERR_STATE;
  return send_close(w, code, out);
}

/* ------------------------------------------------------------------ frames in */

static const char *op_name(unsigned op) {
  switch (op) {
  case OP_CONT: return "continuation";
  case OP_TEXT: return "text";
  case OP_BINARY: return "binary";
  case OP_CLOSE: return "close";
  case OP_PING: return "ping";
  case OP_PONG: return "pong";
  default: return "unknown";
  }
}

/* The first two header bytes are in: checks them and says how long the
 * header is. */
static epode_err check_hdr(epode__ws *w) {
  unsigned b0 = w->hdr[0], b1 = w->hdr[1];
  unsigned op = b0 & 0x0F, len7 = b1 & 0x7F;
  int fin = (b0 & 0x80) != 0;
  if (b0 & 0x70)
    return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL,
                "frame with reserved bits 0x%02x set (no extension was negotiated)", b0 & 0x70);
  if (op != OP_CONT && op != OP_TEXT && op != OP_BINARY && op != OP_CLOSE && op != OP_PING &&
      op != OP_PONG)
    return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "frame with unknown opcode 0x%x", op);
  if (b1 & 0x80) return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "masked frame from the server");
  if (op >= OP_CLOSE) {
    if (!fin) return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "fragmented %s frame", op_name(op));
    if (len7 > 125)
      return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "%s frame longer than 125 bytes",
                  op_name(op));
  } else if (op == OP_BINARY) {
    return fail(w, EPODE_ERR_PROTOCOL, CC_BAD_DATA,
                "binary message from the server (RFC 7395 allows text only)");
  } else if (op == OP_CONT && !w->in_msg) {
    return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "continuation frame without a message");
  } else if (op == OP_TEXT && w->in_msg) {
    return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL,
                "new text message before the previous one was finished");
  }
  w->hdr_need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
  return EPODE_OK;
}

/* The whole header is in: the frame's payload starts. */
static epode_err begin_frame(epode__ws *w) {
  unsigned len7 = w->hdr[1] & 0x7F;
  uint64_t len = len7;
  if (len7 == 126) {
    len = (uint64_t)w->hdr[2] << 8 | w->hdr[3];
    if (len < 126)
      return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "frame length %llu not minimally encoded",
                  (unsigned long long)len);
  } else if (len7 == 127) {
    len = 0;
    for (int i = 2; i < 10; i++)
      len = len << 8 | w->hdr[i];
    if (len >> 63)
      return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "frame length with the top bit set");
    if (len <= 0xFFFF)
      return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "frame length %llu not minimally encoded",
                  (unsigned long long)len);
  }
  w->opcode = w->hdr[0] & 0x0F;
  w->fin = (w->hdr[0] & 0x80) != 0;
  w->plen = len;
  w->poff = 0;
  if (w->opcode == OP_TEXT || w->opcode == OP_CONT) {
    /* Refuse from the header: nothing of it is read or allocated. */
    if (len > w->max_msg || w->msg_len > w->max_msg - len)
      return fail(w, EPODE_ERR_LIMIT, CC_TOO_BIG,
                  "message of at least %llu bytes exceeds the limit of %zu bytes",
                  (unsigned long long)(w->msg_len + len), w->max_msg);
    if (w->opcode == OP_TEXT) {
      w->in_msg = 1;
      w->msg_len = 0;
      w->utf8 = (utf8_state){0, 0x80, 0xBF};
    }
  }
  w->in_payload = 1;
  return EPODE_OK;
}

static epode_err deliver(epode__ws *w, const char *p, size_t n, epode__ws_msg_fn on_msg, void *ud) {
  if (w->utf8.need)
    return fail(w, EPODE_ERR_XML_UTF8, CC_BAD_DATA, "text message ends inside a UTF-8 sequence");
  w->in_msg = 0;
  w->msg_len = 0;
  epode_err e = on_msg ? on_msg(ud, p, n) : EPODE_OK;
  if (e) return fail(w, e, CC_INTERNAL, "message handler failed: %s", epode_strerror(e));
  return EPODE_OK;
}

static epode_err end_control(epode__ws *w, epode__buf *out) {
  size_t n = (size_t)w->plen;
  epode_err e;
  switch (w->opcode) {
  case OP_PING:
    if (w->close_sent) return EPODE_OK; /* no more frames after our CLOSE */
    e = write_frame(w, out, OP_PONG, w->ctl, n);
    if (e) return fail(w, e, CC_INTERNAL, "cannot queue the PONG: %s", epode_strerror(e));
    return EPODE_OK;
  case OP_PONG: return EPODE_OK;
  default: break;
  }
  /* CLOSE */
  uint16_t code = 0;
  if (n == 1) return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "close frame with a 1-byte body");
  if (n >= 2) {
    code = (uint16_t)(w->ctl[0] << 8 | w->ctl[1]);
    if (!close_code_ok(code))
      return fail(w, EPODE_ERR_PROTOCOL, CC_PROTOCOL, "close frame with invalid code %u", code);
    utf8_state s = {0, 0x80, 0xBF};
    if (!utf8_ok(&s, w->ctl + 2, n - 2) || s.need)
      return fail(w, EPODE_ERR_XML_UTF8, CC_BAD_DATA, "close reason is not valid UTF-8");
    memcpy(w->close_reason, w->ctl + 2, n - 2);
    w->close_reason[n - 2] = '\0';
  }
  w->close_code = code;
  w->peer_closed = 1;
  if (!w->close_sent) {
    e = send_close(w, code, out);
    if (e) return fail(w, e, CC_INTERNAL, "cannot queue the CLOSE reply: %s", epode_strerror(e));
  }
  return EPODE_OK;
}

epode_err epode__ws_feed(epode__ws *w, const void *data, size_t len, epode__buf *out,
                         epode__ws_msg_fn on_msg, void *ud) {
  if (!w || !out || (!data && len)) return EPODE_ERR_INVAL;
  if (w->err) return w->err;
  if (w->state == ST_NEW) return EPODE_ERR_STATE;
  const char *p = data;
  size_t i = 0;
  epode_err e;
  if (w->state == ST_HANDSHAKE) {
    if ((e = feed_head(w, p, len, &i))) return e;
    if (w->state != ST_OPEN) return EPODE_OK;
  }
  while (i < len && !w->peer_closed) {
    if (!w->in_payload) {
      w->hdr[w->hdr_len++] = (unsigned char)p[i++];
      if (w->hdr_len == 2 && (e = check_hdr(w))) return e;
      if (w->hdr_len < 2 || w->hdr_len < w->hdr_need) continue;
      w->hdr_len = 0;
      if ((e = begin_frame(w))) return e;
    } else {
      uint64_t rest = w->plen - w->poff;
      size_t n = len - i < rest ? len - i : (size_t)rest;
      const unsigned char *q = (const unsigned char *)p + i;
      if (w->opcode >= OP_CLOSE) {
        memcpy(w->ctl + w->poff, q, n);
      } else {
        if (!utf8_ok(&w->utf8, q, n))
          return fail(w, EPODE_ERR_XML_UTF8, CC_BAD_DATA,
                      "text message is not valid UTF-8 (at byte %llu)",
                      (unsigned long long)(w->msg_len));
        if (w->fin && w->opcode == OP_TEXT && n == w->plen) {
          /* The whole message in this input: no copy. */
          w->poff += n;
          i += n;
          w->in_payload = 0;
          if ((e = deliver(w, (const char *)q, n, on_msg, ud))) return e;
          continue;
        }
        e = epode__buf_append(&w->msg, q, n);
        if (e) return fail(w, e, CC_INTERNAL, "out of memory reassembling a message");
        w->msg_len += n;
      }
      w->poff += n;
      i += n;
    }
    if (w->in_payload && w->poff < w->plen) continue;
    /* A frame is complete (possibly with an empty payload). */
    w->in_payload = 0;
    if (w->opcode >= OP_CLOSE) {
      if ((e = end_control(w, out))) return e;
    } else if (w->fin) {
      e = deliver(w, w->msg.data ? w->msg.data : "", w->msg.len, on_msg, ud);
      /* Give a large buffer back rather than keep the peak forever. */
      if (w->msg.cap > 64 * 1024)
        epode__buf_free(&w->msg);
      else
        epode__buf_reset(&w->msg);
      if (e) return e;
    }
  }
  return EPODE_OK;
}
