/* The benchmark's message corpus, shared by the scripted server (which
 * blasts it), the expat bound (which parses it in memory) and the outbound
 * clients (which build the same text through each library's API).
 *
 * Each inbound message is about 200 bytes, with escaped characters
 * (&amp; &lt; &gt; &quot; &apos;) and non-ASCII text (Latin-1 accents, Greek,
 * CJK), so that the parsers do real unescaping and UTF-8 work. */
#ifndef BENCH_MSGS_H
#define BENCH_MSGS_H

#include <stddef.h>

#define BENCH_DOMAIN "bench.example"
#define BENCH_USER "bench"
#define BENCH_PASSWORD "bench-password"
#define BENCH_PEER "alice@bench.example/phone"
/* Distinct messages in the pre-built block the server repeats. */
#define BENCH_BLOCK_MSGS 1000u

/* Writes inbound message `i` (a complete <message/> element, XML-escaped)
 * into `out`. `xmlns` adds xmlns='jabber:client' (WebSocket framing).
 * Returns its length, or 0 if `cap` is too small. */
size_t bench_msg_xml(char *out, size_t cap, unsigned i, int xmlns);
/* The unescaped body text of message `i` (what a handler reads), for the
 * outbound clients to hand to their library. Returns its length. */
size_t bench_msg_body(char *out, size_t cap, unsigned i);
/* The stream header a server sends (TCP framing). */
extern const char bench_stream_header[];

#endif
