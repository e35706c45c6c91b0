/* Replays session transcripts byte for byte.
 *
 * Each file in tests/data/transcripts/ is a conversation between the
 * session and a server, one directive a line:
 *
 *   config jid JID | config password PW | config resource R | config plaintext
 *   config limit NAME VALUE              (stanza-bytes, send-queue, sasl-rounds)
 *   config framing websocket|bosh        (RFC 7395 / XEP-0206 framing)
 *   config cert FILE | config mechanisms LIST
 *   start plain | start tls [VERSION]    epode_session_start (tls: direct TLS)
 *   restart plain | restart tls          epode_session_start again (after a redirect)
 *   C: BYTES      the session must have written exactly these bytes next
 *                 (several C: lines in a row are concatenated)
 *   S: BYTES      fed to the session as received bytes
 *   S+ BYTES      like S:, but fed one byte at a time
 *   M: BYTES      the session's next output message is exactly these bytes
 *   E: XML        an element handed over by a BOSH transport
 *                 (epode_session_recv_element)
 *   tls           answer EPODE_EV_STARTTLS: epode_session_tls_done()
 *   send XML      parse XML with the library's parser and epode_session_send
 *   raw XML       epode_session_send_raw, byte for byte
 *   track XML     the same with epode_session_send_tracked; reports are
 *                 checked with: expect delivered ACKED:id FAILED:id …
 *   config sm-ack N MS | config no-sm    (XEP-0198 ack policy / off)
 *   config reconnect INITIAL MAX ATTEMPTS (epode_config_set_reconnect)
 *   abort ERRNAME                        epode_session_abort (transport failed)
 *   save                                 epode_session_save into the run
 *   respawn [websocket]                  a new session from the same config
 *                                        (a new process) restoring the saved
 *                                        state; reports of restored stanzas
 *                                        go to `expect delivered` as well
 *   expect retry MS ATTEMPT              the last DISCONNECTED event's delay
 *   expect restore-error ERRNAME BYTES   restoring BYTES (after the saved
 *                                        state if BYTES starts with "+")
 *                                        into a fresh session fails so
 *   close | eof | tick MS
 *   expect state NAME | expect event NAME | expect jid JID | expect no-output
 *   expect fail ERRNAME [CONDITION]      EPODE_ERR_ name without prefix
 *   expect send-error ERRNAME            the last `send` returned this
 *
 * In BYTES, "\n" stands for a newline and "\\" for a backslash.
 * Every transcript must end with the session's output fully checked. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "epode/epode.h"
#include "xml/parser.h"

typedef struct {
  char path[1024];
} transcript;

typedef struct {
  epode_session *s;
  char events[1024];
  epode_err last_send;
  uint64_t now;
  unsigned rng;
  epode_framing framing;
  char deliveries[1024];
  uint32_t retry_ms;
  unsigned attempt;
  char *saved;
  size_t saved_len;
} run_ctx;

static void on_delivery(epode_session *s, epode_delivery status, const char *id, void *ud) {
  run_ctx *r = ud;
  size_t used = strlen(r->deliveries);
  snprintf(r->deliveries + used, sizeof r->deliveries - used, "%s:%s ",
           status == EPODE_DELIVERY_ACKED ? "ACKED" : "FAILED", id ? id : "-");
}

static int det_random(void *ud, unsigned char *buf, size_t len) {
  run_ctx *r = ud;
  for (size_t i = 0; i < len; i++) buf[i] = (unsigned char)(r->rng++ * 7u + 1u);
  return 0;
}

static void on_event(const epode_event *ev, void *ud) {
  run_ctx *r = ud;
  static const char *names[] = {"STATE",    "STARTTLS",     "READY",     "ERROR",  "CLOSED",
                                "REDIRECT", "DISCONNECTED", "RECONNECT", "RESUMED"};
  if (ev->type == EPODE_EV_DISCONNECTED) {
    r->retry_ms = ev->retry_ms;
    r->attempt = ev->attempt;
  }
  size_t used = strlen(r->events);
  snprintf(r->events + used, sizeof r->events - used, "%s ", names[ev->type]);
}

static char *unescape(const char *in, size_t *len) {
  size_t n = strlen(in);
  char *out = malloc(n + 1);
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    if (in[i] == '\\' && i + 1 < n && in[i + 1] == 'n') {
      out[o++] = '\n';
      i++;
    } else if (in[i] == '\\' && i + 1 < n && in[i + 1] == '\\') {
      out[o++] = '\\';
      i++;
    } else {
      out[o++] = in[i];
    }
  }
  out[o] = '\0';
  *len = o;
  return out;
}

static epode_err err_by_name(const char *name) {
  static const struct {
    const char *n;
    epode_err e;
  } tab[] = {
#define EPODE__T(name, value, msg) {#name, EPODE_ERR_##name},
      EPODE_ERR_MAP(EPODE__T)
#undef EPODE__T
  };
  for (size_t i = 0; i < sizeof tab / sizeof *tab; i++)
    if (!strcmp(tab[i].n, name)) return tab[i].e;
  fail_msg("unknown error name %s", name);
  return EPODE_OK;
}

static epode_limit limit_by_name(const char *name) {
  if (!strcmp(name, "stanza-bytes")) return EPODE_LIMIT_STANZA_BYTES;
  if (!strcmp(name, "send-queue")) return EPODE_LIMIT_SEND_QUEUE;
  if (!strcmp(name, "sasl-rounds")) return EPODE_LIMIT_SASL_ROUNDS;
  if (!strcmp(name, "depth")) return EPODE_LIMIT_DEPTH;
  if (!strcmp(name, "output-bytes")) return EPODE_LIMIT_OUTPUT_BYTES;
  if (!strcmp(name, "unacked")) return EPODE_LIMIT_UNACKED;
  fail_msg("unknown limit %s", name);
  return EPODE_LIMIT_COUNT_;
}

/* A parsed stanza for `send`: parse "<x>" in fragment mode. */
typedef struct {
  epode_stanza *st;
} one_stanza;

static epode_err grab(void *ud, epode_stanza *st) {
  one_stanza *o = ud;
  if (o->st) epode_stanza_free(o->st);
  o->st = st;
  return EPODE_OK;
}

static epode_stanza *parse_fragment(const char *xml) {
  epode__xml_callbacks cb = {NULL, grab, NULL};
  one_stanza o = {NULL};
  epode__xml_parser *p;
  assert_int_equal(epode__xml_parser_new(&p, NULL, NULL, EPODE__XML_FRAGMENTS, &cb, &o), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(p, xml, strlen(xml)), EPODE_OK);
  epode__xml_parser_free(p);
  assert_non_null(o.st);
  return o.st;
}

static void check_output(run_ctx *r, const char *expected, size_t elen, const char *file,
                         int line) {
  size_t have;
  const char *out = epode_session_peek_output(r->s, &have);
  if (have < elen || memcmp(out, expected, elen) != 0) {
    fail_msg("%s:%d: output mismatch\n  expected: %.*s\n  got:      %.*s", file, line, (int)elen,
             expected, (int)have, out ? out : "");
  }
  epode_session_consume_output(r->s, elen);
}

static void run_transcript(void **state) {
  const transcript *t = *state;
  FILE *f = fopen(t->path, "r");
  assert_non_null(f);
  run_ctx r;
  memset(&r, 0, sizeof r);
  r.now = 1000;
  epode_config *cfg;
  assert_int_equal(epode_config_new(&cfg, NULL), EPODE_OK);
  epode_config_set_random(cfg, det_random, &r);
  char line[1 << 16];
  int lineno = 0;
  char pending_c[1 << 16];
  size_t pending_len = 0;
  int pending_line = 0;

  while (fgets(line, sizeof line, f)) {
    lineno++;
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    if (!n || line[0] == '#') continue;
    /* Flush accumulated C: lines before any other directive. */
    if (strncmp(line, "C: ", 3) != 0 && pending_len) {
      check_output(&r, pending_c, pending_len, t->path, pending_line);
      pending_len = 0;
    }
    if (!strncmp(line, "config ", 7)) {
      char *arg = line + 7;
      if (!strncmp(arg, "jid ", 4))
        assert_int_equal(epode_config_set_jid(cfg, arg + 4), EPODE_OK);
      else if (!strncmp(arg, "password ", 9))
        assert_int_equal(epode_config_set_password(cfg, arg + 9), EPODE_OK);
      else if (!strncmp(arg, "resource ", 9))
        assert_int_equal(epode_config_set_resource(cfg, arg + 9), EPODE_OK);
      else if (!strncmp(arg, "cert ", 5)) /* the session never reads the file */
        assert_int_equal(epode_config_set_client_cert(cfg, arg + 5, NULL), EPODE_OK);
      else if (!strncmp(arg, "mechanisms ", 11))
        assert_int_equal(epode_config_set_mechanisms(cfg, arg + 11), EPODE_OK);
      else if (!strncmp(arg, "sm-ack ", 7)) {
        unsigned every, ms;
        assert_int_equal(sscanf(arg + 7, "%u %u", &every, &ms), 2);
        assert_int_equal(epode_config_set_sm_ack_policy(cfg, every, ms), EPODE_OK);
      } else if (!strncmp(arg, "reconnect ", 10)) {
        unsigned initial, max, attempts;
        assert_int_equal(sscanf(arg + 10, "%u %u %u", &initial, &max, &attempts), 3);
        assert_int_equal(epode_config_set_reconnect(cfg, 1, initial, max, attempts), EPODE_OK);
      } else if (!strcmp(arg, "no-sm"))
        assert_int_equal(epode_config_set_stream_management(cfg, 0), EPODE_OK);
      else if (!strcmp(arg, "framing websocket"))
        r.framing = EPODE_FRAMING_WEBSOCKET;
      else if (!strcmp(arg, "framing bosh"))
        r.framing = EPODE_FRAMING_BOSH;
      else if (!strcmp(arg, "plaintext"))
        assert_int_equal(epode_config_set_flags(cfg, EPODE_CFG_ALLOW_PLAINTEXT), EPODE_OK);
      else if (!strncmp(arg, "limit ", 6)) {
        char name[64];
        unsigned long long v;
        assert_int_equal(sscanf(arg + 6, "%63s %llu", name, &v), 2);
        assert_int_equal(epode_config_set_limit(cfg, limit_by_name(name), v), EPODE_OK);
      } else
        fail_msg("%s:%d: bad config", t->path, lineno);
    } else if (!strncmp(line, "start ", 6)) {
      assert_int_equal(epode_session_new(&r.s, cfg), EPODE_OK);
      epode_session_set_event_cb(r.s, on_event, &r);
      if (r.framing) assert_int_equal(epode_session_set_framing(r.s, r.framing), EPODE_OK);
      if (!strncmp(line + 6, "tls", 3)) {
        unsigned char exporter[32];
        memset(exporter, 0xEE, sizeof exporter);
        epode_tls_info info = {0x0304, NULL, 0, exporter, sizeof exporter, NULL, 0};
        assert_int_equal(epode_session_start(r.s, r.now, &info), EPODE_OK);
      } else {
        assert_int_equal(epode_session_start(r.s, r.now, NULL), EPODE_OK);
      }
    } else if (!strncmp(line, "restart ", 8)) { /* the same session, started again */
      unsigned char exporter[32];
      memset(exporter, 0xEE, sizeof exporter);
      epode_tls_info info = {0x0304, NULL, 0, exporter, sizeof exporter, NULL, 0};
      assert_int_equal(epode_session_start(r.s, r.now, strcmp(line + 8, "tls") ? NULL : &info),
                       EPODE_OK);
    } else if (!strncmp(line, "C: ", 3)) {
      size_t len;
      char *bytes = unescape(line + 3, &len);
      if (!pending_len) pending_line = lineno;
      assert_true(pending_len + len < sizeof pending_c);
      memcpy(pending_c + pending_len, bytes, len);
      pending_len += len;
      free(bytes);
    } else if (!strncmp(line, "S: ", 3) || !strncmp(line, "S+ ", 3)) {
      size_t len;
      char *bytes = unescape(line + 3, &len);
      if (line[1] == '+') {
        for (size_t i = 0; i < len && epode_session_state(r.s) != EPODE_STATE_CLOSED; i++)
          epode_session_recv(r.s, bytes + i, 1, r.now);
      } else {
        epode_session_recv(r.s, bytes, len, r.now);
      }
      free(bytes);
    } else if (!strncmp(line, "M: ", 3)) {
      size_t len, have;
      char *bytes = unescape(line + 3, &len);
      const char *msg = epode_session_peek_message(r.s, &have);
      if (!msg || have != len || memcmp(msg, bytes, len) != 0)
        fail_msg("%s:%d: message mismatch\n  expected: %s\n  got:      %.*s", t->path, lineno,
                 bytes, (int)have, msg ? msg : "(none)");
      epode_session_consume_output(r.s, have);
      free(bytes);
    } else if (!strncmp(line, "E: ", 3)) {
      epode_stanza *st = parse_fragment(line + 3);
      epode_session_recv_element(r.s, st, r.now);
      epode_stanza_free(st);
    } else if (!strcmp(line, "tls")) {
      unsigned char unique[12];
      memset(unique, 0xAB, sizeof unique);
      epode_tls_info info = {0x0303, unique, sizeof unique, NULL, 0, NULL, 0};
      assert_int_equal(epode_session_tls_done(r.s, &info, r.now), EPODE_OK);
    } else if (!strncmp(line, "send ", 5)) {
      epode_stanza *st = parse_fragment(line + 5);
      r.last_send = epode_session_send(r.s, st);
      epode_stanza_free(st);
    } else if (!strncmp(line, "raw ", 4)) {
      r.last_send = epode_session_send_raw(r.s, line + 4, strlen(line + 4));
    } else if (!strncmp(line, "track ", 6)) {
      epode_stanza *st = parse_fragment(line + 6);
      r.last_send = epode_session_send_tracked(r.s, st, on_delivery, &r);
      epode_stanza_free(st);
    } else if (!strcmp(line, "close")) {
      assert_int_equal(epode_session_close(r.s), EPODE_OK);
    } else if (!strncmp(line, "abort ", 6)) {
      assert_int_equal(epode_session_abort(r.s, err_by_name(line + 6), "transport failed", r.now),
                       EPODE_OK);
    } else if (!strcmp(line, "save")) {
      free(r.saved);
      char *p;
      assert_int_equal(epode_session_save(r.s, &p, &r.saved_len), EPODE_OK);
      r.saved = malloc(r.saved_len);
      memcpy(r.saved, p, r.saved_len);
      epode_free(epode_session_mem(r.s), p);
    } else if (!strncmp(line, "respawn", 7)) {
      assert_non_null(r.saved);
      epode_session_free(r.s); /* the old process is gone: its reports with it */
      r.deliveries[0] = '\0';
      assert_int_equal(epode_session_new(&r.s, cfg), EPODE_OK);
      epode_session_set_event_cb(r.s, on_event, &r);
      if (r.framing) assert_int_equal(epode_session_set_framing(r.s, r.framing), EPODE_OK);
      assert_int_equal(epode_session_restore(r.s, r.saved, r.saved_len, on_delivery, &r),
                       EPODE_OK);
      if (!strcmp(line + 7, " websocket")) { /* resumed over another transport */
        r.framing = EPODE_FRAMING_WEBSOCKET;
        assert_int_equal(epode_session_set_framing(r.s, r.framing), EPODE_OK);
      }
      r.events[0] = '\0';
    } else if (!strcmp(line, "eof")) {
      epode_session_eof(r.s, r.now);
    } else if (!strncmp(line, "tick ", 5)) {
      r.now += strtoull(line + 5, NULL, 10);
      epode_session_tick(r.s, r.now);
    } else if (!strncmp(line, "expect ", 7)) {
      char *arg = line + 7;
      if (!strncmp(arg, "state ", 6)) {
        if (strcmp(epode_state_name(epode_session_state(r.s)), arg + 6) != 0)
          fail_msg("%s:%d: state is %s, expected %s (%s)", t->path, lineno,
                   epode_state_name(epode_session_state(r.s)), arg + 6,
                   epode_session_failure(r.s)->detail);
      } else if (!strncmp(arg, "event ", 6)) {
        char want[64];
        snprintf(want, sizeof want, "%.60s ", arg + 6);
        if (!strstr(r.events, want))
          fail_msg("%s:%d: no %s event (events: %s)", t->path, lineno, arg + 6, r.events);
      } else if (!strncmp(arg, "jid ", 4)) {
        const char *jid = epode_session_jid(r.s);
        assert_non_null(jid);
        assert_string_equal(jid, arg + 4);
      } else if (!strcmp(arg, "no-output")) {
        size_t have;
        const char *out = epode_session_peek_output(r.s, &have);
        if (have) fail_msg("%s:%d: unexpected output %.*s", t->path, lineno, (int)have, out);
      } else if (!strncmp(arg, "fail ", 5)) {
        char ename[64], cond[128] = "";
        assert_true(sscanf(arg + 5, "%63s %127s", ename, cond) >= 1);
        const epode_failure *fl = epode_session_failure(r.s);
        if (fl->err != err_by_name(ename))
          fail_msg("%s:%d: failure is %s (%s), expected %s", t->path, lineno,
                   epode_err_name(fl->err), fl->detail, ename);
        if (*cond) {
          assert_non_null(fl->condition);
          assert_string_equal(fl->condition, cond);
        }
        assert_non_null(fl->detail);
        assert_true(strlen(fl->detail) > 0);
      } else if (!strncmp(arg, "delivered ", 10) || !strcmp(arg, "delivered")) {
        /* The delivery reports so far, in order, exactly ("" for none). */
        char want[1024] = "";
        if (arg[9] && arg[10]) snprintf(want, sizeof want, "%.1000s ", arg + 10);
        if (strcmp(r.deliveries, want) != 0)
          fail_msg("%s:%d: deliveries are \"%s\", expected \"%s\"", t->path, lineno,
                   r.deliveries, want);
      } else if (!strncmp(arg, "retry ", 6)) {
        unsigned ms, attempt;
        assert_int_equal(sscanf(arg + 6, "%u %u", &ms, &attempt), 2);
        if (r.retry_ms != ms || r.attempt != attempt)
          fail_msg("%s:%d: retry in %u ms (attempt %u), expected %u ms (attempt %u)", t->path,
                   lineno, (unsigned)r.retry_ms, r.attempt, ms, attempt);
      } else if (!strncmp(arg, "restore-error ", 14)) {
        char ename[64];
        int off = 0;
        assert_true(sscanf(arg + 14, "%63s %n", ename, &off) >= 1);
        size_t blen;
        char *bytes = unescape(arg + 14 + off, &blen);
        char *buf = bytes;
        size_t len = blen;
        if (bytes[0] == '+') {
          assert_non_null(r.saved);
          len = r.saved_len + blen - 1;
          buf = malloc(len);
          memcpy(buf, r.saved, r.saved_len);
          memcpy(buf + r.saved_len, bytes + 1, blen - 1);
        }
        epode_session *fresh;
        assert_int_equal(epode_session_new(&fresh, cfg), EPODE_OK);
        if (r.framing) assert_int_equal(epode_session_set_framing(fresh, r.framing), EPODE_OK);
        epode_err got = epode_session_restore(fresh, buf, len, on_delivery, &r);
        if (got != err_by_name(ename))
          fail_msg("%s:%d: restore gave %s, expected %s", t->path, lineno, epode_err_name(got),
                   ename);
        assert_int_equal(epode_session_state(fresh), EPODE_STATE_IDLE);
        epode_session_free(fresh);
        if (buf != bytes) free(buf);
        free(bytes);
      } else if (!strncmp(arg, "send-error ", 11)) {
        assert_int_equal(r.last_send, err_by_name(arg + 11));
      } else {
        fail_msg("%s:%d: bad expect", t->path, lineno);
      }
    } else {
      fail_msg("%s:%d: unknown directive: %s", t->path, lineno, line);
    }
  }
  if (pending_len) check_output(&r, pending_c, pending_len, t->path, pending_line);
  fclose(f);
  {
    size_t have;
    const char *out = epode_session_peek_output(r.s, &have);
    if (have) fail_msg("%s: unchecked output at the end: %.*s", t->path, (int)have, out);
  }
  epode_session_free(r.s);
  epode_config_free(cfg);
  free(r.saved);
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(((const struct CMUnitTest *)a)->name, ((const struct CMUnitTest *)b)->name);
}

int main(void) {
  const char *data = getenv("EPODE_TEST_DATA");
  char dir[700];
  snprintf(dir, sizeof dir, "%s/transcripts", data ? data : "tests/data");
  DIR *d = opendir(dir);
  if (!d) {
    fprintf(stderr, "cannot open %s (set EPODE_TEST_DATA)\n", dir);
    return 1;
  }
  struct CMUnitTest tests[256];
  transcript ts[256];
  size_t n = 0;
  struct dirent *de;
  while ((de = readdir(d)) && n < 256) {
    size_t len = strlen(de->d_name);
    if (len < 5 || strcmp(de->d_name + len - 4, ".txt") != 0) continue;
    snprintf(ts[n].path, sizeof ts[n].path, "%s/%s", dir, de->d_name);
    memset(&tests[n], 0, sizeof tests[n]);
    tests[n].name = strdup(de->d_name);
    tests[n].test_func = run_transcript;
    tests[n].initial_state = &ts[n];
    n++;
  }
  closedir(d);
  if (n == 0) {
    fprintf(stderr, "no transcripts in %s\n", dir);
    return 1;
  }
  qsort(tests, n, sizeof *tests, cmp_names);
  /* initial_state pointers moved with the sort: they point into ts, fine. */
  int rc = _cmocka_run_group_tests("session_transcripts", tests, n, NULL, NULL);
  for (size_t i = 0; i < n; i++) free((void *)tests[i].name);
  return rc;
}
