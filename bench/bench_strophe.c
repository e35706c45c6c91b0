/* bench_strophe — the libstrophe side of each benchmark scenario, written
 * the way libstrophe's own examples drive it (xmpp_run_once, a handler per
 * message, xmpp_send). Same options and RESULT lines as bench_epode.
 *
 *   bench_strophe inbound  --port P --count N
 *   bench_strophe outbound --port P --count N
 *   bench_strophe login    --port P --count K --tls starttls|direct
 *   bench_strophe many     --port P --sessions N [--tls direct] [--idle S]
 *
 * libstrophe waits with select(), whose fd_set holds descriptors below
 * FD_SETSIZE (1024): `many` refuses session counts that would need more
 * (FD_SET past the set is undefined behaviour, typically a stack smash). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strophe.h>
#include <sys/select.h>

#include "common.h"
#include "msgs.h"

static struct {
  const char *mode;
  int port;
  unsigned long long count;
  const char *tls;
  const char *cafile;
  unsigned sessions;
  double idle;
  unsigned window;
} opt = {"", 0, 1000000ull, "none", NULL, 1000, 3.0, 128};

static uint64_t n_strophe_allocs;

static void *m_alloc(size_t n, void *ud) {
  (void)ud;
  n_strophe_allocs++;
  return malloc(n);
}
static void m_free(void *p, void *ud) {
  (void)ud;
  free(p);
}
static void *m_realloc(void *p, size_t n, void *ud) {
  (void)ud;
  n_strophe_allocs++;
  return realloc(p, n);
}
static const xmpp_mem_t counting_mem = {m_alloc, m_free, m_realloc, NULL};

static xmpp_ctx_t *ctx;
static unsigned g_ready, g_failed; /* sessions that became ready / failed first */
static int closing;                /* we are releasing connections ourselves */

typedef struct one {
  xmpp_conn_t *conn;
  int ready, failed;
  double t_ready, t_end;
  unsigned long long n;
  size_t body_bytes;
  uint64_t a0, a1, m0, m1;
  int done;
} one;

static void conn_handler(xmpp_conn_t *conn, xmpp_conn_event_t event, int error,
                         xmpp_stream_error_t *se, void *ud) {
  (void)conn, (void)se;
  one *o = ud;
  if (event == XMPP_CONN_CONNECT) {
    o->ready = 1;
    g_ready++;
    o->t_ready = bench_now();
  } else if (!o->failed && !closing) {
    o->failed = 1;
    if (!o->ready) g_failed++;
    if (strcmp(opt.mode, "many") != 0 || !o->ready)
      fprintf(stderr, "bench_strophe: connection %s (error %d)\n",
              event == XMPP_CONN_FAIL ? "failed" : "ended", error);
    if (strcmp(opt.mode, "many") != 0) exit(1);
  }
}

static xmpp_conn_t *new_conn(one *o) {
  xmpp_conn_t *c = xmpp_conn_new(ctx);
  long flags = XMPP_CONN_FLAG_DISABLE_SM;
  if (strcmp(opt.tls, "none") == 0) flags |= XMPP_CONN_FLAG_DISABLE_TLS;
  if (strcmp(opt.tls, "starttls") == 0) flags |= XMPP_CONN_FLAG_MANDATORY_TLS;
  if (strcmp(opt.tls, "direct") == 0) flags |= XMPP_CONN_FLAG_LEGACY_SSL;
  /* Verified against the server's throwaway certificate, as for epode. */
  if (strcmp(opt.tls, "none") != 0 && !opt.cafile) flags |= XMPP_CONN_FLAG_TRUST_TLS;
  /* "--cafile system": OpenSSL's default store, as for epode. */
  if (opt.cafile && strcmp(opt.cafile, "system") != 0) xmpp_conn_set_cafile(c, opt.cafile);
  xmpp_conn_set_flags(c, flags);
  xmpp_conn_set_jid(c, BENCH_USER "@" BENCH_DOMAIN "/bench");
  xmpp_conn_set_pass(c, BENCH_PASSWORD);
  if (xmpp_connect_client(c, "127.0.0.1", (unsigned short)opt.port, conn_handler, o) != XMPP_EOK) {
    fprintf(stderr, "bench_strophe: xmpp_connect_client failed\n");
    exit(1);
  }
  o->conn = c;
  return c;
}

/* Connects and runs until ready; `handler` is added first (the server
 * sends right after the bind result). */
static void connect_one(one *o, xmpp_handler handler) {
  new_conn(o);
  if (handler) xmpp_handler_add(o->conn, handler, NULL, "message", "chat", o);
  while (!o->ready)
    xmpp_run_once(ctx, 1);
}

static int on_message(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud) {
  (void)conn;
  one *o = ud;
  xmpp_stanza_t *body = xmpp_stanza_get_child_by_name(st, "body");
  xmpp_stanza_t *text = body ? xmpp_stanza_get_children(body) : NULL;
  const char *t = text ? xmpp_stanza_get_text_ptr(text) : NULL;
  if (t) o->body_bytes += strlen(t);
  o->n++;
  if (o->n == opt.count / 10) {
    o->a0 = n_strophe_allocs;
    o->m0 = bench_mallocs();
  } else if (o->n == opt.count - opt.count / 10) {
    o->a1 = n_strophe_allocs;
    o->m1 = bench_mallocs();
  }
  if (o->n == opt.count) o->t_end = bench_now();
  return 1;
}

static void run_inbound(void) {
  one o = {0};
  connect_one(&o, on_message);
  double c0 = bench_cpu();
  while (o.n < opt.count)
    xmpp_run_once(ctx, 1);
  double steady = (double)(opt.count - 2 * (opt.count / 10));
  bench_result("inbound msgs=%llu wall=%.6f cpu=%.6f body_bytes=%zu lib_allocs_per_msg=%.3f "
               "mallocs_per_msg=%.3f",
               o.n, o.t_end - o.t_ready, bench_cpu() - c0, o.body_bytes,
               (double)(o.a1 - o.a0) / steady, (double)(o.m1 - o.m0) / steady);
  closing = 1;
  xmpp_conn_release(o.conn);
  closing = 0;
}

static int on_done(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud) {
  (void)conn;
  one *o = ud;
  xmpp_stanza_t *body = xmpp_stanza_get_child_by_name(st, "body");
  xmpp_stanza_t *text = body ? xmpp_stanza_get_children(body) : NULL;
  const char *t = text ? xmpp_stanza_get_text_ptr(text) : NULL;
  if (t && strcmp(t, "done") == 0) {
    o->done = 1;
    o->t_end = bench_now();
  }
  return 1;
}

static void run_outbound(void) {
  one o = {0};
  connect_one(&o, on_done);
  char body[512];
  double t0 = bench_now(), c0 = bench_cpu();
  uint64_t a0 = 0, m0 = 0;
  for (unsigned long long i = 0; i < opt.count; i++) {
    if (i == opt.count / 10) a0 = n_strophe_allocs, m0 = bench_mallocs();
    if (i == opt.count - opt.count / 10) o.a1 = n_strophe_allocs, o.m1 = bench_mallocs();
    bench_msg_body(body, sizeof body, (unsigned)(i % BENCH_BLOCK_MSGS));
    xmpp_stanza_t *m = xmpp_message_new(ctx, "chat", BENCH_PEER, NULL);
    xmpp_message_set_body(m, body);
    xmpp_send(o.conn, m);
    xmpp_stanza_release(m);
    /* libstrophe writes its queue from xmpp_run_once(); keep it bounded
     * like epode's 1 MiB above (about 5,000 messages). */
    while (xmpp_conn_send_queue_len(o.conn) > 5000)
      xmpp_run_once(ctx, 1);
  }
  while (!o.done)
    xmpp_run_once(ctx, 1);
  double steady = (double)(opt.count - 2 * (opt.count / 10));
  bench_result("outbound msgs=%llu wall=%.6f cpu=%.6f lib_allocs_per_msg=%.3f "
               "mallocs_per_msg=%.3f",
               opt.count, o.t_end - t0, bench_cpu() - c0, (double)(o.a1 - a0) / steady,
               (double)(o.m1 - m0) / steady);
  closing = 1;
  xmpp_conn_release(o.conn);
  closing = 0;
}

static void run_login(void) {
  for (unsigned long long i = 0; i < opt.count; i++) {
    one o = {0};
    double t0 = bench_now();
    connect_one(&o, NULL);
    bench_result("login ms=%.3f", (o.t_ready - t0) * 1000.0);
    closing = 1;
    xmpp_conn_release(o.conn);
    closing = 0;
  }
}

static void run_many(void) {
  long nofile = bench_raise_nofile();
  /* descriptors 0-2 and the warm-up session come first */
  if (opt.sessions + 8 > FD_SETSIZE) {
    bench_result("many sessions=%u error=select_fd_setsize_%d", opt.sessions, FD_SETSIZE);
    return;
  }
  if (nofile >= 0 && (unsigned long)nofile < opt.sessions + 64) {
    bench_result("many sessions=%u error=nofile_limit_%ld", opt.sessions, nofile);
    return;
  }
  one warm = {0};
  connect_one(&warm, NULL);
  one *os = calloc(opt.sessions, sizeof *os);
  long rss0 = bench_rss_kib();
  double t0 = bench_now(), c0 = bench_cpu();
  unsigned started = 0, ready = 0, failed = 0;
  g_ready = g_failed = 0;
  while (ready + failed < opt.sessions) {
    while (started < opt.sessions && started - ready - failed < opt.window)
      new_conn(&os[started++]);
    xmpp_run_once(ctx, 1);
    ready = g_ready, failed = g_failed;
  }
  double t_est = bench_now() - t0, c_est = bench_cpu() - c0;
  long rss1 = bench_rss_kib(), hwm = bench_hwm_kib();
  double ci = bench_cpu(), ti = bench_now();
  /* xmpp_run()'s own wait: the context's default timeout (1 s). */
  while (bench_now() - ti < opt.idle)
    xmpp_run_once(ctx, 1000);
  double idle_cpu = (bench_cpu() - ci) / (bench_now() - ti);
  bench_result("many sessions=%u ready=%u failed=%u establish_s=%.3f establish_cpu=%.3f "
               "rss_kib_per_session=%.2f rss0=%ld rss1=%ld hwm=%ld idle_cpu_pct=%.3f",
               opt.sessions, ready, failed, t_est, c_est, (double)(rss1 - rss0) / opt.sessions,
               rss0, rss1, hwm, idle_cpu * 100.0);
  closing = 1;
  for (unsigned i = 0; i < started; i++)
    xmpp_conn_release(os[i].conn);
  xmpp_conn_release(warm.conn);
  closing = 0;
  free(os);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: bench_strophe inbound|outbound|login|many --port P [options]\n");
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
    else if (strcmp(a, "--cafile") == 0)
      opt.cafile = v;
    else if (strcmp(a, "--sessions") == 0)
      opt.sessions = (unsigned)atoi(v);
    else if (strcmp(a, "--idle") == 0)
      opt.idle = atof(v);
    else if (strcmp(a, "--window") == 0)
      opt.window = (unsigned)atoi(v);
    else {
      fprintf(stderr, "bench_strophe: unknown option %s\n", a);
      return 2;
    }
  }
  xmpp_initialize();

  ctx = xmpp_ctx_new(&counting_mem,
                     getenv("BENCH_DEBUG") ? xmpp_get_default_logger(XMPP_LEVEL_DEBUG) : NULL);
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
  xmpp_ctx_free(ctx);
  xmpp_shutdown();
  return 0;
}
