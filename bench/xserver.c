/* xserver — the benchmark's scripted XMPP server.
 *
 * Speaks just enough XMPP for the benchmark clients: stream header and
 * features, optional STARTTLS or direct TLS (a throwaway P-256 certificate
 * made at start-up), SASL PLAIN or SCRAM-SHA-256 (salted password computed
 * once, proofs verified, server signature sent), resource binding. Then, by
 * --mode:
 *   blast  sends --count pre-built chat messages as fast as the socket takes
 *          them (one pre-built block of BENCH_BLOCK_MSGS messages, written
 *          again and again straight from memory: no per-message work);
 *   sink   counts the bytes and </message> tags the client sends; after
 *          --count messages it answers with one <message> whose body is
 *          "done";
 *   idle   does nothing (many-sessions scenario).
 * Framings: TCP (RFC 6120), WebSocket (RFC 7395, --ws) and BOSH (XEP-0206,
 * --bosh; blast only). --per-message makes blast write each message with a
 * write of its own (over TLS: a record of its own), as a server does that
 * sends each stanza as it is routed; the client then reads one message at a
 * time however fast it goes.
 *
 * Parsing is scripted, not XML: it looks for the tags it expects. It is a
 * benchmark peer for two known clients on loopback, never a real server.
 *
 * One thread, epoll, level-triggered, non-blocking sockets, so it carries
 * tens of thousands of connections. It prints "PORT <n>" once listening on
 * 127.0.0.1 (port 0: the kernel picks), and one "STAT ..." line per finished
 * blast or sink (bytes, wall time, the server's own CPU time) so the driver
 * can show the server was not the bottleneck. It stops after --timeout
 * seconds whatever happens, or once the first client that got to the
 * blast/sink has gone with --once, or when its standard input closes. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "msgs.h"

enum { M_BLAST, M_SINK, M_IDLE };
enum { TLS_NONE, TLS_DIRECT, TLS_STARTTLS };
enum { F_TCP, F_WS, F_BOSH };
enum {
  ST_HTTP,     /* WebSocket upgrade request / BOSH session creation */
  ST_HDR,      /* waiting for <stream:stream> or <open/> */
  ST_STARTTLS, /* features with <starttls/> sent */
  ST_AUTH,     /* mechanisms sent */
  ST_SCRAM,    /* challenge sent, waiting for the response */
  ST_BIND,     /* bind feature sent */
  ST_READY,
  ST_CLOSE /* flush, then close */
};

static struct {
  int mode, tls, framing, scram, once, per_message;
  unsigned long long count;
  unsigned iter;
  int timeout;
  int verbose;
} opt = {M_BLAST, TLS_NONE, F_TCP, 0, 0, 0, 1000000ull, 4096, 600, 0};

typedef struct buf {
  char *p;
  size_t len, cap;
} buf;

typedef struct conn {
  int fd;
  SSL *ssl;
  int want_tls; /* start TLS once the pending output is flushed */
  int state;
  int authed;
  buf in;  /* plaintext (deframed) input not yet consumed */
  buf raw; /* WebSocket: raw frame bytes not yet deframed */
  buf out; /* control output not yet written */
  size_t out_off;
  /* blast */
  int blasting;
  unsigned long long sent;
  size_t boff;
  size_t bmsg; /* --per-message: the message of the block being written */
  /* sink */
  unsigned long long sink_msgs, sink_bytes;
  char tail[16];
  size_t tail_len;
  /* both: timing */
  double t0, cpu0;
  /* SCRAM */
  char cfb[512]; /* client-first-message-bare */
  char sfm[512]; /* server-first-message */
  char nonce[256];
  /* BOSH */
  unsigned long long bosh_rid;
  int bosh_held; /* a request is waiting for data */
  char res[64];
} conn;

static SSL_CTX *ssl_ctx;
static int ep;
static unsigned char salted[32], salt[16];
static char *block;       /* BENCH_BLOCK_MSGS messages, framed for the framing */
static size_t block_len;  /* bytes */
static size_t *msg_ends;  /* end offset of each message in the block */
static int finished_once; /* --once: a blast or sink finished */
static unsigned long long conns_ready;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what) {
  fprintf(stderr, "xserver: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void buf_add(buf *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n)
      cap *= 2;
    b->p = realloc(b->p, cap);
    if (!b->p) die("realloc");
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
}

static void buf_drop(buf *b, size_t n) {
  memmove(b->p, b->p + n, b->len - n);
  b->len -= n;
}

static void buf_free(buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

/* ------------------------------------------------------------ base64 */

static const char b64c[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64enc(char *out, const unsigned char *in, size_t n) {
  return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

static int b64dec(unsigned char *out, size_t cap, const char *in, size_t n) {
  size_t o = 0;
  unsigned v = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    const char *q = strchr(b64c, in[i]);
    if (in[i] == '=' || !q || !in[i]) continue;
    v = (v << 6) | (unsigned)(q - b64c);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (o >= cap) return -1;
      out[o++] = (unsigned char)(v >> bits);
    }
  }
  return (int)o;
}

/* ------------------------------------------------------------ output */

static void update_events(conn *c) {
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  if (c->out.len > c->out_off || c->blasting || c->want_tls) ev.events |= EPOLLOUT;
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* WebSocket frame header for a server frame (never masked). */
static size_t ws_header(unsigned char *h, size_t n, int opcode) {
  h[0] = (unsigned char)(0x80 | opcode);
  if (n < 126) {
    h[1] = (unsigned char)n;
    return 2;
  }
  if (n < 65536) {
    h[1] = 126, h[2] = (unsigned char)(n >> 8), h[3] = (unsigned char)n;
    return 4;
  }
  h[1] = 127;
  for (int i = 0; i < 8; i++)
    h[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
  return 10;
}

/* Queues one XML element (or header) for the client, framed. */
static void send_xml(conn *c, const char *s) {
  size_t n = strlen(s);
  if (opt.framing == F_WS) {
    unsigned char h[10];
    buf_add(&c->out, h, ws_header(h, n, 1));
  }
  buf_add(&c->out, s, n);
}

static void send_bosh_body(conn *c, const char *attrs, const char *payload, size_t plen) {
  char head[512];
  char body_open[256];
  int bl = snprintf(body_open, sizeof body_open,
                    "<body xmlns='http://jabber.org/protocol/httpbind' "
                    "xmlns:stream='http://etherx.jabber.org/streams'%s>",
                    attrs);
  size_t total = (size_t)bl + plen + 7;
  int hl = snprintf(head, sizeof head,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\n"
                    "Content-Length: %zu\r\n\r\n",
                    total);
  buf_add(&c->out, head, (size_t)hl);
  buf_add(&c->out, body_open, (size_t)bl);
  buf_add(&c->out, payload, plen);
  buf_add(&c->out, "</body>", 7);
}

/* Low-level write: returns bytes written, 0 on EAGAIN/WANT_*, -1 on error. */
static long xwrite(conn *c, const void *p, size_t n) {
  if (c->ssl) {
    size_t w = 0;
    int r = SSL_write_ex(c->ssl, p, n, &w);
    if (r > 0) return (long)w;
    int e = SSL_get_error(c->ssl, r);
    return (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) ? 0 : -1;
  }
  ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
  if (w >= 0) return (long)w;
  return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
}

static void finish_stat(conn *c, const char *what, unsigned long long msgs,
                        unsigned long long bytes) {
  double wall = now_s() - c->t0, cpu = cpu_s() - c->cpu0;
  printf("STAT %s msgs=%llu bytes=%llu wall=%.6f cpu=%.6f\n", what, msgs, bytes, wall, cpu);
  fflush(stdout);
}

static void start_tls(conn *c);
static void sink(conn *c, const char *p, size_t n);

/* Writes what is pending; then, when blasting, more messages. Returns -1 if
 * the connection failed. */
static int flush(conn *c) {
  while (c->out.len > c->out_off) {
    long w = xwrite(c, c->out.p + c->out_off, c->out.len - c->out_off);
    if (w < 0) return -1;
    if (w == 0) return 0;
    c->out_off += (size_t)w;
  }
  c->out.len = c->out_off = 0;
  if (c->want_tls) {
    c->want_tls = 0;
    start_tls(c);
  }
  if (c->state == ST_CLOSE) return -1;
  while (c->blasting && opt.framing != F_BOSH) {
    /* The last round stops at the end of message count % BLOCK. */
    unsigned long long left = opt.count - c->sent;
    size_t end = left >= BENCH_BLOCK_MSGS ? block_len : msg_ends[left - 1];
    size_t to = end;
    if (opt.per_message) {
      while (msg_ends[c->bmsg] <= c->boff)
        c->bmsg++;
      to = msg_ends[c->bmsg];
    }
    long w = xwrite(c, block + c->boff, to - c->boff);
    if (w < 0) return -1;
    if (w == 0) return 0;
    c->boff += (size_t)w;
    if (c->boff == end) {
      c->bmsg = 0;
      c->sent += left >= BENCH_BLOCK_MSGS ? BENCH_BLOCK_MSGS : left;
      c->boff = 0;
      if (c->sent == opt.count) {
        c->blasting = 0;
        unsigned long long bytes =
            (opt.count / BENCH_BLOCK_MSGS) * block_len +
            (opt.count % BENCH_BLOCK_MSGS ? msg_ends[opt.count % BENCH_BLOCK_MSGS - 1] : 0);
        finish_stat(c, "blast", opt.count, bytes);
      }
    }
  }
  return 0;
}

/* ------------------------------------------------------------ TLS */

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned inlen, void *arg) {
  (void)ssl, (void)arg;
  for (unsigned i = 0; i < inlen; i += 1u + in[i]) {
    if (in[i] == 11 && i + 12 <= inlen && memcmp(in + i + 1, "xmpp-client", 11) == 0) {
      *out = in + i + 1;
      *outlen = 11;
      return SSL_TLSEXT_ERR_OK;
    }
  }
  return SSL_TLSEXT_ERR_NOACK;
}

static void tls_init(const char *cert_out) {
  EVP_PKEY *key = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  if (!key || !x) {
    fprintf(stderr, "xserver: cannot make a key\n");
    exit(1);
  }
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_set_pubkey(x, key);
  X509_NAME *name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)BENCH_DOMAIN, -1, -1,
                             0);
  X509_set_issuer_name(x, name);
  /* RFC 6125: clients verify the XMPP domain against the DNS SAN. */
  X509_EXTENSION *san = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, "DNS:" BENCH_DOMAIN);
  X509_add_ext(x, san, -1);
  X509_EXTENSION_free(san);
  X509_sign(x, key, EVP_sha256());
  if (cert_out) { /* the clients' CA file: they verify this very certificate */
    FILE *f = fopen(cert_out, "w");
    if (!f || !PEM_write_X509(f, x)) die("cannot write the certificate");
    fclose(f);
  }
  ssl_ctx = SSL_CTX_new(TLS_server_method());
  SSL_CTX_use_certificate(ssl_ctx, x);
  SSL_CTX_use_PrivateKey(ssl_ctx, key);
  SSL_CTX_set_mode(ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_alpn_select_cb(ssl_ctx, alpn_cb, NULL);
  SSL_CTX_set_session_cache_mode(ssl_ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ssl_ctx, 0);
  X509_free(x);
  EVP_PKEY_free(key);
}

static void start_tls(conn *c) {
  c->ssl = SSL_new(ssl_ctx);
  SSL_set_fd(c->ssl, c->fd);
  SSL_set_accept_state(c->ssl);
}

/* ------------------------------------------------------------ SCRAM */

static void hmac256(unsigned char out[32], const unsigned char *key, size_t klen, const void *d,
                    size_t n) {
  unsigned int ol = 32;
  HMAC(EVP_sha256(), key, (int)klen, d, n, out, &ol);
}

static void sha256(unsigned char out[32], const unsigned char *d, size_t n) {
  EVP_Digest(d, n, out, NULL, EVP_sha256(), NULL);
}

/* ------------------------------------------------------------ protocol */

/* Finds `tag` in the input; returns its offset or -1. */
static long find(const conn *c, const char *tag) {
  if (!c->in.len) return -1;
  const char *p = memmem(c->in.p, c->in.len, tag, strlen(tag));
  return p ? (long)(p - c->in.p) : -1;
}

/* The value of attribute `name` ("name='v'" or "name=\"v\"") in [s, e). */
static int attr(const char *s, const char *e, const char *name, char *out, size_t cap) {
  size_t nl = strlen(name);
  for (const char *p = s; p + nl + 2 < e; p++) {
    if (memcmp(p, name, nl) == 0 && p[nl] == '=' && (p[nl + 1] == '\'' || p[nl + 1] == '"') &&
        (p == s || p[-1] == ' ')) {
      char q = p[nl + 1];
      const char *v = p + nl + 2, *ve = memchr(v, q, (size_t)(e - v));
      if (!ve || (size_t)(ve - v) >= cap) return -1;
      memcpy(out, v, (size_t)(ve - v));
      out[ve - v] = 0;
      return 0;
    }
  }
  return -1;
}

static void send_header(conn *c) {
  if (opt.framing == F_WS)
    send_xml(
        c, "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='bench-stream' from='" BENCH_DOMAIN
           "' version='1.0' xml:lang='en'/>");
  else if (opt.framing == F_TCP)
    send_xml(c, bench_stream_header);
}

static const char *features(conn *c) {
  static char f[1024];
  const char *ns = opt.framing == F_TCP ? "" : " xmlns:stream='http://etherx.jabber.org/streams'";
  if (opt.tls == TLS_STARTTLS && !c->ssl) {
    snprintf(f, sizeof f,
             "<stream:features%s><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"
             "<required/></starttls></stream:features>",
             ns);
    c->state = ST_STARTTLS;
  } else if (!c->authed) {
    snprintf(f, sizeof f,
             "<stream:features%s><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
             "<mechanism>%s</mechanism></mechanisms></stream:features>",
             ns, opt.scram ? "SCRAM-SHA-256" : "PLAIN");
    c->state = ST_AUTH;
  } else {
    snprintf(f, sizeof f,
             "<stream:features%s><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
             "</stream:features>",
             ns);
    c->state = ST_BIND;
  }
  return f;
}

static const char *sasl_fail = "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                               "<not-authorized/></failure>";

/* A complete element starting at `start` named `name`: returns the offset
 * just past it (self-closing or with end tag), or -1 if incomplete. */
static long element_end(const conn *c, long start, const char *name, long *content) {
  const char *s = c->in.p + start, *e = c->in.p + c->in.len;
  const char *gt = memchr(s, '>', (size_t)(e - s));
  if (!gt) return -1;
  if (gt[-1] == '/') {
    *content = (long)(gt + 1 - c->in.p);
    return *content;
  }
  char et[64];
  snprintf(et, sizeof et, "</%s>", name);
  const char *p = memmem(gt, (size_t)(e - gt), et, strlen(et));
  if (!p) return -1;
  *content = (long)(gt + 1 - c->in.p);
  return (long)(p + strlen(et) - c->in.p);
}

static void on_auth(conn *c, const char *s, const char *content, const char *cend) {
  char mech[64];
  if (attr(s, content, "mechanism", mech, sizeof mech)) mech[0] = 0;
  unsigned char dec[1024];
  int n = b64dec(dec, sizeof dec - 1, content, (size_t)(cend - content));
  if (n < 0) n = 0;
  dec[n] = 0;
  if (!opt.scram && strcmp(mech, "PLAIN") == 0) {
    send_xml(c, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    c->authed = 1;
    c->state = ST_HDR;
    return;
  }
  if (!opt.scram || strcmp(mech, "SCRAM-SHA-256") != 0) {
    send_xml(c, sasl_fail);
    c->state = ST_CLOSE;
    return;
  }
  /* gs2 header "n,," / "y,,": client-first-bare starts after the 2nd comma. */
  char *p = strchr((char *)dec, ',');
  p = p ? strchr(p + 1, ',') : NULL;
  char *r = p ? strstr(p, ",r=") : NULL;
  if (!p || !r || strlen(p + 1) >= sizeof c->cfb) {
    send_xml(c, sasl_fail);
    c->state = ST_CLOSE;
    return;
  }
  snprintf(c->cfb, sizeof c->cfb, "%s", p + 1);
  unsigned char rnd[18];
  RAND_bytes(rnd, sizeof rnd);
  char snonce[32], b64salt[32];
  b64enc(snonce, rnd, sizeof rnd);
  b64enc(b64salt, salt, sizeof salt);
  snprintf(c->nonce, sizeof c->nonce, "%.200s%s", r + 3, snonce);
  snprintf(c->sfm, sizeof c->sfm, "r=%s,s=%s,i=%u", c->nonce, b64salt, opt.iter);
  char ch[1024], x[1200];
  b64enc(ch, (const unsigned char *)c->sfm, strlen(c->sfm));
  snprintf(x, sizeof x, "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</challenge>", ch);
  send_xml(c, x);
  c->state = ST_SCRAM;
}

static void on_response(conn *c, const char *content, const char *cend) {
  unsigned char dec[1024];
  int n = b64dec(dec, sizeof dec - 1, content, (size_t)(cend - content));
  if (n < 0) n = 0;
  dec[n] = 0;
  char *pp = strstr((char *)dec, ",p=");
  char am[2048];
  unsigned char proof[64], ck[32], sk[32], cs[32], svk[32], ss[32];
  if (!pp) goto bad;
  int pl = b64dec(proof, sizeof proof, pp + 3, strlen(pp + 3));
  *pp = 0;
  char want_r[300];
  snprintf(want_r, sizeof want_r, ",r=%s", c->nonce);
  if (pl != 32 || !strstr((char *)dec, want_r)) goto bad;
  snprintf(am, sizeof am, "%s,%s,%s", c->cfb, c->sfm, (char *)dec);
  hmac256(ck, salted, 32, "Client Key", 10);
  sha256(sk, ck, 32);
  hmac256(cs, sk, 32, am, strlen(am));
  for (int i = 0; i < 32; i++)
    if ((proof[i] ^ cs[i]) != ck[i]) goto bad;
  hmac256(svk, salted, 32, "Server Key", 10);
  hmac256(ss, svk, 32, am, strlen(am));
  char v[64], vv[128], x[400];
  size_t vl = b64enc(v, ss, 32);
  int l = snprintf(vv, sizeof vv, "v=%.*s", (int)vl, v);
  char b[200];
  b64enc(b, (unsigned char *)vv, (size_t)l);
  snprintf(x, sizeof x, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</success>", b);
  send_xml(c, x);
  c->authed = 1;
  c->state = ST_HDR;
  return;
bad:
  send_xml(c, sasl_fail);
  c->state = ST_CLOSE;
}

static void start_ready(conn *c) {
  c->state = ST_READY;
  conns_ready++;
  c->t0 = now_s();
  c->cpu0 = cpu_s();
  if (opt.mode == M_BLAST) c->blasting = 1;
}

/* Consumes complete protocol elements from c->in. Returns -1 to close. */
static int process(conn *c) {
  for (;;) {
    long off, end, content;
    switch (c->state) {
    case ST_HDR: {
      const char *tag = opt.framing == F_WS ? "<open" : "<stream:stream";
      if ((off = find(c, tag)) < 0) return 0;
      const char *gt = memchr(c->in.p + off, '>', c->in.len - (size_t)off);
      if (!gt) return 0;
      buf_drop(&c->in, (size_t)(gt + 1 - c->in.p));
      send_header(c);
      send_xml(c, features(c));
      break;
    }
    case ST_STARTTLS:
      if ((off = find(c, "<starttls")) < 0) return 0;
      if ((end = element_end(c, off, "starttls", &content)) < 0) return 0;
      buf_drop(&c->in, (size_t)end);
      send_xml(c, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
      c->want_tls = 1;
      c->state = ST_HDR;
      return 0; /* nothing more arrives in plaintext */
    case ST_AUTH:
      if ((off = find(c, "<auth")) < 0) return 0;
      if ((end = element_end(c, off, "auth", &content)) < 0) return 0;
      {
        const char *ce = memmem(c->in.p + content, (size_t)(end - content), "</auth>", 7);
        on_auth(c, c->in.p + off, c->in.p + content, ce ? ce : c->in.p + content);
      }
      buf_drop(&c->in, (size_t)end);
      break;
    case ST_SCRAM:
      if ((off = find(c, "<response")) < 0) return 0;
      if ((end = element_end(c, off, "response", &content)) < 0) return 0;
      {
        const char *ce = memmem(c->in.p + content, (size_t)(end - content), "</response>", 11);
        on_response(c, c->in.p + content, ce ? ce : c->in.p + content);
      }
      buf_drop(&c->in, (size_t)end);
      break;
    case ST_BIND: {
      if ((off = find(c, "<iq")) < 0) return 0;
      if ((end = element_end(c, off, "iq", &content)) < 0) return 0;
      char id[128], x[1024];
      const char *s = c->in.p + off;
      if (attr(s, c->in.p + content, "id", id, sizeof id)) snprintf(id, sizeof id, "none");
      const char *rs = memmem(s, (size_t)(end - off), "<resource>", 10);
      const char *re = rs ? memmem(rs, (size_t)(c->in.p + end - rs), "</resource>", 11) : NULL;
      if (rs && re && re - rs - 10 < (long)sizeof c->res - 1)
        snprintf(c->res, sizeof c->res, "%.*s", (int)(re - rs - 10), rs + 10);
      else
        snprintf(c->res, sizeof c->res, "r%d", c->fd);
      snprintf(x, sizeof x,
               "<iq%s type='result' id='%s'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
               "<jid>" BENCH_USER "@" BENCH_DOMAIN "/%s</jid></bind></iq>",
               opt.framing == F_TCP ? "" : " xmlns='jabber:client'", id, c->res);
      buf_drop(&c->in, (size_t)end);
      send_xml(c, x);
      start_ready(c);
      break;
    }
    case ST_READY:
      if (opt.mode == M_SINK && c->in.len) {
        sink(c, c->in.p, c->in.len);
        c->in.len = 0;
        return 0;
      }
      /* The client closing: answer and hang up. */
      if (find(c, "</stream:stream>") >= 0 || find(c, "<close") >= 0) {
        send_xml(c, opt.framing == F_WS ? "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"
                                        : "</stream:stream>");
        c->state = ST_CLOSE;
      }
      c->in.len = 0;
      return 0;
    default: return 0;
    }
  }
}

/* Sink: counts </message> across reads. */
static void sink(conn *c, const char *p, size_t n) {
  static const char tag[] = "</message>";
  const size_t tl = sizeof tag - 1;
  c->sink_bytes += n;
  /* A tag split across reads: look in tail + head. */
  if (c->tail_len) {
    char j[32];
    size_t h = n < tl - 1 ? n : tl - 1;
    memcpy(j, c->tail, c->tail_len);
    memcpy(j + c->tail_len, p, h);
    if (memmem(j, c->tail_len + h, tag, tl)) c->sink_msgs++;
  }
  for (const char *q = p, *e = p + n; (q = memmem(q, (size_t)(e - q), tag, tl)); q += tl)
    c->sink_msgs++;
  size_t t = n < tl - 1 ? n : tl - 1;
  memcpy(c->tail, p + n - t, t);
  c->tail_len = t;
  if (c->sink_msgs >= opt.count && c->t0 > 0) {
    char x[512];
    snprintf(x, sizeof x,
             "<message from='" BENCH_PEER "' to='" BENCH_USER "@" BENCH_DOMAIN
             "/%s' type='chat' id='done'><body>done</body></message>",
             c->res);
    send_xml(c, x);
    finish_stat(c, "sink", c->sink_msgs, c->sink_bytes);
    c->t0 = -1; /* report once */
  }
}

/* WebSocket: moves complete client frames' payloads from raw to in. */
static int ws_deframe(conn *c) {
  for (;;) {
    unsigned char *b = (unsigned char *)c->raw.p;
    size_t n = c->raw.len;
    if (n < 2) return 0;
    int op = b[0] & 0x0f;
    uint64_t len = b[1] & 0x7f;
    size_t h = 2;
    if (len == 126) {
      if (n < 4) return 0;
      len = (uint64_t)b[2] << 8 | b[3];
      h = 4;
    } else if (len == 127) {
      if (n < 10) return 0;
      len = 0;
      for (int i = 0; i < 8; i++)
        len = len << 8 | b[2 + i];
      h = 10;
    }
    int masked = b[1] & 0x80;
    if (masked) h += 4;
    if (n < h + len) return 0;
    unsigned char *pl = b + h;
    if (masked)
      for (uint64_t i = 0; i < len; i++)
        pl[i] ^= b[h - 4 + (i & 3)];
    if (op == 8) return -1;
    if (op == 9) {
      unsigned char hh[10];
      buf_add(&c->out, hh, ws_header(hh, (size_t)len, 10));
      buf_add(&c->out, pl, (size_t)len);
    } else if (op == 0 || op == 1 || op == 2) {
      if (c->state == ST_READY && opt.mode == M_SINK)
        sink(c, (char *)pl, (size_t)len);
      else
        buf_add(&c->in, pl, (size_t)len);
    }
    buf_drop(&c->raw, h + (size_t)len);
  }
}

static int ws_upgrade(conn *c) {
  long end = find(c, "\r\n\r\n");
  if (end < 0) return 0;
  const char *k = memmem(c->in.p, (size_t)end, "Sec-WebSocket-Key:", 18);
  if (!k) return -1;
  k += 18;
  while (*k == ' ')
    k++;
  const char *ke = memmem(k, (size_t)(c->in.p + end - k + 2), "\r\n", 2);
  char kk[128];
  if (!ke || ke - k > 100) return -1;
  snprintf(kk, sizeof kk, "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", (int)(ke - k), k);
  unsigned char d[20];
  EVP_Digest(kk, strlen(kk), d, NULL, EVP_sha1(), NULL);
  char acc[64], resp[512];
  b64enc(acc, d, 20);
  int rl = snprintf(resp, sizeof resp,
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                    "Sec-WebSocket-Protocol: xmpp\r\n\r\n",
                    acc);
  buf_add(&c->out, resp, (size_t)rl);
  /* Anything after the request is already frames. */
  buf_add(&c->raw, c->in.p + end + 4, c->in.len - (size_t)end - 4);
  c->in.len = 0;
  c->state = ST_HDR;
  return ws_deframe(c);
}

/* ------------------------------------------------------------ BOSH */

/* One HTTP request with a complete body, or 0 if incomplete. Returns the
 * request's total length; *body points at its body. */
static long http_request(conn *c, const char **body, size_t *blen) {
  long he = find(c, "\r\n\r\n");
  if (he < 0) return 0;
  const char *cl = memmem(c->in.p, (size_t)he, "Content-Length:", 15);
  if (!cl) cl = memmem(c->in.p, (size_t)he, "content-length:", 15);
  size_t len = cl ? strtoul(cl + 15, NULL, 10) : 0;
  if (c->in.len < (size_t)he + 4 + len) return 0;
  *body = c->in.p + he + 4;
  *blen = len;
  return he + 4 + (long)len;
}

/* Answers a waiting request with up to `max` messages. */
static void bosh_blast(conn *c, unsigned max) {
  unsigned long long left = opt.count - c->sent;
  unsigned n = left < max ? (unsigned)left : max;
  size_t start = c->sent % BENCH_BLOCK_MSGS;
  /* Never straddle the block end: keep it simple, send to the block end. */
  if (start + n > BENCH_BLOCK_MSGS) n = (unsigned)(BENCH_BLOCK_MSGS - start);
  size_t bo = start ? msg_ends[start - 1] : 0, be = msg_ends[start + n - 1];
  send_bosh_body(c, "", block + bo, be - bo);
  c->sent += n;
  c->sink_bytes += be - bo;
  c->bosh_held = 0;
  if (c->sent == opt.count) {
    c->blasting = 0;
    finish_stat(c, "blast", opt.count, c->sink_bytes);
  }
}

static int bosh_process(conn *c) {
  for (;;) {
    const char *body;
    size_t blen;
    long reql = http_request(c, &body, &blen);
    if (reql <= 0) return 0;
    const char *be = body + blen;
    char sid[64];
    int has_sid = attr(body, be, "sid", sid, sizeof sid) == 0;
    char x[1024];
    int restart = memmem(body, blen, "xmpp:restart='true'", 19) != NULL ||
                  memmem(body, blen, "xmpp:restart=\"true\"", 19) != NULL;
    const char *bodyend = memchr(body, '>', blen);
    const char *inner = bodyend ? bodyend + 1 : be;
    size_t inner_len = (size_t)(be - inner);
    if (!has_sid) {
      /* Session creation: stream features in the response. */
      snprintf(x, sizeof x,
               " sid='benchsid' wait='60' requests='2' hold='1' inactivity='60' ver='1.6' "
               "from='" BENCH_DOMAIN "' xmlns:xmpp='urn:xmpp:xbosh' xmpp:version='1.0'");
      const char *f = features(c);
      send_bosh_body(c, x, f, strlen(f));
    } else if (restart) {
      const char *f = features(c);
      send_bosh_body(c, "", f, strlen(f));
    } else if (c->state == ST_AUTH && memmem(inner, inner_len, "<auth", 5)) {
      const char *a = memmem(inner, inner_len, "<auth", 5);
      const char *gt = memchr(a, '>', (size_t)(be - a));
      const char *ae = memmem(a, (size_t)(be - a), "</auth>", 7);
      size_t before = c->out.len;
      on_auth(c, a, gt + 1, ae ? ae : gt + 1);
      /* on_auth queued the element raw: wrap it in a body. */
      char el[1024];
      size_t el_len = c->out.len - before;
      if (el_len >= sizeof el) return -1;
      memcpy(el, c->out.p + before, el_len);
      c->out.len = before;
      send_bosh_body(c, "", el, el_len);
    } else if (c->state == ST_BIND && memmem(inner, inner_len, "<iq", 3)) {
      char id[128];
      const char *iq = memmem(inner, inner_len, "<iq", 3);
      if (attr(iq, be, "id", id, sizeof id)) snprintf(id, sizeof id, "none");
      snprintf(c->res, sizeof c->res, "bosh%d", c->fd);
      int l = snprintf(x, sizeof x,
                       "<iq xmlns='jabber:client' type='result' id='%s'><bind "
                       "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>" BENCH_USER "@" BENCH_DOMAIN
                       "/%s</jid></bind></iq>",
                       id, c->res);
      send_bosh_body(c, "", x, (size_t)l);
      start_ready(c);
    } else if (c->state == ST_READY) {
      if (memmem(inner, inner_len, "type='terminate'", 16)) {
        send_bosh_body(c, " type='terminate'", "", 0);
        c->state = ST_CLOSE;
      } else if (c->blasting) {
        bosh_blast(c, 100);
      } else {
        c->bosh_held = 1; /* empty poll after the blast: hold it */
      }
    } else {
      send_bosh_body(c, "", "", 0);
    }
    buf_drop(&c->in, (size_t)reql);
  }
}

/* ------------------------------------------------------------ events */

static void conn_close(conn *c) {
  /* --once: the client that was served has gone; so do we. */
  if (opt.once && c->state >= ST_READY) finished_once = 1;
  if (c->ssl) SSL_free(c->ssl);
  close(c->fd);
  if (c->state == ST_READY && c->blasting) {
    fprintf(stderr, "xserver: client left after %llu of %llu messages\n", c->sent, opt.count);
  }
  buf_free(&c->in);
  buf_free(&c->raw);
  buf_free(&c->out);
  free(c);
}

/* Reads everything available. Returns -1 to close. */
static int on_readable(conn *c) {
  char tmp[65536];
  for (;;) {
    long n;
    if (c->ssl) {
      size_t r = 0;
      int ok = SSL_read_ex(c->ssl, tmp, sizeof tmp, &r);
      if (!ok) {
        int e = SSL_get_error(c->ssl, ok);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
        return -1;
      }
      n = (long)r;
    } else {
      n = recv(c->fd, tmp, sizeof tmp, 0);
      if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
      if (n == 0) return -1;
    }
    if (c->state == ST_READY && opt.mode == M_SINK && opt.framing == F_TCP) {
      sink(c, tmp, (size_t)n);
      continue;
    }
    if (opt.framing == F_WS && c->state != ST_HTTP) {
      buf_add(&c->raw, tmp, (size_t)n);
      if (ws_deframe(c)) return -1;
    } else {
      buf_add(&c->in, tmp, (size_t)n);
    }
    if (opt.framing == F_WS && c->state == ST_HTTP && ws_upgrade(c)) return -1;
    if (opt.framing == F_BOSH) {
      if (bosh_process(c)) return -1;
    } else if (process(c)) {
      return -1;
    }
    if (c->want_tls) return 0; /* the rest comes through TLS */
  }
}

static void on_event(conn *c, unsigned events) {
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    if (on_readable(c)) {
      conn_close(c);
      return;
    }
  }
  if (opt.framing == F_BOSH && c->blasting && !c->out.len && c->bosh_held) bosh_blast(c, 100);
  if (flush(c)) {
    conn_close(c);
    return;
  }
  /* TLS may have buffered a whole record of input while we wrote. */
  if (c->ssl && SSL_pending(c->ssl) && on_readable(c)) {
    conn_close(c);
    return;
  }
  update_events(c);
}

static void build_block(void) {
  char one[1024];
  size_t cap = BENCH_BLOCK_MSGS * 300;
  block = malloc(cap);
  msg_ends = malloc(BENCH_BLOCK_MSGS * sizeof *msg_ends);
  for (unsigned i = 0; i < BENCH_BLOCK_MSGS; i++) {
    size_t n = bench_msg_xml(one, sizeof one, i, opt.framing != F_TCP);
    if (opt.framing == F_WS) {
      unsigned char h[10];
      size_t hl = ws_header(h, n, 1);
      memcpy(block + block_len, h, hl);
      block_len += hl;
    }
    memcpy(block + block_len, one, n);
    block_len += n;
    msg_ends[i] = block_len;
  }
}

static void usage(void) {
  fprintf(stderr, "usage: xserver [--port N] [--mode blast|sink|idle] [--count N]\n"
                  "               [--tls none|direct|starttls] [--scram] [--iter N]\n"
                  "               [--ws|--bosh] [--once] [--per-message] [--timeout S]\n"
                  "               [--cert-out PEM]\n");
  exit(2);
}

int main(int argc, char **argv) {
  int port = 0;
  const char *cert_out = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && ++i)
    if (ARG("--port"))
      port = atoi(v);
    else if (ARG("--count"))
      opt.count = strtoull(v, NULL, 10);
    else if (ARG("--cert-out"))
      cert_out = v;
    else if (ARG("--iter"))
      opt.iter = (unsigned)atoi(v);
    else if (ARG("--timeout"))
      opt.timeout = atoi(v);
    else if (ARG("--mode"))
      opt.mode = strcmp(v, "sink") == 0 ? M_SINK : strcmp(v, "idle") == 0 ? M_IDLE : M_BLAST;
    else if (ARG("--tls"))
      opt.tls = strcmp(v, "direct") == 0     ? TLS_DIRECT
                : strcmp(v, "starttls") == 0 ? TLS_STARTTLS
                                             : TLS_NONE;
    else if (strcmp(a, "--scram") == 0)
      opt.scram = 1;
    else if (strcmp(a, "--ws") == 0)
      opt.framing = F_WS;
    else if (strcmp(a, "--bosh") == 0)
      opt.framing = F_BOSH;
    else if (strcmp(a, "--once") == 0)
      opt.once = 1;
    else if (strcmp(a, "--per-message") == 0)
      opt.per_message = 1;
    else
      usage();
#undef ARG
  }
  if (opt.count == 0) opt.count = 1;
  signal(SIGPIPE, SIG_IGN);
  alarm((unsigned)opt.timeout); /* self-stopping, whatever happens */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (opt.tls != TLS_NONE) tls_init(cert_out);
  if (opt.scram) {
    RAND_bytes(salt, sizeof salt);
    PKCS5_PBKDF2_HMAC(BENCH_PASSWORD, (int)strlen(BENCH_PASSWORD), salt, sizeof salt, (int)opt.iter,
                      EVP_sha256(), 32, salted);
  }
  build_block();

  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (struct sockaddr *)&sa, sizeof sa)) die("bind");
  if (listen(ls, 65535)) die("listen");
  socklen_t sl = sizeof sa;
  getsockname(ls, (struct sockaddr *)&sa, &sl);
  printf("PORT %u\n", ntohs(sa.sin_port));
  fflush(stdout);

  ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  ev.data.ptr = &ls; /* marks stdin */
  fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
  int watch_stdin = epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) == 0;
  (void)watch_stdin;

  struct epoll_event evs[256];
  while (!finished_once) {
    int n = epoll_wait(ep, evs, 256, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == &ls) { /* stdin: EOF stops us */
        char b[256];
        if (read(0, b, sizeof b) == 0) exit(0);
        continue;
      }
      if (!evs[i].data.ptr) {
        for (;;) {
          int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          conn *c = calloc(1, sizeof *c);
          c->fd = fd;
          c->state = opt.framing == F_TCP ? ST_HDR : ST_HTTP;
          if (opt.framing == F_BOSH) c->state = ST_AUTH;
          if (opt.tls == TLS_DIRECT) start_tls(c);
          struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
        }
        continue;
      }
      on_event(evs[i].data.ptr, evs[i].events);
    }
  }
  return 0;
}
