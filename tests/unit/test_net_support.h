/* Helpers shared by the network tests (included, not linked): test
 * certificates made with the OpenSSL API at run time (so nothing expires in
 * the tree), PEM files in a temp dir, and an OpenSSL server context. */
#ifndef EPODE_TEST_NET_SUPPORT_H
#define EPODE_TEST_NET_SUPPORT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

typedef struct tcert {
  EVP_PKEY *key;
  X509 *cert;
} tcert;

static EVP_PKEY *t_key(void) {
  EVP_PKEY *k = EVP_EC_gen("P-256");
  if (!k) abort();
  return k;
}

static void t_ext(X509 *cert, X509 *issuer, int nid, const char *value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
  X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
  if (!ex || !X509_add_ext(cert, ex, -1)) abort();
  X509_EXTENSION_free(ex);
}

/* A certificate for `cn`: self-signed CA when `ca` is NULL, else a leaf
 * signed by it with the given SAN ("DNS:localhost,IP:127.0.0.1") and
 * digest. */
static tcert t_cert(const char *cn, const tcert *ca, const char *san, const EVP_MD *md) {
  tcert t;
  t.key = t_key();
  t.cert = X509_new();
  static long serial = 1;
  X509_set_version(t.cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(t.cert), serial++);
  X509_gmtime_adj(X509_getm_notBefore(t.cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(t.cert), 86400);
  X509_set_pubkey(t.cert, t.key);
  X509_NAME *name = X509_get_subject_name(t.cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509 *issuer = ca ? ca->cert : t.cert;
  X509_set_issuer_name(t.cert, X509_get_subject_name(issuer));
  if (!ca) {
    t_ext(t.cert, issuer, NID_basic_constraints, "critical,CA:TRUE");
    t_ext(t.cert, issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
    t_ext(t.cert, issuer, NID_subject_key_identifier, "hash");
  } else {
    t_ext(t.cert, issuer, NID_basic_constraints, "CA:FALSE");
    t_ext(t.cert, issuer, NID_ext_key_usage, "serverAuth");
    if (san) t_ext(t.cert, issuer, NID_subject_alt_name, san);
  }
  if (!X509_sign(t.cert, ca ? ca->key : t.key, md ? md : EVP_sha256())) abort();
  return t;
}

static void t_cert_free(tcert *t) {
  X509_free(t->cert);
  EVP_PKEY_free(t->key);
}

/* Writes the certificate as PEM to a fresh temp file; returns its path
 * (static storage per call site is the caller's business: copy it). */
static void t_write_pem(const tcert *t, char *path, size_t size) {
  snprintf(path, size, "/tmp/epode-test-ca-XXXXXX");
  int fd = mkstemp(path);
  if (fd < 0) abort();
  FILE *f = fdopen(fd, "w");
  if (!f || !PEM_write_X509(f, t->cert)) abort();
  fclose(f);
}

/* A server context presenting `leaf` (and `chain`, may be NULL), TLS
 * versions [min, max] (0 = default). */
static SSL_CTX *t_server_ctx(const tcert *leaf, const tcert *chain, int min, int max) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) abort();
  if (SSL_CTX_use_certificate(ctx, leaf->cert) != 1 || SSL_CTX_use_PrivateKey(ctx, leaf->key) != 1)
    abort();
  if (chain) {
    X509_up_ref(chain->cert);
    SSL_CTX_add_extra_chain_cert(ctx, chain->cert);
  }
  if (min) SSL_CTX_set_min_proto_version(ctx, min);
  if (max) SSL_CTX_set_max_proto_version(ctx, max);
  return ctx;
}

#endif
