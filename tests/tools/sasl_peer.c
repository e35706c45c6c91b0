/* sasl_peer: runs one of epode's SASL mechanisms (src/sasl) against an
 * independent SASL server speaking the line protocol of GNU SASL's
 * `gsasl --server` on its stdin/stdout, for tests/integration/gsasl.sh.
 *
 *   sasl_peer MECH --user USER --password PW --server-cmd CMD
 *             [--domain DOMAIN] [--authzid AUTHZID]
 *             [--cb-type tls-unique|tls-exporter --cb-data HEX [--server-cb-data HEX]]
 *             [--wrong-password] [--final-as-challenge] [--timeout SECONDS]
 *
 * CMD is run with /bin/sh -c; its stdin and stdout are pipes to us, its
 * stderr goes to a temporary file that is shown afterwards (it must never
 * be mixed into the protocol stream). The protocol, as gsasl 2.2.0 speaks
 * it: stdout line 1 is the mechanism name; then the server writes one line
 * (base64, empty = no data) and reads one client line, strictly
 * alternating. The first server line is empty for client-first
 * mechanisms. After the server's last message gsasl reads one more client
 * line (we send an empty one) and we close its stdin; its exit status is
 * its verdict (0 = authenticated). For -PLUS, the line after client-first
 * carries the channel-binding data the server should expect, and gsasl
 * prints "Enter base64 encoded <type> channel binding: " without a
 * newline in front of its next message; we strip it and check that <type>
 * is the one epode chose.
 *
 * gsasl does not say which of its lines is the final one (XMPP does, with
 * <success/>), so the number of server messages per mechanism is fixed
 * here; a server that ends early or late is reported. The final message
 * goes to success() (as <success/> with additional data), or with
 * --final-as-challenge to step() followed by an empty success() (as a
 * server that sends v=/rspauth in a <challenge/>).
 *
 * Every message is printed decoded to stderr; stdout gets one line:
 *   sasl_peer: MECH: server=accepted|rejected|error client=ok|unverified|aborted: details
 * Exit status: 0 both sides agree the exchange succeeded (the server
 * authenticated the client AND epode verified the server, where the
 * mechanism can); 1 both agree it failed (server rejected, epode did not
 * succeed); 2 they disagree, or one side broke the protocol; 3 usage or
 * setup error (including a timeout). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "epode/base64.h"
#include "epode/mem.h"
#include "epode/session.h"
#include "sasl/sasl.h"
#include "util/buf.h"

enum { EXIT_AGREE_OK = 0, EXIT_AGREE_FAIL = 1, EXIT_DISAGREE = 2, EXIT_SETUP = 3 };

#define MAX_LINE 65536

static const char *g_mech = "?";
static double g_deadline; /* monotonic seconds */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("sasl_peer: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* Prints a message as readable text: printable ASCII as is, the rest as
 * \xNN (so NULs in PLAIN and UTF-8 bytes are visible). */
static void log_msg(const char *who, const unsigned char *p, size_t n, int present) {
  fprintf(stderr, "sasl_peer: %s ", who);
  if (!present) {
    fputs("(no data)\n", stderr);
    return;
  }
  fputc('"', stderr);
  for (size_t i = 0; i < n; i++) {
    if (p[i] >= 0x20 && p[i] < 0x7F && p[i] != '\\' && p[i] != '"')
      fputc(p[i], stderr);
    else
      fprintf(stderr, "\\x%02x", p[i]);
  }
  fprintf(stderr, "\" (%zu bytes)\n", n);
}

static void usage(void) {
  fputs("usage: sasl_peer MECH --user USER --password PW --server-cmd CMD\n"
        "         [--domain DOMAIN] [--authzid AUTHZID]\n"
        "         [--cb-type tls-unique|tls-exporter --cb-data HEX [--server-cb-data HEX]]\n"
        "         [--wrong-password] [--final-as-challenge] [--timeout SECONDS]\n",
        stderr);
  exit(EXIT_SETUP);
}

static int parse_hex(const char *s, unsigned char **out, size_t *len) {
  size_t n = strlen(s);
  if (n == 0 || n % 2) return -1;
  unsigned char *b = malloc(n / 2);
  if (!b) return -1;
  for (size_t i = 0; i < n / 2; i++) {
    unsigned v = 0;
    for (int k = 0; k < 2; k++) {
      char c = s[2 * i + (size_t)k];
      int x = c >= '0' && c <= '9'   ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                     : -1;
      if (x < 0) {
        free(b);
        return -1;
      }
      v = v << 4 | (unsigned)x;
    }
    b[i] = (unsigned char)v;
  }
  *out = b;
  *len = n / 2;
  return 0;
}

/* ------------------------------------------------------------ child */

typedef struct peer {
  pid_t pid;
  int to;   /* its stdin, -1 once closed */
  int from; /* its stdout */
  FILE *err;
  char buf[MAX_LINE];
  size_t have;
  int eof;
} peer;

static void set_cloexec(int fd) { fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC); }

static int peer_spawn(peer *pr, const char *cmd) {
  int in[2], out[2];
  memset(pr, 0, sizeof *pr);
  pr->err = tmpfile();
  if (!pr->err || pipe(in) || pipe(out)) return -1;
  set_cloexec(in[0]), set_cloexec(in[1]), set_cloexec(out[0]), set_cloexec(out[1]);
  set_cloexec(fileno(pr->err));
  fflush(NULL);
  pr->pid = fork();
  if (pr->pid < 0) return -1;
  if (pr->pid == 0) {
    if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(fileno(pr->err), 2) < 0) _exit(127);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  pr->to = in[1];
  pr->from = out[0];
  return 0;
}

/* Reads one line (without its '\n') into line[MAX_LINE]. Returns 1, 0 at
 * EOF (a partial last line is returned first), -1 on timeout or error. */
static int peer_read_line(peer *pr, char *line, size_t *len) {
  for (;;) {
    char *nl = memchr(pr->buf, '\n', pr->have);
    if (nl || (pr->eof && pr->have)) {
      size_t n = nl ? (size_t)(nl - pr->buf) : pr->have;
      memcpy(line, pr->buf, n);
      line[n] = '\0';
      *len = n;
      size_t used = nl ? n + 1 : n;
      memmove(pr->buf, pr->buf + used, pr->have - used);
      pr->have -= used;
      return 1;
    }
    if (pr->eof) return 0;
    if (pr->have == sizeof pr->buf) {
      logf_("server line longer than %d bytes", MAX_LINE);
      return -1;
    }
    double left = g_deadline - now_s();
    if (left <= 0) {
      logf_("timed out waiting for the server");
      return -1;
    }
    struct pollfd pf = {pr->from, POLLIN, 0};
    int r = poll(&pf, 1, (int)(left * 1000) + 1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) continue;
    ssize_t k = read(pr->from, pr->buf + pr->have, sizeof pr->buf - pr->have);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) return -1;
    if (k == 0)
      pr->eof = 1;
    else
      pr->have += (size_t)k;
  }
}

static int peer_write_line(peer *pr, const char *s, size_t n) {
  if (pr->to < 0) return -1;
  while (n) {
    ssize_t k = write(pr->to, s, n);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) return -1; /* EPIPE: the server is gone */
    s += k;
    n -= (size_t)k;
  }
  ssize_t k;
  do
    k = write(pr->to, "\n", 1);
  while (k < 0 && errno == EINTR);
  return k == 1 ? 0 : -1;
}

static void peer_close_input(peer *pr) {
  if (pr->to >= 0) close(pr->to);
  pr->to = -1;
}

/* Waits for the child until the deadline; kills it after. Returns the wait
 * status, or -1 if it had to be killed. */
static int peer_wait(peer *pr) {
  int st = 0;
  for (;;) {
    pid_t r = waitpid(pr->pid, &st, WNOHANG);
    if (r == pr->pid) return st;
    if (r < 0 && errno != EINTR) return -1;
    if (now_s() > g_deadline) {
      logf_("the server did not exit in time; killing pid %ld", (long)pr->pid);
      kill(pr->pid, SIGKILL);
      waitpid(pr->pid, &st, 0);
      return -1;
    }
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

/* Shows the server's stderr; keeps in last[] its last line that reports an
 * error (gsasl also prints warnings and "poll stdin"). */
static void peer_show_stderr(peer *pr, char *last, size_t lastsz) {
  char line[1024];
  last[0] = '\0';
  rewind(pr->err);
  while (fgets(line, sizeof line, pr->err)) {
    line[strcspn(line, "\n")] = '\0';
    fprintf(stderr, "sasl_peer: server stderr: %s\n", line);
    size_t n = strlen(line);
    if (!strstr(line, "error") && !strstr(line, "fail")) continue;
    if (n >= lastsz) n = lastsz - 1;
    memcpy(last, line, n);
    last[n] = '\0';
  }
}

/* ------------------------------------------------------------ main */

/* Server messages (lines after the mechanism name) per mechanism, the last
 * being the final one (<success/> in XMPP). */
static int server_messages(const char *mech) {
  if (!strcmp(mech, "PLAIN")) return 2;      /* "" (send initial), "" */
  if (!strcmp(mech, "DIGEST-MD5")) return 2; /* challenge, rspauth= */
  if (!strncmp(mech, "SCRAM-", 6)) return 3; /* "" (send first), server-first, v= */
  return 0;
}

typedef struct outcome {
  int client_ok;       /* epode's mechanism finished and (where it can) verified the server */
  int client_aborted;  /* the mechanism refused to go on */
  int protocol_broken; /* the server's messages did not follow the protocol */
  char detail[512];
} outcome;

static void set_detail(outcome *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_detail(outcome *o, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(o->detail, sizeof o->detail, fmt, ap);
  va_end(ap);
}

static const char *errmsg(const epode__sasl_mech *m, void *st, epode_err e) {
  const char *s = st ? m->errmsg(st) : NULL;
  return s ? s : epode_strerror(e);
}

static int send_b64(peer *pr, const char *who, const unsigned char *p, size_t n, int present) {
  log_msg(who, p, n, present);
  char *b64 = NULL;
  size_t bl = 0;
  if (n) {
    if (epode_base64_encode(NULL, p, n, &b64, &bl)) return -1;
  }
  int r = peer_write_line(pr, b64 ? b64 : "", bl);
  epode_free(NULL, b64);
  if (r) logf_("could not write to the server (it has exited?)");
  return r;
}

/* The text after a gsasl channel-binding prompt glued to the line, and the
 * type it asked for. */
static const char *strip_cb_prompt(const char *line, char *type, size_t typesz) {
  static const char pre[] = "Enter base64 encoded ";
  static const char post[] = " channel binding: ";
  type[0] = '\0';
  if (strncmp(line, pre, sizeof pre - 1)) return line;
  const char *t = line + sizeof pre - 1;
  const char *e = strstr(t, post);
  if (!e) return line;
  snprintf(type, typesz, "%.*s", (int)(e - t), t);
  return e + sizeof post - 1;
}

int main(int argc, char **argv) {
  const char *user = NULL, *password = NULL, *cmd = NULL, *domain = "localhost", *authzid = NULL;
  const char *cb_type = NULL, *cb_hex = NULL, *server_cb_hex = NULL;
  int wrong = 0, final_as_challenge = 0;
  double timeout = 30;
  if (argc < 2 || argv[1][0] == '-') usage();
  g_mech = argv[1];
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name, var)                                                                             \
  if (!strcmp(a, name)) {                                                                          \
    if (!v) usage();                                                                               \
    var = v;                                                                                       \
    i++;                                                                                           \
    continue;                                                                                      \
  }
    OPT("--user", user)
    OPT("--password", password)
    OPT("--server-cmd", cmd)
    OPT("--domain", domain)
    OPT("--authzid", authzid)
    OPT("--cb-type", cb_type)
    OPT("--cb-data", cb_hex)
    OPT("--server-cb-data", server_cb_hex)
#undef OPT
    if (!strcmp(a, "--wrong-password")) {
      wrong = 1;
      continue;
    }
    if (!strcmp(a, "--final-as-challenge")) {
      final_as_challenge = 1;
      continue;
    }
    if (!strcmp(a, "--timeout") && v) {
      timeout = atof(v);
      i++;
      continue;
    }
    fprintf(stderr, "sasl_peer: unknown argument %s\n", a);
    usage();
  }
  if (!user || !password || !cmd) usage();

  const epode__sasl_mech *m = epode__sasl_builtin_find(g_mech);
  int nmsg = server_messages(g_mech);
  if (!m || !nmsg) {
    fprintf(stderr, "sasl_peer: %s is not a mechanism this driver knows how to run\n", g_mech);
    return EXIT_SETUP;
  }
  int plus = (m->flags & EPODE__SASL_NEEDS_CB) != 0;
  if (plus != (cb_type != NULL) || (cb_type && !cb_hex) || (!cb_type && server_cb_hex)) {
    fprintf(stderr, "sasl_peer: --cb-type and --cb-data are required for -PLUS, and only there\n");
    return EXIT_SETUP;
  }

  epode_tls_info tls;
  memset(&tls, 0, sizeof tls);
  unsigned char *cb = NULL, *server_cb = NULL;
  size_t cb_len = 0, server_cb_len = 0;
  if (plus) {
    if (parse_hex(cb_hex, &cb, &cb_len) ||
        parse_hex(server_cb_hex ? server_cb_hex : cb_hex, &server_cb, &server_cb_len)) {
      fprintf(stderr, "sasl_peer: channel-binding data must be non-empty hex\n");
      return EXIT_SETUP;
    }
    if (!strcmp(cb_type, "tls-unique")) {
      tls.version = 0x0303;
      tls.tls_unique = cb;
      tls.tls_unique_len = cb_len;
    } else if (!strcmp(cb_type, "tls-exporter")) {
      tls.version = 0x0304;
      tls.tls_exporter = cb;
      tls.tls_exporter_len = cb_len;
    } else {
      fprintf(stderr, "sasl_peer: --cb-type must be tls-unique or tls-exporter\n");
      return EXIT_SETUP;
    }
  }

  char *client_pw = NULL;
  if (wrong) {
    size_t n = strlen(password) + sizeof "wrong-";
    client_pw = malloc(n);
    if (!client_pw) return EXIT_SETUP;
    snprintf(client_pw, n, "wrong-%s", password);
  }

  epode__sasl_params p;
  memset(&p, 0, sizeof p);
  p.authcid = user;
  p.authzid = authzid;
  p.password = client_pw ? client_pw : password;
  p.domain = domain;
  p.tls = plus ? &tls : NULL;
  p.server_offers_plus = plus;

  signal(SIGPIPE, SIG_IGN);
  g_deadline = now_s() + timeout;
  logf_("mechanism %s, user \"%s\", %s password%s%s", g_mech, user,
        wrong ? "a WRONG" : "the server's", plus ? ", channel binding " : "", plus ? cb_type : "");
  logf_("server: %s", cmd);

  peer pr;
  if (peer_spawn(&pr, cmd)) {
    fprintf(stderr, "sasl_peer: cannot start the server: %s\n", strerror(errno));
    return EXIT_SETUP;
  }

  static char line[MAX_LINE + 1];
  size_t len = 0;
  outcome o;
  memset(&o, 0, sizeof o);
  int setup_error = 0;
  void *st = NULL;
  epode__buf out;
  epode__buf_init(&out, NULL, 0);

  int r = peer_read_line(&pr, line, &len);
  if (r <= 0) {
    set_detail(&o, "the server printed no mechanism name");
    setup_error = 1;
  } else if (strcmp(line, g_mech) != 0) {
    set_detail(&o, "the server runs \"%s\", not %s", line, g_mech);
    setup_error = 1;
  }

  int has_initial = 0;
  if (!setup_error) {
    epode_err e = m->start(&st, &p, &out, &has_initial);
    if (e) {
      o.client_aborted = 1;
      set_detail(&o, "epode start() failed: %s", errmsg(m, st, e));
    }
  }

  for (int idx = 0; !setup_error && !o.client_aborted && idx < nmsg; idx++) {
    r = peer_read_line(&pr, line, &len);
    if (r < 0) {
      setup_error = 1;
      set_detail(&o, "no answer from the server");
      break;
    }
    if (r == 0) {
      set_detail(&o,
                 "the server ended the exchange after %d of its %d messages, so epode "
                 "could not verify it",
                 idx, nmsg);
      break;
    }
    char asked[64];
    const char *b64 = plus ? strip_cb_prompt(line, asked, sizeof asked) : line;
    if (plus && asked[0]) {
      logf_("server asked for %s channel-binding data", asked);
      if (strcmp(asked, cb_type) != 0) {
        o.protocol_broken = 1;
        set_detail(&o, "the server asked for %s channel binding, but epode was to use %s", asked,
                   cb_type);
        break;
      }
    }
    unsigned char *data = NULL;
    size_t dlen = 0;
    if (*b64 && epode_base64_decode(NULL, b64, strlen(b64), &data, &dlen)) {
      o.protocol_broken = 1;
      set_detail(&o, "server message %d is not base64: \"%.80s\"", idx + 1, b64);
      break;
    }
    log_msg("S:", data, dlen, *b64 != '\0');

    epode_err e = EPODE_OK;
    const char *what = "step()";
    if (idx == 0 && has_initial) {
      /* A client-first mechanism: gsasl's first line is empty. */
      if (*b64) {
        o.protocol_broken = 1;
        set_detail(&o, "the server sent data before the client's initial response");
      } else if (send_b64(&pr, "C:", (const unsigned char *)out.data, out.len, 1)) {
        setup_error = 1;
      } else if (plus) {
        char *cb64 = NULL;
        size_t cbl = 0;
        if (epode_base64_encode(NULL, server_cb, server_cb_len, &cb64, &cbl) ||
            peer_write_line(&pr, cb64, cbl))
          setup_error = 1;
        logf_("-> server's channel-binding data (%zu bytes, %s)", server_cb_len,
              server_cb_len == cb_len && !memcmp(cb, server_cb, cb_len) ? "same as epode's"
                                                                        : "DIFFERENT from epode's");
        epode_free(NULL, cb64);
      }
    } else if (idx == nmsg - 1) {
      out.len = 0;
      /* The final message: <success/> with it, or a challenge and an empty
       * <success/>. */
      if (final_as_challenge) {
        e = m->step(st, data, dlen, &out);
        if (!e && out.len) {
          o.protocol_broken = 1;
          set_detail(&o, "epode answered the final message with %zu bytes instead of nothing",
                     out.len);
        }
        what = "step() on the final message";
        if (!e && !o.protocol_broken) {
          e = m->success(st, NULL, 0);
          what = "success() after it";
        }
      } else {
        e = m->success(st, data, dlen);
        what = "success()";
      }
      if (!e && !o.protocol_broken) {
        o.client_ok = 1;
        set_detail(&o, "%s",
                   plus || strncmp(g_mech, "SCRAM", 5) == 0 ? "epode verified the server signature"
                   : !strcmp(g_mech, "DIGEST-MD5")          ? "epode verified rspauth"
                                                            : "epode finished");
      }
      /* gsasl reads one more line after its last message. */
      if (send_b64(&pr, "C:", NULL, 0, 0)) setup_error = 1;
    } else {
      out.len = 0;
      e = m->step(st, data, dlen, &out);
      if (!e && send_b64(&pr, "C:", (const unsigned char *)out.data, out.len, 1)) setup_error = 1;
    }
    if (e) {
      o.client_aborted = 1;
      set_detail(&o, "epode %s failed on server message %d: %s (%s)", what, idx + 1,
                 errmsg(m, st, e), epode_strerror(e));
    }
    epode_free(NULL, data);
    if (o.protocol_broken) break;
  }

  peer_close_input(&pr);
  /* Anything more the server says is unexpected. */
  int extra = 0;
  while (!setup_error && (r = peer_read_line(&pr, line, &len)) > 0) {
    logf_("server said more: \"%.200s\"", line);
    extra++;
  }
  if (r < 0) setup_error = 1;
  int ws = peer_wait(&pr);
  char last[512];
  peer_show_stderr(&pr, last, sizeof last);

  const char *server;
  int accepted = 0, rejected = 0;
  if (setup_error)
    server = "error";
  else if (ws >= 0 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0)
    server = "accepted", accepted = 1;
  else if (ws >= 0 && WIFEXITED(ws) && WEXITSTATUS(ws) == 1)
    server = "rejected", rejected = 1;
  else
    server = "error";
  const char *client = o.client_ok ? "ok" : o.client_aborted ? "aborted" : "unverified";
  if (extra && o.client_ok) {
    o.protocol_broken = 1;
    set_detail(&o, "the server sent %d message(s) after its final one", extra);
  }

  int rc;
  if (setup_error || ws < 0 || (!accepted && !rejected))
    rc = EXIT_SETUP;
  else if (o.protocol_broken)
    rc = EXIT_DISAGREE;
  else if (accepted && o.client_ok)
    rc = EXIT_AGREE_OK;
  else if (rejected && !o.client_ok)
    rc = EXIT_AGREE_FAIL;
  else
    rc = EXIT_DISAGREE;

  char sv[600];
  if (ws < 0)
    snprintf(sv, sizeof sv, "killed after the timeout");
  else if (WIFEXITED(ws))
    snprintf(sv, sizeof sv, "exit %d%s%s", WEXITSTATUS(ws), last[0] ? ": " : "", last);
  else
    snprintf(sv, sizeof sv, "signal %d", WIFSIGNALED(ws) ? WTERMSIG(ws) : 0);
  printf("sasl_peer: %s: server=%s client=%s: %s; server %s%s\n", g_mech, server, client,
         o.detail[0] ? o.detail : "(no detail)", sv,
         rc == EXIT_DISAGREE ? " [THE SIDES DISAGREE]" : "");

  if (st) m->free(st);
  epode__buf_free(&out);
  fclose(pr.err);
  free(cb);
  free(server_cb);
  free(client_pw);
  return rc;
}
