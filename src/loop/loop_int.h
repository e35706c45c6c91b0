/* Internals of the built-in loop (L3), shared by loop.c and loop_conn.c.
 *
 * loop.c knows nothing of epode_conn: a connection is attached as a generic
 * "source" (epode__loop_src) whose fds and timer are driven through the two
 * adapters epode__loop_src_io() / epode__loop_src_timer(), which have the
 * signatures of epode_io_fn / epode_timer_fn. loop_conn.c wraps an
 * epode_conn in a source. Keeping the split lets the unit tests drive the
 * adapters with a fake source and link without the network layer. */
#ifndef EPODE_SRC_LOOP_LOOP_INT_H
#define EPODE_SRC_LOOP_LOOP_INT_H

#include <stddef.h>
#include <stdint.h>

#include "epode/loop.h"

/* A timer. Public ones (epode_loop_timer_start) are allocated and owned by
 * the loop; a source embeds one it owns itself. */
struct epode_loop_timer {
  uint64_t when;  /* absolute deadline, ms on CLOCK_MONOTONIC */
  uint64_t seq;   /* arming order: ties on `when` fire first-armed first */
  uint64_t epoch; /* timer pass during which it was armed (see run_timers) */
  uint64_t repeat;
  epode_loop_timer_fn fn;
  void *ud;
  size_t idx;              /* position in the heap, EPODE__LOOP_NOIDX when not armed */
  unsigned char owned;     /* allocated by epode_loop_timer_start; freed by the loop */
  unsigned char running;   /* (owned) its callback is executing */
  unsigned char cancelled; /* (owned) stopped from inside its own callback */
};

#define EPODE__LOOP_NOIDX ((size_t)-1)

typedef struct epode__loop_src epode__loop_src;
struct epode__loop_src {
  /* Filled in by the creator before epode__loop_src_attach(). */
  void *key; /* what epode__loop_src_find() matches (the epode_conn) */
  void (*on_fd)(epode__loop_src *src, int fd, unsigned events);
  void (*on_timeout)(epode__loop_src *src);
  /* Called first when the source is detached (the conn adapter uninstalls
   * its callbacks here). May be NULL. */
  void (*on_detach)(epode__loop_src *src);

  /* Owned by loop.c. */
  epode_loop *loop;
  epode_loop_timer timer;
  unsigned busy;          /* nesting depth of calls into on_fd/on_timeout */
  unsigned char attached; /* adapters ignore calls once this is 0 */
  unsigned char dead;     /* detached while busy: freed when busy drops to 0 */
  epode__loop_src *prev, *next;
};

/* The loop's allocation hooks (sources are allocated with them, zeroed). */
const epode_mem *epode__loop_mem(const epode_loop *loop);

/* Links a zero-initialised source allocated with epode__loop_mem() whose
 * key/on_fd/on_timeout/on_detach are set. On error nothing is kept and the
 * caller still owns `src`. After success the loop owns it. */
epode_err epode__loop_src_attach(epode_loop *loop, epode__loop_src *src);
/* Calls on_detach, unregisters every fd of the source, cancels its timer,
 * unlinks it and frees it (at once, or when the call into it that is in
 * progress returns). */
void epode__loop_src_detach(epode__loop_src *src);
/* The attached source with this key, or NULL. */
epode__loop_src *epode__loop_src_find(epode_loop *loop, const void *key);

/* epode_io_fn for a source (ud = the source). events 0 unregisters. Errors
 * cannot be returned through the callback: they are recorded on the loop and
 * epode_loop_run() returns them. */
void epode__loop_src_io(int fd, unsigned events, void *ud);
/* epode_timer_fn for a source (ud = the source): -1 cancels, otherwise
 * replaces the pending request. */
void epode__loop_src_timer(int64_t timeout_ms, void *ud);

#endif
