/* SPDX-License-Identifier: Apache-2.0 */
/* The exchange of a request with a backend: the steps both client protocols share, and the
 * worker's lists of exchange states (see xchg.h). */
#include "http/xchg.h"

#include "core/log.h"
#include "core/time.h"
#include "http/upstream.h"
#include "lb/health.h"
#include "tls/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The worker keeps the exchange states connections gave back, up to this many: enough for the
 * requests in flight on a busy worker, so that a keep-alive request allocates nothing. */
#define XCHG_KEEP 1024

/* It keeps response-head buffers the same way, fewer of them since they are bigger, and none
 * that grew past HEAD_KEEP_CAP. A kept buffer holds its own list link. */
#define HEAD_KEEP 128
#define HEAD_KEEP_CAP 4096
struct head_mem {
    struct head_mem *next;
    size_t cap;
};

void slb_xchg_head_put(struct slb_http_worker *hw, struct slb_hbuf *b)
{
    if (!b->p || b->oom || b->cap > HEAD_KEEP_CAP || hw->nheads >= HEAD_KEEP) {
        slb_hbuf_free(b);
        return;
    }
    struct head_mem *h = (struct head_mem *)(void *)b->p;
    h->cap = b->cap;
    h->next = hw->heads;
    hw->heads = h;
    hw->nheads++;
    *b = (struct slb_hbuf){0};
}

bool slb_xchg_get(struct slb_http_worker *hw, struct http_xchg **xp, struct slb_hbuf *out)
{
    if (*xp)
        return true;
    struct http_xchg *x = hw->xchg_free;
    if (x) {
        hw->xchg_free = x->next;
        hw->nxchg_free--;
        uint8_t *heap = x->tried_heap;
        size_t cap = x->tried_cap;
        struct slb_hbuf tr = {.p = x->resp_trailers.p, .cap = x->resp_trailers.cap};
        memset(x, 0, sizeof(*x));
        x->tried_heap = heap;
        x->tried_cap = cap;
        x->resp_trailers = tr;
    } else if (!(x = calloc(1, sizeof(*x)))) {
        return false;
    }
    *xp = x;
    struct head_mem *h = hw->heads;
    if (h && !out->p) {
        hw->heads = h->next;
        hw->nheads--;
        *out = (struct slb_hbuf){.p = (char *)h, .cap = h->cap};
    }
    return true;
}

void slb_xchg_free(struct http_xchg *x)
{
    if (x) {
        free(x->tried_heap);
        slb_hbuf_free(&x->resp_trailers);
        slb_gzip_free(x->e.gz);
    }
    free(x);
}

void slb_xchg_put(struct slb_http_worker *hw, struct http_xchg **xp, struct slb_hbuf *out)
{
    struct http_xchg *x = *xp;
    *xp = NULL;
    slb_xchg_head_put(hw, out);
    if (!x)
        return;
    slb_gzip_give(&hw->gz_pool, &x->e.gz);
    if (hw->nxchg_free >= XCHG_KEEP) {
        slb_xchg_free(x);
        return;
    }
    x->next = hw->xchg_free;
    hw->xchg_free = x;
    hw->nxchg_free++;
}

uint8_t *slb_xchg_tried(struct http_xchg *x, size_t n)
{
    uint8_t *t = x->tried_in;
    if (n > sizeof(x->tried_in)) {
        if (n > x->tried_cap) {
            uint8_t *p = realloc(x->tried_heap, n);
            if (!p)
                return NULL;
            x->tried_heap = p;
            x->tried_cap = n;
        }
        t = x->tried_heap;
    }
    memset(t, 0, n);
    return t;
}

void slb_xchg_lists_free(struct slb_http_worker *hw)
{
    while (hw->xchg_free) {
        struct http_xchg *x = hw->xchg_free;
        hw->xchg_free = x->next;
        slb_xchg_free(x);
    }
    slb_gzip_pool_drain(&hw->gz_pool);
    while (hw->heads) {
        struct head_mem *h = hw->heads;
        hw->heads = h->next;
        free(h);
    }
}

/* --- the steps both client protocols share --- */

struct http_up *slb_xchg_reconnect(struct slb_http_worker *hw, struct slb_wcount *lis,
                                   struct http_up **up, const struct slb_server_cfg *scfg,
                                   struct slb_srv_rt *srv, void *owner, slb_up_cb cb)
{
    slb_up_close(*up);
    int err = 0;
    *up = slb_up_connect(hw, scfg, owner, cb, &err);
    if (*up) {
        slb_up_count_start(*up, srv);
        slb_count_add(&lis->v[SLB_LIS_RETRIES], 1);
    }
    return *up;
}

void slb_xchg_up_done(struct http_up **up, struct slb_srv_rt *srv, int wid, int status, bool keep)
{
    slb_health_observe(srv, wid, status);
    if (keep)
        slb_up_release(*up);
    else
        slb_up_close(*up);
    *up = NULL;
}

void slb_xchg_count_head(struct slb_wcount *lis, struct slb_wcount *srv, int status,
                         uint64_t *sent_us, uint64_t now_us)
{
    if (*sent_us)
        slb_srv_observe(srv, now_us - *sent_us);
    *sent_us = 0;
    if (status >= 500)
        slb_srv_failed(srv, SLB_SRV_FAIL_STATUS_5XX);
    slb_count_add(&srv->v[SLB_SRV_REQS], 1);
    slb_xchg_count_status(lis, status, false, 1);
}

void slb_xchg_connect_failed(int wid, const struct slb_listener_rt *l, struct slb_srv_rt *srv,
                             enum slb_srv_fail f, const char *why)
{
    slb_warn("listener %s: backend %s: connect: %s", l->cfg->name, srv->key, why);
    slb_srv_failed(&srv->w[wid], f);
    slb_health_observe(srv, wid, SLB_XCHG_FAILED);
}

void slb_xchg_failed(int wid, const struct slb_listener_rt *l, struct slb_srv_rt *srv, int status,
                     bool req_done, bool resp_head_done, enum slb_srv_fail f, const char *why)
{
    if (status != 504 || (req_done && !resp_head_done))
        slb_health_observe(srv, wid, SLB_XCHG_FAILED);
    if (srv) {
        slb_warn("listener %s: backend %s: %s", l->cfg->name, srv->key, why);
        slb_srv_failed(&srv->w[wid], f);
    }
}

void slb_xchg_log(struct slb_worker *w, const struct slb_listener_rt *l, const struct slb_tconn *t,
                  const char *client_ip, const struct slb_xchg_log *x, uint64_t *wire_in,
                  uint64_t *wire_out)
{
    uint64_t in, out;
    slb_tconn_wire(t, &in, &out);
    char sni[256] = "";
    const char *name = slb_tls_ssl_servername(t->ssl);
    if (name)
        snprintf(sni, sizeof(sni), "%s", name);
    const struct slb_exchange *xe = x->e;
    const char *up = xe->srv ? xe->srv->key : xe->fail_srv;
    uint64_t start_us = x->rec->start_us;
    struct slb_access_entry e = {
        .listener = l->cfg->name,
        .client = client_ip,
        .client_port = x->client_port,
        .tls_version = t->ssl ? SSL_get_version(t->ssl) : NULL,
        .cipher = t->ssl ? SSL_get_cipher_name(t->ssl) : NULL,
        .resumed = t->ssl ? SSL_session_reused(t->ssl) : -1,
        .sni = sni,
        .rec = x->rec,
        .proto = x->proto,
        .status = xe->status,
        .bytes_in = x->bytes_in,
        .bytes_out = x->bytes_out,
        .wire_in = in - *wire_in,
        .wire_out = out - *wire_out,
        .upstream = up ? strchr(up, '/') + 1 : NULL,
        .error = xe->status >= 500 ? slb_access_error_name(xe->fail) : NULL,
        .request_ms = (double)(slb_mono_us() - start_us) / 1000.0,
        .upstream_ms = xe->resp_us ? (double)(xe->resp_us - start_us) / 1000.0 : 0,
    };
    slb_access_write(w, &e);
    *wire_in = in;
    *wire_out = out;
}
