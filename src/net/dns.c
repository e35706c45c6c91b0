/* The resolver: SRV (RFC 2782, RFC 6120 §3.2, XEP-0368) then A/AAAA, with
 * c-ares driven through the host's loop (its sockets are reported through
 * the sock-state callback, never polled here).
 *
 * c-ares keeps no global state we depend on: ares_library_init() is a no-op
 * on Linux since 1.11, so each resolver just owns its channel. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>
#include <arpa/nameser.h>

#include "net/net.h"
#include "util/alloc.h"

enum { KIND_XMPPS = 0, KIND_XMPP = 1 };
enum { PH_IDLE = 0, PH_SRV, PH_ADDR, PH_DONE };

typedef struct srv_rec {
  char host[EPODE__MAX_HOST];
  uint16_t port, prio, weight;
  int direct;
} srv_rec;

typedef struct qctx {
  epode__dns *d;
  size_t idx;
} qctx;

typedef struct tgt_result {
  epode__addr *addrs;
  size_t n;
  int status;
} tgt_result;

struct epode__dns {
  const epode_config *cfg;
  const epode_mem *mem;
  ares_channel ch; /* made at the first query (see channel()) */
  int ch_ok;
  epode__dns_sock_fn sock_fn;
  void *sock_ud;
  int phase;
  int pending; /* c-ares callbacks still to come */
  int timed_out;
  int freeing;
  uint64_t deadline; /* overall; 0: none */
  char domain[EPODE__MAX_HOST];
  epode_tls_mode mode;

  /* SRV answers, by kind. */
  struct {
    int asked;
    int status;    /* ARES_* of the query */
    int root;      /* the answer was "." (service not available) */
    int malformed; /* the answer did not parse */
    char name[EPODE__MAX_HOST + 32];
  } srv[2];
  qctx srv_ctx[2];
  srv_rec *recs; /* all SRV records, then the ordered targets */
  size_t nrecs;

  srv_rec *targets;
  size_t ntargets;
  size_t ntab; /* entries of targets, tgt_ctx and tgt */
  qctx *tgt_ctx;
  tgt_result *tgt;

  epode__addr *addrs;
  size_t naddrs;
  epode_err err;
  char detail[1024];
};

void epode__addr_str(const epode__addr *a, char *buf, size_t size) {
  char ip[INET6_ADDRSTRLEN] = "?";
  if (a->sa.ss_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->sa;
    inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
    snprintf(buf, size, "[%s]:%u", ip, (unsigned)ntohs(s6->sin6_port));
  } else {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)&a->sa;
    inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
    snprintf(buf, size, "%s:%u", ip, (unsigned)ntohs(s4->sin_port));
  }
}

static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable) {
  epode__dns *d = data;
  unsigned ev = (readable ? EPODE_IO_READ : 0u) | (writable ? EPODE_IO_WRITE : 0u);
  if (d->sock_fn) d->sock_fn((int)fd, ev, d->sock_ud);
}

epode_err epode__dns_new(epode__dns **out, const epode_config *cfg, epode__dns_sock_fn fn,
                         void *ud) {
  if (!out || !cfg) return EPODE_ERR_INVAL;
  *out = NULL;
  /* Tables and the c-ares channel come when a lookup needs them: a
   * connection to an IP literal needs neither (a channel is ~70 KiB, the
   * tables for 32 SRV targets ~40 KiB, per login in flight). */
  epode__dns *d = epode__calloc(&cfg->mem, sizeof *d);
  if (!d) return EPODE_ERR_NOMEM;
  d->cfg = cfg;
  d->mem = &cfg->mem;
  d->sock_fn = fn;
  d->sock_ud = ud;
  for (int k = 0; k < 2; k++)
    d->srv_ctx[k] = (qctx){d, (size_t)k};
  *out = d;
  return EPODE_OK;
}

/* The c-ares channel, made at the first query; 0 if it could not be (its
 * reason in *why). */
static int channel(epode__dns *d, const char **why) {
  if (d->ch_ok) return 1;
  /* Each try gets a quarter of the connect timeout (at most 5 s, c-ares'
   * default), two tries per server: with one server c-ares gives up within
   * ~3/4 of the bound, and our own deadline enforces the rest. */
  uint32_t total = d->cfg->timeouts[EPODE_TIMEOUT_CONNECT];
  int per_try = total ? (int)(total / 4) : 5000;
  if (per_try > 5000) per_try = 5000;
  if (per_try < 100) per_try = 100;
  struct ares_options opt;
  memset(&opt, 0, sizeof opt);
  opt.sock_state_cb = sock_state_cb;
  opt.sock_state_cb_data = d;
  opt.timeout = per_try;
  opt.tries = 2;
  /* XMPP domains are fully qualified: no search list. */
  opt.flags = ARES_FLAG_NOSEARCH;
  int st = ares_init_options(
      &d->ch, &opt, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS);
  if (st != ARES_SUCCESS) {
    if (why) *why = ares_strerror(st);
    return 0;
  }
  d->ch_ok = 1;
  return 1;
}

/* The target tables for n targets (and, for SRV, as many records). */
static int tables(epode__dns *d, size_t n, int srv) {
  d->targets = epode__calloc(d->mem, n * sizeof *d->targets);
  d->tgt_ctx = epode__calloc(d->mem, n * sizeof *d->tgt_ctx);
  d->tgt = epode__calloc(d->mem, n * sizeof *d->tgt);
  if (srv) d->recs = epode__calloc(d->mem, n * sizeof *d->recs);
  if (!d->targets || !d->tgt_ctx || !d->tgt || (srv && !d->recs)) return 0;
  d->ntab = n;
  for (size_t i = 0; i < n; i++)
    d->tgt_ctx[i] = (qctx){d, i};
  return 1;
}

void epode__dns_free(epode__dns *d) {
  if (!d) return;
  d->freeing = 1;
  /* Pending callbacks run now with ARES_EDESTRUCTION; sockets are reported
   * closed through sock_state_cb. */
  if (d->ch_ok) ares_destroy(d->ch);
  if (d->tgt)
    for (size_t i = 0; i < d->ntab; i++)
      epode__free(d->mem, d->tgt[i].addrs);
  epode__free(d->mem, d->recs);
  epode__free(d->mem, d->targets);
  epode__free(d->mem, d->tgt_ctx);
  epode__free(d->mem, d->tgt);
  epode__free(d->mem, d->addrs);
  epode__free(d->mem, d);
}

epode_err epode__dns_set_servers(epode__dns *d, const char *csv) {
  if (!d || !csv) return EPODE_ERR_INVAL;
  /* The channel now, to check the list (a literal host then makes no
   * query through it). */
  if (!channel(d, NULL)) return EPODE_ERR_NOMEM;
  return ares_set_servers_ports_csv(d->ch, csv) == ARES_SUCCESS ? EPODE_OK : EPODE_ERR_INVAL;
}

static void finish(epode__dns *d, epode_err err) {
  d->phase = PH_DONE;
  d->err = err;
  if (err) epode__log(d->cfg, EPODE_LOG_DEBUG, "net", "DNS: %s", d->detail);
}

static void failf(epode__dns *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void failf(epode__dns *d, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(d->detail, sizeof d->detail, fmt, ap);
  va_end(ap);
  finish(d, EPODE_ERR_DNS);
}

/* ------------------------------------------------------------------ A/AAAA */

static void addr_done(epode__dns *d) {
  if (d->timed_out) {
    failf(d, "looking up the addresses of %s timed out after %u ms", d->targets[0].host,
          (unsigned)d->cfg->timeouts[EPODE_TIMEOUT_CONNECT]);
    return;
  }
  d->naddrs = 0;
  size_t total = 0;
  for (size_t i = 0; i < d->ntargets; i++)
    total += d->tgt[i].n;
  if (total > EPODE__MAX_ADDRS) total = EPODE__MAX_ADDRS;
  if (total && !(d->addrs = epode__calloc(d->mem, total * sizeof *d->addrs))) {
    d->err = EPODE_ERR_NOMEM;
    snprintf(d->detail, sizeof d->detail, "out of memory");
    finish(d, EPODE_ERR_NOMEM);
    return;
  }
  for (size_t i = 0; i < d->ntargets; i++) {
    for (size_t j = 0; j < d->tgt[i].n && d->naddrs < total; j++)
      d->addrs[d->naddrs++] = d->tgt[i].addrs[j];
  }
  if (d->naddrs) {
    if (EPODE__LOG_ON(d->cfg, EPODE_LOG_INFO)) {
      for (size_t i = 0; i < d->naddrs; i++) {
        char a[80];
        epode__addr_str(&d->addrs[i], a, sizeof a);
        epode__log(d->cfg, EPODE_LOG_INFO, "net", "address %zu: %s (%s, %s)", i + 1, a,
                   d->addrs[i].host, d->addrs[i].direct_tls ? "direct TLS" : "STARTTLS");
      }
    }
    finish(d, EPODE_OK);
    return;
  }
  /* Nothing resolved: say why for every name. */
  size_t off = (size_t)snprintf(d->detail, sizeof d->detail, "no address found for ");
  for (size_t i = 0; i < d->ntargets && off < sizeof d->detail; i++) {
    int st = d->tgt[i].status;
    off += (size_t)snprintf(d->detail + off, sizeof d->detail - off, "%s%s (%s)", i ? ", " : "",
                            d->targets[i].host,
                            st == ARES_SUCCESS ? "no usable address" : ares_strerror(st));
  }
  finish(d, EPODE_ERR_DNS);
}

static void addrinfo_cb(void *arg, int status, int timeouts, struct ares_addrinfo *res) {
  qctx *q = arg;
  epode__dns *d = q->d;
  if (d->freeing) {
    if (res) ares_freeaddrinfo(res);
    return;
  }
  tgt_result *t = &d->tgt[q->idx];
  const srv_rec *r = &d->targets[q->idx];
  t->status = status;
  if (status == ARES_SUCCESS && res) {
    size_t n = 0;
    for (struct ares_addrinfo_node *a = res->nodes; a; a = a->ai_next)
      n++;
    if (n > EPODE__MAX_ADDRS_PER_TARGET) {
      epode__log(d->cfg, EPODE_LOG_WARN, "net", "%s has %zu addresses; trying the first %u",
                 r->host, n, EPODE__MAX_ADDRS_PER_TARGET);
      n = EPODE__MAX_ADDRS_PER_TARGET;
    }
    t->addrs = n ? epode__calloc(d->mem, n * sizeof *t->addrs) : NULL;
    if (n && !t->addrs) {
      t->status = ARES_ENOMEM;
      n = 0;
    }
    size_t k = 0;
    for (struct ares_addrinfo_node *a = res->nodes; a && k < n; a = a->ai_next) {
      if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
          (size_t)a->ai_addrlen > sizeof t->addrs[k].sa)
        continue;
      epode__addr *o = &t->addrs[k++];
      memcpy(&o->sa, a->ai_addr, (size_t)a->ai_addrlen);
      o->salen = (socklen_t)a->ai_addrlen;
      o->direct_tls = r->direct;
      snprintf(o->host, sizeof o->host, "%s", r->host);
    }
    t->n = k;
  } else {
    epode__log(d->cfg, EPODE_LOG_INFO, "net", "resolving %s failed: %s", r->host,
               ares_strerror(status));
  }
  if (res) ares_freeaddrinfo(res);
  if (--d->pending == 0) addr_done(d);
}

/* An IP literal needs no lookup (c-ares 1.18 would query it). */
static int literal_target(epode__dns *d, size_t i) {
  const srv_rec *r = &d->targets[i];
  epode__addr a;
  memset(&a, 0, sizeof a);
  struct sockaddr_in *s4 = (struct sockaddr_in *)&a.sa;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a.sa;
  if (inet_pton(AF_INET, r->host, &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons(r->port);
    a.salen = sizeof *s4;
  } else if (inet_pton(AF_INET6, r->host, &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(r->port);
    a.salen = sizeof *s6;
  } else {
    return 0;
  }
  a.direct_tls = r->direct;
  snprintf(a.host, sizeof a.host, "%s", r->host);
  tgt_result *t = &d->tgt[i];
  t->status = ARES_SUCCESS;
  t->addrs = epode__alloc(d->mem, sizeof a);
  if (t->addrs) {
    t->addrs[0] = a;
    t->n = 1;
  } else {
    t->status = ARES_ENOMEM;
  }
  return 1;
}

static void resolve_targets(epode__dns *d) {
  d->phase = PH_ADDR;
  d->pending = (int)d->ntargets + 1; /* +1: held until every lookup is started */
  for (size_t i = 0; i < d->ntargets; i++) {
    if (literal_target(d, i)) {
      d->pending--;
      continue;
    }
    char port[8];
    snprintf(port, sizeof port, "%u", (unsigned)d->targets[i].port);
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    hints.ai_flags = ARES_AI_NUMERICSERV;
    epode__log(d->cfg, EPODE_LOG_DEBUG, "net", "resolving %s (port %s)", d->targets[i].host, port);
    const char *why = NULL;
    if (!channel(d, &why)) {
      epode__log(d->cfg, EPODE_LOG_INFO, "net", "cannot start the DNS resolver: %s", why);
      d->tgt[i].status = ARES_ENOMEM;
      d->pending--;
      continue;
    }
    /* May call back at once (IP literals, /etc/hosts, errors). */
    ares_getaddrinfo(d->ch, d->targets[i].host, port, &hints, addrinfo_cb, &d->tgt_ctx[i]);
  }
  if (--d->pending == 0) addr_done(d);
}

/* ------------------------------------------------------------------ SRV */

static uint32_t rand32(epode__dns *d) {
  unsigned char b[4] = {0, 0, 0, 0};
  if (d->cfg->random_fn(d->cfg->random_ud, b, sizeof b) != 0) return 0;
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static int rec_cmp(const void *a, const void *b) {
  const srv_rec *x = a, *y = b;
  if (x->prio != y->prio) return x->prio < y->prio ? -1 : 1;
  /* XEP-0368: at equal priority, direct TLS first. */
  if (x->direct != y->direct) return x->direct ? -1 : 1;
  /* RFC 2782: zero-weight records first within a group. */
  if ((x->weight == 0) != (y->weight == 0)) return x->weight == 0 ? -1 : 1;
  return 0;
}

/* RFC 2782 weighted selection within each (priority, kind) group. */
static void order_targets(epode__dns *d) {
  /* qsort is not stable; the index keeps answer order among equals. */
  for (size_t i = 1; i < d->nrecs; i++) {
    srv_rec tmp = d->recs[i];
    size_t j = i;
    while (j > 0 && rec_cmp(&d->recs[j - 1], &tmp) > 0) {
      d->recs[j] = d->recs[j - 1];
      j--;
    }
    d->recs[j] = tmp;
  }
  d->ntargets = 0;
  size_t g = 0;
  while (g < d->nrecs) {
    size_t end = g;
    while (end < d->nrecs && d->recs[end].prio == d->recs[g].prio &&
           d->recs[end].direct == d->recs[g].direct)
      end++;
    /* Select from [g, end) repeatedly. */
    while (g < end) {
      uint64_t sum = 0;
      for (size_t i = g; i < end; i++)
        sum += d->recs[i].weight;
      uint64_t r = sum ? rand32(d) % (sum + 1) : 0, run = 0;
      size_t pick = g;
      for (size_t i = g; i < end; i++) {
        run += d->recs[i].weight;
        if (run >= r) {
          pick = i;
          break;
        }
      }
      d->targets[d->ntargets++] = d->recs[pick];
      /* Remove the pick, keeping the rest in order. */
      for (size_t i = pick; i > g; i--)
        d->recs[i] = d->recs[i - 1];
      g++;
    }
  }
}

static void srv_done(epode__dns *d) {
  if (d->timed_out) {
    failf(d, "SRV lookup for %s timed out after %u ms", d->domain,
          (unsigned)d->cfg->timeouts[EPODE_TIMEOUT_CONNECT]);
    return;
  }
  for (int k = 0; k < 2; k++) {
    if (d->srv[k].asked && d->srv[k].malformed) {
      failf(d, "malformed DNS answer to the SRV query for %s: %s", d->srv[k].name,
            ares_strerror(d->srv[k].status));
      return;
    }
  }
  if (d->nrecs) {
    order_targets(d);
    if (EPODE__LOG_ON(d->cfg, EPODE_LOG_INFO))
      for (size_t i = 0; i < d->ntargets; i++)
        epode__log(d->cfg, EPODE_LOG_INFO, "net", "SRV target %zu: %s:%u (%s, priority %u)", i + 1,
                   d->targets[i].host, (unsigned)d->targets[i].port,
                   d->targets[i].direct ? "direct TLS" : "STARTTLS", (unsigned)d->targets[i].prio);
    resolve_targets(d);
    return;
  }
  /* No usable SRV record: the domain itself, on the standard port of the
   * service the mode falls back to — unless SRV said that service is not
   * offered at all. */
  int kind = d->mode == EPODE_TLS_DIRECT ? KIND_XMPPS : KIND_XMPP;
  if (d->srv[kind].root) {
    failf(d, "%s has no XMPP client service (its SRV record %s is \".\")", d->domain,
          d->srv[kind].name);
    return;
  }
  epode__log(d->cfg, EPODE_LOG_INFO, "net", "no SRV records for %s; trying the domain itself",
             d->domain);
  srv_rec *t = &d->targets[0];
  memset(t, 0, sizeof *t);
  snprintf(t->host, sizeof t->host, "%s", d->domain);
  t->direct = kind == KIND_XMPPS;
  t->port = t->direct ? 5223 : 5222;
  d->ntargets = 1;
  resolve_targets(d);
}

static void srv_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen) {
  qctx *q = arg;
  epode__dns *d = q->d;
  if (d->freeing) return;
  int k = (int)q->idx;
  d->srv[k].status = status;
  if (status == ARES_SUCCESS) {
    struct ares_srv_reply *reply = NULL;
    int st = ares_parse_srv_reply(abuf, alen, &reply);
    if (st == ARES_ENODATA) {
      /* An answer with no SRV records in it: same as none. */
      d->srv[k].status = st;
    } else if (st != ARES_SUCCESS) {
      d->srv[k].malformed = 1;
      d->srv[k].status = st;
    } else {
      size_t n = 0, roots = 0;
      for (struct ares_srv_reply *r = reply; r; r = r->next) {
        n++;
        if (!r->host[0] || !strcmp(r->host, ".")) roots++;
      }
      if (n == 1 && roots == 1) {
        d->srv[k].root = 1;
      } else {
        for (struct ares_srv_reply *r = reply; r; r = r->next) {
          if (!r->host[0] || !strcmp(r->host, ".") || r->port == 0) continue;
          if (strlen(r->host) >= EPODE__MAX_HOST) continue;
          if (d->nrecs >= EPODE__MAX_SRV_TARGETS) {
            epode__log(d->cfg, EPODE_LOG_WARN, "net",
                       "more than %u SRV records for %s; ignoring the rest", EPODE__MAX_SRV_TARGETS,
                       d->domain);
            break;
          }
          srv_rec *o = &d->recs[d->nrecs++];
          snprintf(o->host, sizeof o->host, "%s", r->host);
          o->port = r->port;
          o->prio = r->priority;
          o->weight = r->weight;
          o->direct = k == KIND_XMPPS;
        }
      }
      ares_free_data(reply);
    }
  } else if (status != ARES_ECANCELLED) {
    epode__log(d->cfg, EPODE_LOG_INFO, "net", "SRV %s: %s", d->srv[k].name, ares_strerror(status));
  }
  if (--d->pending == 0) srv_done(d);
}

epode_err epode__dns_start(epode__dns *d, const char *domain, epode_tls_mode mode, const char *host,
                           uint16_t port, uint64_t now_ms) {
  if (!d || !domain || d->phase != PH_IDLE) return EPODE_ERR_INVAL;
  if (strlen(domain) >= EPODE__MAX_HOST || (host && strlen(host) >= EPODE__MAX_HOST))
    return EPODE_ERR_INVAL;
  snprintf(d->domain, sizeof d->domain, "%s", domain);
  d->mode = mode;
  uint32_t t = d->cfg->timeouts[EPODE_TIMEOUT_CONNECT];
  d->deadline = t ? now_ms + t : 0;

  if (!tables(d, host ? 1 : EPODE__MAX_SRV_TARGETS, !host)) return EPODE_ERR_NOMEM;
  if (host) {
    srv_rec *r = &d->targets[0];
    snprintf(r->host, sizeof r->host, "%s", host);
    r->direct = mode == EPODE_TLS_DIRECT;
    r->port = port ? port : r->direct ? 5223 : 5222;
    d->ntargets = 1;
    epode__log(d->cfg, EPODE_LOG_INFO, "net", "connecting to the configured server %s:%u", r->host,
               (unsigned)r->port);
    resolve_targets(d);
    return EPODE_OK;
  }

  const char *why = NULL;
  if (!channel(d, &why)) {
    failf(d, "cannot start the DNS resolver: %s", why);
    return EPODE_OK;
  }
  d->phase = PH_SRV;
  static const char *const svc[2] = {"_xmpps-client._tcp.", "_xmpp-client._tcp."};
  d->srv[KIND_XMPPS].asked = mode != EPODE_TLS_STARTTLS;
  d->srv[KIND_XMPP].asked = mode != EPODE_TLS_DIRECT;
  d->pending = d->srv[0].asked + d->srv[1].asked;
  for (int k = 0; k < 2; k++) {
    if (!d->srv[k].asked) continue;
    snprintf(d->srv[k].name, sizeof d->srv[k].name, "%s%s", svc[k], domain);
    epode__log(d->cfg, EPODE_LOG_DEBUG, "net", "SRV query %s", d->srv[k].name);
    ares_query(d->ch, d->srv[k].name, ns_c_in, ns_t_srv, srv_cb, &d->srv_ctx[k]);
  }
  return EPODE_OK;
}

static void check_deadline(epode__dns *d, uint64_t now_ms) {
  if (d->phase == PH_DONE || d->phase == PH_IDLE || !d->deadline || now_ms < d->deadline) return;
  /* Cancelling runs every pending callback with ARES_ECANCELLED, which ends
   * the phase; timed_out turns that into the timeout error. */
  d->timed_out = 1;
  if (d->ch_ok) ares_cancel(d->ch);
  if (d->phase != PH_DONE) failf(d, "DNS lookup for %s timed out", d->domain);
}

void epode__dns_process_fd(epode__dns *d, int fd, unsigned events, uint64_t now_ms) {
  if (!d || d->phase == PH_DONE || !d->ch_ok) return;
  ares_process_fd(d->ch, (events & EPODE_IO_READ) ? (ares_socket_t)fd : ARES_SOCKET_BAD,
                  (events & EPODE_IO_WRITE) ? (ares_socket_t)fd : ARES_SOCKET_BAD);
  check_deadline(d, now_ms);
}

void epode__dns_process_timeout(epode__dns *d, uint64_t now_ms) {
  if (!d || d->phase == PH_DONE) return;
  if (d->ch_ok) ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  check_deadline(d, now_ms);
}

int64_t epode__dns_deadline(const epode__dns *d, uint64_t now_ms) {
  if (!d || d->phase == PH_DONE || d->phase == PH_IDLE) return -1;
  int64_t best = d->deadline ? (int64_t)d->deadline : -1;
  struct timeval tv, *tvp = d->ch_ok ? ares_timeout(d->ch, NULL, &tv) : NULL;
  if (tvp) {
    /* Round up so we never wake a millisecond before c-ares is due. */
    int64_t ms = (int64_t)tvp->tv_sec * 1000 + (tvp->tv_usec + 999) / 1000;
    int64_t at = (int64_t)now_ms + ms;
    if (best < 0 || at < best) best = at;
  }
  return best;
}

int epode__dns_has_channel(const epode__dns *d) { return d && d->ch_ok; }

int epode__dns_done(const epode__dns *d) { return d && d->phase == PH_DONE; }

epode_err epode__dns_result(const epode__dns *d, const epode__addr **addrs, size_t *n,
                            const char **detail) {
  if (addrs) *addrs = d->naddrs ? d->addrs : NULL;
  if (n) *n = d->naddrs;
  if (detail) *detail = d->err ? d->detail : "";
  if (d->phase != PH_DONE) return EPODE_ERR_STATE;
  return d->err;
}
