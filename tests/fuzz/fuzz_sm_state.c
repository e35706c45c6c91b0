/* Fuzz target: restoring XEP-0198 resumption state (src/session/sm_state.c).
 * The input is a saved state, from anyone (a file an attacker may have
 * edited). Invariants: a refused state leaves the session untouched (IDLE,
 * nothing kept); an accepted one saves back to exactly the same bytes and
 * restores again, and the session then starts normally. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "epode/epode.h"

static epode_config *config(void) {
  static epode_config *cfg;
  if (!cfg) {
    if (epode_config_new(&cfg, NULL) || epode_config_set_jid(cfg, "alice@localhost") ||
        epode_config_set_password(cfg, "secret"))
      abort();
  }
  return cfg;
}

static void on_delivery(epode_session *s, epode_delivery st, const char *id, void *ud) {
  (void)s;
  (void)st;
  (void)id;
  ++*(int *)ud;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  epode_session *s = NULL;
  if (epode_session_new(&s, config())) abort();
  int reports = 0;
  epode_err e = epode_session_restore(s, data, size, on_delivery, &reports);
  if (e) {
    if (e != EPODE_ERR_INVAL && e != EPODE_ERR_NOMEM) abort();
    if (epode_session_state(s) != EPODE_STATE_IDLE || epode_session_resumable(s) ||
        epode_session_sm_unacked(s))
      abort();
    epode_session_free(s);
    if (reports) abort();
    return 0;
  }
  if (!epode_session_resumable(s)) abort();
  char *saved;
  size_t len;
  if (epode_session_save(s, &saved, &len)) abort();
  if (len != size || memcmp(saved, data, size) != 0) abort();
  epode_session *t = NULL;
  if (epode_session_new(&t, config())) abort();
  if (epode_session_restore(t, saved, len, NULL, NULL)) abort();
  epode_free(epode_session_mem(s), saved);
  epode_tls_info tls = {0x0304, NULL, 0, NULL, 0, NULL, 0};
  if (epode_session_start(t, 1, &tls)) abort();
  size_t out;
  if (!epode_session_peek_output(t, &out) || !out) abort();
  epode_session_free(t);
  epode_session_free(s); /* restored tracked stanzas are reported failed */
  return 0;
}
