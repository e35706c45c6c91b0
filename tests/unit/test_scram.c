/* SCRAM-SHA-1/-256/-512 and -PLUS: RFC test vectors, hostile servers,
 * channel-binding choice, allocation failures.
 *
 * Expected values not taken from an RFC (SHA-512, the -PLUS exchange) were
 * computed once with an independent Python implementation of RFC 5802
 * (hashlib.pbkdf2_hmac + hmac + base64, written from the RFC and checked to
 * reproduce the RFC 5802 and RFC 7677 vectors first) and pasted here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sasl/sasl.h"
#include "sasl/sasl_int.h"
#include "util/buf.h"

#include "failmem.h"
#include "scram_ex.h"

#define RFC5802_NONCE "fyko+d2lbbFgONRv9qkxdawL"
#define RFC5802_FIRST "n,,n=user,r=" RFC5802_NONCE
#define RFC5802_SFIRST "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
#define RFC5802_FINAL                                                                              \
  "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
#define RFC5802_V "v=rmF9pqV8S7suAoZWja4dJRkFsKQ="

#define RFC7677_NONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC7677_FIRST "n,,n=user,r=" RFC7677_NONCE
#define RFC7677_SFIRST                                                                             \
  "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC7677_FINAL                                                                              \
  "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"                                   \
  "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC7677_V "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

/* Python-derived (see the top comment): SHA-512 over the RFC 7677 inputs. */
#define SHA512_FINAL                                                                               \
  "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"                                   \
  "p=gMGXRcevScNtxZ6/8lQYpGtnsNAc3mGcmNomv+xnoOMw+3R2xNJdMNnzMlTN8PPC6wdp6dybEmDYXYTxwnYPJQ=="
#define SHA512_V                                                                                   \
  "v=ZQnYEgWQMFmmsM8aQMF0nDDCy/AgCzkwk8CmMZYcMg0vSVlKDanekLtifDSeVGT4+5ZxXnJq199RVG2rR7N7Zw=="

/* Python-derived: SCRAM-SHA-256-PLUS, tls-unique data 00 01 .. 0b. */
#define PLUS_SFIRST "r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define PLUS_FINAL                                                                                 \
  "c=cD10bHMtdW5pcXVlLCwAAQIDBAUGBwgJCgs=,r=rOprNGfwEbeRWgbNEkqOsrv,"                              \
  "p=3T/WgBOLHO5IDXgVacW88TStsLAeD+uxo9ItinNdS8E="
#define PLUS_V "v=HpIufny+3I8iCk/RymIAWooz8LWYumLHruoPzVwdkPk="

static const unsigned char cb_unique[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
static const unsigned char cb_exporter[32] = {
    0xE0, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xEB, 0xEC, 0xED, 0xEE, 0xEF,
    0xF0, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF};
static const unsigned char cb_endpoint[4] = {'E', 'P', 'E', 'P'};

static void params_init(epode__sasl_params *p) {
  memset(p, 0, sizeof *p);
  p->authcid = "user";
  p->password = "pencil";
}


/* A full exchange with fixed nonce; `v` goes with success(). */
static void vector(const epode__sasl_mech *m, const char *nonce, const char *first,
                   const char *sfirst, const char *final, const char *v) {
  epode__sasl_params p;
  params_init(&p);
  ex x;
  assert_int_equal(ex_start(&x, m, &p, nonce), EPODE_OK);
  assert_out(&x, first);
  assert_null(m->errmsg(x.st));
  assert_int_equal(ex_step(&x, sfirst), EPODE_OK);
  assert_out(&x, final);
  assert_int_equal(ex_success(&x, v), EPODE_OK);
  assert_null(m->errmsg(x.st));
  ex_free(&x);
}

/* The same exchange, but a wrong (well-formed) v= at the end. */
static void vector_bad_v(const epode__sasl_mech *m, const char *nonce, const char *sfirst,
                         const char *v) {
  epode__sasl_params p;
  params_init(&p);
  ex x;
  char bad[200];
  strcpy(bad, v);
  bad[2] = bad[2] == 'A' ? 'B' : 'A'; /* first char: stays valid base64 */
  assert_int_equal(ex_start(&x, m, &p, nonce), EPODE_OK);
  assert_int_equal(ex_step(&x, sfirst), EPODE_OK);
  assert_int_equal(ex_success(&x, bad), EPODE_ERR_SASL_SIGNATURE);
  assert_errmsg_has(&x, "does not match");
  /* a failed exchange stays failed */
  assert_int_equal(ex_success(&x, v), EPODE_ERR_SASL_PROTOCOL);
  ex_free(&x);
}

static void test_rfc5802_sha1(void **st) {
  (void)st;
  vector(&epode__sasl_scram_sha1, RFC5802_NONCE, RFC5802_FIRST, RFC5802_SFIRST, RFC5802_FINAL,
         RFC5802_V);
  vector_bad_v(&epode__sasl_scram_sha1, RFC5802_NONCE, RFC5802_SFIRST, RFC5802_V);
}

static void test_rfc7677_sha256(void **st) {
  (void)st;
  vector(&epode__sasl_scram_sha256, RFC7677_NONCE, RFC7677_FIRST, RFC7677_SFIRST, RFC7677_FINAL,
         RFC7677_V);
  vector_bad_v(&epode__sasl_scram_sha256, RFC7677_NONCE, RFC7677_SFIRST, RFC7677_V);
}

static void test_sha512(void **st) {
  (void)st;
  vector(&epode__sasl_scram_sha512, RFC7677_NONCE, RFC7677_FIRST, RFC7677_SFIRST, SHA512_FINAL,
         SHA512_V);
  vector_bad_v(&epode__sasl_scram_sha512, RFC7677_NONCE, RFC7677_SFIRST, SHA512_V);
}

static void test_mech_table(void **st) {
  (void)st;
  static const struct {
    const epode__sasl_mech *m;
    const char *name;
    int prio;
    unsigned flags;
  } t[] = {
      {&epode__sasl_scram_sha512_plus, "SCRAM-SHA-512-PLUS", 49, EPODE__SASL_NEEDS_CB},
      {&epode__sasl_scram_sha256_plus, "SCRAM-SHA-256-PLUS", 48, EPODE__SASL_NEEDS_CB},
      {&epode__sasl_scram_sha1_plus, "SCRAM-SHA-1-PLUS", 47, EPODE__SASL_NEEDS_CB},
      {&epode__sasl_scram_sha512, "SCRAM-SHA-512", 45, 0},
      {&epode__sasl_scram_sha256, "SCRAM-SHA-256", 44, 0},
      {&epode__sasl_scram_sha1, "SCRAM-SHA-1", 43, 0},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    assert_string_equal(t[i].m->name, t[i].name);
    assert_int_equal(t[i].m->priority, t[i].prio);
    assert_int_equal(t[i].m->flags, t[i].flags);
  }
}

/* v= as a challenge, then an empty <success/>. */
static void test_v_as_challenge(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  ex x;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_V), EPODE_OK);
  assert_int_equal(x.out.len, 0); /* empty response */
  /* a mechanism that is finished refuses further challenges */
  assert_int_equal(ex_step(&x, RFC5802_V), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "completed");
  ex_free(&x);

  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_V), EPODE_OK);
  assert_int_equal(ex_success(&x, NULL), EPODE_OK);
  assert_null(x.m->errmsg(x.st));
  assert_int_equal(ex_success(&x, NULL), EPODE_ERR_SASL_PROTOCOL);
  assert_int_equal(ex_step(&x, ""), EPODE_ERR_SASL_PROTOCOL);
  ex_free(&x);

  /* a wrong v= as a challenge fails there */
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_OK);
  assert_int_equal(ex_step(&x, "v=AmF9pqV8S7suAoZWja4dJRkFsKQ="), EPODE_ERR_SASL_SIGNATURE);
  assert_int_equal(ex_success(&x, NULL), EPODE_ERR_SASL_PROTOCOL);
  ex_free(&x);

  /* verified by challenge, then success repeats a wrong v= */
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_V), EPODE_OK);
  assert_int_equal(ex_success(&x, "v=AmF9pqV8S7suAoZWja4dJRkFsKQ="), EPODE_ERR_SASL_SIGNATURE);
  ex_free(&x);
}

static void test_success_without_proof(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  ex x;
  /* after client-final, empty success */
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha256, &p, RFC7677_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC7677_SFIRST), EPODE_OK);
  assert_int_equal(ex_success(&x, NULL), EPODE_ERR_SASL_SIGNATURE);
  assert_errmsg_has(&x, "did not prove");
  ex_free(&x);
  /* success before the server-first */
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha256, &p, RFC7677_NONCE), EPODE_OK);
  assert_int_equal(ex_success(&x, NULL), EPODE_ERR_SASL_SIGNATURE);
  assert_errmsg_has(&x, "did not prove");
  ex_free(&x);
  /* success with the right v= but before the server-first */
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha256, &p, RFC7677_NONCE), EPODE_OK);
  assert_int_equal(ex_success(&x, RFC7677_V), EPODE_ERR_SASL_SIGNATURE);
  ex_free(&x);
  /* success with garbage instead of v= */
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha256, &p, RFC7677_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC7677_SFIRST), EPODE_OK);
  assert_int_equal(ex_success(&x, "x=whatever"), EPODE_ERR_SASL_PROTOCOL);
  ex_free(&x);
  /* malformed base64 in v= */
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha256, &p, RFC7677_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC7677_SFIRST), EPODE_OK);
  assert_int_equal(ex_success(&x, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4*"),
                   EPODE_ERR_SASL_PROTOCOL);
  ex_free(&x);
  /* truncated signature */
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha256, &p, RFC7677_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC7677_SFIRST), EPODE_OK);
  assert_int_equal(ex_success(&x, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5n"), EPODE_ERR_SASL_SIGNATURE);
  ex_free(&x);
  /* correct v= followed by an extension is fine */
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha256, &p, RFC7677_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC7677_SFIRST), EPODE_OK);
  assert_int_equal(ex_success(&x, RFC7677_V ",x=ext"), EPODE_OK);
  ex_free(&x);
}

static void test_server_error(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  ex x;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_OK);
  assert_int_equal(ex_success(&x, "e=invalid-proof"), EPODE_ERR_AUTH);
  assert_errmsg_has(&x, "invalid-proof");
  ex_free(&x);
  /* as a challenge, with a control character that must not reach errmsg */
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_OK);
  assert_int_equal(ex_step(&x, "e=other-error\x1b[31m"), EPODE_ERR_AUTH);
  assert_errmsg_has(&x, "other-error?[31m");
  ex_free(&x);
}

static void test_wrong_order(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  ex x;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_OK);
  assert_int_equal(ex_success(&x, RFC5802_V), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "completed");
  ex_free(&x);
  /* after a failure every call is refused */
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, "garbage"), EPODE_ERR_SASL_PROTOCOL);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "failed");
  assert_int_equal(ex_success(&x, RFC5802_V), EPODE_ERR_SASL_PROTOCOL);
  ex_free(&x);
  /* NULL state */
  epode__buf b;
  epode__buf_init(&b, NULL, 0);
  assert_int_equal(epode__sasl_scram_sha1.step(NULL, (const unsigned char *)"r=", 2, &b),
                   EPODE_ERR_SASL_PROTOCOL);
  assert_int_equal(epode__sasl_scram_sha1.success(NULL, NULL, 0), EPODE_ERR_SASL_PROTOCOL);
  assert_null(epode__sasl_scram_sha1.errmsg(NULL));
  epode__sasl_scram_sha1.free(NULL);
  epode__buf_free(&b);
}

#define SALT ",s=QSXCR+Q6sek8bf92"
#define OKNONCE "r=" RFC5802_NONCE "srv"

static void hostile_first(const char *sfirst, size_t len, epode_err want, const char *msg) {
  epode__sasl_params p;
  params_init(&p);
  ex x;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  epode__buf_reset(&x.out);
  epode__buf_append_str(&x.out, "untouched");
  epode_err e = x.m->step(x.st, (const unsigned char *)sfirst, len, &x.out);
  if (e != want) fail_msg("\"%s\": got %d, want %d", sfirst, e, want);
  assert_string_equal(x.out.data, "untouched"); /* nothing written on failure */
  if (msg) assert_errmsg_has(&x, msg);
  /* and it stays failed */
  assert_int_equal(ex_success(&x, RFC5802_V), EPODE_ERR_SASL_PROTOCOL);
  ex_free(&x);
}
#define HOSTILE(s, msg) hostile_first(s, sizeof(s) - 1, EPODE_ERR_SASL_PROTOCOL, msg)

static void test_hostile_server_first(void **st) {
  (void)st;
  HOSTILE("r=somebodyelse" SALT ",i=4096", "does not extend");
  HOSTILE("r=fyko+d2lbbFgONRv9qkxdaw" SALT ",i=4096", "does not extend"); /* a prefix of ours */
  HOSTILE("r=" RFC5802_NONCE SALT ",i=4096", "adds nothing");
  HOSTILE("r=" RFC5802_NONCE "\x7f" SALT ",i=4096", "non-printable");
  HOSTILE("r=" RFC5802_NONCE "a\xc3\xa9" SALT ",i=4096", "non-printable");
  HOSTILE(OKNONCE SALT ",i=1", "below the minimum 4096");
  HOSTILE(OKNONCE SALT ",i=4095", "below the minimum 4096");
  HOSTILE(OKNONCE SALT ",i=2147483648", "exceeds the maximum");
  HOSTILE(OKNONCE SALT ",i=10000001", "exceeds the maximum 10000000");
  HOSTILE(OKNONCE SALT ",i=99999999999999999999999999", "positive decimal");
  HOSTILE(OKNONCE SALT ",i=18446744073709551616", "positive decimal"); /* 2^64 */
  HOSTILE(OKNONCE SALT ",i=abc", "positive decimal");
  HOSTILE(OKNONCE SALT ",i=4096abc", "positive decimal");
  HOSTILE(OKNONCE SALT ",i=", "positive decimal");
  HOSTILE(OKNONCE SALT ",i=04096", "positive decimal");
  HOSTILE(OKNONCE SALT ",i=-4096", "positive decimal");
  HOSTILE(OKNONCE SALT ",i=+4096", "positive decimal");
  HOSTILE(OKNONCE SALT ",i=0", "positive decimal");
  HOSTILE(OKNONCE SALT, "no i=");
  HOSTILE(OKNONCE ",i=4096", "no s=");
  HOSTILE(OKNONCE ",i=4096" SALT, "no s=");
  HOSTILE(OKNONCE ",s=,i=4096", "empty salt");
  HOSTILE(OKNONCE ",s=QSXCR+Q6sek8bf9,i=4096", "base64");
  HOSTILE(OKNONCE ",s=QSXCR*Q6sek8bf92,i=4096", "base64");
  HOSTILE(OKNONCE ",s=QSXCR+Q6sek8bf9=,i=4096", "base64"); /* non-zero trailing bits */
  HOSTILE(OKNONCE ",s=QSXC R+Q6sek8bf9,i=4096", "base64");
  HOSTILE("m=ext," OKNONCE SALT ",i=4096", "m=");
  HOSTILE(OKNONCE SALT ",i=4096,garbage", "malformed");
  HOSTILE(OKNONCE SALT ",i=4096,", "malformed");
  HOSTILE(SALT ",i=4096," OKNONCE, "r=");
  HOSTILE("s=QSXCR+Q6sek8bf92," OKNONCE ",i=4096", "r=");
  HOSTILE("garbage", "r=");
  HOSTILE(",,,,", "r=");
  HOSTILE("r=", "does not extend");
  HOSTILE("", "empty");
  HOSTILE(OKNONCE "\0" SALT ",i=4096", "NUL");
  /* an extension after i= is allowed and ignored */
  epode__sasl_params p;
  params_init(&p);
  ex x;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, OKNONCE SALT ",i=4096,x=future"), EPODE_OK);
  ex_free(&x);
}

static void test_iteration_bounds_from_params(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  p.scram_iter_min = 5000;
  p.scram_iter_max = 6000;
  ex x;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "iteration count 4096 is below the minimum 5000");
  ex_free(&x);
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, OKNONCE SALT ",i=6001"), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "iteration count 6001 exceeds the maximum 6000");
  ex_free(&x);
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, OKNONCE SALT ",i=6000"), EPODE_OK);
  ex_free(&x);
  /* a configured maximum past 2^31-1 is still capped (PBKDF2 takes an int) */
  p.scram_iter_max = UINT64_MAX;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, OKNONCE SALT ",i=2147483648"), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "exceeds the maximum 2147483647");
  ex_free(&x);
}

static void test_huge_input(void **st) {
  (void)st;
  const size_t big = 1024 * 1024;
  char *msg = malloc(big + 200);
  assert_non_null(msg);
  epode__sasl_params p;
  params_init(&p);
  ex x;

  /* 1 MB of garbage */
  memset(msg, 'A', big);
  msg[big] = '\0';
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, msg), EPODE_ERR_SASL_PROTOCOL);
  ex_free(&x);

  /* a 1 MB server nonce that does extend ours: handled, echoed back */
  strcpy(msg, "r=" RFC5802_NONCE);
  size_t n = strlen(msg);
  memset(msg + n, 'x', big - n);
  strcpy(msg + big, SALT ",i=4096");
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, msg), EPODE_OK);
  assert_true(x.out.len > big);
  assert_int_equal(ex_success(&x, RFC5802_V), EPODE_ERR_SASL_SIGNATURE);
  ex_free(&x);

  /* the same with a capped output buffer: a clean limit error */
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  x.out.max = 4096;
  assert_int_equal(ex_step(&x, msg), EPODE_ERR_LIMIT);
  assert_errmsg_has(&x, "limit");
  ex_free(&x);

  /* a 1 MB salt */
  strcpy(msg, OKNONCE ",s=");
  n = strlen(msg);
  memset(msg + n, 'Q', big);
  strcpy(msg + n + big, ",i=4096");
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, msg), EPODE_OK);
  ex_free(&x);

  /* a 1 MB v= and e= */
  strcpy(msg, "v=");
  memset(msg + 2, 'A', big);
  msg[big + 2] = '\0';
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_OK);
  assert_int_equal(ex_success(&x, msg), EPODE_ERR_SASL_SIGNATURE);
  ex_free(&x);
  msg[0] = 'e';
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_OK);
  assert_int_equal(ex_success(&x, msg), EPODE_ERR_AUTH);
  assert_true(strlen(x.m->errmsg(x.st)) < 256);
  ex_free(&x);
  free(msg);
}

/* ------------------------------------------------------------ nonce */

static int fixed_random(void *ud, unsigned char *buf, size_t len) {
  int *calls = ud;
  ++*calls;
  for (size_t i = 0; i < len; i++)
    buf[i] = (unsigned char)(0xF8 + i);
  return 0;
}

static int failing_random(void *ud, unsigned char *buf, size_t len) { return -1; }

static void test_random_nonce(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  int calls = 0;
  p.random = fixed_random;
  p.random_ud = &calls;
  ex x;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha256, &p, NULL), EPODE_OK);
  assert_int_equal(calls, 1);
  /* base64 of f8 f9 fa ... 0f: 24 bytes -> 32 characters, no ',' */
  assert_string_equal(x.out.data, "n,,n=user,r=+Pn6+/z9/v8AAQIDBAUGBwgJCgsMDQ4P");
  ex_free(&x);

  p.random = failing_random;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha256, &p, NULL), EPODE_ERR_SYS);
  assert_errmsg_has(&x, "random");
  assert_int_equal(x.out.len, 0);
  ex_free(&x);

  /* the default source (no random_fn): two nonces differ */
  p.random = NULL;
  ex y;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha256, &p, NULL), EPODE_OK);
  assert_int_equal(ex_start(&y, &epode__sasl_scram_sha256, &p, NULL), EPODE_OK);
  assert_int_equal(x.out.len, strlen("n,,n=user,r=") + 32);
  assert_string_not_equal(x.out.data, y.out.data);
  ex_free(&x);
  ex_free(&y);
}

/* ------------------------------------------------------------ names */

static void test_saslname_and_authzid(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  p.authcid = "a,b=c,";
  p.authzid = "admin=1@example.com,x";
  ex x;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, "abc"), EPODE_OK);
  assert_string_equal(x.out.data, "n,a=admin=3D1@example.com=2Cx,n=a=2Cb=3Dc=2C,r=abc");
  /* c= carries the gs2 header with the authzid */
  assert_int_equal(ex_step(&x, "r=abcd" SALT ",i=4096"), EPODE_OK);
  /* base64("n,a=admin=3D1@example.com=2Cx,") */
  assert_memory_equal(x.out.data, "c=bixhPWFkbWluPTNEMUBleGFtcGxlLmNvbT0yQ3gs,r=abcd,p=",
                      strlen("c=bixhPWFkbWluPTNEMUBleGFtcGxlLmNvbT0yQ3gs,r=abcd,p="));
  ex_free(&x);
}

static void test_saslprep_applied(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  p.authcid = "I\xc2\xadX"; /* I<SOFT HYPHEN>X -> IX */
  ex x;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, "n0nce"), EPODE_OK);
  assert_string_equal(x.out.data, "n,,n=IX,r=n0nce");
  ex_free(&x);
  /* the password is prepped too: "pencil" spelt with a soft hyphen gives
   * the RFC 5802 proof */
  params_init(&p);
  p.password = "pen\xc2\xad\x63il";
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_OK);
  assert_out(&x, RFC5802_FINAL);
  ex_free(&x);
  /* prohibited */
  params_init(&p);
  p.password = "bell\x07";
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, "n"), EPODE_ERR_INVAL);
  assert_errmsg_has(&x, "SASLprep rejected the password");
  assert_int_equal(x.out.len, 0);
  ex_free(&x);
  params_init(&p);
  p.authcid = "\xd8\xa7\x31"; /* bidi violation */
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, "n"), EPODE_ERR_INVAL);
  assert_errmsg_has(&x, "username");
  ex_free(&x);
  params_init(&p);
  p.authcid = "\xc2\xad"; /* maps to nothing */
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, "n"), EPODE_ERR_INVAL);
  assert_errmsg_has(&x, "empty");
  ex_free(&x);
  params_init(&p);
  p.password = NULL;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, "n"), EPODE_ERR_INVAL);
  assert_errmsg_has(&x, "no password");
  ex_free(&x);
  params_init(&p);
  p.authcid = NULL;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, "n"), EPODE_ERR_INVAL);
  assert_errmsg_has(&x, "no username");
  ex_free(&x);
}

/* ------------------------------------------------------------ channel binding */

static void cb_first(const epode__sasl_mech *m, const epode__sasl_params *p, epode_err want,
                     const char *want_first) {
  ex x;
  assert_int_equal(ex_start(&x, m, p, "abc"), want);
  if (want_first) assert_string_equal(x.out.data, want_first);
  if (want == EPODE_ERR_SASL_NOMECH) assert_errmsg_has(&x, "channel");
  ex_free(&x);
}

/* The c= value for a -PLUS exchange with our nonce "abc". */
static void cb_c(const epode__sasl_mech *m, const epode__sasl_params *p, const char *want_c) {
  ex x;
  assert_int_equal(ex_start(&x, m, p, "abc"), EPODE_OK);
  assert_int_equal(ex_step(&x, "r=abcd" SALT ",i=4096"), EPODE_OK);
  size_t n = strlen(want_c);
  assert_true(x.out.len > n);
  assert_memory_equal(x.out.data, want_c, n);
  assert_int_equal(x.out.data[n], ',');
  ex_free(&x);
}

static void test_plus_choice(void **st) {
  (void)st;
  const epode__sasl_mech *m = &epode__sasl_scram_sha256_plus;
  epode__sasl_params p;
  epode_tls_info t;
  params_init(&p);
  memset(&t, 0, sizeof t);
  p.tls = &t;
  p.server_offers_plus = 1;

  /* TLS 1.2, no server list: tls-unique */
  t.version = 0x0303;
  t.tls_unique = cb_unique;
  t.tls_unique_len = sizeof cb_unique;
  t.tls_exporter = cb_exporter;
  t.tls_exporter_len = sizeof cb_exporter;
  t.tls_server_end_point = cb_endpoint;
  t.tls_server_end_point_len = sizeof cb_endpoint;
  cb_first(m, &p, EPODE_OK, "p=tls-unique,,n=user,r=abc");
  /* base64("p=tls-unique,," 00 01 .. 0b) */
  cb_c(m, &p, "c=cD10bHMtdW5pcXVlLCwAAQIDBAUGBwgJCgs=");

  /* TLS 1.3, no server list: tls-exporter */
  t.version = 0x0304;
  cb_first(m, &p, EPODE_OK, "p=tls-exporter,,n=user,r=abc");
  /* base64("p=tls-exporter,," e0 .. ff) */
  cb_c(m, &p, "c=cD10bHMtZXhwb3J0ZXIsLODh4uPk5ebn6Onq6+zt7u/w8fLz9PX29/j5+vv8/f7/");

  /* TLS 1.3 without exporter data: nothing usable (never tls-unique on 1.3) */
  t.tls_exporter = NULL;
  t.tls_exporter_len = 0;
  cb_first(m, &p, EPODE_ERR_SASL_NOMECH, NULL);
  const char *const only_unique[] = {"tls-unique", NULL};
  p.server_cb_types = only_unique;
  cb_first(m, &p, EPODE_ERR_SASL_NOMECH, NULL);

  /* server list: our preference exporter > unique > end-point */
  t.version = 0x0303;
  t.tls_exporter = cb_exporter;
  t.tls_exporter_len = sizeof cb_exporter;
  const char *const all[] = {"tls-server-end-point", "tls-unique", "tls-exporter", NULL};
  p.server_cb_types = all;
  cb_first(m, &p, EPODE_OK, "p=tls-exporter,,n=user,r=abc");
  const char *const two[] = {"tls-server-end-point", "tls-unique", NULL};
  p.server_cb_types = two;
  cb_first(m, &p, EPODE_OK, "p=tls-unique,,n=user,r=abc");
  const char *const ep[] = {"tls-server-end-point", NULL};
  p.server_cb_types = ep;
  cb_first(m, &p, EPODE_OK, "p=tls-server-end-point,,n=user,r=abc");
  cb_c(m, &p, "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCwsRVBFUA=="); /* ..."EPEP" */
  /* the server lists exporter but we have no exporter data */
  const char *const exp_only[] = {"tls-exporter", NULL};
  p.server_cb_types = exp_only;
  t.tls_exporter = NULL;
  t.tls_exporter_len = 0;
  cb_first(m, &p, EPODE_ERR_SASL_NOMECH, NULL);
  /* the server lists end-point but we lack it */
  p.server_cb_types = ep;
  t.tls_server_end_point_len = 0;
  cb_first(m, &p, EPODE_ERR_SASL_NOMECH, NULL);
  /* an empty list: nothing */
  const char *const none[] = {NULL};
  p.server_cb_types = none;
  cb_first(m, &p, EPODE_ERR_SASL_NOMECH, NULL);
  /* no TLS */
  p.server_cb_types = NULL;
  p.tls = NULL;
  cb_first(m, &p, EPODE_ERR_SASL_NOMECH, NULL);
}

static void test_plus_exchange(void **st) {
  (void)st;
  epode__sasl_params p;
  epode_tls_info t;
  params_init(&p);
  memset(&t, 0, sizeof t);
  t.version = 0x0303;
  t.tls_unique = cb_unique;
  t.tls_unique_len = sizeof cb_unique;
  p.tls = &t;
  p.server_offers_plus = 1;
  ex x;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha256_plus, &p, RFC7677_NONCE), EPODE_OK);
  assert_string_equal(x.out.data, "p=tls-unique,,n=user,r=" RFC7677_NONCE);
  assert_int_equal(ex_step(&x, PLUS_SFIRST), EPODE_OK);
  assert_out(&x, PLUS_FINAL);
  assert_int_equal(ex_success(&x, PLUS_V), EPODE_OK);
  ex_free(&x);
}

static void test_gs2_flag(void **st) {
  (void)st;
  const epode__sasl_mech *m = &epode__sasl_scram_sha256;
  epode__sasl_params p;
  epode_tls_info t;
  params_init(&p);
  memset(&t, 0, sizeof t);
  t.version = 0x0304;
  t.tls_exporter = cb_exporter;
  t.tls_exporter_len = sizeof cb_exporter;
  /* no TLS: n */
  cb_first(m, &p, EPODE_OK, "n,,n=user,r=abc");
  cb_c(m, &p, "c=biws");
  /* TLS with binding data, server offered no -PLUS: y */
  p.tls = &t;
  p.server_offers_plus = 0;
  cb_first(m, &p, EPODE_OK, "y,,n=user,r=abc");
  cb_c(m, &p, "c=eSws");
  /* server offered -PLUS (the session chose not to use it): n */
  p.server_offers_plus = 1;
  cb_first(m, &p, EPODE_OK, "n,,n=user,r=abc");
  /* TLS but no usable binding data: n */
  p.server_offers_plus = 0;
  t.tls_exporter_len = 0;
  cb_first(m, &p, EPODE_OK, "n,,n=user,r=abc");
  /* y with an authzid */
  t.tls_exporter_len = sizeof cb_exporter;
  p.authzid = "boss";
  cb_first(m, &p, EPODE_OK, "y,a=boss,n=user,r=abc");
}

/* ------------------------------------------------------------ allocation */

static void test_alloc_failures(void **st) {
  (void)st;
  epode_tls_info t;
  memset(&t, 0, sizeof t);
  t.version = 0x0303;
  t.tls_unique = cb_unique;
  t.tls_unique_len = sizeof cb_unique;
  const epode__sasl_mech *mechs[] = {&epode__sasl_scram_sha256, &epode__sasl_scram_sha256_plus};
  for (size_t mi = 0; mi < 2; mi++) {
    int completed = 0;
    long n;
    for (n = 0; n < 200 && !completed; n++) {
      epode_test_failmem f;
      epode_test_failmem_init_budget(&f, n);
      epode__sasl_params p;
      params_init(&p);
      p.mem = &f.mem;
      p.authcid = "us\xc2\xad\x65r"; /* through libidn: "user" */
      p.authzid = "a,z";
      p.tls = &t;
      ex x;
      epode_err e = ex_start(&x, mechs[mi], &p, "abc");
      if (!e) e = ex_step(&x, "r=abcd" SALT ",i=4096");
      if (!e) e = ex_success(&x, "v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
      if (e == EPODE_ERR_SASL_SIGNATURE) {
        completed = 1; /* got all the way to the (deliberately wrong) v= */
      } else {
        assert_int_equal(e, EPODE_ERR_NOMEM);
        if (x.st) assert_non_null(x.m->errmsg(x.st));
      }
      ex_free(&x);
      assert_int_equal(f.live, 0);
    }
    assert_true(completed);
    assert_true(n > 3); /* several allocation points were exercised */
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rfc5802_sha1),
      cmocka_unit_test(test_rfc7677_sha256),
      cmocka_unit_test(test_sha512),
      cmocka_unit_test(test_mech_table),
      cmocka_unit_test(test_v_as_challenge),
      cmocka_unit_test(test_success_without_proof),
      cmocka_unit_test(test_server_error),
      cmocka_unit_test(test_wrong_order),
      cmocka_unit_test(test_hostile_server_first),
      cmocka_unit_test(test_iteration_bounds_from_params),
      cmocka_unit_test(test_huge_input),
      cmocka_unit_test(test_random_nonce),
      cmocka_unit_test(test_saslname_and_authzid),
      cmocka_unit_test(test_saslprep_applied),
      cmocka_unit_test(test_plus_choice),
      cmocka_unit_test(test_plus_exchange),
      cmocka_unit_test(test_gs2_flag),
      cmocka_unit_test(test_alloc_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
