/* A sans-I/O WebSocket client filter (RFC 6455) for XMPP over WebSocket
 * (RFC 7395). Bytes in, bytes out, messages out: no socket, no clock.
 *
 *   epode__ws_new()        host and path of the ws(s):// URL
 *   epode__ws_handshake()  the HTTP/1.1 upgrade request -> out
 *   epode__ws_feed()       bytes from the server (after TLS); the 101 response,
 *                          then frames: each complete text message -> on_msg,
 *                          PING -> PONG into out, CLOSE -> answered, recorded
 *   epode__ws_send()       one text message as one masked frame -> out
 *   epode__ws_close()      our CLOSE frame -> out
 *
 * `out` is any epode__buf the caller owns (its cap bounds what a stalled
 * peer can make us queue); the filter only appends to it.
 *
 * What the server may make us hold: the response headers (at most
 * EPODE__WS_MAX_HEADER_BYTES), one partial message (at most the maximum
 * message size, default EPODE_DEFAULT_MAX_STANZA_BYTES: an RFC 7395 message
 * is one stanza) and one control frame (125 bytes). A declared frame length
 * over the limit is refused from its header, before anything is allocated.
 *
 * Failures are sticky: after an error every feed/send returns it again and
 * epode__ws_errmsg() says what was wrong. Codes: EPODE_ERR_PROTOCOL (bad
 * HTTP response, refused upgrade, framing violation, binary message),
 * EPODE_ERR_XML_UTF8 (text message not UTF-8), EPODE_ERR_LIMIT (headers or
 * message too large), EPODE_ERR_NOMEM, EPODE_ERR_SYS (random source failed),
 * or whatever on_msg returned. epode__ws_fail_code() gives the RFC 6455
 * status code to close with (1002, 1007, 1009, 1011), for a caller that
 * wants to say goodbye before dropping the connection.
 *
 * All memory goes through `mem`; the frame codec is ours (see ws.c for why
 * not wslay). */
#ifndef EPODE_SRC_NET_WS_H
#define EPODE_SRC_NET_WS_H

#include <stddef.h>
#include <stdint.h>

#include "epode/config.h"
#include "epode/error.h"
#include "epode/mem.h"
#include "util/buf.h"

/* Bound on the server's HTTP response head (status line + headers): real
 * 101 responses are a few hundred bytes; 16 KiB is generous and stops a
 * server that streams headers forever. */
#define EPODE__WS_MAX_HEADER_BYTES (16u * 1024u)

typedef struct epode__ws epode__ws;

/* Called with each complete text message (valid UTF-8, not NUL-terminated;
 * the bytes are valid only during the call). Returning an error stops the
 * feed, which returns it. The callback may call epode__ws_send/_close/_ping
 * on the same filter, but not epode__ws_feed or epode__ws_free. */
typedef epode_err (*epode__ws_msg_fn)(void *ud, const char *msg, size_t len);

/* A client filter. `host_header` is the Host: value ("host" or "host:port",
 * "[v6]:port"), `path` the request target ("/xmpp-websocket", with any
 * query). Both are copied; control characters, spaces, or a path not
 * starting with '/' are EPODE_ERR_INVAL. `rnd` (required) supplies the
 * Sec-WebSocket-Key and the frame masks. */
epode_err epode__ws_new(epode__ws **out, const epode_mem *mem, const char *host_header,
                        const char *path, epode_random_fn rnd, void *rnd_ud);
void epode__ws_free(epode__ws *w);
/* Largest message accepted from the server, reassembled (0: the default,
 * EPODE_DEFAULT_MAX_STANZA_BYTES). Use the stanza limit. */
void epode__ws_set_max_message(epode__ws *w, size_t max);

/* Appends the HTTP/1.1 upgrade request to `out`: GET path, Host, Upgrade:
 * websocket, Connection: Upgrade, Sec-WebSocket-Key (16 random bytes,
 * base64), Sec-WebSocket-Version: 13, Sec-WebSocket-Protocol: xmpp.
 * Once only (EPODE_ERR_STATE after). */
epode_err epode__ws_handshake(epode__ws *w, epode__buf *out);

/* Received bytes, in any pieces. Before the handshake completes they are the
 * HTTP response: 101 with Upgrade: websocket, Connection: upgrade, the
 * right Sec-WebSocket-Accept and Sec-WebSocket-Protocol: xmpp, and no
 * extension; anything else fails with a message naming what was wrong
 * ("HTTP 404 Not Found", "server did not agree to the xmpp subprotocol").
 * Bytes after the response are frames. Frames: text messages (fragmented
 * or not) go to on_msg; PING is answered with a PONG appended to `out`;
 * PONG is ignored; CLOSE records the code and reason (epode__ws_peer_closed)
 * and is answered with a CLOSE unless we sent one; input after a CLOSE is
 * ignored. EPODE_ERR_STATE before epode__ws_handshake(). */
epode_err epode__ws_feed(epode__ws *w, const void *data, size_t len, epode__buf *out,
                         epode__ws_msg_fn on_msg, void *ud);

/* One text message as one frame, masked with a fresh key, appended to
 * `out`. EPODE_ERR_STATE before the handshake completed or after our CLOSE.
 * `out` is unchanged on error. */
epode_err epode__ws_send(epode__ws *w, const void *msg, size_t len, epode__buf *out);
/* A PING with a few random bytes as payload (keepalive). */
epode_err epode__ws_ping(epode__ws *w, epode__buf *out);
/* Our CLOSE frame with `code` (0: none; else 1000-4999, not 1004-1006 or
 * 1015: EPODE_ERR_INVAL). Once: EPODE_ERR_STATE when already sent. Allowed
 * after a failure (to report it) but not before the handshake completed. */
epode_err epode__ws_close(epode__ws *w, uint16_t code, epode__buf *out);

/* 1 once the 101 response was accepted. */
int epode__ws_open(const epode__ws *w);
/* 1 once the server's CLOSE arrived; then its code (0 if it sent none) and
 * reason ("" if none; UTF-8, cut at an embedded NUL). */
int epode__ws_peer_closed(const epode__ws *w);
uint16_t epode__ws_close_code(const epode__ws *w);
const char *epode__ws_close_reason(const epode__ws *w);
/* 1 once we sent our CLOSE (ours or the answer to theirs). */
int epode__ws_close_sent(const epode__ws *w);
/* The HTTP status of the response (0 before it was parsed). */
int epode__ws_http_status(const epode__ws *w);
/* The sticky failure (EPODE_OK if none) and the close code that goes with
 * it (0 if none). */
epode_err epode__ws_error(const epode__ws *w);
uint16_t epode__ws_fail_code(const epode__ws *w);
/* What went wrong, "" if nothing; never NULL. */
const char *epode__ws_errmsg(const epode__ws *w);

/* base64(SHA-1(key + RFC 6455 GUID)) into out (29 bytes with the NUL).
 * Exposed for the tests. */
epode_err epode__ws_accept_key(const char *key, char out[29]);

#endif
