/* Client TLS with OpenSSL 3 over memory BIOs: the connection moves
 * ciphertext between the socket and the BIOs itself, so OpenSSL never
 * touches the fd and the handshake is naturally non-blocking.
 *
 * Verification is on unless the config opts out: the chain against the CA
 * file or the system store, and the name against the JID's domain (RFC 6125
 * via X509_VERIFY_PARAM, no partial wildcards). After the handshake we
 * compute the channel-binding values SCRAM -PLUS needs (RFC 5929, RFC 9266).
 *
 * A configured client certificate (tls_cert.c) is offered on every
 * handshake, direct TLS and STARTTLS alike.
 *
 * OpenSSL allocates through its own (process-wide) hooks; epode_mem covers
 * only our own structures. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "net/net.h"
#include "util/alloc.h"

struct epode__tls {
  const epode_config *cfg;
  SSL_CTX *ctx;
  SSL *ssl;
  BIO *rbio; /* ciphertext from the peer, read by SSL */
  BIO *wbio; /* ciphertext from SSL, to send */
  int direct;
  int verify;
  int done;
  char name[EPODE__MAX_HOST];
  char detail[800];
  int version;
  unsigned char unique[EVP_MAX_MD_SIZE];
  size_t unique_len;
  unsigned char exporter[32];
  size_t exporter_len;
  unsigned char endpoint[EVP_MAX_MD_SIZE];
  size_t endpoint_len;
};

/* The first queued OpenSSL error as a readable reason ("wrong version
 * number"), then the queue is cleared so it cannot leak into a later call. */
static void ssl_reason(char *buf, size_t size, const char *fallback) {
  unsigned long e = ERR_peek_error();
  if (!e) {
    snprintf(buf, size, "%s", fallback);
    return;
  }
  const char *r = ERR_reason_error_string(e);
  if (r)
    snprintf(buf, size, "%s", r);
  else
    ERR_error_string_n(e, buf, size);
  ERR_clear_error();
}

static const char *version_label(int v) {
  return v == TLS1_3_VERSION ? "TLS 1.3" : v == TLS1_2_VERSION ? "TLS 1.2" : "TLS ?";
}

static int is_ip_literal(const char *s) {
  unsigned char tmp[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

/* A new context from the configuration's TLS settings: versions, options,
 * the CA store, the client certificate. NULL with *err and `detail` set. */
static SSL_CTX *make_ctx(const epode_config *cfg, char *detail, size_t detail_size,
                         epode_err *err) {
  char why[256];
  *err = EPODE_ERR_TLS;
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    ssl_reason(why, sizeof why, "out of memory");
    snprintf(detail, detail_size, "cannot create the TLS context: %s", why);
    return NULL;
  }
  /* tls_min/tls_max are the wire values (0x0303, 0x0304), which is what
   * OpenSSL's TLS1_2_VERSION / TLS1_3_VERSION are; the config checked them. */
  if (SSL_CTX_set_min_proto_version(ctx, cfg->tls_min ? cfg->tls_min : TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, cfg->tls_max) != 1) {
    ssl_reason(why, sizeof why, "unsupported");
    snprintf(detail, detail_size, "cannot limit TLS to versions %s..%s: %s",
             version_label(cfg->tls_min ? cfg->tls_min : TLS1_2_VERSION),
             cfg->tls_max ? version_label(cfg->tls_max) : "newest", why);
    goto fail;
  }
  /* A server asking to renegotiate would change tls-unique under SCRAM's
   * feet; compression invites CRIME. */
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (!(cfg->flags & EPODE_CFG_TLS_NO_VERIFY)) {
    int ok = cfg->cafile ? SSL_CTX_load_verify_locations(ctx, cfg->cafile, NULL)
                         : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
      ssl_reason(why, sizeof why, "unknown error");
      if (cfg->cafile)
        snprintf(detail, detail_size, "cannot load the CA file %s: %s", cfg->cafile, why);
      else
        snprintf(detail, detail_size, "cannot load the system CA store: %s", why);
      goto fail;
    }
  }
  /* Before SSL_new, which copies the context's certificate and key. */
  if (epode__config_has_client_cert(cfg)) {
    epode_err e = epode__tls_load_client_cert(ctx, cfg, detail, detail_size);
    if (e) {
      *err = e;
      goto fail;
    }
  }
  return ctx;
fail:
  SSL_CTX_free(ctx);
  return NULL;
}

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The configuration's shared context, made now if there is none yet or it
 * is older than its holder's max age; one reference for the caller. A
 * context that could not be made is not remembered: the next connection
 * tries again (the CA file may have been fixed). */
static SSL_CTX *shared_ctx(const epode_config *cfg, char *detail, size_t detail_size,
                           epode_err *err) {
  epode__tls_shared *sh = cfg->tls_shared;
  if (!sh || !sh->lock_ok) return make_ctx(cfg, detail, detail_size, err);
  pthread_mutex_lock(&sh->lock);
  uint64_t now = mono_ms();
  SSL_CTX *ctx = sh->ctx;
  if (!ctx || now - sh->made_ms >= sh->max_age_ms) {
    if ((ctx = make_ctx(cfg, detail, detail_size, err))) {
      SSL_CTX_free(sh->ctx); /* connections using the old one keep their reference */
      sh->ctx = ctx;
      sh->made_ms = now;
    }
  }
  if (ctx && SSL_CTX_up_ref(ctx) != 1) {
    snprintf(detail, detail_size, "cannot share the TLS context");
    *err = EPODE_ERR_NOMEM;
    ctx = NULL;
  }
  pthread_mutex_unlock(&sh->lock);
  return ctx;
}

epode_err epode__tls_new(epode__tls **out, const epode_config *cfg, const char *name, int direct,
                         char *detail, size_t detail_size) {
  if (!out || !cfg || !name || !detail || !detail_size) return EPODE_ERR_INVAL;
  *out = NULL;
  detail[0] = '\0';
  if (strlen(name) >= EPODE__MAX_HOST) {
    snprintf(detail, detail_size, "name too long for TLS: %.64s...", name);
    return EPODE_ERR_INVAL;
  }
  epode__tls *t = epode__calloc(&cfg->mem, sizeof *t);
  if (!t) return EPODE_ERR_NOMEM;
  t->cfg = cfg;
  t->direct = direct;
  t->verify = !(cfg->flags & EPODE_CFG_TLS_NO_VERIFY);
  snprintf(t->name, sizeof t->name, "%s", name);
  int ip = is_ip_literal(name);
  char why[256];
  epode_err err = EPODE_ERR_TLS;

  ERR_clear_error();
  t->ctx = shared_ctx(cfg, detail, detail_size, &err);
  if (!t->ctx) goto fail;
  err = EPODE_ERR_TLS;

  t->ssl = SSL_new(t->ctx);
  /* An idle connection gives its ~34 KiB of record buffers back. */
  if (t->ssl) SSL_set_mode(t->ssl, SSL_MODE_RELEASE_BUFFERS);
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (!t->ssl || !t->rbio || !t->wbio) {
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    t->rbio = t->wbio = NULL;
    err = EPODE_ERR_NOMEM;
    snprintf(detail, detail_size, "out of memory setting up TLS");
    goto fail;
  }
  /* An empty input BIO means "more later", not end of file. */
  BIO_set_mem_eof_return(t->rbio, -1);
  BIO_set_mem_eof_return(t->wbio, -1);
  SSL_set_bio(t->ssl, t->rbio, t->wbio); /* the SSL owns them now */
  SSL_set_connect_state(t->ssl);

  /* SNI carries host names only (RFC 6066 §3). */
  if (!ip && SSL_set_tlsext_host_name(t->ssl, name) != 1) {
    ssl_reason(why, sizeof why, "rejected");
    snprintf(detail, detail_size, "cannot set the TLS server name %s: %s", name, why);
    goto fail;
  }
  if (t->verify) {
    SSL_set_verify(t->ssl, SSL_VERIFY_PEER, NULL);
    int ok;
    if (ip) {
      ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), name);
    } else {
      SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      ok = SSL_set1_host(t->ssl, name);
    }
    if (ok != 1) {
      ssl_reason(why, sizeof why, "rejected");
      snprintf(detail, detail_size, "cannot verify against the name %s: %s", name, why);
      goto fail;
    }
  } else {
    SSL_set_verify(t->ssl, SSL_VERIFY_NONE, NULL);
    epode__log(cfg, EPODE_LOG_WARN, "net",
               "TLS certificate verification is DISABLED (EPODE_CFG_TLS_NO_VERIFY): "
               "anyone on the path can read and change this connection");
  }
  if (direct) {
    /* XEP-0368 §3: direct TLS clients offer ALPN "xmpp-client". */
    static const unsigned char alpn[] = "\x0bxmpp-client";
    if (SSL_set_alpn_protos(t->ssl, alpn, sizeof alpn - 1) != 0) {
      err = EPODE_ERR_NOMEM;
      snprintf(detail, detail_size, "cannot set ALPN");
      goto fail;
    }
  }
  *out = t;
  return EPODE_OK;
fail:
  ERR_clear_error();
  epode__tls_free(t);
  return err;
}

const void *epode__tls_context(const epode__tls *t) { return t ? t->ctx : NULL; }

void epode__tls_free(epode__tls *t) {
  if (!t) return;
  SSL_free(t->ssl); /* frees the BIOs */
  SSL_CTX_free(t->ctx);
  epode__wipe(t->unique, sizeof t->unique);
  epode__wipe(t->exporter, sizeof t->exporter);
  epode__free(&t->cfg->mem, t);
}

epode_err epode__tls_feed(epode__tls *t, const void *p, size_t n) {
  while (n) {
    int chunk = n > 1u << 30 ? 1 << 30 : (int)n;
    int w = BIO_write(t->rbio, p, chunk);
    if (w <= 0) {
      ERR_clear_error();
      snprintf(t->detail, sizeof t->detail, "out of memory buffering TLS input");
      return EPODE_ERR_NOMEM;
    }
    p = (const char *)p + w;
    n -= (size_t)w;
  }
  return EPODE_OK;
}

static void compute_info(epode__tls *t) {
  t->version = SSL_version(t->ssl);
  /* RFC 5929 §3.1 tls-unique: the first Finished message of the latest
   * handshake. In a full handshake the client's comes first; in a resumed
   * one the server's. Undefined for TLS 1.3 (RFC 9266). */
  if (t->version == TLS1_2_VERSION) {
    size_t n = SSL_session_reused(t->ssl)
                   ? SSL_get_peer_finished(t->ssl, t->unique, sizeof t->unique)
                   : SSL_get_finished(t->ssl, t->unique, sizeof t->unique);
    t->unique_len = n <= sizeof t->unique ? n : 0;
  }
  /* RFC 9266 tls-exporter: TLS 1.3, or 1.2 with extended master secret. */
  if (t->version == TLS1_3_VERSION ||
      (t->version == TLS1_2_VERSION && SSL_get_extms_support(t->ssl) == 1)) {
    static const char label[] = "EXPORTER-Channel-Binding";
    if (SSL_export_keying_material(t->ssl, t->exporter, sizeof t->exporter, label, sizeof label - 1,
                                   NULL, 0, 0) == 1)
      t->exporter_len = sizeof t->exporter;
  }
  /* RFC 5929 §4.1 tls-server-end-point: the leaf certificate hashed with
   * its signature's digest, SHA-256 in place of MD5 or SHA-1. Undefined
   * when the signature has no separate digest (Ed25519): left out then. */
  X509 *cert = SSL_get0_peer_certificate(t->ssl);
  int mdnid = NID_undef;
  if (cert && X509_get_signature_info(cert, &mdnid, NULL, NULL, NULL) == 1) {
    const EVP_MD *md = NULL;
    if (mdnid == NID_md5 || mdnid == NID_sha1)
      md = EVP_sha256();
    else if (mdnid != NID_undef)
      md = EVP_get_digestbynid(mdnid);
    unsigned len = 0;
    if (md && X509_digest(cert, md, t->endpoint, &len) == 1) t->endpoint_len = len;
  }
  ERR_clear_error();
}

int epode__tls_handshake(epode__tls *t) {
  if (t->done) return EPODE__TLS_DONE;
  ERR_clear_error();
  int r = SSL_do_handshake(t->ssl);
  if (r == 1) {
    t->done = 1;
    compute_info(t);
    if (t->verify)
      epode__log(t->cfg, EPODE_LOG_INFO, "net", "TLS: certificate for %s verified", t->name);
    epode__log(t->cfg, EPODE_LOG_INFO, "net", "TLS established: %s %s", SSL_get_version(t->ssl),
               SSL_get_cipher_name(t->ssl));
    return EPODE__TLS_DONE;
  }
  int e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return EPODE__TLS_AGAIN;
  long vr = SSL_get_verify_result(t->ssl);
  if (t->verify && vr != X509_V_OK) {
    snprintf(t->detail, sizeof t->detail, "the certificate of %s did not verify: %s", t->name,
             X509_verify_cert_error_string(vr));
    ERR_clear_error();
    return EPODE_ERR_TLS_VERIFY;
  }
  char why[256];
  ssl_reason(why, sizeof why, e == SSL_ERROR_SYSCALL ? "unexpected end of data" : "unknown error");
  /* With a version range of our own, a version mismatch is likely ours. */
  const epode_config *cfg = t->cfg;
  char range[96] = "";
  if (cfg->tls_min || cfg->tls_max)
    snprintf(range, sizeof range, " (configured TLS versions: %s to %s)",
             version_label(cfg->tls_min ? cfg->tls_min : TLS1_2_VERSION),
             cfg->tls_max ? version_label(cfg->tls_max) : "newest");
  snprintf(t->detail, sizeof t->detail, "TLS handshake with %s failed: %s%s", t->name, why, range);
  return EPODE_ERR_TLS;
}

int epode__tls_handshake_done(const epode__tls *t) { return t && t->done; }

epode_err epode__tls_read(epode__tls *t, void *buf, size_t cap, size_t *n, int *eof) {
  *n = 0;
  *eof = 0;
  if (!cap) return EPODE_OK;
  ERR_clear_error();
  int r = SSL_read(t->ssl, buf, cap > 1u << 30 ? 1 << 30 : (int)cap);
  if (r > 0) {
    *n = (size_t)r;
    return EPODE_OK;
  }
  int e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return EPODE_OK;
  if (e == SSL_ERROR_ZERO_RETURN) {
    *eof = 1;
    return EPODE_OK;
  }
  char why[256];
  ssl_reason(why, sizeof why, "unexpected end of data");
  snprintf(t->detail, sizeof t->detail, "TLS error from %s: %s", t->name, why);
  return EPODE_ERR_TLS;
}

epode_err epode__tls_write(epode__tls *t, const void *p, size_t n) {
  while (n) {
    ERR_clear_error();
    int chunk = n > 1u << 30 ? 1 << 30 : (int)n;
    int w = SSL_write(t->ssl, p, chunk);
    if (w <= 0) {
      char why[256];
      ssl_reason(why, sizeof why, "cannot write");
      snprintf(t->detail, sizeof t->detail, "TLS write to %s failed: %s", t->name, why);
      return EPODE_ERR_TLS;
    }
    p = (const char *)p + w;
    n -= (size_t)w;
  }
  return EPODE_OK;
}

void epode__tls_close_notify(epode__tls *t) {
  if (!t || !t->done) return;
  ERR_clear_error();
  (void)SSL_shutdown(t->ssl);
  ERR_clear_error();
}

size_t epode__tls_out_len(const epode__tls *t) { return t ? BIO_ctrl_pending(t->wbio) : 0; }

size_t epode__tls_take(epode__tls *t, void *buf, size_t cap) {
  if (!cap) return 0;
  int r = BIO_read(t->wbio, buf, cap > 1u << 30 ? 1 << 30 : (int)cap);
  return r > 0 ? (size_t)r : 0;
}

int epode__tls_pending(const epode__tls *t) { return t && t->done && SSL_pending(t->ssl) > 0; }

const char *epode__tls_detail(const epode__tls *t) {
  return t && t->detail[0] ? t->detail : "TLS failure";
}

void epode__tls_info(const epode__tls *t, epode_tls_info *info) {
  memset(info, 0, sizeof *info);
  info->version = t->version;
  if (t->unique_len) {
    info->tls_unique = t->unique;
    info->tls_unique_len = t->unique_len;
  }
  if (t->exporter_len) {
    info->tls_exporter = t->exporter;
    info->tls_exporter_len = t->exporter_len;
  }
  if (t->endpoint_len) {
    info->tls_server_end_point = t->endpoint;
    info->tls_server_end_point_len = t->endpoint_len;
  }
}

const char *epode__tls_version_name(const epode__tls *t) { return SSL_get_version(t->ssl); }
const char *epode__tls_cipher_name(const epode__tls *t) { return SSL_get_cipher_name(t->ssl); }

const char *epode__tls_alpn(const epode__tls *t, size_t *len) {
  const unsigned char *p = NULL;
  unsigned l = 0;
  SSL_get0_alpn_selected(t->ssl, &p, &l);
  if (len) *len = l;
  return l ? (const char *)p : NULL;
}
