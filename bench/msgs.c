#include "msgs.h"

#include <stdio.h>

const char bench_stream_header[] =
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' id='bench-stream' from='" BENCH_DOMAIN
    "' version='1.0' xml:lang='en'>";

/* The same sentence escaped (for the wire) and unescaped (for the API). */
static const char body_xml[] =
    "Caf\xc3\xa9 &amp; cr\xc3\xa8me: 3 &lt; 4 &gt; 2, &quot;quoted&quot; "
    "&apos;x&apos; \xce\x95\xce\xbb\xce\xbb\xce\xb7\xce\xbd\xce\xb9\xce"
    "\xba\xce\xac \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e";
static const char body_txt[] = "Caf\xc3\xa9 & cr\xc3\xa8me: 3 < 4 > 2, \"quoted\" 'x' "
                               "\xce\x95\xce\xbb\xce\xbb\xce\xb7\xce\xbd\xce\xb9\xce\xba\xce\xac "
                               "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e";

size_t bench_msg_xml(char *out, size_t cap, unsigned i, int xmlns) {
  int n = snprintf(out, cap,
                   "<message%s from='" BENCH_PEER "' to='" BENCH_USER "@" BENCH_DOMAIN
                   "/bench' type='chat' id='m%07u'><body>#%07u %s</body></message>",
                   xmlns ? " xmlns='jabber:client'" : "", i, i, body_xml);
  return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

size_t bench_msg_body(char *out, size_t cap, unsigned i) {
  int n = snprintf(out, cap, "#%07u %s", i, body_txt);
  return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}
