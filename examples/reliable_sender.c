/* reliable_sender — messages that survive a flaky network and a restart.
 *
 *   EPODE_JID=me@example.org EPODE_PASSWORD=secret \
 *     reliable_sender [--server host:port] [--cafile ca.pem] [--state FILE] TO MESSAGE...
 *
 * Sends each MESSAGE to TO and exits 0 once the server has acknowledged
 * every one, 1 if any was not. The connection may break on the way: the
 * session reconnects by itself (exponential backoff with jitter), resumes
 * its XEP-0198 stream and sends again whatever the server had not
 * acknowledged — or, if resuming is refused, sends it on a fresh session.
 *
 * With --state FILE, SIGTERM or SIGINT saves the session's resumption state
 * to FILE and exits at once without closing the stream (the server keeps
 * it for a few minutes). Started again with the same FILE, the program
 * restores the state, resumes the stream where it stopped, and learns the
 * fate of the messages the first run left unacknowledged — sending again
 * the ones the server never got; its MESSAGE arguments are then optional.
 *
 *   reliable_sender --state /tmp/rs.state friend@example.org "one" "two"
 *
 * What it shows:
 *  - epode_config_set_reconnect(): no code of yours runs to reconnect; you
 *    see EPODE_EV_DISCONNECTED (why, and when the next attempt starts),
 *    then EPODE_EV_RESUMED or EPODE_EV_READY;
 *  - epode_session_send_tracked(): one report per message, ACKED or FAILED;
 *  - epode_session_save() / epode_session_restore(): the stream outlives
 *    the process.
 *
 * The password is read from the environment only: argv is visible to every
 * user through ps. */
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
  const char *state_file;
  int pending; /* messages without a report yet */
  int failed;
  int closing, closed;
} app;

/* The signal handler only flags; the loop's wakeup is safe from it. */
static volatile sig_atomic_t got_signal;
static epode_loop *signal_loop;

static void on_signal(int sig) {
  (void)sig;
  got_signal = 1;
  if (signal_loop) epode_loop_wakeup(signal_loop);
}

static void maybe_close(app *a) {
  if (!a->pending && !a->closing) {
    a->closing = 1;
    epode_conn_close(a->conn);
  }
}

static void on_delivery(epode_session *s, epode_delivery status, const char *id, void *ud) {
  app *a = ud;
  (void)s;
  printf("%s %s\n", status == EPODE_DELIVERY_ACKED ? "acknowledged" : "NOT DELIVERED",
         id ? id : "?");
  fflush(stdout);
  if (status != EPODE_DELIVERY_ACKED) a->failed++;
  a->pending--;
  maybe_close(a);
}

/* SIGTERM/SIGINT with --state: keep the stream for the next run. */
static void save_and_leave(app *a) {
  epode_session *s = epode_conn_session(a->conn);
  char *state;
  size_t len;
  epode_err e = epode_session_save(s, &state, &len);
  if (e) {
    fprintf(stderr, "reliable_sender: nothing to save (%s); closing\n", epode_strerror(e));
    maybe_close(a);
    a->pending = 0;
    return;
  }
  FILE *f = fopen(a->state_file, "wb");
  int ok = f && fwrite(state, 1, len, f) == len;
  if (f && fclose(f) != 0) ok = 0;
  epode_free(epode_session_mem(s), state);
  if (!ok) {
    perror("reliable_sender: writing the state");
    exit(1);
  }
  fprintf(stderr, "reliable_sender: state saved to %s (%zu unacknowledged)\n", a->state_file,
          epode_session_sm_unacked(s));
  _exit(3); /* no goodbye: closing would end the stream for the server */
}

static void on_wakeup(epode_loop *loop, void *ud) {
  app *a = ud;
  (void)loop;
  if (!got_signal) return;
  got_signal = 0;
  if (a->state_file) save_and_leave(a);
  a->pending = 0;
  maybe_close(a);
}

static void on_event(const epode_event *ev, void *ud) {
  app *a = ud;
  switch (ev->type) {
  case EPODE_EV_STATE: fprintf(stderr, "reliable_sender: %s\n", epode_state_name(ev->state)); break;
  case EPODE_EV_READY: fprintf(stderr, "reliable_sender: ready as %s\n", ev->jid); break;
  case EPODE_EV_RESUMED: fprintf(stderr, "reliable_sender: resumed as %s\n", ev->jid); break;
  case EPODE_EV_DISCONNECTED:
    fprintf(stderr, "reliable_sender: connection lost (%s); next attempt in %u ms\n",
            ev->failure->detail, (unsigned)ev->retry_ms);
    break;
  case EPODE_EV_CLOSED:
    a->closed = 1;
    epode_loop_remove_conn(a->loop, a->conn);
    epode_loop_stop(a->loop);
    break;
  default: break; /* EPODE_EV_ERROR: EPODE_EV_CLOSED follows; main() prints why */
  }
}

static int usage(void) {
  fprintf(stderr, "usage: EPODE_JID=… EPODE_PASSWORD=… reliable_sender [--server host:port]\n"
                  "         [--cafile ca.pem] [--state FILE] TO MESSAGE...\n");
  return 2;
}

int main(int argc, char **argv) {
  const char *jid = getenv("EPODE_JID"), *password = getenv("EPODE_PASSWORD");
  const char *server = NULL, *cafile = NULL;
  app a;
  memset(&a, 0, sizeof a);
  int i = 1;
  for (; i + 1 < argc && !strncmp(argv[i], "--", 2); i += 2) {
    if (!strcmp(argv[i], "--server")) server = argv[i + 1];
    else if (!strcmp(argv[i], "--cafile")) cafile = argv[i + 1];
    else if (!strcmp(argv[i], "--state")) a.state_file = argv[i + 1];
    else return usage();
  }
  if (!jid || !password || i >= argc) return usage();
  const char *to = argv[i++];

  epode_config *cfg;
  epode_err e = epode_config_new(&cfg, NULL);
  if (!e) e = epode_config_set_jid(cfg, jid);
  if (!e) e = epode_config_set_password(cfg, password);
  if (!e) e = epode_config_set_resource(cfg, "reliable-sender");
  if (!e && cafile) e = epode_config_set_cafile(cfg, cafile);
  if (!e && server) {
    char host[256];
    unsigned port = 0;
    if (sscanf(server, "%255[^:]:%u", host, &port) < 1 || port > 65535) return usage();
    e = epode_config_set_server(cfg, host, (uint16_t)port);
  }
  /* Reconnect on its own: 0.5 s first, doubling up to 10 s, forever. */
  if (!e) e = epode_config_set_reconnect(cfg, 1, 500, 10000, 0);
  if (!e) e = epode_loop_new(&a.loop, NULL);
  if (!e) e = epode_conn_new(&a.conn, cfg);
  epode_config_free(cfg);
  if (e) {
    fprintf(stderr, "reliable_sender: %s\n", epode_strerror(e));
    return 1;
  }
  epode_session *s = epode_conn_session(a.conn);

  /* A previous run's stream, if there is one. */
  if (a.state_file) {
    FILE *f = fopen(a.state_file, "rb");
    if (f) {
      static char buf[1 << 20];
      size_t len = fread(buf, 1, sizeof buf, f);
      fclose(f);
      e = epode_session_restore(s, buf, len, on_delivery, &a);
      if (e) {
        fprintf(stderr, "reliable_sender: cannot use %s: %s\n", a.state_file,
                epode_strerror(e));
        return 1;
      }
      a.pending = (int)epode_session_sm_unacked(s);
      unlink(a.state_file); /* used once: a stream resumes once */
      fprintf(stderr, "reliable_sender: resuming with %d unacknowledged from %s\n", a.pending,
              a.state_file);
    }
  }
  for (int k = 1; i < argc; i++, k++) {
    epode_stanza *msg = NULL;
    char id[32];
    snprintf(id, sizeof id, "msg-%d-%ld", k, (long)getpid());
    e = epode_message_new(&msg, NULL, "chat", to, argv[i]);
    if (!e) e = epode_stanza_set_attr(msg, "id", id);
    /* Queued until the session is ready; each gets exactly one report. */
    if (!e) e = epode_session_send_tracked(s, msg, on_delivery, &a);
    epode_stanza_free(msg);
    if (e) {
      fprintf(stderr, "reliable_sender: not sent: %s\n", epode_strerror(e));
      return 1;
    }
    a.pending++;
  }
  if (!a.pending) {
    if (!a.state_file) return usage();
    fprintf(stderr, "reliable_sender: nothing left to deliver\n");
    return 0;
  }

  signal_loop = a.loop;
  epode_loop_set_wakeup_cb(a.loop, on_wakeup, &a);
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  epode_conn_set_event_cb(a.conn, on_event, &a);
  if ((e = epode_loop_add_conn(a.loop, a.conn)) || (e = epode_conn_connect(a.conn))) {
    fprintf(stderr, "reliable_sender: %s\n", epode_strerror(e));
    return 1;
  }
  epode_loop_run(a.loop, EPODE_RUN_DEFAULT);
  const epode_failure *f = epode_conn_failure(a.conn);
  if (f->err) fprintf(stderr, "reliable_sender: %s\n", f->detail);
  int rc = a.failed || f->err ? 1 : 0;
  epode_conn_free(a.conn);
  epode_loop_free(a.loop);
  return rc;
}
