/* SPDX-License-Identifier: Apache-2.0 */
/* The outbound HTTP client on an slbd loop against a small scripted HTTP/1.1 server running
 * in a thread of the test: buffered and streamed bodies, timeouts, refused connections, size
 * limits, cancelling (also from inside a chunk callback) and tearing down with requests in
 * flight. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "core/err.h"
#include "net/httpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* --- the scripted server: one thread per connection, Connection: close --- */

static int srv_fd = -1;
static int srv_port;
static char base[64];

static void send_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void send_str(int fd, const char *s)
{
    send_all(fd, s, strlen(s));
}

static void *conn_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char req[8192];
    size_t n = 0;
    char *end = NULL;
    while (n < sizeof(req) - 1 && !end) {
        ssize_t r = recv(fd, req + n, sizeof(req) - 1 - n, 0);
        if (r <= 0)
            goto out;
        n += (size_t)r;
        req[n] = '\0';
        end = strstr(req, "\r\n\r\n");
    }
    if (!end)
        goto out;
    const char *cl = strcasestr(req, "content-length:");
    size_t body = cl ? strtoul(cl + 15, NULL, 10) : 0;
    while (n < (size_t)(end + 4 - req) + body && n < sizeof(req) - 1) {
        ssize_t r = recv(fd, req + n, sizeof(req) - 1 - n, 0);
        if (r <= 0)
            goto out;
        n += (size_t)r;
        req[n] = '\0';
    }
    char head[256];
    if (strstr(req, " /hello ")) {
        send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nReplay-Nonce: n-1\r\n"
                     "Link: <a>;rel=up\r\nLink: <b>;rel=alternate\r\nConnection: close\r\n\r\n"
                     "hello");
    } else if (strstr(req, " /echo ")) {
        snprintf(head, sizeof(head),
                 "HTTP/1.1 201 Created\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", n);
        send_str(fd, head);
        send_all(fd, req, n);
    } else if (strstr(req, " /stream ")) {
        send_str(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        for (int i = 1; i <= 3; i++) {
            usleep(30000);
            snprintf(head, sizeof(head), "6\r\nline%d\n\r\n", i);
            send_str(fd, head);
        }
        send_str(fd, "0\r\n\r\n");
    } else if (strstr(req, " /forever ")) {
        send_str(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        for (int i = 0; i < 200; i++) {
            usleep(20000);
            if (send(fd, "4\r\ntick\r\n", 9, MSG_NOSIGNAL) != 9)
                break;
        }
    } else if (strstr(req, " /stall ")) {
        /* One chunk, then silence with the connection open. */
        send_str(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     "5\r\nfirst\r\n");
        while (recv(fd, req, sizeof(req), 0) > 0)
            ;
    } else if (strstr(req, " /big ")) {
        send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n");
        char x[1000];
        memset(x, 'x', sizeof(x));
        for (int i = 0; i < 100; i++)
            send_all(fd, x, sizeof(x));
    } else if (strstr(req, " /error ")) {
        send_str(fd, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n"
                     "Connection: close\r\n\r\ndown");
    } else {
        /* /slow and anything else: never answer; wait for the client to give up. */
        while (recv(fd, req, sizeof(req), 0) > 0)
            ;
    }
out:
    close(fd);
    return NULL;
}

static void *srv_main(void *arg)
{
    for (;;) {
        int fd = accept(srv_fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        pthread_t t;
        if (pthread_create(&t, NULL, conn_main, (void *)(intptr_t)fd) == 0)
            pthread_detach(t);
        else
            close(fd);
    }
}

static int group_setup(void **state)
{
    srv_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (srv_fd < 0 || bind(srv_fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        listen(srv_fd, 64) < 0 || getsockname(srv_fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    srv_port = ntohs(a.sin_port);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", srv_port);
    pthread_t t;
    if (pthread_create(&t, NULL, srv_main, NULL) != 0)
        return -1;
    pthread_detach(t);
    return 0;
}

static int group_teardown(void **state)
{
    shutdown(srv_fd, SHUT_RDWR);
    close(srv_fd);
    return 0;
}

/* --- the client side --- */

static struct slb_loop loop;
static struct slb_httpc http;

static int setup(void **state)
{
    if (slb_loop_init(&loop) != 0)
        return -1;
    return slb_httpc_init(&http, &loop);
}

static int teardown(void **state)
{
    slb_httpc_deinit(&http);
    slb_loop_deinit(&loop);
    return 0;
}

struct got {
    bool done;
    int rc;
    long status;
    bool connected;
    char body[4096];
    size_t body_len;
    char error[256];
    char nonce[64], link[64];
    bool has_nonce, has_link, has_missing;
    char chunks[4096];
    size_t chunks_len;
    int nchunks;
    long chunk_status;
    int cancel_at; /* cancel the request inside chunk number cancel_at */
    int fail_at;   /* return an error from chunk number fail_at */
    struct slb_httpc_req *req;
};

static void done_cb(struct slb_httpc_req *req, const struct slb_httpc_result *res, void *data)
{
    struct got *g = data;
    g->done = true;
    g->rc = res->rc;
    g->status = res->status;
    g->connected = res->connected;
    g->body_len = res->body_len;
    memcpy(g->body, res->body, res->body_len < sizeof(g->body) - 1 ? res->body_len + 1 : 0);
    snprintf(g->error, sizeof(g->error), "%s", res->error);
    char missing[8];
    g->has_nonce = slb_httpc_header(req, "replay-nonce", g->nonce, sizeof(g->nonce));
    g->has_link = slb_httpc_header(req, "Link", g->link, sizeof(g->link));
    g->has_missing = slb_httpc_header(req, "Location", missing, sizeof(missing));
}

static int chunk_cb(struct slb_httpc_req *req, long status, const char *buf, size_t len, void *data)
{
    struct got *g = data;
    g->nchunks++;
    g->chunk_status = status;
    if (g->chunks_len + len < sizeof(g->chunks)) {
        memcpy(g->chunks + g->chunks_len, buf, len);
        g->chunks_len += len;
    }
    if (g->nchunks == g->cancel_at)
        slb_httpc_cancel(req);
    if (g->nchunks == g->fail_at)
        return -ECANCELED;
    return 0;
}

static bool run_until(const bool *flag, int ms)
{
    slb_loop_update_time(&loop);
    uint64_t end = slb_loop_now(&loop) + (uint64_t)ms;
    while (!*flag && slb_loop_now(&loop) < end)
        slb_loop_once(&loop, 20);
    return *flag;
}

static void start(struct got *g, const char *path, struct slb_httpc_opts *o)
{
    char url[128];
    snprintf(url, sizeof(url), "%s%s", base, path);
    o->url = url;
    o->on_done = done_cb;
    o->data = g;
    assert_int_equal(slb_httpc_start(&http, o, &g->req), 0);
    assert_non_null(g->req);
}

static void test_buffered(void **state)
{
    struct got g = {0}, e = {0};
    struct slb_httpc_opts o = {.timeout_ms = 5000};
    start(&g, "/hello", &o);
    assert_true(run_until(&g.done, 5000));
    assert_int_equal(g.rc, 0);
    assert_int_equal(g.status, 200);
    assert_true(g.connected);
    assert_string_equal(g.body, "hello");
    assert_string_equal(g.error, "");
    /* Response headers for the done callback: any case, the first of repeated ones. */
    assert_true(g.has_nonce);
    assert_string_equal(g.nonce, "n-1");
    assert_true(g.has_link);
    assert_string_equal(g.link, "<a>;rel=up");
    assert_false(g.has_missing);

    /* The method, headers and body go out as given; no Expect: round trip. */
    const char *hdrs[] = {"X-Test: yes", "Content-Type: application/json", NULL};
    struct slb_httpc_opts p = {
        .method = "PUT", .headers = hdrs, .body = "{\"a\":1}", .body_len = 7, .timeout_ms = 5000};
    start(&e, "/echo", &p);
    assert_true(run_until(&e.done, 5000));
    assert_int_equal(e.rc, 0);
    assert_int_equal(e.status, 201);
    assert_non_null(strstr(e.body, "PUT /echo HTTP/1.1\r\n"));
    assert_non_null(strstr(e.body, "X-Test: yes\r\n"));
    assert_non_null(strstr(e.body, "\r\n\r\n{\"a\":1}"));
    assert_null(strstr(e.body, "Expect"));

    /* A 5xx is a response like any other: rc 0, the status and the body. */
    struct got f = {0};
    struct slb_httpc_opts q = {.timeout_ms = 5000};
    start(&f, "/error", &q);
    assert_true(run_until(&f.done, 5000));
    assert_int_equal(f.rc, 0);
    assert_int_equal(f.status, 503);
    assert_string_equal(f.body, "down");
}

static void test_streamed(void **state)
{
    struct got g = {0};
    struct slb_httpc_opts o = {.on_chunk = chunk_cb};
    start(&g, "/stream", &o);
    assert_true(run_until(&g.done, 5000));
    assert_int_equal(g.rc, 0);
    assert_int_equal(g.status, 200);
    assert_int_equal(g.chunk_status, 200);
    assert_true(g.nchunks >= 1);
    g.chunks[g.chunks_len] = '\0';
    assert_string_equal(g.chunks, "line1\nline2\nline3\n");
    assert_int_equal(g.body_len, 0);
}

static void test_timeout_and_refused(void **state)
{
    struct got g = {0};
    struct slb_httpc_opts o = {.timeout_ms = 300};
    slb_loop_update_time(&loop);
    uint64_t t0 = slb_loop_now(&loop);
    start(&g, "/slow", &o);
    assert_true(run_until(&g.done, 5000));
    uint64_t took = slb_loop_now(&loop) - t0;
    assert_int_equal(g.rc, -ETIMEDOUT);
    assert_true(g.connected);
    assert_true(took >= 250 && took < 2000);
    assert_true(strlen(g.error) > 0);

    /* Nobody listens: refused, and the request never left. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(a.sin_port));
    struct got r = {0};
    struct slb_httpc_opts p = {.url = url, .timeout_ms = 2000, .on_done = done_cb, .data = &r};
    assert_int_equal(slb_httpc_start(&http, &p, NULL), 0);
    assert_true(run_until(&r.done, 5000));
    assert_int_equal(r.rc, -ECONNREFUSED);
    assert_false(r.connected);

    /* Only http and https. */
    struct got u = {0};
    struct slb_httpc_opts q = {.url = "file:///etc/passwd", .on_done = done_cb, .data = &u};
    assert_int_equal(slb_httpc_start(&http, &q, NULL), 0);
    assert_true(run_until(&u.done, 5000));
    assert_int_equal(u.rc, SLB_EINVAL);
}

static void test_idle_stream(void **state)
{
    /* A stream that goes silent without closing ends after the idle timeout; no overall
     * timeout is set. */
    struct got g = {0};
    struct slb_httpc_opts o = {.on_chunk = chunk_cb, .idle_timeout_ms = 1000};
    slb_loop_update_time(&loop);
    uint64_t t0 = slb_loop_now(&loop);
    start(&g, "/stall", &o);
    assert_true(run_until(&g.done, 5000));
    uint64_t took = slb_loop_now(&loop) - t0;
    assert_int_equal(g.rc, -ETIMEDOUT);
    assert_int_equal(g.nchunks, 1);
    assert_true(took >= 900 && took < 3500);
}

static void test_body_limit(void **state)
{
    struct got g = {0};
    struct slb_httpc_opts o = {.timeout_ms = 5000, .max_body = 1000};
    start(&g, "/big", &o);
    assert_true(run_until(&g.done, 5000));
    assert_int_equal(g.rc, SLB_ETOOBIG);
    struct got h = {0};
    struct slb_httpc_opts p = {.timeout_ms = 5000};
    start(&h, "/big", &p);
    assert_true(run_until(&h.done, 5000));
    assert_int_equal(h.rc, 0);
    assert_int_equal(h.body_len, 100000);
}

static void test_cancel(void **state)
{
    /* Cancelled from inside its own chunk callback: no more chunks, no done callback. */
    struct got g = {.cancel_at = 2};
    struct slb_httpc_opts o = {.on_chunk = chunk_cb};
    start(&g, "/forever", &o);
    bool never = false;
    run_until(&never, 400);
    assert_int_equal(g.nchunks, 2);
    assert_false(g.done);

    /* A chunk callback's error ends the transfer with that code. */
    struct got f = {.fail_at = 3};
    struct slb_httpc_opts p = {.on_chunk = chunk_cb};
    start(&f, "/forever", &p);
    assert_true(run_until(&f.done, 5000));
    assert_int_equal(f.rc, -ECANCELED);
    assert_int_equal(f.nchunks, 3);

    /* Cancelled before the loop ran at all. */
    struct got c = {0};
    struct slb_httpc_opts q = {.timeout_ms = 5000};
    start(&c, "/hello", &q);
    slb_httpc_cancel(c.req);
    run_until(&never, 200);
    assert_false(c.done);
    assert_int_equal(http.nreqs, 0);
}

static void test_many_then_deinit(void **state)
{
    struct got g[20];
    memset(g, 0, sizeof(g));
    for (int i = 0; i < 20; i++) {
        struct slb_httpc_opts o = {.timeout_ms = 5000};
        start(&g[i], "/hello", &o);
    }
    for (int i = 0; i < 20; i++) {
        assert_true(run_until(&g[i].done, 5000));
        assert_int_equal(g[i].status, 200);
    }
    /* Tearing down with requests in flight calls nothing back and frees everything (the
     * sanitizer build checks the latter). */
    struct got s = {0}, t = {0};
    struct slb_httpc_opts o = {.timeout_ms = 5000};
    start(&s, "/slow", &o);
    struct slb_httpc_opts p = {.on_chunk = chunk_cb};
    start(&t, "/forever", &p);
    bool never = false;
    run_until(&never, 100);
    slb_httpc_cancel(s.req);
    slb_httpc_deinit(&http);
    run_until(&never, 100);
    assert_false(s.done);
    assert_false(t.done);
    assert_int_equal(slb_httpc_init(&http, &loop), 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_buffered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streamed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_and_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_then_deinit, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
