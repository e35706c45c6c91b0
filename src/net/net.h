/* The network layer's internal pieces (L2): the resolver (dns.c), the
 * address-list connector (sock.c) and TLS over memory BIOs (tls.c), tied
 * together by the connection state machine in conn.c. Each piece is a small
 * object that does no I/O except on the fds it owns and never blocks; the
 * caller drives it with fd readiness and the clock. */
#ifndef EPODE_SRC_NET_NET_H
#define EPODE_SRC_NET_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "epode/conn.h"
#include "util/config_int.h"

/* Hard bounds on what DNS may make us hold or try. A hostile resolver could
 * return thousands of SRV records or addresses; real services publish a
 * handful (large providers list < 10 SRV targets). */
#define EPODE__MAX_SRV_TARGETS 32u
#define EPODE__MAX_ADDRS_PER_TARGET 16u
#define EPODE__MAX_ADDRS 64u
/* DNS names are at most 253 characters (RFC 1035). */
#define EPODE__MAX_HOST 256u

/* One address to try, with what to do once connected. */
typedef struct epode__addr {
  struct sockaddr_storage sa;
  socklen_t salen;
  int direct_tls;             /* 1: XEP-0368 direct TLS; 0: plain TCP then STARTTLS */
  char host[EPODE__MAX_HOST]; /* the name it came from (SRV target or host) */
} epode__addr;

/* An address in 24 bytes (family, port, IP, mode): what a connection
 * remembers of the address it used, to try the others first next time. */
typedef struct epode__addr_key {
  unsigned char ip[16];
  uint16_t port, family;
  int direct_tls;
} epode__addr_key;
void epode__addr_key_of(const epode__addr *a, epode__addr_key *k);

/* "192.0.2.1:5222" or "[2001:db8::1]:5222". */
void epode__addr_str(const epode__addr *a, char *buf, size_t size);

/* ------------------------------------------------------------------ dns.c */

typedef struct epode__dns epode__dns;
/* c-ares opened, changed or closed one of its sockets: watch `fd` for
 * `events` (EPODE_IO_*); 0 means stop (the fd is closed right after). */
typedef void (*epode__dns_sock_fn)(int fd, unsigned events, void *ud);

/* A resolver for one connection (its own c-ares channel). `cfg` must outlive
 * it. Its total time is bounded by EPODE_TIMEOUT_CONNECT. */
epode_err epode__dns_new(epode__dns **out, const epode_config *cfg, epode__dns_sock_fn fn,
                         void *ud);
void epode__dns_free(epode__dns *d);
/* Test hook: use these name servers ("127.0.0.1:5353,…") instead of
 * /etc/resolv.conf. */
epode_err epode__dns_set_servers(epode__dns *d, const char *csv);
/* Starts resolving. With `host` set, only host:port (port 0: 5222, or 5223
 * for EPODE_TLS_DIRECT; direct TLS for DIRECT only); else SRV records of
 * `domain` according to `mode`, falling back to the domain's own
 * addresses. May finish before it returns (IP literals, /etc/hosts). */
epode_err epode__dns_start(epode__dns *d, const char *domain, epode_tls_mode mode, const char *host,
                           uint16_t port, uint64_t now_ms);
void epode__dns_process_fd(epode__dns *d, int fd, unsigned events, uint64_t now_ms);
/* Runs c-ares' retransmissions and the overall deadline. */
void epode__dns_process_timeout(epode__dns *d, uint64_t now_ms);
/* Absolute time it next needs process_timeout, or -1. */
int64_t epode__dns_deadline(const epode__dns *d, uint64_t now_ms);
/* For tests: 1 if the resolver has made its c-ares channel (it does at the
 * first query, or when given servers). */
int epode__dns_has_channel(const epode__dns *d);
/* 1 once finished (then epode__dns_result tells how). */
int epode__dns_done(const epode__dns *d);
/* EPODE_OK with the address list in order of preference, or EPODE_ERR_DNS /
 * EPODE_ERR_NOMEM with *detail saying why. The list belongs to `d`. */
epode_err epode__dns_result(const epode__dns *d, const epode__addr **addrs, size_t *n,
                            const char **detail);

/* ------------------------------------------------------------------ sock.c */

/* Tries each address in turn with a non-blocking connect; each attempt gets
 * `timeout_ms` (0: no limit). */
typedef struct epode__connector epode__connector;
epode_err epode__connector_new(epode__connector **out, const epode_config *cfg,
                               const epode__addr *addrs, size_t n, uint32_t timeout_ms);
void epode__connector_free(epode__connector *k);
/* Starts the first attempt (several may fail at once). */
void epode__connector_start(epode__connector *k, uint64_t now_ms);
/* Reorders the addresses so that the ones after `a` (the next SRV target
 * or address) come first and `a` last; no change if `a` is not among them.
 * Before epode__connector_start(). */
void epode__connector_avoid_first(epode__connector *k, const epode__addr_key *a);
/* The socket being connected (watch it for EPODE_IO_WRITE), or -1. */
int epode__connector_fd(const epode__connector *k);
/* The socket became writable (or errored). */
void epode__connector_process(epode__connector *k, uint64_t now_ms);
void epode__connector_process_timeout(epode__connector *k, uint64_t now_ms);
int64_t epode__connector_deadline(const epode__connector *k);
/* 0 while connecting, 1 when done: then EPODE_OK and *fd (now the
 * caller's) and *which (index of the address), or EPODE_ERR_CONNECT with a
 * detail naming every address tried and why each failed. */
int epode__connector_done(const epode__connector *k);
/* The i-th address (as copied at creation). */
const epode__addr *epode__connector_addr(const epode__connector *k, size_t i);
/* Called with each socket just before the connector closes it (a failed
 * attempt, or free), so the host can stop watching it first. */
void epode__connector_set_close_cb(epode__connector *k, void (*fn)(int fd, void *ud), void *ud);
epode_err epode__connector_result(epode__connector *k, int *fd, size_t *which, const char **detail);

/* Writes what it can with MSG_NOSIGNAL; returns bytes written, 0 if the
 * socket would block, -1 with errno on error. */
long epode__sock_send(int fd, const void *p, size_t n);
/* Reads; returns bytes, 0 on EOF, -1 with errno (EAGAIN: nothing now). */
long epode__sock_recv(int fd, void *p, size_t n);

/* ------------------------------------------------------------------ tls.c */

typedef struct epode__tls epode__tls;
typedef enum {
  EPODE__TLS_AGAIN = 1, /* needs more input from the peer */
  EPODE__TLS_DONE = 0   /* handshake complete */
} epode__tls_status;

/* A client TLS endpoint for `name` (SNI and the name verified, an IP literal
 * verified as an address and sent without SNI). ALPN "xmpp-client" when
 * `direct`. Verifies unless EPODE_CFG_TLS_NO_VERIFY; trusts cfg->cafile or
 * the system store; TLS versions cfg->tls_min..tls_max (default 1.2 to the
 * newest); offers the configured client certificate. On failure `detail`
 * (size > 0) says why. */
epode_err epode__tls_new(epode__tls **out, const epode_config *cfg, const char *name, int direct,
                         char *detail, size_t detail_size);
void epode__tls_free(epode__tls *t);
/* For tests: the OpenSSL context (SSL_CTX) the connection uses, shared
 * with the other connections of the same configuration and its copies. */
const void *epode__tls_context(const epode__tls *t);
/* Ciphertext received from the peer. */
epode_err epode__tls_feed(epode__tls *t, const void *p, size_t n);
/* Advances the handshake: EPODE__TLS_DONE, EPODE__TLS_AGAIN, or a negative
 * EPODE_ERR_TLS / EPODE_ERR_TLS_VERIFY (see epode__tls_detail). */
int epode__tls_handshake(epode__tls *t);
int epode__tls_handshake_done(const epode__tls *t);
/* Decrypted data: *n bytes (0: none yet); *eof set on the peer's
 * close_notify. EPODE_ERR_TLS on a protocol error. */
epode_err epode__tls_read(epode__tls *t, void *buf, size_t cap, size_t *n, int *eof);
/* Encrypts all of `p` (the output grows; drain it with epode__tls_take). */
epode_err epode__tls_write(epode__tls *t, const void *p, size_t n);
/* Sends close_notify (into the output). */
void epode__tls_close_notify(epode__tls *t);
/* Ciphertext waiting to be sent. */
size_t epode__tls_out_len(const epode__tls *t);
/* Moves up to `cap` ciphertext bytes into buf; returns how many. */
size_t epode__tls_take(epode__tls *t, void *buf, size_t cap);
/* Decrypted bytes already buffered inside TLS. */
int epode__tls_pending(const epode__tls *t);
/* Why the last failing call failed; never NULL. */
const char *epode__tls_detail(const epode__tls *t);
/* After the handshake: version and channel-binding data (pointers into t). */
void epode__tls_info(const epode__tls *t, epode_tls_info *info);
/* "TLSv1.3 TLS_AES_256_GCM_SHA384" for logs. */
const char *epode__tls_version_name(const epode__tls *t);
const char *epode__tls_cipher_name(const epode__tls *t);
/* The ALPN protocol the server chose, or NULL. */
const char *epode__tls_alpn(const epode__tls *t, size_t *len);

/* ------------------------------------------------------------------ tls_cert.c */

struct ssl_ctx_st; /* OpenSSL's SSL_CTX */

/* Loads the configured TLS client certificate (XEP-0178) into `ctx`: either
 * cfg->client_cert (PEM: the certificate, then any intermediates) with
 * cfg->client_key (PEM; NULL: the key is in the certificate file), or
 * cfg->client_p12 with cfg->client_p12_pw (its CA certificates are sent as
 * the chain). EPODE_OK without doing anything when none is configured.
 * EPODE_ERR_TLS (EPODE_ERR_NOMEM) with `err` naming the file and what is
 * wrong: unreadable, no certificate or key in it, an encrypted PEM key,
 * a wrong or missing PKCS#12 password, a key that does not match the
 * certificate. Reads the files each time; logs neither key nor password.
 * For every TLS transport (TCP, and HTTPS/WSS later). */
epode_err epode__tls_load_client_cert(struct ssl_ctx_st *ctx, const epode_config *cfg, char *err,
                                      size_t errlen);

/* ------------------------------------------------------------------ conn.c */

/* Test hook: the connection's resolver asks these name servers. Call
 * before epode_conn_connect(). */
epode_err epode__conn_set_dns_servers(epode_conn *c, const char *csv);

/* The io callback and its ud the host installed with epode_conn_set_io()
 * (the built-in loop finds its own source through this in O(1)). */
void *epode__conn_io_ud(const epode_conn *c, epode_io_fn *fn);

#endif
