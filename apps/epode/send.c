/* `epode send`: one message to each JID given (or, with --each-line, one
 * per line of standard input), then a clean close.
 *
 * Everything that can be checked before connecting is: the recipients are
 * valid JIDs and the body is text XML can carry, so a typo never costs a
 * login (and exits 2, not some network code).
 *
 * Every message is tracked (epode_session_send_tracked): the exit status is
 * 0 only if every one was acknowledged by the server (XEP-0198) or
 * confirmed by the clean close; otherwise a summary says how many were not,
 * and with --each-line which input lines. */
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

/* Sends the next messages while the session's unsent output stays below
 * this; the rest follow as the socket takes it. Many recipients of a large
 * body would otherwise overrun EPODE_LIMIT_OUTPUT_BYTES (8 MiB by default). */
#define OUTPUT_HIGH_WATER (1024u * 1024u)
/* How often to look again while output drains or the library's queue is
 * full (EPODE_ERR_QUEUE_FULL: disconnected, or too many unacknowledged). */
#define PUMP_PERIOD_MS 5u
/* --reconnect: XEP-0198 is enabled a round trip after the session is ready
 * (<enable/> follows the bind). A session still without it this long after
 * READY is on a server without it: only the clean close confirms there. */
#define SM_GRACE_MS 2000u

struct send_ctx;

/* One message awaiting its delivery report (the `ud` of its tracked send).
 * Outstanding ones are listed, so those never reported are known at exit. */
typedef struct msg_rec {
  struct msg_rec *prev, *next;
  struct send_ctx *sc;
  long line; /* --each-line: 1-based input line; 0 otherwise */
  int to;    /* index of the recipient */
} msg_rec;

typedef struct fail_rec {
  long line;
  int to;
} fail_rec;

typedef struct send_ctx {
  const char *message;
  const char *type;
  char **to;
  int n_to;
  const char *body;
  app_client *cl;
  int verbose;
  int over;              /* the client is gone: delivery reports only count */
  /* Delivery reports. */
  long sent;             /* messages handed to the library */
  long acked;            /* reported ACKED */
  msg_rec *out_head, *out_tail; /* awaiting their report, in sending order */
  fail_rec *fails;      /* reported FAILED, or never reported */
  size_t n_fails, cap_fails;
  int input_done;        /* everything to send has been sent */
  int finish_timer_on;
  uint64_t ready_at;     /* when the session was last (re)negotiated */
  /* Single message: the next recipient. */
  int next_to;
  /* --each-line: every line of standard input is its own message. */
  int each_line;
  long lines_bad;
  long line_no;          /* number of the line being read (1-based) */
  int line_to;           /* next recipient of the line being sent (0: none yet) */
  char line[LINE_MAX_BYTES + 1];
  size_t line_len;
  int line_overflow;
  int eof;
  int blocked;           /* the library said EPODE_ERR_QUEUE_FULL: wait for room */
  int stdin_watched, stdin_regular, lines_timer_on;
} send_ctx;

static void note_fail(send_ctx *sc, long line, int to) {
  if (sc->n_fails == sc->cap_fails) {
    size_t cap = sc->cap_fails ? sc->cap_fails * 2 : 64;
    fail_rec *f = realloc(sc->fails, cap * sizeof *f);
    if (!f) return; /* counted anyway (sent - acked); only the line is lost */
    sc->fails = f;
    sc->cap_fails = cap;
  }
  sc->fails[sc->n_fails].line = line;
  sc->fails[sc->n_fails].to = to;
  sc->n_fails++;
}

static void unlink_rec(send_ctx *sc, msg_rec *r) {
  if (r->prev) r->prev->next = r->next;
  else sc->out_head = r->next;
  if (r->next) r->next->prev = r->prev;
  else sc->out_tail = r->prev;
}

static void maybe_finish(send_ctx *sc);

static void on_delivery(epode_session *s, epode_delivery status, const char *id, void *ud) {
  msg_rec *r = ud;
  send_ctx *sc = r->sc;
  if (status == EPODE_DELIVERY_ACKED)
    sc->acked++;
  else
    note_fail(sc, r->line, r->to);
  unlink_rec(sc, r);
  free(r);
  if (!sc->over) maybe_finish(sc);
}

/* Builds and sends one tracked message. EPODE_ERR_QUEUE_FULL: not sent,
 * try again later. */
static epode_err send_one(send_ctx *sc, int to, const char *body, long line) {
  epode_session *s = app_client_session(sc->cl);
  msg_rec *r = calloc(1, sizeof *r);
  if (!r) return EPODE_ERR_NOMEM;
  r->sc = sc;
  r->line = line;
  r->to = to;
  epode_stanza *msg = NULL;
  char id[32];
  /* An id lets the sender match a bounce (type='error') to its message. */
  epode_err err = epode_session_new_id(s, id, sizeof id);
  if (!err) err = epode_message_new(&msg, NULL, sc->type, sc->to[to], body);
  if (!err) err = epode_stanza_set_attr(msg, "id", id);
  if (!err) err = epode_session_send_tracked(s, msg, on_delivery, r);
  epode_stanza_free(msg);
  if (err) {
    free(r);
    return err;
  }
  r->prev = sc->out_tail;
  if (sc->out_tail) sc->out_tail->next = r;
  else sc->out_head = r;
  sc->out_tail = r;
  sc->sent++;
  return EPODE_OK;
}

/* ------------------------------------------------------------ finishing */

static int on_finish_check(epode_loop *loop, void *ud);

static int on_finish_timer(epode_loop *loop, void *ud) {
  send_ctx *sc = ud;
  sc->finish_timer_on = 0;
  if (sc->over || app_client_closing(sc->cl)) return 0;
  /* Lost meanwhile: the reconnection calls maybe_finish() again. */
  if (app_client_reconnecting(sc->cl) && !app_client_connected(sc->cl)) return 0;
  /* Queued ahead of </stream:stream>: the server's closing tag confirms
   * everything not acknowledged yet. */
  app_client_close(sc->cl, APP_EXIT_OK);
  return 0;
}

/* Everything has been handed to the library: close — at once without
 * --reconnect (the clean close confirms what is not acknowledged yet);
 * with it, once every message has its report (a connection lost while
 * closing could not be resumed), or at once where the server does not do
 * XEP-0198 (then only the close confirms). The close is started from a
 * timer, never from inside a delivery report. */
static void maybe_finish(send_ctx *sc) {
  if (!sc->input_done || sc->finish_timer_on || app_client_closing(sc->cl)) return;
  uint64_t delay = 0;
  epode_loop_timer_fn fn = on_finish_timer;
  if (app_client_reconnecting(sc->cl)) {
    if (!app_client_connected(sc->cl)) return; /* a report or a reconnection calls again */
    if (!sc->out_head) {
      /* every message has its report: close */
    } else if (epode_session_sm_enabled(app_client_session(sc->cl))) {
      return; /* the acknowledgements will come */
    } else {
      /* Not (yet?) XEP-0198: look again once it would be on. */
      uint64_t now = epode_now_ms();
      if (now < sc->ready_at + SM_GRACE_MS) {
        delay = sc->ready_at + SM_GRACE_MS - now;
        fn = on_finish_check;
      }
    }
  }
  if (epode_loop_timer_start(app_client_loop(sc->cl), NULL, delay, 0, fn, sc) == EPODE_OK)
    sc->finish_timer_on = 1;
  else if (fn == on_finish_timer)
    app_client_close(sc->cl, APP_EXIT_OK);
}

static int on_finish_check(epode_loop *loop, void *ud) {
  send_ctx *sc = ud;
  sc->finish_timer_on = 0;
  if (!sc->over) maybe_finish(sc);
  return 0;
}

/* ------------------------------------------------------------ one body */

/* Sends what fits. Returns 1 while more remain. */
static int pump(app_client *cl, send_ctx *sc) {
  epode_session *s = app_client_session(cl);
  if (app_client_closing(cl) || sc->input_done) return 0;
  while (sc->next_to < sc->n_to) {
    if (sc->next_to > 0 && epode_session_output_len(s) > OUTPUT_HIGH_WATER) return 1;
    epode_err err = send_one(sc, sc->next_to, sc->body, 0);
    if (err == EPODE_ERR_QUEUE_FULL) return 1; /* disconnected: wait for room */
    if (err) {
      app_err("sending to %s: %s", sc->to[sc->next_to], epode_strerror(err));
      app_client_close(cl, app_exit_for_err(err) ? app_exit_for_err(err) : APP_EXIT_ERROR);
      return 0;
    }
    sc->next_to++;
  }
  sc->input_done = 1;
  maybe_finish(sc);
  return 0;
}

static int on_pump_timer(epode_loop *loop, void *ud) {
  send_ctx *sc = ud;
  return pump(sc->cl, sc);
}

/* ------------------------------------------------------------ --each-line */

/* Sends one line (without its newline) to every recipient. Returns 0 when
 * the line is done (sent, or reported and skipped), 1 when the library's
 * queue is full: the line stays, and sc->line_to says which recipient is
 * next. */
static int send_line(send_ctx *sc, const char *text, size_t len) {
  if (len && text[len - 1] == '\r') len--;
  if (!len) return 0; /* empty lines carry nothing */
  if (sc->line_to == 0) {
    size_t at = 0;
    const char *problem = app_body_problem(text, len, &at);
    if (problem) {
      app_err("line %ld not sent: %s at byte %zu", sc->line_no, problem, at);
      sc->lines_bad++;
      return 0;
    }
  }
  char *body = strndup(text, len);
  if (!body) {
    app_err("line %ld not sent: out of memory", sc->line_no);
    sc->lines_bad++;
    sc->line_to = 0;
    return 0;
  }
  for (; sc->line_to < sc->n_to; sc->line_to++) {
    epode_err err = send_one(sc, sc->line_to, body, sc->line_no);
    if (err == EPODE_ERR_QUEUE_FULL) {
      free(body);
      return 1;
    }
    if (err) {
      app_err("line %ld not sent to %s: %s", sc->line_no, sc->to[sc->line_to],
              epode_strerror(err));
      sc->lines_bad++;
      break;
    }
  }
  sc->line_to = 0;
  free(body);
  return 0;
}

/* The longest prefix of a too-long line that does not end inside a UTF-8
 * sequence. */
static size_t utf8_cut(const char *s, size_t len) {
  size_t cut = len;
  for (int k = 0; k < 3 && cut > 0 && ((unsigned char)s[cut - 1] & 0xC0u) == 0x80u; k++) cut--;
  if (cut > 0 && ((unsigned char)s[cut - 1] & 0xC0u) == 0xC0u) return cut - 1;
  return len; /* not a cut sequence after all */
}

/* Sends the complete lines buffered (and at EOF the last, unterminated
 * one). Returns 1 if it stopped because the library's queue is full. */
static int take_lines(send_ctx *sc) {
  size_t start = 0;
  int blocked = 0;
  for (size_t i = 0; i < sc->line_len; i++) {
    if (sc->line[i] != '\n') continue;
    if (send_line(sc, sc->line + start, i - start)) {
      blocked = 1;
      break;
    }
    start = i + 1;
    sc->line_no++;
  }
  if (!blocked && sc->eof && start < sc->line_len) {
    if (send_line(sc, sc->line + start, sc->line_len - start)) blocked = 1;
    else start = sc->line_len;
  }
  if (!blocked && !sc->eof && start == 0 && sc->line_len == LINE_MAX_BYTES) {
    /* A line longer than we keep: send what we have as one message (same
     * line number; the rest follows as another). */
    if (!sc->line_overflow)
      app_err("line %ld is longer than %u bytes: split", sc->line_no, LINE_MAX_BYTES);
    sc->line_overflow = 1;
    size_t cut = utf8_cut(sc->line, sc->line_len);
    if (send_line(sc, sc->line, cut)) blocked = 1;
    else start = cut;
  }
  memmove(sc->line, sc->line + start, sc->line_len - start);
  sc->line_len -= start;
  sc->blocked = blocked;
  return blocked;
}

static int on_lines_timer(epode_loop *loop, void *ud);

/* Stops reading standard input until there is room; a timer looks again. */
static void pause_input(send_ctx *sc) {
  epode_loop *loop = app_client_loop(sc->cl);
  if (sc->stdin_watched) {
    epode_loop_unwatch(loop, STDIN_FILENO);
    sc->stdin_watched = 0;
  }
  if (!sc->lines_timer_on &&
      epode_loop_timer_start(loop, NULL, PUMP_PERIOD_MS, PUMP_PERIOD_MS, on_lines_timer, sc) ==
          EPODE_OK)
    sc->lines_timer_on = 1;
}

static void input_finished(send_ctx *sc) {
  if (sc->stdin_watched) epode_loop_unwatch(app_client_loop(sc->cl), STDIN_FILENO);
  sc->stdin_watched = 0;
  sc->input_done = 1;
  maybe_finish(sc);
}

/* Room to take more input: nothing held back and the output not piling up. */
static int have_room(send_ctx *sc) {
  return !sc->blocked && epode_session_output_len(app_client_session(sc->cl)) <= OUTPUT_HIGH_WATER;
}

static void on_stdin(epode_loop *loop, int fd, unsigned events, void *ud) {
  send_ctx *sc = ud;
  if (app_client_closing(sc->cl) || sc->input_done) return;
  /* Back-pressure: while the connection has a lot to write, or the library
   * cannot take more (disconnected, or too much unacknowledged), stop
   * reading: a fast producer must not grow our memory, and no line is
   * dropped. */
  if (!have_room(sc)) {
    pause_input(sc);
    return;
  }
  ssize_t n = read(fd, sc->line + sc->line_len, LINE_MAX_BYTES - sc->line_len);
  if (n < 0) {
    if (errno == EINTR || errno == EAGAIN) return;
    app_err("reading standard input: %s", strerror(errno));
    app_client_set_exit(sc->cl, APP_EXIT_ERROR);
    sc->eof = 1;
  } else if (n == 0) {
    sc->eof = 1;
  } else {
    sc->line_len += (size_t)n;
  }
  if (take_lines(sc)) {
    pause_input(sc);
    return;
  }
  if (sc->eof) input_finished(sc);
}

/* Reads standard input from a timer: for a regular file (epoll refuses
 * those; they never block), and while input is paused by back-pressure. */
static int on_lines_timer(epode_loop *loop, void *ud) {
  send_ctx *sc = ud;
  if (app_client_closing(sc->cl) || sc->input_done) {
    sc->lines_timer_on = 0;
    return 0;
  }
  if (sc->blocked && take_lines(sc)) return 1; /* still no room in the library */
  if (sc->eof) {
    sc->lines_timer_on = 0;
    input_finished(sc);
    return 0;
  }
  if (!have_room(sc)) return 1;
  if (sc->stdin_regular) {
    on_stdin(loop, STDIN_FILENO, EPODE_IO_READ, sc);
    if (!app_client_closing(sc->cl) && !sc->input_done) return 1;
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
  sc->line_no = 1;
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

/* ------------------------------------------------------------ the client's hooks */

static void on_ready(app_client *cl, const char *jid, void *ud) {
  send_ctx *sc = ud;
  sc->cl = cl;
  sc->ready_at = epode_now_ms();
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

/* --reconnect: the connection is back; unacknowledged messages were sent
 * again by the library. Waiting for the last reports may be over. */
static void on_restored(app_client *cl, const char *jid, int resumed, void *ud) {
  send_ctx *sc = ud;
  sc->ready_at = epode_now_ms();
  maybe_finish(sc);
}

static void on_signal(app_client *cl, int signo, void *ud) {
  send_ctx *sc = ud;
  if (!sc->each_line && sc->next_to < sc->n_to) {
    app_err("interrupted before the message%s could be sent", sc->n_to > 1 ? "s" : "");
    app_client_set_exit(cl, APP_EXIT_ERROR);
  }
}

/* ------------------------------------------------------------ the report */

static int cmp_fail(const void *a, const void *b) {
  const fail_rec *x = a, *y = b;
  if (x->line != y->line) return x->line < y->line ? -1 : 1;
  return (x->to > y->to) - (x->to < y->to);
}

/* After the session: messages never reported count as not acknowledged.
 * Returns the number not acknowledged. */
static long report(send_ctx *sc) {
  while (sc->out_head) {
    msg_rec *r = sc->out_head;
    note_fail(sc, r->line, r->to);
    unlink_rec(sc, r);
    free(r);
  }
  long missing = sc->sent - sc->acked;
  if (missing > 0 || sc->verbose)
    app_err("%ld message%s: %ld acknowledged, %ld not acknowledged", sc->sent,
            sc->sent == 1 ? "" : "s", sc->acked, missing);
  if (missing > 0) {
    if (sc->each_line && sc->n_fails) {
      qsort(sc->fails, sc->n_fails, sizeof *sc->fails, cmp_fail);
      for (size_t i = 0; i < sc->n_fails; i++) {
        if (sc->n_to > 1)
          app_err("not acknowledged: line %ld (to %s)", sc->fails[i].line,
                  sc->to[sc->fails[i].to]);
        else
          app_err("not acknowledged: line %ld", sc->fails[i].line);
      }
    }
    /* Sent, but neither acknowledged (XEP-0198) nor confirmed by a clean
     * close: it may or may not have arrived. */
    app_err("%ld of %ld message%s not acknowledged by the server: delivery unknown", missing,
            sc->sent, missing > 1 ? "s were" : " was");
  }
  return missing;
}

static int own_option_send(int opt, const char *arg, void *ud) {
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

int app_cmd_send(const app_command *cmd, int argc, char **argv) {
  static const struct option own[] = {
      {"message", required_argument, NULL, OPT_MESSAGE},
      {"type", required_argument, NULL, OPT_TYPE},
      {"each-line", no_argument, NULL, OPT_EACH_LINE},
  };
  send_ctx *sc = calloc(1, sizeof *sc);
  if (!sc) {
    app_err("out of memory");
    return APP_EXIT_ERROR;
  }
  sc->type = "chat";
  app_account acct = {0};
  int first = 0;
  char *stdin_body = NULL;
  int rc = app_parse_options(cmd, argc, argv, own, sizeof own / sizeof own[0], "m:t:", &acct,
                             own_option_send, sc, &first);
  if (rc) goto out;

  if (first >= argc) {
    rc = app_usage_error("send", "no recipient: give at least one JID");
    goto out;
  }
  sc->to = argv + first;
  sc->n_to = argc - first;
  for (int i = 0; i < sc->n_to; i++)
    if (epode_jid_validate(sc->to[i]) != EPODE_OK) {
      rc = app_usage_error("send", "invalid recipient JID '%s'", sc->to[i]);
      goto out;
    }

  size_t len;
  if (sc->each_line && sc->message) {
    rc = app_usage_error("send", "--each-line reads standard input; it cannot go with -m");
    goto out;
  }
  if (sc->each_line) {
    len = 1; /* checked line by line */
    sc->body = "";
  } else if (sc->message) {
    sc->body = sc->message;
    len = strlen(sc->message);
  } else {
    if (isatty(STDIN_FILENO))
      fputs("epode: reading the message from the terminal; end it with Ctrl-D "
            "(or use -m TEXT)\n",
            stderr);
    int r = app_read_all(stdin, BODY_MAX, &stdin_body, &len);
    if (r == -2) {
      rc = app_usage_error("send", "the message on standard input is longer than %u bytes",
                           BODY_MAX);
      goto out;
    }
    if (r) {
      app_err("reading the message from standard input: %s", strerror(errno));
      rc = APP_EXIT_ERROR;
      goto out;
    }
    sc->body = stdin_body;
  }
  size_t at = 0;
  const char *src = sc->message ? "" : " (standard input)";
  const char *problem = sc->each_line ? NULL : app_body_problem(sc->body, len, &at);
  if (problem || len == 0) {
    if (problem)
      rc = app_usage_error("send", "cannot send the message%s: %s at byte %zu", src, problem, at);
    else
      rc = app_usage_error("send", "cannot send the message%s: it is empty", src);
    goto out;
  }
  if (len > BODY_MAX) {
    rc = app_usage_error("send", "the message is longer than %u bytes", BODY_MAX);
    goto out;
  }

  epode_config *cfg = NULL;
  rc = app_account_config(&cfg, &acct, "send");
  if (rc) goto out;
  sc->verbose = acct.verbose;
  app_client *cl = NULL;
  app_client_hooks hooks = {on_ready, on_signal, on_restored};
  rc = app_client_start(&cl, "send", cfg, &acct, &hooks, sc);
  epode_config_free(cfg);
  if (!rc) {
    rc = app_client_run(cl);
    /* From here on delivery reports (the library may give the last ones
     * while the connection is freed) only count. */
    sc->over = 1;
    app_client_free(cl);
    if (!sc->each_line && sc->sent < sc->n_to && rc == APP_EXIT_OK) {
      app_err("the connection ended before the message%s could be sent",
              sc->n_to > 1 ? "s" : "");
      rc = APP_EXIT_ERROR;
    }
    if (report(sc) > 0 && rc == APP_EXIT_OK) rc = APP_EXIT_ERROR;
    if (sc->lines_bad && rc == APP_EXIT_OK) rc = APP_EXIT_ERROR;
  }
out:
  free(stdin_body);
  free(sc->fails);
  free(sc);
  return rc;
}
