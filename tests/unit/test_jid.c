/* JID parsing, validation and normalisation (RFC 7622). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "epode/jid.h"
#include "epode_limits.h"

typedef struct valid_case {
  const char *in, *local, *domain, *resource, *bare, *full;
} valid_case;

static const valid_case valid[] = {
    {"example.com", NULL, "example.com", NULL, "example.com", "example.com"},
    {"user@example.com", "user", "example.com", NULL, "user@example.com", "user@example.com"},
    {"user@example.com/res", "user", "example.com", "res", "user@example.com",
     "user@example.com/res"},
    {"example.com/res", NULL, "example.com", "res", "example.com", "example.com/res"},
    /* Domain normalisation: ASCII lower case, trailing dot removed. */
    {"User@EXAMPLE.Com./Res", "User", "example.com", "Res", "User@example.com",
     "User@example.com/Res"},
    /* The resource may contain '@' and '/' (first '/' splits). */
    {"a@b/c@d/e", "a", "b", "c@d/e", "a@b", "a@b/c@d/e"},
    {"b/c@d", NULL, "b", "c@d", "b", "b/c@d"},
    /* Resource may contain spaces. */
    {"a@b/my laptop", "a", "b", "my laptop", "a@b", "a@b/my laptop"},
    /* Non-ASCII in every part. */
    {"\xc3\xa9l\xc3\xa8ve@\xc3\xa9"
     "cole.fr/\xe2\x98\x83\xf0\x9f\x98\x80",
     "\xc3\xa9l\xc3\xa8ve",
     "\xc3\xa9"
     "cole.fr",
     "\xe2\x98\x83\xf0\x9f\x98\x80",
     "\xc3\xa9l\xc3\xa8ve@\xc3\xa9"
     "cole.fr",
     "\xc3\xa9l\xc3\xa8ve@\xc3\xa9"
     "cole.fr/\xe2\x98\x83\xf0\x9f\x98\x80"},
    /* IP literals. */
    {"u@[::1]/r", "u", "[::1]", "r", "u@[::1]", "u@[::1]/r"},
    {"[2001:DB8::A]", NULL, "[2001:db8::a]", NULL, "[2001:db8::a]", "[2001:db8::a]"},
    {"u@127.0.0.1", "u", "127.0.0.1", NULL, "u@127.0.0.1", "u@127.0.0.1"},
    {"a-b_c.example", NULL, "a-b_c.example", NULL, "a-b_c.example", "a-b_c.example"},
};

static void test_valid(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
    const valid_case *c = &valid[i];
    epode_jid *j = NULL;
    assert_int_equal(epode_jid_validate(c->in), EPODE_OK);
    assert_int_equal(epode_jid_parse(&j, NULL, c->in), EPODE_OK);
    assert_non_null(j);
    if (c->local)
      assert_string_equal(epode_jid_local(j), c->local);
    else
      assert_null(epode_jid_local(j));
    assert_string_equal(epode_jid_domain(j), c->domain);
    if (c->resource)
      assert_string_equal(epode_jid_resource(j), c->resource);
    else
      assert_null(epode_jid_resource(j));
    assert_string_equal(epode_jid_bare(j), c->bare);
    assert_string_equal(epode_jid_full(j), c->full);
    epode_jid_free(j);
  }
}

static const char *const invalid[] = {
    "",
    "@example.com",       /* empty local with separator */
    "user@",              /* empty domain */
    "user@/res",          /* empty domain */
    "example.com/",       /* empty resource */
    "user@example.com/",  /* empty resource */
    "/res",               /* no domain */
    "a@b@c",              /* '@' in domain */
    "us er@example.com",  /* space in local */
    "us\"er@example.com", /* forbidden local characters */
    "us&er@example.com",
    "us'er@example.com",
    "us:er@example.com",
    "us<er@example.com",
    "us>er@example.com",
    "user@exa mple.com",          /* space in domain */
    "user@exam\tple.com",         /* control in domain */
    "us\ter@example.com",         /* control in local */
    "user@example.com/a\x01",     /* control in resource */
    "user@example.com/a\x7f",     /* DEL */
    "user@example.com/a\xc2\x85", /* C1 control (NEL) */
    "us\xc2\xa0"
    "er@example.com",               /* no-break space in local */
    "user@exa\xe3\x80\x80mple.com", /* ideographic space in domain */
    "user@example.com:5222",        /* port is not part of a JID */
    "user@exa<mple.com",
    "user@.example.com", /* empty label */
    "user@example..com",
    "user@.",             /* only a dot */
    "user@example.com..", /* two trailing dots */
    "user@[::1",          /* broken IP literal */
    "user@[not-an-ip]",
    "user@[]",
    "\xc3\x28@example.com",              /* invalid UTF-8 */
    "user@example.com/\xe2\x82",         /* truncated sequence */
    "user@example.com/\xed\xa0\x80",     /* surrogate */
    "user@example.com/\xc0\xaf",         /* overlong */
    "user@example.com/\xf4\x90\x80\x80", /* above U+10FFFF */
    "user@example.com/\xff",
};

static void test_invalid(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
    epode_jid *j = (epode_jid *)&j; /* must be reset to NULL */
    if (epode_jid_validate(invalid[i]) != EPODE_ERR_JID) fail_msg("accepted: %s", invalid[i]);
    assert_int_equal(epode_jid_parse(&j, NULL, invalid[i]), EPODE_ERR_JID);
    assert_null(j);
  }
  epode_jid *j = NULL;
  assert_int_equal(epode_jid_parse(&j, NULL, NULL), EPODE_ERR_JID);
  assert_int_equal(epode_jid_validate(NULL), EPODE_ERR_JID);
}

static char *rep(char c, size_t n) {
  char *s = malloc(n + 1);
  memset(s, c, n);
  s[n] = '\0';
  return s;
}

static epode_err parse_parts(const char *l, const char *d, const char *r) {
  size_t n = (l ? strlen(l) + 1 : 0) + strlen(d) + (r ? strlen(r) + 1 : 0) + 1;
  char *s = malloc(n);
  s[0] = '\0';
  if (l) strcat(strcat(s, l), "@");
  strcat(s, d);
  if (r) strcat(strcat(s, "/"), r);
  epode_jid *j = NULL;
  epode_err e = epode_jid_parse(&j, NULL, s);
  if (!e) assert_string_equal(epode_jid_full(j), s);
  assert_int_equal(epode_jid_validate(s), e);
  epode_jid_free(j);
  free(s);
  return e;
}

static void test_lengths(void **state) {
  (void)state;
  const size_t max = EPODE_MAX_JID_PART_BYTES;
  char *l = rep('l', max), *l1 = rep('l', max + 1);
  char *r = rep('r', max), *r1 = rep('r', max + 1);
  /* A 1023-byte domain of 63-byte labels (plus a tail). */
  char *d = rep('d', max), *d1 = rep('d', max + 1);
  for (size_t i = 63; i < max; i += 64)
    d[i] = '.', d1[i] = '.';
  assert_int_equal(parse_parts(l, "example.com", NULL), EPODE_OK);
  assert_int_equal(parse_parts(l1, "example.com", NULL), EPODE_ERR_JID);
  assert_int_equal(parse_parts("u", "example.com", r), EPODE_OK);
  assert_int_equal(parse_parts("u", "example.com", r1), EPODE_ERR_JID);
  assert_int_equal(parse_parts(NULL, d, NULL), EPODE_OK);
  assert_int_equal(parse_parts(NULL, d1, NULL), EPODE_ERR_JID);
  /* Whole JID at the maximum: 1023 + 1 + 1023 + 1 + 1023 = 3071. */
  assert_int_equal(parse_parts(l, d, r), EPODE_OK);
  assert_int_equal(parse_parts(l1, d, r), EPODE_ERR_JID);
  /* A trailing dot is not counted: 1024 raw bytes normalise to 1023. */
  char *dd = malloc(max + 2);
  memcpy(dd, d, max);
  dd[max] = '.';
  dd[max + 1] = '\0';
  epode_jid *j = NULL;
  assert_int_equal(epode_jid_parse(&j, NULL, dd), EPODE_OK);
  assert_int_equal(strlen(epode_jid_domain(j)), max);
  epode_jid_free(j);
  /* Multi-byte characters count in bytes: 512 two-byte chars = 1024. */
  char *mb = malloc(2 * 512 + 1);
  for (size_t i = 0; i < 512; i++)
    mb[2 * i] = '\xc3', mb[2 * i + 1] = '\xa9';
  mb[1024] = '\0';
  assert_int_equal(parse_parts("u", "example.com", mb), EPODE_ERR_JID);
  mb[1022] = '\0'; /* 511 chars = 1022 bytes */
  assert_int_equal(parse_parts("u", "example.com", mb), EPODE_OK);
  free(l), free(l1), free(r), free(r1), free(d), free(d1), free(dd), free(mb);
}

/* Allocation hooks that count, to check the JID uses them. Not the shared
 * tests/support/failmem.h on purpose: these count alloc calls and frees
 * (n_alloc == n_free), and fail_alloc fails alloc but not realloc. */
static size_t n_alloc, n_free;
static void *c_alloc(size_t n, void *ud) {
  (void)ud;
  n_alloc++;
  return malloc(n);
}
static void *c_realloc(void *p, size_t n, void *ud) {
  (void)ud;
  return realloc(p, n);
}
static void c_free(void *p, void *ud) {
  (void)ud;
  if (p) n_free++;
  free(p);
}
static void *fail_alloc(size_t n, void *ud) {
  (void)n, (void)ud;
  return NULL;
}

static void test_mem_hooks(void **state) {
  (void)state;
  epode_mem m = {c_alloc, c_realloc, c_free, NULL};
  epode_jid *j = NULL;
  n_alloc = n_free = 0;
  assert_int_equal(epode_jid_parse(&j, &m, "a@b/c"), EPODE_OK);
  assert_true(n_alloc >= 1);
  epode_jid_free(j);
  assert_int_equal(n_alloc, n_free);
  epode_mem f = {fail_alloc, c_realloc, c_free, NULL};
  j = (epode_jid *)&j;
  assert_int_equal(epode_jid_parse(&j, &f, "a@b/c"), EPODE_ERR_NOMEM);
  assert_null(j);
  epode_jid_free(NULL);
  assert_null(epode_jid_domain(NULL));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid),
      cmocka_unit_test(test_invalid),
      cmocka_unit_test(test_lengths),
      cmocka_unit_test(test_mem_hooks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
