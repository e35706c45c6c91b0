/* DIGEST-MD5 (RFC 2831), qop=auth only: no integrity or confidentiality
 * layer, which XMPP never uses (TLS provides both).
 *
 *   start()   -> nothing: the server speaks first
 *   step(1)   <- digest-challenge   realm=, nonce=, qop=, charset=, algorithm=
 *             -> digest-response    username, realm, nonce, cnonce, nc, qop,
 *                                   digest-uri="xmpp/<domain>", response
 *   step(2)?  <- response-auth      rspauth=<hex>, as a challenge
 *             -> ""                 (then <success/> is empty)
 *   success() <- rspauth=<hex>, or empty after step(2)
 *
 * The mechanism is legacy (RFC 6331 moved it to Historic) but still
 * deployed. It does not send the password, and rspauth proves the server
 * knows it, so it is verified exactly like a SCRAM server signature: a
 * <success/> without it fails, and a well-formed but wrong one is
 * EPODE_ERR_SASL_SIGNATURE (a malformed one EPODE_ERR_SASL_PROTOCOL).
 *
 * The challenge is parsed by the RFC grammar (RFC 2831 7.1, the #rule of
 * RFC 2616 2.1): directives are `key=token` or `key="quoted"` with `\`
 * escapes, separated by commas with optional white space; empty list
 * elements are allowed. Unknown directives are ignored (auth-param);
 * every directive we know except realm must appear at most once.
 *
 * Character sets (RFC 2831 2.1.2.1): epode's strings are UTF-8. For the
 * hash, a string whose characters all lie in ISO 8859-1 is converted to
 * ISO 8859-1, with or without charset=utf-8 (this is what the RFC requires
 * when charset=utf-8 is present, and what ISO 8859-1 means when it is
 * absent; Cyrus SASL does the same). A string with other characters is
 * hashed as UTF-8 when the server announced charset=utf-8, and refused
 * otherwise. On the wire the username is UTF-8 under charset=utf-8 and
 * ISO 8859-1 without it. Neither the username nor the password is
 * SASLprepped: RFC 2831 does not, and servers hash them raw. */
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "sasl/sasl_int.h"
#include "util/alloc.h"
#include "util/base64_int.h"

/* RFC 2831 2.1.1: "The size of a digest-challenge MUST be less than 2048
 * bytes." The same bound is applied to the response-auth message. It also
 * lets the parser unescape values into stack buffers. */
#define MAX_CHALLENGE 2048u
/* RFC 2831 2.1.2: "The size of a digest-response MUST be less than 4096
 * bytes." A server is entitled to refuse a longer one. */
#define MAX_RESPONSE 4096u
/* 24 random bytes (192 bits; the RFC asks for at least 64), base64: 32
 * characters, no padding, nothing that needs quoting. */
#define CNONCE_RANDOM_BYTES 24
/* The test hook's service name and cnonce. */
#define MAX_HOOK_VALUE 64

enum dmd5_st {
  D_WAIT,      /* waiting for the digest-challenge */
  D_RESPONDED, /* digest-response sent; waiting for rspauth */
  D_VERIFIED,  /* rspauth verified in a challenge; waiting for an empty success */
  D_DONE,
  D_FAILED
};

typedef struct dmd5 {
  const epode_mem *mem;
  enum dmd5_st st;
  /* Copies: the params do not outlive start(). */
  char *user;
  char *password; /* wiped and freed once the response is made */
  char *authzid;  /* NULL when not set */
  char *domain;
  char service[MAX_HOOK_VALUE + 1];
  char cnonce[MAX_HOOK_VALUE + 1];
  unsigned char rspauth[16]; /* what the server must send back */
  char err[EPODE__SASL_ERRMSG_SIZE];
} dmd5;

static epode_err fail(dmd5 *s, epode_err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static epode_err fail(dmd5 *s, epode_err e, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->err, sizeof s->err, fmt, ap);
  va_end(ap);
  s->st = D_FAILED;
  if (s->password) {
    epode__free_secret(s->mem, s->password);
    s->password = NULL;
  }
  epode__wipe(s->rspauth, sizeof s->rspauth);
  return e;
}

/* Copies a server-provided value into an error message, printable ASCII
 * only and at most 40 characters: it is shown to users and logged. */
static const char *shown(char dst[48], const unsigned char *v, size_t n) {
  size_t j = 0;
  for (size_t i = 0; i < n && j < 40; i++)
    dst[j++] = (v[i] >= 0x20 && v[i] < 0x7F) ? (char)v[i] : '?';
  if (n > 40) {
    memcpy(dst + j, "...", 3);
    j += 3;
  }
  dst[j] = '\0';
  return dst;
}

/* ------------------------------------------------------------ text */

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static int utf8_valid(const unsigned char *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = p[i], cp, min;
    size_t k;
    if (c < 0x80) {
      i++;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF)
      k = 1, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
      k = 2, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
      k = 3, cp = c & 0x07, min = 0x10000;
    else
      return 0;
    if (n - i <= k) return 0;
    for (size_t j = 1; j <= k; j++) {
      if ((p[i + j] & 0xC0) != 0x80) return 0;
      cp = cp << 6 | (p[i + j] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    i += k + 1;
  }
  return 1;
}

/* Whether p[0..n) is UTF-8 whose characters are all in ISO 8859-1
 * (U+0000..U+00FF: ASCII, or C2/C3 followed by a continuation byte). */
static int latin1_ok(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n;) {
    if (p[i] < 0x80)
      i++;
    else if ((p[i] == 0xC2 || p[i] == 0xC3) && i + 1 < n && (p[i + 1] & 0xC0) == 0x80)
      i += 2;
    else
      return 0;
  }
  return 1;
}

/* Converts latin1_ok() text to ISO 8859-1, handing it to emit in small
 * chunks (nothing is allocated). Returns 0 if emit failed. */
typedef int (*emit_fn)(void *ud, const unsigned char *p, size_t n);

static int to_latin1(const unsigned char *p, size_t n, emit_fn emit, void *ud) {
  unsigned char chunk[64];
  size_t k = 0;
  int ok = 1;
  for (size_t i = 0; ok && i < n;) {
    if (p[i] < 0x80) {
      chunk[k++] = p[i++];
    } else {
      chunk[k++] = (unsigned char)((p[i] & 0x03) << 6 | (p[i + 1] & 0x3F));
      i += 2;
    }
    if (k == sizeof chunk) {
      ok = emit(ud, chunk, k);
      k = 0;
    }
  }
  if (ok && k) ok = emit(ud, chunk, k);
  epode__wipe(chunk, sizeof chunk); /* it may have held the password */
  return ok;
}

/* ------------------------------------------------------------ crypto */

static int md_emit(void *ud, const unsigned char *p, size_t n) {
  return EVP_DigestUpdate(ud, p, n) == 1;
}

/* One piece of hash input; latin1 = convert with to_latin1() first. */
typedef struct piece {
  const void *p;
  size_t n;
  int latin1;
} piece;

static int md5(const piece *pc, size_t npc, unsigned char out[16]) {
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  int ok = c && EVP_DigestInit_ex(c, EVP_md5(), NULL) == 1;
  for (size_t i = 0; ok && i < npc; i++)
    ok = pc[i].latin1 ? to_latin1(pc[i].p, pc[i].n, md_emit, c)
                      : EVP_DigestUpdate(c, pc[i].p, pc[i].n) == 1;
  unsigned int len = 0;
  ok = ok && EVP_DigestFinal_ex(c, out, &len) == 1 && len == 16;
  EVP_MD_CTX_free(c);
  return ok;
}

static void to_hex(const unsigned char in[16], char out[33]) {
  static const char hx[] = "0123456789abcdef";
  for (int i = 0; i < 16; i++) {
    out[2 * i] = hx[in[i] >> 4];
    out[2 * i + 1] = hx[in[i] & 15];
  }
  out[32] = '\0';
}

/* response or rspauth (RFC 2831 2.1.2.1), qop=auth, nc=00000001:
 *   HEX(KD(HEX(H(A1)), nonce ":00000001:" cnonce ":auth:" HEX(H(A2)))) */
static int kd(const char hex_a1[33], const char *nonce, size_t nonce_len, const char *cnonce,
              const char *a2_prefix, const char *service, const char *domain,
              unsigned char out[16]) {
  unsigned char ha2[16];
  char hex_a2[33];
  piece a2[4] = {{a2_prefix, strlen(a2_prefix), 0},
                 {service, strlen(service), 0},
                 {"/", 1, 0},
                 {domain, strlen(domain), 0}};
  if (!md5(a2, 4, ha2)) return 0;
  to_hex(ha2, hex_a2);
  piece r[7] = {{hex_a1, 32, 0},
                {":", 1, 0},
                {nonce, nonce_len, 0},
                {":00000001:", 10, 0},
                {cnonce, strlen(cnonce), 0},
                {":auth:", 6, 0},
                {hex_a2, 32, 0}};
  return md5(r, 7, out);
}

/* ------------------------------------------------------------ parsing */

static int is_lws(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* RFC 2616 token characters, for directive names. */
static int is_tchar(unsigned char c) {
  return c > 0x20 && c < 0x7F && !strchr("()<>@,;:\\\"/[]?={}", c);
}

/* An unquoted value: tolerant of what real servers send unquoted (base64
 * nonces with '/', '+' and '='), but never a separator of the list. */
static int is_vchar(unsigned char c) { return c > 0x20 && c != 0x7F && c != ',' && c != '"'; }

typedef struct dir {
  const unsigned char *k;
  size_t kn;
  const unsigned char *v; /* raw: still escaped when quoted */
  size_t vn;
  int quoted;
} dir;

static int key_is(const dir *d, const char *name) {
  size_t n = strlen(name);
  if (d->kn != n) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = d->k[i];
    if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
    if (c != (unsigned char)name[i]) return 0;
  }
  return 1;
}

/* The next directive from in[*pos..len): 1 and *d, 0 at the end, or -1
 * after fail(). */
static int next_dir(dmd5 *s, const unsigned char *in, size_t len, size_t *pos, dir *d) {
  size_t i = *pos;
  while (i < len && (is_lws(in[i]) || in[i] == ',')) /* null elements are allowed */
    i++;
  if (i == len) {
    *pos = i;
    return 0;
  }
  char sh[48];
  size_t k0 = i;
  while (i < len && is_tchar(in[i]))
    i++;
  if (i == k0) {
    fail(s, EPODE_ERR_SASL_PROTOCOL, "malformed challenge: expected a directive name at byte %zu",
         k0);
    return -1;
  }
  d->k = in + k0;
  d->kn = i - k0;
  while (i < len && is_lws(in[i]))
    i++;
  if (i == len || in[i] != '=') {
    fail(s, EPODE_ERR_SASL_PROTOCOL, "malformed challenge: directive \"%s\" has no '='",
         shown(sh, d->k, d->kn));
    return -1;
  }
  i++;
  while (i < len && is_lws(in[i]))
    i++;
  if (i < len && in[i] == '"') {
    size_t v0 = ++i;
    for (;; i++) {
      if (i == len) {
        fail(s, EPODE_ERR_SASL_PROTOCOL,
             "malformed challenge: the quoted value of \"%s\" is not terminated",
             shown(sh, d->k, d->kn));
        return -1;
      }
      unsigned char c = in[i];
      if (c == '"') break;
      if (c == '\\') {
        if (i + 1 == len) continue; /* reported as unterminated on the next turn */
        i++;                        /* the escaped byte, whatever it is */
      } else if ((c < 0x20 && !is_lws(c)) || c == 0x7F) {
        fail(s, EPODE_ERR_SASL_PROTOCOL,
             "malformed challenge: control character in the value of \"%s\"",
             shown(sh, d->k, d->kn));
        return -1;
      }
    }
    d->v = in + v0;
    d->vn = i - v0;
    d->quoted = 1;
    i++; /* the closing quote */
  } else {
    size_t v0 = i;
    while (i < len && is_vchar(in[i]))
      i++;
    d->v = in + v0;
    d->vn = i - v0;
    d->quoted = 0;
    if (d->vn == 0) {
      fail(s, EPODE_ERR_SASL_PROTOCOL, "malformed challenge: directive \"%s\" has no value",
           shown(sh, d->k, d->kn));
      return -1;
    }
  }
  while (i < len && is_lws(in[i]))
    i++;
  if (i < len && in[i] != ',') {
    fail(s, EPODE_ERR_SASL_PROTOCOL,
         "malformed challenge: unexpected data after the value of \"%s\"", shown(sh, d->k, d->kn));
    return -1;
  }
  *pos = i;
  return 1;
}

/* The value with quoted-pairs resolved, into dst (which holds d->vn + 1
 * bytes); returns its length. */
static size_t unescape(const dir *d, char *dst) {
  size_t j = 0;
  for (size_t i = 0; i < d->vn; i++) {
    if (d->quoted && d->v[i] == '\\') i++;
    dst[j++] = (char)d->v[i];
  }
  dst[j] = '\0';
  return j;
}

static int eq_ci(const char *a, size_t an, const char *b) {
  size_t bn = strlen(b);
  if (an != bn) return 0;
  for (size_t i = 0; i < an; i++) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
    if (c != b[i]) return 0;
  }
  return 1;
}

/* qop-options: a comma-separated list inside the (quoted) value. Sets
 * *auth when "auth" is among them. Returns 0 for an empty list. */
static int qop_list(const char *v, size_t n, int *auth) {
  int any = 0;
  size_t i = 0;
  *auth = 0;
  while (i < n) {
    while (i < n && (is_lws((unsigned char)v[i]) || v[i] == ','))
      i++;
    size_t t0 = i;
    while (i < n && v[i] != ',' && !is_lws((unsigned char)v[i]))
      i++;
    if (i > t0) {
      any = 1;
      if (eq_ci(v + t0, i - t0, "auth")) *auth = 1;
    }
  }
  return any;
}

static epode_err check_size(dmd5 *s, const unsigned char *in, size_t len, const char *what) {
  if (len >= MAX_CHALLENGE)
    return fail(s, EPODE_ERR_SASL_PROTOCOL,
                "the %s is %zu bytes; RFC 2831 limits it to less than %u", what, len,
                MAX_CHALLENGE);
  if (memchr(in, '\0', len)) return fail(s, EPODE_ERR_SASL_PROTOCOL, "NUL byte in the %s", what);
  return EPODE_OK;
}

/* ------------------------------------------------------------ response */

typedef struct buf_sink {
  epode__buf *b;
  epode_err e;
} buf_sink;

static int buf_emit(void *ud, const unsigned char *p, size_t n) {
  buf_sink *k = ud;
  k->e = epode__buf_append(k->b, p, n);
  return k->e == EPODE_OK;
}

/* Appends v[0..n) with '"' and '\' escaped (a quoted-string's body);
 * latin1 = convert to ISO 8859-1 first. */
static epode_err append_escaped(epode__buf *b, const char *v, size_t n, int latin1) {
  epode_err e = EPODE_OK;
  size_t run = 0;
  for (size_t i = 0; !e && i <= n; i++) {
    if (i < n && v[i] != '"' && v[i] != '\\') continue;
    if (latin1) {
      buf_sink k = {b, EPODE_OK};
      to_latin1((const unsigned char *)v + run, i - run, buf_emit, &k);
      e = k.e;
    } else
      e = epode__buf_append(b, v + run, i - run);
    if (!e && i < n) {
      char esc[2] = {'\\', v[i]};
      e = epode__buf_append(b, esc, 2);
    }
    run = i + 1;
  }
  return e;
}

/* Appends <key>="<v>"; key carries its leading ',' if any. */
static epode_err append_quoted(epode__buf *b, const char *key, const char *v, size_t n,
                               int latin1) {
  epode_err e = epode__buf_printf(b, "%s=\"", key);
  if (!e) e = append_escaped(b, v, n, latin1);
  if (!e) e = epode__buf_append(b, "\"", 1);
  return e;
}

static epode_err digest_challenge(dmd5 *s, const unsigned char *in, size_t len, epode__buf *out) {
  if (len == 0) return fail(s, EPODE_ERR_SASL_PROTOCOL, "the server sent an empty challenge");
  epode_err e = check_size(s, in, len, "challenge");
  if (e) return e;

  /* Values are at most len bytes long: stack buffers suffice. */
  char nonce[MAX_CHALLENGE], realm[MAX_CHALLENGE], tmp[MAX_CHALLENGE], sh[48];
  size_t nonce_len = 0, realm_len = 0;
  int n_nonce = 0, n_realm = 0, n_qop = 0, n_alg = 0, n_charset = 0, n_stale = 0, n_maxbuf = 0,
      n_cipher = 0, qop_auth = 1; /* no qop directive means "auth" (RFC 2831 2.1.1) */
  size_t pos = 0;
  dir d;
  int r;
  while ((r = next_dir(s, in, len, &pos, &d)) > 0) {
    int *count = NULL;
    const char *name = NULL;
    if (key_is(&d, "realm")) {
      /* One per realm the server serves; we use the first. */
      if (n_realm++ == 0) realm_len = unescape(&d, realm);
      continue;
    }
    if (key_is(&d, "nonce"))
      count = &n_nonce, name = "nonce";
    else if (key_is(&d, "qop"))
      count = &n_qop, name = "qop";
    else if (key_is(&d, "algorithm"))
      count = &n_alg, name = "algorithm";
    else if (key_is(&d, "charset"))
      count = &n_charset, name = "charset";
    else if (key_is(&d, "stale"))
      count = &n_stale, name = "stale";
    else if (key_is(&d, "maxbuf"))
      count = &n_maxbuf, name = "maxbuf";
    else if (key_is(&d, "cipher"))
      count = &n_cipher, name = "cipher";
    else
      continue; /* auth-param: an extension we do not know */
    if (++*count > 1)
      return fail(s, EPODE_ERR_SASL_PROTOCOL, "the challenge has more than one %s directive", name);
    size_t n = unescape(&d, tmp);
    if (count == &n_nonce) {
      if (n == 0) return fail(s, EPODE_ERR_SASL_PROTOCOL, "the challenge has an empty nonce");
      memcpy(nonce, tmp, n + 1);
      nonce_len = n;
    } else if (count == &n_qop) {
      if (!qop_list(tmp, n, &qop_auth))
        return fail(s, EPODE_ERR_SASL_PROTOCOL, "the challenge has an empty qop list");
      if (!qop_auth)
        return fail(s, EPODE_ERR_SASL_PROTOCOL,
                    "the server offers qop \"%s\" but not \"auth\"; epode supports only "
                    "qop=auth (no security layer)",
                    shown(sh, (const unsigned char *)tmp, n));
    } else if (count == &n_alg) {
      if (!eq_ci(tmp, n, "md5-sess"))
        return fail(s, EPODE_ERR_SASL_PROTOCOL, "the challenge has algorithm \"%s\", not md5-sess",
                    shown(sh, (const unsigned char *)tmp, n));
    } else if (count == &n_charset) {
      if (!eq_ci(tmp, n, "utf-8"))
        return fail(s, EPODE_ERR_SASL_PROTOCOL,
                    "the challenge has charset \"%s\"; RFC 2831 allows only utf-8",
                    shown(sh, (const unsigned char *)tmp, n));
    }
  }
  if (r < 0) return EPODE_ERR_SASL_PROTOCOL;
  if (!n_nonce) return fail(s, EPODE_ERR_SASL_PROTOCOL, "the challenge has no nonce");
  if (!n_alg)
    return fail(s, EPODE_ERR_SASL_PROTOCOL,
                "the challenge has no algorithm directive (RFC 2831 requires md5-sess)");
  int utf8 = n_charset > 0;

  /* The realm: the server's first, else our domain (what XMPP servers
   * expect when they name none). Under charset=utf-8 or when it is ours it
   * is UTF-8 text; a server realm without charset is ISO 8859-1 already. */
  const char *rv = realm;
  int realm_ours = n_realm == 0 || realm_len == 0;
  if (realm_ours) {
    rv = s->domain;
    realm_len = strlen(s->domain);
  }
  int realm_text = realm_ours || utf8;

  size_t user_len = strlen(s->user), pass_len = strlen(s->password);
  int user_l1 = latin1_ok((const unsigned char *)s->user, user_len);
  int pass_l1 = latin1_ok((const unsigned char *)s->password, pass_len);
  int realm_l1 = realm_text && latin1_ok((const unsigned char *)rv, realm_len);
  if (!utf8 && (!user_l1 || !pass_l1 || (realm_ours && !realm_l1)))
    return fail(s, EPODE_ERR_INVAL,
                "the %s has characters outside ISO 8859-1 and the server did not announce "
                "charset=utf-8",
                !user_l1   ? "username"
                : !pass_l1 ? "password"
                           : "domain");

  /* A1 = H(user ":" realm ":" password) ":" nonce ":" cnonce [":" authzid] */
  unsigned char ha1[16], a1[16], resp[16];
  char hex_a1[33], hex_resp[33];
  piece secret[5] = {{s->user, user_len, user_l1},
                     {":", 1, 0},
                     {rv, realm_len, realm_l1},
                     {":", 1, 0},
                     {s->password, pass_len, pass_l1}};
  int ok = md5(secret, 5, ha1);
  piece pa1[7] = {{ha1, 16, 0},
                  {":", 1, 0},
                  {nonce, nonce_len, 0},
                  {":", 1, 0},
                  {s->cnonce, strlen(s->cnonce), 0},
                  {":", 1, 0},
                  {s->authzid, s->authzid ? strlen(s->authzid) : 0, 0}};
  ok = ok && md5(pa1, s->authzid ? 7 : 5, a1);
  if (ok) to_hex(a1, hex_a1);
  ok = ok && kd(hex_a1, nonce, nonce_len, s->cnonce, "AUTHENTICATE:", s->service, s->domain, resp);
  ok = ok && kd(hex_a1, nonce, nonce_len, s->cnonce, ":", s->service, s->domain, s->rspauth);
  if (ok) to_hex(resp, hex_resp);
  epode__wipe(ha1, sizeof ha1);
  epode__wipe(a1, sizeof a1);
  epode__wipe(hex_a1, sizeof hex_a1);
  epode__free_secret(s->mem, s->password);
  s->password = NULL;
  if (!ok) return fail(s, EPODE_ERR_SYS, "the crypto library failed (is MD5 available?)");

  /* The digest-response, in the order of the RFC's example. */
  size_t start = out->len;
  e = utf8 ? epode__buf_append_str(out, "charset=utf-8,") : EPODE_OK;
  if (!e) e = append_quoted(out, "username", s->user, user_len, !utf8);
  if (!e) e = append_quoted(out, ",realm", rv, realm_len, realm_ours && !utf8);
  if (!e) e = append_quoted(out, ",nonce", nonce, nonce_len, 0);
  if (!e) e = epode__buf_append_str(out, ",nc=00000001");
  if (!e) e = append_quoted(out, ",cnonce", s->cnonce, strlen(s->cnonce), 0);
  if (!e) e = epode__buf_printf(out, ",digest-uri=\"%s/", s->service);
  if (!e) e = append_escaped(out, s->domain, strlen(s->domain), 0);
  if (!e) e = epode__buf_printf(out, "\",response=%s,qop=auth", hex_resp);
  /* The authzid is always UTF-8 (RFC 2831 2.1.2). */
  if (!e && s->authzid) e = append_quoted(out, ",authzid", s->authzid, strlen(s->authzid), 0);
  epode__wipe(hex_resp, sizeof hex_resp);
  if (!e && out->len - start >= MAX_RESPONSE) e = EPODE_ERR_LIMIT;
  if (e) {
    size_t n = out->len - start;
    if (out->data) {
      epode__wipe(out->data + start, out->len - start);
      out->len = start;
      out->data[start] = '\0';
    }
    if (e == EPODE_ERR_NOMEM) return fail(s, e, "out of memory");
    if (n >= MAX_RESPONSE)
      return fail(s, e,
                  "the response would be %zu bytes; RFC 2831 limits it to less than %u (username "
                  "or authzid too long)",
                  n, MAX_RESPONSE);
    return fail(s, e, "the response exceeds the output limit");
  }
  s->st = D_RESPONDED;
  return EPODE_OK;
}

/* response-auth: rspauth=<32 hex digits>, compared in constant time. */
static epode_err check_rspauth(dmd5 *s, const unsigned char *in, size_t len) {
  epode_err e = check_size(s, in, len, "server's response-auth");
  if (e) return e;
  unsigned char got[16];
  int n_rsp = 0, bad = 0;
  size_t pos = 0;
  dir d;
  int r;
  while ((r = next_dir(s, in, len, &pos, &d)) > 0) {
    if (!key_is(&d, "rspauth")) continue;
    if (n_rsp++) return fail(s, EPODE_ERR_SASL_PROTOCOL, "more than one rspauth directive");
    char v[MAX_CHALLENGE];
    size_t n = unescape(&d, v);
    if (n != 32) {
      bad = 1;
      continue;
    }
    for (size_t i = 0; i < 32; i++) {
      char c = v[i];
      int x = c >= '0' && c <= '9'   ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                     : -1;
      if (x < 0) {
        bad = 1;
        break;
      }
      got[i / 2] = (unsigned char)(i % 2 ? got[i / 2] | x : x << 4);
    }
  }
  if (r < 0) return EPODE_ERR_SASL_PROTOCOL;
  if (!n_rsp)
    return fail(s, EPODE_ERR_SASL_PROTOCOL,
                "expected rspauth= from the server, got something else");
  if (bad) return fail(s, EPODE_ERR_SASL_PROTOCOL, "rspauth is not 32 hexadecimal digits");
  if (CRYPTO_memcmp(got, s->rspauth, sizeof got) != 0)
    return fail(s, EPODE_ERR_SASL_SIGNATURE,
                "rspauth does not match: the server does not know the password (or the "
                "exchange was tampered with)");
  return EPODE_OK;
}

/* ------------------------------------------------------------ vtable */

static epode_err dmd5_step(void *state, const unsigned char *in, size_t in_len, epode__buf *out) {
  dmd5 *s = state;
  if (!s) return EPODE_ERR_SASL_PROTOCOL;
  if (!in) in_len = 0;
  s->err[0] = '\0';
  switch (s->st) {
  case D_WAIT: return digest_challenge(s, in, in_len, out);
  case D_RESPONDED: {
    if (in_len == 0)
      return fail(s, EPODE_ERR_SASL_PROTOCOL, "expected rspauth= from the server, got nothing");
    epode_err e = check_rspauth(s, in, in_len);
    if (e) return e;
    s->st = D_VERIFIED; /* the response is empty */
    return EPODE_OK;
  }
  case D_VERIFIED:
  case D_DONE: return fail(s, EPODE_ERR_SASL_PROTOCOL, "challenge after the exchange completed");
  case D_FAILED: break;
  }
  return fail(s, EPODE_ERR_SASL_PROTOCOL, "challenge after the exchange failed");
}

static epode_err dmd5_success(void *state, const unsigned char *in, size_t in_len) {
  dmd5 *s = state;
  if (!s) return EPODE_ERR_SASL_PROTOCOL;
  if (!in) in_len = 0;
  s->err[0] = '\0';
  epode_err e;
  switch (s->st) {
  case D_WAIT:
    return fail(s, EPODE_ERR_SASL_SIGNATURE,
                "success before the exchange finished: the server did not prove itself");
  case D_RESPONDED:
    if (in_len == 0)
      return fail(s, EPODE_ERR_SASL_SIGNATURE,
                  "success without rspauth: the server did not prove itself");
    e = check_rspauth(s, in, in_len);
    break;
  case D_VERIFIED:
    /* Already verified; a repeated rspauth must still be the right one. */
    e = in_len ? check_rspauth(s, in, in_len) : EPODE_OK;
    break;
  case D_DONE: return fail(s, EPODE_ERR_SASL_PROTOCOL, "success after the exchange completed");
  default: return fail(s, EPODE_ERR_SASL_PROTOCOL, "success after the exchange failed");
  }
  if (!e) s->st = D_DONE;
  return e;
}

static void dmd5_free(void *state) {
  dmd5 *s = state;
  if (!s) return;
  const epode_mem *mem = s->mem;
  epode__free_secret(mem, s->password);
  epode__free(mem, s->user);
  epode__free(mem, s->authzid);
  epode__free(mem, s->domain);
  epode__wipe(s, sizeof *s); /* the expected rspauth */
  epode__free(mem, s);
}

static const char *dmd5_errmsg(void *state) {
  dmd5 *s = state;
  return s && s->err[0] ? s->err : NULL;
}

/* ------------------------------------------------------------ start */

static epode_err need_utf8(dmd5 *s, const char *v, const char *what) {
  if (!utf8_valid((const unsigned char *)v, strlen(v)))
    return fail(s, EPODE_ERR_INVAL, "the %s is not valid UTF-8", what);
  return EPODE_OK;
}

static epode_err dmd5_start_common(void **state, const epode__sasl_params *p, const char *service,
                                   const char *cnonce, epode__buf *out, int *has_initial) {
  *state = NULL;
  *has_initial = 0;
  const epode_mem *mem = p->mem;
  dmd5 *s = epode__calloc(mem, sizeof *s);
  if (!s) return EPODE_ERR_NOMEM;
  s->mem = mem;
  s->st = D_FAILED;
  *state = s;

  if (!p->authcid || !*p->authcid) return fail(s, EPODE_ERR_INVAL, "no username configured");
  if (!p->password) return fail(s, EPODE_ERR_INVAL, "no password configured");
  if (!*p->password) return fail(s, EPODE_ERR_INVAL, "the password is empty");
  if (!p->domain || !*p->domain)
    return fail(s, EPODE_ERR_INVAL, "no domain configured (needed for the digest-uri)");
  epode_err e = need_utf8(s, p->authcid, "username");
  if (!e) e = need_utf8(s, p->password, "password");
  if (!e) e = need_utf8(s, p->domain, "domain");
  if (!e && p->authzid) e = need_utf8(s, p->authzid, "authzid");
  if (e) return e;

  snprintf(s->service, sizeof s->service, "%s", service);
  if (cnonce) {
    snprintf(s->cnonce, sizeof s->cnonce, "%s", cnonce);
  } else {
    unsigned char raw[CNONCE_RANDOM_BYTES];
    int rc = p->random ? p->random(p->random_ud, raw, sizeof raw)
                       : (RAND_bytes(raw, (int)sizeof raw) == 1 ? 0 : -1);
    if (rc != 0) return fail(s, EPODE_ERR_SYS, "the random source failed");
    epode__base64_enc(raw, sizeof raw, s->cnonce);
    s->cnonce[CNONCE_RANDOM_BYTES / 3 * 4] = '\0';
    epode__wipe(raw, sizeof raw);
  }

  s->user = epode__strdup(mem, p->authcid);
  s->password = epode__strdup(mem, p->password);
  s->domain = epode__strdup(mem, p->domain);
  /* An empty authzid means none (the JID of the username). */
  if (p->authzid && *p->authzid) s->authzid = epode__strdup(mem, p->authzid);
  if (!s->user || !s->password || !s->domain || (p->authzid && *p->authzid && !s->authzid))
    return fail(s, EPODE_ERR_NOMEM, "out of memory");
  (void)out; /* the server speaks first */
  s->st = D_WAIT;
  return EPODE_OK;
}

static epode_err dmd5_start(void **state, const epode__sasl_params *p, epode__buf *out,
                            int *has_initial) {
  return dmd5_start_common(state, p, "xmpp", NULL, out, has_initial);
}

static int hook_value_ok(const char *v, const char *bad) {
  size_t n = v ? strlen(v) : 0;
  if (n == 0 || n > MAX_HOOK_VALUE) return 0;
  for (size_t i = 0; i < n; i++)
    if (v[i] <= 0x20 || v[i] >= 0x7F || strchr(bad, v[i])) return 0;
  return 1;
}

epode_err epode__digest_md5_start_with(void **state, const epode__sasl_params *p,
                                       const char *service, const char *cnonce, epode__buf *out,
                                       int *has_initial) {
  *state = NULL;
  *has_initial = 0;
  if (!hook_value_ok(service, "/\"\\") || !hook_value_ok(cnonce, "\",\\")) return EPODE_ERR_INVAL;
  return dmd5_start_common(state, p, service, cnonce, out, has_initial);
}

const epode__sasl_mech epode__sasl_digest_md5 = {
    "DIGEST-MD5", 30, 0, dmd5_start, dmd5_step, dmd5_success, dmd5_free, dmd5_errmsg};
