/* The built-in epoll loop (L3).
 *
 * Three kinds of things wake the loop: file descriptors (the host's, and
 * those of attached connections), timers, and the wakeup eventfd.
 *
 * File descriptors live in a table indexed by fd number. epoll carries
 * (generation << 32 | fd) rather than a pointer, and a slot gets a fresh
 * generation whenever it is registered anew. Dispatch looks the slot up again
 * for every event and skips it when the generation no longer matches, so a
 * callback may unwatch (or close and reuse) any fd, including one whose event
 * is still waiting later in the same epoll_wait batch, without the loop
 * touching freed memory or calling the wrong owner.
 *
 * Timers sit in a binary min-heap keyed by (deadline, arming order). The heap
 * array always has room for every timer object that exists, so arming never
 * allocates and cannot fail — which matters because a connection's timer
 * request arrives through a callback that cannot return an error.
 *
 * A timer armed during a timer pass never fires in that same pass (its epoch
 * is the pass's), so a callback that re-arms itself with delay 0 cannot
 * starve the loop. */
#include "loop/loop_int.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "util/alloc.h"

#define MAX_EVENTS 64
/* Longest single epoll_wait, in ms. */
#define MAX_WAIT_MS 0x7fffffff

typedef struct fd_slot {
  uint32_t gen; /* 0: slot free */
  unsigned events;
  epode_loop_fd_fn fn;  /* host watch */
  void *ud;             /* host watch */
  epode__loop_src *src; /* connection fd (fn is NULL) */
} fd_slot;

struct epode_loop {
  epode_mem mem;
  int epfd;
  int wakefd;

  fd_slot *slots;
  size_t nslots;
  size_t nwatch; /* host watches (sources' fds are counted through nsrcs) */
  uint32_t gen;

  epode_loop_timer **heap;
  size_t nheap;
  size_t capheap;
  size_t ntimers; /* timer objects in existence: the heap never needs more room */
  uint64_t seq;
  uint64_t epoch;

  epode__loop_src *srcs;
  size_t nsrcs;

  epode_loop_wakeup_fn wake_fn;
  void *wake_ud;

  uint64_t now;
  epode_err pending_err; /* from a source's io adapter; run() reports it */
  unsigned char running;
  unsigned char stop;
  unsigned char free_pending;
};

static uint64_t clock_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

const epode_mem *epode__loop_mem(const epode_loop *loop) { return &loop->mem; }

uint64_t epode_loop_now(const epode_loop *loop) { return loop ? loop->now : 0; }

/* ------------------------------------------------------------------ heap */

static int timer_before(const epode_loop_timer *a, const epode_loop_timer *b) {
  return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void heap_place(epode_loop *loop, size_t i, epode_loop_timer *t) {
  loop->heap[i] = t;
  t->idx = i;
}

static void heap_up(epode_loop *loop, size_t i) {
  epode_loop_timer *t = loop->heap[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!timer_before(t, loop->heap[p])) break;
    heap_place(loop, i, loop->heap[p]);
    i = p;
  }
  heap_place(loop, i, t);
}

static void heap_down(epode_loop *loop, size_t i) {
  epode_loop_timer *t = loop->heap[i];
  for (;;) {
    size_t l = 2 * i + 1, m = i;
    const epode_loop_timer *best = t;
    if (l < loop->nheap && timer_before(loop->heap[l], best)) m = l, best = loop->heap[l];
    if (l + 1 < loop->nheap && timer_before(loop->heap[l + 1], best)) m = l + 1;
    if (m == i) break;
    heap_place(loop, i, loop->heap[m]);
    i = m;
  }
  heap_place(loop, i, t);
}

static void heap_remove(epode_loop *loop, epode_loop_timer *t) {
  size_t i = t->idx;
  if (i == EPODE__LOOP_NOIDX) return;
  t->idx = EPODE__LOOP_NOIDX;
  epode_loop_timer *last = loop->heap[--loop->nheap];
  if (last == t) return;
  heap_place(loop, i, last);
  heap_up(loop, i);
  heap_down(loop, last->idx);
}

/* Makes room for one more timer object; arming then cannot fail. */
static epode_err timers_reserve(epode_loop *loop) {
  if (loop->ntimers + 1 > loop->capheap) {
    size_t cap = loop->capheap ? loop->capheap * 2 : 16;
    epode_loop_timer **h = epode__realloc(&loop->mem, loop->heap, cap * sizeof *h);
    if (!h) return EPODE_ERR_NOMEM;
    loop->heap = h;
    loop->capheap = cap;
  }
  loop->ntimers++;
  return EPODE_OK;
}

static void timer_disarm(epode_loop *loop, epode_loop_timer *t) { heap_remove(loop, t); }

static void timer_arm(epode_loop *loop, epode_loop_timer *t, uint64_t delay_ms) {
  timer_disarm(loop, t);
  /* Count from the moment of arming, not from the cached iteration time, so
   * a timer armed late in a long iteration does not fire early. */
  uint64_t now = clock_ms();
  t->when = delay_ms > UINT64_MAX - now ? UINT64_MAX : now + delay_ms;
  t->seq = loop->seq++;
  t->epoch = loop->epoch;
  loop->heap[loop->nheap++] = t; /* room guaranteed by timers_reserve */
  heap_up(loop, loop->nheap - 1);
}

static void timer_destroy(epode_loop *loop, epode_loop_timer *t) {
  loop->ntimers--;
  epode__free(&loop->mem, t);
}

epode_err epode_loop_timer_start(epode_loop *loop, epode_loop_timer **out, uint64_t delay_ms,
                                 uint64_t repeat_ms, epode_loop_timer_fn fn, void *ud) {
  if (out) *out = NULL;
  if (!loop || !fn) return EPODE_ERR_INVAL;
  epode_loop_timer *t = epode__calloc(&loop->mem, sizeof *t);
  if (!t) return EPODE_ERR_NOMEM;
  epode_err err = timers_reserve(loop);
  if (err) {
    epode__free(&loop->mem, t);
    return err;
  }
  t->fn = fn;
  t->ud = ud;
  t->repeat = repeat_ms;
  t->owned = 1;
  t->idx = EPODE__LOOP_NOIDX;
  timer_arm(loop, t, delay_ms);
  if (out) *out = t;
  return EPODE_OK;
}

void epode_loop_timer_stop(epode_loop *loop, epode_loop_timer *t) {
  if (!loop || !t || !t->owned) return;
  if (t->running) {
    /* Inside its own callback: the pass that called it frees it afterwards. */
    t->cancelled = 1;
    return;
  }
  timer_disarm(loop, t);
  timer_destroy(loop, t);
}

/* Fires every timer due at loop->now that was armed before this pass.
 * Returns how many callbacks ran. */
static unsigned run_timers(epode_loop *loop) {
  unsigned fired = 0;
  uint64_t epoch = ++loop->epoch;
  while (loop->nheap > 0 && !loop->free_pending) {
    epode_loop_timer *t = loop->heap[0];
    /* Everything armed in this pass sorts after every timer that is due and
     * older (its deadline is >= now and its seq larger), so stopping here
     * skips nothing that should fire. */
    if (t->when > loop->now || t->epoch == epoch) break;
    heap_remove(loop, t);
    fired++;
    if (!t->owned) {
      /* A source's embedded timer: its owner may be freed by the callback,
       * so `t` is not touched afterwards. */
      t->fn(loop, t->ud);
      continue;
    }
    t->running = 1;
    t->cancelled = 0;
    int keep = t->fn(loop, t->ud);
    t->running = 0;
    if (keep && t->repeat && !t->cancelled && !loop->free_pending)
      timer_arm(loop, t, t->repeat);
    else
      timer_destroy(loop, t);
  }
  return fired;
}

/* ------------------------------------------------------------------ fds */

static uint32_t next_gen(epode_loop *loop) {
  if (++loop->gen == 0) loop->gen = 1; /* 0 marks a free slot and the eventfd */
  return loop->gen;
}

static epode_err slots_reserve(epode_loop *loop, int fd) {
  if ((size_t)fd < loop->nslots) return EPODE_OK;
  size_t n = loop->nslots ? loop->nslots : 64;
  while (n <= (size_t)fd)
    n *= 2;
  fd_slot *s = epode__realloc(&loop->mem, loop->slots, n * sizeof *s);
  if (!s) return EPODE_ERR_NOMEM;
  memset(s + loop->nslots, 0, (n - loop->nslots) * sizeof *s);
  loop->slots = s;
  loop->nslots = n;
  return EPODE_OK;
}

static uint32_t to_epoll(unsigned events) {
  uint32_t e = 0;
  if (events & EPODE_IO_READ) e |= EPOLLIN;
  if (events & EPODE_IO_WRITE) e |= EPOLLOUT;
  return e;
}

/* Registers `fd` (was_registered: the slot already had it) with the new
 * events under generation `gen`. Falls back between ADD and MOD because the
 * kernel silently drops a registration when the fd is closed, and a new fd
 * may then reuse the number. */
static epode_err ctl_set(epode_loop *loop, int fd, unsigned events, uint32_t gen,
                         int was_registered) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = to_epoll(events);
  ev.data.u64 = (uint64_t)gen << 32 | (uint32_t)fd;
  int op = was_registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  if (epoll_ctl(loop->epfd, op, fd, &ev) == 0) return EPODE_OK;
  if (op == EPOLL_CTL_MOD && errno == ENOENT) {
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) == 0) return EPODE_OK;
  } else if (op == EPOLL_CTL_ADD && errno == EEXIST) {
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) == 0) return EPODE_OK;
  }
  return errno == EBADF || errno == EPERM ? EPODE_ERR_INVAL : EPODE_ERR_SYS;
}

static void ctl_del(epode_loop *loop, int fd) {
  /* ENOENT/EBADF are expected: the fd may already be closed. */
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  (void)epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, &ev);
}

static void slot_clear(epode_loop *loop, int fd) {
  fd_slot *s = &loop->slots[fd];
  if (s->gen && !s->src) loop->nwatch--;
  memset(s, 0, sizeof *s);
}

epode_err epode_loop_watch(epode_loop *loop, int fd, unsigned events, epode_loop_fd_fn fn,
                           void *ud) {
  if (!loop || fd < 0 || !fn || events == 0 || (events & ~(EPODE_IO_READ | EPODE_IO_WRITE)))
    return EPODE_ERR_INVAL;
  if (fd == loop->epfd || fd == loop->wakefd) return EPODE_ERR_INVAL;
  epode_err err = slots_reserve(loop, fd);
  if (err) return err;
  fd_slot *s = &loop->slots[fd];
  if (s->gen && s->src) return EPODE_ERR_STATE; /* a connection's fd */
  int had = s->gen != 0;
  uint32_t gen = had ? s->gen : next_gen(loop);
  err = ctl_set(loop, fd, events, gen, had);
  if (err) return err;
  if (!had) loop->nwatch++;
  s->gen = gen;
  s->events = events;
  s->fn = fn;
  s->ud = ud;
  s->src = NULL;
  return EPODE_OK;
}

epode_err epode_loop_unwatch(epode_loop *loop, int fd) {
  if (!loop || fd < 0) return EPODE_ERR_INVAL;
  if ((size_t)fd >= loop->nslots || !loop->slots[fd].gen || loop->slots[fd].src)
    return EPODE_ERR_NOTFOUND;
  ctl_del(loop, fd);
  slot_clear(loop, fd);
  return EPODE_OK;
}

/* ------------------------------------------------------------------ sources */

static void record_error(epode_loop *loop, epode_err err) {
  if (!loop->pending_err) loop->pending_err = err;
}

static void src_release(epode__loop_src *src) {
  if (src->dead && src->busy == 0) epode__free(&src->loop->mem, src);
}

static int src_timer_fire(epode_loop *loop, void *ud) {
  epode__loop_src *src = ud;
  src->busy++;
  src->on_timeout(src);
  src->busy--;
  src_release(src);
  return 0;
}

void epode__loop_src_io(int fd, unsigned events, void *ud) {
  epode__loop_src *src = ud;
  if (!src || !src->attached || fd < 0) return;
  epode_loop *loop = src->loop;
  events &= EPODE_IO_READ | EPODE_IO_WRITE;
  if (events == 0) {
    /* Only drop what this source registered. */
    if ((size_t)fd < loop->nslots && loop->slots[fd].gen && loop->slots[fd].src == src) {
      ctl_del(loop, fd);
      slot_clear(loop, fd);
    }
    return;
  }
  epode_err err = slots_reserve(loop, fd);
  if (err) {
    record_error(loop, err);
    return;
  }
  fd_slot *s = &loop->slots[fd];
  /* The connection just got this fd from the kernel, so it is the owner; any
   * other holder of the slot had its fd closed without telling us. */
  int mine = s->gen && s->src == src;
  uint32_t gen = mine ? s->gen : next_gen(loop);
  err = ctl_set(loop, fd, events, gen, s->gen != 0);
  if (err) {
    record_error(loop, err);
    return;
  }
  if (s->gen && !s->src) loop->nwatch--;
  s->gen = gen;
  s->events = events;
  s->fn = NULL;
  s->ud = NULL;
  s->src = src;
}

void epode__loop_src_timer(int64_t timeout_ms, void *ud) {
  epode__loop_src *src = ud;
  if (!src || !src->attached) return;
  if (timeout_ms < 0)
    timer_disarm(src->loop, &src->timer);
  else
    timer_arm(src->loop, &src->timer, (uint64_t)timeout_ms);
}

epode_err epode__loop_src_attach(epode_loop *loop, epode__loop_src *src) {
  if (!loop || !src || !src->on_fd || !src->on_timeout) return EPODE_ERR_INVAL;
  epode_err err = timers_reserve(loop);
  if (err) return err;
  src->loop = loop;
  src->timer.fn = src_timer_fire;
  src->timer.ud = src;
  src->timer.idx = EPODE__LOOP_NOIDX;
  src->timer.owned = 0;
  src->attached = 1;
  src->prev = NULL;
  src->next = loop->srcs;
  if (loop->srcs) loop->srcs->prev = src;
  loop->srcs = src;
  loop->nsrcs++;
  return EPODE_OK;
}

void epode__loop_src_detach(epode__loop_src *src) {
  if (!src || !src->attached) return;
  epode_loop *loop = src->loop;
  /* on_detach first, while the adapters still work: a connection may report
   * fds it drops as it uninstalls its callbacks. */
  if (src->on_detach) src->on_detach(src);
  src->attached = 0;
  for (size_t fd = 0; fd < loop->nslots; fd++) {
    if (loop->slots[fd].gen && loop->slots[fd].src == src) {
      ctl_del(loop, (int)fd);
      slot_clear(loop, (int)fd);
    }
  }
  timer_disarm(loop, &src->timer);
  loop->ntimers--;
  if (src->prev)
    src->prev->next = src->next;
  else
    loop->srcs = src->next;
  if (src->next) src->next->prev = src->prev;
  src->prev = src->next = NULL;
  loop->nsrcs--;
  src->dead = 1;
  src_release(src);
}

epode__loop_src *epode__loop_src_find(epode_loop *loop, const void *key) {
  if (!loop) return NULL;
  for (epode__loop_src *s = loop->srcs; s; s = s->next)
    if (s->key == key) return s;
  return NULL;
}

/* ------------------------------------------------------------------ loop */

epode_err epode_loop_new(epode_loop **out, const epode_mem *mem) {
  if (!out) return EPODE_ERR_INVAL;
  *out = NULL;
  const epode_mem *m = epode__mem_or_default(mem);
  epode_loop *loop = epode__calloc(m, sizeof *loop);
  if (!loop) return EPODE_ERR_NOMEM;
  loop->mem = *m;
  loop->epfd = epoll_create1(EPOLL_CLOEXEC);
  loop->wakefd = -1;
  if (loop->epfd < 0) goto sys;
  loop->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (loop->wakefd < 0) goto sys;
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN;
  ev.data.u64 = (uint32_t)loop->wakefd; /* generation 0: the eventfd */
  if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wakefd, &ev) != 0) goto sys;
  loop->now = clock_ms();
  *out = loop;
  return EPODE_OK;
sys:
  if (loop->wakefd >= 0) close(loop->wakefd);
  if (loop->epfd >= 0) close(loop->epfd);
  epode__free(m, loop);
  return EPODE_ERR_SYS;
}

static void loop_destroy(epode_loop *loop) {
  while (loop->srcs)
    epode__loop_src_detach(loop->srcs);
  while (loop->nheap > 0) {
    epode_loop_timer *t = loop->heap[0];
    heap_remove(loop, t);
    if (t->owned) timer_destroy(loop, t);
  }
  close(loop->wakefd);
  close(loop->epfd);
  epode__free(&loop->mem, loop->heap);
  epode__free(&loop->mem, loop->slots);
  epode_mem mem = loop->mem;
  epode__free(&mem, loop);
}

void epode_loop_free(epode_loop *loop) {
  if (!loop) return;
  if (loop->running) {
    /* From a callback: finish unwinding first; run() frees on its way out. */
    loop->free_pending = 1;
    return;
  }
  loop_destroy(loop);
}

void epode_loop_stop(epode_loop *loop) {
  if (loop) loop->stop = 1;
}

epode_err epode_loop_wakeup(epode_loop *loop) {
  if (!loop) return EPODE_ERR_INVAL;
  uint64_t one = 1;
  for (;;) {
    if (write(loop->wakefd, &one, sizeof one) == (ssize_t)sizeof one) return EPODE_OK;
    if (errno == EINTR) continue;
    /* EAGAIN: the counter is saturated, so a wakeup is already pending. */
    return errno == EAGAIN ? EPODE_OK : EPODE_ERR_SYS;
  }
}

void epode_loop_set_wakeup_cb(epode_loop *loop, epode_loop_wakeup_fn fn, void *ud) {
  if (!loop) return;
  loop->wake_fn = fn;
  loop->wake_ud = ud;
}

static void handle_wakeup(epode_loop *loop) {
  uint64_t n;
  /* One read drains every write since the last one: wakeups coalesce. */
  ssize_t r;
  do
    r = read(loop->wakefd, &n, sizeof n);
  while (r < 0 && errno == EINTR);
  if (r == (ssize_t)sizeof n && loop->wake_fn) loop->wake_fn(loop, loop->wake_ud);
}

static void dispatch(epode_loop *loop, const struct epoll_event *evs, int n) {
  for (int i = 0; i < n && !loop->free_pending; i++) {
    int fd = (int)(uint32_t)evs[i].data.u64;
    uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
    if (gen == 0) {
      handle_wakeup(loop);
      continue;
    }
    /* Look the slot up afresh: earlier callbacks may have changed it (and
     * moved the table). */
    if ((size_t)fd >= loop->nslots || loop->slots[fd].gen != gen) continue;
    fd_slot *s = &loop->slots[fd];
    unsigned events = 0;
    if (evs[i].events & EPOLLIN) events |= EPODE_IO_READ;
    if (evs[i].events & EPOLLOUT) events |= EPODE_IO_WRITE;
    /* Hang-up and error: let the owner's read see EOF or the error, and its
     * write (if it waits to write) see EPIPE or the failed connect. */
    if (evs[i].events & (EPOLLHUP | EPOLLERR)) events |= EPODE_IO_READ | EPODE_IO_WRITE;
    events &= s->events | EPODE_IO_READ;
    if (!events) continue;
    if (s->src) {
      epode__loop_src *src = s->src;
      src->busy++;
      src->on_fd(src, fd, events);
      src->busy--;
      src_release(src);
    } else {
      s->fn(loop, fd, events, s->ud);
    }
  }
}

static int alive(const epode_loop *loop) {
  return loop->nwatch > 0 || loop->nsrcs > 0 || loop->nheap > 0;
}

static int poll_timeout(const epode_loop *loop) {
  if (loop->nheap == 0) return -1;
  const epode_loop_timer *t = loop->heap[0];
  if (t->when <= loop->now) return 0;
  uint64_t d = t->when - loop->now;
  return d > MAX_WAIT_MS ? MAX_WAIT_MS : (int)d;
}

epode_err epode_loop_run(epode_loop *loop, epode_run_mode mode) {
  if (!loop || (mode != EPODE_RUN_DEFAULT && mode != EPODE_RUN_ONCE && mode != EPODE_RUN_NOWAIT))
    return EPODE_ERR_INVAL;
  if (loop->running) return EPODE_ERR_STATE;
  loop->running = 1;
  epode_err err = EPODE_OK;
  struct epoll_event evs[MAX_EVENTS];
  for (;;) {
    loop->now = clock_ms();
    unsigned fired = run_timers(loop);
    if (mode == EPODE_RUN_DEFAULT && !alive(loop) && !loop->stop) break;

    int n;
    for (;;) {
      int timeout;
      if (mode == EPODE_RUN_NOWAIT || loop->stop || loop->free_pending || loop->pending_err ||
          (mode == EPODE_RUN_ONCE && fired))
        timeout = 0;
      else
        timeout = poll_timeout(loop);
      n = epoll_wait(loop->epfd, evs, MAX_EVENTS, timeout);
      if (n >= 0 || errno != EINTR) break;
      loop->now = clock_ms(); /* interrupted: recompute the remaining wait */
    }
    if (n < 0) {
      err = EPODE_ERR_SYS;
      break;
    }
    loop->now = clock_ms();
    dispatch(loop, evs, n);
    run_timers(loop);
    if (loop->stop || loop->free_pending || loop->pending_err || mode != EPODE_RUN_DEFAULT) break;
  }
  if (!err && loop->pending_err) err = loop->pending_err;
  loop->pending_err = EPODE_OK;
  loop->stop = 0;
  loop->running = 0;
  if (loop->free_pending) loop_destroy(loop);
  return err;
}
