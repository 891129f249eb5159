/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the decision step both client protocols share (http/decide.c). */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "http/decide.h"

#include <stdlib.h>
#include <string.h>

/* A listener with a group of n servers, as the worker sees it. */
struct fixture {
    struct slb_listener_cfg cfg;
    struct slb_listener_rt l;
    struct slb_group_rt g;
    struct slb_wgroup wg;
    struct slb_http_msg m;
    struct slb_http_decision d;
};

static struct fixture *fx(size_t nservers)
{
    static struct fixture f;
    memset(&f, 0, sizeof(f));
    f.l.cfg = &f.cfg;
    f.g.nservers = nservers;
    f.wg.g = &f.g;
    return &f;
}

static void decide(struct fixture *f, const char *raw, bool group)
{
    assert_true(slb_http_parse_request(raw, strlen(raw), NULL, &f->m) > 0);
    slb_http_decide(&f->d, &f->l, NULL, group ? &f->wg : NULL, NULL, NULL, &f->m);
}

static void test_forward_to_group(void **state)
{
    struct fixture *f = fx(2);
    decide(f, "GET /a HTTP/1.1\r\nHost: x\r\nCookie: SLB=abc\r\n\r\n", true);
    assert_int_equal(f->d.status, 0);
    assert_ptr_equal(f->d.wg, &f->wg);
    assert_int_equal(f->d.sticky.len, 0); /* no sticky sessions: the cookie is not looked at */
}

static void test_sticky_cookie_found(void **state)
{
    struct fixture *f = fx(2);
    f->cfg.sticky = SLB_STICKY_INSERT;
    strcpy(f->cfg.sticky_cookie, "SLB");
    decide(f, "GET /a HTTP/1.1\r\nHost: x\r\nCookie: a=1; SLB=abc; b=2\r\n\r\n", true);
    assert_int_equal(f->d.status, 0);
    assert_int_equal(f->d.sticky.len, 3);
    assert_memory_equal(f->d.sticky.p, "abc", 3);
}

static void test_connect_405_closes(void **state)
{
    struct fixture *f = fx(2);
    decide(f, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", true);
    assert_int_equal(f->d.status, 405);
    assert_true(f->d.close);
    assert_non_null(strstr(f->d.extra, "Allow: GET"));
    assert_null(f->d.wg);
}

static void test_expect_417_only_on_11(void **state)
{
    struct fixture *f = fx(2);
    decide(f, "POST / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 1\r\n\r\n", true);
    assert_int_equal(f->d.status, 417);
    assert_true(f->d.close);
    decide(f, "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
           true);
    assert_int_equal(f->d.status, 0);
    /* HTTP/1.0 has no Expect: forwarded. */
    decide(f, "POST / HTTP/1.0\r\nHost: x\r\nExpect: magic\r\nContent-Length: 1\r\n\r\n", true);
    assert_int_equal(f->d.status, 0);
}

static void test_redirect_301_keeps_path(void **state)
{
    struct fixture *f = fx(0);
    strcpy(f->cfg.redirect_to, "https://example.com");
    decide(f, "GET /a/b?c=d HTTP/1.1\r\nHost: x\r\n\r\n", false);
    assert_int_equal(f->d.status, 301);
    assert_false(f->d.close);
    assert_string_equal(f->d.extra, "Location: https://example.com/a/b?c=d\r\n");
    /* An absolute-form target gives up its authority; an empty path becomes "/". */
    decide(f, "GET http://x?q HTTP/1.1\r\nHost: x\r\n\r\n", false);
    assert_string_equal(f->d.extra, "Location: https://example.com/?q\r\n");
    decide(f, "GET http://x/p HTTP/1.1\r\nHost: x\r\n\r\n", false);
    assert_string_equal(f->d.extra, "Location: https://example.com/p\r\n");
}

static void test_connect_before_redirect(void **state)
{
    struct fixture *f = fx(0);
    strcpy(f->cfg.redirect_to, "https://example.com");
    decide(f, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", false);
    assert_int_equal(f->d.status, 405);
}

static void test_no_group_or_no_server_503(void **state)
{
    struct fixture *f = fx(0);
    decide(f, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", true);
    assert_int_equal(f->d.status, 503);
    assert_false(f->d.close);
    assert_null(f->d.wg);
    f = fx(3);
    decide(f, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", false);
    assert_int_equal(f->d.status, 503);
}

static void test_plain_http_never_misdirected(void **state)
{
    /* 421 needs the TLS handshake's site (covered in test_tls and the e2e tests); without
     * TLS any Host is forwarded. */
    struct fixture *f = fx(1);
    decide(f, "GET / HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n", true);
    assert_int_equal(f->d.status, 0);
}

/* limits.requests_per_s: a tenth of a second's worth goes through, the rest is 503 with
 * Retry-After, counted on the listener. */
static void test_requests_per_s_503(void **state)
{
    struct fixture *f = fx(2);
    struct slb_worker w = {.id = 0};
    struct slb_wsnap ws = {.worker = &w};
    struct slb_lis_rt *st = calloc(1, sizeof(*st) + 2 * sizeof(struct slb_wcount));
    assert_non_null(st);
    st->nworkers = 1;
    st->req_rate = slb_ratelimit_new(1);
    f->l.stats = st;
    f->cfg.requests_per_s = 100;
    const char *req = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    int ok = 0, limited = 0;
    for (int i = 0; i < 30; i++) {
        assert_true(slb_http_parse_request(req, strlen(req), NULL, &f->m) > 0);
        slb_http_decide(&f->d, &f->l, &ws, &f->wg, NULL, NULL, &f->m);
        if (f->d.status == 0) {
            ok++;
            continue;
        }
        assert_int_equal(f->d.status, 503);
        assert_true(f->d.limited);
        assert_string_equal(f->d.extra, "Retry-After: 1\r\n");
        limited++;
    }
    assert_int_equal(ok, 10);
    assert_int_equal(slb_count_get(&st->w[0].v[SLB_LIS_LIMITED_REQ]), (uint64_t)limited);
    slb_ratelimit_free(st->req_rate);
    free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_to_group),
        cmocka_unit_test(test_sticky_cookie_found),
        cmocka_unit_test(test_connect_405_closes),
        cmocka_unit_test(test_expect_417_only_on_11),
        cmocka_unit_test(test_redirect_301_keeps_path),
        cmocka_unit_test(test_connect_before_redirect),
        cmocka_unit_test(test_no_group_or_no_server_503),
        cmocka_unit_test(test_plain_http_never_misdirected),
        cmocka_unit_test(test_requests_per_s_503),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
