/* DIGEST-MD5 (RFC 2831): the RFC's own example, XMPP vectors, the
 * challenge grammar, hostile servers, rspauth, allocation failures.
 *
 * Expected values other than the RFC 2831 section 4 example were computed
 * with an independent Python 3 implementation of RFC 2831 2.1.2.1
 * (hashlib.md5 over A1 = H(user:realm:pass):nonce:cnonce[:authzid],
 * A2 = "AUTHENTICATE:" digest-uri (":" digest-uri for rspauth), strings
 * encoded as ISO 8859-1 when representable, else UTF-8), written from the
 * RFC and checked to reproduce the section 4 example first (response
 * d388dad9..., rspauth ea40f603...), and pasted here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sasl/sasl.h"
#include "sasl/sasl_int.h"
#include "util/buf.h"

#include "failmem.h"

static const epode__sasl_mech *const M = &epode__sasl_digest_md5;

/* RFC 2831 section 4 (IMAP). */
#define RFC_CHALLENGE                                                                              \
  "realm=\"elwood.innosoft.com\",nonce=\"OA6MG9tEQGm2hh\",qop=\"auth\",algorithm=md5-sess,"        \
  "charset=utf-8"
#define RFC_RESPONSE                                                                               \
  "charset=utf-8,username=\"chris\",realm=\"elwood.innosoft.com\",nonce=\"OA6MG9tEQGm2hh\","       \
  "nc=00000001,cnonce=\"OA6MHXh6VqTrRk\",digest-uri=\"imap/elwood.innosoft.com\","                 \
  "response=d388dad90d4bbd760a152321f2143af7,qop=auth"
#define RFC_RSPAUTH "rspauth=ea40f60335c427b5527b84dbabcdfffd"

/* XMPP (Python-derived, see the top comment). */
#define CNONCE "Y2xpZW50bm9uY2UxMjM0NTY3"
#define X_CHALLENGE                                                                                \
  "realm=\"example.com\",nonce=\"abcDEF0123456789\",qop=\"auth\",charset=utf-8,algorithm=md5-sess"
#define X_TAIL                                                                                     \
  ",nonce=\"abcDEF0123456789\",nc=00000001,cnonce=\"" CNONCE "\",digest-uri=\"xmpp/example.com\","
#define X_RESPONSE                                                                                 \
  "charset=utf-8,username=\"juliet\",realm=\"example.com\"" X_TAIL                                 \
  "response=230dbc169f94a8250e33a840f19896c9,qop=auth"
#define X_RSPAUTH "rspauth=dd5b098eb9647cb1eb7a517eb18c49b1"
#define X_RESPONSE_AUTHZ                                                                           \
  "charset=utf-8,username=\"juliet\",realm=\"example.com\"" X_TAIL                                 \
  "response=8bae7dacb77f4d196abf82d107073017,qop=auth,authzid=\"romeo@example.com\""
#define X_RSPAUTH_AUTHZ "rspauth=4302925297adb1f50e60e9e8e31d1c2f"

static void params_init(epode__sasl_params *p) {
  memset(p, 0, sizeof *p);
  p->authcid = "juliet";
  p->password = "r0m30myr0m30";
  p->domain = "example.com";
}

static void params_rfc(epode__sasl_params *p) {
  memset(p, 0, sizeof *p);
  p->authcid = "chris";
  p->password = "secret";
  p->domain = "elwood.innosoft.com";
}

typedef struct ex {
  void *st;
  epode__buf out;
} ex;

/* start() through the hook (service, cnonce) or, with service NULL, the
 * real start(). The server speaks first: no initial response. */
static epode_err ex_start_with(ex *x, const epode__sasl_params *p, const char *service,
                               const char *cnonce) {
  x->st = NULL;
  epode__buf_init(&x->out, p->mem, 0);
  int has = -1;
  epode_err e = service ? epode__digest_md5_start_with(&x->st, p, service, cnonce, &x->out, &has)
                        : M->start(&x->st, p, &x->out, &has);
  assert_int_equal(has, 0);
  assert_int_equal(x->out.len, 0);
  return e;
}

static epode_err ex_start(ex *x, const epode__sasl_params *p) {
  return ex_start_with(x, p, "xmpp", CNONCE);
}

static epode_err ex_step_n(ex *x, const char *in, size_t n) {
  epode__buf_reset(&x->out);
  return M->step(x->st, (const unsigned char *)in, n, &x->out);
}

static epode_err ex_step(ex *x, const char *in) { return ex_step_n(x, in, in ? strlen(in) : 0); }

static epode_err ex_success(ex *x, const char *in) {
  return M->success(x->st, (const unsigned char *)in, in ? strlen(in) : 0);
}

static void ex_free(ex *x) {
  M->free(x->st);
  epode__buf_free(&x->out);
}

static void assert_errmsg_has(ex *x, const char *needle) {
  const char *m = M->errmsg(x->st);
  assert_non_null(m);
  if (!strstr(m, needle)) fail_msg("errmsg \"%s\" lacks \"%s\"", m, needle);
}

static void assert_out_n(ex *x, const char *want, size_t n) {
  if (x->out.len != n || memcmp(x->out.data, want, n) != 0)
    fail_msg("response\n  \"%.*s\"\nwant\n  \"%.*s\"", (int)x->out.len,
             x->out.data ? x->out.data : "", (int)n, want);
}
#define assert_out(x, lit) assert_out_n(x, lit, sizeof(lit) - 1)

/* A full exchange: challenge -> want; rspauth with success(). */
static void exchange(const epode__sasl_params *p, const char *challenge, const char *want,
                     size_t want_len, const char *rspauth) {
  ex x;
  assert_int_equal(ex_start(&x, p), EPODE_OK);
  assert_null(M->errmsg(x.st));
  assert_int_equal(ex_step(&x, challenge), EPODE_OK);
  assert_out_n(&x, want, want_len);
  assert_null(M->errmsg(x.st));
  assert_int_equal(ex_success(&x, rspauth), EPODE_OK);
  assert_null(M->errmsg(x.st));
  ex_free(&x);
}
#define EXCHANGE(p, ch, lit, rsp) exchange(p, ch, lit, sizeof(lit) - 1, rsp)

/* The challenge fails with SASL_PROTOCOL (or `want`), says `msg`, leaves
 * the output alone, and the exchange stays failed. */
static void challenge_fails_n(const epode__sasl_params *p, const char *ch, size_t n, epode_err want,
                              const char *msg) {
  ex x;
  assert_int_equal(ex_start(&x, p), EPODE_OK);
  assert_int_equal(epode__buf_append_str(&x.out, "keep"), EPODE_OK);
  assert_int_equal(M->step(x.st, (const unsigned char *)ch, n, &x.out), want);
  assert_errmsg_has(&x, msg);
  assert_string_equal(x.out.data, "keep");
  assert_int_equal(ex_step(&x, X_CHALLENGE), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "failed");
  assert_int_equal(ex_success(&x, X_RSPAUTH), EPODE_ERR_SASL_PROTOCOL);
  ex_free(&x);
}

static void challenge_fails(const char *ch, const char *msg) {
  epode__sasl_params p;
  params_init(&p);
  challenge_fails_n(&p, ch, strlen(ch), EPODE_ERR_SASL_PROTOCOL, msg);
}

/* ------------------------------------------------------------ vectors */

static void test_descriptor(void **st) {
  (void)st;
  assert_string_equal(M->name, "DIGEST-MD5");
  assert_int_equal(M->priority, 30);
  assert_int_equal(M->flags, 0);
}

static void test_rfc2831_example(void **st) {
  (void)st;
  epode__sasl_params p;
  params_rfc(&p);
  ex x;
  /* rspauth in <success/> */
  assert_int_equal(ex_start_with(&x, &p, "imap", "OA6MHXh6VqTrRk"), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC_CHALLENGE), EPODE_OK);
  assert_out(&x, RFC_RESPONSE);
  assert_int_equal(ex_success(&x, RFC_RSPAUTH), EPODE_OK);
  assert_null(M->errmsg(x.st));
  ex_free(&x);
  /* rspauth as a challenge, answered empty, then an empty <success/> */
  assert_int_equal(ex_start_with(&x, &p, "imap", "OA6MHXh6VqTrRk"), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC_CHALLENGE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC_RSPAUTH), EPODE_OK);
  assert_int_equal(x.out.len, 0);
  assert_int_equal(ex_success(&x, NULL), EPODE_OK);
  ex_free(&x);
  /* upper-case hex, and the RFC's one-byte-off rspauth fails */
  assert_int_equal(ex_start_with(&x, &p, "imap", "OA6MHXh6VqTrRk"), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC_CHALLENGE), EPODE_OK);
  assert_int_equal(ex_success(&x, "rspauth=EA40F60335C427B5527B84DBABCDFFFD"), EPODE_OK);
  ex_free(&x);
  assert_int_equal(ex_start_with(&x, &p, "imap", "OA6MHXh6VqTrRk"), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC_CHALLENGE), EPODE_OK);
  assert_int_equal(ex_success(&x, "rspauth=ea40f60335c427b5527b84dbabcdfffe"),
                   EPODE_ERR_SASL_SIGNATURE);
  assert_errmsg_has(&x, "does not match");
  ex_free(&x);
}

static void test_xmpp_vectors(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  EXCHANGE(&p, X_CHALLENGE, X_RESPONSE, X_RSPAUTH);
  /* an authzid enters A1 and the response */
  p.authzid = "romeo@example.com";
  EXCHANGE(&p, X_CHALLENGE, X_RESPONSE_AUTHZ, X_RSPAUTH_AUTHZ);
  /* an empty authzid is none */
  p.authzid = "";
  EXCHANGE(&p, X_CHALLENGE, X_RESPONSE, X_RSPAUTH);
  /* no realm from the server: the domain is used, same digest */
  params_init(&p);
  EXCHANGE(&p, "nonce=\"abcDEF0123456789\",qop=\"auth\",charset=utf-8,algorithm=md5-sess",
           X_RESPONSE, X_RSPAUTH);
  EXCHANGE(&p, "realm=\"\",nonce=\"abcDEF0123456789\",charset=utf-8,algorithm=md5-sess", X_RESPONSE,
           X_RSPAUTH);
  /* no charset: same digest for ASCII, no charset directive sent */
  EXCHANGE(&p, "realm=\"example.com\",nonce=\"abcDEF0123456789\",qop=\"auth\",algorithm=md5-sess",
           "username=\"juliet\",realm=\"example.com\"" X_TAIL
           "response=230dbc169f94a8250e33a840f19896c9,qop=auth",
           X_RSPAUTH);
  /* no qop: it defaults to auth */
  EXCHANGE(&p, "realm=\"example.com\",nonce=\"abcDEF0123456789\",charset=utf-8,algorithm=md5-sess",
           X_RESPONSE, X_RSPAUTH);
}

/* ------------------------------------------------------------ charsets */

static void test_charsets(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  /* ISO 8859-1 characters are hashed as ISO 8859-1 with or without
   * charset=utf-8; on the wire the username follows the charset. */
  p.authcid = "j\xc3\xbcliet"; /* jüliet */
  p.password = "p\xc3\xa4ss";  /* päss */
  EXCHANGE(&p, X_CHALLENGE,
           "charset=utf-8,username=\"j\xc3\xbcliet\",realm=\"example.com\"" X_TAIL
           "response=bfcf246a6d206d03061963883f73f128,qop=auth",
           "rspauth=1f0965101a35f80b7cc9036cdd89efb7");
  EXCHANGE(&p, "realm=\"example.com\",nonce=\"abcDEF0123456789\",algorithm=md5-sess",
           "username=\"j\xfcliet\",realm=\"example.com\"" X_TAIL
           "response=bfcf246a6d206d03061963883f73f128,qop=auth",
           "rspauth=1f0965101a35f80b7cc9036cdd89efb7");

  /* beyond ISO 8859-1: UTF-8 under charset=utf-8, refused without */
  params_init(&p);
  p.password = "\xe2\x98\xba\xc3\xa4"; /* U+263A U+00E4 */
  EXCHANGE(&p, X_CHALLENGE,
           "charset=utf-8,username=\"juliet\",realm=\"example.com\"" X_TAIL
           "response=21a84b21b0d31d8fba5c26a25d7ffa56,qop=auth",
           "rspauth=e88e6454ae41e41dca2cb9c6e9270249");
  challenge_fails_n(&p, "nonce=\"n\",algorithm=md5-sess", 28, EPODE_ERR_INVAL,
                    "password has characters outside ISO 8859-1");
  params_init(&p);
  p.authcid = "\xe2\x98\xba";
  challenge_fails_n(&p, "nonce=\"n\",algorithm=md5-sess", 28, EPODE_ERR_INVAL, "username");
  params_init(&p);
  p.domain = "\xe2\x98\xba.example";
  challenge_fails_n(&p, "nonce=\"n\",algorithm=md5-sess", 28, EPODE_ERR_INVAL, "domain");

  /* a server realm under charset=utf-8 is UTF-8 text: converted for the
   * hash, echoed as sent */
  params_init(&p);
  EXCHANGE(&p,
           "realm=\"caf\xc3\xa9.example\",nonce=\"abcDEF0123456789\",charset=utf-8,"
           "algorithm=md5-sess",
           "charset=utf-8,username=\"juliet\",realm=\"caf\xc3\xa9.example\"" X_TAIL
           "response=0a6e68313b91c4ea0fed3fe73668d397,qop=auth",
           "rspauth=4af18cd087b534e544b1aaef6695d554");
  /* without charset it is ISO 8859-1 already: hashed and echoed raw, the
   * same digest */
  EXCHANGE(&p, "realm=\"caf\xe9.example\",nonce=\"abcDEF0123456789\",algorithm=md5-sess",
           "username=\"juliet\",realm=\"caf\xe9.example\"" X_TAIL
           "response=0a6e68313b91c4ea0fed3fe73668d397,qop=auth",
           "rspauth=4af18cd087b534e544b1aaef6695d554");
}

/* ------------------------------------------------------------ grammar */

static void test_grammar_tolerance(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  /* white space around commas and '=', empty list elements, upper-case
   * names and values, a quoted algorithm, an unquoted nonce, a second
   * realm and unknown directives (ignored) */
  EXCHANGE(&p,
           " ,realm = \"example.com\" ,\r\n\t realm=\"other.example\",, NONCE=abcDEF0123456789 ,"
           "Qop=\"auth-int, AUTH\",stale=true,maxbuf=65536,cipher=\"rc4\",x-ext=\"a,b\\\"c\","
           "Algorithm = \"MD5-SESS\",charset=UTF-8, ",
           X_RESPONSE, X_RSPAUTH);
  /* quoted-pairs: the nonce and username are unescaped for the hash and
   * escaped again on the wire */
  p.authcid = "a\"b\\c";
  p.password = "pw";
  EXCHANGE(&p, "nonce=\"n\\\"o\\\\n\\ce\",realm=\"example.com\",charset=utf-8,algorithm=md5-sess",
           "charset=utf-8,username=\"a\\\"b\\\\c\",realm=\"example.com\",nonce=\"n\\\"o\\\\nce\","
           "nc=00000001,cnonce=\"" CNONCE "\",digest-uri=\"xmpp/example.com\","
           "response=5bbec09278ccad44015a612edf976081,qop=auth",
           "rspauth=3ea44f1aad2ea75ee72c3b5debdd6d76");
  /* rspauth may be quoted, with other directives around it */
  params_init(&p);
  EXCHANGE(&p, X_CHALLENGE, X_RESPONSE, "x=1, rspauth=\"dd5b098eb9647cb1eb7a517eb18c49b1\" ,");
}

static void test_hostile_challenges(void **st) {
  (void)st;
  challenge_fails("realm=\"example.com\",qop=\"auth\",algorithm=md5-sess", "no nonce");
  challenge_fails("nonce=\"a\",nonce=\"a\",algorithm=md5-sess", "more than one nonce");
  challenge_fails("nonce=\"\",algorithm=md5-sess", "empty nonce");
  challenge_fails("nonce=\"abc,algorithm=md5-sess", "not terminated");
  challenge_fails("nonce=\"abc\\", "not terminated");
  challenge_fails("nonce=\"abc\",algorithm=md5-sess,realm=\"x", "not terminated");
  challenge_fails("nonce=\"abc\",qop=\"auth-int,auth-conf\",algorithm=md5-sess",
                  "offers qop \"auth-int,auth-conf\" but not \"auth\"");
  challenge_fails("nonce=\"abc\",qop=\"auth-int\",algorithm=md5-sess", "only qop=auth");
  challenge_fails("nonce=\"abc\",qop=\"authx\",algorithm=md5-sess", "not \"auth\"");
  challenge_fails("nonce=\"abc\",qop=\" , \",algorithm=md5-sess", "empty qop list");
  challenge_fails("nonce=\"abc\",qop=\"auth\",qop=\"auth\",algorithm=md5-sess",
                  "more than one qop");
  challenge_fails("nonce=\"abc\",qop=\"auth\"", "no algorithm");
  challenge_fails("nonce=\"abc\",algorithm=md5", "algorithm \"md5\", not md5-sess");
  challenge_fails("nonce=\"abc\",algorithm=md5-sess,algorithm=md5-sess", "more than one algorithm");
  challenge_fails("nonce=\"abc\",algorithm=md5-sess,charset=iso-8859-1", "charset \"iso-8859-1\"");
  challenge_fails("nonce=\"abc\",algorithm=md5-sess,charset=utf-8,charset=utf-8",
                  "more than one charset");
  challenge_fails("nonce=\"abc\",algorithm=md5-sess,stale=true,stale=true", "more than one stale");
  challenge_fails("nonce=\"abc\",algorithm=md5-sess,maxbuf=1,maxbuf=2", "more than one maxbuf");
  challenge_fails("hello", "has no '='");
  challenge_fails("=abc", "expected a directive name");
  challenge_fails("nonce=\"abc\"x,algorithm=md5-sess",
                  "unexpected data after the value of \"nonce\"");
  challenge_fails("nonce=abc def,algorithm=md5-sess", "unexpected data");
  challenge_fails("nonce=,algorithm=md5-sess", "\"nonce\" has no value");
  challenge_fails("nonce=\"a\x01\",algorithm=md5-sess", "control character");
  challenge_fails("", "empty challenge");
  /* a NUL byte */
  epode__sasl_params p;
  params_init(&p);
  static const char nul[] = "nonce=\"a\0b\",algorithm=md5-sess";
  challenge_fails_n(&p, nul, sizeof nul - 1, EPODE_ERR_SASL_PROTOCOL, "NUL");
  /* server values in messages are sanitised and bounded */
  challenge_fails("nonce=\"abc\",algorithm=\"\x1b[31mEVIL"
                  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
                  "control character");
  char ch[128], want[128];
  size_t n = (size_t)snprintf(ch, sizeof ch, "nonce=\"abc\",algorithm=\"\xff");
  memset(ch + n, 'a', 50);
  strcpy(ch + n + 50, "\"");
  n = (size_t)snprintf(want, sizeof want, "algorithm \"?");
  memset(want + n, 'a', 39);
  strcpy(want + n + 39, "...\", not md5-sess"); /* 40 characters shown, then an ellipsis */
  challenge_fails(ch, want);
}

static void test_size_limits(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  const size_t big = 1024 * 1024;
  char *msg = malloc(big + 1);
  assert_non_null(msg);

  /* 1 MB: refused before parsing */
  memset(msg, 'A', big);
  challenge_fails_n(&p, msg, big, EPODE_ERR_SASL_PROTOCOL, "1048576 bytes; RFC 2831 limits");
  /* 2047 bytes (a long valid nonce) is fine, 2048 is not */
  const char *pre = "algorithm=md5-sess,nonce=\"";
  size_t pl = strlen(pre);
  memcpy(msg, pre, pl);
  memset(msg + pl, 'n', 2047 - pl - 1);
  msg[2046] = '"';
  ex x;
  assert_int_equal(ex_start(&x, &p), EPODE_OK);
  assert_int_equal(ex_step_n(&x, msg, 2047), EPODE_OK);
  assert_true(x.out.len > 2000);
  ex_free(&x);
  msg[2046] = 'n';
  msg[2047] = '"';
  challenge_fails_n(&p, msg, 2048, EPODE_ERR_SASL_PROTOCOL, "2048 bytes");

  /* a response over RFC 2831's 4096 bytes (a long username) */
  memset(msg, 'u', 4100);
  msg[4100] = '\0';
  p.authcid = msg;
  assert_int_equal(ex_start(&x, &p), EPODE_OK);
  assert_int_equal(epode__buf_append_str(&x.out, "keep"), EPODE_OK);
  assert_int_equal(M->step(x.st, (const unsigned char *)X_CHALLENGE, strlen(X_CHALLENGE), &x.out),
                   EPODE_ERR_LIMIT);
  assert_errmsg_has(&x, "less than 4096");
  assert_string_equal(x.out.data, "keep");
  ex_free(&x);

  /* the output buffer's own cap */
  params_init(&p);
  assert_int_equal(ex_start(&x, &p), EPODE_OK);
  x.out.max = 64;
  assert_int_equal(ex_step(&x, X_CHALLENGE), EPODE_ERR_LIMIT);
  assert_errmsg_has(&x, "output limit");
  assert_int_equal(x.out.len, 0);
  ex_free(&x);

  /* 1 MB as the rspauth challenge and in <success/> */
  memset(msg, 'A', big);
  assert_int_equal(ex_start(&x, &p), EPODE_OK);
  assert_int_equal(ex_step(&x, X_CHALLENGE), EPODE_OK);
  assert_int_equal(ex_step_n(&x, msg, big), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "limits");
  ex_free(&x);
  assert_int_equal(ex_start(&x, &p), EPODE_OK);
  assert_int_equal(ex_step(&x, X_CHALLENGE), EPODE_OK);
  assert_int_equal(M->success(x.st, (const unsigned char *)msg, big), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "limits");
  ex_free(&x);
  free(msg);
}

/* ------------------------------------------------------------ rspauth */

static void test_rspauth(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  ex x;
#define AFTER_RESPONSE()                                                                           \
  assert_int_equal(ex_start(&x, &p), EPODE_OK);                                                    \
  assert_int_equal(ex_step(&x, X_CHALLENGE), EPODE_OK)

  /* success without any rspauth */
  AFTER_RESPONSE();
  assert_int_equal(ex_success(&x, NULL), EPODE_ERR_SASL_SIGNATURE);
  assert_errmsg_has(&x, "server did not prove itself");
  assert_int_equal(ex_success(&x, X_RSPAUTH), EPODE_ERR_SASL_PROTOCOL);
  ex_free(&x);
  /* success before the challenge */
  assert_int_equal(ex_start(&x, &p), EPODE_OK);
  assert_int_equal(ex_success(&x, X_RSPAUTH), EPODE_ERR_SASL_SIGNATURE);
  assert_errmsg_has(&x, "did not prove itself");
  ex_free(&x);
  /* wrong rspauth, in <success/> and as a challenge */
  AFTER_RESPONSE();
  assert_int_equal(ex_success(&x, "rspauth=dd5b098eb9647cb1eb7a517eb18c49b0"),
                   EPODE_ERR_SASL_SIGNATURE);
  assert_errmsg_has(&x, "does not match");
  ex_free(&x);
  AFTER_RESPONSE();
  assert_int_equal(ex_step(&x, "rspauth=00000000000000000000000000000000"),
                   EPODE_ERR_SASL_SIGNATURE);
  assert_int_equal(ex_success(&x, NULL), EPODE_ERR_SASL_PROTOCOL);
  ex_free(&x);
  /* the rspauth of another exchange (RFC example) */
  AFTER_RESPONSE();
  assert_int_equal(ex_success(&x, RFC_RSPAUTH), EPODE_ERR_SASL_SIGNATURE);
  ex_free(&x);
  /* malformed */
  static const char *const bad[] = {
      "rspauth=dd5b098eb9647cb1eb7a517eb18c49b",   /* 31 digits */
      "rspauth=dd5b098eb9647cb1eb7a517eb18c49b1a", /* 33 */
      "rspauth=gd5b098eb9647cb1eb7a517eb18c49b1",  /* not hex */
      "rspauth=\"\"",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    AFTER_RESPONSE();
    assert_int_equal(ex_success(&x, bad[i]), EPODE_ERR_SASL_PROTOCOL);
    assert_errmsg_has(&x, "32 hexadecimal");
    ex_free(&x);
  }
  AFTER_RESPONSE();
  assert_int_equal(ex_success(&x, X_RSPAUTH "," X_RSPAUTH), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "more than one rspauth");
  ex_free(&x);
  /* a second digest-challenge instead of rspauth */
  AFTER_RESPONSE();
  assert_int_equal(ex_step(&x, X_CHALLENGE), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "expected rspauth");
  ex_free(&x);
  AFTER_RESPONSE();
  assert_int_equal(ex_step(&x, ""), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "got nothing");
  ex_free(&x);
  AFTER_RESPONSE();
  assert_int_equal(ex_step(&x, "rspauth=\"dd5b"), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "not terminated");
  ex_free(&x);

  /* verified by challenge: further challenges refused; a repeated
   * rspauth in <success/> must still be right */
  AFTER_RESPONSE();
  assert_int_equal(ex_step(&x, X_RSPAUTH), EPODE_OK);
  assert_int_equal(x.out.len, 0);
  assert_int_equal(ex_step(&x, X_RSPAUTH), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "completed");
  ex_free(&x);
  AFTER_RESPONSE();
  assert_int_equal(ex_step(&x, X_RSPAUTH), EPODE_OK);
  assert_int_equal(ex_success(&x, X_RSPAUTH), EPODE_OK);
  ex_free(&x);
  AFTER_RESPONSE();
  assert_int_equal(ex_step(&x, X_RSPAUTH), EPODE_OK);
  assert_int_equal(ex_success(&x, "rspauth=dd5b098eb9647cb1eb7a517eb18c49b0"),
                   EPODE_ERR_SASL_SIGNATURE);
  ex_free(&x);

  /* after completion everything is refused */
  AFTER_RESPONSE();
  assert_int_equal(ex_success(&x, X_RSPAUTH), EPODE_OK);
  assert_int_equal(ex_success(&x, X_RSPAUTH), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "completed");
  ex_free(&x);
  AFTER_RESPONSE();
  assert_int_equal(ex_success(&x, X_RSPAUTH), EPODE_OK);
  assert_int_equal(epode__buf_append_str(&x.out, "keep"), EPODE_OK);
  assert_int_equal(M->step(x.st, (const unsigned char *)X_CHALLENGE, strlen(X_CHALLENGE), &x.out),
                   EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "challenge after the exchange completed");
  ex_free(&x);
#undef AFTER_RESPONSE
}

/* ------------------------------------------------------------ start */

static void start_fails(const epode__sasl_params *p, epode_err want, const char *msg) {
  ex x;
  assert_int_equal(ex_start(&x, p), want);
  assert_non_null(x.st);
  assert_errmsg_has(&x, msg);
  assert_int_equal(ex_step(&x, X_CHALLENGE), EPODE_ERR_SASL_PROTOCOL);
  assert_int_equal(x.out.len, 0);
  assert_int_equal(ex_success(&x, NULL), EPODE_ERR_SASL_PROTOCOL);
  ex_free(&x);
}

static void test_start(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  p.authcid = NULL;
  start_fails(&p, EPODE_ERR_INVAL, "no username");
  p.authcid = "";
  start_fails(&p, EPODE_ERR_INVAL, "no username");
  params_init(&p);
  p.password = NULL;
  start_fails(&p, EPODE_ERR_INVAL, "no password");
  p.password = "";
  start_fails(&p, EPODE_ERR_INVAL, "password is empty");
  params_init(&p);
  p.domain = NULL;
  start_fails(&p, EPODE_ERR_INVAL, "no domain");
  params_init(&p);
  p.password = "\xc3\x28"; /* invalid UTF-8 */
  start_fails(&p, EPODE_ERR_INVAL, "password is not valid UTF-8");
  params_init(&p);
  p.authcid = "\xc0\xaf"; /* overlong '/' */
  start_fails(&p, EPODE_ERR_INVAL, "username is not valid UTF-8");
  params_init(&p);
  p.authzid = "\xed\xa0\x80"; /* a surrogate */
  start_fails(&p, EPODE_ERR_INVAL, "authzid is not valid UTF-8");
  params_init(&p);
  p.domain = "ex\xe2\x82";
  start_fails(&p, EPODE_ERR_INVAL, "domain is not valid UTF-8");

  /* the hook refuses bad values without creating state */
  params_init(&p);
  void *s = (void *)&p;
  int has = -1;
  epode__buf out;
  epode__buf_init(&out, NULL, 0);
  assert_int_equal(epode__digest_md5_start_with(&s, &p, "im/ap", CNONCE, &out, &has),
                   EPODE_ERR_INVAL);
  assert_null(s);
  assert_int_equal(has, 0);
  assert_int_equal(epode__digest_md5_start_with(&s, &p, "", CNONCE, &out, &has), EPODE_ERR_INVAL);
  assert_int_equal(epode__digest_md5_start_with(&s, &p, "xmpp", "a\"b", &out, &has),
                   EPODE_ERR_INVAL);
  assert_int_equal(epode__digest_md5_start_with(&s, &p, "xmpp", NULL, &out, &has), EPODE_ERR_INVAL);
  assert_null(s);
  assert_int_equal(out.len, 0);
}

/* ------------------------------------------------------------ cnonce */

static int fixed_random(void *ud, unsigned char *buf, size_t len) {
  int *calls = ud;
  ++*calls;
  for (size_t i = 0; i < len; i++)
    buf[i] = (unsigned char)(0xF8 + i);
  return 0;
}

static int failing_random(void *ud, unsigned char *buf, size_t len) { return -1; }

static void test_cnonce(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  int calls = 0;
  p.random = fixed_random;
  p.random_ud = &calls;
  ex x;
  assert_int_equal(ex_start_with(&x, &p, NULL, NULL), EPODE_OK);
  assert_int_equal(calls, 1);
  assert_int_equal(ex_step(&x, X_CHALLENGE), EPODE_OK);
  /* base64 of f8 f9 .. 0f: 24 bytes, 32 characters */
  assert_non_null(strstr(x.out.data, ",cnonce=\"+Pn6+/z9/v8AAQIDBAUGBwgJCgsMDQ4P\","));
  assert_non_null(strstr(x.out.data, ",digest-uri=\"xmpp/example.com\","));
  ex_free(&x);

  p.random = failing_random;
  assert_int_equal(ex_start_with(&x, &p, NULL, NULL), EPODE_ERR_SYS);
  assert_errmsg_has(&x, "random");
  ex_free(&x);

  /* the default source: two cnonces differ */
  p.random = NULL;
  ex y;
  assert_int_equal(ex_start_with(&x, &p, NULL, NULL), EPODE_OK);
  assert_int_equal(ex_start_with(&y, &p, NULL, NULL), EPODE_OK);
  assert_int_equal(ex_step(&x, X_CHALLENGE), EPODE_OK);
  assert_int_equal(ex_step(&y, X_CHALLENGE), EPODE_OK);
  const char *cx = strstr(x.out.data, "cnonce=\""), *cy = strstr(y.out.data, "cnonce=\"");
  assert_non_null(cx);
  assert_non_null(cy);
  assert_int_equal(strchr(cx + 8, '"') - (cx + 8), 32);
  assert_memory_not_equal(cx, cy, 8 + 32);
  ex_free(&x);
  ex_free(&y);
}

/* ------------------------------------------------------------ allocation */

static void test_alloc_failures(void **st) {
  (void)st;
  int completed = 0;
  long n;
  for (n = 0; n < 200 && !completed; n++) {
    epode_test_failmem f;
    epode_test_failmem_init_budget(&f, n);
    epode__sasl_params p;
    params_init(&p);
    p.mem = &f.mem;
    p.authzid = "romeo@example.com";
    ex x;
    epode_err e = ex_start(&x, &p);
    if (!e) e = ex_step(&x, X_CHALLENGE);
    if (!e) {
      assert_out(&x, X_RESPONSE_AUTHZ);
      e = ex_success(&x, X_RSPAUTH_AUTHZ);
    }
    if (!e) {
      completed = 1;
    } else {
      assert_int_equal(e, EPODE_ERR_NOMEM);
      if (x.st) assert_errmsg_has(&x, "out of memory");
      assert_int_equal(x.out.len, 0);
    }
    ex_free(&x);
    assert_int_equal(f.live, 0);
  }
  assert_true(completed);
  assert_true(n > 5); /* state, four copies and the response buffer */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_descriptor),
      cmocka_unit_test(test_rfc2831_example),
      cmocka_unit_test(test_xmpp_vectors),
      cmocka_unit_test(test_charsets),
      cmocka_unit_test(test_grammar_tolerance),
      cmocka_unit_test(test_hostile_challenges),
      cmocka_unit_test(test_size_limits),
      cmocka_unit_test(test_rspauth),
      cmocka_unit_test(test_start),
      cmocka_unit_test(test_cnonce),
      cmocka_unit_test(test_alloc_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
