/* Resumption across a process restart, driven from a test script.
 *
 *   resume_peer save FILE TO N K   log in, wait until XEP-0198 resumption is
 *                                  on, send N tracked messages "restart-1"…
 *                                  to TO — the first K written to the socket,
 *                                  the rest only queued — save the session
 *                                  state to FILE and exit at once without
 *                                  closing the stream (as a crash would).
 *   resume_peer resume FILE SECS   restore FILE into a new session, connect,
 *                                  expect EPODE_EV_RESUMED (exit 2 on a fresh
 *                                  session instead), wait until every restored
 *                                  message is acknowledged, print every chat
 *                                  body that arrives for SECS seconds, close.
 *
 * Account and server from the environment: EPODE_JID, EPODE_PASSWORD,
 * EPODE_SERVER (host:port, STARTTLS), EPODE_CAFILE, and EPODE_URL to go
 * over WebSocket or BOSH instead (wss://, https://); EPODE_TRAFFIC=1 logs
 * everything to stderr. Prints one line per
 * fact on stdout ("saved unacked=3 jid=…", "resumed jid=…", "acked
 * restart-2", "got BODY", "closed"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <epode/epode.h>

typedef struct peer {
  epode_loop *loop;
  epode_conn *conn;
  int mode_save;
  const char *file, *to;
  int n, k;
  int sent;
  int polls;
  int acked, failed, restored;
  int resumed, fresh, closed;
  unsigned secs;
  epode_loop_timer *timer;
} peer;

static void on_log(void *ud, epode_log_level level, const char *area, const char *msg) {
  (void)ud;
  (void)level;
  fprintf(stderr, "[%s] %s\n", area, msg);
}

static void die(const char *what, epode_err e) {
  fprintf(stderr, "resume_peer: %s: %s\n", what, epode_strerror(e));
  exit(1);
}

static void on_delivery(epode_session *s, epode_delivery st, const char *id, void *ud) {
  peer *p = ud;
  (void)s;
  if (st == EPODE_DELIVERY_ACKED) p->acked++;
  else p->failed++;
  printf("%s %s\n", st == EPODE_DELIVERY_ACKED ? "acked" : "failed", id ? id : "-");
  fflush(stdout);
}

static int on_message(epode_session *s, const epode_stanza *st, void *ud) {
  (void)s;
  (void)ud;
  const char *body = epode_stanza_child_text(st, "body");
  if (body) {
    printf("got %s\n", body);
    fflush(stdout);
  }
  return EPODE_HANDLER_KEEP;
}

static void save_and_crash(peer *p) {
  epode_session *s = epode_conn_session(p->conn);
  for (int i = 1; i <= p->n; i++) {
    char id[32], body[32];
    snprintf(id, sizeof id, "restart-%d", i);
    snprintf(body, sizeof body, "restart-%d", i);
    epode_stanza *m;
    epode_err e = epode_message_new(&m, NULL, "chat", p->to, body);
    if (!e) e = epode_stanza_set_attr(m, "id", id);
    if (!e) e = epode_session_send_tracked(s, m, on_delivery, p);
    epode_stanza_free(m);
    if (e) die("send", e);
    /* The first K reach the socket; the rest stay in our output only. */
    if (i == p->k && (e = epode_conn_flush(p->conn))) die("flush", e);
  }
  char *state;
  size_t len;
  epode_err e = epode_session_save(s, &state, &len);
  if (e) die("save", e);
  FILE *f = fopen(p->file, "wb");
  if (!f || fwrite(state, 1, len, f) != len || fclose(f) != 0) {
    perror("resume_peer: writing the state");
    exit(1);
  }
  printf("saved unacked=%zu jid=%s\n", epode_session_sm_unacked(s), epode_session_jid(s));
  fflush(stdout);
  _exit(0); /* no goodbye: the server keeps the stream for resumption */
}

static int poll_resumable(epode_loop *loop, void *ud) {
  peer *p = ud;
  (void)loop;
  if (!epode_session_resumable(epode_conn_session(p->conn))) {
    if (++p->polls < 300) return 1;
    fprintf(stderr, "resume_peer: the server did not enable resumable stream management\n");
    exit(3);
  }
  p->timer = NULL;
  save_and_crash(p);
  return 0;
}

static int stop_listening(epode_loop *loop, void *ud) {
  peer *p = ud;
  (void)loop;
  p->timer = NULL;
  epode_conn_close(p->conn);
  return 0;
}

static void on_event(const epode_event *ev, void *ud) {
  peer *p = ud;
  switch (ev->type) {
  case EPODE_EV_READY:
    if (!p->mode_save) {
      printf("fresh jid=%s\n", ev->jid);
      fflush(stdout);
      p->fresh = 1;
      epode_conn_close(p->conn);
      break;
    }
    /* <enabled/> follows READY; wait for it. */
    epode_loop_timer_start(p->loop, &p->timer, 10, 10, poll_resumable, p);
    break;
  case EPODE_EV_RESUMED:
    printf("resumed jid=%s\n", ev->jid);
    fflush(stdout);
    p->resumed = 1;
    epode_loop_timer_start(p->loop, &p->timer, (uint64_t)p->secs * 1000u, 0, stop_listening, p);
    break;
  case EPODE_EV_ERROR:
    fprintf(stderr, "resume_peer: %s\n", ev->failure->detail);
    break;
  case EPODE_EV_CLOSED:
    p->closed = 1;
    printf("closed\n");
    fflush(stdout);
    epode_loop_remove_conn(p->loop, p->conn);
    break;
  default: break;
  }
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: resume_peer save FILE TO N K | resume FILE SECS\n");
    return 64;
  }
  peer p;
  memset(&p, 0, sizeof p);
  p.mode_save = !strcmp(argv[1], "save");
  p.file = argv[2];
  if (p.mode_save) {
    if (argc != 6) return 64;
    p.to = argv[3];
    p.n = atoi(argv[4]);
    p.k = atoi(argv[5]);
  } else {
    p.secs = (unsigned)atoi(argv[3]);
  }
  const char *jid = getenv("EPODE_JID"), *pw = getenv("EPODE_PASSWORD"),
             *server = getenv("EPODE_SERVER"), *ca = getenv("EPODE_CAFILE"),
             *url = getenv("EPODE_URL");
  if (!jid || !pw || !server) return 64;
  char host[256];
  unsigned port = 0;
  if (sscanf(server, "%255[^:]:%u", host, &port) != 2) return 64;
  epode_config *cfg;
  epode_err e = epode_config_new(&cfg, NULL);
  if (!e) e = epode_config_set_jid(cfg, jid);
  if (!e) e = epode_config_set_password(cfg, pw);
  if (!e) e = epode_config_set_resource(cfg, "restartable");
  if (!e) e = epode_config_set_server(cfg, host, (uint16_t)port);
  if (!e) e = epode_config_set_tls_mode(cfg, EPODE_TLS_STARTTLS);
  if (!e && ca) e = epode_config_set_cafile(cfg, ca);
  if (!e && url && *url) e = epode_config_set_url(cfg, url);
  if (!e && getenv("EPODE_TRAFFIC")) e = epode_config_set_log(cfg, on_log, NULL, EPODE_LOG_TRAFFIC);
  /* Acks only on request here, so the saved state holds unacked stanzas. */
  if (!e) e = epode_config_set_sm_ack_policy(cfg, 1000, 0);
  if (!e) e = epode_loop_new(&p.loop, NULL);
  if (!e) e = epode_conn_new(&p.conn, cfg);
  epode_config_free(cfg);
  if (e) die("setup", e);
  epode_session *s = epode_conn_session(p.conn);
  epode_session_add_handler(s, "message", NULL, NULL, on_message, &p);
  if (!p.mode_save) {
    FILE *f = fopen(p.file, "rb");
    if (!f) {
      perror("resume_peer: reading the state");
      return 1;
    }
    static char buf[1 << 20];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if ((e = epode_session_restore(s, buf, len, on_delivery, &p))) die("restore", e);
    p.restored = (int)epode_session_sm_unacked(s);
    printf("restored unacked=%d\n", p.restored);
    fflush(stdout);
  }
  epode_conn_set_event_cb(p.conn, on_event, &p);
  if ((e = epode_loop_add_conn(p.loop, p.conn)) || (e = epode_conn_connect(p.conn)))
    die("connect", e);
  epode_loop_run(p.loop, EPODE_RUN_DEFAULT);
  if (p.timer) epode_loop_timer_stop(p.loop, p.timer);
  epode_conn_free(p.conn);
  epode_loop_free(p.loop);
  if (p.fresh) return 2;
  return p.resumed && !p.failed ? 0 : 1;
}
