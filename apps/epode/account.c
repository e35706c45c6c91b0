/* The account options every command shares, and turning them into an
 * epode_config. The password never comes from the command line (other users
 * can read it in /proc): it is $EPODE_PASSWORD or the first line a command
 * prints. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "cli.h"

/* Default for connection establishment when --timeout is not given. */
#define DEFAULT_CONNECT_TIMEOUT_MS 30000u
/* A password line longer than this is surely not one. */
#define PASSWORD_MAX 4096

static const struct option shared_longopts[] = {
    {"jid", required_argument, NULL, APP_OPT_JID},
    {"password-cmd", required_argument, NULL, APP_OPT_PASSWORD_CMD},
    {"server", required_argument, NULL, APP_OPT_SERVER},
    {"tls", required_argument, NULL, APP_OPT_TLS},
    {"cafile", required_argument, NULL, APP_OPT_CAFILE},
    {"insecure", no_argument, NULL, APP_OPT_INSECURE},
    {"resource", required_argument, NULL, APP_OPT_RESOURCE},
    {"timeout", required_argument, NULL, APP_OPT_TIMEOUT},
    {"allow-plaintext", no_argument, NULL, APP_OPT_ALLOW_PLAINTEXT},
    {"mechanisms", required_argument, NULL, APP_OPT_MECHANISMS},
    {"sasl-fallback", no_argument, NULL, APP_OPT_SASL_FALLBACK},
    {"authzid", required_argument, NULL, APP_OPT_AUTHZID},
    {"cert", required_argument, NULL, APP_OPT_CERT},
    {"key", required_argument, NULL, APP_OPT_KEY},
    {"pkcs12", required_argument, NULL, APP_OPT_PKCS12},
    {"oauth-token-cmd", required_argument, NULL, APP_OPT_OAUTH_CMD},
    {"tls-max", required_argument, NULL, APP_OPT_TLS_MAX},
    {"url", required_argument, NULL, APP_OPT_URL},
    {"transport", required_argument, NULL, APP_OPT_TRANSPORT},
    {"reconnect", no_argument, NULL, APP_OPT_RECONNECT},
    {"reconnect-delay", required_argument, NULL, APP_OPT_RECONNECT_DELAY},
    {"reconnect-attempts", required_argument, NULL, APP_OPT_RECONNECT_ATTEMPTS},
    {"keepalive", required_argument, NULL, APP_OPT_KEEPALIVE},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
};

struct option *app_build_longopts(const struct option *own, size_t n_own) {
  size_t n_shared = sizeof shared_longopts / sizeof shared_longopts[0];
  struct option *all = calloc(n_own + n_shared + 1, sizeof *all);
  if (!all) return NULL;
  if (n_own) memcpy(all, own, n_own * sizeof *own);
  memcpy(all + n_own, shared_longopts, sizeof shared_longopts);
  return all; /* calloc left the terminating all-zero entry */
}

void app_print_account_help(FILE *f) {
  fputs("Account options (every command):\n"
        "  --jid JID             the account (default: $EPODE_JID); a resource in it\n"
        "                        is requested at bind\n"
        "  --password-cmd CMD    run CMD with /bin/sh -c and use the first line it\n"
        "                        prints as the password (default: $EPODE_PASSWORD).\n"
        "                        There is no option that takes the password itself.\n"
        "  --server HOST[:PORT]  connect here instead of looking up the JID's domain\n"
        "                        in DNS (IPv6: [::1]:5222); the certificate is still\n"
        "                        checked against the JID's domain\n"
        "  --tls starttls|direct STARTTLS (default port 5222) or direct TLS (XEP-0368,\n"
        "                        default port 5223); default: what DNS SRV says\n"
        "  --cafile FILE         trust the CAs in this PEM file instead of the system's\n"
        "  --insecure            do NOT verify the server's certificate (testing only;\n"
        "                        a warning is printed every time)\n"
        "  --allow-plaintext     allow an unencrypted stream: no STARTTLS, ws://, http://\n"
        "                        (the password then crosses the network readable\n"
        "                        by anyone)\n"
        "  --url URL             connect over WebSocket (wss://…, ws://…) or BOSH\n"
        "                        (https://…, http://…) at this URL instead of TCP\n"
        "  --transport T         tcp, websocket or bosh; websocket and bosh without\n"
        "                        --url find the URL from the domain (XEP-0156)\n"
        "  --tls-max 1.2|1.3     newest TLS version to use (1.2 gives SCRAM -PLUS\n"
        "                        tls-unique channel binding on servers that bind only\n"
        "                        on TLS 1.2)\n"
        "  --mechanisms LIST     SASL mechanisms allowed, comma-separated (default: any;\n"
        "                        the strongest offered wins: EXTERNAL, SCRAM-*-PLUS,\n"
        "                        SCRAM-*, OAUTHBEARER, DIGEST-MD5, PLAIN, ANONYMOUS)\n"
        "  --sasl-fallback       after the server rejects a mechanism, try the next one\n"
        "                        (default: fail at once and say why)\n"
        "  --cert FILE           TLS client certificate (PEM) for SASL EXTERNAL: log in\n"
        "                        with no password (XEP-0178)\n"
        "  --key FILE            its private key (PEM; default: in the --cert file)\n"
        "  --pkcs12 FILE         certificate and key from a PKCS#12 file instead (its\n"
        "                        password from $EPODE_PKCS12_PASSWORD)\n"
        "  --authzid JID         authorization identity to request\n"
        "  --oauth-token-cmd CMD run CMD and use the first line as an OAuth 2.0 bearer\n"
        "                        token for OAUTHBEARER (default: $EPODE_OAUTH_TOKEN)\n"
        "  --resource R          ask the server for this resource\n"
        "  --timeout S           seconds allowed for connecting, TLS, authentication\n"
        "                        and binding (default 30; with --reconnect, for each\n"
        "                        attempt); for listen also how long to listen\n"
        "  -v, --verbose         show the XML traffic on stderr (-> sent, <- received;\n"
        "                        SASL payloads are redacted); -vv adds debug logs\n"
        "  -h, --help            show this help\n",
        f);
  fputs("\n"
        "Reconnection options (every command):\n"
        "  --reconnect           when the connection is lost (or cannot be made), keep\n"
        "                        trying with growing delays (1 s doubling to 60 s, with\n"
        "                        jitter) instead of exiting; the stream is resumed\n"
        "                        (XEP-0198) where the server allows, else a new session\n"
        "                        starts; unacknowledged messages are sent again.\n"
        "                        --timeout then bounds each attempt, not the wait for\n"
        "                        the first session\n"
        "  --reconnect-delay INITIAL_MS[:MAX_MS]\n"
        "                        first delay, doubled on each failure up to MAX_MS\n"
        "                        (default 1000:60000); implies --reconnect\n"
        "  --reconnect-attempts N\n"
        "                        give up when N reconnection attempts in a row have\n"
        "                        failed (default 0: never); implies --reconnect\n"
        "  --keepalive IDLE_MS[:TIMEOUT_MS]\n"
        "                        after IDLE_MS without data from the server ask it for\n"
        "                        a sign of life; none within TIMEOUT_MS (default 30000)\n"
        "                        means the connection is dead (default 90000:30000;\n"
        "                        0 turns it off)\n",
        f);
}

uint32_t app_connect_timeout_ms(const app_account *a) {
  return a->timeout_set ? a->timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
}

int app_parse_seconds(const char *s, uint32_t *ms) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v > 0) || v > 86400.0 * 365) return -1;
  double m = v * 1000.0 + 0.5;
  *ms = m < 1 ? 1 : (uint32_t)m;
  return 0;
}

/* A whole number of milliseconds, 0..max. */
static int parse_ms(const char *s, size_t len, uint32_t max, uint32_t *out) {
  if (len == 0 || len > 10) return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  if (v > max) return -1;
  *out = (uint32_t)v;
  return 0;
}

/* "A" or "A:B", milliseconds each; *b untouched without ":B". */
static int parse_ms_pair(const char *s, uint32_t *a, uint32_t *b, int *have_b) {
  const char *colon = strchr(s, ':');
  size_t alen = colon ? (size_t)(colon - s) : strlen(s);
  /* A day at most: longer is surely a unit mistake (these are ms). */
  const uint32_t max = 86400000u;
  if (parse_ms(s, alen, max, a)) return -1;
  *have_b = 0;
  if (colon) {
    if (parse_ms(colon + 1, strlen(colon + 1), max, b)) return -1;
    *have_b = 1;
  }
  return 0;
}

int app_account_option(app_account *a, const char *cmd, int opt, const char *arg) {
  switch (opt) {
  case APP_OPT_JID: a->jid = arg; return 1;
  case APP_OPT_PASSWORD_CMD: a->password_cmd = arg; return 1;
  case APP_OPT_SERVER: a->server = arg; return 1;
  case APP_OPT_TLS:
    if (strcmp(arg, "starttls") && strcmp(arg, "direct")) {
      app_usage_error(cmd, "--tls must be 'starttls' or 'direct', not '%s'", arg);
      return -1;
    }
    a->tls = arg;
    return 1;
  case APP_OPT_CAFILE: a->cafile = arg; return 1;
  case APP_OPT_INSECURE: a->insecure = 1; return 1;
  case APP_OPT_RESOURCE:
    if (!*arg) {
      app_usage_error(cmd, "--resource must not be empty");
      return -1;
    }
    a->resource = arg;
    return 1;
  case APP_OPT_TIMEOUT:
    if (app_parse_seconds(arg, &a->timeout_ms)) {
      app_usage_error(cmd, "--timeout wants a positive number of seconds, not '%s'", arg);
      return -1;
    }
    a->timeout_set = 1;
    return 1;
  case APP_OPT_ALLOW_PLAINTEXT: a->allow_plaintext = 1; return 1;
  case APP_OPT_MECHANISMS: a->mechanisms = arg; return 1;
  case APP_OPT_SASL_FALLBACK: a->sasl_fallback = 1; return 1;
  case APP_OPT_AUTHZID: a->authzid = arg; return 1;
  case APP_OPT_CERT: a->cert = arg; return 1;
  case APP_OPT_KEY: a->key = arg; return 1;
  case APP_OPT_PKCS12: a->pkcs12 = arg; return 1;
  case APP_OPT_OAUTH_CMD: a->oauth_cmd = arg; return 1;
  case APP_OPT_URL: a->url = arg; return 1;
  case APP_OPT_TRANSPORT:
    if (strcmp(arg, "tcp") && strcmp(arg, "websocket") && strcmp(arg, "bosh")) {
      app_usage_error(cmd, "--transport must be tcp, websocket or bosh, not '%s'", arg);
      return -1;
    }
    a->transport = arg;
    return 1;
  case APP_OPT_TLS_MAX:
    if (!strcmp(arg, "1.2"))
      a->tls_max = 0x0303;
    else if (!strcmp(arg, "1.3"))
      a->tls_max = 0x0304;
    else {
      app_usage_error(cmd, "--tls-max must be '1.2' or '1.3', not '%s'", arg);
      return -1;
    }
    return 1;
  case APP_OPT_RECONNECT: a->reconnect = 1; return 1;
  case APP_OPT_RECONNECT_DELAY: {
    uint32_t ini = 0, max = 0;
    int have_max = 0;
    if (parse_ms_pair(arg, &ini, &max, &have_max) || ini == 0 || (have_max && max < ini)) {
      app_usage_error(cmd, "--reconnect-delay wants INITIAL_MS[:MAX_MS], milliseconds, "
                           "0 < INITIAL_MS <= MAX_MS, not '%s'", arg);
      return -1;
    }
    a->reconnect = 1;
    a->rc_initial_ms = ini;
    a->rc_max_ms = have_max ? max : 0;
    return 1;
  }
  case APP_OPT_RECONNECT_ATTEMPTS: {
    char *end;
    errno = 0;
    unsigned long v = strtoul(arg, &end, 10);
    if (errno || end == arg || *end || arg[0] == '-' || v > 1000000000ul) {
      app_usage_error(cmd, "--reconnect-attempts wants a whole number (0: no limit), not '%s'",
                      arg);
      return -1;
    }
    a->reconnect = 1;
    a->rc_attempts = (unsigned)v;
    return 1;
  }
  case APP_OPT_KEEPALIVE: {
    uint32_t idle = 0, to = APP_KEEPALIVE_TIMEOUT_DEFAULT_MS;
    int have_to = 0;
    if (parse_ms_pair(arg, &idle, &to, &have_to) || (idle && to == 0)) {
      app_usage_error(cmd, "--keepalive wants IDLE_MS[:TIMEOUT_MS], milliseconds (IDLE_MS 0 "
                           "turns keepalive off; TIMEOUT_MS > 0), not '%s'", arg);
      return -1;
    }
    a->keepalive_set = 1;
    a->ka_idle_ms = idle;
    a->ka_timeout_ms = idle ? to : 0;
    return 1;
  }
  case 'v': a->verbose++; return 1;
  default: return 0;
  }
}

/* HOST, HOST:PORT, [V6], [V6]:PORT, or a bare IPv6 address. */
static int parse_server(const char *s, char *host, size_t host_size, uint16_t *port) {
  const char *h = s, *p = NULL;
  size_t hlen;
  if (*s == '[') {
    const char *close = strchr(s, ']');
    if (!close || close == s + 1) return -1;
    h = s + 1;
    hlen = (size_t)(close - h);
    if (close[1] == ':') p = close + 2;
    else if (close[1]) return -1;
  } else {
    const char *colon = strchr(s, ':');
    if (colon && strchr(colon + 1, ':')) {
      hlen = strlen(s); /* several colons: a bare IPv6 address, no port */
    } else if (colon) {
      hlen = (size_t)(colon - s);
      p = colon + 1;
    } else {
      hlen = strlen(s);
    }
  }
  if (hlen == 0 || hlen >= host_size) return -1;
  memcpy(host, h, hlen);
  host[hlen] = '\0';
  *port = 0;
  if (p) {
    char *end;
    errno = 0;
    long v = strtol(p, &end, 10);
    if (errno || end == p || *end || v < 1 || v > 65535) return -1;
    *port = (uint16_t)v;
  }
  return 0;
}

/* Runs the password command; returns a malloc'd password or NULL after
 * printing why. The whole output is read (so the command never dies of
 * SIGPIPE) but only the first line is kept. */
static char *password_from_cmd(const char *cmd_line) {
  fflush(NULL);
  FILE *p = popen(cmd_line, "r");
  if (!p) {
    app_err("cannot run the password command: %s", strerror(errno));
    return NULL;
  }
  char *out = NULL;
  size_t len = 0;
  int rd = app_read_all(p, 1u << 20, &out, &len);
  int st = pclose(p);
  if (rd != 0) {
    app_err("cannot read the password command's output: %s",
            rd == -2 ? "more than 1 MiB" : strerror(errno));
    return NULL;
  }
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    if (st != -1 && WIFEXITED(st))
      app_err("the password command failed (exit status %d): %s", WEXITSTATUS(st), cmd_line);
    else if (st != -1 && WIFSIGNALED(st))
      app_err("the password command was killed by signal %d: %s", WTERMSIG(st), cmd_line);
    else
      app_err("the password command failed: %s", cmd_line);
    explicit_bzero(out, len);
    free(out);
    return NULL;
  }
  size_t n = strcspn(out, "\n");
  explicit_bzero(out + n, len - n);
  out[n] = '\0';
  if (n > 0 && out[n - 1] == '\r') out[--n] = '\0';
  if (n == 0) {
    app_err("the password command printed an empty first line: %s", cmd_line);
    free(out);
    return NULL;
  }
  if (n > PASSWORD_MAX) {
    app_err("the password command's first line is longer than %d bytes", PASSWORD_MAX);
    explicit_bzero(out, n);
    free(out);
    return NULL;
  }
  return out;
}

/* Library log lines: XML traffic as "-> …" / "<- …", the rest as
 * "epode: [area] …". Debug messages only with -vv. */
static void log_to_stderr(void *ud, epode_log_level level, const char *area, const char *msg) {
  int verbose = *(const int *)ud;
  if (level == EPODE_LOG_DEBUG && verbose < 2) return;
  if (area && !strcmp(area, "xml-out"))
    fprintf(stderr, "-> %s\n", msg);
  else if (area && !strcmp(area, "xml-in"))
    fprintf(stderr, "<- %s\n", msg);
  else
    fprintf(stderr, "epode: [%s] %s\n", area ? area : "?", msg);
}

/* The logger's `ud`: the verbosity must outlive the config (it is copied
 * into the connection), so it lives here. */
static int log_verbosity;

int app_account_config(epode_config **out, app_account *a, const char *cmd) {
  *out = NULL;
  if (!a->jid) a->jid = getenv("EPODE_JID");
  if (!a->jid || !*a->jid)
    return app_usage_error(cmd, "no account: use --jid JID or set EPODE_JID");
  if (epode_jid_validate(a->jid) != EPODE_OK)
    return app_usage_error(cmd, "invalid account JID '%s'", a->jid);

  char host[256];
  uint16_t port = 0;
  if (a->server && parse_server(a->server, host, sizeof host, &port))
    return app_usage_error(cmd, "--server wants HOST, HOST:PORT or [IPv6]:PORT, not '%s'",
                           a->server);

  if (a->key && !a->cert) return app_usage_error(cmd, "--key needs --cert");
  if (a->cert && a->pkcs12) return app_usage_error(cmd, "use --cert or --pkcs12, not both");

  /* A password is needed unless another credential can do without one: a
   * client certificate (EXTERNAL), a token (OAUTHBEARER), or a JID with no
   * username (ANONYMOUS). */
  char *oauth = NULL;
  if (a->oauth_cmd) {
    oauth = password_from_cmd(a->oauth_cmd);
    if (!oauth) return APP_EXIT_ERROR;
  } else if (getenv("EPODE_OAUTH_TOKEN") && *getenv("EPODE_OAUTH_TOKEN")) {
    oauth = strdup(getenv("EPODE_OAUTH_TOKEN"));
  }
  int other_creds = a->cert || a->pkcs12 || oauth || !strchr(a->jid, '@');
  char *password = NULL;
  if (a->password_cmd) {
    password = password_from_cmd(a->password_cmd);
    if (!password) {
      free(oauth);
      return APP_EXIT_ERROR;
    }
  } else {
    const char *env = getenv("EPODE_PASSWORD");
    if ((!env || !*env) && !other_creds)
      return app_usage_error(cmd, "no password: set EPODE_PASSWORD or use --password-cmd CMD "
                                  "(or log in with --cert/--pkcs12 or an OAuth token)");
    if (env && *env && !(password = strdup(env))) {
      free(oauth);
      app_err("out of memory");
      return APP_EXIT_ERROR;
    }
  }

  epode_config *cfg = NULL;
  epode_err err = epode_config_new(&cfg, NULL);
  const char *what = "creating the configuration";
  if (!err) what = "the JID", err = epode_config_set_jid(cfg, a->jid);
  if (!err && password) what = "the password", err = epode_config_set_password(cfg, password);
  if (password) explicit_bzero(password, strlen(password));
  free(password);
  if (!err && oauth) what = "the OAuth token", err = epode_config_set_oauth_token(cfg, oauth);
  if (oauth) explicit_bzero(oauth, strlen(oauth));
  free(oauth);
  if (!err && a->mechanisms)
    what = "--mechanisms", err = epode_config_set_mechanisms(cfg, a->mechanisms);
  if (!err && a->sasl_fallback) what = "--sasl-fallback", err = epode_config_set_sasl_fallback(cfg, 1);
  if (!err && a->authzid) what = "--authzid", err = epode_config_set_authzid(cfg, a->authzid);
  if (!err && a->cert) what = "--cert", err = epode_config_set_client_cert(cfg, a->cert, a->key);
  if (!err && a->pkcs12)
    what = "--pkcs12",
    err = epode_config_set_client_pkcs12(cfg, a->pkcs12, getenv("EPODE_PKCS12_PASSWORD"));
  if (!err && a->tls_max) what = "--tls-max", err = epode_config_set_tls_versions(cfg, 0, a->tls_max);
  if (!err && a->url) what = "--url", err = epode_config_set_url(cfg, a->url);
  if (!err && a->transport) {
    epode_transport t = !strcmp(a->transport, "websocket") ? EPODE_TRANSPORT_WEBSOCKET
                        : !strcmp(a->transport, "bosh")    ? EPODE_TRANSPORT_BOSH
                                                           : EPODE_TRANSPORT_TCP;
    what = "--transport (it must agree with --url)";
    err = epode_config_set_transport(cfg, t);
    if (err == EPODE_ERR_STATE) err = EPODE_ERR_INVAL;
  }
  if (!err && a->resource) what = "--resource", err = epode_config_set_resource(cfg, a->resource);
  if (!err && a->server) what = "--server", err = epode_config_set_server(cfg, host, port);
  if (!err && a->tls)
    what = "--tls", err = epode_config_set_tls_mode(cfg, strcmp(a->tls, "direct")
                                                               ? EPODE_TLS_STARTTLS
                                                               : EPODE_TLS_DIRECT);
  if (!err && a->cafile) what = "--cafile", err = epode_config_set_cafile(cfg, a->cafile);
  if (!err) {
    unsigned flags = epode_config_flags(cfg);
    if (a->insecure) flags |= EPODE_CFG_TLS_NO_VERIFY;
    if (a->allow_plaintext) flags |= EPODE_CFG_ALLOW_PLAINTEXT;
    what = "the TLS flags", err = epode_config_set_flags(cfg, flags);
  }
  uint32_t t = app_connect_timeout_ms(a);
  if (!err) what = "the timeouts", err = epode_config_set_timeout(cfg, EPODE_TIMEOUT_CONNECT, t);
  if (!err) err = epode_config_set_timeout(cfg, EPODE_TIMEOUT_TLS, t);
  if (!err) err = epode_config_set_timeout(cfg, EPODE_TIMEOUT_NEGOTIATION, t);
  if (!err && a->keepalive_set)
    what = "--keepalive", err = epode_config_set_keepalive(cfg, a->ka_idle_ms, a->ka_timeout_ms);
  if (!err && a->reconnect) {
    /* Only INITIAL_MS given: the library's maximum, unless INITIAL_MS is
     * already above it. */
    uint32_t max = a->rc_max_ms;
    if (!max && a->rc_initial_ms > 60000u) max = a->rc_initial_ms;
    what = "--reconnect";
    err = epode_config_set_reconnect(cfg, 1, a->rc_initial_ms, max, a->rc_attempts);
  }
  if (!err && a->verbose) {
    log_verbosity = a->verbose;
    what = "logging";
    err = epode_config_set_log(cfg, log_to_stderr, &log_verbosity, EPODE_LOG_TRAFFIC);
  }
  if (err) {
    epode_config_free(cfg);
    if (err == EPODE_ERR_JID || err == EPODE_ERR_INVAL)
      return app_usage_error(cmd, "%s: %s", what, epode_strerror(err));
    app_err("setting %s: %s", what, epode_strerror(err));
    return APP_EXIT_ERROR;
  }
  if (a->insecure)
    fprintf(stderr, "epode: WARNING: --insecure: the server's certificate is not verified; "
                    "anyone on the network path can impersonate the server and read the "
                    "password and messages\n");
  *out = cfg;
  return 0;
}
