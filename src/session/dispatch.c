/* Stanza traffic once the stream is up: the pre-ready send queue, handlers
 * by name/namespace/type, iq replies by id with timeouts, timed handlers.
 *
 * Handlers may add and remove handlers (and send, and close) while a stanza
 * is being dispatched: removal only marks an entry, and entries are unlinked
 * after the outermost dispatch returns. */
#include <string.h>

#include "session/session_int.h"
#include "util/alloc.h"
#include "xml/stanza_int.h"

/* ------------------------------------------------------------------ queue */

/* Queued stanzas never sent: tracked ones are reported as not delivered. */
void epode__queue_clear(epode_session *s) {
  epode__queued *q = s->q_head;
  s->q_head = s->q_tail = NULL;
  s->q_count = 0;
  while (q) {
    epode__queued *next = q->next;
    if (q->fn) q->fn(s, EPODE_DELIVERY_FAILED, q->id, q->ud);
    epode__free(s->mem, q->id);
    epode__free(s->mem, q);
    q = next;
  }
}

epode_err epode__queue_flush(epode_session *s) {
  while (s->q_head) {
    epode__queued *q = s->q_head;
    epode_err e = epode__session_write(s, q->data, q->len);
    if (e) return e;
    epode__session_log_out(s, q->data, q->len);
    s->q_head = q->next;
    if (!s->q_head) s->q_tail = NULL;
    s->q_count--;
    e = q->stanza ? epode__sm_sent(s, q->fn, q->ud, q->id, q->data, q->len) : EPODE_OK;
    epode__free(s->mem, q->id);
    epode__free(s->mem, q);
    if (e) return e;
  }
  return EPODE_OK;
}

static epode_err enqueue(epode_session *s, const char *data, size_t len, epode_delivery_fn fn,
                         void *ud, const char *id, int stanza) {
  if (s->q_count >= s->cfg->limits[EPODE_LIMIT_SEND_QUEUE]) return EPODE_ERR_QUEUE_FULL;
  epode__queued *q = epode__alloc(s->mem, sizeof *q + len);
  if (!q) return EPODE_ERR_NOMEM;
  q->next = NULL;
  q->fn = fn;
  q->ud = ud;
  q->stanza = stanza;
  q->id = NULL;
  if (fn && id && !(q->id = epode__strdup(s->mem, id))) {
    epode__free(s->mem, q);
    return EPODE_ERR_NOMEM;
  }
  q->len = len;
  memcpy(q->data, data, len);
  if (s->q_tail)
    s->q_tail->next = q;
  else
    s->q_head = q;
  s->q_tail = q;
  s->q_count++;
  return EPODE_OK;
}

static int can_send(const epode_session *s) {
  return s->state != EPODE_STATE_CLOSING && s->state != EPODE_STATE_CLOSED;
}

/* Writes now when ready, queues otherwise. `stanza`: it counts for
 * XEP-0198; `fn`: its delivery report. */
static epode_err send_bytes(epode_session *s, const char *data, size_t len, epode_delivery_fn fn,
                            void *ud, const char *id, int stanza) {
  if (!can_send(s)) return EPODE_ERR_STATE;
  /* Stanzas kept for XEP-0198 (and tracked ones) are bounded: a server
   * that stops acknowledging shows up as a full queue. */
  if ((fn || (stanza && epode__sm_counting(s))) &&
      s->ua_count >= s->cfg->limits[EPODE_LIMIT_UNACKED])
    return EPODE_ERR_QUEUE_FULL;
  if (s->state != EPODE_STATE_READY) return enqueue(s, data, len, fn, ud, id, stanza);
  epode_err e = epode__session_write(s, data, len);
  if (e) return e;
  epode__session_log_out(s, data, len);
  if (stanza) e = epode__sm_sent(s, fn, ud, id, data, len);
  epode__session_notify_output(s);
  return e;
}

static int is_stanza_name(const char *name) {
  return epode__str_eq(name, epode__atoms.message) || epode__str_eq(name, epode__atoms.presence) ||
         epode__str_eq(name, epode__atoms.iq);
}

static epode_err send_stanza(epode_session *s, const epode_stanza *st, epode_delivery_fn fn,
                             void *ud) {
  if (!s || !st || epode_stanza_is_text(st)) return EPODE_ERR_INVAL;
  if (!can_send(s)) return EPODE_ERR_STATE;
  int stanza = is_stanza_name(epode_stanza_name(st));
  if (s->state == EPODE_STATE_READY) {
    /* As send_bytes() does, but serialised straight into the output
     * buffer: the stanza is the last message there. */
    if ((fn || (stanza && epode__sm_counting(s))) &&
        s->ua_count >= s->cfg->limits[EPODE_LIMIT_UNACKED])
      return EPODE_ERR_QUEUE_FULL;
    epode_err e = epode__session_write_stanza(s, st);
    if (e) return e;
    size_t len = s->msgs[s->msg_tail - 1];
    if (stanza)
      e = epode__sm_sent(s, fn, ud, epode_stanza_id(st), s->out.data + s->out.len - len, len);
    epode__session_notify_output(s);
    return e;
  }
  char *xml;
  size_t len;
  epode_err e = epode__session_serialize(s, st, &xml, &len);
  if (e) return e;
  e = send_bytes(s, xml, len, fn, ud, epode_stanza_id(st), stanza);
  epode__free(s->mem, xml);
  return e;
}

epode_err epode_session_send(epode_session *s, const epode_stanza *st) {
  return send_stanza(s, st, NULL, NULL);
}

epode_err epode_session_send_tracked(epode_session *s, const epode_stanza *st,
                                     epode_delivery_fn fn, void *ud) {
  if (!fn) return EPODE_ERR_INVAL;
  return send_stanza(s, st, fn, ud);
}

epode_err epode_session_send_raw(epode_session *s, const char *xml, size_t len) {
  if (!s || (!xml && len)) return EPODE_ERR_INVAL;
  /* Counted as one stanza if it starts like one (XEP-0198 needs the count
   * right; raw writers sending several stanzas at once should not use SM). */
  size_t i = 0;
  while (i < len && (xml[i] == ' ' || xml[i] == '\n' || xml[i] == '\r' || xml[i] == '\t')) i++;
  int stanza = 0;
  static const char *const starts[] = {"<message", "<presence", "<iq"};
  for (size_t k = 0; k < 3; k++) {
    size_t n = strlen(starts[k]);
    if (len - i > n && !memcmp(xml + i, starts[k], n) &&
        (xml[i + n] == ' ' || xml[i + n] == '>' || xml[i + n] == '/'))
      stanza = 1;
  }
  return send_bytes(s, xml, len, NULL, NULL, NULL, stanza);
}

/* ------------------------------------------------------------------ iq */

epode_err epode__iq_track(epode_session *s, const char *id, const char *to, uint32_t timeout_ms,
                          epode_iq_fn fn, void *ud) {
  epode__iq_wait *w = epode__calloc(s->mem, sizeof *w);
  if (!w) return EPODE_ERR_NOMEM;
  w->id = epode__strdup(s->mem, id);
  w->to = to ? epode__strdup(s->mem, to) : NULL;
  if (!w->id || (to && !w->to)) {
    epode__free(s->mem, w->id);
    epode__free(s->mem, w->to);
    epode__free(s->mem, w);
    return EPODE_ERR_NOMEM;
  }
  w->deadline = timeout_ms ? s->now + timeout_ms : 0;
  w->fn = fn;
  w->ud = ud;
  w->next = s->iqs;
  s->iqs = w;
  return EPODE_OK;
}

static void iq_free(epode_session *s, epode__iq_wait *w) {
  epode__free(s->mem, w->id);
  epode__free(s->mem, w->to);
  epode__free(s->mem, w);
}

epode_err epode_session_send_iq(epode_session *s, const epode_stanza *iq, uint32_t timeout_ms,
                                epode_iq_fn fn, void *ud) {
  if (!s || !iq || !fn || epode_stanza_is_text(iq) || strcmp(epode_stanza_name(iq), "iq") != 0)
    return EPODE_ERR_INVAL;
  const char *type = epode_stanza_type(iq);
  if (!type || (strcmp(type, "get") != 0 && strcmp(type, "set") != 0)) return EPODE_ERR_INVAL;
  if (!can_send(s)) return EPODE_ERR_STATE;
  if (!timeout_ms) timeout_ms = s->cfg->timeouts[EPODE_TIMEOUT_IQ];

  const char *id = epode_stanza_id(iq);
  epode_stanza *copy = NULL;
  char idbuf[24];
  epode_err e;
  if (!id) {
    if ((e = epode_stanza_clone(&copy, iq))) return e;
    epode_session_new_id(s, idbuf, sizeof idbuf);
    if ((e = epode_stanza_set_attr(copy, "id", idbuf))) {
      epode_stanza_free(copy);
      return e;
    }
    iq = copy;
    id = idbuf;
  }
  e = epode__iq_track(s, id, epode_stanza_to(iq), timeout_ms, fn, ud);
  if (!e) {
    e = epode_session_send(s, iq);
    if (e) { /* never leave a wait behind for an iq that did not go out */
      epode__iq_wait *w = s->iqs;
      s->iqs = w->next;
      iq_free(s, w);
    }
  }
  epode_stanza_free(copy);
  return e;
}

/* The reply must come from where the request went: the same JID, or, for a
 * request to our own server or account, no 'from' / our domain / our bare
 * JID (RFC 6120 §10.1.1 leaves servers free to omit it). */
static int from_matches(const epode_session *s, const epode__iq_wait *w, const char *from) {
  if (w->to) return from && !strcmp(from, w->to);
  if (!from) return 1;
  return !strcmp(from, epode_jid_domain(s->jid)) || !strcmp(from, epode_jid_bare(s->jid)) ||
         (s->bound_jid && !strcmp(from, s->bound_jid));
}

int epode__iq_match(epode_session *s, const epode_stanza *st) {
  const char *type = epode_stanza_type(st), *id = epode_stanza_id(st);
  if (!type || !id || (strcmp(type, "result") != 0 && strcmp(type, "error") != 0)) return 0;
  for (epode__iq_wait **pp = &s->iqs; *pp; pp = &(*pp)->next) {
    epode__iq_wait *w = *pp;
    if (strcmp(w->id, id) != 0 || !from_matches(s, w, epode_stanza_from(st))) continue;
    *pp = w->next;
    w->fn(s, st, EPODE_OK, w->ud);
    iq_free(s, w);
    return 1;
  }
  return 0;
}

void epode__iqs_cancel(epode_session *s, epode_err err) {
  while (s->iqs) {
    epode__iq_wait *w = s->iqs;
    s->iqs = w->next;
    w->fn(s, NULL, err, w->ud);
    iq_free(s, w);
  }
}

/* ------------------------------------------------------------------ handlers */

/* A handler's name, namespace and type are kept as atoms when they are
 * (stanza_int.h), so that matching them against a received stanza's, which
 * are atoms too, compares pointers. */
static char *keep_str(epode_session *s, const char *v) {
  if (!v) return NULL;
  const char *a = epode__atom(v, strlen(v));
  return a ? (char *)a : epode__strdup(s->mem, v);
}

static void drop_str(epode_session *s, char *v) {
  if (v && !epode__is_atom(v)) epode__free(s->mem, v);
}

static void handler_free(epode_session *s, epode__handler *h) {
  drop_str(s, h->name);
  drop_str(s, h->ns);
  drop_str(s, h->type);
  epode__free(s->mem, h);
}

epode_err epode_session_add_handler(epode_session *s, const char *name, const char *ns,
                                    const char *type, epode_handler_fn fn, void *ud) {
  if (!s || !fn) return EPODE_ERR_INVAL;
  epode__handler *h = epode__calloc(s->mem, sizeof *h);
  if (!h) return EPODE_ERR_NOMEM;
  h->name = keep_str(s, name);
  h->ns = keep_str(s, ns);
  h->type = keep_str(s, type);
  if ((name && !h->name) || (ns && !h->ns) || (type && !h->type)) {
    handler_free(s, h);
    return EPODE_ERR_NOMEM;
  }
  h->fn = fn;
  h->ud = ud;
  h->gen = s->dispatching ? s->dispatch_gen : 0;
  /* Append: handlers run in the order they were added. */
  epode__handler **pp = &s->handlers;
  while (*pp) pp = &(*pp)->next;
  *pp = h;
  return EPODE_OK;
}

static void sweep(epode_session *s) {
  if (!s->to_sweep) return;
  s->to_sweep = 0;
  for (epode__handler **pp = &s->handlers; *pp;) {
    if ((*pp)->removed) {
      epode__handler *h = *pp;
      *pp = h->next;
      handler_free(s, h);
    } else {
      pp = &(*pp)->next;
    }
  }
  for (epode__timed **tp = &s->timed; *tp;) {
    if ((*tp)->removed) {
      epode__timed *t = *tp;
      *tp = t->next;
      epode__free(s->mem, t);
    } else {
      tp = &(*tp)->next;
    }
  }
}

epode_err epode_session_remove_handler(epode_session *s, epode_handler_fn fn, void *ud) {
  if (!s || !fn) return EPODE_ERR_INVAL;
  int found = 0;
  for (epode__handler *h = s->handlers; h; h = h->next)
    if (h->fn == fn && h->ud == ud && !h->removed) h->removed = found = s->to_sweep = 1;
  if (!s->dispatching) sweep(s);
  return found ? EPODE_OK : EPODE_ERR_NOTFOUND;
}

void epode__handlers_free(epode_session *s) {
  epode__iqs_cancel(s, EPODE_ERR_CLOSED);
  for (epode__handler *h = s->handlers; h; h->removed = 1, h = h->next) {}
  for (epode__timed *t = s->timed; t; t->removed = 1, t = t->next) {}
  s->to_sweep = 1;
  sweep(s);
}

static int ns_matches(const epode_stanza *st, const char *ns) {
  const char *own = epode_stanza_ns(st);
  if (own && epode__str_eq(own, ns)) return 1;
  for (epode_stanza *c = epode_stanza_first_child(st); c; c = epode_stanza_next_sibling(c)) {
    if (epode_stanza_is_text(c)) continue;
    const char *cns = epode_stanza_ns(c);
    if (cns && epode__str_eq(cns, ns)) return 1;
  }
  return 0;
}

static int handler_matches(const epode__handler *h, const epode_stanza *st) {
  if (h->name && !epode__str_eq(h->name, epode_stanza_name(st))) return 0;
  if (h->type) {
    const char *t = epode_stanza_type(st);
    if (!t || !epode__str_eq(t, h->type)) return 0;
  }
  if (h->ns && !ns_matches(st, h->ns)) return 0;
  return 1;
}

/* RFC 6120 §8.4: an iq get/set nobody handles gets service-unavailable. */
static epode_err reply_unavailable(epode_session *s, const epode_stanza *iq) {
  epode_stanza *r = NULL, *err, *cond;
  epode_err e = epode_iq_new(&r, s->mem, "error", epode_stanza_id(iq));
  const char *from = epode_stanza_from(iq);
  if (!e && from) e = epode_stanza_set_attr(r, "to", from);
  if (!e) e = epode_stanza_add_child_new(&err, r, "error", NULL);
  if (!e) e = epode_stanza_set_attr(err, "type", "cancel");
  if (!e)
    e = epode_stanza_add_child_new(&cond, err, "service-unavailable", EPODE_NS_STANZA_ERRORS);
  char *xml = NULL;
  size_t len = 0;
  if (!e) e = epode__session_serialize(s, r, &xml, &len);
  epode_stanza_free(r);
  if (!e) e = epode__session_write(s, xml, len);
  if (!e) epode__session_log_out(s, xml, len);
  if (!e) e = epode__sm_sent(s, NULL, NULL, NULL, xml, len);
  epode__free(s->mem, xml);
  return e;
}

epode_err epode__dispatch(epode_session *s, const epode_stanza *st) {
  const char *name = epode_stanza_name(st);
  int is_iq = epode__str_eq(name, epode__atoms.iq);
  if (is_iq && epode__iq_match(s, st)) return EPODE_OK;

  int handled = 0;
  uint64_t gen = ++s->dispatch_gen;
  s->dispatching++;
  for (epode__handler *h = s->handlers; h && s->state != EPODE_STATE_CLOSED; h = h->next) {
    if (h->removed || h->gen == gen || !handler_matches(h, st)) continue;
    handled = 1;
    if (h->fn(s, st, h->ud) == EPODE_HANDLER_REMOVE) h->removed = s->to_sweep = 1;
  }
  if (--s->dispatching == 0) sweep(s);

  epode_err e = EPODE_OK;
  if (is_iq && !handled && s->state == EPODE_STATE_READY) {
    const char *type = epode_stanza_type(st);
    if (type && (!strcmp(type, "get") || !strcmp(type, "set"))) e = reply_unavailable(s, st);
  }
  return e;
}

/* ------------------------------------------------------------------ timers */

epode_err epode_session_add_timed_handler(epode_session *s, uint32_t period_ms,
                                          epode_timed_fn fn, void *ud) {
  if (!s || !fn || !period_ms) return EPODE_ERR_INVAL;
  epode__timed *t = epode__calloc(s->mem, sizeof *t);
  if (!t) return EPODE_ERR_NOMEM;
  t->period = period_ms;
  t->due = s->now + period_ms;
  t->fn = fn;
  t->ud = ud;
  t->next = s->timed;
  s->timed = t;
  return EPODE_OK;
}

epode_err epode_session_remove_timed_handler(epode_session *s, epode_timed_fn fn, void *ud) {
  if (!s || !fn) return EPODE_ERR_INVAL;
  int found = 0;
  for (epode__timed *t = s->timed; t; t = t->next)
    if (t->fn == fn && t->ud == ud && !t->removed) t->removed = found = s->to_sweep = 1;
  if (!s->dispatching) sweep(s);
  return found ? EPODE_OK : EPODE_ERR_NOTFOUND;
}

epode_err epode__timers_run(epode_session *s) {
  /* iq timeouts first: a reply that arrived in the same tick already won. */
  for (epode__iq_wait **pp = &s->iqs; *pp;) {
    epode__iq_wait *w = *pp;
    if (w->deadline && s->now >= w->deadline) {
      *pp = w->next;
      w->fn(s, NULL, EPODE_ERR_TIMEOUT, w->ud);
      iq_free(s, w);
      pp = &s->iqs; /* the callback may have changed the list */
    } else {
      pp = &w->next;
    }
  }
  s->dispatching++;
  for (epode__timed *t = s->timed; t && s->state != EPODE_STATE_CLOSED; t = t->next) {
    if (t->removed || s->now < t->due) continue;
    if (t->fn(s, t->ud) == EPODE_HANDLER_REMOVE)
      t->removed = s->to_sweep = 1;
    else
      t->due = s->now + t->period;
  }
  if (--s->dispatching == 0) sweep(s);
  return EPODE_OK;
}

int64_t epode__timers_next(const epode_session *s) {
  int64_t best = -1;
  for (const epode__iq_wait *w = s->iqs; w; w = w->next)
    if (w->deadline && (best < 0 || (int64_t)w->deadline < best)) best = (int64_t)w->deadline;
  for (const epode__timed *t = s->timed; t; t = t->next)
    if (!t->removed && (best < 0 || (int64_t)t->due < best)) best = (int64_t)t->due;
  return best;
}
