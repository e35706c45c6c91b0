#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <stdatomic.h>

#include "epode_limits.h"
#include "util/alloc.h"
#include "epode/jid.h"
#include "epode/sasl.h"
#include "util/config_int.h"

int epode__random_default(void *ud, unsigned char *buf, size_t len) {
  (void)ud;
  while (len) {
    int n = len > 1u << 30 ? 1 << 30 : (int)len;
    if (RAND_bytes(buf, n) != 1) return -1;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* ------------------------------------------------------------ TLS context */

epode__tls_shared *epode__tls_shared_new(const epode_mem *mem) {
  epode__tls_shared *sh = epode__calloc(mem, sizeof *sh);
  if (!sh) return NULL;
  atomic_init(&sh->refs, 1u);
  sh->mem = *epode__mem_or_default(mem);
  sh->max_age_ms = EPODE__TLS_CTX_MAX_AGE_MS;
  sh->lock_ok = pthread_mutex_init(&sh->lock, NULL) == 0;
  return sh;
}

epode__tls_shared *epode__tls_shared_ref(epode__tls_shared *sh) {
  if (sh) atomic_fetch_add(&sh->refs, 1u);
  return sh;
}

void epode__tls_shared_unref(epode__tls_shared *sh) {
  if (!sh || atomic_fetch_sub(&sh->refs, 1u) != 1u) return;
  SSL_CTX_free(sh->ctx);
  if (sh->lock_ok) pthread_mutex_destroy(&sh->lock);
  epode_mem mem = sh->mem;
  epode__free(&mem, sh);
}

void epode__config_tls_changed(epode_config *c) {
  epode__tls_shared_unref(c->tls_shared);
  c->tls_shared = epode__tls_shared_new(&c->mem);
}

/* ------------------------------------------------------------ config */

epode_err epode_config_new(epode_config **out, const epode_mem *mem) {
  if (!out) return EPODE_ERR_INVAL;
  *out = NULL;
  epode_config *c = epode__calloc(mem, sizeof *c);
  if (!c) return EPODE_ERR_NOMEM;
  c->mem = *epode__mem_or_default(mem);
  c->tls_mode = EPODE_TLS_AUTO;
  c->limits[EPODE_LIMIT_STANZA_BYTES] = EPODE_DEFAULT_MAX_STANZA_BYTES;
  c->limits[EPODE_LIMIT_DEPTH] = EPODE_DEFAULT_MAX_DEPTH;
  c->limits[EPODE_LIMIT_ATTRS] = EPODE_DEFAULT_MAX_ATTRS;
  c->limits[EPODE_LIMIT_SEND_QUEUE] = EPODE_DEFAULT_SEND_QUEUE;
  c->limits[EPODE_LIMIT_OUTPUT_BYTES] = EPODE_DEFAULT_OUTPUT_BYTES;
  c->limits[EPODE_LIMIT_SASL_ROUNDS] = EPODE_DEFAULT_SASL_ROUNDS;
  c->limits[EPODE_LIMIT_SCRAM_ITER_MIN] = EPODE_DEFAULT_SCRAM_ITER_MIN;
  c->limits[EPODE_LIMIT_SCRAM_ITER_MAX] = EPODE_DEFAULT_SCRAM_ITER_MAX;
  c->limits[EPODE_LIMIT_UNACKED] = EPODE_DEFAULT_UNACKED;
  c->timeouts[EPODE_TIMEOUT_CONNECT] = EPODE_DEFAULT_TIMEOUT_CONNECT;
  c->timeouts[EPODE_TIMEOUT_TLS] = EPODE_DEFAULT_TIMEOUT_TLS;
  c->timeouts[EPODE_TIMEOUT_NEGOTIATION] = EPODE_DEFAULT_TIMEOUT_NEGOTIATION;
  c->timeouts[EPODE_TIMEOUT_IQ] = EPODE_DEFAULT_TIMEOUT_IQ;
  c->timeouts[EPODE_TIMEOUT_CLOSE] = EPODE_DEFAULT_TIMEOUT_CLOSE;
  c->log_level = EPODE_LOG_ERROR;
  c->random_fn = epode__random_default;
  c->sm_every_n = EPODE_DEFAULT_SM_ACK_EVERY;
  c->sm_every_ms = EPODE_DEFAULT_SM_ACK_MS;
  c->ka_idle_ms = EPODE_DEFAULT_KEEPALIVE_IDLE;
  c->ka_timeout_ms = EPODE_DEFAULT_KEEPALIVE_TIMEOUT;
  c->rc_initial_ms = EPODE_DEFAULT_RECONNECT_INITIAL;
  c->rc_max_ms = EPODE_DEFAULT_RECONNECT_MAX;
  if (!(c->tls_shared = epode__tls_shared_new(&c->mem))) {
    epode__free(&c->mem, c);
    return EPODE_ERR_NOMEM;
  }
  *out = c;
  return EPODE_OK;
}

void epode_config_free(epode_config *c) {
  if (!c) return;
  epode_mem mem = c->mem;
  epode__free(&mem, c->jid);
  epode__free_secret(&mem, c->password);
  epode__free(&mem, c->resource);
  epode__free(&mem, c->server_host);
  epode__free(&mem, c->cafile);
  epode__free(&mem, c->url);
  epode__free(&mem, c->sasl_allow);
  epode__free(&mem, c->prios);
  epode__free(&mem, c->custom);
  epode__free(&mem, c->authzid);
  epode__free_secret(&mem, c->oauth_token);
  epode__free(&mem, c->client_cert);
  epode__free(&mem, c->client_key);
  epode__free(&mem, c->client_p12);
  epode__free_secret(&mem, c->client_p12_pw);
  if (c->scram_keys) epode__wipe(c->scram_keys, sizeof *c->scram_keys);
  epode__free(&mem, c->scram_keys);
  epode__tls_shared_unref(c->tls_shared);
  epode__free(&mem, c);
}

static epode_err set_str(epode_config *c, char **field, const char *v) {
  char *d = NULL;
  if (v && !(d = epode__strdup(&c->mem, v))) return EPODE_ERR_NOMEM;
  if (field == &c->password || field == &c->oauth_token || field == &c->client_p12_pw)
    epode__free_secret(&c->mem, *field);
  else
    epode__free(&c->mem, *field);
  *field = d;
  return EPODE_OK;
}

epode_err epode_config_clone(epode_config **out, const epode_config *src) {
  if (!out || !src) return EPODE_ERR_INVAL;
  epode_config *c;
  epode_err e = epode_config_new(&c, &src->mem);
  if (e) return e;
  char *const *strs[] = {&src->jid,         &src->password,    &src->resource,
                         &src->server_host, &src->cafile,      &src->sasl_allow,
                         &src->authzid,     &src->oauth_token, &src->client_cert,
                         &src->client_key,  &src->client_p12,  &src->client_p12_pw,
                         &src->url};
  char **dsts[] = {&c->jid,         &c->password,    &c->resource,   &c->server_host,
                   &c->cafile,      &c->sasl_allow,  &c->authzid,    &c->oauth_token,
                   &c->client_cert, &c->client_key,  &c->client_p12, &c->client_p12_pw,
                   &c->url};
  for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) {
    if ((e = set_str(c, dsts[i], *strs[i]))) {
      epode_config_free(c);
      return e;
    }
  }
  c->server_port = src->server_port;
  c->tls_min = src->tls_min;
  c->transport = src->transport;
  c->sm_off = src->sm_off;
  c->sm_every_n = src->sm_every_n;
  c->sm_every_ms = src->sm_every_ms;
  c->ka_idle_ms = src->ka_idle_ms;
  c->ka_timeout_ms = src->ka_timeout_ms;
  c->rc_on = src->rc_on;
  c->rc_initial_ms = src->rc_initial_ms;
  c->rc_max_ms = src->rc_max_ms;
  c->rc_max_attempts = src->rc_max_attempts;
  c->tls_max = src->tls_max;
  c->tls_mode = src->tls_mode;
  c->flags = src->flags;
  memcpy(c->limits, src->limits, sizeof c->limits);
  memcpy(c->timeouts, src->timeouts, sizeof c->timeouts);
  c->log_fn = src->log_fn;
  c->log_ud = src->log_ud;
  c->log_level = src->log_level;
  c->random_fn = src->random_fn;
  c->random_ud = src->random_ud;
  c->sasl_fallback = src->sasl_fallback;
  /* Same TLS settings: the same context (an unshared source stays so). */
  epode__tls_shared_unref(c->tls_shared);
  c->tls_shared = epode__tls_shared_ref(src->tls_shared);
  if (src->scram_keys) {
    if (!(c->scram_keys = epode__alloc(&c->mem, sizeof *c->scram_keys))) goto nomem;
    memcpy(c->scram_keys, src->scram_keys, sizeof *c->scram_keys);
  }
  if (src->n_prios) {
    if (!(c->prios = epode__alloc(&c->mem, src->n_prios * sizeof *c->prios))) goto nomem;
    memcpy(c->prios, src->prios, src->n_prios * sizeof *c->prios);
    c->n_prios = src->n_prios;
  }
  if (src->n_custom) {
    if (!(c->custom = epode__alloc(&c->mem, src->n_custom * sizeof *c->custom))) goto nomem;
    memcpy(c->custom, src->custom, src->n_custom * sizeof *c->custom);
    c->n_custom = src->n_custom;
  }
  *out = c;
  return EPODE_OK;
nomem:
  epode_config_free(c);
  return EPODE_ERR_NOMEM;
}

epode_err epode_config_set_jid(epode_config *c, const char *jid) {
  if (!c || !jid) return EPODE_ERR_INVAL;
  epode_err e = epode_jid_validate(jid);
  if (e) return e;
  return set_str(c, &c->jid, jid);
}

const char *epode_config_jid(const epode_config *c) { return c ? c->jid : NULL; }

epode_err epode_config_set_password(epode_config *c, const char *pw) {
  if (!c) return EPODE_ERR_INVAL;
  return set_str(c, &c->password, pw);
}

epode_err epode_config_set_resource(epode_config *c, const char *r) {
  if (!c) return EPODE_ERR_INVAL;
  if (r && (!*r || strlen(r) > 1023)) return EPODE_ERR_INVAL;
  return set_str(c, &c->resource, r);
}

epode_err epode_config_set_server(epode_config *c, const char *host, uint16_t port) {
  if (!c) return EPODE_ERR_INVAL;
  if (host && !*host) return EPODE_ERR_INVAL;
  epode_err e = set_str(c, &c->server_host, host);
  if (!e) c->server_port = port;
  return e;
}

epode_err epode_config_set_tls_mode(epode_config *c, epode_tls_mode m) {
  if (!c || (m != EPODE_TLS_AUTO && m != EPODE_TLS_STARTTLS && m != EPODE_TLS_DIRECT))
    return EPODE_ERR_INVAL;
  c->tls_mode = m;
  return EPODE_OK;
}

epode_tls_mode epode_config_tls_mode(const epode_config *c) { return c->tls_mode; }

epode_err epode_config_set_tls_versions(epode_config *c, int min, int max) {
  if (!c) return EPODE_ERR_INVAL;
  if ((min && min != 0x0303 && min != 0x0304) || (max && max != 0x0303 && max != 0x0304) ||
      (min && max && min > max))
    return EPODE_ERR_INVAL;
  if (min != c->tls_min || max != c->tls_max) epode__config_tls_changed(c);
  c->tls_min = min;
  c->tls_max = max;
  return EPODE_OK;
}

/* scheme://host[:port][/path], host a name, IPv4 or [IPv6]; no spaces,
 * no userinfo. The transports parse it fully; this catches typos early. */
static int url_ok(const char *u, epode_transport *t) {
  static const struct {
    const char *scheme;
    epode_transport t;
  } schemes[] = {{"ws://", EPODE_TRANSPORT_WEBSOCKET},
                 {"wss://", EPODE_TRANSPORT_WEBSOCKET},
                 {"http://", EPODE_TRANSPORT_BOSH},
                 {"https://", EPODE_TRANSPORT_BOSH}};
  for (size_t i = 0; i < sizeof schemes / sizeof *schemes; i++) {
    size_t n = strlen(schemes[i].scheme);
    if (strncmp(u, schemes[i].scheme, n) != 0) continue;
    const char *h = u + n;
    if (!*h || *h == '/' || *h == ':') return 0;
    for (const char *p = h; *p; p++)
      if ((unsigned char)*p <= ' ' || *p == '@' || *p == '"' || *p == '<' || *p == '>')
        return 0;
    *t = schemes[i].t;
    return 1;
  }
  return 0;
}

epode_err epode_config_set_url(epode_config *c, const char *url) {
  if (!c) return EPODE_ERR_INVAL;
  epode_transport t = EPODE_TRANSPORT_TCP;
  if (url && (strlen(url) > 2048 || !url_ok(url, &t))) return EPODE_ERR_INVAL;
  epode_err e = set_str(c, &c->url, url);
  if (!e) c->transport = t;
  return e;
}

const char *epode_config_url(const epode_config *c) { return c ? c->url : NULL; }

epode_err epode_config_set_transport(epode_config *c, epode_transport t) {
  if (!c || (t != EPODE_TRANSPORT_TCP && t != EPODE_TRANSPORT_WEBSOCKET &&
             t != EPODE_TRANSPORT_BOSH))
    return EPODE_ERR_INVAL;
  if (c->url && t != c->transport) return EPODE_ERR_STATE; /* the URL's scheme decides */
  c->transport = t;
  return EPODE_OK;
}

epode_transport epode_config_transport(const epode_config *c) { return c->transport; }

epode_err epode_config_set_cafile(epode_config *c, const char *path) {
  if (!c) return EPODE_ERR_INVAL;
  epode_err e = set_str(c, &c->cafile, path);
  /* Even with the same path: setting it again reads the file again. */
  if (!e) epode__config_tls_changed(c);
  return e;
}

epode_err epode_config_set_flags(epode_config *c, unsigned flags) {
  if (!c || (flags & ~(unsigned)(EPODE_CFG_ALLOW_PLAINTEXT | EPODE_CFG_TLS_NO_VERIFY)))
    return EPODE_ERR_INVAL;
  if ((flags ^ c->flags) & EPODE_CFG_TLS_NO_VERIFY) epode__config_tls_changed(c);
  c->flags = flags;
  return EPODE_OK;
}

unsigned epode_config_flags(const epode_config *c) { return c->flags; }

epode_err epode_config_set_limit(epode_config *c, epode_limit which, uint64_t v) {
  if (!c || (unsigned)which >= EPODE_LIMIT_COUNT_ || v == 0) return EPODE_ERR_INVAL;
  c->limits[which] = v;
  return EPODE_OK;
}

uint64_t epode_config_limit(const epode_config *c, epode_limit which) {
  return (unsigned)which < EPODE_LIMIT_COUNT_ ? c->limits[which] : 0;
}

epode_err epode_config_set_timeout(epode_config *c, epode_timeout which, uint32_t ms) {
  if (!c || (unsigned)which >= EPODE_TIMEOUT_COUNT_) return EPODE_ERR_INVAL;
  c->timeouts[which] = ms;
  return EPODE_OK;
}

uint32_t epode_config_timeout(const epode_config *c, epode_timeout which) {
  return (unsigned)which < EPODE_TIMEOUT_COUNT_ ? c->timeouts[which] : 0;
}

epode_err epode_config_set_keepalive(epode_config *c, uint32_t idle_ms, uint32_t timeout_ms) {
  if (!c || (idle_ms && !timeout_ms)) return EPODE_ERR_INVAL;
  c->ka_idle_ms = idle_ms;
  c->ka_timeout_ms = timeout_ms;
  return EPODE_OK;
}

epode_err epode_config_set_reconnect(epode_config *c, int enable, uint32_t initial_ms,
                                     uint32_t max_ms, unsigned max_attempts) {
  if (!c) return EPODE_ERR_INVAL;
  if (!initial_ms) initial_ms = EPODE_DEFAULT_RECONNECT_INITIAL;
  if (!max_ms) max_ms = EPODE_DEFAULT_RECONNECT_MAX;
  if (max_ms < initial_ms) return EPODE_ERR_INVAL;
  c->rc_on = enable != 0;
  c->rc_initial_ms = initial_ms;
  c->rc_max_ms = max_ms;
  c->rc_max_attempts = max_attempts;
  return EPODE_OK;
}

epode_err epode_config_set_stream_management(epode_config *c, int enable) {
  if (!c) return EPODE_ERR_INVAL;
  c->sm_off = !enable;
  return EPODE_OK;
}

epode_err epode_config_set_sm_ack_policy(epode_config *c, unsigned every_n, uint32_t every_ms) {
  if (!c || (!every_n && !every_ms)) return EPODE_ERR_INVAL;
  c->sm_every_n = every_n;
  c->sm_every_ms = every_ms;
  return EPODE_OK;
}

epode_err epode_config_set_log(epode_config *c, epode_log_fn fn, void *ud, epode_log_level lvl) {
  if (!c) return EPODE_ERR_INVAL;
  c->log_fn = fn;
  c->log_ud = ud;
  c->log_level = lvl;
  return EPODE_OK;
}

epode_err epode_config_set_random(epode_config *c, epode_random_fn fn, void *ud) {
  if (!c) return EPODE_ERR_INVAL;
  c->random_fn = fn ? fn : epode__random_default;
  c->random_ud = fn ? ud : NULL;
  return EPODE_OK;
}

const epode_mem *epode_config_mem(const epode_config *c) { return &c->mem; }

void epode__log(const epode_config *cfg, epode_log_level lvl, const char *area, const char *fmt,
                ...) {
  if (!EPODE__LOG_ON(cfg, lvl)) return;
  char small[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n < sizeof small) {
    cfg->log_fn(cfg->log_ud, lvl, area, small);
    return;
  }
  char *big = epode__alloc(&cfg->mem, (size_t)n + 1);
  if (!big) {
    cfg->log_fn(cfg->log_ud, lvl, area, small); /* truncated beats nothing */
    return;
  }
  va_start(ap, fmt);
  vsnprintf(big, (size_t)n + 1, fmt, ap);
  va_end(ap);
  cfg->log_fn(cfg->log_ud, lvl, area, big);
  epode__free(&cfg->mem, big);
}
