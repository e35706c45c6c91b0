/* Keepalive and dead-connection detection (XEP-0199, or XEP-0198's <r/>).
 * Any data from the server proves the connection alive; after idle_ms of
 * silence we ask for some, and timeout_ms later without any the session
 * fails — so a dead TCP connection (a NAT that forgot us, a peer that
 * vanished) is noticed within idle_ms + timeout_ms. */
#include <string.h>

#include "session/session_int.h"
#include "util/alloc.h"

void epode__ka_received(epode_session *s) {
  s->last_rx = s->now;
  s->ka_deadline = 0;
}

int64_t epode__ka_deadline(const epode_session *s) {
  if (!s->cfg->ka_idle_ms || s->state != EPODE_STATE_READY) return -1;
  if (s->ka_deadline) return (int64_t)s->ka_deadline;
  return (int64_t)(s->last_rx + s->cfg->ka_idle_ms);
}

static void on_ping_reply(epode_session *s, const epode_stanza *reply, epode_err err, void *ud) {
  /* Any answer (even an error from a server without XEP-0199) was data
   * and reset the clock already; nothing else to do. */
  (void)s;
  (void)reply;
  (void)err;
  (void)ud;
}

void epode__ka_tick(epode_session *s) {
  if (!s->cfg->ka_idle_ms || s->state != EPODE_STATE_READY) return;
  if (s->ka_deadline) {
    if (s->now < s->ka_deadline) return;
    epode__session_fail(s, EPODE_ERR_TIMEOUT, NULL, NULL, NULL,
                        "the server sent nothing for %u ms, nor within %u ms of a keepalive "
                        "probe: the connection is dead",
                        (unsigned)s->cfg->ka_idle_ms, (unsigned)s->cfg->ka_timeout_ms);
    return;
  }
  if (s->now < s->last_rx + s->cfg->ka_idle_ms) return;
  epode__log(s->cfg, EPODE_LOG_DEBUG, "session", "idle for %u ms: keepalive probe",
             (unsigned)(s->now - s->last_rx));
  if (s->sm_enabled) {
    static const char r[] = "<r xmlns='urn:xmpp:sm:3'/>";
    if (!epode__session_write(s, r, sizeof r - 1)) epode__session_log_out(s, r, sizeof r - 1);
  } else {
    epode_stanza *iq = NULL, *ping;
    epode_err e = epode_iq_new(&iq, s->mem, "get", NULL);
    if (!e) e = epode_stanza_add_child_new(&ping, iq, "ping", "urn:xmpp:ping");
    /* The timeout is ours (below), not the iq's: no iq timeout. */
    if (!e) e = epode_session_send_iq(s, iq, s->cfg->ka_timeout_ms + 1000u, on_ping_reply, NULL);
    epode_stanza_free(iq);
    if (e) return; /* output full: the dead-connection check still runs */
  }
  s->ka_deadline = s->now + s->cfg->ka_timeout_ms;
}
