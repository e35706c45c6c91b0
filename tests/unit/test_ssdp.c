/* XEP-0474 SASL SCRAM Downgrade Protection (version 0.5.0, 2025-10-25) in
 * the SCRAM client: the server's "h=" attribute in server-first.
 *
 * What the spec hashes (section 6.1): S = the advertised SASL mechanisms,
 * sorted by octets (RFC 4790 i;octet), joined by 0x1E; then, only if the
 * server advertised XEP-0440 channel-binding types, 0x1F and those types,
 * sorted, joined by 0x1E. h = base64(H(S)), H the SCRAM mechanism's hash.
 * The client MUST fail the authentication on a mismatch (6.2).
 *
 * The expected values were computed independently with /usr/bin/python3:
 *
 *   def ssdp(h, mechs, cbs):          # h: "sha1", "sha256", "sha512"
 *     s = b"\x1e".join(sorted(mechs))  # sorted(bytes) is octet order
 *     if cbs is not None:
 *       s += b"\x1f" + b"\x1e".join(sorted(cbs))
 *     return base64.b64encode(hashlib.new(h, s).digest())
 *
 * after checking that it gives the XEP's own example value
 * (G6k/rBLDqgOhRRaCuuatSDFkJ08=). The full exchanges (client-final and v=)
 * come from the same script's RFC 5802 client (hashlib.pbkdf2_hmac, hmac),
 * which reproduces the RFC 5802/7677 vectors and also the XEP example's
 * own p= and v= when given its client-final with the x= attribute. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "epode/sasl.h"
#include "sasl/sasl.h"
#include "sasl/sasl_int.h"
#include "util/buf.h"

#include "failmem.h"
#include "scram_ex.h"

/* ------------------------------------------------------------ the XEP example */

/* Section 6.3: SCRAM-SHA-1-PLUS with tls-exporter, password "pencil". The
 * XEP's client-final carries an extra x= attribute that we do not send, so
 * our client-final and v= differ from the example's (Python-derived). */
#define XEP_NONCE "12C4CD5C-E38E-4A98-8F6D-15C38F51CCC6"
#define XEP_SNONCE XEP_NONCE "a09117a6-ac50-4f2f-93f1-93799c2bddf6"
#define XEP_H "G6k/rBLDqgOhRRaCuuatSDFkJ08="
#define XEP_SFIRST "r=" XEP_SNONCE ",s=QSXCR+Q6sek8bf92,i=4096,h=" XEP_H
#define XEP_FIRST "p=tls-exporter,,n=user,r=" XEP_NONCE
#define XEP_FINAL                                                                                  \
  "c=cD10bHMtZXhwb3J0ZXIsLFRISVMgSVMgRkFLRSBDQiBEQVRB,r=" XEP_SNONCE                               \
  ",p=NWgTsQJvWgbXKxbqd3P4BNurjkU="
#define XEP_V "v=EMsYR2n9LecK8qm5xR19xuvM1jw="
static const char xep_cb_data[] = "THIS IS FAKE CB DATA";

/* ------------------------------------------------------------ more vectors */

/* SHA-256 over
 * "PLAIN\x1eSCRAM-SHA-1\x1eSCRAM-SHA-1-PLUS\x1eSCRAM-SHA-256\x1eSCRAM-SHA-256-PLUS"
 * "\x1ftls-exporter\x1etls-server-end-point\x1etls-unique" */
#define H256_FULL "LgLTjdKBam7K7N8WO3ne24lE4Dl2dpu7ETHnqW6MIY4="
/* SHA-256 over "SCRAM-SHA-1\x1eSCRAM-SHA-256" (no XEP-0440) */
#define H256_NOCB "0/NIECGLXv63MqTb7NyUI9Tqxi40YVZyx61umRrH924="
/* SHA-256 over "SCRAM-SHA-1\x1eSCRAM-SHA-256\x1f" (XEP-0440, no types) */
#define H256_EMPTYCB "5JyB+q2RhLBcxFYRGsjJgEHnbBGu29x7jgu/3+4yt9w="
/* SHA-512 over "PLAIN\x1eSCRAM-SHA-512\x1eSCRAM-SHA-512-PLUS\x1eX-OAUTH2\x1ex-custom"
 * "\x1fTLS-FUTURE\x1etls-exporter\x1e\xc3\xa9t\xc3\xa9": octet order puts
 * upper case before lower case and bytes >= 0x80 last. */
#define H512_ODD                                                                                   \
  "LcFhqLCfAqyUP5bb9/RsU5gztqmd7E0P5bSsKNEm6lT/k0qnB+8YdBJqcl/LvN13z2/wtcWLIBbaitwhJu3lew=="
/* SHA-1 over "" (nothing offered, no XEP-0440) */
#define H1_EMPTY "2jmj7l5rSw0yVb/vlWAYkK/YBwk="
/* SHA-1 over "SCRAM-SHA-1\x1eSCRAM-SHA-1\x1ftls-exporter" (duplicates kept) */
#define H1_DUP "URjoY2W4xfMQv1aCnVXD76LEVYI="

/* A whole SCRAM-SHA-256 exchange (RFC 7677 inputs) with h=H256_FULL. */
#define R7677_NONCE "rOprNGfwEbeRWgbNEkqO"
#define R7677_SNONCE R7677_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define FULL256_SFIRST "r=" R7677_SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,h=" H256_FULL
#define FULL256_FINAL "c=biws,r=" R7677_SNONCE ",p=3QBZ7x65ixYmIbr4OjZ8U6Gj6OWQKrcuI6eewznAWyY="
#define FULL256_V "v=WDaCrSrUGl03uZWvaZv5te3CyNrKCQDDjMOfxSGkCsQ="

#define NONCE "abc"
#define SF(h) "r=" NONCE "d,s=QSXCR+Q6sek8bf92,i=4096,h=" h

static const char *const full_mechs[] = {"SCRAM-SHA-256",      "SCRAM-SHA-1",      "PLAIN",
                                         "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", NULL};
static const char *const full_cbs[] = {"tls-unique", "tls-exporter", "tls-server-end-point", NULL};

static void params_init(epode__sasl_params *p) {
  memset(p, 0, sizeof *p);
  p->authcid = "user";
  p->password = "pencil";
}


/* server-first `sfirst` after a start with these lists: the result of step(). */
static epode_err first(const epode__sasl_mech *m, const char *const *mechs, const char *const *cbs,
                       const char *sfirst, const char *errmsg) {
  epode__sasl_params p;
  params_init(&p);
  p.server_mechs = mechs;
  p.server_cb_types = cbs;
  ex x;
  assert_int_equal(ex_start(&x, m, &p, NONCE), EPODE_OK);
  epode__buf_reset(&x.out);
  epode__buf_append_str(&x.out, "untouched");
  epode_err e = x.m->step(x.st, (const unsigned char *)sfirst, strlen(sfirst), &x.out);
  if (e) {
    assert_string_equal(x.out.data, "untouched");
    if (errmsg) assert_errmsg_has(&x, errmsg);
    /* a failed exchange stays failed */
    assert_int_equal(x.m->success(x.st, (const unsigned char *)"v=x", 3), EPODE_ERR_SASL_PROTOCOL);
  } else {
    assert_null(x.m->errmsg(x.st));
  }
  ex_free(&x);
  return e;
}

#define DOWNGRADE "downgrade detected (XEP-0474)"

static void test_xep_example(void **st) {
  (void)st;
  static const char *const mechs[] = {"SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", NULL};
  /* the order of the example's stream features */
  static const char *const cbs[] = {"tls-server-end-point", "tls-exporter", NULL};
  epode_tls_info t;
  memset(&t, 0, sizeof t);
  t.version = 0x0304;
  t.tls_exporter = (const unsigned char *)xep_cb_data;
  t.tls_exporter_len = strlen(xep_cb_data);
  epode__sasl_params p;
  params_init(&p);
  p.tls = &t;
  p.server_offers_plus = 1;
  p.server_mechs = mechs;
  p.server_cb_types = cbs;
  epode_scram_keys out;
  memset(&out, 0, sizeof out);
  p.scram_keys_out = &out;
  ex x;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1_plus, &p, XEP_NONCE), EPODE_OK);
  assert_out(&x, XEP_FIRST); /* the XEP's initial response */
  assert_int_equal(ex_step(&x, XEP_SFIRST), EPODE_OK);
  assert_out(&x, XEP_FINAL);
  assert_int_equal(x.m->success(x.st, (const unsigned char *)XEP_V, strlen(XEP_V)), EPODE_OK);
  assert_int_equal(out.key_len, 20);
  ex_free(&x);

  /* a MITM strips the -PLUS mechanism: caught */
  static const char *const stripped[] = {"SCRAM-SHA-1", NULL};
  assert_int_equal(first(&epode__sasl_scram_sha1, stripped, cbs,
                         "r=" NONCE "d,s=QSXCR+Q6sek8bf92,i=4096,h=" XEP_H, DOWNGRADE),
                   EPODE_ERR_SASL_PROTOCOL);
  /* ... or tls-exporter */
  static const char *const ep_only[] = {"tls-server-end-point", NULL};
  assert_int_equal(first(&epode__sasl_scram_sha1, mechs, ep_only, SF(XEP_H), DOWNGRADE),
                   EPODE_ERR_SASL_PROTOCOL);
  /* ... or the whole XEP-0440 list */
  assert_int_equal(first(&epode__sasl_scram_sha1, mechs, NULL, SF(XEP_H), DOWNGRADE),
                   EPODE_ERR_SASL_PROTOCOL);
  /* ... or adds a type */
  static const char *const more[] = {"tls-server-end-point", "tls-exporter", "tls-unique", NULL};
  assert_int_equal(first(&epode__sasl_scram_sha1, mechs, more, SF(XEP_H), DOWNGRADE),
                   EPODE_ERR_SASL_PROTOCOL);
  /* the order we saw them in does not matter */
  static const char *const rmechs[] = {"SCRAM-SHA-1-PLUS", "SCRAM-SHA-1", NULL};
  static const char *const rcbs[] = {"tls-exporter", "tls-server-end-point", NULL};
  assert_int_equal(first(&epode__sasl_scram_sha1, rmechs, rcbs, SF(XEP_H), NULL), EPODE_OK);
  /* the same h= for a SHA-256 mechanism is the wrong hash */
  assert_int_equal(first(&epode__sasl_scram_sha256, mechs, cbs, SF(XEP_H), "not a base64 SHA-256"),
                   EPODE_ERR_SASL_PROTOCOL);
}

static void test_vectors(void **st) {
  (void)st;
  const epode__sasl_mech *s1 = &epode__sasl_scram_sha1, *s256 = &epode__sasl_scram_sha256,
                         *s512 = &epode__sasl_scram_sha512;
  assert_int_equal(first(s256, full_mechs, full_cbs, SF(H256_FULL), NULL), EPODE_OK);
  static const char *const two[] = {"SCRAM-SHA-256", "SCRAM-SHA-1", NULL};
  static const char *const none[] = {NULL};
  assert_int_equal(first(s256, two, NULL, SF(H256_NOCB), NULL), EPODE_OK);
  assert_int_equal(first(s256, two, none, SF(H256_EMPTYCB), NULL), EPODE_OK);
  /* no XEP-0440 list and an empty one are different offers */
  assert_int_equal(first(s256, two, none, SF(H256_NOCB), DOWNGRADE), EPODE_ERR_SASL_PROTOCOL);
  assert_int_equal(first(s256, two, NULL, SF(H256_EMPTYCB), DOWNGRADE), EPODE_ERR_SASL_PROTOCOL);
  /* octet order, not case-insensitive or locale order */
  static const char *const odd_mechs[] = {"SCRAM-SHA-512", "x-custom",           "X-OAUTH2",
                                          "PLAIN",         "SCRAM-SHA-512-PLUS", NULL};
  static const char *const odd_cbs[] = {"tls-exporter", "\xc3\xa9t\xc3\xa9", "TLS-FUTURE", NULL};
  assert_int_equal(first(s512, odd_mechs, odd_cbs, SF(H512_ODD), NULL), EPODE_OK);
  assert_int_equal(first(s1, none, NULL, SF(H1_EMPTY), NULL), EPODE_OK);
  static const char *const dup[] = {"SCRAM-SHA-1", "SCRAM-SHA-1", NULL};
  static const char *const exp[] = {"tls-exporter", NULL};
  assert_int_equal(first(s1, dup, exp, SF(H1_DUP), NULL), EPODE_OK);
  /* one mechanism fewer than the server hashed */
  static const char *const four[] = {"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "SCRAM-SHA-256-PLUS",
                                     NULL};
  assert_int_equal(first(s256, four, full_cbs, SF(H256_FULL), DOWNGRADE), EPODE_ERR_SASL_PROTOCOL);
  /* a mechanism's name changed by one letter */
  static const char *const typo[] = {"SCRAM-SHA-256",      "SCRAM-SHA-1",      "PLAIN",
                                     "SCRAM-SHA-256-PLUs", "SCRAM-SHA-1-PLUS", NULL};
  assert_int_equal(first(s256, typo, full_cbs, SF(H256_FULL), DOWNGRADE), EPODE_ERR_SASL_PROTOCOL);
  /* a delimiter moved between the lists: mechanism list + cb list
   * concatenated differently must not collide */
  static const char *const moved_m[] = {
      "SCRAM-SHA-256",    "SCRAM-SHA-1",  "PLAIN", "SCRAM-SHA-256-PLUS",
      "SCRAM-SHA-1-PLUS", "tls-exporter", NULL};
  static const char *const moved_c[] = {"tls-unique", "tls-server-end-point", NULL};
  assert_int_equal(first(s256, moved_m, moved_c, SF(H256_FULL), DOWNGRADE),
                   EPODE_ERR_SASL_PROTOCOL);
}

/* The whole exchange: h= is part of the AuthMessage like any attribute. */
static void test_full_exchange(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  p.server_mechs = full_mechs;
  p.server_cb_types = full_cbs;
  ex x;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha256, &p, R7677_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, FULL256_SFIRST), EPODE_OK);
  assert_out(&x, FULL256_FINAL);
  assert_int_equal(x.m->success(x.st, (const unsigned char *)FULL256_V, strlen(FULL256_V)),
                   EPODE_OK);
  ex_free(&x);
  /* with cached keys instead of the password: the same */
  static const unsigned char salt[] = "\x5b\x6d\x99\x68\x9d\x12\x35\x8e\xec\xa0\x4b\x14\x12\x36"
                                      "\xfa\x81";
  epode_scram_keys k;
  memset(&k, 0, sizeof k);
  p.scram_keys_out = &k;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha256, &p, R7677_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, FULL256_SFIRST), EPODE_OK);
  assert_int_equal(x.m->success(x.st, (const unsigned char *)FULL256_V, strlen(FULL256_V)),
                   EPODE_OK);
  ex_free(&x);
  assert_memory_equal(k.salt, salt, 16);
  p.password = NULL;
  p.scram_keys = &k;
  p.scram_keys_out = NULL;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha256, &p, R7677_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, FULL256_SFIRST), EPODE_OK);
  assert_out(&x, FULL256_FINAL);
  ex_free(&x);
  /* a downgrade is reported before the cached keys are even looked at */
  static const char *const two[] = {"SCRAM-SHA-256", "SCRAM-SHA-1", NULL};
  p.server_mechs = two;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha256, &p, R7677_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, FULL256_SFIRST), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, DOWNGRADE);
  ex_free(&x);
}

/* Servers without SSDP, clients that do not know the offer. */
static void test_absent_or_unknown(void **st) {
  (void)st;
  const epode__sasl_mech *m = &epode__sasl_scram_sha256;
  /* no h=: nothing to check, whatever the lists */
  assert_int_equal(first(m, full_mechs, full_cbs, "r=" NONCE "d,s=QSXCR+Q6sek8bf92,i=4096", NULL),
                   EPODE_OK);
  /* h= but we do not know what was offered: cannot check, continue */
  assert_int_equal(first(m, NULL, NULL, SF(H256_FULL), NULL), EPODE_OK);
  assert_int_equal(first(m, NULL, full_cbs, SF(H1_EMPTY), NULL), EPODE_OK);
  /* another extension next to h=, before or after it */
  assert_int_equal(first(m, full_mechs, full_cbs, SF(H256_FULL) ",x=future", NULL), EPODE_OK);
  assert_int_equal(first(m, full_mechs, full_cbs,
                         "r=" NONCE "d,s=QSXCR+Q6sek8bf92,i=4096,x=1,h=" H256_FULL, NULL),
                   EPODE_OK);
  /* the pre-0.4 d= (',' and '|' delimiters) is not interpreted */
  assert_int_equal(
      first(m, full_mechs, full_cbs, "r=" NONCE "d,s=QSXCR+Q6sek8bf92,i=4096,d=AAAA", NULL),
      EPODE_OK);
}

static void test_malformed_h(void **st) {
  (void)st;
  const epode__sasl_mech *m = &epode__sasl_scram_sha256;
  static const struct {
    const char *sfirst, *msg;
  } t[] = {
      {SF(""), "not a base64 SHA-256 hash"},
      {SF("LgLTjdKBam7K7N8WO3ne24lE4Dl2dpu7ETHnqW6MIY4"), "not a base64"},
      {SF("LgLTjdKBam7K7N8WO3ne24lE4Dl2dpu7ETHnqW6MIY4=="), "not a base64"},
      {SF("LgLTjdKBam7K7N8WO3ne24lE4Dl2dpu7ETHnqW6MIY*="), "not a base64"},
      {SF("LgLTjdKBam7K7N8WO3ne24lE4Dl2dpu7ETHnqW6MIY5="), "not a base64"}, /* trailing bits */
      {SF(H256_FULL) ",h=" H256_FULL, "more than one h="},
      {SF(H256_NOCB) ",h=" H256_FULL, "more than one h="},
      {SF(H256_FULL) ",h", "malformed"},
      {"r=" NONCE "d,s=QSXCR+Q6sek8bf92,h=" H256_FULL ",i=4096", "no i= after s="},
      {"h=" H256_FULL ",r=" NONCE "d,s=QSXCR+Q6sek8bf92,i=4096", "r="},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    if (first(m, full_mechs, full_cbs, t[i].sfirst, t[i].msg) != EPODE_ERR_SASL_PROTOCOL)
      fail_msg("accepted \"%s\"", t[i].sfirst);
}

/* The error says what we saw, sanitized and bounded. */
static void test_errmsg(void **st) {
  (void)st;
  epode__sasl_params p;
  params_init(&p);
  static const char *const m[] = {"SCRAM-SHA-1", "BAD\x1b[31m", NULL};
  p.server_mechs = m;
  ex x;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, SF(XEP_H)), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, DOWNGRADE);
  assert_errmsg_has(&x, "mechanisms BAD?[31m,SCRAM-SHA-1; no channel-binding list");
  ex_free(&x);

  /* many long names: truncated with "..." */
  static char names[40][30];
  const char *many[41];
  for (int i = 0; i < 40; i++) {
    snprintf(names[i], sizeof names[i], "MECHANISM-NUMBER-%02d", i);
    many[i] = names[i];
  }
  many[40] = NULL;
  p.server_mechs = many;
  p.server_cb_types = full_cbs;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, SF(XEP_H)), EPODE_ERR_SASL_PROTOCOL);
  assert_errmsg_has(&x, "MECHANISM-NUMBER-00,MECHANISM-NUMBER-01");
  assert_errmsg_has(&x, "...");
  assert_true(strlen(x.m->errmsg(x.st)) < 256);
  ex_free(&x);
}

/* ------------------------------------------------------------ allocation */

static void test_alloc_failures(void **st) {
  (void)st;
  for (int bad = 0; bad < 2; bad++) {
    int completed = 0;
    long n;
    for (n = 0; n < 200 && !completed; n++) {
      epode_test_failmem f;
      epode_test_failmem_init_budget(&f, n);
      epode__sasl_params p;
      params_init(&p);
      p.mem = &f.mem;
      p.server_mechs = full_mechs;
      p.server_cb_types = bad ? NULL : full_cbs;
      ex x;
      epode_err e = ex_start(&x, &epode__sasl_scram_sha256, &p, R7677_NONCE);
      if (!e) e = ex_step(&x, FULL256_SFIRST);
      if (!e) e = x.m->success(x.st, (const unsigned char *)FULL256_V, strlen(FULL256_V));
      if (e == (bad ? EPODE_ERR_SASL_PROTOCOL : EPODE_OK)) {
        completed = 1;
        if (bad) assert_errmsg_has(&x, DOWNGRADE);
      } else {
        assert_int_equal(e, EPODE_ERR_NOMEM);
        if (x.st) assert_non_null(x.m->errmsg(x.st));
      }
      ex_free(&x);
      assert_int_equal(f.live, 0);
    }
    assert_true(completed);
    assert_true(n > 3);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_xep_example),    cmocka_unit_test(test_vectors),
      cmocka_unit_test(test_full_exchange),  cmocka_unit_test(test_absent_or_unknown),
      cmocka_unit_test(test_malformed_h),    cmocka_unit_test(test_errmsg),
      cmocka_unit_test(test_alloc_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
