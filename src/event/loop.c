/* SPDX-License-Identifier: Apache-2.0 */
/* The epoll loop. Level-triggered: a callback that stops reading early (a full buffer, a peer
 * that cannot take more) is simply called again while the condition lasts, so no callback
 * has to drain a socket to EAGAIN and fairness between connections comes for free. */
#include "event/loop.h"

#include "core/err.h"
#include "core/log.h"
#include "core/time.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOOP_MAX_EVENTS 256

int slb_loop_init(struct slb_loop *loop)
{
    memset(loop, 0, sizeof(*loop));
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0)
        return -errno;
    loop->now_ms = slb_mono_ms();
    return 0;
}

static void run_deferred(struct slb_loop *loop)
{
    /* A free may defer another free; loop until the list stays empty. */
    while (loop->ndeferred > 0) {
        size_t n = loop->ndeferred;
        struct slb_deferred *d = loop->deferred;
        loop->deferred = NULL;
        loop->ndeferred = loop->capdeferred = 0;
        for (size_t i = 0; i < n; i++)
            d[i].fn(d[i].obj);
        free(d);
    }
}

void slb_loop_deinit(struct slb_loop *loop)
{
    run_deferred(loop);
    if (loop->epfd >= 0)
        close(loop->epfd);
    free(loop->heap);
    loop->heap = NULL;
    loop->epfd = -1;
}

uint64_t slb_loop_now(const struct slb_loop *loop)
{
    return loop->now_ms;
}

void slb_loop_update_time(struct slb_loop *loop)
{
    loop->now_ms = slb_mono_ms();
}

void slb_loop_stop(struct slb_loop *loop)
{
    loop->stop = true;
}

void slb_io_init(struct slb_io *io, int fd, slb_io_cb cb, void *data)
{
    io->fd = fd;
    io->events = 0;
    io->cb = cb;
    io->data = data;
}

int slb_io_set(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    events &= ~SLB_IO_PENDING;
    uint32_t cur = io->events & ~SLB_IO_PENDING;
    if (events == cur)
        return 0;
    int op;
    struct epoll_event ev = {.events = events, .data.ptr = io};
    if (events == 0)
        op = EPOLL_CTL_DEL;
    else if (cur == 0)
        op = EPOLL_CTL_ADD;
    else
        op = EPOLL_CTL_MOD;
    if (epoll_ctl(loop->epfd, op, io->fd, &ev) < 0)
        return -errno;
    /* Unregistered, its pending event is dropped (below); still registered, it stays due. */
    io->events = events ? events | (io->events & SLB_IO_PENDING) : 0;
    return 0;
}

/* --- timers: binary min-heap keyed by deadline --- */

static void heap_swap(struct slb_loop *loop, size_t a, size_t b)
{
    struct slb_timer *t = loop->heap[a];
    loop->heap[a] = loop->heap[b];
    loop->heap[b] = t;
    loop->heap[a]->heap_idx = a;
    loop->heap[b]->heap_idx = b;
}

static void heap_up(struct slb_loop *loop, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (loop->heap[p]->deadline_ms <= loop->heap[i]->deadline_ms)
            break;
        heap_swap(loop, i, p);
        i = p;
    }
}

static void heap_down(struct slb_loop *loop, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < loop->nheap && loop->heap[l]->deadline_ms < loop->heap[m]->deadline_ms)
            m = l;
        if (r < loop->nheap && loop->heap[r]->deadline_ms < loop->heap[m]->deadline_ms)
            m = r;
        if (m == i)
            return;
        heap_swap(loop, i, m);
        i = m;
    }
}

void slb_timer_init(struct slb_timer *t, slb_timer_cb cb, void *data)
{
    t->deadline_ms = 0;
    t->heap_idx = SIZE_MAX;
    t->cb = cb;
    t->data = data;
}

void slb_timer_stop(struct slb_loop *loop, struct slb_timer *t)
{
    size_t i = t->heap_idx;
    if (i == SIZE_MAX)
        return;
    t->heap_idx = SIZE_MAX;
    loop->nheap--;
    if (i == loop->nheap)
        return;
    loop->heap[i] = loop->heap[loop->nheap];
    loop->heap[i]->heap_idx = i;
    heap_up(loop, i);
    heap_down(loop, loop->heap[i]->heap_idx);
}

void slb_timer_start(struct slb_loop *loop, struct slb_timer *t, uint64_t after_ms)
{
    uint64_t deadline = loop->now_ms + after_ms;
    if (t->heap_idx != SIZE_MAX) {
        /* Re-arming an armed timer is the common case (idle timeouts): adjust in place. */
        uint64_t old = t->deadline_ms;
        t->deadline_ms = deadline;
        if (deadline < old)
            heap_up(loop, t->heap_idx);
        else if (deadline > old)
            heap_down(loop, t->heap_idx);
        return;
    }
    if (loop->nheap == loop->capheap) {
        size_t cap = loop->capheap ? loop->capheap * 2 : 64;
        struct slb_timer **h = realloc(loop->heap, cap * sizeof(*h));
        if (!h) {
            /* Without memory a timer cannot be armed; log once per failure, the caller's
             * connection then lives without a timeout rather than crashing the worker. */
            slb_error("timer heap growth failed");
            return;
        }
        loop->heap = h;
        loop->capheap = cap;
    }
    t->deadline_ms = deadline;
    t->heap_idx = loop->nheap;
    loop->heap[loop->nheap++] = t;
    heap_up(loop, t->heap_idx);
}

static void run_timers(struct slb_loop *loop)
{
    while (loop->nheap > 0 && loop->heap[0]->deadline_ms <= loop->now_ms) {
        struct slb_timer *t = loop->heap[0];
        slb_timer_stop(loop, t);
        t->cb(loop, t);
    }
}

void slb_loop_defer_free(struct slb_loop *loop, slb_free_cb fn, void *obj)
{
    if (loop->ndeferred == loop->capdeferred) {
        size_t cap = loop->capdeferred ? loop->capdeferred * 2 : 32;
        struct slb_deferred *d = realloc(loop->deferred, cap * sizeof(*d));
        if (!d) {
            /* Freeing now is the lesser evil than leaking: callers defer only objects that
             * are already unlinked from every list. */
            fn(obj);
            return;
        }
        loop->deferred = d;
        loop->capdeferred = cap;
    }
    loop->deferred[loop->ndeferred].fn = fn;
    loop->deferred[loop->ndeferred].obj = obj;
    loop->ndeferred++;
}

int slb_loop_once(struct slb_loop *loop, int max_wait_ms)
{
    struct epoll_event evs[LOOP_MAX_EVENTS];
    int wait = max_wait_ms;
    if (loop->nheap > 0) {
        uint64_t d = loop->heap[0]->deadline_ms;
        int until = d <= loop->now_ms ? 0 : (int)(d - loop->now_ms);
        if (wait < 0 || until < wait)
            wait = until;
    }
    int n = epoll_wait(loop->epfd, evs, LOOP_MAX_EVENTS, wait);
    if (n < 0 && errno != EINTR)
        return -errno;
    loop->now_ms = slb_mono_ms();
    /* Mark every descriptor of the batch first, so that a callback can tell that another one
     * was already readable before it ran (slb_io_pending). Every io here is registered and
     * allocated: a closed descriptor left the epoll set. */
    for (int i = 0; i < n; i++)
        ((struct slb_io *)evs[i].data.ptr)->events |= SLB_IO_PENDING;
    for (int i = 0; i < n; i++) {
        struct slb_io *io = evs[i].data.ptr;
        /* An earlier callback in this batch may have unregistered io (it is then still
         * allocated: frees are deferred), so skip it rather than call into a closed object. */
        io->events &= ~SLB_IO_PENDING;
        if (io->events == 0)
            continue;
        io->cb(loop, io, evs[i].events);
    }
    run_timers(loop);
    run_deferred(loop);
    return 0;
}

int slb_loop_run(struct slb_loop *loop)
{
    while (!loop->stop) {
        int rc = slb_loop_once(loop, -1);
        if (rc < 0)
            return rc;
    }
    return 0;
}
