/* Helpers shared by the network tests (included, not linked): test
 * certificates made with the OpenSSL API at run time (so nothing expires in
 * the tree), PEM files in a temp dir, and an OpenSSL server context. */
#ifndef EPODE_TEST_NET_SUPPORT_H
#define EPODE_TEST_NET_SUPPORT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <strings.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

typedef struct tcert {
  EVP_PKEY *key;
  X509 *cert;
} tcert;

static inline EVP_PKEY *t_key(void) {
  EVP_PKEY *k = EVP_EC_gen("P-256");
  if (!k) abort();
  return k;
}

static inline void t_ext(X509 *cert, X509 *issuer, int nid, const char *value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
  X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
  if (!ex || !X509_add_ext(cert, ex, -1)) abort();
  X509_EXTENSION_free(ex);
}

enum { T_CA = 0, T_SERVER, T_CLIENT };

/* A certificate for `cn` of `kind`: a CA (self-signed when `issuer` is
 * NULL, else an intermediate), or a server or client leaf signed by
 * `issuer`, with the given SAN ("DNS:localhost,IP:127.0.0.1") and digest. */
static inline tcert t_cert_kind(const char *cn, const tcert *ca, int kind, const char *san,
                                const EVP_MD *md) {
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
  if (kind == T_CA) {
    t_ext(t.cert, issuer, NID_basic_constraints, "critical,CA:TRUE");
    t_ext(t.cert, issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
    t_ext(t.cert, issuer, NID_subject_key_identifier, "hash");
  } else {
    t_ext(t.cert, issuer, NID_basic_constraints, "CA:FALSE");
    t_ext(t.cert, issuer, NID_ext_key_usage, kind == T_CLIENT ? "clientAuth" : "serverAuth");
    if (san) t_ext(t.cert, issuer, NID_subject_alt_name, san);
  }
  if (!X509_sign(t.cert, ca ? ca->key : t.key, md ? md : EVP_sha256())) abort();
  return t;
}

/* A self-signed CA when `ca` is NULL, else a server leaf signed by it. */
static inline tcert t_cert(const char *cn, const tcert *ca, const char *san, const EVP_MD *md) {
  return t_cert_kind(cn, ca, ca ? T_SERVER : T_CA, san, md);
}

static inline void t_cert_free(tcert *t) {
  X509_free(t->cert);
  EVP_PKEY_free(t->key);
}

/* Writes the certificate as PEM to a fresh temp file; returns its path
 * (static storage per call site is the caller's business: copy it). */
static inline void t_write_pem(const tcert *t, char *path, size_t size) {
  snprintf(path, size, "/tmp/epode-test-ca-XXXXXX");
  int fd = mkstemp(path);
  if (fd < 0) abort();
  FILE *f = fdopen(fd, "w");
  if (!f || !PEM_write_X509(f, t->cert)) abort();
  fclose(f);
}

/* A fresh empty temp file (its path in `path`), open for writing. */
static inline FILE *t_tmpfile(char *path, size_t size, const char *tag) {
  snprintf(path, size, "/tmp/epode-test-%s-XXXXXX", tag);
  int fd = mkstemp(path);
  if (fd < 0) abort();
  FILE *f = fdopen(fd, "w");
  if (!f) abort();
  return f;
}

/* PEM file with `certs` (in order) and `key` (may be NULL), the key first
 * when `key_first`. */
static inline void t_write_pems(char *path, size_t size, X509 *const *certs, size_t n,
                                EVP_PKEY *key, int key_first) {
  FILE *f = t_tmpfile(path, size, "pem");
  if (key && key_first && !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)) abort();
  for (size_t i = 0; i < n; i++)
    if (!PEM_write_X509(f, certs[i])) abort();
  if (key && !key_first && !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)) abort();
  fclose(f);
}

/* A PKCS#12 file made with PKCS12_create: `leaf` with its key and `extra`
 * (may be NULL) as CA certificate. `pw` NULL: neither encrypted nor MACed. */
static inline void t_write_p12(char *path, size_t size, const tcert *leaf, const tcert *extra,
                               const char *pw) {
  STACK_OF(X509) *cas = sk_X509_new_null();
  if (extra) sk_X509_push(cas, extra->cert);
  PKCS12 *p12 =
      pw ? PKCS12_create(pw, "epode test", leaf->key, leaf->cert, cas, 0, 0, 0, 0, 0)
         : PKCS12_create(NULL, "epode test", leaf->key, leaf->cert, cas, -1, -1, 0, -1, 0);
  if (!p12) abort();
  FILE *f = t_tmpfile(path, size, "p12");
  if (!i2d_PKCS12_fp(f, p12)) abort();
  fclose(f);
  PKCS12_free(p12);
  sk_X509_free(cas);
}

/* A server context presenting `leaf` (and `chain`, may be NULL), TLS
 * versions [min, max] (0 = default). */
static inline SSL_CTX *t_server_ctx(const tcert *leaf, const tcert *chain, int min, int max) {
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

/* ------------------------------------------------------------------ client/server pair
 *
 * An epode__tls client and an OpenSSL server over memory BIOs, driven in
 * lock step. Needs cmocka.h and net/net.h included first. */

typedef struct pair {
  epode_config *cfg;
  epode__tls *cli;
  SSL_CTX *sctx;
  SSL *srv;
  BIO *srv_in, *srv_out;
  char sni[256];
  int sni_seen;
  unsigned char alpn[256];
  unsigned alpn_len;
  char detail[512];
} pair;

static inline int t_on_servername(SSL *ssl, int *al, void *arg) {
  pair *p = SSL_get_app_data(ssl);
  const char *n = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (n) {
    p->sni_seen = 1;
    snprintf(p->sni, sizeof p->sni, "%s", n);
  }
  return SSL_TLSEXT_ERR_OK;
}

static inline int t_on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                            const unsigned char *in, unsigned inlen, void *arg) {
  pair *p = SSL_get_app_data(ssl);
  memcpy(p->alpn, in, inlen < sizeof p->alpn ? inlen : sizeof p->alpn);
  p->alpn_len = inlen;
  static const unsigned char want[] = "\x0bxmpp-client";
  unsigned char *sel;
  if (SSL_select_next_proto(&sel, outlen, want, sizeof want - 1, in, inlen) ==
      OPENSSL_NPN_NEGOTIATED) {
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

/* `cfg` is the pair's now (freed by pair_free). The server speaks TLS
 * [minv, maxv] (0: OpenSSL's defaults). */
static inline void pair_init_cfg(pair *p, epode_config *cfg, const tcert *srv_leaf,
                                 const tcert *srv_chain, int minv, int maxv, const char *name,
                                 int direct) {
  memset(p, 0, sizeof *p);
  p->cfg = cfg;
  assert_int_equal(epode__tls_new(&p->cli, p->cfg, name, direct, p->detail, sizeof p->detail),
                   EPODE_OK);
  p->sctx = t_server_ctx(srv_leaf, srv_chain, minv, maxv);
  SSL_CTX_set_tlsext_servername_callback(p->sctx, t_on_servername);
  SSL_CTX_set_alpn_select_cb(p->sctx, t_on_alpn, NULL);
  p->srv = SSL_new(p->sctx);
  p->srv_in = BIO_new(BIO_s_mem());
  p->srv_out = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(p->srv_in, -1);
  BIO_set_mem_eof_return(p->srv_out, -1);
  SSL_set_bio(p->srv, p->srv_in, p->srv_out);
  SSL_set_accept_state(p->srv);
  SSL_set_app_data(p->srv, p);
}

static inline void pair_init(pair *p, const tcert *srv_leaf, const tcert *srv_chain, int maxv,
                             const char *name, int direct, unsigned flags, const char *cafile) {
  epode_config *cfg;
  assert_int_equal(epode_config_new(&cfg, NULL), EPODE_OK);
  if (cafile) assert_int_equal(epode_config_set_cafile(cfg, cafile), EPODE_OK);
  assert_int_equal(epode_config_set_flags(cfg, flags), EPODE_OK);
  pair_init_cfg(p, cfg, srv_leaf, srv_chain, 0, maxv, name, direct);
}

static inline void pair_free(pair *p) {
  epode__tls_free(p->cli);
  SSL_free(p->srv);
  SSL_CTX_free(p->sctx);
  epode_config_free(p->cfg);
}

/* Client ciphertext to the server, and back. */
static inline void shuttle(pair *p) {
  unsigned char buf[16384];
  size_t n;
  while ((n = epode__tls_take(p->cli, buf, sizeof buf)) > 0)
    assert_int_equal(BIO_write(p->srv_in, buf, (int)n), (int)n);
  int r;
  while ((r = BIO_read(p->srv_out, buf, sizeof buf)) > 0)
    assert_int_equal(epode__tls_feed(p->cli, buf, (size_t)r), EPODE_OK);
}

/* Runs both handshakes to the end; returns the client's verdict. */
static inline int handshake(pair *p) {
  int r = EPODE__TLS_AGAIN;
  for (int i = 0; i < 50; i++) {
    r = epode__tls_handshake(p->cli);
    if (!SSL_is_init_finished(p->srv)) {
      unsigned char b[16384];
      size_t n;
      while ((n = epode__tls_take(p->cli, b, sizeof b)) > 0)
        BIO_write(p->srv_in, b, (int)n);
      ERR_clear_error();
      (void)SSL_do_handshake(p->srv);
    }
    shuttle(p);
    if (r < 0) return r;
    if (r == EPODE__TLS_DONE && SSL_is_init_finished(p->srv)) return r;
  }
  return r;
}

/* ------------------------------------------------------------------ fake DNS server
 *
 * A UDP socket on 127.0.0.1 answering the queries c-ares sends with packets
 * built by hand from a rule table (unknown names: NXDOMAIN). Needs cmocka.h
 * included first. */

enum { T_A = 1, T_AAAA = 28, T_SRV = 33 };
enum { ACT_ANSWER = 0, ACT_NXDOMAIN, ACT_NODATA, ACT_DROP, ACT_MALFORMED, ACT_SERVFAIL };

typedef struct srv_rr {
  uint16_t prio, weight, port;
  const char *target;
} srv_rr;

typedef struct rule {
  const char *name;
  int type;
  int act;
  srv_rr srv[8];
  size_t nsrv;
  const char *addr[4]; /* A or AAAA text */
  size_t naddr;
} rule;

typedef struct fake {
  int fd;
  uint16_t port;
  rule rules[64];
  size_t nrules;
  char seen[4096]; /* "type name;" for every query */
  size_t nseen;
} fake;

static inline void fake_start(fake *f) {
  memset(f, 0, sizeof *f);
  f->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  assert_true(f->fd >= 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(f->fd, (struct sockaddr *)&sa, sizeof sa), 0);
  socklen_t sl = sizeof sa;
  getsockname(f->fd, (struct sockaddr *)&sa, &sl);
  f->port = ntohs(sa.sin_port);
}

static inline rule *fake_rule(fake *f, const char *name, int type, int act) {
  rule *r = &f->rules[f->nrules++];
  memset(r, 0, sizeof *r);
  r->name = name;
  r->type = type;
  r->act = act;
  return r;
}

static inline void add_srv(rule *r, uint16_t prio, uint16_t weight, uint16_t port, const char *t) {
  r->srv[r->nsrv++] = (srv_rr){prio, weight, port, t};
}

static inline size_t put_name(unsigned char *p, const char *name) {
  size_t n = 0;
  if (!strcmp(name, ".")) {
    p[0] = 0;
    return 1;
  }
  while (*name) {
    const char *dot = strchr(name, '.');
    size_t l = dot ? (size_t)(dot - name) : strlen(name);
    p[n++] = (unsigned char)l;
    memcpy(p + n, name, l);
    n += l;
    name += l + (dot ? 1 : 0);
  }
  p[n++] = 0;
  return n;
}

static inline size_t put16(unsigned char *p, unsigned v) {
  p[0] = (unsigned char)(v >> 8);
  p[1] = (unsigned char)v;
  return 2;
}

/* Answers one query from the socket. */
static inline void fake_serve(fake *f) {
  unsigned char q[512], a[1500];
  struct sockaddr_storage from;
  socklen_t fl = sizeof from;
  ssize_t n = recvfrom(f->fd, q, sizeof q, 0, (struct sockaddr *)&from, &fl);
  if (n < 12) return;
  /* Question: labels from offset 12. */
  char name[256];
  size_t o = 12, nl = 0;
  while (o < (size_t)n && q[o]) {
    size_t l = q[o++];
    if (o + l > (size_t)n || nl + l + 1 >= sizeof name) return;
    if (nl) name[nl++] = '.';
    memcpy(name + nl, q + o, l);
    nl += l;
    o += l;
  }
  name[nl] = '\0';
  o++;
  if (o + 4 > (size_t)n) return;
  int type = q[o] << 8 | q[o + 1];
  size_t qend = o + 4;
  f->nseen += (size_t)snprintf(f->seen + f->nseen, sizeof f->seen - f->nseen, "%d %s;", type, name);

  rule *r = NULL;
  for (size_t i = 0; i < f->nrules; i++)
    if (!strcasecmp(f->rules[i].name, name) && f->rules[i].type == type) r = &f->rules[i];
  int act = r ? r->act : ACT_NXDOMAIN;
  if (act == ACT_DROP) return;

  memcpy(a, q, qend); /* header + question */
  a[2] = 0x81;        /* QR, RD */
  a[3] = 0x80;        /* RA, rcode below */
  if (act == ACT_NXDOMAIN) a[3] |= 3;
  if (act == ACT_SERVFAIL) a[3] |= 2;
  size_t w = qend, count = 0;
  a[6] = a[7] = a[8] = a[9] = a[10] = a[11] = 0; /* an, ns, ar */
  if (act == ACT_ANSWER) {
    size_t items = type == T_SRV ? r->nsrv : r->naddr;
    for (size_t i = 0; i < items; i++) {
      w += put16(a + w, 0xC00C); /* the question's name */
      w += put16(a + w, (unsigned)type);
      w += put16(a + w, 1);
      w += put16(a + w, 0);
      w += put16(a + w, 300);
      size_t rdlen_at = w;
      w += 2;
      if (type == T_SRV) {
        w += put16(a + w, r->srv[i].prio);
        w += put16(a + w, r->srv[i].weight);
        w += put16(a + w, r->srv[i].port);
        w += put_name(a + w, r->srv[i].target);
      } else if (type == T_A) {
        inet_pton(AF_INET, r->addr[i], a + w);
        w += 4;
      } else {
        inet_pton(AF_INET6, r->addr[i], a + w);
        w += 16;
      }
      put16(a + rdlen_at, (unsigned)(w - rdlen_at - 2));
      count++;
    }
  } else if (act == ACT_MALFORMED) {
    /* One SRV answer whose target name runs off the end of the packet. */
    w += put16(a + w, 0xC00C);
    w += put16(a + w, (unsigned)type);
    w += put16(a + w, 1);
    w += put16(a + w, 0);
    w += put16(a + w, 300);
    w += put16(a + w, 12);
    w += put16(a + w, 1);
    w += put16(a + w, 1);
    w += put16(a + w, 5222);
    a[w++] = 60; /* a 60-byte label, of which 3 bytes follow */
    a[w++] = 'x';
    a[w++] = 'y';
    a[w++] = 'z';
    count = 1;
  }
  put16(a + 6, (unsigned)count);
  sendto(f->fd, a, w, 0, (struct sockaddr *)&from, fl);
}

#endif
