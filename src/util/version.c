#include "epode/epode.h"

const char *epode_version(void) { return EPODE_VERSION_STRING; }
