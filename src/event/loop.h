/* SPDX-License-Identifier: Apache-2.0 */
/* A per-thread event loop: level-triggered epoll, a binary min-heap of timers, and a list of
 * objects to free at the end of the iteration (so nothing is freed inside its own callback).
 * A loop and everything registered on it belong to one thread. */
#ifndef SLB_EVENT_LOOP_H
#define SLB_EVENT_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>

struct slb_loop;
struct slb_io;
struct slb_timer;

typedef void (*slb_io_cb)(struct slb_loop *loop, struct slb_io *io, uint32_t events);
typedef void (*slb_timer_cb)(struct slb_loop *loop, struct slb_timer *t);
typedef void (*slb_free_cb)(void *obj);

/* In slb_io.events: the current iteration's epoll_wait reported this descriptor and its
 * callback has not run yet (see slb_io_pending). Never part of an interest set. */
#define SLB_IO_PENDING (1u << 30)

/* A file descriptor watched by the loop. Embedded in its owner; the owner closes the fd. */
struct slb_io {
    int fd;
    /* EPOLLIN/EPOLLOUT currently registered, 0 = not registered; plus SLB_IO_PENDING */
    uint32_t events;
    slb_io_cb cb;
    void *data;
};

/* A one-shot timer. Embedded in its owner; heap_idx is SIZE_MAX while not armed. */
struct slb_timer {
    uint64_t deadline_ms;
    size_t heap_idx;
    slb_timer_cb cb;
    void *data;
};

struct slb_deferred {
    slb_free_cb fn;
    void *obj;
};

struct slb_loop {
    int epfd;
    bool stop;
    uint64_t now_ms; /* cached at each wake-up */
    struct slb_timer **heap;
    size_t nheap, capheap;
    struct slb_deferred *deferred;
    size_t ndeferred, capdeferred;
};

int slb_loop_init(struct slb_loop *loop);
void slb_loop_deinit(struct slb_loop *loop);
/* Run until slb_loop_stop(); returns 0 or -errno on an epoll failure. */
int slb_loop_run(struct slb_loop *loop);
/* One iteration waiting at most max_wait_ms (-1: until an event or timer). */
int slb_loop_once(struct slb_loop *loop, int max_wait_ms);
void slb_loop_stop(struct slb_loop *loop);
uint64_t slb_loop_now(const struct slb_loop *loop);
void slb_loop_update_time(struct slb_loop *loop);

void slb_io_init(struct slb_io *io, int fd, slb_io_cb cb, void *data);
/* Register or change the interest set (EPOLLIN and/or EPOLLOUT); 0 removes it. */
int slb_io_set(struct slb_loop *loop, struct slb_io *io, uint32_t events);
/* Whether this iteration's epoll_wait reported io and its callback is still to come: its
 * readiness was observed before anything that ran in this iteration so far. */
static inline bool slb_io_pending(const struct slb_io *io)
{
    return io->events & SLB_IO_PENDING;
}
/* The descriptor is about to be closed: closing takes it out of the epoll set (no descriptor
 * of ours is ever duplicated), so the registration is only forgotten, with no epoll_ctl. */
static inline void slb_io_forget(struct slb_io *io)
{
    io->events = 0;
}

void slb_timer_init(struct slb_timer *t, slb_timer_cb cb, void *data);
void slb_timer_start(struct slb_loop *loop, struct slb_timer *t, uint64_t after_ms);
void slb_timer_stop(struct slb_loop *loop, struct slb_timer *t);
static inline bool slb_timer_active(const struct slb_timer *t)
{
    return t->heap_idx != SIZE_MAX;
}

/* Free obj with fn after the current iteration's callbacks have all run. */
void slb_loop_defer_free(struct slb_loop *loop, slb_free_cb fn, void *obj);
/* Call fn(obj) then, in the order of the calls (work gathered from several events, done once;
 * a free deferred later runs after it). */
static inline void slb_loop_defer(struct slb_loop *loop, slb_free_cb fn, void *obj)
{
    slb_loop_defer_free(loop, fn, obj);
}

#endif
