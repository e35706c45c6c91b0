/* `epode listen`: print incoming messages, one line each, until a count, a
 * timeout or a signal. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum { OPT_COUNT = APP_OPT_COMMAND_BASE, OPT_JSON };

typedef struct listen_ctx {
  long count; /* 0: no --count */
  long received;
  int json;
  uint32_t timeout_ms;
  int timeout_set;
  app_client *cl;
  int done;
} listen_ctx;

static int own_option(int opt, const char *arg, void *ud) {
  listen_ctx *lc = ud;
  switch (opt) {
  case 'n':
  case OPT_COUNT: {
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno || end == arg || *end || v < 1 || v > INT_MAX)
      return app_usage_error("listen", "--count wants a positive whole number, not '%s'", arg);
    lc->count = v;
    return 0;
  }
  case OPT_JSON: lc->json = 1; return 0;
  default: return app_usage_error("listen", "unexpected option");
  }
}

static void print_json_field(const char *name, const char *value, int first) {
  printf("%s\"%s\":", first ? "" : ",", name);
  if (value) app_json_string(stdout, value);
  else fputs("null", stdout);
}

static int on_message(epode_session *s, const epode_stanza *st, void *ud) {
  listen_ctx *lc = ud;
  if (lc->done) return EPODE_HANDLER_REMOVE;
  const char *body = epode_stanza_child_text(st, "body");
  if (!body) return EPODE_HANDLER_KEEP; /* chat states, receipts, … */
  const char *from = epode_stanza_from(st);
  if (lc->json) {
    putchar('{');
    print_json_field("from", from, 1);
    print_json_field("to", epode_stanza_to(st), 0);
    print_json_field("type", epode_stanza_type(st), 0);
    print_json_field("id", epode_stanza_id(st), 0);
    print_json_field("body", body, 0);
    fputs("}\n", stdout);
  } else {
    /* No from: the message came from the server or our own account. */
    app_plain_escaped(stdout, from ? from : "");
    fputs(": ", stdout);
    app_plain_escaped(stdout, body);
    putchar('\n');
  }
  if (fflush(stdout) != 0 || ferror(stdout)) {
    app_err("cannot write to standard output: %s", strerror(errno));
    lc->done = 1;
    app_client_close(lc->cl, APP_EXIT_ERROR);
    return EPODE_HANDLER_REMOVE;
  }
  lc->received++;
  if (lc->count && lc->received >= lc->count) {
    lc->done = 1;
    app_client_close(lc->cl, APP_EXIT_OK);
    return EPODE_HANDLER_REMOVE;
  }
  return EPODE_HANDLER_KEEP;
}

static int on_listen_timeout(epode_loop *loop, void *ud) {
  listen_ctx *lc = ud;
  if (lc->done) return 0;
  lc->done = 1;
  if (lc->count && lc->received < lc->count) {
    app_err("timed out: received %ld of %ld message%s in %.3g s (--timeout)", lc->received,
            lc->count, lc->count == 1 ? "" : "s", lc->timeout_ms / 1000.0);
    app_client_close(lc->cl, APP_EXIT_TIMEOUT);
  } else {
    app_client_close(lc->cl, APP_EXIT_OK);
  }
  return 0;
}

/* Initial presence: without it the server does not route messages sent to
 * the bare JID to this resource. */
static epode_err send_presence(epode_session *s, const char **what) {
  epode_stanza *presence = NULL;
  *what = "building the presence";
  epode_err err = epode_presence_new(&presence, NULL);
  if (!err) *what = "sending the presence", err = epode_session_send(s, presence);
  epode_stanza_free(presence);
  return err;
}

static void on_ready(app_client *cl, const char *jid, void *ud) {
  listen_ctx *lc = ud;
  epode_session *s = app_client_session(cl);
  const char *what = "adding the message handler";
  epode_err err = epode_session_add_handler(s, "message", NULL, NULL, on_message, lc);
  if (!err) err = send_presence(s, &what);
  if (!err && lc->timeout_set)
    what = "starting the timer", err = epode_loop_timer_start(app_client_loop(cl), NULL,
                                                              lc->timeout_ms, 0,
                                                              on_listen_timeout, lc);
  if (err) {
    app_err("%s: %s", what, epode_strerror(err));
    lc->done = 1;
    app_client_close(cl, APP_EXIT_ERROR);
    return;
  }
  fprintf(stderr, "epode: listening as %s\n", jid ? jid : "(unknown JID)");
  fflush(stderr);
}

/* --reconnect: a resumed stream still has our presence (and handlers); a
 * fresh session keeps the handlers but the server forgot the presence. */
static void on_restored(app_client *cl, const char *jid, int resumed, void *ud) {
  listen_ctx *lc = ud;
  if (resumed || lc->done) return;
  const char *what;
  epode_err err = send_presence(app_client_session(cl), &what);
  if (err) {
    app_err("%s: %s", what, epode_strerror(err));
    lc->done = 1;
    app_client_close(cl, APP_EXIT_ERROR);
    return;
  }
  fprintf(stderr, "epode: listening as %s (new session)\n", jid ? jid : "(unknown JID)");
  fflush(stderr);
}

int app_cmd_listen(const app_command *cmd, int argc, char **argv) {
  static const struct option own[] = {
      {"count", required_argument, NULL, OPT_COUNT},
      {"json", no_argument, NULL, OPT_JSON},
  };
  listen_ctx lc = {0};
  app_account acct = {0};
  int first = 0;
  int rc = app_parse_options(cmd, argc, argv, own, sizeof own / sizeof own[0], "n:", &acct,
                             own_option, &lc, &first);
  if (rc) return rc;
  if (first < argc)
    return app_usage_error("listen", "unexpected argument '%s' (listen takes no JIDs)",
                           argv[first]);
  lc.timeout_set = acct.timeout_set;
  lc.timeout_ms = acct.timeout_ms;

  epode_config *cfg = NULL;
  rc = app_account_config(&cfg, &acct, "listen");
  if (rc) return rc;
  app_client_hooks hooks = {on_ready, NULL, on_restored};
  rc = app_client_start(&lc.cl, "listen", cfg, &acct, &hooks, &lc);
  epode_config_free(cfg);
  if (!rc) rc = app_client_run(lc.cl);
  app_client_free(lc.cl);
  return rc;
}
