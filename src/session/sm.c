/* XEP-0198 stream management: <enable/>, acknowledgements both ways, a
 * delivery report for every tracked stanza, and resumption — after a
 * broken connection the stream goes on where it stopped (<resume/>), and
 * whatever the server had not acknowledged is sent again, on the resumed
 * stream or, when resuming is refused, on a fresh one.
 *
 * Counting: our outbound count starts when <enable/> is written (stanzas
 * written after it count, even before <enabled/> arrives); our inbound
 * count starts at <enabled/>. A stanza is a message, presence or iq. Every
 * counted stanza is kept (its bytes) until the server's h covers it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "session/session_int.h"
#include "util/alloc.h"

#define NS_SM "urn:xmpp:sm:3"

void epode__sm_features(epode_session *s, const epode_stanza *features) {
  s->sm_offered = epode_stanza_find_child(features, "sm", NS_SM) != NULL;
}

int epode__sm_counting(const epode_session *s) { return s->sm_enabling || s->sm_enabled; }

static epode_err write_nonza(epode_session *s, const char *xml) {
  size_t n = strlen(xml);
  epode_err e = epode__session_write(s, xml, n);
  if (!e) epode__session_log_out(s, xml, n);
  return e;
}

static void free_node(epode_session *s, epode__unacked *u) {
  epode__free(s->mem, u->id);
  epode__free(s->mem, u);
}

epode_err epode__sm_enable(epode_session *s) {
  if (!s->sm_offered || s->cfg->sm_off || s->sm_enabling || s->sm_enabled) return EPODE_OK;
  epode_err e = write_nonza(s, "<enable xmlns='" NS_SM "' resume='true'/>");
  if (e) return e;
  s->sm_enabling = 1;
  s->sm_ack_due = 0;
  s->sm_h_in = s->sm_h_sent = s->sm_h_acked = 0;
  s->sm_since_r = 0;
  return EPODE_OK;
}

static epode_err request_ack(epode_session *s) {
  s->sm_since_r = 0;
  s->sm_r_due = 0;
  /* A server that still talks but no longer answers <r/> has stopped
   * processing what we send: bounded like a silent one (keepalive). */
  if (!s->sm_ack_due && s->cfg->ka_idle_ms && s->cfg->ka_timeout_ms)
    s->sm_ack_due = s->now + s->cfg->ka_timeout_ms;
  return write_nonza(s, "<r xmlns='" NS_SM "'/>");
}

/* After a stanza was counted: ask for an ack as the policy says. */
static epode_err ack_policy(epode_session *s) {
  uint32_t every_ms = s->cfg->sm_every_ms;
  if (every_ms && !s->sm_r_due) s->sm_r_due = s->now + every_ms;
  if (s->cfg->sm_every_n && ++s->sm_since_r >= s->cfg->sm_every_n) return request_ack(s);
  return EPODE_OK;
}

static void append(epode_session *s, epode__unacked *u) {
  if (s->ua_tail)
    s->ua_tail->next = u;
  else
    s->ua_head = u;
  s->ua_tail = u;
  s->ua_count++;
}

epode_err epode__sm_sent(epode_session *s, epode_delivery_fn fn, void *ud, const char *id,
                         const char *data, size_t len) {
  int counting = epode__sm_counting(s);
  if (counting) s->sm_h_sent++;
  if (fn || counting) {
    size_t keep = counting ? len : 0;
    epode__unacked *u = epode__alloc(s->mem, sizeof *u + keep);
    if (!u) return EPODE_ERR_NOMEM;
    memset(u, 0, sizeof *u);
    if (fn && id && !(u->id = epode__strdup(s->mem, id))) {
      epode__free(s->mem, u);
      return EPODE_ERR_NOMEM;
    }
    u->seq = s->sm_h_sent;
    u->fn = fn;
    u->ud = ud;
    u->len = keep;
    if (keep) memcpy(u->data, data, keep);
    if (keep) s->ua_framing = s->framing;
    append(s, u);
  }
  return counting ? ack_policy(s) : EPODE_OK;
}

void epode__sm_received(epode_session *s) {
  if (s->sm_enabled) s->sm_h_in++;
}

/* Reports, in order, every kept stanza the server's h covers. */
static void acked_up_to(epode_session *s, uint32_t h) {
  while (s->ua_head && (uint32_t)(h - s->ua_head->seq) < 0x80000000u) {
    epode__unacked *u = s->ua_head;
    s->ua_head = u->next;
    if (!s->ua_head) s->ua_tail = NULL;
    s->ua_count--;
    if (u->fn) u->fn(s, EPODE_DELIVERY_ACKED, u->id, u->ud);
    free_node(s, u);
  }
}

static int parse_h(const char *v, uint32_t *h) {
  if (!v || !*v || strlen(v) > 10) return -1;
  char *end;
  unsigned long long x = strtoull(v, &end, 10);
  if (*end || x > 0xFFFFFFFFull || v[0] == '-' || v[0] == '+') return -1;
  *h = (uint32_t)x;
  return 0;
}

/* A new h from the server: it may only move forward, and not past what we
 * sent. Fails the session otherwise; returns its error. */
static epode_err take_h(epode_session *s, const char *v, const char *what) {
  uint32_t h;
  if (parse_h(v, &h))
    return epode__session_fail(s, EPODE_ERR_PROTOCOL, "undefined-condition", NULL, NULL,
                               "the server's stream-management <%s/> has no valid h", what);
  if ((uint32_t)(h - s->sm_h_acked) > (uint32_t)(s->sm_h_sent - s->sm_h_acked))
    return epode__session_fail(s, EPODE_ERR_PROTOCOL, "undefined-condition", NULL, NULL,
                               "the server acknowledged %u stanzas but only %u were sent "
                               "(handled-count-too-high)",
                               (unsigned)h, (unsigned)s->sm_h_sent);
  s->sm_h_acked = h;
  acked_up_to(s, h);
  return EPODE_OK;
}

static int is_true(const char *v) { return v && (!strcmp(v, "true") || !strcmp(v, "1")); }

int epode__sm_element(epode_session *s, const epode_stanza *st) {
  const char *ns = epode_stanza_ns(st), *name = epode_stanza_name(st);
  if (!ns || strcmp(ns, NS_SM) != 0) return 0;
  if (!strcmp(name, "enabled") && s->sm_enabling) {
    s->sm_enabling = 0;
    s->sm_enabled = 1;
    epode__free(s->mem, s->sm_id);
    const char *id = epode_stanza_get_attr(st, "id");
    s->sm_id = id && *id ? epode__strndup(s->mem, id, strnlen(id, 1024)) : NULL;
    s->sm_resume_ok = s->sm_id && is_true(epode_stanza_get_attr(st, "resume"));
    uint32_t max = 0;
    s->sm_max = parse_h(epode_stanza_get_attr(st, "max"), &max) ? 0 : max;
    epode__log(s->cfg, EPODE_LOG_INFO, "sm", "stream management enabled%s%s%s",
               s->sm_id ? ", id " : "", s->sm_id ? s->sm_id : "",
               s->sm_resume_ok ? ", resumable" : "");
  } else if (!strcmp(name, "failed") && s->sm_enabling) {
    /* No acks on this stream: tracked stanzas resolve when it closes, and
     * nothing is kept for resending. */
    s->sm_enabling = 0;
    s->sm_r_due = 0;
    epode__unacked **pp = &s->ua_head;
    s->ua_tail = NULL;
    while (*pp) {
      epode__unacked *u = *pp;
      if (!u->fn) {
        *pp = u->next;
        s->ua_count--;
        free_node(s, u);
        continue;
      }
      u->len = 0;
      s->ua_tail = u;
      pp = &u->next;
    }
    epode__log(s->cfg, EPODE_LOG_WARN, "sm", "the server refused stream management");
  } else if (!strcmp(name, "r") && s->sm_enabled) {
    char a[80];
    snprintf(a, sizeof a, "<a xmlns='" NS_SM "' h='%u'/>", (unsigned)s->sm_h_in);
    write_nonza(s, a);
  } else if (!strcmp(name, "a") && epode__sm_counting(s)) {
    if (take_h(s, epode_stanza_get_attr(st, "h"), "a")) return 1;
    s->sm_ack_due = 0;
    s->sm_r_due = s->sm_h_acked != s->sm_h_sent && s->cfg->sm_every_ms
                      ? s->now + s->cfg->sm_every_ms
                      : 0;
  } else {
    epode__log(s->cfg, EPODE_LOG_WARN, "sm", "ignoring stream-management <%s/>", name);
  }
  return 1;
}

epode_err epode__sm_final_ack(epode_session *s) {
  if (!s->sm_enabled || s->state != EPODE_STATE_READY) return EPODE_OK;
  char a[80];
  snprintf(a, sizeof a, "<a xmlns='" NS_SM "' h='%u'/>", (unsigned)s->sm_h_in);
  return write_nonza(s, a);
}

int64_t epode__sm_deadline(const epode_session *s) {
  if (!epode__sm_counting(s)) return -1;
  uint64_t d = s->sm_r_due;
  if (s->sm_ack_due && (!d || s->sm_ack_due < d)) d = s->sm_ack_due;
  return d ? (int64_t)d : -1;
}

void epode__sm_tick(epode_session *s) {
  if (s->state != EPODE_STATE_READY) return;
  if (s->sm_ack_due && s->now >= s->sm_ack_due) {
    s->sm_stalled = 1;
    epode__session_fail(s, EPODE_ERR_TIMEOUT, NULL, NULL, NULL,
                        "the server has not answered our stream-management <r/> within %u ms: "
                        "it no longer processes what we send",
                        (unsigned)s->cfg->ka_timeout_ms);
    return;
  }
  if (!s->sm_r_due || s->now < s->sm_r_due) return;
  if (s->sm_h_acked == s->sm_h_sent) {
    s->sm_r_due = 0;
    return;
  }
  request_ack(s);
  /* Ask again later if this one goes unanswered. */
  s->sm_r_due = s->now + s->cfg->sm_every_ms;
}

/* ------------------------------------------------------------------ resumption */

void epode__sm_suspend(epode_session *s) {
  s->sm_r_due = s->sm_ack_due = 0;
  s->sm_stalled = 0;
  s->sm_since_r = 0;
  s->lost_at = s->now ? s->now : 1;
  int resumable = s->sm_enabled && s->sm_resume_ok;
  if (!resumable) {
    /* A fresh session follows: its count starts over. */
    s->sm_enabled = s->sm_enabling = 0;
    s->sm_resume_ok = 0;
  }
  /* Tracked stanzas we kept no bytes for (no XEP-0198 on that stream):
   * nobody can say whether they arrived. */
  epode__unacked **pp = &s->ua_head, *failed = NULL, **ft = &failed;
  s->ua_tail = NULL;
  while (*pp) {
    epode__unacked *u = *pp;
    if (!u->len) {
      *pp = u->next;
      s->ua_count--;
      u->next = NULL;
      *ft = u;
      ft = &u->next;
      continue;
    }
    s->ua_tail = u;
    pp = &u->next;
  }
  while (failed) {
    epode__unacked *next = failed->next;
    if (failed->fn) failed->fn(s, EPODE_DELIVERY_FAILED, failed->id, failed->ud);
    free_node(s, failed);
    failed = next;
  }
}

int epode__sm_can_resume(const epode_session *s) {
  if (!s->sm_offered || !s->sm_enabled || !s->sm_resume_ok || !s->sm_id || s->cfg->sm_off)
    return 0;
  /* Past the server's stated lifetime the stream is gone: don't ask. */
  if (s->sm_max && s->lost_at && s->now > s->lost_at &&
      s->now - s->lost_at > (uint64_t)s->sm_max * 1000u)
    return 0;
  return 1;
}

void epode__sm_fresh(epode_session *s) {
  s->sm_enabled = s->sm_enabling = s->sm_resume_ok = 0;
  s->sm_max = 0;
  epode__free(s->mem, s->sm_id);
  s->sm_id = NULL;
}

epode_err epode__sm_resume(epode_session *s) {
  epode__buf b;
  epode__buf_init(&b, s->mem, 0);
  epode_err e = epode__buf_printf(&b, "<resume xmlns='" NS_SM "' h='%u' previd='",
                                  (unsigned)s->sm_h_in);
  if (!e) e = epode__buf_append_escaped(&b, s->sm_id, strlen(s->sm_id), 1);
  if (!e) e = epode__buf_append_str(&b, "'/>");
  if (!e) e = epode__session_write(s, b.data, b.len);
  if (!e) epode__session_log_out(s, b.data, b.len);
  epode__buf_free(&b);
  return e;
}

/* Kept bytes written on a stream (where jabber:client is implied) going
 * out framed (a restored state on another transport): each element must
 * declare its namespace (RFC 7395 §3.3.3), unless it already does. */
static epode_err write_kept(epode_session *s, const epode__unacked *u) {
  static const char decl[] = " xmlns='" EPODE_NS_CLIENT "'";
  const char *d = u->data;
  size_t n = u->len, name = 1;
  if (s->framing == EPODE_FRAMING_STREAM || s->ua_framing != EPODE_FRAMING_STREAM || n < 2 ||
      d[0] != '<')
    return epode__session_write(s, d, n);
  while (name < n && !strchr(" \t\r\n/>", d[name])) name++;
  const char *gt = memchr(d, '>', n);
  size_t tag = gt ? (size_t)(gt - d) : n;
  for (size_t i = name; i + 6 <= tag; i++)
    if (strchr(" \t\r\n", d[i]) && !memcmp(d + i + 1, "xmlns", 5) &&
        (d[i + 6] == '=' || strchr(" \t\r\n", d[i + 6])))
      return epode__session_write(s, d, n);
  char *x = epode__alloc(s->mem, n + sizeof decl - 1);
  if (!x) return EPODE_ERR_NOMEM;
  memcpy(x, d, name);
  memcpy(x + name, decl, sizeof decl - 1);
  memcpy(x + name + sizeof decl - 1, d + name, n - name);
  epode_err e = epode__session_write(s, x, n + sizeof decl - 1);
  epode__free(s->mem, x);
  return e;
}

/* Writes the kept stanzas again. On a resumed stream they keep their
 * numbers; on a fresh one they are counted anew (or, without XEP-0198
 * there, written once more and kept only if tracked). */
static epode_err resend(epode_session *s, int fresh) {
  epode__unacked *list = s->ua_head;
  size_t n = 0;
  if (fresh) {
    s->ua_head = s->ua_tail = NULL;
    s->ua_count = 0;
  }
  epode_err e = EPODE_OK;
  for (epode__unacked *u = list, *next; u; u = next) {
    next = u->next;
    if (!e && u->len) {
      e = write_kept(s, u);
      if (!e) epode__session_log_out(s, u->data, u->len);
      if (!e) n++;
    }
    if (!fresh) continue;
    u->next = NULL;
    if (epode__sm_counting(s)) {
      u->seq = ++s->sm_h_sent;
      append(s, u);
    } else if (u->fn) {
      u->len = 0;
      append(s, u);
    } else {
      free_node(s, u);
    }
  }
  if (n)
    epode__log(s->cfg, EPODE_LOG_INFO, "sm", "sent %zu unacknowledged stanza%s again%s", n,
               n == 1 ? "" : "s", fresh ? " on a fresh session" : "");
  if (!e && n && epode__sm_counting(s)) e = request_ack(s);
  return e;
}

epode_err epode__sm_resend_fresh(epode_session *s) { return s->ua_head ? resend(s, 1) : EPODE_OK; }

int epode__sm_resume_answer(epode_session *s, const epode_stanza *st, epode_err *err) {
  const char *ns = epode_stanza_ns(st), *name = epode_stanza_name(st);
  *err = EPODE_OK;
  if (!ns || strcmp(ns, NS_SM) != 0) return 0;
  if (!strcmp(name, "resumed")) {
    const char *prev = epode_stanza_get_attr(st, "previd");
    if (!prev || strcmp(prev, s->sm_id) != 0) {
      *err = epode__session_fail(s, EPODE_ERR_PROTOCOL, "undefined-condition", NULL, NULL,
                                 "the server resumed stream '%s', not ours ('%s')",
                                 prev ? prev : "", s->sm_id);
      return 1;
    }
    if ((*err = take_h(s, epode_stanza_get_attr(st, "h"), "resumed"))) return 1;
    epode__log(s->cfg, EPODE_LOG_INFO, "sm", "stream %s resumed (the server handled %u of ours)",
               s->sm_id, (unsigned)s->sm_h_acked);
    *err = resend(s, 0);
    return 2;
  }
  if (!strcmp(name, "failed")) {
    /* The old stream is gone. Its h (XEP-0198 1.6) still tells what it
     * handled; the rest goes out again on the fresh session. */
    const char *h = epode_stanza_get_attr(st, "h");
    uint32_t hv;
    if (h && !parse_h(h, &hv) &&
        (uint32_t)(hv - s->sm_h_acked) <= (uint32_t)(s->sm_h_sent - s->sm_h_acked)) {
      s->sm_h_acked = hv;
      acked_up_to(s, hv);
    }
    epode__log(s->cfg, EPODE_LOG_INFO, "sm",
               "the server could not resume stream %s; starting a fresh session", s->sm_id);
    epode__sm_fresh(s);
    return 3;
  }
  return 0;
}

/* ------------------------------------------------------------------ end */

void epode__sm_finish(epode_session *s, int clean) {
  /* Callbacks may send or free nothing of ours; take the list first. */
  epode__unacked *u = s->ua_head;
  s->ua_head = s->ua_tail = NULL;
  s->ua_count = 0;
  s->sm_r_due = 0;
  while (u) {
    epode__unacked *next = u->next;
    if (u->fn) u->fn(s, clean ? EPODE_DELIVERY_ACKED : EPODE_DELIVERY_FAILED, u->id, u->ud);
    free_node(s, u);
    u = next;
  }
}

void epode__sm_free(epode_session *s) {
  epode__sm_finish(s, 0);
  epode__free(s->mem, s->sm_id);
  s->sm_id = NULL;
}

int epode_session_sm_enabled(const epode_session *s) { return s && s->sm_enabled; }
size_t epode_session_sm_unacked(const epode_session *s) {
  return s && epode__sm_counting(s) ? (size_t)(s->sm_h_sent - s->sm_h_acked) : 0;
}
int epode_session_resumable(const epode_session *s) {
  return s && s->sm_enabled && s->sm_resume_ok && s->sm_id;
}
