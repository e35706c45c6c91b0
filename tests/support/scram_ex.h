/* One SCRAM exchange under test, driven through a mechanism's internal
 * interface (src/sasl/sasl.h): start (with a fixed client nonce for test
 * vectors), step, success, and assertions on the output and error text.
 * Shared by test_scram, test_scram_keys and test_ssdp. */
#ifndef EPODE_TEST_SCRAM_EX_H
#define EPODE_TEST_SCRAM_EX_H

#include "sasl/sasl.h"
#include "util/buf.h"

typedef struct ex {
  const epode__sasl_mech *m;
  void *st;
  epode__buf out;
} ex;

/* start() with `nonce` as the client nonce (NULL: from the params' random
 * source); asserts the mechanism spoke first. */
epode_err ex_start(ex *x, const epode__sasl_mech *m, const epode__sasl_params *p,
                   const char *nonce);
/* A server message (NUL-terminated, or NULL for none) to step()/success(). */
epode_err ex_step(ex *x, const char *in);
epode_err ex_success(ex *x, const char *in);
void ex_free(ex *x);
/* The mechanism's errmsg() contains `needle`. */
void assert_errmsg_has(ex *x, const char *needle);
/* The last response is exactly `want`. */
void assert_out(ex *x, const char *want);

#endif
