/* poll_client — drive an epode connection from your own poll() loop.
 *
 *   EPODE_JID=me@example.org EPODE_PASSWORD=secret \
 *     poll_client [--server host:port] [--cafile ca.pem] [--jid JID] TO MESSAGE
 *
 * Connects, sends MESSAGE to TO once the session is ready, closes the stream
 * cleanly and exits 0. On failure it prints what epode_conn_failure() says
 * and exits 1 (2 for usage errors).
 *
 * This shows the "host loop" half of epode's I/O API (conn.h). epode never
 * blocks and never polls by itself; instead it tells the host
 *   - which fds to watch and for what (the epode_io_fn callback), and
 *   - when it next needs to be called back (the epode_timer_fn callback),
 * and the host reports back with epode_conn_process_fd() and
 * epode_conn_process_timeout(). Any event loop can do this; here it is a
 * bare poll(). (examples/loop_client.c does the same with epode's own loop.)
 *
 * The password is read from the environment only: argv is visible to every
 * user through ps. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <epode/epode.h>

/* ------------------------------------------------------------------ the host's fd table
 *
 * A connection uses a handful of fds at a time (DNS sockets while resolving,
 * then the TCP socket), so a small fixed table is plenty. */
#define MAX_FDS 16

typedef struct host {
  struct {
    int fd;
    unsigned events; /* EPODE_IO_READ | EPODE_IO_WRITE */
  } fds[MAX_FDS];
  int nfds;
  int table_full; /* the io callback cannot return an error: remember it */

  int have_deadline;
  uint64_t deadline_ms; /* on epode_now_ms()'s clock */

  /* Application state. */
  epode_conn *conn;
  const char *to;
  const char *body;
  int sent;
  int closed;
} host;

/* epode_io_fn: "watch fd for these events" (0: forget it; the fd may be
 * closed right after this returns). */
static void on_io(int fd, unsigned events, void *ud) {
  host *h = ud;
  for (int i = 0; i < h->nfds; i++) {
    if (h->fds[i].fd != fd) continue;
    if (events == 0)
      h->fds[i] = h->fds[--h->nfds]; /* order does not matter */
    else
      h->fds[i].events = events;
    return;
  }
  if (events == 0) return;
  if (h->nfds == MAX_FDS) {
    h->table_full = 1;
    return;
  }
  h->fds[h->nfds].fd = fd;
  h->fds[h->nfds].events = events;
  h->nfds++;
}

/* epode_timer_fn: "call epode_conn_process_timeout() in timeout_ms"
 * (-1: never mind). Each request replaces the previous one, so one deadline
 * is all the host keeps. */
static void on_timer(int64_t timeout_ms, void *ud) {
  host *h = ud;
  if (timeout_ms < 0) {
    h->have_deadline = 0;
    return;
  }
  h->have_deadline = 1;
  h->deadline_ms = epode_now_ms() + (uint64_t)timeout_ms;
}

/* ------------------------------------------------------------------ session events */

static void print_failure(const epode_failure *f) {
  fprintf(stderr, "poll_client: %s: %s", epode_err_name(f->err), f->detail);
  if (f->condition) fprintf(stderr, " [%s]", f->condition);
  if (f->mechanism) fprintf(stderr, " (SASL %s)", f->mechanism);
  if (f->text) fprintf(stderr, " \"%s\"", f->text);
  fputc('\n', stderr);
}

static void on_event(const epode_event *ev, void *ud) {
  host *h = ud;
  switch (ev->type) {
  case EPODE_EV_STATE: fprintf(stderr, "poll_client: %s\n", epode_state_name(ev->state)); break;
  case EPODE_EV_READY: {
    fprintf(stderr, "poll_client: ready as %s\n", ev->jid);
    epode_stanza *msg = NULL;
    epode_err err = epode_message_new(&msg, NULL, "chat", h->to, h->body);
    if (!err) err = epode_session_send(epode_conn_session(h->conn), msg);
    epode_stanza_free(msg); /* send serialised it; we keep ownership */
    if (err)
      fprintf(stderr, "poll_client: sending: %s\n", epode_strerror(err));
    else
      h->sent = 1;
    /* A polite close goes out after the message on the same stream, so the
     * server has the message once it answers our </stream:stream>. */
    epode_conn_close(h->conn);
    break;
  }
  case EPODE_EV_ERROR: break; /* EPODE_EV_CLOSED follows; main() prints the failure */
  case EPODE_EV_CLOSED: h->closed = 1; break;
  default: break;
  }
}

/* ------------------------------------------------------------------ the loop */

/* Milliseconds until the deadline, as poll() wants it (-1: no deadline). */
static int poll_timeout(const host *h) {
  if (!h->have_deadline) return -1;
  uint64_t now = epode_now_ms();
  if (h->deadline_ms <= now) return 0;
  uint64_t d = h->deadline_ms - now;
  return d > 0x7fffffff ? 0x7fffffff : (int)d;
}

static int run(host *h) {
  while (!h->closed) {
    if (h->table_full) {
      fprintf(stderr, "poll_client: more than %d fds requested\n", MAX_FDS);
      return -1;
    }
    /* Snapshot the table: callbacks made while we process the results may
     * change it. */
    struct pollfd pfd[MAX_FDS];
    int n = h->nfds;
    for (int i = 0; i < n; i++) {
      pfd[i].fd = h->fds[i].fd;
      pfd[i].events = (short)(((h->fds[i].events & EPODE_IO_READ) ? POLLIN : 0) |
                              ((h->fds[i].events & EPODE_IO_WRITE) ? POLLOUT : 0));
      pfd[i].revents = 0;
    }
    int r = poll(pfd, (nfds_t)n, poll_timeout(h));
    if (r < 0) {
      if (errno == EINTR) continue;
      perror("poll_client: poll");
      return -1;
    }
    for (int i = 0; i < n && !h->closed; i++) {
      if (!pfd[i].revents) continue;
      /* An earlier call in this round may have dropped the fd (and it may
       * even be a new socket with the same number by now): only pass on
       * readiness for fds epode still wants. */
      unsigned want = 0;
      for (int k = 0; k < h->nfds; k++)
        if (h->fds[k].fd == pfd[i].fd) want = h->fds[k].events;
      if (!want) continue;
      unsigned events = 0;
      if (pfd[i].revents & POLLIN) events |= EPODE_IO_READ;
      if (pfd[i].revents & POLLOUT) events |= EPODE_IO_WRITE;
      /* Hang-up or error: report it as readiness, so epode's read or write
       * (or its check of a pending connect) finds out what happened. */
      if (pfd[i].revents & (POLLHUP | POLLERR | POLLNVAL)) events |= want;
      events &= want;
      if (events) epode_conn_process_fd(h->conn, pfd[i].fd, events);
    }
    if (!h->closed && h->have_deadline && epode_now_ms() >= h->deadline_ms) {
      h->have_deadline = 0; /* one request, one callback */
      epode_conn_process_timeout(h->conn);
    }
  }
  return 0;
}

/* ------------------------------------------------------------------ main */

static void usage(void) {
  fprintf(stderr, "usage: EPODE_JID=… EPODE_PASSWORD=… poll_client [--server host:port]\n"
                  "         [--cafile ca.pem] [--jid JID] TO MESSAGE\n");
}

/* "host:port", "host", "[v6]:port". Returns 0 on success. */
static int split_server(char *arg, char **hostp, uint16_t *port) {
  char *colon;
  *port = 0;
  if (arg[0] == '[') {
    char *end = strchr(arg, ']');
    if (!end) return -1;
    *end = '\0';
    *hostp = arg + 1;
    colon = end[1] == ':' ? end + 1 : NULL;
    if (end[1] && !colon) return -1;
  } else {
    *hostp = arg;
    colon = strrchr(arg, ':');
    if (colon) *colon = '\0';
  }
  if (colon) {
    char *e;
    long p = strtol(colon + 1, &e, 10);
    if (*e || p <= 0 || p > 65535) return -1;
    *port = (uint16_t)p;
  }
  return **hostp ? 0 : -1;
}

int main(int argc, char **argv) {
  const char *jid = getenv("EPODE_JID");
  const char *password = getenv("EPODE_PASSWORD");
  const char *cafile = NULL;
  char *server = NULL;
  int i = 1;
  for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
    if (strcmp(argv[i], "--") == 0) {
      i++;
      break;
    }
    if (i + 1 >= argc) return usage(), 2;
    if (strcmp(argv[i], "--server") == 0)
      server = argv[++i];
    else if (strcmp(argv[i], "--cafile") == 0)
      cafile = argv[++i];
    else if (strcmp(argv[i], "--jid") == 0)
      jid = argv[++i];
    else
      return usage(), 2;
  }
  if (argc - i != 2 || !jid || !password) return usage(), 2;

  host h;
  memset(&h, 0, sizeof h);
  h.to = argv[i];
  h.body = argv[i + 1];

  /* A write to a socket the peer has closed raises SIGPIPE unless the writer
   * prevents it; a network client should never die of that. */
  signal(SIGPIPE, SIG_IGN);

  epode_config *cfg = NULL;
  epode_err err = epode_config_new(&cfg, NULL);
  if (!err) err = epode_config_set_jid(cfg, jid);
  if (!err) err = epode_config_set_password(cfg, password);
  if (!err && cafile) err = epode_config_set_cafile(cfg, cafile);
  if (!err && server) {
    char *hostname;
    uint16_t port;
    if (split_server(server, &hostname, &port) != 0) {
      fprintf(stderr, "poll_client: bad --server %s\n", server);
      epode_config_free(cfg);
      return 2;
    }
    err = epode_config_set_server(cfg, hostname, port);
  }
  /* The connection copies the config, which can go right away. */
  if (!err) err = epode_conn_new(&h.conn, cfg);
  epode_config_free(cfg);
  if (err) {
    fprintf(stderr, "poll_client: setup: %s\n", epode_strerror(err));
    return 1;
  }

  epode_conn_set_event_cb(h.conn, on_event, &h);
  /* Install the io/timer callbacks before connecting: connecting already
   * opens DNS sockets and arms the connect timeout. */
  epode_conn_set_io(h.conn, on_io, on_timer, &h);
  err = epode_conn_connect(h.conn);
  int rc = 1;
  if (err) {
    fprintf(stderr, "poll_client: connect: %s\n", epode_strerror(err));
  } else if (run(&h) == 0) {
    const epode_failure *f = epode_conn_failure(h.conn);
    if (f->err != EPODE_OK)
      print_failure(f);
    else if (h.sent)
      rc = 0;
    else
      fprintf(stderr, "poll_client: closed before the message was sent\n");
  }
  epode_conn_free(h.conn);
  return rc;
}
