/* The XMPP stream parser: restricted XML, namespaces, UTF-8, limits,
 * arbitrary input splitting, stream restarts, fragment mode. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <pthread.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xml/parser.h"

#include "failmem.h"

#define HDR                                                                                        \
  "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "          \
  "from='example.com' id='s1' version='1.0' xml:lang='en'>"

/* ------------------------------------------------------------ recorder */

typedef struct rec {
  char *log; /* every event, serialised */
  size_t len, cap;
  int starts, stanzas, ends;
  epode__xml_parser *p;
  int reset_at_stanza;          /* reset() from the callback of stanza n (1-based) */
  int reset_at_start;           /* reset() from the n-th stream_start callback */
  epode_err fail_at_stanza_err; /* return this from stanza n = fail_at_stanza */
  int fail_at_stanza;
  epode_stanza *keep; /* the last stanza, kept when keep_last is set */
  int keep_last;
} rec;

static void logf_(rec *r, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  assert_true(n >= 0 && (size_t)n < sizeof tmp);
  if (r->len + (size_t)n + 1 > r->cap) {
    r->cap = (r->len + (size_t)n + 1) * 2;
    r->log = realloc(r->log, r->cap);
  }
  memcpy(r->log + r->len, tmp, (size_t)n + 1);
  r->len += (size_t)n;
}

static void log_str(rec *r, const char *s) {
  size_t n = strlen(s);
  if (r->len + n + 1 > r->cap) {
    r->cap = (r->len + n + 1) * 2;
    r->log = realloc(r->log, r->cap);
  }
  memcpy(r->log + r->len, s, n + 1);
  r->len += n;
}

static epode_err cb_start(void *ud, const char *name, const char *ns, const char *dns,
                          const char **attrs) {
  rec *r = ud;
  r->starts++;
  logf_(r, "START {%s}%s default=%s", ns, name, dns ? dns : "(none)");
  for (; attrs[0]; attrs += 2)
    logf_(r, " %s='%s'", attrs[0], attrs[1]);
  log_str(r, "\n");
  if (r->reset_at_start == r->starts) assert_int_equal(epode__xml_parser_reset(r->p), EPODE_OK);
  return EPODE_OK;
}

static epode_err cb_stanza(void *ud, epode_stanza *st) {
  rec *r = ud;
  r->stanzas++;
  char *s = NULL;
  assert_int_equal(epode_stanza_to_string(st, NULL, &s, NULL), EPODE_OK);
  log_str(r, "STANZA ");
  log_str(r, s);
  log_str(r, "\n");
  epode_free(epode_stanza_mem(st), s);
  if (r->keep_last) {
    epode_stanza_free(r->keep);
    r->keep = st;
  } else {
    epode_stanza_free(st);
  }
  if (r->reset_at_stanza == r->stanzas) assert_int_equal(epode__xml_parser_reset(r->p), EPODE_OK);
  if (r->fail_at_stanza == r->stanzas) return r->fail_at_stanza_err;
  return EPODE_OK;
}

static epode_err cb_end(void *ud) {
  rec *r = ud;
  r->ends++;
  log_str(r, "END\n");
  return EPODE_OK;
}

static const epode__xml_callbacks callbacks = {cb_start, cb_stanza, cb_end};

static epode__xml_parser *mk(rec *r, int mode, const epode__xml_limits *lim) {
  memset(r, 0, sizeof *r);
  assert_int_equal(epode__xml_parser_new(&r->p, NULL, lim, mode, &callbacks, r), EPODE_OK);
  return r->p;
}

static void done(rec *r) {
  epode__xml_parser_free(r->p);
  epode_stanza_free(r->keep);
  free(r->log);
  memset(r, 0, sizeof *r);
}

/* Feeds `len` bytes in chunks of `chunk` (0: all at once); stops at the first
 * error. */
static epode_err feed_chunks(epode__xml_parser *p, const char *s, size_t len, size_t chunk) {
  if (!chunk) chunk = len ? len : 1;
  for (size_t off = 0; off < len; off += chunk) {
    size_t n = len - off < chunk ? len - off : chunk;
    epode_err e = epode__xml_parser_feed(p, s + off, n);
    if (e) return e;
  }
  return EPODE_OK;
}

/* Parses a whole input (one feed) and returns the error. */
static epode_err parse_all(const char *s, int mode, const epode__xml_limits *lim, rec *r) {
  mk(r, mode, lim);
  return epode__xml_parser_feed(r->p, s, strlen(s));
}

static void expect_err(const char *s, epode_err want) {
  rec r;
  epode_err e = parse_all(s, EPODE__XML_STREAM, NULL, &r);
  if (e != want)
    fail_msg("input %s\n  got %s (%s), want %s", s, epode_err_name(e),
             epode__xml_parser_errmsg(r.p), epode_err_name(want));
  /* The error is sticky. */
  assert_int_equal(epode__xml_parser_feed(r.p, " ", 1), want);
  assert_non_null(strstr(epode__xml_parser_errmsg(r.p), ""));
  done(&r);
  /* Same result fed one byte at a time. */
  mk(&r, EPODE__XML_STREAM, NULL);
  e = feed_chunks(r.p, s, strlen(s), 1);
  if (e != want)
    fail_msg("bytewise input %s\n  got %s (%s), want %s", s, epode_err_name(e),
             epode__xml_parser_errmsg(r.p), epode_err_name(want));
  done(&r);
}

/* ------------------------------------------------------------ valid streams */

static const char stream_doc[] =
    "<?xml version='1.0' encoding='UTF-8'?>\n" HDR
    "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
    "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism>"
    "<mechanism>PLAIN</mechanism></mechanisms></stream:features>\n \t\r\n"
    "<message from='juliet@example.com/balcony' to='romeo@example.net' type='chat' "
    "xml:lang='fr' id='m&amp;1'>"
    "<body>caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 &lt;b&gt; &amp; &quot;q&quot; &apos;a&apos; "
    "&#65;&#x42;&#x20AC;&#x1F600; <![CDATA[<not a tag> & ]]> end</body>"
    "<thread>t\xc3\xa9</thread><x xmlns='jabber:x:data' type='form'><field var='v'/></x>"
    "<p:ext xmlns:p='urn:ext' p:attr='1' plain='\xe2\x82\xac'>pre<p:inner/>post</p:ext>"
    "</message>"
    "<iq type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
    "<jid>juliet@example.com/balcony</jid></bind></iq>"
    " "
    "<presence/>"
    "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
    "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>bye</text></stream:error>"
    "</stream:stream>";

static const char stream_log[] =
    "START {http://etherx.jabber.org/streams}stream default=jabber:client from='example.com' "
    "id='s1' version='1.0' xml:lang='en'\n"
    "STANZA <features xmlns='http://etherx.jabber.org/streams'>"
    "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
    "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism>"
    "<mechanism>PLAIN</mechanism></mechanisms></features>\n"
    "STANZA <message xmlns='jabber:client' from='juliet@example.com/balcony' "
    "to='romeo@example.net' type='chat' xml:lang='fr' id='m&amp;1'>"
    "<body>caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 &lt;b&gt; &amp; \"q\" 'a' "
    "AB\xe2\x82\xac\xf0\x9f\x98\x80 &lt;not a tag&gt; &amp;  end</body>"
    "<thread>t\xc3\xa9</thread><x xmlns='jabber:x:data' type='form'><field var='v'/></x>"
    "<ext xmlns='urn:ext' xmlns:ns1='urn:ext' ns1:attr='1' plain='\xe2\x82\xac'>pre<inner/>post"
    "</ext></message>\n"
    "STANZA <iq xmlns='jabber:client' type='result' id='b1'>"
    "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>juliet@example.com/balcony</jid></bind>"
    "</iq>\n"
    "STANZA <presence xmlns='jabber:client'/>\n"
    "STANZA <error xmlns='http://etherx.jabber.org/streams'>"
    "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
    "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>bye</text></error>\n"
    "END\n";

static void test_stream(void **state) {
  (void)state;
  rec r;
  mk(&r, EPODE__XML_STREAM, NULL);
  r.keep_last = 1;
  assert_int_equal(epode__xml_parser_feed(r.p, stream_doc, sizeof stream_doc - 1), EPODE_OK);
  assert_string_equal(r.log, stream_log);
  assert_int_equal(r.starts, 1);
  assert_int_equal(r.stanzas, 5);
  assert_int_equal(r.ends, 1);
  /* The tree itself: names and namespaces resolved. */
  epode_stanza *err = r.keep;
  assert_string_equal(epode_stanza_name(err), "error");
  assert_string_equal(epode_stanza_ns(err), EPODE_NS_STREAMS);
  epode_stanza *c = epode_stanza_find_child(err, "conflict", EPODE_NS_STREAM_ERRORS);
  assert_non_null(c);
  epode_stanza *t = epode_stanza_find_child(err, "text", EPODE_NS_STREAM_ERRORS);
  assert_string_equal(epode_stanza_get_attr(t, "xml:lang"), "en");
  assert_string_equal(epode_stanza_text(t), "bye");
  assert_int_equal(epode__xml_parser_pending(r.p), 0);
  /* Whitespace after the end of the stream is fine. */
  assert_int_equal(epode__xml_parser_feed(r.p, "\n  ", 3), EPODE_OK);
  done(&r);
}

static void test_message_tree(void **state) {
  (void)state;
  rec r;
  mk(&r, EPODE__XML_STREAM, NULL);
  r.keep_last = 1;
  const char *s = HDR "<message xmlns:p='urn:ext' p:attr='1' xml:lang='de'>"
                      "<body>a &amp; b</body><p:x xmlns='urn:other'><y/></p:x></message>";
  assert_int_equal(epode__xml_parser_feed(r.p, s, strlen(s)), EPODE_OK);
  epode_stanza *m = r.keep;
  assert_non_null(m);
  assert_string_equal(epode_stanza_name(m), "message");
  assert_string_equal(epode_stanza_ns(m), EPODE_NS_CLIENT);
  assert_string_equal(epode_stanza_get_attr(m, "{urn:ext}attr"), "1");
  assert_string_equal(epode_stanza_get_attr(m, "xml:lang"), "de");
  assert_null(epode_stanza_get_attr(m, "xmlns:p")); /* declarations are not attributes */
  assert_int_equal(epode_stanza_attr_count(m), 2);
  assert_string_equal(epode_stanza_child_text(m, "body"), "a & b");
  epode_stanza *x = epode_stanza_find_child(m, "x", "urn:ext");
  assert_non_null(x);
  epode_stanza *y = epode_stanza_find_child(x, "y", "urn:other");
  assert_non_null(y); /* default namespace inherited from p:x's declaration */
  /* The stream is still open; the parser waits for more. */
  assert_int_equal(r.ends, 0);
  done(&r);
}

static void test_namespaces(void **state) {
  (void)state;
  /* Default namespace inheritance and undeclaring. */
  rec r;
  assert_int_equal(parse_all(HDR "<iq><q xmlns='urn:q'><a/><b xmlns=''><c/></b></q><d/></iq>",
                             EPODE__XML_STREAM, NULL, &r),
                   EPODE_OK);
  assert_non_null(strstr(r.log, "STANZA <iq xmlns='jabber:client'><q xmlns='urn:q'><a/>"
                                "<b xmlns=''><c/></b></q><d/></iq>"));
  done(&r);
  /* A stream with a different default namespace and a custom prefix. */
  assert_int_equal(
      parse_all("<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:server'>"
                "<s:features/><message/></s:stream>",
                EPODE__XML_STREAM, NULL, &r),
      EPODE_OK);
  assert_string_equal(r.log,
                      "START {http://etherx.jabber.org/streams}stream default=jabber:server\n"
                      "STANZA <features xmlns='http://etherx.jabber.org/streams'/>\n"
                      "STANZA <message xmlns='jabber:server'/>\n"
                      "END\n");
  done(&r);
  /* No default namespace on the header. */
  assert_int_equal(parse_all("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>"
                             "<a/>",
                             EPODE__XML_STREAM, NULL, &r),
                   EPODE_OK);
  assert_string_equal(r.log, "START {http://etherx.jabber.org/streams}stream default=(none)\n"
                             "STANZA <a/>\n");
  done(&r);
  /* Undeclared prefixes: element, attribute, end tag, on the header. */
  expect_err(HDR "<foo:x/>", EPODE_ERR_XML_NS);
  expect_err(HDR "<x foo:a='1'/>", EPODE_ERR_XML_NS);
  expect_err(HDR "<x><foo:y xmlns:foo='urn:a'/><foo:z/></x>", EPODE_ERR_XML_NS);
  expect_err("<stream:stream xmlns='jabber:client'>", EPODE_ERR_XML_NS);
  expect_err(HDR "<x xmlns:xml='urn:wrong'/>", EPODE_ERR_XML_NS);
  expect_err(HDR "<x xmlns:xmlns='urn:a'/>", EPODE_ERR_XML_NS);
  expect_err(HDR "<x xmlns:p=''/>", EPODE_ERR_XML_NS);
  /* Duplicate attribute after prefix resolution. */
  expect_err(HDR "<x xmlns:a='urn:1' xmlns:b='urn:1' a:k='1' b:k='2'/>", EPODE_ERR_XML);
}

static void test_refs_and_cdata(void **state) {
  (void)state;
  rec r;
  mk(&r, EPODE__XML_STREAM, NULL);
  r.keep_last = 1;
  const char *s = HDR "<m a='&lt;&#x27;&#34;&#9;&#10;&#13;x'>&#x10FFFF;&#xE9;&#233;"
                      "<![CDATA[]]><![CDATA[a]]]]><![CDATA[>&amp;]]>\r\nz\ry</m>";
  assert_int_equal(epode__xml_parser_feed(r.p, s, strlen(s)), EPODE_OK);
  assert_string_equal(epode_stanza_get_attr(r.keep, "a"), "<'\"\t\n\rx");
  char *text = NULL;
  assert_int_equal(epode_stanza_get_text(r.keep, &text, NULL), EPODE_OK);
  /* CR LF and lone CR are normalised to LF by XML; &#13; is kept. */
  assert_string_equal(text, "\xf4\x8f\xbf\xbf\xc3\xa9\xc3\xa9"
                            "a]]>&amp;\nz\ny");
  epode_free(NULL, text);
  /* One merged text node for all the pieces. */
  assert_null(epode_stanza_next_sibling(epode_stanza_first_child(r.keep)));
  done(&r);
  /* Invalid character references. */
  expect_err(HDR "<m>&#0;</m>", EPODE_ERR_XML);
  expect_err(HDR "<m>&#1;</m>", EPODE_ERR_XML);
  expect_err(HDR "<m>&#xD800;</m>", EPODE_ERR_XML);
  expect_err(HDR "<m>&#x110000;</m>", EPODE_ERR_XML);
  expect_err(HDR "<m>&#xFFFE;</m>", EPODE_ERR_XML);
}

/* ------------------------------------------------------------ restricted XML */

static void test_restricted(void **state) {
  (void)state;
  expect_err("<!DOCTYPE stream>" HDR, EPODE_ERR_XML_RESTRICTED);
  expect_err("<?xml version='1.0'?><!DOCTYPE stream [<!ELEMENT stream ANY>]>" HDR,
             EPODE_ERR_XML_RESTRICTED);
  expect_err("<!DOCTYPE x [<!ENTITY e 'boom'>]><x>&e;</x>", EPODE_ERR_XML_RESTRICTED);
  expect_err("<!DOCTYPE x [<!ENTITY % pe 'x'> %pe;]><x/>", EPODE_ERR_XML_RESTRICTED);
  expect_err("<!DOCTYPE x SYSTEM 'file:///etc/passwd'><x/>", EPODE_ERR_XML_RESTRICTED);
  expect_err("<!DOCTYPE x [<!ENTITY ext SYSTEM 'file:///etc/passwd'>]><x>&ext;</x>",
             EPODE_ERR_XML_RESTRICTED);
  expect_err("<!DOCTYPE x [<!ATTLIST x a CDATA 'd'>]><x/>", EPODE_ERR_XML_RESTRICTED);
  expect_err("<!DOCTYPE x [<!NOTATION n SYSTEM 'n'>]><x/>", EPODE_ERR_XML_RESTRICTED);
  /* Entity references other than the five predefined ones. */
  expect_err(HDR "<m>&foo;</m>", EPODE_ERR_XML_RESTRICTED);
  expect_err(HDR "<m a='&foo;'/>", EPODE_ERR_XML_RESTRICTED);
  expect_err(HDR "<m>&nbsp;</m>", EPODE_ERR_XML_RESTRICTED);
  /* Processing instructions, anywhere. */
  expect_err("<?php echo 1; ?>" HDR, EPODE_ERR_XML_RESTRICTED);
  expect_err(HDR "<?pi data?>", EPODE_ERR_XML_RESTRICTED);
  expect_err(HDR "<m><?pi data?></m>", EPODE_ERR_XML_RESTRICTED);
  expect_err(HDR "<m><?xml-stylesheet href='a'?></m>", EPODE_ERR_XML_RESTRICTED);
  /* Comments, anywhere. */
  expect_err("<!-- c -->" HDR, EPODE_ERR_XML_RESTRICTED);
  expect_err(HDR "<!-- c -->", EPODE_ERR_XML_RESTRICTED);
  expect_err(HDR "<m><!-- c --></m>", EPODE_ERR_XML_RESTRICTED);
  /* The message says what and where. */
  rec r;
  assert_int_equal(parse_all("\n<!DOCTYPE x>", EPODE__XML_STREAM, NULL, &r),
                   EPODE_ERR_XML_RESTRICTED);
  assert_non_null(strstr(epode__xml_parser_errmsg(r.p), "line 2"));
  assert_non_null(strstr(epode__xml_parser_errmsg(r.p), "DOCTYPE"));
  done(&r);
  /* Refused before any stanza after it is delivered. */
  assert_int_equal(parse_all(HDR "<a/><!-- c --><b/>", EPODE__XML_STREAM, NULL, &r),
                   EPODE_ERR_XML_RESTRICTED);
  assert_int_equal(r.stanzas, 1);
  done(&r);
}

static void test_billion_laughs(void **state) {
  (void)state;
  char doc[4096];
  int n = snprintf(doc, sizeof doc, "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>");
  for (int i = 1; i <= 9; i++) {
    n += snprintf(doc + n, sizeof doc - (size_t)n, "<!ENTITY lol%d '", i);
    for (int k = 0; k < 10; k++)
      n += snprintf(doc + n, sizeof doc - (size_t)n, i == 1 ? "&lol;" : "&lol%d;", i - 1);
    n += snprintf(doc + n, sizeof doc - (size_t)n, "'>");
  }
  n += snprintf(doc + n, sizeof doc - (size_t)n, "]><lolz>&lol9;</lolz>");
  assert_true((size_t)n < sizeof doc);
  clock_t t0 = clock();
  rec r;
  assert_int_equal(parse_all(doc, EPODE__XML_STREAM, NULL, &r), EPODE_ERR_XML_RESTRICTED);
  assert_int_equal(r.starts + r.stanzas, 0);
  done(&r);
  /* Also when the DOCTYPE arrives after a valid stream header? Not possible
   * (a DOCTYPE must precede the root), so it is a plain syntax error. */
  expect_err(HDR "<!DOCTYPE x>", EPODE_ERR_XML);
  /* Fed byte by byte too. */
  mk(&r, EPODE__XML_STREAM, NULL);
  assert_int_equal(feed_chunks(r.p, doc, (size_t)n, 1), EPODE_ERR_XML_RESTRICTED);
  done(&r);
  double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
  assert_true(secs < 1.0);
}

/* ------------------------------------------------------------ splitting */

static const char split_doc[] =
    "<?xml version='1.0'?>" HDR "<message to='\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80@x' type='chat'>"
    "<body>2:\xc3\xa9\xc3\xbc 3:\xe2\x82\xac\xe4\xb8\xad 4:\xf0\x9f\x98\x80\xf0\x90\x8d\x88"
    " &amp;&lt;&gt;&quot;&apos; &#x1F600;&#233; <![CDATA[ <x> ]]></body>"
    "<caf\xc3\xa9 xmlns='urn:\xe2\x82\xac' \xc3\xa9t\xc3\xa9='\xf0\x9f\x98\x80'/>"
    "</message>\r\n"
    "<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>"
    "<presence><show>away</show><status>\xe6\x97\xa5\xe6\x9c\xac</status></presence>"
    "</stream:stream>";

static void test_split_everywhere(void **state) {
  (void)state;
  const size_t n = sizeof split_doc - 1;
  rec ref;
  mk(&ref, EPODE__XML_STREAM, NULL);
  assert_int_equal(epode__xml_parser_feed(ref.p, split_doc, n), EPODE_OK);
  assert_int_equal(ref.stanzas, 3);
  assert_int_equal(ref.ends, 1);
  assert_non_null(strstr(ref.log, "4:\xf0\x9f\x98\x80\xf0\x90\x8d\x88"));
  /* Every single split point. */
  for (size_t i = 0; i <= n; i++) {
    rec r;
    mk(&r, EPODE__XML_STREAM, NULL);
    assert_int_equal(epode__xml_parser_feed(r.p, split_doc, i), EPODE_OK);
    assert_int_equal(epode__xml_parser_feed(r.p, split_doc + i, n - i), EPODE_OK);
    if (strcmp(r.log, ref.log) != 0) fail_msg("split at %zu differs:\n%s", i, r.log);
    done(&r);
  }
  /* Every chunk size from 1 byte (fully byte-wise) to 64. */
  for (size_t chunk = 1; chunk <= 64; chunk++) {
    rec r;
    mk(&r, EPODE__XML_STREAM, NULL);
    assert_int_equal(feed_chunks(r.p, split_doc, n, chunk), EPODE_OK);
    if (strcmp(r.log, ref.log) != 0) fail_msg("chunk %zu differs:\n%s", chunk, r.log);
    done(&r);
  }
  /* Every pair of split points over the message stanza (dense coverage of
   * multi-byte characters split twice). */
  const char *ms = strstr(split_doc, "<message");
  const char *me = strstr(split_doc, "</message>");
  size_t a0 = (size_t)(ms - split_doc), a1 = (size_t)(me - split_doc);
  for (size_t i = a0; i < a1; i += 3) {
    for (size_t j = i; j < a1; j += 5) {
      rec r;
      mk(&r, EPODE__XML_STREAM, NULL);
      assert_int_equal(epode__xml_parser_feed(r.p, split_doc, i), EPODE_OK);
      assert_int_equal(epode__xml_parser_feed(r.p, split_doc + i, j - i), EPODE_OK);
      assert_int_equal(epode__xml_parser_feed(r.p, split_doc + j, n - j), EPODE_OK);
      if (strcmp(r.log, ref.log) != 0) fail_msg("split at %zu,%zu differs", i, j);
      done(&r);
    }
  }
  /* Empty feeds are harmless. */
  rec r;
  mk(&r, EPODE__XML_STREAM, NULL);
  assert_int_equal(epode__xml_parser_feed(r.p, NULL, 0), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(r.p, split_doc, n), EPODE_OK);
  assert_string_equal(r.log, ref.log);
  done(&r);
  done(&ref);
}

/* ------------------------------------------------------------ UTF-8 */

static void test_utf8(void **state) {
  (void)state;
  static const char *const bad[] = {
      "\xc0\xaf",         /* overlong '/' */
      "\xc1\xbf",         /* overlong */
      "\xe0\x80\xaf",     /* overlong 3-byte */
      "\xf0\x80\x80\xaf", /* overlong 4-byte */
      "\xed\xa0\x80",     /* UTF-16 surrogate D800 */
      "\xed\xbf\xbf",     /* surrogate DFFF */
      "\xf4\x90\x80\x80", /* U+110000 */
      "\xf5\x80\x80\x80",
      "\xf8\x88\x80\x80\x80",
      "\xfe",
      "\xff",
      "\x80", /* stray continuation */
      "\xbf",
      "\xc3",         /* truncated 2-byte, followed by '<' */
      "\xe2\x82",     /* truncated 3-byte */
      "\xf0\x9f\x98", /* truncated 4-byte */
      "\xc3\xc3\xa9", /* lead followed by lead */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char doc[256];
    /* In text, at the end of an element, in an attribute value, in a name. */
    snprintf(doc, sizeof doc, HDR "<m>a%s</m>", bad[i]);
    expect_err(doc, EPODE_ERR_XML_UTF8);
    snprintf(doc, sizeof doc, HDR "<m a='%s'/>", bad[i]);
    expect_err(doc, EPODE_ERR_XML_UTF8);
    snprintf(doc, sizeof doc, HDR "<m%s/>", bad[i]);
    expect_err(doc, EPODE_ERR_XML_UTF8);
    snprintf(doc, sizeof doc, "<?xml version='1.0'?>%s<", bad[i]);
    expect_err(doc, EPODE_ERR_XML_UTF8);
  }
  /* Stanzas complete before the bad byte are still delivered, whatever the
   * split. */
  const char *doc = HDR "<a/><b/>\xff";
  size_t n = strlen(doc);
  for (size_t i = 0; i <= n; i++) {
    rec r;
    mk(&r, EPODE__XML_STREAM, NULL);
    epode_err e = epode__xml_parser_feed(r.p, doc, i);
    if (!e) e = epode__xml_parser_feed(r.p, doc + i, n - i);
    assert_int_equal(e, EPODE_ERR_XML_UTF8);
    assert_int_equal(r.stanzas, 2);
    assert_non_null(strstr(epode__xml_parser_errmsg(r.p), "UTF-8"));
    done(&r);
  }
  /* Characters XML 1.0 does not allow, in valid UTF-8. */
  expect_err(HDR "<m>a\x01</m>", EPODE_ERR_XML);
  expect_err(HDR "<m>a\x1b</m>", EPODE_ERR_XML);
  expect_err(HDR "<m a='\x02'/>", EPODE_ERR_XML);
  expect_err(HDR "<m>\xef\xbf\xbe</m>", EPODE_ERR_XML); /* U+FFFE */
  expect_err(HDR "<m>\xef\xbf\xbf</m>", EPODE_ERR_XML); /* U+FFFF */
  {
    rec r;
    mk(&r, EPODE__XML_STREAM, NULL);
    static const char nul[] = HDR "<m>a\0b</m>";
    assert_int_equal(epode__xml_parser_feed(r.p, nul, sizeof nul - 1), EPODE_ERR_XML);
    done(&r);
  }
  /* The encoding is UTF-8, whatever the declaration says. */
  expect_err("<?xml version='1.0' encoding='ISO-8859-1'?>" HDR, EPODE_ERR_XML);
  expect_err("<?xml version='1.0' encoding='UTF-16'?>" HDR, EPODE_ERR_XML);
  expect_err("<?xml version='1.1'?>" HDR, EPODE_ERR_XML);
  rec r;
  assert_int_equal(parse_all("<?xml version='1.0' encoding='utf-8' standalone='yes'?>" HDR,
                             EPODE__XML_STREAM, NULL, &r),
                   EPODE_OK);
  assert_int_equal(r.starts, 1);
  done(&r);
  /* A UTF-8 byte order mark is accepted. */
  assert_int_equal(parse_all("\xef\xbb\xbf" HDR, EPODE__XML_STREAM, NULL, &r), EPODE_OK);
  assert_int_equal(r.starts, 1);
  done(&r);
}

/* ------------------------------------------------------------ malformed */

static void test_malformed(void **state) {
  (void)state;
  expect_err(HDR "<a></b>", EPODE_ERR_XML);
  expect_err(HDR "<a><b></a></b>", EPODE_ERR_XML);
  expect_err(HDR "<a x=1/>", EPODE_ERR_XML);
  expect_err(HDR "<a x='1'y='2'/>", EPODE_ERR_XML);
  expect_err(HDR "<a x='1'' y='2'/>", EPODE_ERR_XML);
  expect_err(HDR "<a x='1' x='2'/>", EPODE_ERR_XML);
  expect_err(HDR "<a x='<'/>", EPODE_ERR_XML);
  expect_err(HDR "<a>&</a>", EPODE_ERR_XML);
  expect_err(HDR "<a>&amp</a>", EPODE_ERR_XML);
  expect_err(HDR "<1a/>", EPODE_ERR_XML);
  expect_err(HDR "<a b/>", EPODE_ERR_XML);
  expect_err(HDR "</stream:stream></stream:stream>", EPODE_ERR_XML);
  expect_err(HDR "<a/><?xml version='1.0'?>", EPODE_ERR_XML);
  expect_err("text before" HDR, EPODE_ERR_XML);
  /* Text between stanzas (only whitespace allowed). */
  expect_err(HDR "<a/>junk<b/>", EPODE_ERR_XML);
  expect_err(HDR "&amp;", EPODE_ERR_XML);
  /* Garbage after the end of the stream. */
  rec r;
  assert_int_equal(parse_all(HDR "<a/></stream:stream>", EPODE__XML_STREAM, NULL, &r), EPODE_OK);
  assert_int_equal(r.ends, 1);
  assert_int_equal(epode__xml_parser_feed(r.p, "<b/>", 4), EPODE_ERR_XML);
  assert_int_equal(r.stanzas, 1);
  /* Sticky, with position. */
  assert_int_equal(epode__xml_parser_feed(r.p, "", 0), EPODE_ERR_XML);
  assert_non_null(strstr(epode__xml_parser_errmsg(r.p), "line 1, column"));
  done(&r);
  assert_int_equal(parse_all(HDR "</stream:stream>garbage", EPODE__XML_STREAM, NULL, &r),
                   EPODE_ERR_XML);
  assert_int_equal(r.ends, 1);
  done(&r);
}

/* ------------------------------------------------------------ limits */

static void test_limit_stanza_bytes(void **state) {
  (void)state;
  epode__xml_limits lim = {100, 0, 0};
  /* A stanza of exactly 100 bytes is accepted, 101 is not. */
  char st100[128], st101[128];
  memset(st100, 0, sizeof st100);
  strcpy(st100, "<m>");
  memset(st100 + 3, 'x', 100 - 7);
  strcat(st100, "</m>");
  assert_int_equal(strlen(st100), 100);
  strcpy(st101, "<m>x");
  memset(st101 + 4, 'x', 100 - 7);
  st101[97] = '\0';
  strcat(st101, "</m>");
  assert_int_equal(strlen(st101), 101);
  /* An empty-element stanza of 100 / 101 bytes. */
  char e100[128], e101[128];
  snprintf(e100, sizeof e100, "<m a='%0*d'/>", 100 - 9, 0);
  snprintf(e101, sizeof e101, "<m a='%0*d'/>", 101 - 9, 0);
  assert_int_equal(strlen(e100), 100);
  assert_int_equal(strlen(e101), 101);
  const char *ok[] = {st100, e100};
  const char *over[] = {st101, e101};
  for (int k = 0; k < 2; k++) {
    for (size_t chunk = 0; chunk <= 7; chunk++) {
      char doc[512];
      rec r;
      snprintf(doc, sizeof doc, HDR "  %s\n  %s %s", ok[k], ok[k], ok[k]);
      mk(&r, EPODE__XML_STREAM, &lim);
      assert_int_equal(feed_chunks(r.p, doc, strlen(doc), chunk), EPODE_OK);
      assert_int_equal(r.stanzas, 3);
      done(&r);
      snprintf(doc, sizeof doc, HDR "%s %s", ok[k], over[k]);
      mk(&r, EPODE__XML_STREAM, &lim);
      epode_err e = feed_chunks(r.p, doc, strlen(doc), chunk);
      if (e != EPODE_ERR_LIMIT) fail_msg("k=%d chunk=%zu: %s", k, chunk, epode_err_name(e));
      assert_int_equal(r.stanzas, 1);
      assert_non_null(strstr(epode__xml_parser_errmsg(r.p), "100"));
      done(&r);
    }
  }
  /* A 100 MB stanza fed in 64 KiB pieces is refused just after the limit
   * (default limit, 1 MiB), without being buffered. */
  rec r;
  mk(&r, EPODE__XML_STREAM, NULL);
  assert_int_equal(epode__xml_parser_feed(r.p, HDR "<message><body>", strlen(HDR) + 15), EPODE_OK);
  static char chunk[65536];
  memset(chunk, 'a', sizeof chunk);
  size_t fed = 15;
  epode_err e = EPODE_OK;
  while (fed < 100u * 1024 * 1024 && !e) {
    e = epode__xml_parser_feed(r.p, chunk, sizeof chunk);
    if (!e) {
      fed += sizeof chunk;
      assert_true(epode__xml_parser_pending(r.p) <= 1024 * 1024);
    }
  }
  assert_int_equal(e, EPODE_ERR_LIMIT);
  assert_true(fed <= 1024 * 1024);
  assert_true(fed > 1024 * 1024 - sizeof chunk);
  done(&r);
  /* A start tag that never ends (expat would buffer it) is refused too. */
  mk(&r, EPODE__XML_STREAM, &lim);
  assert_int_equal(epode__xml_parser_feed(r.p, HDR "<message a='", strlen(HDR) + 12), EPODE_OK);
  e = EPODE_OK;
  for (int i = 0; i < 100 && !e; i++)
    e = epode__xml_parser_feed(r.p, "xxxxxxxxxx", 10);
  assert_int_equal(e, EPODE_ERR_LIMIT);
  done(&r);
  /* Whitespace keepalives between stanzas never add up to a stanza. */
  mk(&r, EPODE__XML_STREAM, &lim);
  assert_int_equal(epode__xml_parser_feed(r.p, HDR, strlen(HDR)), EPODE_OK);
  for (int i = 0; i < 1000; i++)
    assert_int_equal(epode__xml_parser_feed(r.p, " ", 1), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(r.p, st100, 100), EPODE_OK);
  assert_int_equal(r.stanzas, 1);
  done(&r);
  /* The stream header has its own bound. */
  char big[40000];
  memset(big, 'h', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  char *hdr = malloc(sizeof big + 256);
  snprintf(hdr, sizeof big + 256,
           "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' id='%s'>", big);
  mk(&r, EPODE__XML_STREAM, NULL);
  assert_int_equal(epode__xml_parser_feed(r.p, hdr, strlen(hdr)), EPODE_ERR_LIMIT);
  assert_int_equal(r.starts, 0);
  assert_non_null(strstr(epode__xml_parser_errmsg(r.p), "header"));
  done(&r);
  free(hdr);
}

static void test_limit_depth_attrs(void **state) {
  (void)state;
  epode__xml_limits lim = {0, 4, 4}; /* HDR has 4 attributes */
  rec r;
  /* Depth: the stanza itself is depth 1. */
  assert_int_equal(parse_all(HDR "<a><b><c><d/></c></b></a>", EPODE__XML_STREAM, &lim, &r),
                   EPODE_OK);
  assert_int_equal(r.stanzas, 1);
  done(&r);
  assert_int_equal(parse_all(HDR "<a><b><c><d><e/></d></c></b></a>", EPODE__XML_STREAM, &lim, &r),
                   EPODE_ERR_LIMIT);
  assert_int_equal(r.stanzas, 0);
  assert_non_null(strstr(epode__xml_parser_errmsg(r.p), "deeper"));
  done(&r);
  /* Attributes per element (namespace declarations do not count). */
  assert_int_equal(parse_all(HDR
                             "<a xmlns:p='urn:p' x='1' y='2' p:z='3'><b a='1' b='2' c='3'/></a>",
                             EPODE__XML_STREAM, &lim, &r),
                   EPODE_OK);
  assert_int_equal(r.stanzas, 1);
  done(&r);
  assert_int_equal(
      parse_all(HDR "<a><b a='1' b='2' c='3' d='4' e='5'/></a>", EPODE__XML_STREAM, &lim, &r),
      EPODE_ERR_LIMIT);
  assert_non_null(strstr(epode__xml_parser_errmsg(r.p), "attributes"));
  done(&r);
  /* On the stream header too. */
  assert_int_equal(parse_all("<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
                             "a='1' b='2' c='3' d='4' e='5'>",
                             EPODE__XML_STREAM, &lim, &r),
                   EPODE_ERR_LIMIT);
  assert_int_equal(r.starts, 0);
  done(&r);
  /* Defaults: 64 deep is fine, 65 is not. */
  char doc[2048];
  for (int depth = 64; depth <= 65; depth++) {
    int n = snprintf(doc, sizeof doc, "%s", HDR);
    for (int i = 0; i < depth; i++)
      n += snprintf(doc + n, sizeof doc - (size_t)n, "<e>");
    for (int i = 0; i < depth; i++)
      n += snprintf(doc + n, sizeof doc - (size_t)n, "</e>");
    assert_int_equal(parse_all(doc, EPODE__XML_STREAM, NULL, &r),
                     depth == 64 ? EPODE_OK : EPODE_ERR_LIMIT);
    done(&r);
  }
}

/* ------------------------------------------------------------ reset, callbacks */

static void test_reset_in_callback(void **state) {
  (void)state;
  rec r;
  mk(&r, EPODE__XML_STREAM, NULL);
  /* STARTTLS: the server's <proceed/> makes us restart; anything after it in
   * the same read (here TLS bytes that are not XML) is dropped. */
  r.reset_at_stanza = 2;
  const char *s1 = "<?xml version='1.0'?>" HDR "<stream:features/>"
                   "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\x16\x03\x01\xff\xfe garbage";
  assert_int_equal(epode__xml_parser_feed(r.p, s1, strlen(s1)), EPODE_OK);
  assert_int_equal(r.stanzas, 2);
  assert_int_equal(epode__xml_parser_pending(r.p), 0);
  /* A new document, with its own XML declaration. */
  const char *s2 = "<?xml version='1.0'?>" HDR "<stream:features><bind "
                   "xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>";
  assert_int_equal(feed_chunks(r.p, s2, strlen(s2), 3), EPODE_OK);
  assert_int_equal(r.starts, 2);
  assert_int_equal(r.stanzas, 3);
  assert_non_null(strstr(r.log, "STANZA <features xmlns='http://etherx.jabber.org/streams'>"
                                "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></features>"));
  done(&r);

  /* Reset from the stream_start callback, mid-feed. */
  mk(&r, EPODE__XML_STREAM, NULL);
  r.reset_at_start = 1;
  assert_int_equal(epode__xml_parser_feed(r.p, HDR "<dropped/>", strlen(HDR) + 10), EPODE_OK);
  assert_int_equal(r.stanzas, 0);
  assert_int_equal(epode__xml_parser_feed(r.p, HDR "<kept/>", strlen(HDR) + 7), EPODE_OK);
  assert_int_equal(r.starts, 2);
  assert_int_equal(r.stanzas, 1);
  done(&r);

  /* Reset inside a stanza callback while the stanza's own byte-wise feed is
   * in progress, at every split. */
  const char *s3 = HDR "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>";
  for (size_t i = 0; i <= strlen(s3); i++) {
    mk(&r, EPODE__XML_STREAM, NULL);
    r.reset_at_stanza = 1;
    assert_int_equal(epode__xml_parser_feed(r.p, s3, i), EPODE_OK);
    assert_int_equal(epode__xml_parser_feed(r.p, s3 + i, strlen(s3) - i), EPODE_OK);
    assert_int_equal(r.stanzas, 1);
    assert_int_equal(epode__xml_parser_feed(r.p, HDR "<x/>", strlen(HDR) + 4), EPODE_OK);
    assert_int_equal(r.starts, 2);
    assert_int_equal(r.stanzas, 2);
    done(&r);
  }

  /* Reset outside callbacks clears an error and a partial stanza. */
  mk(&r, EPODE__XML_STREAM, NULL);
  assert_int_equal(epode__xml_parser_feed(r.p, HDR "<a><b>partial", strlen(HDR) + 13), EPODE_OK);
  assert_true(epode__xml_parser_pending(r.p) >= 13);
  assert_int_equal(epode__xml_parser_reset(r.p), EPODE_OK);
  assert_int_equal(epode__xml_parser_pending(r.p), 0);
  assert_int_equal(epode__xml_parser_feed(r.p, "<!-- x -->", 10), EPODE_ERR_XML_RESTRICTED);
  assert_int_equal(epode__xml_parser_reset(r.p), EPODE_OK);
  assert_string_equal(epode__xml_parser_errmsg(r.p), "no error");
  assert_int_equal(epode__xml_parser_feed(r.p, HDR "<a/>", strlen(HDR) + 4), EPODE_OK);
  assert_int_equal(r.starts, 2);
  assert_int_equal(r.stanzas, 1);
  done(&r);
}

static epode_err cb_refeed(void *ud, epode_stanza *st) {
  rec *r = ud;
  epode_stanza_free(st);
  r->stanzas++;
  /* Feeding from inside a callback is refused. */
  assert_int_equal(epode__xml_parser_feed(r->p, "<x/>", 4), EPODE_ERR_STATE);
  return EPODE_OK;
}

static void test_callback_errors(void **state) {
  (void)state;
  rec r;
  mk(&r, EPODE__XML_STREAM, NULL);
  r.fail_at_stanza = 2;
  r.fail_at_stanza_err = EPODE_ERR_PROTOCOL;
  assert_int_equal(epode__xml_parser_feed(r.p, HDR "<a/><b/><c/>", strlen(HDR) + 12),
                   EPODE_ERR_PROTOCOL);
  assert_int_equal(r.stanzas, 2);
  assert_int_equal(epode__xml_parser_feed(r.p, "<d/>", 4), EPODE_ERR_PROTOCOL);
  assert_int_equal(r.stanzas, 2);
  done(&r);

  epode__xml_callbacks cb = {NULL, cb_refeed, NULL};
  memset(&r, 0, sizeof r);
  assert_int_equal(epode__xml_parser_new(&r.p, NULL, NULL, EPODE__XML_STREAM, &cb, &r), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(r.p, HDR "<a/></stream:stream>", strlen(HDR) + 20),
                   EPODE_OK);
  assert_int_equal(r.stanzas, 1);
  done(&r);

  /* NULL callbacks: stanzas are freed (ASan would report a leak). */
  epode__xml_callbacks none = {NULL, NULL, NULL};
  epode__xml_parser *p = NULL;
  assert_int_equal(epode__xml_parser_new(&p, NULL, NULL, EPODE__XML_STREAM, &none, NULL), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(p, stream_doc, sizeof stream_doc - 1), EPODE_OK);
  epode__xml_parser_free(p);
  epode__xml_parser_free(NULL);
  assert_int_equal(epode__xml_parser_new(&p, NULL, NULL, 7, &none, NULL), EPODE_ERR_INVAL);
  assert_null(p);
}

/* ------------------------------------------------------------ fragments */

static void test_fragments(void **state) {
  (void)state;
  rec r;
  mk(&r, EPODE__XML_FRAGMENTS, NULL);
  const char *s = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' "
                  "version='1.0'/>\n"
                  "<message xmlns='jabber:client' to='a@b'><body>hi \xe2\x82\xac</body></message>"
                  " <close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";
  assert_int_equal(feed_chunks(r.p, s, strlen(s), 1), EPODE_OK);
  assert_int_equal(r.starts, 0);
  assert_int_equal(r.ends, 0);
  assert_int_equal(r.stanzas, 3);
  assert_string_equal(r.log,
                      "STANZA <open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' "
                      "version='1.0'/>\n"
                      "STANZA <message xmlns='jabber:client' to='a@b'><body>hi \xe2\x82\xac</body>"
                      "</message>\n"
                      "STANZA <close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>\n");
  /* Restricted constructs and stray end tags are refused here too. */
  assert_int_equal(epode__xml_parser_feed(r.p, "<!-- c -->", 10), EPODE_ERR_XML_RESTRICTED);
  assert_int_equal(epode__xml_parser_reset(r.p), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(r.p, "<a/>", 4), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(r.p, "</w>", 4), EPODE_ERR_XML);
  assert_int_equal(epode__xml_parser_reset(r.p), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(r.p, "text", 4), EPODE_ERR_XML);
  assert_int_equal(epode__xml_parser_reset(r.p), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(r.p, "<p:a/>", 6), EPODE_ERR_XML_NS);
  assert_int_equal(epode__xml_parser_reset(r.p), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(r.p, "<a>\xc0\xaf</a>", 9), EPODE_ERR_XML_UTF8);
  assert_non_null(strstr(epode__xml_parser_errmsg(r.p), "byte 3"));
  done(&r);
  /* Limits apply per fragment. */
  epode__xml_limits lim = {20, 0, 0};
  mk(&r, EPODE__XML_FRAGMENTS, &lim);
  assert_int_equal(epode__xml_parser_feed(r.p, "<a>0123456789012</a>", 20), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(r.p, "<a>0123456789012</a>", 20), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(r.p, "<a>01234567890123</a>", 21), EPODE_ERR_LIMIT);
  assert_int_equal(r.stanzas, 2);
  done(&r);
}

/* ------------------------------------------------------------ allocation failure */

static epode_err cb_count(void *ud, epode_stanza *st) {
  (*(int *)ud)++;
  epode_stanza_free(st);
  return EPODE_OK;
}

static void test_alloc_failure(void **state) {
  (void)state;
  epode_test_failmem f;
  epode_test_failmem_init(&f, 0);
  epode_mem mem = f.mem;
  epode__xml_callbacks cb = {NULL, cb_count, NULL};
  long total;
  {
    int count = 0;
    epode__xml_parser *p = NULL;
    assert_int_equal(epode__xml_parser_new(&p, &mem, NULL, EPODE__XML_STREAM, &cb, &count),
                     EPODE_OK);
    assert_int_equal(feed_chunks(p, stream_doc, sizeof stream_doc - 1, 7), EPODE_OK);
    epode__xml_parser_free(p);
    total = f.calls;
  }
  for (long n = 1;; n++) {
    epode_test_failmem_init(&f, n);
    int count = 0;
    epode__xml_parser *p = NULL;
    epode_err e = epode__xml_parser_new(&p, &mem, NULL, EPODE__XML_STREAM, &cb, &count);
    if (!e) e = feed_chunks(p, stream_doc, sizeof stream_doc - 1, 7);
    epode__xml_parser_free(p);
    if (f.live != 0) fail_msg("allocation %ld failed: %ld blocks leaked", n, f.live);
    if (e == EPODE_OK) {
      assert_int_equal(count, 5);
      /* Every allocation of the run was made to fail once: parser, stream
       * header, text buffer, and one arena per stanza at least. (The
       * trees used to take an allocation per node and per text piece.) */
      assert_int_equal(n, total + 1);
      assert_true(n > 8);
      break;
    }
    if (e != EPODE_ERR_NOMEM) fail_msg("allocation %ld: %s", n, epode_err_name(e));
  }
}

/* ------------------------------------------------------------ stanza arenas */

static void assert_ser(const epode_stanza *st, const char *ctx, const char *want) {
  char *out = NULL;
  assert_int_equal(epode_stanza_to_string(st, ctx, &out, NULL), EPODE_OK);
  assert_string_equal(out, want);
  epode_free(epode_stanza_mem(st), out);
}

/* Like the inbound benchmark's messages: escapes split the text into many
 * pieces, non-ASCII text. */
#define BENCH_MSG                                                                                  \
  "<message from='juliet@example.com/balcony' to='romeo@example.net' type='chat' id='m%d'>"        \
  "<body>caf\xc3\xa9 &amp; cr\xc3\xa8me &lt;b&gt; &quot;q&quot; &apos;a&apos; "                    \
  "\xce\xb1\xce\xb2\xce\xb3 \xe6\x97\xa5\xe6\x9c\xac&#x20AC;</body></message>"
#define BENCH_BODY                                                                                 \
  "caf\xc3\xa9 & cr\xc3\xa8me <b> \"q\" 'a' \xce\xb1\xce\xb2\xce\xb3 "                             \
  "\xe6\x97\xa5\xe6\x9c\xac\xe2\x82\xac"

typedef struct counted {
  epode_test_failmem *f;
  int stanzas, presences;
  long calls_before; /* f->calls when the stanza's start tag was fed */
} counted;

static epode_err cb_check_body(void *ud, epode_stanza *st) {
  counted *c = ud;
  c->stanzas++;
  if (strcmp(epode_stanza_name(st), "presence") == 0) {
    c->presences++;
    assert_string_equal(epode_stanza_from(st), "juliet@example.com/balcony");
  } else {
    assert_string_equal(epode_stanza_child_text(st, "body"), BENCH_BODY);
    /* One text node, merged from all the pieces. */
    epode_stanza *body = epode_stanza_find_child(st, "body", NULL);
    assert_true(epode_stanza_is_text(epode_stanza_first_child(body)));
    assert_null(epode_stanza_next_sibling(epode_stanza_first_child(body)));
  }
  epode_stanza_free(st);
  return EPODE_OK;
}

static void test_arena_one_allocation(void **state) {
  (void)state;
  epode_test_failmem f;
  epode_test_failmem_init(&f, 0);
  epode_mem mem = f.mem;
  epode__xml_callbacks cb = {NULL, cb_check_body, NULL};
  /* Messages alone, then messages and presences alternating (stanzas of
   * different sizes), each fed whole, in 7-byte pieces and byte by byte. */
  for (int alternate = 0; alternate <= 1; alternate++) {
    for (size_t chunk = 0; chunk <= 7; chunk += 7) {
      for (int bytewise = 0; bytewise <= 1; bytewise++) {
        epode_test_failmem_init(&f, 0);
        counted c = {&f, 0, 0, 0};
        epode__xml_parser *p = NULL;
        assert_int_equal(epode__xml_parser_new(&p, &mem, NULL, EPODE__XML_STREAM, &cb, &c),
                         EPODE_OK);
        assert_int_equal(epode__xml_parser_feed(p, HDR, strlen(HDR)), EPODE_OK);
        char buf[512];
        long warm = 0;
        const int n = 60;
        for (int i = 0; i < n; i++) {
          if (alternate && i % 2)
            snprintf(buf, sizeof buf, "<presence from='juliet@example.com/balcony'/>");
          else
            snprintf(buf, sizeof buf, BENCH_MSG, i);
          size_t step = bytewise ? 1 : chunk;
          assert_int_equal(feed_chunks(p, buf, strlen(buf), step), EPODE_OK);
          if (i == 9) warm = f.calls;
        }
        assert_int_equal(c.stanzas, n);
        assert_int_equal(c.presences, alternate ? n / 2 : 0);
        /* After a few stanzas: exactly one allocation per stanza, its
         * arena, freed with it. */
        if (f.calls - warm != n - 10)
          fail_msg("alternate %d chunk %zu bytewise %d: %ld allocations for %d stanzas", alternate,
                   chunk, bytewise, f.calls - warm, n - 10);
        epode__xml_parser_free(p);
        assert_int_equal(f.live, 0);
      }
    }
  }
}

/* A received tree kept by the callback, changed through the API, with
 * nodes detached from it: every order of freeing is clean (ASan and the
 * counting allocator check it). */
static void test_arena_tree_api(void **state) {
  (void)state;
  epode_test_failmem f;
  for (int order = 0; order < 4; order++) {
    epode_test_failmem_init(&f, 0);
    epode_mem mem = f.mem;
    rec r;
    memset(&r, 0, sizeof r);
    r.keep_last = 1;
    assert_int_equal(epode__xml_parser_new(&r.p, &mem, NULL, EPODE__XML_STREAM, &callbacks, &r),
                     EPODE_OK);
    static const char doc[] = HDR "<message type='chat' id='x'>pre<body>hello &amp; bye</body>"
                                  "mid<x xmlns='urn:x'><y a='1'>in</y></x>post</message>";
    assert_int_equal(epode__xml_parser_feed(r.p, doc, sizeof doc - 1), EPODE_OK);
    epode__xml_parser_free(r.p);
    r.p = NULL;
    epode_stanza *m = r.keep;
    r.keep = NULL;
    assert_non_null(m);
    epode_stanza *body = epode_stanza_find_child(m, "body", NULL);
    epode_stanza *x = epode_stanza_find_child(m, "x", NULL);
    epode_stanza *y = epode_stanza_find_child(x, "y", NULL);
    const char *ya = epode_stanza_get_attr(y, "a");
    /* Changes to the received tree. */
    assert_int_equal(epode_stanza_set_attr(m, "id", "replaced-with-a-longer-value"), EPODE_OK);
    assert_int_equal(epode_stanza_set_attr(m, "to", "romeo@example.net"), EPODE_OK);
    assert_int_equal(epode_stanza_del_attr(m, "type"), EPODE_OK);
    assert_int_equal(epode_stanza_add_text(body, " (more)", 7), EPODE_OK);
    epode_stanza *z = NULL;
    assert_int_equal(epode_stanza_add_child_new(&z, y, "z", NULL), EPODE_OK);
    assert_int_equal(epode_stanza_add_text(z, "zz", 2), EPODE_OK);
    assert_ser(m, "jabber:client",
               "<message id='replaced-with-a-longer-value' to='romeo@example.net'>pre"
               "<body>hello &amp; bye (more)</body>mid<x xmlns='urn:x'><y a='1'>in<z>zz</z></y>"
               "</x>post</message>");
    /* Detached nodes are the caller's, apart from the root. */
    assert_int_equal(epode_stanza_detach(x), EPODE_OK); /* "mid" and "post" merge */
    assert_string_equal(epode_stanza_ns(x), "urn:x");
    epode_stanza *pre = epode_stanza_first_child(m);
    assert_int_equal(epode_stanza_detach(pre), EPODE_OK);
    epode_stanza *other = NULL;
    assert_int_equal(epode_stanza_new(&other, &mem, "other", "urn:o"), EPODE_OK);
    assert_int_equal(epode_stanza_add_child(other, pre), EPODE_OK);
    assert_ser(m, "jabber:client",
               "<message id='replaced-with-a-longer-value' to='romeo@example.net'>"
               "<body>hello &amp; bye (more)</body>midpost</message>");
    epode_stanza *c = NULL;
    assert_int_equal(epode_stanza_clone(&c, m), EPODE_OK);
    /* Strings of a detached node outlive the root it came from. */
    switch (order) {
    case 0:
      epode_stanza_free(m);
      assert_string_equal(ya, "1");
      assert_ser(x, NULL, "<x xmlns='urn:x'><y a='1'>in<z>zz</z></y></x>");
      epode_stanza_free(x);
      assert_ser(other, NULL, "<other xmlns='urn:o'>pre</other>");
      epode_stanza_free(other);
      break;
    case 1: epode_stanza_free(x), epode_stanza_free(m), epode_stanza_free(other); break;
    case 2:
      epode_stanza_free(other);
      epode_stanza_free(m);
      assert_string_equal(ya, "1");
      epode_stanza_free(x);
      break;
    default:
      epode_stanza_free(m);
      epode_stanza_free(other);
      assert_ser(x, "urn:x", "<x><y a='1'>in<z>zz</z></y></x>");
      epode_stanza_free(x);
      break;
    }
    assert_ser(c, "jabber:client",
               "<message id='replaced-with-a-longer-value' to='romeo@example.net'>"
               "<body>hello &amp; bye (more)</body>midpost</message>");
    epode_stanza_free(c);
    free(r.log);
    assert_int_equal(f.live, 0);
  }
  /* A detached subtree stays usable after its root is freed. */
  epode_test_failmem_init(&f, 0);
  epode_mem mem = f.mem;
  rec r;
  memset(&r, 0, sizeof r);
  r.keep_last = 1;
  assert_int_equal(epode__xml_parser_new(&r.p, &mem, NULL, EPODE__XML_FRAGMENTS, &callbacks, &r),
                   EPODE_OK);
  static const char frag[] = "<iq type='result'><q xmlns='urn:q'><item jid='a@b' name='A'/>"
                             "<item jid='c@d'>note</item></q></iq>";
  assert_int_equal(epode__xml_parser_feed(r.p, frag, sizeof frag - 1), EPODE_OK);
  epode__xml_parser_free(r.p);
  epode_stanza *iq = r.keep;
  epode_stanza *q = epode_stanza_find_child(iq, "q", "urn:q");
  epode_stanza *item = epode_stanza_find_child(q, "item", NULL);
  const char *jid = epode_stanza_get_attr(item, "jid");
  assert_int_equal(epode_stanza_detach(q), EPODE_OK);
  epode_stanza_free(iq);
  assert_string_equal(jid, "a@b");
  assert_string_equal(epode_stanza_text(epode_stanza_find_next(item, "item", NULL)), "note");
  /* Detached again from a tree it was re-added to. */
  epode_stanza *holder = NULL;
  assert_int_equal(epode_stanza_new(&holder, &mem, "h", NULL), EPODE_OK);
  assert_int_equal(epode_stanza_add_child(holder, q), EPODE_OK);
  assert_int_equal(epode_stanza_detach(item), EPODE_OK);
  assert_int_equal(epode_stanza_detach(q), EPODE_OK);
  epode_stanza_free(holder);
  epode_stanza_free(q);
  assert_string_equal(jid, "a@b");
  assert_ser(item, NULL, "<item xmlns='urn:q' jid='a@b' name='A'/>");
  epode_stanza_free(item);
  free(r.log);
  assert_int_equal(f.live, 0);
}

/* Allocation failures while a large stanza grows its arena and the text
 * buffer grows. */
static void test_arena_alloc_failure(void **state) {
  (void)state;
  size_t cap = 64 * 1024, n = 0;
  char *doc = malloc(cap);
  n += (size_t)snprintf(doc + n, cap - n, "%s<iq type='result'><query xmlns='jabber:iq:roster'>",
                        HDR);
  for (int i = 0; i < 80; i++)
    n += (size_t)snprintf(doc + n, cap - n,
                          "<item jid='contact%d@example.com' name='N&amp;%d'><group>G%d</group>"
                          "</item>",
                          i, i, i % 3);
  n += (size_t)snprintf(doc + n, cap - n, "</query><x>");
  for (int i = 0; i < 400; i++)
    n += (size_t)snprintf(doc + n, cap - n, "t&lt;%03d ", i);
  n += (size_t)snprintf(doc + n, cap - n, "</x></iq><presence/>");
  epode_test_failmem f;
  epode_test_failmem_init(&f, 0);
  epode_mem mem = f.mem;
  epode__xml_callbacks cb = {NULL, cb_count, NULL};
  int count = 0;
  epode__xml_parser *p = NULL;
  assert_int_equal(epode__xml_parser_new(&p, &mem, NULL, EPODE__XML_STREAM, &cb, &count), EPODE_OK);
  assert_int_equal(feed_chunks(p, doc, n, 100), EPODE_OK);
  epode__xml_parser_free(p);
  long total = f.calls;
  assert_int_equal(count, 2);
  for (long k = 1;; k++) {
    epode_test_failmem_init(&f, k);
    count = 0;
    p = NULL;
    epode_err e = epode__xml_parser_new(&p, &mem, NULL, EPODE__XML_STREAM, &cb, &count);
    if (!e) e = feed_chunks(p, doc, n, 100);
    epode__xml_parser_free(p);
    if (f.live != 0) fail_msg("allocation %ld failed: %ld blocks leaked", k, f.live);
    if (e == EPODE_OK) {
      assert_int_equal(k, total + 1);
      assert_int_equal(count, 2);
      break;
    }
    if (e != EPODE_ERR_NOMEM) fail_msg("allocation %ld: %s", k, epode_err_name(e));
  }
  free(doc);
}

/* Invalid UTF-8 is reported at the byte a strict decoder rejects, however
 * the input is split. */
static void test_utf8_position(void **state) {
  (void)state;
  static const struct {
    const char *doc;
    unsigned long at;
  } cases[] = {
      {"<a>x\xc3\x28</a>", 5},         /* lead byte, then no continuation */
      {"<a>x\xe0\x9f\x80</a>", 5},     /* overlong: the second byte is out of range */
      {"<a>x\xf4\x8f\xbf\x41</a>", 7}, /* truncated by an ASCII byte */
      {"<a>x\xf5\x80\x80\x80</a>", 4}, /* never a lead byte */
      {"<a b='\xed\xa0\x80'/>", 7},    /* surrogate */
      {"<a/>\x80", 4},                 /* stray continuation between stanzas */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t n = strlen(cases[i].doc);
    char want[64];
    snprintf(want, sizeof want, "byte %lu ", cases[i].at);
    for (size_t cut = 0; cut <= n; cut++) {
      rec r;
      mk(&r, EPODE__XML_FRAGMENTS, NULL);
      epode_err e = epode__xml_parser_feed(r.p, cases[i].doc, cut);
      if (!e) e = epode__xml_parser_feed(r.p, cases[i].doc + cut, n - cut);
      assert_int_equal(e, EPODE_ERR_XML_UTF8);
      if (!strstr(epode__xml_parser_errmsg(r.p), want))
        fail_msg("case %zu cut %zu: %s", i, cut, epode__xml_parser_errmsg(r.p));
      done(&r);
    }
  }
  /* A sequence cut off by the end of the input is not an error yet. */
  rec r;
  mk(&r, EPODE__XML_STREAM, NULL);
  assert_int_equal(epode__xml_parser_feed(r.p, HDR "<a>\xe2\x82", strlen(HDR) + 5), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(r.p, "\xac</a>", 5), EPODE_OK);
  assert_int_equal(r.stanzas, 1);
  done(&r);
}

/* ------------------------------------------------------------ releasing expat */

/* Whether the parser is using an expat instance (not released, nor
 * parked for it: see parser.c). */
static int in_use(const epode__xml_parser *p) { return epode__xml_parser_holds_expat(p) == 1; }

/* Feeds a parser of its own one element, so that its instance is the one
 * parked on this thread and whatever was parked before is freed. */
static epode__xml_parser *ev;

static void evict_parked(void) {
  if (!ev)
    assert_int_equal(epode__xml_parser_new(&ev, NULL, NULL, EPODE__XML_FRAGMENTS, NULL, NULL),
                     EPODE_OK);
  if (epode__xml_parser_holds_expat(ev) == 2) {
    /* Its own instance is the parked one: make it use it, then free it. */
    assert_int_equal(epode__xml_parser_reset(ev), EPODE_OK);
  }
  assert_int_equal(epode__xml_parser_feed(ev, "<x/>", 4), EPODE_OK);
  assert_int_equal(epode__xml_parser_holds_expat(ev), 2);
}

/* What a run produced: the callbacks' log, the error and its message. */
typedef struct outcome {
  char *log;
  epode_err err;
  char msg[256];
  int releases; /* feeds after which the parser did not use its instance */
} outcome;

/* Gives the parser n bytes as a transport reading into the parser's own
 * buffer does: first a read that finds nothing (a lent buffer given back
 * empty), then reads into each buffer lent, as long as one is lent (feed()
 * for the rest when none is: the parser has no instance). */
static epode_err lend_feed(epode__xml_parser *p, const char *s, size_t n) {
  void *b;
  size_t len, off = 0;
  epode_err e = epode__xml_parser_buffer(p, n ? n : 1, &b, &len);
  if (e) return e;
  if (b && (e = epode__xml_parser_commit(p, 0))) return e;
  while (off < n) {
    e = epode__xml_parser_buffer(p, n - off, &b, &len);
    if (e) return e;
    if (!b) return epode__xml_parser_feed(p, s + off, n - off);
    assert_true(len >= 1 && len <= n - off);
    memcpy(b, s + off, len);
    off += len;
    if ((e = epode__xml_parser_commit(p, len))) return e;
  }
  return EPODE_OK;
}

/* Feeds `doc` cut at the offsets in cuts[0..ncuts) (ascending), stopping
 * at the first error. With `evict`, each released instance is freed before
 * the next feed, which then makes a new one; otherwise it takes its parked
 * instance back. With `lend`, through the parser's own buffer (lend_feed). */
static void run_cuts(outcome *o, const char *doc, size_t n, const size_t *cuts, size_t ncuts,
                     const epode__xml_limits *lim, int evict, int lend) {
  rec r;
  mk(&r, EPODE__XML_STREAM, lim);
  memset(o, 0, sizeof *o);
  size_t at = 0;
  for (size_t k = 0; k <= ncuts && !o->err; k++) {
    size_t to = k < ncuts ? cuts[k] : n;
    if (to < at) continue;
    o->err = lend ? lend_feed(r.p, doc + at, to - at) : epode__xml_parser_feed(r.p, doc + at, to - at);
    if (!o->err && to > at && !in_use(r.p)) {
      o->releases++;
      if (evict) {
        assert_int_equal(epode__xml_parser_holds_expat(r.p), 2);
        evict_parked();
        assert_int_equal(epode__xml_parser_holds_expat(r.p), 0);
      }
    }
    at = to;
  }
  snprintf(o->msg, sizeof o->msg, "%s", epode__xml_parser_errmsg(r.p));
  o->log = r.log;
  r.log = NULL;
  done(&r);
}

static void assert_same(const outcome *want, const outcome *got, const char *doc, const char *how) {
  if (strcmp(want->log ? want->log : "", got->log ? got->log : "") != 0 || want->err != got->err ||
      strcmp(want->msg, got->msg) != 0)
    fail_msg("%s differs for %s\n  want %s (%s)\n%s  got %s (%s)\n%s", how, doc,
             epode_err_name(want->err), want->msg, want->log ? want->log : "",
             epode_err_name(got->err), got->msg, got->log ? got->log : "");
}

/* Every way of cutting `doc` gives the same stanzas, error and message as
 * one feed: cut once anywhere, cut at every byte, and cut at every stanza
 * boundary (where the parser releases expat; at least `min_releases`);
 * each with the released instance taken back, and with a new one made. */
static void check_equivalent(const char *doc, const epode__xml_limits *lim, int min_releases) {
  size_t n = strlen(doc);
  outcome ref, o;
  run_cuts(&ref, doc, n, NULL, 0, lim, 0, 0);
  size_t *cuts = calloc(n + 1, sizeof *cuts);
  assert_non_null(cuts);
  for (int k = 0; k < 4; k++) {
    int evict = k & 1, lend = k >> 1;
    static const char *const modes[] = {" (parked instances)", " (new instances)",
                                        " (parked instances, lent buffers)",
                                        " (new instances, lent buffers)"};
    const char *mode = modes[k];
    for (size_t i = 0; i <= n; i++) {
      run_cuts(&o, doc, n, &i, 1, lim, evict, lend);
      char how[64];
      snprintf(how, sizeof how, "split at %zu%s", i, mode);
      assert_same(&ref, &o, doc, how);
      free(o.log);
    }
    for (size_t i = 0; i < n; i++)
      cuts[i] = i + 1;
    run_cuts(&o, doc, n, cuts, n, lim, evict, lend);
    char how_s[96];
    snprintf(how_s, sizeof how_s, "byte by byte%s", mode);
    assert_same(&ref, &o, doc, how_s);
    free(o.log);
    /* After each '>' (every stanza end, and more). */
    size_t nc = 0;
    for (size_t i = 0; i < n; i++)
      if (doc[i] == '>') cuts[nc++] = i + 1;
    run_cuts(&o, doc, n, cuts, nc, lim, evict, lend);
    snprintf(how_s, sizeof how_s, "cut after every '>'%s", mode);
    assert_same(&ref, &o, doc, how_s);
    if (o.releases < min_releases)
      fail_msg("%d releases, expected at least %d, for %s", o.releases, min_releases, doc);
    free(o.log);
  }
  free(cuts);
  free(ref.log);
}

#define HDR_NS                                                                                     \
  "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "          \
  "xmlns:foo='urn:foo' xmlns:e='urn:&amp;&lt;&apos;&#9;&#10;&#13;\"&gt;x' id='\xc3\xa9\xe2\x82"    \
  "\xac\xf0\x9f\x98\x80' version='1.0'>"

static void test_release_equivalence(void **state) {
  (void)state;
  epode__xml_limits small = {100, 4, 4};
  static const struct {
    const char *doc;
    int small_limits, min_releases;
  } cases[] = {
      {stream_doc, 0, 5},
      {split_doc, 0, 3},
      /* Prefixes declared only on the header, used after releases. */
      {HDR_NS "<foo:bar e:a='1'/>\n<stream:features><foo:x/></stream:features>"
              "<message><e:y foo:z='2'/></message></stream:stream>",
       0, 4},
      /* A root named without the usual prefix, and without one. */
      {"<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:server'>"
       "<s:features/><message/></s:stream>",
       0, 3},
      {"<stream xmlns='http://etherx.jabber.org/streams'><features/><x xmlns=''/></stream>", 0, 3},
      {"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
       "xmlns=''><a/></stream:stream>",
       0, 2},
      /* Errors after releases, with their positions (lines, and columns
       * counted in characters on a header line with non-ASCII text). */
      {HDR_NS "<a/><b/><foo:c/><d></f></d>", 0, 4},
      {HDR_NS "\n<a/>\n  <b/><c>\n\xc3\xa9\xc3\xa9<x y='\xff'/></c>", 0, 3},
      {HDR_NS "<a/>\r\n<b/>\r<c/>\r\n\r\n  <undeclared:x/>", 0, 3},
      {HDR_NS "<a/></stream:wrong>", 0, 2},
      {HDR_NS "<a/></stream:stream><b/>", 0, 2},
      {HDR_NS "<a/></stream:stream>junk", 0, 2},
      {HDR_NS "<a/>junk<b/>", 0, 2},
      {HDR_NS "<a/><!-- c --><b/>", 0, 2},
      {HDR_NS "<a/>\n<?pi x?>", 0, 2},
      {HDR_NS "<a/>\n<m>&foo;</m>", 0, 2},
      {HDR_NS "<a/>\n<m a='&nbsp;'/>", 0, 2},
      {HDR_NS "<a/>\n<?xml version='1.0'?>", 0, 2},
      {HDR_NS "<a/>\n<!DOCTYPE x>", 0, 2},
      {HDR_NS "<a/>\xef\xbb\xbf<b/>", 0, 2},
      {"<?xml version='1.0'?>\n" HDR "\n<a/>\n<b>\xc3\x28</b>", 0, 2},
      {HDR "<a/><x xmlns:foo='urn:1' xmlns:bar='urn:1' foo:k='1' bar:k='2'/>", 0, 2},
      {HDR "<a/><x xmlns:xml='urn:wrong'/>", 0, 2},
      /* Limits after releases. */
      {HDR "<a>0123456789</a> <b>0123456789012345678901234567890123456789012345678901234567890123"
           "45678901234567890123456789</b>",
       1, 2},
      {HDR "<a/><b><c><d><e/></d></c></b>", 1, 2},
      {HDR "<a/><b w='1' x='2' y='3' z='4'/><c v='0' w='1' x='2' y='3' z='4'/>", 1, 3},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    check_equivalent(cases[i].doc, cases[i].small_limits ? &small : NULL, cases[i].min_releases);
  epode__xml_parser_free(ev);
  ev = NULL;
}

static void test_release_namespaces(void **state) {
  (void)state;
  rec r;
  mk(&r, EPODE__XML_STREAM, NULL);
  r.keep_last = 1;
  /* No instance before the first byte. */
  assert_false(in_use(r.p));
  assert_int_equal(epode__xml_parser_feed(r.p, HDR_NS, strlen(HDR_NS)), EPODE_OK);
  assert_false(in_use(r.p));
  const char *s = "<foo:bar e:a='1' xmlns:p='urn:p'><p:q/></foo:bar>";
  assert_int_equal(epode__xml_parser_feed(r.p, s, strlen(s)), EPODE_OK);
  assert_false(in_use(r.p));
  assert_string_equal(epode_stanza_name(r.keep), "bar");
  assert_string_equal(epode_stanza_ns(r.keep), "urn:foo");
  assert_string_equal(epode_stanza_get_attr(r.keep, "{urn:&<'\t\n\r\">x}a"), "1");
  /* The stanza's own declaration does not outlive it. */
  assert_int_equal(epode__xml_parser_feed(r.p, "<p:q/>", 6), EPODE_ERR_XML_NS);
  assert_int_equal(r.starts, 1);
  assert_int_equal(r.stanzas, 1);
  done(&r);

  /* The stream start callback is not called again, and the stream still
   * ends with its own end tag, in pieces. */
  mk(&r, EPODE__XML_STREAM, NULL);
  assert_int_equal(feed_chunks(r.p, HDR_NS, strlen(HDR_NS), 0), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(r.p, "<message/>", 10), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(r.p, "</stream:str", 12), EPODE_OK);
  assert_true(in_use(r.p));
  assert_int_equal(epode__xml_parser_feed(r.p, "eam>", 4), EPODE_OK);
  assert_int_equal(r.starts, 1);
  assert_int_equal(r.ends, 1);
  assert_non_null(strstr(r.log, "STANZA <message xmlns='jabber:client'/>\nEND\n"));
  done(&r);

  /* After a reset, only the new header's declarations count. */
  mk(&r, EPODE__XML_STREAM, NULL);
  assert_int_equal(epode__xml_parser_feed(r.p, HDR_NS "<foo:a/>", strlen(HDR_NS) + 8), EPODE_OK);
  assert_false(in_use(r.p));
  assert_int_equal(epode__xml_parser_reset(r.p), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(r.p, HDR, strlen(HDR)), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(r.p, "<foo:a/>", 8), EPODE_ERR_XML_NS);
  assert_int_equal(r.starts, 2);
  assert_int_equal(r.stanzas, 1);
  done(&r);
}

static void test_release_when(void **state) {
  (void)state;
  rec r;
  mk(&r, EPODE__XML_STREAM, NULL);
  /* Not before the header is complete. */
  assert_int_equal(epode__xml_parser_feed(r.p, "<?xml version='1.0'?>", 21), EPODE_OK);
  assert_true(in_use(r.p));
  assert_int_equal(epode__xml_parser_feed(r.p, HDR, strlen(HDR) - 1), EPODE_OK);
  assert_true(in_use(r.p));
  assert_int_equal(epode__xml_parser_feed(r.p, ">", 1), EPODE_OK);
  assert_false(in_use(r.p));
  /* Not inside a stanza, nor with part of a tag or a CR in expat. */
  static const struct {
    const char *piece;
    int held;
  } steps[] = {
      {"<a/>", 0}, {"<b>", 1},    {"text", 1},    {"</b>", 0},     {" \t\n", 0},   {"<c", 1},
      {"/>", 0},   {"<d/>\r", 1}, {"\n", 0},      {"<e/>\xc2", 1}, {"<f>\xc3", 1}, {"\xa9</f>", 0},
      {"\r", 1},   {"\r\n ", 0},  {"<g><h/>", 1}, {"</g>\n", 0},
  };
  for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
    epode_err e = epode__xml_parser_feed(r.p, steps[i].piece, strlen(steps[i].piece));
    if (i == 9) {
      /* "\xc2" between stanzas, cut short: not an error yet, and held. */
      assert_int_equal(e, EPODE_OK);
      assert_true(in_use(r.p));
      /* Its completion is text outside a stanza. */
      assert_int_equal(epode__xml_parser_feed(r.p, "\xa0", 1), EPODE_ERR_XML);
      assert_non_null(strstr(epode__xml_parser_errmsg(r.p), "text outside"));
      assert_int_equal(epode__xml_parser_reset(r.p), EPODE_OK);
      assert_false(in_use(r.p));
      assert_int_equal(epode__xml_parser_feed(r.p, HDR, strlen(HDR)), EPODE_OK);
      continue;
    }
    if (e != EPODE_OK) fail_msg("step %zu: %s", i, epode__xml_parser_errmsg(r.p));
    if (in_use(r.p) != steps[i].held)
      fail_msg("step %zu ('%s'): holds %d", i, steps[i].piece, epode__xml_parser_holds_expat(r.p));
  }
  assert_int_equal(r.stanzas, 7);
  /* Nor after the end of the stream, nor after an error. */
  assert_int_equal(epode__xml_parser_feed(r.p, "</stream:stream>", 16), EPODE_OK);
  assert_true(in_use(r.p));
  done(&r);
  mk(&r, EPODE__XML_STREAM, NULL);
  assert_int_equal(epode__xml_parser_feed(r.p, HDR "<a/><!-- -->", strlen(HDR) + 12),
                   EPODE_ERR_XML_RESTRICTED);
  assert_true(in_use(r.p));
  done(&r);
  /* A reset from a callback, after releases. */
  mk(&r, EPODE__XML_STREAM, NULL);
  r.reset_at_stanza = 2;
  assert_int_equal(epode__xml_parser_feed(r.p, HDR "<a/>", strlen(HDR) + 4), EPODE_OK);
  assert_false(in_use(r.p));
  assert_int_equal(epode__xml_parser_feed(r.p, "<proceed/>\x16\x03", 12), EPODE_OK);
  assert_false(in_use(r.p));
  assert_int_equal(epode__xml_parser_feed(r.p, HDR "<c/>", strlen(HDR) + 4), EPODE_OK);
  assert_int_equal(r.starts, 2);
  assert_int_equal(r.stanzas, 3);
  done(&r);
  /* Fragment mode releases between elements too. */
  mk(&r, EPODE__XML_FRAGMENTS, NULL);
  assert_int_equal(epode__xml_parser_holds_expat(r.p), 0);
  assert_int_equal(epode__xml_parser_feed(r.p, "<a/>", 4), EPODE_OK);
  assert_int_equal(epode__xml_parser_holds_expat(r.p), 2);
  assert_int_equal(epode__xml_parser_feed(r.p, "<a>", 3), EPODE_OK);
  assert_int_equal(epode__xml_parser_holds_expat(r.p), 1);
  assert_int_equal(epode__xml_parser_reset(r.p), EPODE_OK);
  assert_int_equal(epode__xml_parser_holds_expat(r.p), 0);
  assert_int_equal(epode__xml_parser_feed(r.p, "<a>\xc0\xaf</a>", 9), EPODE_ERR_XML_UTF8);
  assert_non_null(strstr(epode__xml_parser_errmsg(r.p), "byte 3"));
  done(&r);
}

/* A released instance is parked for its parser until the next release on
 * the thread frees it; either way the parser carries on. */
static void test_release_parking(void **state) {
  (void)state;
  rec a, b;
  mk(&a, EPODE__XML_STREAM, NULL);
  assert_int_equal(epode__xml_parser_feed(a.p, HDR_NS "<a/>", strlen(HDR_NS) + 4), EPODE_OK);
  assert_int_equal(epode__xml_parser_holds_expat(a.p), 2);
  /* Taken back by the next feed, parked again after it. */
  assert_int_equal(epode__xml_parser_feed(a.p, "<foo:b/>", 8), EPODE_OK);
  assert_int_equal(epode__xml_parser_holds_expat(a.p), 2);
  /* Another parser's release frees it. */
  memset(&b, 0, sizeof b);
  assert_int_equal(epode__xml_parser_new(&b.p, NULL, NULL, EPODE__XML_STREAM, &callbacks, &b),
                   EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(b.p, HDR "<x/>", strlen(HDR) + 4), EPODE_OK);
  assert_int_equal(epode__xml_parser_holds_expat(b.p), 2);
  assert_int_equal(epode__xml_parser_holds_expat(a.p), 0);
  /* A new one, primed with a's header, resolves a's prefixes. */
  assert_int_equal(epode__xml_parser_feed(a.p, "<foo:c e:x='1'/>", 16), EPODE_OK);
  assert_int_equal(epode__xml_parser_holds_expat(a.p), 2);
  assert_int_equal(epode__xml_parser_holds_expat(b.p), 0);
  assert_int_equal(epode__xml_parser_feed(b.p, "<foo:c/>", 8), EPODE_ERR_XML_NS);
  assert_non_null(strstr(a.log, "STANZA <c xmlns='urn:foo' xmlns:ns1='urn:&amp;&lt;&apos;&#9;&#10;"
                                "&#13;&quot;&gt;x' ns1:x='1'/>\n"));
  assert_int_equal(a.stanzas, 3);
  assert_int_equal(b.stanzas, 1);
  /* Freeing a parser frees its parked instance (ASan would see a leak). */
  done(&b);
  done(&a);

  /* Fragment mode: byte offsets run on across instances, however made. */
  static const char msgs[] = "<a/><b>x</b><c/><d>\xc0\xaf</d>";
  for (int evict = 0; evict <= 1; evict++) {
    mk(&a, EPODE__XML_FRAGMENTS, NULL);
    static const size_t cuts[] = {0, 4, 12, 16};
    for (size_t k = 0; k + 1 < sizeof cuts / sizeof cuts[0]; k++) {
      assert_int_equal(epode__xml_parser_feed(a.p, msgs + cuts[k], cuts[k + 1] - cuts[k]),
                       EPODE_OK);
      assert_int_equal(epode__xml_parser_holds_expat(a.p), 2);
      if (evict) evict_parked();
    }
    assert_int_equal(epode__xml_parser_feed(a.p, msgs + 16, sizeof msgs - 17), EPODE_ERR_XML_UTF8);
    assert_non_null(strstr(epode__xml_parser_errmsg(a.p), "byte 19 "));
    assert_int_equal(a.stanzas, 3);
    done(&a);
  }
  epode__xml_parser_free(ev);
  ev = NULL;
}

/* A thread that ends with an instance parked in its slot frees it (LSan
 * would report it lost), also when its owner was freed elsewhere. */
static void *park_in_thread(void *arg) {
  epode__xml_parser **out = arg;
  epode__xml_parser *p = NULL;
  if (epode__xml_parser_new(&p, NULL, NULL, EPODE__XML_STREAM, NULL, NULL) == EPODE_OK &&
      epode__xml_parser_feed(p, HDR "<a/>", strlen(HDR) + 4) == EPODE_OK &&
      epode__xml_parser_holds_expat(p) == 2)
    *out = p;
  else
    epode__xml_parser_free(p);
  return NULL;
}

static void test_release_threads(void **state) {
  (void)state;
  epode__xml_parser *p = NULL;
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, park_in_thread, &p), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_non_null(p);
  /* Its instance was parked in the other thread's slot: not ours. */
  assert_int_equal(epode__xml_parser_holds_expat(p), 0);
  assert_int_equal(epode__xml_parser_feed(p, "<b/>", 4), EPODE_OK);
  assert_int_equal(epode__xml_parser_holds_expat(p), 2);
  epode__xml_parser_free(p);
  /* Parked here, freed there. */
  p = NULL;
  assert_int_equal(pthread_create(&t, NULL, park_in_thread, &p), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  rec r;
  mk(&r, EPODE__XML_STREAM, NULL);
  assert_int_equal(epode__xml_parser_feed(r.p, HDR, strlen(HDR)), EPODE_OK);
  assert_int_equal(epode__xml_parser_holds_expat(r.p), 2);
  done(&r);
  epode__xml_parser_free(p);
}

/* A stanza of a few hundred KiB does not leave its text buffer behind once
 * the stream is idle again, and allocation failures while releasing and
 * re-creating are clean. */
static void test_release_memory(void **state) {
  (void)state;
  epode_test_failmem f;
  epode_test_failmem_init(&f, 0);
  epode_mem mem = f.mem;
  epode__xml_callbacks cb = {NULL, cb_count, NULL};
  int count = 0;
  epode__xml_parser *p = NULL;
  assert_int_equal(epode__xml_parser_new(&p, &mem, NULL, EPODE__XML_STREAM, &cb, &count), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(p, HDR "<m><body>", strlen(HDR) + 9), EPODE_OK);
  static char text[300 * 1024];
  memset(text, 'x', sizeof text);
  assert_int_equal(epode__xml_parser_feed(p, text, sizeof text), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(p, "</body></m>", 11), EPODE_OK);
  assert_int_equal(count, 1);
  assert_false(in_use(p));
  /* Only the parser, its header copy and a small text buffer remain. */
  assert_true(f.live <= 3);
  assert_int_equal(epode__xml_parser_feed(p, "<m>hi</m>", 9), EPODE_OK);
  assert_int_equal(count, 2);
  epode__xml_parser_free(p);
  assert_int_equal(f.live, 0);
}

/* Copies s into a buffer lent by the parser (which must lend at least
 * strlen(s) bytes) and commits it. */
static epode_err lend_str(epode__xml_parser *p, const char *s) {
  void *b;
  size_t len, n = strlen(s);
  assert_int_equal(epode__xml_parser_buffer(p, 4096, &b, &len), EPODE_OK);
  assert_non_null(b);
  assert_true(len >= n);
  memcpy(b, s, n);
  return epode__xml_parser_commit(p, n);
}

static epode_err cb_lend_inside(void *ud, epode_stanza *st) {
  rec *r = ud;
  void *b = (void *)1;
  size_t len = 1;
  /* Not from inside a callback: the parser is running. */
  assert_int_equal(epode__xml_parser_buffer(r->p, 64, &b, &len), EPODE_ERR_STATE);
  assert_null(b);
  assert_int_equal(len, 0);
  return cb_stanza(ud, st);
}

/* Reading into the parser's own buffer (epode__xml_parser_buffer/commit):
 * the rules of lending; test_release_equivalence runs every cut of its
 * streams through lent buffers too. */
static void test_lent_buffer(void **state) {
  (void)state;
  rec r;
  void *b;
  size_t len;
  mk(&r, EPODE__XML_STREAM, NULL);
  /* No instance yet: nothing is lent (feed() makes the first one). */
  assert_int_equal(epode__xml_parser_buffer(r.p, 4096, &b, &len), EPODE_OK);
  assert_null(b);
  assert_int_equal(len, 0);
  assert_int_equal(epode__xml_parser_holds_expat(r.p), 0);
  assert_int_equal(epode__xml_parser_buffer(r.p, 0, &b, &len), EPODE_ERR_INVAL);
  assert_int_equal(epode__xml_parser_commit(r.p, 0), EPODE_ERR_STATE);
  assert_int_equal(epode__xml_parser_feed(r.p, HDR, strlen(HDR)), EPODE_OK);
  assert_int_equal(epode__xml_parser_holds_expat(r.p), 2);
  /* Lent: the parked instance is in use until the buffer comes back. */
  assert_int_equal(epode__xml_parser_buffer(r.p, 4096, &b, &len), EPODE_OK);
  assert_non_null(b);
  assert_int_equal(len, 4096);
  assert_int_equal(epode__xml_parser_holds_expat(r.p), 1);
  assert_int_equal(epode__xml_parser_feed(r.p, "<a/>", 4), EPODE_ERR_STATE);
  assert_int_equal(epode__xml_parser_buffer(r.p, 16, &b, &len), EPODE_ERR_STATE);
  assert_int_equal(epode__xml_parser_commit(r.p, 4097), EPODE_ERR_STATE);
  /* Given back empty (a read that found nothing): released again. */
  assert_int_equal(epode__xml_parser_commit(r.p, 0), EPODE_OK);
  assert_int_equal(epode__xml_parser_holds_expat(r.p), 2);
  assert_int_equal(epode__xml_parser_commit(r.p, 0), EPODE_ERR_STATE);
  /* Bytes read into it are parsed; a partial stanza keeps the instance. */
  assert_int_equal(lend_str(r.p, "<message><body>hi</body></message><iq type='get'"), EPODE_OK);
  assert_int_equal(r.stanzas, 1);
  assert_int_equal(epode__xml_parser_holds_expat(r.p), 1);
  assert_int_equal(lend_str(r.p, "/>"), EPODE_OK);
  assert_int_equal(r.stanzas, 2);
  assert_int_equal(epode__xml_parser_holds_expat(r.p), 2);
  /* Errors are the parser's, sticky, and stop lending. */
  assert_int_equal(lend_str(r.p, "<a></b>"), EPODE_ERR_XML);
  assert_int_equal(epode__xml_parser_buffer(r.p, 16, &b, &len), EPODE_ERR_XML);
  assert_null(b);
  assert_int_equal(epode__xml_parser_feed(r.p, " ", 1), EPODE_ERR_XML);
  done(&r);

  /* No more than the stanza limit still allows, plus one byte. */
  epode__xml_limits lim = {100, 0, 0};
  mk(&r, EPODE__XML_STREAM, &lim);
  assert_int_equal(epode__xml_parser_feed(r.p, HDR, strlen(HDR)), EPODE_OK);
  assert_int_equal(epode__xml_parser_buffer(r.p, 4096, &b, &len), EPODE_OK);
  assert_int_equal(len, 101);
  memcpy(b, "<m>0123456789", 13);
  assert_int_equal(epode__xml_parser_commit(r.p, 13), EPODE_OK);
  assert_int_equal(epode__xml_parser_pending(r.p), 13);
  assert_int_equal(epode__xml_parser_buffer(r.p, 4096, &b, &len), EPODE_OK);
  assert_int_equal(len, 100 - 13 + 1);
  assert_int_equal(epode__xml_parser_commit(r.p, 0), EPODE_OK);
  assert_int_equal(epode__xml_parser_buffer(r.p, 10, &b, &len), EPODE_OK);
  assert_int_equal(len, 10); /* and no more than asked for */
  memset(b, 'x', 10);
  assert_int_equal(epode__xml_parser_commit(r.p, 10), EPODE_OK);
  /* 23 pending: 78 allowed, and the 79th byte goes over. */
  assert_int_equal(epode__xml_parser_buffer(r.p, 4096, &b, &len), EPODE_OK);
  assert_int_equal(len, 78);
  memset(b, 'y', 78);
  assert_int_equal(epode__xml_parser_commit(r.p, 78), EPODE_ERR_LIMIT);
  assert_non_null(strstr(epode__xml_parser_errmsg(r.p), "exceeds the limit of 100 bytes"));
  assert_int_equal(r.stanzas, 0);
  done(&r);

  /* A reset from a callback drops the rest of the lent bytes, as with
   * feed(); the parser then starts a new document. */
  mk(&r, EPODE__XML_STREAM, NULL);
  r.reset_at_stanza = 1;
  assert_int_equal(epode__xml_parser_feed(r.p, HDR, strlen(HDR)), EPODE_OK);
  assert_int_equal(lend_str(r.p, "<proceed/><dropped/>"), EPODE_OK);
  assert_int_equal(r.stanzas, 1);
  assert_int_equal(epode__xml_parser_holds_expat(r.p), 0);
  assert_int_equal(epode__xml_parser_feed(r.p, HDR "<x/>", strlen(HDR) + 4), EPODE_OK);
  assert_int_equal(r.starts, 2);
  assert_int_equal(r.stanzas, 2);
  assert_null(strstr(r.log, "dropped"));
  done(&r);

  /* A callback's error comes back from commit(). */
  mk(&r, EPODE__XML_STREAM, NULL);
  r.fail_at_stanza = 2;
  r.fail_at_stanza_err = EPODE_ERR_PROTOCOL;
  assert_int_equal(epode__xml_parser_feed(r.p, HDR, strlen(HDR)), EPODE_OK);
  assert_int_equal(lend_str(r.p, "<a/><b/><c/>"), EPODE_ERR_PROTOCOL);
  assert_int_equal(r.stanzas, 2);
  done(&r);

  /* Not from inside a callback. */
  epode__xml_callbacks cb = {cb_start, cb_lend_inside, cb_end};
  memset(&r, 0, sizeof r);
  assert_int_equal(epode__xml_parser_new(&r.p, NULL, NULL, EPODE__XML_STREAM, &cb, &r), EPODE_OK);
  assert_int_equal(epode__xml_parser_feed(r.p, HDR "<a/>", strlen(HDR) + 4), EPODE_OK);
  assert_int_equal(lend_str(r.p, "<b/>"), EPODE_OK);
  assert_int_equal(r.stanzas, 2);
  done(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lent_buffer),
      cmocka_unit_test(test_stream),
      cmocka_unit_test(test_message_tree),
      cmocka_unit_test(test_namespaces),
      cmocka_unit_test(test_refs_and_cdata),
      cmocka_unit_test(test_restricted),
      cmocka_unit_test(test_billion_laughs),
      cmocka_unit_test(test_split_everywhere),
      cmocka_unit_test(test_utf8),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_limit_stanza_bytes),
      cmocka_unit_test(test_limit_depth_attrs),
      cmocka_unit_test(test_reset_in_callback),
      cmocka_unit_test(test_callback_errors),
      cmocka_unit_test(test_fragments),
      cmocka_unit_test(test_alloc_failure),
      cmocka_unit_test(test_arena_one_allocation),
      cmocka_unit_test(test_arena_tree_api),
      cmocka_unit_test(test_arena_alloc_failure),
      cmocka_unit_test(test_utf8_position),
      cmocka_unit_test(test_release_equivalence),
      cmocka_unit_test(test_release_namespaces),
      cmocka_unit_test(test_release_when),
      cmocka_unit_test(test_release_memory),
      cmocka_unit_test(test_release_parking),
      cmocka_unit_test(test_release_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
