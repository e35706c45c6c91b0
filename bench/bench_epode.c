/* bench_epode — the epode side of each benchmark scenario.
 *
 *   bench_epode inbound  --port P --count N [--url ws://…|http://…] [--tls direct]
 *   bench_epode outbound --port P --count N
 *   bench_epode login    --port P --count K --tls direct|starttls
 *   bench_epode many     --port P --sessions N [--tls direct] [--idle S]
 *
 * Everything goes through the public API as an application would use it:
 * epode_conn on epode's own loop, a handler per message, epode_session_send.
 * Results are printed as "RESULT key=value …" lines for bench/run.py.
 *
 * Allocations are counted twice: through the config's epode_mem hooks
 * (epode's own allocations) and by the counting malloc in common.c (the
 * whole process: epode, expat, OpenSSL, libc). */
#include <epode/epode.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "msgs.h"

static struct {
  const char *mode;
  int port;
  unsigned long long count;
  const char *tls;
  const char *url;
  const char *cafile;
  unsigned sessions;
  double idle;
  unsigned window;
} opt = {"", 0, 1000000ull, "none", NULL, NULL, 1000, 3.0, 128};

/* ------------------------------------------------------------ epode_mem */

static uint64_t n_epode_allocs;

static void *m_alloc(size_t n, void *ud) {
  (void)ud;
  n_epode_allocs++;
  return malloc(n);
}
static void *m_realloc(void *p, size_t n, void *ud) {
  (void)ud;
  n_epode_allocs++;
  return realloc(p, n);
}
static void m_free(void *p, void *ud) {
  (void)ud;
  free(p);
}
static const epode_mem counting_mem = {m_alloc, m_realloc, m_free, NULL};

/* ------------------------------------------------------------ setup */

static epode_config *make_config(void) {
  epode_config *cfg;
  if (epode_config_new(&cfg, &counting_mem)) exit(1);
  epode_config_set_jid(cfg, BENCH_USER "@" BENCH_DOMAIN);
  epode_config_set_password(cfg, BENCH_PASSWORD);
  epode_config_set_resource(cfg, "bench");
  if (opt.url) {
    epode_config_set_url(cfg, opt.url);
  } else {
    epode_config_set_server(cfg, "127.0.0.1", (uint16_t)opt.port);
  }
  /* TLS is verified against the server's throwaway certificate (--cafile),
   * as an application would verify a real one; "--cafile system" verifies
   * against OpenSSL's default store (the system's, or SSL_CERT_FILE), as an
   * application that sets no CA file does. */
  unsigned flags = 0;
  if (opt.cafile && strcmp(opt.cafile, "system") != 0)
    epode_config_set_cafile(cfg, opt.cafile);
  else if (!opt.cafile)
    flags |= EPODE_CFG_TLS_NO_VERIFY;
  if (strcmp(opt.tls, "none") == 0) flags |= EPODE_CFG_ALLOW_PLAINTEXT;
  epode_config_set_flags(cfg, flags);
  if (strcmp(opt.tls, "direct") == 0) epode_config_set_tls_mode(cfg, EPODE_TLS_DIRECT);
  if (strcmp(opt.tls, "starttls") == 0 || strcmp(opt.tls, "none") == 0)
    epode_config_set_tls_mode(cfg, EPODE_TLS_STARTTLS);
  return cfg;
}

static void fail_event(const epode_event *ev) {
  const epode_failure *f = ev->failure;
  fprintf(stderr, "bench_epode: %s: %s%s%s\n", epode_err_name(f->err), f->detail,
          f->condition ? " / " : "", f->condition ? f->condition : "");
  exit(1);
}

/* ------------------------------------------------------------ one session */

typedef struct one {
  epode_loop *loop;
  epode_conn *conn;
  int ready;
  double t_ready;
  unsigned long long n;
  size_t body_bytes;
  double t_end;
  uint64_t a0, a1, m0, m1; /* alloc counters at 10 % and 90 % */
  int done;
} one;

static void one_event(const epode_event *ev, void *ud) {
  one *o = ud;
  if (ev->type == EPODE_EV_READY) {
    o->ready = 1;
    o->t_ready = bench_now();
    epode_loop_stop(o->loop);
  } else if (ev->type == EPODE_EV_ERROR) {
    fail_event(ev);
  }
}

static int on_message(epode_session *s, const epode_stanza *st, void *ud) {
  (void)s;
  one *o = ud;
  const char *body = epode_stanza_child_text(st, "body");
  if (body) o->body_bytes += strlen(body);
  o->n++;
  if (o->n == opt.count / 10) {
    o->a0 = n_epode_allocs;
    o->m0 = bench_mallocs();
  } else if (o->n == opt.count - opt.count / 10) {
    o->a1 = n_epode_allocs;
    o->m1 = bench_mallocs();
  }
  if (o->n == opt.count) {
    o->t_end = bench_now();
    epode_loop_stop(o->loop);
  }
  return EPODE_HANDLER_KEEP;
}

/* Connects and runs until READY. `handler` is registered first: the server
 * starts sending right after the bind result, often in the same read. */
static void connect_one(one *o, epode_handler_fn handler) {
  epode_config *cfg = make_config();
  if (epode_loop_new(&o->loop, NULL) || epode_conn_new(&o->conn, cfg)) exit(1);
  epode_config_free(cfg);
  epode_conn_set_event_cb(o->conn, one_event, o);
  if (handler)
    epode_session_add_handler(epode_conn_session(o->conn), "message", NULL, "chat", handler, o);
  epode_loop_add_conn(o->loop, o->conn);
  if (epode_conn_connect(o->conn)) exit(1);
  while (!o->ready)
    if (epode_loop_run(o->loop, EPODE_RUN_ONCE)) exit(1);
}

static void run_inbound(void) {
  one o = {0};
  connect_one(&o, on_message);
  double c0 = bench_cpu();
  while (o.n < opt.count)
    if (epode_loop_run(o.loop, EPODE_RUN_DEFAULT)) exit(1);
  double wall = o.t_end - o.t_ready, cpu = bench_cpu() - c0;
  double steady = (double)(opt.count - 2 * (opt.count / 10));
  bench_result("inbound msgs=%llu wall=%.6f cpu=%.6f body_bytes=%zu epode_allocs_per_msg=%.3f "
               "mallocs_per_msg=%.3f",
               o.n, wall, cpu, o.body_bytes, (double)(o.a1 - o.a0) / steady,
               (double)(o.m1 - o.m0) / steady);
  epode_loop_remove_conn(o.loop, o.conn);
  epode_conn_free(o.conn);
  epode_loop_free(o.loop);
}

static int on_done(epode_session *s, const epode_stanza *st, void *ud) {
  (void)s;
  one *o = ud;
  const char *body = epode_stanza_child_text(st, "body");
  if (body && strcmp(body, "done") == 0) {
    o->done = 1;
    o->t_end = bench_now();
    epode_loop_stop(o->loop);
  }
  return EPODE_HANDLER_KEEP;
}

static void run_outbound(void) {
  one o = {0};
  connect_one(&o, on_done);
  epode_session *s = epode_conn_session(o.conn);
  char body[512];
  double t0 = bench_now(), c0 = bench_cpu();
  uint64_t a0 = 0, m0 = 0;
  for (unsigned long long i = 0; i < opt.count; i++) {
    if (i == opt.count / 10) a0 = n_epode_allocs, m0 = bench_mallocs();
    if (i == opt.count - opt.count / 10) o.a1 = n_epode_allocs, o.m1 = bench_mallocs();
    bench_msg_body(body, sizeof body, (unsigned)(i % BENCH_BLOCK_MSGS));
    epode_stanza *m;
    if (epode_message_new(&m, &counting_mem, "chat", BENCH_PEER, body)) exit(1);
    epode_err e = epode_session_send(s, m);
    epode_stanza_free(m);
    if (e) {
      fprintf(stderr, "bench_epode: send: %s\n", epode_strerror(e));
      exit(1);
    }
    /* The socket is full and output piles up: wait until it drains. */
    while (epode_session_output_len(s) > 1024 * 1024)
      if (epode_loop_run(o.loop, EPODE_RUN_ONCE)) exit(1);
  }
  while (!o.done)
    if (epode_loop_run(o.loop, EPODE_RUN_ONCE)) exit(1);
  double steady = (double)(opt.count - 2 * (opt.count / 10));
  bench_result("outbound msgs=%llu wall=%.6f cpu=%.6f epode_allocs_per_msg=%.3f "
               "mallocs_per_msg=%.3f",
               opt.count, o.t_end - t0, bench_cpu() - c0, (double)(o.a1 - a0) / steady,
               (double)(o.m1 - m0) / steady);
}

static void run_login(void) {
  for (unsigned long long i = 0; i < opt.count; i++) {
    one o = {0};
    double t0 = bench_now();
    connect_one(&o, NULL);
    bench_result("login ms=%.3f", (o.t_ready - t0) * 1000.0);
    epode_loop_remove_conn(o.loop, o.conn);
    epode_conn_free(o.conn);
    epode_loop_free(o.loop);
  }
}

/* ------------------------------------------------------------ many sessions */

typedef struct many {
  epode_loop *loop;
  unsigned ready, failed;
} many;

static void many_event(const epode_event *ev, void *ud) {
  many *m = ud;
  if (ev->type == EPODE_EV_READY) m->ready++;
  if (ev->type == EPODE_EV_ERROR) {
    if (m->failed++ < 5) fprintf(stderr, "bench_epode: session failed: %s\n", ev->failure->detail);
  }
}

static int stop_timer(epode_loop *loop, void *ud) {
  (void)ud;
  epode_loop_stop(loop);
  return 0;
}

static void run_many(void) {
  long nofile = bench_raise_nofile();
  if (nofile >= 0 && (unsigned long)nofile < opt.sessions + 64) {
    bench_result("many sessions=%u error=nofile_limit_%ld", opt.sessions, nofile);
    return;
  }
  many m = {0};
  epode_config *cfg = make_config();
  if (epode_loop_new(&m.loop, NULL)) exit(1);
  /* Warm up: one session first, so libraries' one-time state (OpenSSL
   * tables, the loop's arrays) is not charged to the N measured ones. */
  epode_conn *warm;
  epode_conn_new(&warm, cfg);
  epode_conn_set_event_cb(warm, many_event, &m);
  epode_loop_add_conn(m.loop, warm);
  epode_conn_connect(warm);
  while (m.ready < 1 && !m.failed)
    epode_loop_run(m.loop, EPODE_RUN_ONCE);
  m.ready = 0;
  epode_conn **conns = calloc(opt.sessions, sizeof *conns);
  long rss0 = bench_rss_kib();
  double t0 = bench_now(), c0 = bench_cpu();
  unsigned started = 0;
  while (m.ready + m.failed < opt.sessions) {
    /* At most `window` logins in flight: the listen backlog and SYN queue
     * stay small, as with any client that ramps up. */
    while (started < opt.sessions && started - m.ready - m.failed < opt.window) {
      if (epode_conn_new(&conns[started], cfg)) exit(1);
      epode_conn_set_event_cb(conns[started], many_event, &m);
      epode_loop_add_conn(m.loop, conns[started]);
      if (epode_conn_connect(conns[started])) exit(1);
      started++;
    }
    if (epode_loop_run(m.loop, EPODE_RUN_ONCE)) exit(1);
  }
  double t_est = bench_now() - t0, c_est = bench_cpu() - c0;
  long rss1 = bench_rss_kib(), hwm = bench_hwm_kib();
  /* Idle: the loop runs with every session open and nothing to do. */
  double ci = bench_cpu(), ti = bench_now();
  epode_loop_timer_start(m.loop, NULL, (uint64_t)(opt.idle * 1000), 0, stop_timer, NULL);
  while (bench_now() - ti < opt.idle)
    epode_loop_run(m.loop, EPODE_RUN_ONCE);
  double idle_cpu = (bench_cpu() - ci) / (bench_now() - ti);
  bench_result("many sessions=%u ready=%u failed=%u establish_s=%.3f establish_cpu=%.3f "
               "rss_kib_per_session=%.2f rss0=%ld rss1=%ld hwm=%ld idle_cpu_pct=%.3f",
               opt.sessions, m.ready, m.failed, t_est, c_est, (double)(rss1 - rss0) / opt.sessions,
               rss0, rss1, hwm, idle_cpu * 100.0);
  for (unsigned i = 0; i < started; i++) {
    epode_loop_remove_conn(m.loop, conns[i]);
    epode_conn_free(conns[i]);
  }
  epode_loop_remove_conn(m.loop, warm);
  epode_conn_free(warm);
  epode_loop_free(m.loop);
  epode_config_free(cfg);
  free(conns);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: bench_epode inbound|outbound|login|many --port P [options]\n");
    return 2;
  }
  opt.mode = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    const char *a = argv[i], *v = argv[i + 1];
    if (strcmp(a, "--port") == 0)
      opt.port = atoi(v);
    else if (strcmp(a, "--count") == 0)
      opt.count = strtoull(v, NULL, 10);
    else if (strcmp(a, "--tls") == 0)
      opt.tls = v;
    else if (strcmp(a, "--url") == 0)
      opt.url = v;
    else if (strcmp(a, "--cafile") == 0)
      opt.cafile = v;
    else if (strcmp(a, "--sessions") == 0)
      opt.sessions = (unsigned)atoi(v);
    else if (strcmp(a, "--idle") == 0)
      opt.idle = atof(v);
    else if (strcmp(a, "--window") == 0)
      opt.window = (unsigned)atoi(v);
    else {
      fprintf(stderr, "bench_epode: unknown option %s\n", a);
      return 2;
    }
  }
  if (strcmp(opt.mode, "inbound") == 0)
    run_inbound();
  else if (strcmp(opt.mode, "outbound") == 0)
    run_outbound();
  else if (strcmp(opt.mode, "login") == 0)
    run_login();
  else if (strcmp(opt.mode, "many") == 0)
    run_many();
  else
    return 2;
  return 0;
}
