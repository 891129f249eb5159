/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the HTTP/1.1 head parser and chunked decoder (src/http/parser.c, chunked.c). */
/* cmocka needs these headers first and in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "http/parser.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OK 1 /* table value: the head parses and its length is strlen(raw) - extra */
#define NA (-1)

/* Every parse runs on a heap copy of exactly the bytes given, so under ASan a read past the
 * end of the input is a crash rather than a silent pass. The copy lives until the next parse
 * (the message's slices point into it) or release_copy(). */
static char *held_copy;

static void release_copy(void)
{
    free(held_copy);
    held_copy = NULL;
}

static const char *hold_copy(const char *raw, size_t n)
{
    release_copy();
    held_copy = malloc(n ? n : 1);
    assert_non_null(held_copy);
    memcpy(held_copy, raw, n);
    return held_copy;
}

static int parse_req_n(const char *raw, size_t n, const struct slb_http_limits *lim,
                       struct slb_http_msg *msg)
{
    return slb_http_parse_request(hold_copy(raw, n), n, lim, msg);
}

static int parse_resp_n(const char *raw, size_t n, enum slb_http_method req,
                        struct slb_http_msg *msg)
{
    return slb_http_parse_response(hold_copy(raw, n), n, NULL, req, msg);
}

/* --- requests -------------------------------------------------------------------------------- */

struct req_case {
    const char *raw;
    int want; /* OK or -(status) */
    size_t extra;
    enum slb_http_method method;
    int minor;
    enum slb_http_body body;
    uint64_t cl;
    int keep_alive; /* NA: not checked */
    bool expect_continue;
    bool upgrade;
    const char *host;   /* NULL: not checked */
    const char *target; /* NULL: not checked */
};

#define H11 "GET / HTTP/1.1\r\nHost: a\r\n"
#define POST11 "POST /p HTTP/1.1\r\nHost: a\r\n"

static const struct req_case req_cases[] = {
    /* valid requests and their semantics */
    {"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", OK, 0, SLB_HTTP_GET, 1, SLB_BODY_NONE, 0, 1,
     false, false, "example.com", "/"},
    {"GET /x?y=1 HTTP/1.0\r\n\r\n", OK, 0, SLB_HTTP_GET, 0, SLB_BODY_NONE, 0, 0, false, false, "",
     "/x?y=1"},
    {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", OK, 0, SLB_HTTP_GET, 0, SLB_BODY_NONE, 0,
     1, false, false, NULL, NULL},
    {H11 "Connection: close\r\n\r\n", OK, 0, SLB_HTTP_GET, 1, SLB_BODY_NONE, 0, 0, false, false,
     NULL, NULL},
    {H11 "Connection: foo\r\nConnection: keep-alive , CLOSE\r\n\r\n", OK, 0, SLB_HTTP_GET, 1,
     SLB_BODY_NONE, 0, 0, false, false, NULL, NULL},
    {POST11 "Content-Length: 5\r\n\r\nhello", OK, 5, SLB_HTTP_POST, 1, SLB_BODY_LENGTH, 5, 1, false,
     false, "a", "/p"},
    {POST11 "Content-Length: 0\r\n\r\n", OK, 0, SLB_HTTP_POST, 1, SLB_BODY_LENGTH, 0, 1, false,
     false, NULL, NULL},
    {POST11 "Content-Length: 18446744073709551615\r\n\r\n", OK, 0, SLB_HTTP_POST, 1,
     SLB_BODY_LENGTH, UINT64_MAX, 1, false, false, NULL, NULL},
    {POST11 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", OK, 15, SLB_HTTP_POST, 1,
     SLB_BODY_CHUNKED, 0, 1, false, false, NULL, NULL},
    {POST11 "Transfer-Encoding:\tChunKed\t\r\n\r\n", OK, 0, SLB_HTTP_POST, 1, SLB_BODY_CHUNKED, 0,
     1, false, false, NULL, NULL},
    {POST11 "Transfer-Encoding: ,\r\nTransfer-Encoding: chunked\r\n\r\n", OK, 0, SLB_HTTP_POST, 1,
     SLB_BODY_CHUNKED, 0, 1, false, false, NULL, NULL},
    {"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", OK, 0, SLB_HTTP_CONNECT,
     1, SLB_BODY_NONE, 0, 1, false, false, "example.com:443", "example.com:443"},
    {"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n", OK, 0, SLB_HTTP_CONNECT, 1,
     SLB_BODY_NONE, 0, 1, false, false, "[::1]:8443", "[::1]:8443"},
    {"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", OK, 0, SLB_HTTP_OPTIONS, 1, SLB_BODY_NONE, 0, 1,
     false, false, "a", "*"},
    {"OPTIONS /x HTTP/1.1\r\nHost: a\r\n\r\n", OK, 0, SLB_HTTP_OPTIONS, 1, SLB_BODY_NONE, 0, 1,
     false, false, NULL, "/x"},
    {"GET http://example.com/x?q HTTP/1.1\r\nHost: example.com\r\n\r\n", OK, 0, SLB_HTTP_GET, 1,
     SLB_BODY_NONE, 0, 1, false, false, NULL, "http://example.com/x?q"},
    {"GET HTTPS://example.com:8443 HTTP/1.1\r\nHost: example.com:8443\r\n\r\n", OK, 0, SLB_HTTP_GET,
     1, SLB_BODY_NONE, 0, 1, false, false, NULL, NULL},
    {"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", OK, 0, SLB_HTTP_HEAD, 1, SLB_BODY_NONE, 0, 1, false,
     false, NULL, NULL},
    {"PUT / HTTP/1.1\r\nHost: a\r\n\r\n", OK, 0, SLB_HTTP_PUT, 1, SLB_BODY_NONE, 0, 1, false, false,
     NULL, NULL},
    {"DELETE / HTTP/1.1\r\nHost: a\r\n\r\n", OK, 0, SLB_HTTP_DELETE, 1, SLB_BODY_NONE, 0, 1, false,
     false, NULL, NULL},
    {"PATCH / HTTP/1.1\r\nHost: a\r\n\r\n", OK, 0, SLB_HTTP_PATCH, 1, SLB_BODY_NONE, 0, 1, false,
     false, NULL, NULL},
    {"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n", OK, 0, SLB_HTTP_TRACE, 1, SLB_BODY_NONE, 0, 1, false,
     false, NULL, NULL},
    {"PROPFIND / HTTP/1.1\r\nHost: a\r\n\r\n", OK, 0, SLB_HTTP_OTHER, 1, SLB_BODY_NONE, 0, 1, false,
     false, NULL, NULL},
    {"get / HTTP/1.1\r\nHost: a\r\n\r\n", OK, 0, SLB_HTTP_OTHER, 1, SLB_BODY_NONE, 0, 1, false,
     false, NULL, NULL},
    {"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", OK, 0, SLB_HTTP_GET, 1, SLB_BODY_NONE, 0, 1,
     false, false, "a", "/"},
    {H11 "\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n", OK, 28, SLB_HTTP_GET, 1, SLB_BODY_NONE, 0, 1,
     false, false, "a", "/"},
    {H11 "Expect: 100-continue\r\n\r\n", OK, 0, SLB_HTTP_GET, 1, SLB_BODY_NONE, 0, 1, true, false,
     NULL, NULL},
    {H11 "Expect: 100-Continue\r\n\r\n", OK, 0, SLB_HTTP_GET, 1, SLB_BODY_NONE, 0, 1, true, false,
     NULL, NULL},
    {"GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", OK, 0, SLB_HTTP_GET, 0, SLB_BODY_NONE, 0, 0,
     false, false, NULL, NULL},
    {H11 "Expect: something-else\r\n\r\n", OK, 0, SLB_HTTP_GET, 1, SLB_BODY_NONE, 0, 1, false,
     false, NULL, NULL},
    {H11 "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n", OK, 0, SLB_HTTP_GET, 1, SLB_BODY_NONE,
     0, 1, false, true, NULL, NULL},
    {H11 "Upgrade: websocket\r\n\r\n", OK, 0, SLB_HTTP_GET, 1, SLB_BODY_NONE, 0, 1, false, false,
     NULL, NULL},
    {"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", OK, 0, SLB_HTTP_GET, 0,
     SLB_BODY_NONE, 0, 0, false, false, NULL, NULL},
    {"GET / HTTP/1.1\r\nHost:\r\n\r\n", OK, 0, SLB_HTTP_GET, 1, SLB_BODY_NONE, 0, 1, false, false,
     "", NULL},
    {"GET / HTTP/1.1\r\nHost: my_host.example-1.com:80\r\n\r\n", OK, 0, SLB_HTTP_GET, 1,
     SLB_BODY_NONE, 0, 1, false, false, "my_host.example-1.com:80", NULL},
    {H11 "X-Obs: caf\xc3\xa9\r\nX-Empty:\r\n\r\n", OK, 0, SLB_HTTP_GET, 1, SLB_BODY_NONE, 0, 1,
     false, false, NULL, NULL},

    /* request line */
    {.raw = "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", .want = -400},
    {.raw = " GET / HTTP/1.1\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "GET / HTTP/1.1\nHost: a\r\n\r\n", .want = -400},
    {.raw = "GET / HTTP/1.1\r\r\n", .want = -400},
    {.raw = "GET /\r\n\r\n", .want = -400},
    {.raw = "GET / http/1.1\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "GET / HTTP/1.10\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "GET / HTTP/1\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "GET / HTTP/2.0\r\nHost: a\r\n\r\n", .want = -505},
    {.raw = "GET / HTTP/1.2\r\nHost: a\r\n\r\n", .want = -505},
    {.raw = "GET / HTTP/0.9\r\n\r\n", .want = -505},
    {.raw = "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", .want = -400},
    {.raw = "GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "GET example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "GET * HTTP/1.1\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "GET ftp://example.com/ HTTP/1.1\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "GET http://user@example.com/ HTTP/1.1\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "CONNECT example.com:99999 HTTP/1.1\r\nHost: a\r\n\r\n", .want = -400},
    {.raw = "CONNECT *:443 HTTP/1.1\r\nHost: a\r\n\r\n", .want = -400},

    /* field lines */
    {.raw = H11 "X: a\nY: b\r\n\r\n", .want = -400},
    {.raw = H11 "X: a\rb\r\n\r\n", .want = -400},
    {.raw = H11 "X: a\x01\r\n\r\n", .want = -400},
    {.raw = H11 "X: a\x7f\r\n\r\n", .want = -400},
    {.raw = H11 "X: a\r\n folded\r\n\r\n", .want = -400},
    {.raw = "GET / HTTP/1.1\r\n Host: a\r\n\r\n", .want = -400},
    {.raw = H11 "Content-Length : 5\r\n\r\n", .want = -400},
    {.raw = H11 "Content-Length\t: 5\r\n\r\n", .want = -400},
    {.raw = H11 ": x\r\n\r\n", .want = -400},
    {.raw = H11 "X(y): 1\r\n\r\n", .want = -400},
    {.raw = H11 "X: 1\r\n\n", .want = -400},
    {.raw = H11 "X: 1\r\n\r\r", .want = -400},

    /* Host */
    {.raw = "GET / HTTP/1.1\r\n\r\n", .want = -400},
    {.raw = H11 "Host: a\r\n\r\n", .want = -400},
    {.raw = H11 "host: a\r\n\r\n", .want = -400},
    {.raw = "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", .want = -400},
    {.raw = "GET / HTTP/1.1\r\nHost: a,b\r\n\r\n", .want = -400},
    {.raw = "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", .want = -400},
    {.raw = "GET / HTTP/1.1\r\nHost: a:\r\n\r\n", .want = -400},
    {.raw = "GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n", .want = -400},
    {.raw = "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", .want = -400},
    {.raw = "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", .want = -400},

    /* Content-Length */
    {.raw = POST11 "Content-Length: +5\r\n\r\n", .want = -400},
    {.raw = POST11 "Content-Length: -1\r\n\r\n", .want = -400},
    {.raw = POST11 "Content-Length: 0x5\r\n\r\n", .want = -400},
    {.raw = POST11 "Content-Length: 5 5\r\n\r\n", .want = -400},
    {.raw = POST11 "Content-Length: 5,5\r\n\r\n", .want = -400},
    {.raw = POST11 "Content-Length: 5, 6\r\n\r\n", .want = -400},
    {.raw = POST11 "Content-Length:\r\n\r\n", .want = -400},
    {.raw = POST11 "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", .want = -400},
    {.raw = POST11 "Content-Length: 5\r\ncontent-length: 6\r\n\r\n", .want = -400},
    {.raw = POST11 "Content-Length: 18446744073709551616\r\n\r\n", .want = -400},
    {.raw = POST11 "Content-Length: 99999999999999999999999\r\n\r\n", .want = -400},

    /* Transfer-Encoding */
    {.raw = POST11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", .want = -400},
    {.raw = POST11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", .want = -400},
    {.raw = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", .want = -400},
    {.raw = POST11 "Transfer-Encoding: gzip\r\n\r\n", .want = -400},
    {.raw = POST11 "Transfer-Encoding: chunked, gzip\r\n\r\n", .want = -400},
    {.raw = POST11 "Transfer-Encoding: chunked, chunked\r\n\r\n", .want = -400},
    {.raw = POST11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
     .want = -400},
    {.raw = POST11 "Transfer-Encoding: xchunked\r\n\r\n", .want = -400},
    {.raw = POST11 "Transfer-Encoding: chunked;x=1\r\n\r\n", .want = -400},
    {.raw = POST11 "Transfer-Encoding:\r\n\r\n", .want = -400},
    {.raw = POST11 "Transfer-Encoding: \"chunked\"\r\n\r\n", .want = -400},
    {.raw = POST11 "Transfer-Encoding: chunked\x0b\r\n\r\n", .want = -400},
    {.raw = POST11 "Transfer-Encoding: gzip, chunked\r\n\r\n", .want = -501},
    {.raw = POST11 "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", .want = -501},
    {.raw = POST11 "Transfer-Encoding: foo;q=\"a,b\", chunked\r\n\r\n", .want = -501},

    /* Connection and Expect lists */
    {.raw = H11 "Connection: close; x\r\n\r\n", .want = -400},
    {.raw = H11 "Expect: a=\"unterminated\r\n\r\n", .want = -400},
};

static void check_req_fields(const struct req_case *c, const struct slb_http_msg *m)
{
    assert_int_equal(m->method, c->method);
    assert_int_equal(m->version_minor, c->minor);
    assert_int_equal(m->body, c->body);
    assert_true(m->content_length == c->cl);
    if (c->keep_alive != NA)
        assert_int_equal(m->keep_alive, c->keep_alive);
    assert_int_equal(m->expect_continue, c->expect_continue);
    assert_int_equal(m->upgrade, c->upgrade);
    assert_true(m->method_name.len > 0);
    if (c->host) {
        assert_int_equal(m->host.len, strlen(c->host));
        assert_memory_equal(m->host.p, c->host, m->host.len);
    }
    if (c->target) {
        assert_int_equal(m->target.len, strlen(c->target));
        assert_memory_equal(m->target.p, c->target, m->target.len);
    }
}

/* Each case whole, then every prefix: a prefix of a valid head must be "incomplete" (or the
 * head itself once complete), and a prefix of a bad one may only be incomplete or the same
 * error, which proves the incremental contract and early rejection at the same time. */
static void test_request_table(void **state)
{
    static struct slb_http_msg m;
    for (size_t i = 0; i < sizeof(req_cases) / sizeof(req_cases[0]); i++) {
        const struct req_case *c = &req_cases[i];
        size_t len = strlen(c->raw);
        int rc = parse_req_n(c->raw, len, NULL, &m);
        if (rc != (c->want == OK ? (int)(len - c->extra) : c->want))
            fail_msg("case %zu \"%s\": got %d want %d", i, c->raw, rc, c->want);
        if (c->want == OK) {
            assert_int_equal(m.head_len, len - c->extra);
            check_req_fields(c, &m);
        }
        for (size_t n = 0; n < len; n++) {
            int r = parse_req_n(c->raw, n, NULL, &m);
            if (c->want == OK && r != (n < len - c->extra ? 0 : (int)(len - c->extra)))
                fail_msg("case %zu prefix %zu: got %d", i, n, r);
            if (c->want != OK && r != 0 && r != c->want)
                fail_msg("case %zu prefix %zu: got %d want 0 or %d", i, n, r, c->want);
        }
    }
}

static void test_request_headers(void **state)
{
    static struct slb_http_msg m;
    const char *raw = "GET / HTTP/1.1\r\nHost: a\r\nX-A:  spaced  value \t\r\nx-a:v2\r\n"
                      "X-Empty: \t \r\n\r\n";
    assert_int_equal(parse_req_n(raw, strlen(raw), NULL, &m), (int)strlen(raw));
    assert_int_equal(m.nheaders, 4);
    assert_int_equal(slb_http_find_header(&m, "x-A", 0), 1);
    assert_int_equal(slb_http_find_header(&m, "X-A", 2), 2);
    assert_int_equal(slb_http_find_header(&m, "X-A", 3), -1);
    assert_int_equal(slb_http_find_header(&m, "Missing", 0), -1);
    assert_true(slb_slice_eq_ci(m.headers[1].name, "X-A"));
    assert_int_equal(m.headers[1].value.len, strlen("spaced  value"));
    assert_memory_equal(m.headers[1].value.p, "spaced  value", m.headers[1].value.len);
    assert_int_equal(m.headers[2].value.len, 2);
    assert_int_equal(m.headers[3].value.len, 0);
    assert_memory_equal(m.method_name.p, "GET", 3);
    assert_int_equal(m.method_name.len, 3);
    assert_false(slb_slice_eq_ci(m.headers[1].name, "X-AB"));
}

/* A NUL is not visible in a C string table, so it gets its own test. */
static void test_request_nul(void **state)
{
    static struct slb_http_msg m;
    static const char raw[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
    assert_int_equal(parse_req_n(raw, sizeof(raw) - 1, NULL, &m), -400);
    static const char raw2[] = "GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_int_equal(parse_req_n(raw2, sizeof(raw2) - 1, NULL, &m), -400);
}

static char *repeat_into(char *p, char ch, size_t n)
{
    memset(p, ch, n);
    return p + n;
}

static void test_request_line_limit(void **state)
{
    static struct slb_http_msg m;
    struct slb_http_limits lim = {.max_line = 32, .max_headers = 10, .max_head_bytes = 1024};
    /* "GET /" + path + " HTTP/1.1" is exactly 32 bytes: allowed. */
    char buf[256], *p = buf;
    p += sprintf(p, "GET /");
    p = repeat_into(p, 'a', 32 - 14);
    p += sprintf(p, " HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_int_equal(parse_req_n(buf, (size_t)(p - buf), &lim, &m), (int)(p - buf));
    /* One byte more, with no CRLF in sight yet: 414 at once. */
    p = buf;
    p += sprintf(p, "GET /");
    p = repeat_into(p, 'a', 32 - 14 + 1);
    p += sprintf(p, " HTTP/1.1");
    assert_int_equal(parse_req_n(buf, 32, &lim, &m), 0);
    assert_int_equal(parse_req_n(buf, 33, &lim, &m), -414);
    assert_int_equal(parse_req_n(buf, (size_t)(p - buf), &lim, &m), -414);

    /* Default limit: 8192. */
    size_t big = 9000;
    char *huge = malloc(big);
    assert_non_null(huge);
    memcpy(huge, "GET /", 5);
    memset(huge + 5, 'b', big - 5);
    assert_int_equal(parse_req_n(huge, 8192, NULL, &m), 0);
    assert_int_equal(parse_req_n(huge, 8193, NULL, &m), -414);
    assert_int_equal(parse_req_n(huge, big, NULL, &m), -414);
    free(huge);
}

static void test_header_count_limit(void **state)
{
    static struct slb_http_msg m;
    struct slb_http_limits lim = {.max_line = 100, .max_headers = 3, .max_head_bytes = 1024};
    const char *three = "GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\nC: 2\r\n\r\n";
    const char *four = "GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\nC: 2\r\nD";
    assert_int_equal(parse_req_n(three, strlen(three), &lim, &m), (int)strlen(three));
    assert_int_equal(m.nheaders, 3);
    assert_int_equal(parse_req_n(four, strlen(four) - 1, &lim, &m), 0);
    assert_int_equal(parse_req_n(four, strlen(four), &lim, &m), -431);

    /* Default: 100 headers fit, 101 do not; max_headers is capped at SLB_HTTP_MAX_HEADERS. */
    size_t cap = 64 * 1024;
    char *buf = malloc(cap), *p = buf;
    assert_non_null(buf);
    p += sprintf(p, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 1; i < 100; i++)
        p += sprintf(p, "X-%d: v\r\n", i);
    char *end100 = p;
    p += sprintf(p, "\r\n");
    assert_int_equal(parse_req_n(buf, (size_t)(p - buf), NULL, &m), (int)(p - buf));
    assert_int_equal(m.nheaders, 100);
    p = end100;
    p += sprintf(p, "X-101: v\r\n\r\n");
    assert_int_equal(parse_req_n(buf, (size_t)(p - buf), NULL, &m), -431);
    lim = (struct slb_http_limits){.max_line = 100, .max_headers = 5000, .max_head_bytes = cap};
    assert_int_equal(parse_req_n(buf, (size_t)(p - buf), &lim, &m), -431);
    free(buf);
}

static void test_head_bytes_limit(void **state)
{
    static struct slb_http_msg m;
    struct slb_http_limits lim = {.max_line = 100, .max_headers = 10, .max_head_bytes = 64};
    char buf[256], *p = buf;
    p += sprintf(p, "GET / HTTP/1.1\r\nHost: a\r\nX: ");
    char *value = p;
    size_t fill = 64 - (size_t)(p - buf) - 4;
    p = repeat_into(p, 'v', fill);
    p += sprintf(p, "\r\n\r\nGET"); /* a pipelined byte beyond the limit does not matter */
    assert_int_equal(parse_req_n(buf, (size_t)(p - buf), &lim, &m), 64);
    /* One byte longer: incomplete up to the limit, 431 as soon as it is crossed. */
    p = value;
    p = repeat_into(p, 'v', fill + 1);
    p += sprintf(p, "\r\n\r\n");
    assert_int_equal(parse_req_n(buf, 64, &lim, &m), 0);
    assert_int_equal(parse_req_n(buf, 65, &lim, &m), -431);
    assert_int_equal(parse_req_n(buf, (size_t)(p - buf), &lim, &m), -431);
}

static void test_limits_default(void **state)
{
    struct slb_http_limits lim;
    slb_http_limits_default(&lim);
    assert_int_equal(lim.max_line, 8192);
    assert_int_equal(lim.max_headers, 100);
    assert_int_equal(lim.max_head_bytes, 16384);
    assert_true(slb_http_is_tchar('!'));
    assert_false(slb_http_is_tchar(':'));
    assert_false(slb_http_is_tchar(0x80));
}

/* The tchar bit set against RFC 9110's definition, for every byte. */
static void test_tchar_every_byte(void **state)
{
    const char *special = "!#$%&'*+-.^_`|~";
    for (int c = 0; c < 256; c++) {
        bool want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    (c != 0 && strchr(special, c) != NULL);
        if (slb_http_is_tchar((unsigned char)c) != want)
            fail_msg("byte 0x%02x: tchar %d, want %d", c, !want, want);
    }
}

/* Case-insensitive comparison with a known length, as the head rewriting uses it. */
static void test_slice_eq_ci_n(void **state)
{
    struct slb_slice s = {"Content-Length", 14};
    assert_true(SLB_SLICE_IS(s, "content-length"));
    assert_true(SLB_SLICE_IS(s, "CONTENT-LENGTH"));
    assert_false(SLB_SLICE_IS(s, "content-lengtx"));
    assert_false(SLB_SLICE_IS(s, "content-length2"));
    /* Only ASCII letters fold: '-' (0x2d) must not match '\r' (0x0d), '[' not '{'. */
    struct slb_slice t = {"a-[", 3};
    assert_false(SLB_SLICE_IS(t, "a\r["));
    assert_false(SLB_SLICE_IS(t, "a-{"));
    assert_true(slb_slice_eq_ci(t, "A-["));
}

/* --- responses ------------------------------------------------------------------------------- */

struct resp_case {
    const char *raw;
    enum slb_http_method req;
    int want;
    size_t extra;
    int status;
    enum slb_http_body body;
    uint64_t cl;
    int keep_alive;
    bool upgrade;
    const char *reason;
};

static const struct resp_case resp_cases[] = {
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", SLB_HTTP_GET, OK, 5, 200, SLB_BODY_LENGTH,
     5, 1, false, "OK"},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", SLB_HTTP_GET, OK, 0, 200,
     SLB_BODY_CHUNKED, 0, 1, false, "OK"},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", SLB_HTTP_POST, OK, 0, 200,
     SLB_BODY_CHUNKED, 0, 1, false, NULL},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", SLB_HTTP_GET, OK, 0, 200,
     SLB_BODY_UNTIL_CLOSE, 0, 0, false, NULL},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", SLB_HTTP_GET, OK, 0, 200,
     SLB_BODY_UNTIL_CLOSE, 0, 0, false, NULL},
    {"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nbody...", SLB_HTTP_GET, OK, 7, 200, SLB_BODY_UNTIL_CLOSE,
     0, 0, false, NULL},
    {"HTTP/1.1 204 No Content\r\n\r\n", SLB_HTTP_DELETE, OK, 0, 204, SLB_BODY_NONE, 0, 1, false,
     "No Content"},
    {"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", SLB_HTTP_GET, OK, 0, 304,
     SLB_BODY_NONE, 0, 1, false, NULL},
    {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", SLB_HTTP_POST, OK, 17, 100, SLB_BODY_NONE,
     0, 1, false, "Continue"},
    {"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
     SLB_HTTP_GET, OK, 0, 101, SLB_BODY_NONE, 0, 1, true, NULL},
    {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", SLB_HTTP_HEAD, OK, 0, 200, SLB_BODY_NONE, 0,
     1, false, NULL},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", SLB_HTTP_HEAD, OK, 0, 200,
     SLB_BODY_NONE, 0, 1, false, NULL},
    {"HTTP/1.1 200 Connection established\r\n\r\n", SLB_HTTP_CONNECT, OK, 0, 200, SLB_BODY_NONE, 0,
     1, false, NULL},
    {"HTTP/1.1 407 Auth\r\nContent-Length: 3\r\n\r\n", SLB_HTTP_CONNECT, OK, 0, 407,
     SLB_BODY_LENGTH, 3, 1, false, NULL},
    {"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", SLB_HTTP_GET, OK, 0, 200, SLB_BODY_LENGTH, 0, 1,
     false, ""},
    {"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", SLB_HTTP_GET, OK, 0, 200, SLB_BODY_LENGTH, 0, 1,
     false, ""},
    {"HTTP/1.1 404 Nicht\tGefunden \xe2\x9c\x97\r\nContent-Length: 0\r\n\r\n", SLB_HTTP_GET, OK, 0,
     404, SLB_BODY_LENGTH, 0, 1, false, "Nicht\tGefunden \xe2\x9c\x97"},
    {"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", SLB_HTTP_GET, OK, 0, 200, SLB_BODY_LENGTH, 2,
     0, false, NULL},
    {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n", SLB_HTTP_GET, OK, 0,
     200, SLB_BODY_LENGTH, 2, 1, false, NULL},
    {"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", SLB_HTTP_GET, OK, 0,
     503, SLB_BODY_LENGTH, 0, 0, false, NULL},
    {"HTTP/1.1 599 x\r\nContent-Length: 0\r\n\r\n", SLB_HTTP_GET, OK, 0, 599, SLB_BODY_LENGTH, 0, 1,
     false, NULL},

    {.raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
     .req = SLB_HTTP_GET,
     .want = -502},
    {.raw = "HTTP/1.1 204 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
     .req = SLB_HTTP_GET,
     .want = -502},
    {.raw = "HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n", .req = SLB_HTTP_GET, .want = -502},
    {.raw = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
     .req = SLB_HTTP_GET,
     .want = -502},
    {.raw = "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
     .req = SLB_HTTP_GET,
     .want = -502},
    {.raw = "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
     .req = SLB_HTTP_GET,
     .want = -502},
    {.raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
     .req = SLB_HTTP_GET,
     .want = -502},
    {.raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;a=b\r\n\r\n",
     .req = SLB_HTTP_GET,
     .want = -502},
    {.raw = "HTTP/1.1 099 Low\r\n\r\n", .req = SLB_HTTP_GET, .want = -502},
    {.raw = "HTTP/1.1 600 High\r\n\r\n", .req = SLB_HTTP_GET, .want = -502},
    {.raw = "HTTP/1.1 20 Short\r\n\r\n", .req = SLB_HTTP_GET, .want = -502},
    {.raw = "HTTP/1.1 2000 Long\r\n\r\n", .req = SLB_HTTP_GET, .want = -502},
    {.raw = "HTTP/1.1 2x0 Bad\r\n\r\n", .req = SLB_HTTP_GET, .want = -502},
    {.raw = "HTTP/1.1  200 OK\r\n\r\n", .req = SLB_HTTP_GET, .want = -502},
    {.raw = "HTTP/2.0 200 OK\r\n\r\n", .req = SLB_HTTP_GET, .want = -502},
    {.raw = "HTTP/1.2 200 OK\r\n\r\n", .req = SLB_HTTP_GET, .want = -502},
    {.raw = "http/1.1 200 OK\r\n\r\n", .req = SLB_HTTP_GET, .want = -502},
    {.raw = "\r\nHTTP/1.1 200 OK\r\n\r\n", .req = SLB_HTTP_GET, .want = -502},
    {.raw = "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", .req = SLB_HTTP_GET, .want = -502},
    {.raw = "HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n", .req = SLB_HTTP_GET, .want = -502},
    {.raw = "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", .req = SLB_HTTP_GET, .want = -502},
    {.raw = "HTTP/1.1 200 OK\r\nX : a\r\n\r\n", .req = SLB_HTTP_GET, .want = -502},
    {.raw = "HTTP/1.1 200 O\x01K\r\n\r\n", .req = SLB_HTTP_GET, .want = -502},
    {.raw = "HTTP/1.1 200 OK\r\nConnection: a b\r\n\r\n", .req = SLB_HTTP_GET, .want = -502},
    {.raw = "SSH-2.0-OpenSSH\r\n", .req = SLB_HTTP_GET, .want = -502},
};

static void test_response_table(void **state)
{
    static struct slb_http_msg m;
    for (size_t i = 0; i < sizeof(resp_cases) / sizeof(resp_cases[0]); i++) {
        const struct resp_case *c = &resp_cases[i];
        size_t len = strlen(c->raw);
        int rc = parse_resp_n(c->raw, len, c->req, &m);
        if (rc != (c->want == OK ? (int)(len - c->extra) : c->want))
            fail_msg("case %zu \"%s\": got %d want %d", i, c->raw, rc, c->want);
        if (c->want == OK) {
            assert_int_equal(m.status, c->status);
            assert_int_equal(m.body, c->body);
            assert_true(m.content_length == c->cl);
            assert_int_equal(m.keep_alive, c->keep_alive);
            assert_int_equal(m.upgrade, c->upgrade);
            if (c->reason) {
                assert_int_equal(m.reason.len, strlen(c->reason));
                assert_memory_equal(m.reason.p, c->reason, m.reason.len);
            }
        }
        for (size_t n = 0; n < len; n++) {
            int r = parse_resp_n(c->raw, n, c->req, &m);
            if (c->want == OK && r != (n < len - c->extra ? 0 : (int)(len - c->extra)))
                fail_msg("case %zu prefix %zu: got %d", i, n, r);
            if (c->want != OK && r != 0 && r != c->want)
                fail_msg("case %zu prefix %zu: got %d", i, n, r);
        }
    }
}

static void test_response_limits(void **state)
{
    static struct slb_http_msg m;
    struct slb_http_limits lim = {.max_line = 16, .max_headers = 1, .max_head_bytes = 64};
    const char *longline = "HTTP/1.1 200 A long reason\r\n\r\n";
    const char *two = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n";
    assert_int_equal(slb_http_parse_response(longline, strlen(longline), &lim, SLB_HTTP_GET, &m),
                     -502);
    assert_int_equal(slb_http_parse_response(two, strlen(two), &lim, SLB_HTTP_GET, &m), -502);
    lim.max_headers = 2;
    assert_int_equal(slb_http_parse_response(two, strlen(two), &lim, SLB_HTTP_GET, &m),
                     (int)strlen(two));
}

/* --- chunked --------------------------------------------------------------------------------- */

/* Decodes raw in pieces of `step` bytes (each a heap copy, for ASan), the way a proxy would:
 * unconsumed bytes are kept and offered again with the next piece. Returns the total consumed
 * or -400; the data goes to out. */
static long decode(const char *raw, size_t len, size_t step, char *out, size_t *out_len, bool *done)
{
    struct slb_chunked c;
    slb_chunked_init(&c);
    size_t off = 0, avail = 0;
    *out_len = 0;
    while (!c.done) {
        if (avail < len - off && (avail == 0 || step > 1)) {
            avail += step;
            if (avail > len - off)
                avail = len - off;
        }
        if (avail == 0)
            break;
        char *copy = malloc(avail);
        assert_non_null(copy);
        memcpy(copy, raw + off, avail);
        const char *d;
        size_t dl;
        long r = slb_chunked_feed(&c, copy, avail, &d, &dl);
        if (r < 0) {
            free(copy);
            *done = false;
            return r;
        }
        if (dl > 0) {
            assert_true(d >= copy && d + dl <= copy + r);
            memcpy(out + *out_len, d, dl);
            *out_len += dl;
        }
        free(copy);
        if (r == 0 && avail == len - off)
            break; /* no progress and nothing more to offer */
        off += (size_t)r;
        avail -= (size_t)r;
    }
    *done = c.done;
    /* After the end, the decoder keeps its hands off whatever follows. */
    if (c.done && off < len) {
        const char *d;
        size_t dl;
        assert_int_equal(slb_chunked_feed(&c, raw + off, len - off, &d, &dl), 0);
        assert_int_equal(dl, 0);
    }
    return (long)off;
}

struct chunk_case {
    const char *raw;
    const char *data; /* NULL: must fail with -400 */
    size_t extra;     /* bytes after the body, left unconsumed */
};

static const struct chunk_case chunk_cases[] = {
    {.raw = "5\r\nhello\r\n0\r\n\r\n", .data = "hello"},
    {.raw = "0\r\n\r\n", .data = ""},
    {.raw = "3\r\nabc\r\nA\r\n0123456789\r\n1\r\n!\r\n0\r\n\r\n", .data = "abc0123456789!"},
    {.raw = "a\r\n0123456789\r\n0000\r\n\r\n", .data = "0123456789"},
    {.raw = "0005\r\nhello\r\n0\r\n\r\n", .data = "hello"},
    {.raw = "5;name=value\r\nhello\r\n0;last\r\n\r\n", .data = "hello"},
    {.raw = "5;a;b=c;d=\"x;y\\\"z \\\\\"\r\nhello\r\n0\r\n\r\n", .data = "hello"},
    {.raw = "2\r\n\r\n\r\n0\r\n\r\n", .data = "\r\n"},
    {.raw = "0\r\nX-Trailer: v\r\nChecksum: \t abc \r\n\r\n", .data = ""},
    {.raw = "3\r\nxyz\r\n0\r\nE:\r\n\r\n", .data = "xyz"},
    {.raw = "1\r\nx\r\n0\r\n\r\nGET / HTTP/1.1\r\n", .data = "x", .extra = 16},
    {.raw = "", .data = NULL},
    {.raw = "\r\n", .data = NULL},
    {.raw = "g\r\n", .data = NULL},
    {.raw = "5 \r\nhello\r\n0\r\n\r\n", .data = NULL},
    {.raw = " 5\r\nhello\r\n0\r\n\r\n", .data = NULL},
    {.raw = "5\t;a\r\nhello\r\n0\r\n\r\n", .data = NULL},
    {.raw = "5 ;a\r\nhello\r\n0\r\n\r\n", .data = NULL},
    {.raw = "5;\r\nhello\r\n0\r\n\r\n", .data = NULL},
    {.raw = "5; a\r\nhello\r\n0\r\n\r\n", .data = NULL},
    {.raw = "5;a =b\r\nhello\r\n0\r\n\r\n", .data = NULL},
    {.raw = "5;a= b\r\nhello\r\n0\r\n\r\n", .data = NULL},
    {.raw = "5;a=\r\nhello\r\n0\r\n\r\n", .data = NULL},
    {.raw = "5;a=\"x\r\nhello\r\n0\r\n\r\n", .data = NULL},
    {.raw = "5;a=\"x\"y\r\nhello\r\n0\r\n\r\n", .data = NULL},
    {.raw = "5;a\nhello\r\n0\r\n\r\n", .data = NULL},
    {.raw = "5\nhello\r\n0\r\n\r\n", .data = NULL},
    {.raw = "5\rhello\r\n0\r\n\r\n", .data = NULL},
    {.raw = "5\r\nhelloX\r\n0\r\n\r\n", .data = NULL},
    {.raw = "5\r\nhello\n0\r\n\r\n", .data = NULL},
    {.raw = "5\r\nhello\r\r\n0\r\n\r\n", .data = NULL},
    {.raw = "5\r\nhello0\r\n\r\n", .data = NULL},
    {.raw = "00000000000000005\r\nhello\r\n0\r\n\r\n", .data = NULL},
    {.raw = "-5\r\nhello\r\n0\r\n\r\n", .data = NULL},
    {.raw = "+5\r\nhello\r\n0\r\n\r\n", .data = NULL},
    {.raw = "0x5\r\nhello\r\n0\r\n\r\n", .data = NULL},
    {.raw = "0\r\nX: a\r\n folded\r\n\r\n", .data = NULL},
    {.raw = "0\r\nNoColon\r\n\r\n", .data = NULL},
    {.raw = "0\r\nX : a\r\n\r\n", .data = NULL},
    {.raw = "0\r\n: a\r\n\r\n", .data = NULL},
    {.raw = "0\r\nX: a\x01\r\n\r\n", .data = NULL},
    {.raw = "0\r\nX: a\nY: b\r\n\r\n", .data = NULL},
    {.raw = "0\r\n\n", .data = NULL},
    {.raw = "0\r\n\r\r", .data = NULL},
};

/* Every case decoded whole, byte by byte and in a few odd piece sizes must agree. */
static void test_chunked_table(void **state)
{
    static const size_t steps[] = {1, 2, 3, 7, 1 << 20};
    char out[256];
    for (size_t i = 0; i < sizeof(chunk_cases) / sizeof(chunk_cases[0]); i++) {
        const struct chunk_case *c = &chunk_cases[i];
        size_t len = strlen(c->raw);
        for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
            size_t out_len;
            bool done;
            long r = decode(c->raw, len, steps[s], out, &out_len, &done);
            if (c->data == NULL) {
                if (r >= 0 && done)
                    fail_msg("case %zu step %zu: accepted", i, steps[s]);
                if (len > 0 && r != -400)
                    fail_msg("case %zu step %zu: got %ld want -400", i, steps[s], r);
                continue;
            }
            if (r != (long)(len - c->extra) || !done)
                fail_msg("case %zu step %zu: got %ld done=%d", i, steps[s], r, done);
            assert_int_equal(out_len, strlen(c->data));
            assert_memory_equal(out, c->data, out_len);
        }
    }
}

/* A larger body with many chunk sizes: byte-by-byte output equals whole-buffer output. */
static void test_chunked_byte_by_byte(void **state)
{
    size_t cap = 64 * 1024;
    char *raw = malloc(cap), *want = malloc(cap), *got1 = malloc(cap), *gotn = malloc(cap);
    assert_true(raw && want && got1 && gotn);
    size_t rl = 0, wl = 0;
    for (unsigned n = 1; n < 200; n += 13) {
        rl += (size_t)sprintf(raw + rl, "%x%s\r\n", n, n % 2 ? ";ext=\"v\"" : "");
        for (unsigned k = 0; k < n; k++) {
            char ch = (char)('A' + (n + k) % 26);
            raw[rl++] = ch;
            want[wl++] = ch;
        }
        rl += (size_t)sprintf(raw + rl, "\r\n");
    }
    rl += (size_t)sprintf(raw + rl, "0\r\nTrailer-A: 1\r\n\r\n");
    size_t l1, ln;
    bool d1, dn;
    assert_int_equal(decode(raw, rl, 1, got1, &l1, &d1), (long)rl);
    assert_int_equal(decode(raw, rl, rl, gotn, &ln, &dn), (long)rl);
    assert_true(d1 && dn);
    assert_int_equal(l1, wl);
    assert_int_equal(ln, wl);
    assert_memory_equal(got1, want, wl);
    assert_memory_equal(gotn, want, wl);
    free(raw);
    free(want);
    free(got1);
    free(gotn);
}

/* One data run per call: the decoder stops before the second chunk's data. */
static void test_chunked_one_run(void **state)
{
    const char *raw = "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
    struct slb_chunked c;
    const char *d;
    size_t dl;
    slb_chunked_init(&c);
    assert_int_equal(slb_chunked_feed(&c, raw, strlen(raw), &d, &dl), 11);
    assert_ptr_equal(d, raw + 3);
    assert_int_equal(dl, 3);
    assert_int_equal(slb_chunked_feed(&c, raw + 11, strlen(raw) - 11, &d, &dl),
                     (long)strlen(raw) - 11);
    assert_ptr_equal(d, raw + 11);
    assert_int_equal(dl, 3);
    assert_true(c.done);
    assert_int_equal(slb_chunked_feed(&c, raw, 0, &d, &dl), 0);
    assert_null(d);
    /* Framing-only use: the data pointers may be NULL. */
    slb_chunked_init(&c);
    assert_int_equal(slb_chunked_feed(&c, raw, 11, NULL, NULL), 11);
}

/* stop_at_trailer: the feed that reaches the trailer section returns there, so the next feeds
 * consume exactly the trailer bytes (the HTTP/2 layer passes them on as trailing HEADERS). */
static void test_chunked_stop_at_trailer(void **state)
{
    const char *raw = "3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-B: two\r\n\r\n";
    struct slb_chunked c;
    const char *d;
    size_t dl;
    slb_chunked_init(&c);
    c.stop_at_trailer = true;
    assert_int_equal(slb_chunked_feed(&c, raw, strlen(raw), &d, &dl), 11);
    assert_int_equal(dl, 3);
    assert_true(slb_chunked_in_trailer(&c));
    const char *t = raw + 11;
    assert_int_equal(slb_chunked_feed(&c, t, strlen(t), &d, &dl), (long)strlen(t));
    assert_true(c.done);
    assert_false(slb_chunked_in_trailer(&c));
    /* Without trailers the section is the final CRLF alone. */
    slb_chunked_init(&c);
    c.stop_at_trailer = true;
    assert_int_equal(slb_chunked_feed(&c, "0\r\n\r\n", 5, &d, &dl), 3);
    assert_true(slb_chunked_in_trailer(&c));
    assert_int_equal(slb_chunked_feed(&c, "\r\n", 2, &d, &dl), 2);
    assert_true(c.done);
    /* Off (the default), one feed goes through to the end. */
    slb_chunked_init(&c);
    assert_int_equal(slb_chunked_feed(&c, raw + 8, strlen(raw) - 8, &d, &dl),
                     (long)strlen(raw) - 8);
    assert_true(c.done);
}

static void test_chunked_sizes(void **state)
{
    struct slb_chunked c;
    const char *d;
    size_t dl;
    /* Sizes up to SLB_CHUNKED_MAX_SIZE, with or without leading zeros (16 digits at most). */
    slb_chunked_init(&c);
    assert_int_equal(slb_chunked_feed(&c, "7fffffff\r\nab", 12, &d, &dl), 12);
    assert_true(c.remaining == SLB_CHUNKED_MAX_SIZE - 2);
    assert_int_equal(dl, 2);
    slb_chunked_init(&c);
    assert_int_equal(slb_chunked_feed(&c, "000000007FFFFFFF\r\n", 18, &d, &dl), 18);
    assert_true(c.remaining == SLB_CHUNKED_MAX_SIZE);
    /* Above it: refused at the digit that crosses it, whatever follows. */
    static const char *const big[] = {"80000000\r\n", "100000005\r\n", "ffffffff\r\n",
                                      "ffffffffffffffff\r\n", "0000000080000000\r\n"};
    for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++) {
        slb_chunked_init(&c);
        assert_int_equal(slb_chunked_feed(&c, big[i], strlen(big[i]), &d, &dl), -400);
    }
    slb_chunked_init(&c);
    assert_int_equal(slb_chunked_feed(&c, "10000000000000000", 17, &d, &dl), -400);
    /* Once broken, always broken. */
    assert_int_equal(slb_chunked_feed(&c, "0\r\n\r\n", 5, &d, &dl), -400);
    slb_chunked_init(&c);
    assert_int_equal(slb_chunked_feed(&c, "1F\r\n", 4, &d, &dl), 4);
    assert_true(c.remaining == 31);
}

/* Relays raw through slb_rechunk the way the proxy does: the input arrives `step` bytes at a
 * time (each window a heap copy, for ASan), what a step drops or sends leaves the window, our
 * framing and the bytes sent go to out. Returns the bytes of raw consumed, or -400. */
static bool rechunk_drop_banned; /* the response side: banned trailer fields dropped */

static long rechunk(const char *raw, size_t len, size_t step, char *out, size_t *out_len,
                    bool *done)
{
    struct slb_rechunk r;
    slb_rechunk_init(&r);
    r.drop_banned_trailers = rechunk_drop_banned;
    size_t off = 0, avail = 0;
    *out_len = 0;
    for (;;) {
        char *win = malloc(avail ? avail : 1);
        assert_non_null(win);
        memcpy(win, raw + off, avail);
        size_t ready;
        long d = slb_rechunk_next(&r, win, avail, &ready);
        if (d < 0) {
            free(win);
            *done = false;
            return d;
        }
        assert_true((size_t)d + ready + r.skip <= avail);
        assert_true(r.frame_len <= sizeof(r.frame));
        memcpy(out + *out_len, r.frame, r.frame_len);
        *out_len += r.frame_len;
        memcpy(out + *out_len, win + d, ready);
        *out_len += ready;
        free(win);
        size_t used = (size_t)d + ready + (size_t)r.skip;
        off += used;
        avail -= used;
        if (d == 0 && ready == 0 && r.frame_len == 0) {
            if (r.ck.done || off + avail == len)
                break;
            avail += step;
            if (avail > len - off)
                avail = len - off;
        }
    }
    *done = r.ck.done;
    return (long)off;
}

/* out is a chunked body as slbd writes it: lowercase sizes without leading zeros, each at
 * most max, no extensions; then "0", the trailer section. Returns the data length. */
static size_t check_our_framing(const char *out, size_t len, size_t max, const char *trailer)
{
    size_t i = 0, data = 0;
    for (;;) {
        size_t size = 0, digits = 0;
        while (i < len && strchr("0123456789abcdef", out[i]) && out[i]) {
            size = size * 16 + (size_t)(out[i] <= '9' ? out[i] - '0' : out[i] - 'a' + 10);
            i++;
            digits++;
        }
        assert_true(digits > 0 && (digits == 1 || out[i - digits] != '0'));
        assert_true(i + 2 <= len && out[i] == '\r' && out[i + 1] == '\n');
        i += 2;
        if (size == 0)
            break;
        assert_true(size <= max);
        assert_true(i + size + 2 <= len && out[i + size] == '\r' && out[i + size + 1] == '\n');
        i += size + 2;
        data += size;
    }
    assert_int_equal(len - i, strlen(trailer));
    assert_memory_equal(out + i, trailer, len - i);
    return data;
}

static void test_rechunk(void **state)
{
    char out[512];
    size_t ol;
    bool done;
    /* Extensions go, sizes are ours, the trailer section stays, what follows is left. */
    const char *raw = "0005;name=\"v;x\"\r\nhello\r\nA;e\r\n0123456789\r\n000\r\nX-T: 1\r\n\r\n"
                      "GET / HTTP/1.1\r\n";
    const char *want = "5\r\nhello\r\na\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
    size_t len = strlen(raw);
    assert_int_equal(rechunk(raw, len, len, out, &ol, &done), (long)len - 16);
    assert_true(done);
    assert_int_equal(ol, strlen(want));
    assert_memory_equal(out, want, ol);
    /* Whatever the pieces, the data and the trailers are the same, each chunk at most a
     * piece. */
    static const size_t steps[] = {1, 2, 3, 4, 5, 7, 11, 64};
    for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
        assert_int_equal(rechunk(raw, len, steps[s], out, &ol, &done), (long)len - 16);
        assert_true(done);
        assert_int_equal(check_our_framing(out, ol, steps[s], "X-T: 1\r\n\r\n"), 15);
        char dec[512];
        size_t dl;
        bool dd;
        assert_int_equal(decode(out, ol, ol, dec, &dl, &dd), (long)ol);
        assert_true(dd);
        assert_int_equal(dl, 15);
        assert_memory_equal(dec, "hello0123456789", 15);
    }
    /* No data, no trailers. */
    assert_int_equal(rechunk("0\r\n\r\n", 5, 5, out, &ol, &done), 5);
    assert_true(done);
    assert_int_equal(ol, 5);
    assert_memory_equal(out, "0\r\n\r\n", 5);
    /* A size a 32-bit reader would take for 5 never becomes a chunk: refused. */
    const char *smuggle = "100000005\r\nGET /x HTTP/1.1\r\n\r\n0\r\n\r\n";
    assert_int_equal(rechunk(smuggle, strlen(smuggle), 64, out, &ol, &done), -400);
    assert_int_equal(ol, 0);
    /* An error after some data: what went before is out, nothing after. */
    const char *bad = "3\r\nabc\r\nzz\r\n";
    assert_int_equal(rechunk(bad, strlen(bad), 64, out, &ol, &done), -400);
    assert_true(ol == 0 || (ol == 6 && memcmp(out, "3\r\nabc", 6) == 0));
}

/* A backend's trailer section reaches the client without the fields that frame or route a
 * message, however its bytes arrive; the others pass as they came. */
static void test_rechunk_drops_banned_trailers(void **state)
{
    const char *raw = "5\r\nhello\r\n0\r\nX-A: 1\r\nContent-Length: 50\r\nHOST: e\r\n"
                      "X-B: a:b\r\nte: trailers\r\n\r\nGET / HTTP/1.1\r\n";
    size_t len = strlen(raw);
    char out[512];
    size_t ol;
    bool done;
    static const size_t steps[] = {1, 2, 3, 5, 13, 64, 512};
    rechunk_drop_banned = true;
    for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
        assert_int_equal(rechunk(raw, len, steps[s], out, &ol, &done), (long)len - 16);
        assert_true(done);
        check_our_framing(out, ol, 5, "X-A: 1\r\nX-B: a:b\r\n\r\n");
    }
    /* Only banned fields: the empty trailer section. */
    const char *only = "0\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_int_equal(rechunk(only, strlen(only), 4, out, &ol, &done), (long)strlen(only));
    assert_true(done);
    assert_int_equal(ol, 5);
    assert_memory_equal(out, "0\r\n\r\n", 5);
    /* A trailer line without a colon is still refused. */
    const char *bad = "0\r\nHost\r\n\r\n";
    assert_int_equal(rechunk(bad, strlen(bad), 64, out, &ol, &done), -400);
    rechunk_drop_banned = false;
    /* Without the flag (a request, refused by the decoder instead) all pass. */
    assert_int_equal(rechunk(raw, len, 7, out, &ol, &done), (long)len - 16);
    check_our_framing(
        out, ol, 7, "X-A: 1\r\nContent-Length: 50\r\nHOST: e\r\nX-B: a:b\r\nte: trailers\r\n\r\n");
}

static void test_chunked_line_limits(void **state)
{
    size_t n = SLB_CHUNKED_MAX_LINE + 64;
    char *raw = malloc(n + 32);
    char out[8];
    size_t ol;
    bool done;
    assert_non_null(raw);
    /* "1;" + name = exactly SLB_CHUNKED_MAX_LINE bytes before the CRLF: allowed. */
    raw[0] = '1';
    raw[1] = ';';
    memset(raw + 2, 'e', SLB_CHUNKED_MAX_LINE - 2);
    size_t l = SLB_CHUNKED_MAX_LINE;
    l += (size_t)sprintf(raw + l, "\r\nx\r\n0\r\n\r\n");
    assert_int_equal(decode(raw, l, 1, out, &ol, &done), (long)l);
    assert_true(done);
    /* One more byte: refused, even before the line ends. */
    memset(raw + 2, 'e', SLB_CHUNKED_MAX_LINE - 1);
    struct slb_chunked c;
    const char *d;
    size_t dl;
    slb_chunked_init(&c);
    assert_int_equal(slb_chunked_feed(&c, raw, SLB_CHUNKED_MAX_LINE, &d, &dl),
                     SLB_CHUNKED_MAX_LINE);
    assert_int_equal(slb_chunked_feed(&c, raw + SLB_CHUNKED_MAX_LINE, 1, &d, &dl), -400);
    free(raw);

    /* Trailer section: many small valid fields add up past the total limit. */
    size_t cap = SLB_CHUNKED_MAX_TRAILER * 2;
    char *t = malloc(cap);
    assert_non_null(t);
    size_t tl = (size_t)sprintf(t, "0\r\n");
    while (tl < SLB_CHUNKED_MAX_TRAILER + 16)
        tl += (size_t)sprintf(t + tl, "X-Pad: 0123456789abcdef\r\n");
    tl += (size_t)sprintf(t + tl, "\r\n");
    assert_int_equal(decode(t, tl, tl, out, &ol, &done), -400);
    assert_int_equal(decode(t, tl, 1, out, &ol, &done), -400);
    /* A trailer section well under the limit decodes. */
    tl = (size_t)sprintf(t, "0\r\n");
    for (int i = 0; i < 100; i++)
        tl += (size_t)sprintf(t + tl, "X-Pad: 0123456789abcdef\r\n");
    tl += (size_t)sprintf(t + tl, "\r\n");
    assert_int_equal(decode(t, tl, 1, out, &ol, &done), (long)tl);
    assert_true(done);
    free(t);
}

/* refuse_banned_trailers: a trailer field that frames or routes a message is invalid framing,
 * whatever its case and however the bytes are split; other fields and long names pass. */
static void test_chunked_banned_trailers(void **state)
{
    static const char *const bad[] = {
        "0\r\nContent-Length: 5\r\n\r\n",
        "0\r\nX-A: 1\r\nHOST: evil\r\n\r\n",
        "0\r\ntransfer-encoding: chunked\r\n\r\n",
        "0\r\nTe: trailers\r\n\r\n",
        "0\r\nTrailer: x\r\n\r\n",
        "0\r\nConnection:close\r\n\r\n",
    };
    static const char *const good[] = {
        "0\r\nX-Sum: 1\r\n\r\n",
        "0\r\nContent-Length-Checksum: 5\r\nHosts: a\r\nT: e\r\n\r\n",
        "0\r\nX-Transfer-Encoding-And-More-Than-Eighteen: 1\r\n\r\n",
    };
    struct slb_chunked c;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        for (size_t step = 1; step <= strlen(bad[i]); step += strlen(bad[i]) - 1) {
            slb_chunked_init(&c);
            c.refuse_banned_trailers = true;
            long r = 0;
            for (size_t off = 0; off < strlen(bad[i]) && r >= 0; off += (size_t)r) {
                size_t n = strlen(bad[i]) - off < step ? strlen(bad[i]) - off : step;
                r = slb_chunked_feed(&c, bad[i] + off, n, NULL, NULL);
            }
            assert_int_equal(r, -400);
        }
        /* Off (the default, a backend's response), the same section decodes. */
        slb_chunked_init(&c);
        assert_int_equal(slb_chunked_feed(&c, bad[i], strlen(bad[i]), NULL, NULL),
                         (long)strlen(bad[i]));
        assert_true(c.done);
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        slb_chunked_init(&c);
        c.refuse_banned_trailers = true;
        assert_int_equal(slb_chunked_feed(&c, good[i], strlen(good[i]), NULL, NULL),
                         (long)strlen(good[i]));
        assert_true(c.done);
    }
    assert_true(slb_http_trailer_field_banned("content-LENGTH", 14));
    assert_false(slb_http_trailer_field_banned("content-lengt", 13));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_table),
        cmocka_unit_test(test_request_headers),
        cmocka_unit_test(test_request_nul),
        cmocka_unit_test(test_request_line_limit),
        cmocka_unit_test(test_header_count_limit),
        cmocka_unit_test(test_head_bytes_limit),
        cmocka_unit_test(test_limits_default),
        cmocka_unit_test(test_tchar_every_byte),
        cmocka_unit_test(test_slice_eq_ci_n),
        cmocka_unit_test(test_response_table),
        cmocka_unit_test(test_response_limits),
        cmocka_unit_test(test_chunked_table),
        cmocka_unit_test(test_chunked_byte_by_byte),
        cmocka_unit_test(test_chunked_one_run),
        cmocka_unit_test(test_chunked_stop_at_trailer),
        cmocka_unit_test(test_chunked_sizes),
        cmocka_unit_test(test_chunked_line_limits),
        cmocka_unit_test(test_rechunk),
        cmocka_unit_test(test_rechunk_drops_banned_trailers),
        cmocka_unit_test(test_chunked_banned_trailers),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    release_copy();
    return rc;
}
