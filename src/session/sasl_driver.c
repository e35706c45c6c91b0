/* Drives one SASL exchange (RFC 6120 §6): picks the mechanism, moves
 * base64 payloads between the wire and the mechanism, and turns every way it
 * can end into a precise failure.
 *
 * Selection is offered ∩ registered ∩ allow-list ∩ policy, highest priority
 * first (include/epode/sasl.h). After a <failure/> the next candidate is
 * tried only when the caller enabled fallback; a server that fails to prove
 * itself (bad SCRAM signature) ends the session whatever the setting. */
#include <stdio.h>
#include <string.h>

#include "epode/base64.h"
#include "session/session_int.h"
#include "util/alloc.h"

static void read_cb_types(epode_session *s, const epode_stanza *features, int *given,
                          int *complete) {
  size_t n = 0;
  *given = 0;
  *complete = 1;
  /* XEP-0440: <sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>. */
  epode_stanza *cb =
      epode_stanza_find_child(features, "sasl-channel-binding", "urn:xmpp:sasl-cb:0");
  if (cb) {
    *given = 1;
    for (epode_stanza *c = epode_stanza_find_child(cb, "channel-binding", NULL); c;
         c = epode_stanza_find_next(c, "channel-binding", NULL)) {
      const char *t = epode_stanza_get_attr(c, "type");
      if (!t) continue;
      if (strlen(t) >= sizeof s->sx->cb_types_buf[n] || n == 8) {
        *complete = 0; /* cannot be hashed as the server did (XEP-0474) */
        continue;
      }
      strcpy(s->sx->cb_types_buf[n], t);
      s->sx->cb_types[n] = s->sx->cb_types_buf[n];
      n++;
    }
  }
  s->sx->cb_types[n] = NULL;
}

/* The parameters every mechanism sees; they point into the session, which
 * outlives the exchange. */
static void fill_params(epode_session *s, epode__sasl_params *p, int cb_given, int offers_plus,
                        int lists_complete) {
  memset(&s->sx->tls, 0, sizeof s->sx->tls);
  s->sx->tls.version = s->tls_version;
  static const epode__cbind none;
  const epode__cbind *cb = s->cb ? s->cb : &none;
  s->sx->tls.tls_unique = cb->unique_len ? cb->unique : NULL;
  s->sx->tls.tls_unique_len = cb->unique_len;
  /* A server that offers -PLUS on TLS 1.3 without saying (XEP-0440) which
   * binding it accepts may know only tls-unique, undefined on TLS 1.3
   * (ejabberd 23.01 rejects tls-exporter): do not bind then, and say we
   * don't (gs2 'n') rather than risk a login that cannot succeed. */
  int exporter_ok = cb->exporter_len && !(s->tls_version >= 0x0304 && !cb_given && offers_plus);
  s->sx->tls.tls_exporter = exporter_ok ? cb->exporter : NULL;
  s->sx->tls.tls_exporter_len = exporter_ok ? cb->exporter_len : 0;
  s->sx->tls.tls_server_end_point = cb->endpoint_len ? cb->endpoint : NULL;
  s->sx->tls.tls_server_end_point_len = cb->endpoint_len;

  memset(p, 0, sizeof *p);
  p->mem = s->mem;
  p->authcid = epode_jid_local(s->jid);
  p->authzid = s->cfg->authzid;
  p->password = s->cfg->password;
  p->domain = epode_jid_domain(s->jid);
  p->tls = s->secure ? &s->sx->tls : NULL;
  p->server_cb_types = cb_given ? s->sx->cb_types : NULL;
  p->server_offers_plus = offers_plus;
  p->random = s->cfg->random_fn;
  p->random_ud = s->cfg->random_ud;
  p->scram_iter_min = s->cfg->limits[EPODE_LIMIT_SCRAM_ITER_MIN];
  p->scram_iter_max = s->cfg->limits[EPODE_LIMIT_SCRAM_ITER_MAX];
  p->oauth_token = s->cfg->oauth_token;
  p->have_client_cert = epode__config_has_client_cert(s->cfg);
  p->scram_keys = s->cfg->scram_keys;
  memset(&s->sx->derived, 0, sizeof s->sx->derived);
  p->scram_keys_out = &s->sx->derived;
  /* XEP-0474 needs the lists exactly as offered; if we could not keep them
   * whole, say "unknown" rather than risk a false downgrade alarm. */
  p->server_mechs = lists_complete ? s->sx->mech_names : NULL;
}

/* Whether cached SCRAM keys can stand in for the password: SCRAM of the
 * same hash (the -PLUS variant shares the keys). Salt and iterations are
 * the server's to confirm; the mechanism says precisely if they differ. */
static int keys_fit(const epode__sasl_params *p, const char *mech) {
  if (!p->scram_keys || strncmp(mech, "SCRAM-", 6) != 0) return 0;
  size_t n = strlen(p->scram_keys->hash);
  return !strncmp(mech + 6, p->scram_keys->hash, n) && (!mech[6 + n] || !strcmp(mech + 6 + n, "-PLUS"));
}

/* Why a registered mechanism the server offers is not usable, or NULL. */
static const char *unusable(const epode_session *s, const epode__sasl_entry *m,
                            const epode__sasl_params *p) {
  int plaintext_ok = (s->cfg->flags & EPODE_CFG_ALLOW_PLAINTEXT) != 0;
  if (!epode__config_mech_allowed(s->cfg, m->name)) return "not in the allow-list";
  if ((m->flags & EPODE_SASL_SENDS_SECRET) && !s->secure && !plaintext_ok)
    return "it would send a secret over an unencrypted stream";
  if ((m->flags & EPODE_SASL_NEEDS_TLS) && !s->secure && !plaintext_ok) return "it needs TLS";
  if (m->flags & EPODE_SASL_NEEDS_CB) {
    const unsigned char *d;
    size_t n;
    if (!epode__sasl_pick_cb(p, &d, &n))
      return "no channel-binding data of a type the server accepts";
  }
  if ((m->flags & EPODE_SASL_NEEDS_CERT) && !p->have_client_cert)
    return "no client certificate is configured";
  if ((m->flags & EPODE_SASL_NEEDS_TOKEN) && !p->oauth_token) return "no token is configured";
  if ((m->flags & EPODE_SASL_NEEDS_PASSWORD) && (!p->password || !p->authcid) &&
      !(p->authcid && keys_fit(p, m->name)))
    return p->authcid ? "no password is configured" : "the JID has no username";
  /* An account JID means "log in as that account", not anonymously. */
  if ((m->flags & EPODE_SASL_NO_CREDS) && !(m->flags & EPODE_SASL_NEEDS_CERT) && p->authcid &&
      !epode__config_mech_allowed_explicitly(s->cfg, m->name))
    return "the JID names an account (allow-list ANONYMOUS to use it anyway)";
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

/* ------------------------------------------------ one mechanism, either kind */

static epode_err mech_start(epode_session *s, epode__buf *out, int *has_initial) {
  const epode__sasl_entry *m = s->mech;
  if (m->builtin) return m->builtin->start(&s->mech_state, &s->sasl_ctx->p, out, has_initial);
  s->sasl_ctx->mech_ud = m->custom->ud;
  epode_sasl_out *o = (epode_sasl_out *)out; /* epode_sasl_out wraps an epode__buf */
  *has_initial = m->custom->client_first;
  return m->custom->start(s->sasl_ctx, &s->mech_state, o);
}

static epode_err mech_step(epode_session *s, const unsigned char *in, size_t len,
                           epode__buf *out) {
  const epode__sasl_entry *m = s->mech;
  if (m->builtin) return m->builtin->step(s->mech_state, in, len, out);
  return m->custom->step(s->sasl_ctx, s->mech_state, in, len, (epode_sasl_out *)out);
}

static epode_err mech_success(epode_session *s, const unsigned char *in, size_t len) {
  const epode__sasl_entry *m = s->mech;
  if (m->builtin) return m->builtin->success(s->mech_state, in, len);
  return m->custom->success(s->sasl_ctx, s->mech_state, in, len);
}

static const char *mech_err(const epode_session *s) {
  const char *msg = NULL;
  if (s->mech && s->mech->builtin && s->mech_state && s->mech->builtin->errmsg)
    msg = s->mech->builtin->errmsg(s->mech_state);
  else if (s->mech && s->mech->custom && s->sasl_ctx && s->sasl_ctx->err[0])
    msg = s->sasl_ctx->err;
  return msg ? msg : "no detail";
}

static void mech_end(epode_session *s) {
  if (s->mech && s->mech_state) {
    if (s->mech->builtin)
      s->mech->builtin->free(s->mech_state);
    else
      s->mech->custom->free(s->sasl_ctx, s->mech_state);
  }
  s->mech_state = NULL;
  s->mech = NULL;
}

void epode__sasl_clear(epode_session *s) {
  mech_end(s);
  epode__free(s->mem, s->sasl_ctx);
  s->sasl_ctx = NULL;
  if (s->sx) epode__wipe(s->sx, sizeof *s->sx); /* derived keys */
  epode__free(s->mem, s->sx);
  s->sx = NULL;
  s->n_cands = s->cand = 0;
}

void epode__cb_clear(epode_session *s) {
  if (!s->cb) return;
  epode__wipe(s->cb, sizeof *s->cb);
  epode__free(s->mem, s->cb);
  s->cb = NULL;
}

/* Starts candidate s->cand: <auth mechanism='…'>initial response</auth>. */
static epode_err start_candidate(epode_session *s) {
  s->mech = &s->sx->cands[s->cand];
  s->sasl_rounds = 0;
  s->sasl_ctx->err[0] = '\0';
  epode__free(s->mem, s->mech_name);
  /* The name is needed later (failure reports, the EXTERNAL identity check). */
  if (!(s->mech_name = epode__strdup(s->mem, s->mech->name)))
    return epode__session_fail(s, EPODE_ERR_NOMEM, NULL, NULL, NULL, "SASL");
  epode_sasl_out out;
  epode__buf_init(&out.buf, s->mem, EPODE__SASL_MAX_RESPONSE);
  int has_initial = 0;
  epode_err e = mech_start(s, &out.buf, &has_initial);
  if (e) {
    epode__buf_free(&out.buf);
    return epode__session_fail(s, e == EPODE_ERR_LIMIT ? EPODE_ERR_SASL_PROTOCOL : e, NULL, NULL,
                               NULL, "SASL %s could not start: %s", s->mech->name, mech_err(s));
  }
  if (s->mech->flags & EPODE_SASL_NEEDS_CB) {
    const unsigned char *d;
    size_t n;
    const char *type = epode__sasl_pick_cb(&s->sasl_ctx->p, &d, &n);
    epode__log(s->cfg, EPODE_LOG_INFO, "sasl", "authenticating with %s (channel binding %s)",
               s->mech->name, type ? type : "none");
  } else {
    epode__log(s->cfg, EPODE_LOG_INFO, "sasl", "authenticating with %s", s->mech->name);
  }
  e = send_sasl(s, "auth", s->mech->name, &out.buf, has_initial);
  if (out.buf.data) epode__wipe(out.buf.data, out.buf.len);
  epode__buf_free(&out.buf);
  if (e) return epode__session_fail(s, e, NULL, NULL, NULL, "cannot send <auth/>");
  s->neg = NEG_SASL;
  return EPODE_OK;
}

epode_err epode__sasl_begin(epode_session *s, const epode_stanza *features,
                            const epode_stanza *mechanisms) {
  int cb_given, cb_complete, offers_plus = 0, names_complete = 1;
  size_t n_names = 0;
  epode__sasl_clear(s);
  if (!(s->sx = epode__calloc(s->mem, sizeof *s->sx)))
    return epode__session_fail(s, EPODE_ERR_NOMEM, NULL, NULL, NULL, "SASL");
  read_cb_types(s, features, &cb_given, &cb_complete);
  for (epode_stanza *m = epode_stanza_find_child(mechanisms, "mechanism", NULL); m;
       m = epode_stanza_find_next(m, "mechanism", NULL)) {
    const char *name = epode_stanza_text(m);
    size_t nl = strlen(name);
    if (nl > 5 && !strcmp(name + nl - 5, "-PLUS")) offers_plus = 1;
    if (n_names < 32 && nl < sizeof s->sx->mech_names_buf[0]) {
      memcpy(s->sx->mech_names_buf[n_names], name, nl + 1);
      s->sx->mech_names[n_names] = s->sx->mech_names_buf[n_names];
      n_names++;
    } else {
      names_complete = 0;
    }
  }
  s->sx->mech_names[n_names] = NULL;
  if (s->scram_got) {
    epode__wipe(s->scram_got, sizeof *s->scram_got);
    epode__free(s->mem, s->scram_got);
    s->scram_got = NULL;
  }
  if (!(s->sasl_ctx = epode__calloc(s->mem, sizeof *s->sasl_ctx)))
    return epode__session_fail(s, EPODE_ERR_NOMEM, NULL, NULL, NULL, "SASL");
  fill_params(s, &s->sasl_ctx->p, cb_given, offers_plus, names_complete && cb_complete);

  /* Registered mechanisms, best first, kept if offered and usable. */
  epode__sasl_entry all[EPODE__SASL_MAX_ENTRIES];
  size_t n_all = epode__sasl_entries(s->cfg, all, EPODE__SASL_MAX_ENTRIES);
  char offered[512] = "", refused[1024] = "";
  for (epode_stanza *m = epode_stanza_find_child(mechanisms, "mechanism", NULL); m;
       m = epode_stanza_find_next(m, "mechanism", NULL)) {
    const char *name = epode_stanza_text(m);
    size_t used = strlen(offered);
    snprintf(offered + used, sizeof offered - used, "%s%s", used ? ", " : "", name);
  }
  s->n_cands = 0;
  for (size_t i = 0; i < n_all; i++) {
    int is_offered = 0;
    for (epode_stanza *m = epode_stanza_find_child(mechanisms, "mechanism", NULL); m;
         m = epode_stanza_find_next(m, "mechanism", NULL))
      if (!strcmp(epode_stanza_text(m), all[i].name)) is_offered = 1;
    if (!is_offered) continue;
    const char *why = unusable(s, &all[i], &s->sasl_ctx->p);
    if (why) {
      size_t used = strlen(refused);
      snprintf(refused + used, sizeof refused - used, "%s%s (%s)", used ? "; " : "", all[i].name,
               why);
      continue;
    }
    s->sx->cands[s->n_cands++] = all[i];
  }
  if (!s->n_cands)
    return epode__session_fail(s, EPODE_ERR_SASL_NOMECH, NULL, NULL, NULL,
                               "no usable SASL mechanism: the server offers [%s]%s%s", offered,
                               *refused ? "; not usable: " : "", refused);
  s->cand = 0;
  return start_candidate(s);
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

static epode_err handle_failure(epode_session *s, const epode_stanza *st) {
  const char *cond = NULL, *text = NULL;
  for (epode_stanza *c = epode_stanza_first_child(st); c; c = epode_stanza_next_sibling(c)) {
    if (epode_stanza_is_text(c)) continue;
    if (!strcmp(epode_stanza_name(c), "text"))
      text = epode_stanza_text(c);
    else if (!cond)
      cond = epode_stanza_name(c);
  }
  if (!cond) cond = "undefined-condition";
  /* Fallback, only when asked for, and never after an abort of ours or a
   * condition that no other mechanism can fix. */
  if (s->cfg->sasl_fallback && s->cand + 1 < s->n_cands && strcmp(cond, "aborted") != 0 &&
      strcmp(cond, "account-disabled") != 0 && strcmp(cond, "credentials-expired") != 0) {
    epode__log(s->cfg, EPODE_LOG_WARN, "sasl", "%s failed (%s%s%s); trying %s", s->mech->name,
               cond, text ? ": " : "", text ? text : "", s->sx->cands[s->cand + 1].name);
    mech_end(s);
    s->cand++;
    return start_candidate(s);
  }
  /* Some mechanisms learn more than the <failure/> says (OAUTHBEARER's JSON
   * error): add it. */
  const char *extra = mech_err(s);
  int has_extra = strcmp(extra, "no detail") != 0;
  return epode__session_fail(s, EPODE_ERR_AUTH, NULL, cond, text,
                             "authentication with %s failed: %s%s%s%s%s", s->mech->name, cond,
                             text ? ": " : "", text ? text : "", has_extra ? "; " : "",
                             has_extra ? extra : "");
}

epode_err epode__sasl_handle(epode_session *s, const epode_stanza *st, int *done) {
  const char *name = epode_stanza_name(st);
  *done = 0;
  if (!s->mech)
    return epode__session_fail(s, EPODE_ERR_SASL_PROTOCOL, NULL, NULL, NULL,
                               "unexpected SASL <%s/> with no exchange in progress", name);
  if (!strcmp(name, "failure")) return handle_failure(s, st);

  unsigned char *data;
  size_t len;
  epode_err de = decode_payload(s, st, &data, &len);
  if (de == EPODE_ERR_NOMEM)
    return epode__session_fail(s, de, NULL, NULL, NULL, "out of memory decoding SASL <%s/>", name);
  if (de != EPODE_OK)
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
    epode_sasl_out out;
    epode__buf_init(&out.buf, s->mem, EPODE__SASL_MAX_RESPONSE);
    e = mech_step(s, data, len, &out.buf);
    if (!e) e = send_sasl(s, "response", NULL, &out.buf, 1);
    if (out.buf.data) epode__wipe(out.buf.data, out.buf.len);
    epode__buf_free(&out.buf);
    epode__free(s->mem, data);
    if (e)
      return epode__session_fail(s, e == EPODE_ERR_LIMIT ? EPODE_ERR_SASL_PROTOCOL : e, NULL,
                                 NULL, NULL, "SASL %s: bad challenge: %s", s->mech->name,
                                 mech_err(s));
    return EPODE_OK;
  }
  if (!strcmp(name, "success")) {
    e = mech_success(s, data, len);
    epode__free(s->mem, data);
    if (e == EPODE_ERR_AUTH) /* the server's final message carried an error (SCRAM e=) */
      return epode__session_fail(s, e, NULL, NULL, NULL, "authentication with %s failed: %s",
                                 s->mech->name, mech_err(s));
    if (e)
      return epode__session_fail(s, e, NULL, NULL, NULL,
                                 "the server accepted %s but did not prove itself: %s",
                                 s->mech->name, mech_err(s));
    epode__log(s->cfg, EPODE_LOG_INFO, "sasl", "authenticated with %s", s->mech->name);
    if (s->sx->derived.key_len && (s->scram_got = epode__alloc(s->mem, sizeof *s->scram_got)))
      memcpy(s->scram_got, &s->sx->derived, sizeof *s->scram_got);
    epode__sasl_clear(s);
    epode__cb_clear(s); /* channel binding served its purpose */
    *done = 1;
    return EPODE_OK;
  }
  epode__free(s->mem, data);
  return epode__session_fail(s, EPODE_ERR_SASL_PROTOCOL, NULL, NULL, NULL,
                             "unexpected SASL element <%s/>", name);
}
