/* epode — send and receive XMPP messages from the command line.
 *
 * One command table drives dispatch and help. Each command parses its own
 * options plus the shared account options (account.c) and runs one
 * connection (client.c). */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int cmd_help(const app_command *cmd, int argc, char **argv);
static int cmd_version(const app_command *cmd, int argc, char **argv);

static const app_command commands[] = {
    {"send", "send a message to one or more JIDs",
     "send [OPTIONS] [-m TEXT] JID [JID...]",
     "Connects, waits until the session is ready, sends the message to every JID\n"
     "given, closes the stream cleanly and exits 0. Without -m the body is all of\n"
     "standard input, sent exactly as read (a final newline included); it must be\n"
     "UTF-8 text that XML can carry (no NUL or control characters other than tab,\n"
     "LF and CR) and at most 1 MiB, else the exit status is 2. The exit status is\n"
     "0 only if every message was acknowledged by the server (XEP-0198) or\n"
     "confirmed by the clean close; otherwise (1) a summary on stderr says how many\n"
     "were not - \"epode: N messages: A acknowledged, F not acknowledged\" (with -v\n"
     "always) - and, with --each-line, \"epode: not acknowledged: line K\" for each:\n"
     "their delivery is unknown. With --reconnect, messages are sent again after a\n"
     "lost connection, and send waits for every acknowledgement before closing.",
     "  -m, --message TEXT    the message body (default: read standard input)\n"
     "  -t, --type TYPE       chat (default), normal or headline\n"
     "  --each-line           send every line of standard input as its own message,\n"
     "                        as it is read, over one session (logs, scripts);\n"
     "                        input is read only as fast as the server takes it\n",
     app_cmd_send, 1},
    {"listen", "print incoming messages",
     "listen [OPTIONS] [--count N] [--timeout S] [--json]",
     "Connects, sends initial presence (so messages to the bare JID arrive),\n"
     "prints \"epode: listening as FULLJID\" on stderr once ready, then prints every\n"
     "incoming message that has a body on stdout, one line each, flushed at once:\n"
     "  plain:  FROM: BODY   with a backslash in BODY written as \\\\, a newline as \\n\n"
     "                       and a carriage return as \\r (so one message = one line)\n"
     "  --json: {\"from\":…,\"to\":…,\"type\":…,\"id\":…,\"body\":…}   (absent attributes\n"
     "          are null; strings are JSON-escaped, UTF-8 passes through)\n"
     "Ends after --count N messages (exit 0), at --timeout S (exit 0, or 6 if\n"
     "--count was given and not reached), or on SIGINT/SIGTERM (clean close, exit 0).\n"
     "With --reconnect it survives lost connections; when the stream cannot be\n"
     "resumed it sends its presence again on the new session and prints\n"
     "\"epode: listening as FULLJID (new session)\".",
     "  -n, --count N         stop after N messages\n"
     "  --timeout S           stop after listening S seconds (counted from the\n"
     "                        moment the session is first ready; it also bounds\n"
     "                        the connection establishment)\n"
     "  --json                print JSON lines instead of FROM: BODY\n",
     app_cmd_listen, 1},
    {"help", "show help for a command", "help [COMMAND]",
     "Shows the help of COMMAND, or this overview.", NULL, cmd_help, 0},
    {"version", "print the version", "version", "Prints the program and library versions.",
     NULL, cmd_version, 0},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static const app_command *find_command(const char *name) {
  for (size_t i = 0; i < N_COMMANDS; i++)
    if (!strcmp(commands[i].name, name)) return &commands[i];
  return NULL;
}

void app_err(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("epode: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

int app_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "epode%s%s: ", cmd ? " " : "", cmd ? cmd : "");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  fprintf(stderr, "Try 'epode%s%s --help'.\n", cmd ? " " : "", cmd ? cmd : "");
  return APP_EXIT_USAGE;
}

/* "  N  text", wrapped at 79 columns under the text. */
static void print_exit_code(FILE *f, int code, const char *text) {
  const size_t width = 79 - 5;
  fprintf(f, "  %d  ", code);
  while (strlen(text) > width) {
    size_t cut = width;
    while (cut > 0 && text[cut] != ' ') cut--;
    if (cut == 0) break;
    fprintf(f, "%.*s\n     ", (int)cut, text);
    text += cut + 1;
  }
  fprintf(f, "%s\n", text);
}

void app_print_exit_codes(FILE *f) {
  fputs("Exit status:\n", f);
#define APP__EXIT_LINE(name, code, text) print_exit_code(f, code, text);
  APP_EXIT_MAP(APP__EXIT_LINE)
#undef APP__EXIT_LINE
}

static void print_environment(FILE *f) {
  fputs("Environment:\n"
        "  EPODE_JID       the account, when --jid is not given\n"
        "  EPODE_PASSWORD  the password, when --password-cmd is not given\n",
        f);
}

void app_print_command_help(const app_command *c, FILE *f) {
  fprintf(f, "Usage: epode %s\n\n%s\n", c->usage, c->description);
  if (c->options) fprintf(f, "\nOptions:\n%s", c->options);
  if (c->account) {
    fputc('\n', f);
    app_print_account_help(f);
    fputc('\n', f);
    print_environment(f);
    fputc('\n', f);
    app_print_exit_codes(f);
  }
}

static void print_main_help(FILE *f) {
  fputs("Usage: epode COMMAND [OPTIONS] [ARGUMENTS]\n"
        "\n"
        "Sends and receives XMPP messages from the command line.\n"
        "\n"
        "Commands:\n",
        f);
  for (size_t i = 0; i < N_COMMANDS; i++)
    fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
  fputc('\n', f);
  app_print_account_help(f);
  fputc('\n', f);
  print_environment(f);
  fputc('\n', f);
  app_print_exit_codes(f);
  fputs("\n"
        "Examples:\n"
        "  EPODE_PASSWORD=secret epode send --jid alice@example.org -m 'Hi!' bob@example.org\n"
        "  epode listen --jid bob@example.org --password-cmd 'pass show xmpp/bob' --json\n"
        "\n"
        "Run 'epode COMMAND --help' for a command's options; 'man epode' for more.\n",
        f);
}

static int cmd_help(const app_command *cmd, int argc, char **argv) {
  if (argc > 2) return app_usage_error("help", "too many arguments");
  if (argc == 2 && strcmp(argv[1], "--help") && strcmp(argv[1], "-h")) {
    const app_command *c = find_command(argv[1]);
    if (!c) return app_usage_error(NULL, "unknown command '%s'", argv[1]);
    app_print_command_help(c, stdout);
    return APP_EXIT_OK;
  }
  print_main_help(stdout);
  return APP_EXIT_OK;
}

static int cmd_version(const app_command *cmd, int argc, char **argv) {
  if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    app_print_command_help(cmd, stdout);
    return APP_EXIT_OK;
  }
  if (argc > 1) return app_usage_error("version", "takes no arguments");
  printf("epode %s (libepode %s)\n", EPODE_VERSION_STRING, epode_version());
  return APP_EXIT_OK;
}

/* Rejects abbreviated or unknown long options before getopt_long sees them
 * (it would accept "--password" as "--password-cmd"). */
static int check_long_names(const app_command *cmd, int argc, char **argv,
                            const struct option *all) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--")) break;
    if (strncmp(a, "--", 2)) continue;
    size_t n = strcspn(a + 2, "=");
    const struct option *o = all;
    for (; o->name; o++)
      if (strlen(o->name) == n && !strncmp(o->name, a + 2, n)) break;
    if (!o->name) {
      if (n >= 4 && !strncmp(a + 2, "password", n < 8 ? n : 8))
        return app_usage_error(cmd->name, "unknown option '%.*s': the password is never given "
                                          "on the command line; set EPODE_PASSWORD or use "
                                          "--password-cmd CMD",
                               (int)(n + 2), a);
      return app_usage_error(cmd->name, "unknown option '%.*s'", (int)(n + 2), a);
    }
    /* Skip the separate argument of an option that takes one. */
    if (o->has_arg == required_argument && !a[2 + n]) i++;
  }
  return 0;
}

int app_parse_options(const app_command *cmd, int argc, char **argv, const struct option *own,
                      size_t n_own, const char *own_short, app_account *acct,
                      app_own_option_fn fn, void *ud, int *first_arg) {
  struct option *all = app_build_longopts(own, n_own);
  char shortopts[64];
  if (!all) {
    app_err("out of memory");
    return APP_EXIT_ERROR;
  }
  snprintf(shortopts, sizeof shortopts, ":%s%s", own_short ? own_short : "",
           APP_SHORTOPTS_SHARED);
  int rc = check_long_names(cmd, argc, argv, all);
  if (rc) goto out;
  opterr = 0;
  optind = 1;
  int opt;
  while ((opt = getopt_long(argc, argv, shortopts, all, NULL)) != -1) {
    if (opt == 'h') {
      app_print_command_help(cmd, stdout);
      rc = -1;
      goto out;
    }
    if (opt == '?') {
      if (optopt)
        rc = app_usage_error(cmd->name, "unknown option '-%c'", optopt);
      else
        rc = app_usage_error(cmd->name, "unknown option '%s'", argv[optind - 1]);
      goto out;
    }
    if (opt == ':') {
      if (optopt > 0 && optopt < 0x100)
        rc = app_usage_error(cmd->name, "option '-%c' needs an argument", optopt);
      else
        rc = app_usage_error(cmd->name, "option '%s' needs an argument", argv[optind - 1]);
      goto out;
    }
    int r = app_account_option(acct, cmd->name, opt, optarg);
    if (r < 0) {
      rc = APP_EXIT_USAGE;
      goto out;
    }
    if (r > 0) continue;
    rc = fn ? fn(opt, optarg, ud) : app_usage_error(cmd->name, "unexpected option");
    if (rc) goto out;
  }
  *first_arg = optind;
out:
  free(all);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    print_main_help(stderr);
    return APP_EXIT_USAGE;
  }
  const char *name = argv[1];
  if (!strcmp(name, "--help") || !strcmp(name, "-h")) {
    print_main_help(stdout);
    return APP_EXIT_OK;
  }
  if (!strcmp(name, "--version") || !strcmp(name, "-V")) name = "version";
  const app_command *c = find_command(name);
  if (!c) {
    if (name[0] == '-')
      return app_usage_error(NULL, "'%s' before the command: options go after it "
                                   "(epode COMMAND [OPTIONS])", name);
    return app_usage_error(NULL, "unknown command '%s' (commands: send, listen, help, version)",
                           name);
  }
  int rc = c->run(c, argc - 1, argv + 1);
  if (fflush(stdout) != 0 && rc == APP_EXIT_OK) {
    app_err("cannot write to standard output");
    rc = APP_EXIT_ERROR;
  }
  return rc < 0 ? APP_EXIT_OK : rc;
}
