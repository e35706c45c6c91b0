/* The resolver against a scripted DNS server inside the test: a UDP socket
 * on 127.0.0.1 that answers the queries c-ares sends with packets built by
 * hand. Covers SRV ordering by priority and weight (with a fixed random
 * source), "." targets, NXDOMAIN fallback to the domain's addresses, a
 * malformed answer, a server that never answers, and configured hosts. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "failmem.h"
#include "net/net.h"
#include "test_net_support.h"
#include "util/config_int.h"

/* ------------------------------------------------------------------ driver */

typedef struct fds {
  int fd[16];
  unsigned ev[16];
  size_t n;
} fds;

static void sock_cb(int fd, unsigned events, void *ud) {
  fds *t = ud;
  for (size_t i = 0; i < t->n; i++) {
    if (t->fd[i] == fd) {
      if (!events) {
        t->fd[i] = t->fd[--t->n];
        t->ev[i] = t->ev[t->n];
      } else {
        t->ev[i] = events;
      }
      return;
    }
  }
  if (events) {
    assert_true(t->n < 16);
    t->fd[t->n] = fd;
    t->ev[t->n++] = events;
  }
}

typedef struct env {
  fake f;
  fds watched;
  epode_config *cfg;
  epode__dns *d;
  uint32_t rnd;
} env;

static int fixed_random(void *ud, unsigned char *buf, size_t len) {
  uint32_t v = *(uint32_t *)ud;
  for (size_t i = 0; i < len; i++)
    buf[i] = (unsigned char)(v >> (8 * (3 - (i % 4))));
  return 0;
}

static void env_init(env *e, uint32_t connect_timeout) {
  memset(e, 0, sizeof *e);
  fake_start(&e->f);
  assert_int_equal(epode_config_new(&e->cfg, NULL), EPODE_OK);
  epode_config_set_random(e->cfg, fixed_random, &e->rnd);
  epode_config_set_timeout(e->cfg, EPODE_TIMEOUT_CONNECT, connect_timeout);
  assert_int_equal(epode__dns_new(&e->d, e->cfg, sock_cb, &e->watched), EPODE_OK);
  char csv[64];
  snprintf(csv, sizeof csv, "127.0.0.1:%u", (unsigned)e->f.port);
  assert_int_equal(epode__dns_set_servers(e->d, csv), EPODE_OK);
}

static void env_free(env *e) {
  epode__dns_free(e->d);
  assert_int_equal(e->watched.n, 0); /* every socket reported closed */
  epode_config_free(e->cfg);
  close(e->f.fd);
}

/* Drives the resolver like a host loop would; returns elapsed ms. */
static uint64_t run(env *e, uint64_t limit_ms) {
  uint64_t start = epode_now_ms();
  while (!epode__dns_done(e->d)) {
    uint64_t now = epode_now_ms();
    assert_true(now - start < limit_ms);
    struct pollfd p[17];
    size_t n = 0;
    p[n++] = (struct pollfd){.fd = e->f.fd, .events = POLLIN};
    for (size_t i = 0; i < e->watched.n; i++)
      p[n++] =
          (struct pollfd){.fd = e->watched.fd[i],
                          .events = (short)(((e->watched.ev[i] & EPODE_IO_READ) ? POLLIN : 0) |
                                            ((e->watched.ev[i] & EPODE_IO_WRITE) ? POLLOUT : 0))};
    int64_t dl = epode__dns_deadline(e->d, now);
    int to = dl < 0 ? 100 : dl <= (int64_t)now ? 0 : (int)(dl - (int64_t)now);
    int r = poll(p, n, to);
    assert_true(r >= 0 || errno == EINTR);
    if (p[0].revents & POLLIN) fake_serve(&e->f);
    int any = 0;
    for (size_t i = 1; i < n; i++) {
      if (!p[i].revents) continue;
      any = 1;
      unsigned ev = ((p[i].revents & (POLLIN | POLLERR | POLLHUP)) ? EPODE_IO_READ : 0u) |
                    ((p[i].revents & POLLOUT) ? EPODE_IO_WRITE : 0u);
      epode__dns_process_fd(e->d, p[i].fd, ev, epode_now_ms());
      if (epode__dns_done(e->d)) break;
    }
    if (!any && !epode__dns_done(e->d)) epode__dns_process_timeout(e->d, epode_now_ms());
  }
  return epode_now_ms() - start;
}

static void expect_addr(const epode__addr *a, const char *ip, unsigned port, int direct,
                        const char *host) {
  char s[80], want[80];
  epode__addr_str(a, s, sizeof s);
  if (strchr(ip, ':'))
    snprintf(want, sizeof want, "[%s]:%u", ip, port);
  else
    snprintf(want, sizeof want, "%s:%u", ip, port);
  assert_string_equal(s, want);
  assert_int_equal(a->direct_tls, direct);
  assert_string_equal(a->host, host);
}

static void add_a(fake *f, const char *name, const char *ip) {
  rule *r = fake_rule(f, name, T_A, ACT_ANSWER);
  r->addr[r->naddr++] = ip;
  fake_rule(f, name, T_AAAA, ACT_NODATA);
}

/* ------------------------------------------------------------------ tests */

static void setup_srv_zone(fake *f) {
  rule *s = fake_rule(f, "_xmpps-client._tcp.example.test", T_SRV, ACT_ANSWER);
  add_srv(s, 10, 0, 5223, "tls.example.test");
  rule *p = fake_rule(f, "_xmpp-client._tcp.example.test", T_SRV, ACT_ANSWER);
  add_srv(p, 20, 0, 5222, "d.example.test");
  add_srv(p, 10, 0, 5222, "c.example.test");
  add_srv(p, 5, 10, 5222, "b.example.test");
  add_srv(p, 5, 90, 5222, "a.example.test");
  add_a(f, "a.example.test", "10.0.0.1");
  add_a(f, "b.example.test", "10.0.0.2");
  add_a(f, "tls.example.test", "10.0.0.3");
  add_a(f, "c.example.test", "10.0.0.4");
  add_a(f, "d.example.test", "10.0.0.5");
}

static void test_srv_order(void **state) {
  /* r = 50 of 0..100 in the priority-5 group: past b (10), within a (100). */
  env e;
  env_init(&e, 5000);
  e.rnd = 50;
  setup_srv_zone(&e.f);
  assert_int_equal(epode__dns_start(e.d, "example.test", EPODE_TLS_AUTO, NULL, 0, epode_now_ms()),
                   EPODE_OK);
  run(&e, 3000);
  const epode__addr *a;
  size_t n;
  const char *detail;
  assert_int_equal(epode__dns_result(e.d, &a, &n, &detail), EPODE_OK);
  assert_int_equal(n, 5);
  expect_addr(&a[0], "10.0.0.1", 5222, 0, "a.example.test");
  expect_addr(&a[1], "10.0.0.2", 5222, 0, "b.example.test");
  /* Priority 10: direct TLS before STARTTLS. */
  expect_addr(&a[2], "10.0.0.3", 5223, 1, "tls.example.test");
  expect_addr(&a[3], "10.0.0.4", 5222, 0, "c.example.test");
  expect_addr(&a[4], "10.0.0.5", 5222, 0, "d.example.test");
  assert_non_null(strstr(e.f.seen, "33 _xmpps-client._tcp.example.test;"));
  assert_non_null(strstr(e.f.seen, "33 _xmpp-client._tcp.example.test;"));
  env_free(&e);

  /* r = 5: within b's weight, so b comes first. */
  env_init(&e, 5000);
  e.rnd = 5;
  setup_srv_zone(&e.f);
  epode__dns_start(e.d, "example.test", EPODE_TLS_AUTO, NULL, 0, epode_now_ms());
  run(&e, 3000);
  assert_int_equal(epode__dns_result(e.d, &a, &n, &detail), EPODE_OK);
  assert_int_equal(n, 5);
  assert_string_equal(a[0].host, "b.example.test");
  assert_string_equal(a[1].host, "a.example.test");
  env_free(&e);
}

static void test_srv_mode_filters(void **state) {
  const epode__addr *a;
  size_t n;
  const char *detail;
  /* STARTTLS: only _xmpp-client is asked. */
  env e;
  env_init(&e, 5000);
  setup_srv_zone(&e.f);
  epode__dns_start(e.d, "example.test", EPODE_TLS_STARTTLS, NULL, 0, epode_now_ms());
  run(&e, 3000);
  assert_int_equal(epode__dns_result(e.d, &a, &n, &detail), EPODE_OK);
  assert_int_equal(n, 4);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(a[i].direct_tls, 0);
  assert_null(strstr(e.f.seen, "_xmpps-client"));
  env_free(&e);
  /* DIRECT: only _xmpps-client. */
  env_init(&e, 5000);
  setup_srv_zone(&e.f);
  epode__dns_start(e.d, "example.test", EPODE_TLS_DIRECT, NULL, 0, epode_now_ms());
  run(&e, 3000);
  assert_int_equal(epode__dns_result(e.d, &a, &n, &detail), EPODE_OK);
  assert_int_equal(n, 1);
  expect_addr(&a[0], "10.0.0.3", 5223, 1, "tls.example.test");
  assert_null(strstr(e.f.seen, "_xmpp-client"));
  env_free(&e);
}

static void test_srv_dot(void **state) {
  const epode__addr *a;
  size_t n;
  const char *detail;
  env e;
  env_init(&e, 5000);
  add_srv(fake_rule(&e.f, "_xmpp-client._tcp.example.test", T_SRV, ACT_ANSWER), 0, 0, 0, ".");
  add_a(&e.f, "example.test", "10.0.0.9");
  epode__dns_start(e.d, "example.test", EPODE_TLS_STARTTLS, NULL, 0, epode_now_ms());
  run(&e, 3000);
  assert_int_equal(epode__dns_result(e.d, &a, &n, &detail), EPODE_ERR_DNS);
  assert_int_equal(n, 0);
  assert_non_null(strstr(detail, "has no XMPP client service"));
  assert_non_null(strstr(detail, "_xmpp-client._tcp.example.test"));
  /* No fallback to the domain's address. */
  assert_null(strstr(e.f.seen, "1 example.test;"));
  env_free(&e);

  /* AUTO: direct TLS says "." but STARTTLS is offered: use it. */
  env_init(&e, 5000);
  add_srv(fake_rule(&e.f, "_xmpps-client._tcp.example.test", T_SRV, ACT_ANSWER), 0, 0, 0, ".");
  add_srv(fake_rule(&e.f, "_xmpp-client._tcp.example.test", T_SRV, ACT_ANSWER), 0, 0, 5333,
          "xmpp.example.test");
  add_a(&e.f, "xmpp.example.test", "10.0.0.7");
  epode__dns_start(e.d, "example.test", EPODE_TLS_AUTO, NULL, 0, epode_now_ms());
  run(&e, 3000);
  assert_int_equal(epode__dns_result(e.d, &a, &n, &detail), EPODE_OK);
  assert_int_equal(n, 1);
  expect_addr(&a[0], "10.0.0.7", 5333, 0, "xmpp.example.test");
  env_free(&e);
}

static void test_nxdomain_fallback(void **state) {
  const epode__addr *a;
  size_t n;
  const char *detail;
  env e;
  env_init(&e, 5000);
  /* No rules for the SRV names: the fake answers NXDOMAIN. */
  rule *r = fake_rule(&e.f, "example.test", T_A, ACT_ANSWER);
  r->addr[r->naddr++] = "10.0.0.9";
  rule *r6 = fake_rule(&e.f, "example.test", T_AAAA, ACT_ANSWER);
  r6->addr[r6->naddr++] = "2001:db8::9";
  epode__dns_start(e.d, "example.test", EPODE_TLS_AUTO, NULL, 0, epode_now_ms());
  run(&e, 3000);
  assert_int_equal(epode__dns_result(e.d, &a, &n, &detail), EPODE_OK);
  assert_int_equal(n, 2);
  /* Both families, STARTTLS port, in whatever order c-ares' RFC 6724 sort
   * gives on this host. */
  int seen4 = 0, seen6 = 0;
  for (size_t i = 0; i < n; i++) {
    char s[80];
    epode__addr_str(&a[i], s, sizeof s);
    if (!strcmp(s, "10.0.0.9:5222")) seen4 = 1;
    if (!strcmp(s, "[2001:db8::9]:5222")) seen6 = 1;
    assert_int_equal(a[i].direct_tls, 0);
    assert_string_equal(a[i].host, "example.test");
  }
  assert_true(seen4 && seen6);
  env_free(&e);

  /* DIRECT: the domain on 5223 with direct TLS. */
  env_init(&e, 5000);
  add_a(&e.f, "example.test", "10.0.0.9");
  epode__dns_start(e.d, "example.test", EPODE_TLS_DIRECT, NULL, 0, epode_now_ms());
  run(&e, 3000);
  assert_int_equal(epode__dns_result(e.d, &a, &n, &detail), EPODE_OK);
  assert_int_equal(n, 1);
  expect_addr(&a[0], "10.0.0.9", 5223, 1, "example.test");
  env_free(&e);

  /* SERVFAIL on SRV also falls back. */
  env_init(&e, 5000);
  fake_rule(&e.f, "_xmpp-client._tcp.example.test", T_SRV, ACT_SERVFAIL);
  add_a(&e.f, "example.test", "10.0.0.9");
  epode__dns_start(e.d, "example.test", EPODE_TLS_STARTTLS, NULL, 0, epode_now_ms());
  run(&e, 3000);
  assert_int_equal(epode__dns_result(e.d, &a, &n, &detail), EPODE_OK);
  assert_int_equal(n, 1);
  env_free(&e);
}

static void test_no_address(void **state) {
  const epode__addr *a;
  size_t n;
  const char *detail;
  env e;
  env_init(&e, 5000);
  rule *p = fake_rule(&e.f, "_xmpp-client._tcp.example.test", T_SRV, ACT_ANSWER);
  add_srv(p, 1, 0, 5222, "gone.example.test");
  add_srv(p, 2, 0, 5222, "empty.example.test");
  fake_rule(&e.f, "empty.example.test", T_A, ACT_NODATA);
  fake_rule(&e.f, "empty.example.test", T_AAAA, ACT_NODATA);
  epode__dns_start(e.d, "example.test", EPODE_TLS_STARTTLS, NULL, 0, epode_now_ms());
  run(&e, 3000);
  assert_int_equal(epode__dns_result(e.d, &a, &n, &detail), EPODE_ERR_DNS);
  assert_non_null(strstr(detail, "gone.example.test ("));
  assert_non_null(strstr(detail, "empty.example.test ("));
  assert_non_null(strstr(detail, "Domain name not found"));
  env_free(&e);
}

static void test_malformed(void **state) {
  const epode__addr *a;
  size_t n;
  const char *detail;
  env e;
  env_init(&e, 5000);
  fake_rule(&e.f, "_xmpp-client._tcp.example.test", T_SRV, ACT_MALFORMED);
  add_a(&e.f, "example.test", "10.0.0.9");
  epode__dns_start(e.d, "example.test", EPODE_TLS_STARTTLS, NULL, 0, epode_now_ms());
  run(&e, 3000);
  assert_int_equal(epode__dns_result(e.d, &a, &n, &detail), EPODE_ERR_DNS);
  assert_non_null(strstr(detail, "malformed DNS answer"));
  assert_non_null(strstr(detail, "_xmpp-client._tcp.example.test"));
  env_free(&e);
}

static void test_timeout(void **state) {
  const epode__addr *a;
  size_t n;
  const char *detail;
  env e;
  env_init(&e, 600);
  fake_rule(&e.f, "_xmpps-client._tcp.example.test", T_SRV, ACT_DROP);
  fake_rule(&e.f, "_xmpp-client._tcp.example.test", T_SRV, ACT_DROP);
  fake_rule(&e.f, "example.test", T_A, ACT_DROP);
  fake_rule(&e.f, "example.test", T_AAAA, ACT_DROP);
  epode__dns_start(e.d, "example.test", EPODE_TLS_AUTO, NULL, 0, epode_now_ms());
  uint64_t took = run(&e, 3000);
  assert_int_equal(epode__dns_result(e.d, &a, &n, &detail), EPODE_ERR_DNS);
  assert_true(took <= 600 + 150);
  assert_true(strstr(detail, "timed out") || strstr(detail, "Timeout"));
  env_free(&e);
}

static void test_configured_host(void **state) {
  const epode__addr *a;
  size_t n;
  const char *detail;
  /* An IP literal needs no DNS at all. */
  env e;
  env_init(&e, 5000);
  epode__dns_start(e.d, "example.test", EPODE_TLS_STARTTLS, "127.0.0.1", 0, epode_now_ms());
  run(&e, 1000);
  assert_int_equal(epode__dns_result(e.d, &a, &n, &detail), EPODE_OK);
  assert_int_equal(n, 1);
  expect_addr(&a[0], "127.0.0.1", 5222, 0, "127.0.0.1");
  if (e.f.nseen) fprintf(stderr, "seen: %s\n", e.f.seen);
  assert_int_equal(e.f.nseen, 0);
  env_free(&e);

  env_init(&e, 5000);
  epode__dns_start(e.d, "example.test", EPODE_TLS_DIRECT, "::1", 0, epode_now_ms());
  run(&e, 1000);
  assert_int_equal(epode__dns_result(e.d, &a, &n, &detail), EPODE_OK);
  expect_addr(&a[0], "::1", 5223, 1, "::1");
  env_free(&e);

  /* A name: resolved, no SRV asked; the configured port wins. */
  env_init(&e, 5000);
  add_a(&e.f, "srv1.example.test", "10.1.1.1");
  epode__dns_start(e.d, "example.test", EPODE_TLS_AUTO, "srv1.example.test", 15222, epode_now_ms());
  run(&e, 3000);
  assert_int_equal(epode__dns_result(e.d, &a, &n, &detail), EPODE_OK);
  assert_int_equal(n, 1);
  expect_addr(&a[0], "10.1.1.1", 15222, 0, "srv1.example.test");
  assert_null(strstr(e.f.seen, "_xmpp"));
  env_free(&e);
}

/* A connection to an IP literal makes neither a c-ares channel nor the
 * tables for 32 SRV targets: the resolver is small while a login is in
 * flight. A name makes the channel at its first query. */
static void test_literal_costs_little(void **state) {
  epode_test_failmem f;
  epode_test_failmem_init(&f, 0);
  epode_config *cfg;
  assert_int_equal(epode_config_new(&cfg, &f.mem), EPODE_OK);
  epode__dns *d;
  f.biggest = 0;
  long before = f.live;
  assert_int_equal(epode__dns_new(&d, cfg, NULL, NULL), EPODE_OK);
  assert_false(epode__dns_has_channel(d));
  epode__dns_start(d, "example.test", EPODE_TLS_STARTTLS, "192.0.2.7", 0, epode_now_ms());
  assert_true(epode__dns_done(d));
  const epode__addr *a;
  size_t n;
  const char *detail;
  assert_int_equal(epode__dns_result(d, &a, &n, &detail), EPODE_OK);
  assert_int_equal(n, 1);
  expect_addr(&a[0], "192.0.2.7", 5222, 0, "192.0.2.7");
  assert_false(epode__dns_has_channel(d));
  /* The resolver (~2 KiB, mostly its error text), one target, one address:
   * nothing near the 25 KiB of a 64-address table. */
  if (f.biggest >= 4096) fail_msg("largest block %zu bytes", f.biggest);
  assert_true(f.live - before <= 6);
  epode__dns_free(d);
  assert_int_equal(f.live, before);

  /* A name needs a query: the channel comes with it (and goes with the
   * resolver). */
  env e;
  env_init(&e, 5000);
  assert_true(epode__dns_has_channel(e.d)); /* given servers: made at once */
  env_free(&e);
  assert_int_equal(epode__dns_new(&d, cfg, NULL, NULL), EPODE_OK);
  epode__dns_start(d, "example.test", EPODE_TLS_STARTTLS, "name.invalid", 0, epode_now_ms());
  assert_true(epode__dns_has_channel(d));
  epode__dns_free(d);
  epode_config_free(cfg);
  assert_int_equal(f.live, 0);
}

static void test_srv_many_priorities(void **state) {
  /* Eight targets at eight priorities come out in priority order. */
  const epode__addr *a;
  size_t n;
  const char *detail;
  env e;
  env_init(&e, 5000);
  static char names[40][32];
  rule *p = fake_rule(&e.f, "_xmpp-client._tcp.example.test", T_SRV, ACT_ANSWER);
  for (int i = 0; i < 8; i++) {
    snprintf(names[i], sizeof names[i], "h%d.example.test", i);
    add_srv(p, (uint16_t)i, 0, 5222, names[i]);
    add_a(&e.f, names[i], "10.2.0.1");
  }
  epode__dns_start(e.d, "example.test", EPODE_TLS_STARTTLS, NULL, 0, epode_now_ms());
  run(&e, 3000);
  assert_int_equal(epode__dns_result(e.d, &a, &n, &detail), EPODE_OK);
  assert_int_equal(n, 8);
  for (int i = 0; i < 8; i++)
    assert_string_equal(a[i].host, names[i]);
  env_free(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_srv_order),
      cmocka_unit_test(test_srv_mode_filters),
      cmocka_unit_test(test_srv_dot),
      cmocka_unit_test(test_nxdomain_fallback),
      cmocka_unit_test(test_no_address),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_timeout),
      cmocka_unit_test(test_configured_host),
      cmocka_unit_test(test_literal_costs_little),
      cmocka_unit_test(test_srv_many_priorities),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
