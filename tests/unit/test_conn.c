/* Connections: the address-list connector (a refusing address then an
 * accepting one; all refusing), and epode_conn end to end against a small
 * scripted XMPP server running in a thread (STARTTLS and direct TLS with a
 * certificate made at run time, verification failure, a server that hangs
 * up), driven by a poll() host loop through the io/timer callbacks. Checks
 * the event sequence, that EPODE_EV_CLOSED comes exactly once, and that
 * every fd the host was told to watch is released. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "epode/conn.h"
#include "epode/sasl.h"
#include "net/net.h"
#include "test_net_support.h"
#include "util/config_int.h"

static tcert ca, leaf, other_ca, other_leaf, cli, stranger;
static char ca_path[64], cli_comb[64], cli_p12[64], stranger_key[64];
#define CLI_PW "p12 secret"

/* ------------------------------------------------------------------ helpers */

static int listener(uint16_t *port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(fd, 8), 0);
  socklen_t sl = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  *port = ntohs(sa.sin_port);
  return fd;
}

/* A loopback port with nothing listening (bound, never listened, closed). */
static uint16_t closed_port(void) {
  uint16_t p;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bind(fd, (struct sockaddr *)&sa, sizeof sa);
  socklen_t sl = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  p = ntohs(sa.sin_port);
  close(fd);
  return p;
}

static epode__addr loop_addr(uint16_t port, const char *host) {
  epode__addr a;
  memset(&a, 0, sizeof a);
  struct sockaddr_in *s = (struct sockaddr_in *)&a.sa;
  s->sin_family = AF_INET;
  s->sin_port = htons(port);
  s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.salen = sizeof *s;
  snprintf(a.host, sizeof a.host, "%s", host);
  return a;
}

static void run_connector(epode__connector *k) {
  epode__connector_start(k, epode_now_ms());
  for (int i = 0; i < 100 && !epode__connector_done(k); i++) {
    struct pollfd p = {.fd = epode__connector_fd(k), .events = POLLOUT};
    assert_true(p.fd >= 0);
    poll(&p, 1, 100);
    if (p.revents)
      epode__connector_process(k, epode_now_ms());
    else
      epode__connector_process_timeout(k, epode_now_ms());
  }
  assert_true(epode__connector_done(k));
}

/* ------------------------------------------------------------------ connector */

static void test_connect_second_address(void **state) {
  epode_config *cfg;
  epode_config_new(&cfg, NULL);
  uint16_t port, dead = closed_port();
  int l = listener(&port);
  epode__addr addrs[2] = {loop_addr(dead, "first"), loop_addr(port, "second")};
  epode__connector *k;
  assert_int_equal(epode__connector_new(&k, cfg, addrs, 2, 2000), EPODE_OK);
  run_connector(k);
  int fd;
  size_t which;
  const char *detail;
  assert_int_equal(epode__connector_result(k, &fd, &which, &detail), EPODE_OK);
  assert_int_equal(which, 1);
  assert_true(fd >= 0);
  int a = accept(l, NULL, NULL);
  assert_true(a >= 0);
  assert_int_equal(write(fd, "x", 1), 1);
  char c;
  assert_int_equal(read(a, &c, 1), 1);
  close(a);
  close(fd);
  close(l);
  epode__connector_free(k);
  epode_config_free(cfg);
}

/* After a failure on B the next attempt starts with the address after it
 * (the next SRV target), and B comes last. */
static void test_connect_avoid_first(void **state) {
  epode_config *cfg;
  epode_config_new(&cfg, NULL);
  epode__addr addrs[4] = {loop_addr(1001, "a"), loop_addr(1002, "b"), loop_addr(1003, "c"),
                          loop_addr(1004, "d")};
  epode__connector *k;
  assert_int_equal(epode__connector_new(&k, cfg, addrs, 4, 2000), EPODE_OK);
  epode__addr_key key;
  epode__addr_key_of(&addrs[1], &key);
  epode__connector_avoid_first(k, &key);
  const char *want[] = {"c", "d", "a", "b"};
  for (size_t i = 0; i < 4; i++) assert_string_equal(epode__connector_addr(k, i)->host, want[i]);
  epode__addr other = loop_addr(999, "x"); /* not in the list: no change */
  epode__addr_key_of(&other, &key);
  epode__connector_avoid_first(k, &key);
  for (size_t i = 0; i < 4; i++) assert_string_equal(epode__connector_addr(k, i)->host, want[i]);
  epode__addr tls_b = addrs[2];
  tls_b.direct_tls = 1; /* same address, other mode: a different target */
  epode__addr_key_of(&tls_b, &key);
  epode__connector_avoid_first(k, &key);
  for (size_t i = 0; i < 4; i++) assert_string_equal(epode__connector_addr(k, i)->host, want[i]);
  epode__connector_free(k);
  epode_config_free(cfg);
}

static void test_connect_all_refuse(void **state) {
  epode_config *cfg;
  epode_config_new(&cfg, NULL);
  uint16_t p1 = closed_port(), p2 = closed_port();
  epode__addr addrs[2] = {loop_addr(p1, "a"), loop_addr(p2, "b")};
  epode__connector *k;
  assert_int_equal(epode__connector_new(&k, cfg, addrs, 2, 2000), EPODE_OK);
  run_connector(k);
  int fd;
  size_t which;
  const char *detail;
  assert_int_equal(epode__connector_result(k, &fd, &which, &detail), EPODE_ERR_CONNECT);
  assert_int_equal(fd, -1);
  char want[64];
  snprintf(want, sizeof want, "127.0.0.1:%u (Connection refused)", (unsigned)p1);
  assert_non_null(strstr(detail, want));
  snprintf(want, sizeof want, "127.0.0.1:%u (Connection refused)", (unsigned)p2);
  assert_non_null(strstr(detail, want));
  epode__connector_free(k);
  epode_config_free(cfg);
}

/* ------------------------------------------------------------------ host loop */

typedef struct host {
  int fd[32];
  unsigned ev[32];
  size_t n;
  int timer_on;
  uint64_t timer_at;
  int io_calls;
  /* events */
  epode_state states[32];
  size_t nstates;
  int ready, errors, closed;
  epode_err closed_err, error_err;
  char error_detail[1024];
  int close_on_ready;
  int free_on_ready;
  int send_outside; /* after READY, send from the loop (not a callback) */
  int disconnects;  /* EPODE_EV_DISCONNECTED */
  unsigned last_attempt;
  uint32_t last_retry_ms;
  epode_err disconnect_err;
  int close_on_disconnect;
  epode_conn *conn;
} host;

static void h_io(int fd, unsigned ev, void *ud) {
  host *h = ud;
  h->io_calls++;
  for (size_t i = 0; i < h->n; i++)
    if (h->fd[i] == fd) {
      /* Only changes are reported. */
      assert_int_not_equal(h->ev[i], ev);
      if (!ev) {
        h->fd[i] = h->fd[--h->n];
        h->ev[i] = h->ev[h->n];
      } else {
        h->ev[i] = ev;
      }
      return;
    }
  assert_int_not_equal(ev, 0);
  h->fd[h->n] = fd;
  h->ev[h->n++] = ev;
}

static void h_timer(int64_t ms, void *ud) {
  host *h = ud;
  h->timer_on = ms >= 0;
  h->timer_at = epode_now_ms() + (uint64_t)(ms < 0 ? 0 : ms);
}

static void h_event(const epode_event *ev, void *ud) {
  host *h = ud;
  switch (ev->type) {
  case EPODE_EV_STATE:
    if (h->nstates < 32) h->states[h->nstates++] = ev->state;
    break;
  case EPODE_EV_READY:
    h->ready++;
    assert_non_null(ev->jid);
    if (h->close_on_ready) assert_int_equal(epode_conn_close(h->conn), EPODE_OK);
    if (h->free_on_ready) {
      epode_conn_free(h->conn);
      h->conn = NULL;
      h->closed = 1; /* ends h_run */
    }
    break;
  case EPODE_EV_ERROR:
    h->errors++;
    h->error_err = ev->failure->err;
    snprintf(h->error_detail, sizeof h->error_detail, "%s", ev->failure->detail);
    break;
  case EPODE_EV_CLOSED:
    h->closed++;
    h->closed_err = ev->failure->err;
    break;
  case EPODE_EV_DISCONNECTED:
    h->disconnects++;
    h->last_attempt = ev->attempt;
    h->last_retry_ms = ev->retry_ms;
    h->disconnect_err = ev->failure->err;
    assert_int_equal(ev->state, EPODE_STATE_DISCONNECTED);
    assert_non_null(ev->failure->detail);
    if (h->close_on_disconnect) assert_int_equal(epode_conn_close(h->conn), EPODE_OK);
    break;
  case EPODE_EV_REDIRECT: break;
  default: fail_msg("unexpected event %d", ev->type);
  }
}

static void h_run(host *h, epode_conn *c, uint64_t limit_ms) {
  uint64_t start = epode_now_ms();
  while (!h->closed) {
    uint64_t now = epode_now_ms();
    assert_true(now - start < limit_ms);
    struct pollfd p[32];
    for (size_t i = 0; i < h->n; i++)
      p[i] = (struct pollfd){.fd = h->fd[i],
                             .events = (short)(((h->ev[i] & EPODE_IO_READ) ? POLLIN : 0) |
                                               ((h->ev[i] & EPODE_IO_WRITE) ? POLLOUT : 0))};
    int to = 200;
    if (h->timer_on) to = h->timer_at <= now ? 0 : (int)(h->timer_at - now);
    size_t n = h->n;
    int r = poll(p, n, to);
    assert_true(r >= 0 || errno == EINTR);
    for (size_t i = 0; i < n && !h->closed; i++) {
      if (!p[i].revents) continue;
      unsigned ev = ((p[i].revents & (POLLIN | POLLERR | POLLHUP)) ? EPODE_IO_READ : 0u) |
                    ((p[i].revents & (POLLOUT | POLLERR | POLLHUP)) ? EPODE_IO_WRITE : 0u);
      epode_conn_process_fd(c, p[i].fd, ev);
    }
    if (!h->closed && h->timer_on && epode_now_ms() >= h->timer_at) {
      h->timer_on = 0;
      epode_conn_process_timeout(c);
    }
  }
}

static int saw_state(const host *h, epode_state s) {
  for (size_t i = 0; i < h->nstates; i++)
    if (h->states[i] == s) return 1;
  return 0;
}

/* ------------------------------------------------------------------ fake XMPP server */

typedef struct fsrv {
  int lfd;
  uint16_t port;
  int direct;       /* direct TLS */
  const tcert *crt; /* presented certificate */
  int hangup;       /* close right after accepting */
  int hangups;      /* close the first this many connections, then serve */
  uint16_t send_to; /* answer the stream header with see-other-host 127.0.0.1:send_to */
  int expect_msg;   /* a <message/> comes before the close */
  int want_cert;    /* require a client certificate from `ca`; offer EXTERNAL only */
  int tls12_only;   /* the server speaks TLS 1.2 at most */
  pthread_t th;
  /* what it saw */
  int got_close;
  int got_notify;
  char sni[256];
  char alpn[64];
  X509 *peer;     /* the client certificate it verified, or NULL */
  int version;    /* negotiated TLS version */
  char auth[512]; /* the <auth> element */
  int result;     /* 0 ok, else the step it failed at */
} fsrv;

typedef struct fconn {
  int fd;
  SSL *ssl;
  char buf[8192];
  size_t len;
} fconn;

static int f_read(fconn *f) {
  if (f->len + 1 >= sizeof f->buf) return -1;
  int n = f->ssl ? SSL_read(f->ssl, f->buf + f->len, (int)(sizeof f->buf - f->len - 1))
                 : (int)read(f->fd, f->buf + f->len, sizeof f->buf - f->len - 1);
  if (n <= 0) return -1;
  f->len += (size_t)n;
  f->buf[f->len] = '\0';
  return n;
}

static int f_expect(fconn *f, const char *needle) {
  while (!strstr(f->buf, needle))
    if (f_read(f) < 0) return -1;
  f->len = 0;
  f->buf[0] = '\0';
  return 0;
}

static int f_send(fconn *f, const char *s) {
  int n = f->ssl ? SSL_write(f->ssl, s, (int)strlen(s)) : (int)write(f->fd, s, strlen(s));
  return n == (int)strlen(s) ? 0 : -1;
}

static int f_servername(SSL *ssl, int *al, void *arg) {
  fsrv *s = arg;
  const char *n = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  snprintf(s->sni, sizeof s->sni, "%s", n ? n : "");
  return SSL_TLSEXT_ERR_OK;
}

static int f_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                  const unsigned char *in, unsigned inlen, void *arg) {
  fsrv *s = arg;
  if (inlen && inlen < sizeof s->alpn) {
    memcpy(s->alpn, in + 1, in[0]);
    s->alpn[in[0]] = '\0';
  }
  return SSL_TLSEXT_ERR_NOACK;
}

static int f_tls(fsrv *s, fconn *f, SSL_CTX *ctx) {
  f->ssl = SSL_new(ctx);
  SSL_set_fd(f->ssl, f->fd);
  if (SSL_accept(f->ssl) != 1) return -1;
  s->version = SSL_version(f->ssl);
  if (s->want_cert && SSL_get_verify_result(f->ssl) == X509_V_OK)
    s->peer = SSL_get1_peer_certificate(f->ssl);
  return 0;
}

#define HDR                                                                                        \
  "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "                                     \
  "xmlns:stream='http://etherx.jabber.org/streams' from='localhost' id='s1' version='1.0'>"

static void *fsrv_main(void *arg) {
  fsrv *s = arg;
  fconn f = {.fd = -1};
  SSL_CTX *ctx = t_server_ctx(s->crt, NULL, 0, s->tls12_only ? TLS1_2_VERSION : 0);
  SSL_CTX_set_tlsext_servername_callback(ctx, f_servername);
  SSL_CTX_set_tlsext_servername_arg(ctx, s);
  SSL_CTX_set_alpn_select_cb(ctx, f_alpn, s);
  if (s->want_cert) {
    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca.cert);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  }
  s->result = 1;
  f.fd = accept(s->lfd, NULL, NULL);
  while (f.fd >= 0 && s->hangups > 0) {
    s->hangups--;
    close(f.fd);
    f.fd = accept(s->lfd, NULL, NULL);
  }
  if (f.fd < 0) goto out;
  if (s->hangup) {
    s->result = 0;
    goto out;
  }
  s->result = 2;
  if (s->direct && f_tls(s, &f, ctx)) goto out;
  s->result = 3;
  if (f_expect(&f, "streams'>")) goto out;
  if (s->send_to) {
    char er[512];
    snprintf(er, sizeof er,
             HDR "<stream:error><see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>"
                 "127.0.0.1:%u</see-other-host></stream:error></stream:stream>",
             (unsigned)s->send_to);
    if (f_send(&f, er)) goto out;
    s->result = 0;
    goto out;
  }
  if (!s->direct) {
    if (f_send(&f, HDR "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"
                       "<required/></starttls></stream:features>"))
      goto out;
    s->result = 4;
    if (f_expect(&f, "<starttls") ||
        f_send(&f, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"))
      goto out;
    s->result = 5;
    if (f_tls(s, &f, ctx)) goto out;
    s->result = 6;
    if (f_expect(&f, "streams'>")) goto out;
  }
  s->result = 7;
  char feat[512];
  snprintf(feat, sizeof feat,
           HDR "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
               "<mechanism>%s</mechanism></mechanisms></stream:features>",
           s->want_cert ? "EXTERNAL" : "PLAIN");
  if (f_send(&f, feat)) goto out;
  while (!strstr(f.buf, "</auth>"))
    if (f_read(&f) < 0) goto out;
  snprintf(s->auth, sizeof s->auth, "%.*s", (int)sizeof s->auth - 1, f.buf);
  f.len = 0;
  f.buf[0] = '\0';
  if (f_send(&f, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")) goto out;
  s->result = 8;
  if (f_expect(&f, "streams'>") ||
      f_send(&f, HDR "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                     "</stream:features>"))
    goto out;
  s->result = 9;
  /* The bind request: answer with the id it used. */
  while (!strstr(f.buf, "</iq>"))
    if (f_read(&f) < 0) goto out;
  char *id = strstr(f.buf, "id='");
  char idv[64] = "";
  if (id) sscanf(id + 4, "%63[^']", idv);
  char reply[512];
  snprintf(reply, sizeof reply,
           "<iq type='result' id='%s'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
           "<jid>alice@localhost/test</jid></bind></iq>",
           idv);
  f.len = 0;
  f.buf[0] = '\0';
  if (f_send(&f, reply)) goto out;
  s->result = 10;
  if (s->expect_msg && f_expect(&f, "<body>hi</body></message>")) goto out;
  s->result = 11;
  /* Give the client time to close on its own (the flush test waits). */
  if (f_expect(&f, "</stream:stream>")) goto out;
  s->got_close = 1;
  f_send(&f, "</stream:stream>");
  /* Then the client's close_notify (and EOF). */
  char b[64];
  int r = SSL_read(f.ssl, b, sizeof b);
  if (r <= 0 && SSL_get_error(f.ssl, r) == SSL_ERROR_ZERO_RETURN) s->got_notify = 1;
  s->result = 0;
out:
  if (f.ssl) SSL_free(f.ssl);
  if (f.fd >= 0) close(f.fd);
  SSL_CTX_free(ctx);
  return NULL;
}

enum { F_HANGUP = 1, F_EXPECT_MSG = 2, F_WANT_CERT = 4, F_TLS12 = 8 };
/* Starts the server thread with hangups/send_to set first (no race). */
static void fsrv_start_x(fsrv *s, int direct, const tcert *crt, int flags, int hangups,
                         uint16_t send_to);
static void fsrv_start(fsrv *s, int direct, const tcert *crt, int flags) {
  fsrv_start_x(s, direct, crt, flags, 0, 0);
}
static void fsrv_start_x(fsrv *s, int direct, const tcert *crt, int flags, int hangups,
                         uint16_t send_to) {
  memset(s, 0, sizeof *s);
  s->hangups = hangups;
  s->send_to = send_to;
  s->hangup = (flags & F_HANGUP) != 0;
  s->expect_msg = (flags & F_EXPECT_MSG) != 0;
  s->want_cert = (flags & F_WANT_CERT) != 0;
  s->tls12_only = (flags & F_TLS12) != 0;
  s->lfd = listener(&s->port);
  s->direct = direct;
  s->crt = crt;
  assert_int_equal(pthread_create(&s->th, NULL, fsrv_main, s), 0);
}

static void fsrv_join(fsrv *s) {
  pthread_join(s->th, NULL);
  close(s->lfd);
}

static void fsrv_free(fsrv *s) {
  X509_free(s->peer);
  s->peer = NULL;
}

/* Settings beyond the defaults of make_conn. */
typedef struct extra {
  const char *cert, *key; /* PEM client certificate */
  const char *p12, *pw;   /* PKCS#12 client certificate */
  int tls_min, tls_max;
  unsigned flags;
  int rc_on; /* reconnection */
  uint32_t rc_initial, rc_max;
  unsigned rc_attempts;
} extra;

static epode_conn *make_conn_x(host *h, uint16_t port, epode_tls_mode mode, const char *cafile,
                               const extra *x) {
  epode_config *cfg;
  assert_int_equal(epode_config_new(&cfg, NULL), EPODE_OK);
  assert_int_equal(epode_config_set_jid(cfg, "alice@localhost"), EPODE_OK);
  assert_int_equal(epode_config_set_password(cfg, "secret"), EPODE_OK);
  assert_int_equal(epode_config_set_server(cfg, "127.0.0.1", port), EPODE_OK);
  assert_int_equal(epode_config_set_tls_mode(cfg, mode), EPODE_OK);
  if (cafile) assert_int_equal(epode_config_set_cafile(cfg, cafile), EPODE_OK);
  epode_config_set_timeout(cfg, EPODE_TIMEOUT_CONNECT, 3000);
  epode_config_set_timeout(cfg, EPODE_TIMEOUT_TLS, 3000);
  epode_config_set_timeout(cfg, EPODE_TIMEOUT_CLOSE, 2000);
  if (x && x->cert) assert_int_equal(epode_config_set_client_cert(cfg, x->cert, x->key), EPODE_OK);
  if (x && x->p12) assert_int_equal(epode_config_set_client_pkcs12(cfg, x->p12, x->pw), EPODE_OK);
  if (x) assert_int_equal(epode_config_set_tls_versions(cfg, x->tls_min, x->tls_max), EPODE_OK);
  if (x) assert_int_equal(epode_config_set_flags(cfg, x->flags), EPODE_OK);
  if (x && x->rc_on)
    assert_int_equal(
        epode_config_set_reconnect(cfg, 1, x->rc_initial, x->rc_max, x->rc_attempts), EPODE_OK);
  epode_conn *c;
  assert_int_equal(epode_conn_new(&c, cfg), EPODE_OK);
  epode_config_free(cfg);
  memset(h, 0, sizeof *h);
  h->conn = c;
  epode_conn_set_event_cb(c, h_event, h);
  epode_conn_set_io(c, h_io, h_timer, h);
  return c;
}

static epode_conn *make_conn(host *h, uint16_t port, epode_tls_mode mode, const char *cafile) {
  return make_conn_x(h, port, mode, cafile, NULL);
}

/* ------------------------------------------------------------------ conn tests */

static void test_conn_starttls_login_close(void **state) {
  fsrv s;
  fsrv_start(&s, 0, &leaf, 0);
  host h;
  epode_conn *c = make_conn(&h, s.port, EPODE_TLS_STARTTLS, ca_path);
  h.close_on_ready = 1;
  assert_int_equal(epode_conn_connect(c), EPODE_OK);
  assert_int_equal(h.closed, 0); /* nothing final inside connect() */
  h_run(&h, c, 5000);
  fsrv_join(&s);
  assert_int_equal(s.result, 0);
  assert_int_equal(h.ready, 1);
  assert_int_equal(h.errors, 0);
  assert_int_equal(h.closed, 1);
  assert_int_equal(h.closed_err, EPODE_OK);
  assert_true(s.got_close);
  assert_true(s.got_notify);
  assert_string_equal(s.sni, "localhost");
  assert_string_equal(s.alpn, ""); /* no ALPN on STARTTLS */
  assert_int_equal(h.states[0], EPODE_STATE_RESOLVING);
  assert_int_equal(h.states[1], EPODE_STATE_CONNECTING);
  assert_true(saw_state(&h, EPODE_STATE_STARTTLS));
  assert_true(saw_state(&h, EPODE_STATE_TLS_HANDSHAKE));
  assert_true(saw_state(&h, EPODE_STATE_AUTHENTICATING));
  assert_true(saw_state(&h, EPODE_STATE_READY));
  assert_int_equal(h.states[h.nstates - 1], EPODE_STATE_CLOSED);
  assert_int_equal(epode_conn_state(c), EPODE_STATE_CLOSED);
  assert_int_equal(h.n, 0); /* every fd released */
  assert_false(h.timer_on);
  assert_int_equal(epode_conn_close(c), EPODE_ERR_STATE);
  epode_conn_free(c);
}

static void test_conn_direct_tls(void **state) {
  fsrv s;
  fsrv_start(&s, 1, &leaf, 0);
  host h;
  epode_conn *c = make_conn(&h, s.port, EPODE_TLS_DIRECT, ca_path);
  h.close_on_ready = 1;
  assert_int_equal(epode_conn_connect(c), EPODE_OK);
  h_run(&h, c, 5000);
  fsrv_join(&s);
  assert_int_equal(s.result, 0);
  assert_int_equal(h.ready, 1);
  assert_int_equal(h.closed, 1);
  assert_int_equal(h.closed_err, EPODE_OK);
  assert_string_equal(s.alpn, "xmpp-client");
  assert_false(saw_state(&h, EPODE_STATE_STARTTLS));
  assert_int_equal(h.states[2], EPODE_STATE_TLS_HANDSHAKE);
  assert_int_equal(h.n, 0);
  epode_conn_free(c);
}

static void test_conn_untrusted_cert(void **state) {
  fsrv s;
  fsrv_start(&s, 0, &other_leaf, 0);
  host h;
  epode_conn *c = make_conn(&h, s.port, EPODE_TLS_STARTTLS, ca_path);
  assert_int_equal(epode_conn_connect(c), EPODE_OK);
  h_run(&h, c, 5000);
  fsrv_join(&s);
  assert_int_equal(h.errors, 1);
  assert_int_equal(h.error_err, EPODE_ERR_TLS_VERIFY);
  assert_non_null(strstr(h.error_detail, "unable to get local issuer certificate"));
  assert_int_equal(h.closed, 1);
  assert_int_equal(h.closed_err, EPODE_ERR_TLS_VERIFY);
  assert_int_equal(epode_conn_failure(c)->err, EPODE_ERR_TLS_VERIFY);
  assert_int_equal(h.ready, 0);
  assert_int_equal(h.n, 0);
  epode_conn_free(c);
}

static void test_conn_server_hangs_up(void **state) {
  fsrv s;
  fsrv_start(&s, 0, &leaf, F_HANGUP);
  host h;
  epode_conn *c = make_conn(&h, s.port, EPODE_TLS_STARTTLS, ca_path);
  assert_int_equal(epode_conn_connect(c), EPODE_OK);
  h_run(&h, c, 5000);
  fsrv_join(&s);
  assert_int_equal(h.errors, 1);
  assert_int_equal(h.error_err, EPODE_ERR_EOF);
  assert_int_equal(h.closed, 1);
  assert_int_equal(h.closed_err, EPODE_ERR_EOF);
  assert_int_equal(h.n, 0);
  epode_conn_free(c);
}

static void test_conn_refused(void **state) {
  host h;
  uint16_t p = closed_port();
  epode_conn *c = make_conn(&h, p, EPODE_TLS_STARTTLS, NULL);
  assert_int_equal(epode_conn_connect(c), EPODE_OK);
  h_run(&h, c, 5000);
  assert_int_equal(h.errors, 1);
  assert_int_equal(h.error_err, EPODE_ERR_CONNECT);
  char want[64];
  snprintf(want, sizeof want, "127.0.0.1:%u (Connection refused)", (unsigned)p);
  assert_non_null(strstr(epode_conn_failure(c)->detail, want));
  assert_non_null(strstr(epode_conn_failure(c)->detail, "could not connect to 127.0.0.1"));
  assert_int_equal(h.closed, 1);
  assert_int_equal(h.n, 0);
  epode_conn_free(c);
}

static void test_conn_close_while_connecting(void **state) {
  uint16_t port;
  int l = listener(&port); /* accepts at the kernel level; never answers */
  host h;
  epode_conn *c = make_conn(&h, port, EPODE_TLS_STARTTLS, NULL);
  assert_int_equal(epode_conn_connect(c), EPODE_OK);
  assert_int_equal(epode_conn_close(c), EPODE_OK);
  assert_int_equal(h.closed, 0); /* asynchronous */
  assert_int_equal(epode_conn_close(c), EPODE_OK);
  h_run(&h, c, 2000);
  assert_int_equal(h.closed, 1);
  if (h.errors) fprintf(stderr, "error: %s\n", h.error_detail);
  assert_int_equal(h.errors, 0);
  assert_int_equal(h.closed_err, EPODE_OK);
  assert_int_equal(h.n, 0);
  epode_conn_free(c);
  close(l);
}

/* Reconnection: the first connection is cut before the stream opens; the
 * session waits (DISCONNECTED, no ERROR), connects again after the backoff
 * and logs in. */
static void test_conn_reconnect_after_hangup(void **state) {
  fsrv s;
  fsrv_start_x(&s, 0, &leaf, 0, 2, 0);
  host h;
  extra x = {.rc_on = 1, .rc_initial = 20, .rc_max = 40};
  epode_conn *c = make_conn_x(&h, s.port, EPODE_TLS_STARTTLS, ca_path, &x);
  h.close_on_ready = 1;
  assert_int_equal(epode_conn_connect(c), EPODE_OK);
  h_run(&h, c, 8000);
  fsrv_join(&s);
  assert_int_equal(s.result, 0);
  assert_int_equal(h.disconnects, 2);
  assert_int_equal(h.last_attempt, 2);
  assert_true(h.last_retry_ms >= 20 && h.last_retry_ms <= 40);
  assert_true(h.disconnect_err == EPODE_ERR_EOF || h.disconnect_err == EPODE_ERR_TLS);
  assert_int_equal(h.errors, 0);
  assert_int_equal(h.ready, 1);
  assert_int_equal(h.closed_err, EPODE_OK);
  assert_true(saw_state(&h, EPODE_STATE_DISCONNECTED));
  assert_int_equal(h.n, 0);
  epode_conn_free(c);
}

static void count_failed(epode_session *s, epode_delivery st, const char *id, void *ud) {
  (void)s;
  (void)id;
  assert_int_equal(st, EPODE_DELIVERY_FAILED);
  ++*(int *)ud;
}

/* Attempts run out: the last failure is final (ERROR, then CLOSED), and
 * what was waiting is reported failed. */
static void test_conn_reconnect_gives_up(void **state) {
  host h;
  uint16_t p = closed_port();
  extra x = {.rc_on = 1, .rc_initial = 10, .rc_max = 20, .rc_attempts = 2};
  epode_conn *c = make_conn_x(&h, p, EPODE_TLS_STARTTLS, NULL, &x);
  uint64_t t0 = epode_now_ms();
  int reports = 0;
  epode_stanza *m;
  assert_int_equal(epode_message_new(&m, NULL, "chat", "bob@localhost", "queued"), EPODE_OK);
  assert_int_equal(epode_session_send_tracked(epode_conn_session(c), m, count_failed, &reports),
                   EPODE_OK);
  epode_stanza_free(m);
  assert_int_equal(epode_conn_connect(c), EPODE_OK);
  h_run(&h, c, 5000);
  assert_int_equal(reports, 1); /* reported when the connection gave up, before the free */
  assert_int_equal(h.disconnects, 2);
  assert_int_equal(h.errors, 1);
  assert_int_equal(h.error_err, EPODE_ERR_CONNECT);
  assert_int_equal(h.closed, 1);
  assert_int_equal(h.closed_err, EPODE_ERR_CONNECT);
  assert_true(epode_now_ms() - t0 >= 15); /* two delays of at least 5 and 10 ms */
  assert_int_equal(h.n, 0);
  assert_false(h.timer_on);
  epode_conn_free(c);
}

/* Closing while waiting to reconnect ends at once, cleanly. */
static void test_conn_close_while_disconnected(void **state) {
  host h;
  uint16_t p = closed_port();
  extra x = {.rc_on = 1, .rc_initial = 60000, .rc_max = 60000};
  epode_conn *c = make_conn_x(&h, p, EPODE_TLS_STARTTLS, NULL, &x);
  h.close_on_disconnect = 1;
  uint64_t t0 = epode_now_ms();
  assert_int_equal(epode_conn_connect(c), EPODE_OK);
  h_run(&h, c, 5000);
  assert_true(epode_now_ms() - t0 < 5000);
  assert_int_equal(h.disconnects, 1);
  assert_int_equal(h.errors, 0);
  assert_int_equal(h.closed, 1);
  assert_int_equal(h.closed_err, EPODE_OK);
  assert_int_equal(epode_conn_state(c), EPODE_STATE_CLOSED);
  assert_int_equal(h.n, 0);
  assert_false(h.timer_on);
  epode_conn_free(c);
}

/* RFC 6120 see-other-host: the connection goes to the named host, which
 * must still prove to be the JID's domain, and logs in there. */
static void test_conn_see_other_host(void **state) {
  fsrv target, first;
  fsrv_start(&target, 0, &leaf, 0);
  fsrv_start_x(&first, 0, &leaf, 0, 0, target.port);
  host h;
  epode_conn *c = make_conn(&h, first.port, EPODE_TLS_STARTTLS, ca_path);
  h.close_on_ready = 1;
  assert_int_equal(epode_conn_connect(c), EPODE_OK);
  h_run(&h, c, 8000);
  fsrv_join(&first);
  fsrv_join(&target);
  assert_int_equal(first.result, 0);
  assert_int_equal(target.result, 0);
  assert_string_equal(target.sni, "localhost");
  assert_int_equal(h.ready, 1);
  assert_int_equal(h.errors, 0);
  assert_int_equal(h.closed_err, EPODE_OK);
  epode_conn_free(c);
}

static void test_conn_free_in_callback(void **state) {
  fsrv s;
  fsrv_start(&s, 0, &leaf, 0);
  host h;
  epode_conn *c = make_conn(&h, s.port, EPODE_TLS_STARTTLS, ca_path);
  h.free_on_ready = 1;
  assert_int_equal(epode_conn_connect(c), EPODE_OK);
  h_run(&h, c, 5000);
  assert_null(h.conn);
  assert_int_equal(h.ready, 1);
  assert_int_equal(h.n, 0); /* the socket was released through the io callback */
  fsrv_join(&s);
  assert_int_equal(s.result, 11); /* the server saw EOF instead of a close */
}

static void test_conn_flush_outside_callbacks(void **state) {
  fsrv s;
  fsrv_start(&s, 0, &leaf, F_EXPECT_MSG);
  host h;
  epode_conn *c = make_conn(&h, s.port, EPODE_TLS_STARTTLS, ca_path);
  h.send_outside = 1;
  assert_int_equal(epode_conn_connect(c), EPODE_OK);
  /* Run until the message went out, then close from the loop too. */
  uint64_t start = epode_now_ms();
  while (h.send_outside != 2 && epode_now_ms() - start < 5000) {
    struct pollfd p[32];
    for (size_t i = 0; i < h.n; i++)
      p[i] = (struct pollfd){.fd = h.fd[i],
                             .events = (short)(((h.ev[i] & EPODE_IO_READ) ? POLLIN : 0) |
                                               ((h.ev[i] & EPODE_IO_WRITE) ? POLLOUT : 0))};
    size_t n = h.n;
    poll(p, n, 50);
    for (size_t i = 0; i < n; i++)
      if (p[i].revents)
        epode_conn_process_fd(c, p[i].fd,
                              ((p[i].revents & POLLIN) ? EPODE_IO_READ : 0u) |
                                  ((p[i].revents & POLLOUT) ? EPODE_IO_WRITE : 0u));
    if (h.timer_on && epode_now_ms() >= h.timer_at) {
      h.timer_on = 0;
      epode_conn_process_timeout(c);
    }
    if (h.ready && h.send_outside == 1) {
      static const char msg[] = "<message to='bob@localhost'><body>hi</body></message>";
      assert_int_equal(epode_session_send_raw(epode_conn_session(c), msg, sizeof msg - 1),
                       EPODE_OK);
      assert_int_equal(epode_conn_flush(c), EPODE_OK);
      h.send_outside = 2;
    }
  }
  assert_int_equal(h.send_outside, 2);
  assert_int_equal(epode_conn_close(c), EPODE_OK);
  h_run(&h, c, 5000);
  fsrv_join(&s);
  assert_int_equal(s.result, 0);
  assert_int_equal(h.closed, 1);
  assert_int_equal(h.closed_err, EPODE_OK);
  epode_conn_free(c);
}

/* The fake DNS server, answering from a thread until told to stop. */
typedef struct dns_thread {
  fake f;
  atomic_int stop;
  pthread_t th;
} dns_thread;

static void *dns_main(void *arg) {
  dns_thread *d = arg;
  while (!d->stop) {
    struct pollfd p = {.fd = d->f.fd, .events = POLLIN};
    if (poll(&p, 1, 20) > 0) fake_serve(&d->f);
  }
  return NULL;
}

static void test_conn_srv_direct_tls(void **state) {
  /* SRV says: direct TLS at priority 0 on the fake server's port, STARTTLS
   * at priority 10 on a dead port. The connection must pick direct TLS
   * (ALPN and all) from the SRV answer alone. */
  fsrv s;
  fsrv_start(&s, 1, &leaf, 0);
  dns_thread d;
  fake_start(&d.f);
  d.stop = 0;
  add_srv(fake_rule(&d.f, "_xmpps-client._tcp.localhost", T_SRV, ACT_ANSWER), 0, 0, s.port,
          "xmpp.test");
  add_srv(fake_rule(&d.f, "_xmpp-client._tcp.localhost", T_SRV, ACT_ANSWER), 10, 0, closed_port(),
          "xmpp.test");
  rule *a = fake_rule(&d.f, "xmpp.test", T_A, ACT_ANSWER);
  a->addr[a->naddr++] = "127.0.0.1";
  fake_rule(&d.f, "xmpp.test", T_AAAA, ACT_NODATA);
  assert_int_equal(pthread_create(&d.th, NULL, dns_main, &d), 0);

  epode_config *cfg;
  epode_config_new(&cfg, NULL);
  epode_config_set_jid(cfg, "alice@localhost");
  epode_config_set_password(cfg, "secret");
  epode_config_set_cafile(cfg, ca_path);
  epode_conn *c;
  assert_int_equal(epode_conn_new(&c, cfg), EPODE_OK);
  epode_config_free(cfg);
  char csv[64];
  snprintf(csv, sizeof csv, "127.0.0.1:%u", (unsigned)d.f.port);
  assert_int_equal(epode__conn_set_dns_servers(c, csv), EPODE_OK);
  host h;
  memset(&h, 0, sizeof h);
  h.conn = c;
  h.close_on_ready = 1;
  epode_conn_set_event_cb(c, h_event, &h);
  epode_conn_set_io(c, h_io, h_timer, &h);
  assert_int_equal(epode_conn_connect(c), EPODE_OK);
  h_run(&h, c, 5000);
  d.stop = 1;
  pthread_join(d.th, NULL);
  close(d.f.fd);
  fsrv_join(&s);
  assert_int_equal(s.result, 0);
  assert_int_equal(h.ready, 1);
  assert_int_equal(h.closed_err, EPODE_OK);
  assert_string_equal(s.alpn, "xmpp-client");
  assert_string_equal(s.sni, "localhost"); /* the JID's domain, not the SRV target */
  assert_non_null(strstr(d.f.seen, "33 _xmpps-client._tcp.localhost;"));
  assert_int_equal(h.n, 0);
  epode_conn_free(c);
}

static void test_conn_bad_cafile(void **state) {
  host h;
  epode_conn *c = make_conn(&h, 5222, EPODE_TLS_STARTTLS, "/nonexistent/ca.pem");
  assert_int_equal(epode_conn_connect(c), EPODE_ERR_TLS);
  assert_non_null(strstr(epode_conn_failure(c)->detail, "/nonexistent/ca.pem"));
  assert_int_equal(h.nstates, 0);
  assert_int_equal(h.n, 0);
  epode_conn_free(c);
}

static void test_conn_free_midway(void **state) {
  /* Freeing while connecting releases the fd through the io callback. */
  uint16_t port;
  int l = listener(&port);
  host h;
  epode_conn *c = make_conn(&h, port, EPODE_TLS_STARTTLS, NULL);
  assert_int_equal(epode_conn_connect(c), EPODE_OK);
  for (int i = 0; i < 5; i++) {
    if (h.timer_on) {
      h.timer_on = 0;
      epode_conn_process_timeout(c);
    }
  }
  epode_conn_free(c);
  assert_int_equal(h.n, 0);
  assert_false(h.timer_on);
  close(l);
}

/* ------------------------------------------------------------------ client certificates, versions
 */

/* Logs in with EXTERNAL against a server that requires a client
 * certificate; it must have verified exactly ours. */
static void cert_login(int direct, const extra *x) {
  fsrv s;
  fsrv_start(&s, direct, &leaf, F_WANT_CERT);
  host h;
  epode_conn *c =
      make_conn_x(&h, s.port, direct ? EPODE_TLS_DIRECT : EPODE_TLS_STARTTLS, ca_path, x);
  h.close_on_ready = 1;
  assert_int_equal(epode_conn_connect(c), EPODE_OK);
  h_run(&h, c, 5000);
  fsrv_join(&s);
  if (h.errors) fprintf(stderr, "error: %s\n", h.error_detail);
  assert_int_equal(s.result, 0);
  assert_non_null(s.peer);
  assert_int_equal(X509_cmp(s.peer, cli.cert), 0);
  assert_non_null(strstr(s.auth, "mechanism='EXTERNAL'"));
  assert_int_equal(h.ready, 1);
  assert_int_equal(h.errors, 0);
  assert_int_equal(h.closed_err, EPODE_OK);
  assert_int_equal(h.n, 0);
  fsrv_free(&s);
  epode_conn_free(c);
}

static void test_conn_client_cert_starttls(void **state) {
  extra x = {.cert = cli_comb};
  cert_login(0, &x);
  extra y = {.p12 = cli_p12, .pw = CLI_PW, .tls_max = 0x0303};
  cert_login(0, &y);
}

static void test_conn_client_cert_direct_tls(void **state) {
  extra x = {.p12 = cli_p12, .pw = CLI_PW};
  cert_login(1, &x);
  extra y = {.cert = cli_comb, .tls_max = 0x0303};
  cert_login(1, &y);
}

static void test_conn_client_cert_errors(void **state) {
  /* Found by epode_conn_connect itself: no events, no fds, a detail naming
   * the file. The CA file check is skipped with NO_VERIFY; this one is not. */
  static const struct {
    extra x;
    const char *file, *why;
  } cases[] = {
      {{.cert = "/nonexistent/alice.pem"}, "/nonexistent/alice.pem", "No such file"},
      {{.cert = cli_comb, .key = stranger_key}, stranger_key, "does not match"},
      {{.p12 = cli_p12, .pw = "not it"}, cli_p12, "wrong password"},
      {{.p12 = cli_p12}, cli_p12, "none was given"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    for (int noverify = 0; noverify < 2; noverify++) {
      extra x = cases[i].x;
      x.flags = noverify ? EPODE_CFG_TLS_NO_VERIFY : 0;
      host h;
      epode_conn *c = make_conn_x(&h, 5222, EPODE_TLS_STARTTLS, noverify ? NULL : ca_path, &x);
      assert_int_equal(epode_conn_connect(c), EPODE_ERR_TLS);
      const char *d = epode_conn_failure(c)->detail;
      if (!strstr(d, cases[i].file) || !strstr(d, cases[i].why))
        fail_msg("case %zu: detail \"%s\"", i, d);
      assert_int_equal(epode_conn_failure(c)->err, EPODE_ERR_TLS);
      assert_int_equal(epode_conn_state(c), EPODE_STATE_IDLE);
      assert_int_equal(h.nstates, 0);
      assert_int_equal(h.errors + h.closed, 0);
      assert_int_equal(h.n, 0);
      epode_conn_free(c);
    }
  }
}

static void test_conn_tls12_forced(void **state) {
  fsrv s;
  fsrv_start(&s, 0, &leaf, 0);
  host h;
  extra x = {.tls_max = 0x0303};
  epode_conn *c = make_conn_x(&h, s.port, EPODE_TLS_STARTTLS, ca_path, &x);
  h.close_on_ready = 1;
  assert_int_equal(epode_conn_connect(c), EPODE_OK);
  h_run(&h, c, 5000);
  fsrv_join(&s);
  assert_int_equal(s.result, 0);
  assert_int_equal(s.version, TLS1_2_VERSION);
  assert_null(s.peer); /* no certificate configured, none asked for */
  assert_int_equal(h.ready, 1);
  epode_conn_free(c);
}

static void test_conn_tls13_required_vs_12_server(void **state) {
  fsrv s;
  fsrv_start(&s, 1, &leaf, F_TLS12);
  host h;
  extra x = {.tls_min = 0x0304};
  epode_conn *c = make_conn_x(&h, s.port, EPODE_TLS_DIRECT, ca_path, &x);
  assert_int_equal(epode_conn_connect(c), EPODE_OK);
  h_run(&h, c, 5000);
  fsrv_join(&s);
  assert_int_equal(s.result, 2); /* the server's handshake failed */
  assert_int_equal(h.errors, 1);
  assert_int_equal(h.error_err, EPODE_ERR_TLS);
  assert_non_null(strstr(h.error_detail, "configured TLS versions: TLS 1.3 to newest"));
  assert_int_equal(h.closed, 1);
  assert_int_equal(h.ready, 0);
  assert_int_equal(h.n, 0);
  epode_conn_free(c);
}

static int group_setup(void **state) {
  signal(SIGPIPE, SIG_IGN); /* for the fake server's SSL_write; the library uses MSG_NOSIGNAL */
  ca = t_cert("epode test CA", NULL, NULL, NULL);
  leaf = t_cert("localhost", &ca, "DNS:localhost,IP:127.0.0.1", NULL);
  other_ca = t_cert("untrusted CA", NULL, NULL, NULL);
  other_leaf = t_cert("localhost", &other_ca, "DNS:localhost", NULL);
  t_write_pem(&ca, ca_path, sizeof ca_path);
  cli = t_cert_kind("alice@localhost", &ca, T_CLIENT, NULL, NULL);
  stranger = t_cert_kind("mallory@localhost", &ca, T_CLIENT, NULL, NULL);
  t_write_pems(cli_comb, sizeof cli_comb, &cli.cert, 1, cli.key, 0);
  t_write_pems(stranger_key, sizeof stranger_key, NULL, 0, stranger.key, 0);
  t_write_p12(cli_p12, sizeof cli_p12, &cli, NULL, CLI_PW);
  return 0;
}

static int group_teardown(void **state) {
  unlink(ca_path);
  unlink(cli_comb);
  unlink(cli_p12);
  unlink(stranger_key);
  t_cert_free(&cli);
  t_cert_free(&stranger);
  t_cert_free(&ca);
  t_cert_free(&leaf);
  t_cert_free(&other_ca);
  t_cert_free(&other_leaf);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_connect_second_address),
      cmocka_unit_test(test_connect_all_refuse),
      cmocka_unit_test(test_connect_avoid_first),
      cmocka_unit_test(test_conn_starttls_login_close),
      cmocka_unit_test(test_conn_direct_tls),
      cmocka_unit_test(test_conn_untrusted_cert),
      cmocka_unit_test(test_conn_server_hangs_up),
      cmocka_unit_test(test_conn_refused),
      cmocka_unit_test(test_conn_close_while_connecting),
      cmocka_unit_test(test_conn_reconnect_after_hangup),
      cmocka_unit_test(test_conn_reconnect_gives_up),
      cmocka_unit_test(test_conn_close_while_disconnected),
      cmocka_unit_test(test_conn_see_other_host),
      cmocka_unit_test(test_conn_free_in_callback),
      cmocka_unit_test(test_conn_flush_outside_callbacks),
      cmocka_unit_test(test_conn_srv_direct_tls),
      cmocka_unit_test(test_conn_bad_cafile),
      cmocka_unit_test(test_conn_free_midway),
      cmocka_unit_test(test_conn_client_cert_starttls),
      cmocka_unit_test(test_conn_client_cert_direct_tls),
      cmocka_unit_test(test_conn_client_cert_errors),
      cmocka_unit_test(test_conn_tls12_forced),
      cmocka_unit_test(test_conn_tls13_required_vs_12_server),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
