/* SPDX-License-Identifier: Apache-2.0 */
/* The tcp listener's connection: copy in both directions over level-triggered epoll.
 * Each direction starts with one buffer that exists only while it holds data. A direction that
 * proves to be a bulk flow (a read fills a whole buffer) moves on to splice(2) through a pipe,
 * so its bytes never cross into user space; pipes come from a per-worker pool and go back to it
 * as soon as they drain, so an idle connection holds neither a buffer nor a pipe.
 * EOF on one side becomes shutdown(SHUT_WR) on the other once everything pending is written,
 * so half-closed protocols work. */
#include "tcp/proxy.h"

#include "core/buf.h"
#include "core/log.h"
#include "core/time.h"
#include "tcp/proxyproto.h"
#include "tls/clienthello.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One end of the proxied connection. Bytes waiting to be written to this end sit in `out` or,
 * for a bulk flow, in the pipe `pp` (never both: the buffer drains before the pipe is used). */
struct tcp_end {
    int fd;
    struct slb_io io;
    struct slb_buf out;
    int pp[2];      /* pipe read/write ends while bytes are in it, else -1 */
    size_t piped;   /* bytes in the pipe */
    bool bulk;      /* the flow towards this end uses the pipe once `out` is empty */
    bool pipe_full; /* splice into the pipe would block: wait for a write to drain it */
    bool eof;       /* read returned 0 */
    bool shut;      /* we sent FIN (shutdown SHUT_WR) */
};

/* Owned by the worker that accepted it, from accept to close; freed at the end of the loop
 * iteration in which it closed. */
struct tcp_conn {
    struct slb_conn_link link;
    struct slb_worker *w;
    struct slb_wsnap *ws;
    struct slb_listener_rt *l;
    struct slb_wgroup *wg;
    struct slb_srv_rt *srv; /* server in use, NULL before the first connect */
    int srv_idx;
    int attempts;
    bool connected;
    bool closed;
    bool routing;        /* reading the ClientHello to route by SNI */
    struct tcp_end c, s; /* client, server */
    struct slb_timer timer;
    /* limits.bandwidth_mbps (shape NULL: off): bytes sent to the client beyond the shared
     * budget are owed, and nothing more goes to the client until shape_timer paid them. */
    struct slb_ratelimit *shape;
    uint64_t shape_rate, owed;
    struct slb_timer shape_timer;
    uint64_t last_activity;
    uint64_t connect_us; /* when the current connect started, for the connect histogram */
    struct sockaddr_storage peer, local;
    uint8_t *tried;
};

static void conn_close(struct tcp_conn *t);
static void end_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events);

/* How bytes cross: SLBD_TCP_SPLICE=off keeps every flow in buffers, =on splices every flow
 * once its buffer is empty, anything else (the default) splices bulk flows only. Read once. */
enum { SPLICE_AUTO, SPLICE_OFF, SPLICE_ON };
static int splice_mode;
static pthread_once_t splice_once = PTHREAD_ONCE_INIT;

static void splice_mode_read(void)
{
    const char *v = getenv("SLBD_TCP_SPLICE");
    if (v && strcmp(v, "off") == 0)
        splice_mode = SPLICE_OFF;
    else if (v && strcmp(v, "on") == 0)
        splice_mode = SPLICE_ON;
    else
        splice_mode = SPLICE_AUTO;
}

/* A pipe holds 16 pages by default; one splice moves at most that much. */
#define SPLICE_CHUNK (64 * 1024)
#define PIPE_POOL_MAX 64

/* Empty pipes kept by each worker thread for the next flow that needs one, while the worker
 * has tcp connections (`live`); the last one to close empties the pool. */
static _Thread_local struct {
    int fds[PIPE_POOL_MAX][2];
    int n;
    unsigned long live;
} pipe_pool;

static int pipe_get(int pp[2])
{
    if (pipe_pool.n > 0) {
        pipe_pool.n--;
        pp[0] = pipe_pool.fds[pipe_pool.n][0];
        pp[1] = pipe_pool.fds[pipe_pool.n][1];
        return 0;
    }
    return pipe2(pp, O_NONBLOCK | O_CLOEXEC) < 0 ? -errno : 0;
}

/* Give a pipe back; one that still holds bytes cannot be reused and is closed. */
static void pipe_put(int pp[2], bool empty)
{
    if (pp[0] < 0)
        return;
    if (empty && pipe_pool.n < PIPE_POOL_MAX) {
        pipe_pool.fds[pipe_pool.n][0] = pp[0];
        pipe_pool.fds[pipe_pool.n][1] = pp[1];
        pipe_pool.n++;
    } else {
        close(pp[0]);
        close(pp[1]);
    }
    pp[0] = pp[1] = -1;
}

static void pipe_pool_empty(void)
{
    while (pipe_pool.n > 0) {
        pipe_pool.n--;
        close(pipe_pool.fds[pipe_pool.n][0]);
        close(pipe_pool.fds[pipe_pool.n][1]);
    }
}

void slb_tcp_thread_exit(void)
{
    pipe_pool_empty();
}

int slb_backend_connect(const struct slb_server_cfg *srv)
{
    int fd = socket(srv->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)&srv->addr, srv->addrlen) < 0 &&
        errno != EINPROGRESS) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

uint64_t slb_sched_key(int scheduler, const struct sockaddr_storage *peer,
                       const struct sockaddr_storage *local)
{
    unsigned char key[40];
    size_t n = 0;
    const struct sockaddr_storage *addrs[2] = {peer, local};
    for (int i = 0; i < (scheduler == SLB_SCHED_TCH ? 2 : 1); i++) {
        const struct sockaddr_storage *a = addrs[i];
        if (a->ss_family == AF_INET) {
            const struct sockaddr_in *in = (const void *)a;
            memcpy(key + n, &in->sin_addr, 4);
            n += 4;
            if (scheduler == SLB_SCHED_TCH) {
                memcpy(key + n, &in->sin_port, 2);
                n += 2;
            }
        } else if (a->ss_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const void *)a;
            memcpy(key + n, &in6->sin6_addr, 16);
            n += 16;
            if (scheduler == SLB_SCHED_TCH) {
                memcpy(key + n, &in6->sin6_port, 2);
                n += 2;
            }
        }
    }
    return slb_hash64(key, n, 0x736c6264u);
}

static struct slb_wcount *lis_counts(struct tcp_conn *t)
{
    return &t->l->stats->w[t->w->id];
}

static struct slb_wcount *srv_counts(struct tcp_conn *t)
{
    return &t->srv->w[t->w->id];
}

/* Bytes for `to` go through its pipe: already there, or a bulk flow whose buffer is empty. */
static bool use_pipe(const struct tcp_end *to)
{
    return to->piped > 0 || (to->bulk && slb_buf_empty(&to->out));
}

/* Can the flow towards `to` take more bytes now? */
static bool has_room(const struct tcp_end *to)
{
    return use_pipe(to) ? !to->pipe_full : slb_buf_space(&to->out) > 0;
}

static bool pending(const struct tcp_end *to)
{
    return !slb_buf_empty(&to->out) || to->piped > 0;
}

/* Count n bytes read from `from` (client: payload and wire in; server: bytes from it). */
static void count_in(struct tcp_conn *t, const struct tcp_end *from, size_t n)
{
    if (from == &t->c) {
        slb_count_add(&lis_counts(t)->v[SLB_LIS_PAYLOAD_IN], n);
        slb_count_add(&lis_counts(t)->v[SLB_LIS_WIRE_IN], n);
    } else {
        slb_count_add(&srv_counts(t)->v[SLB_SRV_BYTES_FROM], n);
    }
}

static void count_out(struct tcp_conn *t, const struct tcp_end *to, size_t n)
{
    if (to == &t->c) {
        slb_count_add(&lis_counts(t)->v[SLB_LIS_PAYLOAD_OUT], n);
        slb_count_add(&lis_counts(t)->v[SLB_LIS_WIRE_OUT], n);
    } else {
        slb_count_add(&srv_counts(t)->v[SLB_SRV_BYTES_TO], n);
    }
}

/* Bytes sent to the client against the bandwidth budget (see struct tcp_conn). */
static void shape_account(struct tcp_conn *t, const struct tcp_end *to, size_t n)
{
    if (to == &t->c && t->shape)
        t->owed += n - slb_ratelimit_take(t->shape, t->w->id, t->shape_rate, n, NULL);
}

static bool shaped(const struct tcp_conn *t, const struct tcp_end *to)
{
    return to == &t->c && t->owed > 0;
}

static void set_interest(struct tcp_conn *t)
{
    struct slb_loop *loop = &t->w->loop;
    if (!t->connected) {
        slb_io_set(loop, &t->c.io, 0);
        slb_io_set(loop, &t->s.io, EPOLLOUT);
        return;
    }
    uint32_t ce = 0, se = 0;
    if (!t->c.eof && has_room(&t->s))
        ce |= EPOLLIN;
    if (pending(&t->c) && t->owed) {
        /* Over the bandwidth limit: the socket is writable, so wait for the budget. */
        if (!slb_timer_active(&t->shape_timer))
            slb_timer_start(loop, &t->shape_timer,
                            slb_ratelimit_repay(t->shape, t->w->id, t->shape_rate, &t->owed));
    } else if (pending(&t->c)) {
        ce |= EPOLLOUT;
    }
    if (!t->s.eof && has_room(&t->c))
        se |= EPOLLIN;
    if (pending(&t->s))
        se |= EPOLLOUT;
    slb_io_set(loop, &t->c.io, ce);
    slb_io_set(loop, &t->s.io, se);
}

/* Write what is pending towards `to`; pass on a FIN once its source is at EOF and drained.
 * Returns <0 on a fatal socket error. */
static int flush_to(struct tcp_conn *t, struct tcp_end *to, const struct tcp_end *from)
{
    while (!slb_buf_empty(&to->out) && !shaped(t, to)) {
        ssize_t n = send(to->fd, to->out.data + to->out.off, to->out.len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return 0;
            return -errno;
        }
        count_out(t, to, (size_t)n);
        shape_account(t, to, (size_t)n);
        slb_buf_consume(&to->out, (size_t)n);
    }
    while (to->piped > 0 && !shaped(t, to)) {
        ssize_t n =
            splice(to->pp[0], NULL, to->fd, NULL, to->piped, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return 0;
            return -errno;
        }
        if (n == 0)
            return -EPIPE;
        count_out(t, to, (size_t)n);
        shape_account(t, to, (size_t)n);
        to->piped -= (size_t)n;
        to->pipe_full = false;
    }
    if (pending(to))
        return 0; /* shaped */
    /* Drained: the pipe goes back to the pool until the next burst. */
    pipe_put(to->pp, true);
    if (from->eof && !to->shut) {
        shutdown(to->fd, SHUT_WR);
        to->shut = true;
    }
    return 0;
}

/* Move what `from` has into the pipe towards `to`. Returns <0 on a fatal error. */
static int splice_from(struct tcp_conn *t, struct tcp_end *from, struct tcp_end *to)
{
    if (to->pp[0] < 0) {
        int rc = pipe_get(to->pp);
        if (rc < 0) {
            /* Out of descriptors: this flow stays in buffers. */
            slb_debug("listener %s: no pipe for splice: %s", t->l->cfg->name, strerror(-rc));
            to->bulk = false;
            return 1;
        }
    }
    ssize_t n =
        splice(from->fd, NULL, to->pp[1], NULL, SPLICE_CHUNK, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0) {
        if (errno == EAGAIN) {
            /* An empty pipe means an empty socket; a non-empty one may be full (it fills by
             * pages, not bytes): stop reading until a write drains some of it. */
            if (to->piped > 0)
                to->pipe_full = true;
            else
                pipe_put(to->pp, true);
            return 0;
        }
        return errno == EINTR ? 0 : -errno;
    }
    if (n == 0) {
        from->eof = true;
        if (to->piped == 0)
            pipe_put(to->pp, true);
        return 0;
    }
    to->piped += (size_t)n;
    count_in(t, from, (size_t)n);
    return 0;
}

/* Read from `from` into the buffer (or pipe) of the other end. Returns <0 on a fatal error. */
static int fill_from(struct tcp_conn *t, struct tcp_end *from, struct tcp_end *to)
{
    if (from->eof || !has_room(to))
        return 0;
    if (use_pipe(to)) {
        int rc = splice_from(t, from, to);
        if (rc <= 0)
            return rc;
    }
    if (slb_buf_prepare(&to->out) < 0)
        return -ENOMEM;
    char *dst = to->out.data + to->out.off + to->out.len;
    ssize_t n = recv(from->fd, dst, slb_buf_space(&to->out), 0);
    if (n < 0) {
        if (to->out.len == 0)
            slb_buf_release(&to->out);
        if (errno == EAGAIN || errno == EINTR)
            return 0;
        return -errno;
    }
    if (n == 0) {
        from->eof = true;
        if (to->out.len == 0)
            slb_buf_release(&to->out);
        return 0;
    }
    /* A read that fills a whole buffer marks a bulk flow: the next bytes go by splice. */
    if ((size_t)n == SLB_BUF_SIZE && splice_mode != SPLICE_OFF)
        to->bulk = true;
    to->out.len += (size_t)n;
    count_in(t, from, (size_t)n);
    return 0;
}

static bool finished(const struct tcp_conn *t)
{
    return t->c.eof && t->s.eof && !pending(&t->c) && !pending(&t->s) && t->c.shut && t->s.shut;
}

static void pump(struct tcp_conn *t)
{
    int rc = 0;
    if (rc == 0)
        rc = fill_from(t, &t->c, &t->s);
    if (rc == 0)
        rc = fill_from(t, &t->s, &t->c);
    if (rc == 0)
        rc = flush_to(t, &t->s, &t->c);
    if (rc == 0)
        rc = flush_to(t, &t->c, &t->s);
    if (rc < 0) {
        /* A reset or error on either side ends both: the peer learns it from our close. */
        slb_debug("listener %s: connection ended: %s", t->l->cfg->name, strerror(-rc));
        conn_close(t);
        return;
    }
    if (finished(t)) {
        conn_close(t);
        return;
    }
    t->last_activity = t->w->loop.now_ms;
    set_interest(t);
}

static void try_connect(struct tcp_conn *t);

static void connect_failed(struct tcp_conn *t, int err)
{
    slb_srv_failed(srv_counts(t), err ? slb_srv_fail_connect(err) : SLB_SRV_FAIL_CONNECT_TIMEOUT);
    slb_count_add(&srv_counts(t)->v[SLB_SRV_ACTIVE], (uint64_t)-1);
    slb_health_observe(t->srv, t->w->id, err ? -err : -ETIMEDOUT);
    slb_warn("listener %s: backend %s: connect failed: %s", t->l->cfg->name, t->srv->key,
             err ? strerror(err) : "timeout");
    slb_io_set(&t->w->loop, &t->s.io, 0);
    close(t->s.fd);
    t->s.fd = -1;
    t->srv = NULL;
    try_connect(t);
}

static void established(struct tcp_conn *t)
{
    t->connected = true;
    slb_hist_observe(srv_counts(t), SLB_SRV_CONNECT, slb_mono_us() - t->connect_us);
    slb_health_observe(t->srv, t->w->id, 0);
    if (t->l->cfg->proxy_protocol) {
        /* The header goes first in the client→server buffer, before any client byte (a
         * ClientHello read for SNI routing may already be there; routing leaves room). */
        unsigned char hdr[SLB_PP_MAX];
        size_t n = slb_pp_encode(t->l->cfg->proxy_protocol, (struct sockaddr *)&t->peer,
                                 (struct sockaddr *)&t->local, hdr);
        if (slb_buf_prepare(&t->s.out) < 0 || slb_buf_space(&t->s.out) + t->s.out.off < n) {
            conn_close(t);
            return;
        }
        char *base = t->s.out.data;
        memmove(base + n, base + t->s.out.off, t->s.out.len);
        memcpy(base, hdr, n);
        t->s.out.off = 0;
        t->s.out.len += n;
    }
    uint64_t idle = (uint64_t)t->l->cfg->established_timeout_s * 1000u;
    slb_timer_start(&t->w->loop, &t->timer, idle);
    pump(t);
}

static void try_connect(struct tcp_conn *t)
{
    struct slb_group_rt *g = t->wg ? t->wg->g : NULL;
    while (g && t->attempts < (int)g->nservers) {
        uint64_t key = slb_sched_key(g->cfg->scheduler, &t->peer, &t->local);
        int idx = slb_wgroup_pick(t->wg, key, t->tried);
        if (idx < 0)
            break;
        t->tried[idx] = 1;
        t->attempts++;
        t->srv_idx = idx;
        t->srv = g->srv[idx];
        slb_count_add(&srv_counts(t)->v[SLB_SRV_ACTIVE], 1);
        slb_count_add(&srv_counts(t)->v[SLB_SRV_CONNS], 1);
        t->connect_us = slb_mono_us();
        int fd = slb_backend_connect(&g->cfg->servers[idx]);
        if (fd < 0) {
            t->s.fd = -1;
            slb_srv_failed(srv_counts(t), slb_srv_fail_connect(fd));
            slb_count_add(&srv_counts(t)->v[SLB_SRV_ACTIVE], (uint64_t)-1);
            slb_health_observe(t->srv, t->w->id, fd);
            slb_warn_limited("listener %s: backend %s: %s", t->l->cfg->name, t->srv->key,
                             strerror(-fd));
            t->srv = NULL;
            continue;
        }
        t->s.fd = fd;
        slb_io_init(&t->s.io, fd, end_cb, t);
        slb_timer_start(&t->w->loop, &t->timer, t->l->cfg->connect_timeout_ms);
        set_interest(t);
        return;
    }
    /* No server left: refuse promptly with a reset so the client does not wait. */
    slb_count_add(&lis_counts(t)->v[SLB_LIS_ERRORS], 1);
    slb_info_limited("listener %s: no healthy backend server, refusing connection",
                     t->l->cfg->name);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(t->c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    conn_close(t);
}

/* sni_routes: exact names first, then "*.domain" matching exactly one more label. */
static struct slb_group_rt *route_by_name(const struct slb_listener_rt *l, const char *name)
{
    for (size_t i = 0; i < l->nsni; i++) {
        if (strcmp(l->sni[i].server_name, name) == 0)
            return l->sni[i].group;
    }
    const char *dot = strchr(name, '.');
    if (!dot || dot == name)
        return NULL;
    for (size_t i = 0; i < l->nsni; i++) {
        const char *r = l->sni[i].server_name;
        if (r[0] == '*' && r[1] == '.' && strcmp(r + 1, dot) == 0)
            return l->sni[i].group;
    }
    return NULL;
}

static bool use_group(struct tcp_conn *t, struct slb_group_rt *g)
{
    t->wg = slb_wsnap_group(t->ws, g);
    free(t->tried);
    t->tried = g ? calloc(g->nservers ? g->nservers : 1, 1) : NULL;
    return !g || t->tried;
}

/* Read the ClientHello (kept in the client→server buffer, forwarded after connect) until the
 * server name is known, then pick the group. Non-TLS or nameless clients go to the listener's
 * backend_group. */
static void route_step(struct tcp_conn *t)
{
    /* Leave room for a PROXY header in front of what we read. */
    size_t max = SLB_BUF_SIZE - SLB_PP_MAX;
    if (slb_buf_prepare(&t->s.out) < 0) {
        conn_close(t);
        return;
    }
    size_t room = max > t->s.out.len ? max - t->s.out.len : 0;
    ssize_t n = room ? recv(t->c.fd, t->s.out.data + t->s.out.off + t->s.out.len, room, 0) : 0;
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0 && room) {
        conn_close(t);
        return;
    }
    t->s.out.len += (size_t)(n > 0 ? n : 0);
    slb_count_add(&lis_counts(t)->v[SLB_LIS_PAYLOAD_IN], (uint64_t)(n > 0 ? n : 0));
    slb_count_add(&lis_counts(t)->v[SLB_LIS_WIRE_IN], (uint64_t)(n > 0 ? n : 0));
    char name[SLB_CH_NAME_MAX + 1];
    int rc = slb_clienthello_sni((const unsigned char *)t->s.out.data + t->s.out.off, t->s.out.len,
                                 max, name, sizeof(name));
    if (rc == 0 && room)
        return;
    struct slb_group_rt *g = rc > 0 ? route_by_name(t->l, name) : NULL;
    if (!g)
        g = t->l->group;
    slb_debug("listener %s: server name \"%s\" routed to group %s", t->l->cfg->name,
              rc > 0 ? name : "", g ? g->cfg->name : "(none)");
    t->routing = false;
    if (!use_group(t, g)) {
        conn_close(t);
        return;
    }
    try_connect(t);
}

static void end_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    struct tcp_conn *t = io->data;
    if (t->closed)
        return;
    if (t->routing) {
        route_step(t);
        return;
    }
    if (!t->connected) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(t->s.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            connect_failed(t, err);
            return;
        }
        established(t);
        return;
    }
    pump(t);
}

static void timer_cb(struct slb_loop *loop, struct slb_timer *tm)
{
    struct tcp_conn *t = tm->data;
    if (t->routing) {
        conn_close(t); /* no ClientHello in time */
        return;
    }
    if (!t->connected) {
        connect_failed(t, 0);
        return;
    }
    uint64_t idle = (uint64_t)t->l->cfg->established_timeout_s * 1000u;
    /* Activity only stamps a time; the timer is re-armed here, once per period, instead of
     * on every read. */
    if (loop->now_ms - t->last_activity < idle) {
        slb_timer_start(loop, tm, idle - (loop->now_ms - t->last_activity));
        return;
    }
    slb_debug("listener %s: idle timeout", t->l->cfg->name);
    conn_close(t);
}

static void shape_cb(struct slb_loop *loop, struct slb_timer *tm)
{
    struct tcp_conn *t = tm->data;
    if (t->closed)
        return;
    uint64_t ms = slb_ratelimit_repay(t->shape, t->w->id, t->shape_rate, &t->owed);
    if (ms)
        slb_timer_start(loop, tm, ms);
    else
        pump(t);
}

static void conn_free(void *p)
{
    struct tcp_conn *t = p;
    free(t->tried);
    free(t);
}

static void conn_close(struct tcp_conn *t)
{
    if (t->closed)
        return;
    t->closed = true;
    struct slb_loop *loop = &t->w->loop;
    slb_timer_stop(loop, &t->timer);
    slb_timer_stop(loop, &t->shape_timer);
    if (t->c.fd >= 0) {
        slb_io_forget(&t->c.io);
        close(t->c.fd);
    }
    if (t->s.fd >= 0) {
        slb_io_forget(&t->s.io);
        close(t->s.fd);
    }
    slb_buf_release(&t->c.out);
    slb_buf_release(&t->s.out);
    pipe_put(t->c.pp, t->c.piped == 0);
    pipe_put(t->s.pp, t->s.piped == 0);
    if (--pipe_pool.live == 0)
        pipe_pool_empty();
    if (t->srv)
        slb_count_add(&srv_counts(t)->v[SLB_SRV_ACTIVE], (uint64_t)-1);
    slb_count_add(&lis_counts(t)->v[SLB_LIS_ACTIVE], (uint64_t)-1);
    slb_worker_unlink(&t->link);
    slb_wsnap_release(t->ws);
    slb_loop_defer_free(loop, conn_free, t);
}

static void conn_abort(struct slb_conn_link *link)
{
    conn_close((struct tcp_conn *)link);
}

void slb_tcp_accept(struct slb_worker *w, struct slb_listener_rt *l, int fd,
                    const struct sockaddr_storage *peer, socklen_t peerlen)
{
    struct tcp_conn *t = calloc(1, sizeof(*t));
    if (!t) {
        slb_error("listener %s: out of memory accepting a connection", l->cfg->name);
        close(fd);
        return;
    }
    t->w = w;
    t->ws = slb_wsnap_hold(w);
    t->l = l;
    t->link.abort = conn_abort;
    slb_worker_link(w, &t->link);
    pthread_once(&splice_once, splice_mode_read);
    t->c.fd = fd;
    t->s.fd = -1;
    t->c.pp[0] = t->c.pp[1] = t->s.pp[0] = t->s.pp[1] = -1;
    t->c.bulk = t->s.bulk = splice_mode == SPLICE_ON;
    pipe_pool.live++;
    slb_io_init(&t->c.io, fd, end_cb, t);
    memcpy(&t->peer, peer, peerlen);
    socklen_t llen = sizeof(t->local);
    getsockname(fd, (struct sockaddr *)&t->local, &llen);
    slb_timer_init(&t->timer, timer_cb, t);
    slb_timer_init(&t->shape_timer, shape_cb, t);
    if (l->cfg->bandwidth_mbps) {
        t->shape = l->stats->bw_rate;
        t->shape_rate = (uint64_t)l->cfg->bandwidth_mbps * 125000u;
    }
    t->last_activity = w->loop.now_ms;
    slb_count_add(&lis_counts(t)->v[SLB_LIS_ACTIVE], 1);
    if (l->nsni > 0) {
        t->routing = true;
        slb_io_set(&w->loop, &t->c.io, EPOLLIN);
        slb_timer_start(&w->loop, &t->timer, t->l->cfg->connect_timeout_ms + 10000u);
        return;
    }
    if (!use_group(t, l->group)) {
        conn_close(t);
        return;
    }
    try_connect(t);
}
