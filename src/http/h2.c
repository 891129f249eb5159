/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP/2 connections to clients, with nghttp2 doing the framing, HPACK and the protocol's own
 * checks, all driven by the worker's event loop: decrypted bytes go into
 * nghttp2_session_mem_recv, frames come out of nghttp2_session_mem_send into one output buffer
 * that is written through TLS. The streams' exchanges with backends are in h2_stream.c. This
 * file also holds the limits that keep a hostile client's cost bounded. */
#include "http/h2_int.h"

#include "core/log.h"
#include "http/access.h"
#include "tls/tls.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void conn_close(struct h2_conn *c);

struct slb_wcount *h2_lis_counts(struct h2_conn *c)
{
    return &c->b.l->stats->w[c->w->id];
}

static bool bucket_take(struct h2_bucket *b, uint64_t now_ms, uint64_t burst, uint64_t rate)
{
    if (b->last_ms == 0) {
        b->milli = burst * 1000;
        b->last_ms = now_ms;
    }
    b->milli += (now_ms - b->last_ms) * rate;
    if (b->milli > burst * 1000)
        b->milli = burst * 1000;
    b->last_ms = now_ms;
    if (b->milli < 1000)
        return false;
    b->milli -= 1000;
    return true;
}

static void bucket_give(struct h2_bucket *b, uint64_t n, uint64_t burst)
{
    b->milli += n * 1000;
    if (b->milli > burst * 1000)
        b->milli = burst * 1000;
}

/* The client abuses the protocol: GOAWAY ENHANCE_YOUR_CALM, no more frames read. The
 * GOAWAY names the last stream we took, not a later one we refused; the RST_STREAMs queued
 * before it still go out. */
static void calm_down(struct h2_conn *c, const char *why)
{
    if (c->fatal)
        return;
    slb_info("listener %s: client %s: HTTP/2 %s: GOAWAY ENHANCE_YOUR_CALM", c->b.l->cfg->name,
             c->client_ip, why);
    slb_count_add(&h2_lis_counts(c)->v[SLB_LIS_H2_ABUSE], 1);
    nghttp2_session_terminate_session2(c->ng, c->last_accepted, NGHTTP2_ENHANCE_YOUR_CALM);
    c->fatal = true;
    c->fatal_code = NGHTTP2_ENHANCE_YOUR_CALM;
}

/* Client stream ids that left nghttp2 (see check_closed): for each of the last H2_SID_WINDOW
 * odd ids below sid_hi, whether a stream was opened with it and whether we reset it. */
static bool sid_in_window(const struct h2_conn *c, int32_t id)
{
    return id > 0 && id <= c->sid_hi &&
           ((uint32_t)c->sid_hi >> 1) - ((uint32_t)id >> 1) < H2_SID_WINDOW;
}

static void sid_mark(uint64_t *set, int32_t id)
{
    uint32_t k = ((uint32_t)id >> 1) % H2_SID_WINDOW;
    set[k / 64] |= (uint64_t)1 << (k % 64);
}

static bool sid_test(const uint64_t *set, int32_t id)
{
    uint32_t k = ((uint32_t)id >> 1) % H2_SID_WINDOW;
    return (set[k / 64] >> (k % 64)) & 1;
}

/* A new highest client stream id: the slots of the ids it passes are reused. */
static void sid_advance(struct h2_conn *c, int32_t id)
{
    if (id <= c->sid_hi)
        return;
    uint32_t from = (uint32_t)c->sid_hi >> 1, to = (uint32_t)id >> 1;
    if (to - from >= H2_SID_WINDOW) {
        memset(c->sid_opened, 0, sizeof(c->sid_opened));
        memset(c->sid_reset, 0, sizeof(c->sid_reset));
    } else {
        for (uint32_t k = from + 1; k <= to; k++) {
            uint64_t bit = (uint64_t)1 << (k % H2_SID_WINDOW % 64);
            c->sid_opened[k % H2_SID_WINDOW / 64] &= ~bit;
            c->sid_reset[k % H2_SID_WINDOW / 64] &= ~bit;
        }
    }
    c->sid_hi = id;
}

static void account_wire(struct h2_conn *c)
{
    uint64_t in, out;
    slb_tconn_wire(&c->t, &in, &out);
    slb_count_add(&h2_lis_counts(c)->v[SLB_LIS_WIRE_IN], in - c->wire_in_seen);
    slb_count_add(&h2_lis_counts(c)->v[SLB_LIS_WIRE_OUT], out - c->wire_out_seen);
    c->wire_in_seen = in;
    c->wire_out_seen = out;
}

/* --- nghttp2 callbacks --- */

static struct h2_stream *stream_get(struct h2_conn *c, int32_t id)
{
    return nghttp2_session_get_stream_user_data(c->ng, id);
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct h2_conn *c = ud;
    c->block_bytes = 0;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    sid_advance(c, f->hd.stream_id);
    sid_mark(c->sid_opened, f->hd.stream_id);
    if (c->nstreams >= H2_MAX_STREAMS) {
        /* Over the advertised limit: this stream alone is refused (RFC 9113 5.1.2), the
         * client may retry it. No state is kept for it; its frames are dropped. A client
         * that sends its first requests before it read our SETTINGS does this once, so the
         * refusals come out of the larger budget of frames that carry no request. */
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        if (!bucket_take(&c->ctrl, c->w->loop.now_ms, H2_CTRL_BURST, H2_CTRL_RATE))
            calm_down(c, "streams over the limit opened faster than allowed");
        return 0;
    }
    if (c->fatal)
        return 0; /* no new stream on a connection that ends */
    /* One allocation per stream: the servers tried go at its end. */
    size_t nsrv = c->b.wg ? c->b.wg->g->nservers : 0;
    struct h2_stream *s = calloc(1, sizeof(*s) + (nsrv ? nsrv : 1));
    if (!s)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* nghttp2 resets the stream */
    s->c = c;
    s->ws = slb_http_bind_snap(&c->b);
    slb_wsnap_ref(s->ws);
    h2_exchange_init(s);
    s->ntried = nsrv ? nsrv : 1;
    s->id = f->hd.stream_id;
    s->st = SS_HEAD;
    slb_timer_init(&s->timer, h2_stream_timer_cb, s);
    /* A header block left unfinished (no END_HEADERS) holds the connection: header_timeout_s. */
    slb_timer_start(&c->w->loop, &s->timer, (uint64_t)c->b.l->cfg->header_timeout_s * 1000u);
    s->log = slb_access_new(c->w, c->b.l);
    s->next = c->streams;
    if (c->streams)
        c->streams->prev = s;
    c->streams = s;
    c->nstreams++;
    if (s->id > c->last_accepted)
        c->last_accepted = s->id;
    nghttp2_session_set_stream_user_data(ng, s->id, s);
    return 0;
}

static void put_field(struct slb_hbuf *b, const uint8_t *name, size_t nl, const uint8_t *value,
                      size_t vl)
{
    char *p = slb_hbuf_extend(b, nl + vl + 4);
    if (!p)
        return;
    memcpy(p, name, nl);
    memcpy(p + nl, ": ", 2);
    memcpy(p + nl + 2, value, vl);
    memcpy(p + nl + 2 + vl, "\r\n", 2);
}

/* Keep a pseudo-field's value at the front of the request text. */
static void put_pseudo(struct h2_stream *s, uint32_t *off, uint32_t *len, const uint8_t *v,
                       size_t vl)
{
    *off = (uint32_t)s->req.len;
    *len = (uint32_t)vl;
    slb_hbuf_put(&s->req, (const char *)v, vl);
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    struct h2_conn *c = ud;
    /* A connection that ends decodes nothing more: a failed callback stops nghttp2 at once,
     * in the middle of the block, where returning 0 would let it decode (and check) every
     * field that is left (an HPACK bomb's millions of bytes). The block's size is counted
     * on the connection, so a refused stream's block counts too. */
    c->block_bytes += nl + vl + 4;
    if (c->block_bytes > H2_HEAD_HARD)
        calm_down(c, "header block over 64 KiB decoded");
    if (c->fatal)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    struct h2_stream *s = stream_get(c, f->hd.stream_id);
    if (!s)
        return 0;
    s->head_bytes += nl + vl + 4;
    if (s->head_bytes > H2_HEAD_LIMIT && !s->too_big) {
        s->too_big = true; /* answered 431 */
        if (++c->oversized > H2_OVERSIZED_MAX) {
            calm_down(c, "header blocks over the limit again and again");
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    }
    if (s->too_big || s->bad)
        return 0;
    if (memchr(value, '\r', vl) || memchr(value, '\n', vl) || memchr(value, '\0', vl)) {
        /* nghttp2 refuses these already; checked again because the value becomes a line of
         * HTTP/1.1 text, where a line break would add a field of the client's choosing. */
        s->bad = true;
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_PROTOCOL_ERROR);
        return 0;
    }
    struct slb_slice n = {(const char *)name, nl};
    if (f->headers.cat != NGHTTP2_HCAT_REQUEST) {
        /* Trailers: kept for a chunked request body, dropped for one with a length; a field
         * that frames or routes a message is dropped (nghttp2 refuses most of them already,
         * not te: trailers or trailer). */
        if (s->req_chunked && !slb_http_trailer_field_banned((const char *)name, nl))
            put_field(&s->trailers, name, nl, value, vl);
        return 0;
    }
    if (nl && name[0] == ':') {
        if (SLB_SLICE_IS(n, ":method"))
            put_pseudo(s, &s->m_off, &s->m_len, value, vl);
        else if (SLB_SLICE_IS(n, ":path"))
            put_pseudo(s, &s->p_off, &s->p_len, value, vl);
        else if (SLB_SLICE_IS(n, ":authority"))
            put_pseudo(s, &s->a_off, &s->a_len, value, vl);
        return 0; /* :scheme: the backend learns it from X-Forwarded-Proto */
    }
    if (SLB_SLICE_IS(n, "cookie")) {
        /* Cookie fields sent apart (for HPACK) are one field again (RFC 9113 8.2.3). */
        if (s->cookie.len)
            slb_hbuf_put(&s->cookie, "; ", 2);
        slb_hbuf_put(&s->cookie, (const char *)value, vl);
        return 0;
    }
    if (SLB_SLICE_IS(n, "content-length"))
        s->has_length = true;
    if (SLB_SLICE_IS(n, "host") && s->a_len)
        return 0; /* :authority wins (RFC 9113 8.3.1) */
    h2_request_line(s);
    put_field(&s->req, name, nl, value, vl);
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    struct h2_conn *c = ud;
    struct h2_stream *s = stream_get(c, id);
    if (!s || s->st == SS_LOCAL || s->st == SS_HEAD) {
        nghttp2_session_consume(ng, id, len);
        return 0;
    }
    s->bytes_in += len;
    s->e.last_io_ms = c->w->loop.now_ms;
    if (s->req_chunked) {
        char line[24];
        int k = snprintf(line, sizeof(line), "%zx\r\n", len);
        slb_hbuf_put(&s->tx, line, (size_t)k);
        slb_hbuf_put(&s->tx, (const char *)data, len);
        slb_hbuf_put(&s->tx, "\r\n", 2);
    } else {
        slb_hbuf_put(&s->tx, (const char *)data, len);
    }
    s->unconsumed += len;
    if (s->tx.oom) {
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
        return 0;
    }
    if (s->st == SS_EXCHANGE)
        h2_stream_io(s);
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct h2_conn *c = ud;
    uint64_t now = c->w->loop.now_ms;
    struct h2_stream *s = f->hd.stream_id ? stream_get(c, f->hd.stream_id) : NULL;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        if (!s)
            break;
        s->bytes_in += f->hd.length + 9;
        if (f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
            /* A body without a length goes to the backend chunked. */
            s->req_chunked = !end && !s->has_length;
            h2_start_request(s);
            /* Trailers, if any, get a budget of their own. */
            s->head_bytes = 0;
            s->too_big = false;
            if (end)
                h2_request_end(s);
        } else if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            h2_request_end(s);
        }
        break;
    case NGHTTP2_DATA:
        if (s)
            s->bytes_in += 9;
        if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            if (s)
                h2_request_end(s);
        } else if (f->hd.length == 0 && !bucket_take(&c->ctrl, now, H2_CTRL_BURST, H2_CTRL_RATE)) {
            calm_down(c, "flood of empty DATA frames");
        }
        break;
    case NGHTTP2_RST_STREAM:
        if (!bucket_take(&c->rst, now, H2_RST_BURST, H2_RST_RATE))
            calm_down(c, "streams reset faster than allowed (rapid reset)");
        break;
    case NGHTTP2_PING:
    case NGHTTP2_SETTINGS:
        if (f->hd.flags & NGHTTP2_FLAG_ACK)
            break;
        /* fall through */
    case NGHTTP2_PRIORITY:
    case NGHTTP2_WINDOW_UPDATE: /* given back as we send DATA (on_frame_send) */
        if (!bucket_take(&c->ctrl, now, H2_CTRL_BURST, H2_CTRL_RATE))
            calm_down(c, "flood of control frames");
        break;
    default:
        break;
    }
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct h2_conn *c = ud;
    if (f->hd.type == NGHTTP2_RST_STREAM && (f->hd.stream_id & 1)) {
        /* What the client sends on this stream from now on is ignored (RFC 9113 5.1). */
        sid_advance(c, f->hd.stream_id);
        sid_mark(c->sid_reset, f->hd.stream_id);
    }
    if (f->hd.type == NGHTTP2_DATA) {
        /* A client acknowledges our DATA with a WINDOW_UPDATE for the stream and one for
         * the connection at most: those cost it nothing of its budget. */
        bucket_give(&c->ctrl, 2, H2_CTRL_BURST);
    }
    if (!f->hd.stream_id || (f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS))
        return 0;
    struct h2_stream *s = stream_get(c, f->hd.stream_id);
    if (!s)
        return 0;
    s->bytes_out += f->hd.length + 9;
    if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && !s->e.req_done) {
        /* The whole response is out and the client is still sending: the rest of its
         * request is not wanted (RFC 9113 8.1). */
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud)
{
    struct h2_conn *c = ud;
    struct h2_stream *s = stream_get(c, id);
    if (!s)
        return 0;
    if (s->unconsumed)
        nghttp2_session_consume_connection(ng, s->unconsumed);
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    h2_stream_free(s);
    c->wire_due = true; /* counted once the stream's last frames are written (h2_run) */
    return 0;
}

/* --- the client connection --- */

static void out_compact(struct h2_conn *c)
{
    struct slb_hbuf *b = &c->out;
    if (b->off == b->len) {
        if (c->nstreams == 0)
            slb_hbuf_free(b); /* an idle connection keeps no output buffer */
        else
            b->off = b->len = 0;
    } else if (b->off > b->len / 2) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
}

/* Our GOAWAY when nghttp2 can no longer make one (a session that hit a fatal error). */
static void raw_goaway(struct h2_conn *c, uint32_t code)
{
    uint32_t last = (uint32_t)c->last_accepted;
    /* length 8, type GOAWAY, no flags, stream 0; then the last stream id and the code */
    uint8_t f[17] = {0, 0, 8, NGHTTP2_GOAWAY};
    for (int k = 0; k < 4; k++) {
        f[9 + k] = (uint8_t)(last >> (24 - 8 * k));
        f[13 + k] = (uint8_t)(code >> (24 - 8 * k));
    }
    slb_hbuf_put(&c->out, (const char *)f, sizeof(f));
}

/* The session failed (a fatal nghttp2 error, or a connection error nghttp2 does not detect,
 * see check_closed): it is deleted with the streams, our GOAWAY is queued (unless
 * send_goaway is false: a client that did not send the preface), and h2_run ends the
 * connection with a lingering close once it is written (see end_failed). A reset instead
 * would make the client's kernel drop the GOAWAY along with what it still held. */
static void session_fail(struct h2_conn *c, uint32_t code, bool send_goaway)
{
    if (send_goaway)
        raw_goaway(c, code);
    c->fatal = true;
    c->fatal_code = code;
    while (c->streams)
        h2_stream_free(c->streams);
    nghttp2_session_del(c->ng);
    c->ng = NULL;
    slb_timer_start(&c->w->loop, &c->timer, 1000); /* for the GOAWAY to be taken */
}

/* Write queued frames; false when the connection failed (and is closed). */
static bool flush(struct h2_conn *c)
{
    while (c->t.wr_ready && slb_hbuf_pending(&c->out)) {
        ssize_t n = c->t.ops->send(&c->t, c->out.p + c->out.off, slb_hbuf_pending(&c->out));
        if (n < 0) {
            conn_close(c);
            return false;
        }
        if (n == 0)
            break;
        c->out.off += (size_t)n;
        c->last_write_ms = c->last_io_ms = c->w->loop.now_ms;
        slb_count_add(&h2_lis_counts(c)->v[SLB_LIS_PAYLOAD_OUT], (uint64_t)n);
    }
    out_compact(c);
    return true;
}

/* Frames nghttp2 has for the client, while the output is not backed up. */
/* nghttp2 turns a client's stream over the acknowledged SETTINGS_MAX_CONCURRENT_STREAMS into
 * a connection error (GOAWAY PROTOCOL_ERROR), where RFC 9113 5.1.2 asks for a stream error. So
 * nghttp2 is given a higher limit (H2_NGHTTP2_STREAMS) and on_begin_headers refuses streams
 * over H2_MAX_STREAMS itself; the SETTINGS frame the client gets says H2_MAX_STREAMS, patched
 * here in our one non-ACK SETTINGS frame as it leaves nghttp2. */
static void advertise_stream_limit(struct h2_conn *c, uint8_t *f, size_t n)
{
    if (c->settings_sent || n < 9 || f[3] != NGHTTP2_SETTINGS || (f[4] & NGHTTP2_FLAG_ACK))
        return;
    c->settings_sent = true;
    size_t len = ((size_t)f[0] << 16) | ((size_t)f[1] << 8) | f[2];
    for (size_t i = 9; i + 6 <= n && i + 6 <= 9 + len; i += 6) {
        if (f[i] == 0 && f[i + 1] == NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) {
            f[i + 2] = (uint8_t)(H2_MAX_STREAMS >> 24);
            f[i + 3] = (uint8_t)(H2_MAX_STREAMS >> 16);
            f[i + 4] = (uint8_t)(H2_MAX_STREAMS >> 8);
            f[i + 5] = (uint8_t)H2_MAX_STREAMS;
        }
    }
}

static bool produce(struct h2_conn *c)
{
    while (slb_hbuf_pending(&c->out) < H2_OUT_HIGH) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(c->ng, &p);
        if (n < 0) {
            conn_close(c);
            return false;
        }
        if (n == 0)
            break;
        char *dst = slb_hbuf_extend(&c->out, (size_t)n);
        if (!dst)
            break;
        memcpy(dst, p, (size_t)n);
        advertise_stream_limit(c, (uint8_t *)dst, (size_t)n);
    }
    if (c->out.oom) {
        conn_close(c);
        return false;
    }
    return true;
}

/* A DATA or HEADERS frame on a client stream that left nghttp2, which keeps no closed
 * streams (see setup_once) and would ignore it. RFC 9113 5.1: after our RST_STREAM it is
 * ignored; otherwise DATA is a stream error and HEADERS a connection error STREAM_CLOSED,
 * and HEADERS on an id never used, below the highest one, a connection error PROTOCOL_ERROR
 * (5.1.1). Frames on ids older than the window are ignored. -1: the session failed. */
static int check_closed(struct h2_conn *c, uint8_t type, int32_t id)
{
    if (!sid_in_window(c, id) || sid_test(c->sid_reset, id) ||
        nghttp2_session_find_stream(c->ng, id))
        return 0;
    bool opened = sid_test(c->sid_opened, id);
    if (type == NGHTTP2_HEADERS) {
        slb_debug("listener %s: client %s: HTTP/2 HEADERS on %s stream %d", c->b.l->cfg->name,
                  c->client_ip, opened ? "a closed" : "an unused lower", (int)id);
        session_fail(c, opened ? NGHTTP2_STREAM_CLOSED : NGHTTP2_PROTOCOL_ERROR, true);
        return -1;
    }
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_STREAM_CLOSED);
    sid_mark(c->sid_reset, id);
    if (!bucket_take(&c->ctrl, c->w->loop.now_ms, H2_CTRL_BURST, H2_CTRL_RATE))
        calm_down(c, "flood of DATA on closed streams");
    return 0;
}

/* Give the client's bytes to nghttp2, following the frame boundaries: a DATA or HEADERS
 * frame that may be on a closed stream is looked at (check_closed) once nghttp2 has
 * processed every frame before it. 0, or nghttp2's error. */
static int feed(struct h2_conn *c, const uint8_t *p, size_t n)
{
    size_t fed = 0, off = 0;
    while (off < n && !c->scan_off) {
        if (c->scan_skip) {
            size_t k = n - off < c->scan_skip ? n - off : c->scan_skip;
            off += k;
            c->scan_skip -= (uint32_t)k;
            continue;
        }
        size_t k = 9u - c->scan_hlen;
        if (k > n - off)
            k = n - off;
        memcpy(c->scan_hd + c->scan_hlen, p + off, k);
        c->scan_hlen = (uint8_t)(c->scan_hlen + k);
        if (c->scan_hlen < 9)
            break;
        const uint8_t *h = c->scan_hd;
        uint32_t len = ((uint32_t)h[0] << 16) | ((uint32_t)h[1] << 8) | h[2];
        uint8_t type = h[3];
        int32_t id = (int32_t)(((uint32_t)(h[5] & 0x7f) << 24) | ((uint32_t)h[6] << 16) |
                               ((uint32_t)h[7] << 8) | h[8]);
        c->scan_hlen = 0;
        c->scan_skip = len;
        if (len > H2_MAX_FRAME)
            c->scan_off = true; /* nghttp2 ends the connection (FRAME_SIZE_ERROR) */
        if ((type == NGHTTP2_DATA || type == NGHTTP2_HEADERS) && (id & 1) && id <= c->scan_hi &&
            !c->fatal && !c->goaway) {
            if (off > fed) {
                ssize_t r = nghttp2_session_mem_recv(c->ng, p + fed, off - fed);
                if (r < 0 || c->closed)
                    return (int)r;
                fed = off;
            }
            if (check_closed(c, type, id) < 0)
                return 0;
        }
        if (type == NGHTTP2_HEADERS && id > c->scan_hi)
            c->scan_hi = id;
        off += k;
    }
    ssize_t r = n > fed ? nghttp2_session_mem_recv(c->ng, p + fed, n - fed) : 0;
    return r < 0 ? (int)r : 0;
}

/* Read from the client and feed nghttp2. false: the connection is closed. The streams that
 * the reads of this run made ready go to backends after the last one (h2_dispatch): a stream
 * reset by a later frame of the same burst, even one in another TLS record, never costs a
 * backend connection. */
static bool receive(struct h2_conn *c, bool *more)
{
    char buf[SLB_BUF_SIZE];
    for (int i = 0; !c->client_eof && (c->t.rd_ready || c->t.ops->pending(&c->t)); i++) {
        if (!nghttp2_session_want_read(c->ng) || slb_hbuf_pending(&c->out) >= H2_OUT_HIGH)
            break;
        if (i == H2_READS_PER_RUN) {
            *more = true;
            break;
        }
        ssize_t n = c->t.ops->recv(&c->t, buf, sizeof(buf));
        if (n == 0)
            break;
        if (n < 0) {
            /* The client is gone (or cut the connection): nothing can reach it any more. */
            c->client_eof = true;
            conn_close(c);
            return false;
        }
        c->last_io_ms = c->w->loop.now_ms;
        slb_count_add(&h2_lis_counts(c)->v[SLB_LIS_PAYLOAD_IN], (uint64_t)n);
        int r = feed(c, (const uint8_t *)buf, (size_t)n);
        if (c->closed)
            return false;
        if (r < 0) {
            uint32_t code = NGHTTP2_INTERNAL_ERROR;
            if (c->fatal) {
                code = c->fatal_code; /* we stopped it (calm_down), and said why */
            } else if (r == NGHTTP2_ERR_FLOODED || r == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS) {
                slb_info("listener %s: client %s: HTTP/2 %s: GOAWAY ENHANCE_YOUR_CALM",
                         c->b.l->cfg->name, c->client_ip, nghttp2_strerror(r));
                slb_count_add(&h2_lis_counts(c)->v[SLB_LIS_H2_ABUSE], 1);
                code = NGHTTP2_ENHANCE_YOUR_CALM;
            }
            session_fail(c, code, r != NGHTTP2_ERR_BAD_CLIENT_MAGIC);
        }
        if (!c->ng)
            return true; /* h2_run ends the connection */
    }
    if (c->ndispatch && !c->fatal) /* a connection that ends starts no exchange */
        h2_dispatch(c);
    return !c->closed;
}

/* The last frame (a GOAWAY) is out: close_notify and our FIN, then what the client still sends
 * (a WINDOW_UPDATE crossing our GOAWAY) is dropped (see slb_tconn_linger), for at most a
 * second. */
static void linger_close(struct h2_conn *c)
{
    struct slb_loop *loop = &c->w->loop;
    c->lingering = true;
    slb_tconn_linger(&c->t);
    slb_io_set(loop, &c->io, EPOLLIN);
    slb_timer_start(loop, &c->timer, 1000);
}

static void linger_read(struct h2_conn *c)
{
    uint64_t dropped = 0;
    bool more = slb_tconn_drain(&c->t, &dropped);
    slb_count_add(&h2_lis_counts(c)->v[SLB_LIS_WIRE_IN], dropped);
    if (!more)
        conn_close(c);
}

static void kick_cb(void *p)
{
    struct h2_conn *c = p;
    c->kicked = false;
    h2_run(c);
}

void h2_kick(struct h2_conn *c)
{
    if (c->kicked || c->closed)
        return;
    c->kicked = true;
    slb_loop_defer(&c->w->loop, kick_cb, c);
}

/* Over the bandwidth limit (the transport owes bytes): true, and the shape timer runs the
 * connection again once the budget covers them; the socket is writable, so waiting for it
 * would spin. */
static bool shape_wait(struct h2_conn *c)
{
    if (!c->t.owed)
        return false;
    if (!slb_timer_active(&c->shape_timer))
        slb_timer_start(&c->w->loop, &c->shape_timer, slb_tconn_repay(&c->t));
    return c->t.owed != 0;
}

static void shape_cb(struct slb_loop *loop, struct slb_timer *t)
{
    struct h2_conn *c = t->data;
    if (c->closed || c->lingering)
        return;
    uint64_t ms = slb_tconn_repay(&c->t);
    if (ms) {
        slb_timer_start(loop, &c->shape_timer, ms);
        return;
    }
    h2_run(c);
}

/* The session failed: its GOAWAY goes out, then the lingering close. */
static void end_failed(struct h2_conn *c)
{
    c->t.wr_ready = true;
    if (!flush(c))
        return;
    if (!slb_hbuf_pending(&c->out)) {
        linger_close(c);
        return;
    }
    slb_io_set(&c->w->loop, &c->io, shape_wait(c) ? 0 : c->t.wr_wants);
}

void h2_run(struct h2_conn *c)
{
    if (c->closed || c->lingering)
        return;
    bool more = false;
    if (c->ng && !receive(c, &more))
        return;
    if (!c->ng) {
        end_failed(c);
        return;
    }
    if (!produce(c) || !flush(c))
        return;
    /* Writing made room: more frames (DATA the client's windows allow) may be waiting. */
    for (int i = 0; i < 8 && c->t.wr_ready && nghttp2_session_want_write(c->ng) &&
                    slb_hbuf_pending(&c->out) < H2_OUT_HIGH;
         i++) {
        size_t before = slb_hbuf_pending(&c->out);
        if (!produce(c) || !flush(c))
            return;
        if (slb_hbuf_pending(&c->out) == before)
            break;
    }
    if (c->wire_due) {
        /* The listener's wire counters move as streams end, not only when the connection
         * closes. */
        c->wire_due = false;
        account_wire(c);
    }
    bool done = !nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng);
    if ((done || (c->goaway && c->nstreams == 0)) && !slb_hbuf_pending(&c->out)) {
        linger_close(c);
        return;
    }
    uint32_t ev = 0;
    if (nghttp2_session_want_read(c->ng) && slb_hbuf_pending(&c->out) < H2_OUT_HIGH)
        ev |= c->t.rd_wants;
    if (more)
        ev |= EPOLLOUT;
    else if (slb_hbuf_pending(&c->out) && !shape_wait(c))
        ev |= c->t.wr_wants;
    slb_io_set(&c->w->loop, &c->io, ev);
}

static void client_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    struct h2_conn *c = io->data;
    if (c->closed)
        return;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        c->t.rd_ready = true;
    if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
        c->t.wr_ready = true;
    if (c->lingering)
        linger_read(c);
    else
        h2_run(c);
}

/* Graceful end (RFC 9113 6.8): GOAWAY NO_ERROR naming the last stream we took; those finish,
 * then the connection closes. */
static void goaway(struct h2_conn *c)
{
    if (c->goaway || c->closed || !c->ng)
        return;
    c->goaway = true;
    nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE, c->last_accepted, NGHTTP2_NO_ERROR, NULL, 0);
    h2_run(c);
}

static void timer_cb(struct slb_loop *loop, struct slb_timer *t)
{
    struct h2_conn *c = t->data;
    if (!c->ng && !c->lingering && slb_hbuf_pending(&c->out) &&
        loop->now_ms < c->last_write_ms + 1000) {
        /* The GOAWAY of a failed session is still being taken: a second more. */
        slb_timer_start(loop, t, c->last_write_ms + 1000 - loop->now_ms);
        return;
    }
    if (c->lingering || !c->ng) {
        conn_close(c);
        return;
    }
    const struct slb_listener_cfg *cfg = c->b.l->cfg;
    uint64_t idle = (uint64_t)cfg->idle_timeout_s * 1000u;
    uint64_t stall = (uint64_t)cfg->request_timeout_s * 1000u;
    if (slb_hbuf_pending(&c->out) && loop->now_ms >= c->last_write_ms + stall) {
        conn_close(c); /* a client that stopped reading altogether */
        return;
    }
    if (c->nstreams == 0 && loop->now_ms >= c->last_io_ms + idle) {
        if (c->goaway) {
            conn_close(c);
            return;
        }
        goaway(c);
        if (c->closed)
            return;
        slb_timer_start(loop, t, 1000);
        return;
    }
    uint64_t next = c->nstreams ? stall : c->last_io_ms + idle - loop->now_ms;
    slb_timer_start(loop, t, next ? next : 1);
}

static void conn_free(void *p)
{
    struct h2_conn *c = p;
    c->t.ops->free(&c->t);
    free(c);
}

static void conn_close(struct h2_conn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    struct slb_loop *loop = &c->w->loop;
    while (c->streams)
        h2_stream_free(c->streams);
    nghttp2_session_del(c->ng);
    c->ng = NULL;
    slb_timer_stop(loop, &c->timer);
    slb_timer_stop(loop, &c->shape_timer);
    slb_io_forget(&c->io);
    if (!c->client_eof && !c->lingering) /* lingering: its close_notify is out */
        c->t.ops->shutdown(&c->t);
    account_wire(c);
    close(c->t.fd);
    slb_hbuf_free(&c->out);
    slb_count_add(&h2_lis_counts(c)->v[SLB_LIS_ACTIVE], (uint64_t)-1);
    slb_worker_unlink(&c->link);
    slb_http_bind_release(&c->b);
    slb_loop_defer_free(loop, conn_free, c);
}

static void conn_abort(struct slb_conn_link *link)
{
    conn_close((struct h2_conn *)link);
}

static void conn_drain(struct slb_conn_link *link)
{
    goaway((struct h2_conn *)link);
}

/* A new configuration: a connection whose listener is gone finishes its streams and goes. */
static void conn_reconfigured(struct slb_conn_link *link)
{
    struct h2_conn *c = (struct h2_conn *)link;
    if (slb_http_bind_gone(&c->b, c->w)) {
        goaway(c);
        return;
    }
    /* The listener changed (its group, servers, weights, settings): the streams that start
     * from now on use the new configuration; those in progress keep theirs (each holds it),
     * and the TLS state keeps its handshake's. */
    struct slb_listener_rt *cur = slb_http_bind_newer(&c->b, c->w);
    if (cur)
        slb_http_bind_move(&c->b, c->w, cur, true);
}

/* Callbacks and options are the same for every session: made once, read by all workers. */
static nghttp2_session_callbacks *g_cbs;
static nghttp2_option *g_opt;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void setup_once(void)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cbs);
        return;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    /* DATA is acknowledged when it reached the backend, not when nghttp2 read it. */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_no_closed_streams(opt, 1);
    nghttp2_option_set_max_continuations(opt, 8);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    /* Ours (H2_RST_*) is stricter and answers ENHANCE_YOUR_CALM. */
    nghttp2_option_set_stream_reset_rate_limit(opt, 10 * H2_RST_BURST, 10 * H2_RST_RATE);
    g_cbs = cbs;
    g_opt = opt;
}

bool slb_h2_selected(SSL *ssl)
{
    const unsigned char *p;
    unsigned len;
    SSL_get0_alpn_selected(ssl, &p, &len);
    return len == 2 && p[0] == 'h' && p[1] == '2';
}

int slb_h2_start(const struct slb_h2_handoff *h)
{
    pthread_once(&g_once, setup_once);
    struct h2_conn *c = calloc(1, sizeof(*c));
    if (!c || !g_cbs || nghttp2_session_server_new2(&c->ng, g_cbs, c, g_opt) != 0) {
        free(c);
        return -ENOMEM;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_NGHTTP2_STREAMS}, /* see above */
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2_HEAD_LIMIT},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    if (nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0) {
        nghttp2_session_del(c->ng);
        free(c);
        return -ENOMEM;
    }
    c->w = h->w;
    c->hw = h->hw;
    c->b = h->b;
    c->t = h->t;
    c->wire_in_seen = c->log_wire_in = h->wire_in_seen;
    c->wire_out_seen = c->log_wire_out = h->wire_out_seen;
    snprintf(c->client_ip, sizeof(c->client_ip), "%s", h->client_ip);
    if (h->peer)
        c->peer = *h->peer; /* else unknown: no "source" rule matches */
    c->local_port = h->local_port;
    c->client_port = h->client_port;
    c->last_io_ms = c->last_write_ms = c->w->loop.now_ms;
    c->scan_skip = NGHTTP2_CLIENT_MAGIC_LEN; /* the preface comes before the first frame */
    c->link.abort = conn_abort;
    c->link.drain = conn_drain;
    c->link.reconfigured = conn_reconfigured;
    slb_worker_link(c->w, &c->link);
    slb_io_init(&c->io, c->t.fd, client_cb, c);
    slb_timer_init(&c->timer, timer_cb, c);
    slb_timer_init(&c->shape_timer, shape_cb, c);
    slb_timer_start(&c->w->loop, &c->timer, (uint64_t)c->b.l->cfg->idle_timeout_s * 1000u);
    /* The handshake's last read may have brought the preface already. */
    c->t.rd_ready = c->t.wr_ready = true;
    if (c->w->drain_deadline_ms)
        goaway(c);
    else
        h2_run(c);
    return 0;
}
