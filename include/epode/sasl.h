/* epode — choosing how to authenticate (SASL).
 *
 * Each configuration has its own mechanism registry: the built-in
 * mechanisms plus any the caller adds (include/epode/sys/sasl.h). The
 * session picks the mechanism to use as
 *
 *   offered by the server ∩ registered ∩ allow-list ∩ policy,
 *
 * highest priority first. Default priorities (higher wins):
 *
 *   EXTERNAL 60 (only with a client certificate configured)
 *   SCRAM-SHA-512-PLUS 49, SCRAM-SHA-256-PLUS 48, SCRAM-SHA-1-PLUS 47
 *   SCRAM-SHA-512 45, SCRAM-SHA-256 44, SCRAM-SHA-1 43
 *   OAUTHBEARER 35 (only with a token configured)
 *   DIGEST-MD5 30, PLAIN 20
 *   ANONYMOUS 10 (only for a JID without a localpart, or when allow-listed)
 *
 * Policy: a mechanism that sends a secret (PLAIN, OAUTHBEARER) is never used
 * over an unencrypted stream unless EPODE_CFG_ALLOW_PLAINTEXT is set; a
 * -PLUS mechanism needs channel-binding data of a type the server accepts:
 * one it lists (XEP-0440), or without a list, tls-unique on TLS 1.2 and
 * tls-exporter on TLS 1.3 — but on TLS 1.3 only if the server lists its
 * types or offers no -PLUS (servers that offer -PLUS on TLS 1.3 without a
 * list, like ejabberd 23.01, accept only a non-standard tls-unique).
 * With EXTERNAL and no authzid, the session is refused if the server binds
 * the certificate to another account than the configured JID.
 *
 * A failed authentication ends the session with EPODE_ERR_AUTH, the
 * server's condition and text, and the mechanism tried — it does not walk
 * down to weaker mechanisms unless epode_config_set_sasl_fallback() asked
 * for that. */
#ifndef EPODE_SASL_H
#define EPODE_SASL_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Restricts SASL to the mechanisms named in `list`, comma-separated
 * ("SCRAM-SHA-256,PLAIN"); their order does not matter (priorities do).
 * NULL or "" lifts the restriction. EPODE_ERR_INVAL for a malformed list
 * (empty item, a name with characters SASL does not allow, over 20 chars). */
epode_err epode_config_set_mechanisms(epode_config *cfg, const char *list);
/* Changes the priority of a registered mechanism (built-in or custom).
 * EPODE_ERR_NOTFOUND if no such mechanism is registered. */
epode_err epode_config_set_mechanism_priority(epode_config *cfg, const char *name, int priority);
/* After the server rejects a mechanism, try the next acceptable one instead
 * of failing (off by default: with it, a SCRAM failure may be followed by
 * PLAIN, which sends the password itself — over TLS only, by policy). */
epode_err epode_config_set_sasl_fallback(epode_config *cfg, int enable);
/* Authorization identity (XEP-0178 authzid, or "act as"); NULL for none. */
epode_err epode_config_set_authzid(epode_config *cfg, const char *authzid);
/* OAuth 2.0 bearer token for OAUTHBEARER (RFC 7628); NULL for none. Copied,
 * wiped when freed. */
epode_err epode_config_set_oauth_token(epode_config *cfg, const char *token);
/* A TLS client certificate for SASL EXTERNAL (XEP-0178): PEM certificate
 * (chain) file and its PEM private key file (`key_file` NULL: the key is in
 * `cert_file`). Checked when the connection starts (EPODE_ERR_TLS with a
 * detail if unreadable or the key does not match). */
epode_err epode_config_set_client_cert(epode_config *cfg, const char *cert_file,
                                       const char *key_file);
/* The same from a PKCS#12 file and its password (NULL for none). */
epode_err epode_config_set_client_pkcs12(epode_config *cfg, const char *p12_file,
                                         const char *password);

/* SCRAM keys derived from the password (RFC 5802 ClientKey and ServerKey),
 * which a client can keep instead of the password, as Strophe.js and
 * Converse do. They are tied to the hash, the salt and the iteration count
 * the server uses for the account. */
#define EPODE_SCRAM_MAX_KEY 64
#define EPODE_SCRAM_MAX_SALT 128
typedef struct epode_scram_keys {
  char hash[8];                    /* "SHA-1", "SHA-256" or "SHA-512" */
  unsigned char salt[EPODE_SCRAM_MAX_SALT];
  size_t salt_len;
  uint32_t iterations;
  unsigned char client_key[EPODE_SCRAM_MAX_KEY];
  unsigned char server_key[EPODE_SCRAM_MAX_KEY];
  size_t key_len;                  /* the hash's size: 20, 32 or 64 */
} epode_scram_keys;

/* Gives SCRAM keys to use instead of the password. They are used when the
 * server's salt, iteration count and the mechanism's hash match; otherwise
 * SCRAM needs the password (and fails without one, naming the mismatch).
 * NULL forgets them. Copied; wiped when freed. */
epode_err epode_config_set_scram_keys(epode_config *cfg, const epode_scram_keys *keys);

/* Writes the registered mechanisms, highest priority first, as a
 * comma-separated list into buf (NUL-terminated, truncated to size).
 * Returns the length the whole list needs, excluding the NUL. */
size_t epode_config_list_mechanisms(const epode_config *cfg, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
