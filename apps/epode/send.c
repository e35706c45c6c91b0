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

enum { OPT_MESSAGE = APP_OPT_COMMAND_BASE, OPT_TYPE };

typedef struct send_ctx {
  const char *message;
  const char *type;
  char **to;
  int n_to;
  const char *body;
  int sent;
  int acked, failed; /* delivery reports (XEP-0198 acks or the clean close) */
  app_client *cl;
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

static int on_pump_timer(epode_loop *loop, void *ud) {
  send_ctx *sc = ud;
  return pump(sc->cl, sc);
}

static void on_ready(app_client *cl, const char *jid, void *ud) {
  send_ctx *sc = ud;
  sc->cl = cl;
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
  if (sc.message) {
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
  const char *problem = app_body_problem(sc.body, len, &at);
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
    if (rc == APP_EXIT_OK && sc.sent < sc.n_to) {
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
