/* One XMPP connection on epode's own loop, as every command needs it:
 * connect with a deadline, hand over when the session is ready, turn
 * SIGINT/SIGTERM into a clean close, and turn whatever went wrong into one
 * clear message and one exit code.
 *
 * The connection is never freed from inside its own callbacks: everything
 * that ends the program stops the loop, and app_client_free() tears down
 * after epode_loop_run() has returned. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "cli.h"

/* How long a clean close may take before we give up waiting for the
 * server's </stream:stream> (the library has its own close timeout; this is
 * the backstop so the program always ends). */
#define CLOSE_BACKSTOP_MS 10000u

struct app_client {
  const char *cmd;
  epode_loop *loop;
  epode_conn *conn;
  app_client_hooks hooks;
  void *ud;
  int verbose;
  uint32_t connect_timeout_ms;
  epode_loop_timer *connect_timer;
  epode_loop_timer *close_timer;
  int sigfd;
  int ready;
  int closing;
  int closed;
  int reported; /* a failure message has been printed */
  int exit_code; /* -1 until decided */
  epode_state last_state;
  int tls_seen;         /* a TLS handshake started on this connection */
  int plaintext_warned;
  /* --reconnect */
  int reconnect;
  unsigned max_attempts; /* --reconnect-attempts, 0: no limit */
  int connected;         /* READY (or resumed) and not lost since */
};

epode_session *app_client_session(app_client *cl) { return epode_conn_session(cl->conn); }
epode_loop *app_client_loop(app_client *cl) { return cl->loop; }
int app_client_closing(const app_client *cl) { return cl->closing || cl->closed; }
int app_client_connected(const app_client *cl) {
  return cl->connected && !cl->closing && !cl->closed;
}
int app_client_reconnecting(const app_client *cl) { return cl->reconnect; }

void app_client_set_exit(app_client *cl, int code) {
  if (cl->exit_code <= 0 && code != 0) cl->exit_code = code;
  else if (cl->exit_code < 0) cl->exit_code = code;
}

static const char *state_phrase(epode_state st) {
  switch (st) {
  case EPODE_STATE_IDLE: return "before connecting";
  case EPODE_STATE_RESOLVING: return "while resolving the server's address";
  case EPODE_STATE_CONNECTING: return "while connecting (TCP)";
  case EPODE_STATE_TLS_HANDSHAKE: return "during the TLS handshake";
  case EPODE_STATE_OPENING: return "waiting for the server's stream features";
  case EPODE_STATE_STARTTLS: return "during STARTTLS";
  case EPODE_STATE_AUTHENTICATING: return "during authentication";
  case EPODE_STATE_BINDING: return "during resource binding";
  case EPODE_STATE_READY: return "with the session ready";
  case EPODE_STATE_CLOSING: return "while closing the stream";
  case EPODE_STATE_CLOSED: return "after the stream closed";
  case EPODE_STATE_DISCONNECTED: return "while waiting to reconnect";
  }
  return "";
}

static void print_hint(epode_err err, const char *detail) {
  switch (err) {
  case EPODE_ERR_TLS_VERIFY:
    if (detail && strstr(detail, "hostname mismatch"))
      fputs("epode: hint: the certificate names another host than the JID's domain\n", stderr);
    else
      fputs("epode: hint: --cafile FILE trusts the CA that signed the server's certificate\n",
            stderr);
    break;
  case EPODE_ERR_TLS_REQUIRED:
    fputs("epode: hint: --allow-plaintext accepts a server without TLS (unsafe)\n", stderr);
    break;
  case EPODE_ERR_CONNECT:
  case EPODE_ERR_DNS:
    fputs("epode: hint: check the server name and port (--server HOST:PORT, --tls)\n", stderr);
    break;
  default: break;
  }
}

/* "<what failed> (<condition>): <server text> [mechanism M] - <detail>" */
static void print_failure(FILE *out, const epode_failure *f) {
  const char *what = epode_strerror(f->err);
  fputs(what, out);
  if (f->condition && *f->condition) fprintf(out, " (%s)", f->condition);
  if (f->text && *f->text) fprintf(out, ": %s", f->text);
  if (f->mechanism && *f->mechanism) fprintf(out, " [mechanism %s]", f->mechanism);
  if (f->detail && *f->detail && strcmp(f->detail, what) &&
      !(f->text && *f->text && strstr(f->detail, f->text)))
    fprintf(out, " - %s", f->detail);
}

/* "epode: <failure>" and a hint, once. */
static void report_failure(app_client *cl, const epode_failure *f) {
  if (cl->reported || !f || f->err == EPODE_OK) return;
  cl->reported = 1;
  fputs("epode: ", stderr);
  print_failure(stderr, f);
  fputc('\n', stderr);
  print_hint(f->err, f->detail);
}

/* --reconnect: one line per loss or failed attempt, e.g.
 * "epode: connection lost (<failure>); reconnecting in 1.2 s (attempt 3)". */
static void report_disconnected(app_client *cl, const epode_event *ev) {
  const epode_failure *f = ev->failure;
  fputs(cl->connected ? "epode: connection lost (" : "epode: cannot connect (", stderr);
  if (f && f->err != EPODE_OK) print_failure(stderr, f);
  else fputs("the connection ended", stderr);
  fprintf(stderr, "); reconnecting in %.1f s (attempt %u", ev->retry_ms / 1000.0,
          ev->attempt);
  if (cl->max_attempts) fprintf(stderr, " of %u", cl->max_attempts);
  fputs(")\n", stderr);
  fflush(stderr);
}

int app_exit_for_err(epode_err err) {
  switch (err) {
  case EPODE_OK: return APP_EXIT_OK;
  case EPODE_ERR_DNS:
  case EPODE_ERR_CONNECT: return APP_EXIT_CONNECT;
  case EPODE_ERR_TLS:
  case EPODE_ERR_TLS_VERIFY:
  case EPODE_ERR_TLS_REQUIRED: return APP_EXIT_TLS;
  case EPODE_ERR_AUTH:
  case EPODE_ERR_SASL_NOMECH:
  case EPODE_ERR_SASL_PROTOCOL:
  case EPODE_ERR_SASL_SIGNATURE: return APP_EXIT_AUTH;
  case EPODE_ERR_TIMEOUT: return APP_EXIT_TIMEOUT;
  case EPODE_ERR_STREAM: return APP_EXIT_STREAM;
  default: return APP_EXIT_ERROR;
  }
}

static void stop_timer(app_client *cl, epode_loop_timer **t) {
  if (*t) {
    epode_loop_timer_stop(cl->loop, *t);
    *t = NULL;
  }
}

void app_client_abort(app_client *cl, int code) {
  app_client_set_exit(cl, code);
  cl->closed = 1;
  stop_timer(cl, &cl->connect_timer);
  stop_timer(cl, &cl->close_timer);
  epode_loop_stop(cl->loop);
}

static int on_close_backstop(epode_loop *loop, void *ud) {
  app_client *cl = ud;
  cl->close_timer = NULL;
  fprintf(stderr, "epode: warning: the server did not finish closing the stream within %u s\n",
          CLOSE_BACKSTOP_MS / 1000);
  app_client_abort(cl, cl->exit_code < 0 ? APP_EXIT_OK : cl->exit_code);
  return 0;
}

void app_client_close(app_client *cl, int code) {
  app_client_set_exit(cl, code);
  if (cl->closing || cl->closed) return;
  cl->closing = 1;
  stop_timer(cl, &cl->connect_timer);
  epode_err err = epode_conn_close(cl->conn);
  if (err) {
    /* Nothing to close politely (not connected yet, or already over). */
    app_client_abort(cl, code);
    return;
  }
  if (epode_loop_timer_start(cl->loop, &cl->close_timer, CLOSE_BACKSTOP_MS, 0, on_close_backstop,
                             cl) != EPODE_OK)
    cl->close_timer = NULL;
}

static int on_connect_timeout(epode_loop *loop, void *ud) {
  app_client *cl = ud;
  cl->connect_timer = NULL;
  if (cl->ready || cl->closed) return 0;
  cl->reported = 1;
  app_err("timed out: no session after %.3g s, %s (--timeout)", cl->connect_timeout_ms / 1000.0,
          state_phrase(epode_conn_state(cl->conn)));
  app_client_abort(cl, APP_EXIT_TIMEOUT);
  return 0;
}

/* --reconnect: the connection broke during the goodbye we started. Nothing
 * is lost by that — `send` closes only once every message is acknowledged
 * (and counts any that is not), `listen` has printed what it got — so it is
 * a warning, not a failure. */
static int broke_while_closing(app_client *cl, const epode_failure *f) {
  if (!cl->reconnect || !cl->closing || !f ||
      (f->err != EPODE_ERR_EOF && f->err != EPODE_ERR_IO))
    return 0;
  if (!cl->reported) {
    cl->reported = 1;
    fputs("epode: warning: the connection broke while closing the stream (", stderr);
    print_failure(stderr, f);
    fputs(")\n", stderr);
  }
  return 1;
}

static void on_event(const epode_event *ev, void *ud) {
  app_client *cl = ud;
  switch (ev->type) {
  case EPODE_EV_STATE:
    cl->last_state = ev->state;
    if (ev->state == EPODE_STATE_TLS_HANDSHAKE || ev->state == EPODE_STATE_STARTTLS)
      cl->tls_seen = 1;
    /* --allow-plaintext only matters if the stream really is unencrypted (no
     * STARTTLS offered, or a ws:// or http:// transport):
     * say so when it happens, before the password goes out. */
    if (ev->state == EPODE_STATE_AUTHENTICATING && !cl->tls_seen && !cl->plaintext_warned) {
      cl->plaintext_warned = 1;
      fputs("epode: WARNING: the stream is not encrypted; the password and messages cross the "
            "network readable by anyone (--allow-plaintext)\n",
            stderr);
    }
    if (cl->verbose >= 2) fprintf(stderr, "epode: [state] %s\n", epode_state_name(ev->state));
    break;
  case EPODE_EV_STARTTLS: break; /* the connection does TLS itself */
  case EPODE_EV_RECONNECT: break; /* the connection handles it */
  case EPODE_EV_DISCONNECTED:
    if (!cl->closing && !cl->closed) report_disconnected(cl, ev);
    cl->connected = 0;
    break;
  case EPODE_EV_RESUMED:
    if (cl->closing || cl->closed) break;
    cl->connected = 1;
    if (cl->verbose)
      fprintf(stderr, "epode: connection restored: stream resumed as %s\n",
              ev->jid ? ev->jid : "(unknown JID)");
    if (cl->hooks.on_restored) cl->hooks.on_restored(cl, ev->jid, 1, cl->ud);
    break;
  case EPODE_EV_REDIRECT:
    if (cl->verbose) fprintf(stderr, "epode: the server redirects to %s\n", ev->uri);
    break;
  case EPODE_EV_READY:
    if (cl->closing || cl->closed) break;
    cl->connected = 1;
    if (cl->ready) {
      /* --reconnect: the old stream could not be resumed; a new session. */
      if (cl->verbose)
        fprintf(stderr, "epode: connection restored: new session as %s (the old stream "
                        "could not be resumed)\n", ev->jid ? ev->jid : "(unknown JID)");
      if (cl->hooks.on_restored) cl->hooks.on_restored(cl, ev->jid, 0, cl->ud);
      break;
    }
    cl->ready = 1;
    stop_timer(cl, &cl->connect_timer);
    if (cl->hooks.on_ready) cl->hooks.on_ready(cl, ev->jid, cl->ud);
    break;
  case EPODE_EV_ERROR:
    if (broke_while_closing(cl, ev->failure)) break;
    report_failure(cl, ev->failure);
    if (ev->failure) app_client_set_exit(cl, app_exit_for_err(ev->failure->err));
    break;
  case EPODE_EV_CLOSED: {
    const epode_failure *f = ev->failure ? ev->failure : epode_conn_failure(cl->conn);
    if (broke_while_closing(cl, f)) {
      /* Only a warning (printed once above). */
    } else if (f && f->err != EPODE_OK) {
      report_failure(cl, f);
      app_client_set_exit(cl, app_exit_for_err(f->err));
    } else if (!cl->closing && cl->exit_code < 0) {
      /* The server ended the stream without an error, before we asked. */
      app_err("the server closed the stream %s", cl->ready ? "unexpectedly"
                                                            : state_phrase(cl->last_state));
      app_client_set_exit(cl, APP_EXIT_ERROR);
    }
    app_client_abort(cl, APP_EXIT_OK);
    break;
  }
  }
}

static void on_signal_fd(epode_loop *loop, int fd, unsigned events, void *ud) {
  app_client *cl = ud;
  struct signalfd_siginfo si;
  ssize_t n;
  while ((n = read(fd, &si, sizeof si)) == (ssize_t)sizeof si) {
    int signo = (int)si.ssi_signo;
    if (cl->closing) {
      /* A second signal while closing: stop waiting for the server. */
      app_client_abort(cl, cl->exit_code < 0 ? APP_EXIT_OK : cl->exit_code);
      return;
    }
    if (cl->verbose)
      fprintf(stderr, "epode: %s received, closing\n", signo == SIGINT ? "SIGINT" : "SIGTERM");
    if (cl->hooks.on_signal) cl->hooks.on_signal(cl, signo, cl->ud);
    if (cl->ready) app_client_close(cl, APP_EXIT_OK);
    else app_client_abort(cl, APP_EXIT_OK);
  }
}

int app_client_start(app_client **out, const char *cmd, const epode_config *cfg,
                     const app_account *acct, const app_client_hooks *hooks, void *ud) {
  /* With --reconnect the program keeps trying to get its first session too;
   * --timeout then bounds each attempt (the library's timeouts). */
  uint32_t connect_timeout_ms = acct->reconnect ? 0 : app_connect_timeout_ms(acct);
  *out = NULL;
  app_client *cl = calloc(1, sizeof *cl);
  if (!cl) {
    app_err("out of memory");
    return APP_EXIT_ERROR;
  }
  cl->cmd = cmd;
  cl->hooks = *hooks;
  cl->ud = ud;
  cl->verbose = acct->verbose;
  cl->connect_timeout_ms = connect_timeout_ms;
  cl->reconnect = acct->reconnect;
  cl->max_attempts = acct->rc_attempts;
  cl->sigfd = -1;
  cl->exit_code = -1;

  /* Writes to a closed stdout or socket must be errors, not deaths. */
  signal(SIGPIPE, SIG_IGN);

  epode_err err;
  const char *what = "creating the event loop";
  err = epode_loop_new(&cl->loop, NULL);
  if (!err) what = "creating the connection", err = epode_conn_new(&cl->conn, cfg);
  if (err) {
    app_err("%s: %s", what, epode_strerror(err));
    app_client_free(cl);
    return APP_EXIT_ERROR;
  }
  epode_conn_set_event_cb(cl->conn, on_event, cl);

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  cl->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (cl->sigfd < 0) {
    app_err("signalfd: %s", strerror(errno));
    app_client_free(cl);
    return APP_EXIT_ERROR;
  }
  what = "watching signals";
  err = epode_loop_watch(cl->loop, cl->sigfd, EPODE_IO_READ, on_signal_fd, cl);
  if (!err) what = "attaching the connection", err = epode_loop_add_conn(cl->loop, cl->conn);
  if (!err && connect_timeout_ms)
    what = "starting the timer", err = epode_loop_timer_start(
                                     cl->loop, &cl->connect_timer, connect_timeout_ms, 0,
                                     on_connect_timeout, cl);
  if (err) {
    app_err("%s: %s", what, epode_strerror(err));
    app_client_free(cl);
    return APP_EXIT_ERROR;
  }
  err = epode_conn_connect(cl->conn);
  if (err) {
    const epode_failure *f = epode_conn_failure(cl->conn);
    if (f && f->err) report_failure(cl, f);
    else app_err("cannot start connecting: %s", epode_strerror(err));
    int code = app_exit_for_err(f && f->err ? f->err : err);
    app_client_free(cl);
    return code ? code : APP_EXIT_ERROR;
  }
  *out = cl;
  return 0;
}

int app_client_run(app_client *cl) {
  while (!cl->closed) {
    epode_err err = epode_loop_run(cl->loop, EPODE_RUN_DEFAULT);
    if (err) {
      app_err("event loop: %s", epode_strerror(err));
      app_client_set_exit(cl, APP_EXIT_ERROR);
      break;
    }
    if (!cl->closed) {
      /* The loop ran out of things to watch without the connection ending:
       * a library bug, but never hang or exit 0 because of it. */
      app_err("event loop stopped before the connection closed (state: %s)",
              epode_state_name(epode_conn_state(cl->conn)));
      app_client_set_exit(cl, APP_EXIT_ERROR);
      break;
    }
  }
  return cl->exit_code < 0 ? APP_EXIT_OK : cl->exit_code;
}

void app_client_free(app_client *cl) {
  if (!cl) return;
  if (cl->loop) {
    stop_timer(cl, &cl->connect_timer);
    stop_timer(cl, &cl->close_timer);
    if (cl->sigfd >= 0) epode_loop_unwatch(cl->loop, cl->sigfd);
    if (cl->conn) epode_loop_remove_conn(cl->loop, cl->conn);
  }
  epode_conn_free(cl->conn);
  epode_loop_free(cl->loop);
  if (cl->sigfd >= 0) close(cl->sigfd);
  /* SIGINT/SIGTERM stay blocked: the program ends right after this, and a
   * signal still pending (`timeout` sends its SIGTERM both to the process
   * and to its group: the second copy may arrive after the first closed
   * the stream) must not turn a clean exit into death by signal. */
  free(cl);
}
