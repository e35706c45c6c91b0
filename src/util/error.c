#include "epode/error.h"

const char *epode_strerror(epode_err err) {
  switch (err) {
#define EPODE__ERR_MSG(name, value, msg) \
  case EPODE_ERR_##name:                 \
    return msg;
    EPODE_ERR_MAP(EPODE__ERR_MSG)
#undef EPODE__ERR_MSG
  }
  return "unknown error";
}

const char *epode_err_name(epode_err err) {
  switch (err) {
#define EPODE__ERR_NAME(name, value, msg) \
  case EPODE_ERR_##name:                  \
    return "EPODE_ERR_" #name;
    EPODE_ERR_MAP(EPODE__ERR_NAME)
#undef EPODE__ERR_NAME
  }
  return "EPODE_ERR_UNKNOWN";
}
