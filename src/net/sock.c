/* Non-blocking TCP connect over an ordered address list: one attempt at a
 * time, each bounded by its own timeout; a refused, unreachable or timed-out
 * attempt moves on to the next address, and the failure names them all. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/net.h"
#include "util/alloc.h"

struct epode__connector {
  const epode_config *cfg;
  epode__addr *addrs;
  size_t n;
  size_t cur; /* address being tried */
  int fd;
  uint32_t timeout_ms;
  uint64_t deadline; /* of the current attempt; 0: none */
  int done;
  epode_err err;
  char detail[2048];
  size_t detail_len;
  void (*close_fn)(int fd, void *ud);
  void *close_ud;
};

static void close_fd(epode__connector *k, int fd) {
  if (k->close_fn) k->close_fn(fd, k->close_ud);
  close(fd);
}

void epode__connector_set_close_cb(epode__connector *k, void (*fn)(int fd, void *ud), void *ud) {
  k->close_fn = fn;
  k->close_ud = ud;
}

const epode__addr *epode__connector_addr(const epode__connector *k, size_t i) {
  return k && i < k->n ? &k->addrs[i] : NULL;
}

long epode__sock_send(int fd, const void *p, size_t n) {
  for (;;) {
    ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
    if (r >= 0) return (long)r;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    return -1;
  }
}

long epode__sock_recv(int fd, void *p, size_t n) {
  for (;;) {
    ssize_t r = recv(fd, p, n, 0);
    if (r >= 0) return (long)r;
    if (errno == EINTR) continue;
    return -1;
  }
}

void epode__addr_key_of(const epode__addr *a, epode__addr_key *k) {
  memset(k, 0, sizeof *k);
  k->family = a->sa.ss_family;
  k->direct_tls = a->direct_tls;
  if (a->sa.ss_family == AF_INET) {
    const struct sockaddr_in *v4 = (const struct sockaddr_in *)&a->sa;
    memcpy(k->ip, &v4->sin_addr, 4);
    k->port = v4->sin_port;
  } else if (a->sa.ss_family == AF_INET6) {
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)&a->sa;
    memcpy(k->ip, &v6->sin6_addr, 16);
    k->port = v6->sin6_port;
  }
}

static int same_addr(const epode__addr *x, const epode__addr_key *y) {
  epode__addr_key kx;
  epode__addr_key_of(x, &kx);
  return !memcmp(&kx, y, sizeof kx);
}

void epode__connector_avoid_first(epode__connector *k, const epode__addr_key *a) {
  size_t i;
  for (i = 0; i < k->n && !same_addr(&k->addrs[i], a); i++)
    ;
  if (i == k->n || k->n < 2) return;
  /* Rotate left by i + 1, one element at a time (n is small). */
  for (size_t r = 0; r <= i; r++) {
    epode__addr first = k->addrs[0];
    memmove(k->addrs, k->addrs + 1, (k->n - 1) * sizeof *k->addrs);
    k->addrs[k->n - 1] = first;
  }
}

epode_err epode__connector_new(epode__connector **out, const epode_config *cfg,
                               const epode__addr *addrs, size_t n, uint32_t timeout_ms) {
  if (!out || !cfg || (!addrs && n)) return EPODE_ERR_INVAL;
  *out = NULL;
  epode__connector *k = epode__calloc(&cfg->mem, sizeof *k);
  if (!k) return EPODE_ERR_NOMEM;
  k->cfg = cfg;
  k->fd = -1;
  k->timeout_ms = timeout_ms;
  if (n) {
    k->addrs = epode__alloc(&cfg->mem, n * sizeof *addrs);
    if (!k->addrs) {
      epode__free(&cfg->mem, k);
      return EPODE_ERR_NOMEM;
    }
    memcpy(k->addrs, addrs, n * sizeof *addrs);
  }
  k->n = n;
  *out = k;
  return EPODE_OK;
}

void epode__connector_free(epode__connector *k) {
  if (!k) return;
  if (k->fd >= 0) close_fd(k, k->fd);
  const epode_mem *m = &k->cfg->mem;
  epode__free(m, k->addrs);
  epode__free(m, k);
}

static void note_failure(epode__connector *k, const char *why) {
  char a[80];
  epode__addr_str(&k->addrs[k->cur], a, sizeof a);
  epode__log(k->cfg, EPODE_LOG_INFO, "net", "connecting to %s (%s) failed: %s", a,
             k->addrs[k->cur].host, why);
  if (k->detail_len >= sizeof k->detail) return;
  int w = snprintf(k->detail + k->detail_len, sizeof k->detail - k->detail_len, "%s%s (%s)",
                   k->detail_len ? ", " : "", a, why);
  if (w > 0) k->detail_len += (size_t)w;
  if (k->detail_len >= sizeof k->detail) {
    /* Too many to list: end with an ellipsis rather than a cut word. */
    memcpy(k->detail + sizeof k->detail - 5, ", ...", 5);
    k->detail[sizeof k->detail - 1] = '\0';
  }
}

static void close_current(epode__connector *k) {
  if (k->fd >= 0) close_fd(k, k->fd);
  k->fd = -1;
  k->deadline = 0;
}

/* Starts attempts from k->cur on until one is in progress or all failed. */
static void try_from(epode__connector *k, uint64_t now_ms) {
  for (; k->cur < k->n; k->cur++) {
    const epode__addr *a = &k->addrs[k->cur];
    char as[80];
    epode__addr_str(a, as, sizeof as);
    epode__log(k->cfg, EPODE_LOG_INFO, "net", "connecting to %s (%s)", as, a->host);
    int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0) {
      note_failure(k, strerror(errno));
      continue;
    }
    int one = 1;
    /* XMPP is interactive: small stanzas should not wait for Nagle. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r;
    do
      r = connect(fd, (const struct sockaddr *)&a->sa, a->salen);
    while (r < 0 && errno == EINTR);
    if (r == 0 || errno == EINPROGRESS) {
      k->fd = fd;
      k->deadline = k->timeout_ms ? now_ms + k->timeout_ms : 0;
      if (r == 0) {
        /* Connected at once (loopback can): report it as done. */
        k->done = 1;
        k->err = EPODE_OK;
        k->deadline = 0;
      }
      return;
    }
    note_failure(k, strerror(errno));
    close(fd);
  }
  k->done = 1;
  k->err = EPODE_ERR_CONNECT;
  if (!k->n) snprintf(k->detail, sizeof k->detail, "no addresses to try");
}

void epode__connector_start(epode__connector *k, uint64_t now_ms) {
  if (!k || k->done || k->fd >= 0) return;
  k->cur = 0;
  try_from(k, now_ms);
}

int epode__connector_fd(const epode__connector *k) { return k && !k->done ? k->fd : -1; }

void epode__connector_process(epode__connector *k, uint64_t now_ms) {
  if (!k || k->done || k->fd < 0) return;
  int soerr = 0;
  socklen_t len = sizeof soerr;
  if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0) soerr = errno;
  if (soerr == 0) {
    /* Writable without an error could still be spurious; getpeername tells
     * whether the handshake really completed. */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(k->fd, (struct sockaddr *)&ss, &sl) == 0) {
      k->done = 1;
      k->err = EPODE_OK;
      k->deadline = 0;
      return;
    }
    if (errno != ENOTCONN)
      soerr = errno;
    else
      return; /* still in progress */
  }
  if (soerr == EINPROGRESS || soerr == EALREADY) return;
  note_failure(k, strerror(soerr));
  close_current(k);
  k->cur++;
  try_from(k, now_ms);
}

void epode__connector_process_timeout(epode__connector *k, uint64_t now_ms) {
  if (!k || k->done || k->fd < 0 || !k->deadline || now_ms < k->deadline) return;
  char why[64];
  snprintf(why, sizeof why, "timed out after %u ms", (unsigned)k->timeout_ms);
  note_failure(k, why);
  close_current(k);
  k->cur++;
  try_from(k, now_ms);
}

int64_t epode__connector_deadline(const epode__connector *k) {
  return k && !k->done && k->deadline ? (int64_t)k->deadline : -1;
}

int epode__connector_done(const epode__connector *k) { return k && k->done; }

epode_err epode__connector_result(epode__connector *k, int *fd, size_t *which,
                                  const char **detail) {
  if (fd) *fd = -1;
  if (which) *which = 0;
  if (detail) *detail = k->err ? k->detail : "";
  if (!k->done) return EPODE_ERR_STATE;
  if (k->err) return k->err;
  if (fd) {
    *fd = k->fd;
    k->fd = -1; /* now the caller's */
  }
  if (which) *which = k->cur;
  return EPODE_OK;
}
