/* The stanza tree API and serialiser. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "epode/stanza.h"
#include "xml/parser.h"

#include "failmem.h"

/* ------------------------------------------------------------ helpers */

static char *ser(const epode_stanza *st, const char *ctx) {
  char *s = NULL;
  size_t len = 0;
  assert_int_equal(epode_stanza_to_string(st, ctx, &s, &len), EPODE_OK);
  assert_non_null(s);
  assert_int_equal(strlen(s), len);
  return s;
}

static void assert_ser(const epode_stanza *st, const char *ctx, const char *want) {
  char *s = ser(st, ctx);
  assert_string_equal(s, want);
  epode_free(epode_stanza_mem(st), s);
}

typedef struct parsed {
  epode_stanza *st;
  int count;
} parsed;

static epode_err on_stanza(void *ud, epode_stanza *st) {
  parsed *p = ud;
  p->count++;
  if (p->st) epode_stanza_free(p->st);
  p->st = st;
  return EPODE_OK;
}

/* Parses one element (fragment mode); NULL on error. */
static epode_stanza *parse_mem(const char *xml, const epode_mem *mem, epode_err *err) {
  epode__xml_callbacks cb = {NULL, on_stanza, NULL};
  parsed res = {NULL, 0};
  epode__xml_parser *p = NULL;
  epode_err e = epode__xml_parser_new(&p, mem, NULL, EPODE__XML_FRAGMENTS, &cb, &res);
  if (!e) e = epode__xml_parser_feed(p, xml, strlen(xml));
  if (!e && res.count != 1) e = EPODE_ERR_XML;
  epode__xml_parser_free(p);
  if (e) {
    epode_stanza_free(res.st);
    res.st = NULL;
  }
  if (err) *err = e;
  return res.st;
}

static epode_stanza *parse(const char *xml) {
  epode_err e;
  epode_stanza *st = parse_mem(xml, NULL, &e);
  if (e) fail_msg("parse failed (%s): %s", epode_err_name(e), xml);
  return st;
}

/* ------------------------------------------------------------ tests */

static void test_build_and_read(void **state) {
  (void)state;
  epode_stanza *m = NULL;
  assert_int_equal(epode_stanza_new(&m, NULL, "message", EPODE_NS_CLIENT), EPODE_OK);
  assert_false(epode_stanza_is_text(m));
  assert_string_equal(epode_stanza_name(m), "message");
  assert_string_equal(epode_stanza_ns(m), EPODE_NS_CLIENT);
  assert_int_equal(epode_stanza_set_attr(m, "id", "i1"), EPODE_OK);
  assert_int_equal(epode_stanza_set_attr(m, "type", "chat"), EPODE_OK);
  assert_int_equal(epode_stanza_set_attr(m, "to", "a@b"), EPODE_OK);
  assert_int_equal(epode_stanza_set_attr(m, "from", "c@d/e"), EPODE_OK);
  assert_int_equal(epode_stanza_set_attr(m, "xml:lang", "en"), EPODE_OK);
  assert_string_equal(epode_stanza_id(m), "i1");
  assert_string_equal(epode_stanza_type(m), "chat");
  assert_string_equal(epode_stanza_to(m), "a@b");
  assert_string_equal(epode_stanza_from(m), "c@d/e");
  assert_string_equal(epode_stanza_get_attr(m, "xml:lang"), "en");
  assert_null(epode_stanza_get_attr(m, "nope"));
  assert_int_equal(epode_stanza_attr_count(m), 5);
  const char *n, *v;
  assert_int_equal(epode_stanza_attr_at(m, 1, &n, &v), EPODE_OK);
  assert_string_equal(n, "type");
  assert_string_equal(v, "chat");
  assert_int_equal(epode_stanza_attr_at(m, 5, &n, &v), EPODE_ERR_NOTFOUND);

  epode_stanza *body = NULL, *x = NULL;
  assert_int_equal(epode_stanza_add_child_new(&body, m, "body", NULL), EPODE_OK);
  assert_ptr_equal(epode_stanza_parent(body), m);
  assert_string_equal(epode_stanza_ns(body), EPODE_NS_CLIENT); /* inherited */
  assert_int_equal(epode_stanza_add_text(body, "hello", 5), EPODE_OK);
  assert_int_equal(epode_stanza_add_child_new(&x, m, "x", "jabber:x:oob"), EPODE_OK);
  assert_string_equal(epode_stanza_ns(x), "jabber:x:oob");
  assert_ptr_equal(epode_stanza_first_child(m), body);
  assert_ptr_equal(epode_stanza_next_sibling(body), x);
  assert_null(epode_stanza_next_sibling(x));
  epode_stanza *t = epode_stanza_first_child(body);
  assert_true(epode_stanza_is_text(t));
  assert_null(epode_stanza_name(t));
  assert_null(epode_stanza_ns(t));
  assert_string_equal(epode_stanza_text(t), "hello");
  assert_string_equal(epode_stanza_child_text(m, "body"), "hello");
  assert_null(epode_stanza_child_text(m, "subject"));
  assert_string_equal(epode_stanza_child_text(m, "x"), ""); /* exists, no text */
  assert_ptr_equal(epode_stanza_mem(m), epode_stanza_mem(m));
  assert_ser(m, EPODE_NS_CLIENT,
             "<message id='i1' type='chat' to='a@b' from='c@d/e' xml:lang='en'>"
             "<body>hello</body><x xmlns='jabber:x:oob'/></message>");
  epode_stanza_free(m);
  epode_stanza_free(NULL);
}

static void test_find_child(void **state) {
  (void)state;
  epode_stanza *st = parse("<iq xmlns='jabber:client'>text<a/><b xmlns='urn:x'/><a xmlns='urn:x'/>"
                           "<c/><b/></iq>");
  epode_stanza *c = epode_stanza_find_child(st, "a", NULL);
  assert_non_null(c);
  assert_string_equal(epode_stanza_ns(c), "jabber:client");
  c = epode_stanza_find_child(st, "a", "urn:x");
  assert_non_null(c);
  assert_string_equal(epode_stanza_ns(c), "urn:x");
  c = epode_stanza_find_child(st, NULL, "urn:x");
  assert_string_equal(epode_stanza_name(c), "b");
  c = epode_stanza_find_next(c, NULL, "urn:x");
  assert_string_equal(epode_stanza_name(c), "a");
  assert_string_equal(epode_stanza_ns(c), "urn:x");
  assert_null(epode_stanza_find_next(c, NULL, "urn:x"));
  c = epode_stanza_find_child(st, NULL, NULL); /* skips the text node */
  assert_string_equal(epode_stanza_name(c), "a");
  c = epode_stanza_find_child(st, "b", "jabber:client");
  assert_ptr_equal(epode_stanza_next_sibling(c), NULL);
  c = epode_stanza_find_next(epode_stanza_find_child(st, "a", NULL), "c", NULL);
  assert_string_equal(epode_stanza_name(c), "c");
  assert_null(epode_stanza_find_child(st, "zz", NULL));
  assert_null(epode_stanza_find_child(st, "a", "urn:none"));
  /* child_text prefers the stanza's namespace. */
  epode_stanza *m = parse("<message xmlns='jabber:client'><body xmlns='urn:o'>other</body>"
                          "<body>mine</body></message>");
  assert_string_equal(epode_stanza_child_text(m, "body"), "mine");
  epode_stanza_free(m);
  m = parse("<message xmlns='jabber:client'><body xmlns='urn:o'>other</body></message>");
  assert_string_equal(epode_stanza_child_text(m, "body"), "other");
  epode_stanza_free(m);
  epode_stanza_free(st);
}

static void test_text_merge(void **state) {
  (void)state;
  epode_stanza *b = NULL;
  assert_int_equal(epode_stanza_new(&b, NULL, "body", NULL), EPODE_OK);
  assert_string_equal(epode_stanza_text(b), "");
  assert_int_equal(epode_stanza_text_len(b), 0);
  assert_int_equal(epode_stanza_add_text(b, "", 0), EPODE_OK);
  assert_null(epode_stanza_first_child(b)); /* empty text adds no node */
  char *none = NULL;
  size_t nlen = 99;
  assert_int_equal(epode_stanza_get_text(b, &none, &nlen), EPODE_OK);
  assert_string_equal(none, ""); /* terminated even though nothing was written */
  assert_int_equal(nlen, 0);
  epode_free(NULL, none);
  assert_int_equal(epode_stanza_add_text(b, "abc", 3), EPODE_OK);
  assert_int_equal(epode_stanza_add_text(b, "defXX", 3), EPODE_OK); /* len respected */
  /* Grow well past the inline size, many times. */
  for (int i = 0; i < 200; i++)
    assert_int_equal(epode_stanza_add_text(b, "0123456789", 10), 0);
  epode_stanza *t = epode_stanza_first_child(b);
  assert_non_null(t);
  assert_null(epode_stanza_next_sibling(t)); /* one merged node */
  assert_int_equal(epode_stanza_text_len(b), 6 + 2000);
  assert_memory_equal(epode_stanza_text(b), "abcdef0123456789", 16);
  assert_int_equal(strlen(epode_stanza_text(b)), 2006);

  epode_stanza *e = NULL;
  assert_int_equal(epode_stanza_add_child_new(&e, b, "e", NULL), EPODE_OK);
  assert_int_equal(epode_stanza_add_text(e, "in", 2), EPODE_OK);
  assert_int_equal(epode_stanza_add_text(b, "tail", 4), EPODE_OK);
  assert_ptr_not_equal(epode_stanza_next_sibling(e), NULL);
  char *all = NULL;
  size_t len = 0;
  assert_int_equal(epode_stanza_get_text(b, &all, &len), EPODE_OK);
  assert_int_equal(len, 2006 + 2 + 4);
  assert_string_equal(all + 2006, "intail");
  epode_free(NULL, all);
  /* Text of a text node; text of an element whose first child is not text. */
  assert_string_equal(epode_stanza_text(epode_stanza_next_sibling(e)), "tail");
  epode_stanza *p = parse("<p><q/>second<r/>third</p>");
  assert_string_equal(epode_stanza_text(p), "second");
  assert_int_equal(epode_stanza_text_len(p), 6);
  assert_int_equal(epode_stanza_get_text(p, &all, &len), EPODE_OK);
  assert_string_equal(all, "secondthird");
  epode_free(NULL, all);
  epode_stanza_free(p);
  epode_stanza_free(b);
}

static void test_detach_clone(void **state) {
  (void)state;
  epode_stanza *m = NULL, *a = NULL, *b = NULL;
  assert_int_equal(epode_stanza_new(&m, NULL, "m", "urn:m"), EPODE_OK);
  assert_int_equal(epode_stanza_add_text(m, "one", 3), EPODE_OK);
  assert_int_equal(epode_stanza_add_child_new(&a, m, "a", NULL), EPODE_OK); /* inherits urn:m */
  assert_int_equal(epode_stanza_add_child_new(&b, a, "b", NULL), EPODE_OK);
  assert_int_equal(epode_stanza_set_attr(b, "k", "v"), EPODE_OK);
  assert_int_equal(epode_stanza_add_text(m, "two", 3), EPODE_OK);
  assert_ser(m, "urn:m", "<m>one<a><b k='v'/></a>two</m>");

  /* Clone of a subtree keeps the inherited namespace. */
  epode_stanza *c = NULL;
  assert_int_equal(epode_stanza_clone(&c, a), EPODE_OK);
  assert_null(epode_stanza_parent(c));
  assert_string_equal(epode_stanza_ns(c), "urn:m");
  assert_ser(c, NULL, "<a xmlns='urn:m'><b k='v'/></a>");
  epode_stanza_free(c);
  /* Clone of the whole tree is equal and independent. */
  assert_int_equal(epode_stanza_clone(&c, m), EPODE_OK);
  assert_int_equal(epode_stanza_set_attr(
                       epode_stanza_find_child(epode_stanza_find_child(c, "a", NULL), "b", NULL),
                       "k", "changed"),
                   EPODE_OK);
  assert_ser(c, "urn:m", "<m>one<a><b k='changed'/></a>two</m>");
  assert_ser(m, "urn:m", "<m>one<a><b k='v'/></a>two</m>");
  epode_stanza_free(c);

  /* Detach: the child keeps its namespace; the texts around it merge. */
  assert_int_equal(epode_stanza_detach(a), EPODE_OK);
  assert_null(epode_stanza_parent(a));
  assert_string_equal(epode_stanza_ns(a), "urn:m");
  assert_string_equal(epode_stanza_ns(b), "urn:m");
  epode_stanza *t = epode_stanza_first_child(m);
  assert_true(epode_stanza_is_text(t));
  assert_null(epode_stanza_next_sibling(t));
  assert_string_equal(epode_stanza_text(m), "onetwo");
  assert_ser(m, "urn:m", "<m>onetwo</m>");
  assert_ser(a, "urn:x", "<a xmlns='urn:m'><b k='v'/></a>");
  assert_int_equal(epode_stanza_detach(a), EPODE_ERR_INVAL); /* no parent */
  /* Re-adding works; adding into itself is refused. */
  assert_int_equal(epode_stanza_add_child(b, a), EPODE_ERR_INVAL);
  assert_int_equal(epode_stanza_add_child(a, a), EPODE_ERR_INVAL);
  assert_int_equal(epode_stanza_add_child(m, a), EPODE_OK);
  assert_int_equal(epode_stanza_add_child(m, a), EPODE_ERR_INVAL); /* has a parent */
  assert_ser(m, "urn:m", "<m>onetwo<a><b k='v'/></a></m>");
  /* A detached text node added after text is merged in. */
  epode_stanza *tn = epode_stanza_first_child(m);
  assert_int_equal(epode_stanza_detach(tn), EPODE_OK);
  assert_int_equal(epode_stanza_add_text(b, "x", 1), EPODE_OK);
  assert_int_equal(epode_stanza_add_child(b, tn), EPODE_OK);
  assert_string_equal(epode_stanza_text(b), "xonetwo");
  assert_null(epode_stanza_next_sibling(epode_stanza_first_child(b)));
  assert_ser(m, "urn:m", "<m><a><b k='v'>xonetwo</b></a></m>");
  /* Clone of a text node. */
  assert_int_equal(epode_stanza_clone(&c, epode_stanza_first_child(b)), EPODE_OK);
  assert_true(epode_stanza_is_text(c));
  assert_string_equal(epode_stanza_text(c), "xonetwo");
  epode_stanza_free(c);
  epode_stanza_free(m);
}

static void test_attr_replace_delete(void **state) {
  (void)state;
  epode_stanza *st = parse("<a x='1' y='2' z='3'/>");
  assert_int_equal(epode_stanza_set_attr(st, "y", "two"), EPODE_OK);
  assert_int_equal(epode_stanza_set_attr(st, "y", "deux"), EPODE_OK);
  assert_string_equal(epode_stanza_get_attr(st, "y"), "deux");
  assert_int_equal(epode_stanza_attr_count(st), 3);
  assert_int_equal(epode_stanza_del_attr(st, "x"), EPODE_OK);
  assert_int_equal(epode_stanza_del_attr(st, "x"), EPODE_ERR_NOTFOUND);
  assert_int_equal(epode_stanza_attr_count(st), 2);
  for (int i = 0; i < 20; i++) {
    char n[8] = {'n', (char)('a' + i), 0};
    assert_int_equal(epode_stanza_set_attr(st, n, "v"), EPODE_OK);
  }
  assert_int_equal(epode_stanza_del_attr(st, "na"), EPODE_OK);
  assert_int_equal(epode_stanza_del_attr(st, "y"), EPODE_OK);
  assert_int_equal(epode_stanza_attr_count(st), 20);
  const char *n, *v;
  assert_int_equal(epode_stanza_attr_at(st, 0, &n, &v), EPODE_OK);
  assert_string_equal(n, "z");
  assert_int_equal(epode_stanza_attr_at(st, 1, &n, &v), EPODE_OK);
  assert_string_equal(n, "nb");
  /* The XML namespace in {} form is stored as xml:. */
  assert_int_equal(epode_stanza_set_attr(st, "{" EPODE_NS_XML "}lang", "fr"), EPODE_OK);
  assert_string_equal(epode_stanza_get_attr(st, "xml:lang"), "fr");
  epode_stanza_free(st);
}

static void test_escaping(void **state) {
  (void)state;
  epode_stanza *st = NULL;
  assert_int_equal(epode_stanza_new(&st, NULL, "a", NULL), EPODE_OK);
  const char *nasty = "& < > \" ' \r\n\t ]]> &amp;";
  assert_int_equal(epode_stanza_set_attr(st, "v", nasty), EPODE_OK);
  assert_int_equal(epode_stanza_add_text(st, nasty, strlen(nasty)), EPODE_OK);
  const char *want = "<a v='&amp; &lt; &gt; &quot; &apos; &#13;&#10;&#9; ]]&gt; &amp;amp;'>"
                     "&amp; &lt; &gt; \" ' &#13;\n\t ]]&gt; &amp;amp;</a>";
  assert_ser(st, NULL, want);
  /* Parsing the output gives the original strings back. */
  epode_stanza *back = parse(want);
  assert_string_equal(epode_stanza_get_attr(back, "v"), nasty);
  assert_string_equal(epode_stanza_text(back), nasty);
  assert_ser(back, NULL, want);
  epode_stanza_free(back);
  epode_stanza_free(st);
}

static void test_namespace_emission(void **state) {
  (void)state;
  epode_stanza *iq = NULL, *q = NULL, *item = NULL, *plain = NULL, *none = NULL;
  assert_int_equal(epode_iq_new(&iq, NULL, "get", "r1"), EPODE_OK);
  assert_int_equal(epode_stanza_add_child_new(&q, iq, "query", "jabber:iq:roster"), EPODE_OK);
  assert_int_equal(epode_stanza_add_child_new(&item, q, "item", "jabber:iq:roster"), EPODE_OK);
  assert_int_equal(epode_stanza_add_child_new(&plain, q, "group", NULL), EPODE_OK);
  assert_int_equal(epode_stanza_add_child_new(&none, q, "nons", ""), EPODE_OK);
  assert_int_equal(epode_stanza_set_attr(item, "{urn:a}x", "1"), EPODE_OK);
  assert_int_equal(epode_stanza_set_attr(item, "{urn:b}y", "2"), EPODE_OK);
  assert_int_equal(epode_stanza_set_attr(item, "{urn:a}z", "3"), EPODE_OK);
  assert_int_equal(epode_stanza_set_attr(item, "w", "4"), EPODE_OK);
  assert_string_equal(epode_stanza_get_attr(item, "{urn:b}y"), "2");
  const char *want_client =
      "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'>"
      "<item xmlns:ns1='urn:a' xmlns:ns2='urn:b' ns1:x='1' ns2:y='2' ns1:z='3' w='4'/>"
      "<group/><nons xmlns=''/></query></iq>";
  assert_ser(iq, EPODE_NS_CLIENT, want_client);
  /* Another context namespace: the root declares its own. */
  char *s = ser(iq, "jabber:server");
  assert_true(strncmp(s, "<iq xmlns='jabber:client' type='get'", 36) == 0);
  epode_free(NULL, s);
  s = ser(iq, NULL);
  assert_true(strncmp(s, "<iq xmlns='jabber:client' ", 26) == 0);
  epode_free(NULL, s);
  /* Subtree serialisation relative to a context. */
  assert_ser(q, "jabber:iq:roster",
             "<query><item xmlns:ns1='urn:a' xmlns:ns2='urn:b' ns1:x='1' ns2:y='2' ns1:z='3' "
             "w='4'/><group/><nons xmlns=''/></query>");
  /* A child with no namespace of its own, serialised alone, keeps the
   * namespace it inherits. */
  assert_ser(plain, NULL, "<group xmlns='jabber:iq:roster'/>");
  assert_ser(plain, "jabber:iq:roster", "<group/>");
  /* A root with no namespace takes the context. */
  epode_stanza *r = NULL;
  assert_int_equal(epode_stanza_new(&r, NULL, "r", NULL), EPODE_OK);
  assert_null(epode_stanza_ns(r));
  assert_ser(r, EPODE_NS_CLIENT, "<r/>");
  assert_ser(r, NULL, "<r/>");
  epode_stanza_free(r);

  /* Round trip through the parser is exact and resolves the same names. */
  epode_err e;
  s = ser(iq, NULL);
  epode_stanza *back = parse_mem(s, NULL, &e);
  assert_int_equal(e, EPODE_OK);
  char *s2 = ser(back, NULL);
  assert_string_equal(s, s2);
  epode_free(NULL, s2);
  epode_free(NULL, s);
  epode_stanza *bi = epode_stanza_find_child(epode_stanza_find_child(back, "query", NULL), "item",
                                             "jabber:iq:roster");
  assert_non_null(bi);
  assert_string_equal(epode_stanza_get_attr(bi, "{urn:a}z"), "3");
  assert_string_equal(epode_stanza_ns(epode_stanza_find_child(
                          epode_stanza_find_child(back, "query", NULL), "nons", NULL)),
                      "");
  epode_stanza_free(back);
  epode_stanza_free(iq);
}

static void test_round_trip(void **state) {
  (void)state;
  static const char *const docs[] = {
      "<message xmlns='jabber:client' to='romeo@example.net' type='chat' xml:lang='en'>"
      "<body>Wherefore art thou, Romeo? &lt;3 &amp; \xe2\x98\x83 \xf0\x9f\x98\x80</body>"
      "<active xmlns='http://jabber.org/protocol/chatstates'/></message>",
      "<iq xmlns='jabber:client' type='result' id='x'><query xmlns='jabber:iq:roster' ver='3'>"
      "<item jid='a@b' name='A &apos;B&apos;' subscription='both'><group>Friends</group>"
      "</item></query></iq>",
      "<a xmlns='urn:a' xmlns:p='urn:p' xmlns:q='urn:q' p:x='1' q:y='2'><p:b q:z='3'>t<c/>u</p:b>"
      "<d xmlns=''><e/></d></a>",
      "<x xmlns='urn:x'>line1\nline2&#13;\ttab <![CDATA[<cdata> & stuff]]></x>",
  };
  for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
    epode_stanza *a = parse(docs[i]);
    char *s1 = ser(a, NULL);
    epode_stanza *b = parse(s1);
    char *s2 = ser(b, NULL);
    assert_string_equal(s1, s2);
    /* And via clone. */
    epode_stanza *c = NULL;
    assert_int_equal(epode_stanza_clone(&c, b), EPODE_OK);
    char *s3 = ser(c, NULL);
    assert_string_equal(s1, s3);
    epode_free(NULL, s1), epode_free(NULL, s2), epode_free(NULL, s3);
    epode_stanza_free(a), epode_stanza_free(b), epode_stanza_free(c);
  }
  /* Prefixed elements come back with default-namespace declarations. */
  epode_stanza *a = parse(docs[2]);
  assert_ser(a, NULL,
             "<a xmlns='urn:a' xmlns:ns1='urn:p' xmlns:ns2='urn:q' ns1:x='1' ns2:y='2'>"
             "<b xmlns='urn:p' xmlns:ns1='urn:q' ns1:z='3'>t<c xmlns='urn:a'/>u</b>"
             "<d xmlns=''><e/></d></a>");
  epode_stanza_free(a);
}

static void test_builders(void **state) {
  (void)state;
  epode_stanza *st = NULL;
  assert_int_equal(epode_message_new(&st, NULL, "chat", "a@b", "hi <there>"), EPODE_OK);
  assert_string_equal(epode_stanza_ns(st), EPODE_NS_CLIENT);
  assert_ser(st, EPODE_NS_CLIENT,
             "<message type='chat' to='a@b'><body>hi &lt;there&gt;</body></message>");
  assert_string_equal(epode_stanza_child_text(st, "body"), "hi <there>");
  epode_stanza_free(st);
  assert_int_equal(epode_message_new(&st, NULL, NULL, NULL, NULL), EPODE_OK);
  assert_ser(st, EPODE_NS_CLIENT, "<message/>");
  epode_stanza_free(st);
  assert_int_equal(epode_iq_new(&st, NULL, "set", "abc"), EPODE_OK);
  assert_ser(st, EPODE_NS_CLIENT, "<iq type='set' id='abc'/>");
  epode_stanza_free(st);
  assert_int_equal(epode_presence_new(&st, NULL), EPODE_OK);
  assert_ser(st, EPODE_NS_CLIENT, "<presence/>");
  assert_ser(st, NULL, "<presence xmlns='jabber:client'/>");
  epode_stanza_free(st);
  /* Invalid input to a builder: nothing is returned. */
  st = (epode_stanza *)&st;
  assert_int_equal(epode_message_new(&st, NULL, "chat", "a@b", "bad\x01"), EPODE_ERR_INVAL);
  assert_null(st);
}

static void test_invalid_input(void **state) {
  (void)state;
  static const char *const bad_names[] = {"",      "1a",   "-a",  "a b", "a:b", "a>",
                                          "a\x01", "\xc3", "a'b", ".x",  "a=b", "xml:lang"};
  epode_stanza *st = (epode_stanza *)&st;
  for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
    assert_int_equal(epode_stanza_new(&st, NULL, bad_names[i], NULL), EPODE_ERR_INVAL);
    assert_null(st);
  }
  assert_int_equal(epode_stanza_new(&st, NULL, NULL, NULL), EPODE_ERR_INVAL);
  assert_int_equal(epode_stanza_new(&st, NULL, "a", "bad\x02ns"), EPODE_ERR_INVAL);
  assert_int_equal(epode_stanza_new(&st, NULL, "a", EPODE_NS_XML), EPODE_ERR_INVAL);
  assert_int_equal(epode_stanza_new(&st, NULL, "a", "http://www.w3.org/2000/xmlns/"),
                   EPODE_ERR_INVAL);
  /* Valid unusual names. */
  assert_int_equal(epode_stanza_new(&st, NULL, "_a-b.c9\xc3\xa9", NULL), EPODE_OK);
  static const char *const bad_attrs[] = {"",
                                          "a b",
                                          "1a",
                                          "p:x",
                                          "xmlns",
                                          "xml:",
                                          "{}x",
                                          "{u}",
                                          "{u}a:b",
                                          "{u",
                                          "u}x",
                                          "a'",
                                          "{"
                                          "http://www.w3.org/2000/xmlns/"
                                          "}x",
                                          "{bad\x01}x"};
  for (size_t i = 0; i < sizeof bad_attrs / sizeof bad_attrs[0]; i++)
    if (epode_stanza_set_attr(st, bad_attrs[i], "v") != EPODE_ERR_INVAL)
      fail_msg("accepted attribute name '%s'", bad_attrs[i]);
  assert_int_equal(epode_stanza_attr_count(st), 0);
  assert_int_equal(epode_stanza_set_attr(st, "a", NULL), EPODE_ERR_INVAL);
  static const char *const bad_text[] = {"a\x01",
                                         "\x08",
                                         "\xc3\x28",
                                         "\xe2\x82",
                                         "\xed\xa0\x80",
                                         "\xc0\xaf",
                                         "\xef\xbf\xbe" /* U+FFFE */,
                                         "\xf4\x90\x80\x80",
                                         "\x1b[0m"};
  for (size_t i = 0; i < sizeof bad_text / sizeof bad_text[0]; i++) {
    size_t len = strlen(bad_text[i]);
    assert_int_equal(epode_stanza_add_text(st, bad_text[i], len), EPODE_ERR_INVAL);
    assert_int_equal(epode_stanza_set_attr(st, "a", bad_text[i]), EPODE_ERR_INVAL);
  }
  assert_int_equal(epode_stanza_add_text(st, "a\0b", 3), EPODE_ERR_INVAL); /* NUL */
  assert_null(epode_stanza_first_child(st));
  /* Tab, LF, CR and astral characters are fine. */
  assert_int_equal(epode_stanza_add_text(st, "\t\n\r\xf0\x9f\x98\x80", 7), EPODE_OK);
  /* Operations that need an element. */
  epode_stanza *t = epode_stanza_first_child(st);
  assert_int_equal(epode_stanza_set_attr(t, "a", "b"), EPODE_ERR_INVAL);
  assert_int_equal(epode_stanza_add_text(t, "a", 1), EPODE_ERR_INVAL);
  assert_int_equal(epode_stanza_add_child_new(NULL, t, "x", NULL), EPODE_ERR_INVAL);
  char *out = (char *)&out;
  assert_int_equal(epode_stanza_to_string(NULL, NULL, &out, NULL), EPODE_ERR_INVAL);
  assert_null(out);
  epode_stanza_free(st);
}

/* ------------------------------------------------------------ random trees */

static uint32_t rng_state = 12345;
static uint32_t rnd(uint32_t n) {
  rng_state = rng_state * 1103515245u + 12345u;
  return (rng_state >> 8) % n;
}

/* Parses `xml` as a stanza of a stream whose default namespace is `ctx`. */
static epode_stanza *parse_in_context(const char *xml, const char *ctx) {
  epode__xml_callbacks cb = {NULL, on_stanza, NULL};
  parsed res = {NULL, 0};
  epode__xml_parser *p = NULL;
  assert_int_equal(epode__xml_parser_new(&p, NULL, NULL, EPODE__XML_STREAM, &cb, &res), 0);
  char hdr[256];
  snprintf(hdr, sizeof hdr, "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'%s%s%s>",
           ctx ? " xmlns='" : "", ctx ? ctx : "", ctx ? "'" : "");
  assert_int_equal(epode__xml_parser_feed(p, hdr, strlen(hdr)), EPODE_OK);
  epode_err e = epode__xml_parser_feed(p, xml, strlen(xml));
  if (e) fail_msg("%s: %s\n%s", epode_err_name(e), epode__xml_parser_errmsg(p), xml);
  assert_int_equal(res.count, 1);
  epode__xml_parser_free(p);
  return res.st;
}

/* Whatever tree the API builds, the output is well-formed and the
 * serialise -> parse -> serialise cycle is exact. */
static void test_random_trees(void **state) {
  (void)state;
  static const char *const names[] = {"a", "b", "caf\xc3\xa9", "_x", "x-y.z9", "\xe4\xb8\xad"};
  static const char *const nss[] = {
      NULL, "", "urn:a", "urn:b", "jabber:client", "urn:'q\"<&>\xe2\x82\xac"};
  static const char *const anames[] = {"k",  "xml:lang", "{urn:a}k", "{urn:b}m", "{urn:'\"&<}z",
                                       "id", "{urn:a}n"};
  static const char *const texts[] = {
      "&<>\"'\r\n\t]]>", "\xf0\x9f\x98\x80", "", " ", "plain", "\r", "&amp;"};
  static const char *const ctxs[] = {NULL, "jabber:client", "urn:a"};
  for (int iter = 0; iter < 400; iter++) {
    epode_stanza *els[64];
    size_t nel = 0;
    epode_stanza *root = NULL;
    assert_int_equal(epode_stanza_new(&root, NULL, names[rnd(6)], nss[rnd(6)]), EPODE_OK);
    els[nel++] = root;
    int nodes = (int)rnd(30);
    for (int k = 0; k < nodes; k++) {
      epode_stanza *par = els[rnd((uint32_t)nel)];
      uint32_t what = rnd(3);
      if (what == 0 && nel < 64) {
        epode_stanza *c = NULL;
        assert_int_equal(epode_stanza_add_child_new(&c, par, names[rnd(6)], nss[rnd(6)]), 0);
        els[nel++] = c;
      } else if (what == 1) {
        const char *t = texts[rnd(7)];
        assert_int_equal(epode_stanza_add_text(par, t, strlen(t)), EPODE_OK);
      } else {
        assert_int_equal(epode_stanza_set_attr(par, anames[rnd(7)], texts[rnd(7)]), EPODE_OK);
      }
    }
    const char *ctx = ctxs[rnd(3)];
    char *s1 = ser(root, ctx);
    epode_stanza *back = parse_in_context(s1, ctx);
    char *s2 = ser(back, ctx);
    if (strcmp(s1, s2) != 0) fail_msg("round trip differs:\n%s\n%s", s1, s2);
    /* The parsed tree has the same text content. */
    char *t1 = NULL, *t2 = NULL;
    assert_int_equal(epode_stanza_get_text(root, &t1, NULL), EPODE_OK);
    assert_int_equal(epode_stanza_get_text(back, &t2, NULL), EPODE_OK);
    assert_string_equal(t1, t2);
    epode_free(NULL, t1), epode_free(NULL, t2);
    epode_free(NULL, s1), epode_free(NULL, s2);
    epode_stanza_free(back);
    epode_stanza_free(root);
  }
}

/* ------------------------------------------------------------ allocation failure */

/* Exercises every allocating call; returns the first error. */
static epode_err scenario(const epode_mem *mem, char **result) {
  epode_stanza *m = NULL, *x = NULL, *c = NULL, *p = NULL, *d = NULL;
  char *s = NULL, *txt = NULL;
  epode_err e = epode_message_new(&m, mem, "chat", "a@b", "body text");
  if (!e) e = epode_stanza_add_child_new(&x, m, "x", "urn:x");
  for (int i = 0; i < 6 && !e; i++) {
    char n[4] = {'a', (char)('0' + i), 0};
    e = epode_stanza_set_attr(x, n, "value");
  }
  if (!e) e = epode_stanza_set_attr(x, "a1", "replaced");
  if (!e) e = epode_stanza_set_attr(x, "{urn:q}ext", "1");
  if (!e) e = epode_stanza_set_attr(x, "{" EPODE_NS_XML "}lang", "en");
  if (!e) e = epode_stanza_add_text(m, "t1", 2);
  if (!e) e = epode_stanza_add_text(m, "t2 long enough to leave the inline buffer", 41);
  if (!e) e = epode_stanza_clone(&c, m);
  if (!e) {
    d = epode_stanza_find_child(c, "x", NULL);
    e = epode_stanza_detach(d);
    if (e) d = NULL; /* still owned by c */
  }
  if (!e) e = epode_stanza_get_text(m, &txt, NULL);
  if (!e) e = epode_stanza_to_string(m, EPODE_NS_CLIENT, &s, NULL);
  if (!e) {
    p = parse_mem(s, mem, &e);
    if (!e) e = epode_stanza_add_text(p, "more", 4);
  }
  epode_stanza_free(m), epode_stanza_free(c), epode_stanza_free(p), epode_stanza_free(d);
  epode_free(mem, txt);
  if (!e)
    *result = s;
  else
    epode_free(mem, s);
  return e;
}

static void test_alloc_failure(void **state) {
  (void)state;
  epode_test_failmem f;
  epode_test_failmem_init(&f, 0);
  epode_mem mem = f.mem;
  char *want = NULL;
  assert_int_equal(scenario(&mem, &want), EPODE_OK);
  long total = f.calls;
  assert_true(total > 10);
  for (long n = 1;; n++) {
    epode_test_failmem_init(&f, n);
    char *got = NULL;
    epode_err e = scenario(&mem, &got);
    if (e == EPODE_OK) {
      assert_true(n > total); /* only succeeds once no allocation fails */
      assert_string_equal(got, want);
      mem.free(got, mem.ud);
      assert_int_equal(f.live, 0);
      break;
    }
    if (e != EPODE_ERR_NOMEM) fail_msg("allocation %ld: got %s", n, epode_err_name(e));
    assert_null(got);
    if (f.live != 0) fail_msg("allocation %ld failed: %ld blocks leaked", n, f.live);
  }
  f.fail_at = 0;
  mem.free(want, mem.ud);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_build_and_read),
      cmocka_unit_test(test_find_child),
      cmocka_unit_test(test_text_merge),
      cmocka_unit_test(test_detach_clone),
      cmocka_unit_test(test_attr_replace_delete),
      cmocka_unit_test(test_escaping),
      cmocka_unit_test(test_namespace_emission),
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_builders),
      cmocka_unit_test(test_invalid_input),
      cmocka_unit_test(test_random_trees),
      cmocka_unit_test(test_alloc_failure),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
