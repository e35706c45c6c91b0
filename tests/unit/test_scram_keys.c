/* SCRAM with cached keys (ClientKey/ServerKey kept instead of the password,
 * as Strophe.js and Converse do): p->scram_keys in, p->scram_keys_out out.
 *
 * Expected keys were computed independently with Python's hashlib (written
 * from RFC 5802 section 3, checked first against the RFC 5802 and RFC 7677
 * vectors):
 *
 *   sp = hashlib.pbkdf2_hmac(h, b"pencil", base64.b64decode(salt), 4096)
 *   ClientKey = hmac.new(sp, b"Client Key", h).digest()
 *   ServerKey = hmac.new(sp, b"Server Key", h).digest()
 *
 * and the 129-byte-salt exchange with the same script's full RFC 5802
 * client (AuthMessage, ClientProof, ServerSignature). Everything else is
 * checked against the RFC vectors or against a password run in this file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "epode/sasl.h"
#include "sasl/sasl.h"
#include "sasl/sasl_int.h"
#include "util/buf.h"

#include "failmem.h"
#include "scram_ex.h"

#define RFC5802_NONCE "fyko+d2lbbFgONRv9qkxdawL"
#define RFC5802_SFIRST "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
#define RFC5802_FINAL                                                                              \
  "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
#define RFC5802_V "v=rmF9pqV8S7suAoZWja4dJRkFsKQ="

#define RFC7677_NONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC7677_SFIRST                                                                             \
  "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC7677_FINAL                                                                              \
  "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"                                   \
  "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC7677_V "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

/* test_scram.c's Python-derived SHA-512 exchange over the RFC 7677 inputs. */
#define SHA512_FINAL                                                                               \
  "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"                                   \
  "p=gMGXRcevScNtxZ6/8lQYpGtnsNAc3mGcmNomv+xnoOMw+3R2xNJdMNnzMlTN8PPC6wdp6dybEmDYXYTxwnYPJQ=="
#define SHA512_V                                                                                   \
  "v=ZQnYEgWQMFmmsM8aQMF0nDDCy/AgCzkwk8CmMZYcMg0vSVlKDanekLtifDSeVGT4+5ZxXnJq199RVG2rR7N7Zw=="

/* Python-derived keys (see the top comment). */
static const unsigned char sha1_ck[] = "\xe2\x34\xc4\x7b\xf6\xc3\x66\x96\xdd\x6d\x85\x2b\x99\xaa"
                                       "\xa2\xba\x26\x55\x57\x28";
static const unsigned char sha1_sk[] = "\x0f\xe0\x92\x58\xb3\xac\x85\x2b\xa5\x02\xcc\x62\xba\x90"
                                       "\x3e\xaa\xcd\xbf\x7d\x31";
static const unsigned char sha256_ck[] =
    "\xa6\x0f\xc9\x23\xd6\x7e\x86\x44\xa9\x2d\x16\xb9\x6e\xda\x5e\xf4"
    "\x65\x6b\x0c\x72\x5c\x48\x43\x74\xbe\x25\x53\x55\x76\x99\x6e\x8b";
static const unsigned char sha256_sk[] =
    "\xc1\xf3\xcb\xc1\xc1\x3a\x9d\x35\xa1\x4c\x09\x90\xee\xd9\x76\x29"
    "\xea\x22\x58\x63\xe5\x66\xa4\x31\x4a\xb9\x9f\x3f\x00\xe5\xd9\xd5";
static const unsigned char sha512_ck[] =
    "\xf8\x1d\x81\xa6\xc0\x46\x7d\xbd\x95\x78\x85\xe9\xf3\xa0\x38\x7a"
    "\x99\xe9\x89\x17\x10\x77\xfc\x3b\x8d\x13\x4b\x71\x09\x07\xc4\x24"
    "\x91\x7b\x62\x4f\x88\x5a\x36\x67\x83\x87\x62\x85\x8a\x89\x3a\x4f"
    "\xce\x39\x04\x3a\xa5\x7f\xa0\x73\x88\xa5\xaa\xa6\xfd\xba\xc9\x20";
static const unsigned char sha512_sk[] =
    "\x8d\x91\xdb\x62\x30\xb5\x68\x78\x74\xfe\x12\x9b\xc7\x20\x6e\x18"
    "\x58\xc3\xae\x08\xe0\x29\x34\xf5\x7a\xc0\x3b\x6b\x05\xa2\x29\xc4"
    "\x59\xd2\x8f\xf4\x6f\x5c\x96\x11\xe6\xc1\x79\x25\x64\x90\x21\x5e"
    "\xc1\xff\x75\x9c\xb0\xdf\x28\x5d\xb8\x9a\xf0\xf9\x9e\x61\x3a\xac";
/* base64-decoded salts */
static const unsigned char salt5802[] = "\x41\x25\xc2\x47\xe4\x3a\xb1\xe9\x3c\x6d\xff\x76";
static const unsigned char salt7677[] =
    "\x5b\x6d\x99\x68\x9d\x12\x35\x8e\xec\xa0\x4b\x14\x12\x36\xfa\x81";

static void params_init(epode__sasl_params *p) {
  memset(p, 0, sizeof *p);
  p->authcid = "user";
  p->password = "pencil";
}


/* A whole exchange; the client-final must be `final`. */
static void run(const epode__sasl_mech *m, const epode__sasl_params *p, const char *nonce,
                const char *sfirst, const char *final, const char *v) {
  ex x;
  assert_int_equal(ex_start(&x, m, p, nonce), EPODE_OK);
  assert_int_equal(ex_step(&x, sfirst), EPODE_OK);
  assert_out(&x, final);
  assert_int_equal(ex_success(&x, v), EPODE_OK);
  assert_null(m->errmsg(x.st));
  ex_free(&x);
}

/* The client-final of an exchange with these params (into want[]). */
static void final_of(const epode__sasl_mech *m, const epode__sasl_params *p, const char *nonce,
                     const char *sfirst, char *want, size_t size) {
  ex x;
  assert_int_equal(ex_start(&x, m, p, nonce), EPODE_OK);
  assert_int_equal(ex_step(&x, sfirst), EPODE_OK);
  assert_true(x.out.len < size);
  memcpy(want, x.out.data, x.out.len + 1);
  ex_free(&x);
}

static void keys_set(epode_scram_keys *k, const char *hash, const unsigned char *salt,
                     size_t salt_len, uint32_t iter, const unsigned char *ck,
                     const unsigned char *sk, size_t len) {
  memset(k, 0, sizeof *k);
  strcpy(k->hash, hash);
  memcpy(k->salt, salt, salt_len);
  k->salt_len = salt_len;
  k->iterations = iter;
  memcpy(k->client_key, ck, len);
  memcpy(k->server_key, sk, len);
  k->key_len = len;
}

static void assert_keys_equal(const epode_scram_keys *a, const epode_scram_keys *b) {
  assert_string_equal(a->hash, b->hash);
  assert_int_equal(a->salt_len, b->salt_len);
  assert_memory_equal(a->salt, b->salt, a->salt_len);
  assert_int_equal(a->iterations, b->iterations);
  assert_int_equal(a->key_len, b->key_len);
  assert_memory_equal(a->client_key, b->client_key, a->key_len);
  assert_memory_equal(a->server_key, b->server_key, a->key_len);
}

/* Password run -> keys_out (checked against Python) -> a keys-only run
 * whose client-final is byte for byte the password run's. */
static void roundtrip(const epode__sasl_mech *m, const char *nonce, const char *sfirst,
                      const char *final, const char *v, const epode_scram_keys *want) {
  epode__sasl_params p;
  params_init(&p);
  epode_scram_keys got;
  memset(&got, 0, sizeof got);
  p.scram_keys_out = &got;
  run(m, &p, nonce, sfirst, final, v);
  assert_keys_equal(&got, want);

  /* keys only: no password at all */
  epode__sasl_params q;
  params_init(&q);
  q.password = NULL;
  q.scram_keys = &got;
  epode_scram_keys again;
  memset(&again, 0, sizeof again);
  q.scram_keys_out = &again;
  run(m, &q, nonce, sfirst, final, v);
  assert_keys_equal(&again, want); /* keys_out is filled from the cache too */

  /* an empty password with keys means "none" */
  q.password = "";
  q.scram_keys_out = NULL;
  run(m, &q, nonce, sfirst, final, v);

  /* matching keys win over the password: a wrong one is never used */
  q.password = "not the password";
  run(m, &q, nonce, sfirst, final, v);
}

static void test_roundtrip_sha1(void **st) {
  (void)st;
  epode_scram_keys k;
  keys_set(&k, "SHA-1", salt5802, 12, 4096, sha1_ck, sha1_sk, 20);
  roundtrip(&epode__sasl_scram_sha1, RFC5802_NONCE, RFC5802_SFIRST, RFC5802_FINAL, RFC5802_V, &k);
}

static void test_roundtrip_sha256(void **st) {
  (void)st;
  epode_scram_keys k;
  keys_set(&k, "SHA-256", salt7677, 16, 4096, sha256_ck, sha256_sk, 32);
  roundtrip(&epode__sasl_scram_sha256, RFC7677_NONCE, RFC7677_SFIRST, RFC7677_FINAL, RFC7677_V, &k);
}

static void test_roundtrip_sha512(void **st) {
  (void)st;
  epode_scram_keys k;
  keys_set(&k, "SHA-512", salt7677, 16, 4096, sha512_ck, sha512_sk, 64);
  roundtrip(&epode__sasl_scram_sha512, RFC7677_NONCE, RFC7677_SFIRST, SHA512_FINAL, SHA512_V, &k);
}

/* -PLUS: the keys do not depend on the channel binding. */
static void test_plus_with_keys(void **st) {
  (void)st;
  static const unsigned char cb[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  epode_tls_info t;
  memset(&t, 0, sizeof t);
  t.version = 0x0303;
  t.tls_unique = cb;
  t.tls_unique_len = sizeof cb;
  epode__sasl_params p;
  params_init(&p);
  p.tls = &t;
  p.server_offers_plus = 1;
  const char *sfirst = "r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
  char want[256];
  final_of(&epode__sasl_scram_sha256_plus, &p, RFC7677_NONCE, sfirst, want, sizeof want);
  /* test_scram.c's Python-derived PLUS vector */
  assert_string_equal(want, "c=cD10bHMtdW5pcXVlLCwAAQIDBAUGBwgJCgs=,r=rOprNGfwEbeRWgbNEkqOsrv,"
                            "p=3T/WgBOLHO5IDXgVacW88TStsLAeD+uxo9ItinNdS8E=");
  epode_scram_keys k;
  keys_set(&k, "SHA-256", salt7677, 16, 4096, sha256_ck, sha256_sk, 32);
  p.password = NULL;
  p.scram_keys = &k;
  run(&epode__sasl_scram_sha256_plus, &p, RFC7677_NONCE, sfirst, want,
      "v=HpIufny+3I8iCk/RymIAWooz8LWYumLHruoPzVwdkPk=");
}

/* ------------------------------------------------------------ mismatches */

#define OTHER_SALT_SFIRST "r=" RFC5802_NONCE "srv,s=AAAAAAAAAAAAAAAA,i=4096"
#define OTHER_ITER_SFIRST "r=" RFC5802_NONCE "srv,s=QSXCR+Q6sek8bf92,i=4097"

/* With cached keys that do not fit and a password: the password's answer. */
static void mismatch_uses_password(const epode__sasl_mech *m, const epode_scram_keys *k,
                                   const char *sfirst) {
  epode__sasl_params p;
  params_init(&p);
  char want[512], got[512];
  final_of(m, &p, RFC5802_NONCE, sfirst, want, sizeof want);
  p.scram_keys = k;
  final_of(m, &p, RFC5802_NONCE, sfirst, got, sizeof got);
  assert_string_equal(got, want);
}

/* ... and without a password: EPODE_ERR_AUTH naming the mismatch. */
static void mismatch_fails(const epode__sasl_mech *m, const epode_scram_keys *k, const char *sfirst,
                           const char *const *needles) {
  epode__sasl_params p;
  params_init(&p);
  p.password = NULL;
  p.scram_keys = k;
  epode_scram_keys out;
  memset(&out, 0x5A, sizeof out);
  p.scram_keys_out = &out;
  ex x;
  assert_int_equal(ex_start(&x, m, &p, RFC5802_NONCE), EPODE_OK);
  epode__buf_reset(&x.out);
  epode__buf_append_str(&x.out, "untouched");
  assert_int_equal(x.m->step(x.st, (const unsigned char *)sfirst, strlen(sfirst), &x.out),
                   EPODE_ERR_AUTH);
  assert_string_equal(x.out.data, "untouched");
  assert_errmsg_has(&x, "a password is needed");
  for (; *needles; needles++)
    assert_errmsg_has(&x, *needles);
  assert_int_equal(ex_success(&x, RFC5802_V), EPODE_ERR_SASL_PROTOCOL); /* stays failed */
  ex_free(&x);
  for (size_t i = 0; i < sizeof out; i++)
    assert_int_equal(((unsigned char *)&out)[i], 0x5A);
}

static void test_mismatch_salt(void **st) {
  (void)st;
  epode_scram_keys k;
  keys_set(&k, "SHA-1", salt5802, 12, 4096, sha1_ck, sha1_sk, 20);
  mismatch_uses_password(&epode__sasl_scram_sha1, &k, OTHER_SALT_SFIRST);
  const char *const n[] = {"cached SCRAM keys are for SHA-1 with 4096 iterations and another salt",
                           "the server now uses SHA-1 with 4096 iterations and salt "
                           "AAAAAAAAAAAAAAAA",
                           NULL};
  mismatch_fails(&epode__sasl_scram_sha1, &k, OTHER_SALT_SFIRST, n);
  /* a salt that is a prefix of the cached one is another salt */
  keys_set(&k, "SHA-1", salt5802, 11, 4096, sha1_ck, sha1_sk, 20);
  mismatch_fails(&epode__sasl_scram_sha1, &k, RFC5802_SFIRST, n + 2);
  /* a long server salt is not quoted in full */
  const char *longsalt = "r=" RFC5802_NONCE "srv,s=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA,"
                         "i=4096";
  const char *const n2[] = {"a 44-character salt", NULL};
  mismatch_fails(&epode__sasl_scram_sha1, &k, longsalt, n2);
}

static void test_mismatch_iterations(void **st) {
  (void)st;
  epode_scram_keys k;
  keys_set(&k, "SHA-1", salt5802, 12, 4096, sha1_ck, sha1_sk, 20);
  mismatch_uses_password(&epode__sasl_scram_sha1, &k, OTHER_ITER_SFIRST);
  const char *const n[] = {"SHA-1 with 4096 iterations and the same salt",
                           "the server now uses SHA-1 with 4097 iterations and the same salt",
                           NULL};
  mismatch_fails(&epode__sasl_scram_sha1, &k, OTHER_ITER_SFIRST, n);
}

static void test_mismatch_hash(void **st) {
  (void)st;
  /* SHA-1 keys for this very salt and count, offered to SCRAM-SHA-256 */
  epode_scram_keys k;
  keys_set(&k, "SHA-1", salt5802, 12, 4096, sha1_ck, sha1_sk, 20);
  const char *sfirst = "r=" RFC5802_NONCE "srv,s=QSXCR+Q6sek8bf92,i=4096";
  mismatch_uses_password(&epode__sasl_scram_sha256, &k, sfirst);
  const char *const n[] = {"for SHA-1 with 4096 iterations and the same salt",
                           "the server now uses SHA-256 with 4096", NULL};
  mismatch_fails(&epode__sasl_scram_sha256, &k, sfirst, n);
  /* SHA-256 keys to SHA-512 */
  keys_set(&k, "SHA-256", salt7677, 16, 4096, sha256_ck, sha256_sk, 32);
  const char *const n2[] = {"for SHA-256", "now uses SHA-512", NULL};
  mismatch_fails(&epode__sasl_scram_sha512, &k,
                 "r=" RFC5802_NONCE "srv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", n2);
}

static void test_start_rules(void **st) {
  (void)st;
  epode_scram_keys k;
  keys_set(&k, "SHA-1", salt5802, 12, 4096, sha1_ck, sha1_sk, 20);
  epode__sasl_params p;
  ex x;
  /* neither password nor keys */
  params_init(&p);
  p.password = NULL;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, "n"), EPODE_ERR_INVAL);
  assert_errmsg_has(&x, "no password");
  ex_free(&x);
  /* an empty password without keys is still refused */
  params_init(&p);
  p.password = "";
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, "n"), EPODE_ERR_INVAL);
  assert_errmsg_has(&x, "empty");
  ex_free(&x);
  /* a prohibited password is refused even with keys (it is configured) */
  params_init(&p);
  p.password = "bell\x07";
  p.scram_keys = &k;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, "n"), EPODE_ERR_INVAL);
  assert_errmsg_has(&x, "SASLprep");
  ex_free(&x);
  /* malformed keys */
  static const struct {
    const char *hash;
    size_t salt_len, key_len;
    uint32_t iter;
  } bad[] = {{"SHA-3", 12, 20, 4096}, {"SHA-1", 12, 32, 4096},  {"SHA-256", 12, 20, 4096},
             {"SHA-1", 0, 20, 4096},  {"SHA-1", 129, 20, 4096}, {"SHA-1", 12, 20, 0},
             {"sha-1", 12, 20, 4096}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    epode_scram_keys b;
    keys_set(&b, "SHA-1", salt5802, 12, 4096, sha1_ck, sha1_sk, 20);
    strcpy(b.hash, bad[i].hash);
    b.salt_len = bad[i].salt_len;
    b.key_len = bad[i].key_len;
    b.iterations = bad[i].iter;
    params_init(&p);
    p.password = NULL;
    p.scram_keys = &b;
    assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, "n"), EPODE_ERR_INVAL);
    assert_errmsg_has(&x, "malformed");
    assert_int_equal(x.out.len, 0);
    ex_free(&x);
  }
  /* a hash name without its NUL */
  epode_scram_keys b = k;
  memset(b.hash, 'A', sizeof b.hash);
  params_init(&p);
  p.scram_keys = &b;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, "n"), EPODE_ERR_INVAL);
  ex_free(&x);
  /* keys are copied at start: the caller's struct may change afterwards */
  b = k;
  params_init(&p);
  p.password = NULL;
  p.scram_keys = &b;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  memset(&b, 0, sizeof b);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_OK);
  assert_out(&x, RFC5802_FINAL);
  ex_free(&x);
}

/* ------------------------------------------------------------ keys_out */

static void assert_untouched(const epode_scram_keys *k) {
  for (size_t i = 0; i < sizeof *k; i++)
    if (((const unsigned char *)k)[i] != 0xA5) fail_msg("keys_out written at byte %zu", i);
}

static void test_keys_out_only_on_success(void **st) {
  (void)st;
  epode__sasl_params p;
  epode_scram_keys out;
  ex x;
  params_init(&p);
  p.scram_keys_out = &out;

  /* wrong v= */
  memset(&out, 0xA5, sizeof out);
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_OK);
  assert_untouched(&out); /* not before the server proved itself */
  assert_int_equal(ex_success(&x, "v=AmF9pqV8S7suAoZWja4dJRkFsKQ="), EPODE_ERR_SASL_SIGNATURE);
  assert_untouched(&out);
  ex_free(&x);

  /* e= */
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_OK);
  assert_int_equal(ex_success(&x, "e=invalid-proof"), EPODE_ERR_AUTH);
  assert_untouched(&out);
  ex_free(&x);

  /* success without v= */
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_OK);
  assert_int_equal(ex_success(&x, NULL), EPODE_ERR_SASL_SIGNATURE);
  assert_untouched(&out);
  ex_free(&x);

  /* freed before the end */
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_OK);
  ex_free(&x);
  assert_untouched(&out);

  /* a right v= as a challenge, then a wrong v= in <success/> */
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_V), EPODE_OK);
  assert_int_equal(ex_success(&x, "v=AmF9pqV8S7suAoZWja4dJRkFsKQ="), EPODE_ERR_SASL_SIGNATURE);
  assert_untouched(&out);
  ex_free(&x);

  /* a right v= as a challenge, then an empty <success/>: filled */
  epode_scram_keys want;
  keys_set(&want, "SHA-1", salt5802, 12, 4096, sha1_ck, sha1_sk, 20);
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_V), EPODE_OK);
  assert_untouched(&out);
  assert_int_equal(ex_success(&x, NULL), EPODE_OK);
  assert_keys_equal(&out, &want);
  /* the unused tail of the struct is zeroed, not left as it was */
  assert_int_equal(out.client_key[20], 0);
  assert_int_equal(out.salt[12], 0);
  ex_free(&x);

  /* the same when the keys came from the cache and the server is wrong */
  memset(&out, 0xA5, sizeof out);
  p.password = NULL;
  p.scram_keys = &want;
  assert_int_equal(ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE), EPODE_OK);
  assert_int_equal(ex_step(&x, RFC5802_SFIRST), EPODE_OK);
  assert_int_equal(ex_success(&x, "v=AmF9pqV8S7suAoZWja4dJRkFsKQ="), EPODE_ERR_SASL_SIGNATURE);
  assert_untouched(&out);
  ex_free(&x);
}

/* A salt longer than epode_scram_keys can hold: the login works, nothing
 * is recorded (Python-derived exchange, see the top comment). */
static void test_salt_too_long_for_cache(void **st) {
  (void)st;
  const char *sfirst =
      "r=fyko+d2lbbFgONRv9qkxdawLsrv,s=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygp"
      "KissLS4vMDEyMzQ1Njc4OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWpr"
      "bG1ub3BxcnN0dXZ3eHl6e3x9fn+A,i=4096";
  epode__sasl_params p;
  params_init(&p);
  epode_scram_keys out;
  memset(&out, 0xA5, sizeof out);
  p.scram_keys_out = &out;
  run(&epode__sasl_scram_sha1, &p, RFC5802_NONCE, sfirst,
      "c=biws,r=fyko+d2lbbFgONRv9qkxdawLsrv,p=twdU26buPa9Z6Hb8Hjj1bzUvPn0=",
      "v=rVs3Gr/6VDp57LudupGLaONYhYM=");
  assert_untouched(&out);
}

/* ------------------------------------------------------------ allocation */

static void test_alloc_failures(void **st) {
  (void)st;
  epode_scram_keys k;
  keys_set(&k, "SHA-1", salt5802, 12, 4096, sha1_ck, sha1_sk, 20);
  static const char *const mechs[] = {"SCRAM-SHA-1", "PLAIN", NULL};
  /* 0: keys used; 1: keys mismatch, password used; 2: keys, no password,
   * mismatch (fails cleanly with EPODE_ERR_AUTH) */
  for (int mode = 0; mode < 3; mode++) {
    int completed = 0;
    long n;
    for (n = 0; n < 200 && !completed; n++) {
      epode_test_failmem f;
      epode_test_failmem_init_budget(&f, n);
      epode__sasl_params p;
      params_init(&p);
      p.mem = &f.mem;
      p.scram_keys = &k;
      p.password = mode == 1 ? "pencil" : NULL;
      p.server_mechs = mechs;
      epode_scram_keys out;
      memset(&out, 0xA5, sizeof out);
      p.scram_keys_out = &out;
      ex x;
      const char *sfirst = mode == 0 ? RFC5802_SFIRST : OTHER_ITER_SFIRST;
      epode_err e = ex_start(&x, &epode__sasl_scram_sha1, &p, RFC5802_NONCE);
      if (!e) e = ex_step(&x, sfirst);
      if (!e) e = ex_success(&x, mode == 0 ? RFC5802_V : "v=AmF9pqV8S7suAoZWja4dJRkFsKQ=");
      if ((mode == 0 && e == EPODE_OK) || (mode == 1 && e == EPODE_ERR_SASL_SIGNATURE) ||
          (mode == 2 && e == EPODE_ERR_AUTH)) {
        completed = 1;
        if (mode == 0)
          assert_keys_equal(&out, &k);
        else
          assert_untouched(&out);
      } else {
        assert_int_equal(e, EPODE_ERR_NOMEM);
        if (x.st) assert_non_null(x.m->errmsg(x.st));
        assert_untouched(&out);
      }
      ex_free(&x);
      assert_int_equal(f.live, 0);
    }
    assert_true(completed);
    assert_true(n > 2);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip_sha1),
      cmocka_unit_test(test_roundtrip_sha256),
      cmocka_unit_test(test_roundtrip_sha512),
      cmocka_unit_test(test_plus_with_keys),
      cmocka_unit_test(test_mismatch_salt),
      cmocka_unit_test(test_mismatch_iterations),
      cmocka_unit_test(test_mismatch_hash),
      cmocka_unit_test(test_start_rules),
      cmocka_unit_test(test_keys_out_only_on_success),
      cmocka_unit_test(test_salt_too_long_for_cache),
      cmocka_unit_test(test_alloc_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
