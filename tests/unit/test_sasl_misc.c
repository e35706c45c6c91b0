/* ANONYMOUS (RFC 4505), OAUTHBEARER (RFC 7628), EXTERNAL (RFC 4422
 * appendix A, XEP-0178): exact messages, order, completion, allocation
 * failures, oversized input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sasl/sasl.h"
#include "util/buf.h"

#include "failmem.h"

#define BIG (1024 * 1024)

/* The RFC 7628 section 4.1 token. */
#define TOKEN "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
/* The RFC 7628 section 4.3 error. */
#define JSON_ERR                                                                                   \
  "{\"status\":\"invalid_token\",\"scope\":\"example_scope\","                                     \
  "\"openid-configuration\":\"https://example.com/.well-known/openid-configuration\"}"

static epode_tls_info tls_info; /* contents unused by these mechanisms */

static void params_init(epode__sasl_params *p) {
  memset(p, 0, sizeof *p);
  p->authcid = "juliet";
  p->domain = "example.com";
  p->oauth_token = TOKEN;
  p->tls = &tls_info;
  p->have_client_cert = 1;
}

typedef struct ex {
  const epode__sasl_mech *m;
  void *st;
  int has;
  epode__buf out;
} ex;

static epode_err ex_start(ex *x, const epode__sasl_mech *m, const epode__sasl_params *p) {
  x->m = m;
  x->st = NULL;
  x->has = -1;
  epode__buf_init(&x->out, p->mem, 0);
  return m->start(&x->st, p, &x->out, &x->has);
}

static epode_err ex_step_n(ex *x, const void *in, size_t n) {
  epode__buf_reset(&x->out);
  return x->m->step(x->st, in, n, &x->out);
}

static epode_err ex_step(ex *x, const char *in) { return ex_step_n(x, in, in ? strlen(in) : 0); }

static epode_err ex_success_n(ex *x, const void *in, size_t n) {
  return x->m->success(x->st, in, n);
}

static epode_err ex_success(ex *x, const char *in) {
  return ex_success_n(x, in, in ? strlen(in) : 0);
}

static void ex_free(ex *x) {
  x->m->free(x->st);
  epode__buf_free(&x->out);
}

static void assert_errmsg_has(ex *x, const char *needle) {
  const char *m = x->m->errmsg(x->st);
  assert_non_null(m);
  if (!strstr(m, needle)) fail_msg("errmsg \"%s\" lacks \"%s\"", m, needle);
}

static void assert_out_n(ex *x, const char *want, size_t n) {
  if (x->out.len != n || memcmp(x->out.data ? x->out.data : "", want, n) != 0)
    fail_msg("out \"%.*s\" (%zu bytes), want \"%.*s\" (%zu bytes)", (int)x->out.len,
             x->out.data ? x->out.data : "", x->out.len, (int)n, want, n);
}
#define assert_out(x, lit) assert_out_n(x, lit, sizeof(lit) - 1)

/* start() succeeds with initial response `want`, success() completes,
 * and everything afterwards is refused. */
static void run_ok(const epode__sasl_mech *m, const epode__sasl_params *p, const char *want,
                   size_t n) {
  ex x;
  assert_int_equal(ex_start(&x, m, p), EPODE_OK);
  assert_int_equal(x.has, 1);
  assert_out_n(&x, want, n);
  assert_null(m->errmsg(x.st));
  assert_int_equal(ex_success(&x, NULL), EPODE_OK);
  assert_null(m->errmsg(x.st));
  assert_int_equal(ex_success(&x, NULL), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "success after the exchange completed");
  assert_int_equal(epode__buf_append_str(&x.out, "keep"), EPODE_OK);
  assert_int_equal(m->step(x.st, (const unsigned char *)"", 0, &x.out), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "challenge after the exchange");
  assert_int_equal(x.out.len, n + 4); /* out untouched */
  ex_free(&x);
}
#define RUN_OK(m, p, lit) run_ok(m, p, lit, sizeof(lit) - 1)

/* start() fails with `want` and `msg`, writes nothing, and the state
 * refuses everything. */
static void start_fails(const epode__sasl_mech *m, const epode__sasl_params *p, epode_err want,
                        const char *msg) {
  ex x;
  assert_int_equal(ex_start(&x, m, p), want);
  assert_int_equal(x.has, 0);
  assert_int_equal(x.out.len, 0);
  assert_non_null(x.st);
  assert_errmsg_has(&x, msg);
  assert_int_equal(ex_step(&x, ""), EPODE_ERR_SASL_PROTOCOL);
  assert_int_equal(ex_success(&x, NULL), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "failed");
  ex_free(&x);
}

/* start() with something already in `out`: it is appended to, and on
 * error left exactly as it was. */
static void start_appends(const epode__sasl_mech *m, const epode__sasl_params *p, epode_err want,
                          const char *full, size_t n) {
  ex x;
  x.m = m;
  x.has = -1;
  epode__buf_init(&x.out, NULL, 0);
  assert_int_equal(epode__buf_append_str(&x.out, "pre"), EPODE_OK);
  assert_int_equal(m->start(&x.st, p, &x.out, &x.has), want);
  assert_out_n(&x, full, n);
  ex_free(&x);
}
#define START_APPENDS(m, p, want, lit) start_appends(m, p, want, lit, sizeof(lit) - 1)

/* ------------------------------------------------------------ allocation */

/* Fails each allocation in turn through start(), one challenge (when
 * `challenge` is set) and success(); every failure is NOMEM with no leak,
 * and the run eventually ends in `want_final` (OAUTHBEARER's error path
 * ends in a refused success). Returns how many allocations the
 * complete run made. */
static long alloc_sweep(const epode__sasl_mech *m, const epode__sasl_params *base,
                        const char *challenge, const char *want_initial, epode_err want_final) {
  for (long n = 0; n < 100; n++) {
    epode_test_failmem f;
    epode_test_failmem_init_budget(&f, n);
    epode__sasl_params p = *base;
    p.mem = &f.mem;
    ex x;
    epode_err e = ex_start(&x, m, &p);
    if (!e) {
      assert_string_equal(x.out.data ? x.out.data : "", want_initial);
      if (challenge) e = ex_step(&x, challenge);
    }
    if (!e) e = ex_success(&x, NULL);
    if (e == want_final) { /* got to the end */
      ex_free(&x);
      assert_int_equal(f.live, 0);
      return n;
    }
    assert_int_equal(e, EPODE_ERR_NOMEM);
    if (x.st) assert_errmsg_has(&x, "out of memory");
    ex_free(&x);
    assert_int_equal(f.live, 0);
  }
  fail_msg("never completed");
  return -1;
}

/* ------------------------------------------------------------ ANONYMOUS */

static void test_anonymous(void **st) {
  (void)st;
  const epode__sasl_mech *m = &epode__sasl_anonymous;
  assert_string_equal(m->name, "ANONYMOUS");
  assert_int_equal(m->priority, 10);
  assert_int_equal(m->flags, EPODE__SASL_NO_CREDS);

  epode__sasl_params p;
  memset(&p, 0, sizeof p); /* no credentials at all */
  RUN_OK(m, &p, "");       /* an empty initial response: "=" on the wire */
  START_APPENDS(m, &p, EPODE_OK, "pre");

  /* a challenge is refused, and the exchange stays failed */
  ex x;
  assert_int_equal(ex_start(&x, m, &p), EPODE_OK);
  assert_int_equal(ex_step(&x, ""), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "ANONYMOUS has none");
  assert_int_equal(x.out.len, 0);
  assert_int_equal(ex_success(&x, NULL), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "success after the exchange failed");
  assert_int_equal(ex_step(&x, "x"), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "challenge after the exchange failed");
  ex_free(&x);

  /* oversized input: a 1 MB challenge is refused; 1 MB of additional data
   * with success is ignored (nothing to verify) */
  char *big = malloc(BIG);
  assert_non_null(big);
  memset(big, 'A', BIG);
  assert_int_equal(ex_start(&x, m, &p), EPODE_OK);
  assert_int_equal(ex_step_n(&x, big, BIG), EPODE_ERR_SASL_PROTOCOL);
  assert_int_equal(x.out.len, 0);
  ex_free(&x);
  assert_int_equal(ex_start(&x, m, &p), EPODE_OK);
  assert_int_equal(ex_success_n(&x, big, BIG), EPODE_OK);
  ex_free(&x);
  free(big);

  /* NULL state (start() failed allocating) */
  assert_int_equal(m->step(NULL, NULL, 0, NULL), EPODE_ERR_SASL_PROTOCOL);
  assert_int_equal(m->success(NULL, NULL, 0), EPODE_ERR_SASL_PROTOCOL);
  assert_null(m->errmsg(NULL));
  m->free(NULL);

  assert_int_equal(alloc_sweep(m, &p, NULL, "", EPODE_OK), 1);
}

/* ------------------------------------------------------------ OAUTHBEARER */

static void test_oauthbearer_initial(void **st) {
  (void)st;
  const epode__sasl_mech *m = &epode__sasl_oauthbearer;
  assert_string_equal(m->name, "OAUTHBEARER");
  assert_int_equal(m->priority, 35);
  assert_int_equal(m->flags, EPODE__SASL_SENDS_SECRET | EPODE__SASL_NEEDS_TLS);

  epode__sasl_params p;
  params_init(&p);
  /* the bare JID as authzid */
  RUN_OK(m, &p,
         "n,a=juliet@example.com,\x01"
         "auth=Bearer " TOKEN "\x01\x01");
  /* an explicit authzid wins; saslname escaping of ',' and '=' */
  p.authzid = "romeo=1,x@example.net";
  RUN_OK(m, &p,
         "n,a=romeo=3D1=2Cx@example.net,\x01"
         "auth=Bearer " TOKEN "\x01\x01");
  /* an empty authzid is none: the bare JID again */
  p.authzid = "";
  RUN_OK(m, &p,
         "n,a=juliet@example.com,\x01"
         "auth=Bearer " TOKEN "\x01\x01");
  /* the username is escaped too */
  p.authcid = "a,b=c";
  RUN_OK(m, &p,
         "n,a=a=2Cb=3Dc@example.com,\x01"
         "auth=Bearer " TOKEN "\x01\x01");
  /* no username (or no domain): no authzid at all */
  p.authcid = NULL;
  RUN_OK(m, &p,
         "n,,\x01"
         "auth=Bearer " TOKEN "\x01\x01");
  params_init(&p);
  p.domain = "";
  RUN_OK(m, &p,
         "n,,\x01"
         "auth=Bearer " TOKEN "\x01\x01");
  /* all b64token characters */
  params_init(&p);
  p.oauth_token = "Az09-._~+/==";
  RUN_OK(m, &p,
         "n,a=juliet@example.com,\x01"
         "auth=Bearer Az09-._~+/==\x01\x01");
  START_APPENDS(m, &p, EPODE_OK,
                "pren,a=juliet@example.com,\x01"
                "auth=Bearer Az09-._~+/==\x01\x01");

  /* tokens that are not RFC 6750 b64tokens */
  static const char *const bad[] = {"",     "=",   "abc def",      "abc\x01", "abc=d",
                                    "a\"b", "a,b", "tok\xc3\xa9n", "abc\r\n", "Bearer abc"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    params_init(&p);
    p.oauth_token = bad[i];
    start_fails(m, &p, EPODE_ERR_INVAL, "not a valid bearer token");
    START_APPENDS(m, &p, EPODE_ERR_INVAL, "pre");
  }
  params_init(&p);
  p.oauth_token = NULL;
  start_fails(m, &p, EPODE_ERR_INVAL, "no OAuth token");

  /* output cap: a clean limit error, nothing half-written */
  params_init(&p);
  ex x;
  x.m = m;
  epode__buf_init(&x.out, NULL, 40);
  assert_int_equal(epode__buf_append_str(&x.out, "pre"), EPODE_OK);
  assert_int_equal(m->start(&x.st, &p, &x.out, &x.has), EPODE_ERR_LIMIT);
  assert_string_equal(x.out.data, "pre");
  assert_errmsg_has(&x, "output limit");
  ex_free(&x);
}

static void test_oauthbearer_error(void **st) {
  (void)st;
  const epode__sasl_mech *m = &epode__sasl_oauthbearer;
  epode__sasl_params p;
  params_init(&p);
  ex x;

  /* the server's JSON error: answered with a lone kvsep; errmsg explains
   * the coming failure; success would be a violation */
  assert_int_equal(ex_start(&x, m, &p), EPODE_OK);
  assert_int_equal(ex_step(&x, JSON_ERR), EPODE_OK);
  assert_out(&x, "\x01");
  assert_errmsg_has(&x, "the server rejected the token: status \"invalid_token\"");
  assert_errmsg_has(&x, "example_scope");
  assert_int_equal(ex_success(&x, NULL), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "success after the server reported an error");
  ex_free(&x);

  /* a second challenge */
  assert_int_equal(ex_start(&x, m, &p), EPODE_OK);
  assert_int_equal(ex_step(&x, JSON_ERR), EPODE_OK);
  assert_int_equal(ex_step(&x, JSON_ERR), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "another challenge");
  assert_int_equal(x.out.len, 0);
  ex_free(&x);

  /* JSON without status, with spacing, hostile bytes, empty */
  assert_int_equal(ex_start(&x, m, &p), EPODE_OK);
  assert_int_equal(ex_step(&x, "{ \"status\" :\n \"insufficient_scope\" }"), EPODE_OK);
  assert_errmsg_has(&x, "status \"insufficient_scope\"");
  ex_free(&x);
  assert_int_equal(ex_start(&x, m, &p), EPODE_OK);
  assert_int_equal(ex_step(&x, "{\"scope\":\"a\"}"), EPODE_OK);
  assert_errmsg_has(&x, "rejected the token: {\"scope\":\"a\"}");
  ex_free(&x);
  assert_int_equal(ex_start(&x, m, &p), EPODE_OK);
  assert_int_equal(ex_step(&x, "{\"status\":\"\x1b[2J\xff\"}\x07"), EPODE_OK);
  assert_errmsg_has(&x, "status \"?[2J?\" ({\"status\":\"?[2J?\"}?)");
  ex_free(&x);
  assert_int_equal(ex_start(&x, m, &p), EPODE_OK);
  assert_int_equal(ex_step(&x, NULL), EPODE_OK);
  assert_out(&x, "\x01");
  assert_errmsg_has(&x, "empty challenge");
  ex_free(&x);

  /* 1 MB of JSON: still one kvsep, a bounded message */
  char *big = malloc(BIG + 1);
  assert_non_null(big);
  memset(big, ' ', BIG);
  memcpy(big, "{\"status\":\"invalid_token\",\"x\":\"", 31);
  big[BIG - 2] = '"';
  big[BIG - 1] = '}';
  assert_int_equal(ex_start(&x, m, &p), EPODE_OK);
  assert_int_equal(ex_step_n(&x, big, BIG), EPODE_OK);
  assert_out(&x, "\x01");
  assert_errmsg_has(&x, "invalid_token");
  assert_errmsg_has(&x, "...");
  assert_true(strlen(m->errmsg(x.st)) < 256);
  ex_free(&x);
  /* and with success(): ignored data */
  assert_int_equal(ex_start(&x, m, &p), EPODE_OK);
  assert_int_equal(ex_success_n(&x, big, BIG), EPODE_OK);
  ex_free(&x);
  free(big);

  /* the kvsep answer hits the output cap */
  assert_int_equal(ex_start(&x, m, &p), EPODE_OK);
  epode__buf_reset(&x.out);
  x.out.max = 3;
  assert_int_equal(epode__buf_append_str(&x.out, "abc"), EPODE_OK);
  assert_int_equal(x.m->step(x.st, (const unsigned char *)JSON_ERR, 5, &x.out), EPODE_ERR_LIMIT);
  assert_string_equal(x.out.data, "abc");
  assert_errmsg_has(&x, "output limit");
  ex_free(&x);

  /* after completion */
  assert_int_equal(ex_start(&x, m, &p), EPODE_OK);
  assert_int_equal(ex_success(&x, NULL), EPODE_OK);
  assert_int_equal(ex_step(&x, JSON_ERR), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "completed");
  assert_int_equal(x.out.len, 0);
  ex_free(&x);

  assert_int_equal(m->step(NULL, NULL, 0, NULL), EPODE_ERR_SASL_PROTOCOL);
  assert_int_equal(m->success(NULL, NULL, 0), EPODE_ERR_SASL_PROTOCOL);
  assert_null(m->errmsg(NULL));
  m->free(NULL);
}

static void test_oauthbearer_alloc(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  p.authzid = "a,b";
  const char *want = "n,a=a=2Cb,\x01"
                     "auth=Bearer " TOKEN "\x01\x01";
  /* state + the output buffer (allocated at 64 bytes, then grown) */
  assert_int_equal(alloc_sweep(&epode__sasl_oauthbearer, &p, NULL, want, EPODE_OK), 3);
  /* through the error path too */
  assert_true(alloc_sweep(&epode__sasl_oauthbearer, &p, JSON_ERR, want, EPODE_ERR_SASL_PROTOCOL) >=
              2);
}

/* ------------------------------------------------------------ EXTERNAL */

static void test_external(void **st) {
  (void)st;
  const epode__sasl_mech *m = &epode__sasl_external;
  assert_string_equal(m->name, "EXTERNAL");
  assert_int_equal(m->priority, 60);
  assert_int_equal(m->flags, EPODE__SASL_NEEDS_CERT | EPODE__SASL_NO_CREDS);

  epode__sasl_params p;
  params_init(&p);
  p.authcid = NULL;  /* no credentials needed */
  RUN_OK(m, &p, ""); /* XEP-0178: "=" on the wire */
  p.authzid = "";
  RUN_OK(m, &p, "");
  p.authzid = "juliet@example.com/balcony";
  RUN_OK(m, &p, "juliet@example.com/balcony");
  START_APPENDS(m, &p, EPODE_OK, "prejuliet@example.com/balcony");

  /* no TLS or no client certificate */
  params_init(&p);
  p.tls = NULL;
  start_fails(m, &p, EPODE_ERR_SASL_NOMECH, "needs TLS");
  params_init(&p);
  p.have_client_cert = 0;
  start_fails(m, &p, EPODE_ERR_SASL_NOMECH, "client certificate");
  START_APPENDS(m, &p, EPODE_ERR_SASL_NOMECH, "pre");

  /* one empty challenge: the same response again, then success */
  params_init(&p);
  ex x;
  assert_int_equal(ex_start(&x, m, &p), EPODE_OK);
  assert_int_equal(ex_step(&x, ""), EPODE_OK);
  assert_int_equal(x.out.len, 0);
  assert_null(m->errmsg(x.st));
  assert_int_equal(ex_success(&x, NULL), EPODE_OK);
  ex_free(&x);
  p.authzid = "juliet@example.com";
  assert_int_equal(ex_start(&x, m, &p), EPODE_OK);
  assert_int_equal(ex_step(&x, NULL), EPODE_OK);
  assert_out(&x, "juliet@example.com");
  /* a second challenge is refused */
  assert_int_equal(ex_step(&x, ""), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "second challenge");
  assert_int_equal(x.out.len, 0);
  assert_int_equal(ex_success(&x, NULL), EPODE_ERR_SASL_PROTOCOL);
  ex_free(&x);

  /* a challenge with data, including 1 MB of it */
  assert_int_equal(ex_start(&x, m, &p), EPODE_OK);
  assert_int_equal(ex_step(&x, "x"), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "non-empty challenge");
  assert_int_equal(x.out.len, 0);
  ex_free(&x);
  char *big = malloc(BIG);
  assert_non_null(big);
  memset(big, 'A', BIG);
  assert_int_equal(ex_start(&x, m, &p), EPODE_OK);
  assert_int_equal(ex_step_n(&x, big, BIG), EPODE_ERR_SASL_PROTOCOL);
  ex_free(&x);
  /* additional data with success is ignored */
  assert_int_equal(ex_start(&x, m, &p), EPODE_OK);
  assert_int_equal(ex_success_n(&x, big, BIG), EPODE_OK);
  ex_free(&x);
  free(big);

  /* output caps, at start and at the re-sent response */
  x.m = m;
  epode__buf_init(&x.out, NULL, 8);
  assert_int_equal(m->start(&x.st, &p, &x.out, &x.has), EPODE_ERR_LIMIT);
  assert_errmsg_has(&x, "output limit");
  assert_int_equal(x.out.len, 0);
  ex_free(&x);
  assert_int_equal(ex_start(&x, m, &p), EPODE_OK);
  epode__buf_reset(&x.out);
  x.out.max = 8;
  assert_int_equal(ex_step(&x, ""), EPODE_ERR_LIMIT);
  assert_int_equal(x.out.len, 0);
  assert_int_equal(ex_success(&x, NULL), EPODE_ERR_SASL_PROTOCOL);
  ex_free(&x);

  assert_int_equal(m->step(NULL, NULL, 0, NULL), EPODE_ERR_SASL_PROTOCOL);
  assert_int_equal(m->success(NULL, NULL, 0), EPODE_ERR_SASL_PROTOCOL);
  assert_null(m->errmsg(NULL));
  m->free(NULL);

  /* allocation: state, authzid copy, output */
  assert_int_equal(alloc_sweep(m, &p, NULL, "juliet@example.com", EPODE_OK), 3);
  assert_true(alloc_sweep(m, &p, "", "juliet@example.com", EPODE_OK) >= 3);
  p.authzid = NULL;
  assert_int_equal(alloc_sweep(m, &p, NULL, "", EPODE_OK), 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_anonymous),         cmocka_unit_test(test_oauthbearer_initial),
      cmocka_unit_test(test_oauthbearer_error), cmocka_unit_test(test_oauthbearer_alloc),
      cmocka_unit_test(test_external),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
