/* The public SASL extension types, as the library sees them. */
#ifndef EPODE_SRC_SASL_REGISTRY_H
#define EPODE_SRC_SASL_REGISTRY_H

#include "epode/sys/sasl.h"
#include "sasl/sasl.h"

/* Responses from a custom mechanism are bounded (1 MiB). */
#define EPODE__SASL_MAX_RESPONSE (1024u * 1024u)

struct epode_sasl_ctx {
  epode__sasl_params p;
  void *mech_ud;
  char err[256];
};

struct epode_sasl_out {
  epode__buf buf;
};

#endif
