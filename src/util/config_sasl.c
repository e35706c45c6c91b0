/* The SASL part of the configuration: allow-list, priorities, custom
 * mechanisms, and the credentials other than the password. */
#include <stdio.h>
#include <string.h>

#include "epode/sasl.h"
#include "sasl/sasl.h"
#include "util/alloc.h"
#include "util/config_int.h"

#define MAX_MECH_NAME 20 /* RFC 4422 §3.1 */

/* RFC 4422 §3.1: 1..20 of A-Z 0-9 - _ (we accept lower case and upcase it
 * nowhere: names compare exactly, as servers send them). */
static int mech_name_ok(const char *n, size_t len) {
  if (len < 1 || len > MAX_MECH_NAME) return 0;
  for (size_t i = 0; i < len; i++) {
    char ch = n[i];
    if (!((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
      return 0;
  }
  return 1;
}

epode_err epode_config_set_mechanisms(epode_config *c, const char *list) {
  if (!c) return EPODE_ERR_INVAL;
  if (!list || !*list) {
    epode__free(&c->mem, c->sasl_allow);
    c->sasl_allow = NULL;
    return EPODE_OK;
  }
  /* Stored as ",A,B," so a lookup is one strstr of ",NAME,". */
  size_t n = strlen(list);
  char *norm = epode__alloc(&c->mem, n + 3);
  if (!norm) return EPODE_ERR_NOMEM;
  size_t o = 0;
  norm[o++] = ',';
  const char *p = list;
  for (;;) {
    while (*p == ' ') p++;
    const char *end = p;
    while (*end && *end != ',') end++;
    const char *trim = end;
    while (trim > p && trim[-1] == ' ') trim--;
    if (!mech_name_ok(p, (size_t)(trim - p))) {
      epode__free(&c->mem, norm);
      return EPODE_ERR_INVAL;
    }
    memcpy(norm + o, p, (size_t)(trim - p));
    o += (size_t)(trim - p);
    norm[o++] = ',';
    if (!*end) break;
    p = end + 1;
  }
  norm[o] = '\0';
  epode__free(&c->mem, c->sasl_allow);
  c->sasl_allow = norm;
  return EPODE_OK;
}

int epode__config_mech_allowed(const epode_config *c, const char *name) {
  if (!c->sasl_allow) return 1;
  char key[MAX_MECH_NAME + 3];
  if (strlen(name) > MAX_MECH_NAME) return 0;
  snprintf(key, sizeof key, ",%s,", name);
  return strstr(c->sasl_allow, key) != NULL;
}

int epode__config_mech_allowed_explicitly(const epode_config *c, const char *name) {
  return c->sasl_allow && epode__config_mech_allowed(c, name);
}

int epode__config_mech_priority(const epode_config *c, const char *name, int dflt) {
  for (size_t i = 0; i < c->n_prios; i++)
    if (!strcmp(c->prios[i].name, name)) return c->prios[i].priority;
  return dflt;
}

static epode_sasl_mechanism *find_custom(const epode_config *c, const char *name) {
  for (size_t i = 0; i < c->n_custom; i++)
    if (!strcmp(c->custom[i].name, name)) return &c->custom[i];
  return NULL;
}

epode_err epode_config_set_mechanism_priority(epode_config *c, const char *name, int priority) {
  if (!c || !name || !mech_name_ok(name, strlen(name))) return EPODE_ERR_INVAL;
  epode_sasl_mechanism *m = find_custom(c, name);
  if (m) {
    m->priority = priority;
    return EPODE_OK;
  }
  if (!epode__sasl_builtin_find(name)) return EPODE_ERR_NOTFOUND;
  for (size_t i = 0; i < c->n_prios; i++) {
    if (!strcmp(c->prios[i].name, name)) {
      c->prios[i].priority = priority;
      return EPODE_OK;
    }
  }
  epode__prio *p = epode__realloc(&c->mem, c->prios, (c->n_prios + 1) * sizeof *p);
  if (!p) return EPODE_ERR_NOMEM;
  c->prios = p;
  snprintf(p[c->n_prios].name, sizeof p[c->n_prios].name, "%s", name);
  p[c->n_prios].priority = priority;
  c->n_prios++;
  return EPODE_OK;
}

epode_err epode_config_add_mechanism(epode_config *c, const epode_sasl_mechanism *mech) {
  if (!c || !mech || mech->version != EPODE_SASL_MECHANISM_VERSION || !mech->name ||
      !mech_name_ok(mech->name, strlen(mech->name)) || !mech->start || !mech->step ||
      !mech->success || !mech->free)
    return EPODE_ERR_INVAL;
  epode_sasl_mechanism *m = find_custom(c, mech->name);
  if (m) {
    *m = *mech;
    return EPODE_OK;
  }
  m = epode__realloc(&c->mem, c->custom, (c->n_custom + 1) * sizeof *m);
  if (!m) return EPODE_ERR_NOMEM;
  c->custom = m;
  c->custom[c->n_custom++] = *mech;
  return EPODE_OK;
}

epode_err epode_config_set_sasl_fallback(epode_config *c, int enable) {
  if (!c) return EPODE_ERR_INVAL;
  c->sasl_fallback = enable != 0;
  return EPODE_OK;
}

static epode_err set(epode_config *c, char **field, const char *v, int secret) {
  char *d = NULL;
  if (v && !(d = epode__strdup(&c->mem, v))) return EPODE_ERR_NOMEM;
  if (secret)
    epode__free_secret(&c->mem, *field);
  else
    epode__free(&c->mem, *field);
  *field = d;
  return EPODE_OK;
}

epode_err epode_config_set_authzid(epode_config *c, const char *authzid) {
  if (!c || (authzid && !*authzid)) return EPODE_ERR_INVAL;
  return set(c, &c->authzid, authzid, 0);
}

epode_err epode_config_set_oauth_token(epode_config *c, const char *token) {
  if (!c || (token && !*token)) return EPODE_ERR_INVAL;
  return set(c, &c->oauth_token, token, 1);
}

epode_err epode_config_set_client_cert(epode_config *c, const char *cert, const char *key) {
  if (!c || (cert && !*cert) || (key && !*key) || (!cert && key)) return EPODE_ERR_INVAL;
  epode_err e = set(c, &c->client_cert, cert, 0);
  if (!e) e = set(c, &c->client_key, key, 0);
  if (!e && cert) { /* one kind of certificate at a time */
    set(c, &c->client_p12, NULL, 0);
    set(c, &c->client_p12_pw, NULL, 1);
  }
  epode__config_tls_changed(c);
  return e;
}

epode_err epode_config_set_client_pkcs12(epode_config *c, const char *p12, const char *pw) {
  if (!c || (p12 && !*p12) || (!p12 && pw)) return EPODE_ERR_INVAL;
  epode_err e = set(c, &c->client_p12, p12, 0);
  if (!e) e = set(c, &c->client_p12_pw, pw, 1);
  if (!e && p12) {
    set(c, &c->client_cert, NULL, 0);
    set(c, &c->client_key, NULL, 0);
  }
  epode__config_tls_changed(c);
  return e;
}

int epode__config_has_client_cert(const epode_config *c) {
  return c->client_cert != NULL || c->client_p12 != NULL;
}

size_t epode_config_list_mechanisms(const epode_config *c, char *buf, size_t size) {
  epode__sasl_entry all[EPODE__SASL_MAX_ENTRIES];
  size_t n = epode__sasl_entries(c, all, EPODE__SASL_MAX_ENTRIES);
  size_t need = 0;
  int fits = buf && size;
  if (fits) buf[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    size_t len = strlen(all[i].name) + (i ? 1 : 0);
    fits = fits && need + len < size; /* whole names only, never a prefix */
    if (fits) {
      if (i) buf[need] = ',';
      memcpy(buf + need + (i ? 1 : 0), all[i].name, strlen(all[i].name) + 1);
    }
    need += len;
  }
  return need;
}

epode_err epode_config_set_scram_keys(epode_config *c, const epode_scram_keys *keys) {
  if (!c) return EPODE_ERR_INVAL;
  if (keys) {
    size_t want = !strcmp(keys->hash, "SHA-1")     ? 20
                  : !strcmp(keys->hash, "SHA-256") ? 32
                  : !strcmp(keys->hash, "SHA-512") ? 64
                                                   : 0;
    if (!want || keys->key_len != want || !keys->salt_len ||
        keys->salt_len > EPODE_SCRAM_MAX_SALT || !keys->iterations)
      return EPODE_ERR_INVAL;
  }
  if (c->scram_keys) {
    epode__wipe(c->scram_keys, sizeof *c->scram_keys);
    if (!keys) {
      epode__free(&c->mem, c->scram_keys);
      c->scram_keys = NULL;
      return EPODE_OK;
    }
  } else if (keys) {
    if (!(c->scram_keys = epode__alloc(&c->mem, sizeof *c->scram_keys))) return EPODE_ERR_NOMEM;
  }
  if (keys) memcpy(c->scram_keys, keys, sizeof *keys);
  return EPODE_OK;
}
