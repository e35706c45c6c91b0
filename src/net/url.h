/* URLs of the WebSocket and BOSH endpoints: scheme://host[:port][/path]. */
#ifndef EPODE_SRC_NET_URL_H
#define EPODE_SRC_NET_URL_H

#include <stddef.h>
#include <stdint.h>

#include "epode/error.h"

typedef struct epode__url {
  char scheme[8]; /* ws, wss, http, https */
  int tls;        /* wss, https */
  char host[256]; /* without brackets for IPv6 */
  uint16_t port;  /* explicit or the scheme's default */
  int port_given;
  char path[2048]; /* "/" at least; includes any query */
} epode__url;

/* EPODE_ERR_INVAL with a reason in `why` for anything malformed. */
epode_err epode__url_parse(const char *s, epode__url *out, const char **why);
/* "host" or "host:port" (port only when not the default), IPv6 bracketed:
 * the HTTP Host header. */
void epode__url_host_header(const epode__url *u, char *buf, size_t size);

#endif
