/* TLS over memory BIOs against an in-test OpenSSL server: certificates
 * made at run time (a test CA with a "localhost" server, and an unrelated
 * CA), verification outcomes and their reasons, SNI and ALPN as the server
 * saw them, channel-binding values compared with what the server side
 * computes itself, the configured TLS version range, and hostile bytes.
 * (Client certificates: test_client_cert.c.) */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "net/net.h"
#include "test_net_support.h"
#include "util/config_int.h"

static tcert ca, leaf, leaf384, other_ca, other_leaf;
static char ca_path[64];

static int group_setup(void **state) {
  ca = t_cert("epode test CA", NULL, NULL, NULL);
  leaf = t_cert("localhost", &ca, "DNS:localhost,IP:127.0.0.1", NULL);
  leaf384 = t_cert("localhost", &ca, "DNS:localhost", EVP_sha384());
  other_ca = t_cert("untrusted CA", NULL, NULL, NULL);
  other_leaf = t_cert("localhost", &other_ca, "DNS:localhost", NULL);
  t_write_pem(&ca, ca_path, sizeof ca_path);
  return 0;
}

static int group_teardown(void **state) {
  unlink(ca_path);
  tcert *all[] = {&ca, &leaf, &leaf384, &other_ca, &other_leaf};
  for (size_t i = 0; i < 5; i++)
    t_cert_free(all[i]);
  return 0;
}

static void test_verify_ok_tls13(void **state) {
  pair p;
  pair_init(&p, &leaf, NULL, 0, "localhost", 0, 0, ca_path);
  assert_int_equal(handshake(&p), EPODE__TLS_DONE);
  assert_true(epode__tls_handshake_done(p.cli));
  assert_true(p.sni_seen);
  assert_string_equal(p.sni, "localhost");
  assert_int_equal(p.alpn_len, 0); /* STARTTLS: no ALPN */
  epode_tls_info info;
  epode__tls_info(p.cli, &info);
  assert_int_equal(info.version, 0x0304);
  assert_null(info.tls_unique); /* undefined for TLS 1.3 */
  assert_int_equal(info.tls_exporter_len, 32);
  unsigned char want[32];
  static const char label[] = "EXPORTER-Channel-Binding";
  assert_int_equal(
      SSL_export_keying_material(p.srv, want, sizeof want, label, sizeof label - 1, NULL, 0, 0), 1);
  assert_memory_equal(info.tls_exporter, want, 32);
  /* tls-server-end-point: SHA-256 (the signature's digest) of the leaf. */
  unsigned char ep[EVP_MAX_MD_SIZE];
  unsigned eplen = 0;
  X509_digest(leaf.cert, EVP_sha256(), ep, &eplen);
  assert_int_equal(info.tls_server_end_point_len, eplen);
  assert_memory_equal(info.tls_server_end_point, ep, eplen);
  pair_free(&p);
}

static void test_channel_binding_tls12(void **state) {
  pair p;
  pair_init(&p, &leaf, NULL, TLS1_2_VERSION, "localhost", 0, 0, ca_path);
  assert_int_equal(handshake(&p), EPODE__TLS_DONE);
  epode_tls_info info;
  epode__tls_info(p.cli, &info);
  assert_int_equal(info.version, 0x0303);
  /* tls-unique: the client's Finished, which the server saw as the peer's. */
  unsigned char fin[64];
  size_t fl = SSL_get_peer_finished(p.srv, fin, sizeof fin);
  assert_true(fl > 0);
  assert_int_equal(info.tls_unique_len, fl);
  assert_memory_equal(info.tls_unique, fin, fl);
  /* Extended master secret is negotiated by default: the exporter too. */
  assert_int_equal(SSL_get_extms_support(p.srv), 1);
  unsigned char want[32];
  static const char label[] = "EXPORTER-Channel-Binding";
  assert_int_equal(
      SSL_export_keying_material(p.srv, want, sizeof want, label, sizeof label - 1, NULL, 0, 0), 1);
  assert_int_equal(info.tls_exporter_len, 32);
  assert_memory_equal(info.tls_exporter, want, 32);
  pair_free(&p);
}

static void test_end_point_sha384(void **state) {
  pair p;
  pair_init(&p, &leaf384, NULL, 0, "localhost", 0, 0, ca_path);
  assert_int_equal(handshake(&p), EPODE__TLS_DONE);
  epode_tls_info info;
  epode__tls_info(p.cli, &info);
  unsigned char ep[EVP_MAX_MD_SIZE];
  unsigned eplen = 0;
  X509_digest(leaf384.cert, EVP_sha384(), ep, &eplen);
  assert_int_equal(eplen, 48);
  assert_int_equal(info.tls_server_end_point_len, 48);
  assert_memory_equal(info.tls_server_end_point, ep, eplen);
  pair_free(&p);
}

static void test_untrusted_ca(void **state) {
  pair p;
  pair_init(&p, &other_leaf, &other_ca, 0, "localhost", 0, 0, ca_path);
  assert_int_equal(handshake(&p), EPODE_ERR_TLS_VERIFY);
  const char *d = epode__tls_detail(p.cli);
  assert_non_null(strstr(d, "localhost"));
  assert_non_null(strstr(d, X509_verify_cert_error_string(X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN)));
  pair_free(&p);
}

static void test_untrusted_leaf_only(void **state) {
  pair p;
  pair_init(&p, &other_leaf, NULL, 0, "localhost", 0, 0, ca_path);
  assert_int_equal(handshake(&p), EPODE_ERR_TLS_VERIFY);
  assert_non_null(
      strstr(epode__tls_detail(p.cli),
             X509_verify_cert_error_string(X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY)));
  pair_free(&p);
}

static void test_wrong_hostname(void **state) {
  pair p;
  pair_init(&p, &leaf, NULL, 0, "example.org", 0, 0, ca_path);
  assert_int_equal(handshake(&p), EPODE_ERR_TLS_VERIFY);
  assert_non_null(strstr(epode__tls_detail(p.cli), "hostname mismatch"));
  assert_string_equal(p.sni, "example.org");
  pair_free(&p);
}

static void test_ip_literal_no_sni(void **state) {
  pair p;
  pair_init(&p, &leaf, NULL, 0, "127.0.0.1", 0, 0, ca_path);
  assert_int_equal(handshake(&p), EPODE__TLS_DONE);
  assert_false(p.sni_seen);
  pair_free(&p);
  /* …and the address is verified: the 384 leaf has no IP in its SAN. */
  pair_init(&p, &leaf384, NULL, 0, "127.0.0.1", 0, 0, ca_path);
  assert_int_equal(handshake(&p), EPODE_ERR_TLS_VERIFY);
  assert_non_null(strstr(epode__tls_detail(p.cli), "IP address mismatch"));
  pair_free(&p);
}

static void test_no_verify(void **state) {
  pair p;
  pair_init(&p, &other_leaf, NULL, 0, "wrong.example", 0, EPODE_CFG_TLS_NO_VERIFY, ca_path);
  assert_int_equal(handshake(&p), EPODE__TLS_DONE);
  pair_free(&p);
}

static void test_alpn_direct(void **state) {
  pair p;
  pair_init(&p, &leaf, NULL, 0, "localhost", 1, 0, ca_path);
  assert_int_equal(handshake(&p), EPODE__TLS_DONE);
  assert_int_equal(p.alpn_len, 12);
  assert_memory_equal(p.alpn, "\x0bxmpp-client", 12);
  size_t l = 0;
  const char *sel = epode__tls_alpn(p.cli, &l);
  assert_non_null(sel);
  assert_int_equal(l, 11);
  assert_memory_equal(sel, "xmpp-client", 11);
  pair_free(&p);
}

static void test_garbage_from_server(void **state) {
  pair p;
  pair_init(&p, &leaf, NULL, 0, "localhost", 1, 0, ca_path);
  assert_int_equal(epode__tls_handshake(p.cli), EPODE__TLS_AGAIN);
  assert_true(epode__tls_out_len(p.cli) > 0); /* the ClientHello */
  static const char junk[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
  assert_int_equal(epode__tls_feed(p.cli, junk, sizeof junk - 1), EPODE_OK);
  assert_int_equal(epode__tls_handshake(p.cli), EPODE_ERR_TLS);
  assert_non_null(strstr(epode__tls_detail(p.cli), "TLS handshake with localhost failed: "));
  pair_free(&p);

  /* Random bytes in several sizes, and an XMPP stream header. */
  static const struct {
    const char *p;
    size_t n;
  } inputs[] = {{"<?xml version='1.0'?><stream:stream>", 36},
                {"\x16\x03\x03\x00\x40", 5},
                {"\x16\x03\x01\xff\xff", 5},
                {"\x15\x03\x03\x00\x02\x02\x28", 7}};
  for (size_t i = 0; i < 4; i++) {
    pair_init(&p, &leaf, NULL, 0, "localhost", 0, 0, ca_path);
    assert_int_equal(epode__tls_handshake(p.cli), EPODE__TLS_AGAIN);
    assert_int_equal(epode__tls_feed(p.cli, inputs[i].p, inputs[i].n), EPODE_OK);
    int r = epode__tls_handshake(p.cli);
    /* A partial record (the 2nd input) simply waits for more; an oversized
     * one fails at once; an alert is reported as such. */
    if (i == 1)
      assert_int_equal(r, EPODE__TLS_AGAIN);
    else
      assert_int_equal(r, EPODE_ERR_TLS);
    if (i == 3) assert_non_null(strstr(epode__tls_detail(p.cli), "handshake failure"));
    pair_free(&p);
  }
}

static void test_data_and_close_notify(void **state) {
  pair p;
  pair_init(&p, &leaf, NULL, 0, "localhost", 0, 0, ca_path);
  assert_int_equal(handshake(&p), EPODE__TLS_DONE);
  assert_int_equal(epode__tls_write(p.cli, "<presence/>", 11), EPODE_OK);
  shuttle(&p);
  char buf[64];
  int n = SSL_read(p.srv, buf, sizeof buf);
  assert_int_equal(n, 11);
  assert_memory_equal(buf, "<presence/>", 11);
  assert_int_equal(SSL_write(p.srv, "<iq/>", 5), 5);
  SSL_shutdown(p.srv);
  shuttle(&p);
  size_t got = 0;
  int eof = 0;
  assert_int_equal(epode__tls_read(p.cli, buf, sizeof buf, &got, &eof), EPODE_OK);
  assert_int_equal(got, 5);
  assert_memory_equal(buf, "<iq/>", 5);
  assert_int_equal(epode__tls_read(p.cli, buf, sizeof buf, &got, &eof), EPODE_OK);
  assert_int_equal(got, 0);
  assert_int_equal(eof, 1);
  /* Our close_notify reaches the server. */
  epode__tls_close_notify(p.cli);
  shuttle(&p);
  assert_int_equal(SSL_read(p.srv, buf, sizeof buf), 0);
  assert_int_equal(SSL_get_error(p.srv, 0), SSL_ERROR_ZERO_RETURN);
  pair_free(&p);
}

static void test_corrupt_record_after_handshake(void **state) {
  pair p;
  pair_init(&p, &leaf, NULL, 0, "localhost", 0, 0, ca_path);
  assert_int_equal(handshake(&p), EPODE__TLS_DONE);
  /* An application-data record with a bad MAC. */
  static const unsigned char rec[] = {0x17, 0x03, 0x03, 0x00, 0x20, 1,  2,  3,  4,  5,  6,  7,  8,
                                      9,    10,   11,   12,   13,   14, 15, 16, 17, 18, 19, 20, 21,
                                      22,   23,   24,   25,   26,   27, 28, 29, 30, 31, 32};
  assert_int_equal(epode__tls_feed(p.cli, rec, sizeof rec), EPODE_OK);
  char buf[64];
  size_t got;
  int eof;
  assert_int_equal(epode__tls_read(p.cli, buf, sizeof buf, &got, &eof), EPODE_ERR_TLS);
  assert_non_null(strstr(epode__tls_detail(p.cli), "TLS error from localhost"));
  pair_free(&p);
}

static void test_bad_cafile(void **state) {
  epode_config *cfg;
  assert_int_equal(epode_config_new(&cfg, NULL), EPODE_OK);
  assert_int_equal(epode_config_set_cafile(cfg, "/nonexistent/ca.pem"), EPODE_OK);
  epode__tls *t = (epode__tls *)1;
  char detail[512];
  assert_int_equal(epode__tls_new(&t, cfg, "localhost", 0, detail, sizeof detail), EPODE_ERR_TLS);
  assert_null(t);
  assert_non_null(strstr(detail, "/nonexistent/ca.pem"));
  epode_config_free(cfg);
}

static epode_config *copy_of(const epode_config *cfg) {
  epode_config *c;
  assert_int_equal(epode_config_clone(&c, cfg), EPODE_OK);
  return c;
}

/* A connection from `cfg`: its context. The connections are kept until
 * release_held(), so that no context compared is freed (and its address
 * reused) in between. */
static epode__tls *held[32];
static size_t n_held;

static const void *context_of(const epode_config *cfg) {
  epode__tls *t = NULL;
  char detail[512];
  assert_int_equal(epode__tls_new(&t, cfg, "localhost", 0, detail, sizeof detail), EPODE_OK);
  assert_true(n_held < sizeof held / sizeof *held);
  held[n_held++] = t;
  return epode__tls_context(t);
}

static void release_held(void) {
  while (n_held)
    epode__tls_free(held[--n_held]);
}

/* One TLS context per configuration and its copies (every session's): made
 * at the first connection, used by the next ones; a copy made after a TLS
 * setting changed gets its own; made again after its maximum age; a
 * context that could not be made is not remembered. */
static void test_shared_context(void **state) {
  epode_config *cfg;
  assert_int_equal(epode_config_new(&cfg, NULL), EPODE_OK);
  assert_int_equal(epode_config_set_cafile(cfg, ca_path), EPODE_OK);
  pair a, b;
  pair_init_cfg(&a, copy_of(cfg), &leaf, NULL, 0, 0, "localhost", 0);
  pair_init_cfg(&b, copy_of(cfg), &leaf, NULL, 0, 0, "localhost", 1);
  assert_non_null(epode__tls_context(a.cli));
  assert_ptr_equal(epode__tls_context(a.cli), epode__tls_context(b.cli));
  /* Each connection still verifies its own peer, with its own name and
   * ALPN: the shared part is the context only. */
  assert_int_equal(handshake(&a), EPODE__TLS_DONE);
  assert_int_equal(handshake(&b), EPODE__TLS_DONE);
  assert_int_equal(a.alpn_len, 0);
  assert_int_equal(b.alpn_len, 12);
  pair wrong;
  pair_init_cfg(&wrong, copy_of(cfg), &leaf, NULL, 0, 0, "example.org", 0);
  assert_ptr_equal(epode__tls_context(wrong.cli), epode__tls_context(a.cli));
  assert_int_equal(handshake(&wrong), EPODE_ERR_TLS_VERIFY);
  assert_non_null(strstr(epode__tls_detail(wrong.cli), "hostname mismatch"));
  pair_free(&wrong);
  const void *shared = epode__tls_context(a.cli);

  /* Changing a TLS setting: copies made from then on get a new context;
   * the copies made before keep theirs (it matches their settings). */
  epode_config *before = copy_of(cfg);
  assert_int_equal(epode_config_set_tls_versions(cfg, 0x0304, 0), EPODE_OK);
  epode_config *after = copy_of(cfg);
  const void *c_after = context_of(after);
  assert_ptr_not_equal(c_after, shared);
  assert_ptr_equal(context_of(before), shared);
  assert_ptr_equal(context_of(after), c_after);
  /* The same for the CA file (even the same path: set again, read again),
   * verification and the client certificate. */
  assert_int_equal(epode_config_set_cafile(cfg, ca_path), EPODE_OK);
  epode_config *c1 = copy_of(cfg);
  const void *k1 = context_of(c1);
  assert_ptr_not_equal(k1, c_after);
  assert_int_equal(epode_config_set_flags(cfg, EPODE_CFG_TLS_NO_VERIFY), EPODE_OK);
  epode_config *c2 = copy_of(cfg);
  const void *k2 = context_of(c2);
  assert_ptr_not_equal(k2, k1);
  /* Flags that are not about TLS change nothing. */
  assert_int_equal(epode_config_set_flags(cfg, EPODE_CFG_TLS_NO_VERIFY | EPODE_CFG_ALLOW_PLAINTEXT),
                   EPODE_OK);
  epode_config *c3 = copy_of(cfg);
  assert_ptr_equal(context_of(c3), k2);

  /* Past its maximum age the context is made again (a CA file changed on
   * disk is read again); connections still using the old one keep it. */
  before->tls_shared->max_age_ms = 0;
  epode__tls *old = NULL;
  char detail[512];
  assert_int_equal(epode__tls_new(&old, before, "localhost", 0, detail, sizeof detail), EPODE_OK);
  const void *renewed = context_of(before);
  assert_ptr_not_equal(renewed, epode__tls_context(old));
  epode__tls_free(old);
  /* Connections hold their context, not the configuration's holder: the
   * template goes first, then each copy after its connections. */
  epode_config_free(cfg);
  release_held();
  epode_config *copies[] = {before, after, c1, c2, c3};
  for (size_t i = 0; i < 5; i++)
    epode_config_free(copies[i]);
  pair_free(&a);
  pair_free(&b);

  /* A CA file that could not be read is tried again at the next
   * connection: once it is there, it works. */
  char path[64];
  fclose(t_tmpfile(path, sizeof path, "later")); /* a fresh name, then no file */
  unlink(path);
  assert_int_equal(epode_config_new(&cfg, NULL), EPODE_OK);
  assert_int_equal(epode_config_set_cafile(cfg, path), EPODE_OK);
  epode_config *c = copy_of(cfg);
  epode__tls *t = (epode__tls *)1;
  assert_int_equal(epode__tls_new(&t, c, "localhost", 0, detail, sizeof detail), EPODE_ERR_TLS);
  assert_null(t);
  assert_non_null(strstr(detail, path));
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  assert_true(PEM_write_X509(f, ca.cert) == 1);
  fclose(f);
  pair ok;
  pair_init_cfg(&ok, c, &leaf, NULL, 0, 0, "localhost", 0);
  assert_int_equal(handshake(&ok), EPODE__TLS_DONE);
  pair_free(&ok);
  epode_config_free(cfg);
  unlink(path);
}

/* Connections made at once on several threads from copies of one
 * configuration share one context. */
typedef struct ctx_job {
  const epode_config *cfg;
  const void *seen[16];
} ctx_job;

static void *ctx_worker(void *arg) {
  ctx_job *j = arg;
  for (size_t i = 0; i < 16; i++) {
    epode_config *c;
    if (epode_config_clone(&c, j->cfg)) return NULL;
    epode__tls *t = NULL;
    char detail[512];
    if (epode__tls_new(&t, c, "localhost", 0, detail, sizeof detail) == EPODE_OK)
      j->seen[i] = epode__tls_context(t);
    epode__tls_free(t);
    epode_config_free(c);
  }
  return NULL;
}

static void test_shared_context_threads(void **state) {
  epode_config *cfg;
  assert_int_equal(epode_config_new(&cfg, NULL), EPODE_OK);
  assert_int_equal(epode_config_set_cafile(cfg, ca_path), EPODE_OK);
  /* Kept alive by one connection, so no thread frees it in between. */
  epode__tls *keep = NULL;
  char detail[512];
  assert_int_equal(epode__tls_new(&keep, cfg, "localhost", 0, detail, sizeof detail), EPODE_OK);
  ctx_job jobs[4];
  pthread_t th[4];
  memset(jobs, 0, sizeof jobs);
  for (size_t k = 0; k < 4; k++) {
    jobs[k].cfg = cfg;
    assert_int_equal(pthread_create(&th[k], NULL, ctx_worker, &jobs[k]), 0);
  }
  for (size_t k = 0; k < 4; k++)
    assert_int_equal(pthread_join(th[k], NULL), 0);
  for (size_t k = 0; k < 4; k++)
    for (size_t i = 0; i < 16; i++)
      assert_ptr_equal(jobs[k].seen[i], epode__tls_context(keep));
  epode__tls_free(keep);
  epode_config_free(cfg);
}

static void test_min_version_tls12(void **state) {
  /* A server that only speaks TLS 1.1 is refused. */
  pair p;
  pair_init(&p, &leaf, NULL, TLS1_1_VERSION, "localhost", 0, 0, ca_path);
  SSL_set_min_proto_version(p.srv, TLS1_1_VERSION);
  SSL_set_security_level(p.srv, 0);
  assert_int_equal(handshake(&p), EPODE_ERR_TLS);
  pair_free(&p);
}

static epode_config *versions_cfg(int minv, int maxv) {
  epode_config *cfg;
  assert_int_equal(epode_config_new(&cfg, NULL), EPODE_OK);
  assert_int_equal(epode_config_set_cafile(cfg, ca_path), EPODE_OK);
  assert_int_equal(epode_config_set_tls_versions(cfg, minv, maxv), EPODE_OK);
  return cfg;
}

static void test_tls_max_12(void **state) {
  /* The server would do 1.3; we cap at 1.2 (how tests get tls-unique for
   * SCRAM -PLUS out of Prosody 0.12). */
  pair p;
  pair_init_cfg(&p, versions_cfg(0, 0x0303), &leaf, NULL, 0, 0, "localhost", 0);
  assert_int_equal(handshake(&p), EPODE__TLS_DONE);
  assert_int_equal(SSL_version(p.srv), TLS1_2_VERSION);
  epode_tls_info info;
  epode__tls_info(p.cli, &info);
  assert_int_equal(info.version, 0x0303);
  unsigned char fin[64];
  size_t fl = SSL_get_peer_finished(p.srv, fin, sizeof fin);
  assert_true(fl > 0);
  assert_non_null(info.tls_unique);
  assert_int_equal(info.tls_unique_len, fl);
  assert_memory_equal(info.tls_unique, fin, fl);
  assert_string_equal(epode__tls_version_name(p.cli), "TLSv1.2");
  pair_free(&p);
}

static void test_tls_only_13(void **state) {
  pair p;
  pair_init_cfg(&p, versions_cfg(0x0304, 0x0304), &leaf, NULL, 0, 0, "localhost", 0);
  assert_int_equal(handshake(&p), EPODE__TLS_DONE);
  epode_tls_info info;
  epode__tls_info(p.cli, &info);
  assert_int_equal(info.version, 0x0304);
  assert_null(info.tls_unique);
  pair_free(&p);
}

static void test_tls_min_13_vs_12_server(void **state) {
  pair p;
  pair_init_cfg(&p, versions_cfg(0x0304, 0), &leaf, NULL, 0, TLS1_2_VERSION, "localhost", 0);
  assert_int_equal(handshake(&p), EPODE_ERR_TLS);
  const char *d = epode__tls_detail(p.cli);
  assert_non_null(strstr(d, "TLS handshake with localhost failed: "));
  assert_non_null(strstr(d, "(configured TLS versions: TLS 1.3 to newest)"));
  assert_false(SSL_is_init_finished(p.srv));
  pair_free(&p);
}

static void test_tls_max_12_vs_13_server(void **state) {
  pair p;
  pair_init_cfg(&p, versions_cfg(0, 0x0303), &leaf, NULL, TLS1_3_VERSION, 0, "localhost", 0);
  assert_int_equal(handshake(&p), EPODE_ERR_TLS);
  assert_non_null(
      strstr(epode__tls_detail(p.cli), "(configured TLS versions: TLS 1.2 to TLS 1.2)"));
  pair_free(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_verify_ok_tls13),
      cmocka_unit_test(test_channel_binding_tls12),
      cmocka_unit_test(test_end_point_sha384),
      cmocka_unit_test(test_untrusted_ca),
      cmocka_unit_test(test_untrusted_leaf_only),
      cmocka_unit_test(test_wrong_hostname),
      cmocka_unit_test(test_ip_literal_no_sni),
      cmocka_unit_test(test_no_verify),
      cmocka_unit_test(test_alpn_direct),
      cmocka_unit_test(test_garbage_from_server),
      cmocka_unit_test(test_data_and_close_notify),
      cmocka_unit_test(test_corrupt_record_after_handshake),
      cmocka_unit_test(test_bad_cafile),
      cmocka_unit_test(test_shared_context),
      cmocka_unit_test(test_shared_context_threads),
      cmocka_unit_test(test_min_version_tls12),
      cmocka_unit_test(test_tls_max_12),
      cmocka_unit_test(test_tls_only_13),
      cmocka_unit_test(test_tls_min_13_vs_12_server),
      cmocka_unit_test(test_tls_max_12_vs_13_server),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
