/* Small helpers shared by the SASL mechanisms. */
#include <stdio.h>

#include "sasl/sasl_int.h"

void epode__sasl_errf(char *err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, EPODE__SASL_ERRMSG_SIZE, fmt, ap);
  va_end(ap);
}
