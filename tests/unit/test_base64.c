/* Base64: RFC 4648 vectors, round trips checked against OpenSSL's
 * EVP_EncodeBlock (an independent encoder), and every class of invalid
 * input the strict decoder must refuse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "epode/base64.h"
#include "util/base64_int.h"
#include "util/buf.h"

#include "failmem.h"

static void enc_is(const char *in, const char *want) {
  char *out = NULL;
  size_t ol = 99;
  assert_int_equal(epode_base64_encode(NULL, in, strlen(in), &out, &ol), EPODE_OK);
  assert_non_null(out);
  assert_int_equal(ol, strlen(want));
  assert_string_equal(out, want);
  epode_free(NULL, out);
}

static void dec_is(const char *in, const char *want) {
  unsigned char *out = NULL;
  size_t ol = 99;
  assert_int_equal(epode_base64_decode(NULL, in, strlen(in), &out, &ol), EPODE_OK);
  assert_non_null(out);
  assert_int_equal(ol, strlen(want));
  assert_memory_equal(out, want, ol);
  assert_int_equal(out[ol], 0);
  epode_free(NULL, out);
}

static void dec_bad(const char *in, size_t len) {
  unsigned char *out = (unsigned char *)"sentinel";
  size_t ol = 99;
  assert_int_equal(epode_base64_decode(NULL, in, len, &out, &ol), EPODE_ERR_BASE64);
  assert_null(out);
  assert_int_equal(ol, 0);
}

static void test_rfc4648_vectors(void **st) {
  (void)st;
  static const char *v[][2] = {{"", ""},
                               {"f", "Zg=="},
                               {"fo", "Zm8="},
                               {"foo", "Zm9v"},
                               {"foob", "Zm9vYg=="},
                               {"fooba", "Zm9vYmE="},
                               {"foobar", "Zm9vYmFy"}};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    enc_is(v[i][0], v[i][1]);
    dec_is(v[i][1], v[i][0]);
  }
}

static void test_all_byte_values(void **st) {
  (void)st;
  unsigned char all[256];
  for (int i = 0; i < 256; i++)
    all[i] = (unsigned char)i;
  char *e = NULL;
  size_t el;
  assert_int_equal(epode_base64_encode(NULL, all, sizeof all, &e, &el), EPODE_OK);
  unsigned char ref[400];
  int rl = EVP_EncodeBlock(ref, all, (int)sizeof all);
  assert_int_equal(el, (size_t)rl);
  assert_memory_equal(e, ref, el);
  unsigned char *d = NULL;
  size_t dl;
  assert_int_equal(epode_base64_decode(NULL, e, el, &d, &dl), EPODE_OK);
  assert_int_equal(dl, sizeof all);
  assert_memory_equal(d, all, dl);
  epode_free(NULL, e);
  epode_free(NULL, d);
}

static uint32_t rng(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

static void test_round_trips(void **st) {
  (void)st;
  uint32_t seed = 0x2545F491u;
  unsigned char data[300], ref[404];
  for (int round = 0; round < 4; round++) {
    for (size_t len = 0; len <= 300; len++) {
      for (size_t i = 0; i < len; i++)
        data[i] = (unsigned char)rng(&seed);
      char *e = NULL;
      size_t el;
      assert_int_equal(epode_base64_encode(NULL, data, len, &e, &el), EPODE_OK);
      int rl = EVP_EncodeBlock(ref, data, (int)len);
      assert_int_equal(el, (size_t)rl);
      assert_memory_equal(e, ref, el);
      assert_int_equal(e[el], '\0');
      unsigned char *d = NULL;
      size_t dl;
      assert_int_equal(epode_base64_decode(NULL, e, el, &d, &dl), EPODE_OK);
      assert_int_equal(dl, len);
      if (len) assert_memory_equal(d, data, len);
      epode_free(NULL, e);
      epode_free(NULL, d);
    }
  }
}

static void test_empty(void **st) {
  (void)st;
  char *e = NULL;
  size_t el = 5;
  assert_int_equal(epode_base64_encode(NULL, NULL, 0, &e, &el), EPODE_OK);
  assert_non_null(e);
  assert_int_equal(el, 0);
  assert_string_equal(e, "");
  epode_free(NULL, e);
  unsigned char *d = NULL;
  size_t dl = 5;
  assert_int_equal(epode_base64_decode(NULL, "", 0, &d, &dl), EPODE_OK);
  assert_non_null(d);
  assert_int_equal(dl, 0);
  assert_int_equal(d[0], 0);
  epode_free(NULL, d);
}

static void test_invalid(void **st) {
  (void)st;
  /* length not a multiple of 4 / missing padding */
  dec_bad("Zg", 2);
  dec_bad("Zg=", 3);
  dec_bad("Zm8", 3);
  dec_bad("Zm9vY", 5);
  dec_bad("Z", 1);
  /* extra padding */
  dec_bad("Zg===", 5);
  dec_bad("Zg==Zg==", 8); /* padding then more data */
  dec_bad("Zm9v====", 8);
  dec_bad("Z===", 4);
  dec_bad("====", 4);
  dec_bad("Zm8==", 5);
  /* '=' in the middle */
  dec_bad("Zm=v", 4);
  dec_bad("Z=9v", 4);
  dec_bad("=m9v", 4);
  dec_bad("Zm9=Zm9v", 8);
  dec_bad("Zg=A", 4);
  /* non-zero trailing bits: "Zh==" is 'f' with a stray bit, "Zm9=" is "fo"
   * with a stray bit */
  dec_bad("Zh==", 4);
  dec_bad("Zv==", 4);
  dec_bad("Zm9=", 4);
  dec_bad("Zm+=", 4);
  /* characters outside the alphabet */
  dec_bad("Zm9*", 4);
  dec_bad("Zm9-", 4); /* base64url */
  dec_bad("Zm9_", 4);
  dec_bad("Zm\x80v", 4);
  dec_bad("Zm\xffv", 4);
  dec_bad("Zm9vYm.y", 8);
  dec_bad("Zm\0v", 4);
  /* whitespace anywhere */
  dec_bad("Zm9 v", 5);
  dec_bad("Zm9v\n", 5);
  dec_bad(" Zm9v", 5);
  dec_bad("Zm9\nYmFy", 8);
  dec_bad("Zm9vYmF\r", 8);
  dec_bad("Zm9\tYmFy", 8);
  dec_bad("Zm9v Zg=", 8);
}

static void test_buf_and_raw(void **st) {
  (void)st;
  epode__buf b;
  epode__buf_init(&b, NULL, 10);
  assert_int_equal(epode__buf_append_str(&b, "x:"), EPODE_OK);
  assert_int_equal(epode__base64_enc_buf(&b, "foob", 4), EPODE_OK);
  assert_string_equal(b.data, "x:Zm9vYg==");
  /* over the cap: the buffer is unchanged */
  assert_int_equal(epode__base64_enc_buf(&b, "f", 1), EPODE_ERR_LIMIT);
  assert_string_equal(b.data, "x:Zm9vYg==");
  epode__buf_free(&b);
  /* large input spans several internal chunks */
  unsigned char big[5000];
  uint32_t seed = 7;
  for (size_t i = 0; i < sizeof big; i++)
    big[i] = (unsigned char)rng(&seed);
  epode__buf_init(&b, NULL, 0);
  assert_int_equal(epode__base64_enc_buf(&b, big, sizeof big), EPODE_OK);
  static unsigned char ref[7000];
  int rl = EVP_EncodeBlock(ref, big, (int)sizeof big);
  assert_int_equal(b.len, (size_t)rl);
  assert_memory_equal(b.data, ref, b.len);
  unsigned char back[sizeof big];
  size_t bl;
  assert_int_equal(epode__base64_dec(b.data, b.len, back, &bl), EPODE_OK);
  assert_int_equal(bl, sizeof big);
  assert_memory_equal(back, big, bl);
  epode__buf_free(&b);
}

static void test_nomem(void **st) {
  (void)st;
  epode_test_failmem f;
  epode_test_failmem_init_budget(&f, 0); /* every allocation fails */
  epode_mem m = f.mem;
  char *e = (char *)"x";
  assert_int_equal(epode_base64_encode(&m, "foo", 3, &e, NULL), EPODE_ERR_NOMEM);
  assert_null(e);
  unsigned char *d = (unsigned char *)"x";
  assert_int_equal(epode_base64_decode(&m, "Zm9v", 4, &d, NULL), EPODE_ERR_NOMEM);
  assert_null(d);
  /* invalid length is refused before any allocation */
  assert_int_equal(epode_base64_decode(&m, "Zm9", 3, &d, NULL), EPODE_ERR_BASE64);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rfc4648_vectors), cmocka_unit_test(test_all_byte_values),
      cmocka_unit_test(test_round_trips),     cmocka_unit_test(test_empty),
      cmocka_unit_test(test_invalid),         cmocka_unit_test(test_buf_and_raw),
      cmocka_unit_test(test_nomem),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
