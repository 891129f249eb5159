/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of head rewriting: what a backend and a client receive from the proxy. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "http/parser.h"
#include "http/rewrite.h"

#include <stdlib.h>
#include <string.h>

static char *build_req(const char *raw, const struct slb_fwd_info *fwd)
{
    static struct slb_http_msg m;
    assert_true(slb_http_parse_request(raw, strlen(raw), NULL, &m) > 0);
    struct slb_hbuf out = {0};
    slb_http_build_request(&out, &m, fwd);
    slb_hbuf_put(&out, "", 1);
    assert_false(out.oom);
    return out.p;
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static const struct slb_fwd_info fwd_default = {
    .client_ip = "192.0.2.7",
    .proto = "https",
    .port = 443,
    .xff = true,
};

static void test_forwarded_headers_set_by_us(void **state)
{
    char *h = build_req("GET /a HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1\r\n"
                        "X-Forwarded-For: 10.0.0.2\r\nX-Real-IP: 6.6.6.6\r\n"
                        "X-Forwarded-Proto: gopher\r\nX-Forwarded-Clientcert-subjectdn: CN=evil\r\n"
                        "\r\n",
                        &fwd_default);
    assert_non_null(strstr(h, "X-Forwarded-For: 10.0.0.1, 10.0.0.2, 192.0.2.7\r\n"));
    assert_non_null(strstr(h, "X-Real-IP: 192.0.2.7\r\n"));
    assert_non_null(strstr(h, "X-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\n"));
    assert_null(strstr(h, "6.6.6.6"));
    assert_null(strstr(h, "gopher"));
    assert_null(strstr(h, "CN=evil"));
    free(h);
}

static void test_hop_by_hop_removed_but_not_ours(void **state)
{
    char *h = build_req("GET / HTTP/1.1\r\nHost: x\r\nConnection: close, Foo, X-Forwarded-For\r\n"
                        "Foo: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nBar: 2\r\n\r\n",
                        &fwd_default);
    assert_null(strstr(h, "Foo: 1"));
    assert_null(strstr(h, "Keep-Alive"));
    assert_null(strstr(h, "TE: trailers"));
    assert_null(strstr(h, "Connection"));
    assert_non_null(strstr(h, "Bar: 2\r\n"));
    /* Listing our header in Connection must not strip it. */
    assert_non_null(strstr(h, "X-Forwarded-For: 192.0.2.7\r\n"));
    free(h);
}

static void test_absolute_form_becomes_origin_form(void **state)
{
    char *h = build_req("GET http://example.test:8080/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n",
                        &fwd_default);
    assert_true(strncmp(h, "GET /p?q=1 HTTP/1.1\r\nHost: example.test:8080\r\n", 46) == 0);
    assert_null(strstr(h, "Host: other"));
    free(h);
    h = build_req("GET http://example.test HTTP/1.1\r\nHost: example.test\r\n\r\n", &fwd_default);
    assert_true(strncmp(h, "GET / HTTP/1.1\r\n", 16) == 0);
    free(h);
}

/* RFC 9112 3.2.4: OPTIONS with an absolute-form target and no path is about the whole server. */
static void test_absolute_options_without_path_is_asterisk(void **state)
{
    char *h =
        build_req("OPTIONS http://example.test:8080 HTTP/1.1\r\nHost: x\r\n\r\n", &fwd_default);
    assert_true(starts_with(h, "OPTIONS * HTTP/1.1\r\nHost: example.test:8080\r\n"));
    free(h);
    h = build_req("OPTIONS http://example.test/ HTTP/1.1\r\nHost: x\r\n\r\n", &fwd_default);
    assert_true(starts_with(h, "OPTIONS / HTTP/1.1\r\n"));
    free(h);
    h = build_req("OPTIONS http://example.test?a=1 HTTP/1.1\r\nHost: x\r\n\r\n", &fwd_default);
    assert_true(starts_with(h, "OPTIONS /?a=1 HTTP/1.1\r\n"));
    free(h);
    h = build_req("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", &fwd_default);
    assert_true(starts_with(h, "OPTIONS * HTTP/1.1\r\n"));
    free(h);
}

static void test_chunked_framing_restated(void **state)
{
    char *h =
        build_req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", &fwd_default);
    assert_non_null(strstr(h, "Transfer-Encoding: chunked\r\n"));
    free(h);
}

static void test_sticky_prefix_stripped(void **state)
{
    struct slb_fwd_info f = fwd_default;
    f.strip_cookie_prefix_name = "SID";
    char *h = build_req("GET / HTTP/1.1\r\nHost: x\r\n"
                        "Cookie: a=1; SID=0123456789abcdef~real; b=a~b\r\n\r\n",
                        &f);
    assert_non_null(strstr(h, "Cookie: a=1; SID=real; b=a~b\r\n"));
    free(h);
    /* A value we did not prefix stays whole. */
    h = build_req("GET / HTTP/1.1\r\nHost: x\r\nCookie: SID=short~x\r\n\r\n", &f);
    assert_non_null(strstr(h, "Cookie: SID=short~x\r\n"));
    free(h);
}

static void test_response_head(void **state)
{
    static struct slb_http_msg m;
    const char *raw = "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
                      "Set-Cookie: SID=v1; Path=/\r\nContent-Length: 2\r\n\r\nhi";
    assert_true(slb_http_parse_response(raw, strlen(raw), NULL, SLB_HTTP_GET, &m) > 0);
    struct slb_hbuf out = {0};
    slb_http_build_response(&out, &m, false, "S=1; Path=/", "SID", "0123456789abcdef");
    slb_hbuf_put(&out, "", 1);
    assert_true(strncmp(out.p, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_null(strstr(out.p, "Keep-Alive"));
    assert_non_null(strstr(out.p, "Set-Cookie: SID=0123456789abcdef~v1; Path=/\r\n"));
    assert_non_null(strstr(out.p, "Set-Cookie: S=1; Path=/\r\n"));
    assert_non_null(strstr(out.p, "Connection: close\r\n"));
    assert_non_null(strstr(out.p, "Content-Length: 2\r\n"));
    slb_hbuf_free(&out);
}

/* The head an HTTP/1.0 client gets for raw, a backend response to GET (NUL-terminated). */
static char *build_unchunked(const char *raw, struct slb_http_msg *m)
{
    assert_true(slb_http_parse_response(raw, strlen(raw), NULL, SLB_HTTP_GET, m) > 0);
    struct slb_hbuf out = {0};
    slb_http_build_response_unchunked(&out, m, NULL, NULL, NULL);
    slb_hbuf_put(&out, "", 1);
    assert_false(out.oom);
    return out.p;
}

static void test_interim_keeps_end_to_end_fields(void **state)
{
    static struct slb_http_msg m;
    const char *raw = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n"
                      "Connection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
                      "Link: </b.js>; rel=preload\r\n\r\n";
    assert_true(slb_http_parse_response(raw, strlen(raw), NULL, SLB_HTTP_GET, &m) > 0);
    struct slb_hbuf out = {0};
    slb_http_build_interim(&out, &m);
    slb_hbuf_put(&out, "", 1);
    assert_false(out.oom);
    assert_string_equal(out.p, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n"
                               "Link: </b.js>; rel=preload\r\n\r\n");
    slb_hbuf_free(&out);
}

static void test_unchunked_head_has_no_transfer_encoding(void **state)
{
    static struct slb_http_msg m;
    static const char *chunked_only[] = {
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: ChUnKeD\r\nX-A: 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: \t chunked \t\r\nX-A: 1\r\n\r\n",
        /* Empty list elements are legal and list nothing (RFC 9110 5.6.1). */
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: , chunked,\r\nX-A: 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: ,\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(chunked_only) / sizeof(chunked_only[0]); i++) {
        char *h = build_unchunked(chunked_only[i], &m);
        assert_int_equal(m.body, SLB_BODY_CHUNKED);
        assert_false(slb_http_other_transfer_coding(&m));
        assert_true(strncmp(h, "HTTP/1.1 200 OK\r\n", 17) == 0);
        assert_null(strcasestr(h, "transfer-encoding"));
        assert_null(strcasestr(h, "chunked"));
        assert_null(strstr(h, "Content-Length"));
        assert_non_null(strstr(h, "X-A: 1\r\n"));
        assert_non_null(strstr(h, "Connection: close\r\n\r\n"));
        free(h);
    }
}

static void test_unchunked_head_keeps_the_rest(void **state)
{
    static struct slb_http_msg m;
    const char *raw = "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
                      "Transfer-Encoding: chunked\r\nTrailer: X-Digest\r\n"
                      "Set-Cookie: SID=v1\r\n\r\n";
    assert_true(slb_http_parse_response(raw, strlen(raw), NULL, SLB_HTTP_GET, &m) > 0);
    struct slb_hbuf out = {0};
    slb_http_build_response_unchunked(&out, &m, "S=1", "SID", "0123456789abcdef");
    slb_hbuf_put(&out, "", 1);
    assert_null(strstr(out.p, "Transfer-Encoding"));
    assert_null(strstr(out.p, "Trailer")); /* the trailers are dropped with the framing */
    assert_null(strstr(out.p, "keep-alive"));
    assert_non_null(strstr(out.p, "Set-Cookie: SID=0123456789abcdef~v1\r\n"));
    assert_non_null(strstr(out.p, "Set-Cookie: S=1\r\n"));
    assert_non_null(strstr(out.p, "Connection: close\r\n"));
    slb_hbuf_free(&out);
}

/* Codings besides chunked are what an HTTP/1.0 client cannot be given: the proxy asks
 * slb_http_other_transfer_coding first and answers 502. An HTTP/1.1 client gets them as sent. */
static void test_other_transfer_codings(void **state)
{
    static struct slb_http_msg m;
    static const struct {
        const char *raw;
        enum slb_http_body body;
        const char *te; /* what slb_http_build_response keeps */
    } other[] = {
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", SLB_BODY_CHUNKED,
         "Transfer-Encoding: gzip, chunked\r\n"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: GZIP,Chunked\r\n\r\n", SLB_BODY_CHUNKED,
         "Transfer-Encoding: GZIP,Chunked\r\n"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
         SLB_BODY_CHUNKED, "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: foo;a=\"x,chunked\", chunked\r\n\r\n",
         SLB_BODY_CHUNKED, "Transfer-Encoding: foo;a=\"x,chunked\", chunked\r\n"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", SLB_BODY_UNTIL_CLOSE,
         "Transfer-Encoding: gzip\r\n"},
    };
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
        const char *raw = other[i].raw;
        assert_true(slb_http_parse_response(raw, strlen(raw), NULL, SLB_HTTP_GET, &m) > 0);
        assert_int_equal(m.body, other[i].body);
        assert_true(slb_http_other_transfer_coding(&m));
        struct slb_hbuf out = {0};
        slb_http_build_response(&out, &m, false, NULL, NULL, NULL);
        slb_hbuf_put(&out, "", 1);
        assert_non_null(strstr(out.p, other[i].te));
        slb_hbuf_free(&out);
    }
    const char *plain = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
    assert_true(slb_http_parse_response(plain, strlen(plain), NULL, SLB_HTTP_GET, &m) > 0);
    assert_false(slb_http_other_transfer_coding(&m));
}

static void test_cookie_lookup(void **state)
{
    static struct slb_http_msg m;
    const char *raw = "GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1;  SLB=abc; c=3\r\n\r\n";
    assert_true(slb_http_parse_request(raw, strlen(raw), NULL, &m) > 0);
    struct slb_slice v = slb_http_cookie(&m, "SLB");
    assert_int_equal(v.len, 3);
    assert_memory_equal(v.p, "abc", 3);
    assert_int_equal(slb_http_cookie(&m, "SL").len, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forwarded_headers_set_by_us),
        cmocka_unit_test(test_hop_by_hop_removed_but_not_ours),
        cmocka_unit_test(test_absolute_form_becomes_origin_form),
        cmocka_unit_test(test_absolute_options_without_path_is_asterisk),
        cmocka_unit_test(test_chunked_framing_restated),
        cmocka_unit_test(test_sticky_prefix_stripped),
        cmocka_unit_test(test_response_head),
        cmocka_unit_test(test_unchunked_head_has_no_transfer_encoding),
        cmocka_unit_test(test_unchunked_head_keeps_the_rest),
        cmocka_unit_test(test_interim_keeps_end_to_end_fields),
        cmocka_unit_test(test_other_transfer_codings),
        cmocka_unit_test(test_cookie_lookup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
