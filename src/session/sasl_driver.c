/* Drives one SASL exchange (RFC 6120 §6): picks the mechanism, moves
 * base64 payloads between the wire and the mechanism, and turns every way it
 * can end into a precise failure. */
#include <stdio.h>
#include <string.h>

#include "epode/base64.h"
#include "session/session_int.h"
#include "util/alloc.h"

/* Built-in mechanisms, any order: selection sorts by priority. */
static const epode__sasl_mech *const builtin[] = {
    &epode__sasl_scram_sha512_plus, &epode__sasl_scram_sha256_plus, &epode__sasl_scram_sha1_plus,
    &epode__sasl_scram_sha512,      &epode__sasl_scram_sha256,      &epode__sasl_scram_sha1,
    &epode__sasl_plain,
};

#define MAX_CB_TYPES 8

typedef struct {
  const char *types[MAX_CB_TYPES + 1];
  int given;
} cb_types;

static void read_cb_types(const epode_stanza *features, cb_types *out) {
  memset(out, 0, sizeof *out);
  /* XEP-0440: <sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>. */
  epode_stanza *cb = epode_stanza_find_child(features, "sasl-channel-binding", "urn:xmpp:sasl-cb:0");
  if (!cb) return;
  out->given = 1;
  size_t n = 0;
  for (epode_stanza *c = epode_stanza_find_child(cb, "channel-binding", NULL);
       c && n < MAX_CB_TYPES; c = epode_stanza_find_next(c, "channel-binding", NULL)) {
    const char *t = epode_stanza_get_attr(c, "type");
    if (t) out->types[n++] = t;
  }
}

static int has_cb_data(const epode_session *s) {
  return s->cb_unique_len || s->cb_exporter_len || s->cb_endpoint_len;
}

/* Why a mechanism offered by the server is not usable, or NULL if it is. */
static const char *unusable(const epode_session *s, const epode__sasl_mech *m) {
  int plaintext_ok = (s->cfg->flags & EPODE_CFG_ALLOW_PLAINTEXT) != 0;
  if ((m->flags & EPODE__SASL_SENDS_SECRET) && !s->secure && !plaintext_ok)
    return "it would send the password over an unencrypted stream";
  if ((m->flags & EPODE__SASL_NEEDS_TLS) && !s->secure && !plaintext_ok)
    return "it needs TLS";
  if ((m->flags & EPODE__SASL_NEEDS_CB) && !has_cb_data(s))
    return "no channel-binding data is available";
  if ((m->flags & EPODE__SASL_NEEDS_CERT)) return "no client certificate is configured";
  if (!(m->flags & EPODE__SASL_NO_CREDS) && (!s->cfg->password || !epode_jid_local(s->jid)))
    return "no password (or no username) is configured";
  return NULL;
}

static epode_err send_sasl(epode_session *s, const char *elem, const char *mech,
                           const epode__buf *payload, int has_payload) {
  epode__buf b;
  epode__buf_init(&b, s->mem, 0);
  epode_err e = epode__buf_printf(&b, "<%s xmlns='" EPODE_NS_SASL "'", elem);
  if (!e && mech) e = epode__buf_printf(&b, " mechanism='%s'", mech);
  size_t redact_from = 0, redact_to = 0;
  if (!e && has_payload) {
    e = epode__buf_append_str(&b, ">");
    redact_from = b.len;
    if (!e && payload->len) {
      char *b64;
      size_t n;
      e = epode_base64_encode(s->mem, payload->data, payload->len, &b64, &n);
      if (!e) {
        e = epode__buf_append(&b, b64, n);
        epode__wipe(b64, n);
        epode__free(s->mem, b64);
      }
    } else if (!e) {
      e = epode__buf_append_str(&b, "="); /* empty response, RFC 6120 §6.4.2 */
    }
    redact_to = b.len;
    if (!e) e = epode__buf_printf(&b, "</%s>", elem);
  } else if (!e) {
    e = epode__buf_append_str(&b, "/>");
  }
  if (!e) e = epode__session_write(s, b.data, b.len);
  if (!e && EPODE__LOG_ON(s->cfg, EPODE_LOG_TRAFFIC)) {
    if (redact_to > redact_from)
      epode__log(s->cfg, EPODE_LOG_TRAFFIC, "xml-out", "%.*s[redacted]%s", (int)redact_from,
                 b.data, b.data + redact_to);
    else
      epode__session_log_out(s, b.data, b.len);
  }
  if (b.data) epode__wipe(b.data, b.len);
  epode__buf_free(&b);
  return e;
}

void epode__sasl_clear(epode_session *s) {
  if (s->mech && s->mech_state) s->mech->free(s->mech_state);
  s->mech_state = NULL;
  s->mech = NULL;
}

static const char *mech_err(const epode_session *s) {
  const char *m = s->mech && s->mech_state && s->mech->errmsg ? s->mech->errmsg(s->mech_state)
                                                                : NULL;
  return m ? m : "no detail";
}

epode_err epode__sasl_begin(epode_session *s, const epode_stanza *features,
                            const epode_stanza *mechanisms) {
  cb_types cbt;
  read_cb_types(features, &cbt);

  /* Offered ∩ built-in ∩ policy, highest priority first. */
  const epode__sasl_mech *best = NULL;
  int offers_plus = 0;
  char offered[512] = "", refused[768] = "";
  for (epode_stanza *m = epode_stanza_find_child(mechanisms, "mechanism", NULL); m;
       m = epode_stanza_find_next(m, "mechanism", NULL)) {
    const char *name = epode_stanza_text(m);
    size_t nl = strlen(name);
    if (nl > 4 && !strcmp(name + nl - 5, "-PLUS")) offers_plus = 1;
    if (strlen(offered) + nl + 3 < sizeof offered) {
      if (*offered) strcat(offered, ", ");
      strcat(offered, name);
    }
    for (size_t i = 0; i < sizeof builtin / sizeof *builtin; i++) {
      const epode__sasl_mech *cand = builtin[i];
      if (strcmp(cand->name, name) != 0) continue;
      const char *why = unusable(s, cand);
      if (why) {
        size_t used = strlen(refused);
        snprintf(refused + used, sizeof refused - used, "%s%s (%s)", used ? "; " : "", name, why);
        continue;
      }
      if (!best || cand->priority > best->priority) best = cand;
    }
  }
  if (!best)
    return epode__session_fail(s, EPODE_ERR_SASL_NOMECH, NULL, NULL, NULL,
                               "no usable SASL mechanism: the server offers [%s]%s%s", offered,
                               *refused ? "; not usable: " : "", refused);

  epode_tls_info tls;
  memset(&tls, 0, sizeof tls);
  tls.version = s->tls_version;
  tls.tls_unique = s->cb_unique_len ? s->cb_unique : NULL;
  tls.tls_unique_len = s->cb_unique_len;
  tls.tls_exporter = s->cb_exporter_len ? s->cb_exporter : NULL;
  tls.tls_exporter_len = s->cb_exporter_len;
  tls.tls_server_end_point = s->cb_endpoint_len ? s->cb_endpoint : NULL;
  tls.tls_server_end_point_len = s->cb_endpoint_len;

  epode__sasl_params p;
  memset(&p, 0, sizeof p);
  p.mem = s->mem;
  p.authcid = epode_jid_local(s->jid);
  p.password = s->cfg->password;
  p.domain = epode_jid_domain(s->jid);
  p.tls = s->secure ? &tls : NULL;
  p.server_cb_types = cbt.given ? cbt.types : NULL;
  p.server_offers_plus = offers_plus;
  p.random = s->cfg->random_fn;
  p.random_ud = s->cfg->random_ud;
  p.scram_iter_min = s->cfg->limits[EPODE_LIMIT_SCRAM_ITER_MIN];
  p.scram_iter_max = s->cfg->limits[EPODE_LIMIT_SCRAM_ITER_MAX];

  epode__free(s->mem, s->mech_name);
  s->mech_name = epode__strdup(s->mem, best->name);
  s->mech = best;
  s->sasl_rounds = 0;
  epode__buf out;
  epode__buf_init(&out, s->mem, 0);
  int has_initial = 0;
  epode_err e = best->start(&s->mech_state, &p, &out, &has_initial);
  if (e) {
    epode__buf_free(&out);
    return epode__session_fail(s, e, NULL, NULL, NULL, "SASL %s could not start: %s", best->name,
                               mech_err(s));
  }
  epode__log(s->cfg, EPODE_LOG_INFO, "sasl", "authenticating with %s", best->name);
  e = send_sasl(s, "auth", best->name, &out, has_initial);
  if (out.data) epode__wipe(out.data, out.len);
  epode__buf_free(&out);
  if (e) return epode__session_fail(s, e, NULL, NULL, NULL, "cannot send <auth/>");
  s->neg = NEG_SASL;
  return EPODE_OK;
}

/* Decodes the element's base64 text; "=" or nothing is empty. */
static epode_err decode_payload(epode_session *s, const epode_stanza *st, unsigned char **out,
                                size_t *len) {
  const char *txt = epode_stanza_text(st);
  size_t n = epode_stanza_text_len(st);
  *out = NULL;
  *len = 0;
  if (n == 0 || (n == 1 && txt[0] == '=')) return EPODE_OK;
  return epode_base64_decode(s->mem, txt, n, out, len);
}

epode_err epode__sasl_handle(epode_session *s, const epode_stanza *st, int *done) {
  const char *name = epode_stanza_name(st);
  *done = 0;
  if (!s->mech || !s->mech_state)
    return epode__session_fail(s, EPODE_ERR_SASL_PROTOCOL, NULL, NULL, NULL,
                               "unexpected SASL <%s/> with no exchange in progress", name);

  if (!strcmp(name, "failure")) {
    const char *cond = NULL, *text = NULL;
    for (epode_stanza *c = epode_stanza_first_child(st); c; c = epode_stanza_next_sibling(c)) {
      if (epode_stanza_is_text(c)) continue;
      if (!strcmp(epode_stanza_name(c), "text"))
        text = epode_stanza_text(c);
      else if (!cond)
        cond = epode_stanza_name(c);
    }
    if (!cond) cond = "undefined-condition";
    return epode__session_fail(s, EPODE_ERR_AUTH, NULL, cond, text,
                               "authentication with %s failed: %s%s%s", s->mech->name, cond,
                               text ? ": " : "", text ? text : "");
  }

  unsigned char *data;
  size_t len;
  if (decode_payload(s, st, &data, &len) != EPODE_OK)
    return epode__session_fail(s, EPODE_ERR_SASL_PROTOCOL, NULL, NULL, NULL,
                               "the server's SASL <%s/> is not valid base64", name);

  epode_err e;
  if (!strcmp(name, "challenge")) {
    if (++s->sasl_rounds > s->cfg->limits[EPODE_LIMIT_SASL_ROUNDS]) {
      epode__free(s->mem, data);
      return epode__session_fail(s, EPODE_ERR_SASL_PROTOCOL, NULL, NULL, NULL,
                                 "the server sent more than %u SASL challenges",
                                 (unsigned)s->cfg->limits[EPODE_LIMIT_SASL_ROUNDS]);
    }
    epode__buf out;
    epode__buf_init(&out, s->mem, 0);
    e = s->mech->step(s->mech_state, data, len, &out);
    if (!e) e = send_sasl(s, "response", NULL, &out, 1);
    if (out.data) epode__wipe(out.data, out.len);
    epode__buf_free(&out);
    epode__free(s->mem, data);
    if (e)
      return epode__session_fail(s, e, NULL, NULL, NULL, "SASL %s: bad challenge: %s",
                                 s->mech->name, mech_err(s));
    return EPODE_OK;
  }
  if (!strcmp(name, "success")) {
    e = s->mech->success(s->mech_state, data, len);
    epode__free(s->mem, data);
    if (e == EPODE_ERR_AUTH) /* the server's final message carried an error (SCRAM e=) */
      return epode__session_fail(s, e, NULL, NULL, NULL, "authentication with %s failed: %s",
                                 s->mech->name, mech_err(s));
    if (e)
      return epode__session_fail(s, e, NULL, NULL, NULL,
                                 "the server accepted %s but did not prove itself: %s",
                                 s->mech->name, mech_err(s));
    epode__log(s->cfg, EPODE_LOG_INFO, "sasl", "authenticated with %s", s->mech->name);
    epode__sasl_clear(s);
    *done = 1;
    return EPODE_OK;
  }
  epode__free(s->mem, data);
  return epode__session_fail(s, EPODE_ERR_SASL_PROTOCOL, NULL, NULL, NULL,
                             "unexpected SASL element <%s/>", name);
}
