/* TLS client certificates (XEP-0178 SASL EXTERNAL): a PEM certificate
 * (chain) with its PEM key, or a PKCS#12 file, loaded into an SSL_CTX.
 *
 * We read the files ourselves and parse them from memory rather than use
 * SSL_CTX_use_certificate_chain_file(): that way every failure says which
 * file and what was wrong with it (unreadable, no certificate, encrypted
 * key, wrong password, key for another certificate) instead of OpenSSL's
 * generic "PEM lib". The same function serves every TLS transport (TCP
 * now; HTTPS for BOSH and WSS later), so the rules live in one place.
 *
 * The file buffers hold private keys: they are wiped before they are
 * freed. The PKCS#12 password is used where it lies in the config (which
 * wipes it when freed); no copy is made. Neither is ever logged. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "net/net.h"
#include "util/alloc.h"

/* A certificate chain with its key is a few KB; PKCS#12 files from
 * browsers or Windows stay under 100 KB. Anything beyond 1 MiB is not a
 * client certificate, and we will not read it into memory. */
#define CERT_FILE_MAX (1024u * 1024u)
/* Certificates after the leaf in one file (intermediates): real chains
 * have one to three. */
#define CHAIN_MAX 16

/* The file's bytes in memory (caller wipes and frees with file_free). */
typedef struct file_buf {
  const epode_mem *mem;
  unsigned char *p;
  size_t n;
} file_buf;

static void file_free(file_buf *f) {
  if (!f->p) return;
  epode__wipe(f->p, f->n);
  epode__free(f->mem, f->p);
  f->p = NULL;
  f->n = 0;
}

/* Reads `path` whole. On failure writes "cannot read the <what> file
 * <path>: <why>" to err. */
static epode_err file_read(file_buf *f, const epode_mem *mem, const char *path, const char *what,
                           char *err, size_t errlen) {
  f->mem = mem;
  f->p = NULL;
  f->n = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    snprintf(err, errlen, "cannot read the %s file %s: %s", what, path, strerror(errno));
    return EPODE_ERR_TLS;
  }
  struct stat st;
  epode_err e = EPODE_ERR_TLS;
  if (fstat(fd, &st) != 0) {
    snprintf(err, errlen, "cannot read the %s file %s: %s", what, path, strerror(errno));
    goto out;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "cannot read the %s file %s: not a regular file", what, path);
    goto out;
  }
  if ((unsigned long long)st.st_size > CERT_FILE_MAX) {
    snprintf(err, errlen, "cannot read the %s file %s: larger than %u bytes", what, path,
             CERT_FILE_MAX);
    goto out;
  }
  /* One byte more than the size, so a file that grew meanwhile is noticed
   * (and the buffer is never empty for the allocator). */
  size_t cap = (size_t)st.st_size + 1;
  f->p = epode__alloc(mem, cap);
  if (!f->p) {
    snprintf(err, errlen, "out of memory reading the %s file %s", what, path);
    e = EPODE_ERR_NOMEM;
    goto out;
  }
  for (;;) {
    ssize_t r = read(fd, f->p + f->n, cap - f->n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      snprintf(err, errlen, "cannot read the %s file %s: %s", what, path, strerror(errno));
      goto out;
    }
    if (r == 0) break;
    f->n += (size_t)r;
    if (f->n == cap) {
      snprintf(err, errlen, "cannot read the %s file %s: it changed while being read", what, path);
      goto out;
    }
  }
  if (!f->n) {
    snprintf(err, errlen, "the %s file %s is empty", what, path);
    goto out;
  }
  e = EPODE_OK;
out:
  close(fd);
  if (e) file_free(f);
  return e;
}

/* The reason of the first queued OpenSSL error, then clears the queue. */
static void reason(char *buf, size_t size, const char *fallback) {
  unsigned long e = ERR_peek_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  if (r)
    snprintf(buf, size, "%s", r);
  else if (e)
    ERR_error_string_n(e, buf, size);
  else
    snprintf(buf, size, "%s", fallback);
  ERR_clear_error();
}

/* The whole OpenSSL error queue, taken off it: PKCS12_parse reports the
 * cause (a MAC failure, an unknown cipher) under a generic summary, and
 * ERR_peek_* sees only the ends of the queue. */
typedef struct errs {
  unsigned long code[16];
  int n;
  char first[256]; /* reason of the oldest: the cause */
} errs;

static void errs_take(errs *x, const char *fallback) {
  unsigned long e;
  x->n = 0;
  while ((e = ERR_get_error()) != 0)
    if (x->n < 16) x->code[x->n++] = e;
  const char *r = x->n ? ERR_reason_error_string(x->code[0]) : NULL;
  if (r)
    snprintf(x->first, sizeof x->first, "%s", r);
  else if (x->n)
    ERR_error_string_n(x->code[0], x->first, sizeof x->first);
  else
    snprintf(x->first, sizeof x->first, "%s", fallback);
}

/* lib -1: from any library (the common reasons such as ERR_R_UNSUPPORTED). */
static int errs_has(const errs *x, int lib, int why) {
  for (int i = 0; i < x->n; i++)
    if ((lib < 0 || ERR_GET_LIB(x->code[i]) == lib) && ERR_GET_REASON(x->code[i]) == why) return 1;
  return 0;
}

/* Encrypted PEM keys are refused rather than prompted for: OpenSSL's
 * default callback would read a passphrase from the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *ud) {
  (void)buf;
  (void)size;
  (void)rwflag;
  *(int *)ud = 1;
  return -1;
}

/* Whether a PEM block named `label` ("-----BEGIN <label>") is in the data. */
static int has_pem(const file_buf *f, const char *label) {
  char begin[64];
  int n = snprintf(begin, sizeof begin, "-----BEGIN %s", label);
  size_t bl = (size_t)n;
  for (size_t i = 0; i + bl <= f->n; i++)
    if (f->p[i] == '-' && !memcmp(f->p + i, begin, bl)) return 1;
  return 0;
}

typedef struct loaded {
  X509 *leaf;
  EVP_PKEY *key;
  STACK_OF(X509) * chain;
} loaded;

static void loaded_free(loaded *l) {
  X509_free(l->leaf);
  EVP_PKEY_free(l->key);
  sk_X509_pop_free(l->chain, X509_free);
  memset(l, 0, sizeof *l);
}

static epode_err load_pem(loaded *l, const epode_config *cfg, char *err, size_t errlen) {
  const char *cert_path = cfg->client_cert;
  const char *key_path = cfg->client_key ? cfg->client_key : cfg->client_cert;
  file_buf cf = {0}, kf = {0};
  BIO *b = NULL;
  char why[256];
  epode_err e = file_read(&cf, &cfg->mem, cert_path, "client certificate", err, errlen);
  if (e) return e;
  e = EPODE_ERR_TLS;

  /* The leaf first, then any intermediates, in file order. PEM_read_bio_X509
   * skips blocks of other kinds (a key in a combined file). */
  b = BIO_new_mem_buf(cf.p, (int)cf.n);
  if (!b) goto nomem;
  ERR_clear_error();
  l->leaf = PEM_read_bio_X509(b, NULL, NULL, NULL);
  if (!l->leaf) {
    if (!has_pem(&cf, "CERTIFICATE")) {
      ERR_clear_error();
      snprintf(err, errlen,
               "the client certificate file %s holds no PEM certificate "
               "(-----BEGIN CERTIFICATE-----)",
               cert_path);
    } else {
      reason(why, sizeof why, "malformed");
      snprintf(err, errlen, "the client certificate in %s cannot be parsed: %s", cert_path, why);
    }
    goto out;
  }
  l->chain = sk_X509_new_null();
  if (!l->chain) goto nomem;
  for (;;) {
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    if (!x) {
      unsigned long pe = ERR_peek_last_error();
      if (ERR_GET_LIB(pe) == ERR_LIB_PEM && ERR_GET_REASON(pe) == PEM_R_NO_START_LINE) {
        ERR_clear_error(); /* the end of the file */
        break;
      }
      reason(why, sizeof why, "malformed");
      snprintf(err, errlen, "certificate %d in %s cannot be parsed: %s", sk_X509_num(l->chain) + 2,
               cert_path, why);
      goto out;
    }
    if (sk_X509_num(l->chain) >= CHAIN_MAX || !sk_X509_push(l->chain, x)) {
      X509_free(x);
      if (sk_X509_num(l->chain) >= CHAIN_MAX) {
        snprintf(err, errlen, "the client certificate file %s holds more than %d certificates",
                 cert_path, CHAIN_MAX + 1);
        goto out;
      }
      goto nomem;
    }
  }
  BIO_free(b);
  b = NULL;

  /* The key: its own file, or the certificate file. */
  const file_buf *kp = &cf;
  if (cfg->client_key) {
    if ((e = file_read(&kf, &cfg->mem, key_path, "client key", err, errlen))) goto out;
    e = EPODE_ERR_TLS;
    kp = &kf;
  }
  b = BIO_new_mem_buf(kp->p, (int)kp->n);
  if (!b) goto nomem;
  int asked = 0;
  ERR_clear_error();
  l->key = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, &asked);
  if (!l->key) {
    if (asked || has_pem(kp, "ENCRYPTED PRIVATE KEY")) {
      ERR_clear_error();
      snprintf(err, errlen,
               "the private key in %s is encrypted; use an unencrypted PEM key "
               "(file permissions protect it) or a PKCS#12 file with its password",
               key_path);
    } else if (!has_pem(kp, "PRIVATE KEY")) {
      ERR_clear_error();
      snprintf(err, errlen,
               "the client %s file %s holds no PEM private key (-----BEGIN PRIVATE KEY-----)%s",
               cfg->client_key ? "key" : "certificate", key_path,
               cfg->client_key ? "" : "; give the key file as well");
    } else {
      reason(why, sizeof why, "malformed");
      snprintf(err, errlen, "the private key in %s cannot be parsed: %s", key_path, why);
    }
    goto out;
  }
  e = EPODE_OK;
  goto out;
nomem:
  ERR_clear_error();
  snprintf(err, errlen, "out of memory loading the client certificate %s", cert_path);
  e = EPODE_ERR_NOMEM;
out:
  BIO_free(b);
  file_free(&cf);
  file_free(&kf);
  if (e) loaded_free(l);
  return e;
}

static epode_err load_p12(loaded *l, const epode_config *cfg, char *err, size_t errlen) {
  const char *path = cfg->client_p12;
  const char *pw = cfg->client_p12_pw;
  file_buf f = {0};
  BIO *b = NULL;
  PKCS12 *p12 = NULL;
  char why[256];
  epode_err e = file_read(&f, &cfg->mem, path, "PKCS#12", err, errlen);
  if (e) return e;
  e = EPODE_ERR_TLS;
  b = BIO_new_mem_buf(f.p, (int)f.n);
  if (!b) goto nomem;
  ERR_clear_error();
  p12 = d2i_PKCS12_bio(b, NULL);
  if (!p12) {
    int pem = has_pem(&f, "");
    reason(why, sizeof why, "malformed");
    snprintf(err, errlen, "%s is not a PKCS#12 file (%s)%s", path, why,
             pem ? "; it looks like PEM: give it as a PEM certificate and key instead" : "");
    goto out;
  }
  /* PKCS12_parse tries both "no password" and "" when pw is NULL or "". */
  if (!PKCS12_parse(p12, pw, &l->key, &l->leaf, &l->chain)) {
    errs x;
    errs_take(&x, "malformed");
    if (errs_has(&x, ERR_LIB_PKCS12, PKCS12_R_MAC_VERIFY_FAILURE)) {
      if (pw && *pw)
        snprintf(err, errlen, "wrong password for the PKCS#12 file %s (its MAC does not verify)",
                 path);
      else
        snprintf(err, errlen, "the PKCS#12 file %s is protected by a password, and none was given",
                 path);
    } else if (errs_has(&x, -1, ERR_R_UNSUPPORTED) ||
               errs_has(&x, ERR_LIB_EVP, EVP_R_UNSUPPORTED_ALGORITHM) ||
               errs_has(&x, ERR_LIB_EVP, EVP_R_UNKNOWN_CIPHER)) {
      snprintf(err, errlen,
               "cannot decrypt the PKCS#12 file %s: %s (older exports use RC2-40, which "
               "OpenSSL 3 disables; re-export it: openssl pkcs12 -legacy -in OLD -nodes | "
               "openssl pkcs12 -export -out NEW)",
               path, x.first);
    } else {
      snprintf(err, errlen, "cannot read the PKCS#12 file %s: %s", path, x.first);
    }
    goto out;
  }
  if (!l->leaf) {
    snprintf(err, errlen, "the PKCS#12 file %s holds no certificate with its key", path);
    goto out;
  }
  if (!l->key) {
    snprintf(err, errlen, "the PKCS#12 file %s holds no private key", path);
    goto out;
  }
  if (!l->chain && !(l->chain = sk_X509_new_null())) goto nomem;
  if (sk_X509_num(l->chain) > CHAIN_MAX) {
    snprintf(err, errlen, "the PKCS#12 file %s holds more than %d CA certificates", path,
             CHAIN_MAX);
    goto out;
  }
  e = EPODE_OK;
  goto out;
nomem:
  ERR_clear_error();
  snprintf(err, errlen, "out of memory loading the PKCS#12 file %s", path);
  e = EPODE_ERR_NOMEM;
out:
  PKCS12_free(p12);
  BIO_free(b);
  file_free(&f);
  ERR_clear_error();
  if (e) loaded_free(l);
  return e;
}

epode_err epode__tls_load_client_cert(struct ssl_ctx_st *ctx, const epode_config *cfg, char *err,
                                      size_t errlen) {
  if (!ctx || !cfg || !err || !errlen) return EPODE_ERR_INVAL;
  err[0] = '\0';
  if (!epode__config_has_client_cert(cfg)) return EPODE_OK;
  loaded l = {0};
  const char *src = cfg->client_p12 ? cfg->client_p12 : cfg->client_cert;
  const char *key_src = cfg->client_p12   ? cfg->client_p12
                        : cfg->client_key ? cfg->client_key
                                          : cfg->client_cert;
  epode_err e = cfg->client_p12 ? load_p12(&l, cfg, err, errlen) : load_pem(&l, cfg, err, errlen);
  if (e) return e;
  e = EPODE_ERR_TLS;
  char why[256];

  /* Checked before installing so the message names both files; OpenSSL
   * itself would only say "key values mismatch". */
  ERR_clear_error();
  if (X509_check_private_key(l.leaf, l.key) != 1) {
    reason(why, sizeof why, "key values mismatch");
    if (cfg->client_p12)
      snprintf(err, errlen, "the private key in %s does not match its certificate (%s)", src, why);
    else
      snprintf(err, errlen, "the private key in %s does not match the certificate in %s (%s)",
               key_src, src, why);
    goto out;
  }
  if (SSL_CTX_use_certificate(ctx, l.leaf) != 1 || SSL_CTX_use_PrivateKey(ctx, l.key) != 1 ||
      SSL_CTX_clear_chain_certs(ctx) != 1) {
    reason(why, sizeof why, "rejected");
    snprintf(err, errlen, "cannot use the client certificate from %s: %s", src, why);
    goto out;
  }
  for (int i = 0; i < sk_X509_num(l.chain); i++)
    if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(l.chain, i)) != 1) {
      reason(why, sizeof why, "rejected");
      snprintf(err, errlen, "cannot use CA certificate %d from %s: %s", i + 1, src, why);
      goto out;
    }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    reason(why, sizeof why, "key values mismatch");
    snprintf(err, errlen, "the private key in %s does not match the certificate in %s (%s)",
             key_src, src, why);
    goto out;
  }
  if (EPODE__LOG_ON(cfg, EPODE_LOG_DEBUG)) {
    char subj[256];
    X509_NAME_oneline(X509_get_subject_name(l.leaf), subj, sizeof subj);
    epode__log(cfg, EPODE_LOG_DEBUG, "net", "TLS client certificate from %s: %s (+%d CA)", src,
               subj, sk_X509_num(l.chain));
  }
  if (X509_cmp_current_time(X509_get0_notAfter(l.leaf)) < 0)
    epode__log(cfg, EPODE_LOG_WARN, "net",
               "the client certificate in %s has expired; the server will likely refuse it", src);
  e = EPODE_OK;
out:
  ERR_clear_error();
  loaded_free(&l);
  return e;
}
