/* epode — connection configuration.
 *
 * An epode_config holds everything a session and a connection need to know:
 * the account, the TLS policy, limits, timeouts, logging and the random
 * source. Sessions and connections copy it when created, so one config can
 * seed many of them and may be freed afterwards.
 *
 * Defaults are the safe ones: TLS required and verified against the JID's
 * domain, STARTTLS or direct TLS as DNS SRV records say, no password over an
 * unencrypted stream. */
#ifndef EPODE_CONFIG_H
#define EPODE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "mem.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct epode_config epode_config;

typedef enum epode_tls_mode {
  /* SRV decides: _xmpps-client targets use direct TLS, _xmpp-client targets
   * and the A/AAAA fallback (port 5222) use STARTTLS. */
  EPODE_TLS_AUTO = 0,
  /* STARTTLS only (_xmpp-client, then the domain on 5222). */
  EPODE_TLS_STARTTLS = 1,
  /* Direct TLS only, XEP-0368 (_xmpps-client, then the domain on 5223). */
  EPODE_TLS_DIRECT = 2
} epode_tls_mode;

/* Flags for epode_config_set_flags(). */
enum {
  /* Allow a stream without TLS (server offers no STARTTLS) and a password
   * over it. Off by default: such a stream fails with EPODE_ERR_TLS_REQUIRED. */
  EPODE_CFG_ALLOW_PLAINTEXT = 1u << 0,
  /* Do not verify the server certificate. An explicit, dangerous opt-out. */
  EPODE_CFG_TLS_NO_VERIFY = 1u << 1
};

typedef enum epode_limit {
  EPODE_LIMIT_STANZA_BYTES = 0, /* bytes of one top-level element as received */
  EPODE_LIMIT_DEPTH,            /* element nesting depth inside a stanza */
  EPODE_LIMIT_ATTRS,            /* attributes on one element */
  EPODE_LIMIT_SEND_QUEUE,       /* stanzas queued before the session is ready */
  EPODE_LIMIT_OUTPUT_BYTES,     /* bytes of output not yet taken by the transport */
  EPODE_LIMIT_SASL_ROUNDS,      /* challenges accepted in one SASL exchange */
  EPODE_LIMIT_SCRAM_ITER_MIN,   /* lowest SCRAM iteration count accepted */
  EPODE_LIMIT_SCRAM_ITER_MAX,   /* highest SCRAM iteration count accepted */
  EPODE_LIMIT_UNACKED,          /* tracked stanzas awaiting their delivery report */
  EPODE_LIMIT_COUNT_
} epode_limit;

typedef enum epode_timeout {
  EPODE_TIMEOUT_CONNECT = 0, /* DNS + TCP connect, per address attempt set */
  EPODE_TIMEOUT_TLS,         /* TLS handshake */
  EPODE_TIMEOUT_NEGOTIATION, /* stream open until the session is ready */
  EPODE_TIMEOUT_IQ,          /* default for epode_session_send_iq(…, 0, …) */
  EPODE_TIMEOUT_CLOSE,       /* waiting for the server's </stream:stream> */
  EPODE_TIMEOUT_COUNT_
} epode_timeout;

typedef enum epode_log_level {
  EPODE_LOG_ERROR = 0,
  EPODE_LOG_WARN = 1,
  EPODE_LOG_INFO = 2,
  EPODE_LOG_DEBUG = 3,
  /* Every XML element sent ("xml-out") and received ("xml-in"), with SASL
   * payloads replaced by "[redacted]". */
  EPODE_LOG_TRAFFIC = 4
} epode_log_level;

typedef void (*epode_log_fn)(void *ud, epode_log_level level, const char *area, const char *msg);
/* Fills `buf` with `len` random bytes; returns 0 on success. */
typedef int (*epode_random_fn)(void *ud, unsigned char *buf, size_t len);

epode_err epode_config_new(epode_config **out, const epode_mem *mem);
void epode_config_free(epode_config *cfg);
epode_err epode_config_clone(epode_config **out, const epode_config *cfg);

/* The account JID (bare, or with a resource to request). Required. */
epode_err epode_config_set_jid(epode_config *cfg, const char *jid);
const char *epode_config_jid(const epode_config *cfg);
/* The password (copied; wiped from memory when the config is freed). */
epode_err epode_config_set_password(epode_config *cfg, const char *password);
/* Resource to request at bind (overrides one in the JID). NULL: server picks. */
epode_err epode_config_set_resource(epode_config *cfg, const char *resource);
/* Connect here instead of resolving the JID's domain. port 0: 5222 for
 * STARTTLS, 5223 for direct TLS. */
epode_err epode_config_set_server(epode_config *cfg, const char *host, uint16_t port);
epode_err epode_config_set_tls_mode(epode_config *cfg, epode_tls_mode mode);
epode_tls_mode epode_config_tls_mode(const epode_config *cfg);
/* TLS protocol versions to allow: 0x0303 (TLS 1.2) or 0x0304 (TLS 1.3);
 * 0 keeps the default (min TLS 1.2, max the newest). EPODE_ERR_INVAL for
 * anything older than TLS 1.2 or min > max. */
epode_err epode_config_set_tls_versions(epode_config *cfg, int min_version, int max_version);
typedef enum epode_transport {
  EPODE_TRANSPORT_TCP = 0,       /* RFC 6120 over TCP (STARTTLS or direct TLS) */
  EPODE_TRANSPORT_WEBSOCKET = 1, /* RFC 7395, ws:// or wss:// */
  EPODE_TRANSPORT_BOSH = 2       /* XEP-0124/0206, http:// or https:// */
} epode_transport;

/* Connects over WebSocket (ws://, wss://) or BOSH (http://, https://) at
 * this URL instead of TCP; the scheme picks the transport. NULL goes back to
 * TCP. EPODE_ERR_INVAL for another scheme or a malformed URL. */
epode_err epode_config_set_url(epode_config *cfg, const char *url);
const char *epode_config_url(const epode_config *cfg);
/* Uses this transport; with no URL set, WebSocket and BOSH find theirs by
 * XEP-0156 discovery (https://DOMAIN/.well-known/host-meta[.json]). */
epode_err epode_config_set_transport(epode_config *cfg, epode_transport transport);
epode_transport epode_config_transport(const epode_config *cfg);
/* PEM file of trusted CAs, used instead of the system store.
 *
 * The trusted CAs (this file or the system store) and the client
 * certificate are read into one TLS context at the first TLS connection
 * made with this configuration, and every later connection of it and of its
 * copies (each session keeps a copy) uses that context: the system store
 * costs ~0.8 MiB and ~40 ms of CPU to read, once rather than per
 * connection. The files are read again after a day, and for connections
 * made after any TLS setting of the configuration is set again (this
 * call, even with the same path; epode_config_set_tls_versions, the
 * EPODE_CFG_TLS_NO_VERIFY flag, the client certificate): to pick up a
 * changed CA file at once, call this again. A file that cannot be read is
 * reported by the connection that tried, and tried again by the next. */
epode_err epode_config_set_cafile(epode_config *cfg, const char *path);
epode_err epode_config_set_flags(epode_config *cfg, unsigned flags);
unsigned epode_config_flags(const epode_config *cfg);
epode_err epode_config_set_limit(epode_config *cfg, epode_limit which, uint64_t value);
uint64_t epode_config_limit(const epode_config *cfg, epode_limit which);
/* Milliseconds; 0 disables that timeout. */
epode_err epode_config_set_timeout(epode_config *cfg, epode_timeout which, uint32_t ms);
uint32_t epode_config_timeout(const epode_config *cfg, epode_timeout which);
/* Keepalive and dead-connection detection: when nothing has arrived for
 * `idle_ms`, the session asks the server for a sign of life (an XEP-0198
 * <r/> where stream management is on, else an XEP-0199 ping); if nothing
 * arrives within `timeout_ms` after that, it fails with EPODE_ERR_TIMEOUT.
 * `timeout_ms` also bounds the wait for the answer to an XEP-0198 <r/>: a
 * server that still talks but no longer acknowledges has stopped
 * processing what we send. Defaults 90000 and 30000; idle_ms 0 turns
 * keepalive (and that bound) off. */
epode_err epode_config_set_keepalive(epode_config *cfg, uint32_t idle_ms, uint32_t timeout_ms);
/* XEP-0198 stream management: on by default (used when the server offers
 * it). Acks are requested after `every_n` stanzas or `every_ms` after the
 * oldest unacknowledged one (defaults 5 and 2000; 0 disables that
 * trigger, but not both). */
epode_err epode_config_set_stream_management(epode_config *cfg, int enable);
epode_err epode_config_set_sm_ack_policy(epode_config *cfg, unsigned every_n, uint32_t every_ms);
/* Automatic reconnection, off by default. When on, a session that loses its
 * connection (or cannot establish one) is not closed: it goes to
 * EPODE_STATE_DISCONNECTED, keeping its handlers, pending iqs, queued and
 * unacknowledged stanzas, and an epode_conn connects again after a delay —
 * `initial_ms` doubled on each consecutive failure up to `max_ms`, with
 * random jitter (each delay is between half and all of that value). A
 * session that had XEP-0198 resumption resumes (EPODE_EV_RESUMED) and
 * resends what the server had not acknowledged; otherwise a fresh session
 * is negotiated (EPODE_EV_READY again) and the unacknowledged stanzas are
 * sent on it. `max_attempts` bounds the attempts in a row (0: no limit):
 * losing a ready session or failing to connect counts one, and when that
 * count reaches `max_attempts` the next failure is final. A session that
 * becomes ready starts counting from zero. Failures that another attempt cannot
 * fix end the session as before: authentication, certificate
 * verification, a TLS or SASL policy refusal, a resource conflict, a
 * protocol violation. `initial_ms`/`max_ms` 0 keep the defaults (1000 and
 * 60000). */
epode_err epode_config_set_reconnect(epode_config *cfg, int enable, uint32_t initial_ms,
                                     uint32_t max_ms, unsigned max_attempts);
/* Messages at `level` and below reach `fn`. Default: no logging. */
epode_err epode_config_set_log(epode_config *cfg, epode_log_fn fn, void *ud,
                               epode_log_level level);
/* Replaces the random source (OpenSSL's RAND_bytes by default). Tests use it
 * to make SCRAM nonces and stanza ids reproducible. */
epode_err epode_config_set_random(epode_config *cfg, epode_random_fn fn, void *ud);

const epode_mem *epode_config_mem(const epode_config *cfg);

#ifdef __cplusplus
}
#endif
#endif
