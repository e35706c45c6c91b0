/* epode — the built-in event loop (L3), optional.
 *
 * An epoll loop that drives any number of connections, the host's own file
 * descriptors (stdin, a signalfd, …) and timers. Single-threaded, except
 * epode_loop_wakeup(), which any thread may call. It starts no threads and
 * keeps no global state.
 *
 * Every callback may watch/unwatch any fd, add/remove connections, start and
 * stop timers and call epode_loop_stop(); an event still pending for an fd
 * unwatched earlier in the same iteration is dropped, never delivered to a
 * stale callback. Times are milliseconds on CLOCK_MONOTONIC. */
#ifndef EPODE_LOOP_H
#define EPODE_LOOP_H

#include <stdint.h>

#include "conn.h"
#include "error.h"
#include "mem.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct epode_loop epode_loop;
typedef struct epode_loop_timer epode_loop_timer;

typedef enum epode_run_mode {
  /* Until epode_loop_stop(), or until nothing is left: no watched fd, no
   * connection, no timer. (The wakeup eventfd does not count.) */
  EPODE_RUN_DEFAULT = 0,
  /* Wait for at least one event (fd, due timer, or epode_loop_wakeup()),
   * handle what is ready, return. Waits even when nothing is watched, so
   * only a wakeup ends it then. */
  EPODE_RUN_ONCE,
  /* Handle what is ready now (due timers, ready fds), never wait. */
  EPODE_RUN_NOWAIT
} epode_run_mode;

typedef void (*epode_loop_fd_fn)(epode_loop *loop, int fd, unsigned events, void *ud);
/* Return 1 to keep a repeating timer, 0 to stop it (it is then freed). */
typedef int (*epode_loop_timer_fn)(epode_loop *loop, void *ud);
typedef void (*epode_loop_wakeup_fn)(epode_loop *loop, void *ud);

/* Creates a loop (an epoll fd and an eventfd, both close-on-exec).
 * EPODE_ERR_SYS if the kernel refuses them. */
epode_err epode_loop_new(epode_loop **out, const epode_mem *mem);
/* Frees the loop and its timers; closes only its own fds. Connections still
 * attached are detached (their io callbacks uninstalled), not freed. Host
 * fds are not closed. Called from one of the loop's callbacks, the loop is
 * freed when epode_loop_run() returns (it then returns at once). */
void epode_loop_free(epode_loop *loop);

/* Drives `c` from this loop: installs its io/timer callbacks
 * (epode_conn_set_io), registers its fds as it reports them and calls
 * epode_conn_process_fd() / _process_timeout(). Attach before
 * epode_conn_connect(). EPODE_ERR_STATE if `c` is already attached here.
 * The connection must be removed (or the loop freed) before it is freed. */
epode_err epode_loop_add_conn(epode_loop *loop, epode_conn *c);
/* Unregisters the connection's fds and timer and uninstalls its callbacks
 * (epode_conn_set_io(c, NULL, NULL, NULL)); does not close or free it.
 * Allowed from any callback, including the connection's own event callback.
 * EPODE_ERR_NOTFOUND if `c` is not attached to this loop. */
epode_err epode_loop_remove_conn(epode_loop *loop, epode_conn *c);

/* Watches a host fd. events: EPODE_IO_READ|EPODE_IO_WRITE (not 0). On
 * hang-up or error the callback gets EPODE_IO_READ (plus EPODE_IO_WRITE if
 * watched) so the host's read sees EOF or the error. Level-triggered.
 * Watching an fd again changes its events and callback. EPODE_ERR_INVAL for
 * a bad fd or one epoll refuses (a regular file), EPODE_ERR_STATE for an fd
 * that belongs to an attached connection. */
epode_err epode_loop_watch(epode_loop *loop, int fd, unsigned events, epode_loop_fd_fn fn,
                           void *ud);
/* Stops watching `fd` (which may already be closed). EPODE_ERR_NOTFOUND if
 * it was not watched. */
epode_err epode_loop_unwatch(epode_loop *loop, int fd);

/* Timer after delay_ms, then every repeat_ms (0 = once), counted from the
 * moment it is (re)armed. `out` may be NULL. Timers with the same
 * deadline fire in the order they were started. A timer started with delay 0
 * from a timer callback fires in a later pass, never in the one running.
 * The loop owns the timer: a one-shot timer, and a repeating one whose
 * callback returns 0, is freed once its callback returns — its handle is
 * then invalid and must not be stopped. */
epode_err epode_loop_timer_start(epode_loop *loop, epode_loop_timer **out, uint64_t delay_ms,
                                 uint64_t repeat_ms, epode_loop_timer_fn fn, void *ud);
/* Cancels and frees a pending timer. Allowed from any callback, including
 * the timer's own (it is then freed when the callback returns, whatever it
 * returns). NULL is fine. */
void epode_loop_timer_stop(epode_loop *loop, epode_loop_timer *t);

/* Runs the loop in `mode` (see epode_run_mode). Not re-entrant:
 * EPODE_ERR_STATE if called from one of the loop's callbacks.
 * EPODE_ERR_SYS if epoll_wait fails; EPODE_ERR_NOMEM/SYS/INVAL, after the
 * current iteration, if registering a connection's fd failed (the callback
 * through which the connection asked could not return it). */
epode_err epode_loop_run(epode_loop *loop, epode_run_mode mode);
/* Makes epode_loop_run() return after the current iteration (which then
 * does not wait). Called while the loop is not running, the next run does
 * one non-waiting iteration and returns. */
void epode_loop_stop(epode_loop *loop);
/* Thread-safe: wakes the loop from another thread;
 * `fn` (set by epode_loop_set_wakeup_cb) then runs on the loop's thread.
 * Wakeups made before the loop gets to them coalesce into one callback.
 * The loop must outlive the call. */
epode_err epode_loop_wakeup(epode_loop *loop);
/* Loop thread only. NULL fn: wakeups just interrupt the wait. */
void epode_loop_set_wakeup_cb(epode_loop *loop, epode_loop_wakeup_fn fn, void *ud);
/* The loop's cached time: CLOCK_MONOTONIC in ms (the clock of epode_now_ms()),
 * read when the current iteration started and again after its wait. */
uint64_t epode_loop_now(const epode_loop *loop);

#ifdef __cplusplus
}
#endif
#endif
