/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the HTTP/1.1 request-head parser: besides memory safety under ASan and
 * UBSan it checks the promises of src/http/parser.h on every input (result codes, slices inside
 * the head, framing fields that agree with the headers), that the answer does not depend on how
 * the bytes arrived, and that tighter limits only ever refuse more. */
#include "http/parser.h"
#include "http/rewrite.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An invariant failed: say which and crash, so libFuzzer keeps the input. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_http_request: %s:%d: check failed: %s\n", __FILE__, __LINE__,    \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Small enough that the fuzzer reaches every limit with short inputs. */
static const struct slb_http_limits small_limits = {
    .max_line = 64, .max_headers = 8, .max_head_bytes = 512};
#define DEFAULT_MAX_HEAD 16384
#define DEFAULT_MAX_HEADERS 100

/* Prefix lengths checked for each complete head, beyond the exhaustive check of short ones. */
#define PREFIX_CUTS 8
#define PREFIX_ALL 160

static bool rc_in_range(int rc)
{
    return rc >= 0 || rc == -400 || rc == -414 || rc == -431 || rc == -501 || rc == -505;
}

/* A non-empty slice lies inside buf[0, len); an empty one still points somewhere. Compared as
 * integers: relational operators on unrelated pointers are undefined. */
static void check_slice(struct slb_slice s, const char *buf, size_t len)
{
    CHECK(s.p != NULL);
    if (s.len == 0)
        return;
    uintptr_t b = (uintptr_t)buf, p = (uintptr_t)s.p;
    CHECK(p >= b && p - b <= len && s.len <= len - (p - b));
}

static bool slice_is(struct slb_slice s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.p, lit, s.len) == 0;
}

static size_t count_header(const struct slb_http_msg *m, const char *name)
{
    size_t n = 0;
    for (int i = slb_http_find_header(m, name, 0); i >= 0;
         i = slb_http_find_header(m, name, (size_t)i + 1))
        n++;
    return n;
}

static void check_method(const struct slb_http_msg *m)
{
    static const struct {
        const char *name;
        enum slb_http_method method;
    } known[] = {
        {"GET", SLB_HTTP_GET},     {"HEAD", SLB_HTTP_HEAD},       {"POST", SLB_HTTP_POST},
        {"PUT", SLB_HTTP_PUT},     {"DELETE", SLB_HTTP_DELETE},   {"OPTIONS", SLB_HTTP_OPTIONS},
        {"PATCH", SLB_HTTP_PATCH}, {"CONNECT", SLB_HTTP_CONNECT}, {"TRACE", SLB_HTTP_TRACE},
    };
    enum slb_http_method want = SLB_HTTP_OTHER;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (slice_is(m->method_name, known[i].name))
            want = known[i].method;
    CHECK(m->method == want);
    CHECK(m->method_name.len > 0);
    for (size_t i = 0; i < m->method_name.len; i++)
        CHECK(slb_http_is_tchar((unsigned char)m->method_name.p[i]));
}

/* Everything a successful parse promises about msg, re-derived from the bytes. */
static void check_msg(const char *buf, size_t len, const struct slb_http_limits *lim, int rc,
                      const struct slb_http_msg *m)
{
    size_t max_head = lim ? lim->max_head_bytes : DEFAULT_MAX_HEAD;
    size_t max_headers = lim ? lim->max_headers : DEFAULT_MAX_HEADERS;
    size_t max_line = lim ? lim->max_line : 8192;
    CHECK((size_t)rc == m->head_len);
    CHECK(m->head_len <= len && m->head_len <= max_head);
    CHECK(m->head_len >= 4 && memcmp(buf + m->head_len - 4, "\r\n\r\n", 4) == 0);
    size_t h = m->head_len;

    /* Start line: optional empty lines, method SP target SP version CRLF. */
    check_slice(m->method_name, buf, h);
    check_slice(m->target, buf, h);
    size_t lead = (size_t)(m->method_name.p - buf);
    CHECK(lead % 2 == 0 && lead <= 8);
    for (size_t i = 0; i < lead; i += 2)
        CHECK(buf[i] == '\r' && buf[i + 1] == '\n');
    check_method(m);
    CHECK(m->target.p == m->method_name.p + m->method_name.len + 1);
    CHECK(m->target.len > 0);
    for (size_t i = 0; i < m->target.len; i++) {
        unsigned char c = (unsigned char)m->target.p[i];
        CHECK(c > 0x20 && c < 0x7f && c != '#');
    }
    CHECK(m->version_minor == 0 || m->version_minor == 1);
    const char *ver = m->target.p + m->target.len;
    CHECK(memcmp(ver, m->version_minor ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n", 11) == 0);
    CHECK((size_t)(ver + 9 - m->method_name.p) <= max_line); /* the line, CRLF excluded */
    if (m->method == SLB_HTTP_CONNECT)
        CHECK(m->target.p[0] != '/' && m->target.p[0] != '*');

    /* Fields: in order, after the start line, name ":" OWS value OWS CRLF. */
    CHECK(m->nheaders <= max_headers && m->nheaders <= SLB_HTTP_MAX_HEADERS);
    const char *prev = ver + 11;
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct slb_http_header *f = &m->headers[i];
        check_slice(f->name, buf, h);
        check_slice(f->value, buf, h);
        CHECK(f->name.p == prev && f->name.len > 0);
        for (size_t k = 0; k < f->name.len; k++)
            CHECK(slb_http_is_tchar((unsigned char)f->name.p[k]));
        CHECK(f->name.p[f->name.len] == ':');
        const char *v = f->name.p + f->name.len + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        CHECK(f->value.p == v);
        for (size_t k = 0; k < f->value.len; k++) {
            unsigned char c = (unsigned char)f->value.p[k];
            CHECK(c != '\r' && c != '\n' && c != '\0' && c != 0x7f);
        }
        if (f->value.len) {
            CHECK(f->value.p[0] != ' ' && f->value.p[0] != '\t');
            char last = f->value.p[f->value.len - 1];
            CHECK(last != ' ' && last != '\t');
        }
        const char *e = f->value.p + f->value.len;
        while (*e == ' ' || *e == '\t')
            e++;
        CHECK(e[0] == '\r' && e[1] == '\n');
        prev = e + 2;
    }
    CHECK(prev == buf + h - 2);

    /* Framing: exactly what the fields say, and never two ways to read it. */
    size_t ncl = count_header(m, "Content-Length"), nte = count_header(m, "Transfer-Encoding");
    CHECK(m->body != SLB_BODY_UNTIL_CLOSE);
    CHECK(ncl <= 1);
    CHECK(!(ncl && nte));
    if (m->body == SLB_BODY_CHUNKED) {
        CHECK(nte >= 1 && m->version_minor == 1);
    } else if (m->body == SLB_BODY_LENGTH) {
        CHECK(ncl == 1);
        struct slb_slice v = m->headers[slb_http_find_header(m, "Content-Length", 0)].value;
        uint64_t n = 0;
        CHECK(v.len > 0);
        for (size_t k = 0; k < v.len; k++) {
            CHECK(v.p[k] >= '0' && v.p[k] <= '9');
            CHECK(n <= (UINT64_MAX - (uint64_t)(v.p[k] - '0')) / 10);
            n = n * 10 + (uint64_t)(v.p[k] - '0');
        }
        CHECK(n == m->content_length);
    } else {
        CHECK(m->body == SLB_BODY_NONE && ncl == 0 && nte == 0);
    }

    /* Host: the one field, or nothing; HTTP/1.1 requires it. */
    size_t nhost = count_header(m, "Host");
    CHECK(nhost <= 1);
    if (nhost) {
        CHECK(m->host.p == m->headers[slb_http_find_header(m, "Host", 0)].value.p);
        CHECK(m->host.len == m->headers[slb_http_find_header(m, "Host", 0)].value.len);
        for (size_t k = 0; k < m->host.len; k++)
            CHECK(m->host.p[k] != ',' && m->host.p[k] != '@' && m->host.p[k] != ' ');
    } else {
        CHECK(m->host.len == 0 && m->version_minor == 0);
    }

    /* Connection semantics that only HTTP/1.1 or an explicit field can turn on. */
    if (count_header(m, "Connection") == 0)
        CHECK(m->keep_alive == (m->version_minor == 1));
    if (m->upgrade)
        CHECK(m->version_minor == 1 && count_header(m, "Upgrade") > 0 &&
              count_header(m, "Connection") > 0);
    if (m->expect_continue)
        CHECK(m->version_minor == 1 && count_header(m, "Expect") > 0);
}

/* Two parses of heads at the same offsets agree on every field. */
static void check_same(const char *a, const struct slb_http_msg *x, const char *b,
                       const struct slb_http_msg *y)
{
#define SAME_SLICE(f) CHECK(x->f.len == y->f.len && (x->f.len == 0 || x->f.p - a == y->f.p - b))
    CHECK(x->method == y->method && x->version_minor == y->version_minor);
    SAME_SLICE(method_name);
    SAME_SLICE(target);
    SAME_SLICE(host);
    CHECK(x->nheaders == y->nheaders && x->head_len == y->head_len);
    for (size_t i = 0; i < x->nheaders; i++) {
        SAME_SLICE(headers[i].name);
        SAME_SLICE(headers[i].value);
    }
    CHECK(x->body == y->body && x->content_length == y->content_length);
    CHECK(x->keep_alive == y->keep_alive && x->expect_continue == y->expect_continue);
    CHECK(x->upgrade == y->upgrade);
#undef SAME_SLICE
}

static uint64_t hash(const uint8_t *d, size_t len)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ d[i]) * 0x100000001b3u;
    return h;
}

/* The parser rescans from the start on every call, so an answer of "complete" or "need more"
 * for the whole buffer means every shorter prefix needs more: a prefix may never be refused
 * (the proxy answers 400 at once) nor be complete at another length. */
/* buf[0, k) copied to the end of copy (len bytes); returns where it starts. */
static const char *tail_of(char *copy, size_t len, const char *buf, size_t k)
{
    memcpy(copy + (len - k), buf, k);
    return copy + (len - k);
}

static void check_prefixes(const char *buf, size_t len, const struct slb_http_limits *lim,
                           struct slb_http_msg *tmp)
{
    /* Each prefix is copied to the end of an allocation of len bytes, so ASan sees a read
     * past the prefix as the out-of-bounds read it would be on a real connection. */
    char *copy = malloc(len ? len : 1);
    CHECK(copy != NULL);
    if (len <= PREFIX_ALL) {
        for (size_t k = 0; k < len; k++)
            CHECK(slb_http_parse_request(tail_of(copy, len, buf, k), k, lim, tmp) == 0);
        free(copy);
        return;
    }
    uint64_t h = hash((const uint8_t *)buf, len);
    for (int i = 0; i < PREFIX_CUTS; i++) {
        h = h * 6364136223846793005u + 1442695040888963407u;
        size_t k = i == 0 ? len - 1 : (size_t)(h >> 33) % len;
        CHECK(slb_http_parse_request(tail_of(copy, len, buf, k), k, lim, tmp) == 0);
    }
    free(copy);
}

/* Helpers the proxy runs on parsed requests must stay inside the head too. */
static void check_helpers(const char *buf, const struct slb_http_msg *m)
{
    struct slb_slice c = slb_http_cookie(m, "SLBSERVERID");
    if (c.len) {
        check_slice(c, buf, m->head_len);
        CHECK(slb_http_find_header(m, "Cookie", 0) >= 0);
    }
    for (size_t i = 0; i < m->nheaders; i++) {
        bool hop = slb_http_is_hop_by_hop(m, i);
        if (slb_slice_eq_ci(m->headers[i].name, "Transfer-Encoding") ||
            slb_slice_eq_ci(m->headers[i].name, "Connection"))
            CHECK(hop);
    }
}

static struct slb_http_msg msg, msg2, tmp;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy, so ASan catches any read one byte past the end. */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);

    int rc = slb_http_parse_request(buf, size, NULL, &msg);
    CHECK(rc_in_range(rc));
    if (rc > 0) {
        check_msg(buf, size, NULL, rc, &msg);
        check_helpers(buf, &msg);
        /* Bytes after the head (a body, a pipelined request) change nothing. */
        CHECK(slb_http_parse_request(buf, (size_t)rc, NULL, &msg2) == rc);
        check_same(buf, &msg, buf, &msg2);
    }
    /* Determinism: a second parse of the same bytes gives the same answer. */
    CHECK(slb_http_parse_request(buf, size, NULL, &msg2) == rc);
    if (rc > 0)
        check_same(buf, &msg, buf, &msg2);
    if (rc >= 0)
        check_prefixes(buf, rc > 0 ? (size_t)rc : size, NULL, &tmp);

    /* Tighter limits refuse more, never less, and never change a head they accept. */
    int rs = slb_http_parse_request(buf, size, &small_limits, &msg2);
    CHECK(rc_in_range(rs));
    if (rs > 0) {
        check_msg(buf, size, &small_limits, rs, &msg2);
        CHECK(rc == rs);
        check_same(buf, &msg, buf, &msg2);
    }
    if (rc < 0)
        CHECK(rs < 0);
    if (rs >= 0)
        check_prefixes(buf, rs > 0 ? (size_t)rs : size, &small_limits, &tmp);

    free(buf);
    return 0;
}
