/* SPDX-License-Identifier: Apache-2.0 */
/* Worker threads: snapshot adoption, accepting and draining. What a connection sees of its
 * worker (holds, server choice) is in src/net/worker_ctx.c. */
#include "daemon/worker.h"

#include "core/buf.h"
#include "core/log.h"
#include "http/access.h"
#include "http/proxy.h"
#include "tcp/proxy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPT_BATCH 64

static void accept_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events);
static void paused_cb(struct slb_loop *loop, struct slb_timer *t);

static void listeners_sync(struct slb_worker *w, struct slb_snapshot *old,
                           struct slb_snapshot *snap)
{
    int id = w->id;
    /* Stop watching sockets the new snapshot dropped (marked kept in one pass: 1,000
     * listeners would otherwise be 1,000,000 comparisons per adoption)... */
    static _Thread_local uint64_t mark;
    mark++;
    for (size_t j = 0; snap && j < snap->nlisteners; j++)
        if (snap->listeners[j].sock)
            snap->listeners[j].sock->slot[id].kept_mark = mark;
    for (size_t i = 0; old && i < old->nlisteners; i++) {
        struct slb_lsock *ls = old->listeners[i].sock;
        if (!ls)
            continue; /* stopped */
        if (ls->slot[id].kept_mark != mark) {
            slb_io_set(&w->loop, &ls->slot[id].io, 0);
            slb_timer_stop(&w->loop, &ls->slot[id].pause);
            ls->slot[id].cur = NULL;
        }
    }
    /* ...and point every kept or new socket at its listener in the new snapshot. */
    for (size_t j = 0; snap && j < snap->nlisteners; j++) {
        struct slb_listener_rt *l = &snap->listeners[j];
        if (!l->sock)
            continue;
        struct slb_lsock_slot *slot = &l->sock->slot[id];
        slot->cur = l;
        slot->worker = w;
        if (slot->io.events == 0 && slot->fd >= 0 && !slb_timer_active(&slot->pause)) {
            slb_io_init(&slot->io, slot->fd, accept_cb, slot);
            slot->pause.cb = paused_cb;
            /* At the cap a new socket waits, like the others, for cap_resume. */
            slot->waiting = w->at_cap;
            if (!w->at_cap && slb_io_set(&w->loop, &slot->io, EPOLLIN) < 0)
                slb_error("listener %s: epoll: %s", l->cfg->name, strerror(errno));
        }
    }
}

static void adopt(struct slb_worker *w, struct slb_snapshot *snap)
{
    struct slb_wsnap *ws = slb_wsnap_new(w, snap);
    if (!ws) {
        /* Keep serving the previous snapshot; the control thread times out and reports. */
        slb_error("out of memory adopting configuration %llu",
                  (unsigned long long)snap->generation);
        slb_snapshot_unref(snap);
        return;
    }
    struct slb_wsnap *prev = w->cur;
    listeners_sync(w, prev ? prev->snap : NULL, w->stop_req ? NULL : snap);
    w->cur = ws;
    if (prev) {
        prev->next = w->old;
        w->old = prev;
        slb_worker_release_idle_holds(w);
    }
    for (struct slb_conn_link *c = w->conns.next, *next; prev && c != &w->conns; c = next) {
        next = c->next;
        if (c->reconfigured)
            c->reconfigured(c);
    }
    atomic_store_explicit(&w->adopted_gen, snap->generation, memory_order_release);
}

/* Stop accepting for good: unwatch and close this worker's own listening sockets, so the
 * kernel refuses new connections instead of queueing them for nobody during the drain. */
static void stop_listening(struct slb_worker *w)
{
    if (!w->cur)
        return;
    struct slb_snapshot *snap = w->cur->snap;
    listeners_sync(w, snap, NULL);
    for (size_t i = 0; i < snap->nlisteners; i++) {
        if (!snap->listeners[i].sock)
            continue;
        struct slb_lsock_slot *slot = &snap->listeners[i].sock->slot[w->id];
        if (slot->fd >= 0) {
            close(slot->fd);
            slot->fd = -1;
        }
    }
}

static void wake_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    struct slb_worker *w = io->data;
    uint64_t v;
    ssize_t r = read(w->wake_fd, &v, sizeof(v));
    (void)r;
    struct slb_snapshot *snap = atomic_exchange(&w->pending, NULL);
    if (snap)
        adopt(w, snap);
    if (atomic_load(&w->stop_req) == 1 && w->drain_deadline_ms == 0) {
        stop_listening(w);
        w->drain_deadline_ms = loop->now_ms + w->drain_ms + 1;
        for (struct slb_conn_link *c = w->conns.next, *next; c != &w->conns; c = next) {
            next = c->next;
            if (c->drain)
                c->drain(c);
        }
    }
    uint64_t one = 1;
    r = write(w->ack_fd, &one, sizeof(one));
    (void)r;
}

/* The worker holds its share of the connection cap: stop watching every listening socket, so
 * new clients wait in the kernel's backlog (their SYN was answered: they see a slow accept, not
 * an error) instead of being accepted into a process that has no descriptor for their backend
 * connection. cap_resume undoes it once connections have closed. */
static void cap_pause(struct slb_worker *w)
{
    if (w->at_cap)
        return;
    w->at_cap = true;
    struct slb_snapshot *snap = w->cur->snap;
    for (size_t i = 0; i < snap->nlisteners; i++) {
        if (!snap->listeners[i].sock)
            continue;
        struct slb_lsock_slot *slot = &snap->listeners[i].sock->slot[w->id];
        slb_io_set(&w->loop, &slot->io, 0);
        slot->waiting = true;
    }
    slb_warn_limited("worker %d holds its share of the connection cap (%lu connections): new "
                     "connections wait in the listen backlog",
                     w->id, w->cap);
}

static void cap_resume(struct slb_worker *w)
{
    w->at_cap = false;
    if (!w->cur || w->drain_deadline_ms)
        return;
    struct slb_snapshot *snap = w->cur->snap;
    for (size_t i = 0; i < snap->nlisteners; i++) {
        if (!snap->listeners[i].sock)
            continue;
        struct slb_lsock_slot *slot = &snap->listeners[i].sock->slot[w->id];
        if (slot->cur && slot->fd >= 0 && !slb_timer_active(&slot->pause) &&
            slb_io_set(&w->loop, &slot->io, EPOLLIN) < 0)
            slb_error("listener %s: epoll: %s", slot->cur->cfg->name, strerror(errno));
    }
}

/* Accepting resumes a little below the cap, so that a worker at the boundary does not switch
 * its sockets off and on (two epoll_ctl calls per listener) for every connection. */
static unsigned long cap_resume_level(const struct slb_worker *w)
{
    unsigned long gap = w->cap / 64 ? w->cap / 64 : 1;
    return w->cap > gap ? w->cap - gap : 0;
}

static void accept_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    struct slb_lsock_slot *slot = io->data;
    struct slb_worker *w = slot->worker;
    struct slb_listener_rt *l = slot->cur;
    if (!l)
        return;
    struct slb_lis_rt *st = l->stats;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        if (w->nclients >= w->cap) {
            cap_pause(w);
            return;
        }
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int fd = accept4(slot->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) {
                if (errno == EAGAIN)
                    slot->waiting = false; /* the backlog is empty */
                return;
            }
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors below the cap (the limit was lowered while running, or
                 * something else holds them): stop watching this socket briefly rather than
                 * spin on a level-triggered event we cannot clear. The connection waits in
                 * the backlog and is counted once, when it is finally accepted. */
                slb_warn_limited("listener %s: accept: %s; pausing accepts", l->cfg->name,
                                 strerror(errno));
                slot->waiting = true;
                slb_io_set(loop, io, 0);
                slb_timer_start(loop, &slot->pause, 100);
                return;
            }
            slb_warn_limited("listener %s: accept: %s", l->cfg->name, strerror(errno));
            return;
        }
        if (slot->waiting)
            slb_count_add(&st->w[w->id].v[SLB_LIS_REFUSED_FD], 1);
        if (l->cfg->max_connections) {
            uint64_t active = 0;
            for (int k = 0; k < st->nworkers; k++)
                active += slb_count_get(&st->w[k].v[SLB_LIS_ACTIVE]);
            if (active >= l->cfg->max_connections) {
                slb_count_add(&st->w[w->id].v[SLB_LIS_REFUSED], 1);
                close(fd);
                continue;
            }
        }
        if (l->cfg->connections_per_s &&
            !slb_ratelimit_take(st->conn_rate, w->id, l->cfg->connections_per_s, 1, NULL)) {
            /* Over the rate: a reset, so the client knows at once (a connection left in the
             * backlog would only look slow). */
            slb_count_add(&st->w[w->id].v[SLB_LIS_LIMITED_CONN], 1);
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
            close(fd);
            continue;
        }
        slb_count_add(&st->w[w->id].v[SLB_LIS_CONNS], 1);
        if (l->cfg->protocol == SLB_PROTO_TCP)
            slb_tcp_accept(w, l, fd, &peer, plen);
        else
            slb_http_accept(w, l, fd, &peer, plen);
    }
}

static void paused_cb(struct slb_loop *loop, struct slb_timer *t)
{
    struct slb_lsock_slot *slot = t->data;
    if (slot->cur && slot->fd >= 0 && !slot->worker->at_cap)
        slb_io_set(loop, &slot->io, EPOLLIN);
}

static void *worker_main(void *arg)
{
    struct slb_worker *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "w%d", w->id);
    slb_log_thread_name(name);
    while (!w->loop.stop) {
        int wait = -1;
        if (w->drain_deadline_ms)
            wait = 100;
        slb_loop_once(&w->loop, wait);
        slb_access_flush(w);
        if (w->at_cap && w->nclients <= cap_resume_level(w))
            cap_resume(w);
        if (w->drain_deadline_ms) {
            if (w->nconns == 0 || w->loop.now_ms >= w->drain_deadline_ms)
                break;
        }
    }
    if (w->nconns)
        slb_warn("drain timeout: closing %lu connections", w->nconns);
    while (w->conns.next != &w->conns)
        w->conns.next->abort(w->conns.next);
    slb_http_worker_free(w);
    slb_access_thread_exit(w);
    slb_block_cache_drain();
    slb_tcp_thread_exit();
    atomic_store(&w->exited, 1);
    return NULL;
}

unsigned long slb_conn_cap(unsigned long *nofile, unsigned long *reserve)
{
    struct rlimit rl;
    unsigned long n = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        n = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1ul << 30) ? 1ul << 30
                                                                      : (unsigned long)rl.rlim_cur;
    unsigned long r = n / 20 > 64 ? n / 20 : 64;
    if (nofile)
        *nofile = n;
    if (reserve)
        *reserve = r;
    return n > r + 2 ? (n - r) / 2 : 1;
}

int slb_worker_start(struct slb_worker *w, int id, int ack_fd, unsigned long cap)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->cap = cap ? cap : 1;
    w->ack_fd = ack_fd;
    w->conns.next = w->conns.prev = &w->conns;
    int rc = slb_loop_init(&w->loop);
    if (rc < 0)
        return rc;
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->wake_fd < 0)
        return -errno;
    slb_io_init(&w->wake_io, w->wake_fd, wake_cb, w);
    rc = slb_io_set(&w->loop, &w->wake_io, EPOLLIN);
    if (rc < 0)
        return rc;
    rc = pthread_create(&w->thread, NULL, worker_main, w);
    return rc ? -rc : 0;
}

static void wake(struct slb_worker *w)
{
    uint64_t one = 1;
    ssize_t r = write(w->wake_fd, &one, sizeof(one));
    (void)r;
}

void slb_worker_post(struct slb_worker *w, struct slb_snapshot *snap)
{
    slb_snapshot_ref(snap);
    struct slb_snapshot *prev = atomic_exchange(&w->pending, snap);
    if (prev)
        slb_snapshot_unref(prev); /* never adopted: superseded */
    wake(w);
}

void slb_worker_request_stop(struct slb_worker *w, uint64_t drain_ms, bool gentle)
{
    w->drain_ms = drain_ms;
    w->gentle_drain = gentle;
    atomic_store(&w->stop_req, 1);
    wake(w);
}

void slb_worker_join(struct slb_worker *w)
{
    pthread_join(w->thread, NULL);
    struct slb_snapshot *p = atomic_exchange(&w->pending, NULL);
    if (p)
        slb_snapshot_unref(p);
    while (w->old) {
        struct slb_wsnap *ws = w->old;
        w->old = ws->next;
        slb_wsnap_free(ws);
    }
    slb_wsnap_free(w->cur);
    w->cur = NULL;
    slb_loop_deinit(&w->loop);
    close(w->wake_fd);
}
