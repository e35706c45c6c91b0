/* SASL mechanisms (L0): pure computation, no I/O. The session drives them:
 * it picks a mechanism, calls start() for the initial response, step() for
 * each challenge, and success() with the data of <success/> (SCRAM verifies
 * the server signature there). All payloads here are raw bytes; base64 is
 * the session's business.
 *
 * The SASL issue turns this into the public extension API
 * (include/epode/sys/sasl.h); the shape is already the final one. */
#ifndef EPODE_SRC_SASL_SASL_H
#define EPODE_SRC_SASL_SASL_H

#include <stddef.h>
#include <stdint.h>

#include "epode/error.h"
#include "epode/mem.h"
#include "epode/session.h"
#include "util/buf.h"

/* Mechanism flags. */
enum {
  EPODE__SASL_NEEDS_TLS = 1u << 0,  /* refuse over an unencrypted stream */
  EPODE__SASL_NEEDS_CB = 1u << 1,   /* needs channel-binding data (-PLUS) */
  EPODE__SASL_SENDS_SECRET = 1u << 2, /* the password crosses the wire (PLAIN) */
  EPODE__SASL_NEEDS_CERT = 1u << 3, /* needs a TLS client certificate (EXTERNAL) */
  EPODE__SASL_NO_CREDS = 1u << 4    /* needs no credentials (ANONYMOUS) */
};

/* What a mechanism may use. Strings are UTF-8, NUL-terminated; any may be
 * NULL when not configured. */
typedef struct epode__sasl_params {
  const epode_mem *mem;
  const char *authcid;  /* the username: the JID's localpart */
  const char *authzid;  /* usually NULL */
  const char *password;
  const char *domain;   /* the JID's domain (DIGEST-MD5 realm/serv) */
  const epode_tls_info *tls; /* NULL on an unencrypted stream */
  /* Channel-binding types the server advertised (XEP-0440), NULL-terminated
   * list; NULL if it did not say (then tls-unique on TLS 1.2 and
   * tls-exporter on TLS 1.3 are assumed). */
  const char *const *server_cb_types;
  /* Whether the server offered any -PLUS mechanism (for the gs2 'y' flag). */
  int server_offers_plus;
  /* Random bytes for nonces. */
  epode_random_fn random;
  void *random_ud;
  uint64_t scram_iter_min, scram_iter_max;
  /* OAUTHBEARER (RFC 7628): the OAuth 2.0 bearer token (RFC 6750 b64token),
   * NULL when none is configured; the mechanism is unusable then. */
  const char *oauth_token;
  /* EXTERNAL: nonzero when the TLS channel presented a client certificate. */
  int have_client_cert;
  /* SCRAM: keys to use instead of the password when hash, salt and
   * iterations match (NULL: none), and where to store the keys derived
   * during this exchange (NULL: don't). */
  const struct epode_scram_keys *scram_keys;
  struct epode_scram_keys *scram_keys_out;
  /* XEP-0474 (SSDP): the mechanisms the server offered, in the order it
   * offered them, NULL-terminated (NULL if unknown). With
   * server_cb_types (XEP-0440) they are what a server's h= hash covers. */
  const char *const *server_mechs;
} epode__sasl_params;

typedef struct epode__sasl_mech {
  const char *name;
  int priority;
  unsigned flags;
  /* Creates the exchange state and, if the mechanism speaks first, writes
   * the initial response to `out` and sets *has_initial (an empty initial
   * response is "=" on the wire: *has_initial=1 with out empty).
   * On failure *state is still set when the state could be allocated (NULL
   * otherwise), so that errmsg() can say why; the caller frees it with
   * free() either way. A failed or finished exchange refuses every further
   * step()/success() with EPODE_ERR_SASL_PROTOCOL. On any error `out` is
   * left as it was. */
  epode_err (*start)(void **state, const epode__sasl_params *p, epode__buf *out,
                     int *has_initial);
  /* A server challenge; the response goes to `out`. */
  epode_err (*step)(void *state, const unsigned char *in, size_t in_len, epode__buf *out);
  /* <success/> arrived with `in` (may be empty: in_len 0 with in NULL when
   * the element had no text). EPODE_OK only if the server proved itself
   * (SCRAM: v= matches). */
  epode_err (*success)(void *state, const unsigned char *in, size_t in_len);
  void (*free)(void *state);
  /* Why the last call failed, or NULL. */
  const char *(*errmsg)(void *state);
} epode__sasl_mech;

/* Built-in mechanisms. */
extern const epode__sasl_mech epode__sasl_plain;
extern const epode__sasl_mech epode__sasl_scram_sha1;
extern const epode__sasl_mech epode__sasl_scram_sha256;
extern const epode__sasl_mech epode__sasl_scram_sha512;
extern const epode__sasl_mech epode__sasl_scram_sha1_plus;
extern const epode__sasl_mech epode__sasl_scram_sha256_plus;
extern const epode__sasl_mech epode__sasl_scram_sha512_plus;
extern const epode__sasl_mech epode__sasl_digest_md5;  /* RFC 2831, qop=auth only */
extern const epode__sasl_mech epode__sasl_anonymous;   /* RFC 4505 */
extern const epode__sasl_mech epode__sasl_oauthbearer; /* RFC 7628 */
extern const epode__sasl_mech epode__sasl_external;    /* RFC 4422 App. A, XEP-0178 */

/* The channel-binding type -PLUS would use with these parameters (and its
 * data), or NULL when none is usable. */
const char *epode__sasl_pick_cb(const epode__sasl_params *p, const unsigned char **data,
                                size_t *len);

/* ------------------------------------------------------------ registry */

/* One mechanism as a configuration sees it: built-in or custom, with the
 * priority in force. */
typedef struct epode__sasl_entry {
  const char *name;
  int priority;
  unsigned flags; /* EPODE_SASL_* (include/epode/sys/sasl.h) */
  const epode__sasl_mech *builtin;
  const struct epode_sasl_mechanism *custom;
} epode__sasl_entry;

#define EPODE__SASL_MAX_ENTRIES 64

struct epode_config;
/* The built-in mechanism called `name`, or NULL. */
const epode__sasl_mech *epode__sasl_builtin_find(const char *name);
/* Every registered mechanism (custom ones replace built-ins of the same
 * name), highest priority first; returns how many were written. */
size_t epode__sasl_entries(const struct epode_config *cfg, epode__sasl_entry *out, size_t max);

/* SASLprep (RFC 4013) via libidn. *out allocated with mem. EPODE_ERR_INVAL
 * for a prohibited string. */
epode_err epode__saslprep(const epode_mem *mem, const char *in, char **out);

#endif
