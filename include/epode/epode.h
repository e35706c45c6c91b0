/* epode — XMPP client library. Umbrella header: the stable public API. */
#ifndef EPODE_EPODE_H
#define EPODE_EPODE_H

#define EPODE_VERSION_MAJOR 0
#define EPODE_VERSION_MINOR 1
#define EPODE_VERSION_PATCH 0
#define EPODE_VERSION_STRING "0.1.0"

#include "base64.h"
#include "config.h"
#include "conn.h"
#include "error.h"
#include "jid.h"
#include "loop.h"
#include "mem.h"
#include "sasl.h"
#include "session.h"
#include "stanza.h"

#ifdef __cplusplus
extern "C" {
#endif
/* Run-time version ("0.1.0"). */
const char *epode_version(void);
#ifdef __cplusplus
}
#endif
#endif
