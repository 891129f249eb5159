/* SPDX-License-Identifier: Apache-2.0 */
/* The exchange of one request with a backend, for both client protocols (see exchange.h). */
#include "http/exchange.h"

#include "core/time.h"
#include "http/xchg.h"

bool slb_exchange_choose(struct slb_exchange *e, struct slb_slice sticky)
{
    struct slb_up_choice ch = {.wg = e->wg,
                               .tried = e->tried,
                               .attempts = e->attempts,
                               .listener = e->l->cfg->name,
                               .owner = e->sink,
                               .cb = e->up_cb};
    e->ops->choice(e, &ch);
    e->up = slb_up_choose(e->hw, &ch, sticky);
    e->attempts = ch.attempts;
    e->srv_idx = ch.srv_idx;
    e->srv = ch.srv;
    return e->up != NULL;
}

void slb_exchange_connect_failed(struct slb_exchange *e, enum slb_srv_fail f, const char *why)
{
    slb_xchg_connect_failed(e->wid, e->l, e->srv, f, why);
    e->fail = slb_xchg_fail_code(f);
    e->fail_srv = e->srv->key;
    struct slb_hbuf head = e->up->head;
    e->up->head = (struct slb_hbuf){0};
    slb_up_close(e->up);
    e->up = NULL;
    e->srv = NULL;
    if (!slb_exchange_choose(e, (struct slb_slice){0})) {
        slb_hbuf_free(&head);
        e->ops->error(e, 502);
        return;
    }
    slb_count_add(&slb_exchange_lis(e)->v[SLB_LIS_RETRIES], 1);
    slb_hbuf_free(&e->up->head);
    head.off = 0;
    e->up->head = head;
    e->ops->connecting(e);
}

/* Send the request again: a reused connection that failed is replaced by a fresh one to the
 * same server; a fresh one that failed moves the request to the next server, as a connect
 * failure does (each server is tried once). */
static bool retry(struct slb_exchange *e, enum slb_srv_fail f, const char *why)
{
    if (!e->up->reused) {
        slb_exchange_connect_failed(e, f, why);
        return true;
    }
    struct slb_hbuf head = e->up->head;
    e->up->head = (struct slb_hbuf){0};
    if (!slb_xchg_reconnect(e->hw, slb_exchange_lis(e), &e->up, &e->wg->g->cfg->servers[e->srv_idx],
                            e->srv, e->sink, e->up_cb)) {
        slb_hbuf_free(&head);
        e->srv = NULL;
        return false;
    }
    slb_hbuf_free(&e->up->head);
    head.off = 0;
    e->up->head = head;
    e->ops->connecting(e);
    return true;
}

void slb_exchange_backend_cut(struct slb_exchange *e, enum slb_srv_fail f, const char *why)
{
    /* A kept-alive connection the backend closed just as we reused it: the request may go
     * again on a fresh one only when that cannot make the backend act on it twice. */
    if (!e->resp_head_done &&
        slb_up_retryable(e->up, (enum slb_http_method)e->method, e->req_has_body) &&
        retry(e, f, why))
        return;
    slb_exchange_fail(e, 502, f, why);
}

void slb_exchange_fail(struct slb_exchange *e, int status, enum slb_srv_fail f, const char *why)
{
    slb_xchg_failed(e->wid, e->l, e->srv, status, e->req_done, e->resp_head_done, f, why);
    e->fail = slb_xchg_fail_code(f);
    e->ops->error(e, status);
}

bool slb_exchange_parse_head(struct slb_exchange *e)
{
    struct http_up *up = e->up;
    struct slb_http_msg *m = &e->hw->msg;
    bool progress = false;
    const char *why = NULL;
    int rc;
    /* Interim responses, then the final head, all those already here in one go: a backend
     * that closes right after its final response must not have that close read (and taken
     * for a cut) while the final head still waits behind an interim one. */
    for (;;) {
        rc = slb_up_parse_head(up, (enum slb_http_method)e->method, m, &why);
        if (rc == 0)
            return progress;
        if (rc < 0) {
            slb_exchange_fail(e, 502, SLB_SRV_FAIL_INVALID, why);
            return true;
        }
        if (m->status < 100 || m->status >= 200 || m->status == 101)
            break;
        int r = e->ops->interim(e, m);
        if (r < 0)
            return true;
        slb_buf_consume(&up->in, (size_t)rc);
        progress = true;
        if (r > 0 || slb_buf_empty(&up->in))
            return true;
    }
    if (m->status == 101 && e->no_upgrade) {
        slb_exchange_fail(e, 502, SLB_SRV_FAIL_INVALID, "101 to an HTTP/2 request");
        return true;
    }
    e->status = m->status;
    e->resp_us = slb_mono_us();
    e->fail = 0; /* a server answered: earlier failed connects are not this answer's cause */
    slb_xchg_count_head(slb_exchange_lis(e), &e->srv->w[e->wid], m->status, &e->sent_us,
                        e->resp_us);
    e->up_keep_alive = m->keep_alive;
    e->resp_body = (uint8_t)m->body;
    e->resp_remaining = m->body == SLB_BODY_LENGTH ? m->content_length : 0;
    slb_rechunk_init(&e->resp_chunk);
    e->resp_chunk.drop_banned_trailers = true; /* re-framed for an HTTP/1.1 client */
    e->resp_head_done = true;
    if (!e->ops->head(e, m))
        return true;
    if (e->up)
        slb_buf_consume(&e->up->in, (size_t)rc); /* counted in bytes_from when it was read */
    /* Content-Length: 0 is complete now too: a backend closing right after it has not cut
     * anything. */
    if ((e->resp_body == SLB_BODY_NONE ||
         (e->resp_body == SLB_BODY_LENGTH && e->resp_remaining == 0)) &&
        !e->tunnel)
        e->resp_done = true;
    return true;
}

int slb_exchange_body_ready(struct slb_exchange *e, struct slb_hbuf *trailers)
{
    struct http_up *up = e->up;
    if (!up || !e->resp_head_done || up->in.len <= e->resp_ready)
        return 0;
    if (e->tunnel || e->resp_body == SLB_BODY_UNTIL_CLOSE) {
        e->resp_ready = up->in.len;
        return 0;
    }
    if (e->resp_body == SLB_BODY_CHUNKED) {
        if (slb_up_unchunk(up, &e->resp_chunk.ck, &e->resp_ready, trailers) < 0)
            return -1;
        if (e->resp_chunk.ck.done)
            e->resp_done = true;
        return 0;
    }
    if (e->resp_body != SLB_BODY_LENGTH)
        return 0;
    uint64_t avail = up->in.len - e->resp_ready;
    uint64_t n = avail < e->resp_remaining ? avail : e->resp_remaining;
    e->resp_ready += n;
    e->resp_remaining -= n;
    if (e->resp_remaining == 0)
        e->resp_done = true;
    return 0;
}

uint64_t slb_exchange_timer_left(const struct slb_exchange *e, uint64_t now_ms)
{
    /* Until the request body is sent and the response head has arrived, request_timeout_s
     * is a fixed deadline that moving bytes do not push back: a trickled upload or a trickled
     * response head cannot hold the connection and the backend longer. After that, the
     * response body and a tunnel only need to keep moving. */
    bool fixed = !e->tunnel && (!e->req_done || !e->resp_head_done);
    uint64_t due = slb_xchg_due(e->l->cfg, fixed, e->exchange_deadline_ms, e->last_io_ms);
    return now_ms < due ? due - now_ms : 0;
}

void slb_exchange_timed_out(struct slb_exchange *e)
{
    slb_exchange_fail(e, 504, SLB_SRV_FAIL_TIMEOUT,
                      slb_xchg_timeout_why(e->req_done, e->resp_head_done));
}

void slb_exchange_up_done(struct slb_exchange *e, bool keep)
{
    slb_xchg_up_done(&e->up, e->srv, e->wid, e->status, keep);
}

bool slb_exchange_gzip_head(struct slb_exchange *e, struct slb_http_msg *m,
                            struct slb_gzip_scratch *sc, bool chunked_field)
{
    e->resp_gzip = false;
    if (slb_gzip_wanted(&e->gz_req, m, e->l->cfg) && (e->gz = slb_gzip_take(&e->hw->gz_pool)) &&
        slb_gzip_rewrite_head(m, sc, chunked_field) == 0) {
        e->resp_gzip = true;
        slb_count_add(&slb_exchange_lis(e)->v[SLB_LIS_GZIP], 1);
        return true;
    }
    slb_exchange_gzip_drop(e);
    return false;
}

int slb_exchange_gzip_run(struct slb_exchange *e, void *out, size_t cap, size_t *made)
{
    struct http_up *up = e->up;
    size_t avail = (size_t)e->resp_ready, used;
    *made = 0;
    if (!e->gz)
        return 1;
    if (!avail && !e->resp_done)
        return 2;
    int rc = slb_gzip_run(e->gz, avail ? up->in.data + up->in.off : "", avail, &used, out, cap,
                          made, e->resp_done);
    if (rc < 0)
        return -1;
    if (used) {
        slb_buf_consume(&up->in, used);
        e->resp_ready -= used;
    }
    if (rc == 1) {
        struct slb_wcount *lc = slb_exchange_lis(e);
        slb_count_add(&lc->v[SLB_LIS_GZIP_IN], slb_gzip_total_in(e->gz));
        slb_count_add(&lc->v[SLB_LIS_GZIP_OUT], slb_gzip_total_out(e->gz));
        slb_exchange_gzip_drop(e);
        return 1;
    }
    return used || *made ? 0 : 2;
}

void slb_exchange_gzip_drop(struct slb_exchange *e)
{
    if (e->gz)
        slb_gzip_give(&e->hw->gz_pool, &e->gz);
}
