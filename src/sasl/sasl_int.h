/* Helpers shared by the mechanisms in src/sasl, and the SCRAM test hook. */
#ifndef EPODE_SRC_SASL_SASL_INT_H
#define EPODE_SRC_SASL_SASL_INT_H

#include <stdarg.h>
#include <stddef.h>

#include "sasl/sasl.h"

/* Size of a mechanism's errmsg buffer. */
#define EPODE__SASL_ERRMSG_SIZE 256

/* Formats into err[EPODE__SASL_ERRMSG_SIZE]. */
void epode__sasl_errf(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* start() of a SCRAM mechanism with the client nonce given instead of drawn
 * from p->random: for the RFC 5802 / RFC 7677 test vectors only. `nonce`
 * must be printable ASCII without ','. EPODE_ERR_INVAL if `m` is not SCRAM. */
epode_err epode__scram_start_with_nonce(const epode__sasl_mech *m, void **state,
                                        const epode__sasl_params *p, const char *nonce,
                                        epode__buf *out, int *has_initial);

/* DIGEST-MD5 start() with the service name (normally "xmpp") and the client
 * nonce given instead of drawn from p->random: for the RFC 2831 test vector
 * (service "imap") only. Both must be 1..64 printable ASCII characters
 * other than '"' and '\\', with no ',' in the cnonce and no '/' in the
 * service; EPODE_ERR_INVAL otherwise (with *state NULL). */
epode_err epode__digest_md5_start_with(void **state, const epode__sasl_params *p,
                                       const char *service, const char *cnonce, epode__buf *out,
                                       int *has_initial);

#endif
