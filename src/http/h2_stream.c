/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP/2 streams (see h2.c for the connection): each one a request to a backend over an
 * HTTP/1.1 connection from the worker's pool. The request head is rewritten as HTTP/1.1 text
 * and parsed by the HTTP/1.1 parser, so both protocols reach backends through the same
 * validation and the same rewriting (rewrite.h); the response head comes back the same way.
 * Request DATA is acknowledged only once written to the backend, and the response is read
 * from the backend only as fast as the client's window lets DATA go. The exchange with the
 * backend is exchange.c's, shared with HTTP/1.x: each stream is its sink (h2_sink). */
#include "http/h2_int.h"

#include "acme/challenge.h"
#include "core/log.h"
#include "core/time.h"
#include "http/access.h"
#include "http/decide.h"
#include "http/exchange.h"
#include "http/route.h"
#include "http/xchg.h"
#include "tls/tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void up_event(struct http_up *up, uint32_t events);

static void count_status(struct h2_stream *s, int status, bool local, int dir)
{
    slb_xchg_count_status(h2_lis_counts(s->c), status, local, dir);
    s->e.status = dir > 0 ? status : 0;
}

/* One access-log line per stream that carried a request. The wire bytes are the connection's
 * since the previous line: streams share them. */
static void log_stream(struct h2_stream *s)
{
    struct h2_conn *c = s->c;
    if (!s->log || s->logged || !s->log->start_ms)
        return;
    s->logged = true;
    struct slb_xchg_log x = {
        .rec = s->log,
        .proto = "HTTP/2",
        .bytes_in = s->bytes_in,
        .bytes_out = s->bytes_out,
        .client_port = c->client_port,
        .e = &s->e,
    };
    slb_xchg_log(c->w, s->e.l, &c->t, c->client_ip, &x, &c->log_wire_in, &c->log_wire_out);
}

/* --- the backend connection of a stream --- */

/* Let go of the backend connection: back to the pool after a complete exchange both sides
 * kept alive, closed otherwise. */
static void drop_up(struct h2_stream *s)
{
    if (!s->e.up)
        return;
    bool complete = s->st == SS_EXCHANGE && s->e.resp_done && s->e.req_done &&
                    !slb_hbuf_pending(&s->tx) && slb_buf_empty(&s->e.up->in) && s->e.up_keep_alive;
    if (complete) {
        slb_exchange_up_done(&s->e, true);
        return;
    }
    slb_up_close(s->e.up);
    s->e.up = NULL;
}

static void up_interest(struct h2_stream *s)
{
    struct http_up *up = s->e.up;
    if (!up)
        return;
    uint32_t ev = 0;
    if (!up->connected) {
        ev = EPOLLOUT;
    } else {
        if (!s->e.resp_done && !s->up_eof && slb_up_room(up, s->e.resp_ready))
            ev |= EPOLLIN;
        if (slb_hbuf_pending(&s->tx))
            ev |= EPOLLOUT;
    }
    slb_up_set_interest(up, ev);
}

static void stream_timer(struct h2_stream *s)
{
    const struct slb_listener_cfg *cfg = s->e.l->cfg;
    uint64_t ms;
    if (s->st == SS_CONNECT) {
        ms = cfg->connect_timeout_ms;
    } else if (s->st == SS_EXCHANGE) {
        ms = slb_xchg_deadline_in(cfg, &s->e.exchange_deadline_ms, s->c->w->loop.now_ms);
    } else {
        ms = (uint64_t)cfg->request_timeout_s * 1000u;
    }
    slb_timer_start(&s->c->w->loop, &s->timer, ms);
}

/* --- responses to the client --- */

static ssize_t body_read_cb(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *ud);

/* Submit a head from a parsed HTTP/1.1 message: names lowercased in place (the message's
 * bytes are ours), hop-by-hop fields left out, set_cookie (may be NULL) added. final: the
 * response's own head (with a body when body is set), else an interim (1xx) one. */
static int submit_head(struct h2_stream *s, const struct slb_http_msg *m, bool final, bool body,
                       const char *set_cookie)
{
    nghttp2_nv nva[SLB_HTTP_MAX_HEADERS + 2];
    char status[8];
    int sl = snprintf(status, sizeof(status), "%03u", (unsigned)m->status % 1000u);
    size_t n = 0;
    nva[n++] =
        (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, (size_t)sl, NGHTTP2_NV_FLAG_NONE};
    for (size_t i = 0; i < m->nheaders; i++) {
        if (slb_http_is_hop_by_hop(m, i))
            continue;
        char *name = (char *)m->headers[i].name.p;
        for (size_t k = 0; k < m->headers[i].name.len; k++)
            if (name[k] >= 'A' && name[k] <= 'Z')
                name[k] = (char)(name[k] + 32);
        nva[n++] =
            (nghttp2_nv){(uint8_t *)name, (uint8_t *)m->headers[i].value.p, m->headers[i].name.len,
                         m->headers[i].value.len, NGHTTP2_NV_FLAG_NONE};
    }
    if (set_cookie)
        nva[n++] = (nghttp2_nv){(uint8_t *)"set-cookie", (uint8_t *)set_cookie, 10,
                                strlen(set_cookie), NGHTTP2_NV_FLAG_NONE};
    if (!final)
        return nghttp2_submit_headers(s->c->ng, NGHTTP2_FLAG_NONE, s->id, NULL, nva, n, NULL);
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = body_read_cb};
    s->resp_submitted = true;
    return nghttp2_submit_response(s->c->ng, s->id, nva, n, body ? &dp : NULL);
}

/* Our own response (an error, a redirect), built as HTTP/1.1 and sent as h2. */
/* Our own answer: status with extra header lines, or the answer of decision d when not NULL. */
static void respond_built(struct h2_stream *s, int status, const char *extra,
                          const struct slb_http_decision *d)
{
    struct h2_conn *c = s->c;
    if (s->e.up) {
        slb_up_close(s->e.up);
        s->e.up = NULL;
    }
    if (s->st == SS_DISPATCH)
        c->ndispatch--;
    s->st = SS_LOCAL;
    /* A client that never reads our answer: its stream is reset after request_timeout_s. */
    slb_timer_start(&c->w->loop, &s->timer, (uint64_t)s->e.l->cfg->request_timeout_s * 1000u);
    slb_hbuf_reset(&s->local);
    if (d)
        slb_http_decision_answer(&s->local, d, true, s->head_only);
    else
        slb_http_build_simple(&s->local, status, extra, true, s->head_only);
    struct slb_http_limits lim;
    slb_http_limits_default(&lim);
    struct slb_http_msg *m = &c->hw->msg;
    int rc = slb_http_parse_response(s->local.p, s->local.len, &lim,
                                     s->head_only ? SLB_HTTP_HEAD : SLB_HTTP_GET, m);
    if (s->local.oom || rc <= 0) {
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    s->local.off = (size_t)rc;
    s->e.resp_done = true;
    count_status(s, status, true, 1);
    if (submit_head(s, m, true, slb_hbuf_pending(&s->local) > 0, NULL) != 0)
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    /* What the client still sends for this stream is read and dropped. */
    if (s->unconsumed) {
        nghttp2_session_consume(c->ng, s->id, s->unconsumed);
        s->unconsumed = 0;
    }
    slb_hbuf_free(&s->tx);
}

static void respond_local(struct h2_stream *s, int status, const char *extra)
{
    respond_built(s, status, extra, NULL);
}

/* The exchange failed (see slb_exchange_fail): our error when nothing of the response went
 * out yet, otherwise the stream is reset, so the client cannot take a cut body for a whole
 * one. */
static void sink_error(struct slb_exchange *e, int status)
{
    struct h2_stream *s = e->sink;
    struct h2_conn *c = s->c;
    if (s->resp_submitted) {
        slb_up_close(s->e.up);
        s->e.up = NULL;
        s->e.resp_done = s->reset = true;
        s->st = SS_LOCAL;
        slb_timer_stop(&c->w->loop, &s->timer);
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    if (s->e.resp_head_done)
        count_status(s, s->e.status, false, -1);
    respond_local(s, status, NULL);
}

/* The head of a final response: the backend's fields (hop-by-hop ones left out) and the sticky
 * cookie of "insert" mode. The "server" mode rewrites the backend's own Set-Cookie, which the
 * HTTP/1.1 builder does: its head is built, parsed back and submitted. */
static bool sink_head(struct slb_exchange *e, struct slb_http_msg *m)
{
    struct h2_stream *s = e->sink;
    struct h2_conn *c = s->c;
    bool body = m->body != SLB_BODY_NONE && !(m->body == SLB_BODY_LENGTH && !m->content_length);
    /* Compression (listener gzip): the head rewritten in place (the scratch holds its new
     * values until it is submitted); the body goes through gzip_read. */
    struct slb_gzip_scratch gz_sc;
    if (body)
        slb_exchange_gzip_head(e, m, &gz_sc, false);
    struct slb_sticky_out so = {0};
    if (s->e.l->cfg->sticky != SLB_STICKY_NONE)
        slb_http_sticky_response(&so, s->e.l->cfg, s->e.wg->g, s->e.srv_idx, true);
    if (!so.prefix_name) {
        if (submit_head(s, m, true, body, so.set_cookie) == 0)
            return true;
        slb_exchange_fail(&s->e, 502, SLB_SRV_FAIL_INVALID,
                          "response head cannot be given to an HTTP/2 client");
        return false;
    }
    slb_hbuf_reset(&s->local);
    slb_http_build_response(&s->local, m, true, NULL, so.prefix_name, so.prefix);
    struct slb_http_limits lim;
    slb_http_limits_default(&lim);
    lim.max_head_bytes = s->local.len + 1;
    struct slb_http_msg *rm = &c->hw->msg; /* m is consumed: reuse the scratch */
    bool ok = !s->local.oom &&
              slb_http_parse_response(s->local.p, s->local.len, &lim, SLB_HTTP_GET, rm) > 0 &&
              submit_head(s, rm, true, body, NULL) == 0;
    if (!ok)
        slb_exchange_fail(&s->e, 502, SLB_SRV_FAIL_INVALID,
                          "response head cannot be given to an HTTP/2 client");
    slb_hbuf_free(&s->local);
    return ok;
}

/* Interim responses (100, 103 Early Hints) go on as non-final HEADERS; HEADERS are not
 * flow-controlled, so a backend that sends them without end is stopped. */
static int sink_interim(struct slb_exchange *e, struct slb_http_msg *m)
{
    struct h2_stream *s = e->sink;
    if (++s->interims > H2_MAX_INTERIM) {
        slb_exchange_fail(&s->e, 502, SLB_SRV_FAIL_INVALID, "too many interim responses");
        return -1;
    }
    return submit_head(s, m, false, false, NULL) != 0 ? 1 : 0;
}

/* Body bytes of the response ready to go as DATA (s->e.resp_ready at the front of up->in). */
static int body_ready(struct h2_stream *s)
{
    return slb_exchange_body_ready(&s->e, &s->resp_trailers);
}

/* The backend's chunked trailer section as a trailing HEADERS frame. */
static void submit_trailers(struct h2_stream *s)
{
    nghttp2_nv nva[SLB_HTTP_MAX_HEADERS];
    size_t n = 0;
    char *p = s->resp_trailers.p, *end = p + s->resp_trailers.len;
    while (p && p < end && n < SLB_HTTP_MAX_HEADERS) {
        char *eol = memchr(p, '\r', (size_t)(end - p));
        if (!eol || eol == p)
            break;
        char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon) {
            for (char *k = p; k < colon; k++)
                if (*k >= 'A' && *k <= 'Z')
                    *k += 32;
            char *v = colon + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            /* Fields that frame, route or authenticate a message have no place here
             * (RFC 9110 6.5.1). */
            if (!slb_http_trailer_field_banned(p, (size_t)(colon - p)))
                nva[n++] = (nghttp2_nv){(uint8_t *)p, (uint8_t *)v, (size_t)(colon - p),
                                        (size_t)(ve - v), NGHTTP2_NV_FLAG_NONE};
        }
        p = eol + 2;
    }
    nghttp2_submit_trailer(s->c->ng, s->id, nva, n);
}

/* The end of the response's DATA: the trailers, if any, follow as HEADERS. */
static void body_end(struct h2_stream *s, uint32_t *flags)
{
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (s->resp_trailers.len > 2) {
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        submit_trailers(s);
    }
}

/* A compressed response (resp_gzip): what is ready of the body goes through the compressor
 * into the DATA frame's buffer; once the body is all in, the gzip trailer follows. */
static ssize_t gzip_read(struct h2_stream *s, uint8_t *buf, size_t len, uint32_t *flags)
{
    struct http_up *up = s->e.up;
    bool was_full = !slb_up_room(up, s->e.resp_ready);
    size_t total = 0;
    while (s->e.gz && total < len) {
        if (body_ready(s) < 0) {
            slb_exchange_fail(&s->e, 502, SLB_SRV_FAIL_INVALID, "malformed chunked response");
            return NGHTTP2_ERR_DEFERRED;
        }
        uint64_t before = s->e.resp_ready;
        size_t made;
        int rc = slb_exchange_gzip_run(&s->e, buf + total, len - total, &made);
        if (rc < 0) {
            slb_exchange_fail(&s->e, 502, SLB_SRV_FAIL_INVALID, "compression failed");
            return NGHTTP2_ERR_DEFERRED;
        }
        if (s->e.resp_ready != before)
            s->e.last_io_ms = s->c->w->loop.now_ms;
        total += made;
        if (rc == 2)
            break;
    }
    if (was_full && slb_up_room(up, s->e.resp_ready))
        up_interest(s);
    if (!s->e.gz) {
        body_end(s, flags);
        return (ssize_t)total;
    }
    if (total == 0) {
        s->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)total;
}

static ssize_t body_read_cb(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct h2_stream *s = src->ptr;
    if (s->st == SS_LOCAL) {
        size_t n = slb_hbuf_pending(&s->local);
        n = n < len ? n : len;
        memcpy(buf, s->local.p + s->local.off, n);
        s->local.off += n;
        if (!slb_hbuf_pending(&s->local))
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t)n;
    }
    if (s->reset || !s->e.up)
        return NGHTTP2_ERR_DEFERRED; /* our RST_STREAM goes out before any more DATA */
    if (s->e.resp_gzip)
        return gzip_read(s, buf, len, flags);
    struct http_up *up = s->e.up;
    /* Before the decoding too: dropping a chunked body's framing makes room as well. */
    bool was_full = !slb_up_room(up, s->e.resp_ready);
    if (body_ready(s) < 0) {
        /* queues RST_STREAM */
        slb_exchange_fail(&s->e, 502, SLB_SRV_FAIL_INVALID, "malformed chunked response");
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = s->e.resp_ready < len ? (size_t)s->e.resp_ready : len;
    if (n) {
        memcpy(buf, up->in.data + up->in.off, n);
        slb_buf_consume(&up->in, n);
        s->e.resp_ready -= n;
        s->e.last_io_ms = s->c->w->loop.now_ms;
    }
    if (was_full && slb_up_room(up, s->e.resp_ready))
        up_interest(s);
    if (s->e.resp_done && s->e.resp_ready == 0) {
        body_end(s, flags);
        return (ssize_t)n;
    }
    if (n == 0) {
        s->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

/* --- the exchange with the backend --- */

static bool write_up(struct h2_stream *s)
{
    struct http_up *up = s->e.up;
    bool progress = false;
    while (up && up->connected && up->wr_ready && slb_hbuf_pending(&s->tx)) {
        ssize_t n = slb_up_send(up, s->tx.p + s->tx.off, slb_hbuf_pending(&s->tx));
        if (n < 0) {
            if (up->send_err) {
                /* A reset seen on send: the read side will report it with the cause. */
                up->wr_ready = false;
                up->rd_ready = true;
            }
            break;
        }
        s->tx.off += (size_t)n;
        up->bytes_to += (uint64_t)n;
        s->e.last_io_ms = s->c->w->loop.now_ms;
        progress = true;
    }
    if (progress && !slb_hbuf_pending(&s->tx)) {
        if (!s->e.sent_us && s->e.req_done)
            s->e.sent_us = slb_mono_us();
        if (s->e.req_has_body) {
            /* Written: the client may send as much again. A request without a body keeps
             * its head for a retry on a fresh connection. */
            slb_hbuf_reset(&s->tx);
            if (s->unconsumed) {
                nghttp2_session_consume(s->c->ng, s->id, s->unconsumed);
                s->unconsumed = 0;
            }
        }
    }
    return progress;
}

static bool read_up(struct h2_stream *s)
{
    struct http_up *up = s->e.up;
    if (!up || !up->connected || !up->rd_ready || s->e.resp_done ||
        !slb_up_room(up, s->e.resp_ready))
        return false;
    ssize_t n = slb_up_read(up);
    if (n > 0)
        s->e.last_io_ms = s->c->w->loop.now_ms;
    if (n >= 0)
        return n > 0;
    if (n == SLB_EEOF) {
        /* Whether the close cuts the response is known once what arrived with it is parsed
         * (see up_closed): a backend may send its whole answer and close at once. */
        s->up_eof = true;
        s->e.up_keep_alive = false;
        up->rd_ready = false;
        return true;
    }
    slb_exchange_backend_cut(&s->e, SLB_SRV_FAIL_RESET, strerror((int)-n));
    return true;
}

/* The backend closed its side and everything it sent has been through the parser. */
static void up_closed(struct h2_stream *s)
{
    if (!s->e.resp_head_done) {
        slb_exchange_backend_cut(&s->e, SLB_SRV_FAIL_CLOSED, "closed the connection early");
        return;
    }
    if (s->e.resp_body == SLB_BODY_UNTIL_CLOSE)
        s->e.resp_done = true;
    else if (!s->e.resp_done && body_ready(s) == 0 && !s->e.resp_done)
        slb_exchange_fail(&s->e, 502, SLB_SRV_FAIL_CLOSED,
                          "closed the connection in the middle of the body");
}

/* Move what can move between the stream and its backend. */
void h2_stream_io(struct h2_stream *s)
{
    for (int i = 0; i < 64 && s->e.up && s->st == SS_EXCHANGE; i++) {
        bool p = write_up(s);
        p |= read_up(s);
        if (s->st != SS_EXCHANGE || !s->e.up)
            break;
        if (!s->e.resp_head_done && !slb_buf_empty(&s->e.up->in))
            p |= slb_exchange_parse_head(&s->e);
        if (s->st != SS_EXCHANGE || !s->e.up)
            break;
        if (s->up_eof && !s->e.resp_done)
            up_closed(s);
        if (s->st != SS_EXCHANGE || !s->e.up)
            break;
        if (s->e.resp_head_done && s->deferred &&
            (s->e.up->in.len > s->e.resp_ready || s->e.resp_done)) {
            s->deferred = false;
            nghttp2_session_resume_data(s->c->ng, s->id);
        }
        if (!p)
            break;
    }
    up_interest(s);
}

static void sink_choice(struct slb_exchange *e, struct slb_up_choice *ch)
{
    struct h2_conn *c = ((struct h2_stream *)e->sink)->c;
    ch->client_fd = c->t.fd;
    ch->key = &c->sched_key;
    ch->key_of = &c->sched_key_of;
    ch->fresh = slb_xchg_fresh_only(e->l->cfg, c->reuse_ok, (enum slb_http_method)e->method,
                                    e->req_has_body);
}

/* A backend connection was chosen (first, or again after a failure): the request head goes
 * to it from the start. */
static void sink_connecting(struct slb_exchange *e)
{
    struct h2_stream *s = e->sink;
    s->tx.off = 0;
    s->up_eof = false;
    s->st = s->e.up->reused ? SS_EXCHANGE : SS_CONNECT;
    s->e.up->connected = s->e.up->reused;
    if (s->e.up->reused)
        s->e.up->wr_ready = true;
    stream_timer(s);
    if (s->st == SS_CONNECT)
        up_interest(s); /* else the next server's connect is only seen at its timeout */
}

static const struct slb_exchange_sink_ops h2_sink = {
    .choice = sink_choice,
    .connecting = sink_connecting,
    .interim = sink_interim,
    .head = sink_head,
    .error = sink_error,
};

void h2_exchange_init(struct h2_stream *s)
{
    /* The stream is zeroed (calloc): only what is not zero. */
    struct h2_conn *c = s->c;
    struct slb_exchange *e = &s->e;
    e->ops = &h2_sink;
    e->sink = s;
    e->hw = c->hw;
    e->l = c->b.l;
    e->wid = c->w->id;
    e->up_cb = up_event;
    e->wg = c->b.wg;
    e->tried = s->tried_in;
    e->no_upgrade = true;
}

static void up_event(struct http_up *up, uint32_t events)
{
    struct h2_stream *s = up->owner;
    struct h2_conn *c = s->c;
    if (c->closed)
        return;
    int rc = slb_up_on_event(up, events);
    if (rc < 0) {
        slb_exchange_connect_failed(&s->e, slb_srv_fail_connect(rc), strerror(-rc));
    } else if (rc == 1) {
        s->st = SS_EXCHANGE;
        stream_timer(s);
    }
    if (s->st == SS_EXCHANGE)
        h2_stream_io(s);
    h2_kick(c);
}

void h2_stream_timer_cb(struct slb_loop *loop, struct slb_timer *t)
{
    struct h2_stream *s = t->data;
    struct h2_conn *c = s->c;
    if (s->st == SS_CONNECT) {
        slb_exchange_connect_failed(&s->e, SLB_SRV_FAIL_CONNECT_TIMEOUT, "timeout");
        if (s->st == SS_EXCHANGE)
            h2_stream_io(s);
    } else if (s->st == SS_EXCHANGE) {
        uint64_t left = slb_exchange_timer_left(&s->e, loop->now_ms);
        if (left) {
            slb_timer_start(loop, t, left);
            return;
        }
        slb_exchange_timed_out(&s->e);
    } else if (s->st == SS_LOCAL) {
        /* Our own response is stuck behind a client that does not read. */
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
    } else if (s->st == SS_HEAD) {
        /* A header block never finished: nothing else can be read on this connection until
         * it is (RFC 9113 6.10), so the connection ends. */
        slb_debug("listener %s: client %s: HTTP/2 header block not finished in time",
                  s->e.l->cfg->name, c->client_ip);
        nghttp2_session_terminate_session(c->ng, NGHTTP2_PROTOCOL_ERROR);
    }
    h2_kick(c);
}

/* --- requests from the client --- */

/* The request head as HTTP/1.1 text, parsed by the HTTP/1.1 parser, then rewritten for the
 * backend like any other request. */
void h2_request_line(struct h2_stream *s)
{
    if (s->line_done)
        return;
    s->line_done = true;
    s->text_off = (uint32_t)s->req.len;
    size_t n = s->m_len + 1 + s->p_len + 11 + (s->a_len ? 8 + s->a_len : 0);
    char *p = slb_hbuf_extend(&s->req, n);
    if (!p)
        return;
    const char *base = s->req.p; /* after the extend: it may have moved */
    memcpy(p, base + s->m_off, s->m_len);
    p += s->m_len;
    *p++ = ' ';
    memcpy(p, base + s->p_off, s->p_len);
    p += s->p_len;
    memcpy(p, " HTTP/1.1\r\n", 11);
    p += 11;
    if (s->a_len) {
        memcpy(p, "Host: ", 6);
        memcpy(p + 6, base + s->a_off, s->a_len);
        memcpy(p + 6 + s->a_len, "\r\n", 2);
    }
}

void h2_start_request(struct h2_stream *s)
{
    struct h2_conn *c = s->c;
    const struct slb_listener_cfg *cfg = s->e.l->cfg;
    s->e.last_io_ms = c->w->loop.now_ms;
    if (s->bad)
        return; /* its RST_STREAM is queued */
    if (s->too_big) {
        if (s->log)
            slb_access_capture(s->log, c->w->loop.now_ms, NULL);
        respond_local(s, 431, NULL);
        return;
    }
    if (s->m_len == 7 && memcmp(s->req.p + s->m_off, "CONNECT", 7) == 0) {
        /* An HTTP/2 CONNECT has no :path (RFC 9113 8.5): its request line would not parse,
         * and the answer is the same as for HTTP/1.1's. */
        if (s->log)
            slb_access_capture(s->log, c->w->loop.now_ms, NULL);
        respond_local(s, 405, SLB_HTTP_ALLOW);
        slb_hbuf_free(&s->req);
        return;
    }
    h2_request_line(s);
    struct slb_hbuf *req = &s->req;
    if (s->cookie.len) {
        slb_hbuf_puts(req, "Cookie: ");
        slb_hbuf_put(req, s->cookie.p, s->cookie.len);
        slb_hbuf_puts(req, "\r\n");
    }
    if (s->req_chunked)
        slb_hbuf_puts(req, "Transfer-Encoding: chunked\r\n");
    slb_hbuf_puts(req, "\r\n");
    slb_hbuf_free(&s->cookie);

    struct slb_http_limits lim;
    slb_http_limits_default(&lim);
    lim.max_head_bytes = req->len + 1;
    struct slb_http_msg *m = &c->hw->msg;
    int rc = req->oom
                 ? -500
                 : slb_http_parse_request(req->p + s->text_off, req->len - s->text_off, &lim, m);
    if (rc <= 0) {
        slb_debug("listener %s: client %s: bad HTTP/2 request (%d)", cfg->name, c->client_ip, -rc);
        if (s->log)
            slb_access_capture(s->log, c->w->loop.now_ms, NULL);
        respond_local(s, rc < 0 ? -rc : 400, NULL);
        slb_hbuf_free(req);
        return;
    }
    if (s->log)
        slb_access_capture(s->log, c->w->loop.now_ms, m);
    s->e.start_us = slb_mono_us();
    s->e.method = (uint8_t)m->method;
    s->head_only = m->method == SLB_HTTP_HEAD;
    s->e.req_has_body = m->body != SLB_BODY_NONE;
    if (s->e.l->cfg->gzip)
        slb_gzip_req_facts(&s->e.gz_req, m);
    struct slb_http_decision d;
    slb_http_decide(&d, s->e.l, s->ws, s->e.wg, c->t.ssl, &c->peer, m);
    s->rule = d.rule;
    if (d.rule) {
        slb_count_add(&s->e.l->rule_stats[d.rule->index]->w[c->w->id].v[SLB_RULE_REQS], 1);
        slb_access_rule(s->log, d.rule->cfg->name);
    }
    if (!d.status && d.wg != s->e.wg) {
        /* A rule chose another group: the tried flags follow its size. */
        size_t n = d.wg->g->nservers;
        if (n > s->ntried) {
            uint8_t *t = calloc(n, 1);
            if (!t) {
                respond_local(s, 500, NULL);
                slb_hbuf_free(req);
                return;
            }
            s->e.tried = t;
            s->ntried = n;
        }
        s->e.wg = d.wg;
    }
    if (d.status) {
        if (d.limited)
            s->e.fail = SLB_ACCESS_RATE_LIMITED;
        else if (d.status == 503) /* no group, or an empty one */
            s->e.fail = SLB_ACCESS_NO_SERVER;
        respond_built(s, d.status, d.extra, &d);
    } else {
        /* The backend head is built now, while the parse result is at hand; the server that
         * gets it is chosen once this read's frames are processed (see h2_dispatch), so streams
         * opened and reset in one burst never reach a backend. Its default Host is the
         * group's first server's: an HTTP/2 request always has :authority or Host. */
        struct slb_fwd_certs certs;
        struct slb_fwd_info fwd;
        slb_http_fwd_init(&fwd, &certs, s->e.l, c->t.ssl, c->client_ip, c->local_port);
        fwd.default_host = d.wg->g->cfg->servers[0].authority;
        if (s->log && s->log->request_id_ours)
            fwd.request_id = s->log->request_id;
        fwd.rule = d.rule;
        slb_http_build_request(&s->tx, m, &fwd);
        if (d.sticky.len) {
            /* Kept in the stream until h2_dispatch: the parse result will be gone. */
            slb_hbuf_reset(&s->cookie);
            slb_hbuf_put(&s->cookie, d.sticky.p, d.sticky.len);
        }
        if (s->tx.oom) {
            respond_local(s, 500, NULL);
        } else {
            s->st = SS_DISPATCH;
            c->ndispatch++;
        }
    }
    slb_hbuf_free(req);
}

void h2_dispatch(struct h2_conn *c)
{
    for (struct h2_stream *s = c->streams; s && c->ndispatch; s = s->next) {
        if (s->st != SS_DISPATCH)
            continue;
        c->ndispatch--;
        struct slb_slice sticky = {s->cookie.p, s->cookie.len};
        bool ok = slb_exchange_choose(&s->e, sticky);
        slb_hbuf_free(&s->cookie);
        if (!ok) {
            slb_info_limited("listener %s: no healthy backend server", s->e.l->cfg->name);
            if (!s->e.fail) /* all connects failed at once: that reason stays */
                s->e.fail = SLB_ACCESS_NO_SERVER;
            s->st = SS_HEAD; /* not counted in ndispatch any more */
            respond_local(s, 503, NULL);
            continue;
        }
        sink_connecting(&s->e);
        if (s->st == SS_EXCHANGE)
            h2_stream_io(s);
    }
}

/* The client's side of the stream ended: close the chunked body with the trailers. */
void h2_request_end(struct h2_stream *s)
{
    if (s->e.req_done)
        return;
    s->e.req_done = true;
    if (s->st == SS_LOCAL || s->st == SS_HEAD)
        return;
    if (s->req_chunked) {
        slb_hbuf_puts(&s->tx, "0\r\n");
        slb_hbuf_put(&s->tx, s->trailers.p, s->trailers.len);
        slb_hbuf_puts(&s->tx, "\r\n");
    }
    slb_hbuf_free(&s->trailers);
    if (s->st == SS_EXCHANGE)
        h2_stream_io(s);
}

void h2_stream_free(struct h2_stream *s)
{
    struct h2_conn *c = s->c;
    slb_timer_stop(&c->w->loop, &s->timer);
    if (s->st == SS_DISPATCH)
        c->ndispatch--;
    drop_up(s);
    c->reuse_ok = true; /* a request of this connection has ended */
    if (s->e.status)
        slb_xchg_count_duration(h2_lis_counts(c), s->e.start_us, slb_mono_us());
    log_stream(s);
    slb_hbuf_free(&s->req);
    slb_hbuf_free(&s->cookie);
    slb_hbuf_free(&s->trailers);
    slb_hbuf_free(&s->tx);
    slb_hbuf_free(&s->resp_trailers);
    slb_hbuf_free(&s->local);
    slb_exchange_gzip_drop(&s->e);
    if (s->e.tried != s->tried_in)
        free(s->e.tried);
    slb_access_free(s->log);
    if (s->prev)
        s->prev->next = s->next;
    else
        c->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    c->nstreams--;
    slb_wsnap_release(s->ws);
    free(s);
}
