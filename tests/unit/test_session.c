/* Session tests that need logic on the server side: a SCRAM server written
 * here with OpenSSL (independent of src/sasl), handler dispatch, iq
 * tracking and timeouts, timed handlers, traffic-log redaction, output
 * bounds. The byte-exact conversations live in test_session_transcripts.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "epode/epode.h"

#include "failmem.h"

#define HDR_S                                                                                 \
  "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "                                \
  "xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='localhost' version='1.0'>"

typedef struct {
  epode_config *cfg;
  epode_session *s;
  uint64_t now;
  char log[1 << 16];
  int ready, closed, starttls;
  epode_err iq_err;
  int iq_calls;
  char iq_reply_type[32];
  int handler_calls, timed_calls;
} fx;

static void on_event(const epode_event *ev, void *ud) {
  fx *f = ud;
  if (ev->type == EPODE_EV_READY) f->ready++;
  if (ev->type == EPODE_EV_CLOSED) f->closed++;
  if (ev->type == EPODE_EV_STARTTLS) f->starttls++;
}

static void on_log(void *ud, epode_log_level lvl, const char *area, const char *msg) {
  fx *f = ud;
  size_t used = strlen(f->log);
  snprintf(f->log + used, sizeof f->log - used, "[%s] %s\n", area, msg);
}

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  f->now = 5000;
  assert_int_equal(epode_config_new(&f->cfg, NULL), EPODE_OK);
  assert_int_equal(epode_config_set_jid(f->cfg, "alice@localhost"), EPODE_OK);
  assert_int_equal(epode_config_set_password(f->cfg, "pencil"), EPODE_OK);
  assert_int_equal(epode_config_set_resource(f->cfg, "r"), EPODE_OK);
  epode_config_set_log(f->cfg, on_log, f, EPODE_LOG_TRAFFIC);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  epode_session_free(f->s);
  epode_config_free(f->cfg);
  free(f);
  return 0;
}

static void plain_ready(fx *f);

static void start(fx *f, const epode_tls_info *tls) {
  assert_int_equal(epode_session_new(&f->s, f->cfg), EPODE_OK);
  epode_session_set_event_cb(f->s, on_event, f);
  assert_int_equal(epode_session_start(f->s, f->now, tls), EPODE_OK);
}

/* Takes all pending output as a NUL-terminated string (caller frees). */
static char *take(fx *f) {
  size_t n;
  const char *p = epode_session_peek_output(f->s, &n);
  char *out = malloc(n + 1);
  if (n) memcpy(out, p, n);
  out[n] = '\0';
  epode_session_consume_output(f->s, n);
  return out;
}

static void feed(fx *f, const char *s) { epode_session_recv(f->s, s, strlen(s), f->now); }

/* Text between <tag ...> and </tag> in `xml` (first occurrence), copied. */
static char *inner(const char *xml, const char *tag) {
  char open[64], close[64];
  snprintf(open, sizeof open, "<%s", tag);
  snprintf(close, sizeof close, "</%s>", tag);
  const char *a = strstr(xml, open);
  if (!a) return NULL;
  a = strchr(a, '>');
  if (!a) return NULL;
  a++;
  const char *b = strstr(a, close);
  if (!b) return NULL;
  return strndup(a, (size_t)(b - a));
}

static char *b64d(const char *in, size_t *len) {
  unsigned char *tmp = NULL;
  epode_err e = epode_base64_decode(NULL, in, strlen(in), &tmp, len);
  assert_int_equal(e, EPODE_OK);
  char *copy = malloc(*len + 1);
  memcpy(copy, tmp, *len);
  copy[*len] = '\0';
  epode_free(NULL, tmp);
  return copy;
}

static char *b64e(const void *in, size_t len) {
  char *out;
  size_t n;
  assert_int_equal(epode_base64_encode(NULL, in, len, &out, &n), EPODE_OK);
  return out;
}

/* ------------------------------------------------- independent SCRAM server */

typedef struct {
  const EVP_MD *md;
  size_t hlen;
  char client_first_bare[512];
  char server_first[512];
  char cnonce[256];
  unsigned char salted[64];
} scram_srv;

static void hmac(const scram_srv *sv, const void *key, size_t klen, const void *msg, size_t mlen,
                 unsigned char *out) {
  unsigned int n = 0;
  HMAC(sv->md, key, (int)klen, msg, mlen, out, &n);
  assert_int_equal(n, sv->hlen);
}

/* Returns the server-first message for a client-first message. */
static void scram_first(scram_srv *sv, const char *client_first, const char *password,
                        unsigned iters, const char *gs2_expected) {
  assert_memory_equal(client_first, gs2_expected, strlen(gs2_expected));
  const char *bare = client_first + strlen(gs2_expected);
  snprintf(sv->client_first_bare, sizeof sv->client_first_bare, "%s", bare);
  const char *r = strstr(bare, ",r=");
  assert_non_null(r);
  snprintf(sv->cnonce, sizeof sv->cnonce, "%s", r + 3);
  assert_true(strlen(sv->cnonce) >= 16);
  static const unsigned char salt[] = "NaCl-salt-16byte";
  char *salt64 = b64e(salt, 16);
  snprintf(sv->server_first, sizeof sv->server_first, "r=%sSERVERNONCE3rfcNHYJY1ZVvWVs7j,s=%s,i=%u",
           sv->cnonce, salt64, iters);
  free(salt64);
  assert_int_equal(PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, 16, (int)iters,
                                     sv->md, (int)sv->hlen, sv->salted),
                   1);
}

/* Checks the client-final message; returns the v= success payload. */
static char *scram_final(scram_srv *sv, const char *client_final, const char *cbind_expected) {
  const char *p = strstr(client_final, ",p=");
  assert_non_null(p);
  char without_proof[1024];
  snprintf(without_proof, sizeof without_proof, "%.*s", (int)(p - client_final), client_final);
  assert_memory_equal(client_final, "c=", 2);
  const char *cend = strchr(client_final, ',');
  char c64[256];
  snprintf(c64, sizeof c64, "%.*s", (int)(cend - client_final - 2), client_final + 2);
  assert_string_equal(c64, cbind_expected);

  char auth_msg[2048];
  snprintf(auth_msg, sizeof auth_msg, "%s,%s,%s", sv->client_first_bare, sv->server_first,
           without_proof);
  unsigned char ckey[64], stored[64], csig[64], skey[64], ssig[64];
  hmac(sv, sv->salted, sv->hlen, "Client Key", 10, ckey);
  unsigned int n;
  EVP_Digest(ckey, sv->hlen, stored, &n, sv->md, NULL);
  hmac(sv, stored, sv->hlen, auth_msg, strlen(auth_msg), csig);
  size_t plen;
  char *proof = b64d(p + 3, &plen);
  assert_int_equal(plen, sv->hlen);
  for (size_t i = 0; i < sv->hlen; i++)
    assert_int_equal((unsigned char)proof[i], (unsigned char)(ckey[i] ^ csig[i]));
  free(proof);
  hmac(sv, sv->salted, sv->hlen, "Server Key", 10, skey);
  hmac(sv, skey, sv->hlen, auth_msg, strlen(auth_msg), ssig);
  char *sig64 = b64e(ssig, sv->hlen);
  char v[256];
  snprintf(v, sizeof v, "v=%s", sig64);
  free(sig64);
  return b64e(v, strlen(v));
}

/* Runs the negotiation up to (and including) the client-final message. */
static char *scram_negotiate_x(fx *f, scram_srv *sv, const char *mechs, const char *extra,
                               const char *want_mech, const char *gs2, const char *cbind64) {
  char *out = take(f); /* header */
  free(out);
  feed(f, HDR_S);
  char feat[2048];
  snprintf(feat, sizeof feat,
           "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s"
           "</mechanisms>%s</stream:features>",
           mechs, extra);
  feed(f, feat);
  out = take(f);
  char want[128];
  snprintf(want, sizeof want, "mechanism='%s'", want_mech);
  if (!strstr(out, want)) fail_msg("expected %s in %s", want, out);
  char *first64 = inner(out, "auth");
  free(out);
  size_t n;
  char *first = b64d(first64, &n);
  free(first64);
  scram_first(sv, first, "pencil", 4096, gs2);
  free(first);
  char *sf64 = b64e(sv->server_first, strlen(sv->server_first));
  char chal[1024];
  snprintf(chal, sizeof chal,
           "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</challenge>", sf64);
  free(sf64);
  feed(f, chal);
  out = take(f);
  char *final64 = inner(out, "response");
  assert_non_null(final64);
  free(out);
  char *final = b64d(final64, &n);
  free(final64);
  char *v64 = scram_final(sv, final, cbind64);
  free(final);
  return v64;
}

static char *scram_negotiate(fx *f, scram_srv *sv, const char *mechs, const char *want_mech,
                             const char *gs2, const char *cbind64) {
  return scram_negotiate_x(f, sv, mechs, "", want_mech, gs2, cbind64);
}

static void finish_bind(fx *f) {
  char *out = take(f);
  assert_non_null(strstr(out, "<stream:stream"));
  free(out);
  feed(f, HDR_S);
  feed(f, "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>");
  out = take(f);
  const char *id = strstr(out, "id='");
  assert_non_null(id);
  char idv[64];
  snprintf(idv, sizeof idv, "%.*s", (int)(strchr(id + 4, '\'') - id - 4), id + 4);
  free(out);
  char res[512];
  snprintf(res, sizeof res,
           "<iq type='result' id='%s'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
           "<jid>alice@localhost/r</jid></bind></iq>",
           idv);
  feed(f, res);
}

static void test_scram_sha256_full_login(void **state) {
  fx *f = *state;
  unsigned char exporter[32];
  memset(exporter, 0x42, sizeof exporter);
  /* TLS 1.3 with exporter data, server offers no -PLUS: gs2 'y' flag. */
  epode_tls_info tls = {0x0304, NULL, 0, exporter, sizeof exporter, NULL, 0};
  start(f, &tls);
  scram_srv sv = {EVP_sha256(), 32, "", "", "", {0}};
  char *v64 = scram_negotiate(f, &sv,
                              "<mechanism>PLAIN</mechanism><mechanism>SCRAM-SHA-1</mechanism>"
                              "<mechanism>SCRAM-SHA-256</mechanism>",
                              "SCRAM-SHA-256", "y,,", "eSws");
  char succ[512];
  snprintf(succ, sizeof succ, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</success>",
           v64);
  free(v64);
  feed(f, succ);
  assert_int_equal(epode_session_failure(f->s)->err, EPODE_OK);
  finish_bind(f);
  assert_int_equal(f->ready, 1);
  assert_string_equal(epode_session_jid(f->s), "alice@localhost/r");
  /* Traffic log: the SASL payloads never appear. */
  assert_non_null(strstr(f->log, "[redacted]"));
  assert_null(strstr(f->log, "r=")); /* no SCRAM attribute in clear */
}

/* Keep the derived keys instead of the password (Strophe.js/Converse do):
 * a second login with the keys alone passes the independent server. */
static void test_scram_derived_keys(void **state) {
  fx *f = *state;
  epode_tls_info tls = {0x0304, NULL, 0, NULL, 0, NULL, 0};
  start(f, &tls);
  scram_srv sv = {EVP_sha256(), 32, "", "", "", {0}};
  char *v64 = scram_negotiate(f, &sv, "<mechanism>SCRAM-SHA-256</mechanism>", "SCRAM-SHA-256",
                              "n,,", "biws");
  char succ[512];
  snprintf(succ, sizeof succ, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</success>",
           v64);
  feed(f, succ);
  epode_scram_keys keys;
  assert_int_equal(epode_session_scram_keys(f->s, &keys), EPODE_OK);
  assert_string_equal(keys.hash, "SHA-256");
  assert_int_equal(keys.iterations, 4096);
  assert_int_equal(keys.key_len, 32);
  assert_int_equal(keys.salt_len, 16);
  assert_memory_equal(keys.salt, "NaCl-salt-16byte", 16);
  epode_session_free(f->s);
  f->s = NULL;

  /* The keys, no password. */
  epode_config_set_password(f->cfg, NULL);
  assert_int_equal(epode_config_set_scram_keys(f->cfg, &keys), EPODE_OK);
  start(f, &tls);
  scram_srv sv2 = {EVP_sha256(), 32, "", "", "", {0}};
  char *v64b = scram_negotiate(f, &sv2, "<mechanism>SCRAM-SHA-256</mechanism>"
                                        "<mechanism>PLAIN</mechanism>",
                               "SCRAM-SHA-256", "n,,", "biws");
  snprintf(succ, sizeof succ, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</success>",
           v64b);
  feed(f, succ);
  assert_int_equal(epode_session_failure(f->s)->err, EPODE_OK);
  finish_bind(f);
  assert_int_equal(f->ready, 1);
  free(v64);
  free(v64b);
  /* A login that did not use SCRAM has no keys to give. */
  epode_session_free(f->s);
  f->s = NULL;
  assert_int_equal(epode_config_set_scram_keys(f->cfg, NULL), EPODE_OK);
  assert_int_equal(epode_config_set_password(f->cfg, "pencil"), EPODE_OK);
  f->ready = 0;
  plain_ready(f);
  assert_int_equal(epode_session_scram_keys(f->s, &keys), EPODE_ERR_NOTFOUND);
}

static void test_scram_plus_tls_unique(void **state) {
  fx *f = *state;
  unsigned char unique[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  epode_tls_info tls = {0x0303, unique, sizeof unique, NULL, 0, NULL, 0};
  start(f, &tls);
  scram_srv sv = {EVP_sha256(), 32, "", "", "", {0}};
  /* base64("p=tls-unique,," + unique) */
  char cb[64];
  memcpy(cb, "p=tls-unique,,", 14);
  memcpy(cb + 14, unique, sizeof unique);
  char *cb64 = b64e(cb, 14 + sizeof unique);
  char *v64 = scram_negotiate(f, &sv,
                              "<mechanism>SCRAM-SHA-1</mechanism><mechanism>SCRAM-SHA-256-PLUS"
                              "</mechanism><mechanism>SCRAM-SHA-256</mechanism>",
                              "SCRAM-SHA-256-PLUS", "p=tls-unique,,", cb64);
  free(cb64);
  char succ[512];
  snprintf(succ, sizeof succ, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</success>",
           v64);
  free(v64);
  feed(f, succ);
  assert_int_equal(epode_session_failure(f->s)->err, EPODE_OK);
  finish_bind(f);
  assert_int_equal(f->ready, 1);
}

/* No real server in the test harness binds with tls-exporter or
 * tls-server-end-point over legacy SASL: these run against the scripted
 * (independent) SCRAM server here, which advertises them with XEP-0440. */
static void scripted_plus(fx *f, const char *type, int version) {
  unsigned char unique[12], exporter[32], endpoint[32];
  memset(unique, 0x11, sizeof unique);
  memset(exporter, 0x22, sizeof exporter);
  memset(endpoint, 0x33, sizeof endpoint);
  epode_tls_info tls = {version,  unique,   sizeof unique, exporter, sizeof exporter,
                        endpoint, sizeof endpoint};
  start(f, &tls);
  scram_srv sv = {EVP_sha256(), 32, "", "", "", {0}};
  const unsigned char *data = !strcmp(type, "tls-exporter") ? exporter : endpoint;
  char hdr[64];
  snprintf(hdr, sizeof hdr, "p=%s,,", type);
  char cb[128];
  size_t hl = strlen(hdr);
  memcpy(cb, hdr, hl);
  memcpy(cb + hl, data, 32);
  char *cb64 = b64e(cb, hl + 32);
  char extra[256];
  snprintf(extra, sizeof extra,
           "<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'><channel-binding type='%s'/>"
           "</sasl-channel-binding>",
           type);
  char *v64 = scram_negotiate_x(f, &sv,
                                "<mechanism>SCRAM-SHA-256</mechanism>"
                                "<mechanism>SCRAM-SHA-256-PLUS</mechanism>",
                                extra, "SCRAM-SHA-256-PLUS", hdr, cb64);
  free(cb64);
  char succ[512];
  snprintf(succ, sizeof succ, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</success>",
           v64);
  free(v64);
  feed(f, succ);
  assert_int_equal(epode_session_failure(f->s)->err, EPODE_OK);
  finish_bind(f);
  assert_int_equal(f->ready, 1);
}

static void test_scripted_server_scram_plus_tls_exporter(void **state) {
  scripted_plus(*state, "tls-exporter", 0x0304);
}

static void test_scripted_server_scram_plus_tls_server_end_point(void **state) {
  /* TLS 1.2 with tls-unique available too: the server's list decides. */
  scripted_plus(*state, "tls-server-end-point", 0x0303);
}

static void test_scram_wrong_server_signature(void **state) {
  fx *f = *state;
  epode_tls_info tls = {0x0304, NULL, 0, NULL, 0, NULL, 0};
  start(f, &tls);
  scram_srv sv = {EVP_sha1(), 20, "", "", "", {0}};
  char *v64 = scram_negotiate(f, &sv, "<mechanism>SCRAM-SHA-1</mechanism>", "SCRAM-SHA-1", "n,,",
                              "biws");
  free(v64);
  char *bad = b64e("v=AAAAAAAAAAAAAAAAAAAAAAAAAAA=", 30);
  char succ[512];
  snprintf(succ, sizeof succ, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</success>",
           bad);
  free(bad);
  feed(f, succ);
  const epode_failure *fl = epode_session_failure(f->s);
  assert_int_equal(fl->err, EPODE_ERR_SASL_SIGNATURE);
  assert_string_equal(fl->mechanism, "SCRAM-SHA-1");
  assert_int_equal(epode_session_state(f->s), EPODE_STATE_CLOSED);
  assert_int_equal(f->ready, 0);
  assert_int_equal(f->closed, 1);
}

static void test_scram_success_without_final(void **state) {
  fx *f = *state;
  epode_tls_info tls = {0x0304, NULL, 0, NULL, 0, NULL, 0};
  start(f, &tls);
  scram_srv sv = {EVP_sha256(), 32, "", "", "", {0}};
  char *v64 = scram_negotiate(f, &sv, "<mechanism>SCRAM-SHA-256</mechanism>", "SCRAM-SHA-256",
                              "n,,", "biws");
  free(v64);
  feed(f, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
  assert_int_equal(epode_session_failure(f->s)->err, EPODE_ERR_SASL_SIGNATURE);
  assert_int_equal(f->ready, 0);
}

/* Gets a session to READY over PLAIN (direct TLS). */
static void plain_ready(fx *f) {
  epode_tls_info tls = {0x0304, NULL, 0, NULL, 0, NULL, 0};
  start(f, &tls);
  free(take(f));
  feed(f, HDR_S);
  feed(f, "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
          "<mechanism>PLAIN</mechanism></mechanisms></stream:features>");
  free(take(f));
  feed(f, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
  finish_bind(f);
  assert_int_equal(f->ready, 1);
}

static void on_iq(epode_session *s, const epode_stanza *reply, epode_err err, void *ud) {
  fx *f = ud;
  f->iq_calls++;
  f->iq_err = err;
  snprintf(f->iq_reply_type, sizeof f->iq_reply_type, "%s",
           reply ? epode_stanza_type(reply) : "none");
}

static void test_iq_reply_and_timeout(void **state) {
  fx *f = *state;
  plain_ready(f);
  epode_stanza *iq;
  assert_int_equal(epode_iq_new(&iq, NULL, "get", "ping1"), EPODE_OK);
  epode_stanza *ping;
  assert_int_equal(epode_stanza_add_child_new(&ping, iq, "ping", "urn:xmpp:ping"), EPODE_OK);
  assert_int_equal(epode_session_send_iq(f->s, iq, 1000, on_iq, f), EPODE_OK);
  char *out = take(f);
  assert_non_null(strstr(out, "id='ping1'"));
  free(out);
  assert_int_equal(epode_session_next_deadline(f->s), (int64_t)(f->now + 1000));
  /* A reply with the right id from a stranger is not the answer. */
  feed(f, "<iq type='result' id='ping1' from='mallory@evil'/>");
  assert_int_equal(f->iq_calls, 0);
  free(take(f));
  feed(f, "<iq type='result' id='ping1' from='localhost'/>");
  assert_int_equal(f->iq_calls, 1);
  assert_int_equal(f->iq_err, EPODE_OK);
  assert_string_equal(f->iq_reply_type, "result");

  /* No id: one is generated; no answer: timeout. */
  epode_stanza_del_attr(iq, "id");
  assert_int_equal(epode_session_send_iq(f->s, iq, 500, on_iq, f), EPODE_OK);
  out = take(f);
  assert_non_null(strstr(out, "id='ep-"));
  free(out);
  f->now += 499;
  epode_session_tick(f->s, f->now);
  assert_int_equal(f->iq_calls, 1);
  f->now += 1;
  epode_session_tick(f->s, f->now);
  assert_int_equal(f->iq_calls, 2);
  assert_int_equal(f->iq_err, EPODE_ERR_TIMEOUT);
  assert_string_equal(f->iq_reply_type, "none");

  /* Pending at close: called once with CLOSED. */
  assert_int_equal(epode_session_send_iq(f->s, iq, 0, on_iq, f), EPODE_OK);
  epode_session_eof(f->s, f->now);
  assert_int_equal(f->iq_calls, 3);
  assert_int_equal(f->iq_err, EPODE_ERR_EOF);
  epode_stanza_free(iq);
}

static int h_count(epode_session *s, const epode_stanza *st, void *ud) {
  fx *f = ud;
  f->handler_calls++;
  return EPODE_HANDLER_KEEP;
}

static int h_once(epode_session *s, const epode_stanza *st, void *ud) {
  fx *f = ud;
  f->handler_calls += 100;
  /* Adding a handler from inside a handler: not called for this stanza. */
  epode_session_add_handler(s, "message", NULL, NULL, h_count, f);
  return EPODE_HANDLER_REMOVE;
}

static void test_handlers(void **state) {
  fx *f = *state;
  plain_ready(f);
  assert_int_equal(epode_session_add_handler(f->s, "message", NULL, "chat", h_count, f), EPODE_OK);
  assert_int_equal(epode_session_add_handler(f->s, NULL, "urn:example:x", NULL, h_once, f),
                   EPODE_OK);
  feed(f, "<message type='chat' from='bob@localhost'><body>x</body></message>");
  assert_int_equal(f->handler_calls, 1);
  feed(f, "<message type='normal' from='bob@localhost'><body>x</body></message>");
  assert_int_equal(f->handler_calls, 1);
  /* Child namespace matches; h_once removes itself and adds h_count. */
  feed(f, "<message type='chat' from='bob@localhost'><x xmlns='urn:example:x'/></message>");
  assert_int_equal(f->handler_calls, 102);
  feed(f, "<message type='chat' from='bob@localhost'><x xmlns='urn:example:x'/></message>");
  assert_int_equal(f->handler_calls, 104); /* two h_count, no h_once */
  assert_int_equal(epode_session_remove_handler(f->s, h_count, f), EPODE_OK);
  feed(f, "<message type='chat' from='bob@localhost'/>");
  assert_int_equal(f->handler_calls, 104);
  assert_int_equal(epode_session_remove_handler(f->s, h_count, f), EPODE_ERR_NOTFOUND);

  /* An iq get a handler takes gets no automatic error. */
  free(take(f));
  assert_int_equal(epode_session_add_handler(f->s, "iq", "urn:xmpp:ping", "get", h_count, f),
                   EPODE_OK);
  feed(f, "<iq type='get' id='p' from='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
  assert_int_equal(f->handler_calls, 105);
  assert_int_equal(epode_session_output_len(f->s), 0);
}

static int timed(epode_session *s, void *ud) {
  fx *f = ud;
  return ++f->timed_calls < 3 ? EPODE_HANDLER_KEEP : EPODE_HANDLER_REMOVE;
}

static void test_timed_handlers(void **state) {
  fx *f = *state;
  /* Only the timed handler's deadline here (keepalive has its own test). */
  assert_int_equal(epode_config_set_keepalive(f->cfg, 0, 0), EPODE_OK);
  plain_ready(f);
  assert_int_equal(epode_session_add_timed_handler(f->s, 100, timed, f), EPODE_OK);
  assert_int_equal(epode_session_next_deadline(f->s), (int64_t)(f->now + 100));
  for (int i = 0; i < 10; i++) {
    f->now += 100;
    epode_session_tick(f->s, f->now);
  }
  assert_int_equal(f->timed_calls, 3);
  assert_int_equal(epode_session_next_deadline(f->s), -1);
}

static void test_output_bound(void **state) {
  fx *f = *state;
  assert_int_equal(epode_config_set_limit(f->cfg, EPODE_LIMIT_OUTPUT_BYTES, 4096), EPODE_OK);
  plain_ready(f);
  epode_stanza *m;
  char body[1000];
  memset(body, 'x', sizeof body - 1);
  body[sizeof body - 1] = '\0';
  assert_int_equal(epode_message_new(&m, NULL, "chat", "bob@localhost", body), EPODE_OK);
  epode_err e = EPODE_OK;
  int sent = 0;
  while (!e && sent < 100) {
    e = epode_session_send(f->s, m);
    if (!e) sent++;
  }
  assert_int_equal(e, EPODE_ERR_QUEUE_FULL);
  assert_true(sent >= 3 && sent < 5);
  /* Once the transport takes the bytes there is room again. */
  free(take(f));
  assert_int_equal(epode_session_send(f->s, m), EPODE_OK);
  epode_stanza_free(m);
}

static void test_close_timeout(void **state) {
  fx *f = *state;
  plain_ready(f);
  assert_int_equal(epode_session_close(f->s), EPODE_OK);
  assert_int_equal(epode_session_state(f->s), EPODE_STATE_CLOSING);
  /* Sending while closing is refused. */
  epode_stanza *m;
  assert_int_equal(epode_message_new(&m, NULL, NULL, "bob@localhost", "late"), EPODE_OK);
  assert_int_equal(epode_session_send(f->s, m), EPODE_ERR_STATE);
  epode_stanza_free(m);
  f->now += 5000;
  epode_session_tick(f->s, f->now);
  assert_int_equal(epode_session_state(f->s), EPODE_STATE_CLOSED);
  assert_int_equal(f->closed, 1);
  assert_int_equal(epode_session_failure(f->s)->err, EPODE_OK);
}

static void on_output(epode_session *s, void *ud) {
  fx *f = ud;
  f->handler_calls++;
}

static void test_output_cb_and_abort(void **state) {
  fx *f = *state;
  plain_ready(f);
  epode_session_set_output_cb(f->s, on_output, f);
  /* Output made while receiving is not announced: the host looks anyway. */
  feed(f, "<iq type='get' id='x' from='localhost'><q xmlns='urn:unknown'/></iq>");
  assert_int_equal(f->handler_calls, 0);
  assert_true(epode_session_output_len(f->s) > 0);
  free(take(f));
  epode_stanza *m;
  assert_int_equal(epode_message_new(&m, NULL, "chat", "bob@localhost", "hi"), EPODE_OK);
  assert_int_equal(epode_session_send(f->s, m), EPODE_OK);
  epode_stanza_free(m);
  assert_int_equal(f->handler_calls, 1);
  free(take(f));
  /* The transport fails: the session ends with that failure, writes nothing. */
  assert_int_equal(epode_session_abort(f->s, EPODE_ERR_TLS, "bad record mac", f->now), EPODE_OK);
  assert_int_equal(epode_session_state(f->s), EPODE_STATE_CLOSED);
  assert_int_equal(epode_session_failure(f->s)->err, EPODE_ERR_TLS);
  assert_string_equal(epode_session_failure(f->s)->detail, "bad record mac");
  assert_int_equal(epode_session_output_len(f->s), 0);
  assert_int_equal(f->closed, 1);
}

/* Keepalive: silence → an XEP-0199 ping; data resets the clock; more
 * silence after the probe → the connection is declared dead. */
static void test_keepalive(void **state) {
  fx *f = *state;
  assert_int_equal(epode_config_set_keepalive(f->cfg, 10000, 3000), EPODE_OK);
  plain_ready(f);
  free(take(f));
  assert_int_equal(epode_session_next_deadline(f->s), (int64_t)(f->now + 10000));
  f->now += 9999;
  epode_session_tick(f->s, f->now);
  assert_int_equal(epode_session_output_len(f->s), 0);
  f->now += 1;
  epode_session_tick(f->s, f->now);
  char *out = take(f);
  assert_non_null(strstr(out, "<ping xmlns='urn:xmpp:ping'/>"));
  const char *idp = strstr(out, "id='");
  assert_non_null(idp);
  char reply[128];
  snprintf(reply, sizeof reply, "<iq type='result' id='%.*s' from='localhost'/>",
           (int)(strchr(idp + 4, '\'') - idp - 4), idp + 4);
  free(out);
  /* The answer (any data) resets the clock. */
  f->now += 2000;
  feed(f, reply);
  assert_int_equal(epode_session_next_deadline(f->s), (int64_t)(f->now + 10000));
  /* Silence again, the probe goes unanswered: dead within idle + timeout. */
  f->now += 10000;
  epode_session_tick(f->s, f->now);
  free(take(f));
  f->now += 2999;
  epode_session_tick(f->s, f->now);
  assert_int_equal(epode_session_state(f->s), EPODE_STATE_READY);
  f->now += 1;
  epode_session_tick(f->s, f->now);
  assert_int_equal(epode_session_state(f->s), EPODE_STATE_CLOSED);
  assert_int_equal(epode_session_failure(f->s)->err, EPODE_ERR_TIMEOUT);
  assert_non_null(strstr(epode_session_failure(f->s)->detail, "connection is dead"));
}

/* Every allocation failing in turn during a whole login: a clean error or
 * success, never a crash or leak (ASan checks the leaks). */
static void test_alloc_failures(void **state) {
  (void)state;
  int completed = 0;
  for (long n = 0; n < 2000 && !completed; n++) {
    epode_test_failmem fm;
    epode_test_failmem_init(&fm, 0);
    epode_mem mem = fm.mem;
    epode_config *cfg;
    assert_int_equal(epode_config_new(&cfg, &mem), EPODE_OK);
    epode_config_set_jid(cfg, "alice@localhost");
    epode_config_set_password(cfg, "pencil");
    /* Armed once the config is set up: the (n+1)th allocation from here fails. */
    fm.calls = 0, fm.fail_at = n + 1;
    epode_session *s = NULL;
    epode_err e = epode_session_new(&s, cfg);
    if (e) {
      assert_int_equal(e, EPODE_ERR_NOMEM);
      assert_null(s);
      epode_config_free(cfg);
      continue;
    }
    epode_tls_info tls = {0x0304, NULL, 0, NULL, 0, NULL, 0};
    epode_session_start(s, 0, &tls);
    const char *steps[] = {
        HDR_S,
        "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
        "<mechanism>PLAIN</mechanism></mechanisms></stream:features>",
        "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
        HDR_S,
        "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>",
    };
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
      size_t len;
      epode_session_peek_output(s, &len);
      epode_session_consume_output(s, len);
      epode_session_recv(s, steps[i], strlen(steps[i]), 0);
    }
    if (epode_session_state(s) == EPODE_STATE_BINDING) completed = 1;
    else
      assert_int_equal(epode_session_state(s), EPODE_STATE_CLOSED);
    epode_session_free(s);
    fm.fail_at = 0;
    epode_config_free(cfg);
  }
  assert_true(completed);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_scram_sha256_full_login, setup, teardown),
      cmocka_unit_test_setup_teardown(test_scram_derived_keys, setup, teardown),
      cmocka_unit_test_setup_teardown(test_scram_plus_tls_unique, setup, teardown),
      cmocka_unit_test_setup_teardown(test_scripted_server_scram_plus_tls_exporter, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_scripted_server_scram_plus_tls_server_end_point, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_scram_wrong_server_signature, setup, teardown),
      cmocka_unit_test_setup_teardown(test_scram_success_without_final, setup, teardown),
      cmocka_unit_test_setup_teardown(test_iq_reply_and_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_handlers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timed_handlers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_output_bound, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_output_cb_and_abort, setup, teardown),
      cmocka_unit_test_setup_teardown(test_keepalive, setup, teardown),
      cmocka_unit_test(test_alloc_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
