#include "scram_ex.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "sasl/sasl_int.h"

epode_err ex_start(ex *x, const epode__sasl_mech *m, const epode__sasl_params *p,
                   const char *nonce) {
  x->m = m;
  x->st = NULL;
  epode__buf_init(&x->out, p->mem, 0);
  int has = -1;
  epode_err e = nonce ? epode__scram_start_with_nonce(m, &x->st, p, nonce, &x->out, &has)
                      : m->start(&x->st, p, &x->out, &has);
  if (!e) assert_int_equal(has, 1);
  return e;
}

epode_err ex_step(ex *x, const char *in) {
  epode__buf_reset(&x->out);
  return x->m->step(x->st, (const unsigned char *)in, in ? strlen(in) : 0, &x->out);
}

epode_err ex_success(ex *x, const char *in) {
  return x->m->success(x->st, (const unsigned char *)in, in ? strlen(in) : 0);
}

void ex_free(ex *x) {
  x->m->free(x->st);
  epode__buf_free(&x->out);
}

void assert_errmsg_has(ex *x, const char *needle) {
  const char *m = x->m->errmsg(x->st);
  assert_non_null(m);
  if (!strstr(m, needle)) fail_msg("errmsg \"%s\" lacks \"%s\"", m, needle);
}

void assert_out(ex *x, const char *want) {
  if (x->out.len != strlen(want) || memcmp(x->out.data, want, x->out.len))
    fail_msg("got \"%.*s\", want \"%s\"", (int)x->out.len, x->out.data ? x->out.data : "", want);
}
