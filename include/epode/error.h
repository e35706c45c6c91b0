/* epode — error codes.
 *
 * Every fallible call returns an epode_err. EPODE_OK is 0; every error is
 * negative. The table below is the single source of truth: code, name and
 * the message epode_strerror() returns. Detail text for the last failure is
 * kept on the object that failed (epode_session_errmsg(), epode_conn_errmsg()),
 * never in thread-local storage. */
#ifndef EPODE_ERROR_H
#define EPODE_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* X(NAME, value, message) */
#define EPODE_ERR_MAP(X)                                                              \
  X(OK, 0, "success")                                                                 \
  X(NOMEM, -1, "out of memory")                                                       \
  X(INVAL, -2, "invalid argument")                                                    \
  X(STATE, -3, "call not valid in the object's current state")                       \
  X(NOTFOUND, -4, "not found")                                                        \
  X(LIMIT, -5, "a configured limit was exceeded")                                     \
  X(QUEUE_FULL, -6, "send queue is full")                                             \
  X(XML, -10, "malformed XML")                                                        \
  X(XML_RESTRICTED, -11, "XML construct not allowed in XMPP (DTD, entity, PI, comment)") \
  X(XML_UTF8, -12, "invalid UTF-8 in XML")                                            \
  X(XML_NS, -13, "undeclared or invalid XML namespace prefix")                       \
  X(JID, -20, "invalid JID")                                                          \
  X(BASE64, -21, "invalid base64")                                                    \
  X(PROTOCOL, -30, "XMPP protocol violation by the peer")                             \
  X(STREAM, -31, "stream error received from the server")                            \
  X(CLOSED, -32, "stream closed")                                                     \
  X(BIND, -33, "resource binding failed")                                             \
  X(TIMEOUT, -34, "timed out")                                                        \
  X(AUTH, -40, "authentication failed")                                               \
  X(SASL_NOMECH, -41, "no acceptable SASL mechanism offered by the server")         \
  X(SASL_PROTOCOL, -42, "SASL exchange violated by the server")                      \
  X(SASL_SIGNATURE, -43, "SCRAM server signature did not verify")                    \
  X(TLS_REQUIRED, -50, "the stream would not be encrypted and plaintext is not allowed") \
  X(TLS, -51, "TLS failure")                                                          \
  X(TLS_VERIFY, -52, "server certificate verification failed")                       \
  X(DNS, -60, "DNS resolution failed")                                                \
  X(CONNECT, -61, "could not connect to any server address")                         \
  X(IO, -62, "I/O error")                                                             \
  X(EOF, -63, "connection closed by the peer")                                        \
  X(SYS, -64, "system call failed")

typedef enum epode_err {
#define EPODE__ERR_ENUM(name, value, msg) EPODE_ERR_##name = value,
  EPODE_ERR_MAP(EPODE__ERR_ENUM)
#undef EPODE__ERR_ENUM
} epode_err;

#define EPODE_OK EPODE_ERR_OK

/* Static English message for an error code; never NULL. */
const char *epode_strerror(epode_err err);
/* Symbolic name ("EPODE_ERR_NOMEM"); never NULL. */
const char *epode_err_name(epode_err err);

#ifdef __cplusplus
}
#endif
#endif
