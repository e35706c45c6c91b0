/* Every hard limit in epode, with the reason for its default value. Each
 * EPODE_LIMIT_* default can be changed per connection with
 * epode_config_set_limit(); the rest are fixed. */
#ifndef EPODE_SRC_EPODE_LIMITS_H
#define EPODE_SRC_EPODE_LIMITS_H

/* One top-level stanza, in bytes as received. Servers commonly cap stanzas
 * at 256 KiB (Prosody's c2s_stanza_size_limit, ejabberd's max_stanza_size
 * 65536..262144); 1 MiB leaves room for large vCards and bundles while
 * bounding what a hostile server can make us hold. */
#define EPODE_DEFAULT_MAX_STANZA_BYTES (1024u * 1024u)
/* Nesting depth within a stanza. Real stanzas nest < 10 deep (forwarded
 * carbons of MAM results reach ~8); 64 stops stack-like blowups. */
#define EPODE_DEFAULT_MAX_DEPTH 64u
/* Attributes on one element. Real elements carry < 10; 64 bounds the cost
 * of the linear attribute lookup and of hostile attribute floods. */
#define EPODE_DEFAULT_MAX_ATTRS 64u
/* Stanzas queued before the session is ready. Enough for a script sending a
 * batch, small enough that a never-ready session cannot grow without bound. */
#define EPODE_DEFAULT_SEND_QUEUE 1024u
/* Output bytes waiting for the transport: 8 MiB, several seconds of a fast
 * link, so a peer that stops reading shows up as EPODE_ERR_QUEUE_FULL. */
#define EPODE_DEFAULT_OUTPUT_BYTES (8u * 1024u * 1024u)
/* SASL challenges per exchange. SCRAM needs 2, DIGEST-MD5 2; 16 stops an
 * endless challenge loop. */
#define EPODE_DEFAULT_SASL_ROUNDS 16u
/* RFC 7677 requires at least 4096 SCRAM iterations. */
#define EPODE_DEFAULT_SCRAM_ITER_MIN 4096u
/* A hostile server can make the client burn CPU with a huge count; 10
 * million PBKDF2 rounds is ~1-3 s of SHA-256 on a small machine. */
#define EPODE_DEFAULT_SCRAM_ITER_MAX 10000000u

/* XEP-0198: ask for an acknowledgement after this many stanzas, or this
 * long after the oldest unacknowledged one — a few stanzas' worth of
 * uncertainty at most, without an <r/> per stanza. */
#define EPODE_DEFAULT_SM_ACK_EVERY 5u
#define EPODE_DEFAULT_SM_ACK_MS 2000u

/* Tracked stanzas waiting for an acknowledgement (or, without XEP-0198,
 * for the end of the session): each costs a small record, so 65536 is a
 * few MiB at most, and a server that never acknowledges cannot make the
 * list grow without bound. */
#define EPODE_DEFAULT_UNACKED 65536u

/* Keepalive: ask for a sign of life after 90 s of silence (below the
 * 2-5 minute idle timeouts common in NATs and servers) and declare the
 * connection dead 30 s later. */
#define EPODE_DEFAULT_KEEPALIVE_IDLE 90000u
#define EPODE_DEFAULT_KEEPALIVE_TIMEOUT 30000u
/* Reconnection backoff: a second first (long enough not to hammer a server
 * that is restarting, short enough for a dropped Wi-Fi), a minute at most. */
#define EPODE_DEFAULT_RECONNECT_INITIAL 1000u
#define EPODE_DEFAULT_RECONNECT_MAX 60000u

/* Timeouts, milliseconds. */
#define EPODE_DEFAULT_TIMEOUT_CONNECT 30000u
#define EPODE_DEFAULT_TIMEOUT_TLS 30000u
#define EPODE_DEFAULT_TIMEOUT_NEGOTIATION 60000u
#define EPODE_DEFAULT_TIMEOUT_IQ 60000u
#define EPODE_DEFAULT_TIMEOUT_CLOSE 5000u

/* Fixed limits. */
/* Stream header attributes we keep (from, to, id, version, xml:lang). */
#define EPODE_MAX_STREAM_ID_BYTES 1024u
/* A stream or SASL error's <text/>: enough for any human-readable reason. */
#define EPODE_MAX_ERROR_TEXT_BYTES 4096u
/* RFC 7622: each JID part at most 1023 bytes. */
#define EPODE_MAX_JID_PART_BYTES 1023u
#define EPODE_MAX_JID_BYTES (3u * 1023u + 2u)

#endif
