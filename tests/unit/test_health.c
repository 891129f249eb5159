/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for health checks against real sockets on 127.0.0.1: tcp and http verdicts with
 * thresholds, the status-class rule, timeouts, the port override, disabled groups, cancel and
 * free of probes in flight. */
/* cmocka needs these in this order; keep clang-format from sorting them. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/time.h"
#include "lb/health.h"

#define MAX_GROUPS 3
#define MAX_SERVERS 4
#define MAX_CONNS 16

/* ---------------------------------------------------------------------------------------------
 * Sockets
 * ------------------------------------------------------------------------------------------- */

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static uint16_t port_of(int fd)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    return ntohs(sin.sin_port);
}

/* A TCP socket bound to 127.0.0.1:port (0 = any free port); listening when backlog > 0. A
 * bound socket that does not listen reserves a port that refuses connections. */
static int tcp_socket(uint16_t port, int backlog)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    /* A bound socket that never listens (a refused port) must not share its port: with
     * SO_REUSEADDR, another program's bind to port 0 may be given the same port and listen
     * on it (it happened while other tests ran). */
    int one = 1;
    if (backlog > 0 || port != 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sin = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    if (backlog > 0)
        assert_int_equal(listen(fd, backlog), 0);
    return fd;
}

/* A listener that accepts and closes at once, counting connections (a tcp check's backend). */
struct acceptor {
    int fd;
    struct slb_io io;
    int accepted;
};

static void acceptor_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    struct acceptor *a = io->data;
    for (int c; (c = accept4(io->fd, NULL, NULL, SOCK_CLOEXEC)) >= 0;) {
        a->accepted++;
        close(c);
    }
}

static void acceptor_open(struct slb_loop *loop, struct acceptor *a, uint16_t port)
{
    a->fd = tcp_socket(port, 64);
    slb_io_init(&a->io, a->fd, acceptor_cb, a);
    assert_int_equal(slb_io_set(loop, &a->io, EPOLLIN), 0);
}

static void acceptor_close(struct slb_loop *loop, struct acceptor *a)
{
    if (a->fd < 0)
        return;
    slb_io_set(loop, &a->io, 0);
    close(a->fd);
    a->fd = -1;
}

/* A tiny HTTP responder: reads a request head, answers `reply` and closes. */
struct responder;
struct rconn {
    struct responder *r;
    struct slb_io io;
    bool used;
    size_t len;
    char buf[1024];
};

struct responder {
    int fd;
    struct slb_io io;
    const char *reply;
    int nreq;
    char last_req[1024];
    struct rconn conns[MAX_CONNS];
};

static void rconn_close(struct slb_loop *loop, struct rconn *c)
{
    slb_io_set(loop, &c->io, 0);
    close(c->io.fd);
    c->used = false;
}

static void rconn_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    struct rconn *c = io->data;
    ssize_t n = recv(io->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        rconn_close(loop, c);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    if (!strstr(c->buf, "\r\n\r\n"))
        return;
    struct responder *r = c->r;
    r->nreq++;
    snprintf(r->last_req, sizeof(r->last_req), "%s", c->buf);
    /* Small enough for any socket buffer: a single send is complete. */
    assert_int_equal(send(io->fd, r->reply, strlen(r->reply), MSG_NOSIGNAL),
                     (ssize_t)strlen(r->reply));
    rconn_close(loop, c);
}

static void responder_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    struct responder *r = io->data;
    for (int fd; (fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
        struct rconn *c = NULL;
        for (size_t i = 0; i < MAX_CONNS && !c; i++)
            c = r->conns[i].used ? NULL : &r->conns[i];
        assert_non_null(c);
        memset(c, 0, sizeof(*c));
        c->r = r;
        c->used = true;
        slb_io_init(&c->io, fd, rconn_cb, c);
        assert_int_equal(slb_io_set(loop, &c->io, EPOLLIN), 0);
    }
}

static void responder_open(struct slb_loop *loop, struct responder *r, const char *reply)
{
    memset(r, 0, sizeof(*r));
    r->reply = reply;
    r->fd = tcp_socket(0, 64);
    slb_io_init(&r->io, r->fd, responder_cb, r);
    assert_int_equal(slb_io_set(loop, &r->io, EPOLLIN), 0);
}

static void responder_close(struct slb_loop *loop, struct responder *r)
{
    for (size_t i = 0; i < MAX_CONNS; i++) {
        if (r->conns[i].used)
            rconn_close(loop, &r->conns[i]);
    }
    slb_io_set(loop, &r->io, 0);
    close(r->fd);
}

/* ---------------------------------------------------------------------------------------------
 * A hand-built snapshot
 * ------------------------------------------------------------------------------------------- */

struct tgroup {
    struct slb_group_cfg cfg;
    struct slb_server_cfg scfg[MAX_SERVERS];
    struct slb_srv_rt *srv[MAX_SERVERS];
};

struct fixture {
    struct slb_loop loop;
    struct slb_health *h;
    struct slb_snapshot snap;
    struct slb_group_rt grt[MAX_GROUPS];
    struct tgroup g[MAX_GROUPS];
    int fds_at_start;
};

static struct slb_health_cfg hc_default(enum slb_hc_proto proto)
{
    struct slb_health_cfg hc = {
        .enabled = true,
        .protocol = proto,
        .method = SLB_HC_HEAD,
        .http_codes = (1u << 2) | (1u << 3),
        .interval_s = 1,
        .timeout_s = 1,
        .healthy_threshold = 2,
        .unhealthy_threshold = 2,
    };
    snprintf(hc.uri, sizeof(hc.uri), "/");
    return hc;
}

static void fixture_init(struct fixture *fx)
{
    memset(fx, 0, sizeof(*fx));
    fx->fds_at_start = count_fds();
    assert_int_equal(slb_loop_init(&fx->loop), 0);
    fx->h = slb_health_new(&fx->loop);
    assert_non_null(fx->h);
    fx->snap.groups = fx->grt;
}

/* Add group gi with servers on 127.0.0.1 at the given ports; every server starts UP as the
 * registry makes it. */
static void group_add(struct fixture *fx, size_t gi, const char *name,
                      const struct slb_health_cfg *hc, const uint16_t *ports, size_t n)
{
    struct tgroup *g = &fx->g[gi];
    snprintf(g->cfg.name, sizeof(g->cfg.name), "%s", name);
    g->cfg.hc = *hc;
    g->cfg.servers = g->scfg;
    g->cfg.nservers = n;
    for (size_t i = 0; i < n; i++) {
        struct slb_server_cfg *s = &g->scfg[i];
        snprintf(s->address, sizeof(s->address), "127.0.0.1");
        s->port = ports[i];
        struct sockaddr_in *sin = (struct sockaddr_in *)&s->addr;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(ports[i]);
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        s->addrlen = sizeof(*sin);
        s->weight = 1;
        g->srv[i] = calloc(1, sizeof(struct slb_srv_rt) + sizeof(struct slb_wcount));
        assert_non_null(g->srv[i]);
        snprintf(g->srv[i]->key, sizeof(g->srv[i]->key), "%s/127.0.0.1:%u", name, ports[i]);
        g->srv[i]->refs = 1;
        g->srv[i]->nworkers = 1;
        atomic_store(&g->srv[i]->healthy, SLB_HEALTH_UP);
    }
    fx->grt[gi].cfg = &g->cfg;
    fx->grt[gi].nservers = n;
    fx->grt[gi].srv = g->srv;
    if (fx->snap.ngroups < gi + 1)
        fx->snap.ngroups = gi + 1;
}

/* What the registry does when a server's runtime object goes away. */
static void srv_drop(struct slb_srv_rt **srv)
{
    slb_health_probe_cancel(*srv);
    free(*srv);
    *srv = NULL;
}

static void fixture_deinit(struct fixture *fx)
{
    slb_health_free(fx->h);
    for (size_t gi = 0; gi < MAX_GROUPS; gi++) {
        for (size_t i = 0; i < MAX_SERVERS; i++) {
            if (fx->g[gi].srv[i])
                srv_drop(&fx->g[gi].srv[i]);
        }
    }
    slb_loop_deinit(&fx->loop);
    /* Every probe socket is closed, whatever state its probe was in. */
    assert_int_equal(count_fds(), fx->fds_at_start);
}

static bool is_up(const struct slb_srv_rt *srv)
{
    return atomic_load(&srv->healthy) == SLB_HEALTH_UP;
}

/* Run the loop until cond holds or ms milliseconds have passed; the caller asserts cond. */
#define RUN_UNTIL(fx, cond, ms)                                                                    \
    do {                                                                                           \
        uint64_t end_ = slb_mono_ms() + (ms);                                                      \
        while (!(cond) && slb_mono_ms() < end_)                                                    \
            slb_loop_once(&(fx)->loop, 20);                                                        \
    } while (0)

static void run_for(struct fixture *fx, int ms)
{
    uint64_t end = slb_mono_ms() + (uint64_t)ms;
    while (slb_mono_ms() < end)
        slb_loop_once(&fx->loop, 20);
}

/* ---------------------------------------------------------------------------------------------
 * Tests
 * ------------------------------------------------------------------------------------------- */

/* tcp: a refused server goes down after unhealthy_threshold checks spaced by the interval, a
 * listening one stays up; it goes down when it stops listening and comes back after
 * healthy_threshold successes. */
static void test_tcp_checks(void **unused)
{
    struct fixture fx;
    fixture_init(&fx);
    struct acceptor a;
    acceptor_open(&fx.loop, &a, 0);
    int refused = tcp_socket(0, 0);
    uint16_t port_a = port_of(a.fd);
    uint16_t ports[] = {port_a, port_of(refused)};
    struct slb_health_cfg hc = hc_default(SLB_HC_TCP);
    group_add(&fx, 0, "web", &hc, ports, 2);
    struct slb_srv_rt *sa = fx.g[0].srv[0], *sb = fx.g[0].srv[1];

    uint64_t t0 = slb_mono_ms();
    slb_health_update(fx.h, &fx.snap);
    RUN_UNTIL(&fx, !is_up(sb), 4000);
    uint64_t took = slb_mono_ms() - t0;
    assert_false(is_up(sb));
    assert_int_equal(sb->fail_streak, 2);
    assert_int_equal(sb->ok_streak, 0);
    assert_string_equal(sb->last_error, "connect: Connection refused");
    /* Two checks one interval apart, not two back to back. */
    assert_true(took >= 950);
    /* sa's checks have their own phase in the interval (first checks are spread). */
    RUN_UNTIL(&fx, sa->ok_streak >= 2, 1500);
    assert_true(is_up(sa));
    assert_true(sa->ok_streak >= 2);
    assert_int_equal(sa->fail_streak, 0);
    assert_string_equal(sa->last_error, "");
    assert_true(a.accepted >= 1);

    /* A stops listening: down after two refused checks. */
    acceptor_close(&fx.loop, &a);
    RUN_UNTIL(&fx, !is_up(sa), 4000);
    assert_false(is_up(sa));
    assert_int_equal(sa->fail_streak, 2);
    assert_string_equal(sa->last_error, "connect: Connection refused");

    /* A listens again on its port: up after two successes, one is not enough. */
    acceptor_open(&fx.loop, &a, port_a);
    RUN_UNTIL(&fx, sa->ok_streak >= 1, 2500);
    assert_int_equal(sa->ok_streak, 1);
    assert_false(is_up(sa));
    RUN_UNTIL(&fx, is_up(sa), 2500);
    assert_true(is_up(sa));
    assert_int_equal(sa->ok_streak, 2);
    assert_int_equal(sa->fail_streak, 0);
    assert_string_equal(sa->last_error, "");
    assert_false(is_up(sb));

    acceptor_close(&fx.loop, &a);
    close(refused);
    fixture_deinit(&fx);
}

/* http: the status class decides; a silent server times out, a non-HTTP answer fails; the
 * request carries the configured method, uri and Host. A second group checks the port
 * override with HEAD and the server address as Host. */
static void test_http_checks(void **unused)
{
    struct fixture fx;
    fixture_init(&fx);
    struct responder r500, junk, ok;
    responder_open(&fx.loop, &r500,
                   "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n");
    responder_open(&fx.loop, &junk, "SSH-2.0-OpenSSH_9.2\r\n\r\n");
    responder_open(&fx.loop, &ok, "HTTP/1.0 301 Moved\r\nLocation: /x\r\n\r\n");
    int silent = tcp_socket(0, 16); /* connects succeed, nobody ever answers */
    int refused = tcp_socket(0, 0);

    struct slb_health_cfg hc = hc_default(SLB_HC_HTTP);
    hc.method = SLB_HC_GET;
    snprintf(hc.uri, sizeof(hc.uri), "/health?full=1");
    snprintf(hc.domain, sizeof(hc.domain), "example.test");
    uint16_t ports[] = {port_of(r500.fd), port_of(silent), port_of(junk.fd)};
    group_add(&fx, 0, "api", &hc, ports, 3);
    struct slb_srv_rt *s500 = fx.g[0].srv[0], *ssil = fx.g[0].srv[1], *sjunk = fx.g[0].srv[2];

    /* The server's own port refuses; only hc.port reaches the responder. */
    struct slb_health_cfg hc2 = hc_default(SLB_HC_HTTP);
    hc2.port = port_of(ok.fd);
    uint16_t ports2[] = {port_of(refused)};
    group_add(&fx, 1, "alt", &hc2, ports2, 1);
    struct slb_srv_rt *salt = fx.g[1].srv[0];
    atomic_store(&salt->healthy, SLB_HEALTH_DOWN);

    slb_health_update(fx.h, &fx.snap);
    RUN_UNTIL(&fx, !is_up(s500) && !is_up(ssil) && !is_up(sjunk) && is_up(salt), 5000);
    assert_false(is_up(s500));
    assert_string_equal(s500->last_error, "status 500");
    assert_false(is_up(ssil));
    assert_string_equal(ssil->last_error, "timeout");
    assert_false(is_up(sjunk));
    assert_string_equal(sjunk->last_error, "bad status line");
    assert_true(is_up(salt));
    assert_true(salt->ok_streak >= 2);

    assert_true(r500.nreq >= 2);
    assert_string_equal(r500.last_req, "GET /health?full=1 HTTP/1.1\r\nHost: example.test\r\n"
                                       "User-Agent: slbd-health\r\nConnection: close\r\n\r\n");
    assert_true(ok.nreq >= 2);
    assert_string_equal(ok.last_req, "HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     "User-Agent: slbd-health\r\nConnection: close\r\n\r\n");

    /* The failing server recovers: 2xx is in http_codes. */
    r500.reply = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    RUN_UNTIL(&fx, is_up(s500), 4000);
    assert_true(is_up(s500));
    assert_int_equal(s500->ok_streak, 2);
    assert_string_equal(s500->last_error, "");
    assert_false(is_up(ssil));

    responder_close(&fx.loop, &r500);
    responder_close(&fx.loop, &junk);
    responder_close(&fx.loop, &ok);
    close(silent);
    close(refused);
    fixture_deinit(&fx);
}

/* A group without health checks: its servers are up, their history is cleared, and nobody
 * connects to them. */
static void test_disabled_group(void **unused)
{
    struct fixture fx;
    fixture_init(&fx);
    struct acceptor a;
    acceptor_open(&fx.loop, &a, 0);
    uint16_t ports[] = {port_of(a.fd)};
    struct slb_health_cfg hc = hc_default(SLB_HC_TCP);
    hc.enabled = false;
    group_add(&fx, 0, "nohc", &hc, ports, 1);
    struct slb_srv_rt *s = fx.g[0].srv[0];
    /* As a previous configuration with checks might have left it. */
    atomic_store(&s->healthy, SLB_HEALTH_DOWN);
    s->fail_streak = 3;
    snprintf(s->last_error, sizeof(s->last_error), "timeout");

    slb_health_update(fx.h, &fx.snap);
    assert_true(is_up(s));
    assert_int_equal(s->fail_streak, 0);
    assert_string_equal(s->last_error, "");
    run_for(&fx, 350);
    assert_null(s->hc_probe);
    assert_int_equal(s->next_check_ms, 0);
    assert_int_equal(a.accepted, 0);
    assert_true(is_up(s));

    acceptor_close(&fx.loop, &a);
    fixture_deinit(&fx);
}

/* Probes in flight: no second probe starts while one runs even when the interval passed;
 * cancel releases one; free releases the rest, including a probe whose server left the
 * current snapshot. ASan and the fd count check that nothing leaks. */
static void test_cancel_and_free(void **unused)
{
    struct fixture fx;
    fixture_init(&fx);
    int silent1 = tcp_socket(0, 16), silent2 = tcp_socket(0, 16);
    struct slb_health_cfg hc = hc_default(SLB_HC_HTTP);
    hc.timeout_s = 5;
    uint16_t ports[] = {port_of(silent1), port_of(silent2)};
    group_add(&fx, 0, "slow", &hc, ports, 2);
    struct slb_srv_rt *s1 = fx.g[0].srv[0], *s2 = fx.g[0].srv[1];
    int fds_before = count_fds();

    slb_health_update(fx.h, &fx.snap);
    /* First checks come at a random point of the first interval (plus a tick). */
    RUN_UNTIL(&fx, s1->hc_probe && s2->hc_probe, 1300);
    assert_non_null(s1->hc_probe);
    assert_non_null(s2->hc_probe);
    void *p1 = s1->hc_probe;
    assert_int_equal(count_fds(), fds_before + 2);

    /* The registry frees s2's runtime object: its probe goes with it. */
    srv_drop(&fx.g[0].srv[1]);
    fx.grt[0].nservers = 1;
    assert_int_equal(count_fds(), fds_before + 1);
    run_for(&fx, 1300);
    /* Past the interval, but s1's probe is still waiting for its 5 s timeout. */
    assert_ptr_equal(s1->hc_probe, p1);
    assert_int_equal(s1->ok_streak + s1->fail_streak, 0);
    assert_true(is_up(s1));
    assert_int_equal(count_fds(), fds_before + 1);

    /* s1 left the configuration but its object is alive in an older snapshot: free must
     * still find and release its probe. */
    struct slb_snapshot empty = {0};
    slb_health_update(fx.h, &empty);
    slb_health_free(fx.h);
    fx.h = NULL;
    assert_null(s1->hc_probe);
    assert_int_equal(count_fds(), fds_before);
    /* Cancel of a server without a probe is a no-op. */
    slb_health_probe_cancel(s1);
    slb_health_probe_cancel(NULL);
    run_for(&fx, 50);
    assert_true(is_up(s1));

    close(silent1);
    close(silent2);
    fixture_deinit(&fx);
}

/* Passive checks: failed exchanges in a row eject a server (a success in between starts the
 * count again; our own shortage of descriptors and, without include_5xx, 5xx answers do not
 * count); the checker times the ejection and brings the server back, or down when its active
 * checks failed meanwhile. */
static void test_passive_ejection(void **unused)
{
    struct fixture fx;
    fixture_init(&fx);
    struct acceptor a;
    acceptor_open(&fx.loop, &a, 0);
    uint16_t ports[] = {port_of(a.fd)};
    struct slb_health_cfg hc = hc_default(SLB_HC_TCP);
    hc.enabled = false;
    hc.passive = (struct slb_passive_cfg){
        .enabled = true, .consecutive_failures = 3, .include_5xx = false, .ejection_s = 1};
    group_add(&fx, 0, "p", &hc, ports, 1);
    struct slb_srv_rt *s = fx.g[0].srv[0];

    /* Before the configuration is published to the checker, passive checks are off. */
    for (int i = 0; i < 5; i++)
        slb_health_observe(s, 0, SLB_XCHG_FAILED);
    assert_true(is_up(s));
    slb_health_update(fx.h, &fx.snap);

    slb_health_observe(s, 0, SLB_XCHG_FAILED);
    slb_health_observe(s, 0, SLB_XCHG_FAILED);
    slb_health_observe(s, 0, 200); /* a success: the count starts again */
    slb_health_observe(s, 0, SLB_XCHG_FAILED);
    slb_health_observe(s, 0, SLB_XCHG_FAILED);
    slb_health_observe(s, 0, -EMFILE); /* ours, not the server's */
    slb_health_observe(s, 0, 503);     /* include_5xx is off: an answer is a success */
    slb_health_observe(s, 0, -ECONNREFUSED);
    slb_health_observe(s, 0, -ECONNRESET);
    assert_true(is_up(s));
    slb_health_observe(s, 0, SLB_XCHG_FAILED);
    assert_int_equal(atomic_load(&s->healthy), SLB_HEALTH_EJECTED);
    assert_int_equal(slb_count_get(&s->w[0].v[SLB_SRV_EJECTIONS]), 1);
    /* More failures of exchanges already under way change nothing. */
    for (int i = 0; i < 5; i++)
        slb_health_observe(s, 0, SLB_XCHG_FAILED);
    assert_int_equal(slb_count_get(&s->w[0].v[SLB_SRV_EJECTIONS]), 1);

    /* Back after ejection_s (plus a tick or two). */
    uint64_t t0 = slb_mono_ms();
    RUN_UNTIL(&fx, is_up(s), 2500);
    assert_true(is_up(s));
    assert_true(slb_mono_ms() - t0 >= 900);
    assert_int_equal(atomic_load(&s->passive_fails), 0);

    /* With include_5xx, 5xx answers count. */
    fx.g[0].cfg.hc.passive.include_5xx = true;
    slb_health_update(fx.h, &fx.snap);
    for (int i = 0; i < 3; i++)
        slb_health_observe(s, 0, 502);
    assert_int_equal(atomic_load(&s->healthy), SLB_HEALTH_EJECTED);
    /* The active checks' verdict while it is ejected decides where it goes at the end. */
    s->active_down = true;
    RUN_UNTIL(&fx, atomic_load(&s->healthy) != SLB_HEALTH_EJECTED, 2500);
    assert_int_equal(atomic_load(&s->healthy), SLB_HEALTH_DOWN);

    /* Passive checks turned off: an ejection ends at the next tick, and nothing counts. */
    s->active_down = false;
    atomic_store(&s->healthy, SLB_HEALTH_UP);
    for (int i = 0; i < 3; i++)
        slb_health_observe(s, 0, SLB_XCHG_FAILED);
    assert_int_equal(atomic_load(&s->healthy), SLB_HEALTH_EJECTED);
    fx.g[0].cfg.hc.passive.enabled = false;
    slb_health_update(fx.h, &fx.snap);
    RUN_UNTIL(&fx, is_up(s), 500);
    assert_true(is_up(s));
    for (int i = 0; i < 5; i++)
        slb_health_observe(s, 0, SLB_XCHG_FAILED);
    assert_true(is_up(s));
    slb_health_observe(NULL, 0, SLB_XCHG_FAILED);

    acceptor_close(&fx.loop, &a);
    fixture_deinit(&fx);
}

/* A group of 5,000 servers: the first checks are spread over the interval (no burst at the
 * first tick), each within one interval of the update, and a second update keeps the
 * schedule of servers that already have one. */
#define SPREAD_N 5000
#define SPREAD_BUCKETS 10
static void test_first_checks_spread(void **unused)
{
    struct fixture fx;
    fixture_init(&fx);
    static struct slb_server_cfg scfg[SPREAD_N];
    static struct slb_srv_rt *srv[SPREAD_N];
    struct slb_group_cfg cfg = {.servers = scfg, .nservers = SPREAD_N};
    snprintf(cfg.name, sizeof(cfg.name), "big");
    cfg.hc = hc_default(SLB_HC_TCP);
    cfg.hc.interval_s = 10;
    for (size_t i = 0; i < SPREAD_N; i++) {
        srv[i] = calloc(1, sizeof(struct slb_srv_rt) + sizeof(struct slb_wcount));
        assert_non_null(srv[i]);
        snprintf(srv[i]->key, sizeof(srv[i]->key), "big/10.0.%zu.%zu:80", i / 250, i % 250);
        srv[i]->nworkers = 1;
        atomic_store(&srv[i]->healthy, SLB_HEALTH_UP);
    }
    fx.grt[0] = (struct slb_group_rt){.cfg = &cfg, .nservers = SPREAD_N, .srv = srv};
    fx.snap.ngroups = 1;

    uint64_t now = slb_loop_now(&fx.loop);
    slb_health_update(fx.h, &fx.snap);
    unsigned bucket[SPREAD_BUCKETS] = {0};
    for (size_t i = 0; i < SPREAD_N; i++) {
        uint64_t at = srv[i]->next_check_ms;
        assert_true(at > now && at <= now + 10000 + 1);
        bucket[(at - now - 1) * SPREAD_BUCKETS / 10000]++;
    }
    /* 500 expected per second of the interval; a burst would put them all in the first. */
    for (size_t b = 0; b < SPREAD_BUCKETS; b++)
        assert_true(bucket[b] > 380 && bucket[b] < 620);

    uint64_t first = srv[17]->next_check_ms;
    slb_health_update(fx.h, &fx.snap);
    assert_true(srv[17]->next_check_ms == first);

    slb_health_update(fx.h, NULL);
    for (size_t i = 0; i < SPREAD_N; i++) {
        free(srv[i]);
        srv[i] = NULL;
    }
    fixture_deinit(&fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tcp_checks),       cmocka_unit_test(test_http_checks),
        cmocka_unit_test(test_disabled_group),   cmocka_unit_test(test_cancel_and_free),
        cmocka_unit_test(test_passive_ejection), cmocka_unit_test(test_first_checks_spread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
