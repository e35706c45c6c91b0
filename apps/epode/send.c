/* `epode send`: one message to each JID given, then a clean close.
 *
 * Everything that can be checked before connecting is: the recipients are
 * valid JIDs and the body is text XML can carry, so a typo never costs a
 * login (and exits 2, not some network code). */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* Largest body accepted from stdin or -m. Servers commonly cap a stanza at
 * 256 KiB to 10 MiB; past 1 MiB this is surely the wrong input. */
#define BODY_MAX (1024u * 1024u)

enum { OPT_MESSAGE = APP_OPT_COMMAND_BASE, OPT_TYPE, OPT_EACH_LINE };

/* --each-line: the longest line kept while waiting for its newline. */
#define LINE_MAX_BYTES (64u * 1024u)

typedef struct send_ctx {
  const char *message;
  const char *type;
  char **to;
  int n_to;
  const char *body;
  int sent;
  int acked, failed; /* delivery reports (XEP-0198 acks or the clean close) */
  app_client *cl;
  /* --each-line: every line of standard input is its own message. */
  int each_line;
  int lines_sent, lines_bad;
  char line[LINE_MAX_BYTES + 1];
  size_t line_len;
  int line_overflow;
  int stdin_watched, stdin_regular, lines_timer_on;
} send_ctx;

static void on_delivery(epode_session *s, epode_delivery status, const char *id, void *ud) {
  send_ctx *sc = ud;
  if (status == EPODE_DELIVERY_ACKED)
    sc->acked++;
  else
    sc->failed++;
}

static int own_option(int opt, const char *arg, void *ud) {
  send_ctx *sc = ud;
  switch (opt) {
  case 'm':
  case OPT_MESSAGE: sc->message = arg; return 0;
  case OPT_EACH_LINE: sc->each_line = 1; return 0;
  case 't':
  case OPT_TYPE:
    if (strcmp(arg, "chat") && strcmp(arg, "normal") && strcmp(arg, "headline"))
      return app_usage_error("send", "--type must be chat, normal or headline, not '%s'", arg);
    sc->type = arg;
    return 0;
  default: return app_usage_error("send", "unexpected option");
  }
}

/* Sends the next messages while the session's unsent output stays below
 * this; the rest follow as the socket takes it. Many recipients of a large
 * body would otherwise overrun EPODE_LIMIT_OUTPUT_BYTES (8 MiB by default). */
#define OUTPUT_HIGH_WATER (1024u * 1024u)
/* How often to look again while output drains. */
#define PUMP_PERIOD_MS 5u

/* Sends what fits; closes after the last. Returns 1 while more remain. */
static int pump(app_client *cl, send_ctx *sc) {
  epode_session *s = app_client_session(cl);
  if (app_client_closing(cl)) return 0;
  while (sc->sent < sc->n_to) {
    if (sc->sent > 0 && epode_session_output_len(s) > OUTPUT_HIGH_WATER) return 1;
    const char *to = sc->to[sc->sent];
    epode_stanza *msg = NULL;
    char id[32];
    /* An id lets the sender match a bounce (type='error') to its message. */
    epode_err err = epode_session_new_id(s, id, sizeof id);
    if (!err) err = epode_message_new(&msg, NULL, sc->type, to, sc->body);
    if (!err) err = epode_stanza_set_attr(msg, "id", id);
    if (!err) err = epode_session_send_tracked(s, msg, on_delivery, sc);
    epode_stanza_free(msg);
    if (err) {
      app_err("sending to %s: %s", to, epode_strerror(err));
      app_client_close(cl, app_exit_for_err(err) ? app_exit_for_err(err) : APP_EXIT_ERROR);
      return 0;
    }
    sc->sent++;
  }
  /* The messages are queued ahead of </stream:stream>: closing now sends
   * them first, and the server's </stream:stream> confirms it read them. */
  app_client_close(cl, APP_EXIT_OK);
  return 0;
}

/* ------------------------------------------------------------ --each-line */

static void send_line(send_ctx *sc, const char *text, size_t len) {
  if (len && text[len - 1] == '\r') len--;
  if (!len) return; /* empty lines carry nothing */
  size_t at = 0;
  const char *problem = app_body_problem(text, len, &at);
  if (problem) {
    app_err("line %d not sent: %s at byte %zu", sc->lines_sent + sc->lines_bad + 1, problem, at);
    sc->lines_bad++;
    return;
  }
  char *body = strndup(text, len);
  if (!body) {
    app_err("out of memory");
    sc->lines_bad++;
    return;
  }
  epode_session *s = app_client_session(sc->cl);
  for (int i = 0; i < sc->n_to; i++) {
    epode_stanza *msg = NULL;
    char id[32];
    epode_err err = epode_session_new_id(s, id, sizeof id);
    if (!err) err = epode_message_new(&msg, NULL, sc->type, sc->to[i], body);
    if (!err) err = epode_stanza_set_attr(msg, "id", id);
    if (!err) err = epode_session_send_tracked(s, msg, on_delivery, sc);
    epode_stanza_free(msg);
    if (err) {
      app_err("sending a line to %s: %s", sc->to[i], epode_strerror(err));
      sc->lines_bad++;
      break;
    }
    sc->sent++;
  }
  sc->lines_sent++;
  free(body);
}

/* Complete lines go out; the rest waits for its newline. */
static void take_lines(send_ctx *sc, int eof) {
  size_t start = 0;
  for (size_t i = 0; i < sc->line_len; i++) {
    if (sc->line[i] != '\n') continue;
    send_line(sc, sc->line + start, i - start);
    start = i + 1;
  }
  memmove(sc->line, sc->line + start, sc->line_len - start);
  sc->line_len -= start;
  if (eof && sc->line_len) {
    send_line(sc, sc->line, sc->line_len);
    sc->line_len = 0;
  }
}

static void finish_lines(send_ctx *sc) {
  if (sc->stdin_watched) epode_loop_unwatch(app_client_loop(sc->cl), STDIN_FILENO);
  sc->stdin_watched = 0;
  take_lines(sc, 1);
  /* Queued ahead of </stream:stream>: the close confirms them (or XEP-0198
   * acks did already). */
  app_client_close(sc->cl, APP_EXIT_OK);
}

static int on_lines_timer(epode_loop *loop, void *ud);

static void on_stdin(epode_loop *loop, int fd, unsigned events, void *ud) {
  send_ctx *sc = ud;
  if (app_client_closing(sc->cl)) return;
  /* Back-pressure: while the connection has a lot to write, stop reading
   * (a fast producer must not grow our memory); a timer resumes. */
  if (epode_session_output_len(app_client_session(sc->cl)) > OUTPUT_HIGH_WATER) {
    if (sc->stdin_watched) {
      epode_loop_unwatch(loop, fd);
      sc->stdin_watched = 0;
    }
    if (!sc->lines_timer_on &&
        epode_loop_timer_start(loop, NULL, PUMP_PERIOD_MS, PUMP_PERIOD_MS, on_lines_timer, sc) ==
            EPODE_OK)
      sc->lines_timer_on = 1;
    return;
  }
  size_t room = LINE_MAX_BYTES - sc->line_len;
  if (!room) { /* a line longer than we keep: send what we have as one message */
    if (!sc->line_overflow) app_err("a line is longer than %u bytes: split", LINE_MAX_BYTES);
    sc->line_overflow = 1;
    send_line(sc, sc->line, sc->line_len);
    sc->line_len = 0;
    room = LINE_MAX_BYTES;
  }
  ssize_t n = read(fd, sc->line + sc->line_len, room);
  if (n < 0) {
    if (errno == EINTR || errno == EAGAIN) return;
    app_err("reading standard input: %s", strerror(errno));
    app_client_set_exit(sc->cl, APP_EXIT_ERROR);
    finish_lines(sc);
    return;
  }
  if (n == 0) {
    finish_lines(sc);
    return;
  }
  sc->line_len += (size_t)n;
  take_lines(sc, 0);
}

/* Reads standard input from a timer: for a regular file (epoll refuses
 * those; they never block), and while a pipe is paused by back-pressure. */
static int on_lines_timer(epode_loop *loop, void *ud) {
  send_ctx *sc = ud;
  if (app_client_closing(sc->cl)) {
    sc->lines_timer_on = 0;
    return 0;
  }
  if (epode_session_output_len(app_client_session(sc->cl)) > OUTPUT_HIGH_WATER) return 1;
  if (sc->stdin_regular) {
    on_stdin(loop, STDIN_FILENO, EPODE_IO_READ, sc);
    if (!app_client_closing(sc->cl)) return 1;
    sc->lines_timer_on = 0;
    return 0;
  }
  /* The pipe: watch it again. */
  sc->lines_timer_on = 0;
  if (epode_loop_watch(loop, STDIN_FILENO, EPODE_IO_READ, on_stdin, sc) == EPODE_OK)
    sc->stdin_watched = 1;
  return 0;
}

static void start_lines(app_client *cl, send_ctx *sc) {
  epode_loop *loop = app_client_loop(cl);
  epode_err err = epode_loop_watch(loop, STDIN_FILENO, EPODE_IO_READ, on_stdin, sc);
  if (!err) {
    sc->stdin_watched = 1;
    return;
  }
  if (err == EPODE_ERR_INVAL) { /* a regular file */
    sc->stdin_regular = 1;
    err = epode_loop_timer_start(loop, NULL, 0, PUMP_PERIOD_MS, on_lines_timer, sc);
    if (!err) {
      sc->lines_timer_on = 1;
      return;
    }
  }
  app_err("reading standard input: %s", epode_strerror(err));
  app_client_close(cl, APP_EXIT_ERROR);
}

static int on_pump_timer(epode_loop *loop, void *ud) {
  send_ctx *sc = ud;
  return pump(sc->cl, sc);
}

static void on_ready(app_client *cl, const char *jid, void *ud) {
  send_ctx *sc = ud;
  sc->cl = cl;
  if (sc->each_line) {
    start_lines(cl, sc);
    return;
  }
  if (!pump(cl, sc)) return;
  epode_err err = epode_loop_timer_start(app_client_loop(cl), NULL, PUMP_PERIOD_MS,
                                         PUMP_PERIOD_MS, on_pump_timer, sc);
  if (err) {
    app_err("starting the send timer: %s", epode_strerror(err));
    app_client_close(cl, APP_EXIT_ERROR);
  }
}

static void on_signal(app_client *cl, int signo, void *ud) {
  send_ctx *sc = ud;
  if (sc->sent < sc->n_to) {
    app_err("interrupted before the message%s could be sent", sc->n_to > 1 ? "s" : "");
    app_client_set_exit(cl, APP_EXIT_ERROR);
  }
}

int app_cmd_send(const app_command *cmd, int argc, char **argv) {
  static const struct option own[] = {
      {"message", required_argument, NULL, OPT_MESSAGE},
      {"type", required_argument, NULL, OPT_TYPE},
      {"each-line", no_argument, NULL, OPT_EACH_LINE},
  };
  send_ctx sc = {.type = "chat"};
  app_account acct = {0};
  int first = 0;
  int rc = app_parse_options(cmd, argc, argv, own, sizeof own / sizeof own[0], "m:t:", &acct,
                             own_option, &sc, &first);
  if (rc) return rc;

  if (first >= argc) return app_usage_error("send", "no recipient: give at least one JID");
  sc.to = argv + first;
  sc.n_to = argc - first;
  for (int i = 0; i < sc.n_to; i++)
    if (epode_jid_validate(sc.to[i]) != EPODE_OK)
      return app_usage_error("send", "invalid recipient JID '%s'", sc.to[i]);

  char *stdin_body = NULL;
  size_t len;
  if (sc.each_line && sc.message)
    return app_usage_error("send", "--each-line reads standard input; it cannot go with -m");
  if (sc.each_line) {
    len = 1; /* checked line by line */
    sc.body = "";
  } else if (sc.message) {
    sc.body = sc.message;
    len = strlen(sc.message);
  } else {
    if (isatty(STDIN_FILENO))
      fputs("epode: reading the message from the terminal; end it with Ctrl-D "
            "(or use -m TEXT)\n",
            stderr);
    int r = app_read_all(stdin, BODY_MAX, &stdin_body, &len);
    if (r == -2)
      return app_usage_error("send", "the message on standard input is longer than %u bytes",
                             BODY_MAX);
    if (r) {
      app_err("reading the message from standard input: %s", strerror(errno));
      return APP_EXIT_ERROR;
    }
    sc.body = stdin_body;
  }
  size_t at = 0;
  const char *src = sc.message ? "" : " (standard input)";
  const char *problem = sc.each_line ? NULL : app_body_problem(sc.body, len, &at);
  if (problem || len == 0) {
    if (problem)
      rc = app_usage_error("send", "cannot send the message%s: %s at byte %zu", src, problem, at);
    else
      rc = app_usage_error("send", "cannot send the message%s: it is empty", src);
    free(stdin_body);
    return rc;
  }
  if (len > BODY_MAX) {
    free(stdin_body);
    return app_usage_error("send", "the message is longer than %u bytes", BODY_MAX);
  }

  epode_config *cfg = NULL;
  rc = app_account_config(&cfg, &acct, "send");
  if (rc) {
    free(stdin_body);
    return rc;
  }
  app_client *cl = NULL;
  app_client_hooks hooks = {on_ready, on_signal};
  rc = app_client_start(&cl, "send", cfg, app_connect_timeout_ms(&acct),
                        acct.verbose, &hooks, &sc);
  epode_config_free(cfg);
  if (!rc) {
    rc = app_client_run(cl);
    if (sc.each_line) {
      if (rc == APP_EXIT_OK && sc.lines_bad) rc = APP_EXIT_ERROR;
    } else if (rc == APP_EXIT_OK && sc.sent < sc.n_to) {
      app_err("the connection ended before the message%s could be sent",
              sc.n_to > 1 ? "s" : "");
      rc = APP_EXIT_ERROR;
    } else if (sc.failed || sc.acked < sc.sent) {
      /* Sent, but neither acknowledged (XEP-0198) nor confirmed by a clean
       * close: it may or may not have arrived. */
      app_err("%d of %d message%s not acknowledged by the server: delivery unknown",
              sc.sent - sc.acked, sc.sent, sc.sent > 1 ? "s were" : " was");
      if (rc == APP_EXIT_OK) rc = APP_EXIT_ERROR;
    }
  }
  app_client_free(cl);
  free(stdin_body);
  return rc;
}
