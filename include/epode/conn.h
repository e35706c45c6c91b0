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

/* Creates a connection for the account in `cfg` (copied; the JID is
 * required). It owns its session, created from the same config. Nothing
 * happens on the network until epode_conn_connect(). */
epode_err epode_conn_new(epode_conn **out, const epode_config *cfg);
/* Frees the connection: closes its socket without a goodbye, releases its
 * resolver, TLS state and session, tells the host to stop watching its fds
 * (events 0) and cancels its timer (-1). No event is emitted. Called from
 * inside one of the connection's own callbacks (its event callback, a
 * session handler), it takes effect when the epode_conn_* call that ran
 * the callback returns, and no further events are delivered. (Not from
 * callbacks of session calls the app makes directly, outside any
 * epode_conn_* call: those keep the session busy; free later then.) A
 * connection attached to epode's loop must be removed from it first.
 * Without epode_config_set_reconnect() one connection makes one attempt
 * (to reconnect, create a new one); with it, the connection reconnects by
 * itself (see epode_conn_set_event_cb). */
void epode_conn_free(epode_conn *c);
/* The session this connection carries: add handlers, send stanzas. */
epode_session *epode_conn_session(epode_conn *c);
/* Session events plus the connection's own states (RESOLVING, CONNECTING,
 * TLS_HANDSHAKE) and its failures (DNS, CONNECT, TLS, TLS_VERIFY, EOF, IO).
 * EPODE_EV_STARTTLS and EPODE_EV_RECONNECT are handled here and not
 * forwarded. With reconnection on, a failure another attempt could fix
 * gives EPODE_EV_DISCONNECTED (state DISCONNECTED; no EPODE_EV_ERROR), the
 * connection waits ev->retry_ms, resolves again — trying the other
 * addresses first when the last one failed before the session was ready —
 * and the app sees the states again, then EPODE_EV_RESUMED (XEP-0198
 * resumption) or EPODE_EV_READY (a fresh session). A <see-other-host/>
 * stream error is followed once, whether reconnection is on or not: the
 * new host must still present a certificate for the JID's domain. Once
 * epode_conn_connect() succeeded, EPODE_EV_CLOSED comes exactly once, last,
 * whatever happens (after EPODE_EV_ERROR when something failed); its
 * failure is epode_conn_failure(). The callback may call epode_conn_close(),
 * send on the session, and free the connection (see epode_conn_free). */
void epode_conn_set_event_cb(epode_conn *c, epode_event_fn fn, void *ud);
/* Installs the host's callbacks. The connection reports through them at
 * once what it already watches and its pending timer. NULL io/timer: no
 * reports (the host drives nothing). */
void epode_conn_set_io(epode_conn *c, epode_io_fn io, epode_timer_fn timer, void *ud);

/* Starts resolving and connecting; returns at once (EPODE_EV_STATE
 * RESOLVING is emitted from inside). Where it connects: the configured
 * server if set (epode_config_set_server), else the JID domain's SRV
 * records (_xmpps-client._tcp for direct TLS, _xmpp-client._tcp for
 * STARTTLS, as the TLS mode allows; merged by priority and weight, direct
 * TLS first at equal priority), else the domain itself on 5222 (5223 in
 * EPODE_TLS_DIRECT). Each address is tried in turn. EPODE_ERR_STATE if
 * already started; EPODE_ERR_TLS if the configured CA file cannot be loaded
 * (epode_conn_failure() says why; no events then). */
epode_err epode_conn_connect(epode_conn *c);
/* The host saw `events` on `fd`. Returns EPODE_OK, or once the connection
 * has ended, its failure's error (EPODE_OK for a clean close).
 * EPODE_ERR_STATE if called from inside one of its callbacks. */
epode_err epode_conn_process_fd(epode_conn *c, int fd, unsigned events);
/* The timer requested through epode_timer_fn fired. Same returns. */
epode_err epode_conn_process_timeout(epode_conn *c);
/* Writes what the session has queued now. Rarely needed: stanzas sent with
 * epode_session_send()/send_iq()/close go out by themselves — when the
 * callback returns if sent from one of the connection's callbacks, else at
 * the host's next loop iteration (a 0 ms timer), so that many stanzas sent
 * in one go travel together. Call this to write before returning to the
 * loop. */
epode_err epode_conn_flush(epode_conn *c);
/* Ends the stream politely (the session's close, then TLS close_notify and
 * the socket) — finishes asynchronously with EPODE_EV_CLOSED, after the
 * server's </stream:stream> or EPODE_TIMEOUT_CLOSE. Before the stream is
 * open it just stops (EPODE_EV_CLOSED with err EPODE_OK from the next
 * process call). Calling it again is harmless. EPODE_ERR_STATE if never
 * connected or already closed. */
epode_err epode_conn_close(epode_conn *c);

/* The connection's state: its own while resolving, connecting and in the
 * TLS handshake, then the session's; CLOSING while its last bytes drain. */
epode_state epode_conn_state(const epode_conn *c);
/* Why the connection failed (err EPODE_OK while it has not): the
 * connection's own failure (DNS, CONNECT, TLS, TLS_VERIFY, EOF, IO, with a
 * detail naming hosts, addresses and the system's or OpenSSL's reason) if
 * it has one, else the session's. Never NULL. */
const epode_failure *epode_conn_failure(const epode_conn *c);

/* Milliseconds on the clock epode uses (CLOCK_MONOTONIC). */
uint64_t epode_now_ms(void);

#ifdef __cplusplus
}
#endif
#endif
