/* OAUTHBEARER (RFC 7628) with an OAuth 2.0 bearer token (RFC 6750).
 *
 *   start()   -> "n,a=" authzid ",\x01auth=Bearer " token "\x01\x01"
 *   success() <- nothing to verify: the token was accepted
 * or, when the server rejects the token:
 *   step()    <- a JSON error ({"status":"invalid_token",...})
 *             -> "\x01" (RFC 7628 3.2.3: the client must answer so), after
 *                which the server sends <failure/>; errmsg() then explains
 *                why from the JSON.
 *
 * The token is a secret: it crosses the wire (hence NEEDS_TLS), is
 * written straight into `out` and is never kept in the state. Priority 35:
 * above DIGEST-MD5 and PLAIN (a token is revocable and scoped), below
 * SCRAM; the mechanism is only usable when a token is configured. */
#include <string.h>

#include "sasl/sasl_int.h"
#include "util/alloc.h"

enum { O_SENT, O_ERROR, O_DONE, O_FAILED };

typedef struct oauth_state {
  const epode_mem *mem;
  int st;
  char err[EPODE__SASL_ERRMSG_SIZE];
} oauth_state;

static epode_err fail(oauth_state *s, epode_err e, const char *msg) {
  s->st = O_FAILED;
  epode__sasl_errf(s->err, "%s", msg);
  return e;
}

/* RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" /
 * "+" / "/" ) *"=". Checking it also keeps \x01 (the RFC 7628 separator)
 * and anything else that would break the message out of the token. */
static int b64token_ok(const char *t) {
  size_t i = 0;
  while ((t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z') ||
         (t[i] >= '0' && t[i] <= '9') || (t[i] && strchr("-._~+/", t[i])))
    i++;
  if (i == 0) return 0;
  while (t[i] == '=')
    i++;
  return t[i] == '\0';
}

/* Appends a saslname: ',' and '=' escaped as =2C and =3D (RFC 5801). */
static epode_err append_saslname(epode__buf *b, const char *v) {
  const char *run = v;
  for (; *v; v++) {
    if (*v != ',' && *v != '=') continue;
    epode_err e = epode__buf_append(b, run, (size_t)(v - run));
    if (!e) e = epode__buf_append(b, *v == ',' ? "=2C" : "=3D", 3);
    if (e) return e;
    run = v + 1;
  }
  return epode__buf_append(b, run, (size_t)(v - run));
}

static epode_err oauth_start(void **state, const epode__sasl_params *p, epode__buf *out,
                             int *has_initial) {
  *state = NULL;
  *has_initial = 0;
  oauth_state *s = epode__calloc(p->mem, sizeof *s);
  if (!s) return EPODE_ERR_NOMEM;
  s->mem = p->mem;
  s->st = O_FAILED;
  *state = s;
  if (!p->oauth_token) return fail(s, EPODE_ERR_INVAL, "no OAuth token configured");
  if (!b64token_ok(p->oauth_token))
    return fail(s, EPODE_ERR_INVAL,
                "the OAuth token is not a valid bearer token (RFC 6750 b64token)");

  /* The authzid: the configured one, else the bare JID (what XMPP servers
   * expect); without a username, none. */
  size_t start = out->len;
  epode_err e = epode__buf_append_str(out, "n,");
  if (!e && p->authzid && *p->authzid) {
    e = epode__buf_append_str(out, "a=");
    if (!e) e = append_saslname(out, p->authzid);
  } else if (!e && p->authcid && *p->authcid && p->domain && *p->domain) {
    e = epode__buf_append_str(out, "a=");
    if (!e) e = append_saslname(out, p->authcid);
    if (!e) e = epode__buf_append_str(out, "@");
    if (!e) e = append_saslname(out, p->domain);
  }
  if (!e)
    e = epode__buf_append_str(out, ",\x01"
                                   "auth=Bearer ");
  if (!e) e = epode__buf_append_str(out, p->oauth_token);
  if (!e) e = epode__buf_append(out, "\x01\x01", 2);
  if (e) {
    if (out->data) {
      epode__wipe(out->data + start, out->len - start);
      out->len = start;
      out->data[start] = '\0';
    }
    return fail(s, e, e == EPODE_ERR_NOMEM ? "out of memory" : "response exceeds the output limit");
  }
  s->st = O_SENT;
  *has_initial = 1;
  return EPODE_OK;
}

/* Printable ASCII only: the server's JSON is shown to users and logged. */
static size_t sanitize(char *dst, size_t dsz, const unsigned char *v, size_t n) {
  size_t j = 0;
  for (size_t i = 0; i < n && j + 1 < dsz; i++)
    dst[j++] = (v[i] >= 0x20 && v[i] < 0x7F) ? (char)v[i] : '?';
  if (j + 1 == dsz && n > j && dsz > 4) memcpy(dst + dsz - 4, "...", 3);
  dst[j] = '\0';
  return j;
}

/* The value of "status" in the server's JSON (RFC 7628 3.2.2), found by a
 * plain scan: the JSON is only explained, never acted upon. */
static void json_status(const unsigned char *in, size_t n, char *dst, size_t dsz) {
  static const char key[] = "\"status\"";
  dst[0] = '\0';
  for (size_t i = 0; i + sizeof key - 1 <= n; i++) {
    if (memcmp(in + i, key, sizeof key - 1) != 0) continue;
    size_t j = i + sizeof key - 1;
    while (j < n && (in[j] == ' ' || in[j] == '\t' || in[j] == '\r' || in[j] == '\n'))
      j++;
    if (j == n || in[j++] != ':') continue;
    while (j < n && (in[j] == ' ' || in[j] == '\t' || in[j] == '\r' || in[j] == '\n'))
      j++;
    if (j == n || in[j++] != '"') continue;
    size_t k = j;
    while (k < n && in[k] != '"' && in[k] != '\\')
      k++;
    if (k == n || in[k] != '"' || k == j) continue;
    sanitize(dst, dsz, in + j, k - j);
    return;
  }
}

static epode_err oauth_step(void *state, const unsigned char *in, size_t in_len, epode__buf *out) {
  oauth_state *s = state;
  if (!s) return EPODE_ERR_SASL_PROTOCOL;
  if (!in) in_len = 0;
  switch (s->st) {
  case O_SENT: {
    /* The only challenge is the server's error report; the only answer is
     * a lone separator, then the server fails the exchange. */
    epode_err e = epode__buf_append(out, "\x01", 1);
    if (e)
      return fail(s, e,
                  e == EPODE_ERR_NOMEM ? "out of memory" : "response exceeds the output limit");
    char status[48], json[160];
    json_status(in, in_len, status, sizeof status);
    sanitize(json, sizeof json, in, in_len);
    if (in_len == 0)
      epode__sasl_errf(s->err, "the server rejected the token (an empty challenge, no detail)");
    else if (*status)
      epode__sasl_errf(s->err, "the server rejected the token: status \"%s\" (%s)", status, json);
    else
      epode__sasl_errf(s->err, "the server rejected the token: %s", json);
    s->st = O_ERROR;
    return EPODE_OK;
  }
  case O_ERROR:
    return fail(s, EPODE_ERR_SASL_PROTOCOL,
                "the server sent another challenge after its error report");
  case O_DONE: return fail(s, EPODE_ERR_SASL_PROTOCOL, "challenge after the exchange completed");
  default: return fail(s, EPODE_ERR_SASL_PROTOCOL, "challenge after the exchange failed");
  }
}

static epode_err oauth_success(void *state, const unsigned char *in, size_t in_len) {
  oauth_state *s = state;
  if (!s) return EPODE_ERR_SASL_PROTOCOL;
  switch (s->st) {
  case O_SENT:
    /* No additional data is defined with success; ignored, as a bearer
     * token proves nothing about the server (TLS does). */
    s->st = O_DONE;
    s->err[0] = '\0';
    return EPODE_OK;
  case O_ERROR:
    return fail(s, EPODE_ERR_SASL_PROTOCOL,
                "success after the server reported an error (RFC 7628 requires a failure)");
  case O_DONE: return fail(s, EPODE_ERR_SASL_PROTOCOL, "success after the exchange completed");
  default: return fail(s, EPODE_ERR_SASL_PROTOCOL, "success after the exchange failed");
  }
}

static void oauth_free(void *state) {
  oauth_state *s = state;
  if (s) epode__free(s->mem, s);
}

/* After an error challenge this explains the coming <failure/>, though
 * step() itself succeeded. */
static const char *oauth_errmsg(void *state) {
  oauth_state *s = state;
  return s && s->err[0] ? s->err : NULL;
}

const epode__sasl_mech epode__sasl_oauthbearer = {
    "OAUTHBEARER", 35,          EPODE__SASL_SENDS_SECRET | EPODE__SASL_NEEDS_TLS,
    oauth_start,   oauth_step,  oauth_success,
    oauth_free,    oauth_errmsg};
