/* EXTERNAL (RFC 4422 appendix A) with a TLS client certificate
 * (XEP-0178). The initial response is the authzid, or empty ("=" on the
 * wire) to let the server take the identity from the certificate, which
 * XEP-0178 recommends when the certificate holds a single JID.
 *
 * A server that did not take the initial response sends one empty
 * challenge; it gets the same message again. The server proves nothing
 * within SASL (TLS authenticated it), so success() only checks the
 * order. */
#include <string.h>

#include "sasl/sasl_int.h"
#include "util/alloc.h"

enum { X_SENT, X_RESENT, X_DONE, X_FAILED };

typedef struct ext_state {
  const epode_mem *mem;
  int st;
  char *authzid; /* NULL: empty response */
  char err[EPODE__SASL_ERRMSG_SIZE];
} ext_state;

static epode_err fail(ext_state *s, epode_err e, const char *msg) {
  s->st = X_FAILED;
  epode__sasl_errf(s->err, "%s", msg);
  return e;
}

/* Appends the authzid (or nothing); `out` is unchanged on error. */
static epode_err put_authzid(ext_state *s, epode__buf *out) {
  if (!s->authzid) return EPODE_OK;
  epode_err e = epode__buf_append_str(out, s->authzid);
  if (e)
    return fail(s, e, e == EPODE_ERR_NOMEM ? "out of memory" : "response exceeds the output limit");
  return EPODE_OK;
}

static epode_err ext_start(void **state, const epode__sasl_params *p, epode__buf *out,
                           int *has_initial) {
  *state = NULL;
  *has_initial = 0;
  ext_state *s = epode__calloc(p->mem, sizeof *s);
  if (!s) return EPODE_ERR_NOMEM;
  s->mem = p->mem;
  s->st = X_FAILED;
  *state = s;
  if (!p->tls) return fail(s, EPODE_ERR_SASL_NOMECH, "EXTERNAL needs TLS");
  if (!p->have_client_cert)
    return fail(s, EPODE_ERR_SASL_NOMECH, "no TLS client certificate was presented");
  /* The authzid is a JID in canonical form; it must not carry a NUL (it
   * cannot, as a C string) and is sent as is. Empty means none. */
  if (p->authzid && *p->authzid) {
    s->authzid = epode__strdup(s->mem, p->authzid);
    if (!s->authzid) return fail(s, EPODE_ERR_NOMEM, "out of memory");
  }
  epode_err e = put_authzid(s, out);
  if (e) return e;
  s->st = X_SENT;
  *has_initial = 1;
  return EPODE_OK;
}

static epode_err ext_step(void *state, const unsigned char *in, size_t in_len, epode__buf *out) {
  ext_state *s = state;
  if (!s) return EPODE_ERR_SASL_PROTOCOL;
  if (!in) in_len = 0;
  switch (s->st) {
  case X_SENT: {
    if (in_len)
      return fail(s, EPODE_ERR_SASL_PROTOCOL,
                  "the server sent a non-empty challenge; EXTERNAL "
                  "challenges are empty");
    epode_err e = put_authzid(s, out);
    if (e) return e;
    s->st = X_RESENT;
    s->err[0] = '\0';
    return EPODE_OK;
  }
  case X_RESENT:
    return fail(s, EPODE_ERR_SASL_PROTOCOL,
                "the server sent a second challenge; EXTERNAL has at "
                "most one");
  case X_DONE: return fail(s, EPODE_ERR_SASL_PROTOCOL, "challenge after the exchange completed");
  default: return fail(s, EPODE_ERR_SASL_PROTOCOL, "challenge after the exchange failed");
  }
}

static epode_err ext_success(void *state, const unsigned char *in, size_t in_len) {
  ext_state *s = state;
  if (!s) return EPODE_ERR_SASL_PROTOCOL;
  switch (s->st) {
  case X_SENT:
  case X_RESENT:
    /* EXTERNAL defines no additional data with success; ignored, as
     * within SASL nothing about the server is verified. */
    s->st = X_DONE;
    s->err[0] = '\0';
    return EPODE_OK;
  case X_DONE: return fail(s, EPODE_ERR_SASL_PROTOCOL, "success after the exchange completed");
  default: return fail(s, EPODE_ERR_SASL_PROTOCOL, "success after the exchange failed");
  }
}

static void ext_free(void *state) {
  ext_state *s = state;
  if (!s) return;
  epode__free(s->mem, s->authzid);
  epode__free(s->mem, s);
}

static const char *ext_errmsg(void *state) {
  ext_state *s = state;
  return s && s->err[0] ? s->err : NULL;
}

/* NO_CREDS: no password or username is needed; NEEDS_CERT: only with a
 * client certificate (which implies TLS). */
const epode__sasl_mech epode__sasl_external = {
    "EXTERNAL", 60,        EPODE__SASL_NEEDS_CERT | EPODE__SASL_NO_CREDS,
    ext_start,  ext_step,  ext_success,
    ext_free,   ext_errmsg};
