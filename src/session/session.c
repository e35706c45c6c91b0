/* The sans-I/O session: stream open, features, STARTTLS as an event, SASL,
 * stream restarts, resource binding, clean close, stream errors.
 *
 * Everything that arrives goes through one path: bytes → parser → stanza
 * callback → on_element(), which acts according to `neg` (where negotiation
 * stands). Nothing here touches a socket or a clock. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "epode_limits.h"
#include "session/session_host.h"
#include "session/session_int.h"
#include "util/alloc.h"
#include "xml/stanza_int.h"

static const char *const state_names[] = {
    "idle",  "resolving",      "connecting", "tls-handshake", "opening", "starttls",
    "authenticating", "binding", "ready", "closing", "closed", "disconnected"};

const char *epode_state_name(epode_state st) {
  return (unsigned)st < sizeof state_names / sizeof *state_names ? state_names[st] : "unknown";
}

/* An event with what every event carries; `extra` (may be NULL) adds the
 * fields of the few that have more (uri, retry_ms, attempt). */
static void emit_ev(epode_session *s, epode_event_type type, const epode_event *extra) {
  if (!s->ev_fn) return;
  epode_event ev;
  if (extra)
    ev = *extra;
  else
    memset(&ev, 0, sizeof ev);
  ev.type = type;
  ev.state = s->state;
  ev.jid = s->bound_jid;
  ev.failure = &s->failure;
  s->ev_fn(&ev, s->ev_ud);
}

static void emit(epode_session *s, epode_event_type type) { emit_ev(s, type, NULL); }

void epode__session_set_state(epode_session *s, epode_state st) {
  if (s->state == st) return;
  s->state = st;
  epode__log(s->cfg, EPODE_LOG_DEBUG, "session", "state %s", epode_state_name(st));
  emit(s, EPODE_EV_STATE);
}

/* ------------------------------------------------------------------ output */

void epode__session_log_out(epode_session *s, const char *data, size_t len) {
  if (!EPODE__LOG_ON(s->cfg, EPODE_LOG_TRAFFIC)) return;
  epode__log(s->cfg, EPODE_LOG_TRAFFIC, "xml-out", "%.*s", (int)len, data);
}

/* Makes room for one more message in the output: compacts what the
 * transport took (lazily, so partial writes by the transport stay O(n))
 * and grows the table of message lengths. */
static epode_err out_room(epode_session *s) {
  if (s->out_off && s->out_off == s->out.len) {
    epode__buf_reset(&s->out);
    s->out_off = 0;
  } else if (s->out_off > 4096 && s->out_off > s->out.len / 2) {
    epode__buf_consume(&s->out, s->out_off);
    s->out_off = 0;
  }
  if (s->msg_tail == s->msg_cap) {
    if (s->msg_head) { /* slide the live lengths down first */
      memmove(s->msgs, s->msgs + s->msg_head, (s->msg_tail - s->msg_head) * sizeof *s->msgs);
      s->msg_tail -= s->msg_head;
      s->msg_head = 0;
    }
    if (s->msg_tail == s->msg_cap) {
      size_t cap = s->msg_cap ? s->msg_cap * 2 : 16;
      size_t *m = epode__realloc(s->mem, s->msgs, cap * sizeof *m);
      if (!m) return EPODE_ERR_NOMEM;
      s->msgs = m;
      s->msg_cap = cap;
    }
  }
  return EPODE_OK;
}

epode_err epode__session_write(epode_session *s, const char *data, size_t len) {
  if (!len) return EPODE_OK;
  epode_err e = out_room(s);
  if (e) return e;
  e = epode__buf_append(&s->out, data, len);
  if (e == EPODE_ERR_LIMIT) return EPODE_ERR_QUEUE_FULL;
  if (!e) s->msgs[s->msg_tail++] = len;
  return e;
}

/* RFC 7395 §3.3.3: on a framed stream no namespace is inherited from a
 * stream header, so a root element without one of its own (a stanza built
 * with ns NULL) declares jabber:client right after its name. Returns that
 * declaration, or NULL. */
static const char *add_client_ns(const epode_session *s, const epode_stanza *st) {
  if (s->framing == EPODE_FRAMING_STREAM) return NULL;
  const char *ns = epode_stanza_ns(st);
  return !ns || !*ns ? " xmlns='" EPODE_NS_CLIENT "'" : NULL;
}

static const char *context_ns(const epode_session *s) {
  return s->framing == EPODE_FRAMING_STREAM ? EPODE_NS_CLIENT : NULL;
}

epode_err epode__session_serialize(epode_session *s, const epode_stanza *st, char **out,
                                   size_t *len) {
  epode__buf b;
  epode__buf_init(&b, s->mem, 0);
  epode_err e = epode__stanza_serialize(&b, st, context_ns(s), add_client_ns(s, st));
  *out = e ? NULL : epode__buf_steal(&b, len);
  if (!e && !*out) e = EPODE_ERR_NOMEM;
  epode__buf_free(&b);
  return e;
}

/* Serialises straight into the output buffer: no string of its own, no
 * copy. */
epode_err epode__session_write_stanza(epode_session *s, const epode_stanza *st) {
  epode_err e = out_room(s);
  if (e) return e;
  size_t at = s->out.len;
  e = epode__stanza_serialize(&s->out, st, context_ns(s), add_client_ns(s, st));
  if (e) return e == EPODE_ERR_LIMIT ? EPODE_ERR_QUEUE_FULL : e;
  size_t len = s->out.len - at;
  s->msgs[s->msg_tail++] = len;
  epode__session_log_out(s, s->out.data + at, len);
  return EPODE_OK;
}

const void *epode_session_peek_output(const epode_session *s, size_t *len) {
  size_t n = s->out.len - s->out_off;
  if (len) *len = n;
  return n ? s->out.data + s->out_off : NULL;
}

void epode_session_consume_output(epode_session *s, size_t n) {
  size_t avail = s->out.len - s->out_off;
  if (n > avail) n = avail;
  s->out_off += n;
  /* Advance the message boundaries past what the transport took. */
  while (n && s->msg_head < s->msg_tail) {
    size_t left = s->msgs[s->msg_head] - s->msg_done;
    if (n >= left) {
      n -= left;
      s->msg_head++;
      s->msg_done = 0;
    } else {
      s->msg_done += n;
      n = 0;
    }
  }
  if (s->out_off == s->out.len) {
    epode__buf_reset(&s->out);
    s->out_off = 0;
    s->msg_head = s->msg_tail = s->msg_done = 0;
  }
}

const void *epode_session_peek_message(const epode_session *s, size_t *len) {
  if (s->msg_head == s->msg_tail) {
    if (len) *len = 0;
    return NULL;
  }
  if (len) *len = s->msgs[s->msg_head] - s->msg_done;
  return s->out.data + s->out_off;
}

size_t epode_session_output_len(const epode_session *s) { return s->out.len - s->out_off; }

void epode_session_set_output_cb(epode_session *s, epode_output_fn fn, void *ud) {
  s->out_fn = fn;
  s->out_ud = ud;
}

void epode__session_notify_output(epode_session *s) {
  if (s->out_fn && s->out.len > s->out_off) s->out_fn(s, s->out_ud);
}

/* ------------------------------------------------------------------ failure */

static void set_str(epode_session *s, char **field, const char *v, size_t max) {
  epode__free(s->mem, *field);
  *field = NULL;
  if (!v) return;
  size_t n = strlen(v);
  *field = epode__strndup(s->mem, v, n > max ? max : n);
}

static void finish_closed(epode_session *s) {
  if (s->closed_emitted) return;
  s->closed_emitted = 1;
  s->neg_deadline = s->close_deadline = 0;
  epode__sasl_clear(s);
  epode__queue_clear(s);
  /* A clean close (the server's closing tag after ours) means it processed
   * everything we sent; any other end leaves unacknowledged stanzas unknown. */
  epode__sm_finish(s, s->clean_close);
  epode__iqs_cancel(s, s->failure.err ? s->failure.err : EPODE_ERR_CLOSED);
  epode__session_set_state(s, EPODE_STATE_CLOSED);
  emit(s, EPODE_EV_CLOSED);
}

/* Our end of the stream: </stream:stream>, or <close/> when framed. */
static epode_err write_close(epode_session *s) {
  static const char tag[] = "</stream:stream>";
  static const char framed[] = "<close xmlns='" EPODE_NS_FRAMING "'/>";
  const char *t = s->framing == EPODE_FRAMING_STREAM ? tag : framed;
  size_t n = s->framing == EPODE_FRAMING_STREAM ? sizeof tag - 1 : sizeof framed - 1;
  epode_err e = epode__session_write(s, t, n);
  if (!e) epode__session_log_out(s, t, n);
  return e;
}

/* ------------------------------------------------------------------ reconnection */

static int will_retry(const epode_session *s, epode_err err, const char *condition);

/* Whether another connection could fix this failure. Not: wrong
 * credentials, a certificate that does not verify, a policy refusal, a
 * protocol violation, a resource conflict (reconnecting would fight the
 * other client), running out of memory. */
static int retryable(epode_err err, const char *condition) {
  switch (err) {
  case EPODE_ERR_EOF:
  case EPODE_ERR_IO:
  case EPODE_ERR_TIMEOUT:
  case EPODE_ERR_CONNECT:
  case EPODE_ERR_DNS:
  case EPODE_ERR_CLOSED:
  case EPODE_ERR_TLS: return 1;
  case EPODE_ERR_STREAM: {
    static const char *const again[] = {"system-shutdown",       "connection-timeout",
                                        "reset",                 "internal-server-error",
                                        "resource-constraint",   "remote-connection-failed",
                                        "see-other-host"};
    for (size_t i = 0; condition && i < sizeof again / sizeof *again; i++)
      if (!strcmp(condition, again[i])) return 1;
    return 0;
  }
  default: return 0;
  }
}

int epode__session_will_retry(const epode_session *s, epode_err err) {
  return will_retry(s, err, NULL);
}

/* Prosody 0.12 feeds a resumed stream's bytes to the parser of the
 * connection it resumed (mod_c2s keeps the first connection's `data`
 * handler): when that parser had been cut mid-element, the resumed stream
 * swallows what we send (no more acks) or dies with <not-well-formed/>,
 * through no fault of ours. Such a stream is not resumed again; a fresh
 * session takes over. */
static int broken_resumption(const epode_session *s, epode_err err, const char *condition) {
  if (!s->on_resumed_stream) return 0;
  if (err == EPODE_ERR_TIMEOUT && s->sm_stalled) return 1;
  return err == EPODE_ERR_STREAM && condition && !strcmp(condition, "not-well-formed");
}

static int will_retry(const epode_session *s, epode_err err, const char *condition) {
  if (!s->cfg->rc_on) return 0;
  if (!retryable(err, condition) && !broken_resumption(s, err, condition)) return 0;
  if (s->state == EPODE_STATE_CLOSING || s->state == EPODE_STATE_CLOSED) return 0;
  /* The first connection counts as an attempt; a session that was ready
   * starts counting again. */
  unsigned max = s->cfg->rc_max_attempts;
  return !max || s->rc_attempts < max;
}

static uint32_t backoff(epode_session *s) {
  unsigned n = s->rc_attempts ? s->rc_attempts - 1 : 0;
  uint64_t d = s->cfg->rc_initial_ms;
  while (n-- && d < s->cfg->rc_max_ms) d *= 2;
  if (d > s->cfg->rc_max_ms) d = s->cfg->rc_max_ms;
  /* Jitter: somewhere between half and all of it, so clients that lost
   * the same server do not come back in step. */
  uint32_t r = 0;
  if (s->cfg->random_fn(s->cfg->random_ud, (unsigned char *)&r, sizeof r) != 0) r = 0;
  uint64_t half = d / 2;
  return (uint32_t)(d - half + (half ? r % (half + 1) : 0));
}

/* What belongs to one connection's stream: forgotten when it ends early
 * (redirect, lost connection). Handlers, pending iqs, the send queue and
 * the XEP-0198 state stay. */
static void drop_stream(epode_session *s) {
  epode__sasl_clear(s);
  epode__xml_parser_reset(s->parser); /* inside a parser callback: drops the rest */
  s->neg = NEG_NONE;
  s->authenticated = s->secure = s->session_needed = s->bind_offered = 0;
  s->on_resumed_stream = 0;
  s->sm_offered = 0;
  epode__cb_clear(s);
  s->neg_deadline = s->close_deadline = 0;
  s->ka_deadline = 0;
  char **strs[] = {&s->stream_id, &s->bind_id, &s->session_id};
  for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) {
    epode__free(s->mem, *strs[i]);
    *strs[i] = NULL;
  }
  epode__buf_reset(&s->out);
  s->out_off = s->msg_head = s->msg_tail = s->msg_done = 0;
  epode__sm_suspend(s);
}

/* The connection is gone but reconnection is on: keep the session for the
 * next one and say when that should start. */
static void suspend(epode_session *s) {
  if (broken_resumption(s, s->failure.err, s->failure.condition)) {
    epode__log(s->cfg, EPODE_LOG_WARN, "sm",
               "the server broke the resumed stream; the next attempt starts a fresh session");
    epode__sm_fresh(s);
  } else if (s->neg == NEG_WAIT_RESUME) {
    /* The stream broke while the server was answering <resume/> (or never
     * did): do not bet the next attempt on it too. */
    epode__log(s->cfg, EPODE_LOG_WARN, "sm",
               "no answer to <resume/>; the next attempt starts a fresh session");
    epode__sm_fresh(s);
  }
  drop_stream(s);
  s->rc_attempts++;
  uint32_t delay = backoff(s);
  s->rc_due = s->now + delay;
  epode__log(s->cfg, EPODE_LOG_INFO, "session",
             "disconnected (%u failed attempt%s in a row); reconnecting in %u ms",
             s->rc_attempts, s->rc_attempts == 1 ? "" : "s", (unsigned)delay);
  epode__session_set_state(s, EPODE_STATE_DISCONNECTED);
  if (s->state == EPODE_STATE_DISCONNECTED) {
    epode_event extra = {.retry_ms = delay, .attempt = s->rc_attempts};
    emit_ev(s, EPODE_EV_DISCONNECTED, &extra);
  }
}

/* Ready (again): the failure that led here is history. */
static void clear_failure(epode_session *s) {
  char **strs[] = {&s->f_condition, &s->f_text, &s->f_mechanism, &s->f_detail};
  for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) {
    epode__free(s->mem, *strs[i]);
    *strs[i] = NULL;
  }
  memset(&s->failure, 0, sizeof s->failure);
  s->failure.detail = "no failure";
  s->rc_attempts = 0;
  s->rc_due = 0;
  s->redirected = 0;
}

epode_err epode__session_fail(epode_session *s, epode_err err, const char *stream_cond,
                              const char *condition, const char *text, const char *fmt, ...) {
  if (s->state == EPODE_STATE_CLOSED) return err;
  char detail[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  set_str(s, &s->f_detail, detail, sizeof detail);
  set_str(s, &s->f_condition, condition, 128);
  set_str(s, &s->f_text, text, EPODE_MAX_ERROR_TEXT_BYTES);
  set_str(s, &s->f_mechanism, err == EPODE_ERR_AUTH || err == EPODE_ERR_SASL_PROTOCOL ||
                                      err == EPODE_ERR_SASL_SIGNATURE
                                  ? s->mech_name
                                  : NULL,
          64);
  s->failure.err = err;
  s->failure.condition = s->f_condition;
  s->failure.text = s->f_text;
  s->failure.mechanism = s->f_mechanism;
  s->failure.detail = s->f_detail ? s->f_detail : epode_strerror(err);
  if (will_retry(s, err, condition)) {
    epode__log(s->cfg, EPODE_LOG_WARN, "session", "%s: %s", epode_strerror(err), detail);
    suspend(s);
    return err;
  }
  epode__log(s->cfg, EPODE_LOG_ERROR, "session", "%s: %s", epode_strerror(err), detail);

  /* Tell the peer why, if the stream is still open in our direction. */
  int stream_open = s->state >= EPODE_STATE_OPENING && s->state < EPODE_STATE_CLOSING &&
                    s->neg != NEG_WAIT_TLS;
  if (stream_cond && stream_open) {
    char buf[256];
    int n = snprintf(buf, sizeof buf,
                     s->framing == EPODE_FRAMING_STREAM
                         ? "<stream:error><%s xmlns='" EPODE_NS_STREAM_ERRORS "'/></stream:error>"
                         : "<stream:error xmlns:stream='" EPODE_NS_STREAMS "'><%s xmlns='" EPODE_NS_STREAM_ERRORS
                           "'/></stream:error>",
                     stream_cond);
    if (n > 0 && (size_t)n < sizeof buf && !epode__session_write(s, buf, (size_t)n))
      epode__session_log_out(s, buf, (size_t)n);
  }
  if (stream_open && (stream_cond || err != EPODE_ERR_EOF)) write_close(s);
  emit(s, EPODE_EV_ERROR);
  finish_closed(s);
  return err;
}

const epode_failure *epode_session_failure(const epode_session *s) { return &s->failure; }

/* ------------------------------------------------------------------ stream */

static epode_err open_stream(epode_session *s) {
  epode__buf hdr;
  epode__buf_init(&hdr, s->mem, 0);
  const char *domain = epode_jid_domain(s->jid);
  int framed = s->framing != EPODE_FRAMING_STREAM;
  epode_err e = epode__buf_append_str(&hdr, framed ? "<open xmlns='" EPODE_NS_FRAMING "' to='"
                                                   : "<?xml version='1.0'?><stream:stream to='");
  if (!e) e = epode__buf_append_escaped(&hdr, domain, strlen(domain), 1);
  if (!e && s->secure && epode_jid_local(s->jid)) {
    /* RFC 6120 §4.7.1: include 'from' once the stream is protected. */
    const char *bare = epode_jid_bare(s->jid);
    e = epode__buf_append_str(&hdr, "' from='");
    if (!e) e = epode__buf_append_escaped(&hdr, bare, strlen(bare), 1);
  }
  if (!e)
    e = epode__buf_append_str(&hdr, framed ? "' version='1.0' xml:lang='en'/>"
                                           : "' version='1.0' xml:lang='en' xmlns='" EPODE_NS_CLIENT
                                             "' xmlns:stream='" EPODE_NS_STREAMS "'>");
  if (!e) e = epode__session_write(s, hdr.data, hdr.len);
  if (!e) epode__session_log_out(s, hdr.data, hdr.len);
  epode__buf_free(&hdr);
  if (e) return e;
  s->neg = NEG_WAIT_FEATURES;
  return EPODE_OK;
}

/* Restarts the stream after TLS or SASL: a fresh parser document and a new
 * header (RFC 6120 §5.3.2, §6.4.6). */
static epode_err restart_stream(epode_session *s) {
  /* Framed streams restart with a new <open/>; each message is its own
   * document, so the parser carries on. */
  epode_err e = s->framing == EPODE_FRAMING_STREAM ? epode__xml_parser_reset(s->parser) : EPODE_OK;
  if (e) return e;
  epode__free(s->mem, s->stream_id);
  s->stream_id = NULL;
  return open_stream(s);
}

static epode_err cb_stream_start(void *ud, const char *name, const char *ns,
                                 const char *default_ns, const char **attrs) {
  epode_session *s = ud;
  if (EPODE__LOG_ON(s->cfg, EPODE_LOG_TRAFFIC)) {
    epode__buf b;
    epode__buf_init(&b, s->mem, 0);
    epode__buf_append_str(&b, "<stream:stream");
    for (size_t i = 0; attrs && attrs[i]; i += 2)
      epode__buf_printf(&b, " %s='%s'", attrs[i], attrs[i + 1]);
    epode__buf_append_str(&b, ">");
    if (b.data) epode__log(s->cfg, EPODE_LOG_TRAFFIC, "xml-in", "%s", b.data);
    epode__buf_free(&b);
  }
  if (strcmp(name, "stream") != 0 || !ns || strcmp(ns, EPODE_NS_STREAMS) != 0)
    return epode__session_fail(s, EPODE_ERR_PROTOCOL, "invalid-namespace", NULL, NULL,
                               "the server opened <%s> in namespace '%s' instead of a stream",
                               name, ns ? ns : "");
  if (!default_ns || strcmp(default_ns, EPODE_NS_CLIENT) != 0)
    return epode__session_fail(s, EPODE_ERR_PROTOCOL, "invalid-namespace", NULL, NULL,
                               "the server's stream has default namespace '%s', not jabber:client",
                               default_ns ? default_ns : "");
  const char *version = NULL;
  for (size_t i = 0; attrs && attrs[i]; i += 2) {
    if (!strcmp(attrs[i], "id")) {
      epode__free(s->mem, s->stream_id);
      s->stream_id = epode__strndup(s->mem, attrs[i + 1],
                                    strnlen(attrs[i + 1], EPODE_MAX_STREAM_ID_BYTES));
    } else if (!strcmp(attrs[i], "version")) {
      version = attrs[i + 1];
    }
  }
  if (!version || strncmp(version, "1.", 2) != 0)
    return epode__session_fail(s, EPODE_ERR_PROTOCOL, "unsupported-version", NULL, NULL,
                               "the server speaks stream version '%s'; XMPP 1.0 is required",
                               version ? version : "(none, pre-XMPP)");
  return EPODE_OK;
}

static void log_in(epode_session *s, const epode_stanza *st) {
  if (!EPODE__LOG_ON(s->cfg, EPODE_LOG_TRAFFIC)) return;
  const char *ns = epode_stanza_ns(st);
  if (ns && !strcmp(ns, EPODE_NS_SASL) && epode_stanza_first_child(st) &&
      epode_stanza_is_text(epode_stanza_first_child(st))) {
    epode__log(s->cfg, EPODE_LOG_TRAFFIC, "xml-in", "<%s xmlns='%s'>[redacted]</%s>",
               epode_stanza_name(st), ns, epode_stanza_name(st));
    return;
  }
  char *xml;
  size_t len;
  if (epode_stanza_to_string(st, EPODE_NS_CLIENT, &xml, &len) == EPODE_OK) {
    epode__log(s->cfg, EPODE_LOG_TRAFFIC, "xml-in", "%s", xml);
    epode__free(s->mem, xml);
  }
}

static const char *error_condition(const epode_stanza *err, const char *ns, const char **text) {
  const char *cond = NULL;
  *text = NULL;
  for (epode_stanza *c = epode_stanza_first_child(err); c; c = epode_stanza_next_sibling(c)) {
    if (epode_stanza_is_text(c)) continue;
    const char *cns = epode_stanza_ns(c);
    if (!cns || strcmp(cns, ns) != 0) continue;
    if (!strcmp(epode_stanza_name(c), "text"))
      *text = epode_stanza_text(c);
    else if (!cond)
      cond = epode_stanza_name(c);
  }
  return cond;
}

static epode_err redirect(epode_session *s, const char *uri);

/* RFC 6120 §4.9.3.19: host, host:port or [IPv6]:port. */
static int valid_other_host(const char *v) {
  size_t n = v ? strlen(v) : 0;
  if (!n || n > 300) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)v[i];
    if (!(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && !(c >= '0' && c <= '9') &&
        !strchr(".-:[]_", c))
      return 0;
  }
  return 1;
}

static epode_err handle_stream_error(epode_session *s, const epode_stanza *st) {
  const char *text;
  const char *cond = error_condition(st, EPODE_NS_STREAM_ERRORS, &text);
  if (cond && !strcmp(cond, "see-other-host") && s->framing == EPODE_FRAMING_STREAM) {
    const char *host =
        epode_stanza_text(epode_stanza_find_child(st, "see-other-host", EPODE_NS_STREAM_ERRORS));
    if (!s->redirected && valid_other_host(host)) return redirect(s, host);
    return epode__session_fail(s, EPODE_ERR_STREAM, NULL, "see-other-host", host,
                               "the server sends us to %s%s",
                               host && *host ? host : "(no host given)",
                               s->redirected ? " after an earlier redirect (followed once)"
                                             : valid_other_host(host) ? "" : ", which is not a host");
  }
  /* The server closes the stream after an error; we answer with our close. */
  return epode__session_fail(s, EPODE_ERR_STREAM, NULL, cond ? cond : "undefined-condition",
                             text, "the server ended the stream with <%s/>%s%s",
                             cond ? cond : "undefined-condition", text ? ": " : "",
                             text ? text : "");
}

static epode_err send_bind(epode_session *s) {
  char id[24];
  epode_err e = epode_session_new_id(s, id, sizeof id);
  if (e) return e;
  epode_stanza *iq, *bind, *res;
  if ((e = epode_iq_new(&iq, s->mem, "set", id))) return e;
  e = epode_stanza_add_child_new(&bind, iq, "bind", EPODE_NS_BIND);
  const char *resource = s->cfg->resource ? s->cfg->resource : epode_jid_resource(s->jid);
  if (!e && resource) {
    e = epode_stanza_add_child_new(&res, bind, "resource", NULL);
    if (!e) e = epode_stanza_add_text(res, resource, strlen(resource));
  }
  if (!e) e = epode__session_write_stanza(s, iq);
  epode_stanza_free(iq);
  if (e) return e;
  epode__free(s->mem, s->bind_id);
  if (!(s->bind_id = epode__strdup(s->mem, id))) return EPODE_ERR_NOMEM;
  s->neg = NEG_WAIT_BIND;
  epode__session_set_state(s, EPODE_STATE_BINDING);
  return EPODE_OK;
}

static epode_err become_ready(epode_session *s) {
  s->neg = NEG_DONE;
  s->neg_deadline = 0;
  /* <enable/> first: the queued stanzas then count for XEP-0198. */
  epode_err e = epode__sm_enable(s);
  /* Stanzas a broken connection left unacknowledged go first. */
  if (!e) e = epode__sm_resend_fresh(s);
  if (!e) e = epode__queue_flush(s);
  if (e) return epode__session_fail(s, e, NULL, NULL, NULL, "could not flush the send queue");
  s->last_rx = s->now; /* the idle clock starts now */
  s->ka_deadline = 0;
  clear_failure(s);
  epode__session_set_state(s, EPODE_STATE_READY);
  if (s->state == EPODE_STATE_READY) emit(s, EPODE_EV_READY);
  return EPODE_OK;
}

/* XEP-0198: the old stream is back. */
static epode_err resumed(epode_session *s, epode_err e) {
  if (!e) e = epode__queue_flush(s);
  if (e) return epode__session_fail(s, e, NULL, NULL, NULL, "could not resend after resuming");
  s->neg = NEG_DONE;
  s->neg_deadline = 0;
  s->last_rx = s->now;
  s->ka_deadline = 0;
  clear_failure(s);
  s->on_resumed_stream = 1;
  epode__session_set_state(s, EPODE_STATE_READY);
  if (s->state == EPODE_STATE_READY) emit(s, EPODE_EV_RESUMED);
  return EPODE_OK;
}

static epode_err bind_fresh(epode_session *s);

static epode_err handle_features(epode_session *s, const epode_stanza *f) {
  epode_stanza *starttls = epode_stanza_find_child(f, "starttls", EPODE_NS_TLS);
  int plaintext_ok = (s->cfg->flags & EPODE_CFG_ALLOW_PLAINTEXT) != 0;

  if (!s->secure && s->framing != EPODE_FRAMING_STREAM && !plaintext_ok)
    return epode__session_fail(s, EPODE_ERR_TLS_REQUIRED, "policy-violation", NULL, NULL,
                               "the %s transport is not encrypted (use %s, or allow plaintext "
                               "explicitly with EPODE_CFG_ALLOW_PLAINTEXT)",
                               s->framing == EPODE_FRAMING_BOSH ? "BOSH http://" : "WebSocket ws://",
                               s->framing == EPODE_FRAMING_BOSH ? "https://" : "wss://");
  if (!s->secure && s->framing == EPODE_FRAMING_STREAM) {
    if (starttls) {
      static const char req[] = "<starttls xmlns='" EPODE_NS_TLS "'/>";
      epode_err e = epode__session_write(s, req, sizeof req - 1);
      if (e) return epode__session_fail(s, e, NULL, NULL, NULL, "cannot queue <starttls/>");
      epode__session_log_out(s, req, sizeof req - 1);
      s->neg = NEG_WAIT_PROCEED;
      return EPODE_OK;
    }
    if (!plaintext_ok)
      return epode__session_fail(s, EPODE_ERR_TLS_REQUIRED, "policy-violation", NULL, NULL,
                                 "the server does not offer STARTTLS; refusing to continue "
                                 "unencrypted (allow it explicitly with "
                                 "EPODE_CFG_ALLOW_PLAINTEXT)");
  }

  if (!s->authenticated) {
    epode_stanza *mechs = epode_stanza_find_child(f, "mechanisms", EPODE_NS_SASL);
    if (!mechs)
      return epode__session_fail(s, EPODE_ERR_SASL_NOMECH, "unsupported-feature", NULL, NULL,
                                 "the server offers no SASL mechanisms");
    epode__session_set_state(s, EPODE_STATE_AUTHENTICATING);
    return epode__sasl_begin(s, f, mechs);
  }

  epode__sm_features(s, f);
  epode_stanza *sess = epode_stanza_find_child(f, "session", EPODE_NS_SESSION);
  s->session_needed = sess && !epode_stanza_find_child(sess, "optional", NULL);
  s->bind_offered = epode_stanza_find_child(f, "bind", EPODE_NS_BIND) != NULL;
  if (epode__sm_can_resume(s)) {
    epode_err e = epode__sm_resume(s);
    if (e) return epode__session_fail(s, e, NULL, NULL, NULL, "cannot send <resume/>");
    s->neg = NEG_WAIT_RESUME;
    epode__session_set_state(s, EPODE_STATE_BINDING);
    return EPODE_OK;
  }
  epode__sm_fresh(s);
  return bind_fresh(s);
}

static epode_err bind_fresh(epode_session *s) {
  if (!s->bind_offered)
    return epode__session_fail(s, EPODE_ERR_BIND, "unsupported-feature", NULL, NULL,
                               "the server offers no resource binding after authentication");
  epode_err e = send_bind(s);
  if (e) return epode__session_fail(s, e, NULL, NULL, NULL, "cannot send the bind request");
  return EPODE_OK;
}

static epode_err stanza_error_fail(epode_session *s, const epode_stanza *iq, epode_err err,
                                   const char *what) {
  epode_stanza *er = epode_stanza_find_child(iq, "error", NULL);
  const char *text = NULL, *cond = NULL;
  if (er) cond = error_condition(er, EPODE_NS_STANZA_ERRORS, &text);
  return epode__session_fail(s, err, NULL, cond, text, "%s failed: %s%s%s", what,
                             cond ? cond : "no condition given", text ? ": " : "",
                             text ? text : "");
}

static int is_reply_to(const epode_stanza *st, const char *id) {
  const char *sid = epode_stanza_id(st), *type = epode_stanza_type(st);
  return id && sid && !strcmp(sid, id) && !strcmp(epode_stanza_name(st), "iq") && type &&
         (!strcmp(type, "result") || !strcmp(type, "error"));
}

static epode_err handle_bind_reply(epode_session *s, const epode_stanza *st) {
  if (strcmp(epode_stanza_type(st), "result") != 0)
    return stanza_error_fail(s, st, EPODE_ERR_BIND, "resource binding");
  epode_stanza *bind = epode_stanza_find_child(st, "bind", EPODE_NS_BIND);
  const char *jid = bind ? epode_stanza_child_text(bind, "jid") : NULL;
  epode_jid *parsed = NULL;
  epode_err pe = jid ? epode_jid_parse(&parsed, s->mem, jid) : EPODE_ERR_JID;
  if (pe == EPODE_ERR_NOMEM)
    return epode__session_fail(s, pe, NULL, NULL, NULL, "out of memory reading the bind result");
  if (pe != EPODE_OK || !epode_jid_resource(parsed)) {
    epode_jid_free(parsed);
    return epode__session_fail(s, EPODE_ERR_BIND, "undefined-condition", NULL, NULL,
                               "the server's bind result has no valid full JID ('%s')",
                               jid ? jid : "");
  }
  /* With EXTERNAL the server picks the identity from the certificate: make
   * sure it is the account we were asked to log in as. */
  if (s->mech_name && !strcmp(s->mech_name, "EXTERNAL") && !s->cfg->authzid &&
      strcasecmp(epode_jid_bare(parsed), epode_jid_bare(s->jid)) != 0) {
    char got[EPODE_MAX_JID_BYTES + 1];
    snprintf(got, sizeof got, "%s", epode_jid_bare(parsed));
    epode_jid_free(parsed);
    return epode__session_fail(s, EPODE_ERR_AUTH, NULL, NULL, NULL,
                               "the server logged the certificate in as %s, not as %s; to act as "
                               "%s, ask for it with an authorization identity (authzid)",
                               got, epode_jid_bare(s->jid), epode_jid_bare(s->jid));
  }
  epode__free(s->mem, s->bound_jid);
  s->bound_jid = epode__strdup(s->mem, epode_jid_full(parsed));
  epode_jid_free(parsed);
  if (!s->bound_jid) return epode__session_fail(s, EPODE_ERR_NOMEM, NULL, NULL, NULL, "bind");
  epode__log(s->cfg, EPODE_LOG_INFO, "session", "bound as %s", s->bound_jid);

  if (s->session_needed) {
    char id[24];
    epode_stanza *iq = NULL, *child;
    epode_err e = epode_session_new_id(s, id, sizeof id);
    if (!e) e = epode_iq_new(&iq, s->mem, "set", id);
    if (!e) e = epode_stanza_add_child_new(&child, iq, "session", EPODE_NS_SESSION);
    if (!e) e = epode__session_write_stanza(s, iq);
    epode_stanza_free(iq);
    epode__free(s->mem, s->session_id);
    s->session_id = e ? NULL : epode__strdup(s->mem, id);
    if (e || !s->session_id)
      return epode__session_fail(s, e ? e : EPODE_ERR_NOMEM, NULL, NULL, NULL,
                                 "cannot send the session request");
    s->neg = NEG_WAIT_SESSION;
    return EPODE_OK;
  }
  return become_ready(s);
}

/* see-other-uri before we are ready: back to IDLE with handlers, pending
 * iqs and queued stanzas kept, so the transport can start us again at the
 * new address. Nothing is written: the transport closes the connection. */
static epode_err redirect(epode_session *s, const char *uri) {
  char target[2048];
  snprintf(target, sizeof target, "%s", uri);
  epode__log(s->cfg, EPODE_LOG_INFO, "session", "the server redirects to %s", target);
  s->redirected = 1;
  drop_stream(s);
  epode__session_set_state(s, EPODE_STATE_IDLE);
  epode_event extra = {.uri = target};
  emit_ev(s, EPODE_EV_REDIRECT, &extra);
  return EPODE_OK;
}

/* RFC 7395 <open/> (the server's stream header) and <close/> (its end,
 * possibly redirecting with see-other-uri). */
static epode_err framing_element(epode_session *s, const epode_stanza *st) {
  const char *name = epode_stanza_name(st);
  if (!strcmp(name, "open")) {
    const char *version = epode_stanza_get_attr(st, "version");
    if (!version || strncmp(version, "1.", 2) != 0)
      return epode__session_fail(s, EPODE_ERR_PROTOCOL, "unsupported-version", NULL, NULL,
                                 "the server's <open/> has version '%s'; XMPP 1.0 is required",
                                 version ? version : "(none)");
    const char *id = epode_stanza_get_attr(st, "id");
    if (id) {
      epode__free(s->mem, s->stream_id);
      s->stream_id = epode__strndup(s->mem, id, strnlen(id, EPODE_MAX_STREAM_ID_BYTES));
    }
    return EPODE_OK;
  }
  if (!strcmp(name, "close")) {
    const char *uri = epode_stanza_get_attr(st, "see-other-uri");
    if (uri && !s->redirected && s->state != EPODE_STATE_READY &&
        s->state != EPODE_STATE_CLOSING && strlen(uri) < 2048)
      return redirect(s, uri);
    if (uri)
      return epode__session_fail(s, EPODE_ERR_STREAM, NULL, "see-other-uri", uri,
                                 "the server redirects to %s", uri);
    if (s->state == EPODE_STATE_CLOSING) {
      s->clean_close = 1;
      finish_closed(s);
      return EPODE_OK;
    }
    return epode__session_fail(s, EPODE_ERR_CLOSED, NULL, NULL, NULL,
                               "the server closed the stream while %s",
                               epode_state_name(s->state));
  }
  epode__log(s->cfg, EPODE_LOG_WARN, "session", "ignoring unknown framing element <%s/>", name);
  return EPODE_OK;
}

static epode_err on_element(epode_session *s, const epode_stanza *st) {
  const char *name = epode_stanza_name(st), *ns = epode_stanza_ns(st);
  if (!ns) ns = "";
  /* What a ready stream receives all the time: an element in jabber:client.
   * None of the checks below can apply to it (stream errors, framing and
   * XEP-0198 elements have namespaces of their own), so straight to the
   * handlers, and it counts for XEP-0198 if it is a stanza. Names and
   * namespaces are atoms (xml/stanza_int.h): these are pointer comparisons. */
  if (s->neg == NEG_DONE &&
      (s->state == EPODE_STATE_READY || s->state == EPODE_STATE_CLOSING) &&
      epode__str_eq(ns, epode__atoms.ns_client)) {
    epode_err e = epode__dispatch(s, st);
    if (epode__str_eq(name, epode__atoms.message) || epode__str_eq(name, epode__atoms.presence) ||
        epode__str_eq(name, epode__atoms.iq))
      epode__sm_received(s);
    return e;
  }
  if (!strcmp(name, "error") && !strcmp(ns, EPODE_NS_STREAMS)) return handle_stream_error(s, st);
  if (s->framing != EPODE_FRAMING_STREAM && !strcmp(ns, EPODE_NS_FRAMING))
    return framing_element(s, st);

  switch (s->neg) {
  case NEG_WAIT_FEATURES:
    if (!strcmp(name, "features") && !strcmp(ns, EPODE_NS_STREAMS)) return handle_features(s, st);
    break;
  case NEG_WAIT_PROCEED:
    if (!strcmp(ns, EPODE_NS_TLS)) {
      if (!strcmp(name, "proceed")) {
        /* Everything after <proceed/> is TLS; the parser starts over once
         * the transport has secured the stream. */
        epode__xml_parser_reset(s->parser);
        s->neg = NEG_WAIT_TLS;
        epode__session_set_state(s, EPODE_STATE_STARTTLS);
        emit(s, EPODE_EV_STARTTLS);
        return EPODE_OK;
      }
      return epode__session_fail(s, EPODE_ERR_TLS, NULL, name, NULL,
                                 "the server refused STARTTLS (<%s/>)", name);
    }
    break;
  case NEG_SASL:
    if (!strcmp(ns, EPODE_NS_SASL)) {
      int done = 0;
      epode_err e = epode__sasl_handle(s, st, &done);
      if (e || !done) return e;
      s->authenticated = 1;
      epode_err r = restart_stream(s);
      if (r) return epode__session_fail(s, r, NULL, NULL, NULL, "cannot restart the stream");
      epode__session_set_state(s, EPODE_STATE_OPENING);
      return EPODE_OK;
    }
    break;
  case NEG_WAIT_RESUME: {
    epode_err e;
    switch (epode__sm_resume_answer(s, st, &e)) {
    case 1: return e;
    case 2: return resumed(s, e);
    case 3: return bind_fresh(s);
    default: break;
    }
    break;
  }
  case NEG_WAIT_BIND:
    if (is_reply_to(st, s->bind_id)) return handle_bind_reply(s, st);
    break;
  case NEG_WAIT_SESSION:
    if (is_reply_to(st, s->session_id)) {
      if (strcmp(epode_stanza_type(st), "result") != 0)
        return stanza_error_fail(s, st, EPODE_ERR_BIND, "session establishment");
      return become_ready(s);
    }
    break;
  case NEG_DONE:
    if (s->state == EPODE_STATE_READY || s->state == EPODE_STATE_CLOSING) {
      if (epode__sm_element(s, st)) return EPODE_OK;
      epode_err e = epode__dispatch(s, st);
      if (!strcmp(ns, EPODE_NS_CLIENT) &&
          (!strcmp(name, "message") || !strcmp(name, "presence") || !strcmp(name, "iq")))
        epode__sm_received(s);
      return e;
    }
    return EPODE_OK;
  case NEG_NONE:
  case NEG_WAIT_TLS:
    break;
  }
  /* Something the negotiation did not expect. Stanzas before we are bound
   * are a server bug; anything else (e.g. a stream-management nudge) is
   * ignored with a note. */
  if (!strcmp(ns, EPODE_NS_CLIENT) &&
      (!strcmp(name, "message") || !strcmp(name, "presence") || !strcmp(name, "iq")))
    return epode__session_fail(s, EPODE_ERR_PROTOCOL, "not-authorized", NULL, NULL,
                               "the server sent a <%s/> stanza before the session was ready",
                               name);
  /* TLS and SASL elements only make sense where negotiation expects them:
   * a <success/> out of turn is an attack or a broken server, not noise. */
  if (!strcmp(ns, EPODE_NS_SASL) || !strcmp(ns, EPODE_NS_TLS))
    return epode__session_fail(s, EPODE_ERR_PROTOCOL, "policy-violation", NULL, NULL,
                               "the server sent <%s xmlns='%s'> out of turn (while %s)", name, ns,
                               epode_state_name(s->state));
  epode__log(s->cfg, EPODE_LOG_WARN, "session", "ignoring unexpected <%s xmlns='%s'> while %s",
             name, ns, epode_state_name(s->state));
  return EPODE_OK;
}

static epode_err cb_stanza(void *ud, epode_stanza *st) {
  epode_session *s = ud;
  log_in(s, st);
  epode_err e = on_element(s, st);
  epode_stanza_free(st);
  /* A closed session stops the parser; the error was already reported. */
  if (s->state == EPODE_STATE_CLOSED) return s->failure.err ? s->failure.err : EPODE_ERR_CLOSED;
  return e;
}

static epode_err cb_stream_end(void *ud) {
  epode_session *s = ud;
  epode__log(s->cfg, EPODE_LOG_TRAFFIC, "xml-in", "</stream:stream>");
  if (s->state == EPODE_STATE_CLOSING) {
    s->clean_close = 1;
    finish_closed(s);
    return EPODE_OK;
  }
  return epode__session_fail(s, EPODE_ERR_CLOSED, NULL, NULL, NULL,
                             "the server closed the stream while %s",
                             epode_state_name(s->state));
}

static const epode__xml_callbacks session_xml_cbs = {cb_stream_start, cb_stanza, cb_stream_end};

/* ------------------------------------------------------------------ API */

epode_err epode_session_new(epode_session **out, const epode_config *cfg) {
  if (!out || !cfg) return EPODE_ERR_INVAL;
  *out = NULL;
  if (!cfg->jid) return EPODE_ERR_INVAL;
  epode_session *s = epode__calloc(&cfg->mem, sizeof *s);
  if (!s) return EPODE_ERR_NOMEM;
  epode_err e = epode_config_clone(&s->cfg, cfg);
  if (e) {
    epode__free(&cfg->mem, s);
    return e;
  }
  s->mem = &s->cfg->mem;
  epode__buf_init(&s->out, s->mem, (size_t)s->cfg->limits[EPODE_LIMIT_OUTPUT_BYTES]);
  s->failure.detail = "no failure";
  if ((e = epode_jid_parse(&s->jid, s->mem, cfg->jid))) goto fail;
  epode__xml_limits lim = {(size_t)s->cfg->limits[EPODE_LIMIT_STANZA_BYTES],
                           (unsigned)s->cfg->limits[EPODE_LIMIT_DEPTH],
                           (unsigned)s->cfg->limits[EPODE_LIMIT_ATTRS]};
  if ((e = epode__xml_parser_new(&s->parser, s->mem, &lim, EPODE__XML_STREAM, &session_xml_cbs, s)))
    goto fail;
  unsigned char rnd[4];
  if (s->cfg->random_fn(s->cfg->random_ud, rnd, sizeof rnd) != 0) {
    e = EPODE_ERR_SYS;
    goto fail;
  }
  snprintf(s->id_prefix, sizeof s->id_prefix, "%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3]);
  *out = s;
  return EPODE_OK;
fail:
  epode_session_free(s);
  return e;
}

void epode_session_free(epode_session *s) {
  if (!s) return;
  const epode_mem *m = s->mem;
  epode__sasl_clear(s);
  epode__queue_clear(s);
  epode__sm_free(s);
  epode__handlers_free(s);
  epode__xml_parser_free(s->parser);
  epode_jid_free(s->jid);
  epode__buf_free(&s->out);
  epode__free(m, s->msgs);
  epode__cb_clear(s);
  if (s->scram_got) epode__wipe(s->scram_got, sizeof *s->scram_got);
  epode__free(m, s->scram_got);
  char **strs[] = {&s->stream_id, &s->bind_id,     &s->session_id,  &s->bound_jid, &s->mech_name,
                   &s->f_condition, &s->f_text, &s->f_mechanism, &s->f_detail};
  for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) epode__free(m, *strs[i]);
  epode_config *cfg = s->cfg;
  if (cfg) {
    epode_mem mem = cfg->mem;
    epode_config_free(cfg);
    epode__free(&mem, s);
  }
}

epode_err epode_session_set_framing(epode_session *s, epode_framing framing) {
  if (!s || (framing != EPODE_FRAMING_STREAM && framing != EPODE_FRAMING_WEBSOCKET &&
             framing != EPODE_FRAMING_BOSH))
    return EPODE_ERR_INVAL;
  if (framing == s->framing) return EPODE_OK;
  if (s->state != EPODE_STATE_IDLE) return EPODE_ERR_STATE;
  /* WebSocket messages are separate documents; BOSH hands us elements. */
  epode__xml_limits lim = {(size_t)s->cfg->limits[EPODE_LIMIT_STANZA_BYTES],
                           (unsigned)s->cfg->limits[EPODE_LIMIT_DEPTH],
                           (unsigned)s->cfg->limits[EPODE_LIMIT_ATTRS]};
  epode__xml_parser *p;
  epode_err e = epode__xml_parser_new(&p, s->mem, &lim,
                                      framing == EPODE_FRAMING_STREAM ? EPODE__XML_STREAM
                                                                      : EPODE__XML_FRAGMENTS,
                                      &session_xml_cbs, s);
  if (e) return e;
  epode__xml_parser_free(s->parser);
  s->parser = p;
  s->framing = framing;
  return EPODE_OK;
}

epode_framing epode_session_framing(const epode_session *s) { return s->framing; }

epode_err epode_session_recv_element(epode_session *s, const epode_stanza *el, uint64_t now_ms) {
  if (!s || !el || epode_stanza_is_text(el)) return EPODE_ERR_INVAL;
  if (s->framing != EPODE_FRAMING_BOSH) return EPODE_ERR_STATE;
  if (s->state == EPODE_STATE_CLOSED || s->state == EPODE_STATE_IDLE ||
      s->state == EPODE_STATE_DISCONNECTED)
    return EPODE_ERR_STATE;
  s->now = now_ms;
  epode__ka_received(s);
  log_in(s, el);
  on_element(s, el);
  return s->state == EPODE_STATE_CLOSED ? s->failure.err : EPODE_OK;
}

void epode_session_set_event_cb(epode_session *s, epode_event_fn fn, void *ud) {
  s->ev_fn = fn;
  s->ev_ud = ud;
}

static void copy_cb(unsigned char *dst, size_t *dst_len, const unsigned char *src, size_t len) {
  if (!src || len > 64) len = 0;
  if (len) memcpy(dst, src, len);
  *dst_len = len;
}

static epode_err take_tls(epode_session *s, const epode_tls_info *tls) {
  s->secure = 1;
  s->tls_version = tls->version;
  /* Without it SCRAM would say "no channel binding" (gs2 'n') and lose its
   * downgrade protection: out of memory is an error, not a quiet change. */
  if (!s->cb && !(s->cb = epode__calloc(s->mem, sizeof *s->cb))) return EPODE_ERR_NOMEM;
  copy_cb(s->cb->unique, &s->cb->unique_len, tls->tls_unique, tls->tls_unique_len);
  copy_cb(s->cb->exporter, &s->cb->exporter_len, tls->tls_exporter, tls->tls_exporter_len);
  copy_cb(s->cb->endpoint, &s->cb->endpoint_len, tls->tls_server_end_point,
          tls->tls_server_end_point_len);
  return EPODE_OK;
}

epode_err epode_session_start(epode_session *s, uint64_t now_ms, const epode_tls_info *tls) {
  if (!s) return EPODE_ERR_INVAL;
  if (s->state != EPODE_STATE_IDLE && s->state != EPODE_STATE_RESOLVING &&
      s->state != EPODE_STATE_CONNECTING && s->state != EPODE_STATE_TLS_HANDSHAKE &&
      s->state != EPODE_STATE_DISCONNECTED)
    return EPODE_ERR_STATE;
  s->now = now_ms;
  s->rc_due = 0;
  uint32_t t = s->cfg->timeouts[EPODE_TIMEOUT_NEGOTIATION];
  s->neg_deadline = t ? now_ms + t : 0;
  epode__session_set_state(s, EPODE_STATE_OPENING);
  epode_err e = tls ? take_tls(s, tls) : EPODE_OK;
  if (!e) e = open_stream(s);
  if (e) return epode__session_fail(s, e, NULL, NULL, NULL, "cannot open the stream");
  return EPODE_OK;
}

static const char *stream_condition_for(epode_err e) {
  switch (e) {
  case EPODE_ERR_XML_RESTRICTED: return "restricted-xml";
  case EPODE_ERR_XML_NS: return "invalid-namespace";
  case EPODE_ERR_LIMIT: return "policy-violation";
  case EPODE_ERR_NOMEM: return "resource-constraint";
  default: return "not-well-formed";
  }
}

/* After the parser took input (feed or commit) and returned `e`. */
static epode_err after_input(epode_session *s, epode_err e) {
  if (s->state == EPODE_STATE_DISCONNECTED || s->state == EPODE_STATE_IDLE)
    return EPODE_OK; /* the stream ended, the session waits for the next */
  if (e && s->state != EPODE_STATE_CLOSED) {
    /* The parser itself refused the input. */
    const char *msg = epode__xml_parser_errmsg(s->parser);
    return epode__session_fail(s, e, stream_condition_for(e), NULL, NULL,
                               "bad XML from the server: %s", msg);
  }
  if (s->state == EPODE_STATE_CLOSED) return s->failure.err;
  return EPODE_OK;
}

static int takes_input(const epode_session *s) {
  return s->state != EPODE_STATE_CLOSED && s->state != EPODE_STATE_IDLE &&
         s->state != EPODE_STATE_DISCONNECTED && s->neg != NEG_WAIT_TLS &&
         s->framing != EPODE_FRAMING_BOSH;
}

epode_err epode_session_recv(epode_session *s, const void *data, size_t len, uint64_t now_ms) {
  if (!s || (!data && len)) return EPODE_ERR_INVAL;
  if (!takes_input(s)) return EPODE_ERR_STATE;
  s->now = now_ms;
  if (len) epode__ka_received(s);
  return after_input(s, epode__xml_parser_feed(s->parser, data, len));
}

void *epode__session_recv_buffer(epode_session *s, size_t want, size_t *len) {
  *len = 0;
  if (!s || s->framing != EPODE_FRAMING_STREAM || !takes_input(s)) return NULL;
  void *buf = NULL;
  if (epode__xml_parser_buffer(s->parser, want, &buf, len)) return NULL;
  return buf;
}

epode_err epode__session_recv_commit(epode_session *s, size_t len, uint64_t now_ms) {
  s->now = now_ms;
  if (len) epode__ka_received(s);
  return after_input(s, epode__xml_parser_commit(s->parser, len));
}

epode_err epode_session_eof(epode_session *s, uint64_t now_ms) {
  if (!s) return EPODE_ERR_INVAL;
  s->now = now_ms;
  if (s->state == EPODE_STATE_CLOSED || s->state == EPODE_STATE_DISCONNECTED) return EPODE_OK;
  if (s->state == EPODE_STATE_CLOSING) {
    /* We said goodbye; the peer hanging up is an acceptable answer. Over
     * BOSH that is the answer to our terminate: all was processed. */
    if (s->framing == EPODE_FRAMING_BOSH) s->clean_close = 1;
    finish_closed(s);
    return EPODE_OK;
  }
  size_t pending = epode__xml_parser_pending(s->parser);
  return epode__session_fail(s, EPODE_ERR_EOF, NULL, NULL, NULL,
                             "the connection closed while %s%s", epode_state_name(s->state),
                             pending ? " (in the middle of an element)" : "");
}

epode_err epode_session_abort(epode_session *s, epode_err err, const char *detail,
                              uint64_t now_ms) {
  if (!s || err == EPODE_OK) return EPODE_ERR_INVAL;
  s->now = now_ms;
  if (s->state == EPODE_STATE_CLOSED) return EPODE_OK;
  /* Nothing more can reach the peer: make the failure path write nothing. */
  s->neg = NEG_WAIT_TLS;
  epode__session_fail(s, err, NULL, NULL, NULL, "%s", detail ? detail : epode_strerror(err));
  return EPODE_OK;
}

epode_err epode_session_tls_done(epode_session *s, const epode_tls_info *tls, uint64_t now_ms) {
  if (!s || !tls) return EPODE_ERR_INVAL;
  if (s->neg != NEG_WAIT_TLS) return EPODE_ERR_STATE;
  s->now = now_ms;
  epode__session_set_state(s, EPODE_STATE_OPENING);
  epode_err e = take_tls(s, tls);
  if (!e) e = restart_stream(s);
  if (e) return epode__session_fail(s, e, NULL, NULL, NULL, "cannot restart the stream");
  return EPODE_OK;
}

epode_err epode_session_tick(epode_session *s, uint64_t now_ms) {
  if (!s) return EPODE_ERR_INVAL;
  s->now = now_ms;
  if (s->state == EPODE_STATE_CLOSED) return EPODE_OK;
  if (s->neg_deadline && now_ms >= s->neg_deadline && s->state != EPODE_STATE_READY) {
    return epode__session_fail(s, EPODE_ERR_TIMEOUT, "connection-timeout", NULL, NULL,
                               "stream negotiation did not finish within %u ms (stuck while %s)",
                               (unsigned)s->cfg->timeouts[EPODE_TIMEOUT_NEGOTIATION],
                               epode_state_name(s->state));
  }
  if (s->close_deadline && now_ms >= s->close_deadline && s->state == EPODE_STATE_CLOSING) {
    epode__log(s->cfg, EPODE_LOG_INFO, "session",
               "the server did not close its stream within %u ms; closing anyway",
               (unsigned)s->cfg->timeouts[EPODE_TIMEOUT_CLOSE]);
    finish_closed(s);
    return EPODE_OK;
  }
  if (s->state == EPODE_STATE_DISCONNECTED && s->rc_due && now_ms >= s->rc_due) {
    s->rc_due = 0;
    emit(s, EPODE_EV_RECONNECT);
  }
  epode_err e = epode__timers_run(s);
  if (s->state == EPODE_STATE_READY) epode__sm_tick(s);
  if (s->state == EPODE_STATE_READY) epode__ka_tick(s);
  return e;
}

int64_t epode_session_next_deadline(const epode_session *s) {
  if (!s || s->state == EPODE_STATE_CLOSED) return -1;
  int64_t best = epode__timers_next(s);
  int64_t sm = epode__sm_deadline(s);
  if (sm >= 0 && (best < 0 || sm < best)) best = sm;
  int64_t ka = epode__ka_deadline(s);
  if (ka >= 0 && (best < 0 || ka < best)) best = ka;
  uint64_t ds[3] = {s->state != EPODE_STATE_READY ? s->neg_deadline : 0,
                    s->state == EPODE_STATE_CLOSING ? s->close_deadline : 0,
                    s->state == EPODE_STATE_DISCONNECTED ? s->rc_due : 0};
  for (int i = 0; i < 3; i++)
    if (ds[i] && (best < 0 || (int64_t)ds[i] < best)) best = (int64_t)ds[i];
  return best;
}

epode_err epode_session_close(epode_session *s) {
  if (!s) return EPODE_ERR_INVAL;
  switch (s->state) {
  case EPODE_STATE_CLOSED:
  case EPODE_STATE_CLOSING: return EPODE_OK;
  case EPODE_STATE_IDLE:
  case EPODE_STATE_RESOLVING:
  case EPODE_STATE_CONNECTING:
  case EPODE_STATE_TLS_HANDSHAKE:
  case EPODE_STATE_DISCONNECTED: finish_closed(s); return EPODE_OK;
  default: break;
  }
  if (s->neg == NEG_WAIT_TLS) {
    /* Mid-STARTTLS nothing can be said in XML; just stop. */
    finish_closed(s);
    return EPODE_OK;
  }
  /* XEP-0198 §7 (stream closure): a last <a/> tells the server what we
   * handled, or it treats the rest as undelivered (Prosody sends those to
   * offline storage: the next session would get them again). */
  epode_err e = epode__sm_final_ack(s);
  if (!e) e = write_close(s);
  if (e) return e;
  uint32_t t = s->cfg->timeouts[EPODE_TIMEOUT_CLOSE];
  s->close_deadline = t ? s->now + t : 0;
  epode__session_set_state(s, EPODE_STATE_CLOSING);
  epode__session_notify_output(s);
  return EPODE_OK;
}

epode_state epode_session_state(const epode_session *s) { return s->state; }
const char *epode_session_jid(const epode_session *s) {
  return s->state == EPODE_STATE_READY || s->state == EPODE_STATE_CLOSING ? s->bound_jid : NULL;
}
const epode_mem *epode_session_mem(const epode_session *s) { return s->mem; }
const epode_config *epode_session_config(const epode_session *s) { return s->cfg; }
epode_config *epode__session_cfg(epode_session *s) { return s->cfg; }
const epode_jid *epode__session_account(const epode_session *s) { return s->jid; }

epode_err epode_session_scram_keys(const epode_session *s, epode_scram_keys *out) {
  if (!s || !out) return EPODE_ERR_INVAL;
  if (!s->scram_got) return EPODE_ERR_NOTFOUND;
  memcpy(out, s->scram_got, sizeof *out);
  return EPODE_OK;
}

epode_err epode_session_new_id(epode_session *s, char *buf, size_t size) {
  if (!s || !buf || size < 20) return EPODE_ERR_INVAL;
  snprintf(buf, size, "ep-%s%08x", s->id_prefix, (unsigned)++s->id_counter);
  return EPODE_OK;
}
