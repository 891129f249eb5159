/* SPDX-License-Identifier: Apache-2.0 */
/* The HTTP/1.1 reverse proxy: one client connection (plain or TLS) served one request at a
 * time, each forwarded to a backend connection from the worker's pool. All work happens in
 * run(), a loop of small steps that each move bytes when they can; the epoll interest is
 * derived from the state afterwards. Bodies stream through the fixed buffers in both
 * directions, never buffered whole. Pipelined requests wait in the input buffer and are
 * answered in order. The exchange with the backend (server choice, retries, the response head
 * and body framing, failures) is exchange.c's: this file is its HTTP/1.x client side, the
 * sink it answers through (h1_sink). */
#include "http/proxy.h"

#include "acme/challenge.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/time.h"
#include "http/access.h"
#include "http/bind.h"
#include "http/decide.h"
#include "http/exchange.h"
#include "http/h1_body.h"
#include "http/h2.h"
#include "http/parser.h"
#include "http/rewrite.h"
#include "http/route.h"
#include "http/upstream.h"
#include "http/xchg.h"
#include "net/transport.h"
#include "tcp/proxy.h"
#include "tls/tls.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum conn_state {
    ST_HANDSHAKE, /* TLS handshake in progress */
    ST_HEAD,      /* waiting for (the rest of) a request head */
    ST_CONNECT,   /* request parsed, backend connect in progress */
    ST_EXCHANGE,  /* request going to the backend, response coming back */
    ST_TUNNEL,    /* after 101 Switching Protocols: bytes both ways */
    ST_LINGER,    /* our own response (error, redirect) being sent; close or next after */
};

/* A client connection. Owned by the worker that accepted it, from accept to close; freed at
 * the end of the loop iteration in which it closed. Small on purpose: an idle keep-alive
 * connection holds no buffer (see core/buf.h), no parse result and no exchange state. */
struct http_conn {
    struct slb_conn_link link;
    struct slb_worker *w;
    struct slb_http_worker *hw;
    struct slb_http_bind b; /* the listener and configuration requests use (rebind) */
    struct slb_tconn t;
    struct slb_io io;
    struct slb_timer timer;
    struct slb_timer shape_timer; /* limits.bandwidth_mbps: sending again (slb_tconn_repay) */
    struct slb_buf in;            /* bytes from the client */
    struct slb_hbuf out;          /* heads and our own responses to the client */
    /* While a request is parsed, answered or tunnelled; else NULL. Its backend side (x->e)
     * has the backend connection during an exchange. */
    struct http_xchg *x;
    uint8_t sched_key_of; /* sched_key: see struct slb_up_choice */
    uint64_t sched_key;
    enum conn_state st;
    bool closed, client_eof, close_after, tls_failed;
    /* The client sent while we waited for a response: drop the read interest until then. */
    bool rd_muted;
    bool abort_reset; /* end the client connection with a reset, not an orderly close */
    /* A request of this connection has ended: under backend_reuse "safe", only from then on
     * may one go on a pooled backend connection. */
    bool reuse_ok;
    bool lingering; /* our side is closed; what the client still sends is dropped */
    uint16_t local_port;
    /* accounting */
    uint64_t wire_in_seen, wire_out_seen;
    uint64_t log_wire_in, log_wire_out; /* at the end of the last request logged */
    char client_ip[INET6_ADDRSTRLEN];
    uint16_t client_port;
    struct sockaddr_storage peer; /* the client's address (rules' "source") */
    const struct slb_rule *rule;  /* the rule that decided the current request (NULL: none) */
    struct slb_access_rec *log;   /* the request being logged, when the access log is on */
};

static void run(struct http_conn *c);
static void conn_close(struct http_conn *c);
static void shape_cb(struct slb_loop *loop, struct slb_timer *t);
static void linger_close(struct http_conn *c);
static void conn_free(void *p);
static void rebind(struct http_conn *c);

static struct slb_wcount *lis_counts(struct http_conn *c)
{
    return &c->b.l->stats->w[c->w->id];
}

/* The backend connection of the exchange in progress, if any. */
static struct http_up *conn_up(const struct http_conn *c)
{
    return c->x ? c->x->e.up : NULL;
}

/* Move the wire-byte deltas of the client socket into the listener counters. */
static void account_wire(struct http_conn *c)
{
    uint64_t in, out;
    slb_tconn_wire(&c->t, &in, &out);
    slb_count_add(&lis_counts(c)->v[SLB_LIS_WIRE_IN], in - c->wire_in_seen);
    slb_count_add(&lis_counts(c)->v[SLB_LIS_WIRE_OUT], out - c->wire_out_seen);
    c->wire_in_seen = in;
    c->wire_out_seen = out;
}

static void count_status(struct http_conn *c, int status, bool local)
{
    c->x->e.status = status;
    slb_xchg_count_status(lis_counts(c), status, local, 1);
}

/* One access-log line for the request that just ended. */
static void log_request(struct http_conn *c)
{
    struct slb_xchg_log x = {
        .rec = c->log,
        .proto = c->log->method[0] == '-' ? NULL /* not parsed */
                 : c->x->req_minor        ? "HTTP/1.1"
                                          : "HTTP/1.0",
        .bytes_in = c->x->req_bytes_in,
        .bytes_out = c->x->resp_bytes_out,
        .client_port = c->client_port,
        .e = &c->x->e,
    };
    slb_xchg_log(c->w, c->b.l, &c->t, c->client_ip, &x, &c->log_wire_in, &c->log_wire_out);
}

/* --- timers: one per connection, deadline chosen by state --- */

static void arm_timer(struct http_conn *c)
{
    const struct slb_listener_cfg *cfg = c->b.l->cfg;
    uint64_t ms;
    switch (c->st) {
    case ST_HANDSHAKE:
        ms = (uint64_t)cfg->header_timeout_s * 1000u;
        break;
    case ST_HEAD:
        ms =
            (uint64_t)(slb_buf_empty(&c->in) ? cfg->idle_timeout_s : cfg->header_timeout_s) * 1000u;
        break;
    case ST_CONNECT:
        ms = cfg->connect_timeout_ms;
        break;
    case ST_EXCHANGE: {
        /* The request timeout runs from the moment the request first goes to a backend and
         * is never pushed back (see timer_cb). */
        ms = slb_xchg_deadline_in(cfg, &c->x->e.exchange_deadline_ms, c->w->loop.now_ms);
        break;
    }
    default:
        ms = (uint64_t)cfg->request_timeout_s * 1000u;
        break;
    }
    slb_timer_start(&c->w->loop, &c->timer, ms);
}

/* --- our own responses --- */

/* Our own answer: status with extra header lines, or the answer of decision d when not NULL. */
static void respond_built(struct http_conn *c, int status, const char *extra, bool keep,
                          const struct slb_http_decision *d)
{
    if (c->x->e.up) {
        slb_up_close(c->x->e.up);
        c->x->e.up = NULL;
    }
    /* A request body we did not read cannot be told from a next request: the connection
     * closes after the answer (see linger_close). */
    if (!c->x->e.req_done && c->x->req_body != SLB_BODY_NONE &&
        !(c->x->req_body == SLB_BODY_LENGTH && c->x->req_remaining == 0)) {
        c->x->body_unread = true;
        keep = false;
    }
    if (!keep)
        c->close_after = true;
    if (d)
        slb_http_decision_answer(&c->out, d, !c->close_after, c->x->head_only);
    else
        slb_http_build_simple(&c->out, status, extra, !c->close_after, c->x->head_only);
    count_status(c, status, true);
    c->st = ST_LINGER;
    c->x->e.req_done = c->x->e.resp_done = true;
    c->x->e.resp_ready = 0;
    c->x->e.resp_gzip = false;
    slb_exchange_gzip_drop(&c->x->e);
}

static void respond_simple(struct http_conn *c, int status, const char *extra, bool keep)
{
    respond_built(c, status, extra, keep, NULL);
}

/* --- request start --- */

static void up_event(struct http_up *up, uint32_t events);

static const struct slb_exchange_sink_ops h1_sink;

/* The exchange state for the request about to be parsed (or answered by us); false when
 * memory is short. */
static bool get_exchange(struct http_conn *c)
{
    if (c->x)
        return true;
    if (!slb_xchg_get(c->hw, &c->x, &c->out))
        return false;
    struct slb_exchange *e = &c->x->e;
    e->ops = &h1_sink;
    e->sink = c;
    e->hw = c->hw;
    e->l = c->b.l;
    e->wid = c->w->id;
    e->up_cb = up_event;
    return true;
}

static void sink_choice(struct slb_exchange *e, struct slb_up_choice *ch)
{
    struct http_conn *c = e->sink;
    ch->client_fd = c->t.fd;
    ch->key = &c->sched_key;
    ch->key_of = &c->sched_key_of;
    ch->fresh = slb_xchg_fresh_only(e->l->cfg, c->reuse_ok, (enum slb_http_method)e->method,
                                    e->req_has_body);
}

/* Build the head for the backend from the parsed request. */
static void build_upstream_head(struct http_conn *c, const struct slb_http_msg *m)
{
    struct slb_fwd_certs certs;
    struct slb_fwd_info fwd;
    slb_http_fwd_init(&fwd, &certs, c->b.l, c->t.ssl, c->client_ip, c->local_port);
    /* h2c is cleartext HTTP/2: over TLS no upgrade that offers it, even among others, goes on
     * (the backend could pick it and take the tunnel for HTTP/2 that no rule sees). */
    fwd.upgrade = m->upgrade && !(c->t.ssl && slb_http_upgrade_offers(m, "h2c"));
    fwd.default_host = c->x->e.wg->g->cfg->servers[c->x->e.srv_idx].authority;
    if (c->log && c->log->request_id_ours)
        fwd.request_id = c->log->request_id;
    fwd.rule = c->rule;
    c->x->upgrade_req = fwd.upgrade;
    slb_hbuf_reset(&c->x->e.up->head);
    slb_http_build_request(&c->x->e.up->head, m, &fwd);
}

static void start_request(struct http_conn *c, const struct slb_http_msg *m)
{
    const struct slb_listener_cfg *cfg = c->b.l->cfg;
    /* The state is fresh (zeroed when taken): only what the request sets. */
    c->x->e.l = c->b.l; /* after rebind */
    c->x->e.method = (uint8_t)m->method;
    c->x->e.req_has_body = m->body != SLB_BODY_NONE;
    c->x->head_only = m->method == SLB_HTTP_HEAD;
    c->x->req_keep_alive = m->keep_alive;
    c->x->req_minor = (uint8_t)m->version_minor;
    c->x->req_body = (uint8_t)m->body;
    c->x->req_remaining = m->body == SLB_BODY_LENGTH ? m->content_length : 0;
    slb_rechunk_init(&c->x->req_chunk);
    c->x->req_chunk.ck.refuse_banned_trailers = true;
    if (cfg->gzip)
        slb_gzip_req_facts(&c->x->e.gz_req, m);
    c->x->e.start_us = slb_mono_us();
    if (c->log)
        slb_access_capture(c->log, c->w->loop.now_ms, m);

    struct slb_http_decision d;
    slb_http_decide(&d, c->b.l, slb_http_bind_snap(&c->b), c->b.wg, c->t.ssl, &c->peer, m);
    c->rule = d.rule;
    if (d.rule) {
        slb_count_add(&c->b.l->rule_stats[d.rule->index]->w[c->w->id].v[SLB_RULE_REQS], 1);
        slb_access_rule(c->log, d.rule->cfg->name);
    }
    if (d.status) {
        if (d.limited)
            c->x->e.fail = SLB_ACCESS_RATE_LIMITED;
        else if (d.status == 503) /* no group, or an empty one */
            c->x->e.fail = SLB_ACCESS_NO_SERVER;
        respond_built(c, d.status, d.extra, !d.close && m->keep_alive, &d);
        return;
    }
    c->x->e.wg = d.wg;
    c->x->e.tried = slb_xchg_tried(c->x, c->x->e.wg->g->nservers);
    if (!c->x->e.tried) {
        respond_simple(c, 500, NULL, false);
        return;
    }
    if (!slb_exchange_choose(&c->x->e, d.sticky)) {
        slb_info_limited("listener %s: no healthy backend server for %.*s", cfg->name,
                         (int)(m->target.len > 200 ? 200 : m->target.len), m->target.p);
        if (!c->x->e.fail) /* all connects failed at once: that reason stays */
            c->x->e.fail = SLB_ACCESS_NO_SERVER;
        respond_simple(c, 503, NULL, m->keep_alive);
        return;
    }
    build_upstream_head(c, m);
    if (c->x->e.up->head.oom) {
        respond_simple(c, 500, NULL, false);
        return;
    }
    c->st = c->x->e.up->reused ? ST_EXCHANGE : ST_CONNECT;
    c->x->e.up->connected = c->x->e.up->reused;
    if (!c->x->e.up->reused)
        slb_up_set_interest(c->x->e.up, EPOLLOUT);
}

/* Parse a request head sitting in c->in. */
static bool step_parse_request(struct http_conn *c)
{
    if (!get_exchange(c)) {
        conn_close(c);
        return false;
    }
    struct slb_http_limits lim;
    slb_http_limits_default(&lim);
    struct slb_http_msg *m = &c->hw->msg;
    int rc = slb_http_parse_request(c->in.data + c->in.off, c->in.len, &lim, m);
    if (rc == 0) {
        if (c->client_eof) {
            conn_close(c); /* the rest of this request will never come */
            return false;
        }
        if (slb_buf_space(&c->in) == 0) {
            if (c->in.off > 0) {
                /* A pipelined head cut by the end of the buffer: move it to the front and
                 * read the rest. Only a head larger than the whole buffer is too large. */
                slb_buf_prepare(&c->in);
                return true;
            }
            respond_simple(c, 431, NULL, false);
            return true;
        }
        return false;
    }
    if (rc < 0) {
        c->x->head_only = false;
        slb_debug("listener %s: client %s: bad request (%d)", c->b.l->cfg->name, c->client_ip, -rc);
        if (c->log)
            slb_access_capture(c->log, c->w->loop.now_ms, NULL);
        respond_simple(c, -rc, NULL, false);
        return true;
    }
    rebind(c); /* a new configuration since the last request */
    if (c->w->drain_deadline_ms)
        c->close_after = true; /* stopping: the connection's last request */
    start_request(c, m);
    c->x->req_bytes_in += (uint64_t)rc;
    slb_buf_consume(&c->in, (size_t)rc);
    if (c->x->req_body == SLB_BODY_NONE)
        c->x->e.req_done = true;
    arm_timer(c);
    return true;
}

/* A Content-Length body: how many bytes at the front of c->in belong to it. */
static void request_body_ready(struct http_conn *c)
{
    if (c->x->e.req_done || c->x->req_ready >= c->in.len)
        return;
    uint64_t avail = c->in.len - c->x->req_ready;
    uint64_t n = avail < c->x->req_remaining ? avail : c->x->req_remaining;
    c->x->req_ready += n;
    c->x->req_remaining -= n;
}

static bool request_body_complete(const struct http_conn *c)
{
    const struct slb_rechunk *rc = &c->x->req_chunk;
    if (c->x->req_body == SLB_BODY_LENGTH)
        return c->x->req_remaining == 0 && c->x->req_ready == 0;
    if (c->x->req_body == SLB_BODY_CHUNKED)
        return rc->ck.done && c->x->req_ready == 0 && rc->frame_off == rc->frame_len &&
               rc->skip == 0 && !slb_hbuf_pending(&c->x->e.up->head);
    return true;
}

static void upstream_failed(struct http_conn *c, int status, enum slb_srv_fail f, const char *why)
{
    slb_exchange_fail(&c->x->e, status, f, why);
}

/* In a tunnel, the client's end of its stream becomes the backend's once every byte the client
 * sent before it has gone there (a half-close, as on tcp listeners). */
static void tunnel_shut_backend(struct http_conn *c)
{
    if (c->st == ST_TUNNEL && c->client_eof && c->x->e.up && !c->x->up_shut &&
        slb_buf_empty(&c->in)) {
        shutdown(c->x->e.up->fd, SHUT_WR);
        c->x->up_shut = true;
    }
}

/* The backend's response has reached the client whole. */
static bool response_all_out(const struct http_conn *c)
{
    return c->x->e.resp_done && !slb_hbuf_pending(&c->out) && !c->x->e.resp_ready;
}

/* The client's chunked body turned out invalid: the message cannot be delimited, and nothing
 * more of it goes to the backend. Before the backend's response, the client gets our 400.
 * Once that response has begun (the backend answered early), a 400 would be read as more of
 * its body or as the answer to a next request: the connection ends instead. When the response
 * is all out, the exchange ends as usual and the connection closes after it; otherwise it is
 * cut with a reset, so that what arrived cannot look complete (a close-delimited body would). */
static void request_body_invalid(struct http_conn *c)
{
    slb_debug("listener %s: client %s: invalid chunked request body", c->b.l->cfg->name,
              c->client_ip);
    if (!c->x->e.resp_head_done) {
        respond_simple(c, 400, NULL, false);
        return;
    }
    c->close_after = true;
    c->x->e.up_keep_alive = false;
    c->x->body_unread = true;
    if (response_all_out(c)) {
        c->x->e.req_done = true; /* step_complete ends the exchange */
        return;
    }
    c->abort_reset = true;
    conn_close(c);
}

/* Send the request head, then body bytes, to the backend. */
static bool step_write_upstream(struct http_conn *c)
{
    struct http_up *up = conn_up(c);
    if (!up || !up->connected || !up->wr_ready || c->st == ST_LINGER)
        return false;
    bool progress = false;
    while (slb_hbuf_pending(&up->head)) {
        ssize_t n = slb_up_send(up, up->head.p + up->head.off, slb_hbuf_pending(&up->head));
        if (n < 0)
            return progress; /* would block, or the read side reports the failure */
        up->head.off += (size_t)n;
        up->bytes_to += (uint64_t)n;
        progress = true;
        /* Not for small chunks of a chunked body gathered in the same buffer later. */
        if (!slb_hbuf_pending(&up->head) && c->st != ST_TUNNEL && !c->x->req_chunk.had_data &&
            !c->x->req_chunk.last)
            c->x->e.sent_us = slb_mono_us();
    }
    if (c->st == ST_TUNNEL) {
        c->x->req_ready = c->in.len;
    } else if (c->x->e.req_done) {
        return progress;
    } else if (c->x->req_body == SLB_BODY_CHUNKED) {
        int rc = slb_h1_send_chunked_request(c->x, &c->in);
        if (rc < 0) {
            request_body_invalid(c);
            return true;
        }
        if (request_body_complete(c))
            c->x->e.req_done = true;
        return progress || rc > 0;
    } else {
        request_body_ready(c);
    }
    while (c->x->req_ready > 0) {
        ssize_t n = slb_up_send(up, c->in.data + c->in.off, c->x->req_ready);
        if (n <= 0) {
            if (n < 0 && up->send_err && c->st == ST_TUNNEL) {
                /* The backend reset the tunnel (a send may see it before a recv does): the
                 * bytes in flight are lost both ways, so the client is cut with a reset. */
                upstream_failed(c, 502, SLB_SRV_FAIL_RESET, strerror(errno));
                return true;
            }
            return progress;
        }
        c->x->req_ready -= (uint64_t)n;
        c->x->req_bytes_in += (uint64_t)n;
        up->bytes_to += (uint64_t)n;
        slb_buf_consume(&c->in, (size_t)n);
        progress = true;
    }
    tunnel_shut_backend(c);
    if (c->st != ST_TUNNEL && !c->x->e.req_done && request_body_complete(c))
        c->x->e.req_done = true;
    return progress;
}

static bool step_read_client(struct http_conn *c)
{
    bool want = !c->client_eof && slb_buf_space(&c->in) > 0 &&
                (c->st == ST_HEAD || c->st == ST_TUNNEL ||
                 ((c->st == ST_EXCHANGE || c->st == ST_CONNECT) && !c->x->e.req_done));
    if (!want || !(c->t.rd_ready || c->t.ops->pending(&c->t)))
        return false;
    if (slb_buf_prepare(&c->in) < 0)
        return false;
    ssize_t n = c->t.ops->recv(&c->t, c->in.data + c->in.off + c->in.len, slb_buf_space(&c->in));
    if (n > 0) {
        c->in.len += (size_t)n;
        slb_count_add(&lis_counts(c)->v[SLB_LIS_PAYLOAD_IN], (uint64_t)n);
        if (c->st == ST_HEAD && c->in.len == (size_t)n)
            arm_timer(c); /* first bytes of a request: the header timeout starts */
        return true;
    }
    if (c->in.len == 0)
        slb_buf_release(&c->in);
    if (n == 0)
        return false;
    c->client_eof = true;
    if (n != SLB_EEOF && c->st == ST_TUNNEL && c->x->e.up) {
        /* The client reset the tunnel: bytes may have been lost, so the backend gets a reset
         * too rather than the orderly end a half-close would announce. */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->x->e.up->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        conn_close(c);
        return false;
    }
    if (c->st == ST_HEAD && slb_buf_empty(&c->in)) {
        conn_close(c);
        return false;
    }
    if (c->st == ST_EXCHANGE || c->st == ST_CONNECT) {
        if (!c->x->e.req_done) {
            /* The client gave up in the middle of its request: nothing to answer. A response
             * the backend began early is cut, so what arrived of it cannot look complete. */
            if (c->x->e.resp_head_done && !response_all_out(c))
                c->abort_reset = true;
            conn_close(c);
            return false;
        }
    }
    tunnel_shut_backend(c);
    return true;
}

/* --- response path --- */

/* A chunked response re-framed for an HTTP/1.1 client (not decoded, not a tunnel, not
 * compressed). */
static bool response_rechunked(const struct http_conn *c)
{
    return c->x->e.resp_body == SLB_BODY_CHUNKED && !c->x->resp_unchunk && !c->x->e.resp_gzip &&
           c->st != ST_TUNNEL;
}

/* What the client is receiving ends when the connection closes: a backend body without
 * framing, a chunked one decoded for an HTTP/1.0 client, or a tunnel after 101. */
static bool close_delimited_to_client(const struct http_conn *c)
{
    return c->x->e.resp_head_done &&
           (c->st == ST_TUNNEL || c->x->e.resp_body == SLB_BODY_UNTIL_CLOSE || c->x->resp_unchunk);
}

/* The exchange failed (see slb_exchange_fail): our error when nothing of the response went
 * out yet, else a cut. */
static void sink_error(struct slb_exchange *e, int status)
{
    struct http_conn *c = e->sink;
    if (c->x->e.resp_head_done && (c->out.off > 0 || c->x->resp_bytes_out > 0)) {
        /* Part of the response is out: the only honest signal left is to cut the connection.
         * When the close itself ends the body (or the tunnel), an orderly close would make
         * the cut look like a complete body (or a clean end of the stream): reset instead. */
        if (close_delimited_to_client(c))
            c->abort_reset = true;
        conn_close(c);
        return;
    }
    if (c->x->e.resp_head_done) {
        /* The backend's head was built but not sent: replace it with our error. */
        slb_hbuf_reset(&c->out);
        slb_xchg_count_status(lis_counts(c), c->x->e.status, false, -1);
    }
    respond_simple(c, status, NULL, false);
}

/* Build the response head for the client; false when the response cannot be given to it
 * (then it already has our 502 instead and the backend connection is closed). */
static bool finish_response_head(struct http_conn *c, struct slb_http_msg *m)
{
    struct slb_sticky_out so;
    slb_http_sticky_response(&so, c->b.l->cfg, c->x->e.wg->g, c->x->e.srv_idx, c->t.ssl != NULL);
    const char *set_cookie = so.set_cookie, *prefix_name = so.prefix_name, *prefix = so.prefix;
    /* An HTTP/1.0 client cannot take chunked framing (RFC 9112 6.1): it gets the decoded
     * body, ended by our close. Trailers are dropped with the framing. Any other transfer
     * coding (gzip, ...) is part of the body bytes, and without the Transfer-Encoding field,
     * which it must not be sent, the client could not know to undo it: refused. */
    if (c->x->req_minor == 0 && m->body != SLB_BODY_NONE && slb_http_other_transfer_coding(m)) {
        upstream_failed(c, 502, SLB_SRV_FAIL_INVALID,
                        "transfer coding an HTTP/1.0 client cannot take");
        return false;
    }
    c->x->resp_unchunk = c->x->req_minor == 0 && m->body == SLB_BODY_CHUNKED;
    /* A backend that answers before the request's body is all in and closes after will not
     * take the rest of the body: the client connection closes after the response too. */
    bool keep = c->x->req_keep_alive && !c->close_after && m->body != SLB_BODY_UNTIL_CLOSE &&
                !c->x->resp_unchunk && !c->w->drain_deadline_ms &&
                (c->x->e.req_done || c->x->e.up_keep_alive);
    if (!keep)
        c->close_after = true;
    /* Compression (listener gzip): the head says gzip; the body goes through
     * slb_h1_gzip_chunks, chunked for an HTTP/1.1 client. For an HTTP/1.0 client, which cannot
     * be told a length not known before the end, the close ends it: only when the connection
     * closes after this response anyway (else it gets the bytes as they are, and keeps its
     * connection). The scratch holds the new values until the head is built. */
    struct slb_gzip_scratch gz_sc;
    if ((c->x->req_minor > 0 || !keep) &&
        slb_exchange_gzip_head(&c->x->e, m, &gz_sc, c->x->req_minor > 0) && c->x->req_minor == 0)
        c->x->resp_unchunk = true;
    if (c->x->resp_unchunk)
        slb_http_build_response_unchunked(&c->out, m, set_cookie, prefix_name, prefix);
    else
        slb_http_build_response(&c->out, m, keep, set_cookie, prefix_name, prefix);
    if (keep && c->x->req_minor == 0 && c->out.len >= 2) {
        /* HTTP/1.0 closes by default: announce the keep-alive we grant. */
        c->out.len -= 2;
        slb_hbuf_puts(&c->out, "Connection: keep-alive\r\n\r\n");
    }
    return true;
}

/* Interim responses pass through to an HTTP/1.1 client; the final one follows on the same
 * connection. An HTTP/1.0 client must not get any (RFC 9110 15.2): dropped. A flood of them
 * waits for the client to read. */
static int sink_interim(struct slb_exchange *e, struct slb_http_msg *m)
{
    struct http_conn *c = e->sink;
    if (c->x->req_minor > 0)
        slb_http_build_interim(&c->out, m);
    return slb_hbuf_pending(&c->out) > SLB_BUF_SIZE;
}

static bool sink_head(struct slb_exchange *e, struct slb_http_msg *m)
{
    struct http_conn *c = e->sink;
    if (m->status != 101)
        return finish_response_head(c, m);
    if (!m->upgrade || !c->x->upgrade_req) {
        upstream_failed(c, 502, SLB_SRV_FAIL_INVALID, "101 without an upgrade");
        return false;
    }
    slb_http_build_response(&c->out, m, true, NULL, NULL, NULL);
    c->st = ST_TUNNEL;
    e->tunnel = true;
    e->up_keep_alive = false;
    c->close_after = true;
    return true;
}

static bool step_parse_response(struct http_conn *c)
{
    struct http_up *up = conn_up(c);
    if (!up || c->x->e.resp_head_done || slb_buf_empty(&up->in) || c->st == ST_LINGER ||
        slb_hbuf_pending(&c->out) > SLB_BUF_SIZE)
        return false;
    return slb_exchange_parse_head(&c->x->e);
}

static bool step_read_upstream(struct http_conn *c)
{
    struct http_up *up = conn_up(c);
    if (!up || !up->connected || !up->rd_ready || c->x->e.resp_done || c->st == ST_LINGER ||
        !slb_up_room(up, c->x->e.resp_ready))
        return false;
    ssize_t n = slb_up_read(up);
    if (n >= 0)
        return n > 0;
    /* EOF or error from the backend. */
    if (c->x->e.resp_head_done &&
        (c->x->e.resp_body == SLB_BODY_UNTIL_CLOSE || c->st == ST_TUNNEL) && n == SLB_EEOF) {
        c->x->e.resp_ready = up->in.len;
        c->x->e.up_keep_alive = false;
        c->x->e.resp_done = true;
        c->close_after = true;
        if (c->st == ST_TUNNEL)
            c->x->e.req_done = true;
        return true;
    }
    enum slb_srv_fail f = n == SLB_EEOF ? SLB_SRV_FAIL_CLOSED : SLB_SRV_FAIL_RESET;
    const char *why = n == SLB_EEOF ? "closed the connection early" : strerror((int)-n);
    /* An error (a reset) is never the end of a close-delimited body, nor is any end of a
     * chunked one we decode: the failure cuts the client with a reset then, so the
     * truncation shows. */
    slb_exchange_backend_cut(&c->x->e, f, why);
    return true;
}

/* Body bytes ready for the client: re-framed for an HTTP/1.1 client, else as the exchange
 * frames them (a chunked body for an HTTP/1.0 client decoded, its trailers dropped; for the
 * compressor, its trailers kept). */
static int response_body_ready(struct http_conn *c)
{
    if (!c->x->e.up || !c->x->e.resp_head_done || c->x->e.resp_done)
        return 0;
    if (response_rechunked(c)) /* also when nothing is left to read: the end is known */
        return slb_h1_response_chunk_next(&c->x->e, &c->out);
    return slb_exchange_body_ready(&c->x->e, c->x->e.resp_gzip ? &c->x->resp_trailers : NULL);
}

/* Write our head/own response, then response body bytes, to the client. */
static bool step_write_client(struct http_conn *c)
{
    if (!c->t.wr_ready || !c->x)
        return false; /* no exchange: nothing to send (our own answers have one too) */
    bool progress = false;
    if (slb_hbuf_pending(&c->out) && c->x->e.up && c->x->e.resp_head_done && c->st != ST_LINGER) {
        /* A small body that is already here goes out with the head: one send (one TLS
         * record) instead of two. */
        if (response_body_ready(c) < 0) {
            upstream_failed(c, 502, SLB_SRV_FAIL_INVALID, "malformed chunked response");
            return true;
        }
        if (c->x->e.resp_gzip && slb_h1_gzip_chunks(c->x, &c->out) < 0) {
            upstream_failed(c, 502, SLB_SRV_FAIL_INVALID, "malformed chunked response");
            return true;
        }
        if (c->x->e.resp_ready > 0 && c->x->e.resp_ready <= SLB_BUF_SIZE && !c->x->e.resp_gzip) {
            slb_hbuf_put(&c->out, c->x->e.up->in.data + c->x->e.up->in.off, c->x->e.resp_ready);
            slb_buf_consume(&c->x->e.up->in, c->x->e.resp_ready);
            c->x->e.resp_ready = 0;
        }
    }
    if (c->out.oom) {
        conn_close(c);
        return false;
    }
    /* The end of a response after which the connection closes: its last bytes, close_notify
     * and FIN leave in one packet instead of three. */
    size_t left = slb_hbuf_pending(&c->out) + (size_t)c->x->e.resp_ready;
    if (c->close_after && c->x->e.resp_done && left > 0 && left <= SLB_BUF_SIZE)
        slb_tconn_cork(&c->t);
    struct http_up *up = c->x->e.up;
    for (;;) {
        while (slb_hbuf_pending(&c->out)) {
            ssize_t n = c->t.ops->send(&c->t, c->out.p + c->out.off, slb_hbuf_pending(&c->out));
            if (n <= 0) {
                if (n < 0) {
                    conn_close(c);
                    return false;
                }
                return progress;
            }
            c->out.off += (size_t)n;
            c->x->resp_bytes_out += (uint64_t)n;
            slb_count_add(&lis_counts(c)->v[SLB_LIS_PAYLOAD_OUT], (uint64_t)n);
            progress = true;
        }
        if (c->out.len)
            slb_hbuf_reset(&c->out);
        if (c->st == ST_LINGER || !up)
            return progress;
        if (c->x->e.resp_gzip) {
            if (!c->x->e.gz)
                return progress; /* all out */
            size_t before = c->out.len;
            int rc = slb_h1_gzip_chunks(c->x, &c->out);
            if (rc < 0) {
                upstream_failed(c, 502, SLB_SRV_FAIL_INVALID,
                                rc == -502 ? "malformed chunked response" : "compression failed");
                return true;
            }
            if (c->out.oom) {
                conn_close(c);
                return false;
            }
            progress |= c->out.len != before || !c->x->e.gz;
            if (slb_hbuf_pending(&c->out))
                continue;
            return progress;
        }
        bool was_done = c->x->e.resp_done;
        if (response_body_ready(c) < 0) {
            upstream_failed(c, 502, SLB_SRV_FAIL_INVALID, "malformed chunked response");
            return true;
        }
        if (c->out.oom) {
            conn_close(c);
            return false;
        }
        progress |= c->x->e.resp_done != was_done;
        if (slb_hbuf_pending(&c->out))
            continue; /* a chunk's size line goes before its data */
        if (!c->x->e.resp_ready)
            return progress;
        while (c->x->e.resp_ready > 0) {
            ssize_t n = c->t.ops->send(&c->t, up->in.data + up->in.off, c->x->e.resp_ready);
            if (n <= 0) {
                if (n < 0) {
                    conn_close(c);
                    return false;
                }
                return progress;
            }
            c->x->e.resp_ready -= (uint64_t)n;
            c->x->resp_bytes_out += (uint64_t)n;
            slb_count_add(&lis_counts(c)->v[SLB_LIS_PAYLOAD_OUT], (uint64_t)n);
            slb_buf_consume(&up->in, (size_t)n);
            progress = true;
        }
        if (!response_rechunked(c))
            return progress;
    }
}

/* The exchange is over, its backend connection given back: log it, then close, or wait for
 * the next request. false when the connection closed. */
static bool exchange_end(struct http_conn *c)
{
    /* The backend connection was pooled or closed, and its server's active count with it. */
    assert(!c->x->e.up);
    account_wire(c);
    slb_xchg_count_duration(lis_counts(c), c->x->e.start_us, slb_mono_us());
    if (c->log)
        log_request(c);
    c->x->e.srv = NULL;
    c->reuse_ok = true;
    /* A client that half-closed after pipelining still gets every complete request answered
     * (RFC 9112 9.6); it is closed once nothing is left in the buffer. */
    if (c->close_after || (c->client_eof && slb_buf_empty(&c->in))) {
        if (!c->client_eof && (c->x->body_unread || !slb_buf_empty(&c->in)))
            linger_close(c); /* the client may still be sending */
        else
            conn_close(c);
        return false;
    }
    c->st = ST_HEAD;
    /* An idle keep-alive connection keeps no buffer: the head buffer goes back with the
     * exchange state (the input buffer went back to the pool when it emptied). */
    slb_xchg_put(c->hw, &c->x, &c->out);
    arm_timer(c);
    return true;
}

/* The response is out but the client may still be sending (a body we did not read, requests
 * after one we answered with a close): see slb_tconn_linger. A client that is still uploading
 * then reads the answer instead of failing on a reset. At most a second. */
static void linger_close(struct http_conn *c)
{
    struct slb_loop *loop = &c->w->loop;
    c->lingering = true;
    slb_tconn_linger(&c->t);
    slb_io_set(loop, &c->io, EPOLLIN);
    slb_timer_start(loop, &c->timer, 1000);
}

static void linger_read(struct http_conn *c)
{
    uint64_t dropped = 0;
    bool more = slb_tconn_drain(&c->t, &dropped);
    slb_count_add(&lis_counts(c)->v[SLB_LIS_WIRE_IN], dropped);
    if (!more)
        conn_close(c);
}

/* The backend's response is all out: give the backend connection back, end the exchange. */
static bool step_complete(struct http_conn *c)
{
    if (c->st == ST_HEAD || c->st == ST_HANDSHAKE || c->st == ST_TUNNEL)
        return false;
    if (!c->x->e.resp_done || slb_hbuf_pending(&c->out) || c->x->e.resp_ready || c->x->e.gz)
        return false;
    if (!c->x->e.req_done) {
        /* The backend answered before the request's body was all in (an early 413, say).
         * While it still takes the body, the body goes on to it. Once it is gone, the rest
         * has nowhere to go and cannot be told from a next request: the exchange ends, and
         * the client connection closes. */
        if (c->st != ST_EXCHANGE || !c->x->e.up || !slb_up_gone(c->x->e.up))
            return false;
        c->close_after = true;
        c->x->e.up_keep_alive = false;
        c->x->body_unread = true;
    }
    if (c->x->e.up) {
        slb_exchange_up_done(&c->x->e, c->x->e.up_keep_alive && c->st == ST_EXCHANGE);
    }
    return exchange_end(c);
}

/* Bind the connection to the worker's newest configuration of its listening socket: when a
 * TLS connection's first bytes arrive, so a certificate replaced (or a CRL added) after the
 * accept but before the ClientHello is already in force for it; and at each request of a
 * keep-alive connection, so a changed group (a server removed, a weight set to 0) or listener
 * setting applies to the next request, not only to new connections. */
static void rebind(struct http_conn *c)
{
    struct slb_listener_rt *cur = slb_http_bind_newer(&c->b, c->w);
    if (cur)
        slb_http_bind_move(&c->b, c->w, cur, c->t.ssl && c->t.handshake_done);
}

static bool start_tls(struct http_conn *c)
{
    rebind(c);
    SSL *ssl = c->b.l->tls ? slb_tls_ssl_new(c->b.l) : NULL;
    if (!ssl || slb_tconn_init_tls(&c->t, c->t.fd, ssl) < 0) {
        SSL_free(ssl);
        c->t.ssl = NULL;
        return false;
    }
    return true;
}

/* The handshake selected h2: the connection becomes an HTTP/2 one (h2.c), which takes the
 * socket, the TLS state, the snapshot hold and the active count; this one just goes. */
static void hand_off_h2(struct http_conn *c)
{
    struct slb_h2_handoff h = {.w = c->w,
                               .hw = c->hw,
                               .b = c->b,
                               .t = c->t,
                               .client_ip = c->client_ip,
                               .client_port = c->client_port,
                               .peer = &c->peer,
                               .local_port = c->local_port,
                               .wire_in_seen = c->wire_in_seen,
                               .wire_out_seen = c->wire_out_seen};
    struct slb_loop *loop = &c->w->loop;
    slb_timer_stop(loop, &c->timer);
    slb_timer_stop(loop, &c->shape_timer);
    slb_io_set(loop, &c->io, 0);
    if (slb_h2_start(&h) < 0) {
        c->tls_failed = true;
        conn_close(c);
        return;
    }
    c->closed = true;
    slb_worker_unlink(&c->link);
    slb_tconn_init_raw(&c->t, -1); /* the TLS state is not ours to free any more */
    slb_loop_defer_free(loop, conn_free, c);
}

/* A plain HTTP request on an https port (OpenSSL saw a method where a TLS record belongs and
 * sent no alert): tell the person at the browser in plain text, as nginx does, then close
 * without reading the rest of the request. */
static void answer_plain_http(struct http_conn *c)
{
    static const char resp[] = "HTTP/1.1 400 Bad Request\r\n"
                               "Content-Type: text/plain\r\n"
                               "Content-Length: 50\r\n"
                               "Connection: close\r\n"
                               "\r\n"
                               "400 The plain HTTP request was sent to HTTPS port\n";
    _Static_assert(sizeof("400 The plain HTTP request was sent to HTTPS port\n") - 1 == 50,
                   "Content-Length");
    ssize_t n = send(c->t.fd, resp, sizeof(resp) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0)
        slb_count_add(&lis_counts(c)->v[SLB_LIS_WIRE_OUT], (uint64_t)n);
    /* The request's bytes are still arriving: linger (as linger_close, without TLS). */
    c->lingering = true;
    shutdown(c->t.fd, SHUT_WR);
    slb_io_set(&c->w->loop, &c->io, EPOLLIN);
    slb_timer_start(&c->w->loop, &c->timer, 1000);
}

static bool step_handshake(struct http_conn *c)
{
    if (c->st != ST_HANDSHAKE)
        return false;
    if (!c->t.ssl) {
        if (!c->t.rd_ready)
            return false;
        if (!start_tls(c)) {
            c->tls_failed = true;
            conn_close(c);
            return false;
        }
    }
    /* Once our flight is out, the next step may end the handshake and write the session
     * ticket: held back until we know whether a response follows at once. */
    uint64_t in0, out0;
    slb_tconn_wire(&c->t, &in0, &out0);
    if (out0 > 0)
        slb_tconn_cork(&c->t);
    int r = c->t.ops->handshake(&c->t);
    if (r == 0) {
        slb_tconn_uncork(&c->t); /* a flight (HelloRetryRequest's answer) must leave now */
        return false;
    }
    if (r < 0) {
        uint64_t in, out;
        slb_tconn_wire(&c->t, &in, &out);
        if (in == 0) {
            /* A TCP connect and close with no ClientHello (port probes, TCP health checks)
             * is not a failed handshake. */
            ERR_clear_error();
            c->tls_failed = true;
            conn_close(c);
            return false;
        }
        enum slb_tls_fail why = slb_tls_classify_failure(c->t.ssl);
        slb_count_add(&lis_counts(c)->v[SLB_LIS_HS_FAIL + why], 1);
        slb_debug("listener %s: client %s: TLS handshake failed: %s", c->b.l->cfg->name,
                  c->client_ip, slb_tls_fail_name(why));
        c->tls_failed = true;
        if (why == SLB_TLS_FAIL_HTTP_ON_HTTPS)
            answer_plain_http(c);
        else
            conn_close(c);
        return false;
    }
    slb_count_add(
        &lis_counts(c)->v[SSL_session_reused(c->t.ssl) ? SLB_LIS_HS_RESUMED : SLB_LIS_HS_FULL], 1);
    slb_count_add(&slb_lis_tls_counts(c->b.l->stats, c->w->id)->v[slb_tls_suite_slot(c->t.ssl)], 1);
    /* A request already here (it came with the client's Finished) is read in this run: an
     * answer of our own would leave in the ticket's segment. The cork never outlives the run
     * (run() lifts it): a ticket must not wait for a backend's response or for the rest of the
     * request, since TCP_CORK would hold it for up to 200 ms and the client may be waiting for
     * it (a session saved after the handshake) or, in TLS 1.2, for our Finished. */
    if (!c->t.corked || slb_h2_selected(c->t.ssl) || !SSL_has_pending(c->t.ssl))
        slb_tconn_uncork(&c->t);
    if (slb_h2_selected(c->t.ssl)) {
        hand_off_h2(c);
        return false;
    }
    c->st = ST_HEAD;
    arm_timer(c);
    return true;
}

static void set_interest(struct http_conn *c)
{
    if (c->closed)
        return;
    uint32_t ev = 0;
    bool want_read = false;
    switch (c->st) {
    case ST_HANDSHAKE:
        ev = c->t.rd_wants;
        break;
    case ST_HEAD:
        want_read = slb_buf_space(&c->in) > 0;
        c->rd_muted = false;
        break;
    case ST_CONNECT:
    case ST_EXCHANGE:
        want_read = !c->x->e.req_done && slb_buf_space(&c->in) > 0;
        /* Waiting for the response: a read interest already there stays, rather than go now
         * and come back with the response (two epoll_ctl per request). A client that sends
         * meanwhile (pipelining, EOF) mutes it (client_cb) until the response is done. */
        if (!want_read && c->x->e.req_done && !c->rd_muted && (c->io.events & EPOLLIN) &&
            c->t.rd_wants == EPOLLIN && slb_buf_space(&c->in) > 0)
            want_read = true;
        break;
    case ST_TUNNEL:
        want_read = !c->client_eof && slb_buf_space(&c->in) > 0;
        break;
    case ST_LINGER:
        break;
    }
    if (want_read && !c->client_eof)
        ev |= c->t.rd_wants;
    if (c->t.owed) {
        /* Over the bandwidth limit: the socket is writable, so wait for the budget instead. */
        if (!slb_timer_active(&c->shape_timer))
            slb_timer_start(&c->w->loop, &c->shape_timer, slb_tconn_repay(&c->t));
    } else if (slb_hbuf_pending(&c->out) ||
               (c->x && (c->x->e.resp_ready || (c->x->e.gz && c->x->e.resp_done)))) {
        ev |= c->t.wr_wants;
    }
    slb_io_set(&c->w->loop, &c->io, ev);

    struct http_up *up = conn_up(c);
    if (!up)
        return;
    uint32_t uev = 0;
    if (!up->connected) {
        uev = EPOLLOUT;
    } else {
        if (!c->x->e.resp_done && slb_up_room(up, c->x->e.resp_ready) && c->st != ST_LINGER)
            uev |= EPOLLIN;
        if (c->x->e.resp_done && !c->x->e.req_done && c->st == ST_EXCHANGE)
            uev |= EPOLLIN; /* to see the backend go (see step_complete) */
        if (slb_hbuf_pending(&up->head) || c->x->req_ready ||
            c->x->req_chunk.frame_off < c->x->req_chunk.frame_len ||
            (c->st == ST_TUNNEL && !slb_buf_empty(&c->in)))
            uev |= EPOLLOUT;
    }
    slb_up_set_interest(up, uev);
}

static void run(struct http_conn *c)
{
    int i;
    bool more = false;
    for (i = 0; !c->closed; i++) {
        if (i == 64) {
            /* Fairness: let other connections run; come back at once (below). */
            more = true;
            break;
        }
        bool p = step_handshake(c);
        if (c->closed || c->st == ST_HANDSHAKE)
            break;
        p |= step_read_client(c);
        if (c->closed)
            return;
        if (c->st == ST_HEAD && !slb_buf_empty(&c->in))
            p |= step_parse_request(c);
        p |= step_write_upstream(c);
        p |= step_read_upstream(c);
        if (c->closed)
            return;
        p |= step_parse_response(c);
        if (c->closed)
            return;
        p |= step_write_client(c);
        if (c->closed)
            return;
        if (c->st == ST_LINGER && !slb_hbuf_pending(&c->out)) {
            if (!exchange_end(c))
                return;
            p = true;
        }
        p |= step_complete(c);
        if (!p)
            break;
        if (c->x)
            c->x->e.last_io_ms = c->w->loop.now_ms;
    }
    if (!c->closed && c->st == ST_TUNNEL && c->x->e.resp_done && !slb_hbuf_pending(&c->out) &&
        !c->x->e.resp_ready) {
        /* The backend ended its side cleanly and all it sent is out: half-close the client's
         * side (close_notify over TLS); the tunnel ends when the client's side has too. */
        if (c->client_eof && c->x->up_shut) {
            conn_close(c);
            return;
        }
        if (!c->x->client_shut) {
            c->t.ops->shutdown(&c->t);
            shutdown(c->t.fd, SHUT_WR);
            c->x->client_shut = true;
        }
    }
    if (c->t.corked && !c->closed)
        slb_tconn_uncork(&c->t);
    set_interest(c);
    if (more && !c->closed) {
        /* Work is left that no socket event would announce (pipelined requests already in
         * the buffer): ask for writability, which a connected socket reports at once. */
        slb_io_set(&c->w->loop, &c->io, c->io.events | EPOLLOUT);
    }
}

/* --- events --- */

static void client_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    struct http_conn *c = io->data;
    if (c->closed)
        return;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        c->t.rd_ready = true;
    if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
        c->t.wr_ready = true;
    if (c->lingering) {
        linger_read(c);
        return;
    }
    if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) &&
        (c->st == ST_CONNECT || c->st == ST_EXCHANGE) && c->x->e.req_done)
        c->rd_muted = true; /* kept interest (set_interest) fired: no busy loop */
    run(c);
}

/* The bandwidth budget may cover what the connection owes now. */
static void shape_cb(struct slb_loop *loop, struct slb_timer *t)
{
    struct http_conn *c = t->data;
    if (c->closed || c->lingering)
        return;
    uint64_t ms = slb_tconn_repay(&c->t);
    if (ms) {
        slb_timer_start(loop, &c->shape_timer, ms);
        return;
    }
    run(c);
}

/* A backend connection was chosen again after a failure, the request head moved to it. */
static void sink_connecting(struct slb_exchange *e)
{
    struct http_conn *c = e->sink;
    c->st = e->up->reused ? ST_EXCHANGE : ST_CONNECT;
    e->up->connected = e->up->reused;
    if (!e->up->reused)
        slb_up_set_interest(e->up, EPOLLOUT);
    arm_timer(c);
}

static const struct slb_exchange_sink_ops h1_sink = {
    .choice = sink_choice,
    .connecting = sink_connecting,
    .interim = sink_interim,
    .head = sink_head,
    .error = sink_error,
};

static void up_event(struct http_up *up, uint32_t events)
{
    struct http_conn *c = up->owner;
    if (c->closed)
        return;
    int rc = slb_up_on_event(up, events);
    if (rc < 0) {
        slb_exchange_connect_failed(&c->x->e, slb_srv_fail_connect(rc), strerror(-rc));
    } else if (rc == 1) {
        c->st = ST_EXCHANGE;
        arm_timer(c);
    }
    run(c);
}

static void timer_cb(struct slb_loop *loop, struct slb_timer *t)
{
    struct http_conn *c = t->data;
    if (c->lingering) {
        conn_close(c);
        return;
    }
    switch (c->st) {
    case ST_HANDSHAKE:
        slb_count_add(&lis_counts(c)->v[SLB_LIS_HS_FAIL + SLB_TLS_FAIL_TIMEOUT], 1);
        conn_close(c);
        return;
    case ST_HEAD:
        if (slb_buf_empty(&c->in)) {
            conn_close(c); /* idle keep-alive connection */
            return;
        }
        if (!get_exchange(c)) {
            conn_close(c);
            return;
        }
        if (c->log)
            slb_access_capture(c->log, c->w->loop.now_ms, NULL);
        respond_simple(c, 408, NULL, false);
        break;
    case ST_CONNECT:
        slb_exchange_connect_failed(&c->x->e, SLB_SRV_FAIL_CONNECT_TIMEOUT, "timeout");
        break;
    case ST_EXCHANGE:
    case ST_TUNNEL: {
        /* Activity stamps a time: the timer is re-armed for the remainder (see
         * slb_exchange_timer_left). */
        uint64_t left = slb_exchange_timer_left(&c->x->e, loop->now_ms);
        if (left) {
            slb_timer_start(loop, t, left);
            return;
        }
        if (c->st == ST_TUNNEL) {
            conn_close(c);
            return;
        }
        slb_exchange_timed_out(&c->x->e);
        break;
    }
    case ST_LINGER:
        conn_close(c);
        return;
    }
    if (!c->closed) {
        arm_timer(c);
        run(c);
    }
}

/* --- lifecycle --- */

static void conn_free(void *p)
{
    struct http_conn *c = p;
    c->t.ops->free(&c->t);
    slb_access_free(c->log);
    slb_xchg_free(c->x); /* not to the worker's list: this runs after the loop iteration */
    free(c);
}

static void conn_close(struct http_conn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    struct slb_loop *loop = &c->w->loop;
    if (conn_up(c)) {
        slb_up_close(c->x->e.up);
        c->x->e.up = NULL;
    }
    slb_timer_stop(loop, &c->timer);
    slb_timer_stop(loop, &c->shape_timer);
    slb_io_forget(&c->io);
    if (c->abort_reset) {
        /* No close_notify either: TLS clients must see the cut as well. */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->t.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    } else if (!c->lingering) { /* lingering: its close_notify and FIN are out */
        if (!c->tls_failed)
            c->t.ops->shutdown(&c->t);
        /* What the cork holds leaves now, with the FIN in the same packet: were the socket
         * closed with a request's bytes still unread, the kernel would drop it for a reset. */
        if (c->t.corked)
            shutdown(c->t.fd, SHUT_WR);
    }
    account_wire(c);
    close(c->t.fd);
    slb_buf_release(&c->in);
    slb_xchg_head_put(c->hw, &c->out);
    slb_count_add(&lis_counts(c)->v[SLB_LIS_ACTIVE], (uint64_t)-1);
    slb_worker_unlink(&c->link);
    slb_http_bind_release(&c->b);
    slb_loop_defer_free(loop, conn_free, c);
}

static void conn_abort(struct slb_conn_link *link)
{
    conn_close((struct http_conn *)link);
}

/* Stopping: an idle keep-alive connection closes now; one with a request in progress gets
 * its response (marked Connection: close) and closes after it. After a hand-over to a new
 * process every connection gets one more response (its timeouts and the drain bound it): a
 * client that connected a moment ago, or is about to reuse its connection, sent a request
 * that closing now would fail. */
static void conn_drain(struct slb_conn_link *link)
{
    struct http_conn *c = (struct http_conn *)link;
    if (c->w->gentle_drain) {
        /* A response head that left (or is leaving) without Connection: close promised the
         * client it may send another request at once: that one is answered, and closes the
         * connection (step_head). */
        if (!c->x || !(c->x->e.resp_head_done || c->st == ST_LINGER))
            c->close_after = true;
        return;
    }
    if ((c->st == ST_HEAD && slb_buf_empty(&c->in)) || c->st == ST_HANDSHAKE) {
        conn_close(c);
        return;
    }
    c->close_after = true;
}

/* A new configuration without this connection's listener: as when stopping. */
static void conn_reconfigured(struct slb_conn_link *link)
{
    struct http_conn *c = (struct http_conn *)link;
    if (slb_http_bind_gone(&c->b, c->w))
        conn_drain(link);
}

void slb_http_accept(struct slb_worker *w, struct slb_listener_rt *l, int fd,
                     const struct sockaddr_storage *peer, socklen_t peerlen)
{
    if (!slb_http_acl_allows(l->cfg, peer)) {
        slb_count_add(&l->stats->w[w->id].v[SLB_LIS_DENIED], 1);
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd);
        return;
    }
    struct slb_http_worker *hw = slb_http_worker_get(w);
    struct http_conn *c = calloc(1, sizeof(*c));
    if (!hw || !c) {
        free(c);
        close(fd);
        return;
    }
    c->w = w;
    c->hw = hw;
    slb_http_bind_init(&c->b, w, l);
    c->link.abort = conn_abort;
    c->link.drain = conn_drain;
    c->link.reconfigured = conn_reconfigured;
    slb_worker_link(w, &c->link);
    slb_count_add(&lis_counts(c)->v[SLB_LIS_ACTIVE], 1);
    slb_http_format_ip(peer, c->client_ip, sizeof(c->client_ip));
    c->client_port =
        ntohs(peer->ss_family == AF_INET ? ((const struct sockaddr_in *)peer)->sin_port
                                         : ((const struct sockaddr_in6 *)peer)->sin6_port);
    c->peer = *peer;
    /* The local port is the one the listener binds (a bind always names it); TCP_NODELAY came from
     * the listening socket. */
    const struct sockaddr_storage *local = &l->cfg->addr;
    c->local_port =
        ntohs(local->ss_family == AF_INET ? ((const struct sockaddr_in *)local)->sin_port
                                          : ((const struct sockaddr_in6 *)local)->sin6_port);
    (void)peerlen;
    slb_io_init(&c->io, fd, client_cb, c);
    slb_timer_init(&c->timer, timer_cb, c);
    slb_timer_init(&c->shape_timer, shape_cb, c);
    c->log = slb_access_new(w, l);
    slb_tconn_init_raw(&c->t, fd);
    if (l->cfg->bandwidth_mbps)
        slb_tconn_shape(&c->t, l->stats->bw_rate, (uint64_t)l->cfg->bandwidth_mbps * 125000u,
                        w->id);
    if (l->cfg->protocol == SLB_PROTO_HTTPS) {
        /* The TLS state is made when the ClientHello arrives (see rebind): nothing to do
         * until the socket is readable. */
        c->st = ST_HANDSHAKE;
        c->t.rd_ready = false;
        c->t.rd_wants = EPOLLIN;
        arm_timer(c);
        set_interest(c);
        return;
    }
    c->st = ST_HEAD;
    arm_timer(c);
    run(c);
}

size_t slb_http_conn_size(void)
{
    return sizeof(struct http_conn);
}

void slb_http_worker_free(struct slb_worker *w)
{
    struct slb_http_worker *hw = w->http;
    if (!hw)
        return;
    slb_up_pool_drain(hw);
    slb_xchg_lists_free(hw);
    slb_loop_defer_free(&w->loop, free, hw);
    w->http = NULL;
}
