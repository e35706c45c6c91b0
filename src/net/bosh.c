/* The BOSH transport (XEP-0124, XEP-0206) over libcurl's multi-socket API.
 *
 * Why curl's multi-socket API: it is the one curl interface that never
 * blocks and reports its sockets and one timeout, so it fits the host's
 * loop exactly like the TCP connection does. Why our own name lookup:
 * Debian's libcurl resolves with a helper thread, and epode starts no
 * threads; with every name already in CURLOPT_RESOLVE curl never looks one
 * up.
 *
 * Requests. Every request carries a rid; rids are consecutive, so "the
 * requests not yet handed to the session" are exactly the rids in
 * [deliver_rid, next_rid). We keep that span within the server's
 * `requests` window (at most two: one long-poll held by the server, one to
 * send) and hand response children to the session strictly in rid order,
 * buffering a response that overtook an earlier one. A request whose HTTP
 * exchange failed is sent again with the same rid and the same bytes
 * (XEP-0124 §14.3), a bounded number of times.
 *
 * Empty requests respect `polling` (XEP-0124 §12): two consecutive empty
 * requests, the first answered without payload, are at least `polling`
 * seconds apart. Because one request is kept in flight whenever the session
 * is active, `inactivity` can only run out while we wait for that gate, so
 * the gate is clamped well below it. */
#include "net/bosh.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "epode/conn.h"
#include "epode/epode.h"
#include "epode_limits.h"
#include "net/net.h"
#include "util/alloc.h"
#include "util/buf.h"
#include "util/config_int.h"
#include "xml/parser.h"

#define NS_HTTPBIND "http://jabber.org/protocol/httpbind"
#define NS_XBOSH "urn:xmpp:xbosh"

/* What we ask for. 60 s is the XEP's example and what Prosody and ejabberd
 * grant; intermediaries rarely cut idle HTTP requests sooner. hold 1 is
 * what XEP-0206 clients use: one long-poll, so requests = 2. */
#define BOSH_WAIT 60u
#define BOSH_HOLD 1u
/* We never keep more than two requests in flight, whatever the server
 * allows: one held, one to send. More only adds connections. */
#define BOSH_MAX_REQUESTS 2u
/* Undelivered rids we can hold: the window plus a spare. */
#define BOSH_SLOTS 4u
/* Attempts per request (the first plus three retransmissions), with a
 * growing pause between them (0, 1, 2 s): enough to ride out a proxy
 * restart or a dropped keep-alive connection, short enough to fail within
 * seconds when the server is gone. */
#define BOSH_MAX_TRIES 4
#define BOSH_RETRY_STEP_MS 1000u
/* A request is lost when its answer is this late past `wait`. */
#define BOSH_TIMEOUT_MARGIN_MS 15000u
/* A response holds several stanzas; it may be this many times the stanza
 * limit (plus the <body/> wrapper) before it is refused. */
#define BOSH_RESPONSE_FACTOR 4u
#define BOSH_RESPONSE_SLACK 4096u
/* Prosody's sids are 36 bytes (a UUID), ejabberd's 40; refuse absurd ones. */
#define BOSH_MAX_SID 128u
/* Addresses passed to curl for the host (curl tries them in turn). */
#define BOSH_MAX_ADDRS 8u
#define BOSH_MAX_DNS_FDS 16u
/* rids start below 2^52 so that a session can never push them past the
 * protocol's 2^53 - 1 (XEP-0124 §7.1). */
#define BOSH_RID_SPAN (UINT64_C(1) << 52)

enum { ST_NEW = 0, ST_RESOLVING, ST_CREATING, ST_ACTIVE, ST_TERMINATING, ST_DONE, ST_FAILED };
enum { K_CREATE = 0, K_DATA, K_EMPTY, K_RESTART, K_TERMINATE };
enum { NOTIFY_NONE = 0, NOTIFY_FAILED, NOTIFY_DONE };
enum { MSG_STANZA = 0, MSG_OPEN, MSG_CLOSE };

static const char *const kind_names[] = {"session creation", "data", "empty", "restart",
                                         "terminate"};

typedef struct req {
  epode__bosh *b;
  CURL *easy;
  uint64_t rid;
  int kind;
  char *body; /* what we POST, kept for retransmission */
  size_t body_len;
  epode__buf resp;
  int tries;         /* attempts made */
  int active;        /* in the multi handle */
  int complete;      /* answered and parsed; waiting for its turn */
  int over_limit;    /* the response went over the cap */
  int nomem;         /* appending the response ran out of memory */
  uint64_t sent_ms;  /* first attempt */
  uint64_t retry_at; /* next attempt due (when !active && !complete) */
  epode_stanza *parsed;
  char errbuf[CURL_ERROR_SIZE];
} req;

struct epode__bosh {
  const epode_config *cfg;
  const epode_mem *mem;
  epode_session *s;
  const epode__bosh_session_ops *ops;
  epode__bosh_host host;

  char *url;
  char *url_host; /* as curl matches CURLOPT_RESOLVE: no brackets */
  unsigned port;
  int https;
  int literal; /* IP literal: curl needs no lookup */
  char *dns_servers;
  epode__dns *dns;
  int dns_fds[BOSH_MAX_DNS_FDS];
  size_t n_dns_fds;
  struct curl_slist *resolve;
  struct curl_slist *headers;
  CURLM *multi;
  int curl_global;
  int64_t reported_due; /* absolute time last given to host->timer; -1 none */

  int state;
  req *slots[BOSH_SLOTS];
  uint64_t next_rid;    /* rid of the next new request */
  uint64_t deliver_rid; /* rid whose response goes to the session next */
  char *domain;
  char *lang;
  char sid[BOSH_MAX_SID + 1];
  char ver[16];
  unsigned requests, wait, polling, inactivity, maxpause, hold;
  unsigned max_inflight;

  /* The polling gate. */
  uint64_t last_sent_rid;
  int last_sent_empty;
  uint64_t empty_gate; /* no empty request before this (0: none) */
  int gate_waiting;

  size_t resp_cap;
  int busy;
  int want_pump;
  int terminate_sent;
  int notify;
  epode_err err;
  char detail[1024];
};

static uint64_t now_ms(void) { return epode_now_ms(); }

/* ------------------------------------------------------------ session ops */

static epode_err real_eof(epode_session *s, uint64_t now) { return epode_session_eof(s, now); }

static const epode__bosh_session_ops real_ops = {
    epode_session_set_framing,    epode_session_start,        epode_session_peek_message,
    epode_session_consume_output, epode_session_recv_element, real_eof,
    epode_session_state};

/* ------------------------------------------------------------ failure */

static void free_req(epode__bosh *b, req *r);
static void drop_all(epode__bosh *b);

static void fail(epode__bosh *b, epode_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(epode__bosh *b, epode_err err, const char *fmt, ...) {
  if (b->state == ST_FAILED || b->state == ST_DONE) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b->detail, sizeof b->detail, fmt, ap);
  va_end(ap);
  b->state = ST_FAILED;
  b->err = err;
  b->notify = NOTIFY_FAILED;
  epode__log(b->cfg, EPODE_LOG_ERROR, "bosh", "%s", b->detail);
  drop_all(b);
}

static void finish_done(epode__bosh *b) {
  if (b->state == ST_FAILED || b->state == ST_DONE) return;
  b->state = ST_DONE;
  b->notify = NOTIFY_DONE;
  drop_all(b);
  epode__log(b->cfg, EPODE_LOG_INFO, "bosh", "BOSH session %s terminated", b->sid);
  if (b->ops->eof) (void)b->ops->eof(b->s, now_ms());
}

/* ------------------------------------------------------------ curl glue */

static int sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp) {
  (void)e;
  (void)socketp;
  epode__bosh *b = userp;
  unsigned ev = 0;
  switch (what) {
  case CURL_POLL_IN: ev = EPODE_IO_READ; break;
  case CURL_POLL_OUT: ev = EPODE_IO_WRITE; break;
  case CURL_POLL_INOUT: ev = EPODE_IO_READ | EPODE_IO_WRITE; break;
  default: ev = 0; break; /* CURL_POLL_REMOVE */
  }
  if (b->host.watch) b->host.watch(b->host.ud, (int)fd, ev);
  return 0;
}

static size_t write_cb(char *p, size_t size, size_t n, void *ud) {
  req *r = ud;
  size_t len = size * n;
  epode_err e = epode__buf_append(&r->resp, p, len);
  if (e == EPODE_ERR_LIMIT) r->over_limit = 1;
  if (e == EPODE_ERR_NOMEM) r->nomem = 1;
  return e ? 0 : len; /* 0: curl stops with CURLE_WRITE_ERROR */
}

static void dns_sock_cb(int fd, unsigned events, void *ud) {
  epode__bosh *b = ud;
  size_t i;
  for (i = 0; i < b->n_dns_fds && b->dns_fds[i] != fd; i++)
    ;
  if (events && i == b->n_dns_fds && b->n_dns_fds < BOSH_MAX_DNS_FDS)
    b->dns_fds[b->n_dns_fds++] = fd;
  else if (!events && i < b->n_dns_fds)
    b->dns_fds[i] = b->dns_fds[--b->n_dns_fds];
  if (b->host.watch) b->host.watch(b->host.ud, fd, events);
}

static int is_dns_fd(const epode__bosh *b, int fd) {
  for (size_t i = 0; i < b->n_dns_fds; i++)
    if (b->dns_fds[i] == fd) return 1;
  return 0;
}

/* ------------------------------------------------------------ requests */

static size_t undelivered(const epode__bosh *b) { return (size_t)(b->next_rid - b->deliver_rid); }

static req *slot_for(const epode__bosh *b, uint64_t rid) {
  for (size_t i = 0; i < BOSH_SLOTS; i++)
    if (b->slots[i] && b->slots[i]->rid == rid) return b->slots[i];
  return NULL;
}

static void free_req(epode__bosh *b, req *r) {
  if (!r) return;
  for (size_t i = 0; i < BOSH_SLOTS; i++)
    if (b->slots[i] == r) b->slots[i] = NULL;
  if (r->easy) {
    if (r->active) curl_multi_remove_handle(b->multi, r->easy);
    curl_easy_cleanup(r->easy);
  }
  epode__free(b->mem, r->body);
  epode__buf_free(&r->resp);
  epode_stanza_free(r->parsed);
  epode__free(b->mem, r);
}

static void drop_all(epode__bosh *b) {
  for (size_t i = 0; i < BOSH_SLOTS; i++)
    free_req(b, b->slots[i]);
  if (b->dns) {
    epode__dns_free(b->dns); /* reports its sockets closed */
    b->dns = NULL;
  }
}

static int tls_version_opt(int min, int max) {
  long v = min == 0x0304 ? CURL_SSLVERSION_TLSv1_3 : CURL_SSLVERSION_TLSv1_2;
  if (max == 0x0303)
    v |= CURL_SSLVERSION_MAX_TLSv1_2;
  else if (max == 0x0304)
    v |= CURL_SSLVERSION_MAX_TLSv1_3;
  else
    v |= CURL_SSLVERSION_MAX_DEFAULT;
  return (int)v;
}

/* Every option a request needs; the only thing curl may not do on its own
 * is resolve a name, follow a redirect or use a proxy. */
static CURLcode setup_easy(epode__bosh *b, req *r) {
  CURL *e = r->easy;
  const epode_config *cfg = b->cfg;
  CURLcode c = CURLE_OK;
#define SET(opt, val)                                                                              \
  do {                                                                                             \
    if (!c) c = curl_easy_setopt(e, opt, val);                                                     \
  } while (0)
  SET(CURLOPT_URL, b->url);
  SET(CURLOPT_PRIVATE, (void *)r);
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_PROTOCOLS_STR, "http,https");
  SET(CURLOPT_FOLLOWLOCATION, 0L);
  SET(CURLOPT_PROXY, ""); /* no proxy from the environment: it would be resolved by curl */
  if (b->resolve) SET(CURLOPT_RESOLVE, b->resolve);
  SET(CURLOPT_POST, 1L);
  SET(CURLOPT_POSTFIELDS, r->body);
  SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
  SET(CURLOPT_HTTPHEADER, b->headers);
  SET(CURLOPT_USERAGENT, "epode/" EPODE_VERSION_STRING);
  SET(CURLOPT_WRITEFUNCTION, write_cb);
  SET(CURLOPT_WRITEDATA, (void *)r);
  SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)b->resp_cap);
  SET(CURLOPT_ERRORBUFFER, r->errbuf);
  uint32_t ct = cfg->timeouts[EPODE_TIMEOUT_CONNECT];
  if (ct) SET(CURLOPT_CONNECTTIMEOUT_MS, (long)ct);
  long total;
  if (r->kind == K_TERMINATE && cfg->timeouts[EPODE_TIMEOUT_CLOSE])
    total = (long)cfg->timeouts[EPODE_TIMEOUT_CLOSE];
  else
    total = (long)(b->wait * 1000u + BOSH_TIMEOUT_MARGIN_MS);
  SET(CURLOPT_TIMEOUT_MS, total);
  if (b->https) {
    int verify = !(cfg->flags & EPODE_CFG_TLS_NO_VERIFY);
    SET(CURLOPT_SSL_VERIFYPEER, verify ? 1L : 0L);
    SET(CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L);
    if (cfg->cafile) SET(CURLOPT_CAINFO, cfg->cafile);
    SET(CURLOPT_SSLVERSION, (long)tls_version_opt(cfg->tls_min, cfg->tls_max));
    if (cfg->client_p12) {
      SET(CURLOPT_SSLCERT, cfg->client_p12);
      SET(CURLOPT_SSLCERTTYPE, "P12");
      if (cfg->client_p12_pw) SET(CURLOPT_KEYPASSWD, cfg->client_p12_pw);
    } else if (cfg->client_cert) {
      SET(CURLOPT_SSLCERT, cfg->client_cert);
      SET(CURLOPT_SSLCERTTYPE, "PEM");
      SET(CURLOPT_SSLKEY, cfg->client_key ? cfg->client_key : cfg->client_cert);
    }
  }
#undef SET
  return c;
}

static epode_err launch(epode__bosh *b, req *r) {
  epode__buf_reset(&r->resp);
  r->over_limit = r->nomem = 0;
  r->errbuf[0] = '\0';
  r->retry_at = 0;
  r->tries++;
  if (curl_multi_add_handle(b->multi, r->easy) != CURLM_OK) return EPODE_ERR_NOMEM;
  r->active = 1;
  if (EPODE__LOG_ON(b->cfg, EPODE_LOG_DEBUG))
    epode__log(b->cfg, EPODE_LOG_DEBUG, "bosh", "POST %s rid=%llu (%s, %zu bytes, attempt %d)",
               b->url, (unsigned long long)r->rid, kind_names[r->kind], r->body_len, r->tries);
  return EPODE_OK;
}

/* Sends a new request with the next rid; takes `body` (allocated). */
static void send_new(epode__bosh *b, int kind, char *body, size_t len) {
  req *r = epode__calloc(b->mem, sizeof *r);
  size_t i;
  for (i = 0; i < BOSH_SLOTS && b->slots[i]; i++)
    ;
  if (!r || i == BOSH_SLOTS) {
    epode__free(b->mem, body);
    epode__free(b->mem, r);
    fail(b, r ? EPODE_ERR_STATE : EPODE_ERR_NOMEM, "BOSH: cannot start a request (%s)",
         r ? "no free slot" : "out of memory");
    return;
  }
  r->b = b;
  r->rid = b->next_rid++;
  r->kind = kind;
  r->body = body;
  r->body_len = len;
  r->sent_ms = now_ms();
  epode__buf_init(&r->resp, b->mem, b->resp_cap);
  b->slots[i] = r;
  r->easy = curl_easy_init();
  if (!r->easy || setup_easy(b, r) != CURLE_OK || launch(b, r)) {
    fail(b, EPODE_ERR_NOMEM, "BOSH: could not set up an HTTP request");
    return;
  }
  b->last_sent_rid = r->rid;
  b->last_sent_empty = kind == K_EMPTY;
  if (kind != K_EMPTY) b->empty_gate = 0;
}

/* ------------------------------------------------------------ bodies */

static epode_err body_open(epode__buf *o, const epode__bosh *b, uint64_t rid) {
  return epode__buf_printf(o, "<body rid='%llu' sid='", (unsigned long long)rid) ||
                 epode__buf_append_escaped(o, b->sid, strlen(b->sid), 1) ||
                 epode__buf_append_str(o, "'")
             ? EPODE_ERR_NOMEM
             : EPODE_OK;
}

static char *build_create(epode__bosh *b, uint64_t rid, size_t *len) {
  epode__buf o;
  epode__buf_init(&o, b->mem, 0);
  epode_err e =
      epode__buf_printf(&o, "<body content='text/xml; charset=utf-8' hold='%u' rid='%llu' to='",
                        BOSH_HOLD, (unsigned long long)rid);
  if (!e) e = epode__buf_append_escaped(&o, b->domain, strlen(b->domain), 1);
  if (!e) e = epode__buf_printf(&o, "' ver='1.6' wait='%u' xml:lang='", BOSH_WAIT);
  if (!e) e = epode__buf_append_escaped(&o, b->lang, strlen(b->lang), 1);
  if (!e)
    e = epode__buf_append_str(&o, "' xmpp:version='1.0' xmlns='" NS_HTTPBIND
                                  "' xmlns:xmpp='" NS_XBOSH "'/>");
  char *out = e ? NULL : epode__buf_steal(&o, len);
  epode__buf_free(&o);
  return out;
}

static char *build_restart(epode__bosh *b, uint64_t rid, size_t *len) {
  epode__buf o;
  epode__buf_init(&o, b->mem, 0);
  epode_err e = body_open(&o, b, rid);
  if (!e) e = epode__buf_append_str(&o, " to='");
  if (!e) e = epode__buf_append_escaped(&o, b->domain, strlen(b->domain), 1);
  if (!e) e = epode__buf_append_str(&o, "' xml:lang='");
  if (!e) e = epode__buf_append_escaped(&o, b->lang, strlen(b->lang), 1);
  if (!e)
    e = epode__buf_append_str(&o, "' xmpp:restart='true' xmlns='" NS_HTTPBIND
                                  "' xmlns:xmpp='" NS_XBOSH "'/>");
  char *out = e ? NULL : epode__buf_steal(&o, len);
  epode__buf_free(&o);
  return out;
}

/* ------------------------------------------------------------ parsing */

typedef struct parse_ctx {
  epode_stanza *root;
  int extra; /* more than one top-level element */
} parse_ctx;

static epode_err on_parsed(void *ud, epode_stanza *st) {
  parse_ctx *p = ud;
  if (p->root) {
    p->extra = 1;
    epode_stanza_free(st);
    return EPODE_ERR_XML;
  }
  p->root = st;
  return EPODE_OK;
}

/* Parses one document holding one element. An XML declaration is allowed
 * in front (some connection managers send one); fragment mode would take it
 * for a processing instruction. */
static epode_err parse_one(const epode_config *cfg, const char *data, size_t len, size_t max,
                           epode_stanza **out, char *why, size_t whylen) {
  *out = NULL;
  while (len && (*data == ' ' || *data == '\t' || *data == '\r' || *data == '\n'))
    data++, len--;
  if (len >= 5 && memcmp(data, "<?xml", 5) == 0) {
    const char *end = NULL;
    for (size_t i = 5; i + 1 < len && i < 256; i++)
      if (data[i] == '?' && data[i + 1] == '>') {
        end = data + i + 2;
        break;
      }
    if (!end) {
      snprintf(why, whylen, "unterminated XML declaration");
      return EPODE_ERR_XML;
    }
    len -= (size_t)(end - data);
    data = end;
  }
  epode__xml_limits lim = {max, (unsigned)cfg->limits[EPODE_LIMIT_DEPTH] + 1u,
                           (unsigned)cfg->limits[EPODE_LIMIT_ATTRS]};
  epode__xml_callbacks cb = {NULL, on_parsed, NULL};
  parse_ctx p = {NULL, 0};
  epode__xml_parser *xp = NULL;
  epode_err e = epode__xml_parser_new(&xp, &cfg->mem, &lim, EPODE__XML_FRAGMENTS, &cb, &p);
  if (e) {
    snprintf(why, whylen, "out of memory");
    return e;
  }
  e = epode__xml_parser_feed(xp, data, len);
  if (e) {
    if (p.extra)
      snprintf(why, whylen, "more than one element");
    else
      snprintf(why, whylen, "%s", epode__xml_parser_errmsg(xp));
  } else if (!p.root) {
    e = EPODE_ERR_XML;
    if (len)
      snprintf(why, whylen, "incomplete XML (%zu bytes)", len);
    else
      snprintf(why, whylen, "empty");
  }
  epode__xml_parser_free(xp);
  if (e) {
    epode_stanza_free(p.root);
    return e;
  }
  *out = p.root;
  return EPODE_OK;
}

/* What a session output message is. Control messages are recognised by
 * their start and confirmed by parsing (they are tiny). */
static int classify(epode__bosh *b, const char *m, size_t len, epode_stanza **ctl) {
  *ctl = NULL;
  int open = len > 5 && memcmp(m, "<open", 5) == 0;
  int close = len > 6 && memcmp(m, "<close", 6) == 0;
  if (!open && !close) return MSG_STANZA;
  char c = m[open ? 5 : 6];
  if (c != ' ' && c != '/' && c != '>') return MSG_STANZA;
  char why[160];
  epode_stanza *st = NULL;
  if (parse_one(b->cfg, m, len, len + 1, &st, why, sizeof why)) return MSG_STANZA;
  const char *ns = epode_stanza_ns(st);
  if (!ns || strcmp(ns, EPODE_NS_FRAMING) != 0) {
    epode_stanza_free(st);
    return MSG_STANZA;
  }
  *ctl = st;
  return open ? MSG_OPEN : MSG_CLOSE;
}

/* ------------------------------------------------------------ sending */

static void send_terminate(epode__bosh *b, epode__buf *payload) {
  epode__buf o;
  epode__buf_init(&o, b->mem, 0);
  uint64_t rid = b->next_rid;
  epode_err e = body_open(&o, b, rid);
  if (!e) e = epode__buf_append_str(&o, " type='terminate' xmlns='" NS_HTTPBIND "'");
  if (!e && payload && payload->len)
    e = epode__buf_append_str(&o, ">") || epode__buf_append(&o, payload->data, payload->len) ||
                epode__buf_append_str(&o, "</body>")
            ? EPODE_ERR_NOMEM
            : EPODE_OK;
  else if (!e)
    e = epode__buf_append_str(&o, "/>");
  size_t len = 0;
  char *body = e ? NULL : epode__buf_steal(&o, &len);
  epode__buf_free(&o);
  if (!body) {
    fail(b, EPODE_ERR_NOMEM, "BOSH: out of memory");
    return;
  }
  b->terminate_sent = 1;
  b->state = ST_TERMINATING;
  send_new(b, K_TERMINATE, body, len);
}

static int session_closed(epode__bosh *b) {
  return b->ops->state && b->ops->state(b->s) == EPODE_STATE_CLOSED;
}

/* Session creation: the session's first message must be <open/>. */
static void send_create(epode__bosh *b) {
  size_t len = 0;
  const char *m = b->ops->peek_message(b->s, &len);
  if (!m) return; /* nothing yet */
  epode_stanza *ctl = NULL;
  if (classify(b, m, len, &ctl) != MSG_OPEN) {
    epode_stanza_free(ctl);
    fail(b, EPODE_ERR_STATE, "BOSH: the session's first output is not <open/>");
    return;
  }
  const char *to = epode_stanza_get_attr(ctl, "to");
  const char *lang = epode_stanza_get_attr(ctl, "xml:lang");
  if (!to || !*to) {
    epode_stanza_free(ctl);
    fail(b, EPODE_ERR_STATE, "BOSH: the session's <open/> names no domain");
    return;
  }
  b->domain = epode__strdup(b->mem, to);
  b->lang = epode__strdup(b->mem, lang && *lang ? lang : "en");
  epode_stanza_free(ctl);
  b->ops->consume_output(b->s, len);
  size_t blen = 0;
  char *body = b->domain && b->lang ? build_create(b, b->next_rid, &blen) : NULL;
  if (!body) {
    fail(b, EPODE_ERR_NOMEM, "BOSH: out of memory");
    return;
  }
  send_new(b, K_CREATE, body, blen);
}

/* Sends what the session has, as the window allows. */
static void pump(epode__bosh *b) {
  if (b->state == ST_CREATING) {
    if (!slot_for(b, b->deliver_rid)) send_create(b);
    return;
  }
  b->gate_waiting = 0;
  while (b->state == ST_ACTIVE && undelivered(b) < b->max_inflight) {
    size_t len = 0;
    const char *m = b->ops->peek_message(b->s, &len);
    if (!m) {
      if (session_closed(b)) { /* ended without a <close/>: free the server's side */
        send_terminate(b, NULL);
        break;
      }
      if (undelivered(b) == 0) {
        if (b->empty_gate && now_ms() < b->empty_gate) {
          b->gate_waiting = 1;
          break;
        }
        size_t blen = 0;
        epode__buf o;
        epode__buf_init(&o, b->mem, 0);
        epode_err e = body_open(&o, b, b->next_rid);
        if (!e) e = epode__buf_append_str(&o, " xmlns='" NS_HTTPBIND "'/>");
        char *body = e ? NULL : epode__buf_steal(&o, &blen);
        epode__buf_free(&o);
        if (!body) {
          fail(b, EPODE_ERR_NOMEM, "BOSH: out of memory");
          break;
        }
        send_new(b, K_EMPTY, body, blen);
      }
      break;
    }
    epode_stanza *ctl = NULL;
    int k = classify(b, m, len, &ctl);
    epode_stanza_free(ctl);
    if (k == MSG_OPEN) {
      b->ops->consume_output(b->s, len);
      size_t blen = 0;
      char *body = build_restart(b, b->next_rid, &blen);
      if (!body) {
        fail(b, EPODE_ERR_NOMEM, "BOSH: out of memory");
        break;
      }
      send_new(b, K_RESTART, body, blen);
      continue;
    }
    if (k == MSG_CLOSE) {
      b->ops->consume_output(b->s, len);
      send_terminate(b, NULL);
      break;
    }
    /* Stanzas: all of them up to the next control message in one body;
     * if that is <close/>, they ride on the terminate. */
    epode__buf payload;
    epode__buf_init(&payload, b->mem, 0);
    int terminate = 0;
    epode_err e = EPODE_OK;
    while (!e && (m = b->ops->peek_message(b->s, &len)) != NULL) {
      k = classify(b, m, len, &ctl);
      epode_stanza_free(ctl);
      if (k == MSG_OPEN) break;
      if (k == MSG_CLOSE) {
        b->ops->consume_output(b->s, len);
        terminate = 1;
        break;
      }
      e = epode__buf_append(&payload, m, len);
      if (!e) b->ops->consume_output(b->s, len);
    }
    if (e) {
      epode__buf_free(&payload);
      fail(b, EPODE_ERR_NOMEM, "BOSH: out of memory");
      break;
    }
    if (terminate) {
      send_terminate(b, &payload);
      epode__buf_free(&payload);
      break;
    }
    epode__buf o;
    epode__buf_init(&o, b->mem, 0);
    e = body_open(&o, b, b->next_rid);
    if (!e)
      e = epode__buf_append_str(&o, " xmlns='" NS_HTTPBIND "'>") ||
                  epode__buf_append(&o, payload.data, payload.len) ||
                  epode__buf_append_str(&o, "</body>")
              ? EPODE_ERR_NOMEM
              : EPODE_OK;
    epode__buf_free(&payload);
    size_t blen = 0;
    char *body = e ? NULL : epode__buf_steal(&o, &blen);
    epode__buf_free(&o);
    if (!body) {
      fail(b, EPODE_ERR_NOMEM, "BOSH: out of memory");
      break;
    }
    send_new(b, K_DATA, body, blen);
  }
}

/* ------------------------------------------------------------ responses */

static const char *condition_meaning(const char *c) {
  static const struct {
    const char *cond, *text;
  } t[] = {
      {"bad-request", "the server could not understand a request"},
      {"host-gone", "the domain is no longer served here"},
      {"host-unknown", "the domain is not served by this connection manager"},
      {"improper-addressing",
       "no acceptable 'to' or 'route'; Prosody says so for an unknown domain"},
      {"internal-server-error", "the connection manager had an internal error"},
      {"item-not-found", "the BOSH session or rid is unknown to the server"},
      {"other-request", "another request with the same rid was received"},
      {"policy-violation", "the client broke the server's rules (too many requests, polling)"},
      {"remote-connection-failed", "the connection manager could not reach the XMPP server"},
      {"remote-stream-error", "the XMPP server sent a stream error"},
      {"see-other-uri", "the service has moved"},
      {"system-shutdown", "the server is shutting down"},
      {"undefined-condition", "unspecified"},
  };
  for (size_t i = 0; i < sizeof t / sizeof *t; i++)
    if (strcmp(c, t[i].cond) == 0) return t[i].text;
  return "unknown condition";
}

static size_t clean_copy(char *dst, size_t size, const char *src) {
  size_t n = 0;
  for (; src && *src && n + 1 < size; src++)
    dst[n++] = ((unsigned char)*src < 0x20) ? ' ' : *src;
  dst[n] = '\0';
  return n;
}

/* ------------------------------------------------------------ response bodies
 * Reading a response <body/> needs no transport: no curl, no session, no
 * clock. The transport runs these pieces at two moments (when a response is
 * complete: read_body, body_type; when its turn comes in rid order:
 * check_sid, walk_children, describe_terminate); epode__bosh_parse_response()
 * runs the same pieces in the same order in one call, for the fuzz target. */

static int sid_ok(const char *sid) {
  size_t n = strlen(sid);
  if (n == 0 || n > BOSH_MAX_SID) return 0;
  for (; *sid; sid++)
    if ((unsigned char)*sid <= ' ' || *sid == '\'' || *sid == '"') return 0;
  return 1;
}

/* Parses a response as one document and checks its root is
 * {httpbind}body. On failure `why` says what went wrong, and *bad_root
 * tells a well-formed document with the wrong root (`why`: "<x xmlns='…'>,
 * not <body …>") from one that is not XML at all. */
static epode_err read_body(const epode_config *cfg, const char *data, size_t len, size_t max,
                           epode_stanza **out, int *bad_root, char *why, size_t whylen) {
  *out = NULL;
  *bad_root = 0;
  epode_stanza *body = NULL;
  epode_err e = parse_one(cfg, data, len, max, &body, why, whylen);
  if (e) return e;
  const char *ns = epode_stanza_ns(body);
  if (strcmp(epode_stanza_name(body), "body") != 0 || !ns || strcmp(ns, NS_HTTPBIND) != 0) {
    char n[64], u[128];
    clean_copy(n, sizeof n, epode_stanza_name(body));
    clean_copy(u, sizeof u, ns ? ns : "no namespace");
    epode_stanza_free(body);
    snprintf(why, whylen, "<%s xmlns='%s'>, not <body xmlns='" NS_HTTPBIND "'>", n, u);
    *bad_root = 1;
    return EPODE_ERR_PROTOCOL;
  }
  *out = body;
  return EPODE_OK;
}

static epode__bosh_body_type body_type(const epode_stanza *body) {
  const char *type = epode_stanza_get_attr(body, "type");
  if (type && strcmp(type, "terminate") == 0) return EPODE__BOSH_BODY_TERMINATE;
  if (type && strcmp(type, "error") == 0) return EPODE__BOSH_BODY_ERROR;
  return EPODE__BOSH_BODY_NORMAL;
}

/* `expected` NULL: the session creation response, which must carry a
 * usable sid. Otherwise a sid, when present, must be `expected`. 0, with
 * `why`, when it is not so. */
static int check_sid(const epode_stanza *body, const char *expected, char *why, size_t whylen) {
  const char *sid = epode_stanza_get_attr(body, "sid");
  if (!expected) {
    if (sid && sid_ok(sid)) return 1;
    snprintf(why, whylen, "the session creation response has %s sid", sid ? "an unusable" : "no");
    return 0;
  }
  if (!sid || strcmp(sid, expected) == 0) return 1;
  char got[BOSH_MAX_SID + 1];
  clean_copy(got, sizeof got, sid);
  snprintf(why, whylen, "names sid '%s', not ours ('%s')", got, expected);
  return 0;
}

/* Hands the element children of `body` to `fn` in document order, until
 * it returns an error. A terminate's stream error (remote-stream-error) is
 * not handed over: it goes into our failure. Returns how many were handed. */
static size_t walk_children(const epode_stanza *body, int terminate, epode__bosh_child_fn fn,
                            void *ud) {
  size_t n = 0;
  for (epode_stanza *ch = epode_stanza_first_child(body); ch; ch = epode_stanza_next_sibling(ch)) {
    if (epode_stanza_is_text(ch)) continue;
    const char *ns = epode_stanza_ns(ch);
    if (terminate && ns && strcmp(ns, EPODE_NS_STREAMS) == 0) continue;
    n++;
    if (fn(ch, ud) != EPODE_OK) break;
  }
  return n;
}

/* Why the server's type='terminate' ends the session, into `why` (900
 * bytes hold the longest). EPODE_ERR_EOF without a condition,
 * EPODE_ERR_STREAM with one. */
static epode_err describe_terminate(const epode_stanza *body, char *why, size_t whylen) {
  const char *cond = epode_stanza_get_attr(body, "condition");
  if (!cond || !*cond) {
    snprintf(why, whylen, "the server ended the session (type='terminate', no condition)");
    return EPODE_ERR_EOF;
  }
  char c[64], extra[600] = "";
  clean_copy(c, sizeof c, cond);
  if (strcmp(cond, "see-other-uri") == 0) {
    epode_stanza *uri = epode_stanza_find_child(body, "uri", NULL);
    if (uri) {
      char u[512];
      clean_copy(u, sizeof u, epode_stanza_text(uri));
      snprintf(extra, sizeof extra, ": %s", u);
    }
  } else if (strcmp(cond, "remote-stream-error") == 0) {
    epode_stanza *se = epode_stanza_find_child(body, "error", EPODE_NS_STREAMS);
    const char *sc = NULL, *tx = NULL;
    for (epode_stanza *ch = se ? epode_stanza_first_child(se) : NULL; ch;
         ch = epode_stanza_next_sibling(ch)) {
      if (epode_stanza_is_text(ch)) continue;
      const char *ns = epode_stanza_ns(ch);
      if (!ns || strcmp(ns, EPODE_NS_STREAM_ERRORS) != 0) continue;
      if (strcmp(epode_stanza_name(ch), "text") == 0)
        tx = epode_stanza_text(ch);
      else if (!sc)
        sc = epode_stanza_name(ch);
    }
    char s1[64], s2[400];
    clean_copy(s1, sizeof s1, sc ? sc : "no condition");
    clean_copy(s2, sizeof s2, tx);
    snprintf(extra, sizeof extra, ": stream error %s%s%s%s", s1, tx ? " (" : "", s2, tx ? ")" : "");
  }
  snprintf(why, whylen, "the server terminated the session: %s (%s)%s", c, condition_meaning(cond),
           extra);
  return EPODE_ERR_STREAM;
}

size_t epode__bosh_response_cap(const epode_config *cfg) {
  uint64_t stanza = cfg->limits[EPODE_LIMIT_STANZA_BYTES];
  if (!stanza) stanza = EPODE_DEFAULT_MAX_STANZA_BYTES;
  return (size_t)(stanza * BOSH_RESPONSE_FACTOR + BOSH_RESPONSE_SLACK);
}

epode_err epode__bosh_parse_response(epode__bosh_response *out, const epode_config *cfg,
                                     const char *sid_expected, const char *data, size_t len,
                                     size_t max, epode__bosh_child_fn on_child, void *ud) {
  if (!out) return EPODE_ERR_INVAL;
  memset(out, 0, sizeof *out);
  if (!cfg || (!data && len)) {
    snprintf(out->detail, sizeof out->detail, "invalid arguments");
    return EPODE_ERR_INVAL;
  }
  if (len > max) { /* the transport stops reading there (curl's write callback) */
    snprintf(out->detail, sizeof out->detail, "response exceeds %zu bytes", max);
    return EPODE_ERR_LIMIT;
  }
  char why[320];
  epode_stanza *body = NULL;
  int bad_root = 0;
  epode_err e = read_body(cfg, data ? data : "", len, max < SIZE_MAX ? max + 1 : max, &body,
                          &bad_root, why, sizeof why);
  if (e) {
    snprintf(out->detail, sizeof out->detail, "response %s%s",
             bad_root ? "is " : "is not XML: ", why);
    return e == EPODE_ERR_NOMEM ? e : EPODE_ERR_PROTOCOL;
  }
  out->type = body_type(body);
  if (out->type == EPODE__BOSH_BODY_ERROR) {
    snprintf(out->detail, sizeof out->detail, "the server answered type='error'");
  } else if (out->type == EPODE__BOSH_BODY_TERMINATE && !sid_expected) {
    /* A session creation refused: nothing is delivered. */
    clean_copy(out->condition, sizeof out->condition, epode_stanza_get_attr(body, "condition"));
    out->terminate_err = describe_terminate(body, out->detail, sizeof out->detail);
  } else if (!check_sid(body, sid_expected, why, sizeof why)) {
    snprintf(out->detail, sizeof out->detail, "%s%s", sid_expected ? "response " : "", why);
    e = EPODE_ERR_PROTOCOL;
  } else {
    int terminate = out->type == EPODE__BOSH_BODY_TERMINATE;
    if (on_child) out->children = walk_children(body, terminate, on_child, ud);
    if (terminate) {
      clean_copy(out->condition, sizeof out->condition, epode_stanza_get_attr(body, "condition"));
      out->terminate_err = describe_terminate(body, out->detail, sizeof out->detail);
    }
  }
  epode_stanza_free(body);
  return e;
}

/* type='terminate' from the server, not in answer to ours. */
static void server_terminated(epode__bosh *b, const epode_stanza *body) {
  char why[900];
  epode_err e = describe_terminate(body, why, sizeof why);
  fail(b, e, "BOSH: %s", why);
}

static int parse_uint(const char *s, unsigned *out, unsigned max) {
  if (!s || !*s) return 0;
  unsigned long v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return 0;
    v = v * 10 + (unsigned long)(*s - '0');
    if (v > max) return 0;
  }
  *out = (unsigned)v;
  return 1;
}

/* The session creation response: the server's parameters. */
static int take_params(epode__bosh *b, const epode_stanza *body) {
  char why[80];
  if (!check_sid(body, NULL, why, sizeof why)) {
    fail(b, EPODE_ERR_PROTOCOL, "BOSH: %s", why);
    return 0;
  }
  const char *sid = epode_stanza_get_attr(body, "sid");
  snprintf(b->sid, sizeof b->sid, "%s", sid);
  unsigned v;
  /* Absent or garbled values keep the defaults. */
  if (parse_uint(epode_stanza_get_attr(body, "requests"), &v, 1000)) b->requests = v ? v : 1;
  if (parse_uint(epode_stanza_get_attr(body, "wait"), &v, 3600) && v > 0 && v <= BOSH_WAIT)
    b->wait = v;
  if (parse_uint(epode_stanza_get_attr(body, "polling"), &v, 3600)) b->polling = v;
  if (parse_uint(epode_stanza_get_attr(body, "inactivity"), &v, 86400)) b->inactivity = v;
  if (parse_uint(epode_stanza_get_attr(body, "maxpause"), &v, 86400)) b->maxpause = v;
  if (parse_uint(epode_stanza_get_attr(body, "hold"), &v, 1000)) b->hold = v;
  const char *ver = epode_stanza_get_attr(body, "ver");
  if (ver) clean_copy(b->ver, sizeof b->ver, ver);
  unsigned n = b->requests;
  if (n > b->hold + 1) n = b->hold + 1; /* more would only be held or refused */
  if (n > BOSH_MAX_REQUESTS) n = BOSH_MAX_REQUESTS;
  b->max_inflight = n ? n : 1;
  /* The polling gate must never outlast inactivity. */
  if (b->inactivity && b->polling * 2 > b->inactivity) b->polling = b->inactivity / 2;
  epode__log(b->cfg, EPODE_LOG_INFO, "bosh",
             "BOSH session %s: requests=%u wait=%u polling=%u inactivity=%u hold=%u ver=%s", b->sid,
             b->requests, b->wait, b->polling, b->inactivity, b->hold, b->ver[0] ? b->ver : "?");
  return 1;
}

typedef struct to_session_ctx {
  epode__bosh *b;
  uint64_t t;
} to_session_ctx;

static epode_err to_session(const epode_stanza *ch, void *ud) {
  to_session_ctx *d = ud;
  epode__bosh *b = d->b;
  if (b->ops->recv_element(b->s, ch, d->t) != EPODE_OK) return EPODE_ERR_CLOSED; /* it has ended */
  return b->state == ST_FAILED || b->state == ST_DONE ? EPODE_ERR_STATE : EPODE_OK;
}

/* One response, in rid order: check it and hand its children over. */
static void process_body(epode__bosh *b, req *r) {
  const epode_stanza *body = r->parsed;
  int terminate = body_type(body) == EPODE__BOSH_BODY_TERMINATE;
  if (r->kind == K_CREATE) {
    if (terminate) {
      server_terminated(b, body);
      return;
    }
    if (!take_params(b, body)) return;
    b->state = ST_ACTIVE;
  } else {
    char why[320];
    if (!check_sid(body, b->sid, why, sizeof why)) {
      fail(b, EPODE_ERR_PROTOCOL, "BOSH: response for rid %llu %s", (unsigned long long)r->rid,
           why);
      return;
    }
  }
  to_session_ctx d = {b, now_ms()};
  size_t payload = walk_children(body, terminate, to_session, &d);
  if (b->state == ST_FAILED || b->state == ST_DONE) return;
  if (r->kind == K_TERMINATE || (terminate && b->terminate_sent)) {
    finish_done(b);
    return;
  }
  if (terminate) {
    server_terminated(b, body);
    return;
  }
  if (r->kind == K_EMPTY && !payload && b->last_sent_empty && r->rid == b->last_sent_rid &&
      b->polling)
    b->empty_gate = r->sent_ms + (uint64_t)b->polling * 1000u;
}

static void deliver(epode__bosh *b) {
  while (b->state == ST_CREATING || b->state == ST_ACTIVE || b->state == ST_TERMINATING) {
    req *r = slot_for(b, b->deliver_rid);
    if (!r || !r->complete) break;
    b->deliver_rid++;
    for (size_t i = 0; i < BOSH_SLOTS; i++) /* ours now: a failure inside cannot free it */
      if (b->slots[i] == r) b->slots[i] = NULL;
    process_body(b, r);
    free_req(b, r);
  }
}

static void retry_or_fail(epode__bosh *b, req *r, epode_err err, const char *what) {
  if (r->kind == K_TERMINATE) { /* the goodbye is best effort */
    epode__log(b->cfg, EPODE_LOG_INFO, "bosh", "terminate request failed: %s", what);
    finish_done(b);
    return;
  }
  if (r->tries >= BOSH_MAX_TRIES) {
    fail(b, err, "BOSH: %s request rid=%llu to %s failed %d times; last: %s", kind_names[r->kind],
         (unsigned long long)r->rid, b->url, r->tries, what);
    return;
  }
  uint64_t delay = (uint64_t)(r->tries - 1) * BOSH_RETRY_STEP_MS;
  epode__log(b->cfg, EPODE_LOG_WARN, "bosh", "rid=%llu: %s; sending it again in %llu ms",
             (unsigned long long)r->rid, what, (unsigned long long)delay);
  r->retry_at = now_ms() + delay;
  if (delay == 0 && launch(b, r)) fail(b, EPODE_ERR_NOMEM, "BOSH: out of memory");
}

static const char *http_reason(long code) {
  switch (code) {
  case 400: return "Bad Request (bad-request)";
  case 403: return "Forbidden (policy-violation)";
  case 404: return "Not Found (item-not-found: no BOSH service or session here)";
  case 500: return "Internal Server Error";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return "unexpected status";
  }
}

static void on_complete(epode__bosh *b, req *r, CURLcode rc) {
  char what[CURL_ERROR_SIZE + 64];
  if (rc != CURLE_OK) {
    if (r->over_limit || rc == CURLE_FILESIZE_EXCEEDED) {
      fail(b, EPODE_ERR_LIMIT, "BOSH: response to rid %llu exceeds %zu bytes",
           (unsigned long long)r->rid, b->resp_cap);
      return;
    }
    if (r->nomem) {
      fail(b, EPODE_ERR_NOMEM, "BOSH: out of memory reading a response");
      return;
    }
    snprintf(what, sizeof what, "%s", r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc));
    switch (rc) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
      fail(b, EPODE_ERR_TLS_VERIFY, "BOSH: %s: certificate verification failed: %s", b->url, what);
      return;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_USE_SSL_FAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
      fail(b, EPODE_ERR_TLS, "BOSH: %s: TLS failed: %s", b->url, what);
      return;
    case CURLE_OUT_OF_MEMORY: fail(b, EPODE_ERR_NOMEM, "BOSH: curl: out of memory"); return;
    case CURLE_COULDNT_CONNECT: retry_or_fail(b, r, EPODE_ERR_CONNECT, what); return;
    case CURLE_OPERATION_TIMEDOUT:
      /* Already `wait` + a margin late: once more, not three times, so a
       * server that stopped answering shows within a few minutes. */
      if (r->tries < BOSH_MAX_TRIES) r->tries = BOSH_MAX_TRIES - 1;
      retry_or_fail(b, r, EPODE_ERR_TIMEOUT, what);
      return;
    case CURLE_GOT_NOTHING: retry_or_fail(b, r, EPODE_ERR_EOF, what); return;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM: retry_or_fail(b, r, EPODE_ERR_IO, what); return;
    default:
      fail(b, EPODE_ERR_IO, "BOSH: %s request to %s failed: %s", kind_names[r->kind], b->url, what);
      return;
    }
  }
  long code = 0;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
  if (code != 200) {
    snprintf(what, sizeof what, "HTTP %ld %s", code, http_reason(code));
    if (code == 502 || code == 503 || code == 504) { /* an intermediary; try again */
      retry_or_fail(b, r, EPODE_ERR_IO, what);
      return;
    }
    if (r->kind == K_TERMINATE) {
      finish_done(b);
      return;
    }
    fail(b, code == 404 && r->kind != K_CREATE ? EPODE_ERR_CLOSED : EPODE_ERR_PROTOCOL,
         "BOSH: %s from %s (%s request rid=%llu)", what, b->url, kind_names[r->kind],
         (unsigned long long)r->rid);
    return;
  }
  char why[300];
  epode_stanza *body = NULL;
  int bad_root = 0;
  epode_err e = read_body(b->cfg, r->resp.data ? r->resp.data : "", r->resp.len, b->resp_cap + 1,
                          &body, &bad_root, why, sizeof why);
  if (e && bad_root) {
    fail(b, EPODE_ERR_PROTOCOL, "BOSH: response to rid %llu is %s", (unsigned long long)r->rid,
         why);
    return;
  }
  if (e) {
    fail(b, e == EPODE_ERR_NOMEM ? e : EPODE_ERR_PROTOCOL,
         "BOSH: response to rid %llu from %s is not XML: %s", (unsigned long long)r->rid, b->url,
         why);
    return;
  }
  if (body_type(body) == EPODE__BOSH_BODY_ERROR && r->kind != K_TERMINATE) {
    /* XEP-0124 §17.3 (recoverable binding condition): send it again. */
    epode_stanza_free(body);
    retry_or_fail(b, r, EPODE_ERR_PROTOCOL, "the server answered type='error'");
    return;
  }
  r->parsed = body;
  r->complete = 1;
}

static void check_multi(epode__bosh *b) {
  CURLMsg *msg;
  int left = 0;
  while (b->multi && (msg = curl_multi_info_read(b->multi, &left)) != NULL) {
    if (msg->msg != CURLMSG_DONE) continue;
    req *r = NULL;
    CURL *easy = msg->easy_handle;
    CURLcode rc = msg->data.result;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
    if (!r) continue;
    curl_multi_remove_handle(b->multi, easy);
    r->active = 0;
    on_complete(b, r, rc);
    if (b->state == ST_FAILED || b->state == ST_DONE) return;
  }
  deliver(b);
}

static void run_retries(epode__bosh *b, uint64_t t) {
  for (size_t i = 0; i < BOSH_SLOTS; i++) {
    req *r = b->slots[i];
    if (r && !r->active && !r->complete && r->retry_at && r->retry_at <= t && launch(b, r)) {
      fail(b, EPODE_ERR_NOMEM, "BOSH: out of memory");
      return;
    }
  }
}

/* ------------------------------------------------------------ resolving */

static void resolved(epode__bosh *b, const char *const *addrs, size_t n) {
  epode__buf o;
  epode__buf_init(&o, b->mem, 0);
  epode_err e = epode__buf_printf(&o, "%s:%u:", b->url_host, b->port);
  for (size_t i = 0; !e && i < n; i++)
    e = epode__buf_printf(&o, "%s%s", i ? "," : "", addrs[i]);
  if (!e) {
    struct curl_slist *l = curl_slist_append(NULL, o.data);
    if (!l)
      e = EPODE_ERR_NOMEM;
    else
      b->resolve = l;
  }
  epode__buf_free(&o);
  if (e) {
    fail(b, EPODE_ERR_NOMEM, "BOSH: out of memory");
    return;
  }
  b->state = ST_CREATING;
}

static void check_dns(epode__bosh *b) {
  if (!b->dns || !epode__dns_done(b->dns)) return;
  const epode__addr *addrs = NULL;
  size_t n = 0;
  const char *detail = NULL;
  epode_err e = epode__dns_result(b->dns, &addrs, &n, &detail);
  if (e) {
    fail(b, e, "BOSH: %s", detail && *detail ? detail : "DNS lookup failed");
    return;
  }
  char strs[BOSH_MAX_ADDRS][INET6_ADDRSTRLEN + 2];
  const char *ptrs[BOSH_MAX_ADDRS];
  size_t k = 0;
  for (size_t i = 0; i < n && k < BOSH_MAX_ADDRS; i++) {
    char ip[INET6_ADDRSTRLEN];
    const struct sockaddr_storage *sa = &addrs[i].sa;
    if (sa->ss_family == AF_INET &&
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ip, sizeof ip))
      snprintf(strs[k], sizeof strs[k], "%s", ip);
    else if (sa->ss_family == AF_INET6 &&
             inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, ip, sizeof ip))
      snprintf(strs[k], sizeof strs[k], "[%s]", ip);
    else
      continue;
    ptrs[k] = strs[k];
    k++;
  }
  epode__dns_free(b->dns);
  b->dns = NULL;
  if (!k) {
    fail(b, EPODE_ERR_DNS, "BOSH: no usable address for %s", b->url_host);
    return;
  }
  resolved(b, ptrs, k);
}

/* ------------------------------------------------------------ entry points */

static void update_timer(epode__bosh *b) {
  int64_t due = -1;
  uint64_t t = now_ms();
  if (b->state != ST_FAILED && b->state != ST_DONE) {
    long ms = -1;
    if (b->multi && curl_multi_timeout(b->multi, &ms) == CURLM_OK && ms >= 0) due = (int64_t)t + ms;
    if (b->dns) {
      int64_t d = epode__dns_deadline(b->dns, t);
      if (d >= 0 && (due < 0 || d < due)) due = d;
    }
    for (size_t i = 0; i < BOSH_SLOTS; i++) {
      req *r = b->slots[i];
      if (r && !r->active && !r->complete && r->retry_at) {
        int64_t d = (int64_t)r->retry_at;
        if (due < 0 || d < due) due = d;
      }
    }
    if (b->gate_waiting && (due < 0 || (int64_t)b->empty_gate < due)) due = (int64_t)b->empty_gate;
  }
  if (due == b->reported_due) return;
  b->reported_due = due;
  if (b->host.timer)
    b->host.timer(b->host.ud, due < 0 ? -1 : due > (int64_t)t ? due - (int64_t)t : 0);
}

static int finished(const epode__bosh *b) { return b->state == ST_FAILED || b->state == ST_DONE; }

/* Last thing every entry point does: the timer, then at most one of
 * failed/done, after which `b` may be gone. */
static epode_err leave(epode__bosh *b) {
  while (b->want_pump && !finished(b)) {
    b->want_pump = 0;
    pump(b);
  }
  b->busy = 0;
  update_timer(b);
  epode_err ret = b->state == ST_FAILED ? b->err : EPODE_OK;
  int n = b->notify;
  b->notify = NOTIFY_NONE;
  if (n == NOTIFY_FAILED && b->host.failed)
    b->host.failed(b->host.ud, b->err, b->detail);
  else if (n == NOTIFY_DONE && b->host.done)
    b->host.done(b->host.ud);
  return ret;
}

void epode__bosh_set_session_ops(epode__bosh *b, const epode__bosh_session_ops *ops) {
  if (b && ops && b->state == ST_NEW) b->ops = ops;
}

epode_err epode__bosh_set_dns_servers(epode__bosh *b, const char *csv) {
  if (!b || !csv || b->state != ST_NEW) return EPODE_ERR_INVAL;
  char *c = epode__strdup(b->mem, csv);
  if (!c) return EPODE_ERR_NOMEM;
  epode__free(b->mem, b->dns_servers);
  b->dns_servers = c;
  return EPODE_OK;
}

static epode_err parse_url(epode__bosh *b, const char *url) {
  CURLU *u = curl_url();
  if (!u) return EPODE_ERR_NOMEM;
  epode_err e = EPODE_ERR_INVAL;
  char *scheme = NULL, *host = NULL, *port = NULL;
  if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
      (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0)) {
    b->https = strcmp(scheme, "https") == 0;
    unsigned p = 0;
    if (parse_uint(port, &p, 65535) && p > 0) {
      b->port = p;
      size_t n = strlen(host);
      if (host[0] == '[' && n > 2 && host[n - 1] == ']') { /* IPv6 literal */
        b->literal = 1;
        b->url_host = epode__strndup(b->mem, host + 1, n - 2);
      } else {
        unsigned char tmp[16];
        b->literal = inet_pton(AF_INET, host, tmp) == 1;
        b->url_host = epode__strdup(b->mem, host);
      }
      b->url = epode__strdup(b->mem, url);
      e = b->url_host && b->url ? EPODE_OK : EPODE_ERR_NOMEM;
    }
  }
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(u);
  return e;
}

epode_err epode__bosh_new(epode__bosh **out, const epode_config *cfg, epode_session *s,
                          const char *url, const epode__bosh_host *host) {
  if (!out) return EPODE_ERR_INVAL;
  *out = NULL;
  if (!cfg || !s || !url || !host) return EPODE_ERR_INVAL;
  epode__bosh *b = epode__calloc(&cfg->mem, sizeof *b);
  if (!b) return EPODE_ERR_NOMEM;
  b->cfg = cfg;
  b->mem = &cfg->mem;
  b->s = s;
  b->ops = &real_ops;
  b->host = *host;
  b->reported_due = -1;
  b->requests = 1;
  b->wait = BOSH_WAIT;
  b->hold = BOSH_HOLD;
  b->max_inflight = 1;
  b->resp_cap = epode__bosh_response_cap(cfg);
  epode_err e = parse_url(b, url);
  if (e) {
    epode__bosh_free(b);
    return e;
  }
  /* Reference-counted by curl and thread-safe since 7.84. */
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    epode__bosh_free(b);
    return EPODE_ERR_NOMEM;
  }
  b->curl_global = 1;
  b->multi = curl_multi_init();
  struct curl_slist *h = curl_slist_append(NULL, "Content-Type: text/xml; charset=utf-8");
  if (h) b->headers = h;
  if (h) h = curl_slist_append(b->headers, "Expect:"); /* no 100-continue round trip */
  if (h) h = curl_slist_append(b->headers, "Accept: text/xml, application/xml");
  if (!b->multi || !h) {
    epode__bosh_free(b);
    return EPODE_ERR_NOMEM;
  }
  curl_multi_setopt(b->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
  curl_multi_setopt(b->multi, CURLMOPT_SOCKETDATA, (void *)b);
  curl_multi_setopt(b->multi, CURLMOPT_MAXCONNECTS, (long)BOSH_MAX_REQUESTS + 1);
  /* The rid: random, below 2^52, never 0. */
  unsigned char rnd[8];
  if (cfg->random_fn(cfg->random_ud, rnd, sizeof rnd) != 0) {
    epode__bosh_free(b);
    return EPODE_ERR_SYS;
  }
  uint64_t x = 0;
  for (size_t i = 0; i < sizeof rnd; i++)
    x = x << 8 | rnd[i];
  b->next_rid = b->deliver_rid = 1 + x % (BOSH_RID_SPAN - 1);
  *out = b;
  return EPODE_OK;
}

epode_err epode__bosh_start(epode__bosh *b) {
  if (!b) return EPODE_ERR_INVAL;
  if (b->state != ST_NEW || b->busy) return EPODE_ERR_STATE;
  b->busy = 1;
  uint64_t t = now_ms();
  epode_err e = b->ops->set_framing ? b->ops->set_framing(b->s, EPODE_FRAMING_BOSH) : EPODE_OK;
  if (!e) {
    epode_tls_info tls;
    memset(&tls, 0, sizeof tls);
    /* The version is not known before the first handshake; the lowest we
     * allow is what the session can rely on. */
    tls.version = b->cfg->tls_min ? b->cfg->tls_min : 0x0303;
    e = b->ops->start(b->s, t, b->https ? &tls : NULL);
  }
  if (e) {
    fail(b, e, "BOSH: the session cannot start: %s", epode_strerror(e));
    return leave(b);
  }
  b->state = ST_RESOLVING;
  const char *h = b->url_host;
  if (b->literal) {
    b->state = ST_CREATING;
  } else if (strcasecmp(h, "localhost") == 0 || strcasecmp(h, "localhost.") == 0) {
    const char *loop[2] = {"127.0.0.1", "[::1]"};
    resolved(b, loop, 2);
  } else {
    e = epode__dns_new(&b->dns, b->cfg, dns_sock_cb, b);
    if (!e && b->dns_servers) e = epode__dns_set_servers(b->dns, b->dns_servers);
    if (!e) e = epode__dns_start(b->dns, h, EPODE_TLS_STARTTLS, h, (uint16_t)b->port, t);
    if (e)
      fail(b, e, "BOSH: cannot start resolving %s: %s", h, epode_strerror(e));
    else
      check_dns(b);
  }
  pump(b);
  return leave(b);
}

epode_err epode__bosh_process_fd(epode__bosh *b, int fd, unsigned events) {
  if (!b) return EPODE_ERR_INVAL;
  if (finished(b)) return b->state == ST_FAILED ? b->err : EPODE_OK;
  if (b->busy) return EPODE_ERR_STATE;
  b->busy = 1;
  if (b->dns && is_dns_fd(b, fd)) {
    epode__dns_process_fd(b->dns, fd, events, now_ms());
    check_dns(b);
  } else if (b->multi) {
    int mask = 0, running = 0;
    if (events & EPODE_IO_READ) mask |= CURL_CSELECT_IN;
    if (events & EPODE_IO_WRITE) mask |= CURL_CSELECT_OUT;
    curl_multi_socket_action(b->multi, (curl_socket_t)fd, mask, &running);
    check_multi(b);
  }
  pump(b);
  return leave(b);
}

epode_err epode__bosh_process_timeout(epode__bosh *b) {
  if (!b) return EPODE_ERR_INVAL;
  if (finished(b)) return b->state == ST_FAILED ? b->err : EPODE_OK;
  if (b->busy) return EPODE_ERR_STATE;
  b->busy = 1;
  b->reported_due = -1; /* the host's timer fired: it holds none now */
  uint64_t t = now_ms();
  if (b->dns) {
    epode__dns_process_timeout(b->dns, t);
    check_dns(b);
  }
  if (b->multi && !finished(b)) {
    int running = 0;
    curl_multi_socket_action(b->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi(b);
  }
  if (!finished(b)) run_retries(b, now_ms());
  if (!finished(b)) pump(b);
  return leave(b);
}

epode_err epode__bosh_flush(epode__bosh *b) {
  if (!b) return EPODE_ERR_INVAL;
  if (finished(b)) return b->state == ST_FAILED ? b->err : EPODE_OK;
  if (b->busy) { /* from inside our own processing: after it */
    b->want_pump = 1;
    return EPODE_OK;
  }
  b->busy = 1;
  pump(b);
  return leave(b);
}

void epode__bosh_get_params(const epode__bosh *b, epode__bosh_params *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  if (!b) return;
  out->sid = b->sid[0] ? b->sid : NULL;
  out->ver = b->ver[0] ? b->ver : NULL;
  out->rid = b->next_rid - 1;
  out->requests = b->requests;
  out->wait = b->wait;
  out->polling = b->polling;
  out->inactivity = b->inactivity;
  out->maxpause = b->maxpause;
  out->hold = b->hold;
}

void epode__bosh_free(epode__bosh *b) {
  if (!b) return;
  drop_all(b);
  if (b->multi) curl_multi_cleanup(b->multi); /* reports its sockets removed */
  if (b->reported_due >= 0 && b->host.timer) b->host.timer(b->host.ud, -1);
  curl_slist_free_all(b->resolve);
  curl_slist_free_all(b->headers);
  if (b->curl_global) curl_global_cleanup();
  epode__free(b->mem, b->url);
  epode__free(b->mem, b->url_host);
  epode__free(b->mem, b->dns_servers);
  epode__free(b->mem, b->domain);
  epode__free(b->mem, b->lang);
  epode__free(b->mem, b);
}
