/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the HTTP/1.1 response-head parser and the response rewrite: the
 * promises of src/http/parser.h on every input (result codes, slices inside the head, framing
 * by status and request method), independence from how the bytes arrived and from the limits,
 * and that the head slbd sends to the client keeps the framing the backend's head had. */
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
            fprintf(stderr, "fuzz_http_response: %s:%d: check failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const struct slb_http_limits small_limits = {
    .max_line = 64, .max_headers = 8, .max_head_bytes = 512};
/* For re-parsing our own output, which may be a little longer than what we accepted. */
static const struct slb_http_limits big_limits = {
    .max_line = 1 << 20, .max_headers = SLB_HTTP_MAX_HEADERS, .max_head_bytes = 1 << 20};
#define DEFAULT_MAX_HEAD 16384
#define DEFAULT_MAX_HEADERS 100

#define PREFIX_CUTS 8
#define PREFIX_ALL 160

static bool rc_in_range(int rc)
{
    return rc >= 0 || rc == -502;
}

static void check_slice(struct slb_slice s, const char *buf, size_t len)
{
    CHECK(s.p != NULL);
    if (s.len == 0)
        return;
    uintptr_t b = (uintptr_t)buf, p = (uintptr_t)s.p;
    CHECK(p >= b && p - b <= len && s.len <= len - (p - b));
}

static size_t count_header(const struct slb_http_msg *m, const char *name)
{
    size_t n = 0;
    for (int i = slb_http_find_header(m, name, 0); i >= 0;
         i = slb_http_find_header(m, name, (size_t)i + 1))
        n++;
    return n;
}

static void check_msg(const char *buf, size_t len, const struct slb_http_limits *lim, int rc,
                      enum slb_http_method method, const struct slb_http_msg *m)
{
    size_t max_head = lim ? lim->max_head_bytes : DEFAULT_MAX_HEAD;
    size_t max_headers = lim ? lim->max_headers : DEFAULT_MAX_HEADERS;
    CHECK((size_t)rc == m->head_len);
    CHECK(m->head_len <= len && m->head_len <= max_head);
    CHECK(m->head_len >= 4 && memcmp(buf + m->head_len - 4, "\r\n\r\n", 4) == 0);
    size_t h = m->head_len;

    /* Status line: no leading empty lines for responses. */
    CHECK(m->version_minor == 0 || m->version_minor == 1);
    CHECK(memcmp(buf, m->version_minor ? "HTTP/1.1 " : "HTTP/1.0 ", 9) == 0);
    CHECK(m->status >= 100 && m->status <= 599);
    char digits[4];
    snprintf(digits, sizeof(digits), "%03d", m->status);
    CHECK(memcmp(buf + 9, digits, 3) == 0);
    check_slice(m->reason, buf, h);
    for (size_t k = 0; k < m->reason.len; k++)
        CHECK(m->reason.p[k] != '\r' && m->reason.p[k] != '\n' && m->reason.p[k] != '\0');
    CHECK(m->nheaders <= max_headers && m->nheaders <= SLB_HTTP_MAX_HEADERS);
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct slb_http_header *f = &m->headers[i];
        check_slice(f->name, buf, h);
        check_slice(f->value, buf, h);
        CHECK(f->name.len > 0 && f->name.p[f->name.len] == ':');
        for (size_t k = 0; k < f->name.len; k++)
            CHECK(slb_http_is_tchar((unsigned char)f->name.p[k]));
        for (size_t k = 0; k < f->value.len; k++)
            CHECK(f->value.p[k] != '\r' && f->value.p[k] != '\n' && f->value.p[k] != '\0');
    }

    /* Framing by status and method first (RFC 9112 6.3), then by the fields. */
    size_t ncl = count_header(m, "Content-Length"), nte = count_header(m, "Transfer-Encoding");
    CHECK(ncl <= 1 && !(ncl && nte));
    int s = m->status;
    if (method == SLB_HTTP_HEAD || s < 200 || s == 204 || s == 304 ||
        (method == SLB_HTTP_CONNECT && s < 300))
        CHECK(m->body == SLB_BODY_NONE);
    else if (nte)
        CHECK(m->body == SLB_BODY_CHUNKED || m->body == SLB_BODY_UNTIL_CLOSE);
    else if (ncl)
        CHECK(m->body == SLB_BODY_LENGTH);
    else
        CHECK(m->body == SLB_BODY_UNTIL_CLOSE);
    if (nte)
        CHECK(m->version_minor == 1);
    if (m->body == SLB_BODY_UNTIL_CLOSE)
        CHECK(!m->keep_alive);
    if (m->body != SLB_BODY_LENGTH)
        CHECK(m->content_length == 0);
    if (count_header(m, "Connection") == 0 && m->body != SLB_BODY_UNTIL_CLOSE)
        CHECK(m->keep_alive == (m->version_minor == 1));
}

static void check_same(const struct slb_http_msg *x, const struct slb_http_msg *y)
{
    CHECK(x->status == y->status && x->version_minor == y->version_minor);
    CHECK(x->reason.len == y->reason.len && x->nheaders == y->nheaders);
    CHECK(x->head_len == y->head_len && x->body == y->body);
    CHECK(x->content_length == y->content_length && x->keep_alive == y->keep_alive);
    for (size_t i = 0; i < x->nheaders; i++) {
        CHECK(x->headers[i].name.p == y->headers[i].name.p);
        CHECK(x->headers[i].value.len == y->headers[i].value.len);
    }
}

static uint64_t hash(const uint8_t *d, size_t len)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ d[i]) * 0x100000001b3u;
    return h;
}

static struct slb_http_msg msg, msg2, tmp;

/* buf[0, k) copied to the end of copy (len bytes); returns where it starts. */
static const char *tail_of(char *copy, size_t len, const char *buf, size_t k)
{
    memcpy(copy + (len - k), buf, k);
    return copy + (len - k);
}

static void check_prefixes(const char *buf, size_t len, const struct slb_http_limits *lim)
{
    /* Each prefix is copied to the end of an allocation of len bytes, so ASan sees a read
     * past the prefix as the out-of-bounds read it would be on a real connection. */
    char *copy = malloc(len ? len : 1);
    CHECK(copy != NULL);
    if (len <= PREFIX_ALL) {
        for (size_t k = 0; k < len; k++)
            CHECK(slb_http_parse_response(tail_of(copy, len, buf, k), k, lim, SLB_HTTP_GET, &tmp) ==
                  0);
        free(copy);
        return;
    }
    uint64_t h = hash((const uint8_t *)buf, len);
    for (int i = 0; i < PREFIX_CUTS; i++) {
        h = h * 6364136223846793005u + 1442695040888963407u;
        size_t k = i == 0 ? len - 1 : (size_t)(h >> 33) % len;
        CHECK(slb_http_parse_response(tail_of(copy, len, buf, k), k, lim, SLB_HTTP_GET, &tmp) == 0);
    }
    free(copy);
}

/* The transfer codings of all Transfer-Encoding fields as one list, lowercase, without
 * whitespace, e.g. "gzip,chunked"; "" when there is none. */
static void te_list(const struct slb_http_msg *m, char *out, size_t size)
{
    size_t n = 0;
    out[0] = '\0';
    for (int i = slb_http_find_header(m, "Transfer-Encoding", 0); i >= 0;
         i = slb_http_find_header(m, "Transfer-Encoding", (size_t)i + 1)) {
        struct slb_slice v = m->headers[i].value;
        for (size_t k = 0; k < v.len && n + 2 < size; k++) {
            char c = v.p[k];
            if (c == ' ' || c == '\t' || (c == ',' && (n == 0 || out[n - 1] == ',')))
                continue; /* empty list elements count for nothing */
            out[n++] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        }
        if (n + 2 < size && n > 0 && out[n - 1] != ',')
            out[n++] = ',';
    }
    while (n > 0 && out[n - 1] == ',')
        n--;
    out[n] = '\0';
}

/* The head sent to the client must parse and frame the body the same way, or the client
 * and slbd would disagree about where this response ends. */
static void check_rewrite(const struct slb_http_msg *m, uint64_t h)
{
    struct slb_hbuf out = {0};
    bool keep = m->keep_alive && (h & 1);
    const char *set_cookie = (h & 2) ? "SLBSERVERID=0123456789abcdef; Path=/; HttpOnly" : NULL;
    const char *pname = (h & 4) ? "sid" : NULL;
    slb_http_build_response(&out, m, keep, set_cookie, pname, pname ? "0123456789abcdef" : NULL);
    CHECK(!out.oom);
    /* Parsed from an allocation of exactly its length, so ASan sees a read past the end. */
    char *copy = malloc(out.len ? out.len : 1);
    CHECK(copy != NULL);
    memcpy(copy, out.p, out.len);
    int rc = slb_http_parse_response(copy, out.len, &big_limits, SLB_HTTP_GET, &msg2);
    if (rc == -502 && m->nheaders + 3 > SLB_HTTP_MAX_HEADERS) {
        /* Only the header count limit of our own parser: not a framing question. */
        slb_hbuf_free(&out);
        free(copy);
        return;
    }
    if (rc <= 0) {
        fprintf(stderr, "rewritten head (%zu bytes) gives %d:\n%.*s\n", out.len, rc, (int)out.len,
                out.p);
    }
    CHECK(rc > 0 && (size_t)rc == out.len);
    CHECK(msg2.status == m->status && msg2.version_minor == 1);
    CHECK(msg2.body == m->body);
    CHECK(msg2.content_length == m->content_length);
    /* Codings other than chunked describe the body the client gets: dropping "gzip" from
     * "gzip, chunked" hands it compressed bytes it takes for plain ones. */
    if (m->body != SLB_BODY_NONE) {
        char te_in[256], te_out[256];
        te_list(m, te_in, sizeof(te_in));
        te_list(&msg2, te_out, sizeof(te_out));
        if (strcmp(te_in, te_out) != 0)
            fprintf(stderr, "transfer codings \"%s\" became \"%s\"\n", te_in, te_out);
        CHECK(strcmp(te_in, te_out) == 0);
    }
    if (!keep && m->status != 101)
        CHECK(!msg2.keep_alive);
    if (set_cookie) {
        size_t kept = 0;
        for (size_t i = 0; i < m->nheaders; i++)
            kept +=
                slb_slice_eq_ci(m->headers[i].name, "Set-Cookie") && !slb_http_is_hop_by_hop(m, i);
        CHECK(count_header(&msg2, "Set-Cookie") == kept + 1);
    }
    slb_hbuf_free(&out);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);

    int rc = slb_http_parse_response(buf, size, NULL, SLB_HTTP_GET, &msg);
    CHECK(rc_in_range(rc));
    if (rc > 0) {
        check_msg(buf, size, NULL, rc, SLB_HTTP_GET, &msg);
        CHECK(slb_http_parse_response(buf, (size_t)rc, NULL, SLB_HTTP_GET, &msg2) == rc);
        check_same(&msg, &msg2);
        check_rewrite(&msg, hash(data, size));
    }
    /* The request method changes the body, never whether the head is acceptable. */
    static const enum slb_http_method others[] = {SLB_HTTP_HEAD, SLB_HTTP_CONNECT, SLB_HTTP_POST};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        int r = slb_http_parse_response(buf, size, NULL, others[i], &msg2);
        CHECK(r == rc);
        if (r > 0)
            check_msg(buf, size, NULL, r, others[i], &msg2);
    }
    if (rc >= 0)
        check_prefixes(buf, rc > 0 ? (size_t)rc : size, NULL);

    int rs = slb_http_parse_response(buf, size, &small_limits, SLB_HTTP_GET, &msg2);
    CHECK(rc_in_range(rs));
    if (rs > 0) {
        check_msg(buf, size, &small_limits, rs, SLB_HTTP_GET, &msg2);
        CHECK(rs == rc);
        check_same(&msg, &msg2);
    }
    if (rc < 0)
        CHECK(rs < 0);
    if (rs >= 0)
        check_prefixes(buf, rs > 0 ? (size_t)rs : size, &small_limits);

    free(buf);
    return 0;
}
