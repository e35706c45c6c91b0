/* Fuzz target: JID parsing and validation (src/util/jid.c, RFC 7622). The
 * input is the JID string (NUL-terminated copy; embedded NULs cut it, as
 * in C). Invariants: validate() agrees with parse(); a parsed JID's bare and
 * full forms parse again to the same parts (normalisation is idempotent). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "epode/jid.h"

static int same(const char *a, const char *b) {
  if (!a || !b) return a == b;
  return strcmp(a, b) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = malloc(size + 1);
  if (!s) return 0;
  memcpy(s, data, size);
  s[size] = '\0';
  epode_jid *j = NULL;
  epode_err e = epode_jid_parse(&j, NULL, s);
  if ((e == EPODE_OK) != (epode_jid_validate(s) == EPODE_OK)) abort();
  if (e == EPODE_OK) {
    if (!j || !epode_jid_domain(j) || !epode_jid_bare(j) || !epode_jid_full(j)) abort();
    epode_jid *k = NULL;
    if (epode_jid_parse(&k, NULL, epode_jid_full(j)) != EPODE_OK) abort();
    if (!same(epode_jid_local(j), epode_jid_local(k)) ||
        !same(epode_jid_domain(j), epode_jid_domain(k)) ||
        !same(epode_jid_resource(j), epode_jid_resource(k)) ||
        !same(epode_jid_full(j), epode_jid_full(k)))
      abort();
    epode_jid_free(k);
    if (epode_jid_validate(epode_jid_bare(j)) != EPODE_OK) abort();
  } else if (j) {
    abort(); /* *out is NULL on failure */
  }
  epode_jid_free(j);
  free(s);
  return 0;
}
