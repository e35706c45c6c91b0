/* XEP-0198 stream management: <enable/>, acknowledgements both ways, and a
 * delivery report for every tracked stanza — the server acknowledged it, or
 * the session ended before it did. (Resumption builds on these counts.)
 *
 * Counting: our outbound count starts when <enable/> is written (stanzas
 * written after it count, even before <enabled/> arrives); our inbound
 * count starts at <enabled/>. A stanza is a message, presence or iq. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "session/session_int.h"
#include "util/alloc.h"

#define NS_SM "urn:xmpp:sm:3"

void epode__sm_features(epode_session *s, const epode_stanza *features) {
  s->sm_offered = epode_stanza_find_child(features, "sm", NS_SM) != NULL;
}

static epode_err write_nonza(epode_session *s, const char *xml) {
  size_t n = strlen(xml);
  epode_err e = epode__session_write(s, xml, n);
  if (!e) epode__session_log_out(s, xml, n);
  return e;
}

epode_err epode__sm_enable(epode_session *s) {
  if (!s->sm_offered || s->cfg->sm_off || s->sm_enabling || s->sm_enabled) return EPODE_OK;
  epode_err e = write_nonza(s, "<enable xmlns='" NS_SM "' resume='true'/>");
  if (e) return e;
  s->sm_enabling = 1;
  s->sm_h_in = s->sm_h_sent = s->sm_h_acked = 0;
  s->sm_since_r = 0;
  return EPODE_OK;
}

static epode_err request_ack(epode_session *s) {
  s->sm_since_r = 0;
  s->sm_r_due = 0;
  return write_nonza(s, "<r xmlns='" NS_SM "'/>");
}

epode_err epode__sm_sent(epode_session *s, epode_delivery_fn fn, void *ud, const char *id) {
  int counting = s->sm_enabling || s->sm_enabled;
  if (counting) s->sm_h_sent++;
  if (fn) {
    epode__unacked *u = epode__calloc(s->mem, sizeof *u);
    if (!u || (id && !(u->id = epode__strdup(s->mem, id)))) {
      epode__free(s->mem, u);
      return EPODE_ERR_NOMEM;
    }
    u->seq = s->sm_h_sent;
    u->fn = fn;
    u->ud = ud;
    if (s->ua_tail)
      s->ua_tail->next = u;
    else
      s->ua_head = u;
    s->ua_tail = u;
    s->ua_count++;
  }
  if (!counting) return EPODE_OK;
  uint32_t every_ms = s->cfg->sm_every_ms;
  if (every_ms && !s->sm_r_due) s->sm_r_due = s->now + every_ms;
  if (s->cfg->sm_every_n && ++s->sm_since_r >= s->cfg->sm_every_n) return request_ack(s);
  return EPODE_OK;
}

void epode__sm_received(epode_session *s) {
  if (s->sm_enabled) s->sm_h_in++;
}

/* Reports, in order, every tracked stanza the server's h covers. */
static void acked_up_to(epode_session *s, uint32_t h) {
  while (s->ua_head && (uint32_t)(h - s->ua_head->seq) < 0x80000000u) {
    epode__unacked *u = s->ua_head;
    s->ua_head = u->next;
    if (!s->ua_head) s->ua_tail = NULL;
    s->ua_count--;
    u->fn(s, EPODE_DELIVERY_ACKED, u->id, u->ud);
    epode__free(s->mem, u->id);
    epode__free(s->mem, u);
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

int epode__sm_element(epode_session *s, const epode_stanza *st) {
  const char *ns = epode_stanza_ns(st), *name = epode_stanza_name(st);
  if (!ns || strcmp(ns, NS_SM) != 0) return 0;
  if (!strcmp(name, "enabled") && s->sm_enabling) {
    s->sm_enabling = 0;
    s->sm_enabled = 1;
    epode__free(s->mem, s->sm_id);
    const char *id = epode_stanza_get_attr(st, "id");
    s->sm_id = id ? epode__strndup(s->mem, id, strnlen(id, 1024)) : NULL;
    epode__log(s->cfg, EPODE_LOG_INFO, "sm", "stream management enabled%s%s",
               id ? ", id " : "", id ? id : "");
  } else if (!strcmp(name, "failed") && s->sm_enabling) {
    /* No acks on this stream: tracked stanzas resolve when it closes. */
    s->sm_enabling = 0;
    s->sm_r_due = 0;
    epode__log(s->cfg, EPODE_LOG_WARN, "sm", "the server refused stream management");
  } else if (!strcmp(name, "r") && s->sm_enabled) {
    char a[80];
    snprintf(a, sizeof a, "<a xmlns='" NS_SM "' h='%u'/>", (unsigned)s->sm_h_in);
    write_nonza(s, a);
  } else if (!strcmp(name, "a") && (s->sm_enabled || s->sm_enabling)) {
    uint32_t h;
    if (parse_h(epode_stanza_get_attr(st, "h"), &h)) {
      epode__session_fail(s, EPODE_ERR_PROTOCOL, "undefined-condition", NULL, NULL,
                          "the server's stream-management <a/> has no valid h");
      return 1;
    }
    /* h may only move forward, and not past what we sent. */
    if ((uint32_t)(h - s->sm_h_acked) > (uint32_t)(s->sm_h_sent - s->sm_h_acked)) {
      epode__session_fail(s, EPODE_ERR_PROTOCOL, "undefined-condition", NULL, NULL,
                          "the server acknowledged %u stanzas but only %u were sent "
                          "(handled-count-too-high)",
                          (unsigned)h, (unsigned)s->sm_h_sent);
      return 1;
    }
    s->sm_h_acked = h;
    acked_up_to(s, h);
    s->sm_r_due = s->sm_h_acked != s->sm_h_sent && s->cfg->sm_every_ms
                      ? s->now + s->cfg->sm_every_ms
                      : 0;
  } else {
    epode__log(s->cfg, EPODE_LOG_WARN, "sm", "ignoring stream-management <%s/>", name);
  }
  return 1;
}

int64_t epode__sm_deadline(const epode_session *s) {
  return s->sm_r_due && (s->sm_enabled || s->sm_enabling) ? (int64_t)s->sm_r_due : -1;
}

void epode__sm_tick(epode_session *s) {
  if (!s->sm_r_due || s->now < s->sm_r_due || s->state != EPODE_STATE_READY) return;
  if (s->sm_h_acked == s->sm_h_sent) {
    s->sm_r_due = 0;
    return;
  }
  request_ack(s);
  /* Ask again later if this one goes unanswered. */
  s->sm_r_due = s->now + s->cfg->sm_every_ms;
}

void epode__sm_finish(epode_session *s, int clean) {
  /* Callbacks may send or free nothing of ours; take the list first. */
  epode__unacked *u = s->ua_head;
  s->ua_head = s->ua_tail = NULL;
  s->ua_count = 0;
  s->sm_r_due = 0;
  while (u) {
    epode__unacked *next = u->next;
    u->fn(s, clean ? EPODE_DELIVERY_ACKED : EPODE_DELIVERY_FAILED, u->id, u->ud);
    epode__free(s->mem, u->id);
    epode__free(s->mem, u);
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
  return s && (s->sm_enabled || s->sm_enabling) ? (size_t)(s->sm_h_sent - s->sm_h_acked) : 0;
}
