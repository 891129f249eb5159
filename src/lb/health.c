/* SPDX-License-Identifier: Apache-2.0 */
/* Health checks of backend servers: non-blocking TCP connects and HTTP status probes driven by
 * a periodic tick on the control thread's loop; verdicts are published to workers through the
 * atomic srv_rt->healthy flag. */
#include "lb/health.h"

#include "core/err.h"
#include "core/log.h"
#include "core/time.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The tick only decides which probes are due, so it is cheap; 100 ms keeps the actual check
 * period within 10 % of interval_s = 1 without keeping the control thread busy. */
#define HC_TICK_MS 100
/* Probes started per tick, a bound on bursts. First checks are spread over the interval (see
 * health_schedule_new), so a group of n servers needs about n * tick / interval per tick: 500
 * for 5,000 servers checked every second. */
#define HC_MAX_START_PER_TICK 1024
/* The status line is all we need; a server that sends more than this before a line end is
 * judged on what arrived. */
#define HC_RBUF 1024
/* Request line + Host (uri and domain are each < 256 bytes) + fixed headers. */
#define HC_REQ_MAX 768
/* Streaks only need to reach a threshold (<= 10); saturating keeps them from wrapping on a
 * server that stays in one state for years. */
#define HC_STREAK_MAX 1000000

enum hc_state { HC_CONNECTING, HC_SENDING, HC_READING };

/* The checker: owned by the control thread; lives from slb_health_new to slb_health_free. */
struct slb_health {
    struct slb_loop *loop;
    uint64_t rng;                   /* xorshift state for the first checks' offsets */
    const struct slb_snapshot *cur; /* borrowed; alive until the next update or free */
    struct slb_timer tick;
    struct hc_probe *probes; /* every probe in flight, whatever snapshot its server is from */
};

/* One check in flight. Found from srv->hc_probe and from the checker's list; owned by the
 * checker. Everything it needs from the configuration is copied at start, because the snapshot
 * it was started under may be freed while the server's runtime object (and the probe) lives on
 * in a newer one. Freed through the loop's deferred list, since a cancel may come while the
 * probe's own event is still pending in the current epoll batch. */
struct hc_probe {
    struct slb_health *h;
    struct slb_loop *loop;
    struct slb_srv_rt *srv;
    struct hc_probe *prev, *next;
    struct slb_io io;
    struct slb_timer timeout;
    enum hc_state state;
    enum slb_hc_proto protocol;
    uint32_t http_codes;
    uint32_t healthy_threshold, unhealthy_threshold;
    size_t req_len, req_off;
    size_t rlen;
    char req[HC_REQ_MAX];
    char rbuf[HC_RBUF];
};

_Atomic uint64_t slb_health_epoch;

/* --- verdicts --- */

static void health_success(struct slb_srv_rt *srv, uint32_t healthy_threshold)
{
    srv->fail_streak = 0;
    if (srv->ok_streak < HC_STREAK_MAX)
        srv->ok_streak++;
    if ((uint32_t)srv->ok_streak < healthy_threshold)
        return;
    /* A server that passed enough checks in a row has no current error worth showing. */
    srv->last_error[0] = '\0';
    srv->active_down = false;
    if (atomic_load(&srv->healthy) != SLB_HEALTH_DOWN)
        return;
    /* An ejected server stays out until its ejection ends (health_passive_expire). Only the
     * control thread moves a server out of DOWN, so this cannot race with a worker. */
    int down = SLB_HEALTH_DOWN;
    if (atomic_compare_exchange_strong(&srv->healthy, &down, SLB_HEALTH_UP)) {
        slb_health_epoch_bump();
        srv->went_up++;
        slb_info("backend %s is up (%d successful checks)", srv->key, srv->ok_streak);
    }
}

static void health_failure(struct slb_srv_rt *srv, uint32_t unhealthy_threshold, const char *reason)
{
    srv->ok_streak = 0;
    if (srv->fail_streak < HC_STREAK_MAX)
        srv->fail_streak++;
    snprintf(srv->last_error, sizeof(srv->last_error), "%s", reason);
    if ((uint32_t)srv->fail_streak < unhealthy_threshold || srv->active_down)
        return;
    srv->active_down = true;
    srv->went_down++;
    /* A worker may be ejecting it at this very moment: then it stays EJECTED, and goes DOWN
     * when the ejection ends. */
    int up = SLB_HEALTH_UP;
    if (atomic_compare_exchange_strong(&srv->healthy, &up, SLB_HEALTH_DOWN))
        slb_health_epoch_bump();
    slb_warn("backend %s is down (%d failed checks): %s", srv->key, srv->fail_streak, reason);
}

/* --- passive checks --- */

/* Failures that are ours, not the server's: no descriptor, no memory. */
static bool local_failure(int result)
{
    return result == -EMFILE || result == -ENFILE || result == -ENOMEM || result == -ENOBUFS;
}

void slb_health_observe(struct slb_srv_rt *srv, int wid, int result)
{
    if (!srv)
        return;
    uint32_t threshold = atomic_load_explicit(&srv->passive_threshold, memory_order_relaxed);
    if (threshold == 0 || local_failure(result))
        return;
    bool failed = result < 0 ||
                  (result >= 500 && atomic_load_explicit(&srv->passive_5xx, memory_order_relaxed));
    if (!failed) {
        /* The common case reads a line nobody writes while the server is well. */
        if (atomic_load_explicit(&srv->passive_fails, memory_order_relaxed) != 0)
            atomic_store_explicit(&srv->passive_fails, 0, memory_order_relaxed);
        return;
    }
    uint32_t n = atomic_fetch_add_explicit(&srv->passive_fails, 1, memory_order_relaxed) + 1;
    if (n < threshold)
        return;
    /* One worker wins the ejection; the control thread times it and ends it. */
    int up = SLB_HEALTH_UP;
    if (!atomic_compare_exchange_strong(&srv->healthy, &up, SLB_HEALTH_EJECTED))
        return;
    slb_health_epoch_bump();
    atomic_store_explicit(&srv->passive_fails, 0, memory_order_relaxed);
    slb_count_add(&srv->w[wid].v[SLB_SRV_EJECTIONS], 1);
    slb_warn("backend %s is down (passive check: %u failed exchanges in a row)", srv->key, n);
}

/* End ejections whose time is up (and time the new ones: a worker only flags them). */
static void health_passive_expire(const struct slb_group_rt *grp, uint64_t now)
{
    for (size_t i = 0; i < grp->nservers; i++) {
        struct slb_srv_rt *srv = grp->srv[i];
        if (!srv || atomic_load(&srv->healthy) != SLB_HEALTH_EJECTED)
            continue;
        if (srv->eject_until_ms == 0) {
            srv->eject_until_ms = now + (uint64_t)grp->cfg->hc.passive.ejection_s * 1000u;
            continue;
        }
        if (now < srv->eject_until_ms && grp->cfg->hc.passive.enabled)
            continue;
        srv->eject_until_ms = 0;
        atomic_store_explicit(&srv->passive_fails, 0, memory_order_relaxed);
        atomic_store(&srv->healthy, srv->active_down ? SLB_HEALTH_DOWN : SLB_HEALTH_UP);
        slb_health_epoch_bump();
        slb_info("backend %s: passive ejection over, %s", srv->key,
                 srv->active_down ? "still down by its health checks" : "back in rotation");
    }
}

/* --- probe lifecycle --- */

static void probe_unlink(struct hc_probe *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        p->h->probes = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
}

/* Release everything but the memory, which the loop frees after the current iteration. */
static void probe_release(struct hc_probe *p)
{
    if (p->io.fd >= 0) {
        slb_io_set(p->loop, &p->io, 0);
        close(p->io.fd);
        p->io.fd = -1;
    }
    slb_timer_stop(p->loop, &p->timeout);
    probe_unlink(p);
    if (p->srv && p->srv->hc_probe == p)
        p->srv->hc_probe = NULL;
    p->srv = NULL;
    slb_loop_defer_free(p->loop, free, p);
}

/* The probe's end: apply the verdict (reason NULL = success) and release it. */
static void probe_finish(struct hc_probe *p, const char *reason)
{
    if (reason)
        health_failure(p->srv, p->unhealthy_threshold, reason);
    else
        health_success(p->srv, p->healthy_threshold);
    probe_release(p);
}

/* err is a negative errno, as everywhere in the code base. */
static void probe_fail_errno(struct hc_probe *p, const char *what, int err)
{
    char reason[sizeof(p->srv->last_error)];
    snprintf(reason, sizeof(reason), "%s: %s", what, slb_strerror(err));
    probe_finish(p, reason);
}

/* --- HTTP status --- */

/* "HTTP/1.x NNN" followed by a space, a line end or nothing; returns the code or -1. */
static int parse_status(const char *s, size_t len)
{
    if (len < 12 || memcmp(s, "HTTP/1.", 7) != 0 || s[7] < '0' || s[7] > '9' || s[8] != ' ')
        return -1;
    int code = 0;
    for (size_t i = 9; i < 12; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        code = code * 10 + (s[i] - '0');
    }
    if (len > 12 && s[12] != ' ' && s[12] != '\r' && s[12] != '\n')
        return -1;
    if (code < 100 || code > 599)
        return -1;
    return code;
}

/* Judge what arrived; called once a line end, EOF or a full buffer makes waiting pointless. */
static void probe_judge(struct hc_probe *p)
{
    int code = parse_status(p->rbuf, p->rlen);
    if (code < 0) {
        probe_finish(p, p->rlen == 0 ? "closed before status line" : "bad status line");
        return;
    }
    if (p->http_codes & (1u << (code / 100))) {
        probe_finish(p, NULL);
        return;
    }
    char reason[32];
    snprintf(reason, sizeof(reason), "status %d", code);
    probe_finish(p, reason);
}

/* --- I/O --- */

static void probe_send(struct hc_probe *p)
{
    while (p->req_off < p->req_len) {
        ssize_t n = send(p->io.fd, p->req + p->req_off, p->req_len - p->req_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return; /* EPOLLOUT stays registered */
            probe_fail_errno(p, "send", -errno);
            return;
        }
        p->req_off += (size_t)n;
    }
    p->state = HC_READING;
    int rc = slb_io_set(p->loop, &p->io, EPOLLIN);
    if (rc < 0) {
        /* Our failure, not the server's: no verdict, the next check decides. */
        slb_warn("backend %s: health check abandoned: epoll: %s", p->srv->key, slb_strerror(rc));
        probe_release(p);
    }
}

static void probe_read(struct hc_probe *p)
{
    ssize_t n = recv(p->io.fd, p->rbuf + p->rlen, sizeof(p->rbuf) - 1 - p->rlen, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        probe_fail_errno(p, "read", -errno);
        return;
    }
    if (n == 0) {
        probe_judge(p);
        return;
    }
    p->rlen += (size_t)n;
    p->rbuf[p->rlen] = '\0';
    if (memchr(p->rbuf, '\n', p->rlen) || p->rlen == sizeof(p->rbuf) - 1)
        probe_judge(p);
}

static void probe_connected(struct hc_probe *p)
{
    if (p->protocol == SLB_HC_TCP) {
        probe_finish(p, NULL);
        return;
    }
    p->state = HC_SENDING;
    probe_send(p);
}

static void probe_io_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    struct hc_probe *p = io->data;
    switch (p->state) {
    case HC_CONNECTING: {
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
            soerr = errno;
        if (soerr != 0) {
            probe_fail_errno(p, "connect", -soerr);
            return;
        }
        if (events & (EPOLLERR | EPOLLHUP)) {
            probe_finish(p, "connect: connection closed");
            return;
        }
        probe_connected(p);
        return;
    }
    case HC_SENDING:
        if (events & EPOLLERR) {
            int soerr = 0;
            socklen_t len = sizeof(soerr);
            getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
            probe_fail_errno(p, "send", soerr ? -soerr : -EPIPE);
            return;
        }
        probe_send(p);
        return;
    case HC_READING:
        /* recv reports resets and EOF itself, also when the event is EPOLLHUP/EPOLLERR. */
        probe_read(p);
        return;
    }
}

static void probe_timeout_cb(struct slb_loop *loop, struct slb_timer *t)
{
    probe_finish(t->data, "timeout");
}

/* --- starting probes --- */

static void build_request(struct hc_probe *p, const struct slb_health_cfg *hc,
                          const struct slb_server_cfg *s)
{
    char host[300];
    if (hc->domain[0])
        snprintf(host, sizeof(host), "%s", hc->domain);
    else if (strchr(s->address, ':'))
        snprintf(host, sizeof(host), "[%s]", s->address);
    else
        snprintf(host, sizeof(host), "%s", s->address);
    int n = snprintf(p->req, sizeof(p->req),
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: slbd-health\r\n"
                     "Connection: close\r\n\r\n",
                     hc->method == SLB_HC_GET ? "GET" : "HEAD", hc->uri[0] ? hc->uri : "/", host);
    /* uri and domain are bounded by the configuration so this cannot truncate; clamp anyway
     * so a future field size change degrades into a bad request, not an overread. */
    p->req_len = n < 0 ? 0 : (size_t)n >= sizeof(p->req) ? sizeof(p->req) - 1 : (size_t)n;
    p->req_off = 0;
}

/* Start one probe of srv. A local failure (no socket, no memory) is not the server's fault:
 * it is logged and the server keeps its state until the next check. */
static void probe_start(struct slb_health *h, struct slb_srv_rt *srv,
                        const struct slb_health_cfg *hc, const struct slb_server_cfg *s)
{
    struct sockaddr_storage ss = s->addr;
    if (hc->port) {
        if (ss.ss_family == AF_INET)
            ((struct sockaddr_in *)&ss)->sin_port = htons(hc->port);
        else if (ss.ss_family == AF_INET6)
            ((struct sockaddr_in6 *)&ss)->sin6_port = htons(hc->port);
    }
    struct hc_probe *p = calloc(1, sizeof(*p));
    if (!p) {
        slb_warn_limited("backend %s: health check skipped: out of memory", srv->key);
        return;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        slb_warn_limited("backend %s: health check skipped: socket: %s", srv->key,
                         slb_strerror(-errno));
        free(p);
        return;
    }
    p->h = h;
    p->loop = h->loop;
    p->srv = srv;
    p->protocol = hc->protocol;
    p->http_codes = hc->http_codes;
    p->healthy_threshold = hc->healthy_threshold;
    p->unhealthy_threshold = hc->unhealthy_threshold;
    if (hc->protocol == SLB_HC_HTTP)
        build_request(p, hc, s);
    slb_io_init(&p->io, fd, probe_io_cb, p);
    slb_timer_init(&p->timeout, probe_timeout_cb, p);
    p->next = h->probes;
    if (h->probes)
        h->probes->prev = p;
    h->probes = p;
    srv->hc_probe = p;
    p->state = HC_CONNECTING;
    slb_timer_start(h->loop, &p->timeout, (uint64_t)hc->timeout_s * 1000u);

    int rc = connect(fd, (const struct sockaddr *)&ss, s->addrlen);
    if (rc == 0) {
        /* Loopback connects may complete at once; there is no event to wait for then. */
        int erc = slb_io_set(h->loop, &p->io, EPOLLOUT);
        if (erc < 0) {
            slb_warn("backend %s: health check skipped: epoll: %s", srv->key, slb_strerror(erc));
            probe_release(p);
            return;
        }
        probe_connected(p);
        return;
    }
    if (errno != EINPROGRESS) {
        probe_fail_errno(p, "connect", -errno);
        return;
    }
    rc = slb_io_set(h->loop, &p->io, EPOLLOUT);
    if (rc < 0) {
        slb_warn("backend %s: health check skipped: epoll: %s", srv->key, slb_strerror(rc));
        probe_release(p);
    }
}

/* --- the checker --- */

/* Start every due probe of the current snapshot; returns how many were started. */
static int health_walk(struct slb_health *h)
{
    const struct slb_snapshot *snap = h->cur;
    uint64_t now = slb_loop_now(h->loop);
    int started = 0;
    for (size_t g = 0; snap && g < snap->ngroups; g++) {
        const struct slb_group_rt *grp = &snap->groups[g];
        const struct slb_health_cfg *hc = &grp->cfg->hc;
        health_passive_expire(grp, now);
        if (!hc->enabled)
            continue;
        for (size_t i = 0; i < grp->nservers; i++) {
            struct slb_srv_rt *srv = grp->srv[i];
            if (!srv || srv->hc_probe || srv->next_check_ms > now)
                continue;
            if (started == HC_MAX_START_PER_TICK)
                return started;
            /* Counting from the start, not the end, keeps the period at interval_s however
             * long probes take; a slow probe only delays the next one (checked above). */
            srv->next_check_ms = now + (uint64_t)hc->interval_s * 1000u;
            probe_start(h, srv, hc, &grp->cfg->servers[i]);
            started++;
        }
    }
    return started;
}

static void health_tick_cb(struct slb_loop *loop, struct slb_timer *t)
{
    struct slb_health *h = t->data;
    health_walk(h);
    if (h->cur)
        slb_timer_start(loop, &h->tick, HC_TICK_MS);
}

struct slb_health *slb_health_new(struct slb_loop *loop)
{
    struct slb_health *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->loop = loop;
    /* Any non-zero seed; the offsets only need to differ between servers. */
    h->rng = (slb_mono_ms() ^ ((uint64_t)getpid() << 32)) | 1;
    slb_timer_init(&h->tick, health_tick_cb, h);
    return h;
}

/* Servers of a group without health checks are always eligible: bring back any that an
 * earlier configuration had marked down, and forget their check history. */
static void health_disable_group(const struct slb_group_rt *grp)
{
    for (size_t i = 0; i < grp->nservers; i++) {
        struct slb_srv_rt *srv = grp->srv[i];
        if (!srv)
            continue;
        slb_health_probe_cancel(srv);
        srv->ok_streak = srv->fail_streak = 0;
        srv->next_check_ms = 0;
        srv->last_error[0] = '\0';
        srv->active_down = false;
        /* An ejected server comes back when its ejection ends. */
        int down = SLB_HEALTH_DOWN;
        if (atomic_compare_exchange_strong(&srv->healthy, &down, SLB_HEALTH_UP)) {
            slb_health_epoch_bump();
            srv->went_up++;
            slb_info("backend %s is up (health check disabled)", srv->key);
        }
    }
}

static uint64_t health_rand(struct slb_health *h)
{
    uint64_t x = h->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return h->rng = x;
}

/* A server not scheduled yet (new, or its group's checks just turned on) gets its first check
 * at a random point of the first interval rather than at once: a group of 5,000 servers
 * starts 5,000 connects spread over interval_s, not in one burst, and they stay spread since
 * each next check counts from the previous start. The documented bound holds: the first
 * check comes within interval_s. Servers that already have a schedule keep it. */
static void health_schedule_new(struct slb_health *h, const struct slb_group_rt *grp, uint64_t now)
{
    uint64_t interval_ms = (uint64_t)grp->cfg->hc.interval_s * 1000u;
    for (size_t i = 0; i < grp->nservers; i++) {
        struct slb_srv_rt *srv = grp->srv[i];
        if (srv && srv->next_check_ms == 0 && !srv->hc_probe)
            srv->next_check_ms = now + 1 + (interval_ms ? health_rand(h) % interval_ms : 0);
    }
}

void slb_health_update(struct slb_health *h, const struct slb_snapshot *cur)
{
    h->cur = cur;
    if (!cur) {
        slb_timer_stop(h->loop, &h->tick);
        return;
    }
    for (size_t g = 0; g < cur->ngroups; g++) {
        const struct slb_group_rt *grp = &cur->groups[g];
        const struct slb_passive_cfg *pc = &grp->cfg->hc.passive;
        if (!grp->cfg->hc.enabled)
            health_disable_group(grp);
        else
            health_schedule_new(h, grp, slb_loop_now(h->loop));
        /* Workers read the passive settings from the server; an ejection that passive checks
         * no longer back ends at the next tick. */
        for (size_t i = 0; i < grp->nservers; i++) {
            if (!grp->srv[i])
                continue;
            atomic_store(&grp->srv[i]->passive_5xx, pc->include_5xx);
            atomic_store(&grp->srv[i]->passive_threshold,
                         pc->enabled ? pc->consecutive_failures : 0);
        }
    }
    /* The tick, not this call, starts probes, so an update made from inside another callback
     * never does socket work. */
    if (!slb_timer_active(&h->tick))
        slb_timer_start(h->loop, &h->tick, HC_TICK_MS);
}

void slb_health_probe_cancel(struct slb_srv_rt *srv)
{
    if (!srv || !srv->hc_probe)
        return;
    probe_release(srv->hc_probe);
}

void slb_health_free(struct slb_health *h)
{
    if (!h)
        return;
    /* The list also holds probes whose server left the current snapshot but is still alive in
     * an older one; each probe clears its server's hc_probe on release. */
    while (h->probes)
        probe_release(h->probes);
    slb_timer_stop(h->loop, &h->tick);
    free(h);
}
