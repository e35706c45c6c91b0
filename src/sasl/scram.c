/* SCRAM-SHA-1/-256/-512 and their -PLUS variants (RFC 5802, RFC 7677,
 * channel bindings per RFC 5929 and RFC 9266).
 *
 *   start()   -> client-first  gs2-header "n=" user ",r=" cnonce
 *   step(1)   <- server-first  "r=" cnonce+snonce ",s=" salt ",i=" count
 *                              [",h=" b64(H(offer))]  (XEP-0474)
 *             -> client-final  "c=" b64(gs2-header + cb) ",r=" nonce ",p=" proof
 *   step(2)?  <- server-final  "v=" signature, when a server sends it as a
 *             -> ""            challenge (then <success/> is empty)
 *   success() <- server-final  "v=" signature, or empty after step(2)
 *
 * The server's parse is strict: every malformed or hostile message fails
 * the exchange with a message saying exactly what was wrong. Both HMACs over
 * the AuthMessage are computed in step(1), incrementally over the pieces,
 * so the server-first message is never copied. After step(1) the state
 * holds the expected ServerSignature and, for p->scram_keys_out, the
 * derived keys, which are handed over only once the server has proved
 * itself (so a fake server never gets its salt recorded) and are wiped
 * otherwise.
 *
 * Cached keys (p->scram_keys, as Strophe.js/Converse keep them): when the
 * hash, salt and iteration count match the server's, the proof is made
 * from ClientKey/ServerKey directly (StoredKey = H(ClientKey)), without the
 * password and without PBKDF2.
 *
 * XEP-0474 (SSDP, version 0.5.0): the server may add "h=" to server-first,
 * the base64 of H(S) with H the mechanism's hash and
 *   S = sort(mechanisms offered) joined by 0x1E
 *       [ 0x1F sort(XEP-0440 channel-binding types) joined by 0x1E ]
 * (sorting by octets, RFC 4790 i;octet; the 0x1F part only when the server
 * used XEP-0440). We compute the same from p->server_mechs and
 * p->server_cb_types at start() and fail on a mismatch; without h= (a
 * server that does not implement it) or without p->server_mechs (we cannot
 * compute it) there is nothing to check. The older "d=" form (0.3.x, with
 * ',' and '|' as delimiters) is not interpreted. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "epode/sasl.h"
#include "epode_limits.h"
#include "sasl/sasl_int.h"
#include "util/alloc.h"
#include "util/base64_int.h"

typedef struct scram_alg {
  const char *md_name;   /* for the EVP_MAC "digest" parameter */
  const char *hash_name; /* as in epode_scram_keys.hash */
  const EVP_MD *(*md)(void);
  size_t len; /* digest length */
} scram_alg;

static const scram_alg alg_sha1 = {"SHA1", "SHA-1", EVP_sha1, 20};
static const scram_alg alg_sha256 = {"SHA256", "SHA-256", EVP_sha256, 32};
static const scram_alg alg_sha512 = {"SHA512", "SHA-512", EVP_sha512, 64};

/* PKCS5_PBKDF2_HMAC takes an int: INT_MAX. */
#define ITER_HARD_MAX 0x7FFFFFFFu

/* 24 random bytes (192 bits), base64: 32 characters, no padding, no ','. */
#define NONCE_RANDOM_BYTES 24

enum scram_st {
  S_FIRST_SENT, /* waiting for server-first */
  S_FINAL_SENT, /* waiting for server-final (challenge or success) */
  S_VERIFIED,   /* v= verified in a challenge; waiting for an empty success */
  S_DONE,
  S_FAILED
};

typedef struct scram {
  const epode_mem *mem;
  const scram_alg *alg;
  enum scram_st st;
  uint64_t iter_min, iter_max;
  char *password;   /* SASLprepped, or NULL; wiped and freed once the proof is made */
  char *first_bare; /* "n=" user ",r=" cnonce */
  size_t first_bare_len;
  size_t nonce_len;     /* the client nonce ends first_bare */
  unsigned char *cbind; /* gs2 header + channel-binding data: c= decoded */
  size_t cbind_len;
  unsigned char server_sig[EVP_MAX_MD_SIZE];
  /* p->scram_keys, copied at start (the params need not outlive start());
   * wiped once server-first has been handled. */
  epode_scram_keys cached;
  int have_cached;
  /* The keys of this exchange, for keys_out once the server proved itself. */
  epode_scram_keys derived;
  int have_derived;
  epode_scram_keys *keys_out; /* p->scram_keys_out: written by success(), so it must
                               * outlive the exchange (the session's does) */
  /* XEP-0474: the hash we expect in h=, if we could compute it, and what
   * it covered (sanitized, for the error message). */
  int ssdp_known;
  unsigned char ssdp[EVP_MAX_MD_SIZE];
  char ssdp_offer[96];
  char err[EPODE__SASL_ERRMSG_SIZE];
} scram;

/* Forgets every secret the state holds (password, keys, signature). */
static void wipe_secrets(scram *s) {
  if (s->password) {
    epode__free_secret(s->mem, s->password);
    s->password = NULL;
  }
  epode__wipe(s->server_sig, sizeof s->server_sig);
  epode__wipe(&s->cached, sizeof s->cached);
  epode__wipe(&s->derived, sizeof s->derived);
  s->have_cached = s->have_derived = 0;
}

static epode_err fail(scram *s, epode_err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static epode_err fail(scram *s, epode_err e, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->err, sizeof s->err, fmt, ap);
  va_end(ap);
  s->st = S_FAILED;
  wipe_secrets(s);
  return e;
}

/* ------------------------------------------------------------ crypto */

typedef struct piece {
  const void *p;
  size_t n;
} piece;

/* HMAC over the concatenation of the pieces. */
static int hmac(const scram_alg *a, const unsigned char *key, size_t klen, const piece *pc,
                size_t npc, unsigned char *out) {
  EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
  OSSL_PARAM params[2];
  params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)a->md_name, 0);
  params[1] = OSSL_PARAM_construct_end();
  int ok = ctx && EVP_MAC_init(ctx, key, klen, params);
  for (size_t i = 0; ok && i < npc; i++)
    ok = EVP_MAC_update(ctx, pc[i].p, pc[i].n);
  size_t ol = 0;
  if (ok) ok = EVP_MAC_final(ctx, out, &ol, EVP_MAX_MD_SIZE) && ol == a->len;
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
  return ok;
}

/* ------------------------------------------------------------ start */

/* Appends a saslname: ',' and '=' escaped as =2C and =3D (RFC 5802 5.1). */
static epode_err append_saslname(epode__buf *b, const char *s) {
  const char *run = s;
  for (; *s; s++) {
    if (*s != ',' && *s != '=') continue;
    epode_err e = epode__buf_append(b, run, (size_t)(s - run));
    if (!e) e = epode__buf_append(b, *s == ',' ? "=2C" : "=3D", 3);
    if (e) return e;
    run = s + 1;
  }
  return epode__buf_append(b, run, (size_t)(s - run));
}

static int listed(const char *const *types, const char *t) {
  for (; *types; types++)
    if (strcmp(*types, t) == 0) return 1;
  return 0;
}

/* Chooses the channel-binding type and data, or returns NULL. With the
 * server's list (XEP-0440) we take the strongest type it supports that we
 * have data for; without it, the type defined for the TLS version
 * (RFC 9266 for 1.3, RFC 5929 tls-unique for 1.2). tls-unique is never
 * used on TLS 1.3, where it is undefined (RFC 9266 section 3). */
static const char *pick_cb(const epode__sasl_params *p, const unsigned char **data, size_t *len) {
  const epode_tls_info *t = p->tls;
  if (!t) return NULL;
  int exporter = t->tls_exporter && t->tls_exporter_len;
  int unique = t->tls_unique && t->tls_unique_len && t->version < 0x0304;
  int endpoint = t->tls_server_end_point && t->tls_server_end_point_len;
  const char *const *srv = p->server_cb_types;
  if (exporter && (srv ? listed(srv, "tls-exporter") : t->version >= 0x0304)) {
    *data = t->tls_exporter;
    *len = t->tls_exporter_len;
    return "tls-exporter";
  }
  if (unique && (!srv || listed(srv, "tls-unique"))) {
    *data = t->tls_unique;
    *len = t->tls_unique_len;
    return "tls-unique";
  }
  if (endpoint && srv && listed(srv, "tls-server-end-point")) {
    *data = t->tls_server_end_point;
    *len = t->tls_server_end_point_len;
    return "tls-server-end-point";
  }
  return NULL;
}

static int nonce_char_ok(unsigned char c) { return c >= 0x21 && c <= 0x7E && c != ','; }

static epode_err prep(scram *s, const char *in, const char *what, char **out) {
  epode_err e = epode__saslprep(s->mem, in, out);
  if (e == EPODE_ERR_NOMEM) return fail(s, e, "out of memory");
  if (e) return fail(s, e, "SASLprep rejected the %s (prohibited or invalid character)", what);
  if (!**out) return fail(s, EPODE_ERR_INVAL, "the %s is empty after SASLprep", what);
  return EPODE_OK;
}

/* The key length of the hash called `name` ("SHA-1", ...), or 0. */
static size_t hash_key_len(const char *name, size_t size) {
  if (!memchr(name, '\0', size)) return 0;
  if (!strcmp(name, "SHA-1")) return 20;
  if (!strcmp(name, "SHA-256")) return 32;
  if (!strcmp(name, "SHA-512")) return 64;
  return 0;
}

/* ------------------------------------------------------------ XEP-0474 */

static int cmp_octets(const void *a, const void *b) {
  /* strcmp compares as unsigned char: RFC 4790 i;octet. */
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Appends `str` to the summary d (size dsz), printable ASCII only; ends in
 * "..." once it no longer fits. */
static void summary_add(char *d, size_t dsz, const char *str) {
  size_t j = strlen(d);
  for (; *str && j < dsz - 1; str++) {
    if (j == dsz - 4) {
      memcpy(d + j, "...", 3);
      j = dsz - 1;
      break;
    }
    unsigned char c = (unsigned char)*str;
    d[j++] = c >= 0x20 && c < 0x7F ? (char)c : '?';
  }
  d[j] = '\0';
}

static int digest_list(EVP_MD_CTX *ctx, const char **v, size_t n, char *sum, size_t sumsz) {
  int ok = 1;
  for (size_t i = 0; ok && i < n; i++) {
    if (i) ok = EVP_DigestUpdate(ctx, "\x1e", 1);
    ok = ok && EVP_DigestUpdate(ctx, v[i], strlen(v[i]));
    summary_add(sum, sumsz, i ? "," : "");
    summary_add(sum, sumsz, v[i]);
  }
  if (!n) summary_add(sum, sumsz, "none");
  return ok;
}

/* Computes what the server's h= must be, from the offer as we saw it. */
static epode_err ssdp_prepare(scram *s, const epode__sasl_params *p) {
  if (!p->server_mechs) return EPODE_OK; /* unknown: nothing to compare h= with */
  const char *const *cbt = p->server_cb_types;
  size_t nm = 0, nc = 0;
  while (p->server_mechs[nm])
    nm++;
  while (cbt && cbt[nc])
    nc++;
  const char **v = NULL;
  if (nm + nc) {
    if (nm + nc > SIZE_MAX / sizeof *v || !(v = epode__alloc(s->mem, (nm + nc) * sizeof *v)))
      return fail(s, EPODE_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < nm; i++)
      v[i] = p->server_mechs[i];
    for (size_t i = 0; i < nc; i++)
      v[nm + i] = cbt[i];
    qsort(v, nm, sizeof *v, cmp_octets);
    qsort(v + nm, nc, sizeof *v, cmp_octets);
  }
  char *sum = s->ssdp_offer;
  sum[0] = '\0';
  summary_add(sum, sizeof s->ssdp_offer, "mechanisms ");
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  int ok = ctx && EVP_DigestInit_ex(ctx, s->alg->md(), NULL) == 1;
  ok = ok && digest_list(ctx, v, nm, sum, sizeof s->ssdp_offer);
  if (cbt) {
    summary_add(sum, sizeof s->ssdp_offer, "; channel-binding types ");
    ok = ok && EVP_DigestUpdate(ctx, "\x1f", 1);
    ok = ok && digest_list(ctx, v + nm, nc, sum, sizeof s->ssdp_offer);
  } else {
    summary_add(sum, sizeof s->ssdp_offer, "; no channel-binding list");
  }
  unsigned int dl = 0;
  ok = ok && EVP_DigestFinal_ex(ctx, s->ssdp, &dl) == 1 && dl == s->alg->len;
  EVP_MD_CTX_free(ctx);
  epode__free(s->mem, v);
  if (!ok) return fail(s, EPODE_ERR_NOMEM, "the crypto library failed (digest)");
  s->ssdp_known = 1;
  return EPODE_OK;
}

static epode_err scram_start_common(const scram_alg *alg, int plus, void **state,
                                    const epode__sasl_params *p, const char *test_nonce,
                                    epode__buf *out, int *has_initial) {
  *state = NULL;
  *has_initial = 0;
  const epode_mem *mem = p->mem;
  scram *s = epode__calloc(mem, sizeof *s);
  if (!s) return EPODE_ERR_NOMEM;
  s->mem = mem;
  s->alg = alg;
  s->st = S_FAILED;
  s->iter_min = p->scram_iter_min ? p->scram_iter_min : EPODE_DEFAULT_SCRAM_ITER_MIN;
  s->iter_max = p->scram_iter_max ? p->scram_iter_max : EPODE_DEFAULT_SCRAM_ITER_MAX;
  *state = s;

  if (!p->authcid) return fail(s, EPODE_ERR_INVAL, "no username configured");
  if (!p->password && !p->scram_keys)
    return fail(s, EPODE_ERR_INVAL, "no password configured (nor cached SCRAM keys)");
  /* With cached keys an empty password means "none": whether it is needed
   * is known only once the server's salt and iteration count arrive. */
  int have_password = p->password && (*p->password || !p->scram_keys);
  if (p->scram_keys) {
    const epode_scram_keys *k = p->scram_keys;
    size_t kl = hash_key_len(k->hash, sizeof k->hash);
    if (!kl || k->key_len != kl || !k->salt_len || k->salt_len > EPODE_SCRAM_MAX_SALT ||
        !k->iterations)
      return fail(s, EPODE_ERR_INVAL,
                  "the cached SCRAM keys are malformed (unknown hash, key length, empty or "
                  "oversized salt, or zero iterations)");
    memcpy(&s->cached, k, sizeof s->cached);
    s->have_cached = 1;
  }
  s->keys_out = p->scram_keys_out;
  epode_err e = ssdp_prepare(s, p);
  if (e) return e;

  /* The gs2 header: "p=<type>" for -PLUS; "y" when we could bind but the
   * server offered no -PLUS (so a downgrade-stripped -PLUS offer is caught
   * by the server); else "n". */
  const unsigned char *cb = NULL;
  size_t cb_len = 0;
  const char *cb_type = pick_cb(p, &cb, &cb_len);
  const char *flag;
  if (plus) {
    if (!cb_type)
      return fail(s, EPODE_ERR_SASL_NOMECH,
                  p->tls ? "no usable channel-binding data for the types the server supports"
                         : "channel binding needs TLS");
    flag = NULL;
  } else {
    flag = cb_type && !p->server_offers_plus ? "y" : "n";
    cb = NULL;
    cb_len = 0;
  }

  char nonce[NONCE_RANDOM_BYTES * 2];
  size_t nonce_len;
  if (test_nonce) {
    nonce_len = strlen(test_nonce);
    if (!nonce_len || nonce_len >= sizeof nonce) return fail(s, EPODE_ERR_INVAL, "bad test nonce");
    for (size_t i = 0; i < nonce_len; i++)
      if (!nonce_char_ok((unsigned char)test_nonce[i]))
        return fail(s, EPODE_ERR_INVAL, "bad test nonce");
    memcpy(nonce, test_nonce, nonce_len);
  } else {
    unsigned char raw[NONCE_RANDOM_BYTES];
    int rc = p->random ? p->random(p->random_ud, raw, sizeof raw)
                       : (RAND_bytes(raw, (int)sizeof raw) == 1 ? 0 : -1);
    if (rc != 0) return fail(s, EPODE_ERR_SYS, "the random source failed");
    epode__base64_enc(raw, sizeof raw, nonce);
    nonce_len = NONCE_RANDOM_BYTES / 3 * 4;
    epode__wipe(raw, sizeof raw);
  }

  char *user = NULL;
  e = prep(s, p->authcid, "username", &user);
  if (!e && have_password) e = prep(s, p->password, "password", &s->password);

  /* gs2 header, then client-first-bare, assembled in one buffer. */
  epode__buf b;
  epode__buf_init(&b, mem, 0);
  if (!e) {
    if (plus)
      e = epode__buf_printf(&b, "p=%s,", cb_type);
    else
      e = epode__buf_printf(&b, "%s,", flag);
    if (!e && p->authzid && *p->authzid) {
      e = epode__buf_append(&b, "a=", 2);
      if (!e) e = append_saslname(&b, p->authzid);
    }
    if (!e) e = epode__buf_append(&b, ",", 1);
    size_t gs2_len = b.len;
    if (!e) e = epode__buf_append(&b, "n=", 2);
    if (!e) e = append_saslname(&b, user);
    if (!e) e = epode__buf_append(&b, ",r=", 3);
    if (!e) e = epode__buf_append(&b, nonce, nonce_len);
    if (!e) {
      s->first_bare_len = b.len - gs2_len;
      s->first_bare = epode__strndup(mem, b.data + gs2_len, s->first_bare_len);
      s->nonce_len = nonce_len;
      s->cbind_len = gs2_len + cb_len;
      s->cbind = epode__alloc(mem, s->cbind_len);
      if (!s->first_bare || !s->cbind) e = EPODE_ERR_NOMEM;
    }
    if (!e) {
      memcpy(s->cbind, b.data, gs2_len);
      if (cb_len) memcpy(s->cbind + gs2_len, cb, cb_len);
      size_t start = out->len;
      e = epode__buf_append(out, b.data, b.len);
      if (e) {
        out->len = start;
        if (out->data) out->data[start] = '\0';
      }
    }
    if (e)
      fail(s, e, e == EPODE_ERR_NOMEM ? "out of memory" : "client-first exceeds the output limit");
  }
  epode__buf_free(&b);
  epode__free_secret(mem, user);
  if (!e) {
    s->st = S_FIRST_SENT;
    *has_initial = 1;
  }
  return e;
}

/* ------------------------------------------------------------ server-first */

/* Finds the end of the attribute value starting at i: the next ',' or len. */
static size_t value_end(const unsigned char *in, size_t i, size_t len) {
  const unsigned char *c = memchr(in + i, ',', len - i);
  return c ? (size_t)(c - in) : len;
}

/* Extensions after the mandatory attributes: ("," ALPHA "=" value)*. They
 * carry nothing we understand, but must at least be well-formed. */
static int extensions_ok(const unsigned char *in, size_t i, size_t len) {
  while (i < len) {
    if (in[i] != ',' || len - i < 3) return 0;
    unsigned char a = in[i + 1];
    if (!((a >= 'a' && a <= 'z') || (a >= 'A' && a <= 'Z')) || in[i + 2] != '=') return 0;
    i = value_end(in, i + 3, len);
  }
  return 1;
}

/* Counts the extensions named `name` in in[i..len) (already checked by
 * extensions_ok); the value of the last one found is in[*v0..*v1). */
static int ext_find(const unsigned char *in, size_t i, size_t len, unsigned char name, size_t *v0,
                    size_t *v1) {
  int n = 0;
  while (i < len) {
    size_t e = value_end(in, i + 3, len);
    if (in[i + 1] == name) {
      *v0 = i + 3;
      *v1 = e;
      n++;
    }
    i = e;
  }
  return n;
}

/* XEP-0474: h= must be the hash of the offer we saw. A mismatch means the
 * mechanism or channel-binding list was changed on the way (or the server
 * hashes something else than it advertised); either way the spec says the
 * client MUST fail. */
static epode_err ssdp_check(scram *s, const unsigned char *h, size_t n) {
  const scram_alg *a = s->alg;
  int ok;
  unsigned char got[EVP_MAX_MD_SIZE + 3];
  size_t got_len = 0;
  if (n != epode__base64_enc_len(a->len, &ok) ||
      epode__base64_dec((const char *)h, n, got, &got_len) || got_len != a->len)
    return fail(s, EPODE_ERR_SASL_PROTOCOL,
                "downgrade detected (XEP-0474): the server's h= is not a base64 %s hash",
                a->hash_name);
  if (CRYPTO_memcmp(got, s->ssdp, a->len) != 0)
    return fail(s, EPODE_ERR_SASL_PROTOCOL,
                "downgrade detected (XEP-0474): the server's h= does not match the offer we "
                "received (%s); altered in transit, or the server hashes another list",
                s->ssdp_offer);
  return EPODE_OK;
}

/* Cached keys that do not fit and no password to fall back on. */
static epode_err keys_mismatch(scram *s, int same_salt, uint64_t iter,
                               const unsigned char *salt_b64, size_t salt_b64_len) {
  const epode_scram_keys *k = &s->cached;
  char salt[40];
  if (salt_b64_len < 32)
    snprintf(salt, sizeof salt, "salt %.*s", (int)salt_b64_len, (const char *)salt_b64);
  else
    snprintf(salt, sizeof salt, "a %zu-character salt", salt_b64_len);
  return fail(s, EPODE_ERR_AUTH,
              "cached SCRAM keys are for %s with %lu iterations and %s salt; the server now uses "
              "%s with %llu iterations and %s; a password is needed",
              k->hash, (unsigned long)k->iterations, same_salt ? "the same" : "another",
              s->alg->hash_name, (unsigned long long)iter, same_salt ? "the same salt" : salt);
}

static epode_err server_first(scram *s, const unsigned char *in, size_t len, epode__buf *out) {
  const scram_alg *a = s->alg;
  if (len == 0) return fail(s, EPODE_ERR_SASL_PROTOCOL, "empty server-first message");
  if (memchr(in, '\0', len)) return fail(s, EPODE_ERR_SASL_PROTOCOL, "NUL in server-first");
  if (len >= 2 && in[0] == 'm' && in[1] == '=')
    return fail(s, EPODE_ERR_SASL_PROTOCOL,
                "server-first requires an unsupported mandatory extension (m=)");

  /* r=<nonce> */
  if (len < 2 || in[0] != 'r' || in[1] != '=')
    return fail(s, EPODE_ERR_SASL_PROTOCOL, "server-first does not start with r=");
  size_t r0 = 2, r1 = value_end(in, r0, len);
  const char *cnonce = s->first_bare + s->first_bare_len - s->nonce_len;
  if (r1 - r0 <= s->nonce_len || memcmp(in + r0, cnonce, s->nonce_len) != 0)
    return fail(s, EPODE_ERR_SASL_PROTOCOL,
                r1 - r0 == s->nonce_len && memcmp(in + r0, cnonce, s->nonce_len) == 0
                    ? "server nonce adds nothing to ours"
                    : "server nonce does not extend ours");
  for (size_t i = r0; i < r1; i++)
    if (!nonce_char_ok(in[i]))
      return fail(s, EPODE_ERR_SASL_PROTOCOL, "server nonce has a non-printable character");

  /* ,s=<base64 salt> */
  if (r1 + 3 > len || in[r1 + 1] != 's' || in[r1 + 2] != '=')
    return fail(s, EPODE_ERR_SASL_PROTOCOL, "server-first has no s= after r=");
  size_t s0 = r1 + 3, s1 = value_end(in, s0, len);
  if (s1 == s0) return fail(s, EPODE_ERR_SASL_PROTOCOL, "server sent an empty salt");
  if ((s1 - s0) % 4) return fail(s, EPODE_ERR_SASL_PROTOCOL, "server salt is not valid base64");

  /* ,i=<posit-number> */
  if (s1 + 3 > len || in[s1 + 1] != 'i' || in[s1 + 2] != '=')
    return fail(s, EPODE_ERR_SASL_PROTOCOL, "server-first has no i= after s=");
  size_t i0 = s1 + 3, i1 = value_end(in, i0, len);
  uint64_t iter = 0;
  int bad = i1 == i0 || in[i0] == '0';
  for (size_t i = i0; !bad && i < i1; i++) {
    if (in[i] < '0' || in[i] > '9' || iter > (UINT64_MAX - 9) / 10)
      bad = 1;
    else
      iter = iter * 10 + (uint64_t)(in[i] - '0');
  }
  if (bad)
    return fail(s, EPODE_ERR_SASL_PROTOCOL,
                "iteration count is not a positive decimal number (or is too large)");
  if (iter < s->iter_min)
    return fail(s, EPODE_ERR_SASL_PROTOCOL,
                "iteration count %llu is below the minimum %llu; the server's password storage "
                "is too weak",
                (unsigned long long)iter, (unsigned long long)s->iter_min);
  if (iter > s->iter_max || iter > ITER_HARD_MAX)
    return fail(s, EPODE_ERR_SASL_PROTOCOL, "iteration count %llu exceeds the maximum %llu",
                (unsigned long long)iter,
                (unsigned long long)(s->iter_max < ITER_HARD_MAX ? s->iter_max : ITER_HARD_MAX));
  if (!extensions_ok(in, i1, len))
    return fail(s, EPODE_ERR_SASL_PROTOCOL, "malformed data after i= in server-first");
  size_t h0 = 0, h1 = 0;
  int nh = ext_find(in, i1, len, 'h', &h0, &h1);
  if (nh > 1) return fail(s, EPODE_ERR_SASL_PROTOCOL, "server-first has more than one h=");
  if (nh == 1 && s->ssdp_known) {
    epode_err e = ssdp_check(s, in + h0, h1 - h0);
    if (e) return e;
  }

  unsigned char *salt = epode__alloc(s->mem, (s1 - s0) / 4 * 3);
  if (!salt) return fail(s, EPODE_ERR_NOMEM, "out of memory");
  size_t salt_len = 0;
  if (epode__base64_dec((const char *)in + s0, s1 - s0, salt, &salt_len)) {
    epode__free(s->mem, salt);
    return fail(s, EPODE_ERR_SASL_PROTOCOL, "server salt is not valid base64");
  }
  if (salt_len == 0) { /* cannot happen for a non-empty value; keep the invariant local */
    epode__free(s->mem, salt);
    return fail(s, EPODE_ERR_SASL_PROTOCOL, "server sent an empty salt");
  }

  /* Cached keys, if they are for exactly this hash, salt and count. */
  const epode_scram_keys *k = &s->cached;
  int same_hash = s->have_cached && !strcmp(k->hash, a->hash_name) && k->key_len == a->len;
  int same_salt =
      s->have_cached && k->salt_len == salt_len && CRYPTO_memcmp(k->salt, salt, salt_len) == 0;
  int same_iter = s->have_cached && k->iterations == iter;
  int use_cache = same_hash && same_salt && same_iter;
  if (!use_cache && !s->password) {
    epode__free(s->mem, salt);
    return keys_mismatch(s, same_salt, iter, in + s0, s1 - s0);
  }

  /* client-final-message-without-proof, straight into out. */
  size_t start = out->len;
  epode_err e = epode__buf_append(out, "c=", 2);
  if (!e) e = epode__base64_enc_buf(out, s->cbind, s->cbind_len);
  if (!e) e = epode__buf_append(out, ",r=", 3);
  if (!e) e = epode__buf_append(out, in + r0, r1 - r0);
  size_t wo_proof_end = out->len;

  unsigned char salted[EVP_MAX_MD_SIZE], ckey[EVP_MAX_MD_SIZE], skey[EVP_MAX_MD_SIZE];
  unsigned char stored[EVP_MAX_MD_SIZE], csig[EVP_MAX_MD_SIZE];
  int ok = 1;
  if (!e) {
    if (use_cache) {
      memcpy(ckey, k->client_key, a->len);
      memcpy(skey, k->server_key, a->len);
    } else {
      /* SaltedPassword := Hi(password, salt, i): PBKDF2 with HMAC-H. */
      ok = PKCS5_PBKDF2_HMAC(s->password, (int)strlen(s->password), salt, (int)salt_len, (int)iter,
                             a->md(), (int)a->len, salted) == 1;
      piece ck = {"Client Key", 10}, sk = {"Server Key", 10};
      ok = ok && hmac(a, salted, a->len, &ck, 1, ckey) && hmac(a, salted, a->len, &sk, 1, skey);
    }
    /* Kept for keys_out until the server has proved itself. A salt too
     * long for the public struct cannot be cached: keys_out stays empty. */
    if (ok && s->keys_out && salt_len <= EPODE_SCRAM_MAX_SALT) {
      epode_scram_keys *d = &s->derived;
      memset(d, 0, sizeof *d);
      memcpy(d->hash, a->hash_name, strlen(a->hash_name) + 1);
      memcpy(d->salt, salt, salt_len);
      d->salt_len = salt_len;
      d->iterations = (uint32_t)iter;
      memcpy(d->client_key, ckey, a->len);
      memcpy(d->server_key, skey, a->len);
      d->key_len = a->len;
      s->have_derived = 1;
    }
    unsigned int sl = 0;
    ok = ok && EVP_Digest(ckey, a->len, stored, &sl, a->md(), NULL) == 1 && sl == a->len;
    /* AuthMessage := client-first-bare "," server-first "," client-final-
     * without-proof; fed to the MAC in pieces. */
    piece am[5] = {{s->first_bare, s->first_bare_len},
                   {",", 1},
                   {in, len},
                   {",", 1},
                   {out->data + start, wo_proof_end - start}};
    ok = ok && hmac(a, stored, a->len, am, 5, csig) && hmac(a, skey, a->len, am, 5, s->server_sig);
    if (ok) {
      for (size_t j = 0; j < a->len; j++)
        ckey[j] ^= csig[j]; /* ClientProof */
      e = epode__buf_append(out, ",p=", 3);
      if (!e) e = epode__base64_enc_buf(out, ckey, a->len);
    }
  }
  epode__wipe(salted, sizeof salted);
  epode__wipe(ckey, sizeof ckey);
  epode__wipe(skey, sizeof skey);
  epode__wipe(stored, sizeof stored);
  epode__wipe(csig, sizeof csig);
  epode__free(s->mem, salt);
  epode__free_secret(s->mem, s->password);
  s->password = NULL;
  epode__wipe(&s->cached, sizeof s->cached);
  s->have_cached = 0;
  if (e || !ok) {
    out->len = start;
    if (out->data) out->data[start] = '\0';
    if (!ok) return fail(s, EPODE_ERR_NOMEM, "the crypto library failed (PBKDF2/HMAC/digest)");
    return fail(s, e,
                e == EPODE_ERR_NOMEM ? "out of memory" : "client-final exceeds the output limit");
  }
  s->st = S_FINAL_SENT;
  return EPODE_OK;
}

/* ------------------------------------------------------------ server-final */

/* Copies a server-provided value into the error message, printable ASCII
 * only: it is shown to users and logged. */
static void sanitize(char *dst, size_t dsz, const unsigned char *v, size_t n) {
  size_t j = 0;
  for (size_t i = 0; i < n && j + 1 < dsz; i++)
    dst[j++] = (v[i] >= 0x20 && v[i] < 0x7F) ? (char)v[i] : '?';
  dst[j] = '\0';
}

static epode_err server_final(scram *s, const unsigned char *in, size_t len) {
  if (memchr(in, '\0', len)) return fail(s, EPODE_ERR_SASL_PROTOCOL, "NUL in server-final");
  size_t end = len >= 2 ? value_end(in, 2, len) : len;
  if (len >= 2 && in[0] == 'e' && in[1] == '=') {
    char v[128];
    sanitize(v, sizeof v, in + 2, end - 2);
    return fail(s, EPODE_ERR_AUTH, "server reported error: %s", v);
  }
  if (len < 2 || in[0] != 'v' || in[1] != '=')
    return fail(s, EPODE_ERR_SASL_PROTOCOL, "server-final has neither v= nor e=");
  if (!extensions_ok(in, end, len))
    return fail(s, EPODE_ERR_SASL_PROTOCOL, "malformed data after v= in server-final");
  int ok;
  size_t want = epode__base64_enc_len(s->alg->len, &ok);
  unsigned char sig[EVP_MAX_MD_SIZE + 3];
  size_t sig_len = 0;
  if (end - 2 != want)
    return fail(s, EPODE_ERR_SASL_SIGNATURE, "server signature has the wrong length");
  if (epode__base64_dec((const char *)in + 2, want, sig, &sig_len) || sig_len != s->alg->len)
    return fail(s, EPODE_ERR_SASL_PROTOCOL, "server signature is not valid base64");
  if (CRYPTO_memcmp(sig, s->server_sig, s->alg->len) != 0)
    return fail(s, EPODE_ERR_SASL_SIGNATURE,
                "server signature does not match: the server does not know the password "
                "(or the exchange was tampered with)");
  return EPODE_OK;
}

/* ------------------------------------------------------------ vtable */

static epode_err scram_step(void *state, const unsigned char *in, size_t in_len, epode__buf *out) {
  scram *s = state;
  if (!s) return EPODE_ERR_SASL_PROTOCOL;
  if (!in) in_len = 0;
  s->err[0] = '\0';
  switch (s->st) {
  case S_FIRST_SENT: return server_first(s, in ? in : (const unsigned char *)"", in_len, out);
  case S_FINAL_SENT: {
    /* Some servers send v= as a challenge and then an empty <success/>:
     * verify now and answer with an empty response. */
    epode_err e = server_final(s, in ? in : (const unsigned char *)"", in_len);
    if (e) return e;
    s->st = S_VERIFIED;
    return EPODE_OK;
  }
  case S_VERIFIED:
  case S_DONE: return fail(s, EPODE_ERR_SASL_PROTOCOL, "challenge after the exchange completed");
  case S_FAILED: break;
  }
  return fail(s, EPODE_ERR_SASL_PROTOCOL, "challenge after the exchange failed");
}

static epode_err scram_success(void *state, const unsigned char *in, size_t in_len) {
  scram *s = state;
  if (!s) return EPODE_ERR_SASL_PROTOCOL;
  if (!in) in_len = 0;
  s->err[0] = '\0';
  epode_err e;
  switch (s->st) {
  case S_FIRST_SENT:
    return fail(s, EPODE_ERR_SASL_SIGNATURE,
                "success before the exchange finished: the server did not prove it knows "
                "the password");
  case S_FINAL_SENT:
    if (in_len == 0)
      return fail(s, EPODE_ERR_SASL_SIGNATURE,
                  "success without v=: the server did not prove it knows the password");
    e = server_final(s, in, in_len);
    break;
  case S_VERIFIED:
    /* Already verified; a repeated v= must still be the right one. */
    e = in_len ? server_final(s, in, in_len) : EPODE_OK;
    break;
  case S_DONE: return fail(s, EPODE_ERR_SASL_PROTOCOL, "success after the exchange completed");
  default: return fail(s, EPODE_ERR_SASL_PROTOCOL, "success after the exchange failed");
  }
  if (e) return e;
  s->st = S_DONE;
  /* The server knows the keys: now they may be recorded. */
  if (s->have_derived && s->keys_out) memcpy(s->keys_out, &s->derived, sizeof *s->keys_out);
  epode__wipe(&s->derived, sizeof s->derived);
  s->have_derived = 0;
  return EPODE_OK;
}

static void scram_free(void *state) {
  scram *s = state;
  if (!s) return;
  epode__free_secret(s->mem, s->password);
  epode__free(s->mem, s->first_bare);
  if (s->cbind) {
    epode__wipe(s->cbind, s->cbind_len);
    epode__free(s->mem, s->cbind);
  }
  const epode_mem *mem = s->mem;
  epode__wipe(s, sizeof *s); /* the expected ServerSignature */
  epode__free(mem, s);
}

static const char *scram_errmsg(void *state) {
  scram *s = state;
  return s && s->err[0] ? s->err : NULL;
}

#define SCRAM_MECH(ident, NAME, alg, plus, prio, flags)                                            \
  static epode_err start_##ident(void **state, const epode__sasl_params *p, epode__buf *out,       \
                                 int *has_initial) {                                               \
    return scram_start_common(&alg, plus, state, p, NULL, out, has_initial);                       \
  }                                                                                                \
  const epode__sasl_mech epode__sasl_##ident = {                                                   \
      NAME, prio, flags, start_##ident, scram_step, scram_success, scram_free, scram_errmsg};

SCRAM_MECH(scram_sha1, "SCRAM-SHA-1", alg_sha1, 0, 43, 0)
SCRAM_MECH(scram_sha256, "SCRAM-SHA-256", alg_sha256, 0, 44, 0)
SCRAM_MECH(scram_sha512, "SCRAM-SHA-512", alg_sha512, 0, 45, 0)
SCRAM_MECH(scram_sha1_plus, "SCRAM-SHA-1-PLUS", alg_sha1, 1, 47, EPODE__SASL_NEEDS_CB)
SCRAM_MECH(scram_sha256_plus, "SCRAM-SHA-256-PLUS", alg_sha256, 1, 48, EPODE__SASL_NEEDS_CB)
SCRAM_MECH(scram_sha512_plus, "SCRAM-SHA-512-PLUS", alg_sha512, 1, 49, EPODE__SASL_NEEDS_CB)

epode_err epode__scram_start_with_nonce(const epode__sasl_mech *m, void **state,
                                        const epode__sasl_params *p, const char *nonce,
                                        epode__buf *out, int *has_initial) {
  static const struct {
    const epode__sasl_mech *m;
    const scram_alg *alg;
    int plus;
  } map[] = {{&epode__sasl_scram_sha1, &alg_sha1, 0},
             {&epode__sasl_scram_sha256, &alg_sha256, 0},
             {&epode__sasl_scram_sha512, &alg_sha512, 0},
             {&epode__sasl_scram_sha1_plus, &alg_sha1, 1},
             {&epode__sasl_scram_sha256_plus, &alg_sha256, 1},
             {&epode__sasl_scram_sha512_plus, &alg_sha512, 1}};
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
    if (map[i].m == m)
      return scram_start_common(map[i].alg, map[i].plus, state, p, nonce, out, has_initial);
  *state = NULL;
  return EPODE_ERR_INVAL;
}

const char *epode__sasl_pick_cb(const epode__sasl_params *p, const unsigned char **data,
                                size_t *len) {
  return pick_cb(p, data, len);
}
