/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for slbctl's table and JSON rendering: alignment, cell sanitizing, transposition,
 * fitting a width, value formatting, the key/value + sub-table layout of `show` and
 * `stats --wide`, and the default `stats` summary with its numbers and times for people. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* slbctl is not part of libslb.a, so its rendering code is compiled into this test directly;
 * table.c and summary.c depend on nothing else of the CLI. */
#include "cli/summary.c"
#include "cli/table.c"

#include <stdlib.h>
#include <string.h>

/* Output captured from a FILE *, freed by the caller. */
struct capture {
    char *buf;
    size_t len;
    FILE *f;
};

static void capture_begin(struct capture *c)
{
    c->buf = NULL;
    c->len = 0;
    c->f = open_memstream(&c->buf, &c->len);
    assert_non_null(c->f);
}

static char *capture_end(struct capture *c)
{
    fclose(c->f);
    return c->buf;
}

static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &err);
    assert_non_null(v);
    return v;
}

static char *render(const char *json_text, size_t width)
{
    json_t *v = parse(json_text);
    struct capture c;
    capture_begin(&c);
    slb_cli_render_object(c.f, v, width);
    json_decref(v);
    return capture_end(&c);
}

static void test_table_aligns_columns(void **state)
{
    (void)state;
    const char *h[] = {"NAME", "PROTOCOL", "BIND"};
    const char *r1[] = {"web", "https", "0.0.0.0:443"};
    const char *r2[] = {"database", "tcp", "[::1]:5432"};
    struct slb_cli_table *t = slb_cli_table_new(3, h);
    assert_non_null(t);
    assert_int_equal(slb_cli_table_add(t, r1), 0);
    assert_int_equal(slb_cli_table_add(t, r2), 0);
    assert_int_equal(slb_cli_table_rows(t), 2);
    struct capture c;
    capture_begin(&c);
    slb_cli_table_print(t, c.f);
    char *out = capture_end(&c);
    assert_string_equal(out, "NAME      PROTOCOL  BIND\n"
                             "web       https     0.0.0.0:443\n"
                             "database  tcp       [::1]:5432\n");
    /* widest line: 8 + 2 + 8 + 2 + 11 */
    assert_int_equal(slb_cli_table_width(t), 31);
    free(out);
    slb_cli_table_free(t);
}

static void test_table_cells_are_sanitized(void **state)
{
    (void)state;
    const char *h[] = {"A", "B", "C"};
    const char *r[] = {NULL, "x\ny\tz", ""};
    struct slb_cli_table *t = slb_cli_table_new(3, h);
    assert_int_equal(slb_cli_table_add(t, r), 0);
    struct capture c;
    capture_begin(&c);
    slb_cli_table_print(t, c.f);
    char *out = capture_end(&c);
    /* NULL shows as "-", control characters as '?', and an empty last cell leaves no blanks. */
    assert_string_equal(out, "A  B      C\n"
                             "-  x?y?z\n");
    free(out);
    slb_cli_table_free(t);
}

static void test_table_utf8_width(void **state)
{
    (void)state;
    assert_int_equal(slb_cli_text_width("abc"), 3);
    assert_int_equal(slb_cli_text_width("h\xc3\xa9llo"), 5);    /* héllo */
    assert_int_equal(slb_cli_text_width("\xe2\x9c\x93 ok"), 4); /* check mark */
    const char *h[] = {"NAME", "X"};
    const char *r[] = {"\xc3\xa9t\xc3\xa9", "1"};
    struct slb_cli_table *t = slb_cli_table_new(2, h);
    slb_cli_table_add(t, r);
    struct capture c;
    capture_begin(&c);
    slb_cli_table_print(t, c.f);
    char *out = capture_end(&c);
    assert_string_equal(out, "NAME  X\n\xc3\xa9t\xc3\xa9   1\n");
    free(out);
    slb_cli_table_free(t);
}

static void test_table_transpose(void **state)
{
    (void)state;
    const char *h[] = {"NAME", "CONN", "BYTES"};
    const char *r1[] = {"web", "10", "2048"};
    const char *r2[] = {"db", "3", "7"};
    struct slb_cli_table *t = slb_cli_table_new(3, h);
    slb_cli_table_add(t, r1);
    slb_cli_table_add(t, r2);
    struct slb_cli_table *s = slb_cli_table_transpose(t, "FIELD");
    assert_non_null(s);
    assert_int_equal(slb_cli_table_rows(s), 2);
    struct capture c;
    capture_begin(&c);
    slb_cli_table_print(s, c.f);
    char *out = capture_end(&c);
    assert_string_equal(out, "FIELD  web   db\n"
                             "CONN   10    3\n"
                             "BYTES  2048  7\n");
    free(out);
    slb_cli_table_free(s);
    slb_cli_table_free(t);
}

static void test_table_rejects_zero_columns(void **state)
{
    (void)state;
    assert_null(slb_cli_table_new(0, NULL));
    slb_cli_table_free(NULL);
}

static void expect_text(const char *json_text, const char *want)
{
    json_t *v = parse(json_text);
    char buf[128];
    slb_cli_value_text(v, buf, sizeof(buf));
    assert_string_equal(buf, want);
    json_decref(v);
}

static void test_value_text(void **state)
{
    (void)state;
    expect_text("\"web\"", "web");
    expect_text("\"\"", "-");
    expect_text("42", "42");
    expect_text("-7", "-7");
    expect_text("3.25", "3.25");
    expect_text("2.0", "2");
    expect_text("0.123456", "0.123");
    expect_text("true", "true");
    expect_text("false", "false");
    expect_text("null", "-");
    expect_text("[]", "-");
    expect_text("{}", "-");
    expect_text("[\"a\", \"b\", 3]", "a, b, 3");
    expect_text("[{\"x\":1}]", "{\"x\":1}");
    char buf[128];
    slb_cli_value_text(NULL, buf, sizeof(buf));
    assert_string_equal(buf, "-");
    /* A small buffer truncates cleanly instead of overflowing. */
    json_t *v = parse("[\"alpha\", \"beta\", \"gamma\"]");
    char small[10];
    slb_cli_value_text(v, small, sizeof(small));
    assert_true(strlen(small) < sizeof(small));
    assert_memory_equal(small, "alpha", 5);
    json_decref(v);
}

static void test_render_resource_with_servers(void **state)
{
    (void)state;
    char *out = render("{\"name\":\"app\",\"scheduler\":\"wrr\","
                       "\"servers\":[{\"address\":\"10.0.0.1\",\"port\":80,\"weight\":100},"
                       "{\"address\":\"fd00::5\",\"port\":8080,\"weight\":5}],"
                       "\"health_check\":{\"protocol\":\"http\",\"uri\":\"/ping\","
                       "\"http_codes\":[\"http_2xx\",\"http_3xx\"]}}",
                       0);
    assert_string_equal(out, "name:                    app\n"
                             "scheduler:               wrr\n"
                             "health_check.protocol:   http\n"
                             "health_check.uri:        /ping\n"
                             "health_check.http_codes: http_2xx, http_3xx\n"
                             "\n"
                             "servers:\n"
                             "ADDRESS   PORT  WEIGHT\n"
                             "10.0.0.1  80    100\n"
                             "fd00::5   8080  5\n");
    free(out);
}

static void test_render_empty_collections(void **state)
{
    (void)state;
    char *out = render("{\"name\":\"g\",\"servers\":[],\"tls\":{},\"proxy_protocol\":null}", 0);
    assert_string_equal(out, "name:           g\n"
                             "servers:        -\n"
                             "tls:            -\n"
                             "proxy_protocol: -\n");
    free(out);
}

static const char *stats_doc =
    "{\"uptime_s\":5,"
    "\"listeners\":[{\"name\":\"web\",\"connections\":{\"total\":9,\"active\":1},"
    "\"bytes\":{\"in\":{\"payload\":10,\"wire\":20}}},"
    "{\"name\":\"db\",\"connections\":{\"total\":2,\"active\":0}}],"
    "\"groups\":[{\"name\":\"app\",\"servers\":[{\"address\":\"10.0.0.1\",\"port\":80,"
    "\"healthy\":true},{\"address\":\"10.0.0.2\",\"port\":80,\"healthy\":false}]}]}";

static void test_render_stats_nested_tables(void **state)
{
    (void)state;
    char *out = render(stats_doc, 0);
    /* Nested maps in a row become dotted columns; the groups table would only repeat names,
     * so just its servers are shown, each with the group it belongs to. */
    assert_string_equal(out, "uptime_s: 5\n"
                             "\n"
                             "listeners:\n"
                             "NAME  CONNECTIONS.TOTAL  CONNECTIONS.ACTIVE  BYTES.IN.PAYLOAD  "
                             "BYTES.IN.WIRE\n"
                             "web   9                  1                   10                20\n"
                             "db    2                  0                   -                 -\n"
                             "\n"
                             "servers:\n"
                             "GROUP  ADDRESS   PORT  HEALTHY\n"
                             "app    10.0.0.1  80    true\n"
                             "app    10.0.0.2  80    false\n");
    free(out);
}

static void test_render_empty_nested_collection(void **state)
{
    (void)state;
    /* A group without servers must not turn "servers" into a column of raw JSON. */
    char *out = render("{\"groups\":[{\"name\":\"app\",\"scheduler\":\"wrr\","
                       "\"servers\":[{\"address\":\"10.0.0.1\",\"port\":80}]},"
                       "{\"name\":\"pg\",\"scheduler\":\"wlc\",\"servers\":[]}]}",
                       0);
    assert_string_equal(out, "groups:\n"
                             "NAME  SCHEDULER\n"
                             "app   wrr\n"
                             "pg    wlc\n"
                             "\n"
                             "servers:\n"
                             "GROUP  ADDRESS   PORT\n"
                             "app    10.0.0.1  80\n");
    free(out);
}

static void test_render_narrow_terminal_turns_table(void **state)
{
    (void)state;
    char *out = render("{\"listeners\":[{\"name\":\"web\",\"connections_total\":9,"
                       "\"connections_active\":1}]}",
                       30);
    assert_string_equal(out, "listeners:\n"
                             "FIELD               web\n"
                             "CONNECTIONS_TOTAL   9\n"
                             "CONNECTIONS_ACTIVE  1\n");
    free(out);
}

static void test_render_map_of_objects(void **state)
{
    (void)state;
    char *out = render("{\"listeners\":{\"web\":{\"active\":3},\"api\":{\"active\":0}}}", 0);
    assert_string_equal(out, "listeners:\n"
                             "NAME  ACTIVE\n"
                             "web   3\n"
                             "api   0\n");
    free(out);
}

static void test_render_non_objects(void **state)
{
    (void)state;
    char *out = render("[{\"id\":\"c1\",\"type\":\"ca\"},{\"id\":\"c2\",\"type\":\"server\"}]", 0);
    assert_string_equal(out, "items:\n"
                             "ID  TYPE\n"
                             "c1  ca\n"
                             "c2  server\n");
    free(out);
    out = render("\"plain\"", 0);
    assert_string_equal(out, "plain\n");
    free(out);
}

static void test_human_numbers(void **state)
{
    (void)state;
    char b[64];
    static const struct {
        double v;
        const char *count, *bytes;
    } cases[] = {
        {0, "0", "0 B"},          {7, "7", "7 B"},
        {0.5, "0.5", "0 B"},      {999, "999", "999 B"},
        {1000, "1k", "1000 B"},   {1234, "1.2k", "1.2 KiB"},
        {56789, "57k", "55 KiB"}, {3.4e6, "3.4M", "3.2 MiB"},
        {2e12, "2T", "1.8 TiB"},  {-1, "-", "-"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        slb_cli_human_count(cases[i].v, b, sizeof(b));
        assert_string_equal(b, cases[i].count);
        slb_cli_human_bytes(cases[i].v, b, sizeof(b));
        assert_string_equal(b, cases[i].bytes);
    }
}

static void test_human_durations_and_dates(void **state)
{
    (void)state;
    char b[64];
    static const struct {
        double s;
        const char *text;
    } cases[] = {{0, "0 s"},        {12.9, "12 s"},    {303, "5m 3s"},
                 {15000, "4h 10m"}, {273600, "3d 4h"}, {-5, "0 s"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        slb_cli_human_duration(cases[i].s, b, sizeof(b));
        assert_string_equal(b, cases[i].text);
    }
    slb_cli_relative_time(12.4, b, sizeof(b));
    assert_string_equal(b, "in 12 s");
    slb_cli_relative_time(-12.4, b, sizeof(b));
    assert_string_equal(b, "12 s ago");
    slb_cli_relative_time(-273600, b, sizeof(b));
    assert_string_equal(b, "3d 4h ago");
    long long ms = 0;
    assert_int_equal(slb_cli_parse_utc("2026-12-07T17:36:30Z", &ms), 0);
    assert_true(ms == 1796664990000LL);
    assert_int_equal(slb_cli_parse_utc("2026-12-07T17:36:30", &ms), -1);
    assert_int_equal(slb_cli_parse_utc("2026-12-07T17:36:30Zx", &ms), -1);
    assert_int_equal(slb_cli_parse_utc(NULL, &ms), -1);
    /* Local time, with the offset ISO 8601 writes (POSIX TZ signs are reversed). */
    setenv("TZ", "UTC", 1);
    tzset();
    slb_cli_local_time(1796664990076LL, b, sizeof(b));
    assert_string_equal(b, "2026-12-07T17:36:30+00:00");
    setenv("TZ", "XST-05:30", 1);
    tzset();
    slb_cli_local_time(1796664990076LL, b, sizeof(b));
    assert_string_equal(b, "2026-12-07T23:06:30+05:30");
    unsetenv("TZ");
    tzset();
}

static void test_render_times_in_local_time(void **state)
{
    (void)state;
    setenv("TZ", "XST-05:30", 1);
    tzset();
    char *out = render("{\"id\":\"c1\",\"not_after\":\"2099-01-01T00:00:00Z\","
                       "\"not_before\":\"2000-01-01T00:00:00Z\",\"note\":\"2000-01-01\","
                       "\"crls\":[{\"issuer\":\"ca\",\"next_update\":\"2000-01-01T00:00:00Z\"}]}",
                       0);
    /* On a line of its own a time says how far away it is; in a table cell it does not. */
    assert_non_null(strstr(out, "not_after:  2099-01-01T05:30:00+05:30 (in "));
    assert_non_null(strstr(out, "not_before: 2000-01-01T05:30:00+05:30 ("));
    assert_non_null(strstr(out, " ago)\n"));
    assert_non_null(strstr(out, "note:       2000-01-01\n"));
    assert_non_null(strstr(out, "ca      2000-01-01T05:30:00+05:30\n"));
    free(out);
    unsetenv("TZ");
    tzset();
}

/* Every line of text is at most width columns wide. */
static void assert_fits(const char *text, size_t width)
{
    const char *p = text;
    while (*p) {
        size_t len = strcspn(p, "\n");
        char line[1024];
        snprintf(line, sizeof(line), "%.*s", (int)len, p);
        if (slb_cli_text_width(line) > width)
            fail_msg("line wider than %zu columns: \"%s\"", width, line);
        p += len + (p[len] == '\n');
    }
}

static void test_table_fit_wraps_names_and_clips_text(void **state)
{
    (void)state;
    const char *h[] = {"NAME", "N", "WHY"};
    struct slb_cli_table *t = slb_cli_table_new(3, h);
    const char *r1[] = {"a-rather-long-name", "1", "connect: Connection refused"};
    const char *r2[] = {"short", "22", "ok"};
    assert_int_equal(slb_cli_table_add(t, r1), 0);
    assert_int_equal(slb_cli_table_add(t, r2), 0);
    struct capture c;
    /* Wide enough: printed as ever. */
    capture_begin(&c);
    slb_cli_table_print_fit(t, c.f, 80);
    char *out = capture_end(&c);
    assert_string_equal(out, "NAME                N   WHY\n"
                             "a-rather-long-name  1   connect: Connection refused\n"
                             "short               22  ok\n");
    free(out);
    /* Names longer than their header go on a line of their own; WHY may not be clipped, so
     * the line stays too long. */
    capture_begin(&c);
    slb_cli_table_print_fit(t, c.f, 30);
    out = capture_end(&c);
    assert_string_equal(out, "NAME  N   WHY\n"
                             "a-rather-long-name\n"
                             "      1   connect: Connection refused\n"
                             "short\n"
                             "      22  ok\n");
    free(out);
    slb_cli_table_set_clip(t, 2);
    capture_begin(&c);
    slb_cli_table_print_fit(t, c.f, 30);
    out = capture_end(&c);
    assert_string_equal(out, "NAME  N   WHY\n"
                             "a-rather-long-name\n"
                             "      1   connect: Connection\xe2\x80\xa6\n"
                             "short\n"
                             "      22  ok\n");
    assert_fits(out, 30);
    free(out);
    slb_cli_table_free(t);
}

/* A /v1/stats document with n listeners of 63-character names and large counters, and a
 * group with one server down. */
static json_t *big_stats(size_t n)
{
    json_t *ls = json_array();
    for (size_t i = 0; i < n; i++) {
        char name[96]; /* 63 characters used */
        snprintf(name, sizeof(name), "listener-%02zu-%.*s", i, 51,
                 "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdef");
        json_array_append_new(
            ls, json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:{s:f, s:f},"
                          " s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I, s:I},"
                          " s:{s:I, s:I, s:{s:I, s:I}}}",
                          "name", name, "protocol", "https", "bind", "[2001:db8::1234]:44321",
                          "connections", (json_int_t)123456789, "active", (json_int_t)45678,
                          "refused", (json_int_t)0, "denied", (json_int_t)3, "http2_abuse",
                          (json_int_t)0, "new_connections_per_s", "1s", 1234.5, "60s", 1000.25,
                          "payload_bytes", "in", (json_int_t)1, "out", (json_int_t)2, "wire_bytes",
                          "in", (json_int_t)987654321098LL, "out", (json_int_t)123456789012345LL,
                          "requests", "total", (json_int_t)99999999, "2xx", (json_int_t)99999000,
                          "5xx", (json_int_t)999, "handshakes", "full", (json_int_t)5, "resumed",
                          (json_int_t)6, "failures", "unknown_ca", (json_int_t)1500,
                          "no_shared_cipher", (json_int_t)7));
    }
    json_t *servers = json_pack(
        "[{s:s, s:i, s:i, s:s, s:i, s:i, s:i, s:i, s:f, s:s},"
        " {s:s, s:i, s:i, s:s, s:i, s:i, s:i, s:i, s:f, s:s}]",
        "address", "10.0.0.1", "port", 8080, "weight", 100, "health", "up", "active", 3,
        "connections", 10, "requests", 30, "failures", 0, "avg_response_ms", 2.0, "last_check",
        "ok", "address", "2001:db8::77", "port", 8080, "weight", 100, "health", "down", "active", 0,
        "connections", 10, "requests", 10, "failures", 10, "avg_response_ms", 6.0, "last_check",
        "connect: Connection refused after a rather long wait for the answer");
    return json_pack("{s:i, s:i, s:i, s:I, s:o, s:[{s:s, s:s, s:o}]}", "generation", 6, "workers",
                     2, "connection_cap", 498074, "started_ms", (json_int_t)1000000000000LL,
                     "listeners", ls, "groups", "name",
                     "web-frontend-backends-production-in-the-second-datacenter-xx", "scheduler",
                     "wrr", "servers", servers);
}

static void test_stats_summary_fits_100_columns(void **state)
{
    (void)state;
    json_t *doc = big_stats(6);
    struct capture c;
    capture_begin(&c);
    /* 3 days, 4 hours and a bit after started_ms. */
    slb_cli_render_stats(c.f, doc, 100, 1000000000000LL + (3 * 86400 + 4 * 3600 + 59) * 1000LL);
    char *out = capture_end(&c);
    assert_fits(out, 100);
    assert_non_null(
        strstr(out, "generation 6, 2 workers, at most 498k connections, up 3d 4h (since "));
    for (size_t i = 0; i < json_array_size(json_object_get(doc, "listeners")); i++) {
        const char *name = json_string_value(
            json_object_get(json_array_get(json_object_get(doc, "listeners"), i), "name"));
        char line[128];
        /* Names are never clipped: each has a line of its own. */
        snprintf(line, sizeof(line), "\n%s\n", name);
        assert_non_null(strstr(out, line));
    }
    /* Counters for people: 123456789 connections, 112 TiB out, 1507 handshake failures. */
    assert_non_null(strstr(out, "[2001:db8::1234]:44321  46k     123M   1.2k   100M  999  920 GiB"
                                "  112 TiB  1.5k"));
    /* The group: one of two servers up, request-weighted mean response time, which is down. */
    assert_non_null(strstr(out, "wrr    1/2  3       20     40    10    3.0 ms  "
                                "[2001:db8::77]:8080 (connect:"));
    free(out);
    /* The daemon line wraps between its facts on a narrow screen. */
    capture_begin(&c);
    slb_cli_render_stats(c.f, doc, 60, 1000000000000LL + 59 * 1000LL);
    out = capture_end(&c);
    const char *want = "slbd: generation 6, 2 workers, at most 498k connections,\n"
                       "up 59 s (since ";
    assert_true(strncmp(out, want, strlen(want)) == 0);
    free(out);
    json_decref(doc);
}

static void test_stats_summary_names_passive_ejections(void **state)
{
    (void)state;
    json_t *doc = parse("{\"generation\":1,\"workers\":1,\"listeners\":[],\"groups\":[{"
                        "\"name\":\"g\",\"scheduler\":\"rr\",\"servers\":[{\"address\":"
                        "\"10.0.0.3\",\"port\":80,\"health\":\"down\",\"down_reason\":"
                        "\"passive\",\"last_check\":\"ok\"},{\"address\":\"10.0.0.4\","
                        "\"port\":80,\"health\":\"down\",\"down_reason\":\"active\","
                        "\"last_check\":\"status 503\"}]}]}");
    struct capture c;
    capture_begin(&c);
    slb_cli_render_stats(c.f, doc, 120, 0);
    char *out = capture_end(&c);
    assert_string_equal(out, "slbd: generation 1, 1 worker\n"
                             "\n"
                             "no listeners\n"
                             "\n"
                             "GROUP  SCHED  UP   ACTIVE  CONNS  REQS  FAIL  AVG  DOWN\n"
                             "g      rr     0/2  0       0      0     0     -    10.0.0.3:80 "
                             "(ejected by passive checks), 10.0.0.4:80 (status 503)\n");
    free(out);
    json_decref(doc);
}

static void test_stats_wide_keeps_every_counter(void **state)
{
    (void)state;
    json_t *doc = big_stats(1);
    struct capture c;
    capture_begin(&c);
    slb_cli_render_stats_wide(c.f, doc, 0, 1000000000000LL + 12000);
    char *out = capture_end(&c);
    assert_non_null(strstr(out, "slbd: generation 6, 2 workers, at most 498k connections, "
                                "up 12 s (since "));
    assert_null(strstr(out, "started_ms"));
    assert_null(strstr(out, "connection_cap"));
    assert_non_null(strstr(out, "HANDSHAKES.FAILURES.UNKNOWN_CA"));
    assert_non_null(strstr(out, "123456789012345"));
    assert_non_null(strstr(out, "connect: Connection refused after a rather long wait"));
    free(out);
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_aligns_columns),
        cmocka_unit_test(test_table_cells_are_sanitized),
        cmocka_unit_test(test_table_utf8_width),
        cmocka_unit_test(test_table_transpose),
        cmocka_unit_test(test_table_rejects_zero_columns),
        cmocka_unit_test(test_value_text),
        cmocka_unit_test(test_render_resource_with_servers),
        cmocka_unit_test(test_render_empty_collections),
        cmocka_unit_test(test_render_stats_nested_tables),
        cmocka_unit_test(test_render_empty_nested_collection),
        cmocka_unit_test(test_render_narrow_terminal_turns_table),
        cmocka_unit_test(test_render_map_of_objects),
        cmocka_unit_test(test_render_non_objects),
        cmocka_unit_test(test_human_numbers),
        cmocka_unit_test(test_human_durations_and_dates),
        cmocka_unit_test(test_render_times_in_local_time),
        cmocka_unit_test(test_table_fit_wraps_names_and_clips_text),
        cmocka_unit_test(test_stats_summary_fits_100_columns),
        cmocka_unit_test(test_stats_summary_names_passive_ejections),
        cmocka_unit_test(test_stats_wide_keeps_every_counter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
