/* XEP-0156 discovery of a domain's WebSocket or BOSH endpoint (L2):
 * https://DOMAIN/.well-known/host-meta (XRD), then host-meta.json if that
 * gave nothing, fetched with libcurl's multi interface through the owner's
 * loop (fd + timer callbacks, like epode_conn), never blocking.
 *
 * Threads: Debian's libcurl resolves names in a thread of its own
 * (CURL_VERSION_ASYNCHDNS without c-ares). So curl never resolves here: each
 * host is resolved first, with epode's c-ares resolver driven through the
 * same fd/timer callbacks (or taken from epode__discover_add_addrs()), and
 * handed to curl as CURLOPT_RESOLVE entries, which curl finds in its DNS
 * cache without starting its resolver. Redirects are followed here, not by
 * curl (at most EPODE__DISCOVER_MAX_REDIRECTS, https only), so each new host
 * is resolved the same way. Proxies from the environment are ignored (a
 * proxy name would be resolved by curl).
 *
 * Trust: certificates are verified (the config's CA file instead of the
 * system store when set; EPODE_CFG_TLS_NO_VERIFY turns it off, as for the
 * XMPP connection), TLS 1.2 or newer. Bodies are capped at
 * EPODE__DISCOVER_MAX_BODY; the whole discovery at the config's
 * EPODE_TIMEOUT_CONNECT.
 *
 * Links: for WebSocket rel="urn:xmpp:alt-connections:websocket" with a
 * wss:// href, for BOSH rel="urn:xmpp:alt-connections:xbosh" with https://.
 * ws:// and http:// links are used only when the config allows plaintext,
 * and only when no secure one is listed. Relative or malformed hrefs are
 * ignored. The first usable link in document order wins.
 *
 * Memory: our structures go through the config's epode_mem; libcurl and
 * expat allocate with their own process-wide allocators. libcurl's global
 * init runs implicitly on first use (thread-safe in this libcurl, which
 * reports CURL_VERSION_THREADSAFE). */
#ifndef EPODE_SRC_NET_DISCOVER_H
#define EPODE_SRC_NET_DISCOVER_H

#include <stddef.h>
#include <stdint.h>

#include "epode/config.h"
#include "epode/conn.h"
#include "epode/error.h"

/* A host-meta document is a few hundred bytes; 64 KiB bounds what a
 * hostile server can make us buffer and parse. */
#define EPODE__DISCOVER_MAX_BODY (64u * 1024u)
#define EPODE__DISCOVER_MAX_REDIRECTS 3u

#define EPODE__REL_WEBSOCKET "urn:xmpp:alt-connections:websocket"
#define EPODE__REL_BOSH "urn:xmpp:alt-connections:xbosh"

typedef struct epode__discover epode__discover;

/* The end: EPODE_OK and the endpoint URL, or an error and a detail naming
 * what failed for each document tried. Both strings belong to `d` and live
 * until it is freed. Called once, from inside epode__discover_process_fd()
 * or _process_timeout(); the callback may free `d`. */
typedef void (*epode__discover_done_fn)(void *ud, epode_err err, const char *url,
                                        const char *detail);

/* A discovery for `want` (EPODE_TRANSPORT_WEBSOCKET or _BOSH) under `cfg`,
 * which must outlive it. `io`/`timer` (both required) follow
 * epode_io_fn/epode_timer_fn: watch these fds, call
 * epode__discover_process_timeout() when the timer says. */
epode_err epode__discover_new(epode__discover **out, const epode_config *cfg, epode_transport want,
                              epode_io_fn io, epode_timer_fn timer, epode__discover_done_fn done,
                              void *ud);
/* Stops everything (the owner hears events 0 for each watched fd and a
 * timer of -1); no callback fires. From inside the done callback it takes
 * effect when the process call returns. */
void epode__discover_free(epode__discover *d);
/* Addresses the owner already knows for host:port ("192.0.2.1,[2001:db8::1]"),
 * used instead of resolving. Before start. */
epode_err epode__discover_add_addrs(epode__discover *d, const char *host, uint16_t port,
                                    const char *addrs);
/* Test hooks, before start: fetch from `base` ("https://localhost:8443")
 * instead of https://DOMAIN; ask these name servers. */
epode_err epode__discover_set_base(epode__discover *d, const char *base);
epode_err epode__discover_set_dns_servers(epode__discover *d, const char *csv);
/* Starts; returns at once. EPODE_ERR_INVAL for a bad domain, EPODE_ERR_STATE
 * if started already; otherwise the done callback fires later, always. */
epode_err epode__discover_start(epode__discover *d, const char *domain);
/* The owner saw `events` (EPODE_IO_*) on `fd`, or its timer fired. */
void epode__discover_process_fd(epode__discover *d, int fd, unsigned events);
void epode__discover_process_timeout(epode__discover *d);
/* 1 once the done callback has fired; then the same result. */
int epode__discover_done(const epode__discover *d);
epode_err epode__discover_result(const epode__discover *d, const char **url, const char **detail);

/* The document parsers, exposed for tests. `doc` is the whole body. On
 * EPODE_OK *url is the chosen href (allocated with `mem`, free with
 * epode__free). Else EPODE_ERR_NOTFOUND (well-formed, no usable link), or
 * EPODE_ERR_PROTOCOL (malformed) / EPODE_ERR_LIMIT (too large, too deep) /
 * EPODE_ERR_XML* (XRD the XML parser refused) / EPODE_ERR_NOMEM, with `why`
 * saying what. */
epode_err epode__discover_parse_xrd(const epode_mem *mem, const char *doc, size_t len,
                                    epode_transport want, int allow_plain, char **url, char *why,
                                    size_t why_size);
epode_err epode__discover_parse_json(const epode_mem *mem, const char *doc, size_t len,
                                     epode_transport want, int allow_plain, char **url, char *why,
                                     size_t why_size);

#endif
