/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for response compression. The first byte chooses:
 * - even: "ACCEPT-ENCODING\nRESPONSE-HEAD": the Accept-Encoding parser, the decision, and for a
 *   response it compresses, the head rewrite, rebuilt and parsed again: it must parse, be
 *   chunked, say Content-Encoding: gzip once, carry no Content-Length, a Vary that covers
 *   Accept-Encoding and no strong ETag.
 * - odd: the compressor: the rest of the input compressed in pieces (their sizes from the
 *   second and third bytes) through small output buffers, then inflated by zlib: the bytes
 *   must come back exactly, within the memory bound. */
#include "config/config.h"
#include "http/gzip.h"
#include "http/parser.h"
#include "http/rewrite.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_gzip: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);    \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const struct slb_http_limits big_limits = {
    .max_line = 1 << 20, .max_headers = SLB_HTTP_MAX_HEADERS, .max_head_bytes = 1 << 20};

static struct slb_listener_cfg lis;
static struct slb_http_msg resp, back;

static bool list_names(struct slb_slice v, const char *tok)
{
    size_t n = strlen(tok);
    for (size_t i = 0; i + n <= v.len; i++)
        if (strncasecmp(v.p + i, tok, n) == 0)
            return true;
    return false;
}

static void decide_and_rewrite(const uint8_t *d, size_t n)
{
    const uint8_t *nl = memchr(d, '\n', n);
    size_t ae_len = nl ? (size_t)(nl - d) : n;
    struct slb_gzip_ae ae;
    slb_gzip_ae_init(&ae);
    slb_gzip_ae_parse(&ae, (struct slb_slice){(const char *)d, ae_len});
    struct slb_gzip_req rq = {.accepts = slb_gzip_ae_ok(&ae)};
    if (!nl)
        return;
    char *head = malloc(n - ae_len);
    memcpy(head, nl + 1, n - ae_len - 1);
    if (slb_http_parse_response(head, n - ae_len - 1, NULL, SLB_HTTP_GET, &resp) <= 0 ||
        resp.status == 101) {
        free(head);
        return;
    }
    rq.accepts = true;
    if (!slb_gzip_wanted(&rq, &resp, &lis)) {
        free(head);
        return;
    }
    struct slb_gzip_scratch sc;
    if (slb_gzip_rewrite_head(&resp, &sc, true) == 0) {
        struct slb_hbuf out = {0};
        slb_http_build_response(&out, &resp, true, NULL, NULL, NULL);
        CHECK(!out.oom);
        int rc = slb_http_parse_response(out.p, out.len, &big_limits, SLB_HTTP_GET, &back);
        CHECK(rc > 0 && (size_t)rc == out.len);
        CHECK(back.body == SLB_BODY_CHUNKED);
        int ce = 0;
        bool vary = false;
        for (size_t i = 0; i < back.nheaders; i++) {
            struct slb_slice nm = back.headers[i].name, v = back.headers[i].value;
            CHECK(!SLB_SLICE_IS(nm, "content-length"));
            if (SLB_SLICE_IS(nm, "content-encoding")) {
                CHECK(SLB_SLICE_IS(v, "gzip"));
                ce++;
            }
            if (SLB_SLICE_IS(nm, "vary") &&
                (list_names(v, "accept-encoding") || memchr(v.p, '*', v.len)))
                vary = true;
            if (SLB_SLICE_IS(nm, "etag"))
                CHECK(v.len >= 2 && v.p[0] == 'W' && v.p[1] == '/');
        }
        CHECK(ce == 1);
        CHECK(vary);
        slb_hbuf_free(&out);
    }
    free(head);
}

static void round_trip(const uint8_t *d, size_t n)
{
    if (n < 2)
        return;
    size_t in_step = (size_t)d[0] * 64 + 1, out_step = (size_t)d[1] + 1;
    d += 2;
    n -= 2;
    struct slb_gzip *z = slb_gzip_new();
    CHECK(z);
    size_t cap = n + n / 8 + 64, total = 0, off = 0;
    uint8_t *gz = malloc(cap);
    int rc = 0;
    while (rc != 1) {
        size_t k = n - off < in_step ? n - off : in_step, used, made;
        CHECK(total + out_step <= cap + out_step);
        size_t room = cap - total < out_step ? cap - total : out_step;
        rc = slb_gzip_run(z, d + off, k, &used, gz + total, room, &made, off + k == n);
        CHECK(rc >= 0);
        CHECK(used <= k && made <= room);
        off += used;
        total += made;
        CHECK(total < cap || rc == 1);
    }
    CHECK(off == n);
    CHECK(slb_gzip_mem_peak(z) <= SLB_GZIP_MEM_MAX);
    slb_gzip_free(z);
    uint8_t *plain = malloc(n + 1);
    z_stream in = {0};
    CHECK(inflateInit2(&in, 15 + 16) == Z_OK);
    in.next_in = gz;
    in.avail_in = (uInt)total;
    in.next_out = plain;
    in.avail_out = (uInt)n + 1;
    CHECK(inflate(&in, Z_FINISH) == Z_STREAM_END);
    CHECK(in.total_out == n && in.avail_in == 0);
    CHECK(memcmp(plain, d, n) == 0);
    inflateEnd(&in);
    free(plain);
    free(gz);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (!lis.gzip) {
        lis.gzip = true;
        const char *t[] = {"text/*", "application/json", "application/*+xml"};
        for (size_t i = 0; i < 3; i++)
            snprintf(lis.gzip_types[lis.ngzip_types++], SLB_GZIP_TYPE_MAX, "%s", t[i]);
    }
    if (n < 1)
        return 0;
    if (d[0] & 1)
        round_trip(d + 1, n - 1);
    else
        decide_and_rewrite(d + 1, n - 1);
    return 0;
}
