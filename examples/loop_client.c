/* loop_client — epode's built-in loop driving a connection and stdin.
 *
 *   EPODE_JID=me@example.org EPODE_PASSWORD=secret \
 *     loop_client [--server host:port] [--cafile ca.pem] [--jid JID] TO [MESSAGE]
 *
 * Sends MESSAGE (if given) and then every line typed on stdin to TO as a
 * chat message. At end of input (Ctrl-D, or the end of a pipe or file) it
 * closes the stream cleanly and exits 0; on failure it prints what
 * epode_conn_failure() says and exits 1 (2 for usage errors).
 *
 *   printf 'one\ntwo\n' | loop_client friend@example.org
 *
 * What it shows:
 *  - epode_loop_add_conn(): the loop registers the connection's fds and
 *    timer itself; the host never sees them;
 *  - epode_loop_watch(): the host's own fds (here stdin) on the same loop;
 *  - stanzas sent before the session is ready are queued and go out, in
 *    order, once it is — so lines can be sent as soon as they are read;
 *  - tearing down from inside a callback: on EPODE_EV_CLOSED the event
 *    callback removes the connection from the loop and stops it.
 *
 * The password is read from the environment only: argv is visible to every
 * user through ps. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <epode/epode.h>

typedef struct app {
  epode_loop *loop;
  epode_conn *conn;
  const char *to;
  int ready;
  int stdin_watched;
  int stdin_eof;
  int closing;
  int closed;
  int send_failed;
  char line[4096]; /* a partial line read from stdin */
  size_t len;
} app;

/* ------------------------------------------------------------------ sending */

static void send_text(app *a, char *text) {
  size_t n = strlen(text);
  if (n && text[n - 1] == '\r') text[--n] = '\0';
  if (n == 0) return;
  epode_stanza *msg = NULL;
  epode_err err = epode_message_new(&msg, NULL, "chat", a->to, text);
  /* Before the session is ready this queues the stanza (bounded by
   * EPODE_LIMIT_SEND_QUEUE); after, it goes out at once. */
  if (!err) err = epode_session_send(epode_conn_session(a->conn), msg);
  epode_stanza_free(msg);
  if (err) {
    fprintf(stderr, "loop_client: not sent: %s\n", epode_strerror(err));
    a->send_failed = 1;
  }
}

/* Closes the stream once there is nothing more to send and the session is
 * up (closing earlier would drop the queued messages). */
static void maybe_close(app *a) {
  if (a->ready && a->stdin_eof && !a->closing) {
    a->closing = 1;
    epode_conn_close(a->conn);
  }
}

/* ------------------------------------------------------------------ stdin */

static void stdin_done(app *a) {
  if (a->len) { /* a last line without a newline */
    a->line[a->len] = '\0';
    send_text(a, a->line);
    a->len = 0;
  }
  if (a->stdin_watched) {
    epode_loop_unwatch(a->loop, STDIN_FILENO);
    a->stdin_watched = 0;
  }
  a->stdin_eof = 1;
  maybe_close(a);
}

/* Sends each complete line in the buffer and keeps the rest. */
static void flush_lines(app *a) {
  size_t start = 0;
  for (size_t i = 0; i < a->len; i++) {
    if (a->line[i] != '\n') continue;
    a->line[i] = '\0';
    send_text(a, a->line + start);
    start = i + 1;
  }
  memmove(a->line, a->line + start, a->len - start);
  a->len -= start;
  if (a->len == sizeof a->line - 1) { /* an overlong line goes out in pieces */
    a->line[a->len] = '\0';
    send_text(a, a->line);
    a->len = 0;
  }
}

/* The loop says stdin is readable (or at EOF / in error: also "readable",
 * so that this read finds out). Level-triggered: one read per call is
 * enough, and it cannot block, so stdin's flags are left alone. */
static void on_stdin(epode_loop *loop, int fd, unsigned events, void *ud) {
  app *a = ud;
  ssize_t r = read(fd, a->line + a->len, sizeof a->line - 1 - a->len);
  if (r < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (r <= 0) {
    if (r < 0) perror("loop_client: stdin");
    stdin_done(a);
    return;
  }
  a->len += (size_t)r;
  flush_lines(a);
}

/* epoll refuses regular files (they are always "ready"), so `< file` cannot
 * be watched. Reading a regular file never blocks, so read it all now. */
static void read_regular_stdin(app *a) {
  ssize_t r;
  while ((r = read(STDIN_FILENO, a->line + a->len, sizeof a->line - 1 - a->len)) > 0) {
    a->len += (size_t)r;
    flush_lines(a);
  }
  stdin_done(a);
}

/* ------------------------------------------------------------------ connection events */

static void on_event(const epode_event *ev, void *ud) {
  app *a = ud;
  switch (ev->type) {
  case EPODE_EV_STATE: fprintf(stderr, "loop_client: %s\n", epode_state_name(ev->state)); break;
  case EPODE_EV_READY:
    fprintf(stderr, "loop_client: ready as %s\n", ev->jid);
    a->ready = 1;
    maybe_close(a);
    break;
  case EPODE_EV_ERROR: break; /* EPODE_EV_CLOSED follows; main() prints the failure */
  case EPODE_EV_CLOSED:
    a->closed = 1;
    /* Safe from inside the connection's own callback: the loop finishes
     * with the connection only after this returns. */
    epode_loop_remove_conn(a->loop, a->conn);
    if (a->stdin_watched) {
      epode_loop_unwatch(a->loop, STDIN_FILENO);
      a->stdin_watched = 0;
    }
    epode_loop_stop(a->loop);
    break;
  default: break;
  }
}

/* ------------------------------------------------------------------ main */

static void print_failure(const epode_failure *f) {
  fprintf(stderr, "loop_client: %s: %s", epode_err_name(f->err), f->detail);
  if (f->condition) fprintf(stderr, " [%s]", f->condition);
  if (f->mechanism) fprintf(stderr, " (SASL %s)", f->mechanism);
  if (f->text) fprintf(stderr, " \"%s\"", f->text);
  fputc('\n', stderr);
}

static void usage(void) {
  fprintf(stderr, "usage: EPODE_JID=… EPODE_PASSWORD=… loop_client [--server host:port]\n"
                  "         [--cafile ca.pem] [--jid JID] TO [MESSAGE]\n");
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

static epode_err make_conn(epode_conn **out, const char *jid, const char *password, char *server,
                           const char *cafile) {
  epode_config *cfg = NULL;
  epode_err err = epode_config_new(&cfg, NULL);
  if (!err) err = epode_config_set_jid(cfg, jid);
  if (!err) err = epode_config_set_password(cfg, password);
  if (!err && cafile) err = epode_config_set_cafile(cfg, cafile);
  if (!err && server) {
    char *hostname;
    uint16_t port;
    if (split_server(server, &hostname, &port) != 0) {
      fprintf(stderr, "loop_client: bad --server %s\n", server);
      err = EPODE_ERR_INVAL;
    } else {
      err = epode_config_set_server(cfg, hostname, port);
    }
  }
  if (!err) err = epode_conn_new(out, cfg); /* copies the config */
  epode_config_free(cfg);
  return err;
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
  if (argc - i < 1 || argc - i > 2 || !jid || !password) return usage(), 2;

  static app a; /* static: zeroed, and the line buffer stays off the stack */
  a.to = argv[i];
  const char *message = argc - i == 2 ? argv[i + 1] : NULL;

  /* A write to a socket the peer has closed raises SIGPIPE unless the writer
   * prevents it; a network client should never die of that. */
  signal(SIGPIPE, SIG_IGN);

  epode_err err = epode_loop_new(&a.loop, NULL);
  if (err) {
    fprintf(stderr, "loop_client: loop: %s\n", epode_strerror(err));
    return 1;
  }
  err = make_conn(&a.conn, jid, password, server, cafile);
  if (err) {
    fprintf(stderr, "loop_client: setup: %s\n", epode_strerror(err));
    epode_loop_free(a.loop);
    return err == EPODE_ERR_INVAL ? 2 : 1;
  }
  epode_conn_set_event_cb(a.conn, on_event, &a);

  /* Attach first: connecting opens DNS sockets and arms timers at once. */
  err = epode_loop_add_conn(a.loop, a.conn);
  if (!err) err = epode_conn_connect(a.conn);
  if (err) {
    fprintf(stderr, "loop_client: connect: %s\n", epode_strerror(err));
  } else {
    if (message) {
      char *copy = strdup(message); /* send_text trims a trailing \r in place */
      if (copy)
        send_text(&a, copy); /* queued until the session is ready */
      else
        a.send_failed = 1;
      free(copy);
    }
    err = epode_loop_watch(a.loop, STDIN_FILENO, EPODE_IO_READ, on_stdin, &a);
    if (err == EPODE_OK)
      a.stdin_watched = 1;
    else
      read_regular_stdin(&a);
    /* Runs until on_event() stops it (or, should everything be removed,
     * until nothing is left to watch). */
    err = epode_loop_run(a.loop, EPODE_RUN_DEFAULT);
    if (err) fprintf(stderr, "loop_client: loop: %s\n", epode_strerror(err));
  }

  int rc = 1;
  const epode_failure *f = epode_conn_failure(a.conn);
  if (f->err != EPODE_OK)
    print_failure(f);
  else if (!err && a.closed && !a.send_failed)
    rc = 0;
  /* The loop first (it detaches the connection if still attached), then the
   * connection. */
  epode_loop_free(a.loop);
  epode_conn_free(a.conn);
  return rc;
}
