/* Drives an epode_conn from the built-in loop: the connection becomes a loop
 * source whose fds and timer are reported through epode_conn_set_io(). Kept
 * apart from loop.c so the loop itself links (and is unit-tested) without
 * the network layer. */
#include "loop/loop_int.h"
#include "net/net.h"

#include "util/alloc.h"

typedef struct conn_src {
  epode__loop_src base; /* first: the loop frees the source through it */
  epode_conn *conn;
} conn_src;

static void conn_on_fd(epode__loop_src *src, int fd, unsigned events) {
  /* An error here has already been reported through the connection's event
   * callback (EPODE_EV_ERROR / EPODE_EV_CLOSED); the loop carries on. */
  (void)epode_conn_process_fd(((conn_src *)src)->conn, fd, events);
}

static void conn_on_timeout(epode__loop_src *src) {
  (void)epode_conn_process_timeout(((conn_src *)src)->conn);
}

static void conn_on_detach(epode__loop_src *src) {
  epode_conn_set_io(((conn_src *)src)->conn, NULL, NULL, NULL);
}

/* The loop source driving `c`, if a loop drives it: the connection keeps
 * the source as its io callbacks' ud, so this is O(1) however many
 * connections the loop has (a search made attaching N connections O(N²)). */
static epode__loop_src *src_of(const epode_conn *c) {
  epode_io_fn fn;
  void *ud = epode__conn_io_ud(c, &fn);
  if (fn != epode__loop_src_io || !ud) return NULL;
  epode__loop_src *src = ud;
  return src->key == c ? src : NULL;
}

epode_err epode_loop_add_conn(epode_loop *loop, epode_conn *c) {
  if (!loop || !c) return EPODE_ERR_INVAL;
  if (src_of(c)) return EPODE_ERR_STATE; /* driven by a loop already (this or another) */
  const epode_mem *mem = epode__loop_mem(loop);
  conn_src *cs = epode__calloc(mem, sizeof *cs);
  if (!cs) return EPODE_ERR_NOMEM;
  cs->conn = c;
  cs->base.key = c;
  cs->base.on_fd = conn_on_fd;
  cs->base.on_timeout = conn_on_timeout;
  cs->base.on_detach = conn_on_detach;
  epode_err err = epode__loop_src_attach(loop, &cs->base);
  if (err) {
    epode__free(mem, cs);
    return err;
  }
  /* The connection reports the fds and timer it already has (if it is
   * connecting) to the new callbacks as it installs them. */
  epode_conn_set_io(c, epode__loop_src_io, epode__loop_src_timer, &cs->base);
  return EPODE_OK;
}

epode_err epode_loop_remove_conn(epode_loop *loop, epode_conn *c) {
  if (!loop || !c) return EPODE_ERR_INVAL;
  epode__loop_src *src = src_of(c);
  if (!src || src->loop != loop) return EPODE_ERR_NOTFOUND;
  epode__loop_src_detach(src);
  return EPODE_OK;
}
