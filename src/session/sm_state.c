/* XEP-0198 resumption state to bytes and back, so a new process can resume
 * the stream an old one left behind.
 *
 * Format (text, versioned): the line "epode-sm-state 1", then records
 * "KEY LEN\n" followed by LEN bytes and "\n". Keys, in order: account
 * (bare JID), jid (bound full JID), framing, id (the server's stream id),
 * hin, hsent, hacked (decimal counts), then per unacknowledged stanza
 * "seq" (its number), "track" (present when the app asked for its delivery
 * report), "sid" (its id attribute, when tracked) and "data" (its bytes as
 * they were sent). Every length is checked against what is left;
 * anything else is rejected. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "epode_limits.h"
#include "session/session_int.h"
#include "util/alloc.h"

#define MAGIC "epode-sm-state 1\n"

static const char *framing_name(epode_framing f) {
  return f == EPODE_FRAMING_WEBSOCKET ? "websocket" : f == EPODE_FRAMING_BOSH ? "bosh" : "stream";
}

static epode_err rec(epode__buf *b, const char *key, const char *v, size_t n) {
  epode_err e = epode__buf_printf(b, "%s %zu\n", key, n);
  if (!e) e = epode__buf_append(b, v, n);
  if (!e) e = epode__buf_append(b, "\n", 1);
  return e;
}

static epode_err rec_u32(epode__buf *b, const char *key, uint32_t v) {
  char n[16];
  int len = snprintf(n, sizeof n, "%u", (unsigned)v);
  return rec(b, key, n, (size_t)len);
}

static epode_err rec_str(epode__buf *b, const char *key, const char *v) {
  return rec(b, key, v, strlen(v));
}

epode_err epode_session_save(const epode_session *s, char **out, size_t *len) {
  if (!s || !out || !len) return EPODE_ERR_INVAL;
  *out = NULL;
  *len = 0;
  /* IDLE too: a restored session not started yet can be saved again. */
  if (s->state != EPODE_STATE_READY && s->state != EPODE_STATE_DISCONNECTED &&
      s->state != EPODE_STATE_IDLE)
    return EPODE_ERR_STATE;
  if (!epode_session_resumable(s) || !s->bound_jid) return EPODE_ERR_NOTFOUND;
  epode__buf b;
  epode__buf_init(&b, s->mem, 0);
  epode_err e = epode__buf_append_str(&b, MAGIC);
  if (!e) e = rec_str(&b, "account", epode_jid_bare(s->jid));
  if (!e) e = rec_str(&b, "jid", s->bound_jid);
  /* The framing the kept bytes were written for (stream: no xmlns). */
  if (!e) e = rec_str(&b, "framing", framing_name(s->ua_head ? s->ua_framing : s->framing));
  if (!e) e = rec_str(&b, "id", s->sm_id);
  if (!e) e = rec_u32(&b, "hin", s->sm_h_in);
  if (!e) e = rec_u32(&b, "hsent", s->sm_h_sent);
  if (!e) e = rec_u32(&b, "hacked", s->sm_h_acked);
  for (const epode__unacked *u = s->ua_head; u && !e; u = u->next) {
    if (!u->len) continue;
    e = rec_u32(&b, "seq", u->seq);
    if (!e && u->fn) e = rec_str(&b, "track", "1");
    if (!e && u->id) e = rec_str(&b, "sid", u->id);
    if (!e) e = rec(&b, "data", u->data, u->len);
  }
  if (e) {
    epode__buf_free(&b);
    return e;
  }
  *out = (char *)b.data;
  *len = b.len;
  return EPODE_OK;
}

/* ------------------------------------------------------------------ restore */

typedef struct {
  const char *p, *end;
  char key[16];
  const char *v;
  size_t n;
} reader;

/* Next record; 1 on success, 0 at the end, -1 if damaged. */
static int next_rec(reader *r) {
  if (r->p == r->end) return 0;
  size_t k = 0;
  while (r->p < r->end && *r->p != ' ' && k < sizeof r->key - 1) {
    char c = *r->p++;
    if (c < 'a' || c > 'z') return -1;
    r->key[k++] = c;
  }
  r->key[k] = '\0';
  if (!k || r->p == r->end || *r->p++ != ' ') return -1;
  size_t n = 0, digits = 0;
  while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
    if (++digits > 10 || (digits == 2 && n == 0)) return -1; /* canonical lengths only */
    n = n * 10 + (size_t)(*r->p++ - '0');
  }
  if (!digits || r->p == r->end || *r->p++ != '\n') return -1;
  if ((size_t)(r->end - r->p) < n + 1 || r->p[n] != '\n') return -1;
  r->v = r->p;
  r->n = n;
  r->p += n + 1;
  return 1;
}

static int is(const reader *r, const char *key) { return !strcmp(r->key, key); }

static int get_u32(const reader *r, uint32_t *out) {
  if (!r->n || r->n > 10 || (r->n > 1 && r->v[0] == '0')) return -1; /* canonical only */
  uint64_t x = 0;
  for (size_t i = 0; i < r->n; i++) {
    if (r->v[i] < '0' || r->v[i] > '9') return -1;
    x = x * 10 + (uint64_t)(r->v[i] - '0');
  }
  if (x > 0xFFFFFFFFu) return -1;
  *out = (uint32_t)x;
  return 0;
}

static int eq(const reader *r, const char *s) { return strlen(s) == r->n && !memcmp(r->v, s, r->n); }

/* Text without NULs (ids, JIDs). */
static int clean_text(const reader *r, size_t max) {
  return r->n && r->n <= max && !memchr(r->v, '\0', r->n);
}

epode_err epode_session_restore(epode_session *s, const void *data, size_t len,
                                epode_delivery_fn fn, void *ud) {
  if (!s || !data) return EPODE_ERR_INVAL;
  if (s->state != EPODE_STATE_IDLE || s->sm_enabled || s->ua_head) return EPODE_ERR_STATE;
  const char *p = data;
  if (len < sizeof MAGIC - 1 || memcmp(p, MAGIC, sizeof MAGIC - 1) != 0) {
    epode__log(s->cfg, EPODE_LOG_WARN, "sm", "restore: not a saved epode session state");
    return EPODE_ERR_INVAL;
  }
  reader r = {p + sizeof MAGIC - 1, p + len, {0}, NULL, 0};
  static const char *const head[] = {"account", "jid", "framing", "id", "hin", "hsent", "hacked"};
  char *jid = NULL, *id = NULL;
  uint32_t hin = 0, hsent = 0, hacked = 0;
  epode_framing framing = EPODE_FRAMING_STREAM;
  epode__unacked *list = NULL, **tail = &list;
  size_t count = 0;
  const char *why = NULL;
  epode_err e = EPODE_OK;
  for (size_t i = 0; i < sizeof head / sizeof *head && !why; i++) {
    if (next_rec(&r) != 1 || !is(&r, head[i])) {
      why = "damaged header";
      break;
    }
    switch (i) {
    case 0:
      if (!eq(&r, epode_jid_bare(s->jid))) why = "it belongs to another account";
      break;
    case 1:
      if (!clean_text(&r, EPODE_MAX_JID_BYTES)) why = "bad JID";
      else if (!(jid = epode__strndup(s->mem, r.v, r.n))) e = EPODE_ERR_NOMEM;
      break;
    case 2:
      if (eq(&r, "stream")) framing = EPODE_FRAMING_STREAM;
      else if (eq(&r, "websocket")) framing = EPODE_FRAMING_WEBSOCKET;
      else if (eq(&r, "bosh")) framing = EPODE_FRAMING_BOSH;
      else why = "unknown framing";
      break;
    case 3:
      if (!clean_text(&r, 1024)) why = "bad stream id";
      else if (!(id = epode__strndup(s->mem, r.v, r.n))) e = EPODE_ERR_NOMEM;
      break;
    case 4: if (get_u32(&r, &hin)) why = "bad count"; break;
    case 5: if (get_u32(&r, &hsent)) why = "bad count"; break;
    case 6: if (get_u32(&r, &hacked)) why = "bad count"; break;
    }
    if (e) break;
  }
  /* The stanzas: numbers strictly increasing in (hacked, hsent]. */
  uint32_t last = hacked;
  while (!why && !e) {
    int k = next_rec(&r);
    if (k == 0) break;
    uint32_t seq;
    if (k < 0 || !is(&r, "seq") || get_u32(&r, &seq)) {
      why = "damaged stanza record";
      break;
    }
    if ((uint32_t)(seq - last) == 0 || (uint32_t)(seq - last) > (uint32_t)(hsent - last)) {
      why = "stanza numbers out of order";
      break;
    }
    last = seq;
    if (++count > s->cfg->limits[EPODE_LIMIT_UNACKED]) {
      why = "more stanzas than EPODE_LIMIT_UNACKED";
      break;
    }
    const char *sid = NULL;
    size_t sid_n = 0;
    int tracked = 0;
    if (next_rec(&r) != 1) {
      why = "damaged stanza record";
      break;
    }
    if (is(&r, "track")) {
      tracked = 1;
      if (!eq(&r, "1") || next_rec(&r) != 1) {
        why = "damaged stanza record";
        break;
      }
    }
    if (is(&r, "sid")) {
      if (!tracked || !clean_text(&r, 1024)) {
        why = "bad stanza id";
        break;
      }
      sid = r.v;
      sid_n = r.n;
      if (next_rec(&r) != 1) {
        why = "damaged stanza record";
        break;
      }
    }
    if (!is(&r, "data") || !r.n) {
      why = "damaged stanza record";
      break;
    }
    epode__unacked *u = epode__alloc(s->mem, sizeof *u + r.n);
    if (!u) {
      e = EPODE_ERR_NOMEM;
      break;
    }
    memset(u, 0, sizeof *u);
    if (sid && fn && tracked && !(u->id = epode__strndup(s->mem, sid, sid_n))) {
      epode__free(s->mem, u);
      e = EPODE_ERR_NOMEM;
      break;
    }
    u->seq = seq;
    u->fn = tracked ? fn : NULL;
    u->ud = tracked ? ud : NULL;
    u->len = r.n;
    memcpy(u->data, r.v, r.n);
    *tail = u;
    tail = &u->next;
  }
  if (!why && !e && (uint32_t)(hsent - hacked) < count) why = "counts do not match the stanzas";
  /* The session takes the saved framing; the connection sets its own when
   * it connects, and kept bytes written on a stream get their namespace
   * declared if they go out framed. */
  if (!why && !e) e = epode_session_set_framing(s, framing);
  if (why || e) {
    if (why)
      epode__log(s->cfg, EPODE_LOG_WARN, "sm", "restore: rejected saved state: %s", why);
    while (list) {
      epode__unacked *next = list->next;
      epode__free(s->mem, list->id);
      epode__free(s->mem, list);
      list = next;
    }
    epode__free(s->mem, jid);
    epode__free(s->mem, id);
    return e ? e : EPODE_ERR_INVAL;
  }
  epode__free(s->mem, s->bound_jid);
  s->bound_jid = jid;
  epode__free(s->mem, s->sm_id);
  s->sm_id = id;
  s->sm_enabled = 1;
  s->sm_resume_ok = 1;
  s->sm_max = 0;
  s->lost_at = 0;
  s->sm_h_in = hin;
  s->sm_h_sent = hsent;
  s->sm_h_acked = hacked;
  s->ua_head = list;
  s->ua_count = count;
  s->ua_framing = framing;
  s->ua_tail = NULL;
  for (epode__unacked *u = list; u; u = u->next) s->ua_tail = u;
  epode__log(s->cfg, EPODE_LOG_INFO, "sm", "restored stream %s with %zu unacknowledged stanza%s",
             id, count, count == 1 ? "" : "s");
  return EPODE_OK;
}
