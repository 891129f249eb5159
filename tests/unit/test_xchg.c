/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the exchange steps both client protocols share (http/xchg.c: counters and
 * the request timeout; http/exchange.c: the response body's framing, the timer, the gzip
 * filter's data path). */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "http/exchange.h"
#include "http/xchg.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static uint64_t get(struct slb_wcount *w, int i)
{
    return atomic_load(&w->v[i]);
}

static void test_count_status_and_undo(void **state)
{
    static struct slb_wcount lis;
    memset(&lis, 0, sizeof(lis));
    slb_xchg_count_status(&lis, 503, true, 1);
    slb_xchg_count_status(&lis, 200, false, 1);
    assert_int_equal(get(&lis, SLB_LIS_REQS), 2);
    assert_int_equal(get(&lis, SLB_LIS_REQ_1XX + 4), 1);
    assert_int_equal(get(&lis, SLB_LIS_REQ_1XX + 1), 1);
    /* 5xx by source: slbd's own answer or a backend's. */
    assert_int_equal(get(&lis, SLB_LIS_5XX_LOCAL), 1);
    assert_int_equal(get(&lis, SLB_LIS_5XX_BACKEND), 0);
    slb_xchg_count_status(&lis, 502, false, 1);
    assert_int_equal(get(&lis, SLB_LIS_5XX_BACKEND), 1);
    slb_xchg_count_status(&lis, 502, false, -1);
    assert_int_equal(get(&lis, SLB_LIS_5XX_BACKEND), 0);
    /* A backend's head replaced by our error before it went out is taken back. */
    slb_xchg_count_status(&lis, 200, false, -1);
    assert_int_equal(get(&lis, SLB_LIS_REQS), 1);
    assert_int_equal(get(&lis, SLB_LIS_REQ_1XX + 1), 0);
    /* A status outside the classes counts as a request only. */
    slb_xchg_count_status(&lis, 99, false, 1);
    assert_int_equal(get(&lis, SLB_LIS_REQS), 2);
}

static void test_count_head(void **state)
{
    static struct slb_wcount lis, srv;
    memset(&lis, 0, sizeof(lis));
    memset(&srv, 0, sizeof(srv));
    uint64_t sent = 0;
    slb_xchg_count_head(&lis, &srv, 502, &sent, 5000);
    slb_xchg_count_head(&lis, &srv, 204, &sent, 5000);
    assert_int_equal(get(&srv, SLB_SRV_REQS), 2);
    assert_int_equal(get(&srv, SLB_SRV_FAIL + SLB_SRV_FAIL_STATUS_5XX), 1);
    assert_int_equal(get(&lis, SLB_LIS_REQS), 2);
    assert_int_equal(get(&lis, SLB_LIS_5XX_BACKEND), 1); /* a backend's 5xx, not slbd's */
    assert_int_equal(get(&lis, SLB_LIS_5XX_LOCAL), 0);
    sent = 1;
    slb_xchg_count_head(&lis, &srv, 200, &sent, 5000);
    assert_int_equal(sent, 0); /* observed once */
}

static void test_request_timeout(void **state)
{
    struct slb_listener_cfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.request_timeout_s = 30;
    uint64_t deadline = 0;
    /* The fixed deadline starts at the first arming and is not pushed back by later ones. */
    assert_int_equal(slb_xchg_deadline_in(&cfg, &deadline, 1000), 30000);
    assert_int_equal(deadline, 31000);
    assert_int_equal(slb_xchg_deadline_in(&cfg, &deadline, 21000), 10000);
    assert_int_equal(slb_xchg_deadline_in(&cfg, &deadline, 40000), 0);
    /* Until the request is sent and the head is here the deadline holds; then inactivity. */
    assert_int_equal(slb_xchg_due(&cfg, true, deadline, 35000), 31000);
    assert_int_equal(slb_xchg_due(&cfg, false, deadline, 35000), 65000);
    assert_string_equal(slb_xchg_timeout_why(true, false), "response timeout");
    assert_string_equal(slb_xchg_timeout_why(false, true), "request body timeout");
    assert_string_equal(slb_xchg_timeout_why(true, true), "response body stalled");
}

static void test_fresh_only(void **state)
{
    struct slb_listener_cfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.backend_reuse = SLB_REUSE_SAFE;
    /* A first request slbd cannot send again itself gets a new connection. */
    assert_true(slb_xchg_fresh_only(&cfg, false, SLB_HTTP_POST, false));
    assert_true(slb_xchg_fresh_only(&cfg, false, SLB_HTTP_PATCH, false));
    assert_true(slb_xchg_fresh_only(&cfg, false, SLB_HTTP_CONNECT, false));
    assert_true(slb_xchg_fresh_only(&cfg, false, SLB_HTTP_OTHER, false));
    assert_true(slb_xchg_fresh_only(&cfg, false, SLB_HTTP_PUT, true));
    assert_true(slb_xchg_fresh_only(&cfg, false, SLB_HTTP_GET, true));
    /* An idempotent one without a body may take a pooled one: a stale one is retried. */
    assert_false(slb_xchg_fresh_only(&cfg, false, SLB_HTTP_GET, false));
    assert_false(slb_xchg_fresh_only(&cfg, false, SLB_HTTP_HEAD, false));
    assert_false(slb_xchg_fresh_only(&cfg, false, SLB_HTTP_OPTIONS, false));
    assert_false(slb_xchg_fresh_only(&cfg, false, SLB_HTTP_TRACE, false));
    assert_false(slb_xchg_fresh_only(&cfg, false, SLB_HTTP_PUT, false));
    assert_false(slb_xchg_fresh_only(&cfg, false, SLB_HTTP_DELETE, false));
    /* Once a request of the client connection has ended, any may. */
    assert_false(slb_xchg_fresh_only(&cfg, true, SLB_HTTP_POST, true));
    cfg.backend_reuse = SLB_REUSE_ALWAYS;
    assert_false(slb_xchg_fresh_only(&cfg, false, SLB_HTTP_POST, true));
}

/* Bytes arriving from a backend, behind those already in up->in. */
static void arrive(struct http_up *up, const char *p)
{
    assert_int_equal(slb_buf_prepare(&up->in), 0);
    memcpy(up->in.data + up->in.off + up->in.len, p, strlen(p));
    up->in.len += strlen(p);
}

/* The sink takes n ready bytes (they must be these). */
static void take(struct slb_exchange *e, const char *want)
{
    size_t n = strlen(want);
    assert_true(e->resp_ready >= n);
    assert_memory_equal(e->up->in.data + e->up->in.off, want, n);
    slb_buf_consume(&e->up->in, n);
    e->resp_ready -= n;
}

static void test_body_length(void **state)
{
    struct http_up up;
    memset(&up, 0, sizeof(up));
    struct slb_exchange e = {
        .up = &up, .resp_head_done = true, .resp_body = SLB_BODY_LENGTH, .resp_remaining = 5};
    arrive(&up, "ab");
    assert_int_equal(slb_exchange_body_ready(&e, NULL), 0);
    assert_int_equal(e.resp_ready, 2);
    assert_false(e.resp_done);
    take(&e, "ab");
    /* Bytes after the body (a backend's extra bytes) are never the sink's. */
    arrive(&up, "cdeXY");
    assert_int_equal(slb_exchange_body_ready(&e, NULL), 0);
    assert_true(e.resp_done);
    take(&e, "cde");
    assert_int_equal(e.resp_ready, 0);
    assert_int_equal(up.in.len, 2);
    slb_buf_release(&up.in);
}

static void test_body_chunked(void **state)
{
    struct http_up up;
    memset(&up, 0, sizeof(up));
    struct slb_exchange e = {.up = &up, .resp_head_done = true, .resp_body = SLB_BODY_CHUNKED};
    slb_rechunk_init(&e.resp_chunk);
    struct slb_hbuf trailers = {0};
    arrive(&up, "3\r\nabc\r\n2\r");
    assert_int_equal(slb_exchange_body_ready(&e, &trailers), 0);
    take(&e, "abc");
    arrive(&up, "\nde\r\n0\r\nX-T: 1\r\n\r\n");
    assert_int_equal(slb_exchange_body_ready(&e, &trailers), 0);
    assert_true(e.resp_done);
    take(&e, "de");
    /* The trailer section is the sink's (HTTP/2 sends it as HEADERS). */
    assert_true(trailers.len > 2);
    assert_non_null(memmem(trailers.p, trailers.len, "X-T: 1", 6));
    slb_hbuf_free(&trailers);
    slb_buf_release(&up.in);

    /* Invalid framing. */
    memset(&up, 0, sizeof(up));
    struct slb_exchange bad = {.up = &up, .resp_head_done = true, .resp_body = SLB_BODY_CHUNKED};
    slb_rechunk_init(&bad.resp_chunk);
    arrive(&up, "zz\r\n");
    assert_int_equal(slb_exchange_body_ready(&bad, NULL), -1);
    slb_buf_release(&up.in);
}

static void test_body_until_close_and_tunnel(void **state)
{
    struct http_up up;
    memset(&up, 0, sizeof(up));
    struct slb_exchange e = {.up = &up, .resp_head_done = true, .resp_body = SLB_BODY_UNTIL_CLOSE};
    arrive(&up, "anything");
    assert_int_equal(slb_exchange_body_ready(&e, NULL), 0);
    assert_int_equal(e.resp_ready, 8);
    assert_false(e.resp_done); /* the backend's close ends it */
    take(&e, "anything");
    /* A tunnel takes whatever comes, whatever the head said. */
    e.resp_body = SLB_BODY_LENGTH;
    e.tunnel = true;
    arrive(&up, "xyz");
    assert_int_equal(slb_exchange_body_ready(&e, NULL), 0);
    take(&e, "xyz");
    /* Nothing before the head. */
    e.resp_head_done = false;
    arrive(&up, "q");
    assert_int_equal(slb_exchange_body_ready(&e, NULL), 0);
    assert_int_equal(e.resp_ready, 0);
    slb_buf_release(&up.in);
}

static void test_exchange_timer(void **state)
{
    struct slb_listener_cfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.request_timeout_s = 30;
    struct slb_listener_rt l;
    memset(&l, 0, sizeof(l));
    l.cfg = &cfg;
    struct slb_exchange e = {.l = &l, .exchange_deadline_ms = 31000, .last_io_ms = 20000};
    /* Fixed deadline until the request is sent and the head is here. */
    assert_int_equal(slb_exchange_timer_left(&e, 30000), 1000);
    assert_int_equal(slb_exchange_timer_left(&e, 31000), 0);
    e.req_done = true;
    assert_int_equal(slb_exchange_timer_left(&e, 31000), 0);
    /* Then inactivity: the last bytes moved plus the timeout. */
    e.resp_head_done = true;
    assert_int_equal(slb_exchange_timer_left(&e, 31000), 19000);
    /* A tunnel is only ever an inactivity limit. */
    e.req_done = e.resp_head_done = false;
    e.tunnel = true;
    assert_int_equal(slb_exchange_timer_left(&e, 49000), 1000);
    assert_int_equal(slb_exchange_timer_left(&e, 50000), 0);
}

/* The gzip filter takes the ready body bytes from the backend buffer, says when nothing can
 * move, ends with the gzip trailer once the body is all in, and then counts and gives its
 * compressor back to the worker's pool. */
static void test_gzip_filter(void **state)
{
    static struct slb_http_worker hw;
    memset(&hw, 0, sizeof(hw));
    struct slb_lis_rt *stats = calloc(1, sizeof(*stats) + 2 * sizeof(struct slb_wcount));
    assert_non_null(stats);
    struct slb_listener_rt l;
    memset(&l, 0, sizeof(l));
    l.stats = stats;
    struct http_up up;
    memset(&up, 0, sizeof(up));
    char body[4001];
    for (size_t i = 0; i < 4000; i++)
        body[i] = (char)('a' + i % 7);
    body[4000] = 0;
    struct slb_exchange e = {.up = &up,
                             .hw = &hw,
                             .l = &l,
                             .resp_head_done = true,
                             .resp_body = SLB_BODY_LENGTH,
                             .resp_remaining = 4000};
    e.gz = slb_gzip_take(&hw.gz_pool);
    assert_non_null(e.gz);
    e.resp_gzip = true;
    static unsigned char out[16384];
    size_t total = 0, made;
    body[2500] = 0;
    arrive(&up, body);
    assert_int_equal(slb_exchange_body_ready(&e, NULL), 0);
    assert_int_equal(slb_exchange_gzip_run(&e, out, sizeof(out), &made), 0);
    total += made;
    assert_int_equal(e.resp_ready, 0); /* all taken from the backend buffer */
    assert_int_equal(up.in.len, 0);
    /* Nothing ready and the body not all in: nothing moves. */
    assert_int_equal(slb_exchange_gzip_run(&e, out + total, sizeof(out) - total, &made), 2);
    assert_int_equal(made, 0);
    body[2500] = 'a' + 2500 % 7;
    arrive(&up, body + 2500);
    assert_int_equal(slb_exchange_body_ready(&e, NULL), 0);
    assert_true(e.resp_done);
    int rc;
    while ((rc = slb_exchange_gzip_run(&e, out + total, sizeof(out) - total, &made)) == 0)
        total += made;
    assert_int_equal(rc, 1);
    total += made;
    assert_null(e.gz);
    assert_int_equal(hw.gz_pool.n, 1);
    assert_int_equal(get(&stats->w[0], SLB_LIS_GZIP_IN), 4000);
    assert_int_equal(get(&stats->w[0], SLB_LIS_GZIP_OUT), total);
    /* Without a compressor: done, and dropping it again is harmless. */
    assert_int_equal(slb_exchange_gzip_run(&e, out, sizeof(out), &made), 1);
    slb_exchange_gzip_drop(&e);
    /* The output is the body, gzipped. */
    char plain[4096];
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    assert_int_equal(inflateInit2(&zs, 16 + 15), Z_OK);
    zs.next_in = out;
    zs.avail_in = (uInt)total;
    zs.next_out = (unsigned char *)plain;
    zs.avail_out = sizeof(plain);
    assert_int_equal(inflate(&zs, Z_FINISH), Z_STREAM_END);
    assert_int_equal(zs.total_out, 4000);
    assert_memory_equal(plain, body, 4000);
    inflateEnd(&zs);
    slb_gzip_pool_drain(&hw.gz_pool);
    slb_buf_release(&up.in);
    free(stats);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_count_status_and_undo),
        cmocka_unit_test(test_count_head),
        cmocka_unit_test(test_request_timeout),
        cmocka_unit_test(test_fresh_only),
        cmocka_unit_test(test_body_length),
        cmocka_unit_test(test_body_chunked),
        cmocka_unit_test(test_body_until_close_and_tunnel),
        cmocka_unit_test(test_exchange_timer),
        cmocka_unit_test(test_gzip_filter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
