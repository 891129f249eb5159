/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of response compression: Accept-Encoding, the decision and each exclusion, the
 * head rewrite, the compressor's round trip through zlib's inflate and its memory bound, and
 * the listener's gzip settings. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "config/config.h"
#include "config/validate.h"
#include "http/gzip.h"
#include "http/parser.h"
#include "http/rewrite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static bool ae(const char *v)
{
    struct slb_gzip_ae st;
    slb_gzip_ae_init(&st);
    slb_gzip_ae_parse(&st, (struct slb_slice){v, strlen(v)});
    return slb_gzip_ae_ok(&st);
}

static void test_accept_encoding(void **state)
{
    assert_true(ae("gzip"));
    assert_true(ae("GZip"));
    assert_true(ae("x-gzip"));
    assert_true(ae("deflate, gzip;q=1.0, br"));
    assert_true(ae("br;q=1, gzip ; q=0.001"));
    assert_true(ae(" , ,gzip,"));
    assert_true(ae("*"));
    assert_true(ae("identity;q=0, *;q=0.5"));
    assert_true(ae("gzip;level=9"));
    assert_true(ae("gzip;Q=0.5"));
    assert_false(ae(""));
    assert_false(ae("identity"));
    assert_false(ae("br, deflate"));
    assert_false(ae("gzip;q=0"));
    assert_false(ae("gzip;q=0.000"));
    assert_false(ae("gzip; q=0.0"));
    assert_false(ae("*;q=0"));
    assert_false(ae("gzipx"));
    assert_false(ae("gzip2, xgzip"));
    /* An explicit gzip outweighs "*", whichever way. */
    assert_false(ae("*, gzip;q=0"));
    assert_false(ae("gzip;q=0, *;q=1"));
    assert_true(ae("*;q=0, gzip"));
    /* Malformed qvalues refuse the coding (the safe reading). */
    assert_false(ae("gzip;q=2"));
    assert_false(ae("gzip;q=1.5"));
    assert_false(ae("gzip;q=0.1234"));
    assert_false(ae("gzip;q=abc"));
    assert_false(ae("gzip;q="));
    assert_false(ae("gzip;q=-1"));
    /* Several mentions: the lowest counts. */
    assert_false(ae("gzip, gzip;q=0"));
    /* Two fields combine. */
    struct slb_gzip_ae st;
    slb_gzip_ae_init(&st);
    slb_gzip_ae_parse(&st, (struct slb_slice){"br", 2});
    slb_gzip_ae_parse(&st, (struct slb_slice){"gzip", 4});
    assert_true(slb_gzip_ae_ok(&st));
    slb_gzip_ae_parse(&st, (struct slb_slice){"gzip;q=0", 8});
    assert_false(slb_gzip_ae_ok(&st));
}

static struct slb_gzip_req req_facts(const char *raw)
{
    static struct slb_http_msg m;
    assert_true(slb_http_parse_request(raw, strlen(raw), NULL, &m) > 0);
    struct slb_gzip_req f;
    slb_gzip_req_facts(&f, &m);
    return f;
}

static void test_request_facts(void **state)
{
    struct slb_gzip_req f = req_facts("GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n");
    assert_true(f.accepts);
    assert_false(f.head);
    assert_false(f.range);
    f = req_facts("HEAD / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br\r\n"
                  "accept-encoding: gzip\r\nRange: bytes=0-1\r\n\r\n");
    assert_true(f.accepts);
    assert_true(f.head);
    assert_true(f.range);
    f = req_facts("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_false(f.accepts);
}

static struct slb_listener_cfg lis;

static void cfg_reset(void)
{
    memset(&lis, 0, sizeof(lis));
    lis.gzip = true;
    const char *types[] = {"text/*", "application/json", "application/*+xml", "image/svg+xml"};
    for (size_t i = 0; i < 4; i++)
        snprintf(lis.gzip_types[lis.ngzip_types++], SLB_GZIP_TYPE_MAX, "%s", types[i]);
}

static struct slb_http_msg resp;
static char resp_buf[8192];

static enum slb_gzip_verdict verdict(const struct slb_gzip_req *rq, const char *raw)
{
    snprintf(resp_buf, sizeof(resp_buf), "%s", raw);
    assert_true(slb_http_parse_response(resp_buf, strlen(resp_buf), NULL, SLB_HTTP_GET, &resp) > 0);
    return slb_gzip_decide(rq, &resp, &lis);
}

#define OK_REQ (&(struct slb_gzip_req){.accepts = true})
#define R200(fields) "HTTP/1.1 200 OK\r\n" fields "\r\n"

static void test_decide_yes(void **state)
{
    cfg_reset();
    assert_int_equal(verdict(OK_REQ, R200("Content-Type: text/html\r\nContent-Length: 1024\r\n")),
                     SLB_GZIP_YES);
    assert_int_equal(verdict(OK_REQ, R200("Content-Type: Application/JSON; charset=utf-8\r\n"
                                          "Transfer-Encoding: chunked\r\n")),
                     SLB_GZIP_YES);
    /* Unknown length (close-delimited): compressed. */
    assert_int_equal(verdict(OK_REQ, R200("Content-Type: text/css\r\n")), SLB_GZIP_YES);
    assert_int_equal(
        verdict(OK_REQ, R200("Content-Type: application/atom+xml\r\nContent-Length: 5000\r\n")),
        SLB_GZIP_YES);
    assert_int_equal(
        verdict(OK_REQ, R200("Content-Type: image/svg+xml\r\nContent-Length: 5000\r\n")),
        SLB_GZIP_YES);
    assert_int_equal(verdict(OK_REQ, "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n"
                                     "Content-Length: 2000\r\n\r\n"),
                     SLB_GZIP_YES);
    assert_int_equal(verdict(OK_REQ, R200("Content-Type: text/plain\r\nCache-Control: no-cache, "
                                          "max-age=5\r\nContent-Length: 2000\r\n")),
                     SLB_GZIP_YES);
}

static void test_decide_exclusions(void **state)
{
    cfg_reset();
    const char *good = R200("Content-Type: text/html\r\nContent-Length: 5000\r\n");
    lis.gzip = false;
    assert_int_equal(verdict(OK_REQ, good), SLB_GZIP_OFF);
    cfg_reset();
    assert_int_equal(verdict(&(struct slb_gzip_req){0}, good), SLB_GZIP_NOT_ACCEPTED);
    assert_int_equal(verdict(&(struct slb_gzip_req){.accepts = true, .head = true}, good),
                     SLB_GZIP_METHOD);
    assert_int_equal(verdict(&(struct slb_gzip_req){.accepts = true, .range = true}, good),
                     SLB_GZIP_RANGE);
    assert_int_equal(verdict(OK_REQ, "HTTP/1.1 206 Partial Content\r\nContent-Type: text/html\r\n"
                                     "Content-Range: bytes 0-4999/9000\r\nContent-Length: "
                                     "5000\r\n\r\n"),
                     SLB_GZIP_STATUS);
    assert_int_equal(verdict(OK_REQ, R200("Content-Type: text/html\r\nContent-Range: bytes "
                                          "0-4999/5000\r\nContent-Length: 5000\r\n")),
                     SLB_GZIP_RANGE);
    assert_int_equal(verdict(OK_REQ, "HTTP/1.1 204 No Content\r\nContent-Type: text/html\r\n\r\n"),
                     SLB_GZIP_STATUS);
    assert_int_equal(
        verdict(OK_REQ, "HTTP/1.1 304 Not Modified\r\nContent-Type: text/html\r\n\r\n"),
        SLB_GZIP_STATUS);
    assert_int_equal(verdict(OK_REQ, R200("Content-Type: text/html\r\nContent-Length: 0\r\n")),
                     SLB_GZIP_NO_BODY);
    assert_int_equal(verdict(OK_REQ, R200("Content-Type: text/html\r\nContent-Encoding: br\r\n"
                                          "Content-Length: 5000\r\n")),
                     SLB_GZIP_ENCODED);
    assert_int_equal(verdict(OK_REQ, R200("Content-Type: text/html\r\nContent-Encoding: gzip\r\n"
                                          "Transfer-Encoding: chunked\r\n")),
                     SLB_GZIP_ENCODED);
    assert_int_equal(verdict(OK_REQ, R200("Content-Type: text/html\r\n"
                                          "Transfer-Encoding: gzip, chunked\r\n")),
                     SLB_GZIP_ENCODED);
    assert_int_equal(verdict(OK_REQ, R200("Content-Type: text/html\r\nCache-Control: public, "
                                          "No-Transform\r\nContent-Length: 5000\r\n")),
                     SLB_GZIP_NO_TRANSFORM);
    assert_int_equal(verdict(OK_REQ, R200("Content-Type: image/png\r\nContent-Length: 5000\r\n")),
                     SLB_GZIP_TYPE);
    assert_int_equal(verdict(OK_REQ, R200("Content-Length: 5000\r\n")), SLB_GZIP_TYPE);
    assert_int_equal(
        verdict(OK_REQ, R200("Content-Type: text/event-stream\r\nContent-Length: 5000\r\n")),
        SLB_GZIP_TYPE);
    assert_int_equal(verdict(OK_REQ, R200("Content-Type: text/html\r\nContent-Type: image/png\r\n"
                                          "Content-Length: 5000\r\n")),
                     SLB_GZIP_TYPE);
    assert_int_equal(verdict(OK_REQ, R200("Content-Type: application/jsonx\r\n"
                                          "Content-Length: 5000\r\n")),
                     SLB_GZIP_TYPE);
    assert_int_equal(verdict(OK_REQ, R200("Content-Type: application/xml+json\r\n"
                                          "Content-Length: 5000\r\n")),
                     SLB_GZIP_TYPE);
    assert_int_equal(verdict(OK_REQ, R200("Content-Type: text/html\r\nContent-Length: 1023\r\n")),
                     SLB_GZIP_SMALL);
    /* A head with no room for the fields we add. */
    char big[8192];
    size_t n = (size_t)snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n");
    for (int i = 0; i < 98; i++)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "X-%d: 1\r\n", i);
    snprintf(big + n, sizeof(big) - n, "\r\n");
    struct slb_http_limits lim = {.max_headers = SLB_HTTP_MAX_HEADERS};
    snprintf(resp_buf, sizeof(resp_buf), "%s", big);
    assert_true(slb_http_parse_response(resp_buf, strlen(resp_buf), &lim, SLB_HTTP_GET, &resp) > 0);
    assert_int_equal(slb_gzip_decide(OK_REQ, &resp, &lis), SLB_GZIP_NO_ROOM);
}

static char *rewritten(const char *raw, bool chunked_field, int *rc)
{
    static struct slb_gzip_scratch sc;
    snprintf(resp_buf, sizeof(resp_buf), "%s", raw);
    assert_true(slb_http_parse_response(resp_buf, strlen(resp_buf), NULL, SLB_HTTP_GET, &resp) > 0);
    *rc = slb_gzip_rewrite_head(&resp, &sc, chunked_field);
    struct slb_hbuf out = {0};
    slb_http_build_response(&out, &resp, true, NULL, NULL, NULL);
    slb_hbuf_put(&out, "", 1);
    assert_false(out.oom);
    return out.p;
}

static void test_rewrite_head(void **state)
{
    int rc;
    char *h = rewritten(R200("Content-Type: text/html\r\nContent-Length: 5000\r\n"
                             "ETag: \"abc\"\r\nVary: Cookie\r\n"),
                        true, &rc);
    assert_int_equal(rc, 0);
    assert_null(strstr(h, "Content-Length"));
    assert_non_null(strstr(h, "ETag: W/\"abc\"\r\n"));
    assert_non_null(strstr(h, "Vary: Cookie, Accept-Encoding\r\n"));
    assert_non_null(strstr(h, "Content-Encoding: gzip\r\n"));
    assert_non_null(strstr(h, "Transfer-Encoding: chunked\r\n"));
    assert_int_equal(resp.body, SLB_BODY_CHUNKED);
    free(h);

    /* Weak ETags stay; a Vary that names Accept-Encoding (or "*") stays as it is; a chunked
     * backend's Transfer-Encoding is not doubled. */
    h = rewritten(R200("Content-Type: text/html\r\nTransfer-Encoding: chunked\r\n"
                       "ETag: W/\"x\"\r\nVary: accept-encoding\r\n"),
                  true, &rc);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(h, "ETag: W/\"x\"\r\n"));
    assert_non_null(strstr(h, "Vary: accept-encoding\r\n"));
    assert_null(strstr(h, "Accept-Encoding"));
    char *te = strstr(h, "Transfer-Encoding: chunked\r\n");
    assert_non_null(te);
    assert_null(strstr(te + 1, "Transfer-Encoding"));
    free(h);

    h = rewritten(R200("Content-Type: text/html\r\nVary: *\r\n"), true, &rc);
    assert_non_null(strstr(h, "Vary: *\r\n"));
    assert_null(strstr(h, "Accept-Encoding"));
    free(h);

    /* No Vary: one is added. For HTTP/2 (no chunked_field), no Transfer-Encoding. */
    h = rewritten(R200("Content-Type: text/html\r\nContent-Length: 5000\r\n"), false, &rc);
    assert_non_null(strstr(h, "Vary: Accept-Encoding\r\n"));
    assert_null(strstr(h, "Transfer-Encoding"));
    assert_null(strstr(h, "Content-Length"));
    free(h);

    /* An empty Content-Encoding does not stay beside ours. */
    h = rewritten(R200("Content-Type: text/html\r\nContent-Encoding: \r\nContent-Length: 5000\r\n"),
                  true, &rc);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(h, "Content-Encoding: gzip\r\n"));
    assert_null(strstr(h, "Content-Encoding: \r\n"));
    free(h);

    /* Two strong ETags: left alone, not compressed. */
    h = rewritten(R200("Content-Type: text/html\r\nETag: \"a\"\r\nETag: \"b\"\r\n"
                       "Content-Length: 5000\r\n"),
                  true, &rc);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(h, "Content-Length: 5000\r\n"));
    assert_null(strstr(h, "gzip"));
    free(h);
}

/* Compress data in pieces of in_step through an output buffer of out_step, then inflate. */
static void round_trip(const unsigned char *data, size_t len, size_t in_step, size_t out_step)
{
    struct slb_gzip *z = slb_gzip_new();
    assert_non_null(z);
    size_t cap = len + len / 2 + 1024, made_total = 0, off = 0;
    unsigned char *gz = malloc(cap);
    unsigned char *chunk = malloc(out_step);
    assert_non_null(gz);
    int rc = 0;
    while (rc != 1) {
        size_t n = len - off < in_step ? len - off : in_step;
        bool finish = off + n == len;
        size_t used, made;
        rc = slb_gzip_run(z, data + off, n, &used, chunk, out_step, &made, finish);
        assert_true(rc >= 0);
        assert_true(made_total + made <= cap);
        memcpy(gz + made_total, chunk, made);
        made_total += made;
        off += used;
    }
    assert_true(slb_gzip_done(z));
    assert_int_equal(off, len);
    assert_int_equal(slb_gzip_total_in(z), len);
    assert_int_equal(slb_gzip_total_out(z), made_total);
    assert_true(slb_gzip_mem_peak(z) <= SLB_GZIP_MEM_MAX);
    assert_true(slb_gzip_mem_peak(z) > 32 * 1024);
    slb_gzip_free(z);

    /* The gzip header: magic, deflate. */
    assert_true(made_total >= 18);
    assert_int_equal(gz[0], 0x1f);
    assert_int_equal(gz[1], 0x8b);
    unsigned char *back = malloc(len + 1);
    z_stream in = {0};
    assert_int_equal(inflateInit2(&in, 15 + 16), Z_OK);
    in.next_in = gz;
    in.avail_in = (uInt)made_total;
    in.next_out = back;
    in.avail_out = (uInt)len + 1;
    assert_int_equal(inflate(&in, Z_FINISH), Z_STREAM_END);
    assert_int_equal(in.total_out, len);
    assert_int_equal(in.avail_in, 0);
    assert_memory_equal(back, data, len);
    inflateEnd(&in);
    free(back);
    free(gz);
    free(chunk);
}

static void test_round_trip(void **state)
{
    size_t len = 3u << 20;
    unsigned char *data = malloc(len);
    assert_non_null(data);
    /* Text-like and incompressible halves. */
    for (size_t i = 0; i < len / 2; i++)
        data[i] = (unsigned char)("the quick brown fox jumps over the lazy dog\n"[i % 44]);
    uint32_t x = 12345;
    for (size_t i = len / 2; i < len; i++) {
        x = x * 1103515245u + 12345u;
        data[i] = (unsigned char)(x >> 16);
    }
    round_trip(data, len, 16384, 16384);
    round_trip(data, len, 1, 7);
    round_trip(data, 100000, 100000, 1);
    round_trip(data, 0, 1, 64);
    round_trip(data + len / 2, 70000, 4096, 100);
    free(data);
}

static void test_finish_needs_room(void **state)
{
    struct slb_gzip *z = slb_gzip_new();
    size_t used, made;
    unsigned char out[4];
    /* Finish with almost no room: 0 until the trailer fits, never an error. */
    int rc, rounds = 0;
    while ((rc = slb_gzip_run(z, "hello", 5, &used, out, sizeof(out), &made, true)) == 0) {
        assert_true(++rounds < 100);
        if (used == 5)
            break;
    }
    while (rc == 0) {
        rc = slb_gzip_run(z, "", 0, &used, out, sizeof(out), &made, true);
        assert_true(rc >= 0);
        assert_true(++rounds < 100);
    }
    assert_int_equal(rc, 1);
    assert_int_equal(slb_gzip_run(z, "", 0, &used, out, sizeof(out), &made, true), 1);
    assert_int_equal(made, 0);
    /* No output room: no progress, no error. */
    slb_gzip_free(z);
    z = slb_gzip_new();
    assert_int_equal(slb_gzip_run(z, "abc", 3, &used, out, 0, &made, false), 0);
    assert_int_equal(used, 0);
    slb_gzip_free(z);
    slb_gzip_free(NULL);
}

/* --- the listener's settings --- */

static int listener(const char *text, struct slb_listener_cfg *l, json_t **norm,
                    struct slb_err *err)
{
    json_error_t jerr;
    json_t *in = json_loads(text, 0, &jerr);
    assert_non_null(in);
    slb_err_clear(err);
    int rc = slb_cv_listener(in, "listeners[0]", l, norm, err);
    json_decref(in);
    return rc;
}

#define LIS(extra)                                                                                 \
    "{\"name\":\"l\",\"protocol\":\"http\",\"bind\":\"*:80\",\"backend_group\":\"g\"" extra "}"

static void test_config_defaults(void **state)
{
    static struct slb_listener_cfg l;
    json_t *norm;
    struct slb_err err;
    assert_int_equal(listener(LIS(""), &l, &norm, &err), 0);
    assert_false(l.gzip);
    assert_true(l.ngzip_types > 0);
    /* Not shown while off, so existing listeners read back as they were. */
    assert_null(json_object_get(norm, "gzip"));
    json_decref(norm);
    slb_cv_listener_deinit(&l);

    assert_int_equal(listener(LIS(",\"gzip\":true"), &l, &norm, &err), 0);
    assert_true(l.gzip);
    assert_true(json_is_true(json_object_get(norm, "gzip")));
    json_t *types = json_object_get(norm, "gzip_types");
    assert_int_equal(json_array_size(types), l.ngzip_types);
    assert_string_equal(json_string_value(json_array_get(types, 0)), "text/*");
    assert_string_equal(l.gzip_types[0], "text/*");
    json_decref(norm);
    slb_cv_listener_deinit(&l);

    assert_int_equal(
        listener(LIS(",\"gzip\":true,\"gzip_types\":[\"text/html\",\"application/*+json\"]"), &l,
                 &norm, &err),
        0);
    assert_int_equal(l.ngzip_types, 2);
    assert_string_equal(l.gzip_types[1], "application/*+json");
    json_decref(norm);
    slb_cv_listener_deinit(&l);
}

static void test_config_errors(void **state)
{
    static const struct {
        const char *text, *code, *where;
    } cases[] = {
        {LIS(",\"gzip\":\"yes\""), "wrong_type", "listeners[0].gzip"},
        {LIS(",\"gzip_types\":\"text/html\""), "wrong_type", "listeners[0].gzip_types"},
        {LIS(",\"gzip_types\":[1]"), "wrong_type", "listeners[0].gzip_types[0]"},
        {LIS(",\"gzip_types\":[\"text/html\",\"text\"]"), "invalid_value",
         "listeners[0].gzip_types[1]"},
        {LIS(",\"gzip_types\":[\"Text/HTML\"]"), "invalid_value", "listeners[0].gzip_types[0]"},
        {LIS(",\"gzip_types\":[\"*/*\"]"), "invalid_value", "listeners[0].gzip_types[0]"},
        {LIS(",\"gzip_types\":[\"text/*html\"]"), "invalid_value", "listeners[0].gzip_types[0]"},
        {LIS(",\"gzip_types\":[\"text/ht ml\"]"), "invalid_value", "listeners[0].gzip_types[0]"},
        {LIS(",\"gzip_types\":[\"text/html\",\"text/html\"]"), "duplicate_name",
         "listeners[0].gzip_types[1]"},
        {"{\"name\":\"l\",\"protocol\":\"tcp\",\"bind\":\"*:80\",\"backend_group\":\"g\","
         "\"gzip\":true}",
         "invalid_field", "listeners[0].gzip"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        static struct slb_listener_cfg l;
        json_t *norm = NULL;
        struct slb_err err;
        int rc = listener(cases[i].text, &l, &norm, &err);
        if (rc == 0 || strcmp(err.code, cases[i].code) || strcmp(err.where, cases[i].where))
            print_error("case %zu: rc %d code %s where %s (%s)\n", i, rc, err.code, err.where,
                        err.msg);
        assert_int_not_equal(rc, 0);
        assert_string_equal(err.code, cases[i].code);
        assert_string_equal(err.where, cases[i].where);
        assert_null(norm);
    }
    /* 33 types: too many. */
    char text[4096] = LIS(",\"gzip_types\":[");
    text[strlen(text) - 1] = 0;
    for (int i = 0; i < SLB_GZIP_TYPES_MAX + 1; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text), "%s\"text/t%d\"", i ? "," : "",
                 i);
    strcat(text, "]}");
    static struct slb_listener_cfg l;
    json_t *norm;
    struct slb_err err;
    assert_int_not_equal(listener(text, &l, &norm, &err), 0);
    assert_string_equal(err.where, "listeners[0].gzip_types");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_encoding),   cmocka_unit_test(test_request_facts),
        cmocka_unit_test(test_decide_yes),        cmocka_unit_test(test_decide_exclusions),
        cmocka_unit_test(test_rewrite_head),      cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_finish_needs_room), cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
