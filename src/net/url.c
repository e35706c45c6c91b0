#include "net/url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

epode_err epode__url_parse(const char *s, epode__url *u, const char **why) {
  static const struct {
    const char *name;
    int tls;
    uint16_t port;
  } schemes[] = {{"ws", 0, 80}, {"wss", 1, 443}, {"http", 0, 80}, {"https", 1, 443}};
  const char *dummy;
  if (!why) why = &dummy;
  memset(u, 0, sizeof *u);
  const char *sep = s ? strstr(s, "://") : NULL;
  if (!sep) {
    *why = "no scheme (expected ws://, wss://, http:// or https://)";
    return EPODE_ERR_INVAL;
  }
  size_t sl = (size_t)(sep - s);
  size_t i;
  for (i = 0; i < sizeof schemes / sizeof *schemes; i++)
    if (strlen(schemes[i].name) == sl && !strncmp(s, schemes[i].name, sl)) break;
  if (i == sizeof schemes / sizeof *schemes) {
    *why = "unsupported scheme (expected ws://, wss://, http:// or https://)";
    return EPODE_ERR_INVAL;
  }
  memcpy(u->scheme, s, sl);
  u->tls = schemes[i].tls;
  u->port = schemes[i].port;
  const char *h = sep + 3, *end;
  if (*h == '[') {
    end = strchr(h, ']');
    if (!end || end == h + 1 || (size_t)(end - h - 1) >= sizeof u->host) {
      *why = "malformed IPv6 address";
      return EPODE_ERR_INVAL;
    }
    memcpy(u->host, h + 1, (size_t)(end - h - 1));
    end++;
  } else {
    end = h + strcspn(h, ":/?#");
    if (end == h || (size_t)(end - h) >= sizeof u->host) {
      *why = "missing or overlong host";
      return EPODE_ERR_INVAL;
    }
    memcpy(u->host, h, (size_t)(end - h));
  }
  for (const char *p = u->host; *p; p++)
    if ((unsigned char)*p <= ' ' || *p == '@' || *p == '/' || *p == '\\') {
      *why = "invalid character in the host";
      return EPODE_ERR_INVAL;
    }
  if (*end == ':') {
    char *pe;
    long port = strtol(end + 1, &pe, 10);
    if (pe == end + 1 || port < 1 || port > 65535 || (*pe && *pe != '/' && *pe != '?')) {
      *why = "invalid port";
      return EPODE_ERR_INVAL;
    }
    u->port = (uint16_t)port;
    u->port_given = 1;
    end = pe;
  }
  if (*end == '#') end += strlen(end); /* a fragment is not sent */
  const char *path = *end ? end : "/";
  size_t pl = strcspn(path, "#");
  if (pl >= sizeof u->path) {
    *why = "path too long";
    return EPODE_ERR_INVAL;
  }
  if (path[0] == '?') { /* "http://h?q" means "/?q" */
    u->path[0] = '/';
    if (pl + 1 >= sizeof u->path) {
      *why = "path too long";
      return EPODE_ERR_INVAL;
    }
    memcpy(u->path + 1, path, pl);
  } else {
    memcpy(u->path, path, pl);
  }
  for (const char *p = u->path; *p; p++)
    if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f) {
      *why = "invalid character in the path (percent-encode it)";
      return EPODE_ERR_INVAL;
    }
  return EPODE_OK;
}

void epode__url_host_header(const epode__url *u, char *buf, size_t size) {
  int v6 = strchr(u->host, ':') != NULL;
  int dflt = u->port == (u->tls ? 443 : 80);
  if (dflt)
    snprintf(buf, size, v6 ? "[%s]" : "%s", u->host);
  else
    snprintf(buf, size, v6 ? "[%s]:%u" : "%s:%u", u->host, (unsigned)u->port);
}
