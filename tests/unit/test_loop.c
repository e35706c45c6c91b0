/* The built-in loop: timers (order, delays, repetition, cancellation, heap
 * order under load), host fds on pipes (readiness, hang-up, unwatching from
 * another fd's callback in the same batch), run modes, stop, cross-thread
 * wakeup, the connection adapters driven with a fake source, and allocation
 * failure at every allocation.
 *
 * Timing checks use lower bounds and relative order only: a loaded machine
 * makes anything late, never early. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "epode/loop.h"
#include "loop/loop_int.h"
#include "util/alloc.h"

#include "failmem.h"

/* Monotonic time in microseconds, for measuring from the test's side. */
static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static epode_loop *new_loop(void) {
  epode_loop *loop = NULL;
  assert_int_equal(epode_loop_new(&loop, NULL), EPODE_OK);
  assert_non_null(loop);
  return loop;
}

static void make_pipe(int p[2]) {
  assert_int_equal(pipe(p), 0);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(fcntl(p[i], F_SETFL, O_NONBLOCK), 0);
    assert_int_equal(fcntl(p[i], F_SETFD, FD_CLOEXEC), 0);
  }
}

/* ------------------------------------------------------------------ timers */

typedef struct rec {
  int order[2048];
  uint64_t at_us[2048];
  int n;
} rec;

typedef struct tctx {
  rec *r;
  int id;
  int remaining; /* repeating: fire this many times, then return 0 */
  epode_loop_timer *other;
  epode_loop_timer *self;
} tctx;

static int record_fn(epode_loop *loop, void *ud) {
  tctx *c = ud;
  c->r->at_us[c->r->n] = now_us();
  c->r->order[c->r->n++] = c->id;
  if (c->remaining > 0) c->remaining--;
  return c->remaining > 0;
}

static void test_new_free(void **state) {
  epode_loop *loop = new_loop();
  epode_loop_free(loop);
  epode_loop_free(NULL);
  assert_int_equal(epode_loop_new(NULL, NULL), EPODE_ERR_INVAL);
}

static void test_timers_order_and_delay(void **state) {
  epode_loop *loop = new_loop();
  rec r = {0};
  tctx a = {&r, 30, 0, NULL, NULL}, b = {&r, 10, 0, NULL, NULL}, c = {&r, 20, 0, NULL, NULL};
  uint64_t t0 = now_us();
  assert_int_equal(epode_loop_timer_start(loop, NULL, 30, 0, record_fn, &a), EPODE_OK);
  assert_int_equal(epode_loop_timer_start(loop, NULL, 10, 0, record_fn, &b), EPODE_OK);
  assert_int_equal(epode_loop_timer_start(loop, NULL, 20, 0, record_fn, &c), EPODE_OK);
  /* Nothing else is watched: DEFAULT returns once the three have fired. */
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_DEFAULT), EPODE_OK);
  assert_int_equal(r.n, 3);
  assert_int_equal(r.order[0], 10);
  assert_int_equal(r.order[1], 20);
  assert_int_equal(r.order[2], 30);
  /* The loop's clock has ms resolution: allow 1 ms of truncation. */
  for (int i = 0; i < 3; i++)
    assert_true(r.at_us[i] - t0 >= (uint64_t)(r.order[i] - 1) * 1000u);
  assert_true(epode_loop_now(loop) > 0);
  epode_loop_free(loop);
}

static void test_timers_equal_deadline_fifo(void **state) {
  epode_loop *loop = new_loop();
  rec r = {0};
  tctx c[8];
  for (int i = 0; i < 8; i++) {
    c[i] = (tctx){&r, i, 0, NULL, NULL};
    assert_int_equal(epode_loop_timer_start(loop, NULL, 0, 0, record_fn, &c[i]), EPODE_OK);
  }
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_NOWAIT), EPODE_OK);
  assert_int_equal(r.n, 8);
  for (int i = 0; i < 8; i++)
    assert_int_equal(r.order[i], i);
  epode_loop_free(loop);
}

static void test_timer_repeat(void **state) {
  epode_loop *loop = new_loop();
  rec r = {0};
  tctx c = {&r, 1, 5, NULL, NULL};
  uint64_t t0 = now_us();
  assert_int_equal(epode_loop_timer_start(loop, NULL, 5, 10, record_fn, &c), EPODE_OK);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_DEFAULT), EPODE_OK);
  /* Returned 1 four times, then 0: five firings, then freed (ASan/leak). */
  assert_int_equal(r.n, 5);
  assert_true(r.at_us[0] - t0 >= 4000);
  for (int i = 1; i < 5; i++)
    assert_true(r.at_us[i] - r.at_us[i - 1] >= 9000);
  epode_loop_free(loop);
}

static int stop_self_fn(epode_loop *loop, void *ud) {
  tctx *c = ud;
  record_fn(loop, ud);
  epode_loop_timer_stop(loop, c->self);
  return 1; /* would repeat, but it was stopped */
}

static int stop_other_fn(epode_loop *loop, void *ud) {
  tctx *c = ud;
  record_fn(loop, ud);
  epode_loop_timer_stop(loop, c->other);
  return 0;
}

static void test_timer_stop_in_callbacks(void **state) {
  epode_loop *loop = new_loop();
  rec r = {0};
  /* A repeating timer that stops itself fires once. */
  tctx self = {&r, 1, 0, NULL, NULL};
  assert_int_equal(epode_loop_timer_start(loop, &self.self, 0, 1, stop_self_fn, &self), EPODE_OK);
  /* A stops B, which is due in the same pass; C stops D, due later. */
  tctx b = {&r, 3, 0, NULL, NULL}, a = {&r, 2, 0, NULL, NULL};
  tctx d = {&r, 5, 0, NULL, NULL}, c = {&r, 4, 0, NULL, NULL};
  assert_int_equal(epode_loop_timer_start(loop, NULL, 0, 0, stop_other_fn, &a), EPODE_OK);
  assert_int_equal(epode_loop_timer_start(loop, &a.other, 0, 0, record_fn, &b), EPODE_OK);
  assert_int_equal(epode_loop_timer_start(loop, &c.other, 50, 0, record_fn, &d), EPODE_OK);
  assert_int_equal(epode_loop_timer_start(loop, NULL, 5, 0, stop_other_fn, &c), EPODE_OK);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_DEFAULT), EPODE_OK);
  assert_int_equal(r.n, 3);
  assert_int_equal(r.order[0], 1);
  assert_int_equal(r.order[1], 2);
  assert_int_equal(r.order[2], 4);
  epode_loop_free(loop);
}

static void test_timer_stop_outside_and_free_pending(void **state) {
  epode_loop *loop = new_loop();
  rec r = {0};
  tctx c = {&r, 1, 0, NULL, NULL};
  epode_loop_timer *t = NULL, *u = NULL;
  assert_int_equal(epode_loop_timer_start(loop, &t, 1000, 0, record_fn, &c), EPODE_OK);
  assert_non_null(t);
  assert_int_equal(epode_loop_timer_start(loop, &u, 2000, 100, record_fn, &c), EPODE_OK);
  epode_loop_timer_stop(loop, t);
  epode_loop_timer_stop(loop, NULL);
  assert_int_equal(epode_loop_timer_start(loop, NULL, 0, 0, NULL, NULL), EPODE_ERR_INVAL);
  /* u is still pending: freeing the loop frees it (ASan would see a leak). */
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_NOWAIT), EPODE_OK);
  assert_int_equal(r.n, 0);
  epode_loop_free(loop);
}

static int zero_again_fn(epode_loop *loop, void *ud) {
  int *n = ud;
  (*n)++;
  assert_int_equal(epode_loop_timer_start(loop, NULL, 0, 0, zero_again_fn, ud), EPODE_OK);
  return 0;
}

/* A callback that keeps starting delay-0 timers cannot starve the loop: each
 * timer pass fires only timers armed before it. */
static void test_timer_zero_no_starvation(void **state) {
  epode_loop *loop = new_loop();
  int n = 0;
  assert_int_equal(epode_loop_timer_start(loop, NULL, 0, 0, zero_again_fn, &n), EPODE_OK);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_NOWAIT), EPODE_OK);
  assert_true(n >= 1 && n <= 2);
  int before = n;
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_NOWAIT), EPODE_OK);
  assert_true(n > before && n <= before + 2);
  epode_loop_free(loop);
}

typedef struct many {
  int delay[1000];
  int fired[1000];
  int order[1000];
  int n;
} many;

typedef struct many_ctx {
  many *m;
  int i;
} many_ctx;

static int many_fn(epode_loop *loop, void *ud) {
  many_ctx *c = ud;
  c->m->fired[c->i]++;
  c->m->order[c->m->n++] = c->i;
  return 0;
}

static void test_many_timers_heap_order(void **state) {
  epode_loop *loop = new_loop();
  static many m;
  static many_ctx ctx[1000];
  static epode_loop_timer *h[1000];
  memset(&m, 0, sizeof m);
  uint64_t a0 = now_us();
  for (int i = 0; i < 1000; i++) {
    m.delay[i] = (i * 7919) % 150; /* scattered, with many duplicates */
    ctx[i] = (many_ctx){&m, i};
    assert_int_equal(epode_loop_timer_start(loop, &h[i], (uint64_t)m.delay[i], 0, many_fn, &ctx[i]),
                     EPODE_OK);
  }
  /* Remove every third from the middle of the heap. */
  for (int i = 0; i < 1000; i += 3)
    epode_loop_timer_stop(loop, h[i]);
  uint64_t arming_ms = (now_us() - a0) / 1000 + 1;
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_DEFAULT), EPODE_OK);
  int expect = 0;
  for (int i = 0; i < 1000; i++) {
    assert_int_equal(m.fired[i], i % 3 == 0 ? 0 : 1);
    expect += i % 3 != 0;
  }
  assert_int_equal(m.n, expect);
  /* Deadlines are delay + the moment of arming, which spans arming_ms. */
  for (int k = 1; k < m.n; k++)
    assert_true((uint64_t)m.delay[m.order[k - 1]] <= (uint64_t)m.delay[m.order[k]] + arming_ms);
  epode_loop_free(loop);
}

/* ------------------------------------------------------------------ fds */

typedef struct fdrec {
  int calls;
  int fd;
  unsigned events;
  char buf[16];
  ssize_t got;
  int unwatch;
} fdrec;

static void fd_record(epode_loop *loop, int fd, unsigned events, void *ud) {
  fdrec *r = ud;
  r->calls++;
  r->fd = fd;
  r->events = events;
  if (events & EPODE_IO_READ) r->got = read(fd, r->buf, sizeof r->buf);
  if (r->unwatch) assert_int_equal(epode_loop_unwatch(loop, fd), EPODE_OK);
}

static void test_watch_read(void **state) {
  epode_loop *loop = new_loop();
  int p[2];
  make_pipe(p);
  fdrec r = {0};
  r.unwatch = 1;
  assert_int_equal(epode_loop_watch(loop, p[0], EPODE_IO_READ, fd_record, &r), EPODE_OK);
  assert_int_equal(write(p[1], "hi", 2), 2);
  /* Unwatching in the callback leaves nothing: DEFAULT returns. */
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_DEFAULT), EPODE_OK);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.fd, p[0]);
  assert_int_equal(r.events, EPODE_IO_READ);
  assert_int_equal(r.got, 2);
  assert_memory_equal(r.buf, "hi", 2);
  assert_int_equal(epode_loop_unwatch(loop, p[0]), EPODE_ERR_NOTFOUND);
  close(p[0]);
  close(p[1]);
  epode_loop_free(loop);
}

static void test_watch_write_and_change(void **state) {
  epode_loop *loop = new_loop();
  int p[2];
  make_pipe(p);
  fdrec r = {0};
  assert_int_equal(epode_loop_watch(loop, p[1], EPODE_IO_WRITE, fd_record, &r), EPODE_OK);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_ONCE), EPODE_OK);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.events, EPODE_IO_WRITE);
  /* Watching again changes the events: READ on a write end never fires. */
  assert_int_equal(epode_loop_watch(loop, p[1], EPODE_IO_READ, fd_record, &r), EPODE_OK);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_NOWAIT), EPODE_OK);
  assert_int_equal(r.calls, 1);
  assert_int_equal(epode_loop_unwatch(loop, p[1]), EPODE_OK);
  /* Bad arguments. */
  assert_int_equal(epode_loop_watch(loop, -1, EPODE_IO_READ, fd_record, &r), EPODE_ERR_INVAL);
  assert_int_equal(epode_loop_watch(loop, p[0], 0, fd_record, &r), EPODE_ERR_INVAL);
  assert_int_equal(epode_loop_watch(loop, p[0], 4, fd_record, &r), EPODE_ERR_INVAL);
  assert_int_equal(epode_loop_watch(loop, p[0], EPODE_IO_READ, NULL, &r), EPODE_ERR_INVAL);
  close(p[0]);
  close(p[1]);
  /* A closed fd is refused, and nothing is kept. */
  assert_int_equal(epode_loop_watch(loop, p[0], EPODE_IO_READ, fd_record, &r), EPODE_ERR_INVAL);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_DEFAULT), EPODE_OK);
  epode_loop_free(loop);
}

static void test_watch_hangup_as_read(void **state) {
  epode_loop *loop = new_loop();
  int p[2];
  make_pipe(p);
  fdrec r = {0};
  r.unwatch = 1;
  assert_int_equal(epode_loop_watch(loop, p[0], EPODE_IO_READ, fd_record, &r), EPODE_OK);
  close(p[1]);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_ONCE), EPODE_OK);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.events, EPODE_IO_READ);
  assert_int_equal(r.got, 0); /* EOF */
  close(p[0]);

  /* A write end whose reader went away: READ (error) plus the WRITE it
   * waits for, so a write sees EPIPE. */
  make_pipe(p);
  fdrec w = {0};
  w.unwatch = 1;
  close(p[0]);
  assert_int_equal(epode_loop_watch(loop, p[1], EPODE_IO_WRITE, fd_record, &w), EPODE_OK);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_ONCE), EPODE_OK);
  assert_int_equal(w.calls, 1);
  assert_true(w.events & EPODE_IO_READ);
  assert_true(w.events & EPODE_IO_WRITE);
  close(p[1]);
  epode_loop_free(loop);
}

/* Both pipes are readable before the loop runs, so their events arrive in
 * one epoll_wait batch. Whichever callback runs first unwatches and closes
 * the other pipe, then opens a new pipe that reuses the number and watches
 * it with a different callback: the stale event must reach nobody. */
typedef struct pair {
  int p[2][2];
  int calls[2];
  int newp[2];
  int stray;
  int fresh_calls;
} pair;

static void fresh_cb(epode_loop *loop, int fd, unsigned events, void *ud) {
  pair *pr = ud;
  pr->fresh_calls++;
}

static void pair_cb(epode_loop *loop, int fd, unsigned events, void *ud) {
  pair *pr = ud;
  int me = fd == pr->p[0][0] ? 0 : 1;
  if (fd != pr->p[me][0]) {
    pr->stray++;
    return;
  }
  pr->calls[me]++;
  int other = !me;
  int ofd = pr->p[other][0];
  /* A new pipe (made while the old numbers are taken) whose read end then
   * moves onto the number just freed. */
  make_pipe(pr->newp);
  assert_int_equal(epode_loop_unwatch(loop, ofd), EPODE_OK);
  close(pr->p[other][0]);
  close(pr->p[other][1]);
  assert_int_equal(dup2(pr->newp[0], ofd), ofd);
  close(pr->newp[0]);
  pr->newp[0] = ofd;
  assert_int_equal(epode_loop_watch(loop, ofd, EPODE_IO_READ, fresh_cb, pr), EPODE_OK);
  pr->p[other][0] = pr->p[other][1] = -1;
  assert_int_equal(epode_loop_unwatch(loop, fd), EPODE_OK);
}

static void test_unwatch_other_in_same_batch(void **state) {
  epode_loop *loop = new_loop();
  pair pr;
  memset(&pr, 0, sizeof pr);
  make_pipe(pr.p[0]);
  make_pipe(pr.p[1]);
  assert_int_equal(write(pr.p[0][1], "a", 1), 1);
  assert_int_equal(write(pr.p[1][1], "b", 1), 1);
  assert_int_equal(epode_loop_watch(loop, pr.p[0][0], EPODE_IO_READ, pair_cb, &pr), EPODE_OK);
  assert_int_equal(epode_loop_watch(loop, pr.p[1][0], EPODE_IO_READ, pair_cb, &pr), EPODE_OK);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_ONCE), EPODE_OK);
  assert_int_equal(pr.calls[0] + pr.calls[1], 1);
  assert_int_equal(pr.stray, 0);
  assert_int_equal(pr.fresh_calls, 0);
  for (int i = 0; i < 2; i++)
    if (pr.p[i][0] >= 0) close(pr.p[i][0]), close(pr.p[i][1]);
  for (int i = 0; i < 2; i++) {
    epode_loop_unwatch(loop, pr.newp[i]);
    close(pr.newp[i]);
  }
  epode_loop_free(loop);
}

/* ------------------------------------------------------------------ run modes */

static int stop_fn(epode_loop *loop, void *ud) {
  int *n = ud;
  (*n)++;
  epode_loop_stop(loop);
  return 1; /* repeating: keeps the loop alive, so only stop() ends DEFAULT */
}

static int count_fn(epode_loop *loop, void *ud) {
  (*(int *)ud)++;
  return 0;
}

static void test_run_modes(void **state) {
  epode_loop *loop = new_loop();
  /* Nothing at all: DEFAULT and NOWAIT return at once. */
  uint64_t t0 = now_us();
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_DEFAULT), EPODE_OK);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_NOWAIT), EPODE_OK);
  assert_true(now_us() - t0 < 1000000); /* "at once": generous */
  assert_int_equal(epode_loop_run(loop, (epode_run_mode)7), EPODE_ERR_INVAL);

  /* NOWAIT does not wait for a timer that is not due. */
  int late = 0, soon = 0;
  epode_loop_timer *lt = NULL;
  assert_int_equal(epode_loop_timer_start(loop, &lt, 10000, 0, count_fn, &late), EPODE_OK);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_NOWAIT), EPODE_OK);
  assert_int_equal(late, 0);

  /* ONCE waits for the first due timer, fires it, returns. */
  assert_int_equal(epode_loop_timer_start(loop, NULL, 20, 0, count_fn, &soon), EPODE_OK);
  t0 = now_us();
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_ONCE), EPODE_OK);
  assert_int_equal(soon, 1);
  assert_int_equal(late, 0);
  assert_true(now_us() - t0 >= 19000);

  /* DEFAULT with a watched fd that never fires and a repeating timer keeps
   * going until stop() from the timer. */
  int p[2];
  make_pipe(p);
  fdrec r = {0};
  int stops = 0;
  epode_loop_timer *st = NULL;
  assert_int_equal(epode_loop_watch(loop, p[0], EPODE_IO_READ, fd_record, &r), EPODE_OK);
  assert_int_equal(epode_loop_timer_start(loop, &st, 5, 5, stop_fn, &stops), EPODE_OK);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_DEFAULT), EPODE_OK);
  assert_int_equal(stops, 1);
  /* The stop flag does not outlive the run: the next one runs again. */
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_DEFAULT), EPODE_OK);
  assert_int_equal(stops, 2);
  epode_loop_timer_stop(loop, st);

  /* stop() before run: one iteration without waiting, even with an fd. */
  epode_loop_stop(loop);
  t0 = now_us();
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_DEFAULT), EPODE_OK);
  assert_true(now_us() - t0 < 5000000);
  assert_int_equal(r.calls, 0);

  epode_loop_timer_stop(loop, lt);
  assert_int_equal(epode_loop_unwatch(loop, p[0]), EPODE_OK);
  close(p[0]);
  close(p[1]);
  epode_loop_free(loop);
}

static int nested_run_fn(epode_loop *loop, void *ud) {
  *(epode_err *)ud = epode_loop_run(loop, EPODE_RUN_NOWAIT);
  return 0;
}

static void test_run_not_reentrant(void **state) {
  epode_loop *loop = new_loop();
  epode_err e = EPODE_OK;
  assert_int_equal(epode_loop_timer_start(loop, NULL, 0, 0, nested_run_fn, &e), EPODE_OK);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_DEFAULT), EPODE_OK);
  assert_int_equal(e, EPODE_ERR_STATE);
  epode_loop_free(loop);
}

static int free_loop_fn(epode_loop *loop, void *ud) {
  (*(int *)ud)++;
  epode_loop_free(loop);
  return 1;
}

static void test_free_from_callback(void **state) {
  epode_loop *loop = new_loop();
  int n = 0, other = 0;
  int p[2];
  make_pipe(p);
  fdrec r = {0};
  assert_int_equal(epode_loop_watch(loop, p[0], EPODE_IO_READ, fd_record, &r), EPODE_OK);
  assert_int_equal(epode_loop_timer_start(loop, NULL, 0, 1, free_loop_fn, &n), EPODE_OK);
  assert_int_equal(epode_loop_timer_start(loop, NULL, 0, 0, count_fn, &other), EPODE_OK);
  /* The loop is freed as run() returns; ASan checks nothing leaks or is
   * touched after. The second due timer does not fire. */
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_DEFAULT), EPODE_OK);
  assert_int_equal(n, 1);
  assert_int_equal(other, 0);
  close(p[0]);
  close(p[1]);
}

/* EINTR from epoll_wait is retried: a signal does not end ONCE early. */
static void on_alarm(int sig) { (void)sig; }

static void test_eintr_retried(void **state) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm; /* no SA_RESTART: epoll_wait fails with EINTR */
  sigemptyset(&sa.sa_mask);
  assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
  epode_loop *loop = new_loop();
  int n = 0;
  assert_int_equal(epode_loop_timer_start(loop, NULL, 80, 0, count_fn, &n), EPODE_OK);
  struct itimerval it = {{0, 0}, {0, 20000}};
  assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_ONCE), EPODE_OK);
  assert_int_equal(n, 1);
  epode_loop_free(loop);
  sigaction(SIGALRM, &old, NULL);
}

/* ------------------------------------------------------------------ wakeup */

static void wake_count(epode_loop *loop, void *ud) { (*(int *)ud)++; }

typedef struct wake_arg {
  epode_loop *loop;
  epode_err err; /* cmocka's asserts belong to the main thread */
} wake_arg;

static void *waker(void *arg) {
  wake_arg *w = arg;
  sleep_ms(50);
  w->err = epode_loop_wakeup(w->loop);
  return NULL;
}

static void test_wakeup_from_thread(void **state) {
  epode_loop *loop = new_loop();
  int n = 0;
  epode_loop_set_wakeup_cb(loop, wake_count, &n);
  pthread_t th;
  wake_arg w = {loop, EPODE_ERR_INVAL};
  uint64_t t0 = now_us();
  assert_int_equal(pthread_create(&th, NULL, waker, &w), 0);
  /* Nothing is watched and no timer is set: only the wakeup can end this. */
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_ONCE), EPODE_OK);
  assert_true(now_us() - t0 >= 40000);
  assert_int_equal(n, 1);
  pthread_join(th, NULL);
  assert_int_equal(w.err, EPODE_OK);
  epode_loop_free(loop);
}

static void test_wakeup_coalesces(void **state) {
  epode_loop *loop = new_loop();
  int n = 0;
  for (int i = 0; i < 5; i++)
    assert_int_equal(epode_loop_wakeup(loop), EPODE_OK);
  epode_loop_set_wakeup_cb(loop, wake_count, &n);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_NOWAIT), EPODE_OK);
  assert_int_equal(n, 1);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_NOWAIT), EPODE_OK);
  assert_int_equal(n, 1);
  /* The eventfd alone does not keep DEFAULT running. */
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_DEFAULT), EPODE_OK);
  /* Without a callback a wakeup still ends ONCE. */
  epode_loop_set_wakeup_cb(loop, NULL, NULL);
  assert_int_equal(epode_loop_wakeup(loop), EPODE_OK);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_ONCE), EPODE_OK);
  assert_int_equal(n, 1);
  epode_loop_free(loop);
}

/* ------------------------------------------------------------------ adapters */

typedef struct fake {
  epode__loop_src base;
  int nfd;
  int last_fd;
  unsigned last_ev;
  int ntimeout;
  int ndetach;
  int detach_in_fd;      /* detach itself from on_fd */
  int detach_in_timeout; /* detach itself from on_timeout */
  int64_t rearm;         /* re-request a timer from on_timeout (-2: no) */
  int *detached_flag;
} fake;

static void fake_on_fd(epode__loop_src *src, int fd, unsigned events) {
  fake *f = (fake *)src;
  f->nfd++;
  f->last_fd = fd;
  f->last_ev = events;
  char b[16];
  if (events & EPODE_IO_READ) (void)!read(fd, b, sizeof b);
  if (f->detach_in_fd) epode__loop_src_detach(src);
}

static void fake_on_timeout(epode__loop_src *src) {
  fake *f = (fake *)src;
  f->ntimeout++;
  if (f->rearm != -2) epode__loop_src_timer(f->rearm, src);
  if (f->detach_in_timeout) epode__loop_src_detach(src);
}

static void fake_on_detach(epode__loop_src *src) {
  fake *f = (fake *)src;
  f->ndetach++;
  if (f->detached_flag) (*f->detached_flag)++;
}

static fake *fake_new(epode_loop *loop) {
  fake *f = epode__calloc(epode__loop_mem(loop), sizeof *f);
  assert_non_null(f);
  f->base.key = f;
  f->base.on_fd = fake_on_fd;
  f->base.on_timeout = fake_on_timeout;
  f->base.on_detach = fake_on_detach;
  f->rearm = -2;
  assert_int_equal(epode__loop_src_attach(loop, &f->base), EPODE_OK);
  assert_ptr_equal(epode__loop_src_find(loop, f), &f->base);
  return f;
}

static void test_adapter_fds(void **state) {
  epode_loop *loop = new_loop();
  fake *f = fake_new(loop);
  int p[2], q[2];
  make_pipe(p);
  make_pipe(q);
  /* Several fds at once (like DNS sockets + TCP). */
  epode__loop_src_io(p[0], EPODE_IO_READ, f);
  epode__loop_src_io(q[1], EPODE_IO_WRITE, f);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_NOWAIT), EPODE_OK);
  assert_int_equal(f->nfd, 1);
  assert_int_equal(f->last_fd, q[1]);
  assert_int_equal(f->last_ev, EPODE_IO_WRITE);
  /* The host cannot take over a source's fd, nor unwatch it. */
  fdrec r = {0};
  assert_int_equal(epode_loop_watch(loop, q[1], EPODE_IO_READ, fd_record, &r), EPODE_ERR_STATE);
  assert_int_equal(epode_loop_unwatch(loop, q[1]), EPODE_ERR_NOTFOUND);
  /* Change the events of an fd, then drop it (events 0). */
  epode__loop_src_io(q[1], EPODE_IO_READ, f);
  assert_int_equal(write(p[1], "x", 1), 1);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_ONCE), EPODE_OK);
  assert_int_equal(f->nfd, 2);
  assert_int_equal(f->last_fd, p[0]);
  assert_int_equal(f->last_ev, EPODE_IO_READ);
  epode__loop_src_io(q[1], 0, f);
  epode__loop_src_io(p[0], 0, f);
  epode__loop_src_io(p[0], 0, f); /* twice: harmless */
  assert_int_equal(write(p[1], "x", 1), 1);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_NOWAIT), EPODE_OK);
  assert_int_equal(f->nfd, 2);
  /* Closing before dropping (events 0 after close) is fine. */
  epode__loop_src_io(p[0], EPODE_IO_READ, f);
  close(p[0]);
  epode__loop_src_io(p[0], 0, f);
  /* Hang-up on a source fd reaches it as READ. */
  epode__loop_src_io(q[0], EPODE_IO_READ, f);
  close(q[1]);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_ONCE), EPODE_OK);
  assert_int_equal(f->nfd, 3);
  assert_int_equal(f->last_fd, q[0]);
  assert_true(f->last_ev & EPODE_IO_READ);
  /* Detach inside on_fd: freed after on_fd returns (ASan), fds dropped, so
   * DEFAULT finds nothing left. */
  f->detach_in_fd = 1;
  int detached = 0;
  f->detached_flag = &detached;
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_DEFAULT), EPODE_OK);
  assert_int_equal(detached, 1);
  assert_null(epode__loop_src_find(loop, f));
  close(q[0]);
  close(p[1]);
  epode_loop_free(loop);
}

static void test_adapter_timer(void **state) {
  epode_loop *loop = new_loop();
  fake *f = fake_new(loop);
  /* A later request replaces an earlier one. */
  epode__loop_src_timer(10000, f);
  uint64_t t0 = now_us();
  epode__loop_src_timer(15, f);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_ONCE), EPODE_OK);
  assert_int_equal(f->ntimeout, 1);
  assert_true(now_us() - t0 >= 14000);
  /* -1 cancels. */
  epode__loop_src_timer(0, f);
  epode__loop_src_timer(-1, f);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_NOWAIT), EPODE_OK);
  assert_int_equal(f->ntimeout, 1);
  /* 0: on the next iteration. Re-requesting from process_timeout works. */
  f->rearm = 0;
  epode__loop_src_timer(0, f);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_NOWAIT), EPODE_OK);
  assert_true(f->ntimeout >= 2 && f->ntimeout <= 3);
  int before = f->ntimeout;
  f->rearm = -2;
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_NOWAIT), EPODE_OK);
  assert_int_equal(f->ntimeout, before + 1);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_NOWAIT), EPODE_OK);
  assert_int_equal(f->ntimeout, before + 1);
  /* Detach from inside its own timeout. */
  f->detach_in_timeout = 1;
  int detached = 0;
  f->detached_flag = &detached;
  epode__loop_src_timer(1, f);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_DEFAULT), EPODE_OK);
  assert_int_equal(detached, 1);
  epode_loop_free(loop);
}

static void test_adapter_detached_by_free(void **state) {
  epode_loop *loop = new_loop();
  int detached = 0;
  fake *f = fake_new(loop);
  fake *g = fake_new(loop);
  f->detached_flag = g->detached_flag = &detached;
  int p[2];
  make_pipe(p);
  epode__loop_src_io(p[0], EPODE_IO_READ, f);
  epode__loop_src_timer(1000, g);
  /* A source keeps DEFAULT alive even without fds or timer: a timer stops
   * the run. */
  int stops = 0;
  epode_loop_timer *t = NULL;
  assert_int_equal(epode_loop_timer_start(loop, &t, 1, 1, stop_fn, &stops), EPODE_OK);
  epode__loop_src_timer(-1, g);
  assert_int_equal(epode_loop_run(loop, EPODE_RUN_DEFAULT), EPODE_OK);
  assert_int_equal(stops, 1);
  epode_loop_free(loop); /* detaches and frees both sources */
  assert_int_equal(detached, 2);
  close(p[0]);
  close(p[1]);
}

/* ------------------------------------------------------------------ allocation failure */

/* One scenario that allocates through every path: the loop, timers (heap
 * growth past 16), fd slots (growth past a high fd), a source. Returns the
 * first error, having cleaned up. */
static epode_err scenario(epode_test_failmem *fm) {
  epode_mem mem = fm->mem;
  epode_loop *loop = NULL;
  epode_err err = epode_loop_new(&loop, &mem);
  if (err) {
    assert_null(loop);
    return err;
  }
  int n = 0;
  for (int i = 0; i < 20 && !err; i++)
    err = epode_loop_timer_start(loop, NULL, 0, 0, count_fn, &n);
  int p[2];
  make_pipe(p);
  int hi = fcntl(p[0], F_DUPFD_CLOEXEC, 300);
  assert_true(hi >= 300);
  fdrec r = {0};
  if (!err) err = epode_loop_watch(loop, hi, EPODE_IO_READ, fd_record, &r);
  fake *f = NULL;
  if (!err) {
    f = epode__calloc(epode__loop_mem(loop), sizeof *f);
    if (!f) err = EPODE_ERR_NOMEM;
  }
  if (!err) {
    f->base.key = f;
    f->base.on_fd = fake_on_fd;
    f->base.on_timeout = fake_on_timeout;
    f->rearm = -2;
    err = epode__loop_src_attach(loop, &f->base);
    if (err) epode__free(epode__loop_mem(loop), f);
  }
  if (!err) {
    /* Slot growth from the adapter cannot return its error: run() does. */
    int hi2 = fcntl(p[1], F_DUPFD_CLOEXEC, 900);
    assert_true(hi2 >= 900);
    epode__loop_src_io(hi2, EPODE_IO_WRITE, f);
    err = epode_loop_run(loop, EPODE_RUN_NOWAIT);
    if (!err) assert_int_equal(f->nfd, 1);
    close(hi2);
  }
  if (!err) assert_int_equal(n, 20);
  epode_loop_free(loop);
  close(hi);
  close(p[0]);
  close(p[1]);
  return err;
}

static void test_alloc_failures(void **state) {
  epode_test_failmem fm;
  epode_test_failmem_init(&fm, 0);
  assert_int_equal(scenario(&fm), EPODE_OK);
  assert_int_equal(fm.live, 0);
  long total = fm.calls;
  assert_true(total >= 5);
  for (long i = 0; i < total; i++) {
    epode_test_failmem f;
    epode_test_failmem_init(&f, i + 1); /* i counts from 0 */
    epode_err err = scenario(&f);
    assert_int_equal(err, EPODE_ERR_NOMEM);
    assert_int_equal(f.live, 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_new_free),
      cmocka_unit_test(test_timers_order_and_delay),
      cmocka_unit_test(test_timers_equal_deadline_fifo),
      cmocka_unit_test(test_timer_repeat),
      cmocka_unit_test(test_timer_stop_in_callbacks),
      cmocka_unit_test(test_timer_stop_outside_and_free_pending),
      cmocka_unit_test(test_timer_zero_no_starvation),
      cmocka_unit_test(test_many_timers_heap_order),
      cmocka_unit_test(test_watch_read),
      cmocka_unit_test(test_watch_write_and_change),
      cmocka_unit_test(test_watch_hangup_as_read),
      cmocka_unit_test(test_unwatch_other_in_same_batch),
      cmocka_unit_test(test_run_modes),
      cmocka_unit_test(test_run_not_reentrant),
      cmocka_unit_test(test_free_from_callback),
      cmocka_unit_test(test_eintr_retried),
      cmocka_unit_test(test_wakeup_from_thread),
      cmocka_unit_test(test_wakeup_coalesces),
      cmocka_unit_test(test_adapter_fds),
      cmocka_unit_test(test_adapter_timer),
      cmocka_unit_test(test_adapter_detached_by_free),
      cmocka_unit_test(test_alloc_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
