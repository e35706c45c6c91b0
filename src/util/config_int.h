/* The configuration's fields, for the library's own layers. */
#ifndef EPODE_SRC_UTIL_CONFIG_INT_H
#define EPODE_SRC_UTIL_CONFIG_INT_H

#include <pthread.h>
#include <stdint.h>

#include "epode/config.h"
#include "epode/sys/sasl.h"

/* The TLS context (OpenSSL SSL_CTX: versions, options, the CA store, the
 * client certificate) made from a configuration's TLS settings, shared by
 * the configuration and its copies (every session's), so that the CA store
 * is read and held once, not per connection: with the system store that is
 * ~0.8 MiB and ~40 ms of CPU each time. Made by tls.c at the first TLS
 * connection, under `lock`; made again after max_age_ms, so that a CA file
 * changed on disk is read again. A setter that changes a TLS setting gives
 * its configuration a new, empty holder (epode__config_tls_changed); copies
 * made before keep the old one, which matches their settings. */
typedef struct epode__tls_shared {
  _Atomic unsigned refs;
  int lock_ok; /* `lock` was initialised; without it nothing is shared */
  pthread_mutex_t lock;
  void *ctx; /* SSL_CTX *, or NULL until the first TLS connection */
  uint64_t made_ms, max_age_ms;
  epode_mem mem;
} epode__tls_shared;

/* Default for max_age_ms: a day, as curl's CA cache. */
#define EPODE__TLS_CTX_MAX_AGE_MS (24u * 3600u * 1000u)

epode__tls_shared *epode__tls_shared_new(const epode_mem *mem);
epode__tls_shared *epode__tls_shared_ref(epode__tls_shared *sh);
void epode__tls_shared_unref(epode__tls_shared *sh);
/* A TLS setting of `c` changed: later connections made from it (and from
 * its later copies) get a context made from the new settings. Without
 * memory for a new holder, `c` shares nothing (each connection makes its
 * own context, as if unshared). */
void epode__config_tls_changed(epode_config *c);

/* A priority override for a built-in mechanism. */
typedef struct epode__prio {
  char name[24];
  int priority;
} epode__prio;

struct epode_config {
  epode_mem mem;
  char *jid;
  char *password;
  char *resource;
  char *server_host; /* NULL: resolve the JID's domain */
  uint16_t server_port;
  char *cafile;
  int tls_min, tls_max; /* 0x0303 / 0x0304, 0 = default */
  char *url;             /* ws(s):// or http(s):// endpoint, or NULL */
  int sm_off;            /* XEP-0198 disabled by the caller */
  unsigned sm_every_n;   /* request an ack after this many stanzas */
  uint32_t sm_every_ms;  /* … or this long after the oldest unacked one */
  uint32_t ka_idle_ms, ka_timeout_ms; /* keepalive */
  int rc_on;                         /* automatic reconnection */
  uint32_t rc_initial_ms, rc_max_ms; /* its backoff */
  unsigned rc_max_attempts;          /* 0: no limit */
  epode_transport transport;
  epode_tls_mode tls_mode;
  unsigned flags;
  uint64_t limits[EPODE_LIMIT_COUNT_];
  uint32_t timeouts[EPODE_TIMEOUT_COUNT_];
  epode_log_fn log_fn;
  void *log_ud;
  epode_log_level log_level;
  epode_random_fn random_fn;
  void *random_ud;

  /* SASL (include/epode/sasl.h). */
  char *sasl_allow; /* ",NAME,NAME," or NULL for any */
  epode__prio *prios;
  size_t n_prios;
  epode_sasl_mechanism *custom; /* registered custom mechanisms */
  size_t n_custom;
  int sasl_fallback;
  char *authzid;
  char *oauth_token;
  char *client_cert, *client_key;  /* PEM files */
  char *client_p12, *client_p12_pw; /* PKCS#12 file and password */
  struct epode_scram_keys *scram_keys; /* cached SCRAM keys, or NULL */
  epode__tls_shared *tls_shared;       /* see above; NULL: not shared */
};

/* Whether `name` passes the allow-list. */
int epode__config_mech_allowed(const epode_config *cfg, const char *name);
/* Whether the allow-list names `name` itself (not just "any"). */
int epode__config_mech_allowed_explicitly(const epode_config *cfg, const char *name);
/* The priority in force for a mechanism whose default is `dflt`. */
int epode__config_mech_priority(const epode_config *cfg, const char *name, int dflt);
/* Whether a client certificate is configured. */
int epode__config_has_client_cert(const epode_config *cfg);

/* The default random source (OpenSSL RAND_bytes). */
int epode__random_default(void *ud, unsigned char *buf, size_t len);

/* Logging helpers: check the level before formatting anything. */
#define EPODE__LOG_ON(cfg, lvl) ((cfg)->log_fn && (lvl) <= (cfg)->log_level)
void epode__log(const epode_config *cfg, epode_log_level lvl, const char *area, const char *fmt,
                ...) __attribute__((format(printf, 4, 5)));

#endif
