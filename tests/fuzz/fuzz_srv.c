/* Fuzz target: DNS answers as the resolver (src/net/dns.c) consumes them:
 * the SRV answers for _xmpps-client/_xmpp-client (parsed by c-ares'
 * ares_parse_srv_reply in srv_cb, then filtered, bounded and ordered by
 * RFC 2782 weight), then the A/AAAA answers for each target.
 *
 * The resolver runs unmodified: dns.c is compiled into this file so that
 * the fuzzer can reach its c-ares channel and replace the channel's sockets
 * (ares_set_socket_functions) with a fake UDP name server that answers each
 * query with the next piece of the input. Nothing touches the network.
 *
 * Input: byte 0: TLS mode (AUTO / STARTTLS / DIRECT, mod 3); then pieces
 * separated by "\x00\xff", one per query in the order c-ares sent them.
 * A piece's first byte says how to build the answer:
 *   bit 0 set  raw: the rest is the whole DNS message (its id is patched to
 *              the query's, so c-ares does not drop it unread);
 *   bit 0 clear built: header (id, QR|RD|RA, rcode = byte>>4 & 15,
 *              ancount = next byte), the query's own question, then the rest
 *              as the answer section (SRV/A/AAAA records, name compression
 *              against offset 12 works).
 *   bit 1 set  before answering, move the clock past the resolver's
 *              deadline (the timeout path).
 * An exhausted input leaves the remaining queries unanswered and frees the
 * resolver mid-flight (the cancellation path). */
#include "net/dns.c"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/uio.h>

#include "epode/epode.h"
#include "fuzz_common.h"

#define FAKE_FD_BASE 900
#define MAX_Q 256

typedef struct {
  unsigned char q[512];
  size_t qlen;
} query;

typedef struct {
  int next_fd;
  int udp_fd; /* the socket the last query went out on */
  query qs[MAX_Q];
  size_t nq, answered;
  unsigned char reply[4096];
  size_t reply_len;
  int have_reply;
} fake_ns;

static ares_socket_t f_socket(int family, int type, int proto, void *ud) {
  fake_ns *f = ud;
  (void)family;
  (void)proto;
  if (type != SOCK_DGRAM) { /* TCP after a truncated answer: refuse */
    errno = EAFNOSUPPORT;
    return ARES_SOCKET_BAD;
  }
  return (ares_socket_t)(FAKE_FD_BASE + f->next_fd++);
}
static int f_close(ares_socket_t s, void *ud) {
  (void)s;
  (void)ud;
  return 0;
}
static int f_connect(ares_socket_t s, const struct sockaddr *a, ares_socklen_t l, void *ud) {
  (void)s;
  (void)a;
  (void)l;
  (void)ud;
  return 0;
}
static ares_ssize_t f_recvfrom(ares_socket_t s, void *buf, size_t len, int flags,
                               struct sockaddr *from, ares_socklen_t *fromlen, void *ud) {
  fake_ns *f = ud;
  (void)flags;
  if (!f->have_reply || (int)s != f->udp_fd) {
    errno = EAGAIN;
    return -1;
  }
  f->have_reply = 0;
  size_t n = f->reply_len < len ? f->reply_len : len;
  memcpy(buf, f->reply, n);
  if (from && fromlen) {
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons(53);
    sin.sin_addr.s_addr = htonl(0x7f000001);
    ares_socklen_t l =
        *fromlen < (ares_socklen_t)sizeof sin ? *fromlen : (ares_socklen_t)sizeof sin;
    memcpy(from, &sin, (size_t)l);
    *fromlen = (ares_socklen_t)sizeof sin;
  }
  return (ares_ssize_t)n;
}
static ares_ssize_t f_sendv(ares_socket_t s, const struct iovec *v, int n, void *ud) {
  fake_ns *f = ud;
  size_t total = 0;
  query *q = f->nq < MAX_Q ? &f->qs[f->nq] : NULL;
  if (q) q->qlen = 0;
  for (int i = 0; i < n; i++) {
    if (q && q->qlen + v[i].iov_len <= sizeof q->q) {
      memcpy(q->q + q->qlen, v[i].iov_base, v[i].iov_len);
      q->qlen += v[i].iov_len;
    }
    total += v[i].iov_len;
  }
  if (q) f->nq++;
  f->udp_fd = (int)s;
  return (ares_ssize_t)total;
}

static const struct ares_socket_functions fake_funcs = {f_socket, f_close, f_connect, f_recvfrom,
                                                        f_sendv};

/* The question section of a query: from offset 12 to the end of QNAME plus
 * QTYPE and QCLASS. */
static size_t question_len(const query *q) {
  size_t i = 12;
  while (i < q->qlen && q->q[i])
    i += (size_t)q->q[i] + 1;
  i += 1 + 4;
  return i <= q->qlen ? i - 12 : 0;
}

static void build_reply(fake_ns *f, const query *q, const uint8_t *p, size_t len) {
  uint8_t how = len ? p[0] : 0;
  if (len) {
    p++;
    len--;
  }
  f->reply_len = 0;
  if (how & 1) {
    if (len > sizeof f->reply) len = sizeof f->reply;
    memcpy(f->reply, p, len);
    f->reply_len = len;
    if (len >= 2 && q->qlen >= 2) memcpy(f->reply, q->q, 2);
  } else {
    size_t ql = question_len(q);
    uint8_t an = len ? p[0] : 1;
    if (len) {
      p++;
      len--;
    }
    unsigned char *r = f->reply;
    r[0] = q->q[0];
    r[1] = q->q[1];
    r[2] = 0x81;                                      /* QR, RD */
    r[3] = (unsigned char)(0x80 | ((how >> 4) & 15)); /* RA, rcode */
    r[4] = 0;
    r[5] = 1;
    r[6] = 0;
    r[7] = an;
    memset(r + 8, 0, 4);
    memcpy(r + 12, q->q + 12, ql);
    size_t off = 12 + ql;
    if (len > sizeof f->reply - off) len = sizeof f->reply - off;
    memcpy(r + off, p, len);
    f->reply_len = off + len;
  }
  f->have_reply = 1;
}

static void on_sock(int fd, unsigned events, void *ud) {
  (void)fd;
  (void)events;
  (void)ud;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  uint8_t mode = fz_byte(&in);
  fake_ns f;
  memset(&f, 0, sizeof f);
  f.udp_fd = -1;
  unsigned rng = 1;
  epode_config *cfg = NULL;
  if (epode_config_new(&cfg, NULL) != EPODE_OK) return 0;
  epode_config_set_random(cfg, fz_random, &rng);
  epode__dns *d = NULL;
  if (epode__dns_new(&d, cfg, on_sock, NULL) != EPODE_OK) {
    epode_config_free(cfg);
    return 0;
  }
  if (epode__dns_set_servers(d, "127.0.0.1:53") != EPODE_OK) abort();
  ares_set_socket_functions(d->ch, &fake_funcs, &f);

  uint64_t now = 1000;
  static const epode_tls_mode modes[3] = {EPODE_TLS_AUTO, EPODE_TLS_STARTTLS, EPODE_TLS_DIRECT};
  if (epode__dns_start(d, "example.org", modes[mode % 3], NULL, 0, now) != EPODE_OK) abort();

  const uint8_t *piece;
  size_t plen;
  while (!epode__dns_done(d) && f.answered < f.nq && fz_next_piece(&in, &piece, &plen)) {
    const query *q = &f.qs[f.answered++];
    if (q->qlen < 12) continue;
    if (plen && (piece[0] & 2)) {
      now += 120000;
      epode__dns_process_timeout(d, now);
      if (epode__dns_done(d)) break;
    }
    build_reply(&f, q, piece, plen);
    epode__dns_process_fd(d, f.udp_fd, EPODE_IO_READ, now);
    f.have_reply = 0;
    now += 7;
  }
  if (epode__dns_done(d)) {
    const epode__addr *addrs;
    size_t n;
    const char *detail;
    epode_err e = epode__dns_result(d, &addrs, &n, &detail);
    if (!detail || (e != EPODE_OK && !*detail)) abort();
    if (e == EPODE_OK && (!n || n > EPODE__MAX_ADDRS)) abort();
    for (size_t i = 0; i < n; i++) {
      char buf[128];
      epode__addr_str(&addrs[i], buf, sizeof buf);
      if (!addrs[i].host[0]) abort();
    }
  }
  if (getenv("EPODE_FUZZ_DEBUG")) {
    const char *detail = "";
    size_t n = 0;
    epode_err e = epode__dns_done(d) ? epode__dns_result(d, NULL, &n, &detail) : EPODE_ERR_STATE;
    fprintf(stderr, "srv: %zu queries, %zu answered, result %s, %zu addresses %s\n", f.nq,
            f.answered, epode_err_name(e), n, detail);
  }
  epode__dns_free(d);
  epode_config_free(cfg);
  return 0;
}
