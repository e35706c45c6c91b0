/* custom_mechanism — teaching epode a SASL mechanism of your own.
 *
 *   EPODE_PASSWORD=secret custom_mechanism --server 127.0.0.1:5222 \
 *       [--allow-plaintext] [--cafile ca.pem] JID
 *
 * X-FOO is a joke mechanism (never use it for real): the client says
 * "foo:" + password, the server challenges "bar?", the client answers
 * "baz", and the server proves itself by sending "ok" with <success/>.
 * What it shows:
 *  - a mechanism is a versioned struct of pure functions
 *    (include/epode/sys/sasl.h): no sockets, no XML, no base64;
 *  - it reads credentials through the exchange context and writes raw bytes;
 *  - it is registered with one configuration (never process-wide) and
 *    competes by priority with the built-ins; the allow-list can pin it;
 *  - its own error text reaches the app through epode_conn_failure().
 *
 * Exits 0 once the session is ready (then closes cleanly), 1 on failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <epode/epode.h>
#include <epode/sys/sasl.h>

/* ------------------------------------------------------------ the mechanism */

enum foo_step { FOO_SENT_HELLO, FOO_SENT_BAZ };

typedef struct foo_state {
  enum foo_step step;
} foo_state;

static epode_err foo_start(epode_sasl_ctx *ctx, void **state, epode_sasl_out *out) {
  const char *pw = epode_sasl_ctx_password(ctx);
  if (!pw) {
    epode_sasl_ctx_set_error(ctx, "X-FOO needs a password");
    return EPODE_ERR_AUTH;
  }
  foo_state *st = calloc(1, sizeof *st);
  if (!st) return EPODE_ERR_NOMEM;
  *state = st;
  epode_err e = epode_sasl_out_append(out, "foo:", 4);
  if (!e) e = epode_sasl_out_append(out, pw, strlen(pw));
  return e;
}

static epode_err foo_step(epode_sasl_ctx *ctx, void *state, const unsigned char *in, size_t len,
                          epode_sasl_out *out) {
  foo_state *st = state;
  if (st->step != FOO_SENT_HELLO || len != 4 || memcmp(in, "bar?", 4) != 0) {
    epode_sasl_ctx_set_error(ctx, "X-FOO expected exactly one challenge, \"bar?\"");
    return EPODE_ERR_SASL_PROTOCOL;
  }
  st->step = FOO_SENT_BAZ;
  return epode_sasl_out_append(out, "baz", 3);
}

static epode_err foo_success(epode_sasl_ctx *ctx, void *state, const unsigned char *in,
                             size_t len) {
  foo_state *st = state;
  if (st->step != FOO_SENT_BAZ || len != 2 || memcmp(in, "ok", 2) != 0) {
    epode_sasl_ctx_set_error(ctx, "the server did not answer \"ok\": it is not who it claims");
    return EPODE_ERR_SASL_SIGNATURE;
  }
  return EPODE_OK;
}

static void foo_free(epode_sasl_ctx *ctx, void *state) { free(state); }

static const epode_sasl_mechanism x_foo = {
    EPODE_SASL_MECHANISM_VERSION,
    "X-FOO",
    70, /* above every built-in: chosen whenever the server offers it */
    EPODE_SASL_NEEDS_PASSWORD | EPODE_SASL_NEEDS_TLS | EPODE_SASL_SENDS_SECRET,
    1, /* client speaks first */
    foo_start,
    foo_step,
    foo_success,
    foo_free,
    NULL,
};

/* ------------------------------------------------------------ the program */

typedef struct app {
  epode_loop *loop;
  epode_conn *conn;
  int ready;
} app;

static void on_event(const epode_event *ev, void *ud) {
  app *a = ud;
  if (ev->type == EPODE_EV_READY) {
    a->ready = 1;
    printf("authenticated with X-FOO, bound as %s\n", ev->jid);
    epode_conn_close(a->conn);
  } else if (ev->type == EPODE_EV_CLOSED) {
    epode_loop_stop(a->loop);
  }
}

static int usage(void) {
  fprintf(stderr, "usage: EPODE_PASSWORD=… custom_mechanism --server HOST:PORT "
                  "[--allow-plaintext] [--cafile CA] JID\n");
  return 2;
}

int main(int argc, char **argv) {
  const char *server = NULL, *cafile = NULL, *jid = NULL;
  int plaintext = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--server") && i + 1 < argc)
      server = argv[++i];
    else if (!strcmp(argv[i], "--cafile") && i + 1 < argc)
      cafile = argv[++i];
    else if (!strcmp(argv[i], "--allow-plaintext"))
      plaintext = 1;
    else if (argv[i][0] != '-' && !jid)
      jid = argv[i];
    else
      return usage();
  }
  const char *password = getenv("EPODE_PASSWORD");
  if (!server || !jid || !password) return usage();
  char host[256];
  const char *colon = strrchr(server, ':');
  if (!colon || (size_t)(colon - server) >= sizeof host) return usage();
  memcpy(host, server, (size_t)(colon - server));
  host[colon - server] = '\0';

  epode_config *cfg;
  epode_err e = epode_config_new(&cfg, NULL);
  if (!e) e = epode_config_set_jid(cfg, jid);
  if (!e) e = epode_config_set_password(cfg, password);
  if (!e) e = epode_config_set_server(cfg, host, (uint16_t)atoi(colon + 1));
  if (!e && cafile) e = epode_config_set_cafile(cfg, cafile);
  if (!e && plaintext) e = epode_config_set_flags(cfg, EPODE_CFG_ALLOW_PLAINTEXT);
  /* The registration: this configuration (and every connection made from
   * it) now knows X-FOO. */
  if (!e) e = epode_config_add_mechanism(cfg, &x_foo);
  if (e) {
    fprintf(stderr, "custom_mechanism: configuration: %s\n", epode_strerror(e));
    epode_config_free(cfg);
    return 1;
  }

  app a = {0};
  e = epode_loop_new(&a.loop, NULL);
  if (!e) e = epode_conn_new(&a.conn, cfg);
  epode_config_free(cfg); /* the connection keeps its own copy */
  if (!e) {
    epode_conn_set_event_cb(a.conn, on_event, &a);
    e = epode_loop_add_conn(a.loop, a.conn);
  }
  if (!e) e = epode_conn_connect(a.conn);
  if (!e) e = epode_loop_run(a.loop, EPODE_RUN_DEFAULT);

  int rc = 0;
  const epode_failure *f = a.conn ? epode_conn_failure(a.conn) : NULL;
  if (e || !a.ready || (f && f->err)) {
    fprintf(stderr, "custom_mechanism: %s: %s%s%s%s%s\n",
                    epode_strerror(f && f->err ? f->err : e), f ? f->detail : "",
                    f && f->mechanism ? " [mechanism " : "", f && f->mechanism ? f->mechanism : "",
                    f && f->mechanism ? "]" : "", "");
    rc = 1;
  }
  if (a.conn) epode_loop_remove_conn(a.loop, a.conn);
  epode_conn_free(a.conn);
  epode_loop_free(a.loop);
  return rc;
}
