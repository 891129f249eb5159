/* SPDX-License-Identifier: Apache-2.0 */
/* The HTTP/1.1 framing of bodies on the HTTP/1.x client side (see h1_body.h). */
#include "http/h1_body.h"

#include "http/upstream.h"

#include <stdio.h>
#include <string.h>
#include <sys/uio.h>

/* Client body bytes taken from the input buffer: sent, or chunk framing we replace. */
static void request_consume(struct http_xchg *x, struct slb_buf *in, size_t n)
{
    x->req_bytes_in += n;
    slb_buf_consume(in, n);
}

/* Chunks of at most this many data bytes are gathered (copied) behind the request head's
 * bytes in its buffer, within the capacity it has: a body of tiny chunks then costs a send
 * per buffer, not a send (and a packet) per chunk. */
#define SLB_CHUNK_GATHER_MAX 256

int slb_h1_send_chunked_request(struct http_xchg *x, struct slb_buf *in)
{
    struct slb_rechunk *rc = &x->req_chunk;
    struct http_up *up = x->e.up;
    struct slb_hbuf *gather = &up->head; /* sent already: its memory holds small chunks */
    bool progress = false;
    for (;;) {
        /* The next pieces, while none waits outside the gather buffer. */
        while (rc->frame_off == rc->frame_len && !x->req_ready && !rc->ck.done) {
            if (rc->skip) {
                request_consume(x, in, (size_t)rc->skip);
                rc->skip = 0;
                progress = true;
            }
            size_t ready;
            long d = slb_rechunk_next(rc, in->len ? in->data + in->off : "", in->len, &ready);
            if (d < 0)
                return -400;
            if (d == 0 && ready == 0 && rc->frame_len == 0)
                break;
            request_consume(x, in, (size_t)d);
            x->req_ready = ready;
            progress = true;
            if (!slb_hbuf_pending(gather))
                slb_hbuf_reset(gather);
            if (ready > SLB_CHUNK_GATHER_MAX || gather->len + rc->frame_len + ready > gather->cap)
                break;
            slb_hbuf_put(gather, rc->frame, rc->frame_len);
            rc->frame_off = rc->frame_len;
            slb_hbuf_put(gather, in->data + in->off, ready);
            request_consume(x, in, ready);
            x->req_ready = 0;
        }
        bool moved = false;
        while (slb_hbuf_pending(gather)) {
            ssize_t n = slb_up_send(up, gather->p + gather->off, slb_hbuf_pending(gather));
            if (n <= 0)
                return progress;
            gather->off += (size_t)n;
            up->bytes_to += (uint64_t)n;
            moved = progress = true;
        }
        size_t frame;
        while ((frame = (size_t)(rc->frame_len - rc->frame_off)) || x->req_ready) {
            struct iovec iov[2] = {{rc->frame + rc->frame_off, frame}, {NULL, 0}};
            if (x->req_ready)
                iov[1] = (struct iovec){in->data + in->off, (size_t)x->req_ready};
            ssize_t n = slb_up_sendv(up, iov, x->req_ready ? 2 : 1);
            if (n <= 0)
                return progress;
            up->bytes_to += (uint64_t)n;
            size_t f = (size_t)n < frame ? (size_t)n : frame;
            rc->frame_off = (uint8_t)(rc->frame_off + f);
            x->req_ready -= (uint64_t)n - f;
            request_consume(x, in, (size_t)n - f);
            moved = progress = true;
        }
        if (!moved)
            return progress;
    }
}

int slb_h1_response_chunk_next(struct slb_exchange *e, struct slb_hbuf *out)
{
    struct slb_rechunk *rc = &e->resp_chunk;
    struct http_up *up = e->up;
    while (!e->resp_ready) {
        if (rc->skip) {
            slb_buf_consume(&up->in, (size_t)rc->skip);
            rc->skip = 0;
        }
        if (rc->ck.done) {
            e->resp_done = true;
            break;
        }
        size_t ready;
        long d =
            slb_rechunk_next(rc, up->in.len ? up->in.data + up->in.off : "", up->in.len, &ready);
        if (d < 0)
            return -502;
        if (d == 0 && ready == 0 && rc->frame_len == 0)
            break;
        slb_buf_consume(&up->in, (size_t)d);
        slb_hbuf_put(out, rc->frame, rc->frame_len);
        e->resp_ready = ready;
        if (ready && ready <= SLB_BUF_SIZE / 4 && slb_hbuf_pending(out) + ready <= SLB_BUF_SIZE) {
            slb_hbuf_put(out, up->in.data + up->in.off, ready);
            slb_buf_consume(&up->in, ready);
            e->resp_ready = 0;
        }
    }
    return 0;
}

/* The decoded body bytes the compressor may take (a compressed body is never re-framed); the
 * trailer section of a chunked one is kept in trailers. */
static int body_ready(struct slb_exchange *e, struct slb_hbuf *trailers)
{
    if (!e->up || !e->resp_head_done || e->resp_done)
        return 0;
    return slb_exchange_body_ready(e, trailers);
}

/* The trailer section as the backend sent it (checked field by field by the chunked decoder,
 * its final CRLF included) without the fields slb_http_trailer_field_banned names, as a
 * re-chunked response passes it. */
static void put_trailers(struct slb_hbuf *out, const struct slb_hbuf *tr)
{
    if (tr->len < 2 || tr->oom) {
        slb_hbuf_puts(out, "\r\n");
        return;
    }
    const char *p = tr->p, *end = tr->p + tr->len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t line = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        const char *colon = memchr(p, ':', line);
        if (!colon || !slb_http_trailer_field_banned(p, (size_t)(colon - p)))
            slb_hbuf_put(out, p, line);
        p += line;
    }
}

/* The most compressed bytes one chunk of a compressed response carries. */
#define GZIP_CHUNK 8192

int slb_h1_gzip_chunks(struct http_xchg *x, struct slb_hbuf *out)
{
    struct slb_exchange *e = &x->e;
    struct slb_hbuf *tr = &x->resp_trailers;
    bool chunked = !x->resp_unchunk;
    while (e->gz && slb_hbuf_pending(out) < SLB_BUF_SIZE) {
        if (body_ready(e, tr) < 0)
            return -502;
        if (!e->resp_ready && !e->resp_done)
            return 0;
        /* Room for the size line (4 hex digits), the data and its CRLF. */
        size_t base = out->len, made;
        char *p = slb_hbuf_extend(out, 6 + GZIP_CHUNK + 2);
        if (!p)
            return 0; /* out->oom: the caller closes */
        int rc = slb_exchange_gzip_run(e, p + 6, GZIP_CHUNK, &made);
        out->len = base;
        if (rc < 0)
            return -500;
        if (made && !chunked) {
            memmove(p, p + 6, made);
            out->len = base + made;
        } else if (made) {
            char line[8];
            int hl = snprintf(line, sizeof(line), "%zx\r\n", made);
            memmove(p + hl, p + 6, made);
            memcpy(p, line, (size_t)hl);
            memcpy(p + hl + made, "\r\n", 2);
            out->len = base + (size_t)hl + made + 2;
        }
        if (rc == 1 && chunked) {
            slb_hbuf_puts(out, "0\r\n");
            put_trailers(out, tr);
        }
        if (rc != 0)
            return 0;
    }
    return 0;
}
