/* PLAIN (RFC 4616): one message, authzid NUL authcid NUL password. It
 * proves nothing about the server, so success() only checks the order. */
#include <string.h>

#include "sasl/sasl_int.h"
#include "util/alloc.h"

enum { P_SENT, P_DONE, P_FAILED };

typedef struct plain_state {
  const epode_mem *mem;
  int st;
  char err[EPODE__SASL_ERRMSG_SIZE];
} plain_state;

static epode_err fail(plain_state *s, epode_err e, const char *msg) {
  s->st = P_FAILED;
  epode__sasl_errf(s->err, "%s", msg);
  return e;
}

static epode_err prep(plain_state *s, const char *in, const char *what, char **out) {
  epode_err e = epode__saslprep(s->mem, in, out);
  if (e == EPODE_ERR_NOMEM) return fail(s, e, "out of memory");
  if (e) {
    epode__sasl_errf(s->err, "SASLprep rejected the %s (prohibited or invalid character)", what);
    s->st = P_FAILED;
    return e;
  }
  if (!**out) {
    epode__free_secret(s->mem, *out);
    *out = NULL;
    epode__sasl_errf(s->err, "the %s is empty", what);
    s->st = P_FAILED;
    return EPODE_ERR_INVAL;
  }
  return EPODE_OK;
}

static epode_err plain_start(void **state, const epode__sasl_params *p, epode__buf *out,
                             int *has_initial) {
  *state = NULL;
  *has_initial = 0;
  const epode_mem *mem = p->mem;
  plain_state *s = epode__calloc(mem, sizeof *s);
  if (!s) return EPODE_ERR_NOMEM;
  s->mem = mem;
  *state = s;
  if (!p->authcid) return fail(s, EPODE_ERR_INVAL, "no username configured");
  if (!p->password) return fail(s, EPODE_ERR_INVAL, "no password configured");
  char *user = NULL, *pass = NULL;
  epode_err e = prep(s, p->authcid, "username", &user);
  if (!e) e = prep(s, p->password, "password", &pass);
  if (!e) {
    /* The authzid is a JID, already in its canonical form; it is not
     * SASLprepped (RFC 4616 leaves its form to the protocol). */
    const char *authz = p->authzid ? p->authzid : "";
    size_t start = out->len;
    e = epode__buf_append(out, authz, strlen(authz));
    if (!e) e = epode__buf_append(out, "", 1);
    if (!e) e = epode__buf_append(out, user, strlen(user));
    if (!e) e = epode__buf_append(out, "", 1);
    if (!e) e = epode__buf_append(out, pass, strlen(pass));
    if (e) {
      if (out->data) epode__wipe(out->data + start, out->len - start);
      out->len = start;
      if (out->data) out->data[start] = '\0';
      fail(s, e, e == EPODE_ERR_NOMEM ? "out of memory" : "response exceeds the output limit");
    } else {
      *has_initial = 1;
      s->st = P_SENT;
    }
  }
  epode__free_secret(mem, user);
  epode__free_secret(mem, pass);
  return e;
}

static epode_err plain_step(void *state, const unsigned char *in, size_t in_len, epode__buf *out) {
  plain_state *s = state;
  if (!s) return EPODE_ERR_SASL_PROTOCOL;
  return fail(s, EPODE_ERR_SASL_PROTOCOL, "the server sent a challenge; PLAIN has none");
}

static epode_err plain_success(void *state, const unsigned char *in, size_t in_len) {
  plain_state *s = state;
  if (!s) return EPODE_ERR_SASL_PROTOCOL;
  if (s->st != P_SENT) return fail(s, EPODE_ERR_SASL_PROTOCOL, "success out of order");
  /* Additional data with <success/> is meaningless for PLAIN (RFC 6120
   * 6.4.6 says it must be empty); ignoring it is harmless, as PLAIN
   * authenticates nothing about the server either way. */
  s->st = P_DONE;
  s->err[0] = '\0';
  return EPODE_OK;
}

static void plain_free(void *state) {
  plain_state *s = state;
  if (s) epode__free(s->mem, s);
}

static const char *plain_errmsg(void *state) {
  plain_state *s = state;
  return s && s->err[0] ? s->err : NULL;
}

const epode__sasl_mech epode__sasl_plain = {
    "PLAIN",     20,          EPODE__SASL_SENDS_SECRET | EPODE__SASL_NEEDS_TLS,
    plain_start, plain_step,  plain_success,
    plain_free,  plain_errmsg};
