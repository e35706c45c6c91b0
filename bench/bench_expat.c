/* bench_expat — the lower bound for inbound parsing: expat, in namespace
 * mode (as both libraries use it), with no-op start/end/character-data
 * callbacks, over exactly the bytes the scripted server sends (stream
 * header, then --count messages from the same pre-built block), held in
 * memory and fed in 16 KiB pieces (epode's read size). No sockets, no tree,
 * no dispatch: what is left is tokenising, unescaping and UTF-8 checks.
 *
 *   bench_expat --count N */
#include <expat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "msgs.h"

static unsigned long long ends;

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **atts) {
  (void)ud, (void)name, (void)atts;
}
static void XMLCALL on_end(void *ud, const XML_Char *name) {
  (void)ud, (void)name;
  ends++;
}
static void XMLCALL on_text(void *ud, const XML_Char *s, int len) { (void)ud, (void)s, (void)len; }

int main(int argc, char **argv) {
  unsigned long long count = 1000000ull;
  if (argc == 3 && strcmp(argv[1], "--count") == 0) count = strtoull(argv[2], NULL, 10);
  /* The block, then the stream: header + count messages (same as xserver). */
  size_t cap = (size_t)BENCH_BLOCK_MSGS * 300, blen = 0;
  char *block = malloc(cap), one[1024];
  size_t *msg_end = malloc(BENCH_BLOCK_MSGS * sizeof *msg_end);
  for (unsigned i = 0; i < BENCH_BLOCK_MSGS; i++) {
    size_t n = bench_msg_xml(one, sizeof one, i, 0);
    memcpy(block + blen, one, n);
    blen += n;
    msg_end[i] = blen;
  }
  size_t hl = strlen(bench_stream_header);
  size_t total = hl + (size_t)(count / BENCH_BLOCK_MSGS) * blen +
                 (count % BENCH_BLOCK_MSGS ? msg_end[count % BENCH_BLOCK_MSGS - 1] : 0);
  char *all = malloc(total);
  size_t off = hl;
  memcpy(all, bench_stream_header, hl);
  for (unsigned long long i = 0; i < count / BENCH_BLOCK_MSGS; i++, off += blen)
    memcpy(all + off, block, blen);
  if (count % BENCH_BLOCK_MSGS) memcpy(all + off, block, msg_end[count % BENCH_BLOCK_MSGS - 1]);

  XML_Parser xp = XML_ParserCreateNS("UTF-8", '\x01');
  XML_SetElementHandler(xp, on_start, on_end);
  XML_SetCharacterDataHandler(xp, on_text);
  double t0 = bench_now();
  for (size_t o = 0; o < total; o += 16384) {
    size_t n = total - o < 16384 ? total - o : 16384;
    if (XML_Parse(xp, all + o, (int)n, XML_FALSE) != XML_STATUS_OK) {
      fprintf(stderr, "bench_expat: %s\n", XML_ErrorString(XML_GetErrorCode(xp)));
      return 1;
    }
  }
  double wall = bench_now() - t0;
  /* two elements per message: <body/> and <message/> */
  if (ends != 2 * count) {
    fprintf(stderr, "bench_expat: %llu end tags, expected %llu\n", ends, 2 * count);
    return 1;
  }
  bench_result("expat msgs=%llu wall=%.6f bytes=%zu", count, wall, total - hl);
  XML_ParserFree(xp);
  return 0;
}
