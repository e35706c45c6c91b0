/* The BOSH transport (src/net/bosh.c) against a scripted connection manager
 * (tests/unit/test_bosh_server.py, a child process on 127.0.0.1), driven by
 * a poll() loop through the transport's fd + timeout host API, carrying a
 * scripted session (the transport's session-ops test hook): what goes on the
 * wire is read back from the server's log. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "epode/conn.h"
#include "epode/sasl.h"
#include "net/bosh.h"
#include "util/config_int.h"

/* ------------------------------------------------------------ server */

typedef struct server {
  pid_t pid;
  int port, dns_port;
  char dir[64];
  char log[128];
} server;

/* Next to this file (CMake compiles it by its absolute path), else found
 * from EPODE_TEST_DATA (tests/data). */
static const char *script_path(void) {
  static char path[1024];
  const char *f = __FILE__;
  const char *slash = strrchr(f, '/');
  snprintf(path, sizeof path, "%.*s/test_bosh_server.py", slash ? (int)(slash - f) : 1,
           slash ? f : ".");
  const char *data = getenv("EPODE_TEST_DATA");
  if (access(path, R_OK) != 0 && data)
    snprintf(path, sizeof path, "%s/../unit/test_bosh_server.py", data);
  return path;
}

static void srv_start(server *s, const char *const *extra) {
  memset(s, 0, sizeof *s);
  snprintf(s->dir, sizeof s->dir, "/tmp/epode-bosh-XXXXXX");
  assert_non_null(mkdtemp(s->dir));
  snprintf(s->log, sizeof s->log, "%s/log", s->dir);
  int p[2];
  assert_int_equal(pipe(p), 0);
  s->pid = fork();
  assert_true(s->pid >= 0);
  if (s->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive a test that died */
    dup2(p[1], 1);
    close(p[0]);
    close(p[1]);
    const char *argv[12] = {"/usr/bin/python3", script_path(), s->log};
    int n = 3;
    for (; extra && *extra && n < 11; extra++)
      argv[n++] = *extra;
    argv[n] = NULL;
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  close(p[1]);
  char line[64] = "";
  size_t got = 0;
  while (got < sizeof line - 1) {
    ssize_t r = read(p[0], line + got, 1);
    if (r <= 0 || line[got] == '\n') break;
    got++;
  }
  line[got] = '\0';
  close(p[0]);
  assert_int_equal(sscanf(line, "%d %d", &s->port, &s->dns_port), 2);
}

static void srv_stop(server *s) {
  if (s->pid > 0) {
    kill(s->pid, SIGTERM);
    waitpid(s->pid, NULL, 0);
  }
  s->pid = 0;
  char cmd[200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", s->dir);
}

/* The server's log as one string (caller frees). */
static char *srv_log(const server *s) {
  FILE *f = fopen(s->log, "r");
  if (!f) return strdup("");
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = calloc(1, (size_t)n + 1);
  if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) buf[0] = '\0';
  fclose(f);
  return buf;
}

/* The n-th (0-based) REQ line's fields. */
typedef struct reqline {
  long ms;
  int inflight;
  char rid[32];
  char body[8192];
} reqline;

static int srv_req(const server *s, int n, reqline *out) {
  char *log = srv_log(s);
  int k = 0, found = 0;
  for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n")) {
    if (strncmp(line, "REQ ", 4) != 0) continue;
    if (k++ != n) continue;
    int conn = 0, off = 0;
    char path[256];
    if (sscanf(line, "REQ %ld %d %d %31s %255s %n", &out->ms, &conn, &out->inflight, out->rid, path,
               &off) >= 5) {
      snprintf(out->body, sizeof out->body, "%s", line + off);
      found = 1;
    }
    break;
  }
  free(log);
  return found;
}

static int srv_count(const server *s, const char *needle) {
  char *log = srv_log(s);
  int n = 0;
  for (const char *p = log; (p = strstr(p, needle)) != NULL; p += strlen(needle))
    n++;
  free(log);
  return n;
}

/* ------------------------------------------------------------ scripted session */

#define FS_MAX 64
typedef struct fsess {
  char out[65536];
  size_t out_len;
  size_t msg[FS_MAX];
  size_t nmsg;
  char *recv[FS_MAX];
  int nrecv;
  int framing, started, eofs;
  int has_tls, tls_version;
  epode_state state;
} fsess;

static fsess *FS(const epode_session *s) { return (fsess *)(uintptr_t)s; }

static epode_err fs_set_framing(epode_session *s, epode_framing f) {
  FS(s)->framing = (int)f;
  return EPODE_OK;
}

static void fs_push(fsess *f, const char *m) {
  size_t n = strlen(m);
  assert_true(f->nmsg < FS_MAX && f->out_len + n <= sizeof f->out);
  memcpy(f->out + f->out_len, m, n);
  f->out_len += n;
  f->msg[f->nmsg++] = n;
}

static const char *OPEN = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' "
                          "version='1.0' xml:lang='en'/>";
static const char *CLOSE = "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";

static epode_err fs_start(epode_session *s, uint64_t now, const epode_tls_info *tls) {
  fsess *f = FS(s);
  f->started = 1;
  f->has_tls = tls != NULL;
  f->tls_version = tls ? tls->version : 0;
  f->state = EPODE_STATE_OPENING;
  fs_push(f, OPEN);
  return EPODE_OK;
}

static const void *fs_peek(const epode_session *s, size_t *len) {
  fsess *f = FS(s);
  *len = f->nmsg ? f->msg[0] : 0;
  return f->nmsg ? f->out : NULL;
}

static void fs_consume(epode_session *s, size_t n) {
  fsess *f = FS(s);
  assert_true(f->nmsg > 0 && f->msg[0] == n);
  memmove(f->out, f->out + n, f->out_len - n);
  f->out_len -= n;
  memmove(f->msg, f->msg + 1, (f->nmsg - 1) * sizeof *f->msg);
  f->nmsg--;
}

static epode_err fs_recv(epode_session *s, const epode_stanza *el, uint64_t now) {
  fsess *f = FS(s);
  char *str = NULL;
  size_t len = 0;
  assert_int_equal(epode_stanza_to_string(el, NULL, &str, &len), EPODE_OK);
  assert_true(f->nrecv < FS_MAX);
  f->recv[f->nrecv++] = strdup(str);
  epode_free(epode_stanza_mem(el), str);
  return EPODE_OK;
}

static epode_err fs_eof(epode_session *s, uint64_t now) {
  FS(s)->eofs++;
  FS(s)->state = EPODE_STATE_CLOSED;
  return EPODE_OK;
}

static epode_state fs_state(const epode_session *s) { return FS(s)->state; }

static const epode__bosh_session_ops fs_ops = {fs_set_framing, fs_start, fs_peek, fs_consume,
                                               fs_recv,        fs_eof,   fs_state};

static void fs_free(fsess *f) {
  for (int i = 0; i < f->nrecv; i++)
    free(f->recv[i]);
  free(f);
}

static int fs_received(const fsess *f, const char *needle) {
  for (int i = 0; i < f->nrecv; i++)
    if (strstr(f->recv[i], needle)) return i;
  return -1;
}

/* ------------------------------------------------------------ host loop */

typedef struct host {
  struct pollfd fds[64];
  int nfds;
  int64_t due; /* absolute ms, -1 none */
  int failed, done;
  epode_err err;
  char detail[1024];
  epode__bosh *b;
} host;

static void h_watch(void *ud, int fd, unsigned ev) {
  host *h = ud;
  int i;
  for (i = 0; i < h->nfds && h->fds[i].fd != fd; i++)
    ;
  if (!ev) {
    if (i < h->nfds) h->fds[i] = h->fds[--h->nfds];
    return;
  }
  if (i == h->nfds) {
    assert_true(h->nfds < 64);
    h->nfds++;
  }
  h->fds[i].fd = fd;
  h->fds[i].events =
      (short)(((ev & EPODE_IO_READ) ? POLLIN : 0) | ((ev & EPODE_IO_WRITE) ? POLLOUT : 0));
}

static void h_timer(void *ud, int64_t ms) {
  host *h = ud;
  h->due = ms < 0 ? -1 : (int64_t)epode_now_ms() + ms;
}

static void h_failed(void *ud, epode_err err, const char *detail) {
  host *h = ud;
  assert_false(h->failed || h->done);
  h->failed = 1;
  h->err = err;
  snprintf(h->detail, sizeof h->detail, "%s", detail);
}

static void h_done(void *ud) {
  host *h = ud;
  assert_false(h->failed || h->done);
  h->done = 1;
}

typedef int (*until_fn)(void *arg);

/* Runs the loop until `until` holds, the transport ended, or `ms` passed. */
static int run(host *h, until_fn until, void *arg, int ms) {
  uint64_t end = epode_now_ms() + (uint64_t)ms;
  for (;;) {
    if (until && until(arg)) return 1;
    if (h->failed || h->done) return 0;
    uint64_t now = epode_now_ms();
    if (now >= end) return 0;
    int64_t wait = (int64_t)(end - now);
    if (h->due >= 0) {
      int64_t d = h->due - (int64_t)now;
      if (d < wait) wait = d < 0 ? 0 : d;
    }
    struct pollfd fds[64];
    int n = h->nfds;
    memcpy(fds, h->fds, sizeof fds);
    int r = poll(fds, (nfds_t)n, (int)wait);
    assert_true(r >= 0 || errno == EINTR);
    for (int i = 0; i < n && r > 0; i++) {
      if (!fds[i].revents) continue;
      unsigned ev = 0;
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) ev |= EPODE_IO_READ;
      if (fds[i].revents & (POLLOUT | POLLERR)) ev |= EPODE_IO_WRITE;
      (void)epode__bosh_process_fd(h->b, fds[i].fd, ev);
      if (h->failed || h->done) break;
    }
    if (!h->failed && !h->done && h->due >= 0 && (int64_t)epode_now_ms() >= h->due) {
      h->due = -1;
      (void)epode__bosh_process_timeout(h->b);
    }
  }
}

/* ------------------------------------------------------------ fixture */

typedef struct fix {
  server srv;
  epode_config *cfg;
  fsess *fs;
  host h;
  epode__bosh *b;
} fix;

static int rnd_fixed(void *ud, unsigned char *buf, size_t len) {
  memset(buf, 0x5a, len);
  return 0;
}

static void fix_cfg(fix *f) {
  assert_int_equal(epode_config_new(&f->cfg, NULL), EPODE_OK);
  assert_int_equal(epode_config_set_jid(f->cfg, "user@localhost"), EPODE_OK);
  assert_int_equal(epode_config_set_random(f->cfg, rnd_fixed, NULL), EPODE_OK);
}

static void fix_new(fix *f, const char *url) {
  f->fs = calloc(1, sizeof *f->fs);
  f->h.due = -1;
  epode__bosh_host hh = {&f->h, h_watch, h_timer, h_failed, h_done};
  assert_int_equal(epode__bosh_new(&f->b, f->cfg, (epode_session *)(void *)f->fs, url, &hh),
                   EPODE_OK);
  f->h.b = f->b;
  epode__bosh_set_session_ops(f->b, &fs_ops);
}

/* Server + transport at http://127.0.0.1:PORT/PATH. */
static void fix_open(fix *f, const char *path) {
  memset(f, 0, sizeof *f);
  srv_start(&f->srv, NULL);
  fix_cfg(f);
  char url[256];
  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", f->srv.port, path);
  fix_new(f, url);
}

static void fix_close(fix *f) {
  epode__bosh_free(f->b);
  assert_int_equal(f->h.nfds, 0); /* every fd forgotten */
  assert_int_equal(f->h.due, -1); /* timer cancelled */
  epode_config_free(f->cfg);
  fs_free(f->fs);
  srv_stop(&f->srv);
}

typedef struct want {
  fsess *fs;
  const char *needle;
  int count;
} want;

static int got_it(void *arg) {
  want *w = arg;
  int n = 0;
  for (int i = 0; i < w->fs->nrecv; i++)
    if (strstr(w->fs->recv[i], w->needle)) n++;
  return n >= (w->count ? w->count : 1);
}

static void wait_for(fix *f, const char *needle, int ms) {
  want w = {f->fs, needle, 0};
  if (!run(&f->h, got_it, &w, ms))
    fail_msg("never received '%s' (failed=%d: %s)", needle, f->h.failed, f->h.detail);
}

/* Starts and runs until the features of session creation are in. */
static void fix_session(fix *f) {
  assert_int_equal(epode__bosh_start(f->b), EPODE_OK);
  wait_for(f, "features", 5000);
}

static void send_msg(fix *f, const char *id) {
  char m[200];
  snprintf(m, sizeof m, "<message xmlns='jabber:client' to='echo' id='%s'/>", id);
  fs_push(f->fs, m);
}

static void run_failure(fix *f, int ms) {
  run(&f->h, NULL, NULL, ms);
  if (!f->h.failed) fail_msg("no failure after %d ms", ms);
}

/* ------------------------------------------------------------ tests */

static void test_create_fields(void **state) {
  fix f;
  fix_open(&f, "/echo");
  fix_session(&f);
  epode__bosh_params p;
  epode__bosh_get_params(f.b, &p);
  reqline r;
  assert_true(srv_req(&f.srv, 0, &r));
  char want_body[600];
  snprintf(want_body, sizeof want_body,
           "<body content='text/xml; charset=utf-8' hold='1' rid='%s' to='localhost' ver='1.6' "
           "wait='60' xml:lang='en' xmpp:version='1.0' xmlns='http://jabber.org/protocol/httpbind' "
           "xmlns:xmpp='urn:xmpp:xbosh'/>",
           r.rid);
  assert_string_equal(r.body, want_body);
  /* The rid is random (here: the fixed source), below 2^53 with room. */
  unsigned long long rid = strtoull(r.rid, NULL, 10);
  assert_true(rid > 0 && rid < (1ull << 52));
  unsigned long long x = 0x5a5a5a5a5a5a5a5aull;
  assert_int_equal(rid, 1 + x % ((1ull << 52) - 1));
  /* The server's parameters. */
  assert_string_equal(p.sid, "sid-1");
  assert_string_equal(p.ver, "1.11");
  assert_int_equal(p.requests, 2);
  assert_int_equal(p.wait, 2);
  assert_int_equal(p.polling, 5);
  assert_int_equal(p.inactivity, 60);
  assert_int_equal(p.maxpause, 120);
  assert_int_equal(p.hold, 1);
  /* The session: BOSH framing, plaintext start, features delivered. */
  assert_int_equal(f.fs->framing, EPODE_FRAMING_BOSH);
  assert_int_equal(f.fs->has_tls, 0);
  assert_true(fs_received(f.fs, "urn:ietf:params:xml:ns:xmpp-sasl") >= 0);
  /* Then an empty long-poll with the next rid. */
  run(&f.h, NULL, NULL, 300);
  reqline r2;
  assert_true(srv_req(&f.srv, 1, &r2));
  char want2[200];
  snprintf(want2, sizeof want2,
           "<body rid='%llu' sid='sid-1' xmlns='http://jabber.org/protocol/httpbind'/>", rid + 1);
  assert_string_equal(r2.body, want2);
  assert_false(f.h.failed);
  fix_close(&f);
}

static void test_packing(void **state) {
  fix f;
  fix_open(&f, "/echo");
  fix_session(&f);
  run(&f.h, NULL, NULL, 200); /* the long-poll is held */
  send_msg(&f, "a1");
  send_msg(&f, "a2");
  send_msg(&f, "a3");
  assert_int_equal(epode__bosh_flush(f.b), EPODE_OK);
  want w = {f.fs, "-echo", 3};
  assert_true(run(&f.h, got_it, &w, 5000));
  /* All three went in one body, in order. */
  char *log = srv_log(&f.srv);
  const char *l = strstr(log, "id='a1'");
  assert_non_null(l);
  const char *nl = strchr(l, '\n');
  const char *a2 = strstr(l, "id='a2'"), *a3 = strstr(l, "id='a3'");
  assert_true(a2 && a3 && a2 < a3 && a3 < nl);
  assert_int_equal(srv_count(&f.srv, "id='a1'"), 1);
  free(log);
  assert_true(fs_received(f.fs, "a1-echo") < fs_received(f.fs, "a2-echo"));
  fix_close(&f);
}

static int max_inflight(const server *s) {
  int m = 0;
  reqline r;
  for (int i = 0; srv_req(s, i, &r); i++)
    if (r.inflight > m) m = r.inflight;
  return m;
}

static void burst(fix *f, int rounds) {
  char id[32];
  for (int i = 0; i < rounds; i++) {
    snprintf(id, sizeof id, "m%d", i);
    send_msg(f, id);
    epode__bosh_flush(f->b);
    run(&f->h, NULL, NULL, 30);
  }
  want w = {f->fs, "-echo", rounds};
  assert_true(run(&f->h, got_it, &w, 10000));
}

static void test_inflight_limit(void **state) {
  fix f;
  fix_open(&f, "/echo");
  fix_session(&f);
  burst(&f, 12);
  int m = max_inflight(&f.srv);
  /* Never past the window. (Usually 2 is reached, but on a loaded machine
   * the server may answer each request before the next is sent.) */
  assert_in_range(m, 1, 2);
  assert_false(f.h.failed);
  fix_close(&f);

  /* A server allowing one request: never two at a time. */
  fix_open(&f, "/echo?requests=1&hold=0&polling=0");
  fix_session(&f);
  burst(&f, 6);
  assert_int_equal(max_inflight(&f.srv), 1);
  fix_close(&f);
}

static void test_retransmit(void **state) {
  fix f;
  fix_open(&f, "/drop");
  fix_session(&f);
  run(&f.h, NULL, NULL, 200);
  send_msg(&f, "r1");
  epode__bosh_flush(f.b);
  wait_for(&f, "r1-echo", 8000);
  assert_int_equal(srv_count(&f.srv, "DROP"), 1);
  /* Sent twice, the same bytes with the same rid. */
  reqline a, b;
  int first = -1, second = -1;
  for (int i = 0; srv_req(&f.srv, i, &a); i++) {
    if (!strstr(a.body, "id='r1'")) continue;
    if (first < 0)
      first = i;
    else if (second < 0)
      second = i;
  }
  assert_true(first >= 0 && second > first);
  srv_req(&f.srv, first, &a);
  srv_req(&f.srv, second, &b);
  assert_string_equal(a.rid, b.rid);
  assert_string_equal(a.body, b.body);
  assert_int_equal(srv_count(&f.srv, "id='r1'"), 2);
  assert_int_equal(fs_received(f.fs, "r1-echo"), f.fs->nrecv - 1); /* delivered once */
  for (int i = 0; i < f.fs->nrecv - 1; i++)
    assert_null(strstr(f.fs->recv[i], "r1-echo"));
  assert_false(f.h.failed);
  fix_close(&f);
}

static void test_retry_exhausted(void **state) {
  fix f;
  fix_open(&f, "/dropall");
  fix_session(&f);
  run_failure(&f, 15000);
  assert_int_equal(f.h.err, EPODE_ERR_EOF);
  assert_non_null(strstr(f.h.detail, "failed 4 times"));
  fix_close(&f);
}

static void test_out_of_order(void **state) {
  fix f;
  fix_open(&f, "/ooo");
  fix_session(&f);
  run(&f.h, NULL, NULL, 200);
  send_msg(&f, "x");
  epode__bosh_flush(f.b);
  wait_for(&f, "'first'", 5000);
  wait_for(&f, "'second'", 5000);
  assert_int_equal(srv_count(&f.srv, "SENT-OOO"), 1);
  int i1 = fs_received(f.fs, "'first'"), i2 = fs_received(f.fs, "'second'");
  assert_true(i1 >= 0 && i1 < i2);
  fix_close(&f);
}

static void test_terminate_conditions(void **state) {
  static const char *conds[] = {
      "host-unknown",       "item-not-found",  "policy-violation", "remote-connection-failed",
      "see-other-uri",      "system-shutdown", "bad-request",      "other-request",
      "remote-stream-error"};
  for (size_t i = 0; i < sizeof conds / sizeof *conds; i++) {
    fix f;
    char path[100];
    snprintf(path, sizeof path, "/term/%s", conds[i]);
    fix_open(&f, path);
    fix_session(&f);
    run_failure(&f, 5000);
    assert_int_equal(f.h.err, EPODE_ERR_STREAM);
    if (!strstr(f.h.detail, conds[i])) fail_msg("%s not in '%s'", conds[i], f.h.detail);
    if (strcmp(conds[i], "remote-stream-error") == 0) {
      assert_non_null(strstr(f.h.detail, "conflict"));
      assert_non_null(strstr(f.h.detail, "Replaced by new connection"));
      assert_int_equal(fs_received(f.fs, "conflict"), -1); /* not passed on as a stanza */
    }
    if (strcmp(conds[i], "see-other-uri") == 0)
      assert_non_null(strstr(f.h.detail, "https://other.example/bosh"));
    /* Later calls keep returning the failure, and call nothing. */
    assert_int_equal(epode__bosh_flush(f.b), EPODE_ERR_STREAM);
    fix_close(&f);
  }
  /* At session creation. */
  fix f;
  fix_open(&f, "/termcreate/host-unknown");
  assert_int_equal(epode__bosh_start(f.b), EPODE_OK);
  run_failure(&f, 5000);
  assert_int_equal(f.h.err, EPODE_ERR_STREAM);
  assert_non_null(strstr(f.h.detail, "host-unknown"));
  fix_close(&f);
}

static void expect_creation_failure(const char *path, epode_err err, const char *needle) {
  fix f;
  fix_open(&f, path);
  assert_int_equal(epode__bosh_start(f.b), EPODE_OK);
  run_failure(&f, 8000);
  if (f.h.err != err || !strstr(f.h.detail, needle))
    fail_msg("%s: got %s '%s', want %s with '%s'", path, epode_err_name(f.h.err), f.h.detail,
             epode_err_name(err), needle);
  fix_close(&f);
}

static void test_malformed(void **state) {
  expect_creation_failure("/notxml", EPODE_ERR_PROTOCOL, "not XML");
  expect_creation_failure("/wrongroot", EPODE_ERR_PROTOCOL, "<html");
  expect_creation_failure("/wrongns", EPODE_ERR_PROTOCOL, "urn:wrong");
  expect_creation_failure("/nosid", EPODE_ERR_PROTOCOL, "no sid");
  /* A wrong sid on a later response. */
  fix f;
  fix_open(&f, "/wrongsid");
  fix_session(&f);
  run_failure(&f, 5000);
  assert_int_equal(f.h.err, EPODE_ERR_PROTOCOL);
  assert_non_null(strstr(f.h.detail, "not-yours"));
  fix_close(&f);
}

static void test_http_status(void **state) {
  expect_creation_failure("/status/404", EPODE_ERR_PROTOCOL, "HTTP 404");
  expect_creation_failure("/status/403", EPODE_ERR_PROTOCOL, "HTTP 403");
  expect_creation_failure("/status/500", EPODE_ERR_PROTOCOL, "HTTP 500");
  /* 503 is an intermediary's: tried again. */
  fix f;
  fix_open(&f, "/status503once");
  fix_session(&f);
  assert_int_equal(srv_count(&f.srv, "SENT-503"), 1);
  reqline a, b;
  assert_true(srv_req(&f.srv, 0, &a) && srv_req(&f.srv, 1, &b));
  assert_string_equal(a.body, b.body);
  fix_close(&f);
}

static void test_oversized(void **state) {
  const char *paths[] = {"/big", "/bigchunked"};
  for (int i = 0; i < 2; i++) {
    fix f;
    memset(&f, 0, sizeof f);
    srv_start(&f.srv, NULL);
    fix_cfg(&f);
    assert_int_equal(epode_config_set_limit(f.cfg, EPODE_LIMIT_STANZA_BYTES, 4096), EPODE_OK);
    char url[200];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", f.srv.port, paths[i]);
    fix_new(&f, url);
    fix_session(&f);
    run_failure(&f, 5000);
    assert_int_equal(f.h.err, EPODE_ERR_LIMIT);
    assert_non_null(strstr(f.h.detail, "exceeds 20480 bytes"));
    fix_close(&f);
  }
}

static void test_polling_interval(void **state) {
  fix f;
  fix_open(&f, "/poll");
  fix_session(&f);
  run(&f.h, NULL, NULL, 3600);
  assert_false(f.h.failed);
  /* Empty requests, each answered empty at once: >= 1 s apart. */
  reqline r;
  long prev = -1;
  int n = 0;
  for (int i = 1; srv_req(&f.srv, i, &r); i++) {
    if (prev >= 0 && r.ms - prev < 950) fail_msg("requests %ld ms apart", r.ms - prev);
    prev = r.ms;
    n++;
  }
  assert_true(n >= 3 && n <= 5);
  /* Data goes out at once, whatever the gate. */
  send_msg(&f, "p");
  long before = (long)epode_now_ms();
  epode__bosh_flush(f.b);
  run(&f.h, NULL, NULL, 300);
  assert_true((long)epode_now_ms() - before < 1000);
  assert_int_equal(srv_count(&f.srv, "id='p'"), 1);
  fix_close(&f);
}

static int is_done(void *arg) { return ((host *)arg)->done; }

static void test_client_terminate(void **state) {
  fix f;
  fix_open(&f, "/echo");
  fix_session(&f);
  run(&f.h, NULL, NULL, 200);
  fs_push(f.fs, "<presence xmlns='jabber:client' type='unavailable'/>");
  fs_push(f.fs, CLOSE);
  epode__bosh_flush(f.b);
  assert_true(run(&f.h, is_done, &f.h, 5000));
  assert_false(f.h.failed);
  assert_int_equal(f.fs->eofs, 1);
  assert_int_equal(srv_count(&f.srv, "TERMINATE"), 1);
  char *log = srv_log(&f.srv);
  const char *t = strstr(log, "type='terminate'");
  assert_non_null(t);
  const char *nl = strchr(t, '\n');
  const char *pr = strstr(t, "<presence xmlns='jabber:client' type='unavailable'/>");
  assert_true(pr && pr < nl);
  free(log);
  fix_close(&f);
}

static void test_restart(void **state) {
  fix f;
  fix_open(&f, "/echo");
  fix_session(&f);
  run(&f.h, NULL, NULL, 200);
  fs_push(f.fs, OPEN);
  epode__bosh_flush(f.b);
  wait_for(&f, "xmpp-bind", 5000);
  epode__bosh_params p;
  epode__bosh_get_params(f.b, &p);
  char *log = srv_log(&f.srv);
  const char *l = strstr(log, "xmpp:restart");
  assert_non_null(l);
  free(log);
  reqline r;
  int found = 0;
  for (int i = 0; srv_req(&f.srv, i, &r); i++) {
    if (!strstr(r.body, "restart")) continue;
    char want_body[400];
    snprintf(want_body, sizeof want_body,
             "<body rid='%s' sid='sid-1' to='localhost' xml:lang='en' xmpp:restart='true' "
             "xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'/>",
             r.rid);
    assert_string_equal(r.body, want_body);
    found = 1;
  }
  assert_true(found);
  fix_close(&f);
}

static int count_threads(void) {
  DIR *d = opendir("/proc/self/task");
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static void no_threads_with(const char *hostpart, int fake_dns) {
  fix f;
  memset(&f, 0, sizeof f);
  srv_start(&f.srv, NULL);
  fix_cfg(&f);
  char url[200];
  snprintf(url, sizeof url, "http://%s:%d/echo", hostpart, f.srv.port);
  int before = count_threads();
  fix_new(&f, url);
  if (fake_dns) {
    char csv[64];
    snprintf(csv, sizeof csv, "127.0.0.1:%d", f.srv.dns_port);
    assert_int_equal(epode__bosh_set_dns_servers(f.b, csv), EPODE_OK);
  }
  fix_session(&f);
  send_msg(&f, "t");
  epode__bosh_flush(f.b);
  wait_for(&f, "t-echo", 5000);
  assert_int_equal(count_threads(), before);
  if (fake_dns) assert_true(srv_count(&f.srv, "DNS bosh.test type=1") >= 1);
  fix_close(&f);
  assert_int_equal(count_threads(), before);
}

static void test_no_threads(void **state) {
  no_threads_with("127.0.0.1", 0);
  no_threads_with("localhost", 0);
  no_threads_with("bosh.test", 1); /* c-ares, through the host loop */
}

static void test_dns_failure(void **state) {
  fix f;
  memset(&f, 0, sizeof f);
  srv_start(&f.srv, NULL);
  fix_cfg(&f);
  char url[200], csv[64];
  snprintf(url, sizeof url, "http://nx.test:%d/echo", f.srv.port);
  fix_new(&f, url);
  snprintf(csv, sizeof csv, "127.0.0.1:%d", f.srv.dns_port);
  assert_int_equal(epode__bosh_set_dns_servers(f.b, csv), EPODE_OK);
  assert_int_equal(epode__bosh_start(f.b), EPODE_OK);
  run_failure(&f, 5000);
  assert_int_equal(f.h.err, EPODE_ERR_DNS);
  assert_non_null(strstr(f.h.detail, "nx.test"));
  fix_close(&f);
}

static void test_bad_urls(void **state) {
  epode_config *cfg = NULL;
  assert_int_equal(epode_config_new(&cfg, NULL), EPODE_OK);
  fsess fs;
  memset(&fs, 0, sizeof fs);
  host h;
  memset(&h, 0, sizeof h);
  epode__bosh_host hh = {&h, h_watch, h_timer, h_failed, h_done};
  const char *bad[] = {"ftp://example.com/", "ws://example.com/", "http://", "not a url",
                       "http://example.com:99999/"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    epode__bosh *b = (epode__bosh *)1;
    assert_int_equal(epode__bosh_new(&b, cfg, (epode_session *)(void *)&fs, bad[i], &hh),
                     EPODE_ERR_INVAL);
    assert_null(b);
  }
  epode__bosh_free(NULL);
  epode_config_free(cfg);
}

/* ------------------------------------------------------------ HTTPS */

typedef struct tls_files {
  char dir[64];
  char ca[128], srv_cert[128], srv_key[128], cli_cert[128], cli_key[128], cli_p12[128];
} tls_files;

static EVP_PKEY *gen_key(void) {
  EVP_PKEY *k = EVP_EC_gen("P-256");
  assert_non_null(k);
  return k;
}

static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                       const char *san, int ca, long serial) {
  X509 *c = X509_new();
  X509_set_version(c, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(c), serial);
  X509_gmtime_adj(X509_getm_notBefore(c), -3600);
  X509_gmtime_adj(X509_getm_notAfter(c), 86400);
  X509_set_pubkey(c, key);
  X509_NAME *n = X509_get_subject_name(c);
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer) : n);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer ? issuer : c, c, NULL, NULL, 0);
  X509_EXTENSION *ex =
      X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
  X509_add_ext(c, ex, -1);
  X509_EXTENSION_free(ex);
  if (san) {
    ex = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
    X509_add_ext(c, ex, -1);
    X509_EXTENSION_free(ex);
  }
  assert_true(X509_sign(c, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
  return c;
}

static void write_pem(const char *path, X509 *cert, EVP_PKEY *key) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  if (cert) PEM_write_X509(f, cert);
  if (key) PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
  fclose(f);
}

static void make_tls_files(tls_files *t) {
  snprintf(t->dir, sizeof t->dir, "/tmp/epode-bosh-tls-XXXXXX");
  assert_non_null(mkdtemp(t->dir));
#define P(field, name) snprintf(t->field, sizeof t->field, "%s/" name, t->dir)
  P(ca, "ca.pem");
  P(srv_cert, "server.pem");
  P(srv_key, "server.key");
  P(cli_cert, "client.pem");
  P(cli_key, "client.key");
  P(cli_p12, "client.p12");
#undef P
  EVP_PKEY *cak = gen_key(), *sk = gen_key(), *ck = gen_key();
  X509 *ca = make_cert("epode test CA", cak, NULL, NULL, NULL, 1, 1);
  X509 *sc = make_cert("localhost", sk, ca, cak, "DNS:localhost,IP:127.0.0.1", 0, 2);
  X509 *cc = make_cert("bosh-client", ck, ca, cak, NULL, 0, 3);
  write_pem(t->ca, ca, NULL);
  write_pem(t->srv_cert, sc, NULL);
  write_pem(t->srv_key, NULL, sk);
  write_pem(t->cli_cert, cc, NULL);
  write_pem(t->cli_key, NULL, ck);
  PKCS12 *p12 = PKCS12_create("p12pass", "client", ck, cc, NULL, 0, 0, 0, 0, 0);
  assert_non_null(p12);
  FILE *f = fopen(t->cli_p12, "wb");
  i2d_PKCS12_fp(f, p12);
  fclose(f);
  PKCS12_free(p12);
  X509_free(ca);
  X509_free(sc);
  X509_free(cc);
  EVP_PKEY_free(cak);
  EVP_PKEY_free(sk);
  EVP_PKEY_free(ck);
}

static void https_case(const tls_files *t, int mode) {
  /* mode 0: no CA (verification fails), 1: CA file, 2: no CA but no-verify,
   * 3: CA file + client certificate (PEM), 4: CA file + client PKCS#12. */
  fix f;
  memset(&f, 0, sizeof f);
  const char *args[] = {"--tls", t->srv_cert, t->srv_key, "--cafile", t->ca, NULL};
  srv_start(&f.srv, args);
  fix_cfg(&f);
  if (mode == 1 || mode >= 3) assert_int_equal(epode_config_set_cafile(f.cfg, t->ca), EPODE_OK);
  if (mode == 2) assert_int_equal(epode_config_set_flags(f.cfg, EPODE_CFG_TLS_NO_VERIFY), EPODE_OK);
  if (mode == 3) {
    assert_int_equal(epode_config_set_client_cert(f.cfg, t->cli_cert, t->cli_key), EPODE_OK);
  }
  if (mode == 4) {
    assert_int_equal(epode_config_set_client_pkcs12(f.cfg, t->cli_p12, "p12pass"), EPODE_OK);
  }
  char url[200];
  snprintf(url, sizeof url, "https://localhost:%d/echo", f.srv.port);
  fix_new(&f, url);
  if (mode == 0) {
    assert_int_equal(epode__bosh_start(f.b), EPODE_OK);
    run_failure(&f, 5000);
    assert_int_equal(f.h.err, EPODE_ERR_TLS_VERIFY);
  } else {
    fix_session(&f);
    assert_int_equal(f.fs->has_tls, 1);
    assert_int_equal(f.fs->tls_version, 0x0303);
    int cert =
        fs_received(f.fs, "cn=\"bosh-client\"") >= 0 || fs_received(f.fs, "cn='bosh-client'") >= 0;
    assert_int_equal(cert, mode >= 3);
    send_msg(&f, "s");
    epode__bosh_flush(f.b);
    wait_for(&f, "s-echo", 5000);
  }
  fix_close(&f);
}

static void test_https(void **state) {
  tls_files t;
  make_tls_files(&t);
  for (int mode = 0; mode <= 4; mode++)
    https_case(&t, mode);
  char cmd[200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", t.dir);
  assert_int_equal(system(cmd), 0);
}

/* ------------------------------------------------------------ a real session */

typedef struct real {
  host h;
  epode__bosh *b;
  epode_session *s;
  int ready, closed, echoes;
  epode_err close_err;
} real;

static void real_ev(const epode_event *ev, void *ud) {
  real *r = ud;
  if (ev->type == EPODE_EV_READY) r->ready = 1;
  if (ev->type == EPODE_EV_CLOSED) {
    r->closed = 1;
    r->close_err = ev->failure ? ev->failure->err : EPODE_OK;
  }
}

static void real_out(epode_session *s, void *ud) {
  real *r = ud;
  (void)epode__bosh_flush(r->b);
}

static int real_msg(epode_session *s, const epode_stanza *st, void *ud) {
  real *r = ud;
  const char *id = epode_stanza_id(st);
  if (id && strstr(id, "-echo")) r->echoes++;
  return EPODE_HANDLER_KEEP;
}

static int real_ready(void *arg) { return ((real *)arg)->ready; }
static int real_echoed(void *arg) { return ((real *)arg)->echoes >= 2; }

static void test_real_session(void **state) {
  server srv;
  srv_start(&srv, NULL);
  epode_config *cfg = NULL;
  assert_int_equal(epode_config_new(&cfg, NULL), EPODE_OK);
  assert_int_equal(epode_config_set_jid(cfg, "user@localhost"), EPODE_OK);
  assert_int_equal(epode_config_set_password(cfg, "secret"), EPODE_OK);
  assert_int_equal(epode_config_set_flags(cfg, EPODE_CFG_ALLOW_PLAINTEXT), EPODE_OK);
  real r;
  memset(&r, 0, sizeof r);
  r.h.due = -1;
  assert_int_equal(epode_session_new(&r.s, cfg), EPODE_OK);
  epode_session_set_event_cb(r.s, real_ev, &r);
  epode_session_set_output_cb(r.s, real_out, &r);
  assert_int_equal(epode_session_add_handler(r.s, "message", NULL, NULL, real_msg, &r), EPODE_OK);
  char url[200];
  snprintf(url, sizeof url, "http://localhost:%d/echo", srv.port);
  epode__bosh_host hh = {&r.h, h_watch, h_timer, h_failed, h_done};
  assert_int_equal(epode__bosh_new(&r.b, cfg, r.s, url, &hh), EPODE_OK);
  r.h.b = r.b;
  assert_int_equal(epode__bosh_start(r.b), EPODE_OK);
  assert_int_equal(epode_session_framing(r.s), EPODE_FRAMING_BOSH);
  if (!run(&r.h, real_ready, &r, 5000))
    fail_msg("not ready: %s / %s", r.h.detail, epode_session_failure(r.s)->detail);
  assert_string_equal(epode_session_jid(r.s), "user@localhost/bosh");
  /* The SASL exchange and the restart went over BOSH. */
  assert_int_equal(srv_count(&srv, "mechanism='PLAIN'"), 1);
  assert_int_equal(srv_count(&srv, "xmpp:restart='true'"), 1);
  /* Stanzas sent by the app go out through the output callback. */
  epode_stanza *m = NULL;
  for (int i = 0; i < 2; i++) {
    char id[16];
    snprintf(id, sizeof id, "rs%d", i);
    assert_int_equal(epode_message_new(&m, NULL, "chat", "echo@localhost", "hi"), EPODE_OK);
    assert_int_equal(epode_stanza_set_attr(m, "id", id), EPODE_OK);
    assert_int_equal(epode_session_send(r.s, m), EPODE_OK);
    epode_stanza_free(m);
  }
  assert_true(run(&r.h, real_echoed, &r, 5000));
  /* A clean close: terminate, then done, and the session is closed. */
  assert_int_equal(epode_session_close(r.s), EPODE_OK);
  assert_true(run(&r.h, is_done, &r.h, 5000));
  assert_false(r.h.failed);
  assert_int_equal(srv_count(&srv, "TERMINATE"), 1);
  assert_int_equal(epode_session_state(r.s), EPODE_STATE_CLOSED);
  assert_true(r.closed);
  assert_int_equal(r.close_err, EPODE_OK);
  epode__bosh_free(r.b);
  assert_int_equal(r.h.nfds, 0);
  epode_session_free(r.s);
  epode_config_free(cfg);
  srv_stop(&srv);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_create_fields),
      cmocka_unit_test(test_packing),
      cmocka_unit_test(test_inflight_limit),
      cmocka_unit_test(test_retransmit),
      cmocka_unit_test(test_retry_exhausted),
      cmocka_unit_test(test_out_of_order),
      cmocka_unit_test(test_terminate_conditions),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_http_status),
      cmocka_unit_test(test_oversized),
      cmocka_unit_test(test_polling_interval),
      cmocka_unit_test(test_client_terminate),
      cmocka_unit_test(test_restart),
      cmocka_unit_test(test_no_threads),
      cmocka_unit_test(test_dns_failure),
      cmocka_unit_test(test_bad_urls),
      cmocka_unit_test(test_https),
      cmocka_unit_test(test_real_session),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
