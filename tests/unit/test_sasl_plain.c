/* PLAIN (RFC 4616) and SASLprep (RFC 4013). */
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

static const epode__sasl_mech *const M = &epode__sasl_plain;

static void params_init(epode__sasl_params *p) {
  memset(p, 0, sizeof *p);
  p->authcid = "juliet";
  p->password = "r0m30myr0m30";
}

/* Runs start() and checks the response is exactly want[0..want_len). */
static void start_is(const epode__sasl_params *p, const char *want, size_t want_len) {
  void *st = NULL;
  epode__buf out;
  epode__buf_init(&out, NULL, 0);
  int has = 0;
  assert_int_equal(M->start(&st, p, &out, &has), EPODE_OK);
  assert_int_equal(has, 1);
  assert_int_equal(out.len, want_len);
  assert_memory_equal(out.data, want, want_len);
  assert_null(M->errmsg(st));
  assert_int_equal(M->success(st, NULL, 0), EPODE_OK);
  assert_null(M->errmsg(st));
  M->free(st);
  epode__buf_free(&out);
}
#define START_IS(p, lit) start_is(p, lit, sizeof(lit) - 1)

static void start_fails(const epode__sasl_params *p, epode_err want, const char *msg) {
  void *st = NULL;
  epode__buf out;
  epode__buf_init(&out, NULL, 0);
  int has = 0;
  assert_int_equal(M->start(&st, p, &out, &has), want);
  assert_int_equal(has, 0);
  assert_int_equal(out.len, 0);
  const char *m = M->errmsg(st);
  assert_non_null(m);
  if (!strstr(m, msg)) fail_msg("errmsg \"%s\" lacks \"%s\"", m, msg);
  assert_int_equal(M->success(st, NULL, 0), EPODE_ERR_SASL_PROTOCOL);
  M->free(st);
  epode__buf_free(&out);
}

static void test_descriptor(void **st) {
  (void)st;
  assert_string_equal(M->name, "PLAIN");
  assert_int_equal(M->priority, 20);
  assert_int_equal(M->flags, EPODE__SASL_SENDS_SECRET | EPODE__SASL_NEEDS_TLS);
}

static void test_basic(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  START_IS(&p, "\0juliet\0r0m30myr0m30");
  p.authzid = "";
  START_IS(&p, "\0juliet\0r0m30myr0m30");
  p.authzid = "romeo@example.net";
  START_IS(&p, "romeo@example.net\0juliet\0r0m30myr0m30");
  /* ASCII punctuation and spaces pass through unchanged */
  params_init(&p);
  p.password = "a b,c=d!~";
  START_IS(&p, "\0juliet\0a b,c=d!~");
}

static void test_saslprep_applied(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  p.authcid = "I\xc2\xadX";    /* I<SOFT HYPHEN>X */
  p.password = "\xe2\x85\xa8"; /* ROMAN NUMERAL NINE */
  START_IS(&p, "\0IX\0IX");
  p.password = "\xc2\xaa"; /* FEMININE ORDINAL INDICATOR */
  START_IS(&p, "\0IX\0a");
  p.password = "x\xc2\xa0y"; /* NO-BREAK SPACE -> space */
  START_IS(&p, "\0IX\0x y");
  params_init(&p);
  p.password = "bell\x07";
  start_fails(&p, EPODE_ERR_INVAL, "password");
  params_init(&p);
  p.authcid = "\xd8\xa7\x31"; /* bidi: RandALCat then L-less digit */
  start_fails(&p, EPODE_ERR_INVAL, "username");
  params_init(&p);
  p.password = "\xc2\xad"; /* maps to nothing: empty */
  start_fails(&p, EPODE_ERR_INVAL, "empty");
}

static void test_missing(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  p.authcid = NULL;
  start_fails(&p, EPODE_ERR_INVAL, "no username");
  params_init(&p);
  p.password = NULL;
  start_fails(&p, EPODE_ERR_INVAL, "no password");
  params_init(&p);
  p.authcid = "";
  start_fails(&p, EPODE_ERR_INVAL, "username is empty");
  params_init(&p);
  p.password = "";
  start_fails(&p, EPODE_ERR_INVAL, "password is empty");
}

static void test_order(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  void *s = NULL;
  epode__buf out;
  epode__buf_init(&out, NULL, 0);
  int has;
  assert_int_equal(M->start(&s, &p, &out, &has), EPODE_OK);
  size_t len = out.len;
  /* PLAIN has no challenges */
  assert_int_equal(M->step(s, (const unsigned char *)"x", 1, &out), EPODE_ERR_SASL_PROTOCOL);
  assert_int_equal(out.len, len);
  assert_non_null(M->errmsg(s));
  assert_int_equal(M->success(s, NULL, 0), EPODE_ERR_SASL_PROTOCOL);
  M->free(s);

  assert_int_equal(M->start(&s, &p, &out, &has), EPODE_OK);
  assert_int_equal(M->success(s, NULL, 0), EPODE_OK);
  assert_int_equal(M->success(s, NULL, 0), EPODE_ERR_SASL_PROTOCOL);
  assert_int_equal(M->step(s, NULL, 0, &out), EPODE_ERR_SASL_PROTOCOL);
  M->free(s);
  M->free(NULL);
  assert_null(M->errmsg(NULL));
  epode__buf_free(&out);
}

static void test_output_limit(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  void *s = NULL;
  epode__buf out;
  epode__buf_init(&out, NULL, 10);
  epode__buf_append_str(&out, "keep");
  int has = 0;
  assert_int_equal(M->start(&s, &p, &out, &has), EPODE_ERR_LIMIT);
  assert_int_equal(has, 0);
  assert_string_equal(out.data, "keep");
  assert_non_null(M->errmsg(s));
  M->free(s);
  epode__buf_free(&out);
}

/* SASLprep directly: RFC 4013 section 3 examples and more. */
static void prep_is(const char *in, const char *want) {
  char *out = NULL;
  epode_err e = epode__saslprep(NULL, in, &out);
  if (e) fail_msg("SASLprep(\"%s\") failed: %d", in, e);
  assert_string_equal(out, want);
  epode_free(NULL, out);
}
static void prep_bad(const char *in) {
  char *out = (char *)"sentinel";
  assert_int_equal(epode__saslprep(NULL, in, &out), EPODE_ERR_INVAL);
  assert_null(out);
}

static void test_saslprep(void **st) {
  (void)st;
  prep_is("I\xc2\xadX", "IX");   /* 1. SOFT HYPHEN mapped to nothing */
  prep_is("user", "user");       /* 2. no transformation */
  prep_is("USER", "USER");       /* 3. case preserved */
  prep_is("\xc2\xaa", "a");      /* 4. NFKC */
  prep_is("\xe2\x85\xa8", "IX"); /* 5. NFKC */
  prep_bad("\x07");              /* 6. prohibited character */
  prep_bad("\xd8\xa7\x31");      /* 7. bidi check */
  prep_is("", "");
  prep_is("\xef\xbb\xbf\x61", "a");    /* ZERO WIDTH NO-BREAK SPACE: mapped to nothing */
  prep_is("a\xe3\x80\x80\x62", "a b"); /* IDEOGRAPHIC SPACE: to SPACE */
  prep_is("\xd8\xa7\xd8\xa8", "\xd8\xa7\xd8\xa8"); /* all-RTL is fine */
  prep_bad("a\x7f");                               /* DEL */
  prep_bad("\x1b[0m");                             /* ESC */
  prep_bad("a\xef\xbf\xbd\xee\x80\x80");           /* private use U+E000 */
  /* invalid UTF-8 */
  prep_bad("\xc3");
  prep_bad("\xc0\xaf");         /* overlong '/' */
  prep_bad("\xed\xa0\x80");     /* surrogate */
  prep_bad("\xf4\x90\x80\x80"); /* > U+10FFFF */
  prep_bad("\xff");
  prep_bad("a\x80");
}

/* ------------------------------------------------------------ allocation */

static void test_alloc_failures(void **st) {
  (void)st;
  int completed = 0;
  long n;
  for (n = 0; n < 100 && !completed; n++) {
    epode_test_failmem f;
    epode_test_failmem_init_budget(&f, n);
    epode__sasl_params p;
    params_init(&p);
    p.mem = &f.mem;
    p.authcid = "I\xc2\xadX"; /* through libidn */
    p.authzid = "admin@example.com";
    void *s = NULL;
    epode__buf out;
    epode__buf_init(&out, &f.mem, 0);
    int has;
    epode_err e = M->start(&s, &p, &out, &has);
    if (!e) {
      assert_int_equal(M->success(s, NULL, 0), EPODE_OK);
      completed = 1;
    } else {
      assert_int_equal(e, EPODE_ERR_NOMEM);
      assert_int_equal(out.len, 0);
      if (s) assert_non_null(M->errmsg(s));
    }
    M->free(s);
    epode__buf_free(&out);
    assert_int_equal(f.live, 0);
  }
  assert_true(completed);
  assert_true(n > 2);

  /* SASLprep itself */
  for (n = 0; n < 3; n++) {
    epode_test_failmem f;
    epode_test_failmem_init_budget(&f, n);
    char *out = NULL;
    epode_err e = epode__saslprep(&f.mem, n % 2 ? "ascii" : "\xc2\xaa", &out);
    if (n == 0) assert_int_equal(e, EPODE_ERR_NOMEM);
    if (!e) epode_free(&f.mem, out);
    assert_int_equal(f.live, 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_descriptor),
      cmocka_unit_test(test_basic),
      cmocka_unit_test(test_saslprep_applied),
      cmocka_unit_test(test_missing),
      cmocka_unit_test(test_order),
      cmocka_unit_test(test_output_limit),
      cmocka_unit_test(test_saslprep),
      cmocka_unit_test(test_alloc_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
