/* XEP-0156 discovery: the XRD and JSON readers on good, bad and hostile
 * documents, then real fetches from a local HTTPS server (a forked child,
 * so this process keeps one thread and we can check that libcurl starts
 * none) driven by a poll() loop. */
#include <dirent.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "net/discover.h"
#include "net/net.h"
#include "util/alloc.h"

#include "test_net_support.h"

#include "failmem.h"

#define WS EPODE_TRANSPORT_WEBSOCKET
#define BOSH EPODE_TRANSPORT_BOSH

static char why[512];

static epode_err xrd(const char *doc, epode_transport t, int plain, char **url) {
  return epode__discover_parse_xrd(NULL, doc, strlen(doc), t, plain, url, why, sizeof why);
}
static epode_err json(const char *doc, epode_transport t, int plain, char **url) {
  return epode__discover_parse_json(NULL, doc, strlen(doc), t, plain, url, why, sizeof why);
}

#define XRD_OPEN                                                                                   \
  "<?xml version='1.0' encoding='utf-8'?>\n"                                                       \
  "<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n"

static const char *XRD_GOOD =
    XRD_OPEN "  <Link rel='urn:xmpp:alt-connections:xbosh' href='https://example.com/http-bind'/>\n"
             "  <Link rel='urn:xmpp:alt-connections:websocket' href='ws://example.com/insecure'/>\n"
             "  <Link rel='urn:xmpp:alt-connections:websocket' "
             "href='wss://example.com:5281/xmpp-websocket?x=1'/>\n"
             "  <Link rel='urn:xmpp:alt-connections:websocket' href='wss://second.example/'/>\n"
             "</XRD>\n";

static void expect_url(epode_err e, char **url, const char *want) {
  if (e) fail_msg("error %d: %s", e, why);
  assert_non_null(*url);
  assert_string_equal(*url, want);
  epode__free(NULL, *url);
  *url = NULL;
}

/* ------------------------------------------------------------------ XRD */

static void t_xrd_good(void **st) {
  char *url = NULL;
  expect_url(xrd(XRD_GOOD, WS, 0, &url), &url, "wss://example.com:5281/xmpp-websocket?x=1");
  expect_url(xrd(XRD_GOOD, WS, 1, &url), &url, "wss://example.com:5281/xmpp-websocket?x=1");
  expect_url(xrd(XRD_GOOD, BOSH, 0, &url), &url, "https://example.com/http-bind");
  /* No declaration, a BOM, prefixed namespace, other elements around. */
  expect_url(xrd("\xEF\xBB\xBF<x:XRD xmlns:x='http://docs.oasis-open.org/ns/xri/xrd-1.0'>"
                 "<x:Subject>example.com</x:Subject>"
                 "<x:Link rel='urn:xmpp:alt-connections:websocket' href='wss://a.example/ws'>"
                 "<x:Title>t</x:Title></x:Link></x:XRD>",
                 WS, 0, &url),
             &url, "wss://a.example/ws");
  /* Only an insecure link: used when plaintext is allowed. */
  const char *only_ws = XRD_OPEN "<Link rel='urn:xmpp:alt-connections:websocket' "
                                 "href='ws://example.com/ws'/></XRD>";
  expect_url(xrd(only_ws, WS, 1, &url), &url, "ws://example.com/ws");
  assert_int_equal(xrd(only_ws, WS, 0, &url), EPODE_ERR_NOTFOUND);
  assert_null(url);
  assert_non_null(strstr(why, "ignored 1 insecure ws:// link: plaintext is not allowed"));
}

static void t_xrd_no_usable_link(void **st) {
  char *url = NULL;
  const char *docs[] = {
      /* wrong rel */
      XRD_OPEN "<Link rel='urn:xmpp:alt-connections:httppoll' href='https://e.com/'/></XRD>",
      /* relative URL */
      XRD_OPEN "<Link rel='urn:xmpp:alt-connections:websocket' href='/xmpp-websocket'/></XRD>",
      /* wrong scheme for the rel */
      XRD_OPEN "<Link rel='urn:xmpp:alt-connections:websocket' href='https://e.com/ws'/></XRD>",
      /* no href; empty href; bad port; space in the host */
      XRD_OPEN "<Link rel='urn:xmpp:alt-connections:websocket'/>"
               "<Link rel='urn:xmpp:alt-connections:websocket' href=''/>"
               "<Link rel='urn:xmpp:alt-connections:websocket' href='wss://e.com:99999/'/>"
               "<Link rel='urn:xmpp:alt-connections:websocket' href='wss://e .com/'/></XRD>",
      /* Link in another namespace */
      XRD_OPEN "<Link xmlns='urn:other' rel='urn:xmpp:alt-connections:websocket' "
               "href='wss://e.com/'/></XRD>",
      /* empty XRD */
      XRD_OPEN "</XRD>",
  };
  for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
    assert_int_equal(xrd(docs[i], WS, 0, &url), EPODE_ERR_NOTFOUND);
    assert_null(url);
    assert_non_null(strstr(why, "no usable urn:xmpp:alt-connections:websocket link"));
  }
  assert_int_equal(xrd(docs[1], WS, 0, &url), EPODE_ERR_NOTFOUND);
  assert_non_null(strstr(why, "ignored 1 relative, malformed"));
  assert_int_equal(xrd(docs[3], WS, 0, &url), EPODE_ERR_NOTFOUND);
  assert_non_null(strstr(why, "ignored 4 relative, malformed"));
}

static void t_xrd_malformed(void **st) {
  char *url = NULL;
  struct {
    const char *doc;
    epode_err err;
    const char *msg;
  } cases[] = {
      {"", EPODE_ERR_PROTOCOL, "no root element"},
      {XRD_OPEN "<Link rel='x' href='y'/>", EPODE_ERR_PROTOCOL, "ends inside its root"},
      {XRD_OPEN "<Link rel='x' href='y'/></XRD><XRD/>", EPODE_ERR_PROTOCOL, "more than one root"},
      {"<html><body>404</body></html>", EPODE_ERR_PROTOCOL, "not an XRD"},
      {"<XRD><Link/></XRD>", EPODE_ERR_PROTOCOL, "not an XRD"}, /* no namespace */
      {"<?xml version='1.0'", EPODE_ERR_PROTOCOL, "XML declaration"},
      /* A DTD cannot even appear (fragment mode parses inside a wrapper). */
      {"<!DOCTYPE XRD [<!ENTITY a 'aaaa'>]><XRD/>", EPODE_ERR_PROTOCOL, "malformed XRD"},
      {XRD_OPEN "<Link rel='&a;'/></XRD>", EPODE_ERR_XML_RESTRICTED, "malformed XRD"},
      {XRD_OPEN "<Link rel='\xff'/></XRD>", EPODE_ERR_XML_UTF8, "malformed XRD"},
      {XRD_OPEN "<Link></Lnk></XRD>", EPODE_ERR_PROTOCOL, "malformed XRD"},
      {"garbage", EPODE_ERR_PROTOCOL, "malformed XRD"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    epode_err e = xrd(cases[i].doc, WS, 0, &url);
    if (e != cases[i].err || !strstr(why, cases[i].msg)) fail_msg("case %zu: %d \"%s\"", i, e, why);
    assert_null(url);
  }
}

static void t_xrd_hostile_sizes(void **st) {
  char *url = NULL;
  /* Over the body limit. */
  size_t n = EPODE__DISCOVER_MAX_BODY + 1;
  char *big = malloc(n + 1);
  memset(big, ' ', n);
  big[n] = '\0';
  assert_int_equal(xrd(big, WS, 0, &url), EPODE_ERR_LIMIT);
  /* Deep nesting inside the limit. */
  size_t depth = 5000, o = 0;
  o += (size_t)sprintf(big, "<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>");
  for (size_t i = 0; i < depth; i++)
    o += (size_t)sprintf(big + o, "<a>");
  big[o] = '\0';
  assert_int_equal(xrd(big, WS, 0, &url), EPODE_ERR_LIMIT);
  /* Many links, the usable one last: still found. */
  o = (size_t)sprintf(big, XRD_OPEN);
  for (int i = 0; i < 500; i++)
    o += (size_t)sprintf(big + o, "<Link rel='urn:xmpp:alt-connections:xbosh' href='https://b/'/>");
  o += (size_t)sprintf(big + o,
                       "<Link rel='urn:xmpp:alt-connections:websocket' href='wss://last/'/></XRD>");
  assert_true(o < EPODE__DISCOVER_MAX_BODY);
  expect_url(xrd(big, WS, 0, &url), &url, "wss://last/");
  /* An overlong href is ignored, not truncated. */
  o = (size_t)sprintf(big,
                      XRD_OPEN "<Link rel='urn:xmpp:alt-connections:websocket' href='wss://h/");
  memset(big + o, 'a', 5000);
  o += 5000;
  sprintf(big + o, "'/></XRD>");
  assert_int_equal(xrd(big, WS, 0, &url), EPODE_ERR_NOTFOUND);
  free(big);
}

/* ------------------------------------------------------------------ JSON */

static void t_json_good(void **st) {
  char *url = NULL;
  const char *doc = "{\n"
                    "  \"subject\": \"example.com\", \"n\": [1, -2.5e+3, 0.0, true, false, null],\n"
                    "  \"links\": [\n"
                    "    {\"rel\": \"urn:xmpp:alt-connections:xbosh\", \"href\": "
                    "\"https://example.com/http-bind\"},\n"
                    "    \"not a link\", 42, {\"nested\": {\"a\": [[{}]]}},\n"
                    "    {\"href\": \"wss://example.com/ws\", \"rel\": "
                    "\"urn:xmpp:alt-connections:websocket\", \"x\": {}}\n"
                    "  ]\n"
                    "}";
  expect_url(json(doc, WS, 0, &url), &url, "wss://example.com/ws");
  expect_url(json(doc, BOSH, 0, &url), &url, "https://example.com/http-bind");
  /* Escapes in both strings, including \/ and \u sequences. */
  expect_url(json("{\"links\":[{\"rel\":\"urn:xmpp:alt-connections:\\u0077ebsocket\","
                  "\"href\":\"wss:\\/\\/ex\\u0061mple.com\\/p?q=\\u0025\"}]}",
                  WS, 0, &url),
             &url, "wss://example.com/p?q=%");
  /* A non-ASCII key escaped with a surrogate pair is just another key. */
  expect_url(json("{\"\\ud83d\\ude00\": \"\\ud83d\\ude00\", \"links\": [{\"rel\": "
                  "\"urn:xmpp:alt-connections:websocket\", \"href\": \"wss://e/\"}]}",
                  WS, 0, &url),
             &url, "wss://e/");
  /* Insecure with plaintext allowed. */
  expect_url(
      json("{\"links\":[{\"rel\":\"urn:xmpp:alt-connections:websocket\",\"href\":\"ws://e/\"}]}",
           WS, 1, &url),
      &url, "ws://e/");
}

static void t_json_no_usable_link(void **st) {
  char *url = NULL;
  const char *docs[] = {
      "{}",
      "{\"links\": []}",
      "{\"links\": [{\"rel\": \"urn:xmpp:alt-connections:websocket\", \"href\": \"ws://e/\"}]}",
      "{\"links\": [{\"rel\": \"urn:xmpp:alt-connections:websocket\", \"href\": \"/ws\"}]}",
      "{\"links\": [{\"rel\": \"urn:xmpp:alt-connections:websocket\", \"href\": 5}]}",
      "{\"links\": [{\"rel\": \"urn:xmpp:alt-connections:websocket\"}]}",
      "{\"links\": [{\"rel\": \"urn:xmpp:alt-connections:websocket\", \"href\": "
      "\"wss://e/\\u0000x\"}]}",
      "{\"links\": [{\"rel\": \"urn:xmpp:other\", \"href\": \"wss://e/\"}]}",
      "{\"Links\": [{\"rel\": \"urn:xmpp:alt-connections:websocket\", \"href\": \"wss://e/\"}]}",
  };
  for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
    epode_err e = json(docs[i], WS, 0, &url);
    if (e != EPODE_ERR_NOTFOUND) fail_msg("case %zu: %d %s", i, e, why);
    assert_null(url);
  }
  assert_int_equal(json(docs[2], WS, 0, &url), EPODE_ERR_NOTFOUND);
  assert_non_null(strstr(why, "plaintext is not allowed"));
}

static void t_json_malformed(void **st) {
  char *url = NULL;
  const char *docs[] = {
      "",
      "[]",
      "\"links\"",
      "{",
      "{\"links\": [{\"rel\": \"urn:xmpp:alt-connections:websocket\", \"href\": \"wss://e/\"}",
      "{\"links\": [{\"rel\": \"urn:xmpp:alt-connections:websocket\", \"href\": \"wss://e/",
      "{\"links\": {}}",
      "{\"links\": [],}",
      "{\"links\": [1,]}",
      "{'links': []}",
      "{\"a\": 01}",
      "{\"a\": 1.}",
      "{\"a\": -}",
      "{\"a\": 1e}",
      "{\"a\": tru}",
      "{\"a\": nul}",
      "{\"a\": \"\\x\"}",
      "{\"a\": \"\\u12\"}",
      "{\"a\": \"\\ud800\"}",
      "{\"a\": \"\\udc00\"}",
      "{\"a\": \"\\ud800\\u0041\"}",
      "{\"a\": \"tab\there\"}",
      "{\"a\": \"\xff\"}",
      "{\"a\": \"\xc0\xaf\"}",
      "{\"a\": \"\xed\xa0\x80\"}",
      "{\"a\" 1}",
      "{\"a\": 1 \"b\": 2}",
      "{} {}",
      "{}x",
      "{\"a\": NaN}",
      "{\"a\": Infinity}",
  };
  for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
    epode_err e = json(docs[i], WS, 0, &url);
    if (e != EPODE_ERR_PROTOCOL || !strstr(why, "malformed JSON at byte"))
      fail_msg("case %zu (%s): %d %s", i, docs[i], e, why);
    assert_null(url);
  }
}

static void t_json_hostile(void **st) {
  char *url = NULL;
  size_t n = EPODE__DISCOVER_MAX_BODY;
  char *big = malloc(n + 2);
  /* Deep nesting: refused at the bound, no stack overflow. */
  memset(big, '[', n);
  big[0] = '{';
  memcpy(big + 1, "\"a\":", 4);
  big[n] = '\0';
  assert_int_equal(json(big, WS, 0, &url), EPODE_ERR_LIMIT);
  assert_non_null(strstr(why, "nested too deeply"));
  memset(big, '{', n);
  assert_int_equal(json(big, WS, 0, &url), EPODE_ERR_PROTOCOL); /* '{' is not a key */
  /* Over the size limit. */
  memset(big, ' ', n + 1);
  big[n + 1] = '\0';
  assert_int_equal(json(big, WS, 0, &url), EPODE_ERR_LIMIT);
  /* A huge string value that is not ours: fine. A huge href: unusable. */
  size_t o = (size_t)sprintf(big, "{\"x\": \"");
  memset(big + o, 'a', 60000);
  o += 60000;
  sprintf(big + o, "\"}");
  assert_int_equal(json(big, WS, 0, &url), EPODE_ERR_NOTFOUND);
  o = (size_t)sprintf(big, "{\"links\":[{\"rel\":\"urn:xmpp:alt-connections:websocket\",\"href\":"
                           "\"wss://e/");
  memset(big + o, 'a', 10000);
  o += 10000;
  sprintf(big + o, "\"}]}");
  assert_int_equal(json(big, WS, 0, &url), EPODE_ERR_NOTFOUND);
  /* Every truncation of a good document is refused, never read past. */
  const char *good = "{\"links\": [{\"rel\": \"urn:xmpp:alt-connections:websocket\", "
                     "\"href\": \"wss://e/\\u00e9\"}, 1.5e3, [true, null]]}";
  size_t gl = strlen(good);
  for (size_t cut = 0; cut < gl; cut++) {
    char *p = malloc(cut ? cut : 1); /* exact size: ASan sees overreads */
    memcpy(p, good, cut);
    epode_err e = epode__discover_parse_json(NULL, p, cut, WS, 0, &url, why, sizeof why);
    assert_int_equal(e, EPODE_ERR_PROTOCOL);
    free(p);
  }
  free(big);
}

/* Random bytes into both parsers: no crash, a clear verdict. */
static void t_parsers_noise(void **st) {
  uint32_t s = 99;
  char buf[256];
  const char alphabet[] = "{}[]\":,\\u0123456789abcdefxtrunl .-+eE\xc3\xa9<>/='?!";
  for (int round = 0; round < 20000; round++) {
    size_t n = 0;
    s = s * 1103515245u + 12345u;
    size_t len = (s >> 16) % sizeof buf;
    for (; n < len; n++) {
      s = s * 1103515245u + 12345u;
      buf[n] = round % 3 ? alphabet[(s >> 16) % (sizeof alphabet - 1)] : (char)(s >> 16);
    }
    char *url = NULL;
    epode_err e = epode__discover_parse_json(NULL, buf, n, WS, 0, &url, why, sizeof why);
    if (e) assert_true(why[0]);
    epode__free(NULL, url);
    url = NULL;
    e = epode__discover_parse_xrd(NULL, buf, n, WS, 0, &url, why, sizeof why);
    if (e) assert_true(why[0]);
    epode__free(NULL, url);
  }
}

/* Each allocation failed in turn: EPODE_ERR_NOMEM (or success), no leak. */
static void t_parsers_alloc_failures(void **st) {
  const char *jdoc = "{\"links\":[{\"rel\":\"urn:xmpp:alt-connections:websocket\",\"href\":"
                     "\"wss://e/\"}]}";
  for (int which = 0; which < 2; which++) {
    long ok_at = -1;
    for (long k = 1; k < 500 && ok_at < 0; k++) {
      epode_test_failmem c;
      epode_test_failmem_init(&c, k);
      epode_mem mem = c.mem;
      char *url = NULL;
      epode_err e =
          which ? epode__discover_parse_json(&mem, jdoc, strlen(jdoc), WS, 0, &url, why, sizeof why)
                : epode__discover_parse_xrd(&mem, XRD_GOOD, strlen(XRD_GOOD), WS, 0, &url, why,
                                            sizeof why);
      if (e == EPODE_OK) {
        ok_at = k;
        epode__free(&mem, url);
      } else {
        if (e != EPODE_ERR_NOMEM) fail_msg("k=%ld: %d %s", k, e, why);
        assert_null(url);
      }
      assert_int_equal(c.live, 0);
    }
    assert_true(ok_at > 1);
  }
}

/* ------------------------------------------------------------------ HTTPS server */

typedef struct route {
  char path[128];
  char *resp; /* the whole HTTP response */
  int hang;   /* read the request, then never answer */
} route;

static route routes[16];
static size_t nroutes;

static void route_add(const char *path, const char *status, const char *headers, const char *body) {
  route *r = &routes[nroutes++];
  snprintf(r->path, sizeof r->path, "%s", path);
  size_t bl = body ? strlen(body) : 0;
  r->resp = malloc(bl + 1024);
  snprintf(r->resp, bl + 1024,
           "HTTP/1.1 %s\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n%s", status, bl,
           headers ? headers : "", body ? body : "");
  r->hang = 0;
}

static void routes_clear(void) {
  for (size_t i = 0; i < nroutes; i++)
    free(routes[i].resp);
  nroutes = 0;
}

typedef struct server {
  pid_t pid;
  uint16_t port;
  char base[64];
} server;

static void serve_forever(int ls, SSL_CTX *ctx) {
  signal(SIGPIPE, SIG_IGN);
  for (;;) {
    int c = accept(ls, NULL, NULL);
    if (c < 0) continue;
    SSL *s = SSL_new(ctx);
    SSL_set_fd(s, c);
    if (SSL_accept(s) == 1) {
      char req[8192];
      size_t n = 0;
      while (n < sizeof req - 1) {
        int r = SSL_read(s, req + n, (int)(sizeof req - 1 - n));
        if (r <= 0) break;
        n += (size_t)r;
        req[n] = '\0';
        if (strstr(req, "\r\n\r\n")) break;
      }
      req[n] = '\0';
      char path[256] = "";
      if (!strncmp(req, "GET ", 4)) sscanf(req + 4, "%255s", path);
      const route *r = NULL;
      for (size_t i = 0; i < nroutes; i++)
        if (!strcmp(routes[i].path, path)) r = &routes[i];
      if (r && r->hang) {
        sleep(60);
      } else {
        const char *resp = r ? r->resp
                             : "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                               "Connection: close\r\n\r\n";
        size_t len = strlen(resp), o = 0;
        while (o < len) {
          int w = SSL_write(s, resp + o, (int)(len - o));
          if (w <= 0) break;
          o += (size_t)w;
        }
      }
      SSL_shutdown(s);
    }
    SSL_free(s);
    close(c);
  }
}

/* A listening socket first (so the port is known for the routes), then the
 * server in a child process once the routes are in place. */
static void server_listen(server *sv, int *ls) {
  *ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(*ls >= 0);
  int one = 1;
  setsockopt(*ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(*ls, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(*ls, 16), 0);
  socklen_t sl = sizeof sa;
  getsockname(*ls, (struct sockaddr *)&sa, &sl);
  sv->port = ntohs(sa.sin_port);
  snprintf(sv->base, sizeof sv->base, "https://localhost:%u", (unsigned)sv->port);
}

static void server_run(server *sv, int ls, const tcert *leaf) {
  SSL_CTX *ctx = t_server_ctx(leaf, NULL, 0, 0);
  sv->pid = fork();
  assert_true(sv->pid >= 0);
  if (sv->pid == 0) {
    /* Dies with the test even when a failed assertion skips server_stop. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1) _exit(0);
    serve_forever(ls, ctx);
    _exit(0);
  }
  SSL_CTX_free(ctx);
  close(ls);
}

static void server_stop(server *sv) {
  kill(sv->pid, SIGKILL);
  waitpid(sv->pid, NULL, 0);
  routes_clear();
}

/* ------------------------------------------------------------------ poll driver */

static int threads_now(void) {
  DIR *d = opendir("/proc/self/task");
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

typedef struct drv {
  struct pollfd fds[64];
  int nfds;
  int64_t timer_at; /* absolute ms, -1 none */
  int done_calls;
  epode_err err;
  char url[512];
  char detail[2048];
  int max_threads;
  int free_in_cb;
  epode__discover *d;
  epode_config *cfg;
  fake *dns; /* a fake name server to answer in the loop, or NULL */
} drv;

static void on_io(int fd, unsigned events, void *ud) {
  drv *v = ud;
  int i;
  for (i = 0; i < v->nfds && v->fds[i].fd != fd; i++)
    continue;
  if (!events) {
    if (i < v->nfds) v->fds[i] = v->fds[--v->nfds];
    return;
  }
  if (i == v->nfds) {
    assert_true(v->nfds < 64);
    v->nfds++;
  }
  v->fds[i].fd = fd;
  v->fds[i].events =
      (short)(((events & EPODE_IO_READ) ? POLLIN : 0) | ((events & EPODE_IO_WRITE) ? POLLOUT : 0));
}

static void on_timer(int64_t ms, void *ud) {
  drv *v = ud;
  v->timer_at = ms < 0 ? -1 : (int64_t)mono_ms() + ms;
}

static void on_done(void *ud, epode_err err, const char *url, const char *detail) {
  drv *v = ud;
  v->done_calls++;
  v->err = err;
  snprintf(v->url, sizeof v->url, "%s", url ? url : "");
  snprintf(v->detail, sizeof v->detail, "%s", detail ? detail : "");
  if (v->free_in_cb) {
    epode__discover_free(v->d);
    v->d = NULL;
  }
}

static void drv_init(drv *v, epode_transport want, const char *cafile, unsigned flags,
                     uint32_t timeout_ms) {
  memset(v, 0, sizeof *v);
  v->timer_at = -1;
  assert_int_equal(epode_config_new(&v->cfg, NULL), EPODE_OK);
  if (cafile) assert_int_equal(epode_config_set_cafile(v->cfg, cafile), EPODE_OK);
  assert_int_equal(epode_config_set_flags(v->cfg, flags), EPODE_OK);
  if (timeout_ms)
    assert_int_equal(epode_config_set_timeout(v->cfg, EPODE_TIMEOUT_CONNECT, timeout_ms), EPODE_OK);
  assert_int_equal(epode__discover_new(&v->d, v->cfg, want, on_io, on_timer, on_done, v), EPODE_OK);
}

static void drv_run(drv *v, const char *domain) {
  assert_int_equal(epode__discover_start(v->d, domain), EPODE_OK);
  assert_int_equal(epode__discover_start(v->d, domain), EPODE_ERR_STATE);
  uint64_t give_up = mono_ms() + 20000;
  while (!v->done_calls) {
    assert_true(mono_ms() < give_up);
    int t = threads_now();
    if (t > v->max_threads) v->max_threads = t;
    int wait = 200;
    if (v->timer_at >= 0) {
      int64_t left = v->timer_at - (int64_t)mono_ms();
      wait = left < 0 ? 0 : left < 200 ? (int)left : 200;
    }
    struct pollfd ready[65];
    int n = v->nfds;
    memcpy(ready, v->fds, sizeof v->fds);
    if (v->dns) ready[n] = (struct pollfd){.fd = v->dns->fd, .events = POLLIN};
    int r = poll(ready, (nfds_t)n + (v->dns ? 1 : 0), wait);
    assert_true(r >= 0);
    if (v->dns && ready[n].revents) fake_serve(v->dns);
    for (int i = 0; i < n && v->d && !v->done_calls; i++) {
      if (!ready[i].revents) continue;
      unsigned ev = 0;
      if (ready[i].revents & (POLLIN | POLLHUP | POLLERR)) ev |= EPODE_IO_READ;
      if (ready[i].revents & (POLLOUT | POLLHUP | POLLERR)) ev |= EPODE_IO_WRITE;
      epode__discover_process_fd(v->d, ready[i].fd, ev);
    }
    if (v->d && !v->done_calls && v->timer_at >= 0 && (int64_t)mono_ms() >= v->timer_at) {
      v->timer_at = -1;
      epode__discover_process_timeout(v->d);
    }
  }
  assert_int_equal(v->done_calls, 1);
  if (v->d) {
    assert_true(epode__discover_done(v->d));
    const char *u, *det;
    assert_int_equal(epode__discover_result(v->d, &u, &det), v->err);
    assert_string_equal(det, v->detail);
  }
}

static void drv_free(drv *v) {
  epode__discover_free(v->d);
  assert_int_equal(v->nfds, 0); /* every fd was reported closed */
  assert_int_equal(v->timer_at, -1);
  epode_config_free(v->cfg);
  /* The one thread of this process: libcurl started none. */
  assert_int_equal(v->max_threads, 1);
}

/* ------------------------------------------------------------------ fetch tests */

typedef struct pki {
  tcert ca, leaf, other_ca, untrusted_leaf;
  char cafile[64];
} pki;

static pki P;

static int pki_setup(void **st) {
  P.ca = t_cert("epode test CA", NULL, NULL, NULL);
  P.leaf = t_cert("localhost", &P.ca, "DNS:localhost,DNS:xmpp.test,IP:127.0.0.1", NULL);
  P.other_ca = t_cert("someone else", NULL, NULL, NULL);
  P.untrusted_leaf = t_cert("localhost", &P.other_ca, "DNS:localhost,IP:127.0.0.1", NULL);
  t_write_pem(&P.ca, P.cafile, sizeof P.cafile);
  return 0;
}

static int pki_teardown(void **st) {
  unlink(P.cafile);
  t_cert_free(&P.ca);
  t_cert_free(&P.leaf);
  t_cert_free(&P.other_ca);
  t_cert_free(&P.untrusted_leaf);
  return 0;
}

static const char *WS_XRD =
    XRD_OPEN "<Link rel='urn:xmpp:alt-connections:websocket' href='wss://chat.example/ws'/></XRD>";

/* A real name (not "localhost", which libcurl answers itself without its
 * resolver thread) resolved through a fake name server: libcurl would start
 * a thread to resolve it; ours goes through c-ares, and the driver checks
 * that the process never had more than one thread. */
static void t_fetch_xrd(void **st) {
  server sv;
  int ls;
  server_listen(&sv, &ls);
  route_add("/.well-known/host-meta", "200 OK", "Content-Type: application/xrd+xml\r\n", WS_XRD);
  server_run(&sv, ls, &P.leaf);
  fake f;
  fake_start(&f);
  rule *r = fake_rule(&f, "xmpp.test", T_A, ACT_ANSWER);
  r->addr[r->naddr++] = "127.0.0.1";
  fake_rule(&f, "xmpp.test", T_AAAA, ACT_NODATA);
  char dns[64], base[64];
  snprintf(dns, sizeof dns, "127.0.0.1:%u", (unsigned)f.port);
  snprintf(base, sizeof base, "https://xmpp.test:%u", (unsigned)sv.port);
  drv v;
  drv_init(&v, WS, P.cafile, 0, 10000);
  v.dns = &f;
  assert_int_equal(epode__discover_set_dns_servers(v.d, dns), EPODE_OK);
  assert_int_equal(epode__discover_set_base(v.d, base), EPODE_OK);
  drv_run(&v, "xmpp.test");
  assert_int_equal(v.max_threads, 1); /* first: libcurl's resolver would show here */
  if (v.err) fail_msg("%s", v.detail);
  assert_string_equal(v.url, "wss://chat.example/ws");
  assert_string_equal(v.detail, "found in host-meta");
  assert_non_null(strstr(f.seen, "1 xmpp.test;"));
  drv_free(&v);
  close(f.fd);
  server_stop(&sv);
}

/* localhost through /etc/hosts (c-ares reads it). */
static void t_fetch_localhost(void **st) {
  server sv;
  int ls;
  server_listen(&sv, &ls);
  route_add("/.well-known/host-meta", "200 OK", NULL, WS_XRD);
  server_run(&sv, ls, &P.leaf);
  drv v;
  drv_init(&v, WS, P.cafile, 0, 10000);
  assert_int_equal(epode__discover_set_base(v.d, sv.base), EPODE_OK);
  drv_run(&v, "localhost");
  if (v.err) fail_msg("%s", v.detail);
  assert_string_equal(v.url, "wss://chat.example/ws");
  drv_free(&v);
  server_stop(&sv);
}

static void t_fetch_json_fallback_owner_addrs(void **st) {
  server sv;
  int ls;
  server_listen(&sv, &ls);
  route_add("/.well-known/host-meta", "404 Not Found", NULL, "nope");
  route_add("/.well-known/host-meta.json", "200 OK", "Content-Type: application/json\r\n",
            "{\"links\":[{\"rel\":\"urn:xmpp:alt-connections:xbosh\",\"href\":"
            "\"https://chat.example/bosh\"}]}");
  server_run(&sv, ls, &P.leaf);
  drv v;
  drv_init(&v, BOSH, P.cafile, 0, 10000);
  assert_int_equal(epode__discover_set_base(v.d, sv.base), EPODE_OK);
  /* Addresses from the owner; a dead name server proves none is asked. */
  assert_int_equal(epode__discover_add_addrs(v.d, "localhost", sv.port, "127.0.0.1"), EPODE_OK);
  assert_int_equal(epode__discover_set_dns_servers(v.d, "127.0.0.1:9"), EPODE_OK);
  drv_run(&v, "localhost");
  if (v.err) fail_msg("%s", v.detail);
  assert_string_equal(v.url, "https://chat.example/bosh");
  assert_string_equal(v.detail, "found in host-meta.json");
  drv_free(&v);
  server_stop(&sv);
}

static void t_fetch_404_both(void **st) {
  server sv;
  int ls;
  server_listen(&sv, &ls);
  server_run(&sv, ls, &P.leaf); /* no routes: 404 for everything */
  drv v;
  drv_init(&v, WS, P.cafile, 0, 10000);
  assert_int_equal(epode__discover_set_base(v.d, sv.base), EPODE_OK);
  drv_run(&v, "localhost");
  assert_int_equal(v.err, EPODE_ERR_NOTFOUND);
  assert_null(strstr(v.url, "wss"));
  if (!strstr(v.detail, "host-meta: HTTP 404 Not Found") ||
      !strstr(v.detail, "host-meta.json: HTTP 404 Not Found"))
    fail_msg("%s", v.detail);
  drv_free(&v);
  server_stop(&sv);
}

static void t_fetch_redirect(void **st) {
  server sv;
  int ls;
  server_listen(&sv, &ls);
  char loc[128];
  snprintf(loc, sizeof loc, "Location: %s/moved/host-meta\r\n", sv.base);
  route_add("/.well-known/host-meta", "302 Found", loc, "");
  route_add("/moved/host-meta", "200 OK", NULL, WS_XRD);
  server_run(&sv, ls, &P.leaf);
  drv v;
  drv_init(&v, WS, P.cafile, 0, 10000);
  assert_int_equal(epode__discover_set_base(v.d, sv.base), EPODE_OK);
  drv_run(&v, "localhost");
  if (v.err) fail_msg("%s", v.detail);
  assert_string_equal(v.url, "wss://chat.example/ws");
  drv_free(&v);
  server_stop(&sv);
}

static void t_fetch_redirect_refused(void **st) {
  /* To http://, and in a loop: refused; the JSON document is tried next. */
  server sv;
  int ls;
  server_listen(&sv, &ls);
  char loop[128];
  snprintf(loop, sizeof loop, "Location: %s/.well-known/host-meta.json\r\n", sv.base);
  route_add("/.well-known/host-meta", "301 Moved", "Location: http://localhost/x\r\n", "");
  route_add("/.well-known/host-meta.json", "307 Again", loop, "");
  server_run(&sv, ls, &P.leaf);
  drv v;
  drv_init(&v, WS, P.cafile, 0, 10000);
  assert_int_equal(epode__discover_set_base(v.d, sv.base), EPODE_OK);
  drv_run(&v, "localhost");
  assert_int_equal(v.err, EPODE_ERR_PROTOCOL);
  if (!strstr(v.detail, "refusing to fetch http://localhost/x") ||
      !strstr(v.detail, "more than 3 redirects"))
    fail_msg("%s", v.detail);
  drv_free(&v);
  server_stop(&sv);
}

static void t_fetch_untrusted(void **st) {
  server sv;
  int ls;
  server_listen(&sv, &ls);
  route_add("/.well-known/host-meta", "200 OK", NULL, WS_XRD);
  server_run(&sv, ls, &P.untrusted_leaf);
  drv v;
  drv_init(&v, WS, P.cafile, 0, 10000);
  assert_int_equal(epode__discover_set_base(v.d, sv.base), EPODE_OK);
  drv_run(&v, "localhost");
  assert_int_equal(v.err, EPODE_ERR_TLS_VERIFY);
  assert_string_equal(v.url, "");
  /* One document only: the JSON one lives on the same untrusted server. */
  assert_null(strstr(v.detail, "host-meta.json"));
  if (!strstr(v.detail, "certificate")) fail_msg("%s", v.detail);
  drv_free(&v);
  /* The explicit opt-out accepts it. */
  drv_init(&v, WS, P.cafile, EPODE_CFG_TLS_NO_VERIFY, 10000);
  assert_int_equal(epode__discover_set_base(v.d, sv.base), EPODE_OK);
  drv_run(&v, "localhost");
  assert_int_equal(v.err, EPODE_OK);
  drv_free(&v);
  server_stop(&sv);
}

static void t_fetch_too_big_and_free_in_callback(void **st) {
  server sv;
  int ls;
  server_listen(&sv, &ls);
  char *body = malloc(EPODE__DISCOVER_MAX_BODY + 100);
  memset(body, ' ', EPODE__DISCOVER_MAX_BODY + 99);
  body[EPODE__DISCOVER_MAX_BODY + 99] = '\0';
  route_add("/.well-known/host-meta", "200 OK", NULL, body);
  route_add("/.well-known/host-meta.json", "200 OK", NULL, "{\"links\": [");
  free(body);
  server_run(&sv, ls, &P.leaf);
  drv v;
  drv_init(&v, WS, P.cafile, 0, 10000);
  v.free_in_cb = 1;
  assert_int_equal(epode__discover_set_base(v.d, sv.base), EPODE_OK);
  drv_run(&v, "localhost");
  assert_null(v.d);
  assert_int_equal(v.err, EPODE_ERR_LIMIT);
  if (!strstr(v.detail, "larger than 65536") || !strstr(v.detail, "malformed JSON"))
    fail_msg("%s", v.detail);
  drv_free(&v);
  server_stop(&sv);
}

static void t_fetch_timeout_and_refused(void **st) {
  server sv;
  int ls;
  server_listen(&sv, &ls);
  route_add("/.well-known/host-meta", "200 OK", NULL, "");
  routes[0].hang = 1;
  server_run(&sv, ls, &P.leaf);
  drv v;
  drv_init(&v, WS, P.cafile, 0, 700);
  assert_int_equal(epode__discover_set_base(v.d, sv.base), EPODE_OK);
  uint64_t t0 = mono_ms();
  drv_run(&v, "localhost");
  assert_int_equal(v.err, EPODE_ERR_TIMEOUT);
  assert_true(mono_ms() - t0 < 5000);
  drv_free(&v);
  server_stop(&sv);

  /* Nobody listening. */
  server_listen(&sv, &ls);
  close(ls);
  drv_init(&v, WS, P.cafile, 0, 5000);
  assert_int_equal(epode__discover_set_base(v.d, sv.base), EPODE_OK);
  drv_run(&v, "localhost");
  assert_int_equal(v.err, EPODE_ERR_CONNECT);
  drv_free(&v);
}

static void t_api_misuse(void **st) {
  drv v;
  drv_init(&v, WS, NULL, 0, 0);
  assert_int_equal(epode__discover_set_base(v.d, "http://x"), EPODE_ERR_INVAL);
  assert_int_equal(epode__discover_set_base(v.d, "https://x/path"), EPODE_ERR_INVAL);
  assert_int_equal(epode__discover_set_base(v.d, "https://x/"), EPODE_ERR_INVAL);
  assert_int_equal(epode__discover_add_addrs(v.d, "a b", 443, "1.2.3.4"), EPODE_ERR_INVAL);
  assert_int_equal(epode__discover_add_addrs(v.d, "h", 0, "1.2.3.4"), EPODE_ERR_INVAL);
  assert_int_equal(epode__discover_start(v.d, "a/b"), EPODE_ERR_INVAL);
  assert_int_equal(epode__discover_start(v.d, ""), EPODE_ERR_INVAL);
  assert_int_equal(epode__discover_start(v.d, "x@y"), EPODE_ERR_INVAL);
  const char *u, *det;
  assert_int_equal(epode__discover_result(v.d, &u, &det), EPODE_ERR_STATE);
  epode__discover_free(v.d);
  v.d = NULL;
  epode__discover *d;
  assert_int_equal(
      epode__discover_new(&d, v.cfg, EPODE_TRANSPORT_TCP, on_io, on_timer, on_done, &v),
      EPODE_ERR_INVAL);
  assert_int_equal(epode__discover_new(&d, v.cfg, WS, NULL, on_timer, on_done, &v),
                   EPODE_ERR_INVAL);
  v.timer_at = -1;
  v.max_threads = 1;
  drv_free(&v);
}

int main(void) {
  const struct CMUnitTest parsers[] = {
      cmocka_unit_test(t_xrd_good),       cmocka_unit_test(t_xrd_no_usable_link),
      cmocka_unit_test(t_xrd_malformed),  cmocka_unit_test(t_xrd_hostile_sizes),
      cmocka_unit_test(t_json_good),      cmocka_unit_test(t_json_no_usable_link),
      cmocka_unit_test(t_json_malformed), cmocka_unit_test(t_json_hostile),
      cmocka_unit_test(t_parsers_noise),  cmocka_unit_test(t_parsers_alloc_failures),
  };
  const struct CMUnitTest fetches[] = {
      cmocka_unit_test(t_api_misuse),
      cmocka_unit_test(t_fetch_xrd),
      cmocka_unit_test(t_fetch_localhost),
      cmocka_unit_test(t_fetch_json_fallback_owner_addrs),
      cmocka_unit_test(t_fetch_404_both),
      cmocka_unit_test(t_fetch_redirect),
      cmocka_unit_test(t_fetch_redirect_refused),
      cmocka_unit_test(t_fetch_untrusted),
      cmocka_unit_test(t_fetch_too_big_and_free_in_callback),
      cmocka_unit_test(t_fetch_timeout_and_refused),
  };
  int r = cmocka_run_group_tests_name("discover parsers", parsers, NULL, NULL);
  r |= cmocka_run_group_tests_name("discover fetches", fetches, pki_setup, pki_teardown);
  return r;
}
