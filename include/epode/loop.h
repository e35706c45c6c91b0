/* epode — the built-in event loop (L3), optional.
 *
 * An epoll loop that drives any number of connections, the host's own file
 * descriptors (stdin, a signalfd, …) and timers. Single-threaded, except
 * epode_loop_wakeup(), which any thread may call. */
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
  EPODE_RUN_DEFAULT = 0, /* until epode_loop_stop() or nothing is left to watch */
  EPODE_RUN_ONCE,        /* wait for at least one event, handle what is ready, return */
  EPODE_RUN_NOWAIT       /* handle what is ready now, never wait */
} epode_run_mode;

typedef void (*epode_loop_fd_fn)(epode_loop *loop, int fd, unsigned events, void *ud);
/* Return 1 to keep a repeating timer, 0 to stop it (it is then freed). */
typedef int (*epode_loop_timer_fn)(epode_loop *loop, void *ud);
typedef void (*epode_loop_wakeup_fn)(epode_loop *loop, void *ud);

epode_err epode_loop_new(epode_loop **out, const epode_mem *mem);
/* Frees the loop. Connections still attached are detached, not freed. */
void epode_loop_free(epode_loop *loop);

/* Drives `c` from this loop (installs its io/timer callbacks). */
epode_err epode_loop_add_conn(epode_loop *loop, epode_conn *c);
epode_err epode_loop_remove_conn(epode_loop *loop, epode_conn *c);

/* Watches a host fd. events: EPODE_IO_READ|EPODE_IO_WRITE; the callback also
 * gets EPODE_IO_READ on hang-up/error so the host's read sees it.
 * Watching an fd again changes its events and callback. */
epode_err epode_loop_watch(epode_loop *loop, int fd, unsigned events, epode_loop_fd_fn fn,
                           void *ud);
epode_err epode_loop_unwatch(epode_loop *loop, int fd);

/* Timer after delay_ms, then every repeat_ms (0 = once). `out` may be NULL.
 * A one-shot timer is freed after it fires. */
epode_err epode_loop_timer_start(epode_loop *loop, epode_loop_timer **out, uint64_t delay_ms,
                                 uint64_t repeat_ms, epode_loop_timer_fn fn, void *ud);
void epode_loop_timer_stop(epode_loop *loop, epode_loop_timer *t);

epode_err epode_loop_run(epode_loop *loop, epode_run_mode mode);
/* Makes epode_loop_run() return after the current iteration. */
void epode_loop_stop(epode_loop *loop);
/* Thread-safe: wakes the loop from another thread; `fn` (set by
 * epode_loop_set_wakeup_cb) then runs on the loop's thread. */
epode_err epode_loop_wakeup(epode_loop *loop);
void epode_loop_set_wakeup_cb(epode_loop *loop, epode_loop_wakeup_fn fn, void *ud);
/* The loop's cached time (epode_now_ms() at the start of this iteration). */
uint64_t epode_loop_now(const epode_loop *loop);

#ifdef __cplusplus
}
#endif
#endif
