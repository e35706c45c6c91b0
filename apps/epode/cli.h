/* epode (the program) — shared declarations.
 *
 * main.c     command table, dispatch, --help / --version
 * account.c  the account options every command shares, and the epode_config
 * client.c   one connection on epode's loop: signals, timeouts, failures
 * send.c     `epode send`
 * listen.c   `epode listen`
 * text.c     UTF-8 checks, reading stdin, JSON and plain-line escaping
 *
 * Only the public headers (<epode/epode.h>) are used. */
#ifndef EPODE_APP_CLI_H
#define EPODE_APP_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <epode/epode.h>

/* ------------------------------------------------------------ exit codes */
/* The one table of exit codes: code, name, meaning. --help and the man page
 * print the same list. */
#define APP_EXIT_MAP(X)                                                                  \
  X(OK, 0, "success")                                                                    \
  X(ERROR, 1, "any other error (protocol, XML, I/O, limits, the password command), "  \
              "or a message sent but not acknowledged")                                  \
  X(USAGE, 2, "usage error: bad option or argument, invalid JID or message text")       \
  X(CONNECT, 3, "could not connect: DNS failure, connection refused, unreachable")      \
  X(TLS, 4, "TLS failure: handshake, certificate verification, or no TLS offered")     \
  X(AUTH, 5, "authentication failed (the server's SASL condition is printed)")          \
  X(TIMEOUT, 6, "timed out: connecting (--timeout), listen --count not reached, or "   \
                "the server stopped answering (--keepalive)")                             \
  X(STREAM, 7, "the server ended the stream with a stream error (condition printed)")

enum app_exit {
#define APP__EXIT_ENUM(name, code, text) APP_EXIT_##name = code,
  APP_EXIT_MAP(APP__EXIT_ENUM)
#undef APP__EXIT_ENUM
};

void app_print_exit_codes(FILE *f);
/* The exit code for a library error (see the table). */
int app_exit_for_err(epode_err err);

/* ------------------------------------------------------------ messages */
/* "epode CMD: <message>\nTry 'epode CMD --help'." on stderr; returns 2. */
int app_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* "epode: <message>" on stderr. */
void app_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ------------------------------------------------------------ account options */
typedef struct app_account {
  const char *jid;          /* --jid or $EPODE_JID */
  const char *password_cmd; /* --password-cmd */
  const char *server;       /* --server HOST[:PORT] */
  const char *tls;          /* --tls starttls|direct */
  const char *cafile;       /* --cafile */
  const char *resource;     /* --resource */
  int insecure;             /* --insecure */
  int allow_plaintext;      /* --allow-plaintext */
  int verbose;              /* -v count */
  uint32_t timeout_ms;      /* --timeout, 0 if not given */
  int timeout_set;
  const char *mechanisms;   /* --mechanisms LIST */
  int sasl_fallback;        /* --sasl-fallback */
  const char *authzid;      /* --authzid JID */
  const char *cert, *key;   /* --cert FILE, --key FILE */
  const char *pkcs12;       /* --pkcs12 FILE */
  const char *oauth_cmd;    /* --oauth-token-cmd CMD */
  int tls_max;              /* --tls-max: 0x0303 / 0x0304, 0 = default */
  const char *url;          /* --url ws(s)://… or http(s)://… */
  const char *transport;    /* --transport tcp|websocket|bosh */
  /* Reconnection and keepalive (send, listen). */
  int reconnect;            /* --reconnect, or implied by the two below */
  uint32_t rc_initial_ms;   /* --reconnect-delay INITIAL_MS[:MAX_MS]; 0: default */
  uint32_t rc_max_ms;       /*   0: the library's default (or INITIAL_MS if larger) */
  unsigned rc_attempts;     /* --reconnect-attempts N; 0: no limit */
  int keepalive_set;        /* --keepalive IDLE_MS[:TIMEOUT_MS] */
  uint32_t ka_idle_ms, ka_timeout_ms;
} app_account;

/* Long-option ids for the shared options (getopt_long `val`s). Commands use
 * ids from APP_OPT_COMMAND_BASE up. */
enum {
  APP_OPT_JID = 0x100,
  APP_OPT_PASSWORD_CMD,
  APP_OPT_SERVER,
  APP_OPT_TLS,
  APP_OPT_CAFILE,
  APP_OPT_INSECURE,
  APP_OPT_RESOURCE,
  APP_OPT_TIMEOUT,
  APP_OPT_ALLOW_PLAINTEXT,
  APP_OPT_MECHANISMS,
  APP_OPT_SASL_FALLBACK,
  APP_OPT_AUTHZID,
  APP_OPT_CERT,
  APP_OPT_KEY,
  APP_OPT_PKCS12,
  APP_OPT_OAUTH_CMD,
  APP_OPT_TLS_MAX,
  APP_OPT_URL,
  APP_OPT_TRANSPORT,
  APP_OPT_RECONNECT,
  APP_OPT_RECONNECT_DELAY,
  APP_OPT_RECONNECT_ATTEMPTS,
  APP_OPT_KEEPALIVE,
  APP_OPT_HELP,
  APP_OPT_COMMAND_BASE = 0x200
};

struct option;
struct app_command;
/* Builds getopt_long's table: the command's own options followed by the
 * shared ones. Returns a malloc'd array (free()) or NULL on no memory. */
struct option *app_build_longopts(const struct option *own, size_t n_own);
/* Short options shared by every command ("v" and "h"), to append. */
#define APP_SHORTOPTS_SHARED "vh"

/* A command's own option: returns 0 if handled, or an exit code after
 * printing a usage error. */
typedef int (*app_own_option_fn)(int opt, const char *arg, void *ud);
/* Parses argv (argv[0] is the command name) with the command's own options
 * (`own`, `own_short` in getopt syntax without the leading ':') and the
 * shared ones. Long options must be spelt in full (no abbreviations: an
 * abbreviation of --password-cmd must not run a password as a command).
 * Returns 0 with *first_arg the index of the first operand, 2 after a usage
 * error, or -1 when --help was asked for (help already printed). */
int app_parse_options(const struct app_command *cmd, int argc, char **argv,
                      const struct option *own, size_t n_own, const char *own_short,
                      app_account *acct, app_own_option_fn fn, void *ud, int *first_arg);

/* Handles one shared option. Returns 1 if it was one (and was valid), 0 if
 * `opt` is not a shared option, or -1 after printing a usage error. */
int app_account_option(app_account *a, const char *cmd, int opt, const char *arg);
/* Parses a positive number of seconds ("2", "0.5") into milliseconds. */
int app_parse_seconds(const char *s, uint32_t *ms);

/* Builds the config: JID (validated), password (from $EPODE_PASSWORD or the
 * password command; wiped after use), server, TLS policy, timeouts, logging.
 * Returns 0 and *out, or an exit code after printing why. */
int app_account_config(epode_config **out, app_account *a, const char *cmd);

/* --timeout, or the default for connection establishment (30 s). */
uint32_t app_connect_timeout_ms(const app_account *a);
/* The default --keepalive TIMEOUT_MS when only IDLE_MS is given. */
#define APP_KEEPALIVE_TIMEOUT_DEFAULT_MS 30000u

/* The help text for the shared options. */
void app_print_account_help(FILE *f);

/* ------------------------------------------------------------ commands */
typedef struct app_command {
  const char *name;
  const char *summary;     /* one line for `epode --help` */
  const char *usage;       /* after "Usage: epode " */
  const char *description; /* paragraph(s) */
  const char *options;     /* the command's own options, preformatted; may be NULL */
  int (*run)(const struct app_command *cmd, int argc, char **argv);
  int account; /* takes the shared account options */
} app_command;

void app_print_command_help(const app_command *c, FILE *f);

int app_cmd_send(const app_command *cmd, int argc, char **argv);
int app_cmd_listen(const app_command *cmd, int argc, char **argv);

/* ------------------------------------------------------------ the client */
typedef struct app_client app_client;
typedef struct app_client_hooks {
  /* The session is ready for the first time; `jid` is the bound full JID. */
  void (*on_ready)(app_client *cl, const char *jid, void *ud);
  /* SIGINT/SIGTERM arrived (the client then closes with exit code 0 unless
   * the hook set another with app_client_set_exit()). May be NULL. */
  void (*on_signal)(app_client *cl, int signo, void *ud);
  /* --reconnect: the connection is back after a loss — `resumed` 1 when the
   * old stream was resumed (XEP-0198: same full JID, unacknowledged stanzas
   * resent), 0 for a fresh session (EPODE_EV_READY again: the server forgot
   * our presence; handlers are kept). May be NULL. */
  void (*on_restored)(app_client *cl, const char *jid, int resumed, void *ud);
} app_client_hooks;

/* Creates the loop and the connection, installs signal handling (SIGINT,
 * SIGTERM through a signalfd; SIGPIPE ignored) and starts connecting.
 * Without --reconnect, the whole establishment must finish within
 * --timeout (exit 6 otherwise); with it, the program keeps trying (each
 * attempt is bounded by the library's timeouts, set from --timeout).
 * Returns 0 or an exit code after printing why. */
int app_client_start(app_client **out, const char *cmd, const epode_config *cfg,
                     const app_account *acct, const app_client_hooks *hooks, void *ud);
/* Runs the loop until the connection is closed; returns the exit code. */
int app_client_run(app_client *cl);
void app_client_free(app_client *cl);

epode_session *app_client_session(app_client *cl);
epode_loop *app_client_loop(app_client *cl);
/* Sets the exit code if none is set yet (the first non-zero one wins). */
void app_client_set_exit(app_client *cl, int code);
/* Starts a clean close (</stream:stream>, wait for the server's), with
 * `code` as the exit code if none is set yet. */
void app_client_close(app_client *cl, int code);
/* Stops at once, without a goodbye. */
void app_client_abort(app_client *cl, int code);
int app_client_closing(const app_client *cl);
/* The session is ready now (not waiting to reconnect, not closing). */
int app_client_connected(const app_client *cl);
/* --reconnect was given. */
int app_client_reconnecting(const app_client *cl);

/* ------------------------------------------------------------ text */
/* 1 if [s, s+len) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
 * On failure *bad is the offset of the first bad byte. */
int app_utf8_valid(const char *s, size_t len, size_t *bad);
/* Checks a message body: valid UTF-8 and only characters XML 1.0 allows
 * (no NUL or C0 controls other than tab, LF, CR; no U+FFFE/U+FFFF).
 * Returns NULL if fine, else a static description of the problem, with the
 * byte offset in *at. */
const char *app_body_problem(const char *s, size_t len, size_t *at);
/* Reads all of `f` (at most `max` bytes). Returns 0, -1 on I/O error
 * (errno set), -2 if longer than `max`. *out is NUL-terminated; free(). */
int app_read_all(FILE *f, size_t max, char **out, size_t *len);
/* Writes `s` as a JSON string (with the quotes). */
void app_json_string(FILE *f, const char *s);
/* Writes `s` with backslash as "\\", LF as "\n" and CR as "\r". */
void app_plain_escaped(FILE *f, const char *s);

#endif
