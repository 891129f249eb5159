/* SPDX-License-Identifier: Apache-2.0 */
/* Backend connections of the HTTP proxy and the per-worker keep-alive pool. */
#include "http/upstream.h"

#include "core/err.h"
#include "core/log.h"
#include "core/time.h"
#include "http/route.h"
#include "lb/sched.h"
#include "tcp/proxy.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static uint64_t addr_key(const struct sockaddr_storage *a, socklen_t len)
{
    return slb_hash64(a, len, 0x706f6f6cu);
}

struct slb_http_worker *slb_http_worker_get(struct slb_worker *w)
{
    if (!w->http) {
        struct slb_http_worker *hw = calloc(1, sizeof(*hw));
        if (!hw)
            return NULL;
        hw->w = w;
        w->http = hw;
    }
    return w->http;
}

static void pool_unlink(struct http_up *up)
{
    struct slb_http_worker *hw = up->hw;
    if (up->prev)
        up->prev->next = up->next;
    else
        hw->buckets[up->key % SLB_POOL_BUCKETS] = up->next;
    if (up->next)
        up->next->prev = up->prev;
    up->next = up->prev = NULL;
    hw->npooled--;
    up->pooled = false;
    slb_timer_stop(&hw->w->loop, &up->idle);
}

static void up_free(void *p)
{
    struct http_up *up = p;
    slb_buf_release(&up->in);
    slb_hbuf_free(&up->head);
    free(up);
}

/* The request on up is over: its server's active count goes back, its bytes are counted. */
static void count_end(struct http_up *up)
{
    struct slb_srv_rt *srv = up->srv;
    if (!srv)
        return;
    struct slb_wcount *wc = &srv->w[up->hw->w->id];
    /* This worker's line only moves here: zero would mean a request released twice. */
    assert(slb_count_get(&wc->v[SLB_SRV_ACTIVE]) > 0);
    slb_count_add(&wc->v[SLB_SRV_ACTIVE], (uint64_t)-1);
    slb_count_add(&wc->v[SLB_SRV_BYTES_TO], up->bytes_to);
    slb_count_add(&wc->v[SLB_SRV_BYTES_FROM], up->bytes_from);
    up->srv = NULL;
}

void slb_up_count_start(struct http_up *up, struct slb_srv_rt *srv)
{
    assert(!up->srv);
    struct slb_wcount *wc = &srv->w[up->hw->w->id];
    slb_count_add(&wc->v[SLB_SRV_ACTIVE], 1);
    slb_count_add(&wc->v[SLB_SRV_CONNS], !up->reused);
    up->srv = srv;
}

void slb_up_close(struct http_up *up)
{
    struct slb_loop *loop = &up->hw->w->loop;
    count_end(up);
    if (up->pooled)
        pool_unlink(up);
    slb_timer_stop(loop, &up->idle);
    slb_io_forget(&up->io);
    close(up->fd);
    up->fd = -1;
    slb_loop_defer_free(loop, up_free, up);
}

/* A pooled connection that becomes readable was closed by the backend (or sent garbage):
 * either way it cannot be reused. */
static void pooled_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    struct http_up *up = io->data;
    if (up->owner) {
        up->cb(up, events);
        return;
    }
    slb_up_close(up);
}

/* End a connection that carries no exchange and has nothing left to read, when we decide to
 * (pool full or stopping, idle timeout, eviction): with a reset, not a FIN. Nothing is in
 * flight, so nothing is lost, and the backend's next read just fails; an orderly close would
 * leave a TIME_WAIT socket on our side for 60 s each time. With backend_reuse "safe" and
 * clients that send one POST per connection that is one per client connection, which at
 * about 470 connections/s takes up the default ephemeral ports towards a backend (see
 * docs/benchmarks.md, "A client that closes first"); it also saves three segments. */
static void up_close_idle(struct http_up *up)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(up->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    slb_up_close(up);
}

static void idle_cb(struct slb_loop *loop, struct slb_timer *t)
{
    up_close_idle(t->data);
}

void slb_up_set_interest(struct http_up *up, uint32_t events)
{
    if (slb_io_set(&up->hw->w->loop, &up->io, events) < 0)
        slb_warn("backend connection: epoll: %s", strerror(errno));
}

/* Close one idle pooled connection (whatever its server) to make room for a new one. */
static bool pool_evict_one(struct slb_http_worker *hw)
{
    for (size_t i = 0; i < SLB_POOL_BUCKETS; i++) {
        if (hw->buckets[i]) {
            up_close_idle(hw->buckets[i]);
            return true;
        }
    }
    return false;
}

static struct http_up *up_connect(struct slb_http_worker *hw, const struct slb_server_cfg *srv,
                                  uint64_t key, void *owner, slb_up_cb cb, int *err)
{
    /* The connection cap counts two descriptors per client connection; pooled connections
     * hold one each too, so a worker keeps its clients plus pooled connections within its
     * share: then its descriptors stay within twice the share. */
    struct slb_worker *w = hw->w;
    while (hw->npooled > 0 && w->nclients + hw->npooled > w->cap)
        pool_evict_one(hw);
    int fd = slb_backend_connect(srv);
    /* Out of descriptors all the same (HTTP/2 streams, a limit lowered at run time). */
    if ((fd == -EMFILE || fd == -ENFILE) && pool_evict_one(hw))
        fd = slb_backend_connect(srv);
    if (fd < 0) {
        *err = fd;
        return NULL;
    }
    struct http_up *up = calloc(1, sizeof(*up));
    if (!up) {
        close(fd);
        *err = -ENOMEM;
        return NULL;
    }
    up->fd = fd;
    up->hw = hw;
    up->owner = owner;
    up->cb = cb;
    up->key = key;
    up->connect_us = slb_mono_us();
    memcpy(&up->addr, &srv->addr, srv->addrlen);
    up->addrlen = srv->addrlen;
    slb_io_init(&up->io, fd, pooled_cb, up);
    slb_timer_init(&up->idle, idle_cb, up);
    return up;
}

struct http_up *slb_up_acquire(struct slb_http_worker *hw, const struct slb_server_cfg *srv,
                               void *owner, slb_up_cb cb, int *err)
{
    uint64_t key = addr_key(&srv->addr, srv->addrlen);
    struct http_up *next;
    for (struct http_up *up = hw->buckets[key % SLB_POOL_BUCKETS]; up; up = next) {
        next = up->next;
        if (up->key == key && up->addrlen == srv->addrlen &&
            memcmp(&up->addr, &srv->addr, srv->addrlen) == 0) {
            if (slb_io_pending(&up->io)) {
                /* Readable while idle, reported in this iteration but not handled yet: the
                 * backend closed it or sent what no request asked for. */
                slb_up_close(up);
                continue;
            }
            pool_unlink(up);
            up->owner = owner;
            up->cb = cb;
            up->reused = true;
            /* Nothing came while it was pooled (that closes it: pooled_cb, and above), and a
             * response cannot come before the request: the loop reports it. */
            up->rd_ready = false;
            up->wr_ready = true;
            up->bytes_to = up->bytes_from = 0;
            return up;
        }
    }
    return up_connect(hw, srv, key, owner, cb, err);
}

struct http_up *slb_up_connect(struct slb_http_worker *hw, const struct slb_server_cfg *srv,
                               void *owner, slb_up_cb cb, int *err)
{
    return up_connect(hw, srv, addr_key(&srv->addr, srv->addrlen), owner, cb, err);
}

int slb_up_on_event(struct http_up *up, uint32_t events)
{
    int rc = 0;
    if (!up->connected) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(up->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err)
            return -err;
        up->connected = true;
        up->wr_ready = true;
        up->rd_ready = false;
        if (up->srv)
            slb_hist_observe(&up->srv->w[up->hw->w->id], SLB_SRV_CONNECT,
                             slb_mono_us() - up->connect_us);
        rc = 1;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        up->rd_ready = true;
    if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
        up->wr_ready = true;
    return rc;
}

ssize_t slb_up_read(struct http_up *up)
{
    if (slb_buf_prepare(&up->in) < 0)
        return 0;
    ssize_t n = recv(up->fd, up->in.data + up->in.off + up->in.len, slb_buf_space(&up->in), 0);
    int err = n < 0 ? errno : 0;
    if (n > 0) {
        up->in.len += (size_t)n;
        up->bytes_from += (uint64_t)n;
        return n;
    }
    if (up->in.len == 0)
        slb_buf_release(&up->in);
    if (n == 0)
        return up->send_err ? -up->send_err : SLB_EEOF;
    if (err == EAGAIN || err == EINTR) {
        up->rd_ready = false;
        return 0;
    }
    return -err;
}

ssize_t slb_up_send(struct http_up *up, const void *p, size_t n)
{
    ssize_t w = send(up->fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
        if (errno == EAGAIN || errno == EINTR)
            up->wr_ready = false;
        else
            up->send_err = errno;
    }
    return w;
}

ssize_t slb_up_sendv(struct http_up *up, const struct iovec *iov, int n)
{
    struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
    ssize_t w = sendmsg(up->fd, &mh, MSG_NOSIGNAL);
    if (w < 0) {
        if (errno == EAGAIN || errno == EINTR)
            up->wr_ready = false;
        else
            up->send_err = errno;
    }
    return w;
}

int slb_up_unchunk(struct http_up *up, struct slb_chunked *ck, uint64_t *ready,
                   struct slb_hbuf *trailers)
{
    struct slb_buf *b = &up->in;
    char *base = b->data + b->off;
    size_t w = (size_t)*ready, r = w;
    while (r < b->len && !ck->done) {
        const char *data;
        size_t dlen;
        bool in_trailer = trailers && slb_chunked_in_trailer(ck);
        long n = slb_chunked_feed(ck, base + r, b->len - r, &data, &dlen);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        if (in_trailer)
            slb_hbuf_put(trailers, base + r, (size_t)n);
        if (dlen)
            memmove(base + w, data, dlen);
        w += dlen;
        r += (size_t)n;
    }
    if (r > w) {
        memmove(base + w, base + r, b->len - r);
        b->len -= r - w;
    }
    *ready = w;
    if (b->len == 0)
        slb_buf_release(b);
    return 0;
}

bool slb_up_gone(struct http_up *up)
{
    if (up->send_err)
        return true;
    if (!up->rd_ready)
        return false;
    char b;
    if (recv(up->fd, &b, 1, MSG_PEEK) < 0 && (errno == EAGAIN || errno == EINTR)) {
        up->rd_ready = false;
        return false;
    }
    return true;
}

bool slb_up_retryable(const struct http_up *up, enum slb_http_method m, bool has_body)
{
    if (up->bytes_from > 0)
        return false;
    if (up->bytes_to == 0)
        return true; /* it never reached the backend */
    return slb_up_resendable(m, has_body);
}

void slb_up_release(struct http_up *up)
{
    struct slb_http_worker *hw = up->hw;
    count_end(up);
    if (!slb_buf_empty(&up->in) || up->send_err) {
        up->owner = NULL;
        slb_up_close(up);
        return;
    }
    if (hw->npooled >= SLB_POOL_MAX_PER_WORKER || hw->w->drain_deadline_ms ||
        hw->w->nclients + hw->npooled >= hw->w->cap) {
        up->owner = NULL;
        up_close_idle(up);
        return;
    }
    up->owner = NULL;
    up->cb = NULL;
    slb_buf_release(&up->in);
    slb_hbuf_free(&up->head);
    struct http_up **b = &hw->buckets[up->key % SLB_POOL_BUCKETS];
    up->prev = NULL;
    up->next = *b;
    if (*b)
        (*b)->prev = up;
    *b = up;
    hw->npooled++;
    up->pooled = true;
    slb_up_set_interest(up, EPOLLIN);
    slb_timer_start(&hw->w->loop, &up->idle, SLB_POOL_IDLE_MS);
}

void slb_up_pool_drain(struct slb_http_worker *hw)
{
    for (size_t i = 0; i < SLB_POOL_BUCKETS; i++) {
        while (hw->buckets[i])
            up_close_idle(hw->buckets[i]);
    }
}

int slb_up_parse_head(struct http_up *up, enum slb_http_method method, struct slb_http_msg *m,
                      const char **why)
{
    struct slb_http_limits lim;
    slb_http_limits_default(&lim);
    int rc = slb_http_parse_response(up->in.data + up->in.off, up->in.len, &lim, method, m);
    if (rc > 0)
        return rc;
    if (rc < 0) {
        *why = "malformed response";
        return -1;
    }
    if (slb_buf_space(&up->in) > 0)
        return 0;
    if (up->in.off > 0) {
        slb_buf_prepare(&up->in);
        return 0;
    }
    *why = "response head too large";
    return -1;
}

struct http_up *slb_up_choose(struct slb_http_worker *hw, struct slb_up_choice *ch,
                              struct slb_slice sticky)
{
    struct slb_group_rt *g = ch->wg->g;
    while (ch->attempts < (int)g->nservers) {
        int idx = -1;
        if (ch->attempts == 0 && sticky.len) {
            idx = slb_http_sticky_lookup(g, sticky);
            if (idx >= 0 && !slb_http_server_usable(g, idx))
                idx = -1;
        }
        if (idx < 0) {
            uint64_t key = 0;
            int sch = g->cfg->scheduler;
            if (sch == SLB_SCHED_SCH || sch == SLB_SCHED_TCH) {
                if (*ch->key_of != sch) {
                    struct sockaddr_storage peer = {0}, local = {0};
                    socklen_t pl = sizeof(peer), ll = sizeof(local);
                    getpeername(ch->client_fd, (struct sockaddr *)&peer, &pl);
                    getsockname(ch->client_fd, (struct sockaddr *)&local, &ll);
                    *ch->key = slb_sched_key(sch, &peer, &local);
                    *ch->key_of = (uint8_t)sch;
                }
                key = *ch->key;
            }
            idx = slb_wgroup_pick(ch->wg, key, ch->tried);
        }
        if (idx < 0)
            return NULL;
        ch->tried[idx] = 1;
        ch->attempts++;
        ch->srv_idx = idx;
        ch->srv = g->srv[idx];
        int err = 0;
        const struct slb_server_cfg *sc = &g->cfg->servers[idx];
        struct http_up *up = ch->fresh ? slb_up_connect(hw, sc, ch->owner, ch->cb, &err)
                                       : slb_up_acquire(hw, sc, ch->owner, ch->cb, &err);
        if (up) {
            slb_up_count_start(up, ch->srv);
            return up;
        }
        slb_srv_failed(&ch->srv->w[hw->w->id], slb_srv_fail_connect(err));
        slb_health_observe(ch->srv, hw->w->id, err);
        slb_warn_limited("listener %s: backend %s: %s", ch->listener, ch->srv->key,
                         slb_strerror(err));
    }
    return NULL;
}
