/* The mechanisms a configuration knows: the built-ins, with what each one
 * needs, plus the caller's own. Also the public exchange context that custom
 * mechanisms see (include/epode/sys/sasl.h). */
#include <stdlib.h>
#include <string.h>

#include "sasl/registry.h"
#include "util/alloc.h"
#include "util/config_int.h"

/* Internal flag values mirror the public ones. */
_Static_assert((unsigned)EPODE__SASL_NEEDS_TLS == (unsigned)EPODE_SASL_NEEDS_TLS, "flag mismatch");
_Static_assert((unsigned)EPODE__SASL_NEEDS_CB == (unsigned)EPODE_SASL_NEEDS_CB, "flag mismatch");
_Static_assert((unsigned)EPODE__SASL_SENDS_SECRET == (unsigned)EPODE_SASL_SENDS_SECRET, "flag mismatch");
_Static_assert((unsigned)EPODE__SASL_NEEDS_CERT == (unsigned)EPODE_SASL_NEEDS_CERT, "flag mismatch");
_Static_assert((unsigned)EPODE__SASL_NO_CREDS == (unsigned)EPODE_SASL_NO_CREDS, "flag mismatch");

/* The built-ins and the credentials each needs (the mechanism structs say
 * how they behave; this table says what they consume). */
static const struct {
  const epode__sasl_mech *mech;
  unsigned needs;
} builtins[] = {
    {&epode__sasl_external, EPODE_SASL_NEEDS_CERT},
    {&epode__sasl_scram_sha512_plus, EPODE_SASL_NEEDS_PASSWORD},
    {&epode__sasl_scram_sha256_plus, EPODE_SASL_NEEDS_PASSWORD},
    {&epode__sasl_scram_sha1_plus, EPODE_SASL_NEEDS_PASSWORD},
    {&epode__sasl_scram_sha512, EPODE_SASL_NEEDS_PASSWORD},
    {&epode__sasl_scram_sha256, EPODE_SASL_NEEDS_PASSWORD},
    {&epode__sasl_scram_sha1, EPODE_SASL_NEEDS_PASSWORD},
    {&epode__sasl_oauthbearer, EPODE_SASL_NEEDS_TOKEN},
    {&epode__sasl_digest_md5, EPODE_SASL_NEEDS_PASSWORD},
    {&epode__sasl_plain, EPODE_SASL_NEEDS_PASSWORD},
    {&epode__sasl_anonymous, EPODE_SASL_NO_CREDS},
};

const epode__sasl_mech *epode__sasl_builtin_find(const char *name) {
  for (size_t i = 0; i < sizeof builtins / sizeof *builtins; i++)
    if (!strcmp(builtins[i].mech->name, name)) return builtins[i].mech;
  return NULL;
}

static int by_priority(const void *a, const void *b) {
  const epode__sasl_entry *x = a, *y = b;
  if (x->priority != y->priority) return x->priority > y->priority ? -1 : 1;
  return strcmp(x->name, y->name); /* stable, predictable order */
}

size_t epode__sasl_entries(const epode_config *cfg, epode__sasl_entry *out, size_t max) {
  size_t n = 0;
  for (size_t i = 0; i < cfg->n_custom && n < max; i++) {
    const epode_sasl_mechanism *m = &cfg->custom[i];
    out[n++] = (epode__sasl_entry){m->name, m->priority, m->flags, NULL, m};
  }
  for (size_t i = 0; i < sizeof builtins / sizeof *builtins && n < max; i++) {
    const epode__sasl_mech *m = builtins[i].mech;
    int replaced = 0;
    for (size_t j = 0; j < cfg->n_custom; j++)
      if (!strcmp(cfg->custom[j].name, m->name)) replaced = 1;
    if (replaced) continue;
    out[n++] = (epode__sasl_entry){m->name, epode__config_mech_priority(cfg, m->name, m->priority),
                                   m->flags | builtins[i].needs, m, NULL};
  }
  qsort(out, n, sizeof *out, by_priority);
  return n;
}

/* ------------------------------------------------------------ public ctx */

const char *epode_sasl_ctx_authcid(const epode_sasl_ctx *c) { return c->p.authcid; }
const char *epode_sasl_ctx_authzid(const epode_sasl_ctx *c) { return c->p.authzid; }
const char *epode_sasl_ctx_password(const epode_sasl_ctx *c) { return c->p.password; }
const char *epode_sasl_ctx_domain(const epode_sasl_ctx *c) { return c->p.domain; }
const char *epode_sasl_ctx_token(const epode_sasl_ctx *c) { return c->p.oauth_token; }
int epode_sasl_ctx_tls_version(const epode_sasl_ctx *c) { return c->p.tls ? c->p.tls->version : 0; }
const epode_mem *epode_sasl_ctx_mem(const epode_sasl_ctx *c) { return c->p.mem; }
void *epode_sasl_ctx_ud(const epode_sasl_ctx *c) { return c->mech_ud; }

const unsigned char *epode_sasl_ctx_channel_binding(const epode_sasl_ctx *c, const char *type,
                                                    size_t *len) {
  const epode_tls_info *t = c->p.tls;
  const unsigned char *d = NULL;
  size_t n = 0;
  if (t && type) {
    if (!strcmp(type, "tls-unique")) {
      d = t->tls_unique;
      n = t->tls_unique_len;
    } else if (!strcmp(type, "tls-exporter")) {
      d = t->tls_exporter;
      n = t->tls_exporter_len;
    } else if (!strcmp(type, "tls-server-end-point")) {
      d = t->tls_server_end_point;
      n = t->tls_server_end_point_len;
    }
  }
  if (!n) d = NULL;
  if (len) *len = n;
  return d;
}

epode_err epode_sasl_ctx_random(const epode_sasl_ctx *c, unsigned char *buf, size_t len) {
  if (!buf) return EPODE_ERR_INVAL;
  return c->p.random(c->p.random_ud, buf, len) == 0 ? EPODE_OK : EPODE_ERR_SYS;
}

void epode_sasl_ctx_set_error(epode_sasl_ctx *c, const char *msg) {
  size_t n = msg ? strlen(msg) : 0;
  if (n >= sizeof c->err) n = sizeof c->err - 1;
  if (n) memcpy(c->err, msg, n);
  c->err[n] = '\0';
}

epode_err epode_sasl_out_append(epode_sasl_out *out, const void *data, size_t len) {
  if (!out || (!data && len)) return EPODE_ERR_INVAL;
  return epode__buf_append(&out->buf, data, len);
}
