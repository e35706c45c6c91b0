/* epode — connections (L2).
 *
 * An epode_conn carries one session over TCP: it resolves the server with
 * c-ares (SRV _xmpps-client._tcp and _xmpp-client._tcp, then A/AAAA, then the
 * domain itself), connects to each address in turn without blocking, runs TLS
 * with OpenSSL through memory BIOs (direct TLS with ALPN "xmpp-client", or
 * STARTTLS when the session asks), verifies the certificate against the JID's
 * domain, and hands the session its channel-binding data.
 *
 * Nothing here blocks. The host drives the connection in one of two ways:
 *  - with its own loop: epode_conn_set_io() tells it which fds to watch and
 *    when to wake; it calls epode_conn_process_fd() / _process_timeout();
 *  - with epode's loop: epode_loop_add_conn() (loop.h) does all that. */
#ifndef EPODE_CONN_H
#define EPODE_CONN_H

#include <stdint.h>

#include "config.h"
#include "error.h"
#include "session.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct epode_conn epode_conn;

#define EPODE_IO_READ 1u
#define EPODE_IO_WRITE 2u

/* Watch `fd` for `events` (EPODE_IO_READ|EPODE_IO_WRITE); events == 0 means
 * stop watching it (it may be closed right after). Called whenever the set
 * changes. */
typedef void (*epode_io_fn)(int fd, unsigned events, void *ud);
/* Call epode_conn_process_timeout() in `timeout_ms` (0 = as soon as
 * possible); -1 cancels. Replaces any earlier request. */
typedef void (*epode_timer_fn)(int64_t timeout_ms, void *ud);

epode_err epode_conn_new(epode_conn **out, const epode_config *cfg);
/* Frees the connection (closing its socket without a goodbye). */
void epode_conn_free(epode_conn *c);
/* The session this connection carries: add handlers, send stanzas. */
epode_session *epode_conn_session(epode_conn *c);
/* Session events plus the connection's own states (RESOLVING, CONNECTING,
 * TLS_HANDSHAKE) and its failures (DNS, CONNECT, TLS, TLS_VERIFY, EOF). */
void epode_conn_set_event_cb(epode_conn *c, epode_event_fn fn, void *ud);
void epode_conn_set_io(epode_conn *c, epode_io_fn io, epode_timer_fn timer, void *ud);

/* Starts resolving and connecting; returns at once. */
epode_err epode_conn_connect(epode_conn *c);
/* The host saw `events` on `fd`. */
epode_err epode_conn_process_fd(epode_conn *c, int fd, unsigned events);
/* The timer requested through epode_timer_fn fired. */
epode_err epode_conn_process_timeout(epode_conn *c);
/* Ends the stream politely (the session's close, then TLS close_notify and
 * the socket) — finishes asynchronously with EPODE_EV_CLOSED. */
epode_err epode_conn_close(epode_conn *c);

epode_state epode_conn_state(const epode_conn *c);
/* Why the connection failed (err EPODE_OK while it has not). Never NULL. */
const epode_failure *epode_conn_failure(const epode_conn *c);

/* Milliseconds on the clock epode uses (CLOCK_MONOTONIC). */
uint64_t epode_now_ms(void);

#ifdef __cplusplus
}
#endif
#endif
