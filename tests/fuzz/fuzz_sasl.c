/* Fuzz target: each built-in SASL mechanism's handling of server messages
 * (plain.c, scram.c, digest_md5.c, anonymous.c, oauthbearer.c, external.c
 * in src/sasl): start() with fixed credentials, then every piece of the
 * input as a challenge for step(), or for success() when marked.
 *
 * Input: byte 0 picks the mechanism (mod 11), byte 1 the parameters
 * (TLS 1.2/1.3 with channel-binding data, advertised cb types, an authzid,
 * whether -PLUS was offered, cached SCRAM keys); the rest is the server's
 * messages separated by "\x00\xff". A piece whose first byte is 'S' goes to
 * success() (without the 'S'), others to step(). SCRAM iterations are
 * bounded to 1..64 so PBKDF2 stays cheap. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "epode/sasl.h"
#include "fuzz_common.h"
#include "sasl/sasl.h"
#include "util/buf.h"

static const epode__sasl_mech *const mechs[] = {
    &epode__sasl_plain,
    &epode__sasl_scram_sha1,
    &epode__sasl_scram_sha256,
    &epode__sasl_scram_sha512,
    &epode__sasl_scram_sha1_plus,
    &epode__sasl_scram_sha256_plus,
    &epode__sasl_scram_sha512_plus,
    &epode__sasl_digest_md5,
    &epode__sasl_anonymous,
    &epode__sasl_oauthbearer,
    &epode__sasl_external,
};
#define NMECHS (sizeof mechs / sizeof *mechs)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  uint8_t which = fz_byte(&in), opts = fz_byte(&in);
  const epode__sasl_mech *m = mechs[which % NMECHS];
  unsigned rng = 1;

  unsigned char unique[12], exporter[32], endpoint[32];
  memset(unique, 0x11, sizeof unique);
  memset(exporter, 0x22, sizeof exporter);
  memset(endpoint, 0x33, sizeof endpoint);
  epode_tls_info tls = {(opts & 1) ? 0x0304 : 0x0303,
                        unique,
                        sizeof unique,
                        exporter,
                        sizeof exporter,
                        endpoint,
                        sizeof endpoint};
  static const char *const cb_all[] = {"tls-unique", "tls-exporter", "tls-server-end-point", NULL};
  static const char *const cb_none[] = {NULL};
  static const char *const offered[] = {"SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "PLAIN", NULL};

  epode_scram_keys keys;
  memset(&keys, 0, sizeof keys);
  memcpy(keys.hash, "SHA-1", 6);
  memcpy(keys.salt, "QSXCR+Q6sek8bf92", 16);
  keys.salt_len = 16;
  keys.iterations = 16;
  keys.key_len = 20;
  memset(keys.client_key, 0x44, 20);
  memset(keys.server_key, 0x55, 20);
  epode_scram_keys derived;

  epode__sasl_params p;
  memset(&p, 0, sizeof p);
  p.authcid = "user";
  p.authzid = (opts & 2) ? "admin@example.org" : NULL;
  p.password = (opts & 64) ? NULL : "pencil";
  p.domain = "example.org";
  p.tls = (opts & 4) ? NULL : &tls;
  p.server_cb_types = (opts & 8) ? cb_all : (opts & 16) ? cb_none : NULL;
  p.server_offers_plus = (opts & 32) != 0;
  p.random = fz_random;
  p.random_ud = &rng;
  p.scram_iter_min = 1;
  p.scram_iter_max = 64;
  p.oauth_token = (opts & 128) ? NULL : "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==";
  p.have_client_cert = 1;
  p.scram_keys = (opts & 64) ? &keys : NULL;
  p.scram_keys_out = &derived;
  p.server_mechs = (opts & 8) ? offered : NULL;

  epode__buf out;
  epode__buf_init(&out, NULL, 1 << 20);
  void *state = NULL;
  int has_initial = 0;
  epode_err e = m->start(&state, &p, &out, &has_initial);
  if (e != EPODE_OK) {
    if (state) {
      (void)m->errmsg(state);
      m->free(state);
    }
    epode__buf_free(&out);
    return 0;
  }
  int done = 0;
  char why[256] = "";
  const uint8_t *piece;
  size_t plen;
  while (fz_next_piece(&in, &piece, &plen)) {
    if (plen && piece[0] == 'S') {
      e = m->success(state, plen > 1 ? piece + 1 : NULL, plen - 1);
      done = 1;
    } else {
      epode__buf_reset(&out);
      e = m->step(state, piece, plen, &out);
    }
    if (e != EPODE_OK) {
      if (!m->errmsg(state)) abort();
      snprintf(why, sizeof why, "%s", m->errmsg(state));
      /* Failed exchanges refuse everything after. */
      if (m->step(state, (const unsigned char *)"x", 1, &out) == EPODE_OK) abort();
      break;
    }
    if (done) {
      if (m->step(state, (const unsigned char *)"x", 1, &out) == EPODE_OK) abort();
      break;
    }
  }
  if (getenv("EPODE_FUZZ_DEBUG"))
    fprintf(stderr, "sasl %s: %s%s%s\n", m->name, epode_err_name(e), e ? ": " : "",
            e ? why : (done ? " (success verified)" : ""));
  m->free(state);
  epode__buf_free(&out);
  return 0;
}
