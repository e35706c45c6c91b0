/* epode — extension API: custom SASL mechanisms.
 *
 * A mechanism is pure computation: it reads what it needs from the
 * exchange context (credentials, channel-binding data, random bytes) and
 * writes raw response bytes; the session does base64 and the wire. So a
 * mechanism can be unit-tested and fuzzed on its own.
 *
 *   static const epode_sasl_mechanism foo = {
 *     EPODE_SASL_MECHANISM_VERSION, "X-FOO", 55, EPODE_SASL_NEEDS_PASSWORD, 1,
 *     foo_start, foo_step, foo_success, foo_free, NULL};
 *   epode_config_add_mechanism(cfg, &foo);
 *
 * The struct is copied; its functions and `ud` must stay valid while any
 * configuration, session or connection made from the config lives. */
#ifndef EPODE_SYS_SASL_H
#define EPODE_SYS_SASL_H

#include <stddef.h>

#include "../config.h"
#include "../error.h"
#include "../mem.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EPODE_SASL_MECHANISM_VERSION 1

/* What a mechanism needs and does; the session's policy reads these. */
enum {
  EPODE_SASL_NEEDS_TLS = 1u << 0,      /* never over an unencrypted stream */
  EPODE_SASL_NEEDS_CB = 1u << 1,       /* needs channel-binding data (-PLUS) */
  EPODE_SASL_SENDS_SECRET = 1u << 2,   /* the secret itself crosses the wire */
  EPODE_SASL_NEEDS_CERT = 1u << 3,     /* needs a TLS client certificate */
  EPODE_SASL_NO_CREDS = 1u << 4,       /* needs no credentials (ANONYMOUS) */
  EPODE_SASL_NEEDS_PASSWORD = 1u << 5, /* needs a username and password */
  EPODE_SASL_NEEDS_TOKEN = 1u << 6     /* needs an OAuth token */
};

typedef struct epode_sasl_ctx epode_sasl_ctx; /* one exchange's inputs */
typedef struct epode_sasl_out epode_sasl_out; /* where a response goes */

typedef struct epode_sasl_mechanism {
  unsigned version; /* EPODE_SASL_MECHANISM_VERSION */
  const char *name; /* as on the wire: 1..20 of A-Z 0-9 - _ */
  int priority;
  unsigned flags;
  int client_first; /* 1: start() writes the initial response */
  /* Creates the exchange state. For client-first mechanisms, writes the
   * initial response to `out` (nothing written = empty response). */
  epode_err (*start)(epode_sasl_ctx *ctx, void **state, epode_sasl_out *out);
  /* A challenge from the server; write the response to `out`. */
  epode_err (*step)(epode_sasl_ctx *ctx, void *state, const unsigned char *in, size_t len,
                    epode_sasl_out *out);
  /* <success/> with its additional data (len 0 if none): return EPODE_OK
   * only if the server proved what the mechanism needs it to prove. */
  epode_err (*success)(epode_sasl_ctx *ctx, void *state, const unsigned char *in, size_t len);
  void (*free)(epode_sasl_ctx *ctx, void *state);
  void *ud; /* the mechanism's own data: epode_sasl_ctx_ud() */
} epode_sasl_mechanism;

/* Registers a mechanism with a configuration (replacing one of the same
 * name, built-in or not). EPODE_ERR_INVAL for a bad name/version or missing
 * callbacks. */
epode_err epode_config_add_mechanism(epode_config *cfg, const epode_sasl_mechanism *mech);

/* The exchange's inputs. Strings are NUL-terminated UTF-8, NULL when not
 * configured. authcid is the JID's localpart. */
const char *epode_sasl_ctx_authcid(const epode_sasl_ctx *ctx);
const char *epode_sasl_ctx_authzid(const epode_sasl_ctx *ctx);
const char *epode_sasl_ctx_password(const epode_sasl_ctx *ctx);
const char *epode_sasl_ctx_domain(const epode_sasl_ctx *ctx);
const char *epode_sasl_ctx_token(const epode_sasl_ctx *ctx);
/* Channel-binding data of `type` ("tls-unique", "tls-exporter",
 * "tls-server-end-point"), or NULL. */
const unsigned char *epode_sasl_ctx_channel_binding(const epode_sasl_ctx *ctx, const char *type,
                                                    size_t *len);
/* 0 on an unencrypted stream, else 0x0303 (TLS 1.2) / 0x0304 (TLS 1.3). */
int epode_sasl_ctx_tls_version(const epode_sasl_ctx *ctx);
epode_err epode_sasl_ctx_random(const epode_sasl_ctx *ctx, unsigned char *buf, size_t len);
const epode_mem *epode_sasl_ctx_mem(const epode_sasl_ctx *ctx);
void *epode_sasl_ctx_ud(const epode_sasl_ctx *ctx);
/* Explains the mechanism's last failure to the app (copied). */
void epode_sasl_ctx_set_error(epode_sasl_ctx *ctx, const char *msg);

/* Appends response bytes. EPODE_ERR_LIMIT past 1 MiB. */
epode_err epode_sasl_out_append(epode_sasl_out *out, const void *data, size_t len);

#ifdef __cplusplus
}
#endif
#endif
