/* TLS client certificates (XEP-0178): an in-test OpenSSL server that
 * requires a client certificate and verifies it against the test CA sees
 * exactly the certificate configured, from every source (PEM cert + key
 * files, one combined PEM either way round, a PEM chain with an
 * intermediate, PKCS#12 with and without password, PKCS#12 with its CA
 * chain). Every bad input fails in epode__tls_new with EPODE_ERR_TLS and a
 * detail naming the file and the reason; nothing secret reaches the log.
 * Certificates and PKCS#12 files are made at run time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "epode/sasl.h"
#include "net/net.h"
#include "test_net_support.h"
#include "util/config_int.h"

#define P12_PW "hunter2 \xc3\xa9t\xc3\xa9" /* non-ASCII on purpose: PKCS#12 uses UTF-8 → BMP */

static tcert ca, srv_leaf, inter, cli, cli2, stranger;
static char ca_path[64];
static char f_cert[64], f_key[64], f_comb[64], f_comb_keyfirst[64], f_chain[64], f_stranger_key[64],
    f_p12[64], f_p12_nopw[64], f_p12_chain[64], f_garbage[64], f_empty[64], f_enc_key[64];

/* ------------------------------------------------------------------ helpers */

static epode_config *cfg_new(void) {
  epode_config *cfg;
  assert_int_equal(epode_config_new(&cfg, NULL), EPODE_OK);
  assert_int_equal(epode_config_set_cafile(cfg, ca_path), EPODE_OK);
  return cfg;
}

static epode_config *cfg_pem(const char *cert, const char *key) {
  epode_config *cfg = cfg_new();
  assert_int_equal(epode_config_set_client_cert(cfg, cert, key), EPODE_OK);
  return cfg;
}

static epode_config *cfg_p12(const char *p12, const char *pw) {
  epode_config *cfg = cfg_new();
  assert_int_equal(epode_config_set_client_pkcs12(cfg, p12, pw), EPODE_OK);
  return cfg;
}

/* The server requires a client certificate that chains to the test CA
 * (and only to it: intermediates must come from the client). */
static void require_client_cert(pair *p) {
  X509_STORE *st = X509_STORE_new();
  assert_non_null(st);
  assert_int_equal(X509_STORE_add_cert(st, ca.cert), 1);
  SSL_set0_verify_cert_store(p->srv, st);
  SSL_set_verify(p->srv, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
}

/* Handshake with a server requiring a client certificate; the server must
 * have verified `want` (and got `want_chain` as the only other cert when
 * non-NULL). Takes `cfg`. */
static void expect_presented(epode_config *cfg, int maxv, const tcert *want,
                             const tcert *want_chain) {
  pair p;
  pair_init_cfg(&p, cfg, &srv_leaf, NULL, 0, maxv, "localhost", 0);
  require_client_cert(&p);
  assert_int_equal(handshake(&p), EPODE__TLS_DONE);
  assert_true(SSL_is_init_finished(p.srv));
  assert_int_equal(SSL_get_verify_result(p.srv), X509_V_OK);
  X509 *peer = SSL_get0_peer_certificate(p.srv);
  assert_non_null(peer);
  assert_int_equal(X509_cmp(peer, want->cert), 0);
  /* On the server side the chain does not include the leaf. */
  STACK_OF(X509) *chain = SSL_get_peer_cert_chain(p.srv);
  if (want_chain) {
    assert_non_null(chain);
    assert_int_equal(sk_X509_num(chain), 1);
    assert_int_equal(X509_cmp(sk_X509_value(chain, 0), want_chain->cert), 0);
  }
  /* Data flows both ways afterwards. */
  assert_int_equal(epode__tls_write(p.cli, "<x/>", 4), EPODE_OK);
  shuttle(&p);
  char buf[8];
  assert_int_equal(SSL_read(p.srv, buf, sizeof buf), 4);
  pair_free(&p);
}

/* epode__tls_new must fail with EPODE_ERR_TLS and a detail holding every
 * one of the (NULL-terminated) fragments. Takes `cfg`. */
static void expect_load_error(epode_config *cfg, ...) {
  epode__tls *t = (epode__tls *)1;
  char detail[1024];
  assert_int_equal(epode__tls_new(&t, cfg, "localhost", 0, detail, sizeof detail), EPODE_ERR_TLS);
  assert_null(t);
  va_list ap;
  va_start(ap, cfg);
  const char *frag;
  while ((frag = va_arg(ap, const char *)) != NULL) {
    if (!strstr(detail, frag)) fail_msg("detail \"%s\" lacks \"%s\"", detail, frag);
  }
  va_end(ap);
  assert_int_equal(ERR_peek_error(), 0); /* nothing left for a later call */
  epode_config_free(cfg);
}

/* ------------------------------------------------------------------ success */

static void test_pem_separate_key_tls13(void **state) {
  expect_presented(cfg_pem(f_cert, f_key), 0, &cli, NULL);
}

static void test_pem_separate_key_tls12(void **state) {
  expect_presented(cfg_pem(f_cert, f_key), TLS1_2_VERSION, &cli, NULL);
}

static void test_pem_combined(void **state) {
  expect_presented(cfg_pem(f_comb, NULL), 0, &cli, NULL);
  expect_presented(cfg_pem(f_comb_keyfirst, NULL), 0, &cli, NULL);
}

static void test_pem_chain(void **state) {
  /* cli2 is signed by an intermediate the server does not have: it
   * verifies only because the file's second certificate is sent too. */
  expect_presented(cfg_pem(f_chain, NULL), 0, &cli2, &inter);
  expect_presented(cfg_pem(f_chain, NULL), TLS1_2_VERSION, &cli2, &inter);
}

static void test_p12_with_password(void **state) {
  expect_presented(cfg_p12(f_p12, P12_PW), 0, &cli, NULL);
  expect_presented(cfg_p12(f_p12, P12_PW), TLS1_2_VERSION, &cli, NULL);
}

static void test_p12_without_password(void **state) {
  expect_presented(cfg_p12(f_p12_nopw, NULL), 0, &cli, NULL);
  expect_presented(cfg_p12(f_p12_nopw, ""), 0, &cli, NULL);
}

static void test_p12_chain(void **state) {
  expect_presented(cfg_p12(f_p12_chain, P12_PW), 0, &cli2, &inter);
}

static void test_direct_tls_offers_cert(void **state) {
  /* ALPN and all: the certificate does not depend on the mode. */
  pair p;
  pair_init_cfg(&p, cfg_pem(f_cert, f_key), &srv_leaf, NULL, 0, 0, "localhost", 1);
  require_client_cert(&p);
  assert_int_equal(handshake(&p), EPODE__TLS_DONE);
  assert_true(SSL_is_init_finished(p.srv));
  assert_int_equal(p.alpn_len, 12);
  assert_int_equal(X509_cmp(SSL_get0_peer_certificate(p.srv), cli.cert), 0);
  pair_free(&p);
}

static void test_no_cert_is_refused(void **state) {
  /* The control: without a certificate this server does not let us in. */
  pair p;
  pair_init_cfg(&p, cfg_new(), &srv_leaf, NULL, 0, TLS1_2_VERSION, "localhost", 0);
  require_client_cert(&p);
  assert_int_equal(handshake(&p), EPODE_ERR_TLS);
  assert_false(SSL_is_init_finished(p.srv));
  pair_free(&p);
}

static void test_loader_alone(void **state) {
  /* The function other transports will call, on a context of their own. */
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  char err[512];
  epode_config *none = cfg_new();
  assert_int_equal(epode__tls_load_client_cert(ctx, none, err, sizeof err), EPODE_OK);
  assert_null(SSL_CTX_get0_certificate(ctx));
  epode_config *cfg = cfg_p12(f_p12_chain, P12_PW);
  assert_int_equal(epode__tls_load_client_cert(ctx, cfg, err, sizeof err), EPODE_OK);
  assert_int_equal(X509_cmp(SSL_CTX_get0_certificate(ctx), cli2.cert), 0);
  STACK_OF(X509) *chain = NULL;
  assert_int_equal(SSL_CTX_get0_chain_certs(ctx, &chain), 1);
  assert_int_equal(sk_X509_num(chain), 1);
  assert_int_equal(X509_cmp(sk_X509_value(chain, 0), inter.cert), 0);
  assert_int_equal(epode__tls_load_client_cert(NULL, cfg, err, sizeof err), EPODE_ERR_INVAL);
  epode_config_free(cfg);
  epode_config_free(none);
  SSL_CTX_free(ctx);
}

/* ------------------------------------------------------------------ failures */

static void test_missing_files(void **state) {
  expect_load_error(cfg_pem("/nonexistent/alice.pem", NULL), "client certificate file",
                    "/nonexistent/alice.pem", "No such file or directory", NULL);
  expect_load_error(cfg_pem(f_cert, "/nonexistent/alice.key"), "client key file",
                    "/nonexistent/alice.key", "No such file or directory", NULL);
  expect_load_error(cfg_p12("/nonexistent/alice.p12", "x"), "PKCS#12 file",
                    "/nonexistent/alice.p12", "No such file or directory", NULL);
  expect_load_error(cfg_pem("/tmp", NULL), "/tmp", "not a regular file", NULL);
  expect_load_error(cfg_pem(f_empty, NULL), f_empty, "is empty", NULL);
}

static void test_not_a_certificate(void **state) {
  expect_load_error(cfg_pem(f_garbage, NULL), f_garbage, "holds no PEM certificate", NULL);
  /* A certificate-only file without a key file. */
  expect_load_error(cfg_pem(f_cert, NULL), f_cert, "holds no PEM private key",
                    "give the key file as well", NULL);
  /* The key file holds a certificate. */
  expect_load_error(cfg_pem(f_cert, f_cert), f_cert, "holds no PEM private key", NULL);
  /* PEM given as PKCS#12, and junk as PKCS#12. */
  expect_load_error(cfg_p12(f_comb, NULL), f_comb, "is not a PKCS#12 file", "looks like PEM", NULL);
  expect_load_error(cfg_p12(f_garbage, NULL), f_garbage, "is not a PKCS#12 file", NULL);
}

static void test_corrupt_pem(void **state) {
  /* A certificate block whose base64 is damaged in the middle. */
  char path[64];
  FILE *f = t_tmpfile(path, sizeof path, "bad");
  fputs("-----BEGIN CERTIFICATE-----\nMIIBnotbase64!!!!\n-----END CERTIFICATE-----\n", f);
  fclose(f);
  expect_load_error(cfg_pem(path, f_key), path, "cannot be parsed", NULL);
  unlink(path);
}

static void test_key_mismatch(void **state) {
  expect_load_error(cfg_pem(f_cert, f_stranger_key), "does not match", f_stranger_key, f_cert,
                    NULL);
}

static void test_p12_wrong_password(void **state) {
  expect_load_error(cfg_p12(f_p12, "wrong"), "wrong password", f_p12, NULL);
  expect_load_error(cfg_p12(f_p12, NULL), f_p12, "protected by a password", "none was given", NULL);
  /* A password for a file that has none is wrong too. */
  expect_load_error(cfg_p12(f_p12_nopw, "extra"), "wrong password", f_p12_nopw, NULL);
}

static void test_encrypted_pem_key(void **state) {
  /* Refused with a reason, never prompted for on the terminal. */
  expect_load_error(cfg_pem(f_cert, f_enc_key), f_enc_key, "is encrypted", NULL);
}

/* ------------------------------------------------------------------ secrets stay out of logs */

typedef struct logbuf {
  char text[16384];
  size_t n;
} logbuf;

static void log_fn(void *ud, epode_log_level lvl, const char *area, const char *msg) {
  logbuf *b = ud;
  (void)lvl;
  (void)area;
  b->n += (size_t)snprintf(b->text + b->n, sizeof b->text - b->n, "%s\n", msg);
  if (b->n >= sizeof b->text) b->n = sizeof b->text - 1;
}

static void test_no_secrets_logged(void **state) {
  logbuf lb = {{0}, 0};
  epode_config *cfg = cfg_p12(f_p12, P12_PW);
  assert_int_equal(epode_config_set_log(cfg, log_fn, &lb, EPODE_LOG_TRAFFIC), EPODE_OK);
  expect_presented(cfg, 0, &cli, NULL);
  cfg = cfg_p12(f_p12, "wrong-password-xyz");
  assert_int_equal(epode_config_set_log(cfg, log_fn, &lb, EPODE_LOG_TRAFFIC), EPODE_OK);
  expect_load_error(cfg, "wrong password", NULL);
  cfg = cfg_pem(f_comb, NULL);
  assert_int_equal(epode_config_set_log(cfg, log_fn, &lb, EPODE_LOG_TRAFFIC), EPODE_OK);
  expect_presented(cfg, 0, &cli, NULL);
  /* It did log (the certificate's subject), but nothing secret. */
  assert_non_null(strstr(lb.text, "CN=alice@localhost"));
  assert_null(strstr(lb.text, "hunter2"));
  assert_null(strstr(lb.text, "wrong-password-xyz"));
  assert_null(strstr(lb.text, "PRIVATE KEY"));
}

/* ------------------------------------------------------------------ fixtures */

static int group_setup(void **state) {
  ca = t_cert("epode test CA", NULL, NULL, NULL);
  srv_leaf = t_cert("localhost", &ca, "DNS:localhost,IP:127.0.0.1", NULL);
  inter = t_cert_kind("epode intermediate CA", &ca, T_CA, NULL, NULL);
  cli = t_cert_kind("alice@localhost", &ca, T_CLIENT,
                    "otherName:1.3.6.1.5.5.7.8.5;UTF8:alice@localhost", NULL);
  cli2 = t_cert_kind("bob@localhost", &inter, T_CLIENT, NULL, NULL);
  stranger = t_cert_kind("mallory@localhost", &ca, T_CLIENT, NULL, NULL);
  t_write_pem(&ca, ca_path, sizeof ca_path);
  t_write_pems(f_cert, sizeof f_cert, &cli.cert, 1, NULL, 0);
  t_write_pems(f_key, sizeof f_key, NULL, 0, cli.key, 0);
  t_write_pems(f_comb, sizeof f_comb, &cli.cert, 1, cli.key, 0);
  t_write_pems(f_comb_keyfirst, sizeof f_comb_keyfirst, &cli.cert, 1, cli.key, 1);
  X509 *chain[2] = {cli2.cert, inter.cert};
  t_write_pems(f_chain, sizeof f_chain, chain, 2, cli2.key, 0);
  t_write_pems(f_stranger_key, sizeof f_stranger_key, NULL, 0, stranger.key, 0);
  t_write_p12(f_p12, sizeof f_p12, &cli, NULL, P12_PW);
  t_write_p12(f_p12_nopw, sizeof f_p12_nopw, &cli, NULL, NULL);
  t_write_p12(f_p12_chain, sizeof f_p12_chain, &cli2, &inter, P12_PW);
  FILE *f = t_tmpfile(f_garbage, sizeof f_garbage, "junk");
  fputs("this is not a certificate\n", f);
  fclose(f);
  fclose(t_tmpfile(f_empty, sizeof f_empty, "empty"));
  f = t_tmpfile(f_enc_key, sizeof f_enc_key, "enc");
  if (!PEM_write_PrivateKey(f, cli.key, EVP_aes_256_cbc(), (unsigned char *)"pw", 2, NULL, NULL))
    abort();
  fclose(f);
  return 0;
}

static int group_teardown(void **state) {
  const char *files[] = {ca_path, f_cert,         f_key,    f_comb,     f_comb_keyfirst,
                         f_chain, f_stranger_key, f_p12,    f_p12_nopw, f_p12_chain,
                         f_empty, f_garbage,      f_enc_key};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++)
    unlink(files[i]);
  tcert *all[] = {&ca, &srv_leaf, &inter, &cli, &cli2, &stranger};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++)
    t_cert_free(all[i]);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pem_separate_key_tls13),
      cmocka_unit_test(test_pem_separate_key_tls12),
      cmocka_unit_test(test_pem_combined),
      cmocka_unit_test(test_pem_chain),
      cmocka_unit_test(test_p12_with_password),
      cmocka_unit_test(test_p12_without_password),
      cmocka_unit_test(test_p12_chain),
      cmocka_unit_test(test_direct_tls_offers_cert),
      cmocka_unit_test(test_no_cert_is_refused),
      cmocka_unit_test(test_loader_alone),
      cmocka_unit_test(test_missing_files),
      cmocka_unit_test(test_not_a_certificate),
      cmocka_unit_test(test_corrupt_pem),
      cmocka_unit_test(test_key_mismatch),
      cmocka_unit_test(test_p12_wrong_password),
      cmocka_unit_test(test_encrypted_pem_key),
      cmocka_unit_test(test_no_secrets_logged),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
