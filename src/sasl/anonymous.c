/* ANONYMOUS (RFC 4505): one message from the client, an optional trace
 * string, which epode leaves empty ("=" on the wire). The server assigns
 * the identity; there is nothing to verify about it, so success() only
 * checks the order. */
#include "sasl/sasl_int.h"
#include "util/alloc.h"

enum { A_SENT, A_DONE, A_FAILED };

typedef struct anon_state {
  const epode_mem *mem;
  int st;
  char err[EPODE__SASL_ERRMSG_SIZE];
} anon_state;

static epode_err fail(anon_state *s, const char *msg) {
  s->st = A_FAILED;
  epode__sasl_errf(s->err, "%s", msg);
  return EPODE_ERR_SASL_PROTOCOL;
}

static epode_err anon_start(void **state, const epode__sasl_params *p, epode__buf *out,
                            int *has_initial) {
  *state = NULL;
  *has_initial = 0;
  anon_state *s = epode__calloc(p->mem, sizeof *s);
  if (!s) return EPODE_ERR_NOMEM;
  s->mem = p->mem;
  s->st = A_SENT;
  *state = s;
  (void)out; /* the empty trace: nothing to write */
  *has_initial = 1;
  return EPODE_OK;
}

static epode_err anon_step(void *state, const unsigned char *in, size_t in_len, epode__buf *out) {
  anon_state *s = state;
  if (!s) return EPODE_ERR_SASL_PROTOCOL;
  switch (s->st) {
  case A_SENT: return fail(s, "the server sent a challenge; ANONYMOUS has none");
  case A_DONE: return fail(s, "challenge after the exchange completed");
  default: return fail(s, "challenge after the exchange failed");
  }
}

static epode_err anon_success(void *state, const unsigned char *in, size_t in_len) {
  anon_state *s = state;
  if (!s) return EPODE_ERR_SASL_PROTOCOL;
  switch (s->st) {
  case A_SENT:
    /* ANONYMOUS defines no additional data with success; like PLAIN, any
     * that comes is ignored, as nothing about the server is verified. */
    s->st = A_DONE;
    s->err[0] = '\0';
    return EPODE_OK;
  case A_DONE: return fail(s, "success after the exchange completed");
  default: return fail(s, "success after the exchange failed");
  }
}

static void anon_free(void *state) {
  anon_state *s = state;
  if (s) epode__free(s->mem, s);
}

static const char *anon_errmsg(void *state) {
  anon_state *s = state;
  return s && s->err[0] ? s->err : NULL;
}

const epode__sasl_mech epode__sasl_anonymous = {"ANONYMOUS", 10,         EPODE__SASL_NO_CREDS,
                                                anon_start,  anon_step,  anon_success,
                                                anon_free,   anon_errmsg};
