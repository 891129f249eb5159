/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the request rewrite between client and backend: every request head
 * slbd accepts is rebuilt with slb_http_build_request (proxy options chosen from the input)
 * and the result is parsed again. It must parse, end exactly where it ends and frame the body
 * exactly as the client's head did: a backend that reads the body differently from slbd is
 * request smuggling. It must also carry only the forwarding headers slbd sets itself. */
#include "http/parser.h"
#include "http/rewrite.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An invariant failed: say which, show the heads, and crash so libFuzzer keeps the input. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_rewrite: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            dump_heads();                                                                          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Our own output may be a little longer than the head we accepted: parse it without the head
 * size limits, but with the header count limit, which is a hard array size. */
static const struct slb_http_limits big_limits = {
    .max_line = 1 << 20, .max_headers = SLB_HTTP_MAX_HEADERS, .max_head_bytes = 1 << 20};

static struct slb_http_msg req, fwd_msg;
static struct slb_hbuf out;
static char *up_copy; /* the upstream head fwd_msg points into */
static const char *in_buf;
static size_t in_len;

static void dump_heads(void)
{
    fprintf(stderr, "--- client head (%zu bytes):\n%.*s\n--- upstream head (%zu bytes):\n%.*s\n",
            req.head_len, (int)req.head_len, in_buf ? in_buf : "", out.len, (int)out.len,
            out.p ? out.p : "");
}

static size_t count_header(const struct slb_http_msg *m, const char *name)
{
    size_t n = 0;
    for (int i = slb_http_find_header(m, name, 0); i >= 0;
         i = slb_http_find_header(m, name, (size_t)i + 1))
        n++;
    return n;
}

static bool value_is(const struct slb_http_msg *m, const char *name, const char *want)
{
    int i = slb_http_find_header(m, name, 0);
    return i >= 0 && m->headers[i].value.len == strlen(want) &&
           memcmp(m->headers[i].value.p, want, strlen(want)) == 0;
}

static bool has_prefix_ci(struct slb_slice s, const char *prefix)
{
    size_t n = strlen(prefix);
    if (s.len < n)
        return false;
    struct slb_slice head = {s.p, n};
    return slb_slice_eq_ci(head, prefix);
}

static bool slices_equal(struct slb_slice a, struct slb_slice b)
{
    return a.len == b.len && memcmp(a.p, b.p, a.len) == 0;
}

/* n with '_' read as '-' (a CGI-style backend reads both alike), into buf; NUL-terminated. */
static struct slb_slice dashed(struct slb_slice n, char *buf, size_t size)
{
    size_t len = n.len < size - 1 ? n.len : size - 1;
    for (size_t i = 0; i < len; i++)
        buf[i] = n.p[i] == '_' ? '-' : n.p[i];
    buf[len] = '\0';
    return (struct slb_slice){buf, len};
}

/* Fields the proxy sets itself, and their underscore twins, which it drops. */
static bool is_forwarding(struct slb_slice name)
{
    char buf[64];
    struct slb_slice n = dashed(name, buf, sizeof(buf)); /* the first 63 bytes: enough */
    if (name.len != n.len)
        return has_prefix_ci(n, "X-Forwarded-Clientcert");
    return slb_slice_eq_ci(n, "X-Forwarded-For") || slb_slice_eq_ci(n, "X-Forwarded-Proto") ||
           slb_slice_eq_ci(n, "X-Forwarded-Port") || slb_slice_eq_ci(n, "X-Real-IP") ||
           has_prefix_ci(n, "X-Forwarded-Clientcert");
}

/* The proxy options a listener may have, picked by the input's hash so a run is repeatable. */
static void choose_fwd(uint64_t h, const struct slb_http_msg *m, struct slb_fwd_info *f)
{
    memset(f, 0, sizeof(*f));
    f->client_ip = (h & 1) ? "2001:db8::7" : "192.0.2.7";
    f->default_host = "192.0.2.80:8080"; /* the proxy always passes the server's address */
    f->proto = (h & 2) ? ((h & 4) ? "https" : "http") : NULL;
    f->port = (h & 4) ? 443 : 80;
    f->xff = (h & 8) != 0;
    if (h & 16) {
        f->cert_verify = (h & 32) ? "SUCCESS" : "NONE";
        if (h & 32) {
            f->cert_subject = "CN=client\\, one,O=Test";
            f->cert_issuer = "CN=SLB Test Intermediate CA";
            f->cert_fingerprint =
                "5e0f6f6f1b0e2d8b0c3f8a3d4a1c0b9e8d7c6b5a49382716a5b4c3d2e1f00112";
        }
    }
    f->strip_cookie_prefix_name = (h & 64) ? "SLBSERVERID" : NULL;
    /* The proxy keeps the upgrade headers only for a request that asks for one. */
    f->upgrade = m->upgrade && (h & 128);
}

/* Headers of the client's head that must reach the backend unchanged and in order. */
static void check_end_to_end(const struct slb_http_msg *m, const struct slb_http_msg *o,
                             const struct slb_fwd_info *f)
{
    size_t j = 0;
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct slb_http_header *h = &m->headers[i];
        if (is_forwarding(h->name) || slb_http_is_hop_by_hop(m, i))
            continue;
        if (m->version_minor == 0 && slb_slice_eq_ci(h->name, "Expect"))
            continue; /* ignored in an HTTP/1.0 request (RFC 9110 10.1.1), not forwarded */
        struct slb_slice authority, path;
        if (slb_slice_eq_ci(h->name, "Host") &&
            slb_http_split_absolute(m->target, &authority, &path))
            continue; /* replaced by the target's authority */
        while (j < o->nheaders && !slices_equal(o->headers[j].name, h->name))
            j++;
        CHECK(j < o->nheaders);
        if (!(f->strip_cookie_prefix_name && slb_slice_eq_ci(h->name, "Cookie")))
            CHECK(slices_equal(o->headers[j].value, h->value));
        j++;
    }
}

static void check_rewrite(const struct slb_http_msg *m, uint64_t h)
{
    struct slb_fwd_info f;
    choose_fwd(h, m, &f);
    slb_hbuf_reset(&out);
    slb_http_build_request(&out, m, &f);
    CHECK(!out.oom);
    /* Parsed from an allocation of exactly its length, so ASan sees a read past the end. */
    free(up_copy);
    up_copy = malloc(out.len ? out.len : 1);
    CHECK(up_copy != NULL);
    memcpy(up_copy, out.p, out.len);
    int rc = slb_http_parse_request(up_copy, out.len, &big_limits, &fwd_msg);
    if (rc == -431) {
        /* More fields than our parser holds: only possible when the client already sent
         * nearly the maximum, and not a framing question. */
        CHECK(m->nheaders + 9 > SLB_HTTP_MAX_HEADERS);
        return;
    }
    if (rc <= 0)
        fprintf(stderr, "fuzz_rewrite: the upstream head does not parse: %d\n", rc);
    CHECK(rc > 0);
    CHECK((size_t)rc == out.len);
    const struct slb_http_msg *o = &fwd_msg;

    /* The same request, as HTTP/1.1. */
    CHECK(slices_equal(o->method_name, m->method_name) && o->method == m->method);
    struct slb_slice authority, path;
    bool absolute = slb_http_split_absolute(m->target, &authority, &path);
    if (absolute) {
        /* Absolute form becomes origin form, and the target's authority becomes Host. */
        struct slb_slice slash = {"/", 1};
        if (path.len == 0 || path.p[0] == '?')
            CHECK(o->target.len == path.len + 1 && o->target.p[0] == '/' &&
                  memcmp(o->target.p + 1, path.p, path.len) == 0);
        else
            CHECK(slices_equal(o->target, path));
        (void)slash;
        CHECK(slices_equal(o->host, authority));
    } else {
        CHECK(slices_equal(o->target, m->target));
    }
    CHECK(o->version_minor == 1);
    if (absolute) {
        /* checked above */
    } else if (count_header(m, "Host") == 0) {
        /* HTTP/1.0 without Host: the proxy names the server it sends to. */
        struct slb_slice want = {f.default_host, strlen(f.default_host)};
        CHECK(slices_equal(o->host, want));
    } else {
        CHECK(slices_equal(o->host, m->host));
    }

    /* The same framing: anything else is smuggling. */
    CHECK(o->body == m->body);
    CHECK(o->content_length == m->content_length);
    CHECK(count_header(o, "Content-Length") == count_header(m, "Content-Length"));
    CHECK(count_header(o, "Transfer-Encoding") == (m->body == SLB_BODY_CHUNKED ? 1u : 0u));

    /* Always keep-alive; upgrade only when the proxy keeps it. */
    CHECK(o->keep_alive);
    CHECK(o->upgrade == f.upgrade);
    CHECK(count_header(o, "Upgrade") == (f.upgrade ? count_header(m, "Upgrade") : 0));
    CHECK(count_header(o, "Connection") == (f.upgrade ? 1u : 0u));
    static const char *const hop[] = {"Keep-Alive", "Proxy-Connection",    "TE",
                                      "Trailer",    "Proxy-Authorization", "Proxy-Authenticate"};
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        CHECK(count_header(o, hop[i]) == 0);
    /* Expect is end-to-end unless the client itself listed it in Connection. */
    bool expect_dropped = false;
    for (size_t i = 0; i < m->nheaders; i++)
        expect_dropped |=
            slb_slice_eq_ci(m->headers[i].name, "Expect") && slb_http_is_hop_by_hop(m, i);
    if (m->version_minor == 1 && !expect_dropped)
        CHECK(o->expect_continue == m->expect_continue);

    /* Forwarding headers come from slbd alone: a client cannot forge or remove them. */
    CHECK(count_header(o, "X-Real-IP") == 1 && value_is(o, "X-Real-IP", f.client_ip));
    CHECK(count_header(o, "X-Forwarded-For") == (f.xff ? 1u : 0u));
    if (f.xff) {
        struct slb_slice v = o->headers[slb_http_find_header(o, "X-Forwarded-For", 0)].value;
        size_t n = strlen(f.client_ip);
        CHECK(v.len >= n && memcmp(v.p + v.len - n, f.client_ip, n) == 0);
        CHECK(v.len == n || (v.len > n + 2 && memcmp(v.p + v.len - n - 2, ", ", 2) == 0));
    }
    CHECK(count_header(o, "X-Forwarded-Proto") == (f.proto ? 1u : 0u));
    CHECK(count_header(o, "X-Forwarded-Port") == (f.proto ? 1u : 0u));
    if (f.proto)
        CHECK(value_is(o, "X-Forwarded-Proto", f.proto));
    size_t certs = 0;
    for (size_t i = 0; i < o->nheaders; i++)
        certs += has_prefix_ci(o->headers[i].name, "X-Forwarded-Clientcert");
    CHECK(certs == (f.cert_verify ? (f.cert_subject ? 4u : 1u) : 0u));
    if (f.cert_verify)
        CHECK(value_is(o, "X-Forwarded-Clientcert-clientverify", f.cert_verify));

    check_end_to_end(m, o, &f);
}

static uint64_t hash(const uint8_t *d, size_t len)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ d[i]) * 0x100000001b3u;
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    in_buf = buf;
    in_len = size;
    int rc = slb_http_parse_request(buf, size, NULL, &req);
    if (rc > 0) {
        /* Two option sets per input: the hash's and its complement, so every option is
         * exercised on and off against every head the fuzzer keeps. */
        uint64_t h = hash(data, size);
        check_rewrite(&req, h);
        check_rewrite(&req, ~h);
    }
    in_buf = NULL;
    free(buf);
    return 0;
}
