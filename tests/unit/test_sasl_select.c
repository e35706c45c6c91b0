/* The SASL framework as the session applies it: registry, allow-list,
 * priorities, policy, custom mechanisms, fallback only when asked. Each
 * case plays the server's side by hand and looks at the <auth/> the session
 * sends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "epode/epode.h"
#include "epode/sys/sasl.h"

#define HDR_S                                                                                 \
  "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "                                \
  "xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='localhost' version='1.0'>"

static epode_config *base_cfg(const char *jid) {
  epode_config *cfg;
  assert_int_equal(epode_config_new(&cfg, NULL), EPODE_OK);
  assert_int_equal(epode_config_set_jid(cfg, jid), EPODE_OK);
  return cfg;
}

/* Starts a session (direct TLS unless plaintext), offers `mechs`, and
 * returns the <auth …> the client sent (caller frees), or NULL if none. */
static char *offer(epode_session **out, const epode_config *cfg, const char *mechs, int tls) {
  epode_session *s;
  assert_int_equal(epode_session_new(&s, cfg), EPODE_OK);
  unsigned char exporter[32] = {0};
  epode_tls_info info = {0x0304, NULL, 0, exporter, sizeof exporter, NULL, 0};
  assert_int_equal(epode_session_start(s, 0, tls ? &info : NULL), EPODE_OK);
  size_t n;
  epode_session_peek_output(s, &n);
  epode_session_consume_output(s, n);
  epode_session_recv(s, HDR_S, strlen(HDR_S), 0);
  char feat[2048];
  snprintf(feat, sizeof feat,
           "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s"
           "</mechanisms></stream:features>",
           mechs);
  epode_session_recv(s, feat, strlen(feat), 0);
  const char *p = epode_session_peek_output(s, &n);
  char *auth = NULL;
  if (n && strstr(p, "<auth")) auth = strndup(p, n);
  epode_session_consume_output(s, n);
  *out = s;
  return auth;
}

static void expect_mech(const char *auth, const char *mech) {
  char want[64];
  snprintf(want, sizeof want, "mechanism='%s'", mech);
  if (!auth || !strstr(auth, want)) fail_msg("expected %s, got %s", want, auth ? auth : "(none)");
}

#define ALL                                                                                   \
  "<mechanism>PLAIN</mechanism><mechanism>SCRAM-SHA-1</mechanism>"                            \
  "<mechanism>SCRAM-SHA-256</mechanism><mechanism>DIGEST-MD5</mechanism>"                     \
  "<mechanism>ANONYMOUS</mechanism><mechanism>EXTERNAL</mechanism>"                           \
  "<mechanism>OAUTHBEARER</mechanism>"

static void test_priority_order(void **state) {
  epode_config *cfg = base_cfg("alice@localhost");
  epode_config_set_password(cfg, "pw");
  epode_session *s;
  char *auth = offer(&s, cfg, ALL, 1);
  expect_mech(auth, "SCRAM-SHA-256"); /* no cert, no token: SCRAM wins */
  free(auth);
  epode_session_free(s);
  epode_config_free(cfg);
}

static void test_allow_list(void **state) {
  epode_config *cfg = base_cfg("alice@localhost");
  epode_config_set_password(cfg, "pw");
  assert_int_equal(epode_config_set_mechanisms(cfg, "PLAIN, SCRAM-SHA-1"), EPODE_OK);
  epode_session *s;
  char *auth = offer(&s, cfg, ALL, 1);
  expect_mech(auth, "SCRAM-SHA-1");
  free(auth);
  epode_session_free(s);
  /* Nothing allowed is offered: the detail says why each was refused. */
  assert_int_equal(epode_config_set_mechanisms(cfg, "SCRAM-SHA-512"), EPODE_OK);
  auth = offer(&s, cfg, "<mechanism>PLAIN</mechanism>", 1);
  assert_null(auth);
  const epode_failure *f = epode_session_failure(s);
  assert_int_equal(f->err, EPODE_ERR_SASL_NOMECH);
  assert_non_null(strstr(f->detail, "PLAIN (not in the allow-list)"));
  epode_session_free(s);
  /* Malformed lists are refused. */
  assert_int_equal(epode_config_set_mechanisms(cfg, "PLAIN,,SCRAM-SHA-1"), EPODE_ERR_INVAL);
  assert_int_equal(epode_config_set_mechanisms(cfg, "PLAIN;DROP"), EPODE_ERR_INVAL);
  assert_int_equal(epode_config_set_mechanisms(cfg, "ABCDEFGHIJKLMNOPQRSTU"), EPODE_ERR_INVAL);
  assert_int_equal(epode_config_set_mechanisms(cfg, NULL), EPODE_OK);
  epode_config_free(cfg);
}

static void test_priority_override(void **state) {
  epode_config *cfg = base_cfg("alice@localhost");
  epode_config_set_password(cfg, "pw");
  assert_int_equal(epode_config_set_mechanism_priority(cfg, "PLAIN", 99), EPODE_OK);
  assert_int_equal(epode_config_set_mechanism_priority(cfg, "NOPE", 99), EPODE_ERR_NOTFOUND);
  epode_session *s;
  char *auth = offer(&s, cfg, ALL, 1);
  expect_mech(auth, "PLAIN");
  free(auth);
  epode_session_free(s);
  char list[256];
  size_t need = epode_config_list_mechanisms(cfg, list, sizeof list);
  assert_int_equal(need, strlen(list));
  assert_memory_equal(list, "PLAIN,EXTERNAL,", 15);
  /* Truncation writes whole names only. */
  char small[12];
  epode_config_list_mechanisms(cfg, small, sizeof small);
  assert_string_equal(small, "PLAIN");
  epode_config_free(cfg);
}

static void test_policy(void **state) {
  epode_config *cfg = base_cfg("alice@localhost");
  epode_config_set_password(cfg, "pw");
  epode_config_set_flags(cfg, EPODE_CFG_ALLOW_PLAINTEXT);
  epode_session *s;
  /* Plaintext allowed explicitly: PLAIN may go. */
  char *auth = offer(&s, cfg, "<mechanism>PLAIN</mechanism>", 0);
  expect_mech(auth, "PLAIN");
  free(auth);
  epode_session_free(s);
  /* -PLUS without channel binding data: not chosen. */
  auth = offer(&s, cfg, "<mechanism>SCRAM-SHA-256-PLUS</mechanism><mechanism>SCRAM-SHA-1</mechanism>",
               0);
  expect_mech(auth, "SCRAM-SHA-1");
  free(auth);
  epode_session_free(s);
  epode_config_free(cfg);

  /* ANONYMOUS only for a domain JID (or allow-listed); EXTERNAL only with a
   * certificate; OAUTHBEARER only with a token. */
  cfg = base_cfg("localhost");
  auth = offer(&s, cfg, ALL, 1);
  expect_mech(auth, "ANONYMOUS");
  free(auth);
  epode_session_free(s);
  epode_config_free(cfg);

  cfg = base_cfg("alice@localhost");
  auth = offer(&s, cfg, "<mechanism>ANONYMOUS</mechanism>", 1);
  assert_null(auth);
  assert_non_null(strstr(epode_session_failure(s)->detail, "names an account"));
  epode_session_free(s);
  assert_int_equal(epode_config_set_oauth_token(cfg, "tok"), EPODE_OK);
  auth = offer(&s, cfg, ALL, 1);
  expect_mech(auth, "OAUTHBEARER");
  free(auth);
  epode_session_free(s);
  assert_int_equal(epode_config_set_client_cert(cfg, "/nonexistent.pem", NULL), EPODE_OK);
  auth = offer(&s, cfg, ALL, 1);
  expect_mech(auth, "EXTERNAL");
  free(auth);
  epode_session_free(s);
  epode_config_free(cfg);
}

/* -PLUS on TLS 1.3 without XEP-0440: ejabberd 23.01 offers it and accepts
 * only its own tls-unique. Not chosen; with XEP-0440 tls-exporter, chosen. */
static void test_plus_tls13_needs_xep0440(void **state) {
  epode_config *cfg = base_cfg("alice@localhost");
  epode_config_set_password(cfg, "pw");
  epode_session *s;
  char *auth = offer(&s, cfg,
                     "<mechanism>SCRAM-SHA-256-PLUS</mechanism><mechanism>SCRAM-SHA-256</mechanism>",
                     1);
  expect_mech(auth, "SCRAM-SHA-256");
  /* gs2 header "n,," (base64 "biws…"): we do not bind, and say so. */
  assert_non_null(strstr(auth, ">biws"));
  free(auth);
  epode_session_free(s);
  epode_config_free(cfg);
}

static void test_no_fallback_by_default(void **state) {
  epode_config *cfg = base_cfg("alice@localhost");
  epode_config_set_password(cfg, "pw");
  epode_session *s;
  char *auth = offer(&s, cfg, "<mechanism>PLAIN</mechanism><mechanism>SCRAM-SHA-1</mechanism>", 1);
  expect_mech(auth, "SCRAM-SHA-1");
  free(auth);
  const char *fail = "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/>"
                     "<text>bad</text></failure>";
  epode_session_recv(s, fail, strlen(fail), 0);
  const epode_failure *f = epode_session_failure(s);
  assert_int_equal(f->err, EPODE_ERR_AUTH);
  assert_string_equal(f->condition, "not-authorized");
  assert_string_equal(f->text, "bad");
  assert_string_equal(f->mechanism, "SCRAM-SHA-1");
  size_t n;
  const char *out = epode_session_peek_output(s, &n);
  assert_null(strstr(out ? out : "", "PLAIN")); /* the password did not follow */
  epode_session_free(s);

  /* With fallback asked for, PLAIN is tried next (over TLS). */
  epode_config_set_sasl_fallback(cfg, 1);
  auth = offer(&s, cfg, "<mechanism>PLAIN</mechanism><mechanism>SCRAM-SHA-1</mechanism>", 1);
  free(auth);
  epode_session_recv(s, fail, strlen(fail), 0);
  out = epode_session_peek_output(s, &n);
  assert_non_null(out);
  assert_non_null(strstr(out, "mechanism='PLAIN'"));
  epode_session_consume_output(s, n);
  /* …and its failure ends the session: no third try. */
  epode_session_recv(s, fail, strlen(fail), 0);
  assert_int_equal(epode_session_failure(s)->err, EPODE_ERR_AUTH);
  assert_string_equal(epode_session_failure(s)->mechanism, "PLAIN");
  epode_session_free(s);
  epode_config_free(cfg);
}

/* A custom mechanism: X-FOO sends "foo:" + password, expects the challenge
 * "bar?" and answers "baz", and wants "ok" with <success/>. */
typedef struct {
  int calls;
} foo_ud;

static epode_err foo_start(epode_sasl_ctx *ctx, void **state, epode_sasl_out *out) {
  foo_ud *ud = epode_sasl_ctx_ud(ctx);
  ud->calls++;
  *state = ud;
  const char *pw = epode_sasl_ctx_password(ctx);
  epode_err e = epode_sasl_out_append(out, "foo:", 4);
  return e ? e : epode_sasl_out_append(out, pw, strlen(pw));
}
static epode_err foo_step(epode_sasl_ctx *ctx, void *state, const unsigned char *in, size_t len,
                          epode_sasl_out *out) {
  if (len != 4 || memcmp(in, "bar?", 4) != 0) {
    epode_sasl_ctx_set_error(ctx, "unexpected challenge");
    return EPODE_ERR_SASL_PROTOCOL;
  }
  return epode_sasl_out_append(out, "baz", 3);
}
static epode_err foo_success(epode_sasl_ctx *ctx, void *state, const unsigned char *in,
                             size_t len) {
  if (len == 2 && !memcmp(in, "ok", 2)) return EPODE_OK;
  epode_sasl_ctx_set_error(ctx, "the server did not say ok");
  return EPODE_ERR_SASL_SIGNATURE;
}
static void foo_free(epode_sasl_ctx *ctx, void *state) { ((foo_ud *)state)->calls += 10; }

static void test_custom_mechanism(void **state) {
  foo_ud ud = {0};
  epode_sasl_mechanism foo = {EPODE_SASL_MECHANISM_VERSION,
                              "X-FOO",
                              55,
                              EPODE_SASL_NEEDS_PASSWORD,
                              1,
                              foo_start,
                              foo_step,
                              foo_success,
                              foo_free,
                              &ud};
  epode_config *cfg = base_cfg("alice@localhost");
  epode_config_set_password(cfg, "pw");
  assert_int_equal(epode_config_add_mechanism(cfg, &foo), EPODE_OK);
  epode_sasl_mechanism bad = foo;
  bad.version = 99;
  assert_int_equal(epode_config_add_mechanism(cfg, &bad), EPODE_ERR_INVAL);
  bad = foo;
  bad.name = "x foo";
  assert_int_equal(epode_config_add_mechanism(cfg, &bad), EPODE_ERR_INVAL);

  epode_session *s;
  char *auth = offer(&s, cfg, "<mechanism>SCRAM-SHA-256</mechanism><mechanism>X-FOO</mechanism>", 1);
  /* base64("foo:pw") = Zm9vOnB3 */
  assert_non_null(auth);
  assert_non_null(strstr(auth, "mechanism='X-FOO'>Zm9vOnB3</auth>"));
  free(auth);
  const char *chal = "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>YmFyPw==</challenge>";
  epode_session_recv(s, chal, strlen(chal), 0);
  size_t n;
  const char *out = epode_session_peek_output(s, &n);
  assert_non_null(out);
  assert_non_null(strstr(out, "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>YmF6</response>"));
  epode_session_consume_output(s, n);
  const char *succ = "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>b2s=</success>";
  epode_session_recv(s, succ, strlen(succ), 0);
  assert_int_equal(epode_session_failure(s)->err, EPODE_OK);
  assert_int_equal(epode_session_state(s), EPODE_STATE_OPENING); /* restarted */
  assert_int_equal(ud.calls, 11); /* started once, freed once */
  epode_session_free(s);

  /* A server that does not prove itself to X-FOO: the mechanism's reason. */
  auth = offer(&s, cfg, "<mechanism>X-FOO</mechanism>", 1);
  free(auth);
  epode_session_recv(s, chal, strlen(chal), 0);
  const char *bad_succ = "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>";
  epode_session_recv(s, bad_succ, strlen(bad_succ), 0);
  const epode_failure *f = epode_session_failure(s);
  assert_int_equal(f->err, EPODE_ERR_SASL_SIGNATURE);
  assert_string_equal(f->mechanism, "X-FOO");
  assert_non_null(strstr(f->detail, "the server did not say ok"));
  epode_session_free(s);
  epode_config_free(cfg);
}

/* A mechanism that answers every challenge: only the session's round limit
 * can stop a server that never stops challenging. */
static epode_err loop_start(epode_sasl_ctx *ctx, void **state, epode_sasl_out *out) {
  *state = NULL;
  return EPODE_OK;
}
static epode_err loop_step(epode_sasl_ctx *ctx, void *state, const unsigned char *in, size_t len,
                           epode_sasl_out *out) {
  return epode_sasl_out_append(out, "again", 5);
}
static epode_err loop_success(epode_sasl_ctx *ctx, void *state, const unsigned char *in,
                              size_t len) {
  return EPODE_OK;
}
static void loop_free(epode_sasl_ctx *ctx, void *state) {}

static void test_endless_challenges_cut_off(void **state) {
  epode_sasl_mechanism loop = {EPODE_SASL_MECHANISM_VERSION, "X-LOOP", 90, EPODE_SASL_NO_CREDS,
                               0, loop_start, loop_step, loop_success, loop_free, NULL};
  epode_config *cfg = base_cfg("alice@localhost");
  assert_int_equal(epode_config_add_mechanism(cfg, &loop), EPODE_OK);
  assert_int_equal(epode_config_set_mechanisms(cfg, "X-LOOP"), EPODE_OK);
  epode_session *s;
  char *auth = offer(&s, cfg, "<mechanism>X-LOOP</mechanism>", 1);
  expect_mech(auth, "X-LOOP");
  free(auth);
  const char *chal = "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>AAAA</challenge>";
  int answered = 0;
  for (int i = 0; i < 100 && epode_session_state(s) != EPODE_STATE_CLOSED; i++) {
    epode_session_recv(s, chal, strlen(chal), 0);
    size_t n;
    const char *out = epode_session_peek_output(s, &n);
    if (out && strstr(out, "<response")) answered++;
    epode_session_consume_output(s, n);
  }
  const epode_failure *f = epode_session_failure(s);
  assert_int_equal(f->err, EPODE_ERR_SASL_PROTOCOL);
  assert_non_null(strstr(f->detail, "more than 16 SASL challenges"));
  assert_int_equal(answered, 16);
  epode_session_free(s);
  epode_config_free(cfg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_priority_order),     cmocka_unit_test(test_allow_list),
      cmocka_unit_test(test_priority_override),  cmocka_unit_test(test_policy),
      cmocka_unit_test(test_no_fallback_by_default), cmocka_unit_test(test_custom_mechanism),
      cmocka_unit_test(test_plus_tls13_needs_xep0440),
      cmocka_unit_test(test_endless_challenges_cut_off),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
